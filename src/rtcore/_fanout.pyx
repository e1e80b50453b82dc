# cython: language_level=3, embedsignature=True
"""Fan-out and per-connection write queues, compiled: the twin of ``rtcore._fanout_py``.

Same names, signatures, exceptions and observable behaviour as the
pure-Python reference ``_fanout_py`` (read its docstring for the contract);
``tests/test_fanout.py`` runs against both and ``tests/test_fanout_diff.py``
replays random operation sequences on both and compares every sink call.

What differs is how the work is done:

* :class:`Writer`, :class:`Subscriber` and :class:`Flusher` are ``cdef``
  classes with C-typed fields (layouts in ``_fanout.pxd``), so reading a
  subscriber's state in :func:`broadcast` is a struct access, not a
  dictionary or slot lookup.
* :func:`broadcast` walks the subscribers without any Python-level method
  call per subscriber: positioning is done in C and the payload goes to
  ``Writer._enqueue`` (the ``cdef`` fast path of ``enqueue``). The length of
  each per-codec payload is taken once per broadcast, not once per subscriber.
* Objects that are not compiled :class:`Subscriber` instances (duck-typed
  stand-ins) and writers whose class overrides ``enqueue`` in Python still
  work: they take the generic, attribute-based path.

Offsets are unsigned 64-bit integers, as in the protocol: a compiled
``Subscriber.offset`` outside ``[0, 2**64)`` raises ``OverflowError``, and so
does a :func:`broadcast` offset above ``2**64 - 1``.
"""

cimport cython
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

import asyncio

# The Sink protocol is a typing construct with no behaviour: both twins
# export the very same class.
from rtcore._fanout_py import Sink


__all__ = [
    "ACTION_INSUFFICIENT_STATE",
    "ACTION_INAPPROPRIATE_PROTOCOL",
    "Sink",
    "Writer",
    "Flusher",
    "Subscriber",
    "broadcast",
]

# Actions returned by broadcast() for a subscriber (plain ints, as in the twin).
ACTION_INSUFFICIENT_STATE = 1  # position gap or epoch change: unsubscribe 2500 / disconnect 3010
ACTION_INAPPROPRIATE_PROTOCOL = 2  # payload cannot be encoded for its codec: disconnect 3506

# The same values for C code; 0 means "delivered, buffered or skipped".
cdef enum:
    _DELIVERED = 0
    _INSUFFICIENT_STATE = 1
    _INAPPROPRIATE_PROTOCOL = 2

cdef enum:
    # broadcast() keeps the byte size of at most this many per-codec payloads
    # in a C array; payloads beyond it (never the case with two codecs) are
    # measured per subscriber instead.
    _MAX_CACHED_SIZES = 8

# Cached stdlib callable (one module attribute lookup at import time).
cdef object _get_running_loop = asyncio.get_running_loop


cdef inline Py_ssize_t _size_of(object payload) except -1:
    """len(payload), without a Python call for ``bytes``."""
    if PyBytes_CheckExact(payload):
        return PyBytes_GET_SIZE(payload)
    return len(payload)


@cython.embedsignature(False)
cdef class Flusher:
    """Flusher(loop=None)
--

    Flushes every writer that got messages, once per event-loop tick."""

    def __init__(self, loop=None):
        self._loop = loop
        self._dirty = []
        self._scheduled = False
        self.flushes = 0

    cpdef add(self, writer):
        self._dirty.append(writer)
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop
            if loop is None:
                loop = self._loop = _get_running_loop()
            loop.call_soon(self.flush)

    cpdef flush(self):
        """Flush every pending writer now (also called by the loop callback).

        A writer whose flush raises does not stop the others: every pending
        writer is flushed, then the first exception is raised again.
        """
        cdef list dirty
        cdef object writer
        cdef object error = None
        self._scheduled = False
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        self.flushes += 1
        # ``dirty`` is a local list nobody else can reach (add() appends to
        # the new self._dirty), so iterating it directly is safe.
        for writer in dirty:
            try:
                if isinstance(writer, Writer):
                    # cpdef call through the vtable (honours Python overrides).
                    (<Writer>writer).flush()
                else:
                    writer.flush()
            except Exception as exc:
                if error is None:
                    error = exc
        if error is not None:
            raise error

    @property
    def pending(self):
        return PyList_GET_SIZE(self._dirty)


