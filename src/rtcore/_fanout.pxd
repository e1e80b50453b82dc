# cython: language_level=3, embedsignature=True
"""C-level declarations of ``rtcore._fanout`` (the compiled fan-out core).

The contract is the one of the pure-Python twin ``rtcore._fanout_py``; this
file only fixes the object layouts and the C entry points, so that other
extension modules can ``cimport`` them and queue messages without a Python
call.

Call sequence for one publication (see docs/fanout.md):

1. ``broadcast()`` walks the channel's subscribers. For each ``Subscriber``
   it applies the positioning rules (``_deliver``) and hands the payload
   shared by every subscriber of that codec to ``Writer._enqueue``.
2. ``Writer._enqueue`` keeps the message in ``_head`` (one) or ``_queue``
   (more); the first message of a tick registers the writer with its
   ``Flusher`` (``add``), which schedules one ``loop.call_soon(flush)`` for
   the whole tick.
3. ``Flusher.flush`` runs once per tick and calls ``Writer.flush`` for each
   registered writer (prefetching the next ones' objects); ``Writer.flush``
   cuts the queue into frames of at most ``max_batch`` messages /
   ``max_frame_size`` bytes and calls ``sink.write_batch`` once per frame,
   then checks ``sink.buffer_size()``. For a sink that is exactly a
   ``WebSocketSink`` these are the C methods ``_write_frame`` (which builds
   the frame and writes it to the socket, or hands it to the transport) and
   ``_buffer_size``, and the check is skipped when the last frame left
   nothing in the transport.
4. A writer over ``max_queue_size`` (``_overflow``) drops its queue, stops
   accepting messages and calls ``sink.on_slow()`` from its next flush.
"""

from cpython.object cimport PyObject


cdef class WebSocketSink:
    # The asyncio/uvloop transport, and the methods of its class (called
    # with the transport; shared by every connection, so no bound-method
    # object per connection has to be loaded).
    cdef object _transport
    cdef object _write
    cdef object _writelines
    cdef object _get_buffer_size
    cdef object _is_closing
    # The socket's file descriptor for direct writes; -1: always the transport.
    cdef Py_ssize_t _fd
    # Frame opcode (0..15): OP_TEXT or OP_BINARY.
    cdef int _opcode
    # Frames are written only while _conn.state is _open_state.
    cdef object _conn
    cdef object _open_state
    # Called by on_slow().
    cdef object _on_slow
    # True when the last frame went whole to the socket (the transport's
    # buffer was empty and still is): Writer.flush skips its buffer check.
    cdef bint _sent_whole

    # May the next frame go straight to the socket (see _send)?
    cdef bint _direct_now(self) except -1
    # Write one complete frame: to the socket if ``direct``, the rest (or all
    # of it) through transport.write.
    cdef int _send(self, const char* data, Py_ssize_t size, bint direct) except -1
    # One frame of the ``count`` payloads at ``items`` (borrowed pointers; exact
    # bytes are copied in C).
    cdef int _write_frame(self, PyObject** items, Py_ssize_t count, Py_ssize_t nbytes) except -1
    cdef Py_ssize_t _buffer_size(self) except? -1


cdef class Flusher:
    # Event loop used for call_soon; None until the first add() (then the
    # running loop).
    cdef object _loop
    # Writers registered since the last flush, in registration order.
    cdef list _dirty
    # True while a flush callback is scheduled on the loop.
    cdef bint _scheduled
    # Seconds a round waits after its first message (0: call_soon), and the
    # round's call_later handle while it is pending.
    cdef double _delay
    cdef object _timer
    # Number of flush rounds that had work (observability, tests).
    cdef public Py_ssize_t flushes

    cpdef add(self, writer)
    cpdef flush(self)


cdef class Writer:
    # Sink protocol object (write_batch, buffer_size, on_slow); set to None
    # once on_slow() has been called.
    cdef public object sink
    cdef public Flusher flusher
    # Limits: bytes (queue + transport buffer; 0 = unlimited), messages per
    # frame, bytes per frame.
    cdef public Py_ssize_t max_queue_size
    cdef public Py_ssize_t max_batch
    cdef public Py_ssize_t max_frame_size
    # Queued delimited messages: one message alone is kept in _head (no list:
    # the common case, one message per tick), two or more in _queue; the
    # other field is None. Their total size in bytes.
    cdef object _head
    cdef list _queue
    cdef Py_ssize_t _queued_bytes
    # True while this writer is registered with the flusher for this tick.
    cdef bint _scheduled
    cdef public bint closed
    cdef public bint slow
    # Counters: messages and frames handed to the sink, and the frames'
    # protocol bytes (their payloads: no transport framing).
    cdef public Py_ssize_t messages_sent
    cdef public Py_ssize_t frames_sent
    cdef public Py_ssize_t bytes_sent

    # The fast path of enqueue(): ``size`` is len(payload).
    cdef bint _enqueue(self, object payload, Py_ssize_t size) except -1
    cdef int _overflow(self) except -1
    cpdef bint enqueue(self, payload) except -1
    cpdef flush(self)


cdef class Subscriber:
    cdef public Writer writer
    # Index into broadcast()'s per-codec payloads.
    cdef public Py_ssize_t codec
    cdef public object session
    cdef public object channel
    cdef public bint positioned
    # Last delivered offset; unsigned 64-bit as in the protocol.
    cdef public unsigned long long offset
    cdef public str epoch
    # (pub, offset, epoch) tuples held while subscribing, or None.
    cdef public list buffer
    cdef public bint join_leave
    # Delta compression: index of the delta payload (-1: none), and whether
    # the client holds the stream's previous publication (the delta's base).
    cdef public Py_ssize_t delta_index
    cdef public bint delta_ready
    # A function of a publication's tags (None: every publication passes).
    cdef public object tags_filter
