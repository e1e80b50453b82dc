"""The broker on Redis pub/sub, with history in Redis streams: :class:`RedisBroker`."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

from rtcore.backends.redis import scripts
from rtcore.backends.redis.codec import (
    KIND_JOIN,
    KIND_LEAVE,
    decode_control_message,
    deliver_message,
    encode_control_message,
    encode_info_message,
    encode_publication,
    encode_publication_message,
    ms,
    parse_position,
)
from rtcore.backends.redis.connection import DEFAULT_URL, RedisConnections, resolve_connections
from rtcore.backends.redis.errors import translate
from rtcore.backends.redis.history import RedisHistoryStore
from rtcore.backends.redis.keys import DEFAULT_PREFIX
from rtcore.backends.redis.pubsub import LinkSettings
from rtcore.backends.redis.routing import ClusterRouter, Router, ShardRouter
from rtcore.engine.broker import (
    DEFAULT_IDEMPOTENT_TTL,
    BrokerClosedError,
    BrokerEventHandler,
    BrokerNotStartedError,
    BrokerStateError,
    PublishResult,
)
from rtcore.engine.history import DEFAULT_META_TTL, ZERO_POSITION, HistoryOptions, HistoryResult
from rtcore.errors import RtcoreError
from rtcore.protocol.types import ClientInfo, Publication, StreamPosition


if TYPE_CHECKING:
    from rtcore.engine.broker import Broker


__all__ = ["RedisBroker"]


logger = logging.getLogger(__name__)

_NEW, _STARTING, _RUNNING, _CLOSED = range(4)


class RedisBroker:
    """:class:`~rtcore.engine.broker.Broker` on Redis pub/sub, with history in Redis streams.

    Publishing with history is one Lua script on the channel's shard: it
    assigns the offset, appends, trims, sets the TTLs, records the
    idempotency result and publishes the message. Every node therefore
    receives a channel's publications in offset order with no gaps (as long as
    its pub/sub connection stays up; a reconnect can lose messages, which
    positioned subscribers detect from the offsets).

    Handler calls come from the pub/sub reader, independently of the
    publishing call (before or after ``publish`` returns).
    Control messages use the pub/sub channel ``<prefix>.control`` on the first
    shard (Cluster: on the primary that owns that name's slot), so every node
    receives each control message exactly once.

    Faults: while Redis cannot be reached, ``publish``, ``history`` and the
    other calls raise :class:`RedisUnavailableError` (nothing is queued or
    dropped silently), and ``subscribe`` raises it if Redis does not confirm
    within ``subscribe_timeout``. The pub/sub connections reconnect on their
    own, with jittered exponential backoff between ``reconnect_delay_min`` and
    ``reconnect_delay_max``, and resubscribe every channel. A silent dead
    connection is noticed by a PING every ``health_check_interval`` seconds.
    :attr:`healthy` and :attr:`last_error` report the state for metrics.

    Args:
        connections: a :class:`RedisConnections`, or the URL(s) to build one.
        prefix: key and channel prefix; nodes of one deployment must share it.
        cluster: the URLs name Redis Cluster nodes.
        meta_ttl: meta lifetime for history reads that pass no ``meta_ttl``.
        sharded_pubsub: Cluster only: use SSUBSCRIBE/SPUBLISH (Redis 7). The
            default, ``None``, uses it when the server supports it. All nodes
            of a deployment must agree.
        subscribe_timeout: seconds ``subscribe`` (and ``start``) wait for Redis.
        health_check_interval: seconds between PINGs on each pub/sub connection.
        reconnect_delay_min, reconnect_delay_max: reconnect backoff bounds.
    """

    def __init__(
        self,
        connections: RedisConnections | str | Sequence[str] = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        cluster: bool = False,
        meta_ttl: float = DEFAULT_META_TTL,
        sharded_pubsub: bool | None = None,
        subscribe_timeout: float = 5.0,
        health_check_interval: float = 5.0,
        reconnect_delay_min: float = 0.05,
        reconnect_delay_max: float = 2.0,
    ) -> None:
        if not subscribe_timeout > 0 or not health_check_interval > 0:
            raise ValueError("subscribe_timeout and health_check_interval must be > 0")
        if not 0 < reconnect_delay_min <= reconnect_delay_max:
            raise ValueError("need 0 < reconnect_delay_min <= reconnect_delay_max")
        self._conns = resolve_connections(connections, cluster)
        self._history = RedisHistoryStore(self._conns, prefix=prefix, meta_ttl=meta_ttl)
        self.keys = self._history.keys
        self._sharded_option = sharded_pubsub
        self._sharded = False
        self._subscribe_timeout = subscribe_timeout
        # ``sharded`` is known after start().
        self._link_settings = LinkSettings(
            sharded=False,
            connect_timeout=self._conns.connect_timeout,
            health_interval=health_check_interval,
            delay_min=reconnect_delay_min,
            delay_max=reconnect_delay_max,
        )
        self._state = _NEW
        self._handler: BrokerEventHandler | None = None
        self._router: Router | None = None
        # Pub/sub channel name -> rtcore channel, for every wanted subscription.
        self._names: dict[bytes, str] = {}
        self._control_name = self.keys.control.encode()
        self._publish_word = "PUBLISH"

    # -- introspection ----------------------------------------------------------

    @property
    def history_store(self) -> RedisHistoryStore:
        """The paired history store (same connections and prefix)."""
        return self._history

    @property
    def connections(self) -> RedisConnections:
        return self._conns

    @property
    def sharded_pubsub(self) -> bool:
        """Whether SSUBSCRIBE/SPUBLISH are in use (known after ``start``)."""
        return self._sharded

    @property
    def pubsub_connected(self) -> bool:
        """True while started and every pub/sub connection (that has channels) is up."""
        router = self._router
        return self._state == _RUNNING and router is not None and router.healthy

    @property
    def healthy(self) -> bool:
        """True when every pub/sub connection is up and the last command reached Redis."""
        return self.pubsub_connected and self._conns.healthy

    @property
    def last_error(self) -> BaseException | None:
        """The most recent error of a command or a pub/sub connection, if any."""
        best: BaseException | None = self._conns.last_error
        best_time = self._conns.last_error_time
        if self._router is not None:
            for link in self._router.links:
                if link.last_error is not None and link.last_error_time >= best_time:
                    best, best_time = link.last_error, link.last_error_time
        return best

    @property
    def reconnects(self) -> int:
        """Pub/sub reconnections so far, over all connections."""
        return sum(link.reconnects for link in self._router.links) if self._router else 0

    @property
    def subscribed_channels(self) -> int:
        """Channels this node is subscribed to (control excluded)."""
        return len(self._names)

    # -- lifecycle --------------------------------------------------------------

    def _state_error(self) -> NoReturn:
        if self._state == _CLOSED:
            raise BrokerClosedError("broker is closed")
        raise BrokerNotStartedError("broker is not started")

    async def start(self, handler: BrokerEventHandler) -> None:
        if self._state == _CLOSED:
            raise BrokerClosedError("broker is closed")
        if self._state != _NEW:
            raise BrokerStateError("broker is already started")
        self._state = _STARTING
        try:
            if self._conns.cluster:
                if self._sharded_option is None:
                    self._sharded = await self._conns.server_major_version() >= 7
                else:
                    self._sharded = self._sharded_option
            else:
                self._sharded = False
                await self._conns.load_scripts()
            self._publish_word = "SPUBLISH" if self._sharded else "PUBLISH"
            if self._state == _CLOSED:
                raise BrokerClosedError("broker is closed")
            settings = replace(self._link_settings, sharded=self._sharded)
            router: Router
            if self._conns.cluster:
                router = ClusterRouter(self._conns, self._deliver, settings)
            else:
                router = ShardRouter(self._conns, self._deliver, settings)
                router.place(self._control_name, None)
            # Visible to close() from here on, which then closes it.
            self._router = router
            self._handler = handler
            await router.start()
            await router.subscribe(self._control_name, self._subscribe_timeout)
            if self._state == _CLOSED:
                raise BrokerClosedError("broker is closed")
        except BaseException as exc:
            router_left, self._router = self._router, None
            self._handler = None
            if router_left is not None:
                await router_left.close()
            if self._state == _STARTING:
                self._state = _NEW
            if isinstance(exc, Exception) and not isinstance(exc, RtcoreError):
                raise translate(exc, "starting the Redis broker") from exc
            raise
        self._state = _RUNNING

    async def close(self) -> None:
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._handler = None
        router, self._router = self._router, None
        if router is not None:
            await router.close()
        self._names.clear()
        await self._history.close()
        await self._conns.release()

    # -- subscriptions ------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        if self._state != _RUNNING:
            self._state_error()
        router = self._router
        assert router is not None
        name = self.keys.client(channel).encode()
        self._names[name] = channel
        if isinstance(router, ShardRouter) and not router.is_desired(name):
            router.place(name, channel)
        try:
            await router.subscribe(name, self._subscribe_timeout)
        except BaseException:
            if not router.is_desired(name):
                self._names.pop(name, None)
            raise

    async def unsubscribe(self, channel: str) -> None:
        if self._state != _RUNNING:
            self._state_error()
        assert self._router is not None
        name = self.keys.client(channel).encode()
        self._names.pop(name, None)
        self._router.unsubscribe(name)

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
        if self._state != _RUNNING:
            self._state_error()
        if idempotency_key and not idempotent_ttl > 0:
            raise ValueError(f"idempotent_ttl must be > 0 seconds, got {idempotent_ttl}")
        if not pub.time:
            pub.time = int(time.time() * 1000)
        name = self.keys.client(channel)
        if history is not None:
            position, suppressed = await self._history.append(
                channel,
                pub,
                history,
                self._publish_word.lower(),
                name,
                use_delta,
                idempotency_key,
                idempotent_ttl,
            )
            return PublishResult(position, suppressed)
        message = encode_publication_message(encode_publication(pub))
        if idempotency_key:
            cached = await self._conns.script(
                channel,
                scripts.PUBLISH_IDEMPOTENT,
                [self.keys.result(channel, idempotency_key)],
                [message, self._publish_word.lower(), name, ms(idempotent_ttl)],
            )
            if cached is not None:
                return PublishResult(parse_position(cached), True)
        else:
            await self._conns.publish(channel, name, message, self._sharded)
        pub.offset = 0
        return PublishResult(ZERO_POSITION)

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        await self._publish_info(channel, KIND_JOIN, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        await self._publish_info(channel, KIND_LEAVE, info)

    async def _publish_info(self, channel: str, kind: int, info: ClientInfo) -> None:
        if self._state != _RUNNING:
            self._state_error()
        message = encode_info_message(kind, info)
        await self._conns.publish(channel, self.keys.client(channel), message, self._sharded)

    async def publish_control(self, data: bytes) -> None:
        if self._state != _RUNNING:
            self._state_error()
        await self._conns.publish(
            None, self.keys.control, encode_control_message(data), self._sharded
        )

    # -- history --------------------------------------------------------------------

    async def history(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int = 0,
        reverse: bool = False,
        meta_ttl: float | None = None,
    ) -> HistoryResult:
        if self._state != _RUNNING:
            self._state_error()
        return await self._history.read(channel, since, limit, reverse, meta_ttl)

    async def remove_history(self, channel: str) -> None:
        if self._state != _RUNNING:
            self._state_error()
        await self._history.remove(channel)

    # -- delivery ---------------------------------------------------------------------

    def _deliver(self, name: bytes, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        if name == self._control_name:
            control = decode_control_message(data)
            if control is None:
                logger.warning("dropping a control message in an unknown format")
                return
            try:
                handler.on_control(control)
            except Exception:
                logger.exception("broker event handler failed on a control message")
            return
        channel = self._names.get(name)
        if channel is None:
            return
        deliver_message(handler, channel, data)


if TYPE_CHECKING:
    _broker: type[Broker] = RedisBroker
