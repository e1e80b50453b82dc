"""The Centrifuge client protocol v2 message model, independent of any encoding.

Every message of ``client.proto`` is a slotted dataclass here, with the proto
field names (snake_case) as attribute names and proto3 zero values as defaults:
``""``, ``0``, ``False``, ``b""``, an empty dict/list, or ``None`` for a
sub-message. A zero value means "not set": both codecs omit it on the wire
(except the few fields the JSON protocol always writes, see ``docs/codecs.md``).

Engine types are reused where they describe the same thing:
``rtcore.protocol.types.Publication``, ``ClientInfo`` and ``StreamPosition`` are the
protocol's ``Publication``, ``ClientInfo`` and ``StreamPosition``, and
``PresenceStatsResult`` is ``rtcore.protocol.types.PresenceStats``.

``bytes`` fields hold the payload exactly as it travels: on JSON connections
it must be a valid JSON value (the codec embeds it raw, it is not base64);
on Protobuf connections it is opaque.

Envelopes:

* ``Command`` (client to server): an ``id`` and, normally, exactly one request
  field. ``Command.method`` names the request the server acts on and
  ``Command.methods`` lists all of them, so a session can reject commands
  with none or with several.
* ``Reply`` (server to client): the ``id`` of the command and either one
  result field or ``error``; with ``id == 0`` it carries a ``push``, and with
  nothing set it is a ping.
* ``Push``: a server-initiated message (publication, join, leave, ...).
"""

from __future__ import annotations

import builtins
import operator
from dataclasses import dataclass, field
from itertools import compress
from typing import Final, TypeAlias

from rtcore.protocol.types import ClientInfo, PresenceStats, Publication, StreamPosition


__all__ = [
    # Engine types reused by the protocol.
    "ClientInfo",
    "Publication",
    "StreamPosition",
    # Envelopes.
    "Command",
    "Reply",
    "Push",
    "Error",
    "REQUEST_FIELDS",
    "RESULT_FIELDS",
    "PUSH_FIELDS",
    "Request",
    "Result",
    "PushBody",
    # Requests.
    "ConnectRequest",
    "SubscribeRequest",
    "UnsubscribeRequest",
    "PublishRequest",
    "PresenceRequest",
    "PresenceStatsRequest",
    "HistoryRequest",
    "PingRequest",
    "SendRequest",
    "RPCRequest",
    "RefreshRequest",
    "SubRefreshRequest",
    # Results.
    "ConnectResult",
    "SubscribeResult",
    "UnsubscribeResult",
    "PublishResult",
    "PresenceResult",
    "PresenceStatsResult",
    "HistoryResult",
    "PingResult",
    "RPCResult",
    "RefreshResult",
    "SubRefreshResult",
    # Push bodies.
    "Join",
    "Leave",
    "Unsubscribe",
    "Message",
    "Subscribe",
    "Connect",
    "Disconnect",
    "Refresh",
    # Auxiliary messages.
    "EmulationRequest",
    "FilterNode",
    "Dictionary",
    "KeyedItem",
    "TrackBatch",
]


# ---------------------------------------------------------------------------
# Auxiliary messages


@dataclass(slots=True)
class Error:
    """An error reply to a command (``Reply.error``); codes in PROTOCOL.md §3.1."""

    code: int = 0
    message: str = ""
    # True when the client should retry the command later.
    temporary: bool = False


@dataclass(slots=True)
class FilterNode:
    """A server-side tags filter (``SubscribeRequest.tf``): a leaf or a boolean node."""

    # "" for a leaf comparison, or "and", "or", "not".
    op: str = ""
    key: str = ""
    # eq, neq, in, nin, ex, nex, sw, ew, ct, lt, lte, gt, gte.
    cmp: str = ""
    val: str = ""
    vals: list[str] = field(default_factory=list)
    nodes: list[FilterNode] = field(default_factory=list)


@dataclass(slots=True)
class Dictionary:
    """A frame compression dictionary (``ConnectResult.dict``); rtcore leaves it unset."""

    id: str = ""
    data: bytes = b""
    data_b64: str = ""


@dataclass(slots=True)
class KeyedItem:
    """A key and version tracked by a shared-poll subscription."""

    key: str = ""
    version: int = 0


@dataclass(slots=True)
class TrackBatch:
    """A signed batch of keys to track (``SubRefreshRequest.track``)."""

    signature: str = ""
    items: list[KeyedItem] = field(default_factory=list)


