"""The Redis backends on one Redis server.

The conformance suites run against the shared server on 127.0.0.1:6379, each
test under its own random key prefix, whose keys are deleted afterwards (the
shared server is never flushed). Tests that stop, restart or freeze Redis
start their own ``redis-server`` on a free port (:mod:`.redis_servers`).

Without a server these tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager

import hiredis
import msgpack
import pytest
import redis as redis_sync
from redis.crc import key_slot

from rtcore.backends.redis import (
    FORMAT_VERSION,
    RedisBroker,
    RedisConnections,
    RedisEngineError,
    RedisHistoryStore,
    RedisKeys,
    RedisPresenceManager,
    RedisUnavailableError,
    create_redis_engine,
    decode_entry,
    encode_publication,
)
from rtcore.backends.redis.pubsub import LinkSettings
from rtcore.backends.redis.routing import ShardRouter
from rtcore.backends.sharding import fnv1a_64, jump_hash, shard_index
from rtcore.engine.broker import Closer, PublishResult
from rtcore.engine.history import HistoryOptions
from rtcore.protocol.types import ClientInfo, PresenceStats, Publication, StreamPosition

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
from .redis_servers import IN_CI, RedisServer, redis_ping


SHARED_PORT = 6379
SHARED_URL = f"redis://127.0.0.1:{SHARED_PORT}"

#: Redis expires keys on access with millisecond precision; this covers scheduling jitter.
SLACK = 0.1
#: Presence lease in the conformance suite (at least 3 * SLACK). The suite's
#: "still alive" checks have 0.3 * ttl of margin, which real sleeps on a busy
#: machine need.
PRESENCE_TTL = 2.0

OPTS = HistoryOptions(size=100, ttl=60.0, meta_ttl=120.0)


# ---------------------------------------------------------------------------
# Helpers shared with the sharded and cluster modules
# ---------------------------------------------------------------------------


def unique_prefix() -> str:
    return f"rtcore-test-{uuid.uuid4().hex[:12]}"


def delete_prefix(urls: Sequence[str], prefix: str) -> None:
    """Delete every key under ``prefix`` on each server (never a flush)."""
    for url in urls:
        client = redis_sync.Redis.from_url(url, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{prefix}.*", count=1000))
            for key in keys:
                client.delete(key)
        except redis_sync.ConnectionError:
            pass  # a server stopped by the test itself
        finally:
            client.close()


def harness_factories(
    urls: Callable[[], list[str]], *, cluster: bool = False
) -> tuple[
    HarnessFactory[HistoryHarness], HarnessFactory[BrokerHarness], HarnessFactory[PresenceHarness]
]:
    """Conformance factories for a deployment whose URLs ``urls()`` returns."""

    @asynccontextmanager
    async def history() -> AsyncIterator[HistoryHarness]:
        prefix = unique_prefix()
        store = RedisHistoryStore(urls(), prefix=prefix, cluster=cluster)
        try:
            yield HistoryHarness(store, asyncio.sleep, slack=SLACK)
        finally:
            await store.close()
            delete_prefix(urls(), prefix)

    @asynccontextmanager
    async def broker() -> AsyncIterator[BrokerHarness]:
        prefix = unique_prefix()
        b = RedisBroker(urls(), prefix=prefix, cluster=cluster)
        try:
            yield BrokerHarness(b, asyncio.sleep, slack=SLACK)
        finally:
            await b.close()
            delete_prefix(urls(), prefix)

    @asynccontextmanager
    async def presence() -> AsyncIterator[PresenceHarness]:
        prefix = unique_prefix()
        manager = RedisPresenceManager(urls(), prefix=prefix, cluster=cluster, ttl=PRESENCE_TTL)
        try:
            yield PresenceHarness(manager, PRESENCE_TTL, asyncio.sleep, slack=SLACK)
        finally:
            await manager.close()
            delete_prefix(urls(), prefix)

    return history, broker, presence


def require_shared_redis() -> None:
    if redis_ping(SHARED_PORT):
        return
    message = f"no Redis server on 127.0.0.1:{SHARED_PORT}"
    if IN_CI:
        pytest.fail(f"{message}, and CI=true requires it")
    pytest.skip(message)


def run(coro_fn: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    """Run an async test body in a fresh event loop, bounded by ``timeout``."""

    async def main() -> None:
        await asyncio.wait_for(coro_fn(), timeout)

    asyncio.run(main())


async def eventually(
    condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(0.02)


async def in_thread(fn: Callable[[], object]) -> None:
    await asyncio.get_running_loop().run_in_executor(None, fn)


def pub(data: str, **fields: object) -> Publication:
    return Publication(data=data.encode(), **fields)  # type: ignore[arg-type]


def payloads(pubs: Sequence[Publication]) -> list[str]:
    return [p.data.decode() for p in pubs]


# ---------------------------------------------------------------------------
# Conformance on the shared server
# ---------------------------------------------------------------------------


_history, _broker, _presence = harness_factories(lambda: [SHARED_URL])


@pytest.mark.redis
class TestRedisHistoryConformance(HistoryStoreConformance):
    @pytest.fixture
    def history_backend(self) -> HarnessFactory[HistoryHarness]:
        require_shared_redis()
        return _history


@pytest.mark.redis
class TestRedisBrokerConformance(BrokerConformance):
    @pytest.fixture
    def broker_backend(self) -> HarnessFactory[BrokerHarness]:
        require_shared_redis()
        return _broker


@pytest.mark.redis
class TestRedisPresenceConformance(PresenceConformance):
    @pytest.fixture
    def presence_backend(self) -> HarnessFactory[PresenceHarness]:
        require_shared_redis()
        return _presence


# ---------------------------------------------------------------------------
# Keys, hashing and the binary format (no server needed)
# ---------------------------------------------------------------------------


class TestKeysAndFormat:
    def test_standalone_key_layout(self) -> None:
        keys = RedisKeys("app")
        assert keys.stream("news") == "app.stream.news"
        assert keys.meta("news") == "app.meta.news"
        assert keys.result("news", "k1") == "app.result.4.news.k1"
        assert keys.presence_data("news") == "app.presence.data.news"
        assert keys.presence_expire("news") == "app.presence.expire.news"
        assert keys.presence_users("news") == "app.presence.users.news"
        assert keys.client("news") == "app.client.news"
        assert keys.control == "app.control"

    def test_result_keys_of_different_pairs_differ(self) -> None:
        keys = RedisKeys("app")
        assert keys.result("a.b", "c") != keys.result("a", "b.c")
        cluster = RedisKeys("app", cluster=True)
        assert cluster.result("a}.", "b") != cluster.result("a}", ".b")

    def test_families_cannot_collide(self) -> None:
        keys = RedisKeys("app")
        # A channel named like another family's suffix still gets a distinct key.
        assert keys.stream("meta.x") != keys.meta("x")
        assert keys.presence_data("x") != keys.presence_expire("x")

    @pytest.mark.parametrize("channel", ["news", "a:b#1", "", "}", "a}b", "{x}", "ü{}}"])
    def test_cluster_keys_of_a_channel_share_a_slot(self, channel: str) -> None:
        keys = RedisKeys("app", cluster=True)
        names = [
            keys.stream(channel),
            keys.meta(channel),
            keys.result(channel, "idem"),
            keys.presence_data(channel),
            keys.presence_expire(channel),
            keys.presence_users(channel),
            keys.client(channel),
        ]
        assert len({key_slot(n.encode()) for n in names}) == 1

    def test_cluster_parts_are_distinct(self) -> None:
        keys = RedisKeys("app", cluster=True)
        assert keys.part("news") == "{news}"
        hashed = keys.part("")
        assert hashed.endswith("}}")
        # The plain channel named like the hash tag of "" must not collide with "".
        assert keys.part(hashed[1:17]) != hashed
        channels = ["", "}", "a}", "a}b", "x", "{x", "x}}"]
        assert len({keys.part(c) for c in channels}) == len(channels)

    @pytest.mark.parametrize("prefix", ["", "a{b", "a}b"])
    def test_invalid_prefix(self, prefix: str) -> None:
        with pytest.raises(ValueError):
            RedisKeys(prefix)

    def test_publication_body_round_trip(self) -> None:
        info = ClientInfo("u", "c", b'{"a":1}', None)
        original = Publication(b"\x00\xffdata", 7, info, {"k": "v"}, 123, "other", True)
        body = encode_publication(original)
        decoded = decode_entry(bytes([FORMAT_VERSION]) + body, 7)
        assert decoded == original
        assert decode_entry(b"\x02" + body, 7) is None
        assert decode_entry(b"", 7) is None

    def test_body_is_the_documented_msgpack_array(self) -> None:
        body = encode_publication(Publication(b"d", 0, ClientInfo("u", "c"), None, 5))
        assert msgpack.unpackb(body) == [b"d", ["u", "c", None, None], None, 5, "", False]

    def test_decoder_ignores_appended_fields(self) -> None:
        body = msgpack.packb([b"d", None, None, 5, "", False, "future field"])
        decoded = decode_entry(b"\x01" + body, 3)
        assert decoded == Publication(b"d", 3, None, None, 5, "", False)


class TestSharding:
    def test_jump_hash_reference_vectors(self) -> None:
        # From the reference implementation (github.com/dgryski/go-jump).
        assert [jump_hash(1, n) for n in range(1, 20)] == [
            0,
            0,
            0,
            0,
            0,
            0,
            6,
            6,
            6,
            6,
            6,
            6,
            6,
            6,
            6,
            6,
            6,
            17,
            17,
        ]
        assert [jump_hash(0xDEADBEEF, n) for n in range(1, 20)] == [
            0,
            1,
            2,
            3,
            3,
            5,
            5,
            5,
            5,
            5,
            5,
            5,
            5,
            5,
            5,
            5,
            16,
            16,
            16,
        ]
        assert jump_hash(256, 1024) == 520
        with pytest.raises(ValueError):
            jump_hash(1, 0)

    def test_fnv1a_64_reference_vectors(self) -> None:
        assert fnv1a_64(b"") == 0xCBF29CE484222325
        assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
        assert fnv1a_64(b"foobar") == 0x85944171F73967E8

    def test_channels_spread_evenly_and_move_only_to_a_new_shard(self) -> None:
        channels = [f"chat:{i}" for i in range(3000)]
        three = [shard_index(c, 3) for c in channels]
        counts = [three.count(i) for i in range(3)]
        assert all(800 < n < 1200 for n in counts), counts
        four = [shard_index(c, 4) for c in channels]
        moved = [(a, b) for a, b in zip(three, four, strict=True) if a != b]
        assert all(b == 3 for _, b in moved)
        assert 500 < len(moved) < 1000


# ---------------------------------------------------------------------------
# Behaviour on the shared server
# ---------------------------------------------------------------------------


@pytest.fixture
def shared_prefix() -> Iterator[str]:
    require_shared_redis()
    prefix = unique_prefix()
    yield prefix
    delete_prefix([SHARED_URL], prefix)


@pytest.mark.redis
class TestRedisBehaviour:
    def test_stored_layout_ttls_and_messages(self, shared_prefix: str) -> None:
        raw = redis_sync.Redis.from_url(SHARED_URL)
        keys = RedisKeys(shared_prefix)
        listener = raw.pubsub()
        listener.subscribe(keys.client("a"))
        assert listener.get_message(timeout=2)["type"] == "subscribe"

        async def body() -> None:
            broker = RedisBroker(SHARED_URL, prefix=shared_prefix)
            await broker.start(RecordingHandler())
            try:
                opts = HistoryOptions(size=10, ttl=20.0, meta_ttl=40.0)
                info = ClientInfo("u", "c", b"{}", None)
                result = await broker.publish(
                    "a",
                    Publication(b"x", info=info, time=99),
                    history=opts,
                    idempotency_key="key1",
                    idempotent_ttl=30.0,
                )
                assert result.position.offset == 1
                epoch = result.position.epoch
                [(entry_id, fields)] = raw.xrange(keys.stream("a"))
                assert entry_id == b"1-0"
                assert fields[b"d"][0] == FORMAT_VERSION
                assert msgpack.unpackb(fields[b"d"][1:]) == [
                    b"x",
                    ["u", "c", b"{}", None],
                    None,
                    99,
                    "",
                    False,
                ]
                assert raw.hgetall(keys.meta("a")) == {b"e": epoch.encode(), b"s": b"1"}
                assert 19_000 < raw.pttl(keys.stream("a")) <= 20_000
                assert 39_000 < raw.pttl(keys.meta("a")) <= 40_000
                assert raw.get(keys.result("a", "key1")) == f"1:{epoch}".encode()
                assert 29_000 < raw.pttl(keys.result("a", "key1")) <= 30_000
                await broker.publish("a", Publication(b"y", time=100), history=opts, use_delta=True)
                await broker.publish_join("a", ClientInfo("u2", "c2"))
            finally:
                await broker.close()

        run(body)
        messages = []
        deadline = time.monotonic() + 5
        while len(messages) < 3 and time.monotonic() < deadline:
            m = listener.get_message(timeout=0.5)
            if m and m["type"] == "message":
                messages.append(m["data"])
        listener.close()
        raw.close()
        assert [m[0] for m in messages] == [FORMAT_VERSION] * 3
        first, second, join = (msgpack.unpackb(m[1:]) for m in messages)
        assert first[:3] == [0, 1, first[2]] and first[4] is None
        assert first[3] == [b"x", ["u", "c", b"{}", None], None, 99, "", False]
        # With use_delta the message carries the previous publication's body.
        assert second[:2] == [0, 2] and second[4][0] == b"x"
        assert join == [1, ["u2", "c2", None, None]]

    def test_presence_keys_expire_with_the_lease_after_add_many(self, shared_prefix: str) -> None:
        raw = redis_sync.Redis.from_url(SHARED_URL)
        keys = RedisKeys(shared_prefix)

        async def body() -> None:
            manager = RedisPresenceManager(SHARED_URL, prefix=shared_prefix, ttl=0.5)
            try:
                long_user = ClientInfo("x" * 300, "c2")
                await manager.add_many(
                    [("a", "c1", ClientInfo("ü" * 40, "c1")), ("a", "c2", long_user)]
                    + [("b", f"c{i}", ClientInfo("u", f"c{i}")) for i in range(5)]
                )
                for channel in ("a", "b"):
                    for key in (
                        keys.presence_data(channel),
                        keys.presence_expire(channel),
                        keys.presence_users(channel),
                    ):
                        assert 0 < raw.pttl(key) <= 500
                # The same entry again only extends its lease; a changed one
                # (another user) moves the user counts.
                await manager.add_many([("a", "c2", long_user), ("a", "c1", ClientInfo("v", "c1"))])
                assert await manager.presence("a") == {"c1": ClientInfo("v", "c1"), "c2": long_user}
                assert await manager.stats("a") == PresenceStats(2, 2)
                assert set(raw.hkeys(keys.presence_users("a"))) == {b"x" * 300, b"v"}
                await asyncio.sleep(0.5 + SLACK)
                assert raw.exists(keys.presence_data("a"), keys.presence_data("b")) == 0
            finally:
                await manager.close()

        run(body)
        raw.close()

    def test_presence_keys_expire_with_the_lease(self, shared_prefix: str) -> None:
        raw = redis_sync.Redis.from_url(SHARED_URL)
        keys = RedisKeys(shared_prefix)

        async def body() -> None:
            manager = RedisPresenceManager(SHARED_URL, prefix=shared_prefix, ttl=0.5)
            try:
                await manager.add("a", "c1", ClientInfo("ü" * 40, "c1"))
                await manager.add("a", "c2", ClientInfo("x" * 300, "c2"))
                assert await manager.stats("a") == PresenceStats(2, 2)
                assert 0 < raw.pttl(keys.presence_data("a")) <= 500
                # Long user ids (str8 / str16 in msgpack) are parsed by the script too.
                await manager.remove("a", "c2", "x" * 300)
                assert await manager.stats("a") == PresenceStats(1, 1)
                await asyncio.sleep(0.5 + SLACK)
                assert (
                    raw.exists(
                        keys.presence_data("a"), keys.presence_expire("a"), keys.presence_users("a")
                    )
                    == 0
                )
            finally:
                await manager.close()

        run(body)
        raw.close()

    def test_two_nodes_share_channels_and_control(self, shared_prefix: str) -> None:
        async def body() -> None:
            node1 = RedisBroker(SHARED_URL, prefix=shared_prefix)
            node2 = RedisBroker(SHARED_URL, prefix=shared_prefix)
            h1, h2 = RecordingHandler(), RecordingHandler()
            await node1.start(h1)
            await node2.start(h2)
            try:
                await node1.subscribe("a")
                await node2.subscribe("a")
                for i in range(5):
                    await node1.publish("a", pub(f"m{i}"), history=OPTS)
                await node2.publish_control(b"ctl")
                for h in (h1, h2):
                    await h.wait_until(lambda h=h: len(h.publications("a")) == 5)
                    await h.wait_until(lambda h=h: any(e.kind == "control" for e in h.events))
                assert h1.payloads("a") == h2.payloads("a") == [f"m{i}" for i in range(5)]
                assert [e.position for e in h1.publications("a")] == [
                    e.position for e in h2.publications("a")
                ]
                await asyncio.sleep(0.2)
                for h in (h1, h2):
                    assert [e.data for e in h.events if e.kind == "control"] == [b"ctl"]
            finally:
                await node1.close()
                await node2.close()

        run(body)

    def test_concurrent_publishers_on_two_nodes_keep_offset_order(self, shared_prefix: str) -> None:
        async def body() -> None:
            nodes = [RedisBroker(SHARED_URL, prefix=shared_prefix) for _ in range(2)]
            handlers = [RecordingHandler() for _ in nodes]
            for node, handler in zip(nodes, handlers, strict=True):
                await node.start(handler)
                await node.subscribe("a")
            try:

                async def publisher(node: RedisBroker, tag: str) -> None:
                    for i in range(100):
                        await node.publish("a", pub(f"{tag}{i}"), history=OPTS)

                await asyncio.gather(
                    *(
                        publisher(node, f"n{k}t{t}-")
                        for k, node in enumerate(nodes)
                        for t in range(5)
                    )
                )
                for handler in handlers:
                    await handler.wait_until(lambda h=handler: len(h.publications("a")) == 1000)
                    got = [e.position.offset for e in handler.publications("a") if e.position]
                    assert got == list(range(1, 1001))
                assert handlers[0].payloads("a") == handlers[1].payloads("a")
            finally:
                for node in nodes:
                    await node.close()

        run(body)

    def test_rapid_subscribe_unsubscribe_settles_on_the_last_call(self, shared_prefix: str) -> None:
        async def body() -> None:
            node = RedisBroker(SHARED_URL, prefix=shared_prefix)
            other = RedisBroker(SHARED_URL, prefix=shared_prefix)
            handler = RecordingHandler()
            await node.start(handler)
            await other.start(RecordingHandler())
            try:
                tasks = []
                for i in range(41):  # ends with a subscribe
                    call = node.subscribe if i % 2 == 0 else node.unsubscribe
                    tasks.append(asyncio.ensure_future(call("a")))
                await asyncio.gather(*tasks)
                await other.publish("a", pub("in"))
                await handler.wait_for_payload("a", "in")
                tasks = []
                for i in range(41):  # ends with an unsubscribe
                    call = node.unsubscribe if i % 2 == 0 else node.subscribe
                    tasks.append(asyncio.ensure_future(call("a")))
                await asyncio.gather(*tasks)
                await other.publish("a", pub("out"))
                await node.subscribe("b")
                await other.publish("b", pub("barrier"))
                await handler.wait_for_payload("b", "barrier")
                await asyncio.sleep(0.1)
                assert handler.payloads("a") == ["in"]
            finally:
                await node.close()
                await other.close()

        run(body)

    def test_factory_shares_connections_until_both_close(self, shared_prefix: str) -> None:
        async def body() -> None:
            broker, presence = create_redis_engine([SHARED_URL], shared_prefix, presence_ttl=30.0)
            assert isinstance(broker, Closer) and isinstance(presence, Closer)
            assert broker.connections is presence.connections
            assert presence.ttl == 30.0
            await broker.start(RecordingHandler())
            await presence.add("a", "c1", ClientInfo("u", "c1"))
            await broker.close()
            # The presence manager still works: the connections are shared.
            assert await presence.stats("a") == PresenceStats(1, 1)
            await presence.close()
            with pytest.raises(RedisEngineError):
                await presence.stats("a")

        run(body)

    def test_health_and_options_are_checked(self, shared_prefix: str) -> None:
        with pytest.raises(ValueError):
            RedisConnections([])
        with pytest.raises(ValueError):
            RedisBroker(SHARED_URL, prefix=shared_prefix, subscribe_timeout=0)
        with pytest.raises(ValueError):
            RedisPresenceManager(SHARED_URL, prefix=shared_prefix, ttl=0)

        async def body() -> None:
            broker = RedisBroker(SHARED_URL, prefix=shared_prefix)
            assert not broker.healthy  # not started
            await broker.start(RecordingHandler())
            assert broker.healthy
            assert broker.last_error is None
            await broker.close()
            assert not broker.healthy

        run(body)


# ---------------------------------------------------------------------------
# Faults, on a server of our own
# ---------------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    """A server that keeps its data across restarts (AOF, fsync always)."""
    server = RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def fast_broker(urls: str | list[str], prefix: str = "rtcore") -> RedisBroker:
    """A broker that notices failures quickly."""
    conns = RedisConnections(urls, socket_timeout=1.0, connect_timeout=0.5)
    return RedisBroker(
        conns,
        prefix=prefix,
        subscribe_timeout=2.0,
        health_check_interval=0.3,
        reconnect_delay_min=0.02,
        reconnect_delay_max=0.2,
    )


@pytest.mark.redis
class TestRedisFaults:
    def test_subscriptions_are_batched_on_one_connection(self, own_redis: RedisServer) -> None:
        raw = redis_sync.Redis.from_url(own_redis.url)
        raw.config_resetstat()
        n = 2000

        async def body() -> None:
            node = fast_broker(own_redis.url)
            other = fast_broker(own_redis.url)
            handler = RecordingHandler()
            await node.start(handler)
            await other.start(RecordingHandler())
            try:
                await asyncio.gather(*(node.subscribe(f"ch{i}") for i in range(n)))
                assert node.subscribed_channels == n
                stats = raw.info("commandstats")
                # 2000 channels in commands of at most 512, plus the two control subscriptions.
                assert stats["cmdstat_subscribe"]["calls"] <= 6
                names = [c["name"] for c in raw.client_list()]
                assert names.count("rtcore-pubsub") == 2  # one per broker
                for i in range(0, n, 199):
                    await other.publish(f"ch{i}", pub(f"p{i}"))
                await handler.wait_until(
                    lambda: (
                        sum(len(handler.payloads(f"ch{i}")) for i in range(0, n, 199))
                        == len(range(0, n, 199))
                    )
                )
                await asyncio.gather(*(node.unsubscribe(f"ch{i}") for i in range(n)))
                assert node.subscribed_channels == 0
                await eventually(
                    lambda: raw.pubsub_numsub("rtcore.client.ch7")[0][1] == 0,
                    what="unsubscribed on the server",
                )
                assert raw.info("commandstats")["cmdstat_unsubscribe"]["calls"] <= 4
            finally:
                await node.close()
                await other.close()

        run(body)
        raw.close()

    def test_start_and_calls_fail_clearly_while_redis_is_down(self, own_redis: RedisServer) -> None:
        async def body() -> None:
            own_redis.stop()
            broker = fast_broker(own_redis.url)
            with pytest.raises(RedisUnavailableError):
                await broker.start(RecordingHandler())
            await in_thread(own_redis.start)
            # A failed start leaves the broker startable.
            await broker.start(RecordingHandler())
            await in_thread(own_redis.stop)
            with pytest.raises(RedisUnavailableError):
                await broker.publish("a", pub("x"), history=OPTS)
            with pytest.raises(RedisUnavailableError):
                await broker.publish("a", pub("x"))
            with pytest.raises(RedisUnavailableError):
                await broker.history("a")
            with pytest.raises(RedisUnavailableError):
                await broker.subscribe("b")
            assert not broker.healthy
            assert isinstance(broker.last_error, BaseException)
            await in_thread(own_redis.start)
            await eventually(lambda: broker.reconnects > 0, what="pub/sub reconnected")
            result = await broker.publish("a", pub("x"), history=OPTS)
            assert result.position.offset == 1
            await broker.subscribe("b")
            assert broker.healthy
            await broker.close()

        run(body)

    def test_restart_under_publish_load_loses_no_acknowledged_publication(
        self, persistent_redis: RedisServer
    ) -> None:
        async def body() -> None:
            publisher = fast_broker(persistent_redis.url)
            subscriber = fast_broker(persistent_redis.url)
            handler = RecordingHandler()
            await publisher.start(RecordingHandler())
            await subscriber.start(handler)
            await subscriber.subscribe("a")
            acked: dict[str, StreamPosition] = {}
            failed: list[str] = []
            stop = asyncio.Event()

            async def publish_loop(tag: str) -> None:
                i = 0
                while not stop.is_set() and i < 5000:
                    payload = f"{tag}-{i}"
                    i += 1
                    try:
                        result = await publisher.publish("a", pub(payload), history=OPTS_BIG)
                    except RedisUnavailableError:
                        failed.append(payload)
                        await asyncio.sleep(0.01)
                    else:
                        acked[payload] = result.position
                    await asyncio.sleep(0.002)

            tasks = [asyncio.ensure_future(publish_loop(f"t{t}")) for t in range(4)]
            await eventually(lambda: len(acked) >= 50, what="publishing started")
            await in_thread(lambda: persistent_redis.restart(down_for=0.5))
            before = len(acked)
            await eventually(
                lambda: len(acked) >= before + 100,
                timeout=15,
                what="publishing resumed after the restart",
            )
            stop.set()
            await asyncio.gather(*tasks)
            assert failed, "the restart should have failed some publishes"

            history = await publisher.history("a", limit=-1)
            stored = {p.data.decode(): p.offset for p in history.publications}
            epochs = {position.epoch for position in acked.values()}
            # Persistence kept the stream: one epoch, and every acknowledged
            # publication is in history under the offset its publisher got.
            assert epochs == {history.position.epoch}
            for payload, position in acked.items():
                assert stored.get(payload) == position.offset, payload
            assert sorted(stored.values()) == list(range(1, history.position.offset + 1))

            # The subscriber receives publications again after the reconnect.
            await eventually(lambda: subscriber.reconnects >= 1, what="subscriber reconnected")
            await publisher.publish("a", pub("after"), history=OPTS_BIG)
            await handler.wait_for_payload("a", "after")
            delivered = [e.position.offset for e in handler.publications("a") if e.position]
            assert delivered == sorted(delivered)  # in order, possibly with a gap
            await publisher.close()
            await subscriber.close()

        run(body, timeout=90)

    def test_data_loss_starts_a_new_epoch(self, own_redis: RedisServer) -> None:
        async def body() -> None:
            broker = fast_broker(own_redis.url)
            handler = RecordingHandler()
            await broker.start(handler)
            await broker.subscribe("a")
            for i in range(3):
                await broker.publish("a", pub(f"m{i}"), history=OPTS)
            old = (await broker.history("a")).position
            assert old.offset == 3
            await in_thread(own_redis.restart)  # no persistence: the data is gone
            await eventually(lambda: broker.reconnects >= 1, what="reconnected")
            fresh = (await broker.history("a")).position
            assert fresh.offset == 0 and fresh.epoch not in ("", old.epoch)
            # A client recovering from the old position gets nothing from the new stream.
            stale = await broker.history("a", since=old, limit=-1)
            assert stale.publications == [] and stale.position.epoch == fresh.epoch
            result = await broker.publish("a", pub("n1"), history=OPTS)
            assert result.position == StreamPosition(1, fresh.epoch)
            await handler.wait_for_payload("a", "n1")
            await broker.close()

        run(body)

    def test_frozen_server_is_detected_and_survived(self, own_redis: RedisServer) -> None:
        assert own_redis.proc is not None
        pid = own_redis.proc.pid

        async def body() -> None:
            node = fast_broker(own_redis.url)
            other = fast_broker(own_redis.url)
            handler = RecordingHandler()
            await node.start(handler)
            await other.start(RecordingHandler())
            await node.subscribe("a")
            os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(RedisUnavailableError):
                    await other.publish("a", pub("frozen"))
                # The PING health check notices the silent connection.
                await eventually(lambda: not node.healthy, timeout=5, what="declared unhealthy")
            finally:
                os.kill(pid, signal.SIGCONT)
            await eventually(lambda: node.healthy, timeout=10, what="healthy again")
            for _attempt in range(50):
                try:
                    await other.publish("a", pub("thawed"))
                    break
                except RedisUnavailableError:
                    await asyncio.sleep(0.1)
            await handler.wait_for_payload("a", "thawed")
            await node.close()
            await other.close()

        run(body)

    def test_lost_script_cache_is_refilled(self, own_redis: RedisServer) -> None:
        raw = redis_sync.Redis.from_url(own_redis.url)

        async def body() -> None:
            broker = fast_broker(own_redis.url)
            presence = RedisPresenceManager(broker.connections, ttl=10.0)
            handler = RecordingHandler()
            await broker.start(handler)
            await broker.subscribe("a")
            await broker.publish("a", pub("m1"), history=OPTS)
            raw.script_flush()
            # NOSCRIPT means the script did not run: it is run from source, once.
            results = await asyncio.gather(
                *(broker.publish("a", pub(f"m{i}"), history=OPTS) for i in range(2, 6))
            )
            assert sorted(r.position.offset for r in results) == [2, 3, 4, 5]
            raw.script_flush()
            await presence.add("a", "c1", ClientInfo("u", "c1"))
            assert await presence.stats("a") == PresenceStats(1, 1)
            raw.script_flush()
            await presence.add_many([("a", "c2", ClientInfo("v", "c2"))])
            assert await presence.stats("a") == PresenceStats(2, 2)
            history = await broker.history("a", limit=-1)
            assert [p.offset for p in history.publications] == [1, 2, 3, 4, 5]
            await handler.wait_until(lambda: len(handler.publications("a")) == 5)
            await presence.close()
            await broker.close()

        run(body)
        raw.close()

    def test_control_is_resubscribed_after_a_restart(self, own_redis: RedisServer) -> None:
        async def body() -> None:
            node = fast_broker(own_redis.url)
            handler = RecordingHandler()
            await node.start(handler)
            await in_thread(lambda: own_redis.restart(down_for=0.3))
            await eventually(lambda: node.reconnects >= 1, what="reconnected")
            for _ in range(50):
                try:
                    await node.publish_control(b"hello")
                    break
                except RedisUnavailableError:
                    await asyncio.sleep(0.1)
            await handler.wait_until(lambda: any(e.data == b"hello" for e in handler.events))
            await node.close()

        run(body)


OPTS_BIG = HistoryOptions(size=100_000, ttl=600.0, meta_ttl=1200.0)


@pytest.mark.redis
def test_publish_result_is_a_plain_value(shared_prefix: str) -> None:
    async def body() -> None:
        broker = RedisBroker(SHARED_URL, prefix=shared_prefix)
        await broker.start(RecordingHandler())
        try:
            first = await broker.publish("a", pub("x"), history=OPTS, idempotency_key="k")
            again = await broker.publish("a", pub("x"), history=OPTS, idempotency_key="k")
            assert again == PublishResult(first.position, True)
            # A key used without history and then with it answers with its first result.
            plain = await broker.publish("b", pub("y"), idempotency_key="k2")
            assert plain == PublishResult(StreamPosition(0, ""), False)
            assert (
                await broker.publish("b", pub("y"), history=OPTS, idempotency_key="k2")
            ).suppressed
        finally:
            await broker.close()

    run(body)


# ---------------------------------------------------------------------------
# Subscription deadlines under loop lag
# ---------------------------------------------------------------------------


@asynccontextmanager
async def silent_redis(answer_setup: bool) -> AsyncIterator[str]:
    """A fake Redis on a free loopback port that never confirms a subscription.

    With ``answer_setup`` it answers the pub/sub connection's CLIENT SETNAME,
    so SUBSCRIBE is sent and never answered; without, it answers nothing.
    """

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                if answer_setup and command[0].upper() == b"CLIENT":
                    writer.write(b"+OK\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.close()


class TestSubscribeDeadline:
    @pytest.mark.redis
    def test_confirmation_waiting_unread_when_the_deadline_passes_succeeds(
        self, shared_prefix: str
    ) -> None:
        async def body() -> None:
            handler = RecordingHandler()
            broker = RedisBroker(SHARED_URL, prefix=shared_prefix, subscribe_timeout=0.2)
            await broker.start(handler)
            try:
                assert broker._router is not None
                link = broker._router.links[0]
                loop = asyncio.get_running_loop()
                subscribing = asyncio.ensure_future(broker.subscribe("lagged"))
                await asyncio.sleep(0)  # SUBSCRIBE is queued; its flush runs next, then lag()

                def lag() -> None:
                    # The loop stalls past the deadline with the confirmation in
                    # the socket, and (like a loop that runs due timers before
                    # polling) reads it only after the deadline has run.
                    assert link._proto is not None and link._proto.transport is not None
                    transport = link._proto.transport
                    transport.pause_reading()
                    sock = transport.get_extra_info("socket")
                    assert select.select([sock], [], [], 10.0)[0], "no confirmation"
                    time.sleep(0.3)
                    loop.call_soon(transport.resume_reading)

                loop.call_soon(lag)
                await subscribing
                assert broker.subscribed_channels == 1
                await broker.publish("lagged", pub("x"))
                await handler.wait_until(lambda: handler.payloads("lagged") == ["x"])
            finally:
                await broker.close()

        run(body)

    @pytest.mark.parametrize("answer_setup", [True, False], ids=["silent-subscribe", "silent"])
    def test_subscription_redis_never_confirms_fails_clearly_and_logs_one_line(
        self, answer_setup: bool, caplog: pytest.LogCaptureFixture
    ) -> None:
        settings = LinkSettings(
            sharded=False, connect_timeout=5.0, health_interval=5.0, delay_min=0.05, delay_max=0.2
        )

        async def body() -> None:
            async with silent_redis(answer_setup) as url:
                router = ShardRouter(RedisConnections(url), lambda name, data: None, settings)
                await router.start()
                link = router.links[0]
                try:
                    if answer_setup:
                        await eventually(lambda: link.connected, what="pub/sub set up")
                    names = [b"a", b"b", b"c"]
                    for name in names:
                        router.place(name, None)
                    results = await asyncio.gather(
                        *(router.subscribe(name, 0.2) for name in names), return_exceptions=True
                    )
                    for result in results:
                        assert isinstance(result, RedisUnavailableError)
                        assert "did not confirm the subscription" in str(result)
                    assert not any(router.is_desired(name) for name in names)
                finally:
                    await router.close()

        with caplog.at_level(logging.WARNING, logger="rtcore.backends.redis.routing"):
            run(body)
        lines = [r for r in caplog.records if r.name == "rtcore.backends.redis.routing"]
        assert [r.getMessage().split(" (")[0] for r in lines] == [
            "Redis did not confirm 1 subscription(s) in time"
        ]
        assert all(r.exc_info is None for r in lines)
