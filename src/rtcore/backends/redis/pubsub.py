"""Pub/sub connections to Redis: one connection to one server, kept connected.

Each shard (or Cluster primary) has one dedicated pub/sub connection, a
:class:`Link`, shared by all channels. Subscribing and unsubscribing are
batched: everything requested during one event-loop turn goes out in one
write, at most 512 channels per command. A reader decodes messages as they
arrive and calls the handler synchronously, so a channel's order is the
order Redis published in. Lost connections reconnect with jittered
exponential backoff and resubscribe every channel. Which link a channel
belongs on is decided by the routers in :mod:`rtcore.backends.redis.routing`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import hiredis
from redis.crc import key_slot

from rtcore.backends.redis.connection import Endpoint
from rtcore.backends.redis.errors import RedisEngineError


if TYPE_CHECKING:
    from rtcore.backends.redis.routing import Router


__all__ = ["Link", "LinkSettings"]


logger = logging.getLogger(__name__)

# Most channels in one SUBSCRIBE / UNSUBSCRIBE command.
_SUBSCRIBE_BATCH: Final = 512


def _pack_command(args: Iterable[bytes]) -> bytes:
    parts = []
    n = 0
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        n += 1
    return b"*%d\r\n" % n + b"".join(parts)


_CALL: Final = 0
_SUB: Final = 1
_UNSUB: Final = 2
_PING: Final = 3

_MESSAGE_KINDS: Final = frozenset((b"message", b"smessage"))
_SUBSCRIBED_KINDS: Final = frozenset((b"subscribe", b"ssubscribe"))
_UNSUBSCRIBED_KINDS: Final = frozenset((b"unsubscribe", b"sunsubscribe"))


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """How the pub/sub links of a broker subscribe, check and reconnect."""

    #: SSUBSCRIBE/SUNSUBSCRIBE (sharded pub/sub) instead of SUBSCRIBE/UNSUBSCRIBE.
    sharded: bool
    #: Seconds to wait for a TCP (and TLS) connection and its set-up commands.
    connect_timeout: float
    #: Seconds between PINGs.
    health_interval: float
    #: Bounds of the jittered exponential reconnect backoff, in seconds.
    delay_min: float
    delay_max: float


class _Cmd:
    """A command written to a pub/sub connection whose replies are still due."""

    __slots__ = ("kind", "names", "pos", "fut")

    def __init__(
        self, kind: int, names: list[bytes], fut: asyncio.Future[Any] | None = None
    ) -> None:
        self.kind = kind
        self.names = names
        self.pos = 0  # replies received so far (one per channel)
        self.fut = fut


class _RespProtocol(asyncio.Protocol):
    """RESP2 over one transport; hands every parsed reply to its link."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_data = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        self.last_data = time.monotonic()
        self.link.reads += 1
        on_reply = self.link.on_reply
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                on_reply(self, reply)
        except hiredis.ProtocolError as exc:
            logger.error("Redis pub/sub protocol error from %s: %s", self.link.endpoint.name, exc)
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.on_connection_lost(self, exc)
        if not self.lost.done():
            self.lost.set_result(None)


