"""The node: rtcore's composition root and embedding API.

A :class:`Node` owns the hub (local sessions and subscribers), the broker,
history and presence backends (memory by default), the token verifier, the
timer wheel and the write flusher. It composes the subscribe algorithm
(:mod:`rtcore.engine.subscriptions`, with positioning and recovery in
:mod:`rtcore.engine.recovery`) and the control messages that carry the server
API's operations to every node (:mod:`rtcore.engine.control`). Applications
embed it::

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
from typing import TYPE_CHECKING, Any

from rtcore._version import __version__
from rtcore.auth import TokenVerifier
from rtcore.config import ChannelOptions, Config
from rtcore.engine import tracing
from rtcore.engine.broker import Broker, BrokerEventHandler, Closer
from rtcore.engine.channels import ChannelRules
from rtcore.engine.cluster import CLUSTER_MARK, Cluster
from rtcore.engine.control import ControlMessages
from rtcore.engine.drain_scheduler import DrainScheduler
from rtcore.engine.events import (
    HOOKS,
    ChannelEvent,
    ConnectEvent,
    Credentials,
    DisconnectEvent,
    MessageEvent,
    NodeHooks,
    PublishEvent,
    RPCEvent,
    SubscriptionGrant,
)
from rtcore.engine.history import HistoryOptions, HistoryResult
from rtcore.engine.hub import Hub
from rtcore.engine.map_memory import MemoryMapStore
from rtcore.engine.map_subscribe import MapSubscriptions
from rtcore.engine.maps import Maps, MapStore
from rtcore.engine.memory import MemoryBroker, MemoryHistoryStore, MemoryPresenceManager
from rtcore.engine.presence import PresenceEntry, PresenceManager, add_many
from rtcore.engine.recovery import HistoryReads, PositionCheck
from rtcore.engine.session import ClientSession
from rtcore.engine.stats import NodeStats
from rtcore.engine.subscriptions import Subscriptions
from rtcore.engine.timers import TimerWheel
from rtcore.fanout import ACTION_INSUFFICIENT_STATE, Flusher, Subscriber
from rtcore.protocol import ConnectRequest, SubscribeRequest, SubscribeResult, codes, get_codec
from rtcore.protocol.codes import ClientError
from rtcore.protocol.types import ClientInfo, PresenceStats, Publication, StreamPosition
from rtcore.protocol.uni_json import UNI_JSON


if TYPE_CHECKING:
    from rtcore.protocol.codec import Codec


__all__ = ["Node"]

logger = logging.getLogger("rtcore.engine.node")

_MESSAGE_TYPES = ("publication", "join", "leave", "control")


class Node(NodeHooks, BrokerEventHandler):
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
        map_store: MapStore | None = None,
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
        self.flusher = Flusher(delay=self.config.client.write_delay)
        self.drain_scheduler = DrainScheduler()
        self.timers = TimerWheel(tick=0.25)
        self.wall_clock: Callable[[], float] = time.time
        if broker is None:
            streams = self.config.engine.memory_max_streams
            broker = MemoryBroker(history=MemoryHistoryStore(max_streams=streams))
        self.broker: Broker = broker
        self.presence_manager: PresenceManager = (
            presence_manager
            if presence_manager is not None
            else MemoryPresenceManager(ttl=self.config.engine.presence_ttl)
        )
        # Presence entries are refreshed with the ping when pings come at least
        # twice per TTL (one timer wake per client and ping period, not two),
        # else at a third of their TTL.
        ping, ttl = self.config.client.ping_interval, self.config.engine.presence_ttl
        self.presence_refresh_interval = ping if 0 < ping <= ttl / 2 else ttl / 3
        cfg = self.config.client
        # Without a connection key the verifier is built when a token first
        # arrives: its warning that every token is refused is then true, and a
        # node that authenticates with hooks or a proxy never logs it.
        self._token_verifier: TokenVerifier | None = None
        if cfg.token.has_keys or cfg.subscription_token is not None:
            self._token_verifier = TokenVerifier(cfg.token, cfg.subscription_token)
        self._hooks: dict[str, Callable[..., Any]] = {}
        self._history_options: dict[int, HistoryOptions] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscriptions = Subscriptions(self)
        self._control = ControlMessages(self)
        # The other nodes of the broker: their info and surveys (API info, channels).
        self.cluster = Cluster(self)
        # Commands, connects and disconnects by transport, recovery outcomes,
        # broker publish and history read latency, bytes received (metrics).
        self.stats = NodeStats()
        # The history reads of subscribes, merged per channel (single flight).
        self.history_reads = HistoryReads(
            self.broker,
            self._subscriptions.broker_token,
            clock=lambda: self.timers.now(),
            stats=self.stats,
        )
        # Idle positioned subscriptions compared with their stream's top.
        self.position_check = PositionCheck(
            self.hub,
            self.history_reads,
            lambda channel: (self.channels.options(channel) or ChannelOptions()).history_meta_ttl,
            self._subscriptions.lost_state,
            self.config.client.channel_position_check_delay,
        )
        # Map channels (engine/maps.py); by default in memory, delivered to this node only.
        maps = MapSubscriptions(self, self._subscriptions)
        self.maps = Maps(self, MemoryMapStore(self) if map_store is None else map_store, maps)
        self.position_check.map_top = self.maps.position
        self._started = False
        self.closing = False
        # Counters for info/metrics, read at scrape time by rtcore.server.metrics.
        # They change once per publication or per session, never per subscriber.
        self.started_at = time.time()
        self.publications_in = 0
        self.disconnects: dict[int, int] = {}
        # The same, for sessions that ended before their connect succeeded.
        self.connect_refusals: dict[int, int] = {}
        # Messages this node sent to / received from the broker, by type.
        self.messages_sent: dict[str, int] = dict.fromkeys(_MESSAGE_TYPES, 0)
        self.messages_received: dict[str, int] = dict.fromkeys(_MESSAGE_TYPES, 0)
        # Failed broker / presence operations, by operation.
        self.broker_errors: dict[str, int] = {}
        # Presence refreshes waiting for this loop turn's batch, and the
        # number of batches sent (add_many calls).
        self._presence_due: list[ClientSession] = []
        self._presence_scheduled = False
        self.presence_refreshes = 0
        # Failed cleanup after a session or subscription ended, by operation;
        # logged in summary lines (cleanup_failed).
        self.cleanup_failures: dict[str, int] = {}
        self._cleanup_unlogged = 0
        self._cleanup_logged_at = -1e9
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

    @property
    def token_verifier(self) -> TokenVerifier:
        """Verifies connection and subscription tokens (``client.token`` and friends)."""
        verifier = self._token_verifier
        if verifier is None:
            cfg = self.config.client
            verifier = self._token_verifier = TokenVerifier(cfg.token, cfg.subscription_token)
        return verifier

    # -- hooks ---------------------------------------------------------------

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
        self.flusher = Flusher(asyncio.get_running_loop(), delay=self.config.client.write_delay)
        await self.broker.start(self)
        if self.clustered:
            self.cluster.start()
        if self.position_check.delay > 0:
            self.position_check.start()
        self.timers.start()

    async def close(
        self, disconnect: codes.Disconnect = codes.SHUTDOWN, *, timeout: float = 5.0
    ) -> None:
        """Disconnect every client and stop the backends.

        Cleanup still pending (presence removals, leave publications, hooks of
        sessions that ended) gets ``timeout`` seconds; what is left then is
        abandoned (presence entries expire with their lease) and reported in
        one log line, as are the cleanup operations that failed meanwhile.
        """
        self.closing = True
        for session in self.hub.sessions():
            session.disconnect(disconnect)
        self.flusher.flush()
        await self._finish_tasks(timeout)
        self.timers.stop()
        await self.cluster.stop()
        await self.position_check.stop()
        if self.proxies is not None:
            await self.proxies.close()
        if self._started:
            await self.broker.close()
            presence: object = self.presence_manager
            if isinstance(presence, Closer) and presence is not self.broker:
                await presence.close()
            await self.maps.close()
        self._started = False

    async def _finish_tasks(self, timeout: float) -> None:
        """Wait up to ``timeout`` for background tasks; cancel the rest; log one summary."""
        started = time.monotonic()
        abandoned = 0
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=max(0.0, timeout))
            abandoned = len(pending)
            for task in pending:
                task.cancel()
            if pending:
                # Let the cancellations unwind (finally blocks), without waiting on I/O.
                await asyncio.wait(pending, timeout=1.0)
        failures = self.cleanup_failures
        if abandoned or failures:
            failed = ", ".join(f"{op} {n}" for op, n in sorted(failures.items())) or "none"
            logger.warning(
                "shutdown: %d background task(s) abandoned after %.1fs (presence entries "
                "left expire with their lease); cleanup operations failed: %s",
                abandoned,
                time.monotonic() - started,
                failed,
            )

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run a background coroutine, keeping a reference and logging its failure."""
        if inspect.iscoroutine(coro):
            # ensure_future's checks and loop lookup cost a syscall per call.
            task = asyncio.get_running_loop().create_task(coro)
        else:
            task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            if self.closing:
                # Shutting down: counted and summed up by close(), not one traceback each.
                self.cleanup_failed("task", task.exception())
                return
            logger.error("background task failed", exc_info=task.exception())

    def cleanup_failed(self, op: str, exc: BaseException | None) -> None:
        """Count a failed cleanup operation (presence removal, leave, broker unsubscribe).

        While the node is closing they are only counted (``close`` logs the
        total); otherwise at most one line per second is logged, with the
        number of failures since the last line, never one traceback per client.
        """
        self.cleanup_failures[op] = self.cleanup_failures.get(op, 0) + 1
        if self.closing:
            return
        self._cleanup_unlogged += 1
        now = self.timers.now()
        if now - self._cleanup_logged_at < 1.0:
            return
        logger.warning(
            "%d cleanup operation(s) failed (last: %s: %s); presence entries left expire "
            "with their lease",
            self._cleanup_unlogged,
            op,
            exc,
        )
        self._cleanup_logged_at = now
        self._cleanup_unlogged = 0

    def codec_index(self, codec: Codec) -> int:
        return self.codecs.index(codec)

    # -- credentials and events ------------------------------------------------

    def credentials_from_claims(self, claims: Any) -> Credentials:
        subs = (
            {
                channel: SubscriptionGrant(info=opts.info, data=opts.data, override=opts.override)
                for channel, opts in claims.server_side_subscriptions.items()
            }
            if claims.subs or claims.channels
            else {}
        )
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
            raise self.channels.unknown_channel_error(channel)
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
        delta: bool | None = None,
    ) -> tuple[StreamPosition, bool]:
        """Publish into a channel; returns its stream position and ``suppressed``.

        ``delta`` (default: the namespace's ``delta_publish``) lets subscribers
        that negotiated delta compression get it as a fossil delta from the
        channel's previous publication (PROTOCOL.md §4.5; with history only).
        Raises ClientError 102 for an unknown namespace and 107 for an invalid name.
        """
        opts = self._channel_options(channel)
        if opts.subscription_type != "stream":
            raise ClientError(107, f"{channel[:64]!r} is a map channel: use map_publish")
        history = None if skip_history else self.history_options(opts)
        pub = Publication(data=bytes(data), info=info, tags=tags or None)
        use_delta = (opts.delta_publish if delta is None else delta) and history is not None
        self.publications_in += 1
        tracer = tracing.tracer
        span = (
            tracing.NO_SPAN
            if tracer is None
            else tracer.span("rtcore.broker.publish", {"rtcore.channel": channel})
        )
        started = time.perf_counter()
        try:
            with span:
                result = await self.broker.publish(
                    channel,
                    pub,
                    history=history,
                    idempotency_key=idempotency_key or None,
                    use_delta=use_delta,
                )
        except Exception:
            self.count_broker_error("publish")
            raise
        self.stats.broker_publish.observe(time.perf_counter() - started)
        self.messages_sent["publication"] += 1
        return result.position, result.suppressed

    @property
    def recovery_reads(self) -> int:
        """History reads made for subscribes (positioning and recovery)."""
        return self.history_reads.reads

    @property
    def recovery_reads_saved(self) -> int:
        """Subscribes served by another subscribe's history read (single flight)."""
        return self.history_reads.saved

    def refresh_presence_soon(self, session: ClientSession) -> None:
        """Queue a session's presence refresh: those of one loop turn (one timer
        sweep) go to the presence manager as one ``add_many`` call."""
        self._presence_due.append(session)
        if not self._presence_scheduled:
            self._presence_scheduled = True
            asyncio.get_running_loop().call_soon(self._refresh_presence)

    def _refresh_presence(self) -> None:
        self._presence_scheduled = False
        due, self._presence_due = self._presence_due, []
        entries: list[PresenceEntry] = []
        for session in due:
            entries.extend(session.presence_entries())
        self.maps.presence.refresh(due)
        if entries:
            self.spawn(self._add_presence(entries))

    async def _add_presence(self, entries: list[PresenceEntry]) -> None:
        self.presence_refreshes += 1
        try:
            await add_many(self.presence_manager, entries)
        except ConnectionError as exc:
            # The engine is down: the next refresh (a third of the presence
            # TTL later) tries again; one line per batch, not a traceback.
            self.count_broker_error("presence_add")
            logger.warning("presence refresh of %d entries failed: %s", len(entries), exc)

    def count_broker_error(self, op: str) -> None:
        """Count a failed broker or presence operation (metrics)."""
        self.broker_errors[op] = self.broker_errors.get(op, 0) + 1

    # -- BrokerEventHandler --------------------------------------------------

    def on_publication(
        self, channel: str, pub: Publication, position: StreamPosition, prev_pub: Publication | None
    ) -> None:
        self.messages_received["publication"] += 1
        self.history_reads.delivered(channel, position)
        tracer = tracing.tracer
        if tracer is None:
            delivered = self.hub.broadcast_publication(channel, pub, position.epoch, prev_pub)
        else:
            with tracer.span("rtcore.fanout", {"rtcore.channel": channel}) as span:
                delivered = self.hub.broadcast_publication(channel, pub, position.epoch, prev_pub)
                if span is not None:
                    span.set_attribute("rtcore.subscribers", delivered)
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
        if data[:1] == CLUSTER_MARK:
            self.cluster.receive(data)
            return
        self._control.receive(data)

    def handle_fanout_action(self, sub: Subscriber, action: int) -> None:
        """The hub's callback for a subscriber that fan-out could not serve."""
        if action == ACTION_INSUFFICIENT_STATE:
            self._subscriptions.lost_state(sub)
        else:
            session: ClientSession = sub.session
            session.disconnect(codes.INAPPROPRIATE_PROTOCOL)

    # -- subscriptions (rtcore.engine.subscriptions) -------------------------

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
        return await self._subscriptions.subscribe(
            session,
            req,
            command_id=command_id,
            server_side=server_side,
            chan_info=chan_info,
            data=data,
            override=override,
            expire_at=expire_at,
            defer_reply=defer_reply,
        )

    def finish_deferred_subscriptions(self, session: ClientSession) -> None:
        self._subscriptions.finish_deferred(session)

    async def unsubscribe_session(
        self, session: ClientSession, channel: str, unsubscribe: codes.Unsubscribe | None
    ) -> None:
        """Remove a subscription; with ``unsubscribe`` the client gets an unsubscribe push."""
        await self._subscriptions.unsubscribe(session, channel, unsubscribe)

    def session_closed(
        self, session: ClientSession, was_connected: bool, disconnect: codes.Disconnect
    ) -> None:
        """Called by a session once it is closed: drop it from the hub and clean up."""
        self.disconnects[disconnect.code] = self.disconnects.get(disconnect.code, 0) + 1
        by_transport = self.stats.disconnects
        key = (session.transport.name, disconnect.code)
        by_transport[key] = by_transport.get(key, 0) + 1
        self.stats.bytes_received += session.bytes_received
        if not was_connected:
            # Ended between the handshake and a successful connect.
            refusals = self.connect_refusals
            refusals[disconnect.code] = refusals.get(disconnect.code, 0) + 1
        self.client_messages_sent += session.writer.messages_sent
        self.client_frames_sent += session.writer.frames_sent
        self.stats.bytes_sent += session.writer.bytes_sent
        self.hub.remove_session(session)
        states = list(session.subscriptions.values())
        session.subscriptions.clear()
        for state in states:
            self.hub.remove_subscriber(state.channel, session.client_id)
        hook = was_connected and self.has_hook("on_disconnect")
        if not states and not hook:
            return  # nothing to await: no task

        async def cleanup() -> None:
            for state in states:
                await self._subscriptions.leave(session, state)
            if hook:
                await self.call_hook(
                    "on_disconnect",
                    DisconnectEvent(client=session, code=disconnect.code, reason=disconnect.reason),
                )

        self.spawn(cleanup())

    # -- server API operations (cluster-wide: rtcore.engine.control) ----------

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
        await self._control.emulation(node, session, data, fmt, limited=limited)

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
        await self._control.disconnect(
            user, code=code, reason=reason, client=client, session=session, whitelist=whitelist
        )

    async def unsubscribe(
        self, user: str, channel: str, *, client: str = "", session: str = ""
    ) -> None:
        """Unsubscribe a user's connections from ``channel`` (unsubscribe push 2000).

        An empty ``channel`` unsubscribes them from every channel.
        """
        await self._control.unsubscribe(user, channel, client=client, session=session)

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
        await self._control.subscribe(
            user,
            channel,
            client=client,
            session=session,
            info=info,
            data=data,
            recover_since=recover_since,
            override=override,
            expire_at=expire_at,
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
        await self._control.refresh(
            user, client=client, session=session, expired=expired, expire_at=expire_at, info=info
        )

    # -- presence and history ------------------------------------------------

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
        started = time.perf_counter()
        result = await self.broker.history(
            channel, since=since, limit=limit, reverse=reverse, meta_ttl=opts.history_meta_ttl
        )
        self.stats.history_read.observe(time.perf_counter() - started)
        return result

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
