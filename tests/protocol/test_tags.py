"""Tags filters: the matcher of ``tf`` trees, and filtering end to end with both SDKs."""

from __future__ import annotations

from typing import Any

import pytest

from rtcore.protocol.messages import FilterNode
from rtcore.protocol.tags_filter import MAX_DEPTH, FilterError, compile_filter


def leaf(key: str, cmp: str, val: str = "", vals: list[str] | None = None) -> FilterNode:
    return FilterNode(key=key, cmp=cmp, val=val, vals=vals or [])


@pytest.mark.parametrize(
    ("node", "tags", "expected"),
    [
        (leaf("t", "eq", "a"), {"t": "a"}, True),
        (leaf("t", "eq", "a"), {"t": "b"}, False),
        (leaf("t", "eq", "a"), None, False),
        (leaf("t", "neq", "a"), {"t": "b"}, True),
        (leaf("t", "neq", "a"), {}, True),
        (leaf("t", "in", vals=["a", "b"]), {"t": "b"}, True),
        (leaf("t", "in", vals=["a", ""]), {}, True),  # a missing tag is ""
        (leaf("t", "nin", vals=["a"]), {"t": "c"}, True),
        (leaf("t", "nin", vals=["a"]), {"t": "a"}, False),
        (leaf("t", "ex"), {"t": ""}, True),
        (leaf("t", "nex"), {"t": ""}, False),
        (leaf("t", "sw", "BT"), {"t": "BTC"}, True),
        (leaf("t", "ew", "TC"), {"t": "BTC"}, True),
        (leaf("t", "ct", "T"), {"t": "BTC"}, True),
        (leaf("t", "ct", "T"), {}, False),
        (leaf("p", "gt", "100"), {"p": "100.5"}, True),
        (leaf("p", "gt", "100"), {"p": "99.99"}, False),
        (leaf("p", "gte", "100"), {"p": "100.00"}, True),
        (leaf("p", "lt", "-1"), {"p": "-1.5"}, True),
        (leaf("p", "lte", "2"), {"p": "10"}, False),  # numbers, not strings
        (leaf("p", "gt", "1"), {"p": "abc"}, False),
        (leaf("p", "gt", "x"), {"p": "2"}, False),
        (FilterNode(op="and", nodes=[leaf("a", "eq", "1"), leaf("b", "ex")]), {"a": "1"}, False),
        (FilterNode(op="or", nodes=[leaf("a", "eq", "1"), leaf("b", "ex")]), {"b": "x"}, True),
        (FilterNode(op="not", nodes=[leaf("a", "eq", "1")]), {"a": "1"}, False),
    ],
)
def test_matches(node: FilterNode, tags: dict[str, str] | None, expected: bool) -> None:
    assert compile_filter(node)(tags) is expected


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (FilterNode(), "needs cmp"),
        (leaf("t", "eq"), "needs val"),
        (leaf("t", "eq", "a", ["b"]), "takes no vals"),
        (leaf("t", "in"), "needs vals"),
        (leaf("t", "in", "a", ["b"]), "takes no val"),
        (leaf("t", "ex", "a"), "takes no val"),
        (leaf("", "eq", "a"), "needs key"),
        (leaf("t", "like", "a"), "unknown comparison"),
        (FilterNode(op="xor", nodes=[leaf("a", "ex")]), "unknown filter op"),
        (FilterNode(op="and"), "at least one child"),
        (FilterNode(op="not", nodes=[leaf("a", "ex"), leaf("b", "ex")]), "exactly one child"),
    ],
)
def test_malformed_filters_are_refused(node: FilterNode, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_filter(node)


def test_size_limits() -> None:
    node = leaf("a", "ex")
    for _ in range(MAX_DEPTH):
        node = FilterNode(op="not", nodes=[node])
    with pytest.raises(FilterError, match="nests"):
        compile_filter(node)
    wide = FilterNode(op="or", nodes=[leaf("a", "ex")] * 300)
    with pytest.raises(FilterError, match="nodes"):
        compile_filter(wide)
    assert compile_filter(leaf("", "ex"))({"": "x"}) is True  # ex/nex need no key


# -- filtering in a node -------------------------------------------------------------

FILTER_NS = {
    "history_size": 50,
    "history_ttl": 300,
    "allow_subscribe_for_client": True,
    "allow_tags_filter": True,
}
CONFIG = {
    "client": {"ping_interval": 0, "pong_timeout": 0},
    "channel": {
        "namespaces": [
            {"name": "t", **FILTER_NS, "force_recovery": True},
            {"name": "cache", **FILTER_NS, "force_recovery": True, "force_recovery_mode": "cache"},
            {"name": "nofilter", **FILTER_NS, "allow_tags_filter": False},
        ]
    },
}

BTC = {"key": "ticker", "cmp": "eq", "val": "BTC"}
TICKERS = ["BTC", "ETH", "BTC", "SOL", "ETH", "BTC", "BTC", "ETH"]


async def _publish_tickers(node: Any, channel: str, tickers: list[str], start: int = 0) -> None:
    for n, ticker in enumerate(tickers, start):
        await node.publish(channel, b'{"n":%d}' % n, tags={"ticker": ticker, "n": str(n)})


def _btc(tickers: list[str], start: int = 0) -> list[int]:
    return [n for n, t in enumerate(tickers, start) if t == "BTC"]


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_live_publications_filtered_per_subscriber_on_shared_bytes(codec: str) -> None:
    from .helpers import Client, connect_token, make_node, run, until

    async def main() -> None:
        node = make_node(CONFIG)
        await node.start()
        filtered = [Client(node, codec) for _ in range(3)]
        for i, c in enumerate(filtered):
            await c.connect(connect_token(f"f{i}"))
            await c.subscribe("t:x", tf=BTC)
        everyone = Client(node, codec)
        await everyone.connect(connect_token("all"))
        await everyone.subscribe("t:x")
        before = list(node.hub.encodes)
        await _publish_tickers(node, "t:x", TICKERS)
        await until(lambda: len(everyone.publications("t:x")) == len(TICKERS))
        await until(lambda: all(len(c.publications("t:x")) == 4 for c in filtered))
        for c in filtered:
            pubs = c.publications("t:x")
            assert [p["data"]["n"] for p in pubs] == _btc(TICKERS)
            assert all(p["tags"]["ticker"] == "BTC" for p in pubs)
            # The filtered-out publications moved the position: no gap, no 2500.
            assert c.pushes("unsubscribe") == [] and c.closed is None
        # One encoding per publication for all four subscribers.
        index = 0 if codec == "json" else 1
        assert node.hub.encodes[index] - before[index] == len(TICKERS)
        # The position went on past the filtered-out tail.
        sub = node.hub.subscriber("t:x", filtered[0].session.client_id)
        assert sub is not None and sub.offset == len(TICKERS)
        await node.close()

    run(main())


def test_filter_needs_the_namespace_option_and_a_valid_tree() -> None:
    from .helpers import Client, connect_token, make_node, run

    async def main() -> None:
        node = make_node(CONFIG)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("1"))
        assert await c.error("subscribe", {"channel": "nofilter:x", "tf": BTC}) == 107
        assert await c.error("subscribe", {"channel": "t:x", "tf": {"cmp": "eq"}}) == 107
        assert await c.error("subscribe", {"channel": "t:x", "tf": {"op": "xor"}}) == 107
        assert "t:x" not in c.session.subscriptions
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_recovery_returns_only_matching_publications(codec: str) -> None:
    from .helpers import Client, connect_token, make_node, run, until

    async def main() -> None:
        node = make_node(CONFIG)
        await node.start()
        first = Client(node, codec)
        await first.connect(connect_token("1"))
        epoch = (await first.subscribe("t:rec", tf=BTC))["epoch"]
        await _publish_tickers(node, "t:rec", TICKERS[:2])
        await until(lambda: len(first.publications("t:rec")) == 1)
        first.session.transport_closed()
        await _publish_tickers(node, "t:rec", TICKERS[2:], start=2)
        again = Client(node, codec)
        await again.connect(connect_token("1"))
        res = await again.subscribe("t:rec", tf=BTC, recover=True, offset=2, epoch=epoch)
        assert res["recovered"] is True
        assert [p["data"]["n"] for p in res["publications"]] == _btc(TICKERS[2:], 2)
        # Live ones continue after the filtered-out top, without a gap.
        await _publish_tickers(node, "t:rec", ["ETH", "BTC"], start=len(TICKERS))
        await until(lambda: len(again.publications("t:rec")) == 1)
        assert again.publications("t:rec")[0]["data"]["n"] == len(TICKERS) + 1
        assert again.closed is None and again.pushes("unsubscribe") == []
        # Cache mode: the newest publication that matches, wherever it is.
        cache = Client(node, codec)
        await cache.connect(connect_token("2"))
        await _publish_tickers(node, "cache:x", ["BTC", "BTC", "ETH", "SOL"])
        res = await cache.subscribe("cache:x", tf=BTC, recover=True, offset=0, epoch="")
        assert res["recovered"] is True
        assert [p["data"]["n"] for p in res["publications"]] == [1]
        await node.close()

    run(main())


