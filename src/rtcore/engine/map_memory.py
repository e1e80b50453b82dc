"""The in-memory :class:`~rtcore.engine.maps.MapStore`, the embedded default.

One process: changes reach only this node's handler, and the state is lost on
restart (a restart gives every map a new epoch, so clients load it again).
A change, its offset and the handler call happen in one synchronous step,
so subscribers see a channel's changes in offset order.
"""

from __future__ import annotations

import bisect
import os
import string
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from rtcore.engine.maps import (
    SUPPRESS_IDEMPOTENCY,
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
        elif m.stream and now - m.written_at > opts.stream_ttl:
            m.stream.clear()  # an idle stream's changes expire; the state stays
        return m

    async def publish(
        self,
        channel: str,
        pub: Publication,
        opts: MapOptions,
        *,
        idempotency_key: str = "",
        idempotent_ttl: float = 300.0,
    ) -> MapUpdateResult:
        m = self._open(channel, opts)
        now = self._clock()
        if idempotency_key:
            cached = m.results.get(idempotency_key)
            if cached is not None and cached[1] > now:
                return MapUpdateResult(cached[0], True, SUPPRESS_IDEMPOTENCY)
        key = pub.key
        if pub.removed:
            old = m.state.pop(key, None)
            if old is None:
                return MapUpdateResult(StreamPosition(m.top, m.epoch), True, SUPPRESS_KEY_NOT_FOUND)
            del m.keys[bisect.bisect_left(m.keys, key)]
        m.top += 1
        pub.offset = m.top
        if not pub.removed:
            if key not in m.state:
                bisect.insort(m.keys, key)
            m.state[key] = pub
        m.stream.append(pub)
        while len(m.stream) > opts.stream_size:
            m.stream.popleft()
        m.written_at = now
        position = StreamPosition(m.top, m.epoch)
        if idempotency_key:
            if len(m.results) > 1000:
                m.results = {k: v for k, v in m.results.items() if v[1] > now}
            m.results[idempotency_key] = (position, now + idempotent_ttl)
        self._handler.on_publication(channel, pub, position, None)
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

    async def stats(self, channel: str) -> int:
        m = self._maps.get(channel)
        return 0 if m is None else len(m.state)

    async def clear(self, channel: str) -> None:
        self._maps.pop(channel, None)


def _copy(pub: Publication) -> Publication:
    # State entries go out as copies: a reader may not change the store's.
    return replace(pub)


if TYPE_CHECKING:
    _store: type[MapStore] = MemoryMapStore
