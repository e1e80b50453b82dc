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
2. ``Writer._enqueue`` appends to ``_queue``; the first message of a tick
   registers the writer with its ``Flusher`` (``add``), which schedules one
   ``loop.call_soon(flush)`` for the whole tick.
3. ``Flusher.flush`` runs once per tick and calls ``Writer.flush`` for each
   registered writer; ``Writer.flush`` cuts ``_queue`` into frames of at most
   ``max_batch`` messages / ``max_frame_size`` bytes and calls
   ``sink.write_batch`` once per frame, then checks ``sink.buffer_size()``.
4. A writer over ``max_queue_size`` (``_overflow``) drops its queue, stops
   accepting messages and calls ``sink.on_slow()`` from its next flush.
"""


cdef class Flusher:
    # Event loop used for call_soon; None until the first add() (then the
    # running loop).
    cdef object _loop
    # Writers registered since the last flush, in registration order.
    cdef list _dirty
    # True while a flush callback is scheduled on the loop.
    cdef bint _scheduled
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
    # Queued delimited messages and their total size in bytes.
    cdef list _queue
    cdef Py_ssize_t _queued_bytes
    # True while this writer is registered with the flusher for this tick.
    cdef bint _scheduled
    cdef public bint closed
    cdef public bint slow
    cdef public Py_ssize_t messages_sent
    cdef public Py_ssize_t frames_sent

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
