"""The hub: this node's index of sessions, users and channel subscribers.

The hub never awaits. A publication arriving from the broker is encoded once
per codec that has subscribers in the channel (never per subscriber), then
:func:`rtcore.fanout.broadcast` queues the same ``bytes`` object on every
subscriber's writer. ``add_subscriber``/``remove_subscriber`` report the
first/last subscriber of a channel so that the node subscribes the broker to
a channel only while someone here listens.

Every operation on one session or subscriber costs O(1), whatever the number
of subscribers in the channel: a join or leave is delivered through a second
index holding only the subscribers that asked for join/leave pushes, so it
costs O(those subscribers), and nothing when nobody asked.

Payload slots. ``Subscriber.codec`` (and ``Subscriber.delta_index``) index
the list of encodings ``broadcast`` gets: a slot is a codec, a form of the
publication (as published; in full for a delta subscriber, whose JSON data
travels as a string; as a fossil delta) and a way to name the channel (its
name, or the numeric id of channel compaction): see :func:`slot`. The hub
counts the subscribers of each slot and encodes a publication once for each
slot that has any, so a publication costs at most one fossil delta and one
encoding per slot in use, whatever the number of subscribers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from rtcore.fanout import ACTION_INAPPROPRIATE_PROTOCOL, Subscriber, broadcast
from rtcore.protocol.delta import DeltaForms
from rtcore.protocol.errors import InappropriateProtocol
from rtcore.protocol.messages import Join, Leave, Push
from rtcore.protocol.types import ClientInfo, Publication


if TYPE_CHECKING:
    from rtcore.protocol.codec import Codec


__all__ = ["FORM_DELTA", "FORM_FULL", "FORM_PLAIN", "FORMS", "Hub", "slot"]

#: Forms of a publication: as published; in full for a delta subscriber (on
#: JSON its data as a string); as a fossil delta (rtcore.protocol.delta).
FORM_PLAIN = 0
FORM_FULL = 1
FORM_DELTA = 2
FORMS = 3


def slot(codec: int, ncodecs: int, form: int = FORM_PLAIN, compact: bool = False) -> int:
    """The payload slot of a codec index, a form and channel compaction."""
    return codec + ncodecs * (form + FORMS * compact)


class Hub:
    """Sessions by client id and user, subscribers by channel.

    Args:
        codecs: the codecs in codec-index order (``Subscriber.codec`` indexes it).
        on_action: called for subscribers that ``broadcast`` flagged
            (insufficient state, inappropriate protocol) as
            ``on_action(subscriber, action)``.
    """

    __slots__ = (
        "codecs",
        "on_action",
        "_sessions",
        "_users",
        "_channels",
        "_codec_counts",
        "_join_leave",
        "_channel_ids",
        "_last_channel_id",
        "encodes",
    )

    def __init__(
        self,
        codecs: Sequence[Codec],
        on_action: Callable[[Subscriber, int], None],
    ) -> None:
        self.codecs = tuple(codecs)
        self.on_action = on_action
        self._sessions: dict[str, Any] = {}
        self._users: dict[str, dict[str, Any]] = {}
        # channel -> {client id -> Subscriber}, insertion ordered.
        self._channels: dict[str, dict[str, Subscriber]] = {}
        # channel -> subscribers per payload slot (decides which encodings to make).
        self._codec_counts: dict[str, list[int]] = {}
        # channel -> {client id -> Subscriber} of the subscribers with
        # ``join_leave`` set; a channel without any has no entry.
        self._join_leave: dict[str, dict[str, Subscriber]] = {}
        # Channel compaction: channel -> its numeric id here, while it has
        # subscribers (ids are never reused, so a stale one names nothing).
        self._channel_ids: dict[str, int] = {}
        self._last_channel_id = 0
        # Publications encoded, per codec index (observability: encode-once check).
        self.encodes = [0] * len(self.codecs)

    # -- sessions ------------------------------------------------------------

    def add_session(self, session: Any) -> None:
        self._sessions[session.client_id] = session
        self._users.setdefault(session.user, {})[session.client_id] = session

    def remove_session(self, session: Any) -> None:
        self._sessions.pop(session.client_id, None)
        by_user = self._users.get(session.user)
        if by_user is not None:
            by_user.pop(session.client_id, None)
            if not by_user:
                del self._users[session.user]

    def session(self, client_id: str) -> Any | None:
        return self._sessions.get(client_id)

    def user_sessions(self, user: str) -> list[Any]:
        return list(self._users.get(user, {}).values())

    def sessions(self) -> Iterator[Any]:
        return iter(list(self._sessions.values()))

    @property
    def num_sessions(self) -> int:
        return len(self._sessions)

    @property
    def num_users(self) -> int:
        return len(self._users)

    def user_connection_count(self, user: str) -> int:
        return len(self._users.get(user, ()))

    # -- subscribers ---------------------------------------------------------

    def add_subscriber(self, sub: Subscriber) -> bool:
        """Index ``sub``; True when it is the channel's first subscriber here.

        ``sub.join_leave`` is read here: set it before adding the subscriber.
        """
        channel = sub.channel
        subs = self._channels.get(channel)
        first = subs is None
        if subs is None:
            subs = self._channels[channel] = {}
            self._codec_counts[channel] = [0] * (len(self.codecs) * FORMS * 2)
        client_id = sub.session.client_id
        old = subs.get(client_id)
        counts = self._codec_counts[channel]
        if old is not None:
            counts[old.codec] -= 1
            if old.delta_index >= 0:
                counts[old.delta_index] -= 1
            self._drop_listener(channel, client_id)
        subs[client_id] = sub
        counts[sub.codec] += 1
        if sub.delta_index >= 0:
            counts[sub.delta_index] += 1
        if sub.join_leave:
            listeners = self._join_leave.get(channel)
            if listeners is None:
                listeners = self._join_leave[channel] = {}
            listeners[client_id] = sub
        return first

    def remove_subscriber(self, channel: str, client_id: str) -> bool:
        """Drop a subscriber; True when the channel has no subscriber here any more."""
        subs = self._channels.get(channel)
        if subs is None:
            return False
        sub = subs.pop(client_id, None)
        if sub is None:
            return False
        self._drop_listener(channel, client_id)
        if not subs:
            del self._channels[channel]
            del self._codec_counts[channel]
            self._channel_ids.pop(channel, None)
            return True
        counts = self._codec_counts[channel]
        counts[sub.codec] -= 1
        if sub.delta_index >= 0:
            counts[sub.delta_index] -= 1
        return False

    def channel_id(self, channel: str) -> int:
        """The numeric id of ``channel`` for channel compaction (assigned on first use).

        Unique on this node among channels with subscribers; a session's
        subscriptions all live here, so its pushes are never ambiguous.
        """
        cid = self._channel_ids.get(channel)
        if cid is None:
            self._last_channel_id += 1
            cid = self._channel_ids[channel] = self._last_channel_id
        return cid

    def _drop_listener(self, channel: str, client_id: str) -> None:
        listeners = self._join_leave.get(channel)
        if listeners is not None:
            listeners.pop(client_id, None)
            if not listeners:
                del self._join_leave[channel]

    def subscriber(self, channel: str, client_id: str) -> Subscriber | None:
        subs = self._channels.get(channel)
        return subs.get(client_id) if subs is not None else None

    def subscribers(self, channel: str) -> list[Subscriber]:
        return list(self._channels.get(channel, {}).values())

    def channels(self) -> list[str]:
        return list(self._channels)

    def num_subscribers(self, channel: str) -> int:
        return len(self._channels.get(channel, ()))

    @property
    def num_channels(self) -> int:
        return len(self._channels)

    @property
    def num_subscriptions(self) -> int:
        return sum(len(s) for s in self._channels.values())

    # -- delivery ------------------------------------------------------------

    def encode_publication(
        self, channel: str, index: int, pub: Publication, forms: DeltaForms | None = None
    ) -> bytes:
        """``pub`` encoded for payload slot ``index`` (its codec, form and channel naming).

        ``forms`` holds the publication's delta forms when the caller makes
        several encodings of it. Raises InappropriateProtocol when the
        payload cannot travel on that slot's codec.
        """
        ncodecs = len(self.codecs)
        codec = self.codecs[index % ncodecs]
        form = index // ncodecs % FORMS
        if form != FORM_PLAIN:
            if forms is None:
                forms = DeltaForms(pub, None)
            binary = codec.binary
            pub = forms.full(not binary) if form == FORM_FULL else forms.delta(not binary)
        if index >= ncodecs * FORMS:
            return codec.encode_push(Push(id=self.channel_id(channel), pub=pub))
        return codec.encode_publication(channel, pub)

    def broadcast_publication(
        self, channel: str, pub: Publication, epoch: str, prev_pub: Publication | None = None
    ) -> int:
        """Deliver a publication to this node's subscribers; returns their number.

        ``prev_pub`` is the channel's previous publication, the base of the
        fossil delta that delta subscribers get (PROTOCOL.md §4.5).
        """
        subs = self._channels.get(channel)
        if not subs:
            return 0
        counts = self._codec_counts[channel]
        ncodecs = len(self.codecs)
        forms: DeltaForms | None = None
        payloads: list[bytes | None] = [None] * len(counts)
        for index, count in enumerate(counts):
            if not count:
                continue
            if forms is None and index >= ncodecs:
                forms = DeltaForms(pub, prev_pub.data if prev_pub is not None else None)
            try:
                payloads[index] = self.encode_publication(channel, index, pub, forms)
            except InappropriateProtocol:
                # Not representable for this codec (e.g. binary data for a
                # JSON client): broadcast flags these subscribers (3506).
                payloads[index] = None
            self.encodes[index % ncodecs] += 1
        actions = broadcast(subs.values(), payloads, pub.offset, epoch, pub)
        if actions is not None:
            on_action = self.on_action
            for sub, action in actions:
                on_action(sub, action)
        return len(subs)

    def broadcast_join(self, channel: str, info: ClientInfo) -> None:
        self._broadcast_presence(
            channel,
            lambda c, cid: (
                c.encode_push(Push(id=cid, join=Join(info)))
                if cid
                else c.encode_join(channel, info)
            ),
        )

    def broadcast_leave(self, channel: str, info: ClientInfo) -> None:
        self._broadcast_presence(
            channel,
            lambda c, cid: (
                c.encode_push(Push(id=cid, leave=Leave(info)))
                if cid
                else c.encode_leave(channel, info)
            ),
        )

    def num_join_leave_listeners(self, channel: str) -> int:
        """Subscribers of ``channel`` here that asked for join/leave pushes."""
        return len(self._join_leave.get(channel, ()))

    def _broadcast_presence(self, channel: str, encode: Callable[[Codec, int], bytes]) -> None:
        listeners = self._join_leave.get(channel)
        if not listeners:
            return
        # Encoded lazily, once per codec and channel naming that a listener
        # uses: the channel's other subscribers do not count.
        ncodecs = len(self.codecs)
        payloads: list[bytes | None] = [None] * (ncodecs * 2)
        encoded = [False] * (ncodecs * 2)
        actions: list[Subscriber] | None = None
        for sub in listeners.values():
            if sub.buffer is not None:
                continue  # still subscribing: joins/leaves before its reply are not its own
            codec = sub.codec % ncodecs
            compact = sub.codec >= ncodecs * FORMS
            index = codec + ncodecs * compact
            if not encoded[index]:
                encoded[index] = True
                self.encodes[codec] += 1
                try:
                    cid = self.channel_id(channel) if compact else 0
                    payloads[index] = encode(self.codecs[codec], cid)
                except InappropriateProtocol:
                    pass  # not representable for this codec: 3506 for its listeners
            payload = payloads[index]
            if payload is None:
                if actions is None:
                    actions = []
                actions.append(sub)
            else:
                sub.writer.enqueue(payload)
        if actions is not None:
            # After the loop: the action may disconnect and change the index.
            for sub in actions:
                self.on_action(sub, ACTION_INAPPROPRIATE_PROTOCOL)
