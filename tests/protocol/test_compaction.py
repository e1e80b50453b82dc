"""Channel compaction: pushes that name the channel by a number (PROTOCOL.md §2.6).

A client that sets bit value 1 of ``SubscribeRequest.flag`` (centrifuge-js
and centrifuge-python always do) on a namespace with
``allow_channel_compaction`` gets ``SubscribeResult.id``; from then on its
publication, join and leave pushes carry that ``id`` instead of ``channel``.
The encodings stay shared: one per codec and way of naming the channel.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .helpers import Client, connect_token, make_node, run, serve, settle, until
from .test_delta import JsSubscriber, js_node_path


NS = {
    "history_size": 10,
    "history_ttl": 300,
    "force_recovery": True,
    "allow_subscribe_for_client": True,
    "presence": True,
    "join_leave": True,
    "force_push_join_leave": True,
}
CONFIG = {
    "client": {"ping_interval": 0, "pong_timeout": 0},
    "channel": {
        "namespaces": [
            {"name": "c", **NS, "allow_channel_compaction": True},
            {"name": "plain", **NS},
        ]
    },
}


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_pushes_carry_the_channel_id(codec: str) -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        await node.start()
        compact = Client(node, codec)
        await compact.connect(connect_token("1"))
        res = await compact.subscribe("c:room", flag=1)
        cid = res["id"]
        assert cid > 0
        named = Client(node, codec)
        await named.connect(connect_token("2"))
        assert "id" not in await named.subscribe("c:room")  # no flag: names
        assert "id" not in await compact.subscribe("plain:room", flag=1)  # namespace off
        # Another channel gets another id.
        other = await compact.subscribe("c:other", flag=1)
        assert other["id"] not in (0, cid)
        # The subscribes' join pushes go out after their replies: not counted below.
        await settle()
        before = list(node.hub.encodes)
        await node.publish("c:room", b'{"n":1}')
        await node.publish("plain:room", b'{"n":2}')
        await until(lambda: len(compact.pushes("pub")) == 2)
        await until(lambda: len(named.pushes("pub", "c:room")) == 1)
        by_id, by_name = compact.pushes("pub")
        assert by_id == {"id": cid, "pub": by_id["pub"]} and by_id["pub"]["data"] == {"n": 1}
        assert by_name["channel"] == "plain:room" and "id" not in by_name
        assert "id" not in named.pushes("pub", "c:room")[0]
        index = 0 if codec == "json" else 1
        # c:room: one encoding with the id, one with the name; plain:room: one.
        assert node.hub.encodes[index] - before[index] == 3
        # Joins and leaves use the id too; an unsubscribe push names the channel.
        joiner = Client(node, codec)
        await joiner.connect(connect_token("3"))
        await joiner.subscribe("c:room")

        def joins_of_3() -> list[dict[str, Any]]:
            return [p for p in compact.pushes("join") if p["join"]["info"]["user"] == "3"]

        await until(lambda: len(joins_of_3()) == 1)
        (join,) = joins_of_3()
        assert join.get("id") == cid and "channel" not in join
        joiner.session.transport_closed()
        await until(lambda: len(compact.pushes("leave")) == 1)
        assert compact.pushes("leave")[0].get("id") == cid
        await node.unsubscribe("1", "c:room")
        await until(lambda: len(compact.pushes("unsubscribe")) == 1)
        assert compact.pushes("unsubscribe")[0]["channel"] == "c:room"
        await node.close()

    run(main())


def test_no_ids_for_centrifuge_js_over_protobuf() -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        await node.start()
        js = Client(node, "protobuf")
        await js.connect(connect_token("1"), name="js")
        assert "id" not in await js.subscribe("c:room", flag=1)
        other = Client(node, "protobuf")
        await other.connect(connect_token("2"), name="python")
        assert (await other.subscribe("c:room", flag=1))["id"] > 0
        await node.close()

    run(main())


def test_ids_are_not_reused() -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("1"))
        first = (await c.subscribe("c:a", flag=1))["id"]
        await c.ok("unsubscribe", {"channel": "c:a"})
        await until(lambda: node.hub.num_subscribers("c:a") == 0)
        again = (await c.subscribe("c:a", flag=1))["id"]
        assert again != first
        await node.close()

    run(main())


SDK_CONFIG = {
    "client": {"ping_interval": 25, "pong_timeout": 8},
    "channel": {"namespaces": [{"name": "c", **NS, "allow_channel_compaction": True}]},
}


@pytest.mark.parametrize("protocol", ["json", "protobuf"])
def test_centrifuge_js_routes_pushes_by_id(protocol: str) -> None:
    node_bin = js_node_path()

    async def main() -> None:
        async with serve(SDK_CONFIG) as s:
            js = await JsSubscriber.start(
                node_bin,
                {
                    "url": s.url,
                    "protocol": protocol,
                    "token": connect_token("42"),
                    "channel": "c:js",
                },
            )
            ready = await js.next("ready")
            # Over Protobuf centrifuge-js 5.8.0 cannot route by id (Long ids
            # compared with ===): it gets channel names.
            assert (ready["id"] > 0) is (protocol == "json")
            for n in range(3):
                await s.node.publish("c:js", b'{"n":%d}' % n)
            await js.command("pubs", wait=3)
            # The id survives a reconnect (a new one is assigned and used).
            await s.node.disconnect("42", code=3011, reason="force reconnect")
            await until(lambda: s.node.hub.num_subscribers("c:js") == 0, 5)
            await s.node.publish("c:js", b'{"n":3}')
            await js.command("subscribed", subscribed=2)
            await s.node.publish("c:js", b'{"n":4}')
            await js.command("pubs", wait=5)
            result = await js.finish()
        assert [p["data"]["n"] for p in result["pubs"]] == [0, 1, 2, 3, 4]
        assert all((item["id"] > 0) is (protocol == "json") for item in result["subscribed"])

    run(main(), timeout=60)


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
def test_centrifuge_python_routes_pushes_by_id(protobuf: bool) -> None:
    import centrifuge

    class SubEvents(centrifuge.SubscriptionEventHandler):
        def __init__(self) -> None:
            self.pubs: list[Any] = []
            self.joins: list[Any] = []

        async def on_publication(self, ctx: Any) -> None:
            self.pubs.append(ctx.pub)

        async def on_join(self, ctx: Any) -> None:
            self.joins.append(ctx.info)

    async def main() -> None:
        async with serve(SDK_CONFIG) as s:
            client = centrifuge.Client(s.url, token=connect_token("42"), use_protobuf=protobuf)
            events = SubEvents()
            sub = client.new_subscription("c:py", events)
            await client.connect()
            await sub.subscribe()
            await sub.ready(timeout=5)
            assert sub._push_id > 0  # negotiated
            other = centrifuge.Client(s.url, token=connect_token("43"), use_protobuf=protobuf)
            other_sub = other.new_subscription("c:py")
            await other.connect()
            await other_sub.subscribe()
            await other_sub.ready(timeout=5)
            for n in range(3):
                await s.node.publish("c:py", b'{"n":%d}' % n)
            await until(lambda: len(events.pubs) == 3, 5)
            await until(lambda: any(j.user == "43" for j in events.joins), 5)
            await other.disconnect()
            await client.disconnect()
        data = [json.loads(p.data) if protobuf else p.data for p in events.pubs]
        assert [d["n"] for d in data] == [0, 1, 2]

    run(main(), timeout=60)
