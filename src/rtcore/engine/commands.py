"""Client command handlers: connect, subscribe, unsubscribe, publish, presence,
presence_stats, history, send, rpc, refresh, sub_refresh.

Each handler takes the session and the command, queues the reply (or raises
:class:`~rtcore.protocol.codes.ClientError` for an error reply, or
:class:`~rtcore.protocol.codes.DisconnectError` to end the connection). Permission
rules follow Centrifugo's namespace options; the node's hooks can accept or
refuse where the options alone do not decide.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from rtcore.auth import TokenError, TokenOp
from rtcore.engine import tracing
from rtcore.engine.ratelimit import CommandRateLimits
from rtcore.engine.session import CONNECTED, CONNECTING
from rtcore.protocol import (
    Command,
    ConnectResult,
    HistoryResult,
    PresenceResult,
    PresenceStatsResult,
    PublishResult,
    RefreshResult,
    Reply,
    RPCResult,
    SubRefreshResult,
    SubscribeRequest,
    SubscribeResult,
    UnsubscribeResult,
    codes,
)
from rtcore.protocol.codes import ClientError, DisconnectError


if TYPE_CHECKING:
    from rtcore.engine.session import ClientSession


__all__ = ["dispatch"]

logger = logging.getLogger("rtcore.engine.commands")


def _token_failure(exc: TokenError, op: TokenOp, session: ClientSession) -> Exception:
    outcome = exc.outcome(op)
    logger.info("token refused (%s): %s", op, exc.message, extra=session.log_fields)
    if outcome.disconnect:
        return DisconnectError(codes.Disconnect(outcome.code, outcome.message))
    return ClientError(outcome.code, outcome.message, outcome.temporary)


def _refused(session: ClientSession, op: str, why: str, channel: str = "") -> None:
    """An info line for a refused connect, subscribe, publish, presence or history."""
    if logger.isEnabledFor(logging.INFO):
        extra = {**session.log_fields, "op": op, "reason": why}
        if channel:
            extra["channel"] = channel
        target = f" to {channel}" if channel else ""
        logger.info("%s%s refused: %s", op, target, why, extra=extra)


# Client commands traced when a tracer is installed (rtcore.engine.tracing).
_TRACED = frozenset({"connect", "subscribe", "publish"})


async def dispatch(session: ClientSession, cmd: Command) -> None:
    """Run one command; counts it by method and result code, and connects by transport."""
    methods = cmd.methods
    if len(methods) != 1:
        # No request (with an id) or several requests in one command.
        raise DisconnectError(codes.BAD_REQUEST)
    method = methods[0]
    stats = session.node.stats
    try:
        tracer = tracing.tracer
        if tracer is not None and method in _TRACED:
            with tracer.span("rtcore." + method, _span_attributes(session, cmd)):
                await _run(session, cmd, method)
        else:
            await _run(session, cmd, method)
    except ClientError as exc:
        stats.count_command(method, exc.code)
        raise
    except DisconnectError as exc:
        stats.count_command(method, exc.disconnect.code)
        raise
    stats.count_command(method, 0)
    if method == "connect":
        connects = stats.connects
        name = session.transport.name
        connects[name] = connects.get(name, 0) + 1


def _span_attributes(session: ClientSession, cmd: Command) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "rtcore.transport": session.transport.name,
        "rtcore.client": session.client_id,
    }
    if session.user:
        attributes["rtcore.user"] = session.user
    request = cmd.subscribe or cmd.publish
    if request is not None:
        attributes["rtcore.channel"] = request.channel
    return attributes


async def _run(session: ClientSession, cmd: Command, method: str) -> None:
    if method != "send" and cmd.id <= 0:
        raise DisconnectError(codes.BAD_REQUEST)
    if method == "connect":
        await handle_connect(session, cmd)
        return
    if session.state != CONNECTED:
        # The first command must be connect.
        raise DisconnectError(codes.BAD_REQUEST)
    limits = session.rate_limits
    if limits is None:
        limits = session.rate_limits = CommandRateLimits(
            session.node.config.client.command_rate_limit
        )
    if not limits.allow(method):
        _rate_limited(session, limits, method)
        return
    handler = _HANDLERS.get(method)
    if handler is None:
        # ``ping`` is not used by protocol v2 clients.
        raise codes.ERROR_NOT_AVAILABLE
    await handler(session, cmd)


def _rate_limited(session: ClientSession, limits: CommandRateLimits, method: str) -> None:
    """Over client.command_rate_limit: error 111 (a send is dropped) or disconnect 3013."""
    if limits.refused == 1:
        # One line per connection, not one per refused command.
        _refused(session, method, "over client.command_rate_limit (further refusals not logged)")
    if limits.disconnect:
        raise DisconnectError(codes.TOO_MANY_REQUESTS)
    if method != "send":
        raise codes.ERROR_TOO_MANY_REQUESTS


# -- connect / refresh -----------------------------------------------------


async def handle_connect(session: ClientSession, cmd: Command) -> None:
    if session.state != CONNECTING:
        raise DisconnectError(codes.BAD_REQUEST)
    req = cmd.connect
    assert req is not None
    node = session.node
    cfg = node.config.client
    session.name = req.name[:16]
    session.version = req.version[:64]
    credentials = None
    if req.token:
        try:
            claims = await node.token_verifier.verify_connect(req.token)
        except TokenError as exc:
            raise _token_failure(exc, TokenOp.CONNECT, session) from None
        if claims.user == "" and cfg.disallow_anonymous_connection_tokens:
            _refused(
                session, "connect", "the token has no user (disallow_anonymous_connection_tokens)"
            )
            raise DisconnectError(codes.PERMISSION_DENIED)
        credentials = node.credentials_from_claims(claims)
    if node.has_hook("on_connecting"):
        # The event copies the request's headers: built only for a hook.
        event = node.connect_event(session, req, credentials)
        try:
            hook_result = await node.call_hook("on_connecting", event)
        except ClientError as exc:
            _refused(session, "connect", f"on_connecting raised error {exc.code} {exc.message}")
            raise
        except DisconnectError as exc:
            why = f"on_connecting raised disconnect {exc.disconnect.code} {exc.disconnect.reason}"
            _refused(session, "connect", why)
            raise
        if hook_result is not None:
            credentials = node.hook_credentials(hook_result)
    if credentials is None:
        if not cfg.allow_anonymous_connect_without_token:
            _refused(
                session,
                "connect",
                "no token, and client.allow_anonymous_connect_without_token is off",
            )
            raise DisconnectError(codes.BAD_REQUEST)
        credentials = node.anonymous_credentials()
    wall = node.wall_clock()
    if credentials.expire_at and credentials.expire_at <= wall:
        _refused(session, "connect", "the credentials expired")
        raise codes.ERROR_EXPIRED
    session.user = credentials.user
    session.info = credentials.info
    session.meta = credentials.meta
    session.expire_at = credentials.expire_at
    if (
        cfg.user_connection_limit
        and node.hub.user_connection_count(session.user) >= cfg.user_connection_limit
    ):
        _refused(session, "connect", f"client.user_connection_limit ({cfg.user_connection_limit})")
        raise DisconnectError(codes.CONNECTION_LIMIT)
    if cfg.connection_limit and node.hub.num_sessions >= cfg.connection_limit:
        _refused(session, "connect", f"client.connection_limit ({cfg.connection_limit})")
        raise DisconnectError(codes.CONNECTION_LIMIT)
    node.hub.add_session(session)
    result = ConnectResult(
        client=session.client_id,
        version=node.version,
        data=credentials.data or b"",
        ping=int(cfg.ping_interval) if cfg.ping_interval else 0,
        pong=bool(cfg.ping_interval and cfg.pong_timeout) and not session.transport.unidirectional,
    )
    if session.transport.emulation or session.transport.unidirectional:
        result.session = session.session_id
        result.node = node.id
    if session.expire_at:
        result.expires = True
        result.ttl = max(1, int(session.expire_at - wall))
    # Server-side subscriptions: token subs/channels and the hook's.
    subscribe_results: dict[str, SubscribeResult] = {}
    try:
        for channel, opts in credentials.subscriptions.items():
            recover_req = req.subs.get(channel) if req.subs else None
            sreq = SubscribeRequest(channel=channel)
            if recover_req is not None:
                sreq.recover = recover_req.recover
                sreq.offset = recover_req.offset
                sreq.epoch = recover_req.epoch
            res = await node.subscribe_session(
                session,
                sreq,
                server_side=True,
                chan_info=opts.info,
                data=opts.data,
                override=opts.override,
                expire_at=opts.expire_at,
                defer_reply=True,
            )
            if res is not None:
                subscribe_results[channel] = res
    except BaseException:
        # The connect fails as a whole: undo what it registered so far.
        node.hub.remove_session(session)
        for channel in list(session.subscriptions):
            await node.unsubscribe_session(session, channel, None)
        raise
    result.subs = subscribe_results
    session.send_reply(Reply(id=cmd.id, connect=result))
    session.mark_connected()
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("client connected", extra={**session.log_fields, "sdk": req.name})
    node.finish_deferred_subscriptions(session)
    session.schedule_expiry_check()
    if node.has_hook("on_connect"):
        await node.call_hook("on_connect", session)


async def handle_refresh(session: ClientSession, cmd: Command) -> None:
    req = cmd.refresh
    assert req is not None
    node = session.node
    if not req.token:
        raise DisconnectError(codes.BAD_REQUEST)
    try:
        claims = await node.token_verifier.verify_connect(req.token)
        claims.check_user(session.user)
    except TokenError as exc:
        raise _token_failure(exc, TokenOp.REFRESH, session) from None
    wall = node.wall_clock()
    if claims.expire_at and claims.expire_at <= wall:
        raise DisconnectError(codes.CONNECTION_EXPIRED)
    session.expire_at = claims.expire_at
    if claims.info is not None:
        session.info = claims.info
    result = RefreshResult(client=session.client_id, version=node.version)
    if session.expire_at:
        result.expires = True
        result.ttl = max(1, int(session.expire_at - wall))
    session.send_reply(Reply(id=cmd.id, refresh=result))
    session.schedule_expiry_check()
    await node.call_hook("on_refresh", session)


# -- subscriptions -----------------------------------------------------------


async def handle_subscribe(session: ClientSession, cmd: Command) -> None:
    req = cmd.subscribe
    assert req is not None
    # subscribe_session queues the reply (or raises for an error reply).
    await session.node.subscribe_session(session, req, command_id=cmd.id)


async def handle_unsubscribe(session: ClientSession, cmd: Command) -> None:
    req = cmd.unsubscribe
    assert req is not None
    if not req.channel:
        raise DisconnectError(codes.BAD_REQUEST)
    # Reply first: the client forgets the subscription at once anyway.
    session.send_reply(Reply(id=cmd.id, unsubscribe=UnsubscribeResult()))
    await session.node.unsubscribe_session(session, req.channel, None)


async def handle_sub_refresh(session: ClientSession, cmd: Command) -> None:
    req = cmd.sub_refresh
    assert req is not None
    node = session.node
    if not req.channel:
        raise DisconnectError(codes.BAD_REQUEST)
    sub = session.subscriptions.get(req.channel)
    if sub is None or sub.pending:
        raise codes.ERROR_PERMISSION_DENIED
    if not req.token:
        raise codes.ERROR_BAD_REQUEST
    try:
        claims = await node.token_verifier.verify_subscribe(req.token)
        claims.check(channel=req.channel, user=session.user, client=session.client_id)
    except TokenError as exc:
        raise _token_failure(exc, TokenOp.SUB_REFRESH, session) from None
    wall = node.wall_clock()
    if claims.expire_at and claims.expire_at <= wall:
        raise DisconnectError(codes.SUBSCRIPTION_EXPIRED)
    sub.expire_at = claims.expire_at
    if claims.info is not None:
        sub.chan_info = claims.info
    result = SubRefreshResult()
    if sub.expire_at:
        result.expires = True
        result.ttl = max(1, int(sub.expire_at - wall))
    session.send_reply(Reply(id=cmd.id, sub_refresh=result))
    session.schedule_expiry_check()


# -- publish / presence / history ------------------------------------------


def _validate_channel(session: ClientSession, channel: str) -> Any:
    node = session.node
    if not channel:
        raise DisconnectError(codes.BAD_REQUEST)
    if not node.channels.valid_name(channel):
        raise codes.ERROR_BAD_REQUEST
    opts = node.channels.options(channel)
    if opts is None:
        raise node.channels.unknown_channel_error(channel)
    return opts


async def _permit(
    session: ClientSession,
    channel: str,
    *,
    for_subscriber: bool,
    for_client: bool,
    for_anonymous: bool,
    hook: str,
    event: Any,
) -> None:
    """Centrifugo's allow_*_for_subscriber / _for_client / _for_anonymous rules, then the hook."""
    subscribed = channel in session.subscriptions and not session.subscriptions[channel].pending
    anonymous = session.user == ""
    # Anonymous users need allow_*_for_anonymous on top of either rule (subscribers too).
    allowed = ((for_subscriber and subscribed) or for_client) and (not anonymous or for_anonymous)
    node = session.node
    op = hook[3:]
    if node.has_hook(hook):
        result = await node.call_hook(hook, event)
        if result is False:
            _refused(session, op, f"{hook} returned False", channel)
            raise codes.ERROR_PERMISSION_DENIED
        if result is True or result is None:
            return
    if not allowed:
        if anonymous and not for_anonymous:
            why = f"the user is anonymous and allow_{op}_for_anonymous is off"
        elif for_subscriber and not for_client:
            why = f"not subscribed, and allow_{op}_for_client is off"
        else:
            why = f"allow_{op}_for_subscriber and allow_{op}_for_client are off"
        _refused(session, op, why, channel)
        raise codes.ERROR_PERMISSION_DENIED