@dataclass(slots=True)
class EmulationRequest:
    """The body of ``POST /emulation`` (HTTP-streaming / SSE up-stream).

    As returned by ``Codec.decode_emulation_request``, ``data`` is the command
    frame itself, ready for ``decode_commands`` of the same codec (on JSON the
    wire value is a JSON string holding that frame; the codec unwraps it).
    """

    node: str = ""
    session: str = ""
    data: bytes = b""


# ---------------------------------------------------------------------------
# Requests (the fields of a Command)


@dataclass(slots=True)
class SubscribeRequest:
    """Subscribe to a channel; also the value type of ``ConnectRequest.subs``."""

    channel: str = ""
    # Subscription token (JWT).
    token: str = ""
    # The client asks to recover missed publications from ``epoch``/``offset``.
    recover: bool = False
    epoch: str = ""
    offset: int = 0
    # Custom data for the subscribe hook (raw JSON on JSON connections).
    data: bytes = b""
    positioned: bool = False
    recoverable: bool = False
    join_leave: bool = False
    # Requested delta compression; only "fossil" exists.
    delta: str = ""
    tf: FilterNode | None = None
    # Bit 0: channel compaction accepted; bit 1: reject unrecovered subscribes.
    flag: int = 0
    # 0 = stream; 1..4 = map / presence map / shared poll types.
    type: int = 0
    phase: int = 0
    cursor: str = ""
    limit: int = 0
    asc: bool = False


@dataclass(slots=True)
class ConnectRequest:
    """The first command of a connection (also the whole request on uni transports)."""

    # Connection token (JWT); may be empty with a connect hook or anonymous access.
    token: str = ""
    # Custom data for the connect hook (raw JSON on JSON connections).
    data: bytes = b""
    # Recovery hints for server-side subscriptions, by channel.
    subs: builtins.dict[str, SubscribeRequest] = field(default_factory=builtins.dict)
    # SDK / application name and version (observability only).
    name: str = ""
    version: str = ""
    # Emulated HTTP headers.
    headers: builtins.dict[str, str] = field(default_factory=builtins.dict)
    # Connection feature bits; bit 0 = client can decode compressed frames.
    flag: int = 0
    # Id of a compression dictionary the client already holds.
    dict: str = ""
    # Untrusted hint of the application context.
    profile: str = ""


@dataclass(slots=True)
class UnsubscribeRequest:
    channel: str = ""


@dataclass(slots=True)
class PublishRequest:
    channel: str = ""
    # Payload (raw JSON on JSON connections).
    data: bytes = b""
    # 0 = regular publication, 1 = map publication.
    type: int = 0
    key: str = ""
    removed: bool = False


@dataclass(slots=True)
class PresenceRequest:
    channel: str = ""


@dataclass(slots=True)
class PresenceStatsRequest:
    channel: str = ""


@dataclass(slots=True)
class HistoryRequest:
    """Read a channel's history; ``limit`` 0 = only the top position, < 0 = no limit."""

    channel: str = ""
    limit: int = 0
    # Exclusive lower bound (or upper bound with ``reverse``).
    since: StreamPosition | None = None
    reverse: bool = False


@dataclass(slots=True)
class PingRequest:
    """Unused in protocol v2 (the pong is an empty Command instead)."""


@dataclass(slots=True)
class SendRequest:
    """An asynchronous message to the server; it gets no reply."""

    data: bytes = b""


@dataclass(slots=True)
class RPCRequest:
    data: bytes = b""
    method: str = ""


@dataclass(slots=True)
class RefreshRequest:
    """A fresh connection token (client-side refresh)."""

    token: str = ""


@dataclass(slots=True)
class SubRefreshRequest:
    """A fresh subscription token (or shared-poll track/untrack with ``type`` 1/2)."""

    channel: str = ""
    token: str = ""
    type: int = 0
    track: list[TrackBatch] = field(default_factory=list)
    untrack: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Results (the fields of a Reply)


@dataclass(slots=True)
class SubscribeResult:
    """Reply to ``subscribe``; also the value type of ``ConnectResult.subs``."""

    # The subscription expires: the client must send ``sub_refresh`` within ``ttl``.
    expires: bool = False
    ttl: int = 0
    recoverable: bool = False
    epoch: str = ""
    # Recovered publications, ascending offsets.
    publications: list[Publication] = field(default_factory=list)
    recovered: bool = False
    offset: int = 0
    positioned: bool = False
    data: bytes = b""
    was_recovering: bool = False
    delta: bool = False
    # Numeric channel id for channel compaction; 0 disables it.
    id: int = 0
    type: int = 0
    phase: int = 0
    cursor: str = ""
    state: list[Publication] = field(default_factory=list)
    publish_debounce: int = 0


