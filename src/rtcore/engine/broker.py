"""The ``Broker`` seam: cross-node PUB/SUB, coupled with channel history.

Each node has one broker. A publish on any node reaches every node that has
subscribed to the channel. The broker hands what it receives to the node's
:class:`BrokerEventHandler`, and the node's hub fans it out to local clients.
The broker is paired with a history store (``Broker.history`` reads it),
because only the broker can make "append to history" and "deliver" a single
step:

* **Atomic publish per channel.** A publish with history appends the
  publication and sends it as one operation. Every node then receives one
  channel's publications in offset order with no gaps, however many tasks or
  nodes publish at once. Positioned subscribers rely on this (PROTOCOL.md
  §4.4): any gap they see means a message really was lost.
* **At-most-once delivery.** A message that is lost on its way to a node (a
  network blip, a reconnect of the PUB/SUB connection) is not sent again. The
  node finds out from the offsets and from periodic position checks against
  :meth:`Broker.history`.

Lifecycle: create the broker, :meth:`Broker.start` it with the handler,
use it, then :meth:`Broker.close` it. Every method other than ``start`` and
``close`` raises :class:`BrokerNotStartedError` before ``start`` and
:class:`BrokerClosedError` after ``close``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rtcore.engine.history import HistoryOptions, HistoryResult
from rtcore.errors import RtcoreError
from rtcore.protocol.types import ClientInfo, Publication, StreamPosition


__all__ = [
    "DEFAULT_IDEMPOTENT_TTL",
    "Broker",
    "BrokerClosedError",
    "BrokerEventHandler",
    "BrokerNotStartedError",
    "BrokerStateError",
    "Closer",
    "PublishResult",
]


#: How long the result of an idempotent publish is remembered: 5 minutes, as in Centrifugo.
DEFAULT_IDEMPOTENT_TTL: float = 300.0


class BrokerStateError(RtcoreError):
    """The broker cannot serve the call in its current lifecycle state."""


class BrokerNotStartedError(BrokerStateError):
    """A broker method was called before :meth:`Broker.start`."""


class BrokerClosedError(BrokerStateError):
    """A broker method was called after :meth:`Broker.close`."""


@dataclass(slots=True)
class PublishResult:
    """What :meth:`Broker.publish` did.

    A plain value owned by the caller. It is not frozen, because a frozen
    dataclass costs about three times as much to build, and one is built on
    every publish.
    """

    # Position of the publication in the channel's stream; ZERO_POSITION (offset 0,
    # epoch "") when it went to no history. For a suppressed publish, the
    # position the original publish returned.
    position: StreamPosition
    # True when nothing was published because the idempotency key had already
    # been used on this channel within its TTL.
    suppressed: bool = False


class BrokerEventHandler(Protocol):
    """Receives what the broker delivers to this node. The node implements it.

    The broker calls these methods on the event loop thread. They must be
    quick and must not block. They must not raise either; if one does, the
    broker logs the exception and carries on (the publish that caused it
    still succeeds, and later events are still delivered).

    Ordering: events of one channel arrive in the order they were published.
    For publications with history, that is offset order. There is no ordering
    across channels. An event may arrive while the publisher's ``await
    broker.publish(...)`` is still running (the memory broker delivers
    synchronously, from inside ``publish``) or after it returned (Redis). The
    handler must not rely on either.

    Received objects are shared: the same ``Publication`` may be in history
    and in other nodes' local structures. Treat them as read-only.

    Events may come for channels this node holds no subscribers for (in flight
    while unsubscribing); ignore them.
    """

    def on_publication(
        self,
        channel: str,
        pub: Publication,
        position: StreamPosition,
        prev_pub: Publication | None,
    ) -> None:
        """A publication in ``channel``.

        ``position`` is ``(pub.offset, epoch)`` for a publication with
        history, and ``ZERO_POSITION`` without. ``prev_pub`` is the
        publication that was newest in the stream before this one, given only
        when the publisher asked for it (``use_delta=True``) and the stream
        still held one; otherwise ``None``. It is the base for fossil deltas
        (PROTOCOL.md §4.5).
        """
        ...

    def on_join(self, channel: str, info: ClientInfo) -> None:
        """A client joined ``channel``."""
        ...

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        """A client left ``channel``."""
        ...

    def on_control(self, data: bytes) -> None:
        """A node-to-node control message, on every node, the sender included."""
        ...


@runtime_checkable
class Closer(Protocol):
    """A component that holds resources and must be closed on shutdown.

    The node checks its broker, history store and presence manager with
    ``isinstance(x, Closer)`` and awaits ``close()`` on shutdown. ``close``
    must be idempotent.
    """

    async def close(self) -> None:
        """Release resources. Calling it again does nothing."""
        ...


class Broker(Protocol):
    """Cross-node PUB/SUB with per-channel history. See the module docstring.

    Subscriptions belong to the node as a whole, not to clients. The node
    subscribes to a channel when its first local client subscribes, and
    unsubscribes when the last one leaves. They are not reference-counted:
    subscribing twice and unsubscribing once leaves the node unsubscribed.
    """

    async def start(self, handler: BrokerEventHandler) -> None:
        """Register the handler and begin receiving.

        Call once. After it returns, subscriptions and publishes work.

        Raises:
            BrokerStateError: already started (or :class:`BrokerClosedError`
                if closed).
        """
        ...

    async def close(self) -> None:
        """Stop receiving and release resources; idempotent.

        Calls still running may finish. Later calls raise
        :class:`BrokerClosedError`. History data is left as it is.
        """
        ...

    async def subscribe(self, channel: str) -> None:
        """Receive ``channel``'s publications, joins and leaves from now on.

        Once this returns, every event published afterwards, on any node, is
        delivered. A subscriber's history read must therefore come *after*
        this call, or publications between the read and the subscription are
        lost (PROTOCOL.md §4.3 step 1). Subscribing twice does nothing.
        """
        ...

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``. Events published after it returns are not delivered.

        Unsubscribing a channel the node is not subscribed to does nothing.
        """
        ...

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
        """Publish ``pub`` to every node subscribed to ``channel``.

        With ``history``, the publication is appended to the channel's stream
        (``HistoryStore.add`` semantics: ``pub.offset`` is set, trimming, TTLs)
        and delivered in one atomic step per channel. Without ``history``,
        ``pub.offset`` is set to 0 and the result position is
        ``ZERO_POSITION``. If ``pub.time`` is 0 the broker sets it to the
        current wall-clock time in unix milliseconds; a non-zero time is kept.

        Idempotency (Centrifugo's ``idempotency_key``): the first publish with
        a given key on a channel is remembered for ``idempotent_ttl``
        seconds. A later publish on that channel with the same key within that
        time publishes nothing, appends nothing and returns the first
        publish's position with ``suppressed=True``. This holds even for
        concurrent publishes: exactly one of them goes out. Keys are scoped
        per channel. ``None`` or ``""`` means no key.

        ``use_delta`` asks the broker to pass the previous publication of the
        stream to ``on_publication`` as ``prev_pub``. This only works with
        history.

        Raises:
            ValueError: ``idempotent_ttl <= 0`` with a key.
            BrokerNotStartedError / BrokerClosedError: lifecycle.
        """
        ...

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        """Deliver a join event to the nodes subscribed to ``channel``."""
        ...

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        """Deliver a leave event to the nodes subscribed to ``channel``."""
        ...

    async def publish_control(self, data: bytes) -> None:
        """Deliver ``data`` to ``on_control`` on every node, this one included.

        Control messages do not depend on channel subscriptions. ``data`` is
        opaque to the broker.
        """
        ...

    async def history(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int = 0,
        reverse: bool = False,
        meta_ttl: float | None = None,
    ) -> HistoryResult:
        """Read the paired history store; exactly ``HistoryStore.get`` semantics."""
        ...

    async def remove_history(self, channel: str) -> None:
        """Drop the channel's publications, keep epoch and top offset (``HistoryStore.remove``)."""
        ...
