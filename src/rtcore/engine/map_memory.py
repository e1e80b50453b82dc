"""The in-memory :class:`~rtcore.engine.maps.MapStore`, the embedded default.

One process: changes reach only this node's handler, and the state is lost on
restart (a restart gives every map a new epoch, so clients load it again).
A change, its offset and the handler call happen in one synchronous step,
so subscribers see a channel's changes in offset order. Keys of modes with a
``key_ttl`` expire when any operation on their channel (or the node's sweep,
:meth:`MemoryMapStore.expire`) finds them due: each becomes a removal change.
"""

from __future__ import annotations

import bisect
import heapq
import os
import string
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from rtcore.engine.maps import (
    SUPPRESS_IDEMPOTENCY,
    SUPPRESS_KEY_EXISTS,
    SUPPRESS_KEY_NOT_FOUND,
    MapStateResult,
    MapStreamResult,
    MapUpdateResult,
    check_position,
)
from rtcore.protocol.types import Publication, StreamPosition


if TYPE_CHECKING:
    from collections.abc import Callable

    from rtcore.config.maps import MapOptions
    from rtcore.engine.broker import BrokerEventHandler
    from rtcore.engine.maps import MapStore


__all__ = ["MemoryMapStore"]

_LETTERS = string.ascii_letters


def _new_epoch() -> str:
    return "".join([_LETTERS[b % 52] for b in os.urandom(8)])


@dataclass(slots=True)
class _Map:
    epoch: str
    top: int = 0
    # key -> the publication that set it (offset of its last change).
    state: dict[str, Publication] = field(default_factory=dict)
    # The state's keys in order: the cursor of a page is the last key it held.
    keys: list[str] = field(default_factory=list)
    stream: deque[Publication] = field(default_factory=deque)
    written_at: float = 0.0
    # Keys that expire: key -> when, and a heap of (when, key) (stale items are skipped).
    expires: dict[str, float] = field(default_factory=dict)
    heap: list[tuple[float, str]] = field(default_factory=list)
    # idempotency key -> (position, expires at)
    results: dict[str, tuple[StreamPosition, float]] = field(default_factory=dict)


