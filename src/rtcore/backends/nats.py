"""A broker on NATS core (``pip install rtcore[nats]``), with history in Redis or none.

:class:`NatsBroker` moves publications, joins, leaves and control messages
between nodes over a NATS server or cluster. NATS core stores nothing, so on
its own the broker keeps **no history**: no offsets, no epochs, nothing to
recover from, at-most-once delivery. A publish that asks for history, every
history read, and a publish with an idempotency key then raise
:class:`FeatureNotAvailableError`.

Given a :class:`~rtcore.backends.redis.RedisHistoryStore` (``history=``), the
broker keeps history there: a publish first runs the Redis script that
assigns the offset and stores the publication (and honours the idempotency
key), then sends the message, carrying its offset and epoch, over NATS.
Clients position and recover from the Redis stream as with the Redis broker;
only the live delivery goes through NATS (docs/nats.md says what that
changes). Publications of one channel leave one node in offset order;
publications of one channel made on several nodes at once can reach a node
out of offset order, which its subscribers treat as a gap and recover from.

One NATS connection serves everything; the NATS client multiplexes one
subscription per channel on it. Subjects are ``<prefix>.c.<channel>`` when
the channel is a valid NATS subject tail (printable ASCII, no spaces, no
``*`` or ``>``, no empty dot-separated token), otherwise
``<prefix>.e.<base64url(channel)>`` (``<prefix>.e.=`` for the empty
channel), and ``<prefix>.control`` for control messages. Messages use the
Redis broker's binary format (:mod:`rtcore.backends.redis`, version byte
``0x01``): a publication is ``0x01 [0, 0, "", PUB, nil]``.

Faults: the client reconnects on its own (forever, ``reconnect_wait``
between attempts) and re-sends every subscription. While disconnected,
``publish`` and the other sends raise :class:`NatsUnavailableError` instead
of buffering; ``subscribe`` raises it too. Messages published while a node
is disconnected are lost for that node.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final, NoReturn

from rtcore.backends.redis.codec import (
    FORMAT_VERSION,
    KIND_JOIN,
    KIND_LEAVE,
    deliver_message,
    encode_info_message,
    encode_positioned_message,
    encode_publication,
    encode_publication_message,
)
from rtcore.engine.broker import (
    DEFAULT_IDEMPOTENT_TTL,
    BrokerClosedError,
    BrokerEventHandler,
    BrokerNotStartedError,
    BrokerStateError,
    PublishResult,
)
from rtcore.engine.history import ZERO_POSITION, HistoryOptions, HistoryResult
from rtcore.errors import RtcoreError
from rtcore.protocol.types import ClientInfo, Publication, StreamPosition


try:
    import nats
    from nats import errors as nats_errors
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "rtcore.backends.nats needs the nats-py package: pip install 'rtcore[nats]'"
    ) from exc


if TYPE_CHECKING:
    from rtcore.backends.redis import RedisHistoryStore
    from rtcore.engine.broker import Broker


__all__ = [
    "DEFAULT_NATS_URL",
    "FeatureNotAvailableError",
    "NatsBroker",
    "NatsBrokerError",
    "NatsUnavailableError",
    "subject_for",
]


logger = logging.getLogger(__name__)

DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"

_V: Final = bytes([FORMAT_VERSION])

# A subject tail used as is: dot-separated non-empty tokens of printable
# ASCII other than space, "*" and ">".
_TOKEN = r"[\x21-\x29\x2b-\x2d\x2f-\x3d\x3f-\x7e]+"
_PLAIN_SUBJECT = re.compile(rf"{_TOKEN}(?:\.{_TOKEN})*")
_PLAIN_PREFIX = _PLAIN_SUBJECT


class NatsBrokerError(RtcoreError):
    """A NATS broker operation failed."""


class NatsUnavailableError(NatsBrokerError, ConnectionError):
    """The NATS server cannot be reached (not connected, or reconnecting)."""


class FeatureNotAvailableError(NatsBrokerError, NotImplementedError):
    """The NATS broker does not provide this (history, idempotency keys)."""


def subject_for(prefix: str, channel: str) -> str:
    """The NATS subject of ``channel``'s publications, joins and leaves."""
    if channel and channel.isascii() and _PLAIN_SUBJECT.fullmatch(channel):
        return f"{prefix}.c.{channel}"
    if not channel:
        return f"{prefix}.e.="
    encoded = base64.urlsafe_b64encode(channel.encode()).rstrip(b"=").decode()
    return f"{prefix}.e.{encoded}"


