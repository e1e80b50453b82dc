"""Single flight for the history reads of subscribes: concurrent recoveries of one
channel share one read, and every client still gets exactly what its own read
would have returned (its own missed publications, in order, up to its own limit,
nothing from another stream), with publications arriving meanwhile neither lost
nor duplicated."""

from __future__ import annotations

import asyncio
from typing import Any

from rtcore.engine.memory import MemoryBroker
from rtcore.engine.recovery import REUSE_WINDOW
from rtcore.server.metrics import NodeCollector

from .helpers import Client, FakeClock, GatedBroker, connect_token, make_node, run, until


HISTORY = {"history_size": 50, "history_ttl": 300, "allow_subscribe_for_client": True}
CONFIG: dict[str, Any] = {
    "client": {"ping_interval": 0, "pong_timeout": 0},
    "channel": {
        "namespaces": [
            {"name": "rec", **HISTORY, "force_recovery": True},
            {"name": "cache", **HISTORY, "force_recovery": True, "force_recovery_mode": "cache"},
            {"name": "pos", **HISTORY, "force_positioning": True},
        ]
    },
}

# At most 3 publications recovered.
LIMIT_3: dict[str, Any] = {
    **CONFIG,
    "client": {**CONFIG["client"], "recovery_max_publication_limit": 3},
}


class CountingBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.history_calls = 0
        self.fail_with: BaseException | None = None

    async def history(self, channel: str, **kwargs: Any) -> Any:
        self.history_calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        return await super().history(channel, **kwargs)


class CountingGatedBroker(GatedBroker):
    def __init__(self) -> None:
        super().__init__()
        self.history_calls = 0

    async def history(self, channel: str, **kwargs: Any) -> Any:
        self.history_calls += 1
        return await super().history(channel, **kwargs)


async def _publish(node: Any, channel: str, *ns: int) -> None:
    for n in ns:
        await node.publish(channel, b'{"n":%d}' % n)


async def _clients(node: Any, n: int, codec: str = "json") -> list[Client]:
    clients = []
    for i in range(n):
        c = Client(node, codec)
        await c.connect(connect_token(f"u{i}"))
        clients.append(c)
    return clients


async def _stream(broker: Any, *ns: int, config: dict[str, Any] = CONFIG) -> tuple[Any, str]:
    """A started node whose channel ``rec:a`` holds publications ``ns`` (a
    watcher keeps the node subscribed to it), and the stream's epoch."""
    node = make_node(config, broker=broker)
    await node.start()
    (watcher,) = await _clients(node, 1)
    await watcher.subscribe("rec:a")
    await _publish(node, "rec:a", *ns)
    return node, (await node.history("rec:a")).position.epoch


def _subscribe_all(clients: list[Client], bodies: list[dict[str, Any]]) -> None:
    """Send every client's subscribe in the same loop iteration (a reconnect storm)."""
    for c, body in zip(clients, bodies, strict=True):
        c.send({"id": 100, "subscribe": body})


async def _replies(clients: list[Client]) -> list[dict[str, Any]]:
    await until(lambda: all(c.reply(100) is not None for c in clients), 10, "subscribe replies")
    replies = []
    for c in clients:
        reply = c.reply(100)
        assert reply is not None and "error" not in reply, reply
        replies.append(reply["subscribe"])
    return replies


def _offsets(result: dict[str, Any]) -> list[int]:
    return [p["offset"] for p in result.get("publications", [])]


def test_two_hundred_clients_recover_one_channel_with_one_read() -> None:
    async def main() -> None:
        broker = CountingBroker()
        node, epoch = await _stream(broker, 1, 2, 3)
        # The clients were at offset 3 when they dropped; 5 publications while away.
        await _publish(node, "rec:a", 4, 5, 6, 7, 8)
        clients = await _clients(node, 200)
        calls = broker.history_calls
        _subscribe_all(
            clients, [{"channel": "rec:a", "recover": True, "offset": 3, "epoch": epoch}] * 200
        )
        for res in await _replies(clients):
            assert res["recovered"] is True and res["epoch"] == epoch
            assert _offsets(res) == [4, 5, 6, 7, 8]
            assert [p["data"]["n"] for p in res["publications"]] == [4, 5, 6, 7, 8]
        assert broker.history_calls - calls == 1
        assert node.recovery_reads_saved == 199
        # Live publications continue for all of them, without gap or duplicate.
        await _publish(node, "rec:a", 9)
        await until(lambda: all(c.publications("rec:a") for c in clients))
        assert all([p["offset"] for p in c.publications("rec:a")] == [9] for c in clients)
        await node.close()

    run(main())


