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
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Generic, NoReturn, TypeVar

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
from rtcore.engine.presence import DEFAULT_PRESENCE_TTL, PresenceEntry
from rtcore.protocol.types import ClientInfo, PresenceStats, Publication, StreamPosition


if TYPE_CHECKING:
    from rtcore.engine.broker import Broker
    from rtcore.engine.history import HistoryStore
    from rtcore.engine.presence import PresenceManager


__all__ = [
    "DEFAULT_MAX_STREAMS",
    "MemoryBroker",
    "MemoryHistoryStore",
    "MemoryPresenceManager",
]


logger = logging.getLogger(__name__)

Clock = Callable[[], float]

_INF = float("inf")
_EPOCH_LETTERS = string.ascii_letters
_K = TypeVar("_K", bound=Hashable)


def _new_epoch() -> str:
    # Eight random ASCII letters, like Centrifuge. The bytes come from the OS,
    # not from the ``random`` module: an application that seeds ``random``, or
    # forked workers sharing its state, would otherwise repeat epochs across
    # processes and restarts, and recovery would accept positions from another
    # stream. (The modulo bias is irrelevant here.)
    return "".join([_EPOCH_LETTERS[b % 52] for b in os.urandom(8)])


def _check_sweep_args(sweep_interval: float, sweep_batch: int) -> None:
    if not sweep_interval > 0:
        raise ValueError(f"sweep_interval must be > 0 seconds, got {sweep_interval}")
    if sweep_batch < 1:
        raise ValueError(f"sweep_batch must be >= 1, got {sweep_batch}")


