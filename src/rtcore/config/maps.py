"""Options of map subscriptions (a namespace's ``map`` section).

Names and meanings follow Centrifugo's namespace ``map`` object: a map
channel keeps a key -> entry state plus a stream of changes, and clients
subscribe to it with ``subscription_type = "map"`` (docs/protocol.md, "Map
subscriptions").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rtcore.config.fields import _duration, _err, _f
from rtcore.errors import ConfigError


__all__ = ["MAP_MODES", "SUBSCRIPTION_TYPES", "MapOptions", "subscription_type_problems"]

#: Subscription types a namespace can have; only these two are built.
SUBSCRIPTION_TYPES = ("stream", "map")
#: Map modes rtcore implements. Centrifugo also has "ephemeral" and
#: "recoverable", whose entries expire after key_ttl; rtcore has no key TTLs yet.
MAP_MODES = ("persistent",)


@dataclass(slots=True)
class MapOptions:
    """How a map channel keeps its state and its stream of changes."""

    mode: str = _f(
        "", "Required for subscription_type 'map': 'persistent' (entries live until removed)."
    )
    stream_size: int = _f(100, "Changes kept in the channel's stream for catch-up and recovery.")
    stream_ttl: float = _duration(60.0, "How long an idle stream's changes live.")
    meta_ttl: float = _duration(
        0.0, "How long the stream's epoch/offset live (0: for ever, as the entries)."
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

    def _problems(self, path: str) -> Iterator[ConfigError]:
        if self.mode and self.mode not in MAP_MODES:
            hint = (
                " ('ephemeral' and 'recoverable' need key TTLs, not built yet)"
                if self.mode in ("ephemeral", "recoverable")
                else ""
            )
            yield _err(path, "mode", f"unknown map mode {self.mode!r}: use 'persistent'{hint}")
        if self.stream_size < 1:
            yield _err(path, "stream_size", "must be >= 1")
        if not self.stream_ttl > 0:
            yield _err(path, "stream_ttl", "must be > 0")
        if self.meta_ttl < 0:
            yield _err(path, "meta_ttl", "must be >= 0")
        elif self.meta_ttl and self.meta_ttl < self.stream_ttl:
            yield _err(path, "meta_ttl", "must be >= stream_ttl (or 0)")
        if not 1 <= self.min_page_size <= self.max_page_size:
            yield _err(path, "min_page_size", "need 1 <= min_page_size <= max_page_size")
        if not 1 <= self.default_page_size:
            yield _err(path, "default_page_size", "must be >= 1")

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
            f"unknown subscription type {kind!r}: use 'stream' or 'map'"
            " (map_clients, map_users and shared_poll are not built)",
        )
    elif kind == "map":
        if not opts.map.mode:
            yield _err(path, "map.mode", "required when subscription_type is 'map'")
        if opts.history_enabled:
            yield _err(path, "history_size", "a map channel keeps its own stream (map.stream_size)")