def test_each_client_gets_its_own_offset_limit_and_epoch() -> None:
    async def main() -> None:
        broker = CountingBroker()
        node, epoch = await _stream(broker, *range(1, 9), config=LIMIT_3)
        offsets = [8, 7, 6, 5, 2, 0]
        clients = await _clients(node, len(offsets) + 1)
        calls = broker.history_calls
        bodies = [
            {"channel": "rec:a", "recover": True, "offset": o, "epoch": epoch} for o in offsets
        ]
        # One client from another incarnation of the stream.
        bodies.append({"channel": "rec:a", "recover": True, "offset": 7, "epoch": "gone"})
        _subscribe_all(clients, bodies)
        results = await _replies(clients)
        assert broker.history_calls - calls == 1
        by_offset = dict(zip(offsets, results, strict=False))
        assert by_offset[8]["recovered"] is True and _offsets(by_offset[8]) == []
        assert by_offset[7]["recovered"] is True and _offsets(by_offset[7]) == [8]
        assert by_offset[6]["recovered"] is True and _offsets(by_offset[6]) == [7, 8]
        assert by_offset[5]["recovered"] is True and _offsets(by_offset[5]) == [6, 7, 8]
        # More missed than the limit allows: not recovered, as with a read of its own.
        for o in (2, 0):
            assert not by_offset[o].get("recovered") and _offsets(by_offset[o]) == []
            assert by_offset[o]["offset"] == 8
        stale = results[-1]
        assert not stale.get("recovered") and _offsets(stale) == [] and stale["epoch"] == epoch
        await node.close()

    run(main())


def test_positioning_and_cache_mode_reads_are_merged_too() -> None:
    async def main() -> None:
        broker = CountingBroker()
        node = make_node(CONFIG, broker=broker)
        await node.start()
        (watcher,) = await _clients(node, 1)
        await watcher.subscribe("pos:a")
        await watcher.subscribe("cache:a")
        await _publish(node, "pos:a", 1, 2)
        await _publish(node, "cache:a", 1, 2, 3)
        epoch = (await node.history("cache:a")).position.epoch
        clients = await _clients(node, 50)
        calls = broker.history_calls
        _subscribe_all(clients[:25], [{"channel": "pos:a"}] * 25)
        _subscribe_all(
            clients[25:],
            [{"channel": "cache:a", "recover": True, "offset": 1, "epoch": epoch}] * 25,
        )
        results = await _replies(clients)
        assert broker.history_calls - calls == 2  # one per channel
        assert all(r["offset"] == 2 and "recovered" not in r for r in results[:25])
        assert all(r["recovered"] is True and _offsets(r) == [3] for r in results[25:])
        await node.close()

    run(main())


def test_a_read_in_flight_serves_later_subscribes_only_when_exact() -> None:
    async def main() -> None:
        broker = CountingGatedBroker()
        node, epoch = await _stream(broker, 1, 2, 3, 4, 5)
        first, second, third = await _clients(node, 3)
        body = {"channel": "rec:a", "recover": True, "offset": 2, "epoch": epoch}
        calls = broker.history_calls
        broker.gate = asyncio.Event()
        broker.read_before = True  # the stream is read, then the answer is held
        first.send({"id": 100, "subscribe": body})
        await asyncio.wait_for(broker.waiting.wait(), 3)
        # Joins the read in flight; nothing was published since it was read.
        second.send({"id": 100, "subscribe": body})
        await asyncio.sleep(0)
        # A publication reaches the node after the read, before the third subscribes:
        # the read in flight cannot serve the third (6 is neither in it nor held for it).
        await _publish(node, "rec:a", 6)
        third.send({"id": 100, "subscribe": body})
        await asyncio.sleep(0)
        broker.gate.set()
        broker.gate = None
        r1, r2, r3 = await _replies([first, second, third])
        assert _offsets(r1) == _offsets(r2) == [3, 4, 5]
        assert r1["recovered"] is True and r2["recovered"] is True
        assert r3["recovered"] is True and _offsets(r3) == [3, 4, 5, 6]
        assert broker.history_calls - calls == 2
        # 6 reaches the first two live, after their replies: each offset once, in order.
        for c in (first, second):
            await until(lambda c=c: c.publications("rec:a"))
            assert [p["offset"] for p in c.publications("rec:a")] == [6]
        assert third.publications("rec:a") == []
        await node.close()

    run(main())


def test_a_finished_read_serves_within_the_window_until_a_publication() -> None:
    async def main() -> None:
        clock = FakeClock()
        broker = CountingBroker()
        node = make_node(CONFIG, clock=clock, broker=broker)
        await node.start()
        (watcher,) = await _clients(node, 1)
        await watcher.subscribe("rec:a")
        await _publish(node, "rec:a", 1, 2, 3)
        epoch = (await node.history("rec:a")).position.epoch
        body = {"channel": "rec:a", "recover": True, "offset": 1, "epoch": epoch}
        clients = await _clients(node, 4)
        calls = broker.history_calls
        assert _offsets(await clients[0].subscribe(**body)) == [2, 3]
        assert _offsets(await clients[1].subscribe(**body)) == [2, 3]
        assert broker.history_calls - calls == 1  # served by the finished read
        await _publish(node, "rec:a", 4)
        assert _offsets(await clients[2].subscribe(**body)) == [2, 3, 4]
        assert broker.history_calls - calls == 2  # a newer publication: read again
        clock.advance(REUSE_WINDOW + 0.5)
        assert _offsets(await clients[3].subscribe(**body)) == [2, 3, 4]
        assert broker.history_calls - calls == 3  # too old to serve
        await node.close()

    run(main())


