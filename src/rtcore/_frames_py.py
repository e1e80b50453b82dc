"""RFC 6455 framing: the pure-Python twin of ``rtcore._frames``.

This module is the *reference* implementation and the source of types for the
facade ``rtcore.frames``. ``_frames.pyx`` must expose exactly the same names,
signatures, exceptions and observable behaviour; ``tests/test_frames.py`` runs
every test against both, and ``tests/test_frames_diff.py`` compares them on
random input.

Contract of :class:`FrameParser` (sans-I/O: bytes in, events out):

* Feed bytes with :meth:`FrameParser.feed_data`, or use the
  ``get_buffer``/``buffer_updated`` pair of ``asyncio.BufferedProtocol``.
  Both return the list of *events* completed by that input, in order. Any
  chunking of the same byte stream yields the same events.
* An event is a tuple ``(opcode, payload)``: ``OP_TEXT`` / ``OP_BINARY`` with
  the whole reassembled (and, with permessage-deflate, decompressed) message
  as ``bytes`` (text is validated UTF-8, still undecoded); ``OP_PING`` /
  ``OP_PONG`` with the control payload; ``OP_CLOSE`` with the raw close
  payload, already validated (use :func:`parse_close` for code and reason).
* After a close frame the parser ignores any further input (``closed``).
* On a protocol violation the parser stops, sets :attr:`FrameParser.error` to
  a :class:`~rtcore.errors.WebSocketProtocolError` carrying the close code to
  fail the connection with, and returns the events completed *before* the
  bad frame. Later input is ignored.
"""

from __future__ import annotations

import codecs
import struct
import threading
from typing import Any, Protocol

from rtcore.errors import WebSocketProtocolError


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

# Opcodes (RFC 6455 section 5.2). Plain ints, not an enum: they sit on hot paths.
OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

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

# Codes that may appear in a close frame: the IANA registry's assigned codes
# (1012-1014 included) plus the ranges reserved for libraries (3000-3999) and
# applications (4000-4999). 1004, 1005, 1006 and 1015 never go on the wire.
_WIRE_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)

# Size of the chunk handed out by get_buffer().
_READ_CHUNK = 256 * 1024

_utf8_decoder_factory = codecs.getincrementaldecoder("utf-8")

# Per-thread read chunk shared by every parser of that thread (see get_buffer).
_shared = threading.local()


class Decompressor(Protocol):
    """What the parser needs from a negotiated permessage-deflate extension."""

    def decompress(self, payload: bytes, max_size: int) -> bytes:
        """Inflate one whole message.

        Raises WebSocketProtocolError(1009) when the result would exceed
        ``max_size`` bytes (``max_size <= 0``: no limit) and (1007) on corrupt
        compressed data.
        """
        ...


def is_valid_close_code(code: int) -> bool:
    """True when ``code`` may be sent or received in a close frame."""
    return code in _WIRE_CLOSE_CODES or 3000 <= code <= 4999


def validate_utf8(data: bytes | bytearray | memoryview) -> bool:
    """True when ``data`` is complete, well-formed UTF-8."""
    try:
        codecs.utf_8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


