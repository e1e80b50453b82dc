"""Stream positioning and recovery of a new subscription (PROTOCOL.md §4.3).

:func:`position` reads the channel's stream top for a positioned
subscription and, when the client asks to recover from an offset and epoch,
the publications it missed (the whole stream since then, or only the newest
publication in cache mode). Publications that reach the subscriber while the
subscribe is in progress are held; :func:`flush_buffer` delivers them after
the reply, continuing from the position the reply gave. A gap or a new epoch
there means the subscriber lost its state.

:class:`PositionCheck` catches what positioning alone cannot: a positioned
subscriber whose stream moved while nothing reached it (a publication lost
between nodes, a stream lost and recreated). Every
``client.channel_position_check_delay`` it compares the stream top with the
positions of the subscribers of each channel that got no publication for
that long, with one history read per channel.

A subscriber with a tags filter gets only the publications that match it,
recovered and held ones alike; the others still move its position, as they
do live. In cache mode it recovers the newest publication that matches.

The reads go through :class:`HistoryReads`, which merges concurrent reads of
one channel (single flight): after a mass reconnect the history of a channel
is read about once per burst of subscribes, not once per client, and every
client still gets exactly what its own read would have returned.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from rtcore.engine.history import HistoryResult
from rtcore.engine.stats import NodeStats
from rtcore.protocol import SubscribeRequest, SubscribeResult, codes
from rtcore.protocol.types import Publication, StreamPosition


if TYPE_CHECKING:
    from rtcore.engine.broker import Broker
    from rtcore.engine.session import ClientSession, SubscriptionState
    from rtcore.fanout import Subscriber


logger = logging.getLogger("rtcore.engine.recovery")

__all__ = [
    "HistoryReads",
    "PositionCheck",
    "position",
    "flush_buffer",
    "READ_TOP",
    "READ_LAST",
    "READ_SINCE",
]

#: The three reads of a subscribe: the stream top only (positioning), the
#: newest publication (cache-mode recovery), the publications after an offset
#: (stream-mode recovery).
READ_TOP = 0
READ_LAST = 1
READ_SINCE = 2

#: Seconds a finished read may serve later subscribes of its channel, as long
#: as no newer publication reached this node meanwhile.
REUSE_WINDOW = 1.0


class _Read:
    """One history read of a channel and the subscribes it serves."""

    __slots__ = (
        "kind",
        "channel",
        "meta_ttl",
        "since",
        "limit",
        "token",
        "waiters",
        "issued",
        "result",
        "offsets",
        "done_at",
    )

    def __init__(
        self, kind: int, channel: str, meta_ttl: float, since: int, limit: int, token: object
    ) -> None:
        self.kind = kind
        self.channel = channel
        self.meta_ttl = meta_ttl
        # READ_SINCE: the lowest offset asked for and how far past it the
        # read goes (-1: no limit); widened while the read is pending.
        self.since = since
        self.limit = limit
        # The broker subscription of the channel when the read was made: a
        # result serves only subscribers of that same subscription.
        self.token = token
        self.waiters: list[asyncio.Future[HistoryResult]] = []
        self.issued = False
        self.result: HistoryResult | None = None
        # Offsets of result.publications (READ_SINCE), for bisecting.
        self.offsets: list[int] = []
        self.done_at = 0.0

    def widen(self, since: int, limit: int) -> None:
        """Make the pending read cover ``limit`` publications after ``since`` too."""
        if since < self.since:
            if self.limit > 0:
                self.limit += self.since - since
            self.since = since
        if self.limit == -1 or limit == -1:
            self.limit = -1
        else:
            self.limit = max(self.limit, since + limit - self.since)

    def covers(self, since: int, limit: int) -> bool:
        """Whether this (issued) read returns everything a read from ``since`` would."""
        if self.kind != READ_SINCE:
            return True
        if since < self.since:
            return False
        if self.limit == -1:
            return True
        result = self.result
        if result is not None and len(result.publications) < self.limit:
            return True  # not cut by its limit: it reaches the top
        return limit != -1 and since + limit <= self.since + self.limit

    def serve(self, since: int, epoch: str, limit: int) -> HistoryResult:
        """What a read from ``since`` (``epoch``) with ``limit`` would have returned."""
        result = self.result
        assert result is not None
        if self.kind != READ_SINCE:
            return result
        top = result.position
        if epoch and epoch != top.epoch:
            return HistoryResult([], top)  # offsets of another stream mean nothing here
        pubs = result.publications
        start = bisect_right(self.offsets, since)
        end = len(pubs) if limit == -1 else min(len(pubs), start + limit)
        if start == 0 and end == len(pubs):
            return result
        return HistoryResult(pubs[start:end], top)


class HistoryReads:
    """Merges the history reads of subscribes (single flight).

    A read is merged into another of the same channel (and kind and meta
    TTL) when that one

    * has not been sent yet: reads asked for in one event-loop iteration go
      out as one, at the start of the next; the publications after the
      lowest offset asked for serve every client, each getting those after
      its own offset, up to its own limit. It is exact: every subscriber was
      registered, and the broker subscribed, before the read went out, so a
      publication is either in the result or held for delivery after the
      reply.
    * is in flight or finished less than :data:`REUSE_WINDOW` ago, was made
      during the same broker subscription of the channel, covers the
      offset and limit asked for, and its top is at or past the newest
      publication this node delivered in the channel before the subscribe
      joined it (checked once the result is there; otherwise the subscribe
      reads on its own). Then no publication can fall between the result
      and what the subscriber holds.

    A broker whose ``reads_in_process`` is true (the memory broker: its
    history is a read of this process's memory) is read at once, in the
    subscriber's own task, without waiting for the next loop iteration:
    such a read costs less than a task and a future to share it. Only the
    second kind of merge applies to it (a finished read serves identical
    later subscribes), which still makes a storm on one stream one read.

    Args:
        broker: where the reads go (``Broker.history``).
        token: ``token(channel)`` identifies the channel's current broker
            subscription (None while there is none).
        clock: monotonic seconds.
        stats: the node's counters: the reads are timed into ``history_read``
            and recovery outcomes counted in ``recoveries``.
    """

    __slots__ = (
        "broker",
        "stats",
        "_token",
        "_clock",
        "_reads",
        "_done",
        "_last",
        "delivered_at",
        "_tasks",
        "_inline",
        "reads",
        "saved",
    )

    def __init__(
        self,
        broker: Broker,
        token: Callable[[str], object],
        clock: Callable[[], float] = time.monotonic,
        stats: NodeStats | None = None,
    ) -> None:
        self.broker = broker
        self.stats = stats if stats is not None else NodeStats()
        self._token = token
        self._clock = clock
        # channel -> {(kind, meta_ttl): the latest read}
        self._reads: dict[str, dict[tuple[int, float], _Read]] = {}
        # Finished reads in the order they finished.
        self._done: deque[_Read] = deque()
        # channel -> (offset, epoch) of the newest publication delivered here.
        self._last: dict[str, tuple[int, str]] = {}
        # channel -> monotonic time of the newest publication delivered here.
        self.delivered_at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[Exception | None]] = set()
        # A broker that answers from process memory is read at once, in the
        # subscriber's task: no task, no future, no loop iteration per read.
        self._inline = getattr(broker, "reads_in_process", False) is True
        # Reads sent to the broker, and reads saved by merging.
        self.reads = 0
        self.saved = 0

    def delivered(self, channel: str, position: StreamPosition) -> None:
        """A publication of ``channel`` reached this node (before its subscribers)."""
        if position.offset:
            self._last[channel] = (position.offset, position.epoch)
            self.delivered_at[channel] = self._clock()

    def forget(self, channel: str) -> None:
        """The node's broker subscription of ``channel`` ended."""
        self._reads.pop(channel, None)
        self._last.pop(channel, None)
        self.delivered_at.pop(channel, None)

    async def read(
        self,
        kind: int,
        channel: str,
        meta_ttl: float,
        since: int = 0,
        epoch: str = "",
        limit: int = 0,
    ) -> HistoryResult:
        """What this subscribe's own read would return, merged with others where exact.

        ``since``, ``epoch`` and ``limit`` (-1: none) matter to ``READ_SINCE`` only.
        """
        token = self._token(channel)
        if self._done:
            self._sweep(self._clock())
        key = (kind, meta_ttl)
        by_kind = self._reads.get(channel)
        current = by_kind.get(key) if by_kind is not None else None
        if current is not None and token is not None and current.token is token:
            if not current.issued:
                current.widen(since, limit)
                await self._wait(current)
                self.saved += 1
                return current.serve(since, epoch, limit)
            if (
                current.result is None or self._clock() - current.done_at <= REUSE_WINDOW
            ) and current.covers(since, limit):
                # Whatever reaches this node from now on is held for the subscriber.
                last = self._last.get(channel)
                await self._wait(current)
                top = current.result.position if current.result is not None else None
                if (
                    top is not None
                    and (last is None or (last[1] == top.epoch and last[0] <= top.offset))
                    and current.covers(since, limit)
                ):
                    self.saved += 1
                    return current.serve(since, epoch, limit)
                # A newer publication reached this node meanwhile: read again.
                by_kind = self._reads.get(channel)
        read = _Read(kind, channel, meta_ttl, since, limit, token)
        if token is not None:  # only reads during a broker subscription are shared
            if by_kind is None:
                by_kind = self._reads[channel] = {}
            by_kind[key] = read
        if self._inline:
            read.issued = True
            failure = await self._run(read)
            if failure is not None:
                raise failure
            return read.serve(since, epoch, limit)
        asyncio.get_running_loop().call_soon(self._issue, read)
        await self._wait(read)
        return read.serve(since, epoch, limit)

    async def _wait(self, read: _Read) -> None:
        if read.result is None:
            waiter: asyncio.Future[HistoryResult] = asyncio.get_running_loop().create_future()
            read.waiters.append(waiter)
            await waiter

    def _issue(self, read: _Read) -> None:
        read.issued = True
        task = asyncio.get_running_loop().create_task(self._run(read))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, read: _Read) -> Exception | None:
        """Send ``read`` and settle its waiters; the failure, if any, is returned."""
        self.reads += 1
        started = time.perf_counter()
        try:
            if read.kind == READ_TOP:
                result = await self.broker.history(read.channel, limit=0, meta_ttl=read.meta_ttl)
            elif read.kind == READ_LAST:
                result = await self.broker.history(
                    read.channel, limit=1, reverse=True, meta_ttl=read.meta_ttl
                )
            else:
                # Epoch "" matches any stream: each subscribe compares its own.
                result = await self.broker.history(
                    read.channel,
                    since=StreamPosition(read.since, ""),
                    limit=read.limit,
                    meta_ttl=read.meta_ttl,
                )
        except BaseException as exc:
            by_kind = self._reads.get(read.channel)
            if by_kind is not None and by_kind.get((read.kind, read.meta_ttl)) is read:
                del by_kind[(read.kind, read.meta_ttl)]
            for waiter in read.waiters:
                if not waiter.done():
                    # A fresh exception each: one raised in many tasks would
                    # collect all their tracebacks.
                    waiter.set_exception(_fresh(exc))
            if not isinstance(exc, Exception):
                raise
            return exc
        self.stats.history_read.observe(time.perf_counter() - started)
        read.result = result
        read.offsets = [p.offset for p in result.publications]
        read.done_at = now = self._clock()
        self._done.append(read)
        self._sweep(now)
        waiters, read.waiters = read.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(result)
        return None

    def _sweep(self, now: float) -> None:
        """Drop finished reads that may serve no more (oldest first, O(dropped))."""
        done = self._done
        while done and now - done[0].done_at > REUSE_WINDOW:
            read = done.popleft()
            by_kind = self._reads.get(read.channel)
            key = (read.kind, read.meta_ttl)
            if by_kind is not None and by_kind.get(key) is read:
                del by_kind[key]
                if not by_kind:
                    del self._reads[read.channel]