_NEW, _STARTING, _RUNNING, _CLOSED = range(4)


class _Sub:
    __slots__ = ("sub", "ready")

    def __init__(self, ready: asyncio.Future[None]) -> None:
        self.sub: Subscription | None = None
        self.ready = ready


class _Order:
    """A channel's publish order on this node: the lock and how many publishes use it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class NatsBroker:
    """:class:`~rtcore.engine.broker.Broker` over NATS core pub/sub, with history in Redis or none.

    See the module docstring for the scope. Without ``history``, publications
    go out with offset 0 and position ``ZERO_POSITION``. ``use_delta`` has no
    base to pass either way (``prev_pub`` is always None).

    Args:
        servers: NATS URL(s) (``nats://``, ``tls://``; credentials in the URL).
        prefix: subject prefix; nodes of one deployment must share it.
        name: client name shown by the server's monitoring.
        connect_timeout: seconds for each connection attempt.
        reconnect_wait: seconds between reconnection attempts.
        request_timeout: seconds ``subscribe`` waits for the server to confirm.
        options: extra keyword arguments for ``nats.connect`` (TLS, auth, ...).
        history: where history and idempotency results are kept (None: nowhere).
            The broker closes it when it is closed.
    """

    def __init__(
        self,
        servers: str | Sequence[str] = DEFAULT_NATS_URL,
        *,
        prefix: str = "rtcore",
        name: str = "rtcore",
        connect_timeout: float = 2.0,
        reconnect_wait: float = 0.5,
        request_timeout: float = 5.0,
        options: dict[str, Any] | None = None,
        history: RedisHistoryStore | None = None,
    ) -> None:
        if not prefix or not prefix.isascii() or not _PLAIN_PREFIX.fullmatch(prefix):
            raise ValueError(f"invalid NATS subject prefix: {prefix!r}")
        if not connect_timeout > 0 or not reconnect_wait > 0 or not request_timeout > 0:
            raise ValueError("NATS timeouts must be > 0 seconds")
        self._servers = [servers] if isinstance(servers, str) else list(servers)
        if not self._servers:
            raise ValueError("at least one NATS server URL is required")
        self.prefix = prefix
        self._name = name
        self._connect_timeout = connect_timeout
        self._reconnect_wait = reconnect_wait
        self._request_timeout = request_timeout
        self._options = dict(options or {})
        self._control_subject = f"{prefix}.control"
        self._nc: NatsClient | None = None
        self._state = _NEW
        self._handler: BrokerEventHandler | None = None
        self._subs: dict[str, _Sub] = {}
        self._control: Subscription | None = None
        self.last_error: BaseException | None = None
        self.reconnects = 0
        # The PING round that in-flight sends wait for (see _send).
        self._confirming: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors_logged = 0
        self._history = history
        # Per channel: held from the offset's assignment until the message is
        # in the NATS client's buffer, so this node sends in offset order.
        self._order: dict[str, _Order] = {}

    # -- introspection ----------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """True while started and connected to a NATS server."""
        nc = self._nc
        return self._state == _RUNNING and nc is not None and nc.is_connected

    @property
    def subscribed_channels(self) -> int:
        return len(self._subs)

    # -- lifecycle --------------------------------------------------------------

    def _state_error(self) -> NoReturn:
        if self._state == _CLOSED:
            raise BrokerClosedError("broker is closed")
        raise BrokerNotStartedError("broker is not started")

    def _client(self) -> NatsClient:
        if self._state != _RUNNING or self._nc is None:
            self._state_error()
        return self._nc

    async def start(self, handler: BrokerEventHandler) -> None:
        if self._state == _CLOSED:
            raise BrokerClosedError("broker is closed")
        if self._state != _NEW:
            raise BrokerStateError("broker is already started")
        self._state = _STARTING
        nc: NatsClient | None = None
        try:
            nc = await nats.connect(
                servers=self._servers,
                name=self._name,
                connect_timeout=self._connect_timeout,
                reconnect_time_wait=self._reconnect_wait,
                # Two attempts per server for the first connection, so that
                # start() fails instead of waiting forever...
                max_reconnect_attempts=1,
                allow_reconnect=True,
                # No buffering while disconnected: a publish then fails loudly.
                pending_size=0,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                **self._options,
            )
            # ...and from now on, reconnect forever.
            nc.options["max_reconnect_attempts"] = -1
            self._nc = nc
            self._handler = handler
            self._control = await nc.subscribe(self._control_subject, cb=self._on_control)
            await _round_trip(nc, self._request_timeout)
        except BaseException as exc:
            self._handler = None
            self._nc = None
            self._control = None
            if nc is not None:
                await _close_quietly(nc)
            if self._state == _STARTING:
                self._state = _NEW
            if isinstance(exc, Exception) and not isinstance(exc, RtcoreError):
                raise NatsUnavailableError(f"cannot connect to NATS: {exc!r}") from exc
            raise
        if self._state == _CLOSED:
            await _close_quietly(nc)
            raise BrokerClosedError("broker is closed")
        self._state = _RUNNING

    async def close(self) -> None:
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._handler = None
        nc, self._nc = self._nc, None
        self._subs.clear()
        self._control = None
        if nc is not None:
            await _close_quietly(nc)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._confirming = None
        if self._history is not None:
            await self._history.close()

    # -- callbacks --------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = exc
        # One warning per outage; repeated connection failures go to debug.
        if self._errors_logged == 0:
            logger.warning("NATS error: %s", exc)
        else:
            logger.debug("NATS error: %s", exc)
        self._errors_logged += 1

    async def _on_disconnected(self) -> None:
        if self._state == _RUNNING:
            self.last_error = NatsUnavailableError("disconnected from NATS")
            logger.warning("disconnected from NATS")

    async def _on_reconnected(self) -> None:
        self._errors_logged = 0
        self.reconnects += 1
        nc = self._nc
        logger.info("reconnected to NATS at %s", nc.connected_url if nc else "?")

    async def _on_control(self, msg: Msg) -> None:
        handler = self._handler
        if handler is None:
            return
        data = msg.data
        if not data or data[0] != FORMAT_VERSION:
            logger.warning("dropping a control message in an unknown format")
            return
        try:
            handler.on_control(data[1:])
        except Exception:
            logger.exception("broker event handler failed on a control message")

    async def _on_message(self, channel: str, entry: _Sub, msg: Msg) -> None:
        handler = self._handler
        # Deliver only for the current subscription of the channel: nothing
        # that arrives after an unsubscribe, even if it was already queued.
        if handler is None or self._subs.get(channel) is not entry:
            return
        deliver_message(handler, channel, msg.data)

    # -- subscriptions ------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        nc = self._client()
        entry = self._subs.get(channel)
        if entry is not None:
            await asyncio.shield(entry.ready)
            return
        if not nc.is_connected:
            raise NatsUnavailableError("not connected to NATS")
        entry = _Sub(asyncio.get_running_loop().create_future())
        self._subs[channel] = entry
        try:
            entry.sub = await nc.subscribe(
                subject_for(self.prefix, channel), cb=partial(self._on_message, channel, entry)
            )
            # The PING/PONG round trip proves the server registered the
            # subscription: everything published from now on reaches it.
            await _round_trip(nc, self._request_timeout)
        except BaseException as exc:
            if self._subs.get(channel) is entry:
                del self._subs[channel]
            if entry.sub is not None:
                await _unsubscribe_quietly(entry.sub)
            error = _translate(exc)
            if not entry.ready.done():
                entry.ready.set_exception(error)
                entry.ready.exception()  # retrieved: other waiters re-raise it
            if error is exc:
                raise
            raise error from exc
        if not entry.ready.done():
            entry.ready.set_result(None)

    async def unsubscribe(self, channel: str) -> None:
        self._client()
        entry = self._subs.pop(channel, None)
        if entry is None:
            return
        if not entry.ready.done():
            entry.ready.set_result(None)
        if entry.sub is not None:
            await _unsubscribe_quietly(entry.sub)

    # -- publishing -----------------------------------------------------------------

    async def publish(
        self,
        channel: str,
        pub: Publication,
        *,
        history: HistoryOptions | None = None,
        idempotency_key: str | None = None,
        idempotent_ttl: float = DEFAULT_IDEMPOTENT_TTL,
        use_delta: bool = False,
    ) -> PublishResult:
        nc = self._client()
        store = self._history
        if idempotency_key and not idempotent_ttl > 0:
            raise ValueError(f"idempotent_ttl must be > 0 seconds, got {idempotent_ttl}")
        if store is None:
            if history is not None:
                raise FeatureNotAvailableError(
                    "the NATS broker keeps no history without a history store "
                    "(engine.type = 'redis'); use it for channels without history"
                )
            if idempotency_key:
                raise FeatureNotAvailableError(
                    "the NATS broker honours idempotency keys only with a history store"
                )
        if not pub.time:
            pub.time = int(time.time() * 1000)
        subject = subject_for(self.prefix, channel)
        if history is not None and store is not None:
            return await self._publish_stored(
                nc, store, channel, subject, pub, history, idempotency_key, idempotent_ttl
            )
        if idempotency_key and store is not None:
            cached = await store.claim(channel, idempotency_key, idempotent_ttl)
            if cached is not None:
                return PublishResult(cached, True)
            pub.offset = 0
            try:
                await self._send(nc, subject, encode_publication_message(encode_publication(pub)))
            except BaseException:
                # Not sent: a retry under the same key must not be suppressed.
                try:
                    await store.unclaim(channel, idempotency_key)
                except Exception as exc:
                    logger.warning("cannot forget idempotency key after a failed publish: %s", exc)
                raise
            return PublishResult(ZERO_POSITION)
        pub.offset = 0
        message = encode_publication_message(encode_publication(pub))
        await self._send(nc, subject, message)
        return PublishResult(ZERO_POSITION)

    async def _publish_stored(
        self,
        nc: NatsClient,
        store: RedisHistoryStore,
        channel: str,
        subject: str,
        pub: Publication,
        history: HistoryOptions,
        idempotency_key: str | None,
        idempotent_ttl: float,
    ) -> PublishResult:
        """Store in the Redis stream (which assigns the offset), then send over NATS."""
        order = self._order.get(channel)
        if order is None:
            order = self._order[channel] = _Order()
        order.users += 1
        try:
            async with order.lock:
                position, suppressed = await store.append(
                    channel, pub, history, "", "", False, idempotency_key, idempotent_ttl
                )
                if suppressed:
                    return PublishResult(position, True)
                if not nc.is_connected:
                    # Stored but not delivered live: subscribers notice the gap
                    # at the next publication and recover it from history.
                    raise NatsUnavailableError("not connected to NATS")
                message = encode_positioned_message(
                    encode_publication(pub), position.offset, position.epoch
                )
                await nc.publish(subject, message)
        except Exception as exc:
            error = _translate(exc)
            if error is not exc:
                self.last_error = error
                raise error from exc
            raise
        finally:
            order.users -= 1
            if not order.users:
                del self._order[channel]
        try:
            await self._confirm(nc)
        except Exception as exc:
            error = _translate(exc)
            self.last_error = error
            if error is exc:
                raise
            raise error from exc
        return PublishResult(position)

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        nc = self._client()
        await self._send(
            nc, subject_for(self.prefix, channel), encode_info_message(KIND_JOIN, info)
        )

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        nc = self._client()
        await self._send(
            nc, subject_for(self.prefix, channel), encode_info_message(KIND_LEAVE, info)
        )

    async def publish_control(self, data: bytes) -> None:
        nc = self._client()
        await self._send(nc, self._control_subject, _V + data)

    async def _send(self, nc: NatsClient, subject: str, message: bytes) -> None:
        """Publish and wait until the server has processed the message.

        The NATS client writes in the background, so ``nc.publish`` returning
        says nothing about the server. Waiting for the PONG of a PING sent
        after the message does: the server handles a connection's commands in
        order. Concurrent sends share one PING, so this costs one round trip
        per batch, not per message. A send that returned therefore reached
        the server, and a later ``subscribe`` anywhere cannot receive it.
        """
        if not nc.is_connected:
            raise NatsUnavailableError("not connected to NATS")
        try:
            await nc.publish(subject, message)
            await self._confirm(nc)
        except Exception as exc:
            error = _translate(exc)
            self.last_error = error
            if error is exc:
                raise
            raise error from exc

    async def _confirm(self, nc: NatsClient) -> None:
        fut = self._confirming
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._confirming = loop.create_future()
            # Start on the next loop turn, so sends of this turn join the round.
            loop.call_soon(self._start_confirm, nc, fut)
        await asyncio.shield(fut)

    def _start_confirm(self, nc: NatsClient, fut: asyncio.Future[None]) -> None:
        # Sends from now on need a PING written after them: a new round.
        self._confirming = None
        task = asyncio.get_running_loop().create_task(self._flush(nc, fut))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, nc: NatsClient, fut: asyncio.Future[None]) -> None:
        try:
            await _round_trip(nc, self._request_timeout)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(
                    _translate(exc)
                    if isinstance(exc, Exception)
                    else NatsUnavailableError("the NATS broker was closed")
                )
                fut.exception()  # retrieved: the waiters re-raise it
            if not isinstance(exc, Exception):
                raise
        else:
            if not fut.done():
                fut.set_result(None)

    # -- history ------------------------------------------------------------------

    async def history(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int = 0,
        reverse: bool = False,
        meta_ttl: float | None = None,
    ) -> HistoryResult:
        self._client()
        if self._history is None:
            raise FeatureNotAvailableError(
                "the NATS broker keeps no history without a history store (engine.type = 'redis')"
            )
        return await self._history.read(channel, since, limit, reverse, meta_ttl)

    async def remove_history(self, channel: str) -> None:
        self._client()
        if self._history is None:
            raise FeatureNotAvailableError(
                "the NATS broker keeps no history without a history store (engine.type = 'redis')"
            )
        await self._history.remove(channel)


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, RtcoreError) or not isinstance(exc, Exception):
        return exc
    if isinstance(
        exc,
        (
            nats_errors.ConnectionClosedError,
            nats_errors.OutboundBufferLimitError,
            nats_errors.TimeoutError,
            nats_errors.StaleConnectionError,
            nats_errors.NoServersError,
            nats_errors.ConnectionDrainingError,
            asyncio.TimeoutError,
            OSError,
        ),
    ):
        return NatsUnavailableError(f"NATS unavailable: {exc!r}")
    return NatsBrokerError(f"NATS error: {exc!r}")


async def _round_trip(nc: NatsClient, timeout: float) -> None:
    """A PING/PONG round trip that follows everything sent before it.

    nats-py writes a flush's PING straight to the socket, while the commands
    sent just before it (SUB, PUB) may still wait in its pending buffer for
    its flusher task: the PONG could then come back before the server saw
    them, and a subscription "confirmed" that way missed the next messages
    (seen about once in 70 runs). The pending buffer is written out first.
    """
    flush_pending = getattr(nc, "_flush_pending", None)
    if flush_pending is not None:
        # Bounded: its flusher task may stop (connection lost) before
        # resolving what it was given.
        async with asyncio.timeout(timeout):
            await flush_pending(force_flush=True)
        # It swallows a cancellation (nats-py catches CancelledError there).
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
    await nc.flush(timeout=timeout)  # type: ignore[arg-type]


async def _unsubscribe_quietly(sub: Subscription) -> None:
    try:
        await sub.unsubscribe()
    except Exception as exc:  # the connection is gone: nothing left to undo
        logger.debug("NATS unsubscribe failed: %s", exc)


async def _close_quietly(nc: NatsClient) -> None:
    try:
        await nc.close()
    except Exception as exc:
        logger.debug("closing the NATS connection failed: %s", exc)


if TYPE_CHECKING:
    _broker: type[Broker] = NatsBroker