@dataclass(slots=True)
class ConnectResult:
    client: str = ""
    version: str = ""
    # Client-side refresh: the client must send ``refresh`` within ``ttl`` seconds.
    expires: bool = False
    ttl: int = 0
    data: bytes = b""
    # Server-side subscriptions made at connect, by channel.
    subs: builtins.dict[str, SubscribeResult] = field(default_factory=builtins.dict)
    # Server ping interval in seconds (0 = no pings); ``pong``: answer them.
    ping: int = 0
    pong: bool = False
    # Set on emulated and unidirectional transports.
    session: str = ""
    node: str = ""
    # Server time, unix milliseconds (0 = not sent).
    time: int = 0
    flag: int = 0
    dict: Dictionary | None = None


@dataclass(slots=True)
class UnsubscribeResult:
    """Empty: written as ``{}`` / a present empty message."""


@dataclass(slots=True)
class PublishResult:
    """Empty: written as ``{}`` / a present empty message."""


@dataclass(slots=True)
class PresenceResult:
    # Client id -> who it is. Always written on JSON, ``{}`` when empty.
    presence: dict[str, ClientInfo] = field(default_factory=dict)


# The engine's presence counts are exactly the protocol's result.
PresenceStatsResult: TypeAlias = PresenceStats


@dataclass(slots=True)
class HistoryResult:
    # Always written on JSON (``[]``, ``""`` and ``0`` included).
    publications: list[Publication] = field(default_factory=list)
    epoch: str = ""
    offset: int = 0


@dataclass(slots=True)
class PingResult:
    """Unused in protocol v2."""


@dataclass(slots=True)
class RPCResult:
    data: bytes = b""


@dataclass(slots=True)
class RefreshResult:
    client: str = ""
    version: str = ""
    expires: bool = False
    ttl: int = 0


@dataclass(slots=True)
class SubRefreshResult:
    expires: bool = False
    ttl: int = 0
    items: list[Publication] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Push bodies


@dataclass(slots=True)
class Join:
    info: ClientInfo


@dataclass(slots=True)
class Leave:
    info: ClientInfo


@dataclass(slots=True)
class Unsubscribe:
    """The server unsubscribed the client; codes in PROTOCOL.md §3.2."""

    code: int = 0
    reason: str = ""


@dataclass(slots=True)
class Message:
    """An asynchronous message to the connection (server-side ``send``)."""

    data: bytes = b""


@dataclass(slots=True)
class Subscribe:
    """A server-side subscription was added."""

    recoverable: bool = False
    epoch: str = ""
    offset: int = 0
    positioned: bool = False
    data: bytes = b""


@dataclass(slots=True)
class Connect:
    """The connect result of a unidirectional transport (first message)."""

    client: str = ""
    version: str = ""
    data: bytes = b""
    subs: dict[str, SubscribeResult] = field(default_factory=dict)
    expires: bool = False
    ttl: int = 0
    ping: int = 0
    pong: bool = False
    session: str = ""
    node: str = ""
    time: int = 0


@dataclass(slots=True)
class Disconnect:
    """Disconnect advice on transports without close codes; codes in PROTOCOL.md §3.3."""

    code: int = 0
    reason: str = ""
    # Legacy; leave False (clients decide from the code).
    reconnect: bool = False


@dataclass(slots=True)
class Refresh:
    """The connection was refreshed server-side."""

    expires: bool = False
    ttl: int = 0


# ---------------------------------------------------------------------------
# Envelopes

Request: TypeAlias = (
    ConnectRequest
    | SubscribeRequest
    | UnsubscribeRequest
    | PublishRequest
    | PresenceRequest
    | PresenceStatsRequest
    | HistoryRequest
    | PingRequest
    | SendRequest
    | RPCRequest
    | RefreshRequest
    | SubRefreshRequest
)

Result: TypeAlias = (
    ConnectResult
    | SubscribeResult
    | UnsubscribeResult
    | PublishResult
    | PresenceResult
    | PresenceStatsResult
    | HistoryResult
    | PingResult
    | RPCResult
    | RefreshResult
    | SubRefreshResult
)

