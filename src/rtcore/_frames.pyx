# cython: language_level=3, embedsignature=True
"""RFC 6455 framing, compiled: the twin of ``rtcore._frames_py``.

Same names, signatures, exceptions and events as the pure-Python reference
``_frames_py`` (read its docstring for the contract); ``tests/test_twins.py``
and ``tests/test_frames_diff.py`` hold the two together. What differs is how
the work is done:

* :class:`FrameParser` owns a growable C read buffer. ``get_buffer`` hands out
  a memoryview on its free tail, ``buffer_updated`` parses in place, and
  ``feed_data`` copies into the same buffer. See docs/frames.md for the
  buffer policy and the lifetime of the returned view.
* Payloads are unmasked 8 bytes at a time while they are copied into the
  ``bytes`` object of the event, which is allocated once at its final size.
* UTF-8 is checked by a small state machine whose state survives across the
  fragments of a message; it accepts exactly what Python's strict ``utf-8``
  codec accepts.

The C-level helpers declared in ``_frames.pxd`` (``write_header``,
``build_frame``, ``mask_copy``, ``utf8_feed``) are for other extension
modules; pointer accesses in this file are unchecked and each one says which
test bounds it. Builds without optimisation (``RTCORE_DEBUG=1``) or with the
``RTCORE_DEBUG`` macro also verify the read-buffer invariants after every
parse (``RTCORE_CHECKS`` below).
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBUF_WRITE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memmove

from rtcore._frames_py import Decompressor
from rtcore.errors import WebSocketProtocolError


cdef extern from *:
    """
    /* Internal invariant checks: compiled in when the build is not optimised
       (RTCORE_DEBUG=1 builds with -O0) or when RTCORE_DEBUG is defined. */
    #if defined(RTCORE_DEBUG) || !defined(__OPTIMIZE__)
    #define RTCORE_CHECKS 1
    #else
    #define RTCORE_CHECKS 0
    #endif
    """
    const bint RTCORE_CHECKS
    const Py_ssize_t PY_SSIZE_T_MAX


__all__ = [
    "OP_CONT",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "CLOSE_NORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_UNSUPPORTED_DATA",
    "CLOSE_NO_STATUS",
    "CLOSE_ABNORMAL",
    "CLOSE_INVALID_DATA",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_MANDATORY_EXTENSION",
    "CLOSE_INTERNAL_ERROR",
    "Decompressor",
    "FrameParser",
    "apply_mask",
    "mask_inplace",
    "encode_frame",
    "frame_header",
    "encode_close",
    "parse_close",
    "is_valid_close_code",
    "validate_utf8",
]

# Opcodes (RFC 6455 section 5.2): plain Python ints, as in the twin.
OP_CONT = WS_OP_CONT
OP_TEXT = WS_OP_TEXT
OP_BINARY = WS_OP_BINARY
OP_CLOSE = WS_OP_CLOSE
OP_PING = WS_OP_PING
OP_PONG = WS_OP_PONG

# Close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005  # never on the wire: "the close frame had no payload"
CLOSE_ABNORMAL = 1006  # never on the wire: "the TCP connection dropped"
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_MANDATORY_EXTENSION = 1010
CLOSE_INTERNAL_ERROR = 1011

cdef enum:
    # get_buffer() always offers at least this much free space.
    _MIN_FREE = 64 * 1024
    # Largest free space offered for read-ahead (reads that keep filling the
    # view double it from _MIN_FREE up to this).
    _READ_AHEAD_MAX = 1024 * 1024
    # Largest room made for the rest of a frame whose header was read: a
    # 14-byte header alone must not make the parser allocate a huge block.
    _FRAME_ROOM_MAX = 4 * 1024 * 1024
    # First allocation of the read buffer (it is released whenever it empties).
    _INITIAL_CAPACITY = 64 * 1024
    # An empty read buffer larger than this is released (after a huge frame).
    _SHRINK_ABOVE = 4 * 1024 * 1024
    # The reassembly buffer is released after a message when larger than this.
    _MSG_KEEP = 64 * 1024

# Largest payload length a frame header can carry (RFC 6455 section 5.2: the
# most significant bit of the 64-bit length must be 0).
cdef object _MAX_LENGTH = 0x7FFFFFFFFFFFFFFF


# -- allocation accounting ------------------------------------------------------

# Number of live C blocks (read and reassembly buffers) across all parsers;
# tests check that it returns to its starting value (no leaks).
cdef Py_ssize_t _live_blocks = 0


# Whether this build verifies the read-buffer invariants (see RTCORE_CHECKS).
_DEBUG_CHECKS = bool(RTCORE_CHECKS)


def _live_allocations():
    """Number of C buffers currently allocated by FrameParser objects (for leak tests)."""
    return _live_blocks


cdef int _resize_block(unsigned char** block, Py_ssize_t size) except -1:
    """Grow or shrink ``*block`` (allocate it when NULL) to ``size`` bytes."""
    global _live_blocks
    cdef unsigned char* p = <unsigned char*>realloc(block[0], <size_t>size)
    if p == NULL:
        raise MemoryError()
    if block[0] == NULL:
        _live_blocks += 1
    block[0] = p
    return 0


cdef inline void _free_block(unsigned char** block) noexcept:
    global _live_blocks
    if block[0] != NULL:
        free(block[0])
        block[0] = NULL
        _live_blocks -= 1


include "_frames_mask.pxi"
include "_frames_utf8.pxi"


# -- headers, frames and close payloads ----------------------------------------------

cdef Py_ssize_t header_size(Py_ssize_t length, bint masked) noexcept nogil:
    cdef Py_ssize_t size
    if length < 126:
        size = 2
    elif length < 65536:
        size = 4
    else:
        size = 10
    return size + 4 if masked else size


cdef Py_ssize_t write_header(unsigned char* out, int opcode, Py_ssize_t length,
                             bint fin, bint rsv1) noexcept nogil:
    # The caller provides 10 bytes at `out`; the longest header written is 10.
    cdef uint64_t n = <uint64_t>length
    cdef int i
    out[0] = <unsigned char>((opcode & 0x0F) | (0x80 if fin else 0) | (0x40 if rsv1 else 0))
    if length < 126:
        out[1] = <unsigned char>length
        return 2
    if length < 65536:
        out[1] = 126
        out[2] = <unsigned char>(n >> 8)
        out[3] = <unsigned char>n
        return 4
    out[1] = 127
    for i in range(8):  # out[2] .. out[9]
        out[2 + i] = <unsigned char>(n >> (56 - 8 * i))
    return 10


cdef bytes build_frame(int opcode, const unsigned char* payload, Py_ssize_t length,
                       bint fin, bint rsv1, const unsigned char* key):
    cdef Py_ssize_t size
    cdef bytes out
    cdef unsigned char* dst
    if length > PY_SSIZE_T_MAX - WS_MAX_HEADER:
        raise MemoryError()
    size = header_size(length, key != NULL)
    out = PyBytes_FromStringAndSize(NULL, size + length)
    dst = <unsigned char*>PyBytes_AS_STRING(out)
    # dst has size + length bytes: the header (size bytes, mask included) first.
    size = write_header(dst, opcode, length, fin, rsv1)
    if key == NULL:
        memcpy(dst + size, payload, <size_t>length)
    else:
        dst[1] |= 0x80
        memcpy(dst + size, key, 4)
        mask_copy(dst + size + 4, payload, length, key)
    return out


def frame_header(int opcode, length, bint fin=True, bint rsv1=False):
    """The unmasked header of a server frame carrying ``length`` payload bytes."""
    cdef unsigned char out[10]
    cdef Py_ssize_t size
    if not 0 <= opcode <= 0xF:
        raise ValueError("opcode out of range")
    if length < 0:
        raise ValueError("negative length")
    if length > _MAX_LENGTH:
        raise ValueError("length does not fit in 63 bits")
    size = write_header(out, opcode, length, fin, rsv1)
    return PyBytes_FromStringAndSize(<char*>out, size)


def encode_frame(int opcode, payload, bint fin=True, bint rsv1=False, mask=None):
    """Encode one frame; ``mask`` (4 bytes) is for client frames, ``None`` for server frames."""
    cdef Py_buffer view
    cdef const unsigned char* src
    cdef Py_ssize_t length
    cdef bytes keep
    cdef const unsigned char* key = NULL
    cdef bint release = False
    if PyBytes_CheckExact(payload):
        src = <const unsigned char*>PyBytes_AS_STRING(payload)
        length = PyBytes_GET_SIZE(payload)
    else:
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        release = True
        src = <const unsigned char*>view.buf
        length = view.len
    try:
        if opcode >= 0x8 and (length > 125 or not fin):
            raise ValueError("control frames carry at most 125 bytes and cannot be fragmented")
        if not 0 <= opcode <= 0xF:
            raise ValueError("opcode out of range")
        if mask is not None:
            keep = _mask_bytes(mask)
            key = <const unsigned char*>PyBytes_AS_STRING(keep)
        return build_frame(opcode, src, length, fin, rsv1, key)
    finally:
        if release:
            PyBuffer_Release(&view)


cdef inline bint _valid_close_code(long code) noexcept nogil:
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def is_valid_close_code(code):
    """True when ``code`` may be sent or received in a close frame."""
    cdef long value
    try:
        value = code
    except OverflowError:
        return False
    return _valid_close_code(value)


def encode_close(code=CLOSE_NORMAL, reason=""):
    """The payload of a close frame (code + UTF-8 reason, at most 125 bytes).

    A reason too long for a control frame is cut at a character boundary.
    """
    cdef bytes raw
    cdef const unsigned char* text
    cdef Py_ssize_t cut
    cdef int value
    cdef bytes out
    cdef unsigned char* dst
    if not is_valid_close_code(code):
        raise ValueError(f"invalid close code {code}")
    value = code
    raw = reason.encode("utf-8")
    text = <const unsigned char*>PyBytes_AS_STRING(raw)
    cut = PyBytes_GET_SIZE(raw)
    if cut > 123:
        cut = 123
        # text[cut] exists (the reason is longer than 123 bytes) and cut stays
        # >= 0: step back over continuation bytes to the start of the
        # character that does not fit.
        while cut > 0 and (text[cut] & 0xC0) == 0x80:
            cut -= 1
    out = PyBytes_FromStringAndSize(NULL, 2 + cut)
    dst = <unsigned char*>PyBytes_AS_STRING(out)
    dst[0] = <unsigned char>(value >> 8)
    dst[1] = <unsigned char>value
    memcpy(dst + 2, text, <size_t>cut)
    return out


cdef int _check_close(const unsigned char* data, Py_ssize_t length) except -1:
    """Raise the twin's WebSocketProtocolError for an invalid close payload."""
    cdef int code
    if length == 0:
        return 0
    if length == 1:
        raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = (data[0] << 8) | data[1]  # length >= 2
    if not _valid_close_code(code):
        raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    if not _utf8_complete(data + 2, length - 2):
        raise WebSocketProtocolError(CLOSE_INVALID_DATA, "close reason is not valid UTF-8")
    return 0


