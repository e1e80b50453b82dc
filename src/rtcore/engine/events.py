"""Hook events and replies of the embedding API.

Register hooks on a :class:`~rtcore.engine.node.Node` (``node.on_connecting = fn`` or
``@node.hook``). A hook may be a plain function or a coroutine function. To
refuse, raise :class:`~rtcore.protocol.codes.ClientError` (an error reply, e.g. 103
permission denied or your own 400-1999 code) or
:class:`~rtcore.protocol.codes.DisconnectError` (close the connection with a code).

| hook | event | return |
|---|---|---|
| ``on_connecting`` | :class:`ConnectEvent` | :class:`Credentials` to accept (overrides the token's), ``None`` to keep the token's |
| ``on_connect`` | the session | ignored |
| ``on_subscribe`` | :class:`SubscribeEvent` | ``None``/``True`` allow, ``False`` deny, or :class:`SubscribeReply` |
| ``on_publish`` | :class:`PublishEvent` | ``None``/``True`` allow, ``False`` deny (may replace ``event.data``, set ``event.skip_history``) |
| ``on_presence`` / ``on_history`` | :class:`ChannelEvent` | ``None``/``True`` allow, ``False`` deny |
| ``on_rpc`` | :class:`RPCEvent` | ``bytes`` result data |
| ``on_message`` | :class:`MessageEvent` | ignored (``send`` has no reply) |
| ``on_refresh`` | the session | ignored |
| ``on_unsubscribe`` | :class:`ChannelEvent` | ignored |
| ``on_disconnect`` | :class:`DisconnectEvent` | ignored |

When a hook is set it decides; when it is not, the namespace options decide
(``allow_subscribe_for_client`` and friends).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


__all__ = [
    "Credentials",
    "SubscriptionGrant",
    "ConnectEvent",
    "SubscribeEvent",
    "SubscribeReply",
    "PublishEvent",
    "ChannelEvent",
    "RPCEvent",
    "MessageEvent",
    "DisconnectEvent",
    "HOOKS",
    "Hook",
    "NodeHooks",
]


class Hook:
    """A hook as an attribute of the node: reads the registered function or
    None; setting a callable registers it, setting None removes it.

    A descriptor rather than ``__getattr__``/``__setattr__`` on the node: those
    would put every attribute access of the node, on every command, through
    the slow generic path."""

    __slots__ = ("name",)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, node: Any, owner: type | None = None) -> Any:
        if node is None:
            return self
        return node._hooks.get(self.name)

    def __set__(self, node: Any, fn: Any) -> None:
        if fn is None:
            node._hooks.pop(self.name, None)
        elif not callable(fn):
            raise TypeError(f"{self.name} must be callable")
        else:
            node._hooks[self.name] = fn


class NodeHooks:
    """The node's hooks as attributes (``node.on_connect = fn``; the table above)."""

    _hooks: dict[str, Any]

    on_connecting = Hook()
    on_connect = Hook()
    on_subscribe = Hook()
    on_publish = Hook()
    on_presence = Hook()
    on_history = Hook()
    on_rpc = Hook()
    on_message = Hook()
    on_refresh = Hook()
    on_unsubscribe = Hook()
    on_disconnect = Hook()


HOOKS = tuple(name for name, value in vars(NodeHooks).items() if isinstance(value, Hook))


@dataclass(slots=True)
class SubscriptionGrant:
    """Options of a server-side subscription made at connect."""

    # Channel info (ClientInfo.chan_info), raw JSON for JSON clients.
    info: bytes | None = None
    # Sent to the client in SubscribeResult.data.
    data: bytes | None = None
    # Token-style overrides (rtcore.auth.SubscribeOverride) or None.
    override: Any = None
    # Unix seconds when the subscription expires (0: never); past it plus
    # client.expired_sub_close_delay the client is disconnected with 3006.
    expire_at: int = 0


@dataclass(slots=True)
class Credentials:
    """Who a connection is, decided by a connection token or ``on_connecting``."""

    # User id; "" is anonymous.
    user: str
    # Connection info (ClientInfo.conn_info), raw JSON for JSON clients.
    info: bytes | None = None
    # Unix seconds when the connection expires (0: never); the client refreshes.
    expire_at: int = 0
    # Server-only metadata.
    meta: dict[str, Any] | None = None
    # Sent to the client in ConnectResult.data.
    data: bytes | None = None
    # Server-side subscriptions: channel -> grant.
    subscriptions: dict[str, SubscriptionGrant] = field(default_factory=dict)


@dataclass(slots=True)
class ConnectEvent:
    client: Any
    transport: str
    token: str
    data: bytes
    name: str
    version: str
    headers: dict[str, str]
    # What a valid token granted (None without a token).
    credentials: Credentials | None


@dataclass(slots=True)
class SubscribeEvent:
    client: Any
    channel: str
    data: bytes
    # True when the subscription is server-side (token, connect hook, API).
    server_side: bool = False


@dataclass(slots=True)
class SubscribeReply:
    """What ``on_subscribe`` may grant."""

    info: bytes | None = None
    data: bytes | None = None
    expire_at: int = 0
    # Per-subscription overrides of namespace options (rtcore.auth.SubscribeOverride) or None.
    override: Any = None


@dataclass(slots=True)
class PublishEvent:
    client: Any
    channel: str
    data: bytes
    # A hook may set it: the publication is not saved in the channel history.
    skip_history: bool = False


@dataclass(slots=True)
class ChannelEvent:
    client: Any
    channel: str


@dataclass(slots=True)
class RPCEvent:
    client: Any
    method: str
    data: bytes


@dataclass(slots=True)
class MessageEvent:
    client: Any
    data: bytes


@dataclass(slots=True)
class DisconnectEvent:
    client: Any
    code: int
    reason: str
