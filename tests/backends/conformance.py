"""Conformance suites for the engine seams, written once and run against every backend.

Each suite is a class of async tests that talks to a backend only through its
seam (:class:`~rtcore.engine.history.HistoryStore`, :class:`~rtcore.engine.broker.Broker`,
:class:`~rtcore.engine.presence.PresenceManager`). A backend's test module subclasses
the suite under a ``Test*`` name and overrides one factory fixture:

=============================  =====================  ==========================
suite                          fixture to override    the factory yields
=============================  =====================  ==========================
``HistoryStoreConformance``    ``history_backend``    :class:`HistoryHarness`
``BrokerConformance``          ``broker_backend``     :class:`BrokerHarness`
``PresenceConformance``        ``presence_backend``   :class:`PresenceHarness`
=============================  =====================  ==========================

The fixture returns a *factory*: a zero-argument callable that returns an async
context manager, like a function decorated with
:func:`contextlib.asynccontextmanager`. Each test runs in its own event loop
(``asyncio.run``). It enters the context manager inside that loop and exits it
when done, so a backend can open and close connections there. What the factory
must provide:

* **A fresh, isolated backend per call.** Tests use short, fixed channel names
  (``"a"``, ``"b"``), so a backend on a shared server must separate tests some
  other way, e.g. with a random key prefix per call.
* **A broker that is not started.** The broker suite calls ``start`` itself,
  since part of what it checks is the lifecycle. The factory should still
  ``close`` the broker on exit (``close`` is idempotent).
* **The time hook** ``advance(seconds)``: an async callable after which the
  backend must behave as if ``seconds`` more had passed on its clock. In-memory
  backends move an injected fake clock. Backends whose TTLs run on a server
  sleep for real (``asyncio.sleep``). The time-based tests use TTLs of a few
  seconds, which keeps real sleeping short.
* **``slack``**: how late, in seconds, the backend may expire something (0 for
  an exact clock; for example 1.0 for a backend that rounds expiry times up to
  whole seconds). Before the suite asserts that something expired, it advances
  ``slack`` seconds further. A lease or TTL must never end *early*, so checks
  that something is still alive get no slack.
* For presence, **``ttl``**: the manager's lease in seconds, at least
  ``3 * slack``.

Every test is bounded by :data:`TEST_TIMEOUT`, so a hung backend fails fast.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from rtcore.engine.broker import (
    Broker,
    BrokerClosedError,
    BrokerNotStartedError,
    BrokerStateError,
    PublishResult,
)
from rtcore.engine.history import ZERO_POSITION, HistoryOptions, HistoryStore
from rtcore.engine.presence import PresenceManager, add_many
from rtcore.protocol.types import ClientInfo, PresenceStats, Publication, StreamPosition


__all__ = [
    "TEST_TIMEOUT",
    "BrokerConformance",
    "BrokerHarness",
    "HistoryHarness",
    "HistoryStoreConformance",
    "PresenceConformance",
    "PresenceHarness",
    "RecordingHandler",
]


#: Upper bound, in seconds, on one conformance test (real sleeps included).
TEST_TIMEOUT = 60.0

#: How long to wait for an asynchronous delivery before failing.
DELIVERY_TIMEOUT = 5.0

Advance = Callable[[float], Awaitable[None]]


@dataclass
class HistoryHarness:
    store: HistoryStore
    advance: Advance
    slack: float = 0.0


@dataclass
class BrokerHarness:
    broker: Broker
    advance: Advance
    slack: float = 0.0


@dataclass
class PresenceHarness:
    manager: PresenceManager
    ttl: float
    advance: Advance
    slack: float = 0.0


_H = TypeVar("_H")
HarnessFactory = Callable[[], AbstractAsyncContextManager[_H]]


def _harness_test(
    fixture: str,
) -> Callable[[Callable[[Any, _H], Coroutine[Any, Any, None]]], Callable[..., None]]:
    """Turn ``async def test_x(self, harness)`` into a sync pytest test.

    The test asks pytest for the factory fixture named ``fixture`` (the
    signature is set explicitly, which is how pytest finds it), opens the
    harness inside a new event loop and runs the body under TEST_TIMEOUT.
    """

    def decorate(fn: Callable[[Any, _H], Coroutine[Any, Any, None]]) -> Callable[..., None]:
        def test(self: Any, **fixtures: Any) -> None:
            factory: HarnessFactory[_H] = fixtures[fixture]

            async def main() -> None:
                async with factory() as harness:
                    await asyncio.wait_for(fn(self, harness), TEST_TIMEOUT)

            asyncio.run(main())

        test.__name__ = fn.__name__
        test.__qualname__ = fn.__qualname__
        test.__doc__ = fn.__doc__
        test.__module__ = fn.__module__
        test.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                inspect.Parameter(fixture, inspect.Parameter.KEYWORD_ONLY),
            ]
        )
        return test

    return decorate


history_test = _harness_test("history_backend")
broker_test = _harness_test("broker_backend")
presence_test = _harness_test("presence_backend")


def make_pub(data: str, **fields: Any) -> Publication:
    return Publication(data=data.encode(), **fields)


def offsets(pubs: list[Publication]) -> list[int]:
    return [p.offset for p in pubs]


def payloads(pubs: list[Publication]) -> list[str]:
    return [p.data.decode() for p in pubs]


# ---------------------------------------------------------------------------
# HistoryStore
# ---------------------------------------------------------------------------

OPTS = HistoryOptions(size=100, ttl=60.0, meta_ttl=120.0)


class HistoryStoreConformance:
    """Every point of the ``HistoryStore`` specification."""

    @pytest.fixture
    def history_backend(self) -> HarnessFactory[HistoryHarness]:
        pytest.fail("override the history_backend fixture in the backend's test class")

    async def _fill(
        self, store: HistoryStore, channel: str, n: int, opts: HistoryOptions = OPTS
    ) -> str:
        epoch = ""
        for i in range(1, n + 1):
            position = await store.add(channel, make_pub(f"m{i}"), opts)
            epoch = position.epoch
        return epoch

    # -- positions and epochs --------------------------------------------------

    @history_test
    async def test_unknown_channel_has_offset_zero_and_a_stable_epoch(
        self, h: HistoryHarness
    ) -> None:
        first = await h.store.position("a")
        assert first.offset == 0
        assert first.epoch != ""
        assert await h.store.position("a") == first
        result = await h.store.get("a", limit=-1)
        assert result.publications == []
        assert result.position == first

    @history_test
    async def test_first_add_continues_the_epoch_a_read_saw(self, h: HistoryHarness) -> None:
        seen = await h.store.position("a")
        assert await h.store.add("a", make_pub("x"), OPTS) == StreamPosition(1, seen.epoch)

    @history_test
    async def test_offsets_start_at_one_and_increase_by_one(self, h: HistoryHarness) -> None:
        positions = []
        for i in range(5):
            pub = make_pub(f"m{i}")
            position = await h.store.add("a", pub, OPTS)
            assert pub.offset == position.offset
            positions.append(position)
        epoch = positions[0].epoch
        assert epoch != ""
        assert positions == [StreamPosition(i, epoch) for i in range(1, 6)]
        assert await h.store.position("a") == StreamPosition(5, epoch)

    @history_test
    async def test_add_ignores_a_preset_offset(self, h: HistoryHarness) -> None:
        pub = make_pub("x", offset=42)
        assert (await h.store.add("a", pub, OPTS)).offset == 1
        assert pub.offset == 1

    @history_test
    async def test_channels_are_independent(self, h: HistoryHarness) -> None:
        await self._fill(h.store, "a", 3)
        await h.store.add("b", make_pub("b1"), OPTS)
        assert (await h.store.position("a")).offset == 3
        assert (await h.store.position("b")).offset == 1
        assert payloads((await h.store.get("b", limit=-1)).publications) == ["b1"]
        assert (await h.store.position("c")).offset == 0

    @history_test
    async def test_publication_fields_survive_storage(self, h: HistoryHarness) -> None:
        info = ClientInfo(user="u1", client="c1", conn_info=b'{"a":1}', chan_info=b'{"b":2}')
        pub = Publication(data=b'{"x":1}', info=info, tags={"k": "v"}, time=1_700_000_000_123)
        await h.store.add("a", pub, OPTS)
        [stored] = (await h.store.get("a", limit=-1)).publications
        assert stored.data == b'{"x":1}'
        assert stored.offset == 1
        assert stored.info == info
        assert stored.tags == {"k": "v"}
        assert stored.time == 1_700_000_000_123

    @history_test
    async def test_concurrent_adds_get_distinct_consecutive_offsets(
        self, h: HistoryHarness
    ) -> None:
        n = 100
        pubs = [make_pub(f"m{i}") for i in range(n)]
        positions = await asyncio.gather(*(h.store.add("a", p, OPTS) for p in pubs))
        assert sorted(p.offset for p in positions) == list(range(1, n + 1))
        assert len({p.epoch for p in positions}) == 1
        by_payload = {p.data.decode(): pos.offset for p, pos in zip(pubs, positions, strict=True)}
        stored = (await h.store.get("a", limit=-1)).publications
        assert offsets(stored) == list(range(1, n + 1))
        assert [by_payload[p.data.decode()] for p in stored] == offsets(stored)

    # -- get: limit / since / reverse -------------------------------------------

    @history_test
    async def test_limit_zero_returns_only_the_position(self, h: HistoryHarness) -> None:
        epoch = await self._fill(h.store, "a", 3)
        for result in (
            await h.store.get("a"),
            await h.store.get("a", limit=0, reverse=True),
            await h.store.get("a", since=StreamPosition(1, epoch), limit=0),
        ):
            assert result.publications == []
            assert result.position == StreamPosition(3, epoch)

    @history_test
    async def test_no_limit_returns_everything_oldest_first(self, h: HistoryHarness) -> None:
        epoch = await self._fill(h.store, "a", 5)
        result = await h.store.get("a", limit=-1)
        assert offsets(result.publications) == [1, 2, 3, 4, 5]
        assert payloads(result.publications) == ["m1", "m2", "m3", "m4", "m5"]
        assert result.position == StreamPosition(5, epoch)

    @history_test
    async def test_positive_limit_takes_the_oldest(self, h: HistoryHarness) -> None:
        await self._fill(h.store, "a", 5)
        assert offsets((await h.store.get("a", limit=2)).publications) == [1, 2]
        assert offsets((await h.store.get("a", limit=5)).publications) == [1, 2, 3, 4, 5]
        assert offsets((await h.store.get("a", limit=50)).publications) == [1, 2, 3, 4, 5]

    @history_test
    async def test_reverse_goes_newest_first(self, h: HistoryHarness) -> None:
        epoch = await self._fill(h.store, "a", 5)
        result = await h.store.get("a", limit=-1, reverse=True)
        assert offsets(result.publications) == [5, 4, 3, 2, 1]
        assert result.position == StreamPosition(5, epoch)
        assert offsets((await h.store.get("a", limit=2, reverse=True)).publications) == [5, 4]
        assert offsets((await h.store.get("a", limit=1, reverse=True)).publications) == [5]

    @history_test
    async def test_since_returns_what_follows_the_offset(self, h: HistoryHarness) -> None:
        epoch = await self._fill(h.store, "a", 5)

        async def since(offset: int, limit: int = -1) -> list[int]:
            result = await h.store.get("a", since=StreamPosition(offset, epoch), limit=limit)
            assert result.position == StreamPosition(5, epoch)
            return offsets(result.publications)

        assert await since(2) == [3, 4, 5]
        assert await since(2, limit=2) == [3, 4]
        assert await since(0) == [1, 2, 3, 4, 5]
        assert await since(4) == [5]
        assert await since(5) == []
        assert await since(9) == []

    @history_test
    async def test_since_reverse_pages_backwards(self, h: HistoryHarness) -> None:
        epoch = await self._fill(h.store, "a", 5)

        async def before(offset: int, limit: int = -1) -> list[int]:
            result = await h.store.get(
                "a", since=StreamPosition(offset, epoch), limit=limit, reverse=True
            )
            assert result.position == StreamPosition(5, epoch)
            return offsets(result.publications)

        assert await before(4) == [3, 2, 1]
        assert await before(4, limit=2) == [3, 2]
        assert await before(1) == []
        assert await before(6, limit=1) == [5]
        assert await before(9) == [5, 4, 3, 2, 1]

    @history_test
    async def test_since_with_another_epoch_returns_nothing(self, h: HistoryHarness) -> None:
        epoch = await self._fill(h.store, "a", 5)
        other = "x" + epoch  # any different epoch
        for reverse in (False, True):
            result = await h.store.get(
                "a", since=StreamPosition(2, other), limit=-1, reverse=reverse
            )
            assert result.publications == []
            assert result.position == StreamPosition(5, epoch)

    @history_test
    async def test_since_with_empty_epoch_matches_any_epoch(self, h: HistoryHarness) -> None:
        await self._fill(h.store, "a", 5)
        result = await h.store.get("a", since=StreamPosition(2, ""), limit=-1)
        assert offsets(result.publications) == [3, 4, 5]
        result = await h.store.get("a", since=StreamPosition(3, ""), limit=-1, reverse=True)
        assert offsets(result.publications) == [2, 1]

    @history_test
    async def test_invalid_arguments_raise_value_error(self, h: HistoryHarness) -> None:
        epoch = await self._fill(h.store, "a", 2)
        with pytest.raises(ValueError):
            await h.store.get("a", limit=-2)
        with pytest.raises(ValueError):
            await h.store.get("a", since=StreamPosition(-1, epoch), limit=-1)
        with pytest.raises(ValueError):
            await h.store.get("a", since=StreamPosition(0, epoch), limit=-1, reverse=True)
        # Nothing changed.
        assert offsets((await h.store.get("a", limit=-1)).publications) == [1, 2]

    # -- trimming and removal ---------------------------------------------------

    @history_test
    async def test_size_trimming_keeps_the_newest(self, h: HistoryHarness) -> None:
        opts = HistoryOptions(size=3, ttl=60.0, meta_ttl=120.0)
        epoch = await self._fill(h.store, "a", 5, opts)
        result = await h.store.get("a", limit=-1)
        assert offsets(result.publications) == [3, 4, 5]
        assert payloads(result.publications) == ["m3", "m4", "m5"]
        assert result.position == StreamPosition(5, epoch)
        # A recovering client sees the gap: the first offset is not since + 1.
        since = await h.store.get("a", since=StreamPosition(1, epoch), limit=-1)
        assert offsets(since.publications) == [3, 4, 5]
        reverse = await h.store.get("a", limit=-1, reverse=True)
        assert offsets(reverse.publications) == [5, 4, 3]

    @history_test
    async def test_a_smaller_size_trims_on_the_next_add(self, h: HistoryHarness) -> None:
        await self._fill(h.store, "a", 4, HistoryOptions(size=5, ttl=60.0, meta_ttl=120.0))
        await h.store.add("a", make_pub("m5"), HistoryOptions(size=2, ttl=60.0, meta_ttl=120.0))
        assert offsets((await h.store.get("a", limit=-1)).publications) == [4, 5]

    @history_test
    async def test_remove_drops_data_but_keeps_epoch_and_top(self, h: HistoryHarness) -> None:
        epoch = await self._fill(h.store, "a", 3)
        await h.store.remove("a")
        result = await h.store.get("a", limit=-1)
        assert result.publications == []
        assert result.position == StreamPosition(3, epoch)
        assert await h.store.add("a", make_pub("m4"), OPTS) == StreamPosition(4, epoch)
        assert offsets((await h.store.get("a", limit=-1)).publications) == [4]

    @history_test
    async def test_remove_of_an_unknown_channel_does_nothing(self, h: HistoryHarness) -> None:
        await h.store.remove("nothing-here")
        assert (await h.store.position("nothing-here")).offset == 0
        await self._fill(h.store, "a", 1)
        await h.store.remove("other")
        assert offsets((await h.store.get("a", limit=-1)).publications) == [1]

    # -- time -----------------------------------------------------------------

    @history_test
    async def test_data_expires_after_ttl_without_adds(self, h: HistoryHarness) -> None:
        opts = HistoryOptions(size=10, ttl=2.0, meta_ttl=10.0)
        epoch = await self._fill(h.store, "a", 2, opts)
        await h.advance(1.0)
        assert offsets((await h.store.get("a", limit=-1)).publications) == [1, 2]
        await h.advance(1.5 + h.slack)
        result = await h.store.get("a", limit=-1)
        assert result.publications == []
        # Meta outlives data: same epoch, same top, and the next add continues it.
        assert result.position == StreamPosition(2, epoch)
        assert await h.store.add("a", make_pub("m3"), opts) == StreamPosition(3, epoch)
        assert offsets((await h.store.get("a", limit=-1)).publications) == [3]

    @history_test
    async def test_each_add_restarts_the_data_ttl(self, h: HistoryHarness) -> None:
        opts = HistoryOptions(size=10, ttl=2.0, meta_ttl=10.0)
        await h.store.add("a", make_pub("m1"), opts)
        await h.advance(1.2)
        await h.store.add("a", make_pub("m2"), opts)
        await h.advance(1.2)
        # 2.4 s after the first add, but only 1.2 s after the last one.
        assert offsets((await h.store.get("a", limit=-1)).publications) == [1, 2]
        await h.advance(1.0 + h.slack)
        assert (await h.store.get("a", limit=-1)).publications == []

    @history_test
    async def test_reads_do_not_restart_the_data_ttl(self, h: HistoryHarness) -> None:
        opts = HistoryOptions(size=10, ttl=2.0, meta_ttl=10.0)
        await h.store.add("a", make_pub("m1"), opts)
        await h.advance(1.5)
        assert offsets((await h.store.get("a", limit=-1)).publications) == [1]
        await h.advance(1.0 + h.slack)
        assert (await h.store.get("a", limit=-1)).publications == []

    @history_test
    async def test_lost_meta_starts_a_new_epoch(self, h: HistoryHarness) -> None:
        opts = HistoryOptions(size=10, ttl=1.0, meta_ttl=2.0)
        old = await self._fill(h.store, "a", 2, opts)
        await h.advance(2.5 + h.slack)
        fresh = await h.store.position("a", meta_ttl=2.0)
        assert fresh.offset == 0
        assert fresh.epoch not in ("", old)
        assert await h.store.add("a", make_pub("n1"), opts) == StreamPosition(1, fresh.epoch)
        result = await h.store.get("a", limit=-1)
        assert payloads(result.publications) == ["n1"]
        # A client still holding the old epoch gets nothing from the new stream.
        stale = await h.store.get("a", since=StreamPosition(0, old), limit=-1)
        assert stale.publications == []
        assert stale.position == StreamPosition(1, fresh.epoch)

    @history_test
    async def test_reads_restart_the_meta_ttl(self, h: HistoryHarness) -> None:
        opts = HistoryOptions(size=10, ttl=1.0, meta_ttl=2.0)
        epoch = await self._fill(h.store, "a", 1, opts)
        await h.advance(1.5)
        assert await h.store.position("a", meta_ttl=2.0) == StreamPosition(1, epoch)
        await h.advance(1.5)
        # 3 s after the add, 1.5 s after the read: still the same stream.
        result = await h.store.get("a", limit=-1, meta_ttl=2.0)
        assert result.position == StreamPosition(1, epoch)
        assert result.publications == []  # the data ttl (1 s) did run out
        await h.advance(2.5 + h.slack)
        assert (await h.store.position("a", meta_ttl=2.0)).epoch != epoch


# ---------------------------------------------------------------------------
# Broker
# ---------------------------------------------------------------------------


@dataclass
class Event:
    kind: str  # "publication" | "join" | "leave" | "control"
    channel: str = ""
    pub: Publication | None = None
    position: StreamPosition | None = None
    prev: Publication | None = None
    info: ClientInfo | None = None
    data: bytes = b""


class RecordingHandler:
    """A ``BrokerEventHandler`` that records every event, in arrival order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def on_publication(
        self,
        channel: str,
        pub: Publication,
        position: StreamPosition,
        prev_pub: Publication | None,
    ) -> None:
        self._record(Event("publication", channel, pub=pub, position=position, prev=prev_pub))

    def on_join(self, channel: str, info: ClientInfo) -> None:
        self._record(Event("join", channel, info=info))

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        self._record(Event("leave", channel, info=info))

    def on_control(self, data: bytes) -> None:
        self._record(Event("control", data=data))

    def _record(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def publications(self, channel: str) -> list[Event]:
        return [e for e in self.events if e.kind == "publication" and e.channel == channel]

    def payloads(self, channel: str) -> list[str]:
        return [e.pub.data.decode() for e in self.publications(channel) if e.pub is not None]

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, re-checking after every event."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DELIVERY_TIMEOUT
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"condition not met in time; events: {self.events!r}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def wait_for_payload(self, channel: str, payload: str) -> None:
        await self.wait_until(lambda: payload in self.payloads(channel))


class FailingOnceHandler(RecordingHandler):
    """Raises from the first ``on_publication`` call, records the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def on_publication(
        self,
        channel: str,
        pub: Publication,
        position: StreamPosition,
        prev_pub: Publication | None,
    ) -> None:
        if not self.failed:
            self.failed = True
            self._changed.set()
            raise RuntimeError("handler failure injected by the test")
        super().on_publication(channel, pub, position, prev_pub)


BROKER_HISTORY = HistoryOptions(size=1000, ttl=60.0, meta_ttl=120.0)


class BrokerConformance:
    """Every point of the ``Broker`` specification."""

    @pytest.fixture
    def broker_backend(self) -> HarnessFactory[BrokerHarness]:
        pytest.fail("override the broker_backend fixture in the backend's test class")

    async def _started(self, h: BrokerHarness, *channels: str) -> RecordingHandler:
        handler = RecordingHandler()
        await h.broker.start(handler)
        for channel in channels:
            await h.broker.subscribe(channel)
        return handler

    # -- lifecycle --------------------------------------------------------------

    def _calls(self, broker: Broker) -> list[Callable[[], Awaitable[object]]]:
        info = ClientInfo(user="u", client="c")
        return [
            lambda: broker.subscribe("a"),
            lambda: broker.unsubscribe("a"),
            lambda: broker.publish("a", make_pub("x")),
            lambda: broker.publish("a", make_pub("x"), history=BROKER_HISTORY),
            lambda: broker.publish_join("a", info),
            lambda: broker.publish_leave("a", info),
            lambda: broker.publish_control(b"x"),
            lambda: broker.history("a"),
            lambda: broker.remove_history("a"),
        ]

    @broker_test
    async def test_methods_fail_before_start(self, h: BrokerHarness) -> None:
        for call in self._calls(h.broker):
            with pytest.raises(BrokerNotStartedError):
                await call()

    @broker_test
    async def test_start_only_once(self, h: BrokerHarness) -> None:
        await self._started(h)
        with pytest.raises(BrokerStateError):
            await h.broker.start(RecordingHandler())

    @broker_test
    async def test_close_is_idempotent_and_final(self, h: BrokerHarness) -> None:
        await self._started(h, "a")
        await h.broker.close()
        await h.broker.close()
        for call in self._calls(h.broker):
            with pytest.raises(BrokerClosedError):
                await call()
        with pytest.raises(BrokerClosedError):
            await h.broker.start(RecordingHandler())

    # -- publications ---------------------------------------------------------

    @broker_test
    async def test_publish_without_history(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a")
        pub = make_pub("x", offset=7)
        result = await h.broker.publish("a", pub)
        assert result == PublishResult(ZERO_POSITION, False)
        assert pub.offset == 0
        await handler.wait_for_payload("a", "x")
        [event] = handler.publications("a")
        assert event.position == ZERO_POSITION
        assert event.prev is None
        assert event.pub is not None and event.pub.offset == 0
        stored = await h.broker.history("a", limit=-1)
        assert stored.publications == []
        assert stored.position.offset == 0

    @broker_test
    async def test_publish_with_history_assigns_offsets_and_delivers_them(
        self, h: BrokerHarness
    ) -> None:
        handler = await self._started(h, "a")
        results = [
            await h.broker.publish("a", make_pub(f"m{i}"), history=BROKER_HISTORY)
            for i in range(1, 6)
        ]
        epoch = results[0].position.epoch
        assert epoch != ""
        assert results == [PublishResult(StreamPosition(i, epoch)) for i in range(1, 6)]
        await handler.wait_until(lambda: len(handler.publications("a")) == 5)
        events = handler.publications("a")
        assert [e.position for e in events] == [r.position for r in results]
        assert [e.pub.offset for e in events if e.pub] == [1, 2, 3, 4, 5]
        assert handler.payloads("a") == ["m1", "m2", "m3", "m4", "m5"]
        stored = await h.broker.history("a", limit=-1)
        assert offsets(stored.publications) == [1, 2, 3, 4, 5]
        assert payloads(stored.publications) == ["m1", "m2", "m3", "m4", "m5"]
        assert stored.position == StreamPosition(5, epoch)

    @broker_test
    async def test_first_publish_continues_the_epoch_a_read_saw(self, h: BrokerHarness) -> None:
        await self._started(h, "a")
        seen = (await h.broker.history("a")).position
        assert seen.offset == 0 and seen.epoch != ""
        result = await h.broker.publish("a", make_pub("x"), history=BROKER_HISTORY)
        assert result.position == StreamPosition(1, seen.epoch)

    @broker_test
    async def test_concurrent_publishes_arrive_in_offset_order(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a")
        tasks, per_task = 20, 10
        n = tasks * per_task

        async def publisher(t: int) -> list[tuple[str, PublishResult]]:
            out = []
            for i in range(per_task):
                payload = f"t{t}-{i}"
                result = await h.broker.publish("a", make_pub(payload), history=BROKER_HISTORY)
                out.append((payload, result))
            return out

        batches = await asyncio.gather(*(publisher(t) for t in range(tasks)))
        returned = {payload: result.position for batch in batches for payload, result in batch}
        assert sorted(p.offset for p in returned.values()) == list(range(1, n + 1))
        assert len({p.epoch for p in returned.values()}) == 1
        await handler.wait_until(lambda: len(handler.publications("a")) == n)
        events = handler.publications("a")
        # Delivered in offset order, with no gaps, each under the offset its publisher got.
        assert [e.position.offset for e in events if e.position] == list(range(1, n + 1))
        for event in events:
            assert event.pub is not None
            assert returned[event.pub.data.decode()] == event.position
        # History holds the same sequence.
        stored = (await h.broker.history("a", limit=-1)).publications
        assert payloads(stored) == handler.payloads("a")

    @broker_test
    async def test_channels_have_independent_streams(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a", "b")
        for i in range(3):
            await h.broker.publish("a", make_pub(f"a{i}"), history=BROKER_HISTORY)
            await h.broker.publish("b", make_pub(f"b{i}"), history=BROKER_HISTORY)
        await handler.wait_until(
            lambda: len(handler.publications("a")) == 3 and len(handler.publications("b")) == 3
        )
        for channel in ("a", "b"):
            events = handler.publications(channel)
            assert [e.position.offset for e in events if e.position] == [1, 2, 3]
            assert handler.payloads(channel) == [f"{channel}{i}" for i in range(3)]

    @broker_test
    async def test_publication_time_is_set_when_zero(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a")
        await h.broker.publish("a", make_pub("auto"), history=BROKER_HISTORY)
        await h.broker.publish("a", make_pub("preset", time=1234), history=BROKER_HISTORY)
        await handler.wait_until(lambda: len(handler.publications("a")) == 2)
        auto, preset = (e.pub for e in handler.publications("a"))
        assert auto is not None and preset is not None
        assert auto.time > 0
        assert preset.time == 1234
        stored = (await h.broker.history("a", limit=-1)).publications
        assert [p.time for p in stored] == [auto.time, 1234]

    @broker_test
    async def test_publication_fields_are_delivered(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a")
        info = ClientInfo(user="u1", client="c1", conn_info=b'{"a":1}', chan_info=b"[]")
        await h.broker.publish(
            "a", Publication(data=b'{"x":1}', info=info, tags={"k": "v"}), history=BROKER_HISTORY
        )
        await handler.wait_until(lambda: len(handler.publications("a")) == 1)
        pub = handler.publications("a")[0].pub
        assert pub is not None
        assert (pub.data, pub.info, pub.tags, pub.offset) == (b'{"x":1}', info, {"k": "v"}, 1)

    @broker_test
    async def test_use_delta_passes_the_previous_publication(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a")
        await h.broker.publish("a", make_pub("d1"), history=BROKER_HISTORY, use_delta=True)
        await h.broker.publish("a", make_pub("d2"), history=BROKER_HISTORY, use_delta=True)
        await h.broker.publish("a", make_pub("d3"), history=BROKER_HISTORY)
        await h.broker.remove_history("a")
        await h.broker.publish("a", make_pub("d4"), history=BROKER_HISTORY, use_delta=True)
        await h.broker.publish("a", make_pub("d5"), use_delta=True)  # no history: no base
        await handler.wait_until(lambda: len(handler.publications("a")) == 5)
        prevs = [e.prev.data.decode() if e.prev else None for e in handler.publications("a")]
        assert prevs == [None, "d1", None, None, None]

    @broker_test
    async def test_handler_errors_do_not_break_publishing(self, h: BrokerHarness) -> None:
        handler = FailingOnceHandler()
        await h.broker.start(handler)
        await h.broker.subscribe("a")
        first = await h.broker.publish("a", make_pub("m1"), history=BROKER_HISTORY)
        assert first.position.offset == 1
        await handler.wait_until(lambda: handler.failed)
        second = await h.broker.publish("a", make_pub("m2"), history=BROKER_HISTORY)
        assert second.position.offset == 2
        await handler.wait_for_payload("a", "m2")
        assert handler.payloads("a") == ["m2"]

    # -- subscriptions, join / leave / control ----------------------------------

    @broker_test
    async def test_events_only_for_subscribed_channels(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a")
        info = ClientInfo(user="u", client="c")
        await h.broker.publish("b", make_pub("b1"), history=BROKER_HISTORY)
        await h.broker.publish("b", make_pub("b2"))
        await h.broker.publish_join("b", info)
        await h.broker.publish_leave("b", info)
        # "b" is not subscribed now; subscribe it and publish a barrier there.
        await h.broker.subscribe("b")
        await h.broker.publish("b", make_pub("barrier"))
        await handler.wait_for_payload("b", "barrier")
        assert [e.kind for e in handler.events if e.channel == "b"] == ["publication"]
        assert handler.payloads("b") == ["barrier"]
        # The unsubscribed publication still went to history.
        assert (await h.broker.history("b")).position.offset == 1

    @broker_test
    async def test_unsubscribe_stops_delivery_and_is_not_reference_counted(
        self, h: BrokerHarness
    ) -> None:
        handler = await self._started(h, "a")
        await h.broker.subscribe("a")  # twice
        await h.broker.unsubscribe("a")  # once is enough
        await h.broker.unsubscribe("a")  # and again is harmless
        await h.broker.unsubscribe("never-subscribed")
        await h.broker.publish("a", make_pub("lost"))
        await h.broker.publish_join("a", ClientInfo(user="u", client="c"))
        await h.broker.subscribe("a")
        await h.broker.publish("a", make_pub("barrier"))
        await handler.wait_for_payload("a", "barrier")
        assert [e.kind for e in handler.events] == ["publication"]
        assert handler.payloads("a") == ["barrier"]

    @broker_test
    async def test_join_and_leave_keep_order_with_publications(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a")
        alice = ClientInfo(user="alice", client="c1", conn_info=b'{"n":1}', chan_info=b'{"m":2}')
        await h.broker.publish("a", make_pub("m1"), history=BROKER_HISTORY)
        await h.broker.publish_join("a", alice)
        await h.broker.publish("a", make_pub("m2"))
        await h.broker.publish_leave("a", alice)
        await handler.wait_until(lambda: len(handler.events) == 4)
        assert [e.kind for e in handler.events] == ["publication", "join", "publication", "leave"]
        assert all(e.channel == "a" for e in handler.events)
        assert handler.events[1].info == alice
        assert handler.events[3].info == alice

    @broker_test
    async def test_control_reaches_this_node_without_subscriptions(self, h: BrokerHarness) -> None:
        handler = await self._started(h)
        await h.broker.publish_control(b"\x00\x01binary\xff")
        await h.broker.publish_control(b"second")
        await handler.wait_until(lambda: len(handler.events) == 2)
        assert [(e.kind, e.data) for e in handler.events] == [
            ("control", b"\x00\x01binary\xff"),
            ("control", b"second"),
        ]

    # -- idempotency ------------------------------------------------------------

    @broker_test
    async def test_repeated_idempotency_key_is_suppressed(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a")
        first = await h.broker.publish(
            "a", make_pub("m1"), history=BROKER_HISTORY, idempotency_key="k"
        )
        again = await h.broker.publish(
            "a", make_pub("m1-retry"), history=BROKER_HISTORY, idempotency_key="k"
        )
        assert not first.suppressed
        assert again == PublishResult(first.position, True)
        other = await h.broker.publish(
            "a", make_pub("m2"), history=BROKER_HISTORY, idempotency_key="k2"
        )
        assert other.position == StreamPosition(2, first.position.epoch)
        await handler.wait_for_payload("a", "m2")
        assert handler.payloads("a") == ["m1", "m2"]
        assert payloads((await h.broker.history("a", limit=-1)).publications) == ["m1", "m2"]

    @broker_test
    async def test_idempotency_without_history(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a")
        first = await h.broker.publish("a", make_pub("m1"), idempotency_key="k")
        again = await h.broker.publish("a", make_pub("m1-retry"), idempotency_key="k")
        assert first == PublishResult(ZERO_POSITION, False)
        assert again == PublishResult(ZERO_POSITION, True)
        await h.broker.publish("a", make_pub("barrier"))
        await handler.wait_for_payload("a", "barrier")
        assert handler.payloads("a") == ["m1", "barrier"]

    @broker_test
    async def test_idempotency_keys_are_per_channel(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a", "b")
        ra = await h.broker.publish(
            "a", make_pub("a1"), history=BROKER_HISTORY, idempotency_key="k"
        )
        rb = await h.broker.publish(
            "b", make_pub("b1"), history=BROKER_HISTORY, idempotency_key="k"
        )
        assert not ra.suppressed and not rb.suppressed
        await handler.wait_until(
            lambda: handler.payloads("a") == ["a1"] and handler.payloads("b") == ["b1"]
        )

    @broker_test
    async def test_idempotency_result_expires(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a")
        first = await h.broker.publish(
            "a", make_pub("m1"), history=BROKER_HISTORY, idempotency_key="k", idempotent_ttl=2.0
        )
        await h.advance(1.0)
        held = await h.broker.publish(
            "a",
            make_pub("m1-retry"),
            history=BROKER_HISTORY,
            idempotency_key="k",
            idempotent_ttl=2.0,
        )
        assert held == PublishResult(first.position, True)
        await h.advance(1.5 + h.slack)
        later = await h.broker.publish(
            "a",
            make_pub("m1-late"),
            history=BROKER_HISTORY,
            idempotency_key="k",
            idempotent_ttl=2.0,
        )
        assert later == PublishResult(StreamPosition(2, first.position.epoch), False)
        await handler.wait_for_payload("a", "m1-late")
        assert handler.payloads("a") == ["m1", "m1-late"]

    @broker_test
    async def test_concurrent_idempotent_publishes_go_out_once(self, h: BrokerHarness) -> None:
        handler = await self._started(h, "a")
        results = await asyncio.gather(
            *(
                h.broker.publish(
                    "a", make_pub(f"try{i}"), history=BROKER_HISTORY, idempotency_key="k"
                )
                for i in range(10)
            )
        )
        assert sum(not r.suppressed for r in results) == 1
        assert {r.position for r in results} == {results[0].position}
        assert results[0].position.offset == 1
        await h.broker.publish("a", make_pub("barrier"))
        await handler.wait_for_payload("a", "barrier")
        assert len(handler.payloads("a")) == 2
        assert len((await h.broker.history("a", limit=-1)).publications) == 1

    @broker_test
    async def test_non_positive_idempotent_ttl_is_rejected(self, h: BrokerHarness) -> None:
        await self._started(h, "a")
        with pytest.raises(ValueError):
            await h.broker.publish("a", make_pub("x"), idempotency_key="k", idempotent_ttl=0)

    # -- history through the broker ---------------------------------------------

    @broker_test
    async def test_history_reads_follow_the_history_store_rules(self, h: BrokerHarness) -> None:
        await self._started(h)
        opts = HistoryOptions(size=4, ttl=60.0, meta_ttl=120.0)
        for i in range(1, 6):
            await h.broker.publish("a", make_pub(f"m{i}"), history=opts)
        result = await h.broker.history("a", limit=-1)
        epoch = result.position.epoch
        assert offsets(result.publications) == [2, 3, 4, 5]
        assert result.position == StreamPosition(5, epoch)
        since = await h.broker.history("a", since=StreamPosition(2, epoch), limit=2)
        assert offsets(since.publications) == [3, 4]
        last = await h.broker.history("a", limit=1, reverse=True)
        assert offsets(last.publications) == [5]
        other = await h.broker.history("a", since=StreamPosition(2, "x" + epoch), limit=-1)
        assert other.publications == []
        assert (await h.broker.history("a")).publications == []

    @broker_test
    async def test_remove_history_keeps_epoch_and_top(self, h: BrokerHarness) -> None:
        await self._started(h)
        for i in range(3):
            await h.broker.publish("a", make_pub(f"m{i}"), history=BROKER_HISTORY)
        epoch = (await h.broker.history("a")).position.epoch
        await h.broker.remove_history("a")
        result = await h.broker.history("a", limit=-1)
        assert result.publications == []
        assert result.position == StreamPosition(3, epoch)
        next_result = await h.broker.publish("a", make_pub("m3"), history=BROKER_HISTORY)
        assert next_result.position == StreamPosition(4, epoch)


# ---------------------------------------------------------------------------
# PresenceManager
# ---------------------------------------------------------------------------


def client(client_id: str, user: str, conn_info: bytes | None = None) -> ClientInfo:
    return ClientInfo(user=user, client=client_id, conn_info=conn_info)


class PresenceConformance:
    """Every point of the ``PresenceManager`` specification."""

    @pytest.fixture
    def presence_backend(self) -> HarnessFactory[PresenceHarness]:
        pytest.fail("override the presence_backend fixture in the backend's test class")

    @presence_test
    async def test_empty_channel(self, h: PresenceHarness) -> None:
        assert await h.manager.presence("a") == {}
        assert await h.manager.stats("a") == PresenceStats(0, 0)

    @presence_test
    async def test_added_clients_are_present(self, h: PresenceHarness) -> None:
        c1 = ClientInfo(user="u1", client="c1", conn_info=b'{"n":1}', chan_info=b'{"c":2}')
        c2 = client("c2", "u2")
        await h.manager.add("a", "c1", c1)
        await h.manager.add("a", "c2", c2)
        assert await h.manager.presence("a") == {"c1": c1, "c2": c2}
        assert await h.manager.stats("a") == PresenceStats(2, 2)

    @presence_test
    async def test_add_is_an_upsert(self, h: PresenceHarness) -> None:
        await h.manager.add("a", "c1", client("c1", "u1", b'{"v":1}'))
        await h.manager.add("a", "c1", client("c1", "u1", b'{"v":2}'))
        assert await h.manager.presence("a") == {"c1": client("c1", "u1", b'{"v":2}')}
        assert await h.manager.stats("a") == PresenceStats(1, 1)

    @presence_test
    async def test_several_clients_of_one_user(self, h: PresenceHarness) -> None:
        for client_id in ("c1", "c2", "c3"):
            await h.manager.add("a", client_id, client(client_id, "u1"))
        await h.manager.add("a", "c4", client("c4", "u2"))
        assert await h.manager.stats("a") == PresenceStats(4, 2)
        await h.manager.remove("a", "c1", "u1")
        assert await h.manager.stats("a") == PresenceStats(3, 2)
        await h.manager.remove("a", "c2", "u1")
        await h.manager.remove("a", "c3", "u1")
        assert await h.manager.stats("a") == PresenceStats(1, 1)
        assert set(await h.manager.presence("a")) == {"c4"}
        await h.manager.remove("a", "c4", "u2")
        assert await h.manager.stats("a") == PresenceStats(0, 0)
        assert await h.manager.presence("a") == {}

    @presence_test
    async def test_anonymous_clients_count_as_one_user(self, h: PresenceHarness) -> None:
        await h.manager.add("a", "c1", client("c1", ""))
        await h.manager.add("a", "c2", client("c2", ""))
        await h.manager.add("a", "c3", client("c3", "u1"))
        assert await h.manager.stats("a") == PresenceStats(3, 2)

    @presence_test
    async def test_removing_an_absent_client_does_nothing(self, h: PresenceHarness) -> None:
        await h.manager.remove("nowhere", "c1", "u1")
        await h.manager.add("a", "c1", client("c1", "u1"))
        await h.manager.remove("a", "c9", "u9")
        await h.manager.remove("a", "c1", "u1")
        await h.manager.remove("a", "c1", "u1")
        assert await h.manager.presence("a") == {}
        assert await h.manager.stats("a") == PresenceStats(0, 0)

    @presence_test
    async def test_channels_are_independent(self, h: PresenceHarness) -> None:
        await h.manager.add("a", "c1", client("c1", "u1"))
        await h.manager.add("b", "c2", client("c2", "u2"))
        await h.manager.add("b", "c1", client("c1", "u1"))
        await h.manager.remove("a", "c1", "u1")
        assert await h.manager.presence("a") == {}
        assert set(await h.manager.presence("b")) == {"c1", "c2"}

    @presence_test
    async def test_presence_returns_a_fresh_dict(self, h: PresenceHarness) -> None:
        await h.manager.add("a", "c1", client("c1", "u1"))
        snapshot = await h.manager.presence("a")
        snapshot.clear()
        assert set(await h.manager.presence("a")) == {"c1"}

    @presence_test
    async def test_entries_expire_after_ttl(self, h: PresenceHarness) -> None:
        await h.manager.add("a", "c1", client("c1", "u1"))
        await h.advance(h.ttl * 0.6)
        assert set(await h.manager.presence("a")) == {"c1"}
        await h.advance(h.ttl * 0.6 + h.slack)
        assert await h.manager.presence("a") == {}
        assert await h.manager.stats("a") == PresenceStats(0, 0)

    @presence_test
    async def test_add_restarts_the_lease(self, h: PresenceHarness) -> None:
        await h.manager.add("a", "c1", client("c1", "u1"))
        await h.manager.add("a", "c2", client("c2", "u2"))
        await h.advance(h.ttl * 0.6)
        await h.manager.add("a", "c1", client("c1", "u1"))
        await h.advance(h.ttl * 0.6 + h.slack)
        # c2 is 1.2 ttl old; c1 was refreshed 0.6 ttl (+ slack < ttl) ago.
        assert set(await h.manager.presence("a")) == {"c1"}
        assert await h.manager.stats("a") == PresenceStats(1, 1)
        await h.advance(h.ttl * 0.6)
        assert await h.manager.presence("a") == {}

    @presence_test
    async def test_expiry_keeps_user_counts_right(self, h: PresenceHarness) -> None:
        await h.manager.add("a", "c1", client("c1", "u1"))
        await h.manager.add("a", "c2", client("c2", "u1"))
        await h.manager.add("a", "c3", client("c3", "u2"))
        await h.advance(h.ttl * 0.6)
        await h.manager.add("a", "c2", client("c2", "u1"))
        await h.manager.add("a", "c3", client("c3", "u2"))
        await h.advance(h.ttl * 0.6 + h.slack)
        assert set(await h.manager.presence("a")) == {"c2", "c3"}
        assert await h.manager.stats("a") == PresenceStats(2, 2)
        await h.manager.remove("a", "c2", "u1")
        assert await h.manager.stats("a") == PresenceStats(1, 1)

    @presence_test
    async def test_add_many_is_add_for_each_entry(self, h: PresenceHarness) -> None:
        entries = [
            ("a", "c1", client("c1", "u1")),
            ("b", "c1", client("c1", "u1", b'{"b":1}')),
            ("a", "c2", client("c2", "u1")),
            ("a", "c3", client("c3", "")),
            # The same client twice in one batch: the later entry wins, and
            # its user's count moves with it.
            ("c", "c4", client("c4", "u4")),
            ("c", "c4", client("c4", "u5", b"{}")),
        ]
        await add_many(h.manager, entries)
        assert await h.manager.presence("a") == {
            "c1": client("c1", "u1"),
            "c2": client("c2", "u1"),
            "c3": client("c3", ""),
        }
        assert await h.manager.stats("a") == PresenceStats(3, 2)
        assert await h.manager.presence("b") == {"c1": client("c1", "u1", b'{"b":1}')}
        assert await h.manager.presence("c") == {"c4": client("c4", "u5", b"{}")}
        assert await h.manager.stats("c") == PresenceStats(1, 1)
        await add_many(h.manager, [])

    @presence_test
    async def test_add_many_in_large_batches(self, h: PresenceHarness) -> None:
        entries = [(f"ch{i % 3}", f"c{i}", client(f"c{i}", f"u{i % 50}")) for i in range(700)]
        await add_many(h.manager, entries)
        for n in range(3):
            present = await h.manager.presence(f"ch{n}")
            assert set(present) == {f"c{i}" for i in range(n, 700, 3)}
            assert (await h.manager.stats(f"ch{n}")).num_clients == len(present)
        assert sum([(await h.manager.stats(f"ch{n}")).num_users for n in range(3)]) == 150

    @presence_test
    async def test_add_many_restarts_leases_and_purges(self, h: PresenceHarness) -> None:
        await add_many(h.manager, [("a", c, client(c, c)) for c in ("c1", "c2", "c3")])
        await h.advance(h.ttl * 0.6)
        await add_many(h.manager, [("a", "c1", client("c1", "c1")), ("b", "c9", client("c9", "u"))])
        await h.advance(h.ttl * 0.6 + h.slack)
        # c2 and c3 expired; the next batch purges them before adding.
        await add_many(h.manager, [("a", "c4", client("c4", "c4"))])
        assert set(await h.manager.presence("a")) == {"c1", "c4"}
        assert await h.manager.stats("a") == PresenceStats(2, 2)

    @presence_test
    async def test_a_client_can_come_back_after_expiry(self, h: PresenceHarness) -> None:
        await h.manager.add("a", "c1", client("c1", "u1"))
        await h.advance(h.ttl * 1.2 + h.slack)
        assert await h.manager.stats("a") == PresenceStats(0, 0)
        await h.manager.add("a", "c1", client("c1", "u1", b"{}"))
        assert await h.manager.presence("a") == {"c1": client("c1", "u1", b"{}")}
        assert await h.manager.stats("a") == PresenceStats(1, 1)