def test_held_publications_are_filtered_too() -> None:
    import asyncio

    from .helpers import Client, GatedBroker, connect_token, make_node, run, until

    async def main() -> None:
        broker = GatedBroker()
        node = make_node(CONFIG, broker=broker)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("1"))
        await _publish_tickers(node, "t:held", TICKERS[:2])
        broker.gate = asyncio.Event()
        call = asyncio.ensure_future(c.subscribe("t:held", tf=BTC))
        await broker.waiting.wait()
        # Published while the subscribe reads the stream: held, then filtered.
        await _publish_tickers(node, "t:held", TICKERS[2:], start=2)
        broker.gate.set()
        await call
        await until(lambda: len(c.publications("t:held")) == len(_btc(TICKERS[2:], 2)))
        assert [p["data"]["n"] for p in c.publications("t:held")] == _btc(TICKERS[2:], 2)
        sub = node.hub.subscriber("t:held", c.session.client_id)
        assert sub is not None and sub.offset == len(TICKERS)
        await node.close()

    run(main())


# -- the SDKs --------------------------------------------------------------------------

SDK_CONFIG = {
    "client": {"ping_interval": 25, "pong_timeout": 8},
    "channel": {"namespaces": [{"name": "t", **FILTER_NS, "force_recovery": True}]},
}


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
def test_centrifuge_js_tags_filter(protocol: str) -> None:
    from .helpers import connect_token, run, serve, until
    from .test_delta import JsSubscriber, js_node_path

    node_bin = js_node_path()
    tf = {"op": "or", "nodes": [BTC, {"key": "n", "cmp": "gte", "val": "7"}]}

    async def main() -> None:
        async with serve(SDK_CONFIG) as s:
            js = await JsSubscriber.start(
                node_bin,
                {
                    "url": s.url,
                    "protocol": protocol,
                    "token": connect_token("42"),
                    "channel": "t:js",
                    "options": {"tagsFilter": tf},
                },
            )
            await js.next("ready")
            await _publish_tickers(s.node, "t:js", TICKERS[:4])
            await js.command("pubs", wait=2)
            await s.node.disconnect("42", code=3011, reason="force reconnect")
            await until(lambda: s.node.hub.num_subscribers("t:js") == 0, 5)
            await _publish_tickers(s.node, "t:js", TICKERS[4:], start=4)
            subscribed = (await js.command("subscribed", subscribed=2))["subscribed"]
            assert subscribed[1]["recovered"] is True
            await _publish_tickers(s.node, "t:js", ["ETH", "SOL"], start=len(TICKERS))
            await js.command("pubs", wait=7)
            result = await js.finish()
        ns = [p["data"]["n"] for p in result["pubs"]]
        assert ns == [0, 2, 5, 6, 7, 8, 9]  # BTC, or n >= 7 (compared as numbers)
        assert all(p["tags"]["n"] == str(p["data"]["n"]) for p in result["pubs"])

    run(main(), timeout=60)


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
def test_centrifuge_python_tags_filter(protobuf: bool) -> None:
    import json

    import centrifuge
    from centrifuge import Filter

    from .helpers import connect_token, run, serve, until

    class SubEvents(centrifuge.SubscriptionEventHandler):
        def __init__(self) -> None:
            self.pubs: list[Any] = []
            self.subscribed: list[Any] = []

        async def on_subscribed(self, ctx: Any) -> None:
            self.subscribed.append(ctx)

        async def on_publication(self, ctx: Any) -> None:
            self.pubs.append(ctx.pub)

    async def main() -> None:
        async with serve(SDK_CONFIG) as s:
            client = centrifuge.Client(
                s.url,
                token=connect_token("42"),
                use_protobuf=protobuf,
                min_reconnect_delay=0.05,
                max_reconnect_delay=0.2,
            )
            events = SubEvents()
            tf = Filter.any(Filter.eq("ticker", "BTC"), Filter.gte("n", "7"))
            sub = client.new_subscription("t:py", events, tags_filter=tf)
            await client.connect()
            await sub.subscribe()
            await sub.ready(timeout=5)
            await _publish_tickers(s.node, "t:py", TICKERS[:4])
            await until(lambda: len(events.pubs) == 2, 5)
            await s.node.disconnect("42", code=3011, reason="force reconnect")
            await until(lambda: s.node.hub.num_subscribers("t:py") == 0, 5)
            await _publish_tickers(s.node, "t:py", TICKERS[4:], start=4)
            await until(lambda: len(events.subscribed) == 2, 10)
            assert events.subscribed[1].recovered is True
            await _publish_tickers(s.node, "t:py", ["ETH", "SOL"], start=len(TICKERS))
            await until(lambda: len(events.pubs) == 7, 10)
            await client.disconnect()
        data = [json.loads(p.data) if protobuf else p.data for p in events.pubs]
        assert [d["n"] for d in data] == [0, 2, 5, 6, 7, 8, 9]
        tickers = [p.tags["ticker"] for p in events.pubs]
        assert tickers == ["BTC", "BTC", "BTC", "BTC", "ETH", "ETH", "SOL"]

    run(main(), timeout=60)


def test_server_api_publishes_tags(tmp_path: Any) -> None:
    """Tags given to the server API's publish reach the filter."""
    import json

    from rtcore.server.api.methods import Executor

    from .helpers import Client, connect_token, make_node, run, until

    async def main() -> None:
        node = make_node(CONFIG)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("1"))
        await c.subscribe("t:api", tf=BTC)
        api = Executor(node)
        for ticker in ("ETH", "BTC"):
            body = {
                "channel": "t:api",
                "data": json.dumps({"t": ticker}).encode(),
                "tags": {"ticker": ticker},
            }
            await api.call("publish", body)
        await until(lambda: len(c.publications("t:api")) == 1)
        assert c.publications("t:api")[0]["data"] == {"t": "BTC"}
        await node.close()

    run(main())
