"""Which pub/sub connection each channel is subscribed on, standalone or Cluster.

A router places pub/sub channels on :class:`~rtcore.backends.redis.pubsub.Link`
objects and waits until Redis has confirmed a subscription. On standalone
shards a channel's link is its shard's (:class:`ShardRouter`). Under Redis
Cluster it is the primary that owns the channel's slot, and when a link drops
or a slot moves the router re-reads the slot map and moves the channels
(:class:`ClusterRouter`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from redis import exceptions as redis_errors
from redis.asyncio import RedisCluster

from rtcore.backends.redis.connection import Endpoint, RedisConnections
from rtcore.backends.redis.errors import RedisUnavailableError
from rtcore.backends.redis.pubsub import Link, LinkSettings
from rtcore.engine.broker import BrokerClosedError


__all__ = ["ClusterRouter", "Router", "ShardRouter"]


logger = logging.getLogger(__name__)

# Seconds between two log lines about unconfirmed subscriptions.
_LOG_INTERVAL: Final = 1.0


class Router(ABC):
    """Places pub/sub channels on links and waits for subscriptions to take effect."""

    def __init__(self, deliver: Callable[[bytes, bytes], None], settings: LinkSettings) -> None:
        self.deliver = deliver
        self.sharded = settings.sharded
        self._settings = settings
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._home: dict[bytes, Link] = {}
        self.closed = False
        # Unconfirmed subscriptions not logged yet, and when the last line was.
        self._unconfirmed = 0
        self._unconfirmed_logged_at = -_LOG_INTERVAL

    def _new_link(self, endpoint: Endpoint) -> Link:
        link = Link(self, endpoint, self._settings)
        link.start()
        return link

    @property
    @abstractmethod
    def links(self) -> list[Link]:
        """Every pub/sub connection of the router."""

    @abstractmethod
    def link_for(self, name: bytes) -> Link:
        """The connection that pub/sub channel ``name`` belongs on now."""

    def is_desired(self, name: bytes) -> bool:
        return name in self._home

    @abstractmethod
    async def start(self) -> None:
        """Open the initial connections."""

    async def subscribe(self, name: bytes, timeout: float) -> None:
        link = self._home.get(name)
        if link is None:
            link = self.link_for(name)
            self._home[name] = link
            link.add(name)
        if name in link.active:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(name, [])
        waiters.append(fut)
        try:
            # asyncio.wait never cancels fut: a confirmation read late still settles it.
            await asyncio.wait((fut,), timeout=timeout)
            if not fut.done():
                await self._read_pending_replies(name, fut)
            if fut.done():
                fut.result()  # BrokerClosedError if closed meanwhile
                return
            home = self._home.get(name)
            if home is not None and name not in home.active and waiters == [fut]:
                self.unsubscribe(name)
            error = (home or link).last_error
            self._count_unconfirmed(name, error)
            raise RedisUnavailableError(
                f"Redis did not confirm the subscription to {name!r} in {timeout} s"
                + (f" (last error: {error})" if error else "")
            )
        finally:
            if fut in waiters:
                waiters.remove(fut)
            if not waiters and self._waiters.get(name) is waiters:
                del self._waiters[name]

    async def _read_pending_replies(self, name: bytes, fut: asyncio.Future[None]) -> None:
        """After a passed deadline, let the loop read what Redis already sent.

        A loop lagging behind (thousands of handshakes at once) may run the
        deadline before it reads the socket where the confirmation is already
        waiting. So the loop gets turns, each reading the socket, for as long
        as our command for ``name`` is still unanswered and the link still
        reads replies ahead of it; a turn that reads nothing means Redis has
        not answered, and a link with nothing pending for ``name`` (not
        connected, or the command refused) cannot confirm it.
        """
        seen: tuple[Link, int] | None = None
        while not fut.done():
            link = self._home.get(name)
            if link is None or not link.awaiting(name):
                return
            if seen == (link, link.reads):
                return
            seen = (link, link.reads)
            await asyncio.sleep(0)

    def _count_unconfirmed(self, name: bytes, error: BaseException | None) -> None:
        """Log unconfirmed subscriptions at most once per interval, with their number."""
        self._unconfirmed += 1
        now = time.monotonic()
        if now - self._unconfirmed_logged_at < _LOG_INTERVAL:
            return
        logger.warning(
            "Redis did not confirm %d subscription(s) in time (last: %r, last error: %s)",
            self._unconfirmed,
            name,
            error or "none",
        )
        self._unconfirmed = 0
        self._unconfirmed_logged_at = now

    def unsubscribe(self, name: bytes) -> None:
        link = self._home.pop(name, None)
        if link is not None:
            link.remove(name)
        for fut in self._waiters.pop(name, ()):
            if not fut.done():
                fut.set_result(None)

    def on_active(self, name: bytes) -> None:
        for fut in self._waiters.pop(name, ()):
            if not fut.done():
                fut.set_result(None)

    def on_dropped(self, link: Link, names: list[bytes]) -> None:
        """The server dropped (or refused) subscriptions that are still wanted."""
        for name in names:
            if self._home.get(name) is link:
                link.add(name)

    @abstractmethod
    def on_link_down(self, link: Link) -> None:
        """A link lost its connection or failed to connect."""

    @property
    def healthy(self) -> bool:
        return all(link.connected for link in self.links)

    async def close(self) -> None:
        self.closed = True
        for link in self.links:
            await link.close()
        self._home.clear()
        error = BrokerClosedError("broker is closed")
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(error)
        self._waiters.clear()


class ShardRouter(Router):
    """One link per standalone shard; a channel's link is its shard's."""

    def __init__(
        self,
        conns: RedisConnections,
        deliver: Callable[[bytes, bytes], None],
        settings: LinkSettings,
    ) -> None:
        super().__init__(deliver, settings)
        self._conns = conns
        self._links: list[Link] = []
        self._shards: dict[bytes, int] = {}

    @property
    def links(self) -> list[Link]:
        return self._links

    async def start(self) -> None:
        self._links = [self._new_link(endpoint) for endpoint in self._conns.endpoints]

    def place(self, name: bytes, channel: str | None) -> None:
        """Remember the shard of pub/sub channel ``name`` (``None``: the first shard)."""
        self._shards[name] = 0 if channel is None else self._conns.shard(channel)

    def link_for(self, name: bytes) -> Link:
        return self._links[self._shards.get(name, 0)]

    def unsubscribe(self, name: bytes) -> None:
        super().unsubscribe(name)
        self._shards.pop(name, None)

    def on_link_down(self, link: Link) -> None:
        # A shard's address never changes: the link reconnects on its own.
        return


class ClusterRouter(Router):
    """One link per Cluster primary that owns a subscribed channel's slot.

    When a link drops, or the server reports that a channel's slot moved, the
    router re-reads the slot map and moves channels to their new primaries.
    """

    def __init__(
        self,
        conns: RedisConnections,
        deliver: Callable[[bytes, bytes], None],
        settings: LinkSettings,
    ) -> None:
        super().__init__(deliver, settings)
        self._conns = conns
        self._links_by_node: dict[str, Link] = {}
        self._cluster: RedisCluster | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_wanted = False
        self._template = conns.endpoints[0]

    @property
    def links(self) -> list[Link]:
        return list(self._links_by_node.values())

    async def start(self) -> None:
        self._cluster = await self._conns.cluster_client()

    def link_for(self, name: bytes) -> Link:
        assert self._cluster is not None
        try:
            node = self._cluster.get_node_from_key(name.decode())
        except redis_errors.SlotNotCoveredError:
            node = None
        if node is None:
            # The slot map is incomplete right now; park the channel on any
            # link and let the refresh move it.
            self.request_refresh()
            if self._links_by_node:
                return next(iter(self._links_by_node.values()))
            node = self._cluster.get_random_node()
        link = self._links_by_node.get(node.name)
        if link is None:
            endpoint = replace(self._template, host=node.host, port=int(node.port))
            link = self._links_by_node[node.name] = self._new_link(endpoint)
        return link

    def on_dropped(self, link: Link, names: list[bytes]) -> None:
        self.request_refresh()

    def on_link_down(self, link: Link) -> None:
        self.request_refresh()

    @property
    def healthy(self) -> bool:
        # A link without channels may belong to a node that left the cluster.
        return all(link.connected for link in self.links if link.desired)

    def request_refresh(self) -> None:
        self._refresh_wanted = True
        if self.closed or (self._refresh_task is not None and not self._refresh_task.done()):
            return
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        delay = self._settings.delay_min
        delay_max = self._settings.delay_max
        while self._refresh_wanted and not self.closed:
            self._refresh_wanted = False
            await asyncio.sleep(delay * (0.5 + random.random()))
            try:
                self._cluster = await self._conns.refresh_cluster()
            except Exception as exc:
                logger.debug("Redis Cluster slot refresh failed: %s", exc)
                self._refresh_wanted = True
                delay = min(delay * 2, delay_max)
                continue
            delay = self._settings.delay_min
            self._rehome()
            if any(not link.connected for link in self.links if link.desired):
                # Still broken: look again later (a failover may be under way).
                self._refresh_wanted = True
                delay = min(max(delay, 0.5), delay_max)

    def _rehome(self) -> None:
        for name, old in list(self._home.items()):
            new = self.link_for(name)
            if new is old:
                if name not in old.desired:
                    old.add(name)  # dropped by the server, same node again
                continue
            old.remove(name)
            self._home[name] = new
            new.add(name)
        for node_name, link in list(self._links_by_node.items()):
            if not link.desired:
                del self._links_by_node[node_name]
                asyncio.get_running_loop().create_task(link.close())

    async def close(self) -> None:
        self.closed = True
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            try:
                await self._refresh_task
            except asyncio.CancelledError:
                pass
        await super().close()