def parse_close(payload):
    """Code and reason of a close payload; ``(1005, "")`` for an empty one.

    Raises WebSocketProtocolError: 1002 for a 1-byte payload or a code that
    may not be sent, 1007 for a reason that is not UTF-8.
    """
    cdef Py_buffer view
    cdef const unsigned char* data
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        if view.len == 0:
            return CLOSE_NO_STATUS, ""
        data = <const unsigned char*>view.buf
        _check_close(data, view.len)
        # view.len >= 2 here and the reason is valid UTF-8.
        return (data[0] << 8) | data[1], PyUnicode_DecodeUTF8(<char*>data + 2,
                                                              view.len - 2, NULL)
    finally:
        PyBuffer_Release(&view)


# -- the parser ---------------------------------------------------------------------------

@cython.embedsignature(False)
cdef class FrameParser:
    """FrameParser(*, max_message_size=1048576, is_server=True, deflate=None)
--

    Incremental RFC 6455 frame parser with message reassembly.

    Args:
        max_message_size: largest message (after decompression) and largest
            single frame accepted, in bytes; larger ones fail the connection
            with 1009 as soon as the frame header announces them. ``0`` or a
            negative value means no limit.
        is_server: ``True`` (parse client frames: masking is required),
            ``False`` (parse server frames: masking is forbidden).
        deflate: the negotiated permessage-deflate extension, or ``None``;
            without it a frame with RSV1 set is a protocol error.

    The parser reads into its own C buffer. :meth:`get_buffer` returns a
    memoryview on the free part of it; that view is valid until the next
    call of :meth:`buffer_updated`, :meth:`get_buffer` or :meth:`feed_data`
    (the buffer may move then, and the view is released when possible).
    """

    def __cinit__(self):
        self._view_len = -1
        self._read_ahead = _MIN_FREE
        self.max_message_size = 1 << 20
        self.is_server = True

    def __init__(self, *, Py_ssize_t max_message_size=1 << 20, bint is_server=True,
                 deflate=None):
        self.max_message_size = max_message_size if max_message_size > 0 else 0
        self.is_server = is_server
        self._deflate = deflate
        self._drop_view()
        self._start = 0
        self._end = 0
        self._reset_message()
        self._closed = False
        self._error = None

    def __dealloc__(self):
        self._drop_view()
        _free_block(&self._buf)
        _free_block(&self._msg)

    # -- public state --------------------------------------------------------

    @property
    def error(self):
        """The protocol error that stopped the parser, if any."""
        return self._error

    @property
    def closed(self):
        """True after a close frame or a protocol error: further input is ignored."""
        return self._closed

    @property
    def buffered(self):
        """Bytes received but not yet part of a complete frame."""
        return self._end - self._start

    # -- input ---------------------------------------------------------------

    def get_buffer(self, Py_ssize_t sizehint):
        """A writable buffer for ``asyncio.BufferedProtocol.get_buffer``.

        The view covers the free tail of the read buffer: at least
        ``sizehint`` bytes, at least the rest of a frame whose header was
        already read (up to 4 MiB), and at least the read-ahead, which is
        64 KiB and doubles (up to 1 MiB) while reads keep filling the whole
        view. It stays valid until the next :meth:`buffer_updated`,
        :meth:`get_buffer` or :meth:`feed_data` call.
        """
        cdef object view
        cdef Py_ssize_t need = self._read_ahead
        self._drop_view()
        if self._frame_rest > need:
            # One read can take the rest of a large frame (bounded by the
            # message size limit, checked on its header, and _FRAME_ROOM_MAX).
            need = self._frame_rest
        if sizehint > need:
            need = sizehint
        self._reserve(need)
        # _reserve() guarantees _end + need <= _cap: the view is inside _buf.
        view = PyMemoryView_FromMemory(<char*>self._buf + self._end, self._cap - self._end,
                                       PyBUF_WRITE)
        self._view = view
        self._view_len = self._cap - self._end
        return view

    def buffer_updated(self, Py_ssize_t nbytes):
        """``nbytes`` were written into the last :meth:`get_buffer` result."""
        if self._view_len < 0 or not 0 <= nbytes <= self._view_len:
            raise ValueError("buffer_updated without a matching get_buffer")
        if nbytes == self._view_len:
            # The read filled the view: more was probably waiting in the socket.
            if self._read_ahead < _READ_AHEAD_MAX:
                self._read_ahead *= 2
        elif (nbytes < self._read_ahead >> 2 and self._read_ahead > _MIN_FREE
              and self._frame_rest == 0):
            # A small read, and not the tail of a frame that a bigger read cut
            # short (that one says nothing about how much arrives at a time).
            self._read_ahead >>= 1
        # The view is spent; it is released by the next get_buffer()/feed_data(),
        # as the transport may still hold it while this call runs (uvloop does).
        self._view_len = -1
        if self._closed or nbytes == 0:
            return []
        # nbytes <= _view_len == _cap - _end (checked above).
        self._end += nbytes
        return self._run()

    def feed_data(self, data):
        """Add received bytes; return the events they complete."""
        cdef Py_buffer view
        if self._closed:
            return []
        if PyBytes_CheckExact(data):
            if PyBytes_GET_SIZE(data) == 0:
                return []
            self._drop_view()
            self._append(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
            return self._run()
        if not data:
            return []
        self._drop_view()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if (self._buf != NULL and <const unsigned char*>view.buf >= self._buf
                    and <const unsigned char*>view.buf < self._buf + self._cap):
                # The data lives in our own buffer (a view from get_buffer()),
                # which _reserve() may move: copy it out first.
                data = PyBytes_FromStringAndSize(<char*>view.buf, view.len)
                self._append(<const unsigned char*>PyBytes_AS_STRING(data), view.len)
            else:
                self._append(<const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return self._run()

    # -- buffer management ---------------------------------------------------

    cdef void _drop_view(self) noexcept:
        view = self._view
        self._view_len = -1
        if view is None:
            return
        self._view = None
        try:
            # Turn later use of a stale view into ValueError instead of a write
            # into freed or reused memory.
            view.release()
        except Exception:
            # Still exported by a reader (BufferError): its lifetime is documented.
            pass

    cdef int _reserve(self, Py_ssize_t need) except -1:
        """Make at least ``need`` bytes free after _end (may move the data)."""
        cdef Py_ssize_t used = self._end - self._start
        cdef Py_ssize_t cap
        if used == 0:
            self._start = 0
            self._end = 0
            if self._cap > _SHRINK_ABOVE and need <= _SHRINK_ABOVE:
                _free_block(&self._buf)
                self._cap = 0
        if self._cap - self._end >= need:
            return 0
        if self._start:
            # [_start, _end) lies inside _buf; memmove handles the overlap.
            memmove(self._buf, self._buf + self._start, <size_t>used)
            self._start = 0
            self._end = used
            if self._cap - used >= need:
                return 0
        if need > PY_SSIZE_T_MAX - used:
            raise MemoryError()
        cap = self._cap * 2 if self._cap < PY_SSIZE_T_MAX // 2 else PY_SSIZE_T_MAX
        if cap < used + need:
            cap = used + need
        if cap < _INITIAL_CAPACITY:
            cap = _INITIAL_CAPACITY
        _resize_block(&self._buf, cap)
        self._cap = cap
        return 0

    cdef int _append(self, const unsigned char* data, Py_ssize_t length) except -1:
        self._reserve(length)
        # _reserve() left at least `length` bytes free after _end.
        memcpy(self._buf + self._end, data, <size_t>length)
        self._end += length
        return 0

    # -- parsing ---------------------------------------------------------------

    cdef list _run(self):
        cdef list events = []
        self._frame_rest = 0
        try:
            self._parse(events)
        except WebSocketProtocolError as exc:
            self._fail(exc)
        if self._start == self._end:
            # Everything consumed. An idle connection holds no read buffer:
            # with hundreds of thousands of connections, a kept 64 KiB block
            # each would be gigabytes. The next get_buffer() allocates again
            # (a heap allocation below the mmap threshold: cheap). The spent
            # view of this buffer is released by that call, never written to.
            self._start = 0
            self._end = 0
            if self._buf != NULL:
                _free_block(&self._buf)
                self._cap = 0
        if RTCORE_CHECKS:
            if not (0 <= self._start <= self._end <= self._cap
                    and (self._buf != NULL or self._cap == 0)
                    and 0 <= self._msg_size <= self._msg_cap):
                raise AssertionError(
                    f"FrameParser buffer invariant broken: start={self._start} "
                    f"end={self._end} cap={self._cap} msg={self._msg_size}/{self._msg_cap}")
        return events

    cdef int _parse(self, list events) except -1:
        cdef const unsigned char* p
        cdef const unsigned char* key
        cdef Py_ssize_t avail, hlen, limit
        cdef uint64_t length, rest
        cdef int b0, b1, opcode, i
        cdef bint fin, rsv1, masked
        while not self._closed:
            # Re-read the fields every round: a callback (deflate) may feed the
            # parser again and move the buffer.
            p = self._buf + self._start
            avail = self._end - self._start
            if avail < 2:
                return 0
            # avail >= 2: p[0] and p[1] are inside the buffer.
            b0 = p[0]
            b1 = p[1]
            fin = (b0 & 0x80) != 0
            rsv1 = (b0 & 0x40) != 0
            opcode = b0 & 0x0F
            masked = (b1 & 0x80) != 0
            length = b1 & 0x7F
            self._check_header(b0, opcode, fin, rsv1, masked, <int>length)
            hlen = 2
            if length == 126:
                if avail < 4:
                    return 0
                length = (p[2] << 8) | p[3]  # avail >= 4
                hlen = 4
            elif length == 127:
                if avail < 10:
                    return 0
                length = 0
                for i in range(2, 10):  # avail >= 10
                    length = (length << 8) | p[i]
                if length >> 63:
                    raise WebSocketProtocolError(
                        CLOSE_PROTOCOL_ERROR, "frame length has the most significant bit set")
                hlen = 10
            limit = self.max_message_size
            # The twin's `msg_size + length > limit`, without overflowing.
            if limit and opcode < 0x8 and (
                limit < 0 or self._msg_size > limit
                or length > <uint64_t>(limit - self._msg_size)
            ):
                raise WebSocketProtocolError(
                    CLOSE_MESSAGE_TOO_BIG, f"message exceeds the {limit}-byte limit")
            if masked:
                hlen += 4
            if avail < hlen or <uint64_t>(avail - hlen) < length:
                # Cut short: length < 2**63 and hlen <= 14, so the sum does not
                # wrap, and it exceeds avail.
                rest = length + <uint64_t>hlen - <uint64_t>avail
                self._frame_rest = <Py_ssize_t>(rest if rest < _FRAME_ROOM_MAX else _FRAME_ROOM_MAX)
                return 0
            # The whole frame, [p, p + hlen + length), is inside [_start, _end);
            # length < 2**63 and fits in Py_ssize_t.
            key = p + hlen - 4 if masked else NULL
            self._start += hlen + <Py_ssize_t>length
            if opcode >= 0x8:
                self._on_control(opcode, p + hlen, <Py_ssize_t>length, key, events)
            else:
                self._on_data(opcode, fin, rsv1, p + hlen, <Py_ssize_t>length, key, events)
        return 0

    cdef int _check_header(self, int b0, int opcode, bint fin, bint rsv1, bint masked,
                           int length) except -1:
        # Same checks, order and reasons as _frames_py.FrameParser._check_header.
        if b0 & 0x30:
            raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits RSV2/RSV3 set")
        if opcode >= 0x8:
            if opcode > WS_OP_PONG:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode}")
            if not fin:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            if length > 125:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "control frame too long")
            if rsv1:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "RSV1 set on a control frame")
        else:
            if opcode > WS_OP_BINARY:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode}")
            if opcode == WS_OP_CONT:
                if not self._msg_op:
                    raise WebSocketProtocolError(
                        CLOSE_PROTOCOL_ERROR, "continuation frame without a message to continue")
                if rsv1:
                    raise WebSocketProtocolError(
                        CLOSE_PROTOCOL_ERROR, "RSV1 set on a continuation frame")
            elif self._msg_op:
                raise WebSocketProtocolError(
                    CLOSE_PROTOCOL_ERROR, "new data frame inside a fragmented message")
            if rsv1 and self._deflate is None:
                raise WebSocketProtocolError(
                    CLOSE_PROTOCOL_ERROR, "RSV1 set without a negotiated extension")
        if self.is_server:
            if not masked:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "client frame is not masked")
        elif masked:
            raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "server frame is masked")
        return 0

    cdef int _on_control(self, int opcode, const unsigned char* payload, Py_ssize_t length,
                         const unsigned char* key, list events) except -1:
        cdef bytes data = _make_payload(payload, length, key)
        if opcode == WS_OP_CLOSE:
            _check_close(<const unsigned char*>PyBytes_AS_STRING(data), length)
            events.append((OP_CLOSE, data))
            self._closed = True
            self._reset_message()
        else:
            events.append((opcode, data))
        return 0

    cdef int _on_data(self, int opcode, bint fin, bint rsv1, const unsigned char* payload,
                      Py_ssize_t length, const unsigned char* key, list events) except -1:
        cdef bytes data
        cdef object message
        cdef unsigned char* dst
        cdef Py_ssize_t cap
        cdef int op
        cdef bint compressed
        if opcode != WS_OP_CONT:
            # First frame of a message.
            if fin and not rsv1:
                # Fast path: a whole uncompressed message in one frame.
                data = _make_payload(payload, length, key)
                if opcode == WS_OP_TEXT and not _utf8_complete(
                        <const unsigned char*>PyBytes_AS_STRING(data), length):
                    raise WebSocketProtocolError(CLOSE_INVALID_DATA, "invalid UTF-8 in text message")
                events.append((opcode, data))
                return 0
            self._msg_op = opcode
            self._msg_compressed = rsv1
            self._utf8_active = opcode == WS_OP_TEXT and not rsv1
            self._utf8_state = UTF8_ACCEPT
        # Append the fragment to the reassembly buffer. _msg_size + length
        # cannot overflow: both are sizes of data held in memory.
        if self._msg_size + length > self._msg_cap:
            cap = self._msg_cap * 2
            if cap < self._msg_size + length:
                cap = self._msg_size + length
            if cap < 4096:
                cap = 4096
            _resize_block(&self._msg, cap)
            self._msg_cap = cap
        # [_msg_size, _msg_size + length) is inside the _msg_cap bytes of _msg.
        dst = self._msg + self._msg_size
        if key == NULL:
            memcpy(dst, payload, <size_t>length)
        else:
            mask_copy(dst, payload, length, key)
        if self._utf8_active:
            self._utf8_state = utf8_feed(self._utf8_state, dst, length)
            if self._utf8_state == UTF8_REJECT or (fin and self._utf8_state != UTF8_ACCEPT):
                raise WebSocketProtocolError(CLOSE_INVALID_DATA, "invalid UTF-8 in text message")
        self._msg_size += length
        if not fin:
            return 0
        message = PyBytes_FromStringAndSize(<char*>self._msg, self._msg_size)
        op = self._msg_op
        compressed = self._msg_compressed
        self._reset_message()
        if compressed:
            message = self._deflate.decompress(message, self.max_message_size)
            if op == WS_OP_TEXT and not validate_utf8(message):
                raise WebSocketProtocolError(CLOSE_INVALID_DATA, "invalid UTF-8 in text message")
        events.append((op, message))
        return 0

    cdef void _reset_message(self) noexcept:
        self._msg_op = 0
        self._msg_compressed = False
        self._msg_size = 0
        self._utf8_active = False
        self._utf8_state = UTF8_ACCEPT
        if self._msg_cap > _MSG_KEEP:
            _free_block(&self._msg)
            self._msg_cap = 0

    cdef void _fail(self, object exc) noexcept:
        self._error = exc
        self._closed = True
        self._start = 0
        self._end = 0
        self._frame_rest = 0
        self._reset_message()


cdef inline bytes _make_payload(const unsigned char* payload, Py_ssize_t length,
                                const unsigned char* key):
    """A new bytes object with the (unmasked) payload."""
    cdef bytes out
    if key == NULL:
        return PyBytes_FromStringAndSize(<const char*>payload, length)
    out = PyBytes_FromStringAndSize(NULL, length)
    if length:
        # A fresh, unshared object of `length` bytes (never the empty singleton).
        mask_copy(<unsigned char*>PyBytes_AS_STRING(out), payload, length, key)
    return out