@cython.embedsignature(False)
cdef class Writer:
    """Writer(sink, flusher, *, max_queue_size=1048576, max_batch=128, max_frame_size=65536)
--

    A connection's bounded outbound queue with per-tick coalescing.

    Args:
        sink: the transport side (see :class:`Sink`).
        flusher: the loop-wide :class:`Flusher`.
        max_queue_size: bytes queued here plus bytes buffered in the
            transport above which the client is "slow" (0: no limit).
        max_batch: most messages joined into one transport frame.
        max_frame_size: most bytes joined into one transport frame (a single
            larger message still goes out alone).
    """

    def __init__(
        self,
        sink,
        Flusher flusher,
        *,
        Py_ssize_t max_queue_size=1 << 20,
        Py_ssize_t max_batch=128,
        Py_ssize_t max_frame_size=64 * 1024,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_frame_size < 1:
            raise ValueError("max_frame_size must be >= 1")
        self.sink = sink
        self.flusher = flusher
        self.max_queue_size = max_queue_size
        self.max_batch = max_batch
        self.max_frame_size = max_frame_size
        self._queue = []
        self._queued_bytes = 0
        self._scheduled = False
        self.closed = False
        self.slow = False
        self.messages_sent = 0
        self.frames_sent = 0

    @property
    def queued_bytes(self):
        return self._queued_bytes

    @property
    def queued_messages(self):
        return PyList_GET_SIZE(self._queue)

    cdef bint _enqueue(self, object payload, Py_ssize_t size) except -1:
        # ``size`` is len(payload), or -1 when the caller did not measure it
        # (then it is measured here, after the closed check, as the twin does).
        if self.closed:
            return False
        self._queue.append(payload)
        if size < 0:
            size = len(payload)
        self._queued_bytes += size
        if self.max_queue_size and self._queued_bytes > self.max_queue_size:
            self._overflow()
            return False
        if not self._scheduled:
            self._scheduled = True
            if self.flusher is None:
                raise AttributeError("'NoneType' object has no attribute 'add'")
            self.flusher.add(self)
        return True

    cpdef bint enqueue(self, payload) except -1:
        """Queue one delimited message; False if the writer is closed or slow."""
        return self._enqueue(payload, -1)

    cdef int _overflow(self) except -1:
        self.slow = True
        self.closed = True
        self._queue = []
        self._queued_bytes = 0
        if not self._scheduled:
            self._scheduled = True
            if self.flusher is None:
                raise AttributeError("'NoneType' object has no attribute 'add'")
            self.flusher.add(self)
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cpdef flush(self):
        """Write everything queued, in order, as few frames as the limits allow."""
        cdef list queue
        cdef object sink
        cdef Py_ssize_t n, start, end, size, nxt, max_batch, max_frame
        self._scheduled = False
        if self.slow:
            if self.sink is not None:
                sink = self.sink
                self.sink = None
                sink.on_slow()
            return
        queue = self._queue
        n = PyList_GET_SIZE(queue)
        if n == 0:
            return
        self._queue = []
        self._queued_bytes = 0
        sink = self.sink
        max_batch = self.max_batch
        max_frame = self.max_frame_size
        start = 0
        while start < n:
            # Unchecked reads: 0 <= start < end < n == len(queue). ``queue`` is
            # detached from the writer above, and the sink only ever receives
            # it whole on the last iteration, so its length cannot change
            # while it is being indexed.
            size = _size_of(<object>PyList_GET_ITEM(queue, start))
            end = start + 1
            while end < n and end - start < max_batch:
                nxt = _size_of(<object>PyList_GET_ITEM(queue, end))
                if size + nxt > max_frame:
                    break
                size += nxt
                end += 1
            if start == 0 and end == n:
                sink.write_batch(queue, size)
            else:
                sink.write_batch(queue[start:end], size)
            self.frames_sent += 1
            start = end
        self.messages_sent += n
        if self.max_queue_size and sink.buffer_size() > self.max_queue_size:
            self._overflow()

    def close(self):
        """Stop accepting messages and drop what is queued (the connection is gone)."""
        self.closed = True
        self._queue = []
        self._queued_bytes = 0


@cython.embedsignature(False)
cdef class Subscriber:
    """Subscriber(writer, codec, session, channel)
--

    One session's subscription to one channel, as stored in the hub's index."""

    def __init__(self, Writer writer, Py_ssize_t codec, session, channel):
        self.writer = writer
        self.codec = codec
        self.session = session
        self.channel = channel
        self.positioned = False
        self.offset = 0
        self.epoch = ""
        self.buffer = None
        self.join_leave = False


cdef inline int _deliver(
    Subscriber sub,
    tuple payloads,
    Py_ssize_t* sizes,
    bint positioning,
    unsigned long long offset,
    object offset_obj,
    object epoch,
    object pub,
) except -1:
    """One subscriber of broadcast(): returns _DELIVERED or the action to report."""
    cdef unsigned long long last
    cdef Py_ssize_t index, npayloads, size
    cdef object payload
    cdef Writer writer
    if sub.buffer is not None:
        sub.buffer.append((pub, offset_obj, epoch))
        return _DELIVERED
    if sub.positioned and positioning:
        if sub.epoch != epoch:
            if sub.epoch:
                return _INSUFFICIENT_STATE
            # The stream did not exist when the client subscribed: adopt it.
            sub.epoch = epoch
        last = sub.offset
        if offset <= last:
            return _DELIVERED  # a stale duplicate
        if offset - last > 1:  # no overflow: offset > last
            return _INSUFFICIENT_STATE
        sub.offset = offset
    npayloads = PyTuple_GET_SIZE(payloads)
    index = sub.codec
    if index < 0:
        index += npayloads
    if index < 0 or index >= npayloads:
        raise IndexError("payloads index out of range")
    # Unchecked read: 0 <= index < len(payloads) was checked just above.
    payload = <object>PyTuple_GET_ITEM(payloads, index)
    if payload is None:
        return _INAPPROPRIATE_PROTOCOL
    writer = sub.writer
    if writer is None:
        raise AttributeError("'NoneType' object has no attribute 'enqueue'")
    if type(writer) is Writer:
        # sizes[index] is valid for index < _MAX_CACHED_SIZES (see broadcast).
        size = sizes[index] if index < _MAX_CACHED_SIZES else -1
        writer._enqueue(payload, size)
    else:
        # A Python subclass may override enqueue(): dispatch through cpdef.
        writer.enqueue(payload)
    return _DELIVERED


cdef int _deliver_object(object sub, object payloads, object offset, object epoch, object pub) except -1:
    """broadcast() for an object that is not a compiled Subscriber (the twin's code)."""
    if sub.buffer is not None:
        sub.buffer.append((pub, offset, epoch))
        return _DELIVERED
    if sub.positioned and offset > 0:
        if epoch != sub.epoch:
            if sub.epoch:
                return _INSUFFICIENT_STATE
            sub.epoch = epoch
        last = sub.offset
        if offset > last + 1:
            return _INSUFFICIENT_STATE
        if offset <= last:
            return _DELIVERED
        sub.offset = offset
    payload = payloads[sub.codec]
    if payload is None:
        return _INAPPROPRIATE_PROTOCOL
    sub.writer.enqueue(payload)
    return _DELIVERED


def broadcast(subscribers, payloads, offset, epoch, pub):
    """Queue one publication for every subscriber.

    Args:
        subscribers: the channel's subscribers.
        payloads: the publication encoded once per codec, indexed by
            ``Subscriber.codec``; ``None`` where it cannot be encoded for that
            codec (its subscribers get ``ACTION_INAPPROPRIATE_PROTOCOL``).
        offset, epoch: the publication's stream position (offset 0: the
            channel keeps no history and positioning does not apply).
        pub: the publication object, kept in the buffer of subscribers that
            are in the middle of subscribing.

    Returns:
        ``(subscriber, action)`` pairs for subscribers needing an action, or None.
    """
    cdef list actions = None
    cdef tuple payload_tuple = tuple(payloads)
    cdef Py_ssize_t sizes[_MAX_CACHED_SIZES]
    cdef Py_ssize_t i, npayloads
    cdef bint positioning = offset > 0
    # Only read when ``positioning`` (offset > 0); OverflowError above 2**64-1.
    cdef unsigned long long c_offset = offset if positioning else 0
    cdef object payload
    cdef int action
    npayloads = PyTuple_GET_SIZE(payload_tuple)
    for i in range(min(npayloads, _MAX_CACHED_SIZES)):
        # Unchecked read: i < npayloads == len(payload_tuple).
        payload = <object>PyTuple_GET_ITEM(payload_tuple, i)
        # -1: not bytes, measured by the writer itself (after its closed check).
        sizes[i] = PyBytes_GET_SIZE(payload) if PyBytes_CheckExact(payload) else -1
    for sub in subscribers:
        if isinstance(sub, Subscriber):
            action = _deliver(
                <Subscriber>sub, payload_tuple, sizes, positioning, c_offset, offset, epoch, pub
            )
        else:
            action = _deliver_object(sub, payloads, offset, epoch, pub)
        if action != _DELIVERED:
            if actions is None:
                actions = []
            actions.append((sub, ACTION_INSUFFICIENT_STATE if action == _INSUFFICIENT_STATE
                            else ACTION_INAPPROPRIATE_PROTOCOL))
    return actions
