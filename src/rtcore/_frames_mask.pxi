# Included by _frames.pyx (one extension module, several files, as uvloop does).

# -- masking ----------------------------------------------------------------------

cdef void mask_copy(unsigned char* dst, const unsigned char* src, Py_ssize_t length,
                    const unsigned char* key) noexcept nogil:
    cdef uint32_t k32
    cdef uint64_t k64, word
    cdef Py_ssize_t i
    cdef Py_ssize_t words = length >> 3
    # memcpy keeps the byte order of the key and of the data identical, so the
    # XOR is right on either endianness, and it makes unaligned loads legal C;
    # at -O3 the compiler turns this loop into vector loads/stores.
    memcpy(&k32, key, 4)
    k64 = (<uint64_t>k32 << 32) | k32
    for i in range(words):
        # 8 * i + 8 <= 8 * words <= length: inside both buffers.
        memcpy(&word, src + 8 * i, 8)
        word ^= k64
        memcpy(dst + 8 * i, &word, 8)
    for i in range(words * 8, length):
        # i < length; (i & 3) < 4 indexes the key.
        dst[i] = src[i] ^ key[i & 3]


cdef inline bytes _mask_bytes(object mask):
    """The 4-byte masking key as bytes, checked as the twin does."""
    if len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    if not PyBytes_CheckExact(mask):
        mask = bytes(mask)
        if PyBytes_GET_SIZE(mask) != 4:  # a 4-item object that is not 4 bytes
            raise ValueError("mask must be 4 bytes")
    return <bytes>mask


def apply_mask(data, mask):
    """Return ``data`` XOR-ed with the 4-byte ``mask`` (RFC 6455 section 5.3)."""
    cdef bytes keep = _mask_bytes(mask)
    cdef const unsigned char* key = <const unsigned char*>PyBytes_AS_STRING(keep)
    cdef Py_buffer view
    cdef bytes out
    if PyBytes_CheckExact(data):
        out = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(data))
        mask_copy(<unsigned char*>PyBytes_AS_STRING(out),
                  <const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), key)
        return out
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except BufferError:
        # Not contiguous (e.g. memoryview(b)[::2]): the twin accepts it too.
        data = bytes(data)
        return apply_mask(data, keep)
    try:
        out = PyBytes_FromStringAndSize(NULL, view.len)
        mask_copy(<unsigned char*>PyBytes_AS_STRING(out),
                  <const unsigned char*>view.buf, view.len, key)
    finally:
        PyBuffer_Release(&view)
    return out


def mask_inplace(buf, mask):
    """XOR the writable buffer ``buf`` with the 4-byte ``mask`` in place."""
    cdef bytes keep = _mask_bytes(mask)
    cdef const unsigned char* key = <const unsigned char*>PyBytes_AS_STRING(keep)
    cdef Py_buffer view
    try:
        PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    except BufferError:
        mv = memoryview(buf)
        if mv.readonly:
            raise TypeError("mask_inplace needs a writable buffer") from None
        # Writable but not contiguous: go through a copy, like the twin.
        mv[:] = apply_mask(mv, keep)
        return
    try:
        mask_copy(<unsigned char*>view.buf, <const unsigned char*>view.buf, view.len, key)
    finally:
        PyBuffer_Release(&view)
