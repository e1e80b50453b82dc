"""Subscribing sessions to channels and unsubscribing them (PROTOCOL.md §4.3).

:class:`Subscriptions` runs a node's subscribe algorithm: who may subscribe
(a subscription token, private and user-limited channels, the
``on_subscribe`` hook, the namespace's options), what the subscription gets
(presence, join/leave, positioning, recovery), the reply or push, and the
broker subscription that every subscriber of a channel on this node shares.
It also ends subscriptions: unsubscribe push, leave, presence removal, and
the broker unsubscribe after the last subscriber. Positioning, recovery and
the delivery of publications held during subscribe are in
:mod:`rtcore.engine.recovery`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, NamedTuple

from rtcore.auth import TokenError, TokenOp
from rtcore.engine.events import ChannelEvent, SubscribeEvent, SubscribeReply
from rtcore.engine.hub import FORM_DELTA, FORM_FULL, FORM_PLAIN, slot
from rtcore.engine.map_presence import has_map_cleanup, has_map_presence
from rtcore.engine.memory import MemoryBroker
from rtcore.engine.recovery import flush_buffer, position
from rtcore.engine.session import CLOSED, SubscriptionState
from rtcore.fanout import Subscriber
from rtcore.protocol import (
    Push,
    Reply,
    Subscribe,
    SubscribeRequest,
    SubscribeResult,
    Unsubscribe,
    codes,
)
from rtcore.protocol.codes import ClientError, DisconnectError
from rtcore.protocol.delta import FOSSIL, delta_chain
from rtcore.protocol.errors import InappropriateProtocol
from rtcore.protocol.tags_filter import FilterError, TagsMatcher, compile_filter


if TYPE_CHECKING:
    from rtcore.config import ChannelOptions
    from rtcore.engine.node import Node
    from rtcore.engine.session import ClientSession
    from rtcore.protocol.types import ClientInfo


__all__ = ["Subscriptions"]

# SubscribeRequest.flag bit: the client reads pushes that name the channel by number.
FLAG_CHANNEL_COMPACTION = 1

logger = logging.getLogger("rtcore.engine.subscriptions")


def _refused(session: ClientSession, channel: str, why: str) -> None:
    """An info line for a refused subscribe."""
    if logger.isEnabledFor(logging.INFO):
        extra = {**session.log_fields, "op": "subscribe", "channel": channel, "reason": why}
        logger.info("subscribe to %s refused: %s", channel, why, extra=extra)


def _flag(opts: ChannelOptions, override: Any, name: str) -> bool:
    """A channel option, unless the token's or proxy's ``override`` sets it."""
    value = getattr(override, name, None) if override is not None else None
    return bool(getattr(opts, name)) if value is None else bool(value)


def _long_ids(session: ClientSession) -> bool:
    """centrifuge-js over Protobuf: it asks for channel compaction but cannot route by id.

    Its Protobuf decoder gives 64-bit ids as Long objects, and it matches a
    push's id to a subscription's with ``===``, which two such objects never
    pass (centrifuge-js 5.8.0): the publications would be dropped.
    """
    return session.codec.binary and session.name == "js"


class _Grant(NamedTuple):
    """What a subscription token or the ``on_subscribe`` hook granted."""

    chan_info: bytes | None
    data: bytes | None
    override: Any
    expire_at: int


class Subscriptions:
    """A node's subscribe and unsubscribe of its sessions."""

    __slots__ = ("node", "_broker_subs", "_unavailable", "_unavailable_logged_at")

    def __init__(self, node: Node) -> None:
        self.node = node
        # Broker subscriptions by channel, done once the broker subscribed.
        self._broker_subs: dict[str, asyncio.Future[None]] = {}
        # Subscribes failed because the engine could not be reached, not yet logged.
        self._unavailable = 0
        self._unavailable_logged_at = -1.0

    def _engine_unavailable(self, channel: str, exc: BaseException) -> None:
        # Counted in broker_errors where the broker call failed; this only logs.
        self._unavailable += 1
        now = self.node.timers.now()
        if now - self._unavailable_logged_at < 1.0:
            return
        logger.warning(
            "%d subscribe(s) failed: engine unavailable (last: %s: %s)",
            self._unavailable,
            channel,
            exc,
        )
        self._unavailable_logged_at = now
        self._unavailable = 0

    # -- subscribe -----------------------------------------------------------

    async def subscribe(
        self,
        session: ClientSession,
        req: SubscribeRequest,
        *,
        command_id: int,
        server_side: bool,
        chan_info: bytes | None,
        data: bytes | None,
        override: Any,
        expire_at: int,
        defer_reply: bool,
    ) -> SubscribeResult | None:
        """See :meth:`rtcore.engine.node.Node.subscribe_session`."""
        node = self.node
        channel = req.channel
        if not channel:
            raise DisconnectError(codes.BAD_REQUEST)
        opts = node._channel_options(channel)
        if req.type != 0 or opts.subscription_type != "stream":
            await node.maps.subscriptions.subscribe(
                session, req, opts, command_id=command_id, server_side=server_side
            )
            return None
        tags_filter = self._tags_filter(session, req, opts)
        if req.delta and req.delta != FOSSIL:
            _refused(session, channel, f"unknown delta type {req.delta[:32]!r}")
            raise DisconnectError(codes.BAD_REQUEST)
        if channel in session.subscriptions:
            raise codes.ERROR_ALREADY_SUBSCRIBED
        limit = node.config.client.channel_limit
        if limit and len(session.subscriptions) >= limit:
            raise codes.ERROR_LIMIT_EXCEEDED
        wall = node.wall_clock()
        if not server_side:
            grant = await self._authorize(session, req, opts, wall)
            if grant is not None:
                chan_info, data, override, expire_at = grant
            if session.state == CLOSED:
                return None

        presence = _flag(opts, override, "presence")
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
        push_join_leave = _flag(opts, override, "force_push_join_leave") or (
            req.join_leave and opts.join_leave and sees_presence
        )
        recoverable = _flag(opts, override, "force_recovery") or (
            req.recoverable and (opts.allow_recovery or reads_history)
        )
        positioned = (
            recoverable
            or _flag(opts, override, "force_positioning")
            or (req.positioned and (opts.allow_positioning or reads_history))
        )
        if not opts.history_enabled:
            recoverable = positioned = False
        # Client-side only: server-side subscriptions negotiate neither.
        delta = not server_side and req.delta == FOSSIL and FOSSIL in opts.allowed_delta_types
        compact = (
            not server_side
            and opts.allow_channel_compaction
            and bool(req.flag & FLAG_CHANNEL_COMPACTION)
            and not _long_ids(session)
        )

        ncodecs = len(node.codecs)
        index = session.codec_index
        full = FORM_FULL if delta and not session.codec.binary else FORM_PLAIN
        sub = Subscriber(session.writer, slot(index, ncodecs, full, compact), session, channel)
        if delta and positioned:
            # Deltas need the position: the base of one is the publication before it.
            sub.delta_index = slot(index, ncodecs, FORM_DELTA, compact)
        sub.tags_filter = tags_filter
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
        node.hub.add_subscriber(sub)
        info: ClientInfo | None = None
        try:
            await self._broker_subscribe(channel)
            result = SubscribeResult(delta=delta)
            if compact:
                result.id = node.hub.channel_id(channel)
            if positioned:
                await position(
                    node.history_reads,
                    state,
                    req,
                    result,
                    recoverable,
                    node.config.client.recovery_max_publication_limit,
                )
                if delta and result.publications:
                    self._delta_chain(session, sub, result)
            if data:
                result.data = data
            if expire_at and not server_side:
                result.expires = True
                result.ttl = max(1, int(expire_at - wall))
            if presence:
                info = session.channel_info(channel)
                await node.presence_manager.add(channel, session.client_id, info)
        except BaseException as exc:
            if session.subscriptions.get(channel) is state:
                del session.subscriptions[channel]
                node.hub.remove_subscriber(channel, session.client_id)
                node.spawn(self._broker_unsubscribe(channel))
            if isinstance(exc, ClientError | DisconnectError | asyncio.CancelledError):
                raise
            if isinstance(exc, ConnectionError):
                # The engine is out of reach: during a storm that is every
                # subscribe at once, so one line a second, never a traceback each.
                self._engine_unavailable(channel, exc)
            else:
                logger.exception("subscribe to %s failed", channel)
            raise codes.ERROR_INTERNAL from exc
        if session.subscriptions.get(channel) is not state or session.state == CLOSED:
            return None  # unsubscribed or disconnected meanwhile
        if has_map_presence(opts):
            node.spawn(node.maps.presence.join(session, channel, opts))
        if emit_join_leave:
            self._join(channel, info or session.channel_info(channel))
        # Held publications continue from the stream top the reply reached
        # (recovered or not, filtered or not).
        state.flush_from = sub.offset
        state.epoch = result.epoch
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "subscribed to %s",
                channel,
                extra={
                    **session.log_fields,
                    "channel": channel,
                    "server_side": server_side,
                    "recovered": result.recovered,
                },
            )
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
        flush_buffer(session, state, self.lost_state)
        return result

    @staticmethod
    def _tags_filter(
        session: ClientSession, req: SubscribeRequest, opts: ChannelOptions
    ) -> TagsMatcher | None:
        """The matcher of the request's tags filter (``tf``); 107 when refused."""
        if req.tf is None:
            return None
        if not opts.allow_tags_filter:
            _refused(session, req.channel, "a tags filter, and allow_tags_filter is off")
            raise codes.ERROR_BAD_REQUEST
        try:
            return compile_filter(req.tf)
        except FilterError as exc:
            _refused(session, req.channel, f"invalid tags filter: {exc}")
            raise codes.ERROR_BAD_REQUEST from None

    @staticmethod
    def _delta_chain(session: ClientSession, sub: Subscriber, result: SubscribeResult) -> None:
        """Recovered publications for a delta subscriber: the first full, then deltas."""
        pubs = result.publications
        try:
            result.publications = delta_chain(pubs, not session.codec.binary)
        except InappropriateProtocol:
            return  # sent as they are: the reply's encoding disconnects with 3506
        # The client's base is the stream top: the next publication may be a delta.
        sub.delta_ready = pubs[-1].offset == sub.offset

    async def _authorize(
        self, session: ClientSession, req: SubscribeRequest, opts: ChannelOptions, wall: float
    ) -> _Grant | None:
        """Refuse a client-side subscribe that is not allowed (raises ClientError 103,
        109 or the token's error); returns what a token or the hook granted, if any."""
        node = self.node
        channel = req.channel
        # A user-limited channel ("dialog#42,43") grants itself to the users it
        # lists and to nobody else (a subscription token still grants).
        user_limited = (
            opts.allow_user_limited_channels and node.channels.allowed_users(channel) is not None
        )
        if req.token:
            try:
                claims = await node.token_verifier.verify_subscribe(req.token)
                claims.check(channel=channel, user=session.user, client=session.client_id)
            except TokenError as exc:
                _refused(session, channel, f"subscription token refused: {exc.message}")
                outcome = exc.outcome(TokenOp.SUBSCRIBE)
                if outcome.disconnect:
                    raise DisconnectError(codes.Disconnect(outcome.code, outcome.message)) from None
                raise ClientError(outcome.code, outcome.message, outcome.temporary) from None
            if claims.expire_at and claims.expire_at <= wall:
                _refused(session, channel, "subscription token expired")
                raise codes.ERROR_TOKEN_EXPIRED
            return _Grant(claims.info, claims.data, claims.override, claims.expire_at)
        if node.channels.is_private(channel):
            _refused(session, channel, "a private channel needs a subscription token")
            raise codes.ERROR_PERMISSION_DENIED
        if user_limited:
            if not node.channels.user_allowed(channel, opts, session.user):
                _refused(session, channel, "the user is not listed in the user-limited channel")
                raise codes.ERROR_PERMISSION_DENIED
            return None
        if node.has_hook("on_subscribe"):
            result = await node.call_hook(
                "on_subscribe", SubscribeEvent(client=session, channel=channel, data=req.data)
            )
            if result is False:
                _refused(session, channel, "on_subscribe returned False")
                raise codes.ERROR_PERMISSION_DENIED
            if isinstance(result, SubscribeReply):
                return _Grant(result.info, result.data, result.override, result.expire_at)
            return None
        allowed = opts.allow_subscribe_for_client and (
            session.user != "" or opts.allow_subscribe_for_anonymous
        )
        if not allowed:
            why = (
                "allow_subscribe_for_client is off"
                if not opts.allow_subscribe_for_client
                else "the user is anonymous and allow_subscribe_for_anonymous is off"
            )
            _refused(session, channel, f"no subscription token, and {why}")
            raise codes.ERROR_PERMISSION_DENIED
        return None

    def finish_deferred(self, session: ClientSession) -> None:
        """Deliver what deferred subscriptions held, now that the connect reply is out."""
        for state in list(session.subscriptions.values()):
            if state.pending:
                flush_buffer(session, state, self.lost_state)

    def _join(self, channel: str, info: ClientInfo) -> None:
        """Publish the subscriber's join: at once when the broker delivers in
        process (the memory broker), else in a task (the reply does not wait)."""
        broker = self.node.broker
        if isinstance(broker, MemoryBroker) and broker.joins_in_process:
            node = self.node
            try:
                broker.deliver_join(channel, info)
            except Exception:
                node.count_broker_error("join")
                logger.exception("join publication in %s failed", channel)
                return
            node.messages_sent["join"] += 1
            return
        self.node.spawn(self._publish_join(channel, info))

    async def _publish_join(self, channel: str, info: ClientInfo) -> None:
        node = self.node
        try:
            await node.broker.publish_join(channel, info)
        except Exception:
            node.count_broker_error("join")
            raise
        node.messages_sent["join"] += 1

    # -- unsubscribe ---------------------------------------------------------

    def lost_state(self, sub: Subscriber) -> None:
        """A subscriber missed publications: a client-side subscription is
        unsubscribed (2500, the client resubscribes and recovers), a server-side
        one disconnects its session (3010)."""
        session: ClientSession = sub.session
        state = session.subscriptions.get(sub.channel)
        if state is not None and not state.server_side:
            self.node.spawn(
                self.unsubscribe(session, sub.channel, codes.UNSUBSCRIBE_INSUFFICIENT_STATE)
            )
        else:
            session.disconnect(codes.INSUFFICIENT_STATE)

    async def unsubscribe(
        self, session: ClientSession, channel: str, unsubscribe: codes.Unsubscribe | None
    ) -> None:
        """See :meth:`rtcore.engine.node.Node.unsubscribe_session`."""
        state = session.subscriptions.pop(channel, None)
        if state is None:
            return
        if logger.isEnabledFor(logging.DEBUG):
            extra: dict[str, Any] = {**session.log_fields, "channel": channel}
            if unsubscribe is not None:
                extra.update(code=unsubscribe.code, reason=unsubscribe.reason)
            how = f": {unsubscribe.code} {unsubscribe.reason}" if unsubscribe is not None else ""
            logger.debug("unsubscribed from %s%s", channel, how, extra=extra)
        self.node.hub.remove_subscriber(channel, session.client_id)
        if unsubscribe is not None:
            session.send_push(
                Push(
                    channel=channel,
                    unsubscribe=Unsubscribe(code=unsubscribe.code, reason=unsubscribe.reason),
                )
            )
        await self.leave(session, state)
        await self.node.call_hook("on_unsubscribe", ChannelEvent(client=session, channel=channel))

    async def leave(self, session: ClientSession, state: SubscriptionState) -> None:
        """After a subscription ended: broker unsubscribe, presence removal, leave."""
        node = self.node
        channel = state.channel
        await self._broker_unsubscribe(channel)
        if has_map_cleanup(state.options):
            await node.maps.presence.leave(session, state)
        op = "presence_remove"
        try:
            if state.presence:
                await node.presence_manager.remove(channel, session.client_id, session.user)
            op = "leave"
            if state.emit_join_leave and not state.pending:
                await node.broker.publish_leave(channel, session.channel_info(channel))
                node.messages_sent["leave"] += 1
        except Exception as exc:  # noqa: BLE001
            node.count_broker_error(op)
            self._cleanup_failed(op, exc, session.client_id, channel)

    def _cleanup_failed(self, op: str, exc: Exception, client_id: str, channel: str) -> None:
        """An engine outage (or a shutdown) is summed up; anything else is a bug: a traceback."""
        node = self.node
        if node.closing or isinstance(exc, OSError | TimeoutError):
            node.cleanup_failed(op, exc)
        else:
            logger.error("cleanup (%s) of %s in %s failed", op, client_id, channel, exc_info=exc)

    # -- the broker subscription of a channel --------------------------------

    def broker_token(self, channel: str) -> object:
        """Identifies the node's current broker subscription of ``channel`` (None: none)."""
        return self._broker_subs.get(channel)

    async def _broker_subscribe(self, channel: str) -> None:
        fut = self._broker_subs.get(channel)
        if fut is not None:
            if fut.done():
                return  # the usual case: subscribed long ago (a failure pops the entry)
            await asyncio.shield(fut)
            return
        fut = self._broker_subs[channel] = asyncio.get_running_loop().create_future()
        try:
            await self.node.broker.subscribe(channel)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.node.count_broker_error("subscribe")
            self._broker_subs.pop(channel, None)
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        fut.set_result(None)

    async def _broker_unsubscribe(self, channel: str) -> None:
        node = self.node
        if node.hub.num_subscribers(channel):
            return
        fut = self._broker_subs.pop(channel, None)
        if fut is None:
            return
        if not fut.done():
            await asyncio.shield(fut)
        if node.hub.num_subscribers(channel):
            # Someone subscribed again meanwhile: keep the broker subscription.
            self._broker_subs[channel] = fut
            return
        try:
            await node.broker.unsubscribe(channel)
        except Exception as exc:  # noqa: BLE001
            node.count_broker_error("unsubscribe")
            self._cleanup_failed("unsubscribe", exc, "", channel)
        finally:
            node.history_reads.forget(channel)
