# Included by _fanout.pyx: the prefetch pipeline of Flusher.flush (see _prefetch_ahead).


cdef extern from *:
    """
    /* GCC's dead-code elimination drops __builtin_prefetch in code it sees
       as having no other effect (what the prefetch pipeline is), so the
       instruction is written as volatile asm where the target is known. */
    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    #define RTCORE_PREFETCH(p) __asm__ __volatile__("prefetcht0 %0" : : "m"(*(const char *)(p)))
    #elif defined(__GNUC__) && defined(__aarch64__)
    #define RTCORE_PREFETCH(p) __asm__ __volatile__("prfm pldl1keep, %0" : : "Q"(*(const char *)(p)))
    #elif defined(__GNUC__) || defined(__clang__)
    #define RTCORE_PREFETCH(p) __builtin_prefetch((const void *)(p))
    #else
    #define RTCORE_PREFETCH(p) ((void)(p))
    #endif
    /* Where the values pointer of a managed dict is known to sit (see
       _prefetch_values); elsewhere 0, and nothing is prefetched. */
    #if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    #define RTCORE_MANAGED_DICT Py_TPFLAGS_MANAGED_DICT
    #else
    #define RTCORE_MANAGED_DICT 0
    #endif
    """
    # A hint to load a cache line; never faults, even on a bad address.
    void _prefetch "RTCORE_PREFETCH"(const void* p) noexcept nogil
    # Py_TPFLAGS_MANAGED_DICT on CPython 3.11, else 0.
    unsigned long _MANAGED_DICT "RTCORE_MANAGED_DICT"
    int PyType_HasFeature(PyTypeObject* tp, unsigned long feature) noexcept nogil


cdef inline void _prefetch_lines(PyObject* obj, int lines) noexcept:
    cdef int k
    for k in range(lines):
        _prefetch(<char*>obj + 64 * k)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline void _prefetch_ahead(list dirty, Py_ssize_t i, Py_ssize_t n) noexcept:
    """Start loading what the flushes of the next writers will touch.

    With thousands of connections, each one's writer, queue, sink, protocol
    state and transport are cold when its turn comes (the kernel's socket
    send in between evicts them), and a flush round is a chain of cache
    misses. Loading them a few writers ahead, one level of the pointer chain
    per writer, overlaps those misses with the current writer's work. A
    pointer is only read from an object prefetched one step earlier; only
    borrowed pointers are read (no reference count is touched) and nothing
    is written.
    """
    cdef PyObject* item
    cdef PyObject* sink
    cdef PyObject* conn
    # Unchecked reads below: every index is checked against n == len(dirty).
    if i + 3 < n:
        _prefetch_lines(PyList_GET_ITEM(dirty, i + 3), 3)
    if i + 2 < n:
        item = PyList_GET_ITEM(dirty, i + 2)
        if type(<object>item) is Writer:
            _prefetch_lines(<PyObject*>(<Writer>item).sink, 2)
            if (<Writer>item)._queue is not None:
                _prefetch(<PyObject*>(<Writer>item)._queue)
    if i + 1 < n:
        item = PyList_GET_ITEM(dirty, i + 1)
        if type(<object>item) is Writer:
            if (<Writer>item)._queue is not None:
                _prefetch((<PyListObject*>(<Writer>item)._queue).ob_item)
            sink = <PyObject*>(<Writer>item).sink
            if type(<object>sink) is WebSocketSink:
                conn = <PyObject*>(<WebSocketSink>sink)._conn
                # On 3.11 an ordinary Python object keeps a pointer to its
                # attribute values 32 bytes before itself (_prefetch_values).
                _prefetch(<char*>conn - 32)
                _prefetch(conn)
                _prefetch_lines(<PyObject*>(<WebSocketSink>sink)._transport, 3)
    item = PyList_GET_ITEM(dirty, i)
    if type(<object>item) is Writer:
        sink = <PyObject*>(<Writer>item).sink
        if type(<object>sink) is WebSocketSink:
            _prefetch_values(<PyObject*>(<WebSocketSink>sink)._conn)


cdef inline void _prefetch_values(PyObject* obj) noexcept:
    # CPython 3.11: an instance of an ordinary class stores its attributes
    # in a values array whose pointer is the fourth word before the object
    # (Py_TPFLAGS_MANAGED_DICT). Other versions and types: nothing to do.
    if PyType_HasFeature(Py_TYPE(<object>obj), _MANAGED_DICT):
        _prefetch((<void**>obj)[-4])
