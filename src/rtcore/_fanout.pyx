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
* A :class:`Writer` keeps a single queued message without a list (the
  common case: one publication per connection per tick).
* A :class:`Writer` whose sink is exactly a :class:`WebSocketSink` writes
  its frames from C (``WebSocketSink._write_frame``): the header comes from
  ``_frames.write_header``, header and payloads are copied into one static
  buffer and written to the socket with ``write(2)`` when the transport
  holds nothing; the transport's methods are called only for its state and
  for what the socket does not take. No Python-level call per connection.
  Any other sink (or a Python subclass of :class:`WebSocketSink`) gets its
  ``write_batch`` / ``buffer_size`` methods called, as in the twin.
* :meth:`Flusher.flush` prefetches the objects of the next writers (see
  ``_prefetch_ahead`` in ``_fanout_prefetch.pxi``): with thousands of
  connections the round is bound by cache misses, not by instructions.

Offsets are unsigned 64-bit integers, as in the protocol: a compiled
``Subscriber.offset`` outside ``[0, 2**64)`` raises ``OverflowError``, and so
does a :func:`broadcast` offset above ``2**64 - 1``.
"""

cimport cython
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.list cimport (
    PyList_GET_ITEM,
    PyList_GET_SIZE,
    PyList_New,
    PyList_SET_ITEM,
)
from cpython.object cimport PyObject, PyTypeObject, Py_TYPE
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.string cimport memcpy
from posix.unistd cimport write

from rtcore._frames cimport WS_MAX_HEADER, write_header


cdef extern from "Python.h":
    ctypedef struct PyListObject:
        PyObject** ob_item
        Py_ssize_t allocated

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
    "WebSocketSink",
    "broadcast",
]

# Actions returned by broadcast() for a subscriber (plain ints, as in the twin).
ACTION_INSUFFICIENT_STATE = 1  # position gap or epoch change: unsubscribe 2500 / disconnect 3010
ACTION_INAPPROPRIATE_PROTOCOL = 2  # payload cannot be encoded for its codec: disconnect 3506

# WebSocketSink: frames up to this many payload bytes are written as one
# joined buffer (one small copy is cheaper than a gather write); larger ones
# as a gather write of the shared message objects (no copy per connection).
COPY_LIMIT = 4096

cdef enum:
    _COPY_LIMIT = 4096

# Where WebSocketSink builds a frame of at most _COPY_LIMIT payload bytes. One
# per module is enough: a frame is built and written (or copied into a bytes
# object) without running Python code or releasing the GIL in between.
cdef unsigned char _scratch[WS_MAX_HEADER + _COPY_LIMIT]

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
cdef class WebSocketSink:
    """WebSocketSink(transport, opcode, conn, open_state, on_slow)
