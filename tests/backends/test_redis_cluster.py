"""The Redis backends on a three-primary Redis Cluster started by the tests.

The cluster runs on free local ports (``redis-server --cluster-enabled yes``
plus ``redis-cli --cluster create``), and the fixture waits, bounded, for
``cluster_state:ok`` on every node. The suites run with sharded pub/sub
(SSUBSCRIBE / SPUBLISH, Redis 7) and with classic pub/sub. Without
``redis-server`` and ``redis-cli`` the tests skip, except under ``CI=true``,
where they fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import redis as redis_sync
from redis.crc import key_slot

from rtcore.backends.redis import (
    RedisBroker,
    RedisConnections,
    RedisHistoryStore,
    RedisKeys,
    RedisPresenceManager,
    RedisUnavailableError,
)
from rtcore.engine.history import HistoryOptions
from rtcore.protocol.types import ClientInfo, StreamPosition

from .conformance import (
    BrokerConformance,
    BrokerHarness,
    HarnessFactory,
    HistoryHarness,
    HistoryStoreConformance,
    PresenceConformance,
    PresenceHarness,
    RecordingHandler,
)
from .redis_servers import LocalRedisCluster
from .test_redis import (
    SLACK,
    delete_prefix,
    eventually,
    harness_factories,
    in_thread,
    pub,
    run,
    unique_prefix,
)


pytestmark = pytest.mark.redis

OPTS = HistoryOptions(size=100, ttl=60.0, meta_ttl=120.0)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    local = LocalRedisCluster(3)
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture
def urls(cluster: LocalRedisCluster) -> list[str]:
    return cluster.urls


@pytest.fixture
def prefix(urls: list[str]) -> Iterator[str]:
    value = unique_prefix()
    yield value
    delete_prefix(urls, value)


def classic_broker_factory(urls: list[str]) -> HarnessFactory[BrokerHarness]:
    @asynccontextmanager
    async def factory() -> AsyncIterator[BrokerHarness]:
        prefix = unique_prefix()
        broker = RedisBroker(urls, prefix=prefix, cluster=True, sharded_pubsub=False)
        try:
            yield BrokerHarness(broker, asyncio.sleep, slack=SLACK)
        finally:
            await broker.close()
            delete_prefix(urls, prefix)

    return factory


class TestClusterHistoryConformance(HistoryStoreConformance):
    @pytest.fixture
    def history_backend(self, urls: list[str]) -> HarnessFactory[HistoryHarness]:
        return harness_factories(lambda: urls, cluster=True)[0]


class TestClusterBrokerConformance(BrokerConformance):
    """Sharded pub/sub: chosen automatically on Redis 7."""

    @pytest.fixture
    def broker_backend(self, urls: list[str]) -> HarnessFactory[BrokerHarness]:
        return harness_factories(lambda: urls, cluster=True)[1]


class TestClusterClassicPubSubBrokerConformance(BrokerConformance):
    @pytest.fixture
    def broker_backend(self, urls: list[str]) -> HarnessFactory[BrokerHarness]:
        return classic_broker_factory(urls)


class TestClusterPresenceConformance(PresenceConformance):
    @pytest.fixture
    def presence_backend(self, urls: list[str]) -> HarnessFactory[PresenceHarness]:
        return harness_factories(lambda: urls, cluster=True)[2]


CHANNELS = [f"room:{i}" for i in range(30)] + ["", "}odd{", "{tagged}"]


def owner_port(cluster: LocalRedisCluster, key: str) -> int:
    """The port of the primary serving ``key``'s slot."""
    slot = key_slot(key.encode())
    client = redis_sync.Redis(port=cluster.servers[0].port)
    try:
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
    finally:
        client.close()
    raise AssertionError(f"slot {slot} not served")