class Link:
    """One pub/sub connection to one server, kept connected, with its channels.

    ``desired`` is what should be subscribed. ``active`` is what Redis has
    confirmed *and* has no later (un)subscribe of ours pending, so a message
    is delivered only when everything this node asked for that channel has
    taken effect: a message published before an ``unsubscribe`` returned can
    never be delivered after a later ``subscribe``.
    """

    def __init__(self, router: Router, endpoint: Endpoint, settings: LinkSettings) -> None:
        self.router = router
        self.endpoint = endpoint
        self.sharded = settings.sharded
        self._connect_timeout = settings.connect_timeout
        self._health_interval = settings.health_interval
        self._delay_min = settings.delay_min
        self._delay_max = settings.delay_max
        self.desired: set[bytes] = set()
        self.active: set[bytes] = set()
        self._pending: dict[bytes, int] = {}
        self._queue: list[tuple[int, bytes]] = []
        self._flush_scheduled = False
        self._inflight: deque[_Cmd] = deque()
        self._proto: _RespProtocol | None = None
        self._ready = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.last_error: BaseException | None = None
        self.last_error_time = 0.0
        self.reconnects = 0
        # Reads from the socket so far (routing.Router tells progress by it).
        self.reads = 0
        # The (host, port) of the latest connection (the master's, behind Sentinel).
        self.address: tuple[str, int] | None = None
        if self.sharded:
            self._sub_word, self._unsub_word = b"SSUBSCRIBE", b"SUNSUBSCRIBE"
        else:
            self._sub_word, self._unsub_word = b"SUBSCRIBE", b"UNSUBSCRIBE"

    @property
    def connected(self) -> bool:
        return self._ready

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"rtcore-redis-pubsub-{self.endpoint.name}"
            )

    async def close(self) -> None:
        self._closing = True
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.abort()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.desired.clear()
        self.active.clear()

    # -- channel set ------------------------------------------------------------

    def add(self, name: bytes) -> None:
        if name in self.desired:
            return
        self.desired.add(name)
        if self._ready:
            self._enqueue(_SUB, name)

    def remove(self, name: bytes) -> None:
        if name not in self.desired:
            return
        self.desired.discard(name)
        self.active.discard(name)
        if self._ready:
            self._enqueue(_UNSUB, name)

    def awaiting(self, name: bytes) -> bool:
        """Whether a command of ours for ``name`` is queued or unanswered."""
        return name in self._pending

    def _enqueue(self, kind: int, name: bytes) -> None:
        self._pending[name] = self._pending.get(name, 0) + 1
        self._queue.append((kind, name))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        queue = self._queue
        if not queue:
            return
        self._queue = []
        proto = self._proto
        if proto is None or proto.transport is None:
            return  # lost meanwhile: the reconnect resubscribes what is desired
        chunks: list[bytes] = []
        i, n = 0, len(queue)
        while i < n:
            kind = queue[i][0]
            run: list[bytes] = []
            while i < n and queue[i][0] == kind:
                run.append(queue[i][1])
                i += 1
            word = self._sub_word if kind == _SUB else self._unsub_word
            for names in self._groups(run):
                chunks.append(_pack_command([word, *names]))
                self._inflight.append(_Cmd(kind, names))
        proto.transport.write(b"".join(chunks))

    def _groups(self, names: list[bytes]) -> Iterable[list[bytes]]:
        """Split into commands: at most _SUBSCRIBE_BATCH names, one slot each if sharded."""
        if self.sharded:
            by_slot: dict[int, list[bytes]] = {}
            for name in names:
                by_slot.setdefault(key_slot(name), []).append(name)
            groups: Iterable[list[bytes]] = by_slot.values()
        else:
            groups = (names,)
        for group in groups:
            for start in range(0, len(group), _SUBSCRIBE_BATCH):
                yield group[start : start + _SUBSCRIBE_BATCH]

    # -- replies ------------------------------------------------------------------

    def on_reply(self, proto: _RespProtocol, reply: Any) -> None:
        if proto is not self._proto:
            return
        if type(reply) is list and len(reply) == 3:
            kind = reply[0]
            if kind in _MESSAGE_KINDS:
                name = reply[1]
                if name in self.active:
                    self.router.deliver(name, reply[2])
                return
            if kind in _SUBSCRIBED_KINDS or kind in _UNSUBSCRIBED_KINDS:
                self._on_confirmation(reply[1], kind in _SUBSCRIBED_KINDS)
                return
        inflight = self._inflight
        head = inflight[0] if inflight else None
        if isinstance(reply, hiredis.ReplyError):
            if head is None:
                logger.warning("Redis pub/sub error from %s: %s", self.endpoint.name, reply)
                return
            inflight.popleft()
            self._on_command_error(head, reply)
            return
        if head is not None and head.kind in (_CALL, _PING):
            inflight.popleft()
            if head.fut is not None and not head.fut.done():
                head.fut.set_result(reply)
            return
        logger.debug("unexpected Redis pub/sub reply from %s: %r", self.endpoint.name, reply)

    def _on_confirmation(self, name: bytes, subscribed: bool) -> None:
        inflight = self._inflight
        head = inflight[0] if inflight else None
        if (
            head is not None
            and head.kind == (_SUB if subscribed else _UNSUB)
            and head.names[head.pos] == name
        ):
            head.pos += 1
            if head.pos == len(head.names):
                inflight.popleft()
            self._settle(name)
            return
        if not subscribed:
            # Not an answer to us: the server dropped the subscription (with
            # sharded pub/sub, the channel's slot moved to another node).
            self.active.discard(name)
            if name in self.desired:
                self.desired.discard(name)
                self.router.on_dropped(self, [name])
            return
        logger.debug("unexpected subscribe confirmation for %r", name)

    def _settle(self, name: bytes) -> None:
        """One of our commands for ``name`` took effect."""
        n = self._pending.get(name, 0) - 1
        if n > 0:
            self._pending[name] = n
            return
        self._pending.pop(name, None)
        if name in self.desired and name not in self.active:
            self.active.add(name)
            self.router.on_active(name)

    def _on_command_error(self, cmd: _Cmd, error: Exception) -> None:
        if cmd.kind == _CALL:
            if cmd.fut is not None and not cmd.fut.done():
                cmd.fut.set_result(error)
            return
        if cmd.kind == _PING:
            return
        names = cmd.names[cmd.pos :]
        for name in names:
            n = self._pending.get(name, 0) - 1
            if n > 0:
                self._pending[name] = n
            else:
                self._pending.pop(name, None)
        message = str(error)
        self._set_error(RedisEngineError(f"{self._sub_word.decode()} failed: {message}"))
        if cmd.kind != _SUB:
            return
        moved = [name for name in names if name in self.desired]
        if message.startswith(("MOVED", "ASK", "CROSSSLOT", "CLUSTERDOWN", "TRYAGAIN")):
            for name in moved:
                self.desired.discard(name)
            self.router.on_dropped(self, moved)
        else:
            logger.warning(
                "Redis %s refused %d channel(s) on %s: %s",
                self._sub_word.decode(),
                len(names),
                self.endpoint.name,
                message,
            )

    def on_connection_lost(self, proto: _RespProtocol, exc: Exception | None) -> None:
        if proto is not self._proto:
            return
        self._proto = None
        was_ready = self._ready
        self._ready = False
        self.active.clear()
        self._pending.clear()
        self._queue.clear()
        error = ConnectionError(f"connection to {self.endpoint.name} lost: {exc or 'closed'}")
        while self._inflight:
            cmd = self._inflight.popleft()
            if cmd.fut is not None and not cmd.fut.done():
                cmd.fut.set_exception(error)
        if not self._closing:
            self._set_error(error)
            if was_ready:
                logger.warning(
                    "Redis pub/sub connection to %s lost: %s",
                    self.endpoint.name,
                    exc or "closed by the server",
                )
                self.router.on_link_down(self)

    def _set_error(self, exc: BaseException) -> None:
        self.last_error = exc
        self.last_error_time = time.time()

    # -- connection ---------------------------------------------------------------

    def _call(self, proto: _RespProtocol, *args: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight.append(_Cmd(_CALL, [], fut))
        assert proto.transport is not None
        proto.transport.write(_pack_command(args))
        return fut

    async def _connect(self) -> _RespProtocol:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        proto = _RespProtocol(self)
        self._proto = proto
        self._inflight.clear()
        try:
            host, port = ep.host, ep.port
            if ep.locate is not None:
                # Behind Sentinel: wherever the master is now.
                async with asyncio.timeout(self._connect_timeout):
                    host, port = await ep.locate()
            self.address = (host, port)
            if ep.path:
                connecting = loop.create_unix_connection(lambda: proto, ep.path, ssl=ep.ssl)
            else:
                connecting = loop.create_connection(
                    lambda: proto,
                    host,
                    port,
                    ssl=ep.ssl,
                    server_hostname=host if ep.ssl is not None else None,
                )
            async with asyncio.timeout(self._connect_timeout):
                await connecting
            if ep.password is not None:
                auth = [b"AUTH"]
                if ep.username:
                    auth.append(ep.username.encode())
                auth.append(ep.password.encode())
                async with asyncio.timeout(self._connect_timeout):
                    reply = await self._call(proto, *auth)
                if isinstance(reply, Exception):
                    raise RedisEngineError(f"Redis AUTH failed on {ep.name}: {reply}")
            async with asyncio.timeout(self._connect_timeout):
                reply = await self._call(proto, b"CLIENT", b"SETNAME", b"rtcore-pubsub")
        except BaseException:
            self._proto = None
            if proto.transport is not None:
                proto.transport.abort()
            raise
        return proto

    async def _run(self) -> None:
        delay = self._delay_min
        ever_connected = False
        failures = 0
        while not self._closing:
            try:
                proto = await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._set_error(exc)
                failures += 1
                # One warning per outage; the retries go to the debug log.
                log = logger.warning if failures == 1 else logger.debug
                log("cannot connect Redis pub/sub to %s: %s", self.endpoint.name, exc)
                self.router.on_link_down(self)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self._delay_max)
                continue
            if ever_connected:
                self.reconnects += 1
                logger.info("Redis pub/sub connection to %s re-established", self.endpoint.name)
            ever_connected = True
            failures = 0
            delay = self._delay_min
            self._ready = True
            for name in self.desired:
                self._enqueue(_SUB, name)
            self._flush()
            await self._supervise(proto)

    async def _master_moved(self) -> bool:
        """Behind Sentinel: True when the master is no longer where we are connected.

        A demoted master keeps its pub/sub clients and, as a replica, still
        relays what the new master publishes, but a node's own publishes go
        to the new master: ask the Sentinels once per health-check interval.
        """
        locate = self.endpoint.locate
        if locate is None:
            return False
        try:
            async with asyncio.timeout(self._health_interval):
                address = await locate()
        except Exception as exc:  # no answer: keep the connection we have
            logger.debug("Redis Sentinel did not answer: %s", exc)
            return False
        if address == self.address:
            return False
        logger.warning(
            "Redis master moved from %s to %s: reconnecting pub/sub",
            ":".join(map(str, self.address or ("?",))),
            ":".join(map(str, address)),
        )
        return True

    async def _supervise(self, proto: _RespProtocol) -> None:
        """Wait until the connection is lost; ping it to notice a dead peer."""
        interval = self._health_interval
        ping_sent = 0.0
        while True:
            done, _ = await asyncio.wait([proto.lost], timeout=interval)
            if done:
                return
            if await self._master_moved():
                if proto.transport is not None:
                    proto.transport.abort()
                await proto.lost
                return
            if ping_sent and proto.last_data < ping_sent:
                logger.warning(
                    "Redis pub/sub connection to %s did not answer a PING in %.1f s",
                    self.endpoint.name,
                    interval,
                )
                if proto.transport is not None:
                    proto.transport.abort()
                await proto.lost
                return
            if proto.transport is not None:
                ping_sent = time.monotonic()
                self._inflight.append(_Cmd(_PING, []))
                proto.transport.write(b"*1\r\n$4\r\nPING\r\n")
