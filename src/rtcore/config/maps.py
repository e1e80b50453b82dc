"""Options of map subscriptions (a namespace's ``map`` section).

Names and meanings follow Centrifugo's namespace ``map`` object: a map
channel keeps a key -> entry state plus a stream of changes, and clients
subscribe to it with ``subscription_type = "map"`` (docs/protocol.md, "Map
subscriptions").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rtcore.config.fields import _duration, _err, _f
from rtcore.errors import ConfigError


__all__ = [
    "MAP_MODES",
    "MAP_TYPES",
    "MapNamespaceOptions",
    "SUBSCRIPTION_TYPES",
    "MapOptions",
    "subscription_type_problems",
]

#: Subscription types of a namespace: publications, a map, and the two kinds of map
#: presence (one entry per connection, one per user; see ``*_presence_channel_prefix``).
SUBSCRIPTION_TYPES = ("stream", "map", "map_clients", "map_users")
MAP_TYPES = ("map", "map_clients", "map_users")
#: Map modes, as Centrifugo's: without a stream and with expiring keys (ephemeral),
#: with a stream and expiring keys (recoverable), with a stream and keys that stay.
MAP_MODES = ("ephemeral", "recoverable", "persistent")


@dataclass(slots=True)
class MapOptions:
    """How a map channel keeps its state and its stream of changes."""

    mode: str = _f(
        "",
        "Required for the map subscription types: 'ephemeral' (no stream: a reconnect loads "
        "the map again; keys expire), 'recoverable' (a stream to recover from; keys expire) "
        "or 'persistent' (a stream; keys stay until removed).",
    )
    key_ttl: float = _duration(
        0.0,
        "How long a key lives after its last write; required for 'ephemeral' and "
        "'recoverable', 0 for 'persistent'.",
    )
    stream_size: int = _f(0, "Changes kept in the stream (0: 100); 0 for 'ephemeral'.")
    stream_ttl: float = _duration(0.0, "How long an idle stream's changes live (0: 1m).")
    meta_ttl: float = _duration(
        0.0,
        "How long the stream's epoch/offset live (0: 10 x stream_ttl for 'recoverable', "
        "for ever for 'persistent').",
    )
    allow_publish_for_subscriber: bool = _f(False, "Subscribers may set keys from the client.")
    allow_publish_for_client: bool = _f(False, "Any authenticated client may set keys.")
    allow_publish_for_anonymous: bool = _f(
        False, "Anonymous clients may set keys (with one of the above)."
    )
    allow_remove_for_subscriber: bool = _f(False, "Subscribers may remove keys from the client.")
    allow_remove_for_client: bool = _f(False, "Any authenticated client may remove keys.")
    allow_remove_for_anonymous: bool = _f(
        False, "Anonymous clients may remove keys (with one of the above)."
    )
    default_page_size: int = _f(100, "Entries per state/stream page when the client asks none.")
    min_page_size: int = _f(100, "Smallest page a client gets (smaller asks are raised to it).")
    max_page_size: int = _f(1000, "Largest page a client gets (larger asks are cut to it).")
    live_transition_max_publication_limit: int = _f(
        0, "Most changes a subscribe may catch up with when it goes live (0: max_page_size)."
    )
    subscribe_catch_up_timeout: float = _duration(
        5.0,
        "Longest a subscribe may page through state and stream before going live; a later "
        "page disconnects the client with 3008 (it reconnects and starts again).",
    )
    client_key: str = _f(
        "",
        "The key of a client's map writes: '' (the key it sends), 'client_id' or 'user_id' "
        "(anonymous clients may not write then).",
    )
    remove_client_on_unsubscribe: bool = _f(
        False, "Remove the key named by the client id when that client's subscription ends."
    )

    @property
    def live_limit(self) -> int:
        return self.live_transition_max_publication_limit or self.max_page_size

    @property
    def has_stream(self) -> bool:
        return self.mode != "ephemeral"

    @property
    def stream_len(self) -> int:
        """Changes the stream keeps (0 without a stream)."""
        return 0 if not self.has_stream else self.stream_size or 100

    @property
    def stream_lifetime(self) -> float:
        return self.stream_ttl or 60.0

    @property
    def meta_lifetime(self) -> float:
        """Seconds the epoch and top offset live; 0: for ever."""
        if self.meta_ttl or self.mode == "persistent":
            return self.meta_ttl
        return self.stream_lifetime * 10 if self.has_stream else 0.0

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.mode and self.mode not in MAP_MODES:
            yield _err(path, "mode", f"unknown map mode {self.mode!r}: use one of {MAP_MODES}")
        if self.mode in ("ephemeral", "recoverable") and not self.key_ttl > 0:
            yield _err(path, "key_ttl", f"required (> 0) with mode {self.mode!r}")
        if self.mode == "persistent" and self.key_ttl:
            yield _err(path, "key_ttl", "must be 0 with mode 'persistent' (keys do not expire)")
        if self.key_ttl < 0:
            yield _err(path, "key_ttl", "must be >= 0")
        if self.mode == "ephemeral" and (self.stream_size or self.stream_ttl or self.meta_ttl):
            yield _err(
                path, "stream_size", "mode 'ephemeral' has no stream (no stream_* or meta_ttl)"
            )
        for key in ("stream_size", "stream_ttl", "meta_ttl"):
            if getattr(self, key) < 0:
                yield _err(path, key, "must be >= 0")
        if self.meta_ttl and self.meta_ttl < self.stream_lifetime:
            yield _err(path, "meta_ttl", "must be >= stream_ttl (or 0)")
        if not 1 <= self.min_page_size <= self.max_page_size:
            yield _err(path, "min_page_size", "need 1 <= min_page_size <= max_page_size")
        if not 1 <= self.default_page_size:
            yield _err(path, "default_page_size", "must be >= 1")
        if self.live_transition_max_publication_limit < 0:
            yield _err(path, "live_transition_max_publication_limit", "must be >= 0")
        if not self.subscribe_catch_up_timeout > 0:
            yield _err(path, "subscribe_catch_up_timeout", "must be > 0")
        if self.client_key not in ("", "client_id", "user_id"):
            yield _err(path, "client_key", "must be '', 'client_id' or 'user_id'")

    def page_size(self, asked: int) -> int:
        """The page size for a client's ``limit`` (0: the default), within the bounds."""
        size = asked if asked > 0 else self.default_page_size
        return min(max(size, self.min_page_size), self.max_page_size)


