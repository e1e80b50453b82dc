"""The in-memory backends: the shared conformance suites plus memory-only properties.

The suites run on a fake clock (:class:`FakeClock`), so their time-based
tests do not sleep. The memory-only tests cover what the seams leave to the
implementation: memory being reclaimed, delivery inside ``publish``, no
background tasks. They also check the expiry bookkeeping against naive models
over seeded random operation sequences.
"""

from __future__ import annotations

import asyncio
import random
import string
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from rtcore.engine.broker import Closer, PublishResult
from rtcore.engine.history import HistoryOptions, HistoryResult
from rtcore.engine.memory import MemoryBroker, MemoryHistoryStore, MemoryPresenceManager
from rtcore.protocol.types import ClientInfo, PresenceStats, Publication, StreamPosition

from .conformance import (
    Advance,
    BrokerConformance,
    BrokerHarness,
    HarnessFactory,
    HistoryHarness,
    HistoryStoreConformance,
    PresenceConformance,
    PresenceHarness,
    RecordingHandler,
)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a monotonic clock cannot go back"
        self.now += seconds


def advancer(clock: FakeClock) -> Advance:
    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    return advance


@asynccontextmanager
async def memory_history() -> AsyncIterator[HistoryHarness]:
    clock = FakeClock()
    yield HistoryHarness(MemoryHistoryStore(clock=clock), advancer(clock))


@asynccontextmanager
async def memory_broker() -> AsyncIterator[BrokerHarness]:
    clock = FakeClock()
    broker = MemoryBroker(history=MemoryHistoryStore(clock=clock), clock=clock)
    try:
        yield BrokerHarness(broker, advancer(clock))
    finally:
        await broker.close()


@asynccontextmanager
async def memory_presence() -> AsyncIterator[PresenceHarness]:
    clock = FakeClock()
    yield PresenceHarness(MemoryPresenceManager(10.0, clock=clock), 10.0, advancer(clock))


class TestMemoryHistoryStore(HistoryStoreConformance):
    @pytest.fixture
    def history_backend(self) -> HarnessFactory[HistoryHarness]:
        return memory_history


class TestMemoryBroker(BrokerConformance):
    @pytest.fixture
    def broker_backend(self) -> HarnessFactory[BrokerHarness]:
        return memory_broker


class TestMemoryPresenceManager(PresenceConformance):
    @pytest.fixture
    def presence_backend(self) -> HarnessFactory[PresenceHarness]:
        return memory_presence


OPTS = HistoryOptions(size=10, ttl=1.0, meta_ttl=2.0)


def pub(data: str) -> Publication:
    return Publication(data=data.encode())


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------


class TestArguments:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"size": 0, "ttl": 1.0},
            {"size": -1, "ttl": 1.0},
            {"size": 1, "ttl": 0.0},
            {"size": 1, "ttl": -1.0},
            {"size": 1, "ttl": 10.0, "meta_ttl": 5.0},
        ],
    )
    def test_invalid_history_options(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError):
            HistoryOptions(**kwargs)  # type: ignore[arg-type]

    def test_history_options_defaults(self) -> None:
        opts = HistoryOptions(size=1, ttl=0.5)
        assert opts.meta_ttl == 30 * 24 * 3600.0

    @pytest.mark.parametrize(
        "make",
        [
            lambda: MemoryHistoryStore(meta_ttl=0),
            lambda: MemoryHistoryStore(sweep_interval=0),
            lambda: MemoryHistoryStore(sweep_batch=0),
            lambda: MemoryHistoryStore(max_streams=0),
            lambda: MemoryHistoryStore(max_streams=2.5),  # type: ignore[arg-type]
            lambda: MemoryHistoryStore(max_streams=True),
            lambda: MemoryBroker(sweep_interval=-1),
            lambda: MemoryPresenceManager(0),
            lambda: MemoryPresenceManager(1.0, sweep_batch=0),
        ],
    )
    def test_invalid_constructor_arguments(self, make: object) -> None:
        with pytest.raises(ValueError):
            make()  # type: ignore[operator]

    def test_read_meta_ttl_must_be_positive(self) -> None:
        store = MemoryHistoryStore(clock=FakeClock())
        with pytest.raises(ValueError):
            asyncio.run(store.get("a", meta_ttl=0))
        assert store.channel_count == 0