class _ExpiryQueue(Generic[_K]):
    """Deadlines in a min-heap, swept from ordinary operations.

    Entries are never updated in place. Each owner decides, when an entry
    comes due, whether it is stale (the key was refreshed or deleted since)
    and reschedules the key if needed.
    """

    __slots__ = ("heap", "next_sweep", "interval", "batch")

    def __init__(self, interval: float, batch: int) -> None:
        self.heap: list[tuple[float, _K]] = []
        # Clock time of the next sweep; -inf so the first operation sets the pace.
        self.next_sweep = -_INF
        self.interval = interval
        self.batch = batch

    def push(self, deadline: float, key: _K) -> None:
        heapq.heappush(self.heap, (deadline, key))

    def sweep(self, now: float, on_due: Callable[[float, _K, float], None]) -> None:
        heap = self.heap
        for _ in range(self.batch):
            if not heap or heap[0][0] > now:
                self.next_sweep = now + self.interval
                return
            deadline, key = heapq.heappop(heap)
            on_due(deadline, key, now)
        # The batch is used up: go on at the next operation if more are due.
        self.next_sweep = now if heap and heap[0][0] <= now else now + self.interval


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
        self.data_expire_at = _INF
        self.meta_expire_at = _INF
        # Deadline of this stream's live heap entry (inf: none).
        self.scheduled = _INF


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
        _check_sweep_args(sweep_interval, sweep_batch)
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
        self._expiry: _ExpiryQueue[str] = _ExpiryQueue(sweep_interval, sweep_batch)
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
                if stream.scheduled != _INF
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
        stream.scheduled = _INF
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
        _check_sweep_args(sweep_interval, sweep_batch)
        self._history = history if history is not None else MemoryHistoryStore(clock=clock)
        self._clock = clock
        self._wall_clock = wall_clock
        # Set by start(), cleared by close(); None means "not serving".
        self._handler: BrokerEventHandler | None = None
        self._closed = False
        self._channels: set[str] = set()
        # (channel, idempotency key) -> (expire at, position of the original publish).
        self._results: dict[tuple[str, str], tuple[float, StreamPosition]] = {}
        self._results_expiry: _ExpiryQueue[tuple[str, str]] = _ExpiryQueue(
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

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        handler = self._handler
        if handler is None:
            self._state_error()
        if channel in self._channels:
            try:
                handler.on_join(channel, info)
            except Exception:
                logger.exception("broker event handler failed on a join in %r", channel)

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


# ---------------------------------------------------------------------------
# Presence
# ---------------------------------------------------------------------------


class _Presence:
    __slots__ = ("clients", "expires", "users", "scheduled")

    def __init__(self) -> None:
        # client id -> info, ordered by expiry: every add moves the client to
        # the end, and all leases have the same length.
        self.clients: OrderedDict[str, ClientInfo] = OrderedDict()
        # client id -> expire at. Apart from ``clients`` so that a refresh with
        # the same info allocates nothing: an idle server's refreshes would
        # otherwise promote a new tuple per client into the oldest GC generation.
        self.expires: dict[str, float] = {}
        # user id -> number of that user's live clients.
        self.users: dict[str, int] = {}
        # Deadline of this channel's live heap entry (inf: none).
        self.scheduled = _INF


class MemoryPresenceManager:
    """:class:`~rtcore.engine.presence.PresenceManager` in process memory.

    ``add`` and ``remove`` are O(1); ``stats`` is O(1) plus expired entries;
    ``presence`` is O(clients in the channel). Every lease has length ``ttl``,
    so a channel's entries expire in the order they were last added. That
    makes expiry O(expired) with no per-entry timers.

    Args:
        ttl: presence lease in seconds.
        clock: monotonic seconds (it must never go backwards).
        sweep_interval, sweep_batch: as in :class:`MemoryHistoryStore`.
    """

    def __init__(
        self,
        ttl: float = DEFAULT_PRESENCE_TTL,
        *,
        clock: Clock = time.monotonic,
        sweep_interval: float = 1.0,
        sweep_batch: int = 1000,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"presence ttl must be > 0 seconds, got {ttl}")
        _check_sweep_args(sweep_interval, sweep_batch)
        self._ttl = ttl
        self._clock = clock
        self._channels: dict[str, _Presence] = {}
        self._expiry: _ExpiryQueue[str] = _ExpiryQueue(sweep_interval, sweep_batch)

    @property
    def ttl(self) -> float:
        """The presence lease in seconds."""
        return self._ttl

    @property
    def channel_count(self) -> int:
        """Channels currently holding presence state."""
        return len(self._channels)

    async def add(self, channel: str, client_id: str, info: ClientInfo) -> None:
        now = self._clock()
        if now >= self._expiry.next_sweep:
            self._expiry.sweep(now, self._on_due)
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Presence()
        else:
            self._purge(state, now)
        clients = state.clients
        users = state.users
        old = clients.get(client_id)
        state.expires[client_id] = now + self._ttl
        if old is None:
            clients[client_id] = info
            users[info.user] = users.get(info.user, 0) + 1
        else:
            if old is not info:
                clients[client_id] = info
            clients.move_to_end(client_id)
            if old.user != info.user:
                self._forget_user(users, old.user)
                users[info.user] = users.get(info.user, 0) + 1
        self._schedule(channel, state)

    async def add_many(self, entries: Sequence[PresenceEntry]) -> None:
        """``add`` each ``(channel, client_id, info)``: the node's batched refresh."""
        for channel, client_id, info in entries:
            await self.add(channel, client_id, info)

    async def remove(self, channel: str, client_id: str, user_id: str) -> None:
        # The stored entry knows its user; ``user_id`` matters to backends that
        # keep per-user counters without reading the entry.
        state = self._channels.get(channel)
        if state is None:
            return
        info = state.clients.pop(client_id, None)
        if info is not None:
            del state.expires[client_id]
            self._forget_user(state.users, info.user)
            if not state.clients:
                del self._channels[channel]

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        state = self._current(channel)
        if state is None:
            return {}
        return dict(state.clients)

    async def stats(self, channel: str) -> PresenceStats:
        state = self._current(channel)
        if state is None:
            return PresenceStats()
        return PresenceStats(len(state.clients), len(state.users))

    # -- expiry ---------------------------------------------------------------

    def _current(self, channel: str) -> _Presence | None:
        now = self._clock()
        if now >= self._expiry.next_sweep:
            self._expiry.sweep(now, self._on_due)
        state = self._channels.get(channel)
        if state is None:
            return None
        self._purge(state, now)
        if not state.clients:
            del self._channels[channel]
            return None
        return state

    def _purge(self, state: _Presence, now: float) -> None:
        clients = state.clients
        expires = state.expires
        while clients:
            client_id = next(iter(clients))
            if expires[client_id] > now:
                return
            info = clients.pop(client_id)
            del expires[client_id]
            self._forget_user(state.users, info.user)

    @staticmethod
    def _forget_user(users: dict[str, int], user: str) -> None:
        count = users[user] - 1
        if count:
            users[user] = count
        else:
            del users[user]

    def _schedule(self, channel: str, state: _Presence) -> None:
        deadline = state.expires[next(iter(state.clients))]
        if deadline < state.scheduled:
            state.scheduled = deadline
            self._expiry.push(deadline, channel)

    def _on_due(self, deadline: float, channel: str, now: float) -> None:
        state = self._channels.get(channel)
        if state is None or state.scheduled != deadline:
            return  # stale entry
        state.scheduled = _INF
        self._purge(state, now)
        if state.clients:
            self._schedule(channel, state)
        else:
            del self._channels[channel]


if TYPE_CHECKING:
    _history: type[HistoryStore] = MemoryHistoryStore
    _broker: type[Broker] = MemoryBroker
    _presence: type[PresenceManager] = MemoryPresenceManager