def test_a_failed_read_fails_every_subscribe_it_serves_then_reads_again() -> None:
    async def main() -> None:
        broker = CountingBroker()
        node, epoch = await _stream(broker, 1, 2)
        clients = await _clients(node, 20)
        body = {"channel": "rec:a", "recover": True, "offset": 1, "epoch": epoch}
        broker.fail_with = ConnectionError("engine connection lost")
        calls = broker.history_calls
        _subscribe_all(clients, [body] * 20)
        await until(lambda: all(c.reply(100) is not None for c in clients))
        assert broker.history_calls - calls == 1
        for c in clients:
            reply = c.reply(100)
            assert reply is not None and reply["error"]["code"] == 100
        broker.fail_with = None
        res = await clients[0].subscribe(**body)
        assert res["recovered"] is True and _offsets(res) == [2]
        assert broker.history_calls - calls == 2
        await node.close()

    run(main())


def test_merged_reads_are_a_metric() -> None:
    async def main() -> None:
        node, epoch = await _stream(None, 1)
        clients = await _clients(node, 10)
        _subscribe_all(
            clients, [{"channel": "rec:a", "recover": True, "offset": 0, "epoch": epoch}] * 10
        )
        await _replies(clients)
        samples = {s.name: s.value for m in NodeCollector(node).collect() for s in m.samples}
        assert samples["rtcore_recovery_reads_merged_total"] == 9
        assert samples["rtcore_recovery_reads_total"] == node.recovery_reads
        await node.close()

    run(main())


class InProcessCountingBroker(CountingBroker):
    """Counts reads, and is read at once like the plain memory broker."""

    reads_in_process = True  # type: ignore[assignment]


def test_only_the_plain_memory_broker_is_read_in_process() -> None:
    assert MemoryBroker().reads_in_process is True
    # A subclass's own history may wait (I/O, a gate): read a loop iteration later.
    assert CountingBroker().reads_in_process is False
    assert InProcessCountingBroker().reads_in_process is True


def test_in_process_reads_serve_a_storm_with_one_read_and_each_client_exactly() -> None:
    async def main() -> None:
        broker = InProcessCountingBroker()
        node, epoch = await _stream(broker, *range(1, 9), config=LIMIT_3)
        clients = await _clients(node, 104)
        calls, saved = broker.history_calls, node.recovery_reads_saved
        same = {"channel": "rec:a", "recover": True, "offset": 6, "epoch": epoch}
        # 100 identical recoveries, then offsets a finished read does not cover.
        bodies = [same] * 100 + [
            {**same, "offset": 7},
            {**same, "offset": 2},
            {**same, "offset": 5},
            {**same, "epoch": "gone"},
        ]
        _subscribe_all(clients, bodies)
        results = await _replies(clients)
        for res in results[:100]:
            assert res["recovered"] is True and _offsets(res) == [7, 8]
        assert results[100]["recovered"] is True and _offsets(results[100]) == [8]
        # More missed than the limit allows: not recovered, as with a read of its own.
        assert not results[101].get("recovered") and _offsets(results[101]) == []
        assert results[102]["recovered"] is True and _offsets(results[102]) == [6, 7, 8]
        assert not results[103].get("recovered") and results[103]["epoch"] == epoch
        # One read for the 100 (the first, at once; the rest reuse it) and
        # offset 7; then the channel's latest read is the one for offset 2,
        # which covers neither offset 5 nor the other epoch's 6: four reads.
        assert broker.history_calls - calls == 4
        assert node.recovery_reads_saved - saved == 100
        # Live publications continue without gap or duplicate.
        await _publish(node, "rec:a", 9)
        await until(lambda: all(c.publications("rec:a") for c in clients[:101]))
        assert all([p["offset"] for p in c.publications("rec:a")] == [9] for c in clients[:101])
        await node.close()

    run(main())


def test_an_in_process_read_that_fails_fails_its_subscribe_only() -> None:
    async def main() -> None:
        broker = InProcessCountingBroker()
        node, epoch = await _stream(broker, 1, 2)
        first, second = await _clients(node, 2)
        body = {"channel": "rec:a", "recover": True, "offset": 1, "epoch": epoch}
        broker.fail_with = ConnectionError("engine connection lost")
        first.send({"id": 100, "subscribe": body})
        await until(lambda: first.reply(100) is not None)
        reply = first.reply(100)
        assert reply is not None and reply["error"]["code"] == 100
        broker.fail_with = None
        res = await second.subscribe(**body)
        assert res["recovered"] is True and _offsets(res) == [2]
        await node.close()

    run(main())
