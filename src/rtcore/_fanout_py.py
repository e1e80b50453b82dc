"""Fan-out and per-connection write queues: the pure-Python twin of ``rtcore._fanout``.

The delivery path of a publication is::

    hub: encode once per codec  ->  broadcast(subscribers, payloads, ...)
         -> Writer.enqueue(payload) for every subscriber (no await, no encode)
         -> one Flusher callback per event-loop tick
         -> Writer.flush(): everything queued for a connection goes out as
            as few transport frames as the batch limits allow (one write each)

Contract shared with the compiled module:

* :class:`Writer` is a bounded queue of *delimited* protocol messages
  (``bytes`` that can be concatenated into one transport frame: JSON lines or
  varint-prefixed Protobuf). ``enqueue`` never writes; the writer registers
  itself with its :class:`Flusher` once per tick. ``flush`` hands batches of
  at most ``max_batch`` messages / ``max_frame_size`` bytes to the sink's
  ``write_batch``. A writer whose queue (plus the transport's own buffer,
  checked at flush time) exceeds ``max_queue_size`` becomes *slow*: it drops
  its queue, stops accepting messages and calls ``sink.on_slow()`` once, so
  the session can disconnect the client with code 3008. ``messages_sent``,
  ``frames_sent`` and ``bytes_sent`` count what ``flush`` handed to the sink
  (bytes: the frames' payloads, without the transport's framing).
* :class:`Subscriber` is one session's subscription to one channel as the
  hub's index stores it: its writer, codec index, and recovery/positioning
  state.
* :func:`broadcast` delivers one publication to many subscribers with the
  positioning rules of the protocol (PROTOCOL.md §4.4) and returns the
  subscribers that need an action (insufficient state, inappropriate
  protocol), or ``None`` when there are none (the common case). A
  subscriber with a tags filter gets only the publications that match it
  (the others still move its position); a delta subscriber gets the delta
  payload once it holds the publication before it, the full one otherwise.
  Either way it picks one of the shared payloads: nothing is encoded per
  subscriber.
* :class:`WebSocketSink` is the sink of an uncompressed WebSocket
  connection: a batch becomes one frame (text for JSON lines, binary for
  varint-delimited Protobuf) written straight to the asyncio transport. The
  compiled :class:`Writer` recognises it and writes the frame from C, without
  a Python call per connection; here it is an ordinary sink.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from rtcore.frames import frame_header


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

# Actions returned by broadcast() for a subscriber.
ACTION_INSUFFICIENT_STATE = 1  # position gap or epoch change: unsubscribe 2500 / disconnect 3010
ACTION_INAPPROPRIATE_PROTOCOL = 2  # payload cannot be encoded for its codec: disconnect 3506

# WebSocketSink: frames up to this many payload bytes are written as one
# joined buffer (one small copy is cheaper than a gather write); larger ones
# as a gather write of the shared message objects (no copy per connection).
COPY_LIMIT = 4096


class Sink(Protocol):
    """Where a writer's batches go (one per transport kind)."""

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        """Write ``payloads`` (total ``nbytes``) as one transport frame."""

    def buffer_size(self) -> int:
        """Bytes the transport has accepted but not yet sent."""

    def on_slow(self) -> None:
        """The writer overflowed: disconnect the client (3008)."""