def _mask_int(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    reps = (n + 3) // 4
    key = int.from_bytes((mask * reps)[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """Return ``data`` XOR-ed with the 4-byte ``mask`` (RFC 6455 section 5.3)."""
    if len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    return _mask_int(data, bytes(mask))


def mask_inplace(buf: bytearray | memoryview, mask: bytes) -> None:
    """XOR the writable buffer ``buf`` with the 4-byte ``mask`` in place."""
    if len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    view = memoryview(buf)
    if view.readonly:
        raise TypeError("mask_inplace needs a writable buffer")
    view[:] = _mask_int(view, bytes(mask))


def frame_header(opcode: int, length: int, fin: bool = True, rsv1: bool = False) -> bytes:
    """The unmasked header of a server frame carrying ``length`` payload bytes."""
    if not 0 <= opcode <= 0xF:
        raise ValueError("opcode out of range")
    if length < 0:
        raise ValueError("negative length")
    if length > 0x7FFFFFFFFFFFFFFF:
        # RFC 6455 section 5.2: the most significant bit of the 64-bit length must be 0.
        raise ValueError("length does not fit in 63 bits")
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    if length < 126:
        return bytes((b0, length))
    if length < 65536:
        return struct.pack("!BBH", b0, 126, length)
    return struct.pack("!BBQ", b0, 127, length)


def encode_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = None,
) -> bytes:
    """Encode one frame; ``mask`` (4 bytes) is for client frames, ``None`` for server frames."""
    length = len(payload)
    if opcode >= 0x8 and (length > 125 or not fin):
        raise ValueError("control frames carry at most 125 bytes and cannot be fragmented")
    header = frame_header(opcode, length, fin, rsv1)
    if mask is None:
        return header + payload
    if len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    header = bytes((header[0], header[1] | 0x80)) + header[2:]
    return header + mask + _mask_int(payload, bytes(mask))


def encode_close(code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
    """The payload of a close frame (code + UTF-8 reason, at most 125 bytes).

    A reason too long for a control frame is cut at a character boundary.
    """
    if not is_valid_close_code(code):
        raise ValueError(f"invalid close code {code}")
    raw = reason.encode("utf-8")
    if len(raw) > 123:
        raw = raw[:123].decode("utf-8", "ignore").encode("utf-8")
    return struct.pack("!H", code) + raw


def parse_close(payload: bytes | bytearray | memoryview) -> tuple[int, str]:
    """Code and reason of a close payload; ``(1005, "")`` for an empty one.

    Raises WebSocketProtocolError: 1002 for a 1-byte payload or a code that
    may not be sent, 1007 for a reason that is not UTF-8.
    """
    n = len(payload)
    if n == 0:
        return CLOSE_NO_STATUS, ""
    if n == 1:
        raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = (payload[0] << 8) | payload[1]
    if not is_valid_close_code(code):
        raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = codecs.utf_8_decode(payload[2:], "strict", True)[0]
    except UnicodeDecodeError:
        raise WebSocketProtocolError(
            CLOSE_INVALID_DATA, "close reason is not valid UTF-8"
        ) from None
    return code, reason


class FrameParser:
    """Incremental RFC 6455 frame parser with message reassembly.

    Args:
        max_message_size: largest message (after decompression) and largest
            single frame accepted, in bytes; larger ones fail the connection
            with 1009 as soon as the frame header announces them. ``0`` or a
            negative value means no limit.
        is_server: ``True`` (parse client frames: masking is required),
            ``False`` (parse server frames: masking is forbidden).
        deflate: the negotiated permessage-deflate extension, or ``None``;
            without it a frame with RSV1 set is a protocol error.
    """

    def __init__(
        self,
        *,
        max_message_size: int = 1 << 20,
        is_server: bool = True,
        deflate: Decompressor | None = None,
    ) -> None:
        # Largest accepted message / frame; <= 0 disables the limit.
        self.max_message_size = max_message_size if max_message_size > 0 else 0
        # Frames from clients must be masked, frames from servers must not.
        self.is_server = is_server
        # permessage-deflate, when negotiated.
        self._deflate = deflate
        # Unparsed input, starting at self._pos.
        self._buf = bytearray()
        self._pos = 0
        # Fragmented message in progress: its opcode (0 when none), compressed
        # flag, collected payloads and their total size.
        self._msg_op = 0
        self._msg_compressed = False
        self._fragments: list[bytes] = []
        self._msg_size = 0
        # Incremental UTF-8 validation of an uncompressed text message.
        self._utf8: Any = None
        # Set once a close frame was parsed or a protocol error happened.
        self._closed = False
        self._error: WebSocketProtocolError | None = None
        # The (thread-shared) chunk handed out by the last get_buffer().
        self._chunk_view: memoryview | None = None

    # -- public state --------------------------------------------------------

    @property
    def error(self) -> WebSocketProtocolError | None:
        """The protocol error that stopped the parser, if any."""
        return self._error

    @property
    def closed(self) -> bool:
        """True after a close frame or a protocol error: further input is ignored."""
        return self._closed

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf) - self._pos

    # -- input ---------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        """A writable buffer for ``asyncio.BufferedProtocol.get_buffer``.

        The chunk is shared by the parsers of one thread (``buffer_updated``
        copies what arrived before anything else can read into it), so an idle
        connection holds no read buffer of its own.
        """
        view: memoryview | None = getattr(_shared, "chunk", None)
        if view is None:
            view = _shared.chunk = memoryview(bytearray(_READ_CHUNK))
        self._chunk_view = view
        return view

    def buffer_updated(self, nbytes: int) -> list[tuple[int, bytes]]:
        """``nbytes`` were written into the last :meth:`get_buffer` result."""
        view = self._chunk_view
        if view is None or not 0 <= nbytes <= len(view):
            raise ValueError("buffer_updated without a matching get_buffer")
        self._chunk_view = None
        return self.feed_data(view[:nbytes])

    def feed_data(self, data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
        """Add received bytes; return the events they complete."""
        events: list[tuple[int, bytes]] = []
        if self._closed or not data:
            return events
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data
        try:
            self._parse(events)
        except WebSocketProtocolError as exc:
            self._fail(exc)
        return events

    # -- internals -----------------------------------------------------------

    def _fail(self, exc: WebSocketProtocolError) -> None:
        self._error = exc
        self._closed = True
        self._buf = bytearray()
        self._pos = 0
        self._fragments = []

    def _parse(self, events: list[tuple[int, bytes]]) -> None:
        buf = self._buf
        end = len(buf)
        while not self._closed:
            pos = self._pos
            if end - pos < 2:
                return
            b0 = buf[pos]
            b1 = buf[pos + 1]
            fin = b0 & 0x80
            rsv1 = b0 & 0x40
            opcode = b0 & 0x0F
            masked = b1 & 0x80
            length = b1 & 0x7F
            self._check_header(b0, opcode, fin, rsv1, masked, length)
            hlen = 2
            if length == 126:
                if end - pos < 4:
                    return
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                hlen = 4
            elif length == 127:
                if end - pos < 10:
                    return
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                if length >> 63:
                    raise WebSocketProtocolError(
                        CLOSE_PROTOCOL_ERROR, "frame length has the most significant bit set"
                    )
                hlen = 10
            limit = self.max_message_size
            if limit and opcode < 0x8 and self._msg_size + length > limit:
                raise WebSocketProtocolError(
                    CLOSE_MESSAGE_TOO_BIG, f"message exceeds the {limit}-byte limit"
                )
            if masked:
                hlen += 4
            if end - pos < hlen + length:
                return
            start = pos + hlen
            if masked:
                mask = bytes(buf[start - 4 : start])
                payload = _mask_int(memoryview(buf)[start : start + length], mask)
            else:
                payload = bytes(buf[start : start + length])
            self._pos = start + length
            if opcode >= 0x8:
                self._control(opcode, payload, events)
            else:
                self._data(opcode, bool(fin), bool(rsv1), payload, events)

    def _check_header(
        self, b0: int, opcode: int, fin: int, rsv1: int, masked: int, length: int
    ) -> None:
        if b0 & 0x30:
            raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits RSV2/RSV3 set")
        if opcode >= 0x8:
            if opcode > OP_PONG:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode}")
            if not fin:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            if length > 125:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "control frame too long")
            if rsv1:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "RSV1 set on a control frame")
        else:
            if opcode > OP_BINARY:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode}")
            if opcode == OP_CONT:
                if not self._msg_op:
                    raise WebSocketProtocolError(
                        CLOSE_PROTOCOL_ERROR, "continuation frame without a message to continue"
                    )
                if rsv1:
                    raise WebSocketProtocolError(
                        CLOSE_PROTOCOL_ERROR, "RSV1 set on a continuation frame"
                    )
            elif self._msg_op:
                raise WebSocketProtocolError(
                    CLOSE_PROTOCOL_ERROR, "new data frame inside a fragmented message"
                )
            if rsv1 and self._deflate is None:
                raise WebSocketProtocolError(
                    CLOSE_PROTOCOL_ERROR, "RSV1 set without a negotiated extension"
                )
        if self.is_server:
            if not masked:
                raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "client frame is not masked")
        elif masked:
            raise WebSocketProtocolError(CLOSE_PROTOCOL_ERROR, "server frame is masked")

    def _control(self, opcode: int, payload: bytes, events: list[tuple[int, bytes]]) -> None:
        if opcode == OP_CLOSE:
            parse_close(payload)
            events.append((OP_CLOSE, payload))
            self._closed = True
            self._fragments = []
        else:
            events.append((opcode, payload))

    def _data(
        self, opcode: int, fin: bool, rsv1: bool, payload: bytes, events: list[tuple[int, bytes]]
    ) -> None:
        if opcode != OP_CONT:
            # First frame of a message.
            if fin and not rsv1:
                # Fast path: a whole uncompressed message in one frame.
                if opcode == OP_TEXT and not validate_utf8(payload):
                    raise WebSocketProtocolError(
                        CLOSE_INVALID_DATA, "invalid UTF-8 in text message"
                    )
                events.append((opcode, payload))
                return
            self._msg_op = opcode
            self._msg_compressed = rsv1
            self._utf8 = _utf8_decoder_factory() if opcode == OP_TEXT and not rsv1 else None
        utf8 = self._utf8
        if utf8 is not None:
            try:
                utf8.decode(payload, fin)
            except UnicodeDecodeError:
                raise WebSocketProtocolError(
                    CLOSE_INVALID_DATA, "invalid UTF-8 in text message"
                ) from None
        self._fragments.append(payload)
        self._msg_size += len(payload)
        if not fin:
            return
        message = b"".join(self._fragments)
        op = self._msg_op
        compressed = self._msg_compressed
        self._fragments = []
        self._msg_size = 0
        self._msg_op = 0
        self._msg_compressed = False
        self._utf8 = None
        if compressed:
            assert self._deflate is not None
            message = self._deflate.decompress(message, self.max_message_size)
            if op == OP_TEXT and not validate_utf8(message):
                raise WebSocketProtocolError(CLOSE_INVALID_DATA, "invalid UTF-8 in text message")
        events.append((op, message))
