"""The Redis Streams consumer (``type = "redis_stream"``).

Each stream is read through a consumer group (``XREADGROUP``), by
``num_workers`` readers per node; with one reader its entries are applied in
stream order. An entry is acknowledged (``XACK``) only after its command was
applied (or dropped as one that can never apply). A reader's name in the
group is stable across restarts of its node (``<consumer>-<node name or host
name>-<worker>``): a restarted reader first applies the entries that were
delivered to it and not acknowledged, then reads new ones, so the order holds
across restarts. Entries pending at another reader for longer than
``visibility_timeout`` (a node that is gone) are claimed (``XAUTOCLAIM``) and
applied too, so nothing is lost; those may come out of order. A claimed entry may have been applied already: the default
idempotency key ``<stream>:<entry id>`` keeps it from reaching clients twice.

The group is created (``XGROUP CREATE ... 0 MKSTREAM``) when missing, at the
start of the stream: entries already in it are applied too. An entry holds
the method in its field ``method_value`` and the JSON parameters in
``payload_value``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from rtcore.server.consumers.base import Backoff, Consumer
from rtcore.server.consumers.dispatch import Outcome


if TYPE_CHECKING:
    from rtcore.config.consumers import RedisStreamConsumerConfig
    from rtcore.server.consumers.dispatch import Dispatcher
    from rtcore.server.consumers.metrics import ConsumerStats


__all__ = ["RedisStreamConsumer"]

# Entries claimed or read per command.
_COUNT = 16
# Milliseconds XREADGROUP blocks waiting for new entries (then claims are checked).
_BLOCK_MS = 1000


class RedisStreamConsumer(Consumer):
    """Applies the commands of Redis streams read through a consumer group.

    Args:
        node_id: names this node's readers in the group; stable across restarts
            of the node and distinct between nodes (the node name or host name).
    """

    def __init__(
        self,
        name: str,
        config: RedisStreamConsumerConfig,
        dispatcher: Dispatcher,
        stats: ConsumerStats,
        node_id: str,
    ) -> None:
        super().__init__(name, dispatcher, stats)
        self.config = config
        self._node_id = node_id
        self._method_field = config.method_value.encode()
        self._payload_field = config.payload_value.encode()
        self._idle_ms = max(1, int(config.visibility_timeout * 1000))
        self._clients: list[Redis] = []

    def _run(self) -> None:
        for stream in self.config.streams:
            for worker in range(self.config.num_workers):
                self._spawn(self._read(stream, worker), f"{stream}-{worker}")

    async def _close_source(self) -> None:
        for client in self._clients:
            await client.aclose()
        self._clients.clear()

    async def _read(self, stream: str, worker: int) -> None:
        group = self.config.consumer_group
        # Stable across restarts of this node: a restarted reader finds its own
        # pending entries (its PEL) and applies them first, keeping the order.
        me = f"{self.name}-{self._node_id}-{worker}"
        # Blocking reads need their own connection, and a timeout above the block.
        client = Redis.from_url(self.config.address, socket_timeout=_BLOCK_MS / 1000 + 5)
        self._clients.append(client)
        backoff = Backoff()
        ready = False
        while not self.closing:
            try:
                if not ready:
                    await self._ensure_group(client, stream, group)
                    await self._own_pending(client, stream, group, me)
                    ready = True
                await self._claim(client, stream, group, me)
                reply: Any = await client.xreadgroup(
                    group, me, {stream: ">"}, count=_COUNT, block=_BLOCK_MS
                )
                for _, entries in reply or ():
                    for entry_id, fields in entries:
                        if self.closing:
                            return  # read, not applied: pending, claimed after the timeout
                        await self._entry(client, stream, group, entry_id, fields)
                backoff.reset()
            except (redis_errors.RedisError, OSError) as exc:
                if isinstance(exc, redis_errors.ResponseError) and "NOGROUP" in str(exc):
                    ready = False  # the stream or group was deleted: create it again
                self.source_failed(f"stream {stream}", exc)
                await backoff.wait()

    async def _ensure_group(self, client: Redis, stream: str, group: str) -> None:
        try:
            await client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _own_pending(self, client: Redis, stream: str, group: str, me: str) -> None:
        """Apply the entries delivered to this reader before and not acknowledged."""
        start = "0"
        while not self.closing:
            reply: Any = await client.xreadgroup(group, me, {stream: start}, count=_COUNT)
            entries = reply[0][1] if reply else []
            if not entries:
                return
            for entry_id, fields in entries:
                start = entry_id.decode()
                if fields:  # an entry trimmed from the stream meanwhile has none
                    await self._entry(client, stream, group, entry_id, fields)
                else:
                    await client.xack(stream, group, entry_id)

    async def _claim(self, client: Redis, stream: str, group: str, me: str) -> None:
        """Apply the entries pending longer than the visibility timeout, oldest first."""
        start: Any = "0-0"
        while not self.closing:
            reply = await client.xautoclaim(
                stream, group, me, min_idle_time=self._idle_ms, start_id=start, count=_COUNT
            )
            start, entries = reply[0], reply[1]
            for entry_id, fields in entries:
                if fields is None:
                    continue  # trimmed from the stream meanwhile (Redis 7 lists them apart)
                await self._entry(client, stream, group, entry_id, fields)
            if start in (b"0-0", "0-0"):
                return

    async def _entry(
        self, client: Redis, stream: str, group: str, entry_id: bytes, fields: dict[bytes, bytes]
    ) -> None:
        ident = entry_id.decode()
        method = fields.get(self._method_field)
        payload = fields.get(self._payload_field, b"")
        if method is None:
            outcome = self.dispatcher.reject(
                f"{stream}#{ident}", f"no {self.config.method_value!r} field"
            )
        else:
            outcome = await self.apply(
                method.decode("utf-8", "replace"),
                payload,
                message_id=f"{stream}#{ident}",
                key=f"{stream}:{ident}",
            )
        if outcome is Outcome.RETRY:
            return  # closing: stays pending, claimed after the visibility timeout
        await client.xack(stream, group, entry_id)
        millis, _, _ = ident.partition("-")
        if millis.isdigit():
            self.stats.observe_created(int(millis) / 1000)