class PositionCheck:
    """The periodic check of idle positioned subscriptions (Centrifuge's position sync).

    Every ``delay`` seconds, each channel whose positioned subscribers here
    got no publication for ``delay`` seconds has its stream top read (once
    for all of them, :data:`CONCURRENCY` channels at a time). A subscriber
    whose offset or epoch differs from the top lost publications: it gets
    ``lost_state`` (unsubscribe 2500 / disconnect 3010) and recovers. A
    channel that got a publication while its top was read is left for the
    next round: the read may predate it.

    Args:
        hub: the node's hub (its subscribers).
        reads: the node's history reads (when publications arrived).
        meta_ttl: ``meta_ttl(channel)``, the history meta TTL of the channel's namespace.
        lost_state: called for each subscriber found behind.
        delay: seconds (> 0).
    """

    #: Stream tops read at once.
    CONCURRENCY = 32

    def __init__(
        self,
        hub: Any,
        reads: HistoryReads,
        meta_ttl: Callable[[str], float],
        lost_state: Callable[[Subscriber], None],
        delay: float,
    ) -> None:
        self.hub = hub
        self.reads = reads
        self.meta_ttl = meta_ttl
        self.lost_state = lost_state
        self.delay = delay
        # channel -> when its positions were last found right (monotonic).
        self._checked_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        # The top of a map channel's stream (None for other channels), set by the node.
        self.map_top: Callable[[str], Awaitable[StreamPosition | None]] | None = None
        # Stream tops read, and subscribers found behind (observability, tests).
        self.checks = 0
        self.lost = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.delay)
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - the next round tries again
                logger.exception("position check failed")

    async def sweep(self) -> None:
        """One round: check every channel that is due."""
        now = self.reads._clock()
        due = []
        checked = self._checked_at
        for channel in self.hub.channels():
            idle_since = max(self.reads.delivered_at.get(channel, 0.0), checked.get(channel, 0.0))
            if not idle_since:
                checked[channel] = now  # first seen: due one delay from now
            elif now - idle_since >= self.delay:
                due.append(channel)
        for gone in set(checked) - set(self.hub.channels()):
            del checked[gone]
        for start in range(0, len(due), self.CONCURRENCY):
            batch = due[start : start + self.CONCURRENCY]
            await asyncio.gather(*(self._check(channel) for channel in batch))

    async def _check(self, channel: str) -> None:
        subs = [s for s in self.hub.subscribers(channel) if s.positioned and s.buffer is None]
        if not subs:
            return
        before = self.reads.delivered_at.get(channel)
        try:
            # A map channel's position is that of its own stream.
            top = None if self.map_top is None else await self.map_top(channel)
            if top is None:
                result = await self.reads.broker.history(
                    channel, limit=0, meta_ttl=self.meta_ttl(channel)
                )
                top = result.position
        except Exception as exc:  # noqa: BLE001 - the engine is down: check later
            logger.warning("position check of %s failed: %s", channel, exc)
            return
        self.checks += 1
        if self.reads.delivered_at.get(channel) != before:
            return  # a publication came meanwhile: the read may predate it
        for sub in subs:
            if self.hub.subscriber(channel, sub.session.client_id) is not sub:
                continue  # unsubscribed meanwhile
            if sub.offset != top.offset or sub.epoch != top.epoch:
                self.lost += 1
                self.lost_state(sub)
        self._checked_at[channel] = self.reads._clock()


