"""Map subscriptions command by command, sans-I/O (docs/protocol.md, "Map subscriptions").

The phases as centrifuge-js sends them: state pages (``phase`` 2), stream
pages (1), live (0); recovery from a position; client writes; and the
node's map API (``node.maps``), which the server API methods call.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from rtcore.protocol.codes import ClientError
from rtcore.protocol.types import StreamPosition

from .helpers import Client, FakeClock, connect_token, make_node, run, until


MAP = {
    "mode": "persistent",
    "stream_size": 20,
    "allow_publish_for_subscriber": True,
    "allow_remove_for_client": True,
    "min_page_size": 2,
    "default_page_size": 3,
    "max_page_size": 5,
}
CONFIG = {
    "client": {
        "ping_interval": 0,
        "pong_timeout": 0,
        "allow_anonymous_connect_without_token": True,
    },
    "channel": {
        "namespaces": [
            {
                "name": "m",
                "subscription_type": "map",
                "allow_subscribe_for_client": True,
                "map": MAP,
            },
            {
                "name": "tf",
                "subscription_type": "map",
                "allow_subscribe_for_client": True,
                "allow_tags_filter": True,
                "presence": True,
                "map": MAP,
            },
            {"name": "s", "allow_subscribe_for_client": True},
        ]
    },
}


async def _setup(user: str = "42") -> tuple[Any, Client]:
    node = make_node(CONFIG)
    await node.start()
    c = Client(node)
    await c.connect(connect_token(user) if user else "")
    return node, c


async def _fill(node: Any, channel: str, n: int, **kw: Any) -> None:
    for i in range(n):
        await node.maps.publish(channel, f"k{i}", json.dumps(i).encode(), **kw)


def _keys(entries: list[dict[str, Any]]) -> list[str]:
    return [e["key"] for e in entries]


def test_state_pages_then_live_with_the_last_page() -> None:
    async def main() -> None:
        node, c = await _setup()
        await _fill(node, "m:a", 5)
        first = await c.ok("subscribe", {"channel": "m:a", "type": 1, "phase": 2, "limit": 2})
        assert first["phase"] == 2 and first["type"] == 1
        assert first["offset"] == 5 and first["cursor"]
        assert _keys(first["state"]) == ["k0", "k1"]
        assert [e["offset"] for e in first["state"]] == [1, 2]
        # Changed after the first page: left out of later pages, brought by the stream.
        await node.maps.publish("m:a", "k3", b'"late"')
        pos = {"offset": first["offset"], "epoch": first["epoch"]}
        second = await c.ok(
            "subscribe",
            {"channel": "m:a", "type": 1, "phase": 2, "limit": 2, "cursor": first["cursor"], **pos},
        )
        assert _keys(second["state"]) == ["k2"]  # k3 changed at offset 6
        assert second["cursor"]
        live = await c.ok(
            "subscribe",
            {
                "channel": "m:a",
                "type": 1,
                "phase": 2,
                "limit": 2,
                "cursor": second["cursor"],
                **pos,
            },
        )
        assert "phase" not in live  # 0: live
        assert _keys(live["state"]) == ["k4"]
        assert [(p["key"], p["data"], p["offset"]) for p in live["publications"]] == [
            ("k3", "late", 6)
        ]
        assert live["offset"] == 6 and live["recoverable"] is True
        assert "recovered" not in live
        await node.maps.remove("m:a", "k0")
        await node.maps.publish("m:a", "new", b"1")
        await until(lambda: len(c.publications("m:a")) >= 2, what="two pushes")
        assert [
            (p["key"], p.get("removed", False), p["offset"]) for p in c.publications("m:a")
        ] == [
            ("k0", True, 7),
            ("new", False, 8),
        ]
        await node.close()

    run(main())


def test_stream_pages_when_the_snapshot_is_far_behind() -> None:
    async def main() -> None:
        node, c = await _setup()
        await _fill(node, "m:b", 2)
        live0 = await c.ok("subscribe", {"channel": "m:b", "type": 1, "phase": 2, "limit": 2})
        assert "phase" not in live0  # a small map: live with the first page
        await c.ok("unsubscribe", {"channel": "m:b"})
        await _fill(node, "m:b", 8)  # offsets 3..10 while away
        base = {"channel": "m:b", "type": 1, "phase": 1, "epoch": live0["epoch"], "limit": 2}
        # The stream phase of no subscribe in progress must say it recovers.
        assert await c.error("subscribe", {**base, "offset": 2}) == 103
        offsets = []
        offset = live0["offset"]
        for _ in range(10):
            reply = await c.ok("subscribe", {**base, "offset": offset, "recover": True})
            offsets.append([p["offset"] for p in reply.get("publications", [])])
            if "phase" not in reply:
                assert reply["recovered"] is True and reply["was_recovering"] is True
                assert reply["offset"] == 10
                break
            assert reply["phase"] == 1
            offset = reply["offset"]
        assert offsets == [[3, 4], [5, 6], [7, 8], [9, 10]]
        assert "m:b" in c.session.subscriptions
        await node.close()

    run(main())


def test_recovery_refusals_112() -> None:
    async def main() -> None:
        node, c = await _setup()
        await _fill(node, "m:c", 3)
        top = (await node.maps.read_state("m:c", limit=0)).position
        base = {"channel": "m:c", "type": 1, "recover": True}
        # Another epoch.
        body = {**base, "phase": 1, "offset": 3, "epoch": "nope"}
        assert await c.error("subscribe", body) == 112
        # Live straight from a position that is of another epoch.
        assert await c.error("subscribe", {**base, "phase": 0, "offset": 3, "epoch": "x"}) == 112
        # Trimmed: stream_size 20, 25 more changes.
        await _fill(node, "m:c", 25)
        body = {**base, "phase": 0, "offset": top.offset, "epoch": top.epoch}
        assert await c.error("subscribe", body) == 112
        assert "m:c" not in c.session.subscriptions
        # Within the stream but more than max_page_size (5) to go live with.
        now = (await node.maps.read_state("m:c", limit=0)).position
        await _fill(node, "m:c", 6)
        body = {**base, "phase": 0, "offset": now.offset, "epoch": now.epoch}
        assert await c.error("subscribe", body) == 112
        body = {**base, "phase": 1, "offset": now.offset, "epoch": now.epoch, "limit": 5}
        page = await c.ok("subscribe", body)
        assert page["phase"] == 1  # paging works where going live at once does not
        await node.close()

    run(main())


def test_refusals() -> None:
    async def main() -> None:
        node, c = await _setup()
        sub = {"channel": "m:d", "type": 1}
        assert await c.error("subscribe", {**sub, "phase": 2, "cursor": "k1"}) == 103
        assert await c.error("subscribe", {**sub, "phase": 7}) == 107
        assert await c.error("subscribe", {"channel": "m:d"}) == 103  # a stream subscribe
        assert await c.error("subscribe", {"channel": "s:d", "type": 1, "phase": 2}) == 103
        for kind in (2, 3):  # map presence types on a namespace of type "map"
            assert await c.error("subscribe", {**sub, "type": kind, "phase": 2}) == 103
        assert await c.error("subscribe", {**sub, "type": 4, "phase": 2}) == 108  # shared poll
        assert (
            await c.error("subscribe", {"channel": "tf:d", "type": 1, "phase": 2, "tf": {}}) == 107
        )
        assert (
            await c.error("subscribe", {**sub, "phase": 2, "tf": {"key": "a", "cmp": "eq"}}) == 107
        )
        await c.ok("subscribe", {**sub, "phase": 2})
        assert await c.error("subscribe", {**sub, "phase": 2}) == 105
        await node.close()

    run(main())


def test_client_writes_and_their_permissions() -> None:
    async def main() -> None:
        node, c = await _setup()
        pub = {"channel": "m:e", "type": 1, "key": "a", "data": {"v": 1}}
        assert await c.error("publish", pub) == 103  # not subscribed
        await c.ok("subscribe", {"channel": "m:e", "type": 1, "phase": 2})
        await c.ok("publish", pub)
        assert await c.error("publish", {**pub, "key": ""}) == 107
        assert await c.error("publish", {"channel": "m:e", "type": 1, "key": "b"}) == 107
        assert await c.error("publish", {"channel": "m:e", "data": {"v": 1}}) == 103  # type 0
        await c.ok("publish", {"channel": "m:e", "type": 1, "key": "a", "removed": True})
        await until(lambda: len(c.publications("m:e")) >= 2, what="two pushes")
        set_, removal = c.publications("m:e")
        assert (set_["key"], set_["data"], set_["info"]["user"]) == ("a", {"v": 1}, "42")
        assert (removal["key"], removal["removed"], removal["offset"]) == ("a", True, 2)
        assert (await node.maps.read_state("m:e", limit=-1)).entries == []
        anon_node, anon = node, Client(node)
        await anon.connect()
        # allow_remove_for_client, but anonymous without allow_remove_for_anonymous.
        body = {"channel": "m:e", "type": 1, "key": "a", "removed": True}
        assert await anon.error("publish", body) == 103
        await anon_node.close()

    run(main())


def test_tags_filter_and_presence() -> None:
    async def main() -> None:
        node, c = await _setup()
        for i, team in enumerate(["red", "blue", "red"]):
            await node.maps.publish("tf:f", f"k{i}", b"1", tags={"team": team})
        tf = {"key": "team", "cmp": "eq", "val": "red"}
        live = await c.ok("subscribe", {"channel": "tf:f", "type": 1, "phase": 2, "tf": tf})
        assert _keys(live["state"]) == ["k0", "k2"]
        await node.maps.publish("tf:f", "k3", b"1", tags={"team": "blue"})
        await node.maps.publish("tf:f", "k4", b"1", tags={"team": "red"})
        await until(lambda: c.publications("tf:f"), what="a push")
        assert [p["key"] for p in c.publications("tf:f")] == ["k4"]
        assert list(await node.presence("tf:f")) == [c.session.client_id]
        await c.ok("unsubscribe", {"channel": "tf:f"})
        assert await node.presence("tf:f") == {}
        await node.close()

    run(main())


def test_node_map_api() -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        await node.start()
        r = await node.maps.publish("m:g", "a", b"1", idempotency_key="i1")
        again = await node.maps.publish("m:g", "a", b"2", idempotency_key="i1")
        assert again.suppressed and again.suppress_reason == "idempotency"
        assert again.position == r.position
        gone = await node.maps.remove("m:g", "zzz")
        assert gone.suppressed and gone.suppress_reason == "key_not_found"
        assert await node.maps.stats("m:g") == 1
        stream = await node.maps.read_stream("m:g", since=StreamPosition(0, r.position.epoch))
        assert [p.key for p in stream.publications] == ["a"]
        with pytest.raises(ClientError) as exc:
            await node.maps.read_state("m:g", revision=StreamPosition(1, "other"))
        assert exc.value.code == 112
        for channel, code in (("s:g", 107), ("nope:g", 102)):
            with pytest.raises(ClientError) as exc:
                await node.maps.publish(channel, "a", b"1")
            assert exc.value.code == code
        with pytest.raises(ClientError) as exc:
            await node.maps.publish("m:g", "", b"1")
        assert exc.value.code == 107
        await node.maps.clear("m:g")
        assert await node.maps.stats("m:g") == 0
        await node.close()

    run(main())


def test_ephemeral_map_goes_live_without_a_stream() -> None:
    async def main() -> None:
        eph = {
            "name": "eph",
            "subscription_type": "map",
            "allow_subscribe_for_client": True,
            "map": {"mode": "ephemeral", "key_ttl": 60, "min_page_size": 2, "default_page_size": 2},
        }
        config = {**CONFIG, "channel": {"namespaces": [*CONFIG["channel"]["namespaces"], eph]}}
        node = make_node(config)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("42"))
        await _fill(node, "eph:a", 3)
        first = await c.ok("subscribe", {"channel": "eph:a", "type": 1, "phase": 2})
        assert first["phase"] == 2 and first.get("offset", 0) == 0
        pos = {"epoch": first["epoch"], "cursor": first["cursor"]}
        live = await c.ok("subscribe", {"channel": "eph:a", "type": 1, "phase": 2, **pos})
        assert "phase" not in live and "recoverable" not in live
        assert _keys(first["state"] + live["state"]) == ["k0", "k1", "k2"]
        await node.maps.publish("eph:a", "k9", b"9")
        await until(lambda: c.publications("eph:a"), what="a push")
        assert c.publications("eph:a")[0]["key"] == "k9"
        await c.ok("unsubscribe", {"channel": "eph:a"})
        body = {"channel": "eph:a", "type": 1, "phase": 1, "recover": True, **pos}
        assert await c.error("subscribe", body) == 107  # no stream to recover from
        await node.close()

    run(main())


def test_client_key_and_remove_client_on_unsubscribe() -> None:
    async def main() -> None:
        cursors = {
            "name": "cur",
            "subscription_type": "map",
            "allow_subscribe_for_client": True,
            "map": {
                "mode": "persistent",
                "client_key": "client_id",
                "remove_client_on_unsubscribe": True,
                "allow_publish_for_subscriber": True,
            },
        }
        config = {**CONFIG, "channel": {"namespaces": [*CONFIG["channel"]["namespaces"], cursors]}}
        node = make_node(config)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("42"))
        await c.ok("subscribe", {"channel": "cur:a", "type": 1, "phase": 2})
        # Whatever key the client names, it writes its own.
        await c.ok("publish", {"channel": "cur:a", "type": 1, "key": "other", "data": {"x": 1}})
        state = await node.maps.read_state("cur:a", limit=-1)
        assert [e.key for e in state.entries] == [c.session.client_id]
        await c.ok("unsubscribe", {"channel": "cur:a"})
        await until(
            lambda: node.maps.store._maps["cur:a"].state == {}, what="the client key removed"
        )
        await node.close()

    run(main())


def test_a_slow_catch_up_is_disconnected() -> None:
    async def main() -> None:
        slow = {
            "name": "slow",
            "subscription_type": "map",
            "allow_subscribe_for_client": True,
            "map": {"mode": "persistent", "min_page_size": 2, "subscribe_catch_up_timeout": 5},
        }
        config = {**CONFIG, "channel": {"namespaces": [*CONFIG["channel"]["namespaces"], slow]}}
        clock = FakeClock()
        node = make_node(config, clock=clock)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("42"))
        await _fill(node, "slow:a", 5)
        first = await c.ok("subscribe", {"channel": "slow:a", "type": 1, "phase": 2, "limit": 2})
        clock.advance(6)
        body = {"channel": "slow:a", "type": 1, "phase": 2, "limit": 2, "cursor": first["cursor"]}
        assert await c.disconnected("subscribe", body) == 3008
        await node.close()

    run(main())


def test_two_nodes_on_redis_share_a_map() -> None:
    """A change written on one node reaches a map subscriber of another, through Redis."""
    import socket
    import uuid

    from .test_sdk_js import IN_CI

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        if IN_CI:
            pytest.fail("Redis is not running on 127.0.0.1:6379")
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    from rtcore.backends.redis import RedisBroker
    from rtcore.backends.redis.maps import RedisMapStore
    from rtcore.engine.node import Node

    from .helpers import build_config

    async def main() -> None:
        prefix = f"rtcore-test-{uuid.uuid4().hex[:12]}"
        nodes = []
        for _ in range(2):
            broker = RedisBroker("redis://127.0.0.1:6379", prefix=prefix)
            node = Node(build_config(CONFIG), broker=broker, map_store=RedisMapStore(broker))
            await node.start()
            nodes.append(node)
        a, b = nodes
        try:
            await _fill(a, "m:shared", 3)
            c = Client(b)
            await c.connect(connect_token("42"))
            live = await c.ok("subscribe", {"channel": "m:shared", "type": 1, "phase": 2})
            assert _keys(live["state"]) == ["k0", "k1", "k2"]
            await a.maps.publish("m:shared", "k1", b'"new"')
            await a.maps.remove("m:shared", "k0")
            await until(lambda: len(c.publications("m:shared")) >= 2, what="two pushes")
            got = [(p["key"], p.get("removed", False)) for p in c.publications("m:shared")]
            assert got == [("k1", False), ("k0", True)]
            assert await b.maps.stats("m:shared") == 2
            await a.maps.clear("m:shared")
        finally:
            for node in nodes:
                await node.close()

    run(main())


def test_a_delta_subscriber_on_json_and_a_value_that_is_not_json() -> None:
    async def main() -> None:
        docs = {
            "name": "docs",
            "subscription_type": "map",
            "allow_subscribe_for_client": True,
            "allowed_delta_types": ["fossil"],
            "map": {"mode": "persistent"},
        }
        config = {**CONFIG, "channel": {"namespaces": [*CONFIG["channel"]["namespaces"], docs]}}
        node = make_node(config)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("42"))
        await node.maps.publish("docs:a", "good", b'{"v":1}')
        body = {"channel": "docs:a", "type": 1, "phase": 2, "delta": "fossil"}
        live = await c.ok("subscribe", body)
        assert live["delta"] is True
        assert live["state"][0]["data"] == '{"v":1}'  # the value as a string: the delta base
        await c.ok("unsubscribe", {"channel": "docs:a"})
        await node.maps.publish("docs:a", "bad", b"\xff not json")
        assert await c.disconnected("subscribe", body) == 3506
        await node.close()

    run(main())


def test_an_expired_key_reaches_subscribers_as_a_removal() -> None:
    async def main() -> None:
        short = {
            "name": "short",
            "subscription_type": "map",
            "allow_subscribe_for_client": True,
            "map": {"mode": "recoverable", "key_ttl": 0.2},
        }
        config = {**CONFIG, "channel": {"namespaces": [*CONFIG["channel"]["namespaces"], short]}}
        node = make_node(config)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("42"))
        await c.ok("subscribe", {"channel": "short:a", "type": 1, "phase": 2})
        await node.maps.publish("short:a", "typing", b'"alice"')
        # Nobody writes again: the node's sweep finds the key due (within about a second).
        await until(lambda: len(c.publications("short:a")) >= 2, 5.0, "the removal")
        set_, removal = c.publications("short:a")[:2]
        assert set_["key"] == removal["key"] == "typing"
        assert removal["removed"] is True and removal["offset"] == 2
        assert await node.maps.stats("short:a") == 0
        await node.close()

    run(main())