--

    A Sink writing each batch as one uncompressed WebSocket frame to a transport.

    Arguments and behaviour: see ``rtcore._fanout_py.WebSocketSink``.
    """

    def __init__(self, transport, opcode, conn, open_state, on_slow):
        if not 0 <= opcode <= 0xF:
            raise ValueError("opcode out of range")
        self._transport = transport
        self._opcode = opcode
        self._conn = conn
        self._open_state = open_state
        self._on_slow = on_slow
        # The methods of the transport's class, shared by all its instances
        # (no bound-method object per connection to load from memory).
        cls = type(transport)
        self._write = cls.write
        self._writelines = cls.writelines
        self._get_buffer_size = cls.get_write_buffer_size
        self._is_closing = cls.is_closing
        self._fd = _direct_fd(transport)
        self._sent_whole = False

    @property
    def transport(self):
        return self._transport

    @property
    def opcode(self):
        return self._opcode

    @property
    def conn(self):
        return self._conn

    @property
    def open_state(self):
        return self._open_state

    @property
    def direct(self):
        """True when small frames may be written straight to the socket."""
        return self._fd >= 0

    cdef bint _direct_now(self) except -1:
        # True when this frame may go straight to the socket: there is one, the
        # transport is not closing and holds nothing, so writing now keeps the
        # order of the bytes.
        return (
            self._fd >= 0
            and not self._is_closing(self._transport)
            and self._get_buffer_size(self._transport) == 0
        )

    cdef int _send(self, const char* data, Py_ssize_t size, bint direct) except -1:
        # One complete frame of ``size`` bytes at ``data``. ``data`` may be the
        # module's scratch buffer: nothing here runs Python code before it has
        # been written or copied into a bytes object.
        cdef Py_ssize_t written
        if direct:
            written = write(self._fd, data, <size_t>size)
            if written == size:
                self._sent_whole = True
                return 0
            if written > 0:
                data += written
                size -= written
            # else EAGAIN or an error: the transport deals with it.
        self._write(self._transport, PyBytes_FromStringAndSize(data, size))
        return 0

    cdef int _write_frame(self, PyObject** items, Py_ssize_t count, Py_ssize_t nbytes) except -1:
        # The frame of the ``count`` payloads at ``items`` (nbytes >= 0). The
        # caller keeps them alive and in place: they are borrowed pointers.
        # The transport is called in the twin's order.
        cdef unsigned char header[WS_MAX_HEADER]
        cdef Py_ssize_t hlen, i, total, size
        cdef object state = self._conn.state
        cdef object payload, data
        cdef list parts
        cdef unsigned char* out
        cdef bint direct
        self._sent_whole = False
        if state is not self._open_state and state != self._open_state:
            return 0
        hlen = write_header(header, self._opcode, nbytes, True, False)
        if nbytes > _COPY_LIMIT:
            # A gather write of [header, *payloads]: the messages are not copied.
            parts = PyList_New(count + 1)
            data = PyBytes_FromStringAndSize(<char*>header, hlen)
            Py_INCREF(data)
            PyList_SET_ITEM(parts, 0, data)
            for i in range(count):
                payload = <object>items[i]
                Py_INCREF(payload)
                PyList_SET_ITEM(parts, i + 1, payload)
            self._writelines(self._transport, parts)
            return 0
        total = 0
        for i in range(count):
            payload = <object>items[i]
            if not PyBytes_CheckExact(payload):
                total = -1
                break
            total += PyBytes_GET_SIZE(payload)
            if total > _COPY_LIMIT:
                # Only when write_batch() was given a wrong nbytes.
                total = -1
                break
        if total < 0:
            # bytearray, memoryview...: what the twin does, in Python.
            data = PyBytes_FromStringAndSize(<char*>header, hlen) + b"".join(
                [<object>items[i] for i in range(count)]
            )
            direct = self._direct_now()
            self._send(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), direct)
            return 0
        direct = self._direct_now()
        # Header and payloads side by side in the scratch buffer
        # (hlen + total <= WS_MAX_HEADER + _COPY_LIMIT, its size).
        memcpy(_scratch, header, hlen)
        out = _scratch + hlen
        for i in range(count):
            payload = <object>items[i]
            size = PyBytes_GET_SIZE(payload)
            memcpy(out, PyBytes_AS_STRING(payload), size)
            out += size
        self._send(<char*>_scratch, hlen + total, direct)
        return 0

    cdef Py_ssize_t _buffer_size(self) except? -1:
        return self._get_buffer_size(self._transport)

    def write_batch(self, payloads, Py_ssize_t nbytes):
        """Write ``payloads`` (total ``nbytes``) as one transport frame."""
        cdef list items
        if nbytes < 0:
            raise ValueError("negative length")
        # A private copy: its items stay put while the transport is called.
        items = list(payloads)
        self._write_frame((<PyListObject*>items).ob_item, PyList_GET_SIZE(items), nbytes)

    def buffer_size(self):
        """Bytes the transport has accepted but not yet sent."""
        return self._get_buffer_size(self._transport)

    def on_slow(self):
        """The writer overflowed: disconnect the client (3008)."""
        self._on_slow()


cdef Py_ssize_t _direct_fd(object transport) except? -2:
    # The socket's file descriptor when frames may bypass the transport, else
    # -1. Never through TLS (the bytes must be encrypted by the transport).
    if transport.get_extra_info("ssl_object") is not None:
        return -1
    sock = transport.get_extra_info("socket")
    if sock is None:
        return -1
    return sock.fileno()


include "_fanout_prefetch.pxi"


@cython.embedsignature(False)
cdef class Flusher:
    """Flusher(loop=None, *, delay=0.0)
