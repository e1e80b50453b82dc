"""Stream positioning and recovery of a new subscription (PROTOCOL.md §4.3).

:func:`position` reads the channel's stream top for a positioned
subscription and, when the client asks to recover from an offset and epoch,
the publications it missed (the whole stream since then, or only the newest
publication in cache mode). Publications that reach the subscriber while the
subscribe is in progress are held; :func:`flush_buffer` delivers them after
the reply, continuing from the position the reply gave. A gap or a new epoch
there means the subscriber lost its state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rtcore.protocol import SubscribeRequest, SubscribeResult, codes
from rtcore.protocol.types import Publication, StreamPosition


if TYPE_CHECKING:
    from rtcore.engine.broker import Broker
    from rtcore.engine.history import HistoryResult
    from rtcore.engine.session import ClientSession, SubscriptionState
    from rtcore.fanout import Subscriber


__all__ = ["position", "flush_buffer"]


async def position(
    broker: Broker,
    state: SubscriptionState,
    req: SubscribeRequest,
    result: SubscribeResult,
    recoverable: bool,
    max_publications: int,
) -> None:
    """Read the stream top and, when asked, recover missed publications into ``result``.

    ``max_publications`` caps a stream-mode recovery (0: no cap). Raises
    ClientError 112 when recovery fails and the client asked to be refused then.
    """
    opts = state.options
    channel = state.channel
    result.positioned = True
    result.recoverable = recoverable
    recover = recoverable and req.recover
    meta_ttl = opts.history_meta_ttl
    pubs: list[Publication] = []
    recovered = False
    if recover and opts.force_recovery_mode == "stream":
        hr: HistoryResult = await broker.history(
            channel,
            since=StreamPosition(req.offset, req.epoch),
            limit=max_publications if max_publications else -1,
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
        hr = await broker.history(channel, limit=1, reverse=True, meta_ttl=meta_ttl)
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
        top = (await broker.history(channel, limit=0, meta_ttl=meta_ttl)).position
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


def flush_buffer(
    session: ClientSession,
    state: SubscriptionState,
    lost_state: Callable[[Subscriber], None],
) -> None:
    """Deliver publications held during subscribe, after the reply (§4.3 step 10).

    A positioned subscriber gets them in order from ``state.flush_from`` on;
    a gap or another epoch calls ``lost_state(subscriber)`` and delivers no more.
    """
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
                lost_state(sub)
                return
            if offset <= last:
                continue  # already in the reply (or older than the position)
            if offset != last + 1:
                lost_state(sub)
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
