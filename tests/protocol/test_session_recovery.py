"""Stream positions and recovery (PROTOCOL.md §4.3, §4.4), sans-I/O.

The guarantees under test: a successful recovery returns every missed
publication once, in offset order, with ``recovered: true``; a recovery that
cannot be complete says ``recovered: false`` and returns nothing (or error
112 when the client set the reject-unrecovered flag); publications that
arrive while a subscribe is reading history are held and delivered after the
subscribe reply, in order, with no duplicate and no gap; a positioned
subscriber that sees a gap or a new epoch is told to resubscribe (client
side: unsubscribe 2500) or reconnect (server side: disconnect 3010).
"""

from __future__ import annotations

import asyncio

import pytest

from rtcore.protocol.types import Publication, StreamPosition

from .helpers import Client, GatedBroker, connect_token, make_node, run, settle, until


HISTORY = {"history_size": 10, "history_ttl": 300, "allow_subscribe_for_client": True}
CONFIG = {
    "client": {"ping_interval": 0, "pong_timeout": 0},
    "channel": {
        "namespaces": [
            {"name": "rec", **HISTORY, "force_recovery": True},
            {"name": "small", **HISTORY, "history_size": 3, "force_recovery": True},
            {"name": "cache", **HISTORY, "force_recovery": True, "force_recovery_mode": "cache"},
            {"name": "pos", **HISTORY, "force_positioning": True},
            {"name": "opt", **HISTORY, "allow_recovery": True},
            {"name": "plain", **HISTORY},
        ]
    },
}


def _ns(pubs: list[dict]) -> list[int]:
    return [p["data"]["n"] for p in pubs]


async def _publish(node, channel: str, *ns: int) -> None:
    for n in ns:
        await node.publish(channel, b'{"n":%d}' % n)


async def _start(codec: str = "json", config=CONFIG, broker=None):
    node = make_node(config, broker=broker)
    await node.start()
    c = Client(node, codec)
    await c.connect(connect_token("42"))
    return node, c


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_recovered_with_all_missed_publications_in_order(codec: str) -> None:
    async def main() -> None:
        node, first = await _start(codec)
        res = await first.subscribe("rec:a")
        assert res["recoverable"] is True and res["positioned"] is True
        epoch = res["epoch"]
        await _publish(node, "rec:a", 1, 2, 3)
        await until(lambda: len(first.publications("rec:a")) == 3)
        last = first.publications("rec:a")[-1]["offset"]
        assert last == 3
        # The client goes away; publications go on.
        first.session.transport_closed()
        await _publish(node, "rec:a", 4, 5, 6, 7)
        again = Client(node, codec)
        await again.connect(connect_token("42"))
        res = await again.subscribe("rec:a", recover=True, offset=last, epoch=epoch)
        assert res["recovered"] is True and res["was_recovering"] is True
        assert _ns(res["publications"]) == [4, 5, 6, 7]
        assert [p["offset"] for p in res["publications"]] == [4, 5, 6, 7]
        # The client advances its own position from the publications.
        assert res["offset"] == 3 and res["epoch"] == epoch
        # Live publications continue from there.
        await _publish(node, "rec:a", 8)
        await until(lambda: again.publications("rec:a"))
        assert [p["offset"] for p in again.publications("rec:a")] == [8]
        await node.close()

    run(main())


def test_recovered_with_nothing_missed() -> None:
    async def main() -> None:
        node, c = await _start()
        await _publish(node, "rec:a", 1, 2)
        top = await node.history("rec:a")
        res = await c.subscribe("rec:a", recover=True, offset=2, epoch=top.position.epoch)
        assert res["recovered"] is True and res["was_recovering"] is True
        assert res.get("publications", []) == []
        assert res["offset"] == 2
        await node.close()

    run(main())


def test_epoch_mismatch_is_not_recovered() -> None:
    async def main() -> None:
        node, c = await _start()
        await _publish(node, "rec:a", 1, 2, 3)
        top = await node.history("rec:a")
        res = await c.subscribe("rec:a", recover=True, offset=1, epoch="Stale000")
        assert "recovered" not in res  # false is omitted on the wire
        assert res["was_recovering"] is True
        assert res.get("publications", []) == []
        assert res["offset"] == 3 and res["epoch"] == top.position.epoch
        await node.close()

    run(main())


def test_trimmed_position_is_not_recovered() -> None:
    async def main() -> None:
        node, c = await _start()
        await _publish(node, "small:a", 1, 2, 3, 4, 5, 6)
        epoch = (await node.history("small:a")).position.epoch
        res = await c.subscribe("small:a", recover=True, offset=1, epoch=epoch)
        assert "recovered" not in res and res["was_recovering"] is True
        assert res.get("publications", []) == []
        assert res["offset"] == 6
        # From a position still in the stream it works.
        await c.ok("unsubscribe", {"channel": "small:a"})
        res = await c.subscribe("small:a", recover=True, offset=3, epoch=epoch)
        assert res["recovered"] is True and _ns(res["publications"]) == [4, 5, 6]
        await node.close()

    run(main())


