"""Map subscriptions of sessions: the state, stream and live phases, and client writes.

A map subscribe is a series of ``subscribe`` commands (``type`` 1) with a
``phase`` each, as centrifuge-js sends them (docs/protocol.md, "Map
subscriptions"):

* **state** (phase 2): pages of the state, each with the stream position
  frozen at the first page. Later pages leave out entries changed after
  that position: the stream phase brings them.
* **stream** (phase 1): pages of changes after the client's offset; also the
  first request of a recovery (``recover``), which skips the state.
* **live** (phase 0, the server's answer when the client is close to the
  top): the session joins the channel's subscribers, holding what arrives
  meanwhile, then reads the rest of the stream and replies with it; held
  changes past the reply's top follow (as for stream recovery).

The first request of a subscribe is authorized like a stream subscribe
(token, ``on_subscribe`` hook, namespace options); its later pages ride on
that grant. Neither the state nor the stream is ever copied to other
sessions: each page is one store read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from rtcore.engine.hub import FORM_DELTA, FORM_FULL, FORM_PLAIN, slot
from rtcore.engine.map_presence import has_map_presence
from rtcore.engine.maps import UnrecoverablePositionError
from rtcore.engine.recovery import flush_buffer
from rtcore.engine.session import CLOSED, SubscriptionState
from rtcore.engine.subscriptions import _long_ids
from rtcore.fanout import Subscriber
from rtcore.protocol import PublishResult, Reply, SubscribeResult, codes
from rtcore.protocol.codes import ClientError, DisconnectError
from rtcore.protocol.delta import FOSSIL, DeltaForms
from rtcore.protocol.errors import InappropriateProtocol
from rtcore.protocol.types import StreamPosition


if TYPE_CHECKING:
    from rtcore.config import ChannelOptions
    from rtcore.engine.node import Node
    from rtcore.engine.session import ClientSession
    from rtcore.engine.subscriptions import Subscriptions
    from rtcore.protocol import PublishRequest, SubscribeRequest
    from rtcore.protocol.types import Publication


__all__ = ["PHASE_LIVE", "PHASE_STATE", "PHASE_STREAM", "TYPE_MAP", "MapSubscriptions"]

logger = logging.getLogger("rtcore.engine.map_subscribe")

#: SubscribeRequest/PublishRequest.type of a map subscription.
TYPE_MAP = 1
#: The subscription type of each map namespace type (1 map, 2 and 3 map presence).
TYPE_OF = {"map": TYPE_MAP, "map_clients": 2, "map_users": 3}
#: SubscribeRequest/SubscribeResult.phase values.
PHASE_LIVE = 0
PHASE_STREAM = 1
PHASE_STATE = 2
#: A subscribe in progress is forgotten this long after its first page (map
#: options' ``subscribe_catch_up_timeout`` disconnects a client that continues it).
FLOW_TIMEOUT = 60.0


class _Flow:
    """A map subscribe between its first request and going live."""

    __slots__ = ("grant", "epoch", "offset", "stream_top", "started")

    def __init__(self, grant: Any, epoch: str, offset: int, started: float) -> None:
        self.grant = grant
        self.epoch = epoch
        # The stream position of the first state page (or of the recovery).
        self.offset = offset
        # The stream top when the stream phase began (None before it).
        self.stream_top: int | None = None
        self.started = started


class MapSubscriptions:
    """A node's map subscribes and client-side map writes."""

    __slots__ = ("node", "subs", "_flows")

    def __init__(self, node: Node, subs: Subscriptions) -> None:
        self.node = node
        self.subs = subs
        self._flows: dict[tuple[str, str], _Flow] = {}

    # -- subscribe -------------------------------------------------------------

    async def subscribe(
        self,
        session: ClientSession,
        req: SubscribeRequest,
        opts: ChannelOptions,
        *,
        command_id: int,
        server_side: bool,
    ) -> None:
        """Answer one request of a map subscribe (or refuse it with a ClientError)."""
        channel = req.channel
        if req.type > 3 or server_side or not command_id:
            # Shared polls, and server-side map subscriptions: not built.
            raise codes.ERROR_NOT_AVAILABLE
        if req.type != TYPE_OF.get(opts.subscription_type, 0):
            # As Centrifugo: the namespace does not allow this type of subscription.
            _refused(session, "subscribe", channel, f"subscription type {req.type}")
            raise codes.ERROR_PERMISSION_DENIED
        if req.delta and req.delta != FOSSIL:
            raise DisconnectError(codes.BAD_REQUEST)
        if channel in session.subscriptions:
            raise codes.ERROR_ALREADY_SUBSCRIBED
        tags_filter = self.subs._tags_filter(session, req, opts)
        now = self.node.timers.now()
        self._sweep(now)
        key = (session.client_id, channel)
        flow = self._flows.get(key)
        if flow is not None and now - flow.started > opts.map.subscribe_catch_up_timeout:
            del self._flows[key]
            if req.cursor or req.phase != PHASE_STATE:
                # As Centrifugo: too slow to catch up; the client reconnects and starts again.
                raise DisconnectError(codes.SLOW)
            flow = None
        phase = req.phase
        if phase not in (PHASE_LIVE, PHASE_STREAM, PHASE_STATE):
            raise ClientError(107, f"unknown map phase {phase}")
        first = (phase == PHASE_STATE and not req.cursor) or (flow is None and req.recover)
        if phase == PHASE_LIVE and flow is None:
            first = True
        if first:
            limit = self.node.config.client.channel_limit
            if limit and len(session.subscriptions) >= limit:
                raise codes.ERROR_LIMIT_EXCEEDED
            grant = await self.subs._authorize(session, req, opts, self.node.wall_clock())
            if session.state == CLOSED:
                return
            flow = self._flows[key] = _Flow(grant, req.epoch, req.offset, now)
        elif flow is None:
            raise codes.ERROR_PERMISSION_DENIED  # a continuation of no subscribe
        try:
            if phase == PHASE_STATE:
                await self._state_page(session, req, opts, flow, tags_filter, command_id)
            elif phase == PHASE_STREAM:
                await self._stream_page(session, req, opts, flow, tags_filter, command_id)
            else:
                if not opts.map.has_stream:
                    raise ClientError(107, "an ephemeral map has no stream to recover from")
                since = StreamPosition(req.offset, req.epoch)
                await self._live(session, req, opts, flow, since, [], True, tags_filter, command_id)
        except UnrecoverablePositionError:
            self._flows.pop(key, None)
            raise codes.ERROR_UNRECOVERABLE_POSITION from None
        except InappropriateProtocol:
            # A value that is not JSON, for a delta subscriber on JSON (as in fan-out: 3506).
            self._flows.pop(key, None)
            raise DisconnectError(codes.INAPPROPRIATE_PROTOCOL) from None
        except ValueError as exc:  # a cursor the store did not make
            self._flows.pop(key, None)
            raise ClientError(107, str(exc)) from None
        except ConnectionError as exc:  # the engine is out of reach (a page's read)
            self._flows.pop(key, None)
            self.subs._engine_unavailable(channel, exc)
            raise codes.ERROR_INTERNAL from exc
        except BaseException:
            self._flows.pop(key, None)
            raise

    def _sweep(self, now: float) -> None:
        stale = [k for k, f in self._flows.items() if now - f.started > FLOW_TIMEOUT]
        for k in stale:
            del self._flows[k]

    async def _state_page(
        self,
        session: ClientSession,
        req: SubscribeRequest,
        opts: ChannelOptions,
        flow: _Flow,
        tags_filter: Any,
        command_id: int,
    ) -> None:
        mo = opts.map
        limit = mo.page_size(req.limit)
        revision = StreamPosition(flow.offset, flow.epoch) if req.cursor else None
        page = await self.node.maps.store.read_state(
            req.channel, mo, cursor=req.cursor, limit=limit, revision=revision
        )
        entries = page.entries
        if req.cursor:
            # Changed after the first page: the stream phase brings them.
            entries = [e for e in entries if e.offset <= flow.offset]
        else:
            flow.epoch, flow.offset = page.position.epoch, page.position.offset
        if tags_filter is not None:
            entries = [e for e in entries if tags_filter(e.tags)]
        if not page.cursor and (not mo.has_stream or flow.offset + limit >= page.position.offset):
            # Close to the top (or no stream): straight to live, the rest of the stream
            # in the reply.
            since = StreamPosition(flow.offset, flow.epoch)
            await self._live(
                session, req, opts, flow, since, entries, False, tags_filter, command_id
            )
            return
        result = SubscribeResult(
            type=TYPE_MAP,
            phase=PHASE_STATE,
            cursor=page.cursor,
            epoch=flow.epoch,
            offset=flow.offset,
            state=_full(session, opts, req, entries),
        )
        session.send_reply(Reply(id=command_id, subscribe=result))

    async def _stream_page(
        self,
        session: ClientSession,
        req: SubscribeRequest,
        opts: ChannelOptions,
        flow: _Flow,
        tags_filter: Any,
        command_id: int,
    ) -> None:
        mo = opts.map
        store = self.node.maps.store
        if not mo.has_stream:
            raise ClientError(107, "an ephemeral map has no stream to page through")
        if req.epoch and flow.epoch and req.epoch != flow.epoch:
            raise UnrecoverablePositionError(req.epoch)
        since = StreamPosition(req.offset, req.epoch)
        limit = mo.page_size(req.limit)
        if flow.stream_top is None:
            top = await store.read_stream(req.channel, mo, since=since, limit=0)
            flow.stream_top = top.position.offset
        if req.offset + limit >= flow.stream_top:
            await self._live(session, req, opts, flow, since, [], True, tags_filter, command_id)
            return
        res = await store.read_stream(req.channel, mo, since=since, limit=limit)
        pubs = res.publications
        _check_continuous(pubs, req.offset, res.position)
        offset = pubs[-1].offset if pubs else req.offset
        if tags_filter is not None:
            pubs = [p for p in pubs if tags_filter(p.tags)]
        result = SubscribeResult(
            type=TYPE_MAP, phase=PHASE_STREAM, epoch=res.position.epoch, offset=offset
        )
        result.publications = _full(session, opts, req, pubs)
        session.send_reply(Reply(id=command_id, subscribe=result))

    async def _live(
        self,
        session: ClientSession,
        req: SubscribeRequest,
        opts: ChannelOptions,
        flow: _Flow,
        since: StreamPosition,
        state_entries: list[Publication],
        recovery: bool,
        tags_filter: Any,
        command_id: int,
    ) -> None:
        node = self.node
        channel = req.channel
        mo = opts.map
        self._flows.pop((session.client_id, channel), None)
        if channel in session.subscriptions:
            raise codes.ERROR_ALREADY_SUBSCRIBED
        chan_info, data, _override, expire_at = flow.grant or (None, None, None, 0)
        compact = opts.allow_channel_compaction and bool(req.flag & 1) and not _long_ids(session)
        delta = _delta(opts, req)
        index, ncodecs = session.codec_index, len(node.codecs)
        form = FORM_FULL if delta and not session.codec.binary else FORM_PLAIN
        sub = Subscriber(session.writer, slot(index, ncodecs, form, compact), session, channel)
        if delta:
            # The base of a change's delta is the key's value before it, which the
            # client holds from the state and the changes since.
            sub.delta_index = slot(index, ncodecs, FORM_DELTA, compact)
        sub.tags_filter = tags_filter
        # Without a stream there are no offsets to check (nor to recover from).
        sub.positioned = mo.has_stream
        sub.buffer = []
        state = SubscriptionState(
            channel=channel,
            options=opts,
            subscriber=sub,
            chan_info=chan_info,
            presence=opts.presence,
            expire_at=expire_at,
        )
        session.subscriptions[channel] = state
        node.hub.add_subscriber(sub)
        try:
            await self.subs._broker_subscribe(channel)
            # Everything after ``since``; more than a page means the client is too far behind.
            res = await node.maps.store.read_stream(
                channel, mo, since=since, limit=mo.live_limit + 1 if mo.has_stream else 0
            )
            top = res.position
            pubs = res.publications
            if since.epoch and since.epoch != top.epoch or len(pubs) > mo.live_limit:
                raise UnrecoverablePositionError(since.epoch)
            if mo.has_stream:
                _check_continuous(pubs, since.offset, top)
            if tags_filter is not None:
                pubs = [p for p in pubs if tags_filter(p.tags)]
            result = SubscribeResult(
                type=TYPE_MAP,
                phase=PHASE_LIVE,
                epoch=top.epoch,
                offset=top.offset,
                recoverable=mo.has_stream,
                state=_full(session, opts, req, state_entries),
                delta=delta,
            )
            result.publications = _full(session, opts, req, pubs)
            if recovery and req.recover:
                result.was_recovering = result.recovered = True
            if compact:
                result.id = node.hub.channel_id(channel)
            if data:
                result.data = data
            if expire_at:
                result.expires = True
                result.ttl = max(1, int(expire_at - node.wall_clock()))
            sub.epoch = top.epoch
            sub.offset = top.offset
            if opts.presence:
                info = session.channel_info(channel)
                await node.presence_manager.add(channel, session.client_id, info)
        except BaseException as exc:
            if session.subscriptions.get(channel) is state:
                del session.subscriptions[channel]
                node.hub.remove_subscriber(channel, session.client_id)
                node.spawn(self.subs._broker_unsubscribe(channel))
            if isinstance(
                exc,
                ClientError
                | DisconnectError
                | UnrecoverablePositionError
                | InappropriateProtocol
                | asyncio.CancelledError,
            ):
                raise
            if isinstance(exc, ConnectionError):
                # The engine is out of reach: one line a second for all subscribes.
                self.subs._engine_unavailable(channel, exc)
            else:
                logger.exception("map subscribe to %s failed", channel)
            raise codes.ERROR_INTERNAL from exc
        if session.subscriptions.get(channel) is not state or session.state == CLOSED:
            return  # unsubscribed or disconnected meanwhile
        state.flush_from = top.offset
        state.epoch = top.epoch
        if expire_at:
            session.schedule_expiry_check()
        if mo.key_ttl:
            node.maps.start_sweep()
        session.send_reply(Reply(id=command_id, subscribe=result))
        flush_buffer(session, state, self.subs.lost_state)
        if has_map_presence(opts):
            node.spawn(node.maps.presence.join(session, channel, opts))

    # -- client writes ---------------------------------------------------------

    async def publish(
        self, session: ClientSession, req: PublishRequest, opts: ChannelOptions, command_id: int
    ) -> None:
        """A client's map ``publish`` (``type`` 1): set or remove a key."""
        channel = req.channel
        if req.type not in (0, TYPE_MAP):
            raise codes.ERROR_NOT_AVAILABLE
        if (req.type == TYPE_MAP) != (opts.subscription_type in TYPE_OF):
            _refused(session, "publish", channel, f"publish type {req.type}")
            raise codes.ERROR_PERMISSION_DENIED
        key = req.key
        if mo_key := opts.map.client_key:
            # The server names the key: the client's own id.
            key = session.client_id if mo_key == "client_id" else session.user
            if not key:
                raise codes.ERROR_PERMISSION_DENIED  # an anonymous user has no id
        if not key:
            raise ClientError(107, "a map publish needs a key")
        if not req.removed and not req.data:
            raise codes.ERROR_BAD_REQUEST
        mo = opts.map
        if req.removed:
            op, rules = (
                "remove",
                (
                    mo.allow_remove_for_subscriber,
                    mo.allow_remove_for_client,
                    mo.allow_remove_for_anonymous,
                ),
            )
        else:
            op, rules = (
                "publish",
                (
                    mo.allow_publish_for_subscriber,
                    mo.allow_publish_for_client,
                    mo.allow_publish_for_anonymous,
                ),
            )
        for_subscriber, for_client, for_anonymous = rules
        state = session.subscriptions.get(channel)
        subscribed = state is not None and not state.pending
        anonymous = session.user == ""
        if not ((for_subscriber and subscribed) or for_client) or (anonymous and not for_anonymous):
            _refused(session, f"map_{op}", channel, f"not allowed by map.allow_{op}_*")
            raise codes.ERROR_PERMISSION_DENIED
        maps = self.node.maps
        if req.removed:
            await maps.remove(channel, key)
        else:
            await maps.publish(channel, key, req.data, info=session.channel_info(channel))
        session.send_reply(Reply(id=command_id, publish=PublishResult()))