class MemoryMapStore:
    """Map channels in this process's memory.

    Args:
        handler: receives every change (``on_publication``); the node.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self, handler: BrokerEventHandler, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._handler = handler
        self._clock = clock
        self._maps: dict[str, _Map] = {}

    def _open(self, channel: str, opts: MapOptions) -> _Map:
        m = self._maps.get(channel)
        now = self._clock()
        if m is None:
            m = self._maps[channel] = _Map(_new_epoch(), written_at=now)
        else:
            if m.stream and now - m.written_at > opts.stream_lifetime:
                m.stream.clear()  # an idle stream's changes expire; the state stays
            if m.heap and m.heap[0][0] <= now:
                self._purge(channel, m, opts, now)
        return m

    def _purge(self, channel: str, m: _Map, opts: MapOptions, now: float) -> None:
        """Remove the keys that are due, each as a removal change."""
        while m.heap and m.heap[0][0] <= now:
            when, key = heapq.heappop(m.heap)
            if m.expires.get(key) != when:
                continue  # written again (or removed) since
            removal = Publication(data=b"", key=key, removed=True, time=_ms())
            self._apply(channel, m, removal, opts, now)

    async def expire(self, channel: str, opts: MapOptions) -> None:
        m = self._maps.get(channel)
        if m is not None and m.heap:
            self._purge(channel, m, opts, self._clock())
            if not m.state and not opts.has_stream:
                # Nothing to recover in an ephemeral map: an empty one is dropped.
                del self._maps[channel]

    def _apply(
        self, channel: str, m: _Map, pub: Publication, opts: MapOptions, now: float
    ) -> StreamPosition:
        """Change the state, append to the stream (if any) and deliver."""
        key = pub.key
        # The key's value before this change: the base of a delta subscriber's delta.
        prev = m.state.get(key)
        if pub.removed:
            del m.state[key]
            del m.keys[bisect.bisect_left(m.keys, key)]
            m.expires.pop(key, None)
        else:
            if key not in m.state:
                bisect.insort(m.keys, key)
            m.state[key] = pub
            if opts.key_ttl:
                when = m.expires[key] = now + opts.key_ttl
                heapq.heappush(m.heap, (when, key))
        if opts.has_stream:
            m.top += 1
            pub.offset = m.top
            m.stream.append(pub)
            while len(m.stream) > opts.stream_len:
                m.stream.popleft()
            m.written_at = now
        position = StreamPosition(m.top, m.epoch)
        self._handler.on_publication(channel, pub, position, None if pub.removed else prev)
        return position

    async def publish(
        self,
        channel: str,
        pub: Publication,
        opts: MapOptions,
        *,
        idempotency_key: str = "",
        idempotent_ttl: float = 300.0,
        key_mode: str = "",
        refresh_ttl: bool = False,
    ) -> MapUpdateResult:
        m = self._open(channel, opts)
        now = self._clock()
        if idempotency_key:
            cached = m.results.get(idempotency_key)
            if cached is not None and cached[1] > now:
                return MapUpdateResult(cached[0], True, SUPPRESS_IDEMPOTENCY)
        key = pub.key
        exists = key in m.state
        reason = ""
        if (pub.removed or key_mode == "if_exists") and not exists:
            reason = SUPPRESS_KEY_NOT_FOUND
        elif key_mode == "if_new" and exists:
            reason = SUPPRESS_KEY_EXISTS
            if refresh_ttl and opts.key_ttl:
                when = m.expires[key] = now + opts.key_ttl
                heapq.heappush(m.heap, (when, key))
        if reason:
            return MapUpdateResult(StreamPosition(m.top, m.epoch), True, reason)
        position = self._apply(channel, m, pub, opts, now)
        if idempotency_key:
            if len(m.results) > 1000:
                m.results = {k: v for k, v in m.results.items() if v[1] > now}
            m.results[idempotency_key] = (position, now + idempotent_ttl)
        return MapUpdateResult(position)

    async def read_state(
        self,
        channel: str,
        opts: MapOptions,
        *,
        cursor: str = "",
        limit: int = 100,
        key: str = "",
        revision: StreamPosition | None = None,
    ) -> MapStateResult:
        m = self._open(channel, opts)
        check_position(revision, m.epoch)
        position = StreamPosition(m.top, m.epoch)
        if key:
            found = m.state.get(key)
            return MapStateResult([] if found is None else [_copy(found)], position)
        if limit == 0:
            return MapStateResult([], position)
        start = bisect.bisect_right(m.keys, cursor) if cursor else 0
        end = len(m.keys) if limit < 0 else min(len(m.keys), start + limit)
        page = m.keys[start:end]
        entries = [_copy(m.state[k]) for k in page]
        return MapStateResult(entries, position, page[-1] if end < len(m.keys) and page else "")

    async def read_stream(
        self,
        channel: str,
        opts: MapOptions,
        *,
        since: StreamPosition | None = None,
        limit: int = -1,
        reverse: bool = False,
    ) -> MapStreamResult:
        m = self._open(channel, opts)
        check_position(since, m.epoch)
        position = StreamPosition(m.top, m.epoch)
        if limit == 0:
            return MapStreamResult([], position)
        after = since.offset if since is not None else 0
        pubs = [p for p in m.stream if p.offset > after]
        if reverse:
            pubs.reverse()
        if limit > 0:
            pubs = pubs[:limit]
        return MapStreamResult(pubs, position)

    async def stats(self, channel: str, opts: MapOptions) -> int:
        m = self._maps.get(channel)
        return 0 if m is None else len(self._open(channel, opts).state)

    async def clear(self, channel: str) -> None:
        self._maps.pop(channel, None)


def _ms() -> int:
    return int(time.time() * 1000)


def _copy(pub: Publication) -> Publication:
    # State entries go out as copies: a reader may not change the store's.
    return replace(pub)


if TYPE_CHECKING:
    _store: type[MapStore] = MemoryMapStore