def test_recovery_cut_by_the_publication_limit_is_not_recovered() -> None:
    async def main() -> None:
        config = {**CONFIG, "client": {**CONFIG["client"], "recovery_max_publication_limit": 2}}
        node, c = await _start(config=config)
        await _publish(node, "rec:a", 1, 2, 3, 4)
        epoch = (await node.history("rec:a")).position.epoch
        res = await c.subscribe("rec:a", recover=True, offset=1, epoch=epoch)
        assert "recovered" not in res and res.get("publications", []) == []
        await c.ok("unsubscribe", {"channel": "rec:a"})
        res = await c.subscribe("rec:a", recover=True, offset=2, epoch=epoch)
        assert res["recovered"] is True and _ns(res["publications"]) == [3, 4]
        await node.close()

    run(main())


def test_reject_unrecovered_flag_112() -> None:
    async def main() -> None:
        node, c = await _start()
        await _publish(node, "rec:a", 1, 2, 3)
        epoch = (await node.history("rec:a")).position.epoch
        body = {
            "channel": "rec:a",
            "recover": True,
            "offset": 1,
            "epoch": "Stale000",
            "flag": 2 | 1,
        }
        assert await c.error("subscribe", body) == 112
        assert "rec:a" not in c.session.subscriptions
        assert node.hub.num_subscribers("rec:a") == 0
        # The same flag with a recoverable position is a normal subscribe.
        res = await c.subscribe("rec:a", recover=True, offset=1, epoch=epoch, flag=3)
        assert res["recovered"] is True and _ns(res["publications"]) == [2, 3]
        await node.close()

    run(main())


def test_cache_mode_delivers_only_the_newest() -> None:
    async def main() -> None:
        node, c = await _start()
        await _publish(node, "cache:a", 1, 2, 3, 4, 5)
        res = await c.subscribe("cache:a", recover=True)  # since: {} on the SDK side
        assert res["recovered"] is True and res["was_recovering"] is True
        assert _ns(res["publications"]) == [5]
        epoch = res["epoch"]
        await c.ok("unsubscribe", {"channel": "cache:a"})
        # Already at the top: recovered, nothing to deliver.
        res = await c.subscribe("cache:a", recover=True, offset=5, epoch=epoch)
        assert res["recovered"] is True and res.get("publications", []) == []
        await node.close()

    run(main())


def test_recovery_is_not_on_without_the_option() -> None:
    async def main() -> None:
        node, c = await _start()
        await _publish(node, "plain:a", 1, 2)
        res = await c.subscribe("plain:a", recover=True, offset=1, epoch="whatever")
        assert res == {}  # neither positioned nor recoverable: no position at all
        res = await c.subscribe("opt:a", recoverable=True)
        assert res["recoverable"] is True and res["positioned"] is True
        res = await c.subscribe("opt:b")
        assert "recoverable" not in res
        await node.close()

    run(main())


# -- publications during a subscribe -------------------------------------------------------


@pytest.mark.parametrize(
    "read_before", [True, False], ids=["history-read-first", "history-read-last"]
)
@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_publications_during_recovery_are_buffered(codec: str, read_before: bool) -> None:
    async def main() -> None:
        broker = GatedBroker()
        node, c = await _start(codec, broker=broker)
        watcher = Client(node, codec)
        await watcher.connect(connect_token("7"))
        await watcher.subscribe("rec:a")
        await _publish(node, "rec:a", 1, 2, 3, 4, 5)
        epoch = (await node.history("rec:a")).position.epoch
        broker.read_before = read_before
        broker.gate = asyncio.Event()
        c.send(
            {
                "id": 50,
                "subscribe": {"channel": "rec:a", "recover": True, "offset": 2, "epoch": epoch},
            }
        )
        await asyncio.wait_for(broker.waiting.wait(), 3)
        # Two publications while the subscribe is inside its history read.
        await _publish(node, "rec:a", 6, 7)
        await until(lambda: len(watcher.publications("rec:a")) == 7)  # others are not held up
        await settle()
        assert c.reply(50) is None and c.publications("rec:a") == []
        broker.gate.set()
        broker.gate = None
        await until(lambda: c.reply(50))
        await _publish(node, "rec:a", 8)
        await until(lambda: 8 in [p["offset"] for p in c.publications("rec:a")])
        # Everything after the connect reply, in wire order.
        after = [m for m in c.messages if m.get("id") != 1]
        assert after[0]["id"] == 50
        res = after[0]["subscribe"]
        assert res["recovered"] is True
        recovered = [p["offset"] for p in res["publications"]]
        pushed = [m["push"]["pub"]["offset"] for m in after[1:]]
        assert recovered == ([3, 4, 5] if read_before else [3, 4, 5, 6, 7])
        # Each offset exactly once, ascending, no gap.
        assert recovered + pushed == [3, 4, 5, 6, 7, 8]
        await node.close()

    run(main())


