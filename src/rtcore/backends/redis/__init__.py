"""Redis backends: broker with history, history store and presence on Redis.

:class:`RedisBroker`, :class:`RedisHistoryStore` and :class:`RedisPresenceManager`
implement the engine seams on one Redis server, on several independent Redis
servers (shards), or on a Redis Cluster. ``docs/redis.md`` is the operator's
guide; the modules of this package are the reference:

* :mod:`~rtcore.backends.redis.connection`: command connections, shard
  routing and Cluster commands (:class:`RedisConnections`);
* :mod:`~rtcore.backends.redis.pubsub`: one pub/sub connection to one server;
* :mod:`~rtcore.backends.redis.routing`: which pub/sub connection a channel
  is subscribed on, standalone and under Cluster;
* :mod:`~rtcore.backends.redis.sentinel`: the master behind Redis Sentinel
  (:class:`SentinelSettings`);
* :mod:`~rtcore.backends.redis.broker`, :mod:`~rtcore.backends.redis.history`,
  :mod:`~rtcore.backends.redis.presence`: the three seams;
* :mod:`~rtcore.backends.redis.maps` (:class:`RedisMapStore`, on the broker's
  connections) and :mod:`~rtcore.backends.redis.map_scripts`: map channels;
* :mod:`~rtcore.backends.redis.keys`: the key layout (:class:`RedisKeys`);
* :mod:`~rtcore.backends.redis.codec`: the binary format, version 1;
* :mod:`~rtcore.backends.redis.scripts`: the Lua scripts;
* :mod:`~rtcore.backends.redis.errors`: :class:`RedisEngineError` and
  :class:`RedisUnavailableError`.
"""

from __future__ import annotations

from rtcore.backends.redis.broker import RedisBroker
from rtcore.backends.redis.codec import (
    FORMAT_VERSION,
    KIND_JOIN,
    KIND_LEAVE,
    KIND_PUBLICATION,
    decode_entry,
    decode_message,
    deliver_message,
    encode_info_message,
    encode_presence_entry as encode_presence_entry,
    encode_publication,
    encode_publication_message,
)
from rtcore.backends.redis.connection import DEFAULT_URL, RedisConnections
from rtcore.backends.redis.errors import RedisEngineError, RedisUnavailableError
from rtcore.backends.redis.history import RedisHistoryStore
from rtcore.backends.redis.keys import DEFAULT_PREFIX, RedisKeys
from rtcore.backends.redis.maps import RedisMapStore
from rtcore.backends.redis.presence import RedisPresenceManager
from rtcore.backends.redis.sentinel import SentinelSettings
from rtcore.engine.presence import DEFAULT_PRESENCE_TTL


__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_URL",
    "FORMAT_VERSION",
    "KIND_JOIN",
    "KIND_LEAVE",
    "KIND_PUBLICATION",
    "RedisBroker",
    "RedisConnections",
    "RedisEngineError",
    "RedisHistoryStore",
    "RedisKeys",
    "RedisMapStore",
    "RedisPresenceManager",
    "RedisUnavailableError",
    "SentinelSettings",
    "create_redis_engine",
    "create_redis_stores",
    "decode_entry",
    "decode_message",
    "deliver_message",
    "encode_info_message",
    "encode_publication",
    "encode_publication_message",
]


def create_redis_engine(
    urls: list[str],
    prefix: str,
    *,
    cluster: bool = False,
    presence_ttl: float = DEFAULT_PRESENCE_TTL,
    sentinel: SentinelSettings | None = None,
) -> tuple[RedisBroker, RedisPresenceManager]:
    """A broker and a presence manager sharing one set of Redis connections.

    ``urls`` are the shards (or, with ``cluster=True``, Cluster seed nodes;
    with ``sentinel``, at most one URL holding the master's credentials,
    database and TLS options). The connections close when both components
    are closed. Nothing connects before ``broker.start()`` and the first
    presence call.
    """
    conns = RedisConnections(urls, cluster=cluster, sentinel=sentinel)
    broker = RedisBroker(conns, prefix=prefix, cluster=cluster)
    presence = RedisPresenceManager(conns, prefix=prefix, cluster=cluster, ttl=presence_ttl)
    return broker, presence


def create_redis_stores(
    urls: list[str],
    prefix: str,
    *,
    cluster: bool = False,
    presence_ttl: float = DEFAULT_PRESENCE_TTL,
    sentinel: SentinelSettings | None = None,
) -> tuple[RedisHistoryStore, RedisPresenceManager]:
    """History and presence sharing one set of Redis connections, for another broker.

    The NATS broker takes the history store (``NatsBroker(history=...)``):
    NATS carries the publications, Redis keeps history and presence.
    """
    conns = RedisConnections(urls, cluster=cluster, sentinel=sentinel)
    history = RedisHistoryStore(conns, prefix=prefix, cluster=cluster)
    presence = RedisPresenceManager(conns, prefix=prefix, cluster=cluster, ttl=presence_ttl)
    return history, presence
