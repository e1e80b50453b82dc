"""Presence refreshes are batched per node: every client due in one timer tick is
refreshed by one ``add_many`` call, whatever the number of clients and channels."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

from rtcore.engine.memory import MemoryPresenceManager
from rtcore.engine.node import Node
from rtcore.engine.presence import PresenceEntry, add_many
from rtcore.protocol.types import ClientInfo

from .helpers import Client, FakeClock, _ManualWheel, build_config, connect_token, run, settle


CONFIG: dict[str, Any] = {
    "client": {"ping_interval": 0, "pong_timeout": 0},
    "engine": {"presence_ttl": 60},
    "channel": {
        "namespaces": [
            {"name": "room", "allow_subscribe_for_client": True, "presence": True},
            {"name": "plain", "allow_subscribe_for_client": True},
        ]
    },
}


class CountingPresence(MemoryPresenceManager):
    def __init__(self) -> None:
        super().__init__(ttl=60)
        self.adds = 0
        self.batches: list[list[PresenceEntry]] = []
        self.fail: BaseException | None = None

    async def add(self, channel: str, client_id: str, info: ClientInfo) -> None:
        self.adds += 1
        await super().add(channel, client_id, info)

    async def add_many(self, entries: Sequence[PresenceEntry]) -> None:
        self.batches.append(list(entries))
        if self.fail is not None:
            raise self.fail
        await super().add_many(entries)


def _node(presence: Any, clock: FakeClock) -> Node:
    node = Node(build_config(CONFIG), presence_manager=presence)
    node.timers = _ManualWheel(tick=0.25, clock=clock.monotonic)
    node.wall_clock = clock.wall
    return node


async def _clients(node: Node, n: int) -> list[Client]:
    clients = []
    for i in range(n):
        c = Client(node)
        await c.connect(connect_token(f"u{i % 7}"))
        await c.subscribe(f"room:{i % 3}")
        await c.subscribe("plain:x")  # no presence: nothing to refresh
        clients.append(c)
    return clients


def test_one_batch_per_tick_for_every_due_client() -> None:
    async def main() -> None:
        clock = FakeClock()
        presence = CountingPresence()
        node = _node(presence, clock)
        await node.start()
        clients = await _clients(node, 120)
        adds_at_subscribe = presence.adds
        assert adds_at_subscribe == 120
        # Everyone connected within the same tick: all are due together.
        clock.advance(node.presence_refresh_interval + 0.3)
        node.timers.sweep()
        await settle()
        assert len(presence.batches) == 1
        batch = presence.batches[0]
        assert len(batch) == 120
        assert {(ch, cid) for ch, cid, _ in batch} == {
            (f"room:{i % 3}", c.session.client_id) for i, c in enumerate(clients)
        }
        assert all(info.client == cid for _, cid, info in batch)
        # The memory manager's add_many adds each entry.
        assert presence.adds == adds_at_subscribe + 120
        assert node.presence_refreshes == 1
        # Closed sessions are not refreshed; the next round is one batch again.
        for c in clients[:20]:
            c.session.transport_closed()
        clock.advance(node.presence_refresh_interval + 0.3)
        node.timers.sweep()
        await settle()
        assert [len(b) for b in presence.batches] == [120, 100]
        await node.close()

    run(main())


def test_engine_down_one_line_per_batch(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        clock = FakeClock()
        presence = CountingPresence()
        node = _node(presence, clock)
        await node.start()
        await _clients(node, 50)
        presence.fail = ConnectionError("engine connection lost")
        with caplog.at_level(logging.INFO, logger="rtcore"):
            clock.advance(node.presence_refresh_interval + 0.3)
            node.timers.sweep()
            await settle()
        records = [r for r in caplog.records if r.name.startswith("rtcore.engine")]
        assert len(records) == 1 and records[0].exc_info is None
        assert "presence refresh of 50 entries failed" in records[0].getMessage()
        assert node.broker_errors["presence_add"] == 1
        presence.fail = None
        await node.close()

    run(main())


def test_add_many_helper_falls_back_to_add() -> None:
    class OldStyle:
        def __init__(self) -> None:
            self.added: list[tuple[str, str]] = []

        async def add(self, channel: str, client_id: str, info: ClientInfo) -> None:
            self.added.append((channel, client_id))

    async def main() -> None:
        manager = OldStyle()
        entries = [("a", "1", ClientInfo(user="u", client="1")), ("b", "2", ClientInfo("v", "2"))]
        await add_many(manager, entries)  # type: ignore[arg-type]
        assert manager.added == [("a", "1"), ("b", "2")]
        memory = MemoryPresenceManager()
        await add_many(memory, entries)
        assert set(await memory.presence("a")) == {"1"}
        assert set(await memory.presence("b")) == {"2"}

    run(main())


def _redis_up() -> bool:
    try:
        import redis as redis_sync

        return bool(redis_sync.Redis(port=6379, socket_connect_timeout=1).ping())
    except Exception:  # noqa: BLE001 - no server: skipped
        return False


@pytest.mark.skipif(not _redis_up(), reason="no Redis server on 127.0.0.1:6379")
@pytest.mark.parametrize("shards", [1, 2])
def test_redis_add_many_adds_every_entry(shards: int) -> None:
    import uuid

    import redis as redis_sync

    from rtcore.backends.redis import RedisPresenceManager

    prefix = f"rtcore-test-{uuid.uuid4().hex[:12]}"
    # Two "shards" on one server: databases 14 and 15.
    urls = (
        ["redis://127.0.0.1:6379/15"]
        if shards == 1
        else [
            "redis://127.0.0.1:6379/14",
            "redis://127.0.0.1:6379/15",
        ]
    )

    async def main() -> None:
        manager = RedisPresenceManager(urls, prefix=prefix, ttl=60)
        try:
            entries = [
                (f"room:{i % 5}", f"c{i}", ClientInfo(user=f"u{i % 40}", client=f"c{i}"))
                for i in range(600)
            ]
            await manager.add_many(entries)
            await manager.add_many([])
            for k in range(5):
                present = await manager.presence(f"room:{k}")
                assert set(present) == {f"c{i}" for i in range(k, 600, 5)}
                assert present[f"c{k}"] == ClientInfo(user=f"u{k % 40}", client=f"c{k}")
                stats = await manager.stats(f"room:{k}")
                assert stats.num_clients == 120 and stats.num_users == 8
            # A refresh is an upsert: no duplicates, new info kept.
            await manager.add_many(
                [("room:0", "c0", ClientInfo(user="u0", client="c0", conn_info=b"{}"))]
            )
            assert (await manager.stats("room:0")).num_clients == 120
            assert (await manager.presence("room:0"))["c0"].conn_info == b"{}"
        finally:
            await manager.close()
            for url in urls:
                client = redis_sync.Redis.from_url(url)
                for key in client.scan_iter(f"{prefix}*"):
                    client.delete(key)

    run(main())


def _node_with(clock: FakeClock, ping_interval: float, presence_ttl: float) -> Node:
    cfg = {
        **CONFIG,
        "client": {"ping_interval": ping_interval, "pong_timeout": 0},
        "engine": {"presence_ttl": presence_ttl},
    }
    node = Node(build_config(cfg), presence_manager=CountingPresence())
    node.timers = _ManualWheel(tick=0.25, clock=clock.monotonic)
    node.wall_clock = clock.wall
    return node


@pytest.mark.parametrize(
    ("ping_interval", "presence_ttl", "refresh"),
    [(25, 60, 25), (30, 60, 30), (31, 60, 20), (0, 60, 20), (25, 30, 10)],
)
def test_refresh_interval_follows_the_ping_when_it_comes_twice_per_ttl(
    ping_interval: float, presence_ttl: float, refresh: float
) -> None:
    node = _node_with(FakeClock(), ping_interval, presence_ttl)
    assert node.presence_refresh_interval == refresh


def test_refresh_rides_on_the_ping_timer() -> None:
    """With the ping every 10 s and a 60 s TTL, each wake sends the ping and
    refreshes presence: no second wake per period for presence alone."""

    async def main() -> None:
        clock = FakeClock()
        node = _node_with(clock, 10, 60)
        presence = node.presence_manager
        assert isinstance(presence, CountingPresence)
        await node.start()
        clients = await _clients(node, 30)
        pings = sum(c.pings() for c in clients)
        woken = 0  # timer callbacks fired
        for _ in range(60):  # 30 s in half-second steps: three ping periods
            clock.advance(0.5)
            woken += node.timers.sweep()
            await settle()
        # Each client woke once per period (its first ping comes 5-10 s after
        # connecting), and every wake both pinged and refreshed.
        assert 30 * 3 <= woken <= 30 * 4
        assert sum(c.pings() for c in clients) - pings == woken
        assert sum(len(b) for b in presence.batches) == woken
        # Every client stays present throughout (refreshed well before 60 s).
        stats = [await presence.stats(f"room:{i}") for i in range(3)]
        assert sum(s.num_clients for s in stats) == 30
        await node.close()

    run(main())


def test_refresh_keeps_the_client_info_object() -> None:
    """A refresh with unchanged infos stores nothing new (nothing for the
    garbage collector's oldest generation); changed infos get a new object."""

    async def main() -> None:
        clock = FakeClock()
        presence = CountingPresence()
        node = _node(presence, clock)
        await node.start()
        (client,) = await _clients(node, 1)
        session = client.session
        stored = presence._channels["room:0"].clients[session.client_id]
        assert session.channel_info("room:0") is stored
        for _ in range(2):
            clock.advance(node.presence_refresh_interval + 0.3)
            node.timers.sweep()
            await settle()
            assert presence._channels["room:0"].clients[session.client_id] is stored
        assert presence.adds == 3
        # New connection info (a refresh with a new token, a control message):
        # the next refresh stores a ClientInfo that carries it.
        session.info = b'{"name":"new"}'
        clock.advance(node.presence_refresh_interval + 0.3)
        node.timers.sweep()
        await settle()
        info = presence._channels["room:0"].clients[session.client_id]
        assert info is not stored and info.conn_info == b'{"name":"new"}'
        assert info.client == session.client_id and info.chan_info is None
        assert (await presence.presence("room:0")) == {session.client_id: info}
        # Not a subscription of this session: a fresh object each time.
        assert session.channel_info("other") is not session.channel_info("other")
        await node.close()

    run(main())