class TestCluster:
    def test_sharded_pubsub_is_used_and_channels_spread_over_primaries(
        self, cluster: LocalRedisCluster, urls: list[str], prefix: str
    ) -> None:
        keys = RedisKeys(prefix, cluster=True)

        async def body() -> None:
            nodes = [RedisBroker(urls, prefix=prefix, cluster=True) for _ in range(2)]
            handlers = [RecordingHandler() for _ in nodes]
            for node, handler in zip(nodes, handlers, strict=True):
                await node.start(handler)
                assert node.sharded_pubsub
                await asyncio.gather(*(node.subscribe(c) for c in CHANNELS))
            try:
                for channel in CHANNELS:
                    await nodes[0].publish(channel, pub(f"p-{channel}"), history=OPTS)
                await nodes[1].publish_control(b"ctl")
                for handler in handlers:
                    await handler.wait_until(lambda h=handler: len(h.events) == len(CHANNELS) + 1)
                    assert sorted(e.channel for e in h_pubs(handler)) == sorted(CHANNELS)
                # Each channel's shard channel is subscribed on the primary that owns it.
                for channel in CHANNELS[:5] + CHANNELS[-3:]:
                    name = keys.client(channel)
                    port = owner_port(cluster, name)
                    client = redis_sync.Redis(port=port)
                    try:
                        numsub = client.execute_command("PUBSUB", "SHARDNUMSUB", name)
                    finally:
                        client.close()
                    assert numsub[1] == 2, channel
                used = {owner_port(cluster, keys.client(c)) for c in CHANNELS}
                assert len(used) == 3
            finally:
                for node in nodes:
                    await node.close()

        run(body)

    def test_keys_of_a_channel_share_its_slot(
        self, cluster: LocalRedisCluster, urls: list[str], prefix: str
    ) -> None:
        keys = RedisKeys(prefix, cluster=True)

        async def body() -> None:
            broker = RedisBroker(urls, prefix=prefix, cluster=True)
            presence = RedisPresenceManager(urls, prefix=prefix, cluster=True)
            await broker.start(RecordingHandler())
            try:
                for channel in CHANNELS:
                    await broker.publish(channel, pub("x"), history=OPTS, idempotency_key="k")
                    await presence.add(channel, "c1", ClientInfo("u", "c1"))
            finally:
                await broker.close()
                await presence.close()

        run(body)
        for channel in CHANNELS:
            names = [
                keys.stream(channel),
                keys.meta(channel),
                keys.result(channel, "k"),
                keys.presence_data(channel),
                keys.presence_expire(channel),
                keys.presence_users(channel),
            ]
            port = owner_port(cluster, names[0])
            client = redis_sync.Redis(port=port)
            try:
                assert client.exists(*names) == len(names), channel
            finally:
                client.close()

    def test_subscription_follows_a_migrated_slot(
        self, cluster: LocalRedisCluster, urls: list[str], prefix: str
    ) -> None:
        keys = RedisKeys(prefix, cluster=True)
        channel = "migrating"
        name = keys.client(channel)
        slot = key_slot(name.encode())
        source = owner_port(cluster, name)
        target = next(s.port for s in cluster.servers if s.port != source)

        async def body() -> None:
            node = RedisBroker(
                urls,
                prefix=prefix,
                cluster=True,
                reconnect_delay_min=0.02,
                reconnect_delay_max=0.2,
            )
            publisher = RedisBroker(urls, prefix=prefix, cluster=True)
            handler = RecordingHandler()
            await node.start(handler)
            await publisher.start(RecordingHandler())
            try:
                await node.subscribe(channel)
                first = await publisher.publish(channel, pub("before"), history=OPTS)
                await handler.wait_for_payload(channel, "before")
                assert shard_numsub(source, name) == 1
                await in_thread(lambda: migrate_slot(cluster, slot, source, target))
                assert owner_port(cluster, name) == target
                # The server dropped the sharded subscription; the broker follows the slot.
                await eventually(
                    lambda: shard_numsub(target, name) == 1,
                    timeout=10,
                    what="resubscribed on the new owner",
                )
                result = None
                for _ in range(50):
                    try:
                        result = await publisher.publish(channel, pub("after"), history=OPTS)
                        break
                    except RedisUnavailableError:
                        await asyncio.sleep(0.1)
                assert result is not None
                # The keys moved with the slot: same stream, next offset.
                assert result.position == StreamPosition(2, first.position.epoch)
                await handler.wait_for_payload(channel, "after")
                history = await node.history(channel, limit=-1)
                assert [p.data for p in history.publications] == [b"before", b"after"]
                assert node.healthy
            finally:
                await node.close()
                await publisher.close()

        try:
            run(body, timeout=60)
        finally:
            current = owner_port(cluster, name)
            if current != source:
                migrate_slot(cluster, slot, current, source)

    def test_restarted_primary_gives_new_epochs_and_resubscribes(self) -> None:
        # A cluster of its own: a restarted primary without persistence loses its keys.
        local = LocalRedisCluster(3)
        try:
            local.start()
            self._restart_scenario(local)
        finally:
            local.stop()

    def _restart_scenario(self, local: LocalRedisCluster) -> None:
        prefix = unique_prefix()
        keys = RedisKeys(prefix, cluster=True)
        channel = "victim"
        port = owner_port(local, keys.client(channel))
        server = next(s for s in local.servers if s.port == port)

        async def body() -> None:
            conns = RedisConnections(
                local.urls, cluster=True, socket_timeout=1.0, connect_timeout=0.5
            )
            node = RedisBroker(
                conns,
                prefix=prefix,
                cluster=True,
                health_check_interval=0.3,
                reconnect_delay_min=0.02,
                reconnect_delay_max=0.2,
            )
            handler = RecordingHandler()
            await node.start(handler)
            await node.subscribe(channel)
            first = await node.publish(channel, pub("one"), history=OPTS)
            await handler.wait_for_payload(channel, "one")
            # Keep the node's config (nodes.conf) so it rejoins with its slots.
            await in_thread(lambda: server.restart(down_for=0.3))
            await in_thread(lambda: local.wait_ok(30))
            await eventually(lambda: node.reconnects >= 1, timeout=15, what="resubscribed")
            result = None
            for _ in range(100):
                try:
                    result = await node.publish(channel, pub("two"), history=OPTS)
                    break
                except RedisUnavailableError:
                    await asyncio.sleep(0.1)
            assert result is not None
            assert result.position.offset == 1
            assert result.position.epoch != first.position.epoch
            await handler.wait_for_payload(channel, "two")
            await node.close()

        run(body, timeout=90)


def h_pubs(handler: RecordingHandler) -> list:  # type: ignore[type-arg]
    return [e for e in handler.events if e.kind == "publication"]


def shard_numsub(port: int, name: str) -> int:
    client = redis_sync.Redis(port=port)
    try:
        return int(client.execute_command("PUBSUB", "SHARDNUMSUB", name)[1])
    finally:
        client.close()


def migrate_slot(cluster: LocalRedisCluster, slot: int, source: int, target: int) -> None:
    """Move ``slot`` with its keys from the primary on ``source`` to the one on ``target``."""
    if source == target:
        return
    source_id = cluster.node_id(source)
    target_id = cluster.node_id(target)
    src = redis_sync.Redis(port=source)
    dst = redis_sync.Redis(port=target)
    try:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while True:
            batch = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not batch:
                break
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *batch)
        for server in cluster.servers:
            client = redis_sync.Redis(port=server.port)
            try:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            finally:
                client.close()
    finally:
        src.close()
        dst.close()
    cluster.wait_ok(30)


def test_history_store_on_a_cluster_rejects_a_standalone_connection_set() -> None:
    conns = RedisConnections("redis://127.0.0.1:1")
    with pytest.raises(ValueError):
        RedisHistoryStore(conns, cluster=True)