# ---------------------------------------------------------------------------
# Memory-only behaviour
# ---------------------------------------------------------------------------


class TestMemoryBehaviour:
    def test_epochs_are_eight_ascii_letters_and_differ_per_incarnation(self) -> None:
        clock = FakeClock()
        store = MemoryHistoryStore(clock=clock)

        async def main() -> set[str]:
            epochs = set()
            for _ in range(50):
                epochs.add((await store.add("a", pub("x"), OPTS)).epoch)
                clock.advance(2.0)  # meta_ttl: the stream is lost
            return epochs

        epochs = asyncio.run(main())
        assert len(epochs) == 50
        for epoch in epochs:
            assert len(epoch) == 8 and set(epoch) <= set(string.ascii_letters)

    def test_epochs_do_not_repeat_when_the_random_module_is_reseeded(self) -> None:
        async def first_epoch() -> str:
            random.seed(1234)  # an application seeding ``random`` must not matter
            return (await MemoryHistoryStore(clock=FakeClock()).position("a")).epoch

        state = random.getstate()
        try:
            assert asyncio.run(first_epoch()) != asyncio.run(first_epoch())
        finally:
            random.setstate(state)

    def test_publish_delivers_before_returning_with_history_already_written(self) -> None:
        seen: list[tuple[int, StreamPosition]] = []

        class Handler(RecordingHandler):
            def on_publication(
                self,
                channel: str,
                pub: Publication,
                position: StreamPosition,
                prev_pub: Publication | None,
            ) -> None:
                top = broker.history_store.read(channel, None, 0, False, None).position
                seen.append((pub.offset, top))

        broker = MemoryBroker()

        async def main() -> PublishResult:
            await broker.start(Handler())
            await broker.subscribe("a")
            result = await broker.publish("a", pub("x"), history=OPTS)
            assert seen == [(1, result.position)]  # already delivered
            return result

        asyncio.run(main())

    def test_publication_time_comes_from_the_wall_clock(self) -> None:
        wall = FakeClock(1_700_000_000.25)
        broker = MemoryBroker(wall_clock=wall)

        async def main() -> None:
            await broker.start(RecordingHandler())
            p = pub("x")
            await broker.publish("a", p)
            assert p.time == 1_700_000_000_250
            wall.advance(1.5)
            q = pub("y")
            await broker.publish("a", q, history=OPTS)
            assert q.time == 1_700_000_001_750

        asyncio.run(main())

    def test_no_background_tasks(self) -> None:
        async def main() -> None:
            before = len(asyncio.all_tasks())
            clock = FakeClock()
            broker = MemoryBroker(clock=clock)
            presence = MemoryPresenceManager(5.0, clock=clock)
            await broker.start(RecordingHandler())
            for i in range(200):
                channel = f"c{i}"
                await broker.subscribe(channel)
                await broker.publish(channel, pub("x"), history=OPTS, idempotency_key="k")
                await presence.add(channel, "c", ClientInfo(user="u", client="c"))
                clock.advance(0.1)
            assert len(asyncio.all_tasks()) == before
            await broker.close()

        asyncio.run(main())

    def test_broker_is_a_closer(self) -> None:
        assert isinstance(MemoryBroker(), Closer)
        assert not isinstance(MemoryPresenceManager(), Closer)

    def test_close_leaves_the_paired_history_intact(self) -> None:
        store = MemoryHistoryStore()
        broker = MemoryBroker(history=store)

        async def main() -> None:
            await broker.start(RecordingHandler())
            await broker.publish("a", pub("x"), history=OPTS)
            await broker.close()
            assert offsets_of(await store.get("a", limit=-1)) == [1]

        asyncio.run(main())


