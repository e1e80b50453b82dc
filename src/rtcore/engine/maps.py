"""The ``MapStore`` seam: the keyed state of map channels, and the node's map API.

A map channel (namespace ``subscription_type = "map"``) holds a *state*, key
-> entry, and a *stream* of the changes that made it, with offsets and an
epoch like a history stream. Clients subscribe in phases (docs/protocol.md,
"Map subscriptions"): they page through the state, catch up from the stream,
and go live. The store makes "change the state, append to the stream,
deliver" one step per channel, so every node sees a channel's changes in
offset order, and a state page read at position P holds exactly the changes
up to P (entries changed later carry larger offsets and are in the stream).

Delivery: a change reaches the nodes subscribed to the channel as an
ordinary publication (``BrokerEventHandler.on_publication``) whose
``key``/``removed`` say what it does; the memory store calls the node's
handler itself, the Redis store publishes on the Redis broker's channel.

:class:`Maps` is what the node, its commands and the server API call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from rtcore.config.maps import MAP_TYPES
from rtcore.engine.broker import Closer
from rtcore.engine.map_presence import MapPresence
from rtcore.protocol import codes
from rtcore.protocol.codes import ClientError
from rtcore.protocol.types import ClientInfo, Publication, StreamPosition


if TYPE_CHECKING:
    from rtcore.config.maps import MapOptions
    from rtcore.engine.map_subscribe import MapSubscriptions
    from rtcore.engine.node import Node


__all__ = [
    "KEY_MODES",
    "SUPPRESS_IDEMPOTENCY",
    "SUPPRESS_KEY_EXISTS",
    "SUPPRESS_KEY_NOT_FOUND",
    "MapStateResult",
    "MapStore",
    "MapStreamResult",
    "MapUpdateResult",
    "Maps",
    "UnrecoverablePositionError",
]

logger = logging.getLogger("rtcore.engine.maps")

#: Seconds between two sweeps of expired keys in the channels with subscribers here.
SWEEP_INTERVAL = 1.0

#: Why a publish or remove changed nothing (Centrifugo's suppress_reason).
SUPPRESS_IDEMPOTENCY = "idempotency"
SUPPRESS_KEY_NOT_FOUND = "key_not_found"
SUPPRESS_KEY_EXISTS = "key_exists"
#: Conditional writes (Centrifugo's key_mode): only a new key, only an existing one.
KEY_MODES = ("", "if_new", "if_exists")


class UnrecoverablePositionError(Exception):
    """The position a read asked for belongs to another epoch of the channel."""


@dataclass(slots=True)
class MapUpdateResult:
    """What a publish or remove did: the channel's position after it."""

    position: StreamPosition
    suppressed: bool = False
    suppress_reason: str = ""


@dataclass(slots=True)
class MapStateResult:
    """A page of the state: entries (``key`` set, ``offset`` of their last change),
    the stream position the page was read at, and the cursor of the next page
    (``""``: the last page)."""

    entries: list[Publication]
    position: StreamPosition
    cursor: str = ""


@dataclass(slots=True)
class MapStreamResult:
    """Changes from the stream (ascending offsets unless reversed) and its top."""

    publications: list[Publication]
    position: StreamPosition


class MapStore(Protocol):
    """Keyed state plus a stream of changes per map channel. See the module docstring.

    ``opts`` is the channel namespace's :class:`~rtcore.config.maps.MapOptions`
    (stream size and TTLs). A publication's ``offset`` is set by the store.
    """

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
        """Set ``pub.key`` to ``pub`` (or remove it when ``pub.removed``), append the
        change to the stream (modes with one) and deliver it. A key of a mode with
        ``key_ttl`` expires that long after its last write.

        Suppressed (nothing changes): removing an absent key (``key_not_found``),
        a repeated idempotency key (``idempotency``), ``key_mode`` ``"if_new"``
        for an existing key (``key_exists``; with ``refresh_ttl`` its expiry is
        pushed back all the same) and ``"if_exists"`` for an absent one.
        Without a stream, changes carry offset 0 and the position stays 0."""
        ...

    async def expire(self, channel: str, opts: MapOptions) -> None:
        """Remove the keys of ``channel`` whose ``key_ttl`` ran out, each as a removal
        change (appended and delivered). Every other operation does it first too."""
        ...

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
        """A page of at most about ``limit`` entries after ``cursor`` (one entry,
        or none, with ``key``). ``limit`` 0: the position only; -1: everything.
        Raises :class:`UnrecoverablePositionError` when ``revision`` has another epoch,
        ValueError for a cursor this store did not make."""
        ...

    async def read_stream(
        self,
        channel: str,
        opts: MapOptions,
        *,
        since: StreamPosition | None = None,
        limit: int = -1,
        reverse: bool = False,
    ) -> MapStreamResult:
        """Changes after ``since`` (all kept ones without); ``limit`` 0: the top only,
        -1: no limit. Raises :class:`UnrecoverablePositionError` when ``since``
        has another epoch."""
        ...

    async def stats(self, channel: str, opts: MapOptions) -> int:
        """The number of keys in the state."""
        ...

    async def clear(self, channel: str) -> None:
        """Drop the channel's state and stream; the next use starts a new epoch."""
        ...


