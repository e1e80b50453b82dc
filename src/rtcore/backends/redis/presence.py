"""Presence in Redis: :class:`RedisPresenceManager`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from rtcore.backends.redis import scripts
from rtcore.backends.redis.codec import decode_presence_entry, encode_presence_entry, ms
from rtcore.backends.redis.connection import DEFAULT_URL, RedisConnections, RedisStore
from rtcore.backends.redis.errors import RedisEngineError
from rtcore.backends.redis.keys import DEFAULT_PREFIX
from rtcore.engine.presence import DEFAULT_PRESENCE_TTL
from rtcore.protocol.types import ClientInfo, PresenceStats


if TYPE_CHECKING:
    from rtcore.engine.presence import PresenceEntry, PresenceManager


__all__ = ["ADD_MANY_BATCH", "RedisPresenceManager"]

#: Most entries per presence refresh script call (a script blocks its shard
#: while it runs: 256 entries take well under a millisecond of Redis time).
ADD_MANY_BATCH = 256


logger = logging.getLogger(__name__)


class RedisPresenceManager(RedisStore):
    """:class:`~rtcore.engine.presence.PresenceManager` in Redis.

    A channel's presence is three keys on its shard: a hash of client id to
    entry, a sorted set of client id to lease end, and a hash of user id to
    that user's number of live clients (so ``stats`` is two ``HLEN``). Every
    call is one Lua script that first removes the expired entries, so results
    never include them. Lease ends are computed from the Redis server's
    ``TIME`` in milliseconds (rounded up), so nodes with skewed clocks agree
    and a lease ends at most about a millisecond late. The keys themselves
    expire ``ttl`` after the channel's latest ``add``, so an abandoned channel
    frees its memory on its own.

    Args:
        connections: a :class:`RedisConnections`, or the URL(s) to build one.
        prefix: key prefix.
        cluster: the URLs name Redis Cluster nodes.
        ttl: the presence lease in seconds.
    """

    def __init__(
        self,
        connections: RedisConnections | str | Sequence[str] = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        cluster: bool = False,
        ttl: float = DEFAULT_PRESENCE_TTL,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"presence ttl must be > 0 seconds, got {ttl}")
        super().__init__(connections, prefix, cluster)
        self._ttl = ttl
        self._ttl_ms = ms(ttl)

    @property
    def ttl(self) -> float:
        """The presence lease in seconds."""
        return self._ttl

    @property
    def healthy(self) -> bool:
        return self._conns.healthy

    def _keys(self, channel: str) -> list[str]:
        if self._closed:
            raise RedisEngineError("the presence manager is closed")
        keys = self.keys
        return [
            keys.presence_data(channel),
            keys.presence_expire(channel),
            keys.presence_users(channel),
        ]

    async def add(self, channel: str, client_id: str, info: ClientInfo) -> None:
        await self._conns.script(
            channel,
            scripts.PRESENCE_ADD,
            self._keys(channel),
            [client_id, encode_presence_entry(info), self._ttl_ms, info.user],
        )

    async def add_many(self, entries: Sequence[PresenceEntry]) -> None:
        """Every entry's ``add`` at once: the node's batched refresh.

        On standalone shards the entries of one shard go as one script call
        (up to :data:`ADD_MANY_BATCH` entries each): one command and one reply
        per batch rather than per entry, for the node and for Redis. On a
        Cluster, whose channels live in different slots, they run as
        concurrent ``add`` calls. The first failure is raised once all replied.
        """
        if not entries:
            return
        conns = self._conns
        pending: list[Awaitable[Any]] = []
        if conns.cluster:
            # Concurrent calls may land in any order: a client given twice
            # keeps its last entry, as if the adds ran one after another.
            latest = {(e[0], e[1]): e for e in entries}
            for channel, client_id, info in latest.values():
                pending.append(self.add(channel, client_id, info))
        else:
            conns._check_open()
            by_shard: dict[int, tuple[list[str], list[Any]]] = {}
            for channel, client_id, info in entries:
                shard = conns.shard(channel)
                batch = by_shard.get(shard)
                if batch is None or len(batch[0]) >= 3 * ADD_MANY_BATCH:
                    if batch is not None:
                        pending.append(self._add_batch(shard, *batch))
                    batch = by_shard[shard] = ([], [self._ttl_ms])
                batch[0].extend(self._keys(channel))  # raises when closed
                batch[1].extend((client_id, encode_presence_entry(info), info.user))
            for shard, batch in by_shard.items():
                pending.append(self._add_batch(shard, *batch))
        results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _add_batch(self, shard: int, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        sha = scripts.PRESENCE_ADD_MANY.sha
        return self._conns._batchers[shard].call(("EVALSHA", sha, len(keys), *keys, *args))

    async def remove(self, channel: str, client_id: str, user_id: str) -> None:
        # The stored entry knows its user, so user_id is not needed here.
        await self._conns.script(channel, scripts.PRESENCE_REMOVE, self._keys(channel), [client_id])

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        flat = await self._conns.script(channel, scripts.PRESENCE_GET, self._keys(channel), [])
        out: dict[str, ClientInfo] = {}
        for i in range(0, len(flat) - 1, 2):
            info = decode_presence_entry(flat[i + 1])
            if info is None:
                logger.warning("skipping a presence entry in an unknown format in %r", channel)
                continue
            out[flat[i].decode()] = info
        return out

    async def stats(self, channel: str) -> PresenceStats:
        clients, users = await self._conns.script(
            channel, scripts.PRESENCE_STATS, self._keys(channel), []
        )
        return PresenceStats(int(clients), int(users))


if TYPE_CHECKING:
    _presence: type[PresenceManager] = RedisPresenceManager