--

    Flushes every writer that got messages, once per event-loop tick.

    ``delay``: see ``rtcore._fanout_py.Flusher``."""

    def __init__(self, loop=None, *, delay=0.0):
        if not delay >= 0:  # also refuses NaN
            raise ValueError("delay must be >= 0")
        self._loop = loop
        self._dirty = []
        self._scheduled = False
        self._delay = delay
        self._timer = None
        self.flushes = 0

    @property
    def delay(self):
        return self._delay

    cpdef add(self, writer):
        self._dirty.append(writer)
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop
            if loop is None:
                loop = self._loop = _get_running_loop()
            if self._delay > 0:
                self._timer = loop.call_later(self._delay, self._on_timer)
            else:
                loop.call_soon(self.flush)

    def _on_timer(self):
        self._timer = None
        self.flush()

    cpdef flush(self):
        """Flush every pending writer now (also called by the loop callback).

        A writer whose flush raises does not stop the others: every pending
        writer is flushed, then the first exception is raised again.
        """
        cdef list dirty
        cdef object writer
        cdef object error = None
        cdef Py_ssize_t i, n
        self._scheduled = False
        timer = self._timer
        if timer is not None:  # flushed before its delay ran out
            self._timer = None
            timer.cancel()
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        self.flushes += 1
        # ``dirty`` is a local list nobody else can reach (add() appends to
        # the new self._dirty), so iterating it directly is safe.
        n = PyList_GET_SIZE(dirty)
        for i in range(n):
            _prefetch_ahead(dirty, i, n)
            # Unchecked read: i < n == len(dirty), which nothing changes.
            writer = <object>PyList_GET_ITEM(dirty, i)
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
        self._head = None
        self._queue = None
        self._queued_bytes = 0
        self._scheduled = False
        self.closed = False
        self.slow = False
        self.messages_sent = 0
        self.frames_sent = 0
        self.bytes_sent = 0

    @property
    def queued_bytes(self):
        return self._queued_bytes

    @property
    def queued_messages(self):
        if self._queue is not None:
            return PyList_GET_SIZE(self._queue)
        return 0 if self._head is None else 1

    cdef bint _enqueue(self, object payload, Py_ssize_t size) except -1:
        # ``size`` is len(payload), or -1 when the caller did not measure it
        # (then it is measured here, after the closed check, as the twin does).
        if self.closed:
            return False
        if self._queue is not None:
            self._queue.append(payload)
        elif self._head is None:
            # The common case, one message per tick: no list at all.
            self._head = payload
        else:
            self._queue = [self._head, payload]
            self._head = None
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
        self._head = None
        self._queue = None
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
        cdef object head, sink
        cdef PyObject* head_ptr
        cdef PyObject** items
        cdef WebSocketSink ws = None
        cdef Py_ssize_t n, start, end, size, nxt, max_batch, max_frame
        self._scheduled = False
        if self.slow:
            if self.sink is not None:
                sink = self.sink
                self.sink = None
                sink.on_slow()
            return
        head = self._head
        queue = self._queue
        if head is None and queue is None:
            return
        # Detached: whatever is queued while the frames are written (a sink
        # may run Python code) goes to the next flush.
        self._head = None
        self._queue = None
        self._queued_bytes = 0
        sink = self.sink
        if type(sink) is WebSocketSink:
            # Written from C; a subclass goes through its Python methods.
            ws = <WebSocketSink>sink
        if head is not None:
            # One message: one frame, whatever its size.
            size = _size_of(head)
            if ws is not None:
                head_ptr = <PyObject*>head
                ws._write_frame(&head_ptr, 1, size)
            else:
                sink.write_batch([head], size)
            self.frames_sent += 1
            self.bytes_sent += size
            self.messages_sent += 1
        else:
            n = PyList_GET_SIZE(queue)
            max_batch = self.max_batch
            max_frame = self.max_frame_size
            start = 0
            while start < n:
                # Unchecked reads: 0 <= start < end < n == len(queue). ``queue``
                # is detached from the writer above, and a sink only ever
                # receives it whole on the last iteration, so its length cannot
                # change while it is being indexed.
                size = _size_of(<object>PyList_GET_ITEM(queue, start))
                end = start + 1
                while end < n and end - start < max_batch:
                    nxt = _size_of(<object>PyList_GET_ITEM(queue, end))
                    if size + nxt > max_frame:
                        break
                    size += nxt
                    end += 1
                if ws is not None:
                    # Its items stay put: nothing else holds the list.
                    items = (<PyListObject*>queue).ob_item
                    ws._write_frame(items + start, end - start, size)
                elif start == 0 and end == n:
                    sink.write_batch(queue, size)
                else:
                    sink.write_batch(queue[start:end], size)
                self.frames_sent += 1
                self.bytes_sent += size
                start = end
            self.messages_sent += n
        if not self.max_queue_size:
            return
        if ws is not None:
            # No call when the last frame left nothing in the transport's buffer.
            if not ws._sent_whole and ws._buffer_size() > self.max_queue_size:
                self._overflow()
        elif sink.buffer_size() > self.max_queue_size:
            self._overflow()

    def close(self):
        """Stop accepting messages and drop what is queued (the connection is gone)."""
        self.closed = True
        self._head = None
        self._queue = None
        self._queued_bytes = 0
        # The sink leads back to the session that holds this writer: a cycle
        # only the collector would free.
        self.sink = None


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
        self.delta_index, self.delta_ready = -1, False
        self.tags_filter = None


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
    if sub.tags_filter is not None and not sub.tags_filter(pub.tags):
        sub.delta_ready = False  # the client's base is not this publication
        return _DELIVERED
    npayloads = PyTuple_GET_SIZE(payloads)
    index = sub.codec
    if sub.delta_index >= 0:  # the delta once the client holds the stream's previous one
        index = sub.delta_index if sub.delta_ready and positioning else index
        sub.delta_ready = positioning
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
    tags_filter = getattr(sub, "tags_filter", None)  # duck-typed subscribers may lack it
    if tags_filter is not None and not tags_filter(pub.tags):
        sub.delta_ready = False
        return _DELIVERED
    index = sub.codec
    if getattr(sub, "delta_index", -1) >= 0:
        index = sub.delta_index if sub.delta_ready and offset > 0 else index
        sub.delta_ready = offset > 0
    payload = payloads[index]
    if payload is None:
        return _INAPPROPRIATE_PROTOCOL
    sub.writer.enqueue(payload)
    return _DELIVERED


def broadcast(subscribers, payloads, offset, epoch, pub):
    """Queue one publication for every subscriber.

    Args:
        subscribers: the channel's subscribers.
        payloads: the publication encoded once per slot, indexed by
            ``Subscriber.codec`` and ``delta_index``; ``None`` where it cannot
            be encoded for that codec (``ACTION_INAPPROPRIATE_PROTOCOL``).
        offset, epoch: the publication's stream position (0: no history, no positioning).
        pub: the publication: kept in the buffer of subscribers that are
            subscribing; its ``tags`` pass a subscriber's ``tags_filter``.

    Returns ``(subscriber, action)`` pairs for subscribers needing an action, or None.
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