def check_position(since: StreamPosition | None, epoch: str) -> None:
    """Raise :class:`UnrecoverablePositionError` when ``since`` names another epoch."""
    if since is not None and since.epoch and since.epoch != epoch:
        raise UnrecoverablePositionError(f"epoch {since.epoch!r} is not {epoch!r}")


class Maps:
    """The node's map API: what the server API and client commands call.

    Every method checks that the channel is valid and a map channel (107
    otherwise, 102 for an unknown namespace).
    """

    __slots__ = ("node", "store", "subscriptions", "presence", "_sweeper")

    def __init__(self, node: Node, store: MapStore, subscriptions: MapSubscriptions) -> None:
        self.node = node
        self.store = store
        #: The map subscribes and client writes of sessions.
        self.subscriptions = subscriptions
        #: The map presence keys of sessions (``*_presence_channel_prefix``).
        self.presence = MapPresence(node)
        self._sweeper: asyncio.Task[None] | None = None

    def start_sweep(self) -> None:
        """Start removing expired keys of the map channels with subscribers on this node
        (once; the stores also remove them whenever a channel is used)."""
        if self._sweeper is None and not self.node.closing:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            rules = self.node.channels
            for channel in list(self.node.hub.channels()):
                opts = rules.options(channel)
                if opts is None or opts.subscription_type not in MAP_TYPES or not opts.map.key_ttl:
                    continue
                try:
                    await self.store.expire(channel, opts.map)
                except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                    logger.warning("expiring keys of %s failed: %s", channel, exc)

    async def close(self) -> None:
        """Stop the sweep and close the store (the node closes it on shutdown)."""
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        store: object = self.store
        if isinstance(store, Closer):
            await store.close()

    async def position(self, channel: str) -> StreamPosition | None:
        """The top of a map channel's stream; None for any other channel."""
        opts = self.node.channels.options(channel)
        if opts is None or opts.subscription_type not in MAP_TYPES:
            return None
        return (await self.store.read_stream(channel, opts.map, limit=0)).position

    def options(self, channel: str) -> MapOptions:
        opts = self.node._channel_options(channel)
        if opts.subscription_type not in MAP_TYPES:
            raise ClientError(107, f"{channel[:64]!r} is not a map channel")
        return opts.map

    async def publish(
        self,
        channel: str,
        key: str,
        data: bytes,
        *,
        tags: dict[str, str] | None = None,
        info: ClientInfo | None = None,
        idempotency_key: str = "",
        key_mode: str = "",
        refresh_ttl: bool = False,
    ) -> MapUpdateResult:
        """Set ``key`` of a map channel to ``data`` (``key_mode``: see ``MapStore.publish``)."""
        opts = self.options(channel)
        if not key:
            raise ClientError(107, "map publish needs a key")
        if key_mode not in KEY_MODES:
            raise ClientError(107, f"unknown key_mode {key_mode[:32]!r}")
        pub = Publication(data=bytes(data), info=info, tags=tags or None, time=_now_ms(), key=key)
        return await self._update(channel, pub, opts, idempotency_key, key_mode, refresh_ttl)

    async def remove(self, channel: str, key: str, *, idempotency_key: str = "") -> MapUpdateResult:
        """Remove ``key`` from a map channel."""
        opts = self.options(channel)
        if not key:
            raise ClientError(107, "map remove needs a key")
        pub = Publication(data=b"", time=_now_ms(), key=key, removed=True)
        return await self._update(channel, pub, opts, idempotency_key)

    async def _update(
        self,
        channel: str,
        pub: Publication,
        opts: MapOptions,
        idempotency_key: str,
        key_mode: str = "",
        refresh_ttl: bool = False,
    ) -> MapUpdateResult:
        node = self.node
        node.publications_in += 1
        try:
            result = await self.store.publish(
                channel,
                pub,
                opts,
                idempotency_key=idempotency_key,
                key_mode=key_mode,
                refresh_ttl=refresh_ttl,
            )
        except Exception:
            node.count_broker_error("map_publish")
            raise
        if not result.suppressed:
            node.messages_sent["publication"] += 1
        return result

    async def read_state(
        self,
        channel: str,
        *,
        cursor: str = "",
        limit: int = 100,
        key: str = "",
        revision: StreamPosition | None = None,
    ) -> MapStateResult:
        """A page of a map channel's state (112 when ``revision`` is of another epoch)."""
        opts = self.options(channel)
        try:
            return await self.store.read_state(
                channel, opts, cursor=cursor, limit=limit, key=key, revision=revision
            )
        except UnrecoverablePositionError:
            raise codes.ERROR_UNRECOVERABLE_POSITION from None
        except ValueError as exc:
            raise ClientError(107, str(exc)) from None

    async def read_stream(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int = -1,
        reverse: bool = False,
    ) -> MapStreamResult:
        """Changes of a map channel (112 when ``since`` is of another epoch)."""
        opts = self.options(channel)
        try:
            return await self.store.read_stream(
                channel, opts, since=since, limit=limit, reverse=reverse
            )
        except UnrecoverablePositionError:
            raise codes.ERROR_UNRECOVERABLE_POSITION from None

    async def stats(self, channel: str) -> int:
        """The number of keys of a map channel."""
        return await self.store.stats(channel, self.options(channel))

    async def clear(self, channel: str) -> None:
        """Drop a map channel's state and stream."""
        self.options(channel)
        await self.store.clear(channel)


def _now_ms() -> int:
    return int(time.time() * 1000)
