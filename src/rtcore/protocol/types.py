"""Domain values shared by the engine, the codecs and the backends.

These are plain slotted dataclasses: cheap to build on hot paths and easy to
encode by either codec (JSON or Protobuf) or by the Redis backend (msgpack).
``bytes`` payloads (``data``, ``conn_info``, ``chan_info``) are opaque to the
engine; on JSON connections they must hold valid JSON.
"""

from __future__ import annotations

from dataclasses import dataclass


__all__ = ["ClientInfo", "Publication", "StreamPosition", "PresenceStats"]


@dataclass(slots=True)
class ClientInfo:
    """Who a client is: sent in presence, join/leave and publication ``info``."""

    # User id; "" is an anonymous user.
    user: str
    # Client (connection) id, unique per connection.
    client: str
    # Connection info (raw JSON on JSON connections) from the token or the connect hook.
    conn_info: bytes | None = None
    # Per-channel info from the subscription token or the subscribe hook.
    chan_info: bytes | None = None


@dataclass(slots=True)
class Publication:
    """One message published into a channel."""

    # Payload; raw JSON for JSON clients.
    data: bytes
    # Position in the channel's history stream; 0 when the channel keeps no history.
    offset: int = 0
    # Publisher, for client-side publishes (or when the API sets it).
    info: ClientInfo | None = None
    # Free-form string tags attached by the publisher.
    tags: dict[str, str] | None = None
    # Server time of publication in unix milliseconds; 0 when not recorded.
    time: int = 0
    # Set only when the publication's channel differs from the subscription's.
    channel: str = ""
    # True when ``data`` is a fossil delta against the previous publication.
    delta: bool = False
    # Map subscriptions: the key this publication sets (or removes, with ``removed``).
    key: str = ""
    # Map subscriptions: the publication removes ``key``.
    removed: bool = False


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A position in a channel's history stream.

    ``offset`` is the offset of the last publication in the stream (0 when
    empty); ``epoch`` changes whenever the stream is lost and recreated, so an
    ``offset`` is only meaningful together with its ``epoch``.
    """

    offset: int
    epoch: str


@dataclass(slots=True)
class PresenceStats:
    """Counts of clients and distinct users present in a channel."""

    num_clients: int = 0
    num_users: int = 0
