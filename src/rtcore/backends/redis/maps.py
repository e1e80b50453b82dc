"""Map channels in Redis: :class:`RedisMapStore`.

Key layout (``P`` = prefix, ``c`` = channel part, as in :mod:`rtcore.backends.redis.keys`)

    ====================  ======  =================================================
    key                   type    content
    ====================  ======  =================================================
    ``P.map.state.c``     HASH    map key -> ``"\\1" msgpack(offset) PUB``
    ``P.map.stream.c``    STREAM  entry id ``<offset>-0``, field ``d`` = ``"\\1" PUB``
    ``P.map.meta.c``      HASH    ``e`` epoch, ``s`` top offset
    ``P.map.expire.c``    ZSET    map key -> when it expires (unix ms, server clock)
    ``P.map.result.<n>.c.<key>``  STRING  ``"<offset>:<epoch>"`` of an idempotent update
    ====================  ======  =================================================

A change is published on the Redis broker's channel ``P.client.c`` in the
broker's own message format, so the nodes subscribed to the channel get it
through their :class:`~rtcore.backends.redis.RedisBroker` like any
publication: the store must share the broker's connections and prefix (build
it from the broker).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgpack

from rtcore.backends.redis import connection, map_scripts
from rtcore.backends.redis.codec import decode_entry, encode_publication, ms, new_epoch
from rtcore.backends.redis.connection import RedisStore
from rtcore.backends.redis.errors import RedisEngineError
from rtcore.engine.maps import (
    MapStateResult,
    MapStreamResult,
    MapUpdateResult,
    UnrecoverablePositionError,
)
from rtcore.protocol.types import Publication, StreamPosition


if TYPE_CHECKING:
    from rtcore.backends.redis.broker import RedisBroker
    from rtcore.config.maps import MapOptions
    from rtcore.engine.maps import MapStore


__all__ = ["RedisMapStore"]

logger = logging.getLogger(__name__)

# The connections answer NOSCRIPT (Redis lost its script cache) by running the
# source of the script with that SHA1: they must know these scripts too.
for _script in (
    map_scripts.MAP_UPDATE,
    map_scripts.MAP_READ_STATE,
    map_scripts.MAP_READ_STREAM,
    map_scripts.MAP_CLEAR,
):
    connection._SCRIPTS_BY_SHA[_script.sha.encode()] = _script


class RedisMapStore(RedisStore):
    """:class:`~rtcore.engine.maps.MapStore` in Redis, one Lua script per operation.

    Args:
        broker: the node's Redis broker; its connections, prefix and pub/sub
            channel names are shared.
    """

    def __init__(self, broker: RedisBroker) -> None:
        conns = broker.connections
        super().__init__(conns, broker.keys.prefix, conns.cluster)
        self._broker = broker

    def _keys(self, channel: str) -> list[str]:
        part = self.keys.part(channel)
        prefix = self.keys.prefix
        return [
            f"{prefix}.map.state.{part}",
            f"{prefix}.map.stream.{part}",
            f"{prefix}.map.meta.{part}",
            f"{prefix}.map.expire.{part}",
        ]

    def _common(self, channel: str, opts: MapOptions) -> list[Any]:
        """ARGV[1..6] of every map script (see map_scripts)."""
        return [
            new_epoch(),
            ms(opts.meta_lifetime) if opts.meta_lifetime else 0,
            opts.stream_len,
            ms(opts.stream_lifetime),
            "spublish" if self._broker.sharded_pubsub else "publish",
            self.keys.client(channel),
        ]

    async def _run(self, channel: str, script: Any, opts: MapOptions, args: list[Any]) -> Any:
        if self._closed:
            raise RedisEngineError("the map store is closed")
        keys = self._keys(channel)
        return await self._conns.script(channel, script, keys, self._common(channel, opts) + args)

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
        if self._closed:
            raise RedisEngineError("the map store is closed")
        keys = self._keys(channel)
        if idempotency_key:
            part = self.keys.part(channel)
            keys.append(f"{self.keys.prefix}.map.result.{len(channel)}.{part}.{idempotency_key}")
        args: list[Any] = [
            *self._common(channel, opts),
            pub.key,
            encode_publication(pub),
            "1" if pub.removed else "0",
            ms(opts.key_ttl) if opts.key_ttl else 0,
            key_mode,
            "1" if refresh_ttl else "0",
            ms(idempotent_ttl),
        ]
        result = await self._conns.script(channel, map_scripts.MAP_UPDATE, keys, args)
        position = StreamPosition(int(result[0]), _text(result[1]))
        reason = _text(result[2])
        if reason:
            return MapUpdateResult(position, True, reason)
        pub.offset = position.offset
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
        if cursor and not (cursor.isascii() and cursor.isdigit()):
            raise ValueError(f"invalid map state cursor {cursor[:32]!r}")
        expect = revision.epoch if revision is not None else ""
        args = [cursor or "0", limit, key, expect]
        result = await self._run(channel, map_scripts.MAP_READ_STATE, opts, args)
        position = StreamPosition(int(result[0]), _text(result[1]))
        if expect and expect != position.epoch:
            raise UnrecoverablePositionError(f"epoch {expect!r} is not {position.epoch!r}")
        flat = result[3]
        entries = []
        for i in range(0, len(flat) - 1, 2):
            pub = _state_entry(flat[i + 1])
            if pub is None:
                logger.warning("skipping a state entry of %r in an unknown format", channel)
                continue
            entries.append(pub)
        entries.sort(key=lambda p: p.key)
        return MapStateResult(entries, position, _text(result[2]))

    async def read_stream(
        self,
        channel: str,
        opts: MapOptions,
        *,
        since: StreamPosition | None = None,
        limit: int = -1,
        reverse: bool = False,
    ) -> MapStreamResult:
        if since is None:
            start, expect = ("+" if reverse else "-"), ""
        else:
            start = str(since.offset - 1 if reverse else since.offset + 1)
            expect = since.epoch
        if reverse and since is not None and since.offset <= 1:
            limit = 0  # nothing is older than the first change
        args = [limit, "1" if reverse else "0", start, expect]
        result = await self._run(channel, map_scripts.MAP_READ_STREAM, opts, args)
        position = StreamPosition(int(result[0]), _text(result[1]))
        if expect and expect != position.epoch:
            raise UnrecoverablePositionError(f"epoch {expect!r} is not {position.epoch!r}")
        pubs: list[Publication] = []
        for entry_id, fields in result[2] if len(result) > 2 else ():
            offset = int(entry_id.partition(b"-")[0])
            entry = fields[1] if len(fields) > 1 and fields[0] == b"d" else None
            pub = None if entry is None else decode_entry(entry, offset)
            if pub is None:
                logger.warning("skipping map stream entry %d of %r", offset, channel)
                continue
            pubs.append(pub)
        return MapStreamResult(pubs, position)

    async def expire(self, channel: str, opts: MapOptions) -> None:
        # Every script removes the expired keys first: reading the top is enough.
        await self._run(channel, map_scripts.MAP_READ_STREAM, opts, [0, "0", "-", ""])

    async def stats(self, channel: str, opts: MapOptions) -> int:
        await self.expire(channel, opts)
        return int(await self._conns.command(channel, "HLEN", self._keys(channel)[0]))

    async def clear(self, channel: str) -> None:
        if self._closed:
            raise RedisEngineError("the map store is closed")
        await self._conns.script(channel, map_scripts.MAP_CLEAR, self._keys(channel), [])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _state_entry(value: bytes) -> Publication | None:
    """A stored state value: ``"\\1" msgpack(offset) PUB``."""
    if not value or value[0] != 1:
        return None
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(value[1:])
    try:
        offset = unpacker.unpack()
        body_start = 1 + unpacker.tell()
    except Exception:  # noqa: BLE001 - a damaged entry is skipped, not fatal
        return None
    return decode_entry(b"\x01" + value[body_start:], int(offset))


if TYPE_CHECKING:
    _store: type[MapStore] = RedisMapStore