class WebSocketSink:
    """A Sink writing each batch as one uncompressed WebSocket frame to a transport.

    Args:
        transport: the connection's asyncio (or uvloop) transport. The
            ``write``, ``writelines``, ``get_write_buffer_size`` and
            ``is_closing`` methods of its class are taken once, here;
            ``get_extra_info`` tells whether it has a socket and TLS.
        opcode: ``OP_TEXT`` (JSON lines) or ``OP_BINARY`` (varint-delimited
            Protobuf) for every frame.
        conn: the connection's protocol state; a batch is written only while
            ``conn.state`` is ``open_state`` (nothing may follow a close frame,
            and a lost connection is no longer open).
        open_state: the value of ``conn.state`` that means "open".
        on_slow: called (without arguments) by :meth:`on_slow`.

    A frame of at most :data:`COPY_LIMIT` payload bytes is built in one
    buffer. When the transport has a socket and no TLS (:attr:`direct`), is
    not closing and has nothing buffered, that buffer goes straight to the
    socket with one ``write(2)``, as the transport itself would do it but
    without its per-call overhead; what the socket does not take (a partial
    write, ``EAGAIN``, an error) is handed to ``transport.write``, which
    buffers it, waits for the socket or reports the error. Otherwise the
    frame goes to ``transport.write``. A larger frame is handed to
    ``transport.writelines([header, *payloads])``, which does not copy the
    messages.
    """

    __slots__ = (
        "_transport",
        "_opcode",
        "_conn",
        "_open_state",
        "_on_slow",
        "_write",
        "_writelines",
        "_get_buffer_size",
        "_is_closing",
        "_fd",
        "_sent_whole",
    )

    def __init__(
        self,
        transport: Any,
        opcode: int,
        conn: Any,
        open_state: Any,
        on_slow: Callable[[], object],
    ) -> None:
        if not 0 <= opcode <= 0xF:
            raise ValueError("opcode out of range")
        self._transport = transport
        self._opcode = opcode
        self._conn = conn
        self._open_state = open_state
        self._on_slow = on_slow
        # The methods of the transport's class, called with the transport.
        cls = type(transport)
        self._write = cls.write
        self._writelines = cls.writelines
        self._get_buffer_size = cls.get_write_buffer_size
        self._is_closing = cls.is_closing
        self._fd = _direct_fd(transport)
        # True when the last write_batch() wrote its whole frame to the socket
        # itself (the transport's buffer was empty and still is): the writer
        # then needs no buffer_size() call for its slow-client check.
        self._sent_whole = False

    @property
    def transport(self) -> Any:
        return self._transport

    @property
    def opcode(self) -> int:
        return self._opcode

    @property
    def conn(self) -> Any:
        return self._conn

    @property
    def open_state(self) -> Any:
        return self._open_state

    @property
    def direct(self) -> bool:
        """True when small frames may be written straight to the socket."""
        return self._fd >= 0

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        """Write ``payloads`` (total ``nbytes``) as one transport frame."""
        if nbytes < 0:
            raise ValueError("negative length")
        self._sent_whole = False
        state = self._conn.state
        if state is not self._open_state and state != self._open_state:
            return
        header = frame_header(self._opcode, nbytes)
        if nbytes > COPY_LIMIT:
            self._writelines(self._transport, [header, *payloads])
            return
        data = header + b"".join(payloads)
        transport = self._transport
        if (
            self._fd >= 0
            and not self._is_closing(transport)
            and self._get_buffer_size(transport) == 0
        ):
            # Nothing is queued before this frame, so writing it to the
            # socket now keeps the order of the bytes.
            try:
                written = os.write(self._fd, data)
            except OSError:
                written = -1  # EAGAIN or an error: the transport deals with it
            if written == len(data):
                self._sent_whole = True
                return
            if written > 0:
                data = data[written:]
        self._write(transport, data)

    def buffer_size(self) -> int:
        """Bytes the transport has accepted but not yet sent."""
        size: int = self._get_buffer_size(self._transport)
        return size

    def on_slow(self) -> None:
        """The writer overflowed: disconnect the client (3008)."""
        self._on_slow()


def _direct_fd(transport: Any) -> int:
    """The socket's file descriptor when frames may bypass the transport, else -1.

    Never through TLS (the bytes must be encrypted by the transport).
    """
    if transport.get_extra_info("ssl_object") is not None:
        return -1
    sock = transport.get_extra_info("socket")
    if sock is None:
        return -1
    fd: int = sock.fileno()
    return fd