PushBody: TypeAlias = (
    Publication | Join | Leave | Unsubscribe | Message | Subscribe | Connect | Disconnect | Refresh
)

# Request fields of Command in field-number order: the order in which the
# server looks for the request to execute.
REQUEST_FIELDS: Final[tuple[str, ...]] = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
)
# The request fields of a Command in one C call, and the Nones they are compared
# with: ``methods`` runs once per command.
_request_values: Final = operator.attrgetter(*REQUEST_FIELDS)
_NO_REQUESTS: Final = (None,) * len(REQUEST_FIELDS)

# Result fields of Reply in field-number order.
RESULT_FIELDS: Final[tuple[str, ...]] = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "rpc",
    "refresh",
    "sub_refresh",
)

# Body fields of Push in field-number order.
PUSH_FIELDS: Final[tuple[str, ...]] = (
    "pub",
    "join",
    "leave",
    "unsubscribe",
    "message",
    "subscribe",
    "connect",
    "disconnect",
    "refresh",
)


@dataclass(slots=True)
class Command:
    """A client command: ``id`` plus (normally exactly one) request field.

    The protocol does not make the request fields a ``oneof``: a decoded
    command may carry none (the pong is the empty command ``{}``) or several.
    ``method``/``request`` pick the first one in field-number order, as the
    server does; ``methods`` lists all of them so the session can reject a
    command with none (and ``id > 0``) or with several.
    """

    # > 0, except for ``send`` and the empty pong command.
    id: int = 0
    connect: ConnectRequest | None = None
    subscribe: SubscribeRequest | None = None
    unsubscribe: UnsubscribeRequest | None = None
    publish: PublishRequest | None = None
    presence: PresenceRequest | None = None
    presence_stats: PresenceStatsRequest | None = None
    history: HistoryRequest | None = None
    ping: PingRequest | None = None
    send: SendRequest | None = None
    rpc: RPCRequest | None = None
    refresh: RefreshRequest | None = None
    sub_refresh: SubRefreshRequest | None = None

    @property
    def method(self) -> str | None:
        """The name of the first request field set (``REQUEST_FIELDS`` order), or None."""
        for name in REQUEST_FIELDS:
            if getattr(self, name) is not None:
                return name
        return None

    @property
    def methods(self) -> tuple[str, ...]:
        """The names of all request fields set, in ``REQUEST_FIELDS`` order.

        ``()`` means no request (the pong when ``id == 0``, else a bad
        command); more than one name means an ambiguous command.
        """
        return tuple(
            compress(REQUEST_FIELDS, map(operator.is_not, _request_values(self), _NO_REQUESTS))
        )

    @property
    def request(self) -> Request | None:
        """The request object named by ``method``, or None."""
        for name in REQUEST_FIELDS:
            value: Request | None = getattr(self, name)
            if value is not None:
                return value
        return None

    @property
    def is_empty(self) -> bool:
        """True for the empty command (no id, no request): the client's pong."""
        return self.id == 0 and self.method is None


@dataclass(slots=True)
class Push:
    """A server-initiated message: a channel (or numeric ``id``) and one body."""

    # Numeric channel id instead of ``channel`` (channel compaction); 0 = unused.
    id: int = 0
    # The channel the push relates to; "" for connection-level pushes.
    channel: str = ""
    pub: Publication | None = None
    join: Join | None = None
    leave: Leave | None = None
    unsubscribe: Unsubscribe | None = None
    message: Message | None = None
    subscribe: Subscribe | None = None
    connect: Connect | None = None
    disconnect: Disconnect | None = None
    refresh: Refresh | None = None


@dataclass(slots=True)
class Reply:
    """A server reply: ``id`` and one result or ``error``; or a ``push``; or a ping (empty)."""

    # The command's id; 0 for pushes and pings.
    id: int = 0
    error: Error | None = None
    push: Push | None = None
    connect: ConnectResult | None = None
    subscribe: SubscribeResult | None = None
    unsubscribe: UnsubscribeResult | None = None
    publish: PublishResult | None = None
    presence: PresenceResult | None = None
    presence_stats: PresenceStatsResult | None = None
    history: HistoryResult | None = None
    ping: PingResult | None = None
    rpc: RPCResult | None = None
    refresh: RefreshResult | None = None
    sub_refresh: SubRefreshResult | None = None