def subscription_type_problems(opts: Any, path: str) -> Iterator[ConfigError]:
    """Problems of a namespace's ``subscription_type`` together with its ``map`` section."""
    kind = opts.subscription_type
    if kind not in SUBSCRIPTION_TYPES:
        yield _err(
            path,
            "subscription_type",
            f"unknown subscription type {kind!r}: use one of {SUBSCRIPTION_TYPES}"
            " (shared_poll is not built)",
        )
    elif kind in MAP_TYPES:
        if not opts.map.mode:
            yield _err(path, "map.mode", f"required when subscription_type is {kind!r}")
        elif kind != "map" and opts.map.mode == "persistent":
            yield _err(path, "map.mode", f"{kind!r} needs keys that expire: not 'persistent'")
        if opts.history_enabled:
            yield _err(path, "history_size", "a map channel keeps its own stream (map.stream_size)")
    if opts.map.remove_client_on_unsubscribe and kind not in MAP_TYPES:
        yield _err(path, "map.remove_client_on_unsubscribe", "needs a map subscription_type")


@dataclass(slots=True)
class MapNamespaceOptions:
    """The map options of a namespace (:class:`~rtcore.config.ChannelOptions` has them)."""

    subscription_type: str = _f(
        "stream",
        "'stream' (publications), 'map' (keyed state), or the map presence of the channels "
        "named by a *_presence_channel_prefix: 'map_clients' (one key per connection) or "
        "'map_users' (one key per user).",
    )
    map: MapOptions = field(
        default_factory=MapOptions, metadata={"doc": "Map channels (the map subscription types)."}
    )
    map_clients_presence_channel_prefix: str = _f(
        "",
        "Subscribers of this namespace's channels are kept as keys (client id, with their "
        "ClientInfo) of the channel prefix + channel, of subscription_type 'map_clients'.",
    )
    map_users_presence_channel_prefix: str = _f(
        "",
        "Subscribers' user ids are kept as keys of the channel prefix + channel, of "
        "subscription_type 'map_users' (anonymous users are not).",
    )