def test_publications_during_a_plain_positioned_subscribe() -> None:
    async def main() -> None:
        broker = GatedBroker()
        node, c = await _start(broker=broker)
        await _publish(node, "pos:a", 1, 2)
        broker.gate = asyncio.Event()
        c.send({"id": 50, "subscribe": {"channel": "pos:a"}})
        await asyncio.wait_for(broker.waiting.wait(), 3)
        await _publish(node, "pos:a", 3, 4)
        broker.gate.set()
        broker.gate = None
        await until(lambda: len(c.publications("pos:a")) == 2)
        res = c.reply(50)["subscribe"]
        assert res["positioned"] is True and res["offset"] == 2
        assert [p["offset"] for p in c.publications("pos:a")] == [3, 4]
        ids = [m.get("id") for m in c.messages]
        assert ids.index(50) < len(ids) - 2  # the reply came before both pushes
        await node.close()

    run(main())


def test_publications_during_a_subscribe_without_history() -> None:
    """Without positions too, a publication that arrives during the subscribe follows its reply."""

    async def main() -> None:
        broker = GatedBroker()
        config = {**CONFIG, "channel": {"without_namespace": {"allow_subscribe_for_client": True}}}
        node, c = await _start(broker=broker, config=config)
        broker.subscribe_gate = asyncio.Event()
        c.send({"id": 9, "subscribe": {"channel": "news"}})
        await asyncio.wait_for(broker.waiting.wait(), 3)
        await node.publish("news", b'{"n":1}')
        await node.publish("news", b'{"n":2}')
        await settle()
        assert c.reply(9) is None and c.publications("news") == []
        broker.subscribe_gate.set()
        await until(lambda: len(c.publications("news")) == 2)
        assert _ns(c.publications("news")) == [1, 2]
        assert [p.get("offset", 0) for p in c.publications("news")] == [0, 0]
        ids = [m.get("id") for m in c.messages]
        assert ids == [1, 9, None, None]
        await node.close()

    run(main())


# -- live positioning -------------------------------------------------------------------------


async def _lost_publication(node, channel: str, offset: int, epoch: str) -> None:
    """Deliver a publication as the broker would after losing the ones before it."""
    pub = Publication(data=b'{"n":0}', offset=offset)
    node.on_publication(channel, pub, StreamPosition(offset, epoch), None)


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_gap_unsubscribes_client_side_subscription_2500(codec: str) -> None:
    async def main() -> None:
        node, c = await _start(codec)
        res = await c.subscribe("pos:a")
        await _publish(node, "pos:a", 1)
        await until(lambda: c.publications("pos:a"))
        await _lost_publication(node, "pos:a", 3, res["epoch"])
        await until(lambda: c.pushes("unsubscribe"))
        push = c.pushes("unsubscribe")[0]
        assert push["channel"] == "pos:a" and push["unsubscribe"]["code"] == 2500
        assert "pos:a" not in c.session.subscriptions
        assert [p["offset"] for p in c.publications("pos:a")] == [1]
        assert c.closed is None
        await node.close()

    run(main())


def test_epoch_change_unsubscribes_2500() -> None:
    async def main() -> None:
        node, c = await _start()
        await _publish(node, "rec:a", 1)
        await c.subscribe("rec:a")
        await _lost_publication(node, "rec:a", 2, "NewEpoch")
        await until(lambda: c.pushes("unsubscribe"))
        assert c.pushes("unsubscribe")[0]["unsubscribe"]["code"] == 2500
        await node.close()

    run(main())


def test_stale_duplicate_is_dropped() -> None:
    async def main() -> None:
        node, c = await _start()
        await c.subscribe("pos:a")
        await _publish(node, "pos:a", 1, 2)
        await until(lambda: len(c.publications("pos:a")) == 2)
        epoch = (await node.history("pos:a")).position.epoch
        await _lost_publication(node, "pos:a", 2, epoch)  # seen already
        await _publish(node, "pos:a", 3)
        await until(lambda: len(c.publications("pos:a")) == 3)
        assert [p["offset"] for p in c.publications("pos:a")] == [1, 2, 3]
        assert c.pushes("unsubscribe") == []
        await node.close()

    run(main())


def test_gap_on_server_side_subscription_disconnects_3010() -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("42", channels=["pos:srv"]))
        await _publish(node, "pos:srv", 1)
        await until(lambda: c.publications("pos:srv"))
        epoch = (await node.history("pos:srv")).position.epoch
        await _lost_publication(node, "pos:srv", 5, epoch)
        assert await c.disconnected() == 3010
        await node.close()

    run(main())
