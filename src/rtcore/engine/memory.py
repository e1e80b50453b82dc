"""In-memory backends: the embedded default for a single process.

Everything lives in this process's memory, so these backends serve exactly
one node. Publications reach only this process's handler, and history and
presence vanish on restart (a restart gives every stream a new epoch, so
clients notice). To run several nodes, plug in a shared backend instead.

No method awaits anything. Each call therefore runs to completion without
interleaving with other tasks, and that is what makes a publish atomic: the
append, the offset assignment and the handler call happen in one step.

Expiry costs nothing per channel and needs no background task. Each store
keeps a min-heap with one deadline per channel. Every operation first checks
whether ``sweep_interval`` has passed. If it has, the store pops the deadlines
that are due, at most ``sweep_batch`` of them, so the work is proportional to
what expired and a single call never stalls on a mass expiry. On top of that,
every access checks its own channel lazily, so results are exact even before
a sweep runs. An idle store keeps its memory until the next call, but an idle
store also does not grow.

Nothing grows without bound either: reading a channel's history creates no
state, and the history store keeps at most ``max_streams`` streams (see
:class:`MemoryHistoryStore` for which one is evicted and what recovery sees).
Presence entries and idempotency results live only as long as their leases.
"""

from __future__ import annotations

import heapq
import logging
import os
import string
import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, NoReturn

from rtcore.engine.broker import (
    DEFAULT_IDEMPOTENT_TTL,
    BrokerClosedError,
    BrokerEventHandler,
    BrokerNotStartedError,
    BrokerStateError,
    PublishResult,
)
from rtcore.engine.history import (
    DEFAULT_META_TTL,
    ZERO_POSITION,
    HistoryOptions,
    HistoryResult,
    checked_read_args,
)
from rtcore.engine.memory_expiry import INF, ExpiryQueue, check_sweep_args
from rtcore.engine.memory_presence import MemoryPresenceManager
from rtcore.protocol.types import ClientInfo, Publication, StreamPosition


if TYPE_CHECKING:
    from rtcore.engine.broker import Broker
    from rtcore.engine.history import HistoryStore


__all__ = [
    "DEFAULT_MAX_STREAMS",
    "MemoryBroker",
    "MemoryHistoryStore",
    "MemoryPresenceManager",
]


logger = logging.getLogger(__name__)

Clock = Callable[[], float]

_EPOCH_LETTERS = string.ascii_letters


def _new_epoch() -> str:
    # Eight random ASCII letters, like Centrifuge. The bytes come from the OS,
    # not from the ``random`` module: an application that seeds ``random``, or
    # forked workers sharing its state, would otherwise repeat epochs across
    # processes and restarts, and recovery would accept positions from another
    # stream. (The modulo bias is irrelevant here.)
    return "".join([_EPOCH_LETTERS[b % 52] for b in os.urandom(8)])


# ---------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------


class _Stream:
    __slots__ = ("epoch", "top", "pubs", "data_expire_at", "meta_expire_at", "scheduled")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        # Offset of the last publication ever added in this epoch.
        self.top = 0
        # Retained publications; offsets are consecutive, pubs[0] the oldest.
        # None while none is retained: an empty deque costs ~760 bytes, and
        # streams without publications (meta only) can be many.
        self.pubs: deque[Publication] | None = None
        self.data_expire_at = INF
        self.meta_expire_at = INF
        # Deadline of this stream's live heap entry (inf: none).
        self.scheduled = INF


def _window(pubs: deque[Publication], lo: int, hi: int, newest_first: bool) -> list[Publication]:
    """``pubs[lo:hi]``, walking the deque from whichever end is nearer."""
    n = len(pubs)
    if lo <= n - hi:
        out = list(islice(pubs, lo, hi))
        if newest_first:
            out.reverse()
    else:
        out = list(islice(reversed(pubs), n - hi, n - lo))
        if not newest_first:
            out.reverse()
    return out


#: Default bound on the streams one :class:`MemoryHistoryStore` keeps.
DEFAULT_MAX_STREAMS = 100_000


