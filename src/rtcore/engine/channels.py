"""Channel names: namespaces, private and user-limited channels, validation.

Channel syntax (Centrifugo's): ``[$][namespace:]name[#user1,user2]``.

* ``namespace:`` selects the options of a configured namespace; a channel
  without the boundary uses ``channel.without_namespace``; an unknown
  namespace is error 102, whose message names it.
* A leading private prefix (``$``) means a subscription token is required.
* ``#`` starts the list of users allowed in a user-limited channel
  (``dialog#42,43``), when the namespace allows user-limited channels.
"""

from __future__ import annotations

from rtcore.config import ChannelConfig, ChannelOptions
from rtcore.protocol.codes import ClientError


__all__ = ["ChannelRules"]


class ChannelRules:
    """Resolves a channel name to its options and access rules."""

    __slots__ = ("config", "_namespaces", "_cache")

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config
        self._namespaces = {ns.name: ns for ns in config.namespaces}
        # Options per channel name, bounded (cleared when it grows too big).
        self._cache: dict[str, ChannelOptions | None] = {}

    def namespace_name(self, channel: str) -> str:
        body = channel[1:] if self.is_private(channel) else channel
        ns, sep, _ = body.partition(self.config.namespace_boundary)
        return ns if sep else ""

    def options(self, channel: str) -> ChannelOptions | None:
        """The channel's options, or None when its namespace is not configured."""
        cache = self._cache
        try:
            return cache[channel]
        except KeyError:
            pass
        name = self.namespace_name(channel)
        opts: ChannelOptions | None
        opts = self._namespaces.get(name) if name else self.config.without_namespace
        if len(cache) > 65536:
            cache.clear()
        cache[channel] = opts
        return opts

    def unknown_channel_error(self, channel: str) -> ClientError:
        """Error 102 for a channel whose namespace is not configured, naming the namespace."""
        name = self.namespace_name(channel)
        shown = name if len(name) <= 64 and name.isprintable() else name[:64] + "..."
        return ClientError(
            102, f"unknown channel: namespace {shown!r} is not in channel.namespaces"
        )

    def is_private(self, channel: str) -> bool:
        prefix = self.config.private_prefix
        return bool(prefix) and channel.startswith(prefix)

    def valid_name(self, channel: str) -> bool:
        """Non-empty, no longer than ``max_length`` bytes, no control characters."""
        if not channel or len(channel.encode("utf-8")) > self.config.max_length:
            return False
        return channel.isprintable()

    def allowed_users(self, channel: str) -> list[str] | None:
        """Users of a user-limited channel, or None when the channel is not one."""
        _, sep, users = channel.rpartition(self.config.user_boundary)
        if not sep:
            return None
        return [u for u in users.split(self.config.user_separator) if u]

    def user_allowed(self, channel: str, opts: ChannelOptions, user: str) -> bool:
        """False when the channel is user-limited and ``user`` is not listed."""
        if not opts.allow_user_limited_channels:
            return True
        users = self.allowed_users(channel)
        return users is None or user in users
