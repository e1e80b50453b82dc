"""History in Redis streams: :class:`RedisHistoryStore`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rtcore.backends.redis import scripts
from rtcore.backends.redis.codec import (
    decode_entry,
    encode_publication,
    ms,
    new_epoch,
    parse_position,
)
from rtcore.backends.redis.connection import DEFAULT_URL, RedisConnections, RedisStore
from rtcore.backends.redis.errors import RedisEngineError
from rtcore.backends.redis.keys import DEFAULT_PREFIX
from rtcore.engine.history import (
    DEFAULT_META_TTL,
    HistoryOptions,
    HistoryResult,
    checked_read_args,
)
from rtcore.protocol.types import Publication, StreamPosition


if TYPE_CHECKING:
    from rtcore.engine.history import HistoryStore


__all__ = ["RedisHistoryStore"]


logger = logging.getLogger(__name__)


class RedisHistoryStore(RedisStore):
    """:class:`~rtcore.engine.history.HistoryStore` in Redis streams.

    A channel's stream is a Redis STREAM whose entry ids are the offsets, and
    a meta hash holding the epoch and the top offset. Adds and reads are Lua
    scripts, atomic per channel. TTLs are set in milliseconds, rounded up, and
    run on the Redis server's clock: they never end early and end at most
    about a millisecond late (Redis checks expiry on access).

    Storage failures raise :class:`RedisUnavailableError` (cannot reach Redis)
    or :class:`RedisEngineError` (Redis answered with an error). When Redis
    loses its data (a restart without persistence, eviction), the next read
    or add finds no meta and starts a new epoch, so clients see the
    "not recovered" path.

    Args:
        connections: a :class:`RedisConnections`, or the URL(s) to build one.
        prefix: key prefix.
        cluster: the URLs name Redis Cluster nodes.
        meta_ttl: meta lifetime set by reads that pass no ``meta_ttl``.
    """

    def __init__(
        self,
        connections: RedisConnections | str | Sequence[str] = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        cluster: bool = False,
        meta_ttl: float = DEFAULT_META_TTL,
    ) -> None:
        if not meta_ttl > 0:
            raise ValueError(f"meta_ttl must be > 0 seconds, got {meta_ttl}")
        super().__init__(connections, prefix, cluster)
        self._meta_ttl = meta_ttl

    # -- HistoryStore -------------------------------------------------------

    async def add(self, channel: str, pub: Publication, opts: HistoryOptions) -> StreamPosition:
        position, _ = await self.append(channel, pub, opts, "", "", False, None, 0.0)
        return position

    async def get(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int = 0,
        reverse: bool = False,
        meta_ttl: float | None = None,
    ) -> HistoryResult:
        return await self.read(channel, since, limit, reverse, meta_ttl)

    async def position(self, channel: str, *, meta_ttl: float | None = None) -> StreamPosition:
        return (await self.read(channel, None, 0, False, meta_ttl)).position

    async def remove(self, channel: str) -> None:
        if self._closed:
            raise RedisEngineError("the history store is closed")
        await self._conns.command(channel, "DEL", self.keys.stream(channel))

    # -- shared with the broker ---------------------------------------------

    async def append(
        self,
        channel: str,
        pub: Publication,
        opts: HistoryOptions,
        command: str,
        name: str,
        use_delta: bool,
        idempotency_key: str | None,
        idempotent_ttl: float,
    ) -> tuple[StreamPosition, bool]:
        """Run the publish script: append, and publish on ``name`` unless ``command`` is ""."""
        if self._closed:
            raise RedisEngineError("the history store is closed")
        keys = self.keys
        key_list = [keys.stream(channel), keys.meta(channel)]
        args: list[Any] = [
            encode_publication(pub),
            opts.size,
            ms(opts.ttl),
            ms(opts.meta_ttl),
            new_epoch(),
            command,
            name,
            "1" if use_delta else "0",
            "1" if self._conns.lineage else "0",
        ]
        if idempotency_key:
            key_list.append(keys.result(channel, idempotency_key))
            args.append(ms(idempotent_ttl))
        result = await self._conns.script(channel, scripts.PUBLISH_HISTORY, key_list, args)
        cached = result[2]
        if cached:
            return parse_position(cached), True
        offset = int(result[0])
        pub.offset = offset
        return StreamPosition(offset, result[1].decode()), False

    async def claim(
        self, channel: str, idempotency_key: str, idempotent_ttl: float
    ) -> StreamPosition | None:
        """Record ``idempotency_key`` for a publish without history, unless it exists.

        Returns None when the key is new (now recorded for ``idempotent_ttl``),
        or the position stored by the first publish under it. For brokers that
        publish outside Redis; :meth:`unclaim` undoes a claim whose publish failed.
        """
        if self._closed:
            raise RedisEngineError("the history store is closed")
        cached = await self._conns.script(
            channel,
            scripts.PUBLISH_IDEMPOTENT,
            [self.keys.result(channel, idempotency_key)],
            ["", "", "", ms(idempotent_ttl)],
        )
        return None if cached is None else parse_position(cached)

    async def unclaim(self, channel: str, idempotency_key: str) -> None:
        """Forget a claimed idempotency key (its publish failed)."""
        await self._conns.command(channel, "DEL", self.keys.result(channel, idempotency_key))

    async def read(
        self,
        channel: str,
        since: StreamPosition | None,
        limit: int,
        reverse: bool,
        meta_ttl: float | None,
    ) -> HistoryResult:
        """``HistoryStore.get`` with positional arguments."""
        meta_ttl = checked_read_args(since, limit, reverse, meta_ttl, self._meta_ttl)
        if self._closed:
            raise RedisEngineError("the history store is closed")
        if since is None:
            start = "+" if reverse else "-"
            expect_epoch = ""
        else:
            start = str(since.offset - 1 if reverse else since.offset + 1)
            expect_epoch = since.epoch
        keys = self.keys
        result = await self._conns.script(
            channel,
            scripts.HISTORY_READ,
            [keys.stream(channel), keys.meta(channel)],
            [
                new_epoch(),
                ms(meta_ttl),
                limit,
                "1" if reverse else "0",
                start,
                expect_epoch,
                "1" if self._conns.lineage else "0",
            ],
        )
        position = StreamPosition(int(result[0]), result[1].decode())
        if len(result) < 3:
            return HistoryResult([], position)
        pubs: list[Publication] = []
        for entry_id, fields in result[2]:
            offset = int(entry_id.partition(b"-")[0])
            entry = _field(fields, b"d")
            pub = None if entry is None else decode_entry(entry, offset)
            if pub is None:
                logger.warning(
                    "skipping history entry %d of %r in an unknown format", offset, channel
                )
                continue
            pubs.append(pub)
        return HistoryResult(pubs, position)


def _field(fields: Sequence[bytes], name: bytes) -> bytes | None:
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == name:
            return fields[i + 1]
    return None


if TYPE_CHECKING:
    _history: type[HistoryStore] = RedisHistoryStore