class Flusher:
    """Flushes every writer that got messages, once per event-loop tick.

    Args:
        loop: the event loop (default: the running loop, at the first add).
        delay: seconds a flush round waits after its first message (0: the
            end of the current tick). A delay trades latency for fewer
            writes: every message queued during the round goes out with the
            round, so a connection gets at most one write per round and a
            message waits at most ``delay`` (client message batching).
    """

    __slots__ = ("_loop", "_dirty", "_scheduled", "_delay", "_timer", "flushes")

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, *, delay: float = 0.0
    ) -> None:
        if not delay >= 0:  # also refuses NaN
            raise ValueError("delay must be >= 0")
        self._loop = loop
        self._dirty: list[Writer] = []
        self._scheduled = False
        self._delay = float(delay)
        # The round's call_later handle (delay > 0), until it runs.
        self._timer: asyncio.TimerHandle | None = None
        # Number of flush rounds run (observability, tests).
        self.flushes = 0

    @property
    def delay(self) -> float:
        return self._delay

    def add(self, writer: Writer) -> None:
        self._dirty.append(writer)
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            if self._delay > 0:
                self._timer = loop.call_later(self._delay, self._on_timer)
            else:
                loop.call_soon(self.flush)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Flush every pending writer now (also called by the loop callback).

        A writer whose flush raises does not stop the others: every pending
        writer is flushed, then the first exception is raised again.
        """
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
        error: Exception | None = None
        for writer in dirty:
            try:
                writer.flush()
            except Exception as exc:  # noqa: BLE001 - re-raised below
                if error is None:
                    error = exc
        if error is not None:
            raise error

    @property
    def pending(self) -> int:
        return len(self._dirty)


class Writer:
    """A connection's bounded outbound queue with per-tick coalescing.

    Args:
        sink: the transport side (see :class:`Sink`).
        flusher: the loop-wide :class:`Flusher`.
        max_queue_size: bytes queued here plus bytes buffered in the
            transport above which the client is "slow" (0: no limit).
        max_batch: most messages joined into one transport frame.
        max_frame_size: most bytes joined into one transport frame (a single
            larger message still goes out alone).
    """

    __slots__ = (
        "sink",
        "flusher",
        "max_queue_size",
        "max_batch",
        "max_frame_size",
        "_queue",
        "_queued_bytes",
        "_scheduled",
        "closed",
        "slow",
        "messages_sent",
        "frames_sent",
        "bytes_sent",
    )

    def __init__(
        self,
        sink: Sink,
        flusher: Flusher,
        *,
        max_queue_size: int = 1 << 20,
        max_batch: int = 128,
        max_frame_size: int = 64 * 1024,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_frame_size < 1:
            raise ValueError("max_frame_size must be >= 1")
        self.sink = sink
        self.flusher = flusher
        self.max_queue_size = max_queue_size
        self.max_batch = max_batch
        self.max_frame_size = max_frame_size
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._scheduled = False
        # No more messages are accepted once closed (or slow).
        self.closed = False
        self.slow = False
        # Counters: messages handed to the sink, frames written and their
        # protocol bytes (the payloads, without the transport's framing).
        self.messages_sent = 0
        self.frames_sent = 0
        self.bytes_sent = 0

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def queued_messages(self) -> int:
        return len(self._queue)

    def enqueue(self, payload: bytes) -> bool:
        """Queue one delimited message; False if the writer is closed or slow."""
        if self.closed:
            return False
        self._queue.append(payload)
        self._queued_bytes += len(payload)
        if self.max_queue_size and self._queued_bytes > self.max_queue_size:
            self._overflow()
            return False
        if not self._scheduled:
            self._scheduled = True
            self.flusher.add(self)
        return True

    def _overflow(self) -> None:
        self.slow = True
        self.closed = True
        self._queue = []
        self._queued_bytes = 0
        if not self._scheduled:
            self._scheduled = True
            self.flusher.add(self)

    def flush(self) -> None:
        """Write everything queued, in order, as few frames as the limits allow."""
        self._scheduled = False
        if self.slow:
            if self.sink is not None:
                sink = self.sink
                self.sink = None  # type: ignore[assignment]
                sink.on_slow()
            return
        queue = self._queue
        if not queue:
            return
        self._queue = []
        self._queued_bytes = 0
        sink = self.sink
        n = len(queue)
        max_batch = self.max_batch
        max_frame = self.max_frame_size
        start = 0
        while start < n:
            size = len(queue[start])
            end = start + 1
            while end < n and end - start < max_batch:
                nxt = len(queue[end])
                if size + nxt > max_frame:
                    break
                size += nxt
                end += 1
            sink.write_batch(queue[start:end] if (start or end != n) else queue, size)
            self.frames_sent += 1
            self.bytes_sent += size
            start = end
        self.messages_sent += n
        if not self.max_queue_size:
            return
        if type(sink) is WebSocketSink and sink._sent_whole:
            return  # the last frame left nothing in the transport's buffer
        if sink.buffer_size() > self.max_queue_size:
            self._overflow()

    def close(self) -> None:
        """Stop accepting messages and drop what is queued (the connection is gone)."""
        self.closed = True
        self._queue = []
        self._queued_bytes = 0
        # The sink leads back to the session that holds this writer: a cycle
        # only the collector would free.
        self.sink = None  # type: ignore[assignment]


class Subscriber:
    """One session's subscription to one channel, as stored in the hub's index."""

    __slots__ = (
        "writer",
        "codec",
        "session",
        "channel",
        "positioned",
        "offset",
        "epoch",
        "buffer",
        "join_leave",
        "delta_index",
        "delta_ready",
        "tags_filter",
    )

    def __init__(self, writer: Writer, codec: int, session: Any, channel: str) -> None:
        # Where this subscriber's messages are queued.
        self.writer = writer
        # Index into the per-codec payload list (0 JSON, 1 Protobuf).
        self.codec = codec
        # The owning session (for actions) and the channel name.
        self.session = session
        self.channel = channel
        # Positioning: the last delivered offset and the stream epoch.
        self.positioned = False
        self.offset = 0
        self.epoch = ""
        # While the subscribe command recovers history, live publications are
        # held here (a list of (publication, position-offset, epoch)); None otherwise.
        self.buffer: list[Any] | None = None
        # Receives join/leave pushes.
        self.join_leave = False
        # Delta compression: the index of the delta payload (-1: none) and
        # whether the client holds the previous publication of the stream
        # (the base of that delta); until then it gets the full payload.
        self.delta_index = -1
        self.delta_ready = False
        # A function of a publication's tags: False drops it for this subscriber.
        self.tags_filter: Any = None


def broadcast(
    subscribers: Iterable[Subscriber],
    payloads: Sequence[bytes | None],
    offset: int,
    epoch: str,
    pub: Any,
) -> list[tuple[Subscriber, int]] | None:
    """Queue one publication for every subscriber.

    Args:
        subscribers: the channel's subscribers.
        payloads: the publication encoded once per codec (and form), indexed
            by ``Subscriber.codec`` and ``Subscriber.delta_index``; ``None``
            where it cannot be encoded for that codec (its subscribers get
            ``ACTION_INAPPROPRIATE_PROTOCOL``).
        offset, epoch: the publication's stream position (offset 0: the
            channel keeps no history and positioning does not apply).
        pub: the publication object, kept in the buffer of subscribers that
            are in the middle of subscribing.

    Returns:
        ``(subscriber, action)`` pairs for subscribers needing an action, or None.
    """
    actions: list[tuple[Subscriber, int]] | None = None
    for sub in subscribers:
        if sub.buffer is not None:
            sub.buffer.append((pub, offset, epoch))
            continue
        if sub.positioned and offset > 0:
            if epoch != sub.epoch:
                if sub.epoch:
                    if actions is None:
                        actions = []
                    actions.append((sub, ACTION_INSUFFICIENT_STATE))
                    continue
                # The stream did not exist when the client subscribed: adopt it.
                sub.epoch = epoch
            last = sub.offset
            if offset > last + 1:
                if actions is None:
                    actions = []
                actions.append((sub, ACTION_INSUFFICIENT_STATE))
                continue
            if offset <= last:
                continue  # a stale duplicate
            sub.offset = offset
        # getattr: broadcast also takes duck-typed subscribers without these.
        tags_filter = getattr(sub, "tags_filter", None)
        if tags_filter is not None and not tags_filter(pub.tags):
            sub.delta_ready = False  # the client's base is not this publication
            continue
        index = sub.codec
        if getattr(sub, "delta_index", -1) >= 0:
            if sub.delta_ready and offset > 0:
                index = sub.delta_index
            # Only a publication of the stream is the base of the next delta.
            sub.delta_ready = offset > 0
        payload = payloads[index]
        if payload is None:
            if actions is None:
                actions = []
            actions.append((sub, ACTION_INAPPROPRIATE_PROTOCOL))
            continue
        sub.writer.enqueue(payload)
    return actions