def offsets_of(result: HistoryResult) -> list[int]:
    return [p.offset for p in result.publications]


class TestMemoryIsReclaimed:
    def test_expired_data_and_meta_are_freed_by_sweeps(self) -> None:
        clock = FakeClock()
        store = MemoryHistoryStore(clock=clock, sweep_interval=1.0, sweep_batch=100)

        async def main() -> None:
            for i in range(250):
                await store.add(f"c{i}", pub("x"), OPTS)
                await store.add(f"c{i}", pub("y"), OPTS)
            assert store.channel_count == 250
            assert store.publication_count == 500
            # Data ttl (1 s) passes: publications go, meta stays.
            clock.advance(1.5)
            for _ in range(3):
                await store.remove("unrelated")  # any operation drives the sweep
            assert store.publication_count == 0
            assert store.channel_count == 250
            # Meta ttl (2 s) passes: streams go, at most one batch per operation.
            clock.advance(1.0)
            await store.remove("unrelated")
            assert store.channel_count == 150
            await store.remove("unrelated")
            await store.remove("unrelated")
            assert store.channel_count == 0

        asyncio.run(main())

    def test_data_is_freed_on_time_after_a_read_refreshed_the_meta(self) -> None:
        # The read moves the meta deadline (30 days) past the data deadline;
        # the data must still go at the data ttl.
        clock = FakeClock()
        store = MemoryHistoryStore(clock=clock)

        async def main() -> None:
            await store.add("a", pub("x"), OPTS)
            await store.position("a")
            clock.advance(1.5)
            await store.remove("unrelated")
            assert store.publication_count == 0
            assert store.channel_count == 1

        asyncio.run(main())

    def test_reads_of_channels_without_a_stream_keep_nothing(self) -> None:
        # Subscribing to many distinct history channels reads their positions:
        # that must not leave state behind (it used to, for history_meta_ttl).
        clock = FakeClock()
        store = MemoryHistoryStore(clock=clock)

        async def main() -> None:
            vacant = await store.position("c0")
            for i in range(20_000):
                channel = f"c{i}"
                assert await store.position(channel) == vacant
                result = await store.get(channel, since=StreamPosition(3, "x"), limit=-1)
                assert result == HistoryResult([], vacant)
                await store.remove(channel)
            assert store.channel_count == 0
            assert store._expiry.heap == []
            # The first add continues the epoch those reads saw.
            assert await store.add("c7", pub("x"), OPTS) == StreamPosition(1, vacant.epoch)

        asyncio.run(main())

    def test_refreshing_a_stream_does_not_grow_the_expiry_heap(self) -> None:
        clock = FakeClock()
        store = MemoryHistoryStore(clock=clock, sweep_interval=0.5)

        async def main() -> None:
            for _ in range(5000):
                await store.add("a", pub("x"), OPTS)
                await store.get("a", meta_ttl=2.0)
                clock.advance(0.01)
            assert len(store._expiry.heap) <= 2
            assert store.publication_count == 10

        asyncio.run(main())

    def test_presence_channels_are_freed(self) -> None:
        clock = FakeClock()
        presence = MemoryPresenceManager(5.0, clock=clock)

        async def main() -> None:
            info = ClientInfo(user="u", client="c")
            await presence.add("gone", "c", info)
            await presence.remove("gone", "c", "u")
            assert presence.channel_count == 0
            for i in range(300):
                await presence.add(f"c{i}", "c", info)
            clock.advance(5.0)
            assert await presence.stats("other") == PresenceStats()
            assert presence.channel_count == 0

        asyncio.run(main())

    def test_idempotency_expiry_is_exact_before_any_sweep(self) -> None:
        clock = FakeClock()
        broker = MemoryBroker(clock=clock, sweep_interval=1e9)

        async def main() -> None:
            await broker.start(RecordingHandler())
            await broker.publish("a", pub("x"), idempotency_key="k", idempotent_ttl=1.0)
            clock.advance(0.5)
            held = await broker.publish("a", pub("x"), idempotency_key="k", idempotent_ttl=1.0)
            assert held.suppressed
            clock.advance(0.5)
            again = await broker.publish("a", pub("x"), idempotency_key="k", idempotent_ttl=1.0)
            assert not again.suppressed

        asyncio.run(main())

    def test_idempotency_results_are_freed(self) -> None:
        clock = FakeClock()
        broker = MemoryBroker(clock=clock)

        async def main() -> None:
            await broker.start(RecordingHandler())
            for i in range(100):
                await broker.publish("a", pub("x"), idempotency_key=f"k{i}", idempotent_ttl=1.0)
            assert broker.idempotency_result_count == 100
            clock.advance(1.5)
            await broker.publish("a", pub("x"), idempotency_key="fresh")
            assert broker.idempotency_result_count == 1

        asyncio.run(main())


