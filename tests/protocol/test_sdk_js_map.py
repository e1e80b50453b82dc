"""centrifuge-js map subscriptions (``newMapSubscription``) against a served node.

The scenarios are in ``js/map_scenario.mjs``; each runs over JSON and over
Protobuf, against a node with the memory map store and against one with the
Redis broker and map store (127.0.0.1:6379; skipped without it, failing under
``CI=true``). The SDK drives the phases itself: state pages, stream pages,
live, and the stream recovery after a reconnect.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from rtcore.engine.events import ConnectEvent
from rtcore.engine.map_memory import MemoryMapStore
from rtcore.engine.node import Node

from .helpers import ServedNode, build_config, connect_token, run, serve, until
from .test_sdk_js import IN_CI, JS_DIR, PROTOCOLS, Scenario, js_env


__all__ = ["js_env"]

SCRIPT = JS_DIR / "map_scenario.mjs"

MAP = {
    "mode": "persistent",
    "stream_size": 50,
    "allow_publish_for_subscriber": True,
    "allow_remove_for_subscriber": True,
    "min_page_size": 10,
    "default_page_size": 10,
    "max_page_size": 100,
}
CONFIG = {
    "client": {"ping_interval": 25, "pong_timeout": 8},
    "channel": {
        "namespaces": [
            {
                "name": "board",
                "subscription_type": "map",
                "allow_subscribe_for_client": True,
                "map": MAP,
            },
            {
                "name": "games",
                "allow_subscribe_for_client": True,
                "map_clients_presence_channel_prefix": "clients:",
                "map_users_presence_channel_prefix": "users:",
            },
            {
                "name": "clients",
                "subscription_type": "map_clients",
                "allow_subscribe_for_client": True,
                "map": {"mode": "recoverable", "key_ttl": 60},
            },
            {
                "name": "users",
                "subscription_type": "map_users",
                "allow_subscribe_for_client": True,
                "map": {"mode": "ephemeral", "key_ttl": 60},
            },
            {
                "name": "docs",
                "subscription_type": "map",
                "allow_subscribe_for_client": True,
                "allowed_delta_types": ["fossil"],
                "map": MAP,
            },
            {
                "name": "ro",
                "subscription_type": "map",
                "allow_subscribe_for_client": True,
                "map": {"mode": "persistent"},
            },
        ]
    },
}
ENGINES = ["memory", "redis"]
REDIS_URL = "redis://127.0.0.1:6379"


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


def _delete_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in list(client.scan_iter(match=f"{prefix}.*", count=1000)):
            client.delete(key)
    finally:
        client.close()


class LaggingMapStore(MemoryMapStore):
    """Changes the map right after the first state page is read: the client's
    snapshot is then behind, and the SDK catches up through stream pages."""

    def __init__(self, handler: Any, changes: int) -> None:
        super().__init__(handler)
        self.changes = changes
        # The limits of stream reads: a page of the stream phase reads the page size.
        self.stream_limits: list[int] = []

    async def read_stream(self, channel: str, opts: Any, **kw: Any) -> Any:
        self.stream_limits.append(kw.get("limit", -1))
        return await super().read_stream(channel, opts, **kw)

    async def read_state(self, channel: str, opts: Any, **kw: Any) -> Any:
        page = await super().read_state(channel, opts, **kw)
        if self.changes and not kw.get("cursor"):
            n, self.changes = self.changes, 0
            for i in range(n):
                pub_key = f"k{i:03d}"
                data = json.dumps({"n": i, "late": True}).encode()
                await self.node_maps.publish(channel, pub_key, data)
        return page


@asynccontextmanager
async def served(engine: str, *, lag: int = 0) -> AsyncIterator[ServedNode]:
    config = build_config(CONFIG)
    if engine == "memory":
        node = Node(config)
        if lag:
            store = LaggingMapStore(node, lag)
            store.node_maps = node.maps  # type: ignore[attr-defined]
            node.maps.store = store
        async with serve(node=node) as s:
            yield s
        return
    if not _redis_up():
        if IN_CI:
            pytest.fail("Redis is not running on 127.0.0.1:6379")
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    from rtcore.backends.redis import RedisBroker, RedisPresenceManager
    from rtcore.backends.redis.maps import RedisMapStore

    prefix = f"rtcore-test-{uuid.uuid4().hex[:12]}"
    broker = RedisBroker(REDIS_URL, prefix=prefix)
    presence = RedisPresenceManager(broker.connections, prefix=prefix)
    node = Node(config, broker=broker, presence_manager=presence, map_store=RedisMapStore(broker))
    try:
        async with serve(node=node) as s:
            yield s
    finally:
        _delete_prefix(prefix)


async def start(node_bin: str, name: str, params: dict[str, Any]) -> Scenario:
    proc = await asyncio.create_subprocess_exec(
        node_bin,
        str(SCRIPT),
        name,
        json.dumps(params),
        cwd=JS_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Scenario(proc)


async def fill(node: Node, channel: str, n: int) -> None:
    for i in range(n):
        await node.maps.publish(channel, f"k{i:03d}", json.dumps({"n": i}).encode())


async def state_of(node: Node, channel: str) -> dict[str, Any]:
    page = await node.maps.read_state(channel, limit=-1)
    return {e.key: json.loads(e.data) for e in page.entries}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_map_snapshot_in_pages_then_live_updates(js_env: str, protocol: str, engine: str) -> None:
    async def main() -> None:
        async with served(engine) as s:
            await fill(s.node, "board:a", 35)
            expected = await state_of(s.node, "board:a")
            params = {
                "url": s.url,
                "protocol": protocol,
                "token": connect_token("42"),
                "channel": "board:a",
                "readonly": "ro:a",
                "pageSize": 10,
            }
            sc = await start(js_env, "sync", params)
            result = await sc.next("result", timeout=30)
            assert result["snapshot"] == expected
            assert result["syncs"] == [35]
            assert result["subscribed"] == [
                {"wasRecovering": False, "recovered": False, "recoverable": True}
            ]
            assert [(u["key"], u["data"], u["removed"]) for u in result["updates"]] == [
                ("mine", {"v": 1}, False),
                ("mine", {"v": 2}, False),
                ("k000", None, True),
            ]
            assert [u["offset"] for u in result["updates"]] == [36, 37, 38]
            assert result["mirror"] == await state_of(s.node, "board:a")
            assert result["refused"] == 103  # ro: has no map.allow_publish_*
            assert await sc.finish() == 0

    run(main(), timeout=90)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_map_snapshot_behind_catches_up_through_stream_pages(js_env: str, protocol: str) -> None:
    async def main() -> None:
        async with served("memory", lag=30) as s:
            await fill(s.node, "board:b", 25)
            params = {
                "url": s.url,
                "protocol": protocol,
                "token": connect_token("42"),
                "channel": "board:b",
                "readonly": "ro:b",
                "pageSize": 10,
            }
            sc = await start(js_env, "sync", params)
            result = await sc.next("result", timeout=30)
            # 25 keys, 30 late changes (k000..k029: 25 updated, 5 new), all in the snapshot.
            expected = {f"k{i:03d}": {"n": i, "late": True} for i in range(30)}
            assert result["snapshot"] == expected
            assert result["syncs"] == [30]
            # Two stream pages of 10 before going live (the store's stream top was 55).
            assert s.node.maps.store.stream_limits.count(10) == 2  # type: ignore[attr-defined]
            assert await sc.finish() == 0

    run(main(), timeout=90)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_map_recovery_after_forced_disconnect(js_env: str, protocol: str, engine: str) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        gate.set()
        async with served(engine) as s:

            async def on_connecting(event: ConnectEvent) -> None:
                await gate.wait()  # holds the reconnect while the test changes the map
                return None

            s.node.on_connecting = on_connecting
            node = s.node
            await fill(node, "board:r", 12)
            params = {
                "url": s.url,
                "protocol": protocol,
                "token": connect_token("42"),
                "channel": "board:r",
                "pageSize": 10,
                "expect": 5,
            }
            sc = await start(js_env, "recovery", params)
            assert (await sc.next("ready"))["size"] == 12
            await node.maps.publish("board:r", "k001", b'{"n":101}')
            await sc.next("update")
            gate.clear()
            await node.disconnect("42", code=3011, reason="force reconnect")
            await until(lambda: node.hub.user_connection_count("42") == 0, 5)
            await node.maps.publish("board:r", "k002", b'{"n":102}')
            await node.maps.remove("board:r", "k003")
            await node.maps.publish("board:r", "new", b'{"n":1000}')
            gate.set()
            sc.go_on()
            resubscribed = await sc.next("subscribed")
            assert resubscribed["wasRecovering"] is True and resubscribed["recovered"] is True
            await node.maps.publish("board:r", "k004", b'{"n":104}')
            sc.go_on()
            result = await sc.next("result", timeout=30)
            assert result["syncs"] == [12]  # recovered: no second snapshot
            assert [(u["key"], u["removed"]) for u in result["updates"]] == [
                ("k001", False),
                ("k002", False),
                ("k003", True),
                ("new", False),
                ("k004", False),
            ]
            assert [u["offset"] for u in result["updates"]] == [13, 14, 15, 16, 17]
            assert result["mirror"] == await state_of(node, "board:r")
            assert result["connects"] >= 2
            assert await sc.finish() == 0

    run(main(), timeout=90)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_map_unrecoverable_position_loads_a_new_snapshot(js_env: str, protocol: str) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        gate.set()
        async with served("memory") as s:

            async def on_connecting(event: ConnectEvent) -> None:
                await gate.wait()
                return None

            s.node.on_connecting = on_connecting
            node = s.node
            await fill(node, "board:u", 5)
            params = {
                "url": s.url,
                "protocol": protocol,
                "token": connect_token("42"),
                "channel": "board:u",
            }
            sc = await start(js_env, "unrecoverable", params)
            assert (await sc.next("ready"))["size"] == 5
            gate.clear()
            await node.disconnect("42", code=3011, reason="force reconnect")
            await until(lambda: node.hub.user_connection_count("42") == 0, 5)
            # More changes than the stream keeps (stream_size 50): recovery is impossible.
            for i in range(60):
                await node.maps.publish("board:u", f"x{i:02d}", b'{"x":1}')
            gate.set()
            sc.go_on()
            result = await sc.next("result", timeout=30)
            assert result["syncs"] == [5, 65]
            assert result["mirror"] == await state_of(node, "board:u")
            assert await sc.finish() == 0

    run(main(), timeout=90)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_map_presence_of_clients_and_users(js_env: str, protocol: str, engine: str) -> None:
    async def main() -> None:
        async with served(engine) as s:
            params = {
                "url": s.url,
                "protocol": protocol,
                "token": connect_token("watcher"),
                "token2": connect_token("42"),
                "channel": "games:1",
                "clients": "clients:games:1",
                "users": "users:games:1",
            }
            sc = await start(js_env, "presence", params)
            result = await sc.next("result", timeout=30)
            assert result["clientSyncs"] == [0]
            joined, left = result["clientUpdates"]
            assert joined["removed"] is False and left == {"key": joined["key"], "removed": True}
            assert result["infos"][0] == "42"
            assert result["userUpdates"] == [{"key": "42", "removed": False}]
            assert result["clientsMirror"] == {}
            # User keys stay until they expire: a quick return of the user is no change.
            assert result["usersMirror"] == ["42"]
            assert await s.node.maps.stats("users:games:1") == 1
            assert await sc.finish() == 0

    run(main(), timeout=90)


def _doc(n: int, version: int) -> bytes:
    body = {"n": n, "version": version, "text": "lorem ipsum dolor sit amet " * 40}
    return json.dumps(body).encode()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_map_changes_as_fossil_deltas_per_key(js_env: str, protocol: str, engine: str) -> None:
    async def main() -> None:
        async with served(engine) as s:
            node = s.node
            for n in range(4):
                await node.maps.publish("docs:1", f"d{n}", _doc(n, 0))
            params = {
                "url": s.url,
                "protocol": protocol,
                "token": connect_token("42"),
                "channel": "docs:1",
                "expect": 8,
            }
            sc = await start(js_env, "delta", params)
            assert (await sc.next("ready"))["size"] == 4
            for version in (1, 2):
                for n in range(3):
                    await node.maps.publish("docs:1", f"d{n}", _doc(n, version))
            await node.maps.remove("docs:1", "d3")
            await node.maps.publish("docs:1", "d9", _doc(9, 0))
            sc.go_on()
            result = await sc.next("result", timeout=30)
            assert result["mirror"] == await state_of(node, "docs:1")
            stats = result["stats"]
            # The first live change goes in full; the other updates of existing keys
            # are deltas from the key's value before them.
            assert stats["numDeltaPayloads"] >= 5, stats
            assert stats["bytesReceived"] < stats["bytesDecoded"], stats
            assert await sc.finish() == 0

    run(main(), timeout=90)
