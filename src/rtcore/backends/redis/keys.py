"""Key and pub/sub channel names of the Redis backends.

Key layout (``P`` = prefix, ``c`` = channel part, see :class:`RedisKeys`)

    =========================  ======  ==========================================
    key                        type    content
    =========================  ======  ==========================================
    ``P.stream.c``             STREAM  entry id ``<offset>-0``, field ``d`` = entry
    ``P.meta.c``               HASH    ``e`` epoch, ``s`` top offset
    ``P.result.<n>.c.<key>``   STRING  ``"<offset>:<epoch>"`` of an idempotent publish
    ``P.presence.data.c``      HASH    client id -> presence entry
    ``P.presence.expire.c``    ZSET    client id -> lease end (unix ms, server clock)
    ``P.presence.users.c``     HASH    user id -> number of live clients
    ``P.client.c``             pubsub  the channel's publications, joins, leaves
    ``P.control``              pubsub  node-to-node control messages
    =========================  ======  ==========================================

    ``<n>`` is the channel's length in characters, which keeps result keys of
    different (channel, key) pairs distinct. The values are in the format of
    :mod:`rtcore.backends.redis.codec`.
"""

from __future__ import annotations

from typing import Final

from rtcore.backends.sharding import fnv1a_64


__all__ = ["DEFAULT_PREFIX", "RedisKeys"]


DEFAULT_PREFIX: Final = "rtcore"


class RedisKeys:
    """Key and pub/sub channel names for one prefix.

    The *channel part* ``c`` is the channel name on standalone servers. Under
    Redis Cluster it is ``{channel}``, a hash tag that puts all of a channel's
    keys (and its sharded pub/sub channel) in one slot. A channel that cannot
    be its own hash tag (it is empty or contains ``}``) gets
    ``{<16 hex digits of FNV-1a>}}channel`` instead: the hash is the tag, and
    the doubled brace keeps these names apart from the plain ones.

    Raises:
        ValueError: the prefix is empty or contains ``{`` or ``}``.
    """

    __slots__ = ("prefix", "cluster", "control")

    def __init__(self, prefix: str = DEFAULT_PREFIX, *, cluster: bool = False) -> None:
        if not prefix:
            raise ValueError("the Redis key prefix must not be empty")
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"the Redis key prefix must not contain braces: {prefix!r}")
        self.prefix = prefix
        self.cluster = cluster
        #: The pub/sub channel of control messages.
        self.control = f"{prefix}.control"

    def part(self, channel: str) -> str:
        if not self.cluster:
            return channel
        if channel and "}" not in channel:
            return "{" + channel + "}"
        return f"{{{fnv1a_64(channel.encode()):016x}}}}}" + channel

    def stream(self, channel: str) -> str:
        return f"{self.prefix}.stream.{self.part(channel)}"

    def meta(self, channel: str) -> str:
        return f"{self.prefix}.meta.{self.part(channel)}"

    def result(self, channel: str, idempotency_key: str) -> str:
        return f"{self.prefix}.result.{len(channel)}.{self.part(channel)}.{idempotency_key}"

    def presence_data(self, channel: str) -> str:
        return f"{self.prefix}.presence.data.{self.part(channel)}"

    def presence_expire(self, channel: str) -> str:
        return f"{self.prefix}.presence.expire.{self.part(channel)}"

    def presence_users(self, channel: str) -> str:
        return f"{self.prefix}.presence.users.{self.part(channel)}"

    def client(self, channel: str) -> str:
        """The pub/sub channel of ``channel``'s publications, joins and leaves."""
        return f"{self.prefix}.client.{self.part(channel)}"