class TestStreamBound:
    def test_the_number_of_streams_is_bounded(self) -> None:
        clock = FakeClock()
        store = MemoryHistoryStore(clock=clock, max_streams=100)

        async def main() -> None:
            for i in range(20_000):
                await store.add(f"c{i}", pub("x"), OPTS)
                assert store.channel_count <= 100
            assert store.channel_count == 100
            assert store.evicted_count == 19_900
            assert store.publication_count == 100
            # Evicted streams' heap entries do not pile up either.
            assert len(store._expiry.heap) <= 2 * 100 + 64 + 1
            # The newest survive.
            assert offsets_of(await store.get("c19999", limit=-1)) == [1]

        asyncio.run(main())

    def test_streams_without_publications_are_evicted_first(self) -> None:
        clock = FakeClock()
        store = MemoryHistoryStore(clock=clock, max_streams=3)
        long = HistoryOptions(size=10, ttl=100.0, meta_ttl=200.0)

        async def main() -> None:
            await store.add("short", pub("x"), OPTS)  # data ttl 1 s
            await store.add("kept1", pub("x"), long)
            await store.add("kept2", pub("x"), long)
            clock.advance(1.5)  # "short" keeps its meta but no publication
            await store.position("short")  # most recently used, still the first to go
            await store.add("new", pub("x"), long)
            assert store.evicted_count == 1
            for channel in ("kept1", "kept2", "new"):
                assert offsets_of(await store.get(channel, limit=-1)) == [1]
            assert (await store.position("short")).offset == 0

        asyncio.run(main())

    def test_least_recently_used_goes_when_all_have_publications(self) -> None:
        clock = FakeClock()
        store = MemoryHistoryStore(clock=clock, max_streams=3)

        async def main() -> None:
            for channel in ("a", "b", "c"):
                await store.add(channel, pub("x"), OPTS)
            await store.get("a", limit=-1)  # a read is a use: "b" is now the oldest
            await store.add("d", pub("x"), OPTS)
            assert (await store.position("b")).offset == 0
            await store.add("c", pub("y"), OPTS)  # an add is a use: "a" is now the oldest
            await store.add("e", pub("x"), OPTS)
            assert (await store.position("a")).offset == 0
            assert [(await store.position(c)).offset for c in ("c", "d", "e")] == [2, 1, 1]

        asyncio.run(main())

    def test_an_evicted_stream_comes_back_with_another_epoch(self) -> None:
        clock = FakeClock()
        store = MemoryHistoryStore(clock=clock, max_streams=1)

        async def main() -> None:
            vacant = await store.position("a")
            # "a" takes the vacant epoch a subscriber saw before its first publication.
            first = await store.add("a", pub("a1"), OPTS)
            assert first == StreamPosition(1, vacant.epoch)
            await store.add("a", pub("a2"), OPTS)
            await store.add("b", pub("b1"), OPTS)  # evicts "a"
            # A client at a1 comes back: another epoch, nothing from it, no
            # publication of the new stream passed off as the one it missed.
            again = await store.get("a", since=first, limit=-1)
            assert again.publications == [] and again.position.offset == 0
            assert again.position.epoch != vacant.epoch
            renewed = await store.add("a", pub("a3"), OPTS)  # evicts "b"
            assert renewed.offset == 1 and renewed.epoch not in (vacant.epoch, first.epoch)
            stale = await store.get("a", since=StreamPosition(0, vacant.epoch), limit=-1)
            assert stale.publications == []

        asyncio.run(main())

    def test_streams_without_publications_are_small(self) -> None:
        # They can be max_streams many; an empty deque alone is ~760 bytes.
        clock = FakeClock()
        store = MemoryHistoryStore(clock=clock, sweep_batch=10_000)
        channels = [f"chan:{i}" for i in range(2000)]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for channel in channels:
                store.append(channel, pub("x"), OPTS, clock(), False)
            clock.advance(1.5)
            store.read("unrelated", None, 0, False, None)  # the sweep drops every publication
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert store.publication_count == 0
        assert store.channel_count == 2000
        assert (after - before) / 2000 < 400


