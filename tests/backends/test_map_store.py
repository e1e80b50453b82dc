"""The ``MapStore`` seam: the same suite against the memory store and the Redis store.

The Redis store runs on the shared server at 127.0.0.1:6379 (skipped without
one, failing under ``CI=true``), under a unique key prefix, with a started
Redis broker whose pub/sub delivers the changes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from rtcore.config.maps import MapOptions
from rtcore.engine.map_memory import MemoryMapStore
from rtcore.engine.maps import UnrecoverablePositionError
from rtcore.protocol.types import ClientInfo, Publication, StreamPosition

from .redis_servers import IN_CI, redis_ping
from .test_redis import SHARED_PORT, SHARED_URL, delete_prefix, unique_prefix


OPTS = MapOptions(mode="persistent", stream_size=5, stream_ttl=60.0)


class Recorder:
    """A BrokerEventHandler that keeps the publications it gets."""

    def __init__(self) -> None:
        self.pubs: list[tuple[str, Publication, StreamPosition]] = []

    def on_publication(
        self, channel: str, pub: Publication, position: StreamPosition, prev: Any
    ) -> None:
        self.pubs.append((channel, pub, position))

    def on_join(self, channel: str, info: ClientInfo) -> None:
        pass

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        pass

    def on_control(self, data: bytes) -> None:
        pass


@asynccontextmanager
async def memory_store() -> AsyncIterator[tuple[Any, Recorder]]:
    rec = Recorder()
    yield MemoryMapStore(rec), rec


@asynccontextmanager
async def redis_store() -> AsyncIterator[tuple[Any, Recorder]]:
    if not redis_ping(SHARED_PORT):
        if IN_CI:
            pytest.fail("Redis is not running on 127.0.0.1:6379")
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    from rtcore.backends.redis import RedisBroker
    from rtcore.backends.redis.maps import RedisMapStore

    prefix = unique_prefix()
    rec = Recorder()
    broker = RedisBroker(SHARED_URL, prefix=prefix)
    await broker.start(rec)
    store = RedisMapStore(broker)
    try:
        yield store, rec
    finally:
        await store.close()
        await broker.close()
        delete_prefix([SHARED_URL], prefix)


STORES = {"memory": memory_store, "redis": redis_store}


@pytest.fixture(params=list(STORES))
def store_factory(request: pytest.FixtureRequest) -> Any:
    return STORES[request.param]


def pub(key: str, value: Any = None, *, removed: bool = False) -> Publication:
    data = b"" if removed else json.dumps(value).encode()
    return Publication(data=data, key=key, removed=removed, tags={"k": key})


async def until(cond: Any, what: str) -> None:
    for _ in range(300):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_publish_sets_state_appends_stream_and_delivers(store_factory: Any) -> None:
    async def main() -> None:
        async with store_factory() as (store, rec):
            if hasattr(store, "_broker"):
                await store._broker.subscribe("m")
            r1 = await store.publish("m", pub("a", 1), OPTS)
            r2 = await store.publish("m", pub("b", 2), OPTS)
            r3 = await store.publish("m", pub("a", 3), OPTS)
            assert [r.position.offset for r in (r1, r2, r3)] == [1, 2, 3]
            assert r1.position.epoch == r3.position.epoch != ""
            assert not r3.suppressed
            state = await store.read_state("m", OPTS, limit=-1)
            assert state.position == r3.position
            got = {e.key: (json.loads(e.data), e.offset) for e in state.entries}
            assert got == {"a": (3, 3), "b": (2, 2)}
            stream = await store.read_stream("m", OPTS)
            assert [(p.key, p.offset) for p in stream.publications] == [
                ("a", 1),
                ("b", 2),
                ("a", 3),
            ]
            assert stream.publications[0].tags == {"k": "a"}
            await until(lambda: len(rec.pubs) == 3, "three deliveries")
            assert [(c, p.key, pos.offset) for c, p, pos in rec.pubs] == [
                ("m", "a", 1),
                ("m", "b", 2),
                ("m", "a", 3),
            ]
            assert await store.stats("m", OPTS) == 2

    run(main())


def test_remove_and_suppression(store_factory: Any) -> None:
    async def main() -> None:
        async with store_factory() as (store, rec):
            if hasattr(store, "_broker"):
                await store._broker.subscribe("m")
            await store.publish("m", pub("a", 1), OPTS)
            gone = await store.publish("m", pub("a", removed=True), OPTS)
            assert not gone.suppressed and gone.position.offset == 2
            again = await store.publish("m", pub("a", removed=True), OPTS)
            assert again.suppressed and again.suppress_reason == "key_not_found"
            assert again.position == gone.position
            assert (await store.read_state("m", OPTS, limit=-1)).entries == []
            last = (await store.read_stream("m", OPTS)).publications[-1]
            assert last.key == "a" and last.removed
            await until(lambda: len(rec.pubs) == 2, "two deliveries")
            assert rec.pubs[1][1].removed
            first = await store.publish("m", pub("b", 1), OPTS, idempotency_key="x")
            dup = await store.publish("m", pub("b", 2), OPTS, idempotency_key="x")
            assert dup.suppressed and dup.suppress_reason == "idempotency"
            assert dup.position == first.position
            state = await store.read_state("m", OPTS, key="b")
            assert [json.loads(e.data) for e in state.entries] == [1]

    run(main())


def test_state_pages_cover_every_key_once(store_factory: Any) -> None:
    async def main() -> None:
        async with store_factory() as (store, _):
            for i in range(25):
                await store.publish("m", pub(f"k{i:02d}", i), OPTS)
            seen: list[str] = []
            cursor = ""
            for _ in range(100):
                page = await store.read_state("m", OPTS, cursor=cursor, limit=10)
                assert page.position.offset == 25
                seen.extend(e.key for e in page.entries)
                cursor = page.cursor
                if not cursor:
                    break
            assert sorted(set(seen)) == [f"k{i:02d}" for i in range(25)]
            top = await store.read_state("m", OPTS, limit=0)
            assert top.entries == [] and top.position.offset == 25
            assert (await store.read_state("m", OPTS, key="nope")).entries == []

    run(main())


def test_stream_reads_since_limit_reverse_and_trim(store_factory: Any) -> None:
    async def main() -> None:
        async with store_factory() as (store, _):
            for i in range(8):
                r = await store.publish("m", pub(f"k{i}", i), OPTS)
            epoch = r.position.epoch
            res = await store.read_stream("m", OPTS, since=StreamPosition(5, epoch))
            assert [p.offset for p in res.publications] == [6, 7, 8]
            res = await store.read_stream("m", OPTS, since=StreamPosition(5, epoch), limit=2)
            assert [p.offset for p in res.publications] == [6, 7]
            res = await store.read_stream("m", OPTS, limit=2, reverse=True)
            assert [p.offset for p in res.publications] == [8, 7]
            # stream_size 5: the first three changes are gone.
            res = await store.read_stream("m", OPTS)
            assert [p.offset for p in res.publications] == [4, 5, 6, 7, 8]
            assert (await store.read_stream("m", OPTS, limit=0)).publications == []
            with pytest.raises(UnrecoverablePositionError):
                await store.read_stream("m", OPTS, since=StreamPosition(5, "other"))
            with pytest.raises(UnrecoverablePositionError):
                await store.read_state("m", OPTS, revision=StreamPosition(5, "other"))

    run(main())


def test_clear_starts_a_new_epoch(store_factory: Any) -> None:
    async def main() -> None:
        async with store_factory() as (store, _):
            r = await store.publish("m", pub("a", 1), OPTS)
            await store.clear("m")
            assert await store.stats("m", OPTS) == 0
            page = await store.read_state("m", OPTS, limit=-1)
            assert page.entries == []
            assert page.position.offset == 0 and page.position.epoch != r.position.epoch

    run(main())


RECOVERABLE = MapOptions(mode="recoverable", key_ttl=0.3, stream_size=10)
EPHEMERAL = MapOptions(mode="ephemeral", key_ttl=0.3)


async def _expired(store: Any, channel: str, opts: MapOptions, keys: int) -> None:
    """Wait (bounded) until the channel holds ``keys`` keys, sweeping as the node does."""
    for _ in range(100):
        await store.expire(channel, opts)
        if await store.stats(channel, opts) == keys:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{channel} did not come down to {keys} keys")


def test_keys_expire_as_removal_changes(store_factory: Any) -> None:
    async def main() -> None:
        async with store_factory() as (store, rec):
            if hasattr(store, "_broker"):
                await store._broker.subscribe("r")
            await store.publish("r", pub("a", 1), RECOVERABLE)
            await store.publish("r", pub("b", 2), RECOVERABLE)
            assert await store.stats("r", RECOVERABLE) == 2
            await _expired(store, "r", RECOVERABLE, 0)
            stream = await store.read_stream("r", RECOVERABLE)
            got = sorted((p.key, p.removed) for p in stream.publications if p.removed)
            assert got == [("a", True), ("b", True)]
            assert [p.offset for p in stream.publications] == [1, 2, 3, 4]
            await until(lambda: len(rec.pubs) == 4, "removals delivered")
            assert all(p.removed for _, p, _ in rec.pubs[2:])

    run(main())


def test_key_modes_and_ttl_refresh(store_factory: Any) -> None:
    async def main() -> None:
        async with store_factory() as (store, _):
            opts = MapOptions(mode="recoverable", key_ttl=60.0)
            first = await store.publish("k", pub("a", 1), opts, key_mode="if_new")
            assert not first.suppressed
            again = await store.publish("k", pub("a", 2), opts, key_mode="if_new", refresh_ttl=True)
            assert again.suppressed and again.suppress_reason == "key_exists"
            assert again.position == first.position
            absent = await store.publish("k", pub("b", 1), opts, key_mode="if_exists")
            assert absent.suppressed and absent.suppress_reason == "key_not_found"
            updated = await store.publish("k", pub("a", 3), opts, key_mode="if_exists")
            assert not updated.suppressed and updated.position.offset == 2
            state = await store.read_state("k", opts, limit=-1)
            assert [json.loads(e.data) for e in state.entries] == [3]

    run(main())


def test_ephemeral_mode_has_no_stream(store_factory: Any) -> None:
    async def main() -> None:
        async with store_factory() as (store, rec):
            if hasattr(store, "_broker"):
                await store._broker.subscribe("e")
            r = await store.publish("e", pub("a", 1), EPHEMERAL)
            assert r.position.offset == 0 and r.position.epoch
            page = await store.read_state("e", EPHEMERAL, limit=-1)
            assert [(e.key, e.offset) for e in page.entries] == [("a", 0)]
            assert (await store.read_stream("e", EPHEMERAL)).publications == []
            await until(lambda: len(rec.pubs) == 1, "delivery")
            assert rec.pubs[0][1].offset == 0
            await _expired(store, "e", EPHEMERAL, 0)
            await until(lambda: len(rec.pubs) == 2, "the removal delivered")
            assert rec.pubs[1][1].removed and rec.pubs[1][1].key == "a"

    run(main())