async def handle_publish(session: ClientSession, cmd: Command) -> None:
    req = cmd.publish
    assert req is not None
    opts = _validate_channel(session, req.channel)
    if req.type != 0 or opts.subscription_type != "stream":
        await session.node.maps.subscriptions.publish(session, req, opts, cmd.id)
        return
    if not req.data:
        raise codes.ERROR_BAD_REQUEST
    node = session.node
    event = node.publish_event(session, req.channel, req.data)
    await _permit(
        session,
        req.channel,
        for_subscriber=opts.allow_publish_for_subscriber,
        for_client=opts.allow_publish_for_client,
        for_anonymous=opts.allow_publish_for_anonymous,
        hook="on_publish",
        event=event,
    )
    await node.publish(
        req.channel,
        event.data,
        info=session.channel_info(req.channel),
        skip_history=event.skip_history,
    )
    session.send_reply(Reply(id=cmd.id, publish=PublishResult()))


async def _permit_presence(session: ClientSession, channel: str) -> None:
    """The checks shared by ``presence`` and ``presence_stats``."""
    opts = _validate_channel(session, channel)
    if not opts.presence:
        raise codes.ERROR_NOT_AVAILABLE
    await _permit(
        session,
        channel,
        for_subscriber=opts.allow_presence_for_subscriber,
        for_client=opts.allow_presence_for_client,
        for_anonymous=opts.allow_presence_for_anonymous,
        hook="on_presence",
        event=session.node.channel_event(session, channel),
    )