def _delta(opts: ChannelOptions, req: SubscribeRequest) -> bool:
    """Fossil deltas of changes, per key: asked for, allowed, and a map with offsets."""
    return req.delta == FOSSIL and FOSSIL in opts.allowed_delta_types and opts.map.has_stream


def _full(
    session: ClientSession, opts: ChannelOptions, req: SubscribeRequest, pubs: list[Publication]
) -> list[Publication]:
    """State entries and changes as a delta subscriber gets them before going live: in
    full, on JSON with the data as a string (the base the client keeps per key)."""
    if not pubs or session.codec.binary or not _delta(opts, req):
        return pubs
    return [DeltaForms(pub, None).full(True) for pub in pubs]


def _check_continuous(pubs: list[Publication], after: int, top: StreamPosition) -> None:
    """The changes after ``after`` must all still be in the stream (none trimmed away)."""
    if pubs:
        if pubs[0].offset != after + 1:
            raise UnrecoverablePositionError("changes were trimmed from the stream")
    elif top.offset != after:
        raise UnrecoverablePositionError("changes were trimmed from the stream")


def _refused(session: ClientSession, op: str, channel: str, why: str) -> None:
    if logger.isEnabledFor(logging.INFO):
        extra = {**session.log_fields, "op": op, "channel": channel, "reason": why}
        logger.info("%s to %s refused: %s", op, channel, why, extra=extra)