class MemoryHistoryStore:
    """:class:`~rtcore.engine.history.HistoryStore` in process memory, with a bounded stream count.

    Adds cost O(1). Reads cost O(returned publications), plus the distance from
    the nearer end of the stream. Epochs are random, so a process restart
    invalidates every saved client position, as it must.

    **Reads create nothing.** A channel gets a stream only from its first add.
    Reading a channel without one answers offset 0 and the store's *vacant
    epoch*, a random epoch that the next stream created takes, so a client
    that saw ``(0, vacant epoch)`` before the first publication recovers it.
    When a stream that carries the current vacant epoch is dropped (its meta
    expired, or it was evicted), the vacant epoch is replaced by a new one: a
    channel therefore never gets back an epoch one of its earlier streams had,
    and a client holding a position in a lost stream gets ``recovered: false``
    rather than publications of another stream. The price is that clients
    holding ``(0, old vacant epoch)`` of a channel that was still empty do not
    recover either.

    **Bounded.** At most ``max_streams`` streams are kept. An add that needs a
    new stream when that many exist first evicts one: the least recently used
    stream that retains no publication (all expired or removed: only its epoch
    and top offset are lost), ordered by last add or read or by when it lost
    its last publication; if every stream retains publications, the least
    recently used one, whose history is lost. Reads and adds count as use. An
    evicted stream comes back, on its next add, with another epoch (see
    above), so its subscribers fail recovery instead of getting wrong data.

    Args:
        meta_ttl: meta lifetime set by reads that pass no ``meta_ttl``.
        clock: monotonic seconds; all TTLs are measured on it.
        sweep_interval: seconds between expiry sweeps (see the module docstring).
        sweep_batch: most deadlines processed by one sweep.
        max_streams: most streams kept (see above); at least 1.
    """

    def __init__(
        self,
        *,
        meta_ttl: float = DEFAULT_META_TTL,
        clock: Clock = time.monotonic,
        sweep_interval: float = 1.0,
        sweep_batch: int = 1000,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        if not meta_ttl > 0:
            raise ValueError(f"meta_ttl must be > 0 seconds, got {meta_ttl}")
        check_sweep_args(sweep_interval, sweep_batch)
        if type(max_streams) is not int or max_streams < 1:
            raise ValueError(f"max_streams must be an integer >= 1, got {max_streams!r}")
        self._meta_ttl = meta_ttl
        self._clock = clock
        self._max_streams = max_streams
        # Every stream is in exactly one of these, each ordered from least to
        # most recently used (re-inserted on use): the eviction candidates.
        self._with_pubs: dict[str, _Stream] = {}
        self._without_pubs: dict[str, _Stream] = {}
        self._vacant_epoch = _new_epoch()
        self._expiry: ExpiryQueue[str] = ExpiryQueue(sweep_interval, sweep_batch)
        # Publications retained over all streams (for introspection and tests).
        self._num_pubs = 0
        self._num_evicted = 0

    @property
    def channel_count(self) -> int:
        """Streams currently held, with or without publications (meta only)."""
        return len(self._with_pubs) + len(self._without_pubs)

    @property
    def publication_count(self) -> int:
        """Publications currently retained over all streams."""
        return self._num_pubs

    @property
    def max_streams(self) -> int:
        """The bound on :attr:`channel_count`."""
        return self._max_streams

    @property
    def evicted_count(self) -> int:
        """Streams evicted so far to stay within ``max_streams``."""
        return self._num_evicted

    # -- HistoryStore -------------------------------------------------------

    async def add(self, channel: str, pub: Publication, opts: HistoryOptions) -> StreamPosition:
        return self.append(channel, pub, opts, self._clock(), False)[0]

    async def get(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int = 0,
        reverse: bool = False,
        meta_ttl: float | None = None,
    ) -> HistoryResult:
        return self.read(channel, since, limit, reverse, meta_ttl)

    async def position(self, channel: str, *, meta_ttl: float | None = None) -> StreamPosition:
        return self.read(channel, None, 0, False, meta_ttl).position

    async def remove(self, channel: str) -> None:
        now = self._clock()
        if now >= self._expiry.next_sweep:
            self._expiry.sweep(now, self._on_due)
        stream = self._live(channel, now)
        if stream is not None and stream.pubs is not None:
            self._clear(channel, stream)

    # -- synchronous core (used directly by MemoryBroker) --------------------

    def append(
        self, channel: str, pub: Publication, opts: HistoryOptions, now: float, want_prev: bool
    ) -> tuple[StreamPosition, Publication | None]:
        """Add ``pub`` at clock time ``now``; also return the previous newest if asked."""
        if now >= self._expiry.next_sweep:
            self._expiry.sweep(now, self._on_due)
        stream = self._live(channel, now)
        if stream is None:
            if self.channel_count >= self._max_streams:
                self._evict()
            stream = _Stream(self._vacant_epoch)
            pubs = stream.pubs = deque()
        elif stream.pubs is None:
            del self._without_pubs[channel]
            pubs = stream.pubs = deque()
        else:
            pubs = stream.pubs
            del self._with_pubs[channel]
        self._with_pubs[channel] = stream
        prev = pubs[-1] if want_prev and pubs else None
        offset = stream.top = stream.top + 1
        pub.offset = offset
        pubs.append(pub)
        size = opts.size
        if len(pubs) > size:
            dropped = 0
            while len(pubs) > size:
                pubs.popleft()
                dropped += 1
            self._num_pubs += 1 - dropped
        else:
            self._num_pubs += 1
        stream.data_expire_at = now + opts.ttl
        stream.meta_expire_at = now + opts.meta_ttl
        self._schedule(channel, stream)
        return StreamPosition(offset, stream.epoch), prev

    def read(
        self,
        channel: str,
        since: StreamPosition | None,
        limit: int,
        reverse: bool,
        meta_ttl: float | None,
    ) -> HistoryResult:
        """``HistoryStore.get`` without the coroutine."""
        meta_ttl = checked_read_args(since, limit, reverse, meta_ttl, self._meta_ttl)
        now = self._clock()
        if now >= self._expiry.next_sweep:
            self._expiry.sweep(now, self._on_due)
        stream = self._live(channel, now)
        if stream is None:
            return HistoryResult([], StreamPosition(0, self._vacant_epoch))
        stream.meta_expire_at = now + meta_ttl
        self._schedule(channel, stream)
        position = StreamPosition(stream.top, stream.epoch)
        pubs = stream.pubs
        if pubs is None:
            del self._without_pubs[channel]
            self._without_pubs[channel] = stream
            return HistoryResult([], position)
        del self._with_pubs[channel]
        self._with_pubs[channel] = stream
        if limit == 0:
            return HistoryResult([], position)
        n = len(pubs)
        if since is None:
            lo, hi = 0, n
        else:
            if since.epoch and since.epoch != stream.epoch:
                return HistoryResult([], position)
            first = pubs[0].offset
            if reverse:
                lo, hi = 0, min(n, since.offset - first)
            else:
                lo, hi = max(0, since.offset + 1 - first), n
            if lo >= hi:
                return HistoryResult([], position)
        if limit > 0 and hi - lo > limit:
            if reverse:
                lo = hi - limit
            else:
                hi = lo + limit
        return HistoryResult(_window(pubs, lo, hi, reverse), position)

    # -- expiry and eviction ----------------------------------------------------

    def _live(self, channel: str, now: float) -> _Stream | None:
        """The channel's stream with expired parts dropped, or None."""
        stream = self._with_pubs.get(channel) or self._without_pubs.get(channel)
        if stream is None:
            return None
        if now >= stream.meta_expire_at:
            self._drop(channel, stream)
            return None
        if stream.pubs is not None and now >= stream.data_expire_at:
            self._clear(channel, stream)
        return stream

    def _clear(self, channel: str, stream: _Stream) -> None:
        """Drop the publications of a stream that has some; meta stays."""
        assert stream.pubs is not None
        self._num_pubs -= len(stream.pubs)
        stream.pubs = None
        del self._with_pubs[channel]
        self._without_pubs[channel] = stream

    def _drop(self, channel: str, stream: _Stream) -> None:
        """Forget a stream entirely (its heap entry goes stale)."""
        if stream.pubs is None:
            del self._without_pubs[channel]
        else:
            del self._with_pubs[channel]
            self._num_pubs -= len(stream.pubs)
        if stream.epoch == self._vacant_epoch:
            # The channel's next stream would take this epoch again, and
            # positions in the lost stream would look valid in the new one.
            self._vacant_epoch = _new_epoch()

    def _evict(self) -> None:
        victims = self._without_pubs or self._with_pubs
        channel = next(iter(victims))
        self._drop(channel, victims[channel])
        self._num_evicted += 1
        # An evicted stream's heap entry stays until due (up to meta_ttl):
        # rebuild the heap once stale entries outnumber the live ones.
        heap = self._expiry.heap
        if len(heap) > 2 * self.channel_count + 64:
            heap[:] = [
                (stream.scheduled, name)
                for streams in (self._with_pubs, self._without_pubs)
                for name, stream in streams.items()
                if stream.scheduled != INF
            ]
            heapq.heapify(heap)

    def _schedule(self, channel: str, stream: _Stream) -> None:
        deadline = stream.meta_expire_at
        if stream.pubs is not None and stream.data_expire_at < deadline:
            deadline = stream.data_expire_at
        # A later deadline needs no new entry: the earlier one reschedules when due.
        if deadline < stream.scheduled:
            stream.scheduled = deadline
            self._expiry.push(deadline, channel)

    def _on_due(self, deadline: float, channel: str, now: float) -> None:
        stream = self._with_pubs.get(channel) or self._without_pubs.get(channel)
        if stream is None or stream.scheduled != deadline:
            return  # stale entry: the stream is gone or has an earlier entry
        stream.scheduled = INF
        if self._live(channel, now) is not None:
            self._schedule(channel, stream)


# ---------------------------------------------------------------------------
# Broker
# ---------------------------------------------------------------------------


class MemoryBroker:
    """:class:`~rtcore.engine.broker.Broker` for one process, paired with a :class:`MemoryHistoryStore`.

    ``publish`` appends to history and calls the handler synchronously,
    before it returns. One channel's deliveries are therefore in offset order,
    and a publication is visible in history by the time the handler sees it.
    Events go to the handler only for channels subscribed with
    :meth:`subscribe` (control messages always).

    Args:
        history: the store to append to and read from; a new one on ``clock``
            if omitted. Pass one built on the same clock.
        clock: monotonic seconds, for idempotency TTLs.
        wall_clock: unix seconds, for ``Publication.time``.
        sweep_interval, sweep_batch: expiry of idempotency results, as in
            :class:`MemoryHistoryStore`.
    """

    @property
    def reads_in_process(self) -> bool:
        """True: ``history`` returns without suspending, so subscribes read it
        at once (see :class:`~rtcore.engine.recovery.HistoryReads`). False
        for a subclass that overrides ``history`` (it may wait)."""
        return type(self).history is MemoryBroker.history

    def __init__(
        self,
        *,
        history: MemoryHistoryStore | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sweep_interval: float = 1.0,
        sweep_batch: int = 1000,
    ) -> None:
        check_sweep_args(sweep_interval, sweep_batch)
        self._history = history if history is not None else MemoryHistoryStore(clock=clock)
        self._clock = clock
        self._wall_clock = wall_clock
        # Set by start(), cleared by close(); None means "not serving".
        self._handler: BrokerEventHandler | None = None
        self._closed = False
        self._channels: set[str] = set()
        # (channel, idempotency key) -> (expire at, position of the original publish).
        self._results: dict[tuple[str, str], tuple[float, StreamPosition]] = {}
        self._results_expiry: ExpiryQueue[tuple[str, str]] = ExpiryQueue(
            sweep_interval, sweep_batch
        )

    @property
    def history_store(self) -> MemoryHistoryStore:
        """The paired history store."""
        return self._history

    @property
    def idempotency_result_count(self) -> int:
        """Idempotency results currently remembered (some may be expired but not yet swept)."""
        return len(self._results)

    def _state_error(self) -> NoReturn:
        if self._closed:
            raise BrokerClosedError("broker is closed")
        raise BrokerNotStartedError("broker is not started")

    async def start(self, handler: BrokerEventHandler) -> None:
        if self._closed:
            raise BrokerClosedError("broker is closed")
        if self._handler is not None:
            raise BrokerStateError("broker is already started")
        self._handler = handler

    async def close(self) -> None:
        self._closed = True
        self._handler = None
        self._channels.clear()
        self._results.clear()
        self._results_expiry.heap.clear()

    async def subscribe(self, channel: str) -> None:
        if self._handler is None:
            self._state_error()
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        if self._handler is None:
            self._state_error()
        self._channels.discard(channel)

    async def publish(
        self,
        channel: str,
        pub: Publication,
        *,
        history: HistoryOptions | None = None,
        idempotency_key: str | None = None,
        idempotent_ttl: float = DEFAULT_IDEMPOTENT_TTL,
        use_delta: bool = False,
    ) -> PublishResult:
        handler = self._handler
        if handler is None:
            self._state_error()
        now = self._clock()
        if idempotency_key:
            if not idempotent_ttl > 0:
                raise ValueError(f"idempotent_ttl must be > 0 seconds, got {idempotent_ttl}")
            if now >= self._results_expiry.next_sweep:
                self._results_expiry.sweep(now, self._on_result_due)
            cached = self._results.get((channel, idempotency_key))
            if cached is not None and now < cached[0]:
                return PublishResult(cached[1], True)
        if not pub.time:
            pub.time = int(self._wall_clock() * 1000)
        prev: Publication | None = None
        if history is not None:
            position, prev = self._history.append(channel, pub, history, now, use_delta)
        else:
            pub.offset = 0
            position = ZERO_POSITION
        if idempotency_key:
            expire_at = now + idempotent_ttl
            key = (channel, idempotency_key)
            self._results[key] = (expire_at, position)
            self._results_expiry.push(expire_at, key)
        if channel in self._channels:
            try:
                handler.on_publication(channel, pub, position, prev)
            except Exception:
                logger.exception("broker event handler failed on a publication in %r", channel)
        return PublishResult(position)

    @property
    def joins_in_process(self) -> bool:
        """True: a join is delivered at once by :meth:`deliver_join`, which a
        subscribe calls instead of starting a task for ``publish_join``. False
        for a subclass that overrides ``publish_join`` (it may wait)."""
        return type(self).publish_join is MemoryBroker.publish_join

    def deliver_join(self, channel: str, info: ClientInfo) -> None:
        """``publish_join`` without the coroutine: the handler sees it before this returns."""
        handler = self._handler
        if handler is None:
            self._state_error()
        if channel in self._channels:
            try:
                handler.on_join(channel, info)
            except Exception:
                logger.exception("broker event handler failed on a join in %r", channel)

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        self.deliver_join(channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        handler = self._handler
        if handler is None:
            self._state_error()
        if channel in self._channels:
            try:
                handler.on_leave(channel, info)
            except Exception:
                logger.exception("broker event handler failed on a leave in %r", channel)

    async def publish_control(self, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            self._state_error()
        try:
            handler.on_control(data)
        except Exception:
            logger.exception("broker event handler failed on a control message")

    async def history(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int = 0,
        reverse: bool = False,
        meta_ttl: float | None = None,
    ) -> HistoryResult:
        if self._handler is None:
            self._state_error()
        return self._history.read(channel, since, limit, reverse, meta_ttl)

    async def remove_history(self, channel: str) -> None:
        if self._handler is None:
            self._state_error()
        await self._history.remove(channel)

    def _on_result_due(self, deadline: float, key: tuple[str, str], now: float) -> None:
        entry = self._results.get(key)
        # A key saved again after it expired has a later deadline and its own entry.
        if entry is not None and entry[0] <= now:
            del self._results[key]


if TYPE_CHECKING:
    _history: type[HistoryStore] = MemoryHistoryStore
    _broker: type[Broker] = MemoryBroker
