"""HTTP-streaming and SSE sessions driven by raw HTTP requests (PROTOCOL.md §6.1)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import websockets

from rtcore.engine.events import DisconnectEvent
from rtcore.protocol import client_pb2 as pb
from rtcore.transports.http_stream import HttpTransportOptions, emulation_sessions

from .helpers import (
    Emulated,
    ProtobufStream,
    base_url,
    connect_token,
    pb_frame,
    run,
    served,
    until,
)


TRANSPORTS = ["http_stream", "sse"]


def _pub(m: dict[str, Any]) -> bool:
    return "pub" in m.get("push", {})


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connect_subscribe_publish_receive_disconnect(transport: str) -> None:
    async def main() -> None:
        disconnects: list[DisconnectEvent] = []
        async with served() as s, aiohttp.ClientSession() as http:
            s.node.on_disconnect = disconnects.append
            c = Emulated(http, base_url(s), transport)
            first = await c.open({"token": connect_token("alice")})
            result = first["connect"]
            assert first["id"] == 1
            assert result["node"] == s.node.id
            # The emulation session id is a secret of its own, not the public client id.
            assert result["session"] and result["session"] != result["client"]
            assert result["pong"] is True and result["ping"] == 25
            headers = c.response.headers
            assert (
                headers["Cache-Control"]
                == "private, no-cache, no-store, must-revalidate, max-age=0"
            )
            assert headers["X-Accel-Buffering"] == "no"
            if transport == "sse":
                assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
                assert c.stream.preamble == b"\r\n"
            else:
                assert headers["Content-Type"] == "application/json"

            sub = await c.call("subscribe", {"channel": "chat:room"})
            assert sub["subscribe"]["recoverable"] is True
            # A publish through /emulation: its reply and the publication on the stream.
            rep = await c.call("publish", {"channel": "chat:room", "data": {"text": "hi"}})
            assert rep == {"id": 3, "publish": {}}
            pub = await c.wait(_pub)
            assert pub["push"]["channel"] == "chat:room"
            assert pub["push"]["pub"]["data"] == {"text": "hi"}
            assert pub["push"]["pub"]["info"]["user"] == "alice"
            # A publication from the server side.
            await s.node.publish("chat:room", b'{"text":"from server"}')
            pub = await c.wait(_pub)
            assert pub["push"]["pub"]["data"] == {"text": "from server"}
            assert pub["push"]["pub"]["offset"] == 2
            presence = await c.call("presence", {"channel": "chat:room"})
            assert [v["user"] for v in presence["presence"]["presence"].values()] == ["alice"]

            await s.node.disconnect("alice", code=3503, reason="force disconnect")
            rest = await c.rest()
            assert rest[-1] == {
                "push": {"disconnect": {"code": 3503, "reason": "force disconnect"}}
            }
            await until(lambda: disconnects, what="on_disconnect")
            assert disconnects[0].code == 3503
            assert s.node.hub.num_sessions == 0
            assert emulation_sessions(s.node) == {}

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_recovery_after_forced_reconnect(transport: str) -> None:
    async def main() -> None:
        async with served() as s, aiohttp.ClientSession() as http:
            url = base_url(s)
            c = Emulated(http, url, transport)
            await c.open({"token": connect_token("bob")})
            sub = (await c.call("subscribe", {"channel": "chat:r", "recoverable": True}))[
                "subscribe"
            ]
            await s.node.publish("chat:r", b'{"n":1}')
            first = await c.wait(_pub)
            assert first["push"]["pub"]["offset"] == 1
            await s.node.disconnect("bob", code=3011, reason="force reconnect")
            assert (await c.rest())[-1]["push"]["disconnect"]["code"] == 3011
            # Missed while away.
            await s.node.publish("chat:r", b'{"n":2}')
            await s.node.publish("chat:r", b'{"n":3}')
            again = Emulated(http, url, transport)
            await again.open({"token": connect_token("bob")})
            res = (
                await again.call(
                    "subscribe",
                    {"channel": "chat:r", "recover": True, "offset": 1, "epoch": sub["epoch"]},
                )
            )["subscribe"]
            assert res["recovered"] is True and res["was_recovering"] is True
            assert [p["data"]["n"] for p in res["publications"]] == [2, 3]

    run(main())


def test_http_stream_protobuf() -> None:
    async def main() -> None:
        async with served() as s, aiohttp.ClientSession() as http:
            url = base_url(s)
            connect = pb.Command(id=1)
            connect.connect.token = connect_token("carol")
            resp = await http.post(
                f"{url}/connection/http_stream",
                data=pb_frame(connect),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/octet-stream"
            stream = ProtobufStream(resp)
            reply = await stream.next()
            assert reply.id == 1 and reply.connect.session and reply.connect.node == s.node.id

            def emulation(*commands: pb.Command) -> bytes:
                req = pb.EmulationRequest(node=reply.connect.node, session=reply.connect.session)
                req.data = pb_frame(*commands)
                return req.SerializeToString()

            sub = pb.Command(id=2)
            sub.subscribe.channel = "chat:pb"
            async with http.post(
                f"{url}/emulation",
                data=emulation(sub),
                headers={"Content-Type": "application/octet-stream"},
            ) as r:
                assert r.status == 204
            got = await stream.next()
            assert got.id == 2 and got.HasField("subscribe")
            await s.node.publish("chat:pb", b'{"x":1}')
            got = await stream.next()
            assert got.push.channel == "chat:pb" and json.loads(got.push.pub.data) == {"x": 1}
            # A JSON envelope for a Protobuf session: refused, the session goes on.
            async with http.post(
                f"{url}/emulation",
                json={
                    "node": s.node.id,
                    "session": reply.connect.session,
                    "data": '{"id":3,"presence":{}}',
                },
            ) as r:
                assert r.status == 400
            await s.node.disconnect("carol", code=3001, reason="shutdown")
            got = await stream.next()
            assert got.push.disconnect.code == 3001
            assert await stream.next() is None

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ping_pong_through_emulation(transport: str) -> None:
    async def main() -> None:
        config = {"client": {"ping_interval": 1, "pong_timeout": 0.6}}
        async with served(config) as s, aiohttp.ClientSession() as http:
            c = Emulated(http, base_url(s), transport)
            first = await c.open({"token": connect_token("dave")})
            assert first["connect"]["ping"] == 1 and first["connect"]["pong"] is True
            # Two pings answered with the empty command via /emulation: still connected.
            for _ in range(2):
                assert await c.next(timeout=3) == {}
                assert (await c.emulate("{}")).status == 204
            # The next ping goes unanswered: disconnect 3012, then the end.
            assert await c.next(timeout=3) == {}
            assert await c.rest(timeout=3) == [
                {"push": {"disconnect": {"code": 3012, "reason": "no pong"}}}
            ]

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_going_away_closes_the_session(transport: str) -> None:
    async def main() -> None:
        events: list[DisconnectEvent] = []
        async with served() as s, aiohttp.ClientSession() as http:
            s.node.on_disconnect = events.append
            c = Emulated(http, base_url(s), transport)
            await c.open({"token": connect_token("erin")})
            await c.call("subscribe", {"channel": "chat:gone"})
            assert s.node.hub.num_subscribers("chat:gone") == 1
            c.response.close()
            await until(lambda: events, what="on_disconnect")
            assert events[0].code == 3000
            assert s.node.hub.num_sessions == 0
            assert s.node.hub.num_subscribers("chat:gone") == 0
            assert emulation_sessions(s.node) == {}
            # Commands for the gone session are dropped (204).
            assert (await c.emulate('{"id":9,"presence":{"channel":"chat:gone"}}')).status == 204

    run(main())


def test_connect_refused_in_stream() -> None:
    async def main() -> None:
        async with served() as s, aiohttp.ClientSession() as http:
            url = base_url(s)
            # An invalid token: disconnect 3500 as a push, then the end (no session left).
            c = Emulated(http, url, "http_stream")
            first = await c.open({"token": "not-a-token"})
            assert first == {"push": {"disconnect": {"code": 3500, "reason": "invalid token"}}}
            assert await c.next() is None
            # An expired token: the error reply (the SDK refreshes), the stream stays open
            # until the stale timeout, like a WebSocket.
            c = Emulated(http, url, "sse")
            first = await c.open({"token": connect_token("x", ttl=-10)})
            assert first == {"id": 1, "error": {"code": 109, "message": "token expired"}}
            c.response.close()
            await until(lambda: s.node.hub.num_sessions == 0)

    run(main())


def test_shutdown_ends_streams() -> None:
    async def main() -> None:
        async with served() as s, aiohttp.ClientSession() as http:
            streams = [Emulated(http, base_url(s), t) for t in TRANSPORTS]
            for c in streams:
                await c.open({"token": connect_token("frank")})
            await s.node.close()
            for c in streams:
                assert (await c.rest())[-1] == {
                    "push": {"disconnect": {"code": 3001, "reason": "shutdown"}}
                }
            # New streams are refused while the node is closing.
            async with http.post(
                f"{base_url(s)}/connection/http_stream",
                data=b'{"id":1,"connect":{}}',
                headers={"Content-Type": "application/json"},
            ) as r:
                assert r.status == 503

    run(main())


# -- bad input -----------------------------------------------------------------------


async def _healthy(s: Any, c: Emulated, channel: str, n: int) -> None:
    """``c`` is still connected and receives publications of ``channel``."""
    await s.node.publish(channel, json.dumps({"n": n}).encode())
    pub = await c.wait(_pub)
    assert pub["push"]["pub"]["data"] == {"n": n}


def test_emulation_bad_requests_do_not_affect_sessions() -> None:
    async def main() -> None:
        async with served() as s, aiohttp.ClientSession() as http:
            url = base_url(s)
            c = Emulated(http, url, "http_stream")
            await c.open({"token": connect_token("gina")})
            await c.call("subscribe", {"channel": "chat:safe"})
            other = Emulated(http, url, "sse")
            await other.open({"token": connect_token("hank")})
            # A WebSocket client: its public client id must not work as a session id.
            ws = await websockets.connect(f"ws://127.0.0.1:{s.port}/connection/websocket")
            await ws.send(json.dumps({"id": 1, "connect": {"token": connect_token("ivan")}}))
            ws_client = json.loads(await ws.recv())["connect"]["client"]

            async def post(
                body: Any,
                content_type: str = "application/json",
                raw: bytes | None = None,
                method: str = "POST",
            ) -> int:
                data = raw if raw is not None else json.dumps(body).encode()
                async with http.request(
                    method, f"{url}/emulation", data=data, headers={"Content-Type": content_type}
                ) as r:
                    await r.read()
                    return r.status

            subscribe = '{"id":50,"subscribe":{"channel":"chat:hijack"}}'
            node = s.node.id
            # Unknown session on this node: dropped, 204.
            assert (
                await post({"node": node, "session": "no-such-session", "data": subscribe}) == 204
            )
            # Public client ids (WebSocket and emulated ones) are not session ids.
            assert await post({"node": node, "session": ws_client, "data": subscribe}) == 204
            assert await post({"node": node, "session": other.client, "data": subscribe}) == 204
            # Another node's session: 404 (the SDK reconnects).
            assert await post({"node": "elsewhere", "session": c.session, "data": subscribe}) == 404
            # Undecodable envelopes and missing fields: 400.
            assert await post(None, raw=b'{"node":') == 400
            assert await post(None, raw=b"[1,2]") == 400
            assert await post({"node": node, "session": c.session, "data": {"id": 2}}) == 400
            assert await post({"node": node, "session": c.session}) == 400
            assert await post({"node": node, "data": subscribe}) == 400
            assert (
                await post(None, content_type="application/octet-stream", raw=b"\xff\xff\xff")
                == 400
            )
            # Wrong content type: 415; too large: 413; wrong method: 405.
            assert (
                await post({"node": node, "session": c.session, "data": subscribe}, "text/plain")
                == 415
            )
            big = {
                "node": node,
                "session": c.session,
                "data": '{"id":2,"publish":{"channel":"chat:safe","data":"' + "x" * 70000 + '"}}',
            }
            assert await post(big) == 413
            assert await post(None, raw=b"", method="GET") == 405
            assert await post(None, raw=b"", method="PUT") == 405

            assert s.node.hub.num_subscribers("chat:hijack") == 0
            # Every session is still there and working.
            await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "chat:ws"}}))
            reply = json.loads(await ws.recv())
            assert reply["id"] == 2 and "subscribe" in reply
            await _healthy(s, c, "chat:safe", 1)
            assert s.node.hub.num_sessions == 3
            assert (await other.call("presence_stats", {"channel": "chat:safe"}))[
                "presence_stats"
            ] == {"num_clients": 1, "num_users": 1}
            await ws.close()

    run(main())


def test_emulation_rate_limit() -> None:
    async def main() -> None:
        options = HttpTransportOptions(emulation_rate_limit=1.0, emulation_burst=3)
        async with served(http=options) as s, aiohttp.ClientSession() as http:
            c = Emulated(http, base_url(s), "http_stream")
            await c.open({"token": connect_token("jill")})
            calm = Emulated(http, base_url(s), "sse")
            await calm.open({"token": connect_token("kate")})
            await calm.call("subscribe", {"channel": "chat:calm"})
            statuses = [
                (
                    await c.emulate(
                        json.dumps({"id": 10 + i, "presence_stats": {"channel": "chat:x"}})
                    )
                ).status
                for i in range(4)
            ]
            assert statuses == [204, 204, 204, 429]
            rest = await c.rest()
            assert rest[-1] == {
                "push": {"disconnect": {"code": 3013, "reason": "too many requests"}}
            }
            await _healthy(s, calm, "chat:calm", 7)

    run(main())


def test_connection_endpoints_reject_bad_input() -> None:
    async def main() -> None:
        async with served() as s, aiohttp.ClientSession() as http:
            url = base_url(s)

            async def stream(
                method: str,
                path: str,
                body: bytes = b"",
                content_type: str = "application/json",
                params: dict[str, str] | None = None,
            ) -> tuple[int, str]:
                async with http.request(
                    method,
                    url + path,
                    data=body,
                    params=params,
                    headers={"Content-Type": content_type},
                ) as r:
                    return r.status, await r.text()

            hs = "/connection/http_stream"
            assert (await stream("GET", hs))[0] == 405
            assert (await stream("POST", hs, b'{"id":1,"connect":'))[0] == 400
            assert (await stream("POST", hs, b""))[0] == 400
            status, text = await stream("POST", hs, b'{"id":1,"subscribe":{"channel":"chat:a"}}')
            assert (status, text) == (400, "the first command must be connect\n")
            assert (await stream("POST", hs, b'{"id":1,"connect":{}}', "text/plain"))[0] == 415
            big = json.dumps({"id": 1, "connect": {"data": "x" * 70000}}).encode()
            assert (await stream("POST", hs, big))[0] == 413
            assert (await stream("POST", hs, b"\x05\x01", "application/octet-stream"))[0] == 400

            sse = "/connection/sse"
            assert (await stream("GET", sse))[0] == 400
            assert (await stream("GET", sse, params={"cf_connect": "{oops"}))[0] == 400
            assert (await stream("DELETE", sse))[0] == 405
            assert (
                await stream("POST", sse, b'{"id":1,"connect":{}}', "application/octet-stream")
            )[0] == 415
            assert s.node.hub.num_sessions == 0
            assert emulation_sessions(s.node) == {}

    run(main())


def test_sse_post_opens_a_stream() -> None:
    async def main() -> None:
        async with served() as s, aiohttp.ClientSession() as http:
            body = json.dumps({"id": 1, "connect": {"token": connect_token("lee")}}).encode()
            async with http.post(
                f"{base_url(s)}/connection/sse",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as r:
                assert r.status == 200
                assert await r.content.readline() == b"\r\n"
                line = await r.content.readline()
                assert line.startswith(b"data: {")
                assert json.loads(line[6:])["connect"]["node"] == s.node.id
                assert await r.content.readline() == b"\n"

    run(main())


# -- CORS ------------------------------------------------------------------------------


def test_cors_and_origin_check() -> None:
    async def main() -> None:
        async with served() as s, aiohttp.ClientSession() as http:
            url = base_url(s)
            allowed = {"Origin": "http://allowed.example"}
            for path, methods in (
                ("/connection/http_stream", "POST, OPTIONS"),
                ("/connection/sse", "GET, POST, OPTIONS"),
                ("/emulation", "POST, OPTIONS"),
            ):
                async with http.options(
                    url + path,
                    headers={
                        **allowed,
                        "Access-Control-Request-Method": "POST",
                        "Access-Control-Request-Headers": "content-type",
                    },
                ) as r:
                    assert r.status == 204
                    assert r.headers["Access-Control-Allow-Origin"] == "http://allowed.example"
                    assert r.headers["Access-Control-Allow-Methods"] == methods
                    assert r.headers["Access-Control-Allow-Headers"] == "content-type"
                    assert r.headers["Access-Control-Max-Age"] == "300"
                    assert r.headers["Vary"] == "Origin"
                async with http.options(url + path, headers={"Origin": "http://evil.example"}) as r:
                    assert r.status == 403
                    assert "Access-Control-Allow-Origin" not in r.headers

            # A foreign origin gets no stream and runs nothing.
            async with http.post(
                url + "/connection/http_stream",
                data=b'{"id":1,"connect":{}}',
                headers={"Origin": "http://evil.example", "Content-Type": "application/json"},
            ) as r:
                assert r.status == 403
            async with http.get(
                url + "/connection/sse",
                params={"cf_connect": '{"id":1,"connect":{}}'},
                headers={"Origin": "http://evil.example"},
            ) as r:
                assert r.status == 403
            assert s.node.hub.num_sessions == 0

            # An allowed origin: the stream and emulation answers carry the CORS headers.
            c = Emulated(http, url, "http_stream")
            await c.open({"token": connect_token("mia")}, headers=allowed)
            assert c.response.headers["Access-Control-Allow-Origin"] == "http://allowed.example"
            assert c.response.headers["Access-Control-Allow-Credentials"] == "true"
            body = {
                "node": c.node,
                "session": c.session,
                "data": '{"id":2,"subscribe":{"channel":"chat:c"}}',
            }
            async with http.post(url + "/emulation", json=body, headers=allowed) as r:
                assert r.status == 204
                assert r.headers["Access-Control-Allow-Origin"] == "http://allowed.example"
            async with http.post(
                url + "/emulation", json={**body, "node": "x"}, headers=allowed
            ) as r:
                # Error answers are readable cross-origin too (the SDK looks at 404).
                assert r.status == 404
                assert r.headers["Access-Control-Allow-Origin"] == "http://allowed.example"
            async with http.post(
                url + "/emulation", json=body, headers={"Origin": "http://evil.example"}
            ) as r:
                assert r.status == 403
            assert "subscribe" in await c.wait(lambda m: m.get("id") == 2)

    run(main())


def test_transports_can_be_switched_off() -> None:
    async def main() -> None:
        options = HttpTransportOptions(http_stream=False, sse=False)
        async with served(http=options) as s, aiohttp.ClientSession() as http:
            for path in ("/connection/http_stream", "/connection/sse", "/emulation"):
                async with http.post(base_url(s) + path, data=b"{}") as r:
                    assert r.status == 404, path

    run(main())


def test_many_streams_share_one_node() -> None:
    async def main() -> None:
        async with served() as s, aiohttp.ClientSession() as http:
            clients = [Emulated(http, base_url(s), TRANSPORTS[i % 2]) for i in range(6)]
            for i, c in enumerate(clients):
                await c.open({"token": connect_token(f"u{i}")})
                await c.call("subscribe", {"channel": "chat:all"})
            await s.node.publish("chat:all", b'{"all":true}')
            for c in clients:
                assert (await c.wait(_pub))["push"]["pub"]["data"] == {"all": True}
            # One JSON encoding served both transports.
            assert s.node.hub.encodes[0] == 1

    run(main())


def test_stream_is_the_last_response_of_its_connection() -> None:
    async def main() -> None:
        async with served() as s:
            reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
            body = json.dumps({"id": 1, "connect": {"token": connect_token("ned")}}).encode()
            # A request pipelined behind the stream is not served (nor queued).
            writer.write(
                b"POST /connection/http_stream HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                % (len(body), body)
                + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert (
                b"\r\nConnection: close\r\n" in head
                and b"\r\nTransfer-Encoding: chunked\r\n" in head
            )
            await until(lambda: s.node.hub.num_sessions == 1)
            await s.node.disconnect("ned", code=3503, reason="force disconnect")
            rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 3)
            assert b'{"push":{"disconnect":{"code":3503,"reason":"force disconnect"}}}\n' in rest
            writer.close()
            await until(lambda: s.node.hub.num_sessions == 0)
            assert b"HTTP/1.1" not in rest

    run(main())