async def handle_presence(session: ClientSession, cmd: Command) -> None:
    req = cmd.presence
    assert req is not None
    await _permit_presence(session, req.channel)
    presence = await session.node.presence(req.channel)
    session.send_reply(Reply(id=cmd.id, presence=PresenceResult(presence=presence)))


async def handle_presence_stats(session: ClientSession, cmd: Command) -> None:
    req = cmd.presence_stats
    assert req is not None
    await _permit_presence(session, req.channel)
    stats = await session.node.presence_stats(req.channel)
    session.send_reply(
        Reply(
            id=cmd.id,
            presence_stats=PresenceStatsResult(
                num_clients=stats.num_clients, num_users=stats.num_users
            ),
        )
    )


async def handle_history(session: ClientSession, cmd: Command) -> None:
    req = cmd.history
    assert req is not None
    opts = _validate_channel(session, req.channel)
    if not opts.history_enabled:
        raise codes.ERROR_NOT_AVAILABLE
    await _permit(
        session,
        req.channel,
        for_subscriber=opts.allow_history_for_subscriber,
        for_client=opts.allow_history_for_client,
        for_anonymous=opts.allow_history_for_anonymous,
        hook="on_history",
        event=session.node.channel_event(session, req.channel),
    )
    node = session.node
    since = req.since
    if since is not None and req.reverse and since.offset == 0:
        raise codes.ERROR_BAD_REQUEST
    limit = req.limit
    cap = node.config.client.history_max_publication_limit
    if limit < 0 or (cap and limit > cap):
        limit = cap if cap else -1
    result = await node.history(req.channel, limit=limit, since=since, reverse=req.reverse)
    if since is not None and since.epoch and since.epoch != result.position.epoch:
        raise codes.ERROR_UNRECOVERABLE_POSITION
    session.send_reply(
        Reply(
            id=cmd.id,
            history=HistoryResult(
                publications=list(result.publications),
                epoch=result.position.epoch,
                offset=result.position.offset,
            ),
        )
    )