def test_subscribing_to_many_history_channels_leaves_no_streams() -> None:
    """One connection subscribing to and leaving many distinct history channels."""
    from protocol.helpers import Client, make_node, run

    namespace = {
        "name": "h",
        "allow_subscribe_for_anonymous": True,
        "allow_subscribe_for_client": True,
        "history_size": 10,
        "history_ttl": 60,
        "force_recovery": True,
    }
    node = make_node(
        {
            "client": {
                "allow_anonymous_connect_without_token": True,
                # 600 commands at once: past the default subscribe rate limit.
                "command_rate_limit": {"subscribe": 0},
            },
            "channel": {"namespaces": [namespace]},
        }
    )
    store = node.broker.history_store  # type: ignore[attr-defined]

    async def main() -> None:
        await node.start()
        try:
            client = Client(node)
            await client.connect()
            for i in range(300):
                recover = {"recover": True, "offset": 5, "epoch": "abc"} if i % 2 else {}
                result = await client.subscribe(f"h:{i}", **recover)
                assert result["recoverable"] is True
                await client.ok("unsubscribe", {"channel": f"h:{i}"})
            assert store.channel_count == 0
        finally:
            await node.close()

    run(main())


# ---------------------------------------------------------------------------
# Model-based checks: random operation sequences against naive models
# ---------------------------------------------------------------------------


@dataclass
class ModelStream:
    epoch: str
    top: int = 0
    pubs: list[tuple[int, str]] = field(default_factory=list)
    data_expire_at: float = float("inf")
    meta_expire_at: float = float("inf")


class HistoryModel:
    """The HistoryStore rules written as plainly as possible.

    Which epoch a new stream takes is the store's vacant epoch at that moment
    (when it changes depends on sweeps), so the model reads it from the store
    and checks the rule that makes it safe instead: a channel never gets back
    an epoch one of its earlier streams had.
    """

    def __init__(self, store: MemoryHistoryStore) -> None:
        self.store = store
        self.streams: dict[str, ModelStream] = {}
        self.past_epochs: dict[str, set[str]] = {}

    def live(self, channel: str, now: float, create: bool) -> ModelStream | None:
        s = self.streams.get(channel)
        if s is not None and now >= s.meta_expire_at:
            del self.streams[channel]
            s = None
        if s is not None and now >= s.data_expire_at:
            s.pubs = []
        if s is None and create:
            epoch = self.store._vacant_epoch
            past = self.past_epochs.setdefault(channel, set())
            assert epoch not in past, f"{channel} got epoch {epoch} back"
            past.add(epoch)
            s = self.streams[channel] = ModelStream(epoch)
        return s

    def add(self, channel: str, payload: str, opts: HistoryOptions, now: float) -> StreamPosition:
        s = self.live(channel, now, True)
        assert s is not None
        s.top += 1
        s.pubs = (s.pubs + [(s.top, payload)])[-opts.size :]
        s.data_expire_at = now + opts.ttl
        s.meta_expire_at = now + opts.meta_ttl
        return StreamPosition(s.top, s.epoch)

    def get(
        self,
        channel: str,
        since: StreamPosition | None,
        limit: int,
        reverse: bool,
        meta_ttl: float,
        now: float,
    ) -> tuple[list[tuple[int, str]], StreamPosition]:
        s = self.live(channel, now, False)
        if s is None:
            # No stream and none created: offset 0 in the vacant epoch.
            return [], StreamPosition(0, self.store._vacant_epoch)
        s.meta_expire_at = now + meta_ttl
        pubs = list(s.pubs)
        if since is not None:
            if since.epoch and since.epoch != s.epoch:
                pubs = []
            elif reverse:
                pubs = [p for p in pubs if p[0] < since.offset]
            else:
                pubs = [p for p in pubs if p[0] > since.offset]
        if reverse:
            pubs.reverse()
        if limit == 0:
            pubs = []
        elif limit > 0:
            pubs = pubs[:limit]
        return pubs, StreamPosition(s.top, s.epoch)

    def remove(self, channel: str, now: float) -> None:
        s = self.live(channel, now, False)
        if s is not None:
            s.pubs = []