def _fresh(exc: BaseException) -> BaseException:
    try:
        return copy.copy(exc).with_traceback(None)
    except Exception:  # noqa: BLE001 - an exception type that does not copy
        return RuntimeError(f"history read failed: {exc!r}")


async def position(
    reads: HistoryReads,
    state: SubscriptionState,
    req: SubscribeRequest,
    result: SubscribeResult,
    recoverable: bool,
    max_publications: int,
) -> None:
    """Read the stream top and, when asked, recover missed publications into ``result``.

    ``max_publications`` caps a stream-mode recovery (0: no cap). Raises
    ClientError 112 when recovery fails and the client asked to be refused then.
    """
    opts = state.options
    channel = state.channel
    tags_filter = state.subscriber.tags_filter
    result.positioned = True
    result.recoverable = recoverable
    recover = recoverable and req.recover
    meta_ttl = opts.history_meta_ttl
    pubs: list[Publication] = []
    recovered = False
    if recover and opts.force_recovery_mode == "stream":
        hr = await reads.read(
            READ_SINCE,
            channel,
            meta_ttl,
            req.offset,
            req.epoch,
            max_publications if max_publications else -1,
        )
        top = hr.position
        pubs = list(hr.publications)
        if req.epoch and req.epoch != top.epoch:
            recovered = False
        elif not pubs:
            recovered = top.offset == req.offset
        else:
            recovered = pubs[0].offset == req.offset + 1 and pubs[-1].offset == top.offset
    elif recover:
        if tags_filter is None:
            hr = await reads.read(READ_LAST, channel, meta_ttl)
        else:
            # The newest publication that matches, wherever it is in the stream.
            hr = await reads.broker.history(
                channel,
                limit=max_publications if max_publications else -1,
                reverse=True,
                meta_ttl=meta_ttl,
            )
        top = hr.position
        at_top = req.offset > 0 and req.offset == top.offset and req.epoch == top.epoch
        if at_top:
            recovered = True
        elif hr.publications and hr.publications[0].offset == top.offset:
            recovered = True
            pubs = [hr.publications[0]]
            if tags_filter is not None:
                pubs = [p for p in hr.publications if tags_filter(p.tags)][:1]
        else:
            recovered = top.offset == 0 or at_top
    else:
        top = (await reads.read(READ_TOP, channel, meta_ttl)).position
    if recover:
        reads.stats.recoveries["recovered" if recovered else "not_recovered"] += 1
    if not recovered:
        pubs = []
        if recover and req.flag & 2:
            raise codes.ERROR_UNRECOVERABLE_POSITION
    result.epoch = top.epoch
    result.offset = top.offset
    result.was_recovering = bool(recover)
    result.recovered = recovered
    if recovered and tags_filter is not None:
        pubs = [p for p in pubs if tags_filter(p.tags)]
    if recovered:
        result.publications = pubs
        result.offset = req.offset if pubs else top.offset
    state.subscriber.epoch = top.epoch
    state.subscriber.offset = top.offset


