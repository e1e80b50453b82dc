"""Several ``rtcore serve`` processes on one Redis (a key prefix per test).

centrifuge-python clients on different nodes see each other's publications
(client publish and server API publish on any node), presence and
presence_stats, join/leave pushes; server API disconnect, unsubscribe and
subscribe called on node A reach a client on node C; an HTTP-streaming
session opened on node A is driven through ``/emulation`` on node B, and
through either worker of ``rtcore serve --workers 2``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .helpers import (
    REDIS_URL,
    LineStream,
    NodeProc,
    api,
    client,
    cluster,
    delete_prefix,
    free_port,
    node_config,
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
                    reply = await api(
                        http, node, "publish", {"channel": "chat:room", "data": {"seq": seq}}
                    )
                    assert reply["result"]["offset"] == seq, reply
                for _, events in subs:
                    await until(lambda e=events: len(e.pubs) >= 4, 10, "4 publications")
                for _, events in subs:
                    assert events.seqs() == [1, 2, 3, 4]
                    # One stream across nodes: the same offsets everywhere.
                    assert [p.offset for p in events.pubs] == [1, 2, 3, 4]
                assert subs[2][1].pubs[0].info.user == "user-0"
                # History read through node B holds all of it.
                history = await api(
                    http, nodes[1], "history", {"channel": "chat:room", "limit": -1}
                )
                assert [p["data"]["seq"] for p in history["result"]["publications"]] == [1, 2, 3, 4]
            for c in clients:
                await c.disconnect()

        run(main())


def test_presence_and_join_leave_across_nodes(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as nodes:

        async def main() -> None:
            ca, eva = client(nodes[0].ws, "ann")
            cb, evb = client(nodes[1].ws, "bob")
            cc, evc = client(nodes[2].ws, "bob")  # a second connection of bob, on node C
            for c in (ca, cb, cc):
                await c.connect()
                await c.ready(timeout=10)
            id_a, id_b, id_c = (ev.connects[0].client for ev in (eva, evb, evc))

            def joined(events: Any) -> list[str]:
                return [i.client for i in events.joins]

            def left(events: Any) -> list[str]:
                return [i.client for i in events.leaves]

            ea: Any = None
            eb: Any = None
            ec: Any = None

            def state() -> str:
                names = {id_a: "a", id_b: "b", id_c: "c"}
                return " ".join(
                    f"{n}: joins={[names.get(c, c) for c in joined(e)]} "
                    f"leaves={[names.get(c, c) for c in left(e)]}"
                    for n, e in (("a", ea), ("b", eb), ("c", ec))
                    if e is not None
                )

            sa, ea = await subscribed(ca, "chat:lobby", join_leave=True)
            # A join is published after the subscribe reply: wait until a's own
            # join is out, so that b, subscribing next, does not get it too.
            await until(lambda: joined(ea) == [id_a], 10, lambda: f"own join on a: {state()}")
            sb, eb = await subscribed(cb, "chat:lobby", join_leave=True)
            # Node A's subscriber sees bob (node B) join; every subscriber gets its own join.
            await until(lambda: joined(ea) == [id_a, id_b], 10, lambda: f"joins on a: {state()}")
            sc, ec = await subscribed(cc, "chat:lobby", join_leave=True)
            await until(lambda: joined(ea) == [id_a, id_b, id_c], 10, "join of c on node a")
            await until(
                lambda: joined(eb) == [id_b, id_c], 10, lambda: f"join of c on b: {state()}"
            )
            await until(lambda: joined(ec) == [id_c], 10, "own join on node c")
            assert [i.user for i in ea.joins] == ["ann", "bob", "bob"]
            # Presence asked by a client on every node: 3 clients, 2 users.
            for sub in (sa, sb, sc):
                presence = await sub.presence()
                assert set(presence.clients) == {id_a, id_b, id_c}
                assert sorted(i.user for i in presence.clients.values()) == ["ann", "bob", "bob"]
                stats = await sub.presence_stats()
                assert (stats.num_clients, stats.num_users) == (3, 2)
            async with aiohttp.ClientSession() as http:
                reply = await api(http, nodes[1], "presence_stats", {"channel": "chat:lobby"})
                assert reply["result"] == {"num_clients": 3, "num_users": 2}
                # Node C's client unsubscribes: nodes A and B push its leave.
                await sc.unsubscribe()
                await until(lambda: left(ea) == [id_c], 10, "leave of c on node a")
                await until(lambda: left(eb) == [id_c], 10, "leave of c on node b")
                reply = await api(http, nodes[0], "presence_stats", {"channel": "chat:lobby"})
                assert reply["result"] == {"num_clients": 2, "num_users": 2}
                # A client of node A disconnects: a leave on nodes B and C.
                await sc.subscribe()
                await sc.ready(timeout=10)
                await until(lambda: joined(ea)[-1:] == [id_c], 10, "second join of c")
                await ca.disconnect()
                await until(lambda: left(eb) == [id_c, id_a], 10, "leave of a on node b")
                await until(lambda: left(ec) == [id_a], 10, "leave of a on node c")
                reply = await api(http, nodes[2], "presence", {"channel": "chat:lobby"})
                assert set(reply["result"]["presence"]) == {id_b, id_c}
                stats = await sb.presence_stats()
                assert (stats.num_clients, stats.num_users) == (2, 1)
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
                    http,
                    a,
                    "disconnect",
                    {"user": "carol", "disconnect": {"code": 4501, "reason": "go away"}},
                )
                await until(lambda: events.disconnects, 10, "disconnect")
                assert events.disconnects[0] == (4501, "go away")
                info = await api(http, c_node, "info", {})
                assert info["result"]["nodes"][0]["num_clients"] == 0

        run(main())


def test_emulation_request_reaches_a_session_of_another_node(tmp_path: Path) -> None:
    limits = "[emulation]\nrate_limit = 1.0\nburst = 10\n"
    with cluster(tmp_path, 2, extra=limits) as nodes:
        a, b = nodes[0], nodes[1]

        async def main() -> None:
            async with aiohttp.ClientSession() as http:
                frame = json.dumps({"id": 1, "connect": {"token": token("dora")}})
                response = await http.post(
                    f"{a.http}/connection/http_stream",
                    data=frame.encode(),
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
                        "node": connect["node"],
                        "session": connect["session"],
                        "data": json.dumps({"id": cid, method: params}),
                    }

                # Commands sent to node B reach the session living on node A.
                assert await emulate(b, cmd(2, "subscribe", {"channel": "chat:emu"})) == 204
                reply = await stream.wait(lambda m: m.get("id") == 2)
                assert "subscribe" in reply, reply
                assert (
                    await emulate(b, cmd(3, "publish", {"channel": "chat:emu", "data": {"seq": 1}}))
                    == 204
                )
                assert "publish" in await stream.wait(lambda m: m.get("id") == 3)
                push = await stream.wait(lambda m: "push" in m)
                assert push["push"]["pub"]["data"] == {"seq": 1}
                stats = await api(http, b, "presence_stats", {"channel": "chat:emu"})
                assert stats["result"]["num_clients"] == 1
                # The request checks stay on the node that answers: 400, 413, 415.
                assert (
                    await emulate(b, {"node": connect["node"], "session": connect["session"]})
                    == 400
                )
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
                    f"{b.http}/emulation",
                    data=body,
                    headers={"Content-Type": "application/octet-stream"},
                ) as r:
                    assert r.status == 204
                # An unknown session of node A: accepted and dropped.
                unknown = {
                    **cmd(5, "publish", {"channel": "chat:emu", "data": {}}),
                    "session": "nope",
                }
                assert await emulate(b, unknown) == 204
                # The session still works, in order, through either node.
                assert (
                    await emulate(a, cmd(6, "publish", {"channel": "chat:emu", "data": {"seq": 2}}))
                    == 204
                )
                assert (
                    await emulate(b, cmd(7, "publish", {"channel": "chat:emu", "data": {"seq": 3}}))
                    == 204
                )
                for seq in (2, 3):
                    push = await stream.wait(
                        lambda m, s=seq: m.get("push", {}).get("pub", {}).get("data") == {"seq": s}
                    )
                    assert push["push"]["pub"]["offset"] == seq
                # Over the session's rate (1/s, bursts of 10) through node B: 429 from B,
                # and node A disconnects the session with 3013.
                statuses = [
                    await emulate(b, cmd(100 + i, "presence", {"channel": "chat:emu"}))
                    for i in range(16)
                ]
                assert 429 in statuses, statuses
                assert set(statuses) <= {204, 429}, statuses
                end = await stream.wait(lambda m: "disconnect" in m.get("push", {}))
                assert end["push"]["disconnect"]["code"] == 3013, end
                assert await stream.wait(lambda m: False, 5) is None  # the stream ended
                response.close()

        run(main())


def test_emulation_across_workers_sharing_one_port(tmp_path: Path) -> None:
    """``--workers 2`` with a configured node name: each worker has its own id
    (the name plus its index), and a request reaching the worker that does not
    hold the stream is forwarded to the one that does."""
    prefix = f"rtcore-mn-{uuid.uuid4().hex[:10]}"
    port = free_port()
    config = tmp_path / "workers.toml"
    config.write_text(node_config(port, "wk", prefix), encoding="utf-8")
    node = NodeProc("wk", port, config, tmp_path / "workers.log", args=["--workers", "2"])
    node.start()
    try:
        node.wait_listening()

        async def main() -> None:
            # A new connection per request, so the kernel spreads them over the workers.
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as http:
                streams: dict[str, tuple[Any, LineStream, dict[str, Any]]] = {}
                # Until both workers hold a stream (the second may still be starting).
                deadline = time.monotonic() + 20
                for i in range(400):
                    if len(streams) == 2 or time.monotonic() > deadline:
                        break
                    frame = json.dumps({"id": 1, "connect": {"token": token(f"w{i}")}})
                    response = await http.post(
                        f"{node.http}/connection/http_stream",
                        data=frame.encode(),
                        headers={"Content-Type": "application/json"},
                    )
                    assert response.status == 200
                    stream = LineStream(response)
                    connect = (await stream.wait(lambda m: m.get("id") == 1))["connect"]
                    if connect["node"] in streams:
                        response.close()
                        await asyncio.sleep(0.05)
                    else:
                        streams[connect["node"]] = (response, stream, connect)
                assert sorted(streams) == ["wk-0", "wk-1"], sorted(streams)
                # Commands for both sessions, alternating, each on a new connection:
                # whichever worker answers holds one session and forwards the other's.
                for n in range(1, 9):
                    for name, (_, stream, connect) in streams.items():
                        body = {
                            "node": connect["node"],
                            "session": connect["session"],
                            "data": json.dumps(
                                {"id": 1 + n, "presence_stats": {"channel": "chat:w"}}
                            ),
                        }
                        async with http.post(f"{node.http}/emulation", json=body) as r:
                            assert r.status == 204, (name, await r.text())
                        reply = await stream.wait(lambda m, i=1 + n: m.get("id") == i)
                        assert reply is not None and "error" in reply, reply  # not subscribed
                        assert reply["error"]["code"] == 103, reply  # permission denied
                for response, _, _ in streams.values():
                    response.close()

        run(main())
        assert node.terminate() == 0
    finally:
        # Not SIGKILL: the workers run in sessions of their own and would outlive
        # the supervisor. SIGTERM reaches them through it (twice: killed).
        if node.alive:
            node.terminate(timeout=10)
        delete_prefix(REDIS_URL, prefix)