@pytest.mark.parametrize("seed", range(12))
def test_history_store_matches_the_model(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    # 1e9: no sweep ever runs during the sequence, so only the lazy checks act.
    interval = rng.choice([0.25, 1.0, 1e9])
    store = MemoryHistoryStore(
        clock=clock, meta_ttl=3.0, sweep_interval=interval, sweep_batch=rng.choice([1, 3, 100])
    )
    model = HistoryModel(store)
    channels = ["a", "b", "c", "d"]

    async def main() -> None:
        for step in range(600):
            channel = rng.choice(channels)
            op = rng.random()
            if op < 0.35:
                ttl = rng.choice([0.5, 1.0, 2.0])
                opts = HistoryOptions(
                    size=rng.randint(1, 6), ttl=ttl, meta_ttl=ttl + rng.choice([0.0, 0.5, 2.0])
                )
                payload = f"p{step}"
                position = await store.add(channel, pub(payload), opts)
                assert position == model.add(channel, payload, opts, clock.now)
            elif op < 0.75:
                limit = rng.choice([-1, 0, 1, 2, 5])
                reverse = rng.random() < 0.5
                meta_ttl = rng.choice([1.0, 3.0])
                since: StreamPosition | None = None
                if rng.random() < 0.6:
                    offset = rng.randint(1 if reverse else 0, 12)
                    known = model.streams.get(channel)
                    kind = rng.choice(["current", "vacant", "empty", "other"])
                    if kind == "current" and known is not None:
                        since = StreamPosition(offset, known.epoch)
                    elif kind == "vacant":
                        since = StreamPosition(offset, store._vacant_epoch)
                    elif kind == "other":
                        since = StreamPosition(offset, "not-an-epoch")
                    else:
                        since = StreamPosition(offset, "")
                result = await store.get(
                    channel, since=since, limit=limit, reverse=reverse, meta_ttl=meta_ttl
                )
                pubs, position = model.get(channel, since, limit, reverse, meta_ttl, clock.now)
                assert result.position == position
                assert [(p.offset, p.data.decode()) for p in result.publications] == pubs
            elif op < 0.85:
                await store.remove(channel)
                model.remove(channel, clock.now)
            else:
                clock.advance(rng.choice([0.25, 0.5, 1.0, 2.5]))
            # The store holds at least what is alive (and maybe expired data not yet swept).
            assert store.publication_count >= sum(
                len(s.pubs)
                for s in model.streams.values()
                if clock.now < min(s.data_expire_at, s.meta_expire_at)
            )
        # Long after everything expired, sweeps reclaim all memory.
        # (Batches are small, and stale heap entries take their share of them.)
        for _ in range(1000):
            if not store.channel_count:
                break
            clock.advance(interval + 5.0)
            await store.remove("unrelated")
        assert store.channel_count == 0
        assert store.publication_count == 0

    asyncio.run(main())


@pytest.mark.parametrize("seed", range(8))
def test_eviction_never_serves_wrong_publications(seed: int) -> None:
    """Random adds, reads and expiry over more channels than ``max_streams``.

    Whatever was evicted or expired, a read in a given epoch returns only
    publications that were added to that channel in that epoch, at their
    offsets; a channel never gets back an epoch it had; the bound holds.
    """
    rng = random.Random(seed)
    clock = FakeClock()
    store = MemoryHistoryStore(
        clock=clock,
        meta_ttl=3.0,
        sweep_interval=rng.choice([0.25, 1e9]),
        max_streams=rng.choice([1, 2, 3]),
    )
    channels = [f"c{i}" for i in range(rng.choice([4, 8]))]
    added: dict[tuple[str, str], dict[int, str]] = {}
    epochs: dict[str, list[str]] = {c: [] for c in channels}
    saved: dict[str, StreamPosition] = {}

    async def main() -> None:
        for step in range(800):
            channel = rng.choice(channels)
            op = rng.random()
            if op < 0.4:
                opts = HistoryOptions(size=rng.randint(1, 4), ttl=rng.choice([0.5, 2.0]))
                payload = f"p{step}"
                position = await store.add(channel, pub(payload), opts)
                if position.offset == 1:
                    assert position.epoch not in epochs[channel]
                    epochs[channel].append(position.epoch)
                else:
                    assert position.epoch == epochs[channel][-1]
                added.setdefault((channel, position.epoch), {})[position.offset] = payload
            elif op < 0.9:
                since = saved.get(channel) if rng.random() < 0.7 else None
                result = await store.get(channel, since=since, limit=-1)
                stream = added.get((channel, result.position.epoch), {})
                assert result.position.offset == max(stream, default=0)
                if since is not None and since.epoch != result.position.epoch:
                    assert result.publications == []
                for p in result.publications:
                    assert stream[p.offset] == p.data.decode()
                    assert since is None or p.offset > since.offset
                saved[channel] = result.position
            else:
                clock.advance(rng.choice([0.25, 1.0, 3.5]))
            assert store.channel_count <= store.max_streams
        assert store.evicted_count > 0

    asyncio.run(main())


@pytest.mark.parametrize("seed", range(12))
def test_presence_manager_matches_the_model(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    ttl = 4.0
    interval = rng.choice([0.5, 2.0, 1e9])
    manager = MemoryPresenceManager(
        ttl, clock=clock, sweep_interval=interval, sweep_batch=rng.choice([1, 2, 100])
    )
    user_of = {"c0": "u0", "c1": "u0", "c2": "u1", "c3": "", "c4": "", "c5": "u2"}
    model: dict[str, dict[str, tuple[float, ClientInfo]]] = {}
    channels = ["a", "b", "c"]

    async def main() -> None:
        for step in range(800):
            channel = rng.choice(channels)
            client_id = rng.choice(list(user_of))
            op = rng.random()
            entries = model.setdefault(channel, {})
            if op < 0.4:
                info = ClientInfo(
                    user=user_of[client_id], client=client_id, conn_info=f"{step}".encode()
                )
                await manager.add(channel, client_id, info)
                entries[client_id] = (clock.now + ttl, info)
            elif op < 0.55:
                await manager.remove(channel, client_id, user_of[client_id])
                entries.pop(client_id, None)
            elif op < 0.75:
                alive = {c: i for c, (exp, i) in entries.items() if exp > clock.now}
                assert await manager.presence(channel) == alive
            elif op < 0.9:
                alive_users = {i.user for exp, i in entries.values() if exp > clock.now}
                alive_count = sum(1 for exp, _ in entries.values() if exp > clock.now)
                assert await manager.stats(channel) == PresenceStats(alive_count, len(alive_users))
            else:
                clock.advance(rng.choice([0.5, 1.0, 2.0, 3.0]))
        clock.advance(ttl)
        for _ in range(1000):
            if not manager.channel_count:
                break
            clock.advance(interval + 2.0)
            await manager.stats("unrelated")
        assert manager.channel_count == 0

    asyncio.run(main())
