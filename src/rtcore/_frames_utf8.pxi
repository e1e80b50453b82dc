# Included by _frames.pyx (one extension module, several files, as uvloop does).

# -- UTF-8 --------------------------------------------------------------------------
#
# A deterministic automaton over the well-formed byte sequences of Unicode
# (Table 3-7 of the Unicode standard): no overlong forms (C0, C1, E0 80-9F,
# F0 80-8F), no surrogates (ED A0-BF), nothing above U+10FFFF (F4 90-BF,
# F5-FF). It rejects at the first byte that cannot continue a valid sequence,
# which is also where CPython's strict decoder reports the error, so the
# incremental verdicts match codecs' incremental decoder fragment by fragment.
# One quirk of that decoder is mirrored on purpose: a chunk that *ends* with
# ED A0..BF (the start of a surrogate) is not rejected until more input or
# the end of the message arrives (state _U8_SURROGATE), as the twin's
# incremental decoder keeps those two bytes pending for error handlers.

cdef enum:
    # States besides UTF8_ACCEPT / UTF8_REJECT: bytes still expected.
    _U8_NEED1 = 2  # one more 80..BF
    _U8_NEED2 = 3  # two more 80..BF
    _U8_NEED3 = 4  # three more 80..BF
    _U8_E0 = 5  # after E0: A0..BF, then one more
    _U8_ED = 6  # after ED: 80..9F, then one more
    _U8_F0 = 7  # after F0: 90..BF, then two more
    _U8_F4 = 8  # after F4: 80..8F, then two more
    _U8_SURROGATE = 9  # after ED A0..BF: invalid, but only once another byte comes
    _U8_STATES = 10
    # Byte classes.
    _U8_ASCII = 0  # 00..7F
    _U8_C80 = 1  # 80..8F
    _U8_C90 = 2  # 90..9F
    _U8_CA0 = 3  # A0..BF
    _U8_BAD = 4  # C0, C1, F5..FF
    _U8_L2 = 5  # C2..DF
    _U8_LE0 = 6  # E0
    _U8_L3 = 7  # E1..EC, EE..EF
    _U8_LED = 8  # ED
    _U8_LF0 = 9  # F0
    _U8_L4 = 10  # F1..F3
    _U8_LF4 = 11  # F4
    _U8_CLASSES = 12

cdef unsigned char _u8_class[256]
cdef unsigned char _u8_next[_U8_STATES * _U8_CLASSES]


cdef void _u8_init() noexcept:
    cdef int c, s
    for c in range(256):
        if c < 0x80:
            _u8_class[c] = _U8_ASCII
        elif c < 0x90:
            _u8_class[c] = _U8_C80
        elif c < 0xA0:
            _u8_class[c] = _U8_C90
        elif c < 0xC0:
            _u8_class[c] = _U8_CA0
        elif c < 0xC2:
            _u8_class[c] = _U8_BAD
        elif c < 0xE0:
            _u8_class[c] = _U8_L2
        elif c == 0xE0:
            _u8_class[c] = _U8_LE0
        elif c == 0xED:
            _u8_class[c] = _U8_LED
        elif c < 0xF0:
            _u8_class[c] = _U8_L3
        elif c == 0xF0:
            _u8_class[c] = _U8_LF0
        elif c < 0xF4:
            _u8_class[c] = _U8_L4
        elif c == 0xF4:
            _u8_class[c] = _U8_LF4
        else:
            _u8_class[c] = _U8_BAD
    for s in range(_U8_STATES * _U8_CLASSES):
        _u8_next[s] = UTF8_REJECT
    _u8_next[UTF8_ACCEPT * _U8_CLASSES + _U8_ASCII] = UTF8_ACCEPT
    _u8_next[UTF8_ACCEPT * _U8_CLASSES + _U8_L2] = _U8_NEED1
    _u8_next[UTF8_ACCEPT * _U8_CLASSES + _U8_LE0] = _U8_E0
    _u8_next[UTF8_ACCEPT * _U8_CLASSES + _U8_L3] = _U8_NEED2
    _u8_next[UTF8_ACCEPT * _U8_CLASSES + _U8_LED] = _U8_ED
    _u8_next[UTF8_ACCEPT * _U8_CLASSES + _U8_LF0] = _U8_F0
    _u8_next[UTF8_ACCEPT * _U8_CLASSES + _U8_L4] = _U8_NEED3
    _u8_next[UTF8_ACCEPT * _U8_CLASSES + _U8_LF4] = _U8_F4
    for c in (_U8_C80, _U8_C90, _U8_CA0):
        _u8_next[_U8_NEED1 * _U8_CLASSES + c] = UTF8_ACCEPT
        _u8_next[_U8_NEED2 * _U8_CLASSES + c] = _U8_NEED1
        _u8_next[_U8_NEED3 * _U8_CLASSES + c] = _U8_NEED2
    _u8_next[_U8_E0 * _U8_CLASSES + _U8_CA0] = _U8_NEED1
    _u8_next[_U8_ED * _U8_CLASSES + _U8_C80] = _U8_NEED1
    _u8_next[_U8_ED * _U8_CLASSES + _U8_C90] = _U8_NEED1
    _u8_next[_U8_ED * _U8_CLASSES + _U8_CA0] = _U8_SURROGATE  # every next byte rejects
    _u8_next[_U8_F0 * _U8_CLASSES + _U8_C90] = _U8_NEED2
    _u8_next[_U8_F0 * _U8_CLASSES + _U8_CA0] = _U8_NEED2
    _u8_next[_U8_F4 * _U8_CLASSES + _U8_C80] = _U8_NEED2


_u8_init()


cdef uint32_t utf8_feed(uint32_t state, const unsigned char* data, Py_ssize_t length) noexcept nogil:
    cdef Py_ssize_t i = 0
    cdef uint64_t w0, w1
    cdef uint64_t high = 0x8080808080808080ULL
    if state == UTF8_REJECT:
        return state
    while i < length:
        if state == UTF8_ACCEPT:
            # ASCII fast path, only between sequences. Every load stays below
            # `length`: the loop conditions check the remaining size first.
            while length - i >= 16:
                memcpy(&w0, data + i, 8)
                memcpy(&w1, data + i + 8, 8)
                if (w0 | w1) & high:
                    break
                i += 16
            if length - i >= 8:
                memcpy(&w0, data + i, 8)
                if not (w0 & high):
                    i += 8
            while i < length and data[i] < 0x80:  # i < length checked first
                i += 1
            if i == length:
                break
        # i < length (loop condition); state < _U8_STATES and the class < _U8_CLASSES
        # by construction of the tables, so the index is inside _u8_next.
        state = _u8_next[state * _U8_CLASSES + _u8_class[data[i]]]
        if state == UTF8_REJECT:
            break
        i += 1
    return state


cdef bint _utf8_complete(const unsigned char* data, Py_ssize_t length) noexcept nogil:
    return utf8_feed(UTF8_ACCEPT, data, length) == UTF8_ACCEPT


def validate_utf8(data):
    """True when ``data`` is complete, well-formed UTF-8."""
    cdef Py_buffer view
    cdef bint ok
    if PyBytes_CheckExact(data):
        return _utf8_complete(<const unsigned char*>PyBytes_AS_STRING(data),
                              PyBytes_GET_SIZE(data))
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    ok = _utf8_complete(<const unsigned char*>view.buf, view.len)
    PyBuffer_Release(&view)
    return ok
