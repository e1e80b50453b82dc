"""Three ``rtcore serve`` processes on one Redis (a key prefix per test).

centrifuge-python clients on different nodes see each other's publications
(client publish and server API publish on any node), presence and
presence_stats, join/leave pushes; server API disconnect, unsubscribe and
subscribe called on node A reach a client on node C; an HTTP-streaming
session opened on node A is driven through ``/emulation`` on node B.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from .helpers import (
    LineStream,
    api,
    client,
    cluster,
    require_redis,
    run,
    subscribed,
    token,
    until,
)


pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def _redis() -> None:
    require_redis()


def test_publications_reach_clients_on_every_node(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as nodes:

        async def main() -> None:
            clients = []
            subs = []
            for i, node in enumerate(nodes.nodes):
                c, _ = client(node.ws, f"user-{i}")
                await c.connect()
                await c.ready(timeout=10)
                sub, events = await subscribed(c, "chat:room")
                clients.append(c)
                subs.append((sub, events))
            # A client on node A publishes; node B's and C's clients get it too.
            await subs[0][0].publish({"seq": 1, "from": "client on a"})
            # The server API of every node publishes into the same stream.
            async with aiohttp.ClientSession() as http:
                for seq, node in ((2, nodes[2]), (3, nodes[1]), (4, nodes[0])):
                    reply = await api(http, node, "publish", {"channel": "chat:room", "data": {"seq": seq}})
                    assert reply["result"]["offset"] == seq, reply
                for _, events in subs:
                    await until(lambda e=events: len(e.pubs) >= 4, 10, "4 publications")
                for _, events in subs:
                    assert events.seqs() == [1, 2, 3, 4]
                    # One stream across nodes: the same offsets everywhere.
                    assert [p.offset for p in events.pubs] == [1, 2, 3, 4]
                assert subs[2][1].pubs[0].info.user == "user-0"
                # History read through node B holds all of it.
                history = await api(http, nodes[1], "history", {"channel": "chat:room", "limit": -1})
                assert [p["data"]["seq"] for p in history["result"]["publications"]] == [1, 2, 3, 4]
            for c in clients:
                await c.disconnect()

        run(main())


def test_presence_and_join_leave_across_nodes(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as nodes:

        async def main() -> None:
            ca, _ = client(nodes[0].ws, "ann")
            cb, _ = client(nodes[1].ws, "bob")
            cc, _ = client(nodes[2].ws, "bob")  # a second connection of bob, on node C
            for c in (ca, cb):
                await c.connect()
                await c.ready(timeout=10)
            sa, ea = await subscribed(ca, "chat:lobby", join_leave=True)
            sb, eb = await subscribed(cb, "chat:lobby", join_leave=True)
            # Node A's subscriber sees bob (node B) join.
            await until(lambda: [i.user for i in ea.joins] == ["bob"], 10, "join of bob on a")
            await cc.connect()
            await cc.ready(timeout=10)
            sc, ec = await subscribed(cc, "chat:lobby", join_leave=True)
            for events in (ea, eb):
                await until(lambda e=events: len(e.joins) >= (2 if e is ea else 1), 10, "join of c")
            assert ea.joins[1].user == "bob" and ea.joins[1].client != ea.joins[0].client
            assert [i.user for i in eb.joins] == ["bob"]  # node C's bob, seen on node B
            # Presence from a client on every node: 3 clients, 2 users.
            for sub in (sa, sb, sc):
                presence = await sub.presence()
                assert sorted(i.user for i in presence.clients.values()) == ["ann", "bob", "bob"]
                stats = await sub.presence_stats()
                assert (stats.num_clients, stats.num_users) == (3, 2)
            async with aiohttp.ClientSession() as http:
                reply = await api(http, nodes[1], "presence_stats", {"channel": "chat:lobby"})
                assert reply["result"] == {"num_clients": 3, "num_users": 2}
                # Node C's client leaves: nodes A and B push the leave.
                await sc.unsubscribe()
                for events in (ea, eb):
                    await until(lambda e=events: len(e.leaves) == 1, 10, "leave")
                    assert events.leaves[0].user == "bob"
                reply = await api(http, nodes[0], "presence_stats", {"channel": "chat:lobby"})
                assert reply["result"] == {"num_clients": 2, "num_users": 2}
                # A disconnect (not just an unsubscribe) on node A is a leave on B and C.
                await sc.subscribe()
                await sc.ready(timeout=10)
                await ca.disconnect()
                for events in (eb, ec):
                    await until(lambda e=events: any(i.user == "ann" for i in e.leaves), 10, "ann")
                reply = await api(http, nodes[2], "presence", {"channel": "chat:lobby"})
                users = sorted(i["user"] for i in reply["result"]["presence"].values())
                assert users == ["bob", "bob"]
            for c in (cb, cc):
                await c.disconnect()

        run(main())


def test_server_api_on_one_node_reaches_a_client_on_another(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as nodes:
        a, c_node = nodes[0], nodes[2]

        async def main() -> None:
            c, events = client(c_node.ws, "carol")
            await c.connect()
            await c.ready(timeout=10)
            sub, sub_events = await subscribed(c, "chat:news")
            async with aiohttp.ClientSession() as http:
                # subscribe (server-side) through node A: a subscribe push on node C.
                await api(http, a, "subscribe", {"user": "carol", "channel": "chat:alerts"})
                await until(lambda: events.server_subscribed, 10, "server-side subscribe")
                assert events.server_subscribed[0].channel == "chat:alerts"
                await api(http, nodes[1], "publish", {"channel": "chat:alerts", "data": {"seq": 1}})
                await until(lambda: events.server_pubs, 10, "server-side publication")
                assert events.server_pubs[0].channel == "chat:alerts"
                assert events.server_pubs[0].pub.data == {"seq": 1}
                # unsubscribe through node A: unsubscribe push 2000 on node C.
                await api(http, a, "unsubscribe", {"user": "carol", "channel": "chat:news"})
                await until(lambda: sub_events.unsubscribed, 10, "unsubscribe")
                assert sub_events.unsubscribed[0][0] == 2000
                stats = await api(http, a, "presence_stats", {"channel": "chat:news"})
                assert stats["result"]["num_clients"] == 0
                # disconnect through node A: node C closes the connection with the code given.
                await api(
                    http, a, "disconnect",
                    {"user": "carol", "disconnect": {"code": 4501, "reason": "go away"}},
                )
                await until(lambda: events.disconnects, 10, "disconnect")
                assert events.disconnects[0] == (4501, "go away")
                info = await api(http, c_node, "info", {})
                assert info["result"]["nodes"][0]["num_clients"] == 0

        run(main())


def test_emulation_request_reaches_a_session_of_another_node(tmp_path: Path) -> None:
    with cluster(tmp_path, 2) as nodes:
        a, b = nodes[0], nodes[1]

        async def main() -> None:
            async with aiohttp.ClientSession() as http:
                frame = json.dumps({"id": 1, "connect": {"token": token("dora")}})
                response = await http.post(
                    f"{a.http}/connection/http_stream", data=frame.encode(),
                    headers={"Content-Type": "application/json"},
                )
                assert response.status == 200
                stream = LineStream(response)
                connect = (await stream.wait(lambda m: m.get("id") == 1))["connect"]
                assert connect["node"] == a.name and connect["session"]

                async def emulate(node, body: dict) -> int:
                    async with http.post(f"{node.http}/emulation", json=body) as r:
                        await r.read()
                        return r.status

                def cmd(cid: int, method: str, params: dict) -> dict:
                    return {
                        "node": connect["node"], "session": connect["session"],
                        "data": json.dumps({"id": cid, method: params}),
                    }

                # Commands sent to node B reach the session living on node A.
                assert await emulate(b, cmd(2, "subscribe", {"channel": "chat:emu"})) == 204
                reply = await stream.wait(lambda m: m.get("id") == 2)
                assert "subscribe" in reply, reply
                assert await emulate(b, cmd(3, "publish", {"channel": "chat:emu", "data": {"seq": 1}})) == 204
                assert "publish" in await stream.wait(lambda m: m.get("id") == 3)
                push = await stream.wait(lambda m: "push" in m)
                assert push["push"]["pub"]["data"] == {"seq": 1}
                stats = await api(http, b, "presence_stats", {"channel": "chat:emu"})
                assert stats["result"]["num_clients"] == 1
                # The request checks stay on the node that answers: 400, 413, 415.
                assert await emulate(b, {"node": connect["node"], "session": connect["session"]}) == 400
                big = cmd(4, "publish", {"channel": "chat:emu", "data": {"x": "y" * 70000}})
                assert await emulate(b, big) == 413
                async with http.post(
                    f"{b.http}/emulation", data=b"x", headers={"Content-Type": "text/plain"}
                ) as r:
                    assert r.status == 415
                # A Protobuf-framed request for this JSON session is dropped by node A.
                from rtcore.protocol import client_pb2 as pb

                body = pb.EmulationRequest(
                    node=connect["node"], session=connect["session"], data=b"\x00"
                ).SerializeToString()
                async with http.post(
                    f"{b.http}/emulation", data=body,
                    headers={"Content-Type": "application/octet-stream"},
                ) as r:
                    assert r.status == 204
                # An unknown session of node A: accepted and dropped.
                unknown = {**cmd(5, "publish", {"channel": "chat:emu", "data": {}}), "session": "nope"}
                assert await emulate(b, unknown) == 204
                # The session still works, in order, through either node.
                assert await emulate(a, cmd(6, "publish", {"channel": "chat:emu", "data": {"seq": 2}})) == 204
                assert await emulate(b, cmd(7, "publish", {"channel": "chat:emu", "data": {"seq": 3}})) == 204
                for seq in (2, 3):
                    push = await stream.wait(lambda m, s=seq: m.get("push", {}).get("pub", {}).get("data") == {"seq": s})
                    assert push["push"]["pub"]["offset"] == seq
                response.close()

        run(main())
