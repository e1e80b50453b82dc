"""The node: rtcore's composition root and embedding API.

A :class:`Node` owns the hub (local sessions and subscribers), the broker,
history and presence backends (memory by default), the token verifier, the
timer wheel and the write flusher, and it runs the protocol's subscribe and
recovery algorithm. Applications embed it::

    node = Node(config)
    node.on_connecting = my_auth          # sync or async hooks, see rtcore.engine.events
    server = await rtcore.serve(node, "127.0.0.1", 8000)   # starts the node
    await node.publish("chat:room", b'{"text": "hi"}')

Publications travel ``publish -> broker -> on_publication -> hub`` on every
node; with the memory broker that is this process only.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import msgpack

from rtcore._version import __version__
from rtcore.auth import TokenError, TokenOp, TokenVerifier
from rtcore.config import ChannelOptions, Config
from rtcore.engine.broker import Broker, BrokerEventHandler, Closer
from rtcore.engine.channels import ChannelRules
from rtcore.engine.events import (
    HOOKS,
    ChannelEvent,
    ConnectEvent,
    Credentials,
    DisconnectEvent,
    MessageEvent,
    PublishEvent,
    RPCEvent,
    SubscribeEvent,
    SubscribeReply,
    SubscriptionGrant,
)
from rtcore.engine.history import HistoryOptions, HistoryResult
from rtcore.engine.hub import Hub
from rtcore.engine.memory import MemoryBroker, MemoryPresenceManager
from rtcore.engine.presence import PresenceManager
from rtcore.engine.session import CLOSED, ClientSession, SubscriptionState
from rtcore.engine.timers import TimerWheel
from rtcore.fanout import ACTION_INSUFFICIENT_STATE, Flusher, Subscriber
from rtcore.protocol import (
    ConnectRequest,
    Push,
    Reply,
    Subscribe,
    SubscribeRequest,
    SubscribeResult,
    Unsubscribe,
    codes,
    get_codec,
)
from rtcore.protocol.codes import ClientError, DisconnectError
from rtcore.protocol.types import ClientInfo, PresenceStats, Publication, StreamPosition
from rtcore.protocol.uni_json import UNI_JSON


if TYPE_CHECKING:
    from rtcore.protocol.codec import Codec


__all__ = ["Node"]

logger = logging.getLogger("rtcore.engine.node")

_CONTROL_VERSION = 1

_MESSAGE_TYPES = ("publication", "join", "leave", "control")


class Node(BrokerEventHandler):
    """One rtcore node (process).

    Args:
        config: the configuration (defaults when omitted).
        broker: the broker (with its paired history); memory by default.
        presence_manager: the presence backend; memory by default.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        broker: Broker | None = None,
        presence_manager: PresenceManager | None = None,
    ) -> None:
        self.config = (config or Config()).validate()
        # Node ids must differ between processes: /emulation requests are routed
        # by them. The workers of `rtcore serve --workers N` share one
        # configuration, so a configured name gets the worker's index appended.
        name = self.config.client.node_name
        worker = os.environ.get("RTCORE_WORKER_INDEX", "")
        if name and worker:
            name = f"{name}-{worker}"
        self.id = name or f"{socket.gethostname()}-{id(self):x}"
        self.version = __version__
        self.channels = ChannelRules(self.config.channel)
        # Fan-out encodes each publication once per codec: JSON, Protobuf, and
        # bare-push JSON for the unidirectional transports.
        self.codecs: tuple[Codec, ...] = (get_codec("json"), get_codec("protobuf"), UNI_JSON)
        self.hub = Hub(self.codecs, self.handle_fanout_action)
        self.flusher = Flusher()
        self.timers = TimerWheel(tick=0.25)
        self.wall_clock: Callable[[], float] = time.time
        self.broker: Broker = broker if broker is not None else MemoryBroker()
        self.presence_manager: PresenceManager = (
            presence_manager
            if presence_manager is not None
            else MemoryPresenceManager(ttl=self.config.engine.presence_ttl)
        )
        # Presence entries are refreshed at a third of their TTL.
        self.presence_refresh_interval = self.config.engine.presence_ttl / 3
        cfg = self.config.client
        self.token_verifier = TokenVerifier(cfg.token, cfg.subscription_token)
        self._hooks: dict[str, Callable[..., Any]] = {}
        self._history_options: dict[int, HistoryOptions] = {}
        self._broker_subs: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self.closing = False
        # Counters for info/metrics, read at scrape time by rtcore.server.metrics.
        # They change once per publication or per session, never per subscriber.
        self.started_at = time.time()
        self.publications_in = 0
        self.disconnects: dict[int, int] = {}
        # Messages this node sent to / received from the broker, by type.
        self.messages_sent: dict[str, int] = dict.fromkeys(_MESSAGE_TYPES, 0)
        self.messages_received: dict[str, int] = dict.fromkeys(_MESSAGE_TYPES, 0)
        # Failed broker / presence operations, by operation.
        self.broker_errors: dict[str, int] = {}
        # Messages and frames written to clients by sessions already closed
        # (live sessions' writers are summed at scrape time).
        self.client_messages_sent = 0
        self.client_frames_sent = 0
        # Publish-to-delivery latency recorder (rtcore.server.metrics.DeliveryLatency) or None.
        self.delivery_latency: Any = None
        # Proxies to the application backend (rtcore.backends.proxy.ProxyHooks), installed
        # by the server edge (rtcore.serve) before start().
        self.proxies: Any = None
        # Control messages for a component above the engine, by op: the
        # HTTP-streaming transport registers "emulation" when it is mounted.
        self.control_handlers: dict[str, Callable[[dict[str, Any]], None]] = {}

    # -- hooks ---------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if name in HOOKS:
            if value is None:
                self._hooks.pop(name, None)
            elif not callable(value):
                raise TypeError(f"{name} must be callable")
            else:
                self._hooks[name] = value
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        if name in HOOKS:
            return self._hooks.get(name)
        raise AttributeError(name)

    def hook(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: register ``fn`` under its own name (``def on_connecting(...)``)."""
        if fn.__name__ not in HOOKS:
            raise ValueError(f"unknown hook {fn.__name__!r}; hooks are {', '.join(HOOKS)}")
        setattr(self, fn.__name__, fn)
        return fn

    def has_hook(self, name: str) -> bool:
        return name in self._hooks

    async def call_hook(self, name: str, *args: Any) -> Any:
        fn = self._hooks.get(name)
        if fn is None:
            return None
        result = fn(*args)
        if inspect.isawaitable(result):
            result = await result
        return result

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start the broker and the timers (idempotent)."""
        if self._started:
            return
        self._started = True
        self.flusher = Flusher(asyncio.get_running_loop())
        await self.broker.start(self)
        self.timers.start()

    async def close(self, disconnect: codes.Disconnect = codes.SHUTDOWN) -> None:
        """Disconnect every client and stop the backends."""
        self.closing = True
        for session in self.hub.sessions():
            session.disconnect(disconnect)
        self.flusher.flush()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        self.timers.stop()
        if self.proxies is not None:
            await self.proxies.close()
        if self._started:
            await self.broker.close()
            presence: object = self.presence_manager
            if isinstance(presence, Closer) and presence is not self.broker:
                await presence.close()
        self._started = False

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run a background coroutine, keeping a reference and logging its failure."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task failed", exc_info=task.exception())

    def codec_index(self, codec: Codec) -> int:
        return self.codecs.index(codec)

    # -- credentials and events ------------------------------------------------

    def credentials_from_claims(self, claims: Any) -> Credentials:
        subs = {
            channel: SubscriptionGrant(info=opts.info, data=opts.data, override=opts.override)
            for channel, opts in claims.server_side_subscriptions.items()
        }
        return Credentials(
            user=claims.user,
            info=claims.info,
            expire_at=claims.expire_at,
            meta=claims.meta,
            subscriptions=subs,
        )

    def anonymous_credentials(self) -> Credentials:
        return Credentials(user="")

    def hook_credentials(self, hook: Any) -> Credentials:
        """What ``on_connecting`` returned: it replaces the token's credentials."""
        if not isinstance(hook, Credentials):
            raise TypeError("on_connecting must return Credentials or None")
        return hook

    def connect_event(
        self, session: ClientSession, req: ConnectRequest, credentials: Credentials | None
    ) -> ConnectEvent:
        return ConnectEvent(
            client=session,
            transport=session.transport.name,
            token=req.token,
            data=req.data,
            name=req.name,
            version=req.version,
            headers=dict(req.headers),
            credentials=credentials,
        )

    def publish_event(self, session: ClientSession, channel: str, data: bytes) -> PublishEvent:
        return PublishEvent(client=session, channel=channel, data=data)

    def channel_event(self, session: ClientSession, channel: str) -> ChannelEvent:
        return ChannelEvent(client=session, channel=channel)

    def rpc_event(self, session: ClientSession, method: str, data: bytes) -> RPCEvent:
        return RPCEvent(client=session, method=method, data=data)

    def message_event(self, session: ClientSession, data: bytes) -> MessageEvent:
        return MessageEvent(client=session, data=data)

    # -- publishing ----------------------------------------------------------

    def history_options(self, opts: ChannelOptions) -> HistoryOptions | None:
        if not opts.history_enabled:
            return None
        key = id(opts)
        ho = self._history_options.get(key)
        if ho is None:
            ho = self._history_options[key] = HistoryOptions(
                size=opts.history_size, ttl=opts.history_ttl, meta_ttl=opts.history_meta_ttl
            )
        return ho

    def _channel_options(self, channel: str) -> ChannelOptions:
        if not self.channels.valid_name(channel):
            raise ClientError(107, f"invalid channel name {channel[:64]!r}")
        opts = self.channels.options(channel)
        if opts is None:
            raise codes.ERROR_UNKNOWN_CHANNEL
        return opts

    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        info: ClientInfo | None = None,
        tags: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        skip_history: bool = False,
    ) -> tuple[StreamPosition, bool]:
        """Publish into a channel; returns its stream position and ``suppressed``.

        Raises ClientError 102 for an unknown namespace and 107 for an invalid name.
        """
        opts = self._channel_options(channel)
        history = None if skip_history else self.history_options(opts)
        pub = Publication(data=bytes(data), info=info, tags=tags or None)
        self.publications_in += 1
        try:
            result = await self.broker.publish(
                channel, pub, history=history, idempotency_key=idempotency_key or None
            )
        except Exception:
            self.count_broker_error("publish")
            raise
        self.messages_sent["publication"] += 1
        return result.position, result.suppressed

    def count_broker_error(self, op: str) -> None:
        """Count a failed broker or presence operation (metrics)."""
        self.broker_errors[op] = self.broker_errors.get(op, 0) + 1

    # -- BrokerEventHandler --------------------------------------------------

    def on_publication(
        self, channel: str, pub: Publication, position: StreamPosition, prev_pub: Publication | None
    ) -> None:
        self.messages_received["publication"] += 1
        delivered = self.hub.broadcast_publication(channel, pub, position.epoch)
        latency = self.delivery_latency
        if latency is not None and delivered and pub.time:
            latency.after_flush(pub.time)

    def on_join(self, channel: str, info: ClientInfo) -> None:
        self.messages_received["join"] += 1
        self.hub.broadcast_join(channel, info)

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        self.messages_received["leave"] += 1
        self.hub.broadcast_leave(channel, info)

    def on_control(self, data: bytes) -> None:
        self.messages_received["control"] += 1
        try:
            msg = msgpack.unpackb(data)
            if msg.get("v") != _CONTROL_VERSION:
                logger.warning("control message of unknown version %r ignored", msg.get("v"))
                return
            self._apply_control(msg)
        except Exception:  # noqa: BLE001
            logger.exception("bad control message")

    def handle_fanout_action(self, sub: Subscriber, action: int) -> None:
        session: ClientSession = sub.session
        if action == ACTION_INSUFFICIENT_STATE:
            state = session.subscriptions.get(sub.channel)
            if state is not None and not state.server_side:
                self.spawn(
                    self.unsubscribe_session(
                        session, sub.channel, codes.UNSUBSCRIBE_INSUFFICIENT_STATE
                    )
                )
            else:
                session.disconnect(codes.INSUFFICIENT_STATE)
        else:
            session.disconnect(codes.INAPPROPRIATE_PROTOCOL)

    # -- subscriptions -------------------------------------------------------

    async def _broker_subscribe(self, channel: str) -> None:
        fut = self._broker_subs.get(channel)
        if fut is not None:
            await asyncio.shield(fut)
            return
        fut = self._broker_subs[channel] = asyncio.get_running_loop().create_future()
        try:
            await self.broker.subscribe(channel)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.count_broker_error("subscribe")
            self._broker_subs.pop(channel, None)
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        fut.set_result(None)

    async def _broker_unsubscribe(self, channel: str) -> None:
        if self.hub.num_subscribers(channel):
            return
        fut = self._broker_subs.pop(channel, None)
        if fut is None:
            return
        if not fut.done():
            await asyncio.shield(fut)
        if self.hub.num_subscribers(channel):
            # Someone subscribed again meanwhile: keep the broker subscription.
            self._broker_subs[channel] = fut
            return
        try:
            await self.broker.unsubscribe(channel)
        except Exception:  # noqa: BLE001
            self.count_broker_error("unsubscribe")
            logger.exception("broker unsubscribe of %s failed", channel)

    async def subscribe_session(
        self,
        session: ClientSession,
        req: SubscribeRequest,
        *,
        command_id: int = 0,
        server_side: bool = False,
        chan_info: bytes | None = None,
        data: bytes | None = None,
        override: Any = None,
        expire_at: int = 0,
        defer_reply: bool = False,
    ) -> SubscribeResult | None:
        """Subscribe ``session`` to ``req.channel`` (PROTOCOL.md §4.3).

        With ``command_id`` the reply is queued and buffered publications are
        flushed after it. With ``defer_reply`` (server-side subscriptions at
        connect) the result is returned and :meth:`finish_deferred_subscriptions`
        flushes later, after the connect reply.
        """
        channel = req.channel
        if not channel:
            raise DisconnectError(codes.BAD_REQUEST)
        opts = self._channel_options(channel)
        if req.type != 0:
            raise codes.ERROR_NOT_AVAILABLE
        if req.tf is not None:
            raise codes.ERROR_BAD_REQUEST
        if channel in session.subscriptions:
            raise codes.ERROR_ALREADY_SUBSCRIBED
        limit = self.config.client.channel_limit
        if limit and len(session.subscriptions) >= limit:
            raise codes.ERROR_LIMIT_EXCEEDED
        wall = self.wall_clock()
        if not server_side:
            # A user-limited channel ("dialog#42,43") grants itself to the users it
            # lists and to nobody else (a subscription token still grants).
            user_limited = (
                opts.allow_user_limited_channels
                and self.channels.allowed_users(channel) is not None
            )
            if req.token:
                try:
                    claims = await self.token_verifier.verify_subscribe(req.token)
                    claims.check(channel=channel, user=session.user, client=session.client_id)
                except TokenError as exc:
                    outcome = exc.outcome(TokenOp.SUBSCRIBE)
                    if outcome.disconnect:
                        raise DisconnectError(
                            codes.Disconnect(outcome.code, outcome.message)
                        ) from None
                    raise ClientError(outcome.code, outcome.message, outcome.temporary) from None
                chan_info, data, override, expire_at = (
                    claims.info,
                    claims.data,
                    claims.override,
                    claims.expire_at,
                )
                if expire_at and expire_at <= wall:
                    raise codes.ERROR_TOKEN_EXPIRED
            elif self.channels.is_private(channel):
                raise codes.ERROR_PERMISSION_DENIED
            elif user_limited:
                if not self.channels.user_allowed(channel, opts, session.user):
                    raise codes.ERROR_PERMISSION_DENIED
            elif self.has_hook("on_subscribe"):
                result = await self.call_hook(
                    "on_subscribe", SubscribeEvent(client=session, channel=channel, data=req.data)
                )
                if result is False:
                    raise codes.ERROR_PERMISSION_DENIED
                if isinstance(result, SubscribeReply):
                    chan_info, data, expire_at = result.info, result.data, result.expire_at
                    override = result.override
            else:
                allowed = opts.allow_subscribe_for_client and (
                    session.user != "" or opts.allow_subscribe_for_anonymous
                )
                if not allowed:
                    raise codes.ERROR_PERMISSION_DENIED
            if session.state == CLOSED:
                return None

        def flag(name: str) -> bool:
            value = getattr(override, name, None) if override is not None else None
            return bool(getattr(opts, name)) if value is None else bool(value)

        presence = flag("presence")
        emit_join_leave = (
            opts.join_leave
            if getattr(override, "join_leave", None) is None
            else bool(override.join_leave)
        )
        authenticated = session.user != ""
        # Centrifugo: a client may ask for join/leave pushes when it may see presence,
        # and for positioning/recovery when it may read history (or the namespace allows it).
        sees_presence = (opts.allow_presence_for_client or opts.allow_presence_for_subscriber) and (
            authenticated or opts.allow_presence_for_anonymous
        )
        reads_history = (opts.allow_history_for_client or opts.allow_history_for_subscriber) and (
            authenticated or opts.allow_history_for_anonymous
        )
        push_join_leave = flag("force_push_join_leave") or (
            req.join_leave and opts.join_leave and sees_presence
        )
        recoverable = flag("force_recovery") or (
            req.recoverable and (opts.allow_recovery or reads_history)
        )
        positioned = (
            recoverable
            or flag("force_positioning")
            or (req.positioned and (opts.allow_positioning or reads_history))
        )
        if not opts.history_enabled:
            recoverable = positioned = False

        sub = Subscriber(session.writer, session.codec_index, session, channel)
        sub.join_leave = push_join_leave
        sub.positioned = positioned
        sub.buffer = []
        state = SubscriptionState(
            channel=channel,
            options=opts,
            subscriber=sub,
            chan_info=chan_info,
            presence=presence,
            emit_join_leave=emit_join_leave,
            expire_at=expire_at,
            server_side=server_side,
        )
        session.subscriptions[channel] = state
        self.hub.add_subscriber(sub)
        try:
            await self._broker_subscribe(channel)
            result = SubscribeResult()
            if positioned:
                await self._position(state, req, result, recoverable)
            if data:
                result.data = data
            if expire_at and not server_side:
                result.expires = True
                result.ttl = max(1, int(expire_at - wall))
            if presence:
                await self.presence_manager.add(
                    channel, session.client_id, session.channel_info(channel)
                )
        except BaseException as exc:
            if session.subscriptions.get(channel) is state:
                del session.subscriptions[channel]
                self.hub.remove_subscriber(channel, session.client_id)
                self.spawn(self._broker_unsubscribe(channel))
            if isinstance(exc, ClientError | DisconnectError | asyncio.CancelledError):
                raise
            logger.exception("subscribe to %s failed", channel)
            raise codes.ERROR_INTERNAL from exc
        if session.subscriptions.get(channel) is not state or session.state == CLOSED:
            return None  # unsubscribed or disconnected meanwhile
        if emit_join_leave:
            self.spawn(self._publish_join(channel, session.channel_info(channel)))
        state.flush_from = (
            result.offset
            if not result.recovered
            else (result.publications[-1].offset if result.publications else req.offset)
        )
        state.epoch = result.epoch
        if expire_at:
            # Arm the expiry check for this subscription (unsubscribe 2501 / disconnect 3006).
            session.schedule_expiry_check()
        if defer_reply:
            return result
        if command_id:
            session.send_reply(Reply(id=command_id, subscribe=result))
        else:
            # Server-side subscription after connect (API subscribe): a push.
            session.send_push(
                Push(
                    channel=channel,
                    subscribe=Subscribe(
                        recoverable=result.recoverable,
                        epoch=result.epoch,
                        offset=result.offset,
                        positioned=result.positioned,
                        data=result.data,
                    ),
                )
            )
        self._flush_buffer(session, state)
        return result

    async def _position(
        self,
        state: SubscriptionState,
        req: SubscribeRequest,
        result: SubscribeResult,
        recoverable: bool,
    ) -> None:
        """Read the stream top and, when asked, recover missed publications."""
        opts = state.options
        channel = state.channel
        result.positioned = True
        result.recoverable = recoverable
        recover = recoverable and req.recover
        meta_ttl = opts.history_meta_ttl
        pubs: list[Publication] = []
        recovered = False
        if recover and opts.force_recovery_mode == "stream":
            cap = self.config.client.recovery_max_publication_limit
            hr: HistoryResult = await self.broker.history(
                channel,
                since=StreamPosition(req.offset, req.epoch),
                limit=cap if cap else -1,
                meta_ttl=meta_ttl,
            )
            top = hr.position
            pubs = list(hr.publications)
            if req.epoch and req.epoch != top.epoch:
                recovered = False
            elif not pubs:
                recovered = top.offset == req.offset
            else:
                recovered = pubs[0].offset == req.offset + 1 and pubs[-1].offset == top.offset
        elif recover:
            hr = await self.broker.history(channel, limit=1, reverse=True, meta_ttl=meta_ttl)
            top = hr.position
            at_top = req.offset > 0 and req.offset == top.offset and req.epoch == top.epoch
            if at_top:
                recovered = True
            elif hr.publications and hr.publications[0].offset == top.offset:
                recovered = True
                pubs = [hr.publications[0]]
            else:
                recovered = top.offset == 0 or at_top
        else:
            top = (await self.broker.history(channel, limit=0, meta_ttl=meta_ttl)).position
        if not recovered:
            pubs = []
            if recover and req.flag & 2:
                raise codes.ERROR_UNRECOVERABLE_POSITION
        result.epoch = top.epoch
        result.offset = top.offset
        result.was_recovering = bool(recover)
        result.recovered = recovered
        if recovered:
            result.publications = pubs
            result.offset = req.offset if pubs else top.offset
        state.subscriber.epoch = top.epoch
        state.subscriber.offset = top.offset

    def _flush_buffer(self, session: ClientSession, state: SubscriptionState) -> None:
        """Deliver publications held during subscribe, after the reply (§4.3 step 10)."""
        sub = state.subscriber
        buffered = sub.buffer or []
        sub.buffer = None
        state.pending = False
        if not buffered:
            return
        channel = state.channel
        codec = session.codec
        last = state.flush_from
        for pub, offset, epoch in buffered:
            if sub.positioned and offset > 0:
                if epoch != state.epoch:
                    self.handle_fanout_action(sub, ACTION_INSUFFICIENT_STATE)
                    return
                if offset <= last:
                    continue  # already in the reply (or older than the position)
                if offset != last + 1:
                    self.handle_fanout_action(sub, ACTION_INSUFFICIENT_STATE)
                    return
                last = offset
            try:
                payload = codec.encode_publication(channel, pub)
            except ValueError:
                session.disconnect(codes.INAPPROPRIATE_PROTOCOL)
                return
            sub.writer.enqueue(payload)
        if sub.positioned:
            sub.offset = max(sub.offset, last)

    def finish_deferred_subscriptions(self, session: ClientSession) -> None:
        for state in list(session.subscriptions.values()):
            if state.pending:
                self._flush_buffer(session, state)

    async def unsubscribe_session(
        self, session: ClientSession, channel: str, unsubscribe: codes.Unsubscribe | None
    ) -> None:
        """Remove a subscription; with ``unsubscribe`` the client gets an unsubscribe push."""
        state = session.subscriptions.pop(channel, None)
        if state is None:
            return
        self.hub.remove_subscriber(channel, session.client_id)
        if unsubscribe is not None:
            session.send_push(
                Push(
                    channel=channel,
                    unsubscribe=Unsubscribe(code=unsubscribe.code, reason=unsubscribe.reason),
                )
            )
        await self._leave_channel(session, state)
        await self.call_hook("on_unsubscribe", ChannelEvent(client=session, channel=channel))

    async def _leave_channel(self, session: ClientSession, state: SubscriptionState) -> None:
        channel = state.channel
        await self._broker_unsubscribe(channel)
        try:
            if state.presence:
                await self.presence_manager.remove(channel, session.client_id, session.user)
            if state.emit_join_leave and not state.pending:
                await self.broker.publish_leave(channel, session.channel_info(channel))
                self.messages_sent["leave"] += 1
        except Exception:  # noqa: BLE001
            self.count_broker_error("leave")
            logger.exception("cleanup of %s in %s failed", session.client_id, channel)

    def session_closed(
        self, session: ClientSession, was_connected: bool, disconnect: codes.Disconnect
    ) -> None:
        """Called by a session once it is closed: drop it from the hub and clean up."""
        self.disconnects[disconnect.code] = self.disconnects.get(disconnect.code, 0) + 1
        self.client_messages_sent += session.writer.messages_sent
        self.client_frames_sent += session.writer.frames_sent
        self.hub.remove_session(session)
        states = list(session.subscriptions.values())
        session.subscriptions.clear()
        for state in states:
            self.hub.remove_subscriber(state.channel, session.client_id)
        if not states and not was_connected:
            return

        async def cleanup() -> None:
            for state in states:
                await self._leave_channel(session, state)
            if was_connected:
                await self.call_hook(
                    "on_disconnect",
                    DisconnectEvent(client=session, code=disconnect.code, reason=disconnect.reason),
                )

        self.spawn(cleanup())

    # -- server API operations (cluster-wide through control messages) --------

    async def _control(self, msg: dict[str, Any]) -> None:
        msg["v"] = _CONTROL_VERSION
        try:
            await self.broker.publish_control(msgpack.packb(msg))
        except Exception:
            self.count_broker_error("control")
            raise
        self.messages_sent["control"] += 1

    async def _publish_join(self, channel: str, info: ClientInfo) -> None:
        try:
            await self.broker.publish_join(channel, info)
        except Exception:
            self.count_broker_error("join")
            raise
        self.messages_sent["join"] += 1

    def _targets(self, user: str, client: str = "", session: str = "") -> list[ClientSession]:
        if client:
            s = self.hub.session(client)
            return [s] if s is not None and (not user or s.user == user) else []
        targets = self.hub.user_sessions(user)
        if session:
            targets = [s for s in targets if s.session_id == session]
        return targets

    @property
    def clustered(self) -> bool:
        """Whether other nodes may share this node's broker (anything but the memory broker)."""
        return not isinstance(self.broker, MemoryBroker)

    async def forward_emulation(
        self, node: str, session: str, data: bytes, fmt: str, *, limited: bool = False
    ) -> None:
        """Send an ``/emulation`` request to the node ``node`` owning ``session``.

        Goes out as a control message; the owning node feeds ``data`` (a
        command frame in format ``fmt``, "json" or "protobuf") to the session,
        or, with ``limited``, disconnects it with 3013 (over its request rate).
        Raises when the broker cannot publish it.
        """
        msg: dict[str, Any] = {"op": "emulation", "node": node, "session": session, "format": fmt}
        if limited:
            msg["limited"] = True
        else:
            msg["data"] = data
        await self._control(msg)

    def _apply_control(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "emulation":
            # Addressed to one node; every other node drops it.
            if msg.get("node") == self.id:
                handler = self.control_handlers.get("emulation")
                if handler is not None:
                    handler(msg)
            return
        user, client, session_id = (
            msg.get("user", ""),
            msg.get("client", ""),
            msg.get("session", ""),
        )
        targets = self._targets(user, client, session_id)
        if op == "disconnect":
            whitelist = set(msg.get("whitelist") or ())
            d = codes.Disconnect(int(msg["code"]), str(msg["reason"]))
            for s in targets:
                if s.client_id not in whitelist:
                    s.disconnect(d)
        elif op == "unsubscribe":
            for s in targets:
                # An empty channel unsubscribes from every channel.
                channels = [msg["channel"]] if msg["channel"] else list(s.subscriptions)
                for channel in channels:
                    self.spawn(self.unsubscribe_session(s, channel, codes.UNSUBSCRIBE_SERVER))
        elif op == "subscribe":
            for s in targets:
                req = SubscribeRequest(channel=msg["channel"])
                if msg.get("recover_since"):
                    req.recover = True
                    req.offset, req.epoch = msg["recover_since"]
                override = msg.get("override")
                self.spawn(
                    self._server_subscribe(
                        s,
                        req,
                        msg.get("info"),
                        msg.get("data"),
                        SimpleNamespace(**override) if override else None,
                        int(msg.get("expire_at") or 0),
                    )
                )
        elif op == "refresh":
            for s in targets:
                if msg.get("expired"):
                    s.disconnect(codes.CONNECTION_EXPIRED)
                    continue
                if msg.get("expire_at") is not None:
                    s.expire_at = int(msg["expire_at"])
                if msg.get("info") is not None:
                    s.info = msg["info"]
                from rtcore.protocol import Refresh

                wall = self.wall_clock()
                s.send_push(
                    Push(
                        refresh=Refresh(
                            expires=bool(s.expire_at),
                            ttl=max(0, int(s.expire_at - wall)) if s.expire_at else 0,
                        )
                    )
                )
                s.schedule_expiry_check()
        else:
            logger.warning("unknown control operation %r", op)

    async def _server_subscribe(
        self,
        session: ClientSession,
        req: SubscribeRequest,
        info: Any,
        data: Any,
        override: Any = None,
        expire_at: int = 0,
    ) -> None:
        try:
            await self.subscribe_session(
                session,
                req,
                server_side=True,
                chan_info=info,
                data=data,
                override=override,
                expire_at=expire_at,
            )
        except (ClientError, DisconnectError) as exc:
            logger.info(
                "server-side subscribe of %s to %s refused: %r", session.client_id, req.channel, exc
            )

    async def disconnect(
        self,
        user: str,
        *,
        code: int = 3503,
        reason: str = "force disconnect",
        client: str = "",
        session: str = "",
        whitelist: list[str] | None = None,
    ) -> None:
        """Disconnect a user's connections (all nodes); ``client`` narrows it to one."""
        await self._control(
            {
                "op": "disconnect",
                "user": user,
                "client": client,
                "session": session,
                "code": code,
                "reason": reason,
                "whitelist": whitelist or [],
            }
        )

    async def unsubscribe(
        self, user: str, channel: str, *, client: str = "", session: str = ""
    ) -> None:
        """Unsubscribe a user's connections from ``channel`` (unsubscribe push 2000).

        An empty ``channel`` unsubscribes them from every channel.
        """
        await self._control(
            {
                "op": "unsubscribe",
                "user": user,
                "channel": channel,
                "client": client,
                "session": session,
            }
        )

    async def subscribe(
        self,
        user: str,
        channel: str,
        *,
        client: str = "",
        session: str = "",
        info: bytes | None = None,
        data: bytes | None = None,
        recover_since: StreamPosition | None = None,
        override: dict[str, bool] | None = None,
        expire_at: int = 0,
    ) -> None:
        """Subscribe a user's connections to ``channel`` server-side (subscribe push).

        ``override`` replaces channel options for this subscription (keys
        presence, join_leave, force_push_join_leave, force_recovery,
        force_positioning); ``expire_at`` (unix seconds) ends it with
        disconnect 3006 unless refreshed.
        """
        self._channel_options(channel)
        await self._control(
            {
                "op": "subscribe",
                "user": user,
                "channel": channel,
                "client": client,
                "session": session,
                "info": info,
                "data": data,
                "recover_since": [recover_since.offset, recover_since.epoch]
                if recover_since
                else None,
                "override": dict(override) if override else None,
                "expire_at": expire_at,
            }
        )

    async def refresh(
        self,
        user: str,
        *,
        client: str = "",
        session: str = "",
        expired: bool = False,
        expire_at: int | None = None,
        info: bytes | None = None,
    ) -> None:
        """Refresh a user's connections (refresh push), or expire them (3005)."""
        await self._control(
            {
                "op": "refresh",
                "user": user,
                "client": client,
                "session": session,
                "expired": expired,
                "expire_at": expire_at,
                "info": info,
            }
        )

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        opts = self._channel_options(channel)
        if not opts.presence:
            raise codes.ERROR_NOT_AVAILABLE
        return await self.presence_manager.presence(channel)

    async def presence_stats(self, channel: str) -> PresenceStats:
        opts = self._channel_options(channel)
        if not opts.presence:
            raise codes.ERROR_NOT_AVAILABLE
        return await self.presence_manager.stats(channel)

    async def history(
        self,
        channel: str,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        opts = self._channel_options(channel)
        if not opts.history_enabled:
            raise codes.ERROR_NOT_AVAILABLE
        if since is not None and reverse and since.offset == 0:
            raise codes.ERROR_BAD_REQUEST
        return await self.broker.history(
            channel, since=since, limit=limit, reverse=reverse, meta_ttl=opts.history_meta_ttl
        )

    async def history_remove(self, channel: str) -> None:
        opts = self._channel_options(channel)
        if not opts.history_enabled:
            raise codes.ERROR_NOT_AVAILABLE
        await self.broker.remove_history(channel)

    def engine_problem(self) -> str | None:
        """Why the engine cannot serve right now, or None when it can.

        Backends that know their connection state expose ``healthy`` (and
        ``last_error``); the memory engine is always healthy.
        """
        for name, backend in (("broker", self.broker), ("presence", self.presence_manager)):
            if getattr(backend, "healthy", True) is False:
                last = getattr(backend, "last_error", None)
                return f"{name} unavailable" + (f": {last}" if last else "")
        return None

    def info(self) -> dict[str, Any]:
        """This node's counters (the API ``info`` method)."""
        return {
            "uid": self.id,
            "name": self.id,
            "version": self.version,
            "num_clients": self.hub.num_sessions,
            "num_users": self.hub.num_users,
            "num_channels": self.hub.num_channels,
            "num_subs": self.hub.num_subscriptions,
            "uptime": int(time.time() - self.started_at),
        }
