"""The Redis backends over three independent ``redis-server`` shards.

The servers are started by the tests on free local ports (see
:mod:`.redis_servers`). Without ``redis-server`` the tests skip, except
under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis as redis_sync

from rtcore.backends.redis import (
    RedisBroker,
    RedisKeys,
    RedisPresenceManager,
    RedisUnavailableError,
)
from rtcore.backends.sharding import shard_index
from rtcore.engine.history import HistoryOptions
from rtcore.protocol.types import ClientInfo

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
from .redis_servers import RedisServer, redis_servers
from .test_redis import (
    delete_prefix,
    eventually,
    fast_broker,
    harness_factories,
    in_thread,
    pub,
    run,
    unique_prefix,
)


pytestmark = pytest.mark.redis

OPTS = HistoryOptions(size=100, ttl=60.0, meta_ttl=120.0)


@pytest.fixture(scope="module")
def shards() -> Iterator[list[RedisServer]]:
    with redis_servers(3) as servers:
        yield servers


@pytest.fixture
def urls(shards: list[RedisServer]) -> list[str]:
    return [server.url for server in shards]


@pytest.fixture
def prefix(urls: list[str]) -> Iterator[str]:
    value = unique_prefix()
    yield value
    delete_prefix(urls, value)


class TestShardedHistoryConformance(HistoryStoreConformance):
    @pytest.fixture
    def history_backend(self, urls: list[str]) -> HarnessFactory[HistoryHarness]:
        return harness_factories(lambda: urls)[0]


class TestShardedBrokerConformance(BrokerConformance):
    @pytest.fixture
    def broker_backend(self, urls: list[str]) -> HarnessFactory[BrokerHarness]:
        return harness_factories(lambda: urls)[1]


class TestShardedPresenceConformance(PresenceConformance):
    @pytest.fixture
    def presence_backend(self, urls: list[str]) -> HarnessFactory[PresenceHarness]:
        return harness_factories(lambda: urls)[2]


CHANNELS = [f"room:{i}" for i in range(30)]


class TestSharding:
    def test_each_channel_lives_on_its_jump_hash_shard(self, urls: list[str], prefix: str) -> None:
        assert len({shard_index(c, 3) for c in CHANNELS}) == 3  # all shards in use

        async def body() -> None:
            broker = RedisBroker(urls, prefix=prefix)
            presence = RedisPresenceManager(urls, prefix=prefix)
            handler = RecordingHandler()
            await broker.start(handler)
            try:
                await asyncio.gather(*(broker.subscribe(c) for c in CHANNELS))
                for channel in CHANNELS:
                    await broker.publish(channel, pub(channel), history=OPTS)
                    await presence.add(channel, "c1", ClientInfo("u", "c1"))
                await handler.wait_until(lambda: len(handler.events) == len(CHANNELS))
                assert sorted(e.channel for e in handler.events) == sorted(CHANNELS)
            finally:
                await broker.close()
                await presence.close()

        run(body)
        keys = RedisKeys(prefix)
        clients = [redis_sync.Redis.from_url(url) for url in urls]
        try:
            for channel in CHANNELS:
                home = shard_index(channel, 3)
                for i, client in enumerate(clients):
                    present = client.exists(
                        keys.stream(channel), keys.meta(channel), keys.presence_data(channel)
                    )
                    assert present == (3 if i == home else 0), (channel, i)
        finally:
            for client in clients:
                client.close()

    def test_one_pubsub_connection_per_shard_and_control_on_the_first(
        self, urls: list[str], prefix: str
    ) -> None:
        keys = RedisKeys(prefix)
        clients = [redis_sync.Redis.from_url(url) for url in urls]

        async def body() -> None:
            nodes = [RedisBroker(urls, prefix=prefix) for _ in range(2)]
            handlers = [RecordingHandler() for _ in nodes]
            for node, handler in zip(nodes, handlers, strict=True):
                await node.start(handler)
                await asyncio.gather(*(node.subscribe(c) for c in CHANNELS))
            try:
                for client in clients:
                    names = [c["name"] for c in client.client_list()]
                    assert names.count("rtcore-pubsub") == 2  # one per node and shard
                numsub = [
                    dict(c.pubsub_numsub(keys.control))[keys.control.encode()] for c in clients
                ]
                assert numsub == [2, 0, 0]
                await nodes[1].publish_control(b"ping")
                for handler in handlers:
                    await handler.wait_until(
                        lambda h=handler: any(e.kind == "control" for e in h.events)
                    )
                await asyncio.sleep(0.2)
                for handler in handlers:
                    assert [e.data for e in handler.events if e.kind == "control"] == [b"ping"]
            finally:
                for node in nodes:
                    await node.close()

        try:
            run(body)
        finally:
            for client in clients:
                client.close()


def test_a_shard_outage_is_isolated_and_survived() -> None:
    with redis_servers(3) as servers:
        urls = [s.url for s in servers]
        down = 1
        on_down = [c for c in CHANNELS if shard_index(c, 3) == down]
        elsewhere = [c for c in CHANNELS if shard_index(c, 3) != down]

        async def body() -> None:
            node = fast_broker(urls)
            publisher = fast_broker(urls)
            handler = RecordingHandler()
            await node.start(handler)
            await publisher.start(RecordingHandler())
            for channel in CHANNELS:
                await node.subscribe(channel)
            before = {
                c: (await publisher.publish(c, pub("before"), history=OPTS)).position
                for c in CHANNELS
            }
            await in_thread(servers[down].stop)
            await eventually(lambda: not node.healthy, what="outage noticed")
            # Channels on the other shards keep working.
            for channel in elsewhere:
                result = await publisher.publish(channel, pub("during"), history=OPTS)
                assert result.position.epoch == before[channel].epoch
                assert result.position.offset == 2
            await handler.wait_until(
                lambda: all("during" in handler.payloads(c) for c in elsewhere)
            )
            # Channels on the stopped shard fail loudly.
            with pytest.raises(RedisUnavailableError):
                await publisher.publish(on_down[0], pub("lost"), history=OPTS)
            with pytest.raises(RedisUnavailableError):
                await publisher.history(on_down[0])
            await in_thread(servers[down].start)
            await eventually(lambda: node.reconnects >= 1, what="resubscribed")
            for channel in on_down:
                for _ in range(50):
                    try:
                        result = await publisher.publish(channel, pub("after"), history=OPTS)
                        break
                    except RedisUnavailableError:
                        await asyncio.sleep(0.1)
                # The restarted shard lost its data: a new epoch.
                assert result.position.offset == 1
                assert result.position.epoch != before[channel].epoch
            await handler.wait_until(lambda: all("after" in handler.payloads(c) for c in on_down))
            await eventually(lambda: node.healthy, what="healthy again")
            await node.close()
            await publisher.close()

        run(body, timeout=60)


def test_a_node_starts_while_a_data_shard_is_down() -> None:
    with redis_servers(3) as servers:
        urls = [s.url for s in servers]
        down = 2  # control messages live on shard 0, which stays up
        on_down = next(c for c in CHANNELS if shard_index(c, 3) == down)
        elsewhere = next(c for c in CHANNELS if shard_index(c, 3) != down)
        servers[down].stop()

        async def body() -> None:
            node = fast_broker(urls)
            handler = RecordingHandler()
            await node.start(handler)
            assert not node.healthy
            await node.subscribe(elsewhere)
            await node.publish(elsewhere, pub("up"), history=OPTS)
            await handler.wait_for_payload(elsewhere, "up")
            with pytest.raises(RedisUnavailableError):
                await node.subscribe(on_down)
            assert node.subscribed_channels == 1
            await in_thread(servers[down].start)
            await eventually(lambda: node.pubsub_connected, what="shard connected")
            await node.subscribe(on_down)
            result = await node.publish(on_down, pub("late"), history=OPTS)
            assert result.position.offset == 1
            await handler.wait_for_payload(on_down, "late")
            await node.close()

        run(body, timeout=60)
