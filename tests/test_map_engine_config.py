"""Which map store ``rtcore serve`` gives a node: the engine's (docs/protocol.md, *Map subscriptions*)."""

from __future__ import annotations

import asyncio

from rtcore.backends.redis import RedisBroker, RedisMapStore
from rtcore.config import config_from_mapping
from rtcore.engine.map_memory import MemoryMapStore
from rtcore.server.cli.serve import _make_node


def test_memory_engine_keeps_maps_in_memory() -> None:
    node = _make_node(config_from_mapping({}))
    assert isinstance(node.maps.store, MemoryMapStore)


def test_redis_engine_keeps_maps_in_redis_on_the_brokers_connections() -> None:
    config = config_from_mapping(
        {"engine": {"type": "redis", "redis_address": ["redis://127.0.0.1:6379"]}}
    )
    node = _make_node(config)
    store = node.maps.store
    assert isinstance(store, RedisMapStore) and isinstance(node.broker, RedisBroker)
    assert store.connections is node.broker.connections
    assert store.keys.prefix == node.broker.keys.prefix
    asyncio.run(node.close())  # nothing connected yet: closes without Redis