def flush_buffer(
    session: ClientSession,
    state: SubscriptionState,
    lost_state: Callable[[Subscriber], None],
) -> None:
    """Deliver publications held during subscribe, after the reply (§4.3 step 10).

    A positioned subscriber gets them in order from ``state.flush_from`` on;
    a gap or another epoch calls ``lost_state(subscriber)`` and delivers no more.
    A delta subscriber gets them in full; the next live one may be a delta.
    """
    sub = state.subscriber
    buffered = sub.buffer or []
    sub.buffer = None
    state.pending = False
    if not buffered:
        return
    channel = state.channel
    hub = session.node.hub
    tags_filter = sub.tags_filter
    last = state.flush_from
    for pub, offset, epoch in buffered:
        if sub.positioned and offset > 0:
            if epoch != state.epoch:
                lost_state(sub)
                return
            if offset <= last:
                continue  # already in the reply (or older than the position)
            if offset != last + 1:
                lost_state(sub)
                return
            last = offset
        if tags_filter is not None and not tags_filter(pub.tags):
            sub.delta_ready = False  # the client's base is not this publication
            continue
        try:
            payload = hub.encode_publication(channel, sub.codec, pub)
        except ValueError:
            session.disconnect(codes.INAPPROPRIATE_PROTOCOL)
            return
        sub.writer.enqueue(payload)
        if sub.delta_index >= 0:
            sub.delta_ready = offset > 0
    if sub.positioned:
        sub.offset = max(sub.offset, last)