# -- send / rpc --------------------------------------------------------------


async def handle_send(session: ClientSession, cmd: Command) -> None:
    req = cmd.send
    assert req is not None
    node = session.node
    if not node.has_hook("on_message"):
        raise DisconnectError(codes.NOT_AVAILABLE)
    await node.call_hook("on_message", node.message_event(session, req.data))


async def handle_rpc(session: ClientSession, cmd: Command) -> None:
    req = cmd.rpc
    assert req is not None
    node = session.node
    if not node.has_hook("on_rpc"):
        raise codes.ERROR_NOT_AVAILABLE
    data = await node.call_hook("on_rpc", node.rpc_event(session, req.method, req.data))
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    elif data is not None and not isinstance(data, bytes):
        logger.error(
            "on_rpc returned %s for method %r: it must return bytes, the reply's data "
            "(e.g. json.dumps(result).encode()), or None; the client gets error 100",
            type(data).__name__,
            req.method,
            extra=session.log_fields,
        )
        raise codes.ERROR_INTERNAL
    session.send_reply(Reply(id=cmd.id, rpc=RPCResult(data=data or b"")))


_HANDLERS: dict[str, Callable[[ClientSession, Command], Awaitable[None]]] = {
    "subscribe": handle_subscribe,
    "unsubscribe": handle_unsubscribe,
    "publish": handle_publish,
    "presence": handle_presence,
    "presence_stats": handle_presence_stats,
    "history": handle_history,
    "send": handle_send,
    "rpc": handle_rpc,
    "refresh": handle_refresh,
    "sub_refresh": handle_sub_refresh,
}
