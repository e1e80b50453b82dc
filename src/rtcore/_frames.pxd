# cython: language_level=3, embedsignature=True
"""C-level declarations of ``rtcore._frames`` (the compiled RFC 6455 frame core).

Other extension modules ``cimport`` from here to build frames without a Python
call, e.g. ``_fanout.pyx``::

    from rtcore._frames cimport WS_MAX_HEADER, build_frame, write_header

The helpers are plain C functions exported through the module's C-API table;
the importing module binds them when it is imported, so ``rtcore._frames``
must be built whenever a module that cimports it is.

Call sequence of :class:`FrameParser` (see docs/frames.md):

1. ``__init__`` stores the limits; no memory is allocated yet.
2. Either ``get_buffer(sizehint)`` -> the transport writes into the returned
   view -> ``buffer_updated(nbytes)``, or ``feed_data(data)`` (which copies).
   Both end in ``_run``: ``_parse`` walks complete frames in
   ``_buf[_start:_end]``, ``_on_control`` / ``_on_data`` turn each into
   events, and a ``WebSocketProtocolError`` goes to ``_fail``.
3. ``__dealloc__`` frees both C buffers.
"""

from libc.stdint cimport uint32_t


cdef enum:
    # Opcodes (RFC 6455 section 5.2) for C callers; the Python-level OP_*
    # names of the module carry the same values.
    WS_OP_CONT = 0x0
    WS_OP_TEXT = 0x1
    WS_OP_BINARY = 0x2
    WS_OP_CLOSE = 0x8
    WS_OP_PING = 0x9
    WS_OP_PONG = 0xA
    # Longest frame header: 2 bytes + 64-bit length + 4-byte masking key.
    WS_MAX_HEADER = 14
    # States of utf8_feed(); any other value means "inside a sequence".
    UTF8_ACCEPT = 0
    UTF8_REJECT = 1


# Size of the header write_header() produces for ``length`` payload bytes,
# plus 4 when the frame is masked. ``length`` must be >= 0.
cdef Py_ssize_t header_size(Py_ssize_t length, bint masked) noexcept nogil

# Write the unmasked header of a frame to ``out`` (room for 10 bytes needed)
# and return its size: 2, 4 or 10. ``opcode`` is cut to its low 4 bits,
# ``length`` must be >= 0. To mask, set bit 0x80 of out[1] and append the key.
cdef Py_ssize_t write_header(unsigned char* out, int opcode, Py_ssize_t length,
                             bint fin, bint rsv1) noexcept nogil

# dst[i] = src[i] ^ key[i % 4] for i < length. ``dst`` may be ``src`` (in
# place) but must not overlap it otherwise; ``key`` points to 4 bytes.
cdef void mask_copy(unsigned char* dst, const unsigned char* src, Py_ssize_t length,
                    const unsigned char* key) noexcept nogil

# Feed ``length`` bytes to the UTF-8 validator in ``state`` (UTF8_ACCEPT to
# start) and return the new state. UTF8_REJECT is sticky; a message is valid
# when the state after its last byte is UTF8_ACCEPT.
cdef uint32_t utf8_feed(uint32_t state, const unsigned char* data, Py_ssize_t length) noexcept nogil

# One frame as a new bytes object: header, then the payload, masked with the
# 4 bytes at ``key`` unless ``key`` is NULL. Does not check the control-frame
# rules; ``opcode`` must be 0..15.
cdef bytes build_frame(int opcode, const unsigned char* payload, Py_ssize_t length,
                       bint fin, bint rsv1, const unsigned char* key)


cdef class FrameParser:
    # Read buffer (malloc'd, _cap bytes): unparsed input is _buf[_start:_end],
    # _buf[_end:_cap] is free space handed out by get_buffer().
    cdef unsigned char* _buf
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    # The memoryview returned by the last get_buffer() and its length; -1 when
    # no view is outstanding (buffer_updated() then raises ValueError).
    cdef object _view
    cdef Py_ssize_t _view_len
    # Free space get_buffer() offers besides the frame in progress: starts at
    # 64 KiB, doubles while reads fill the whole view, halves after small ones
    # (except the tail of a frame a read cut short).
    cdef Py_ssize_t _read_ahead
    # Bytes still missing of the frame whose header the last parse read (0
    # when no frame is cut short after its header): get_buffer() makes room.
    cdef Py_ssize_t _frame_rest

    # Largest accepted message / frame in bytes; 0 means no limit.
    cdef public Py_ssize_t max_message_size
    # True: parse client frames (masking required); False: server frames.
    cdef public bint is_server
    # permessage-deflate extension (an object with decompress()) or None.
    cdef object _deflate

    # Fragmented message in progress: opcode (0 when none), RSV1 of its first
    # frame, and the unmasked payload collected so far in _msg[:_msg_size].
    cdef int _msg_op
    cdef bint _msg_compressed
    cdef unsigned char* _msg
    cdef Py_ssize_t _msg_size
    cdef Py_ssize_t _msg_cap
    # UTF-8 validation across the fragments of an uncompressed text message.
    cdef bint _utf8_active
    cdef uint32_t _utf8_state

    # Set after a close frame or a protocol error; _error holds the latter.
    cdef bint _closed
    cdef object _error

    cdef void _drop_view(self) noexcept
    cdef int _reserve(self, Py_ssize_t need) except -1
    cdef int _append(self, const unsigned char* data, Py_ssize_t length) except -1
    cdef list _run(self)
    cdef int _parse(self, list events) except -1
    cdef int _check_header(self, int b0, int opcode, bint fin, bint rsv1, bint masked,
                           int length) except -1
    cdef int _on_control(self, int opcode, const unsigned char* payload, Py_ssize_t length,
                         const unsigned char* key, list events) except -1
    cdef int _on_data(self, int opcode, bint fin, bint rsv1, const unsigned char* payload,
                      Py_ssize_t length, const unsigned char* key, list events) except -1
    cdef void _reset_message(self) noexcept
    cdef void _fail(self, object exc) noexcept
