"""Unidirectional transports with plain HTTP and WebSocket clients (PROTOCOL.md §6.2)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import urllib.parse
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from rtcore.engine.events import ConnectEvent, Credentials, SubscriptionGrant
from rtcore.protocol import Connect, Disconnect, Publication, Push, codes, get_codec
from rtcore.protocol.codes import ClientError
from rtcore.protocol.types import ClientInfo
from rtcore.protocol.uni_json import UNI_JSON
from rtcore.transports.uni import UniTransportOptions, connect_error_disconnect

from .helpers import (
    Emulated,
    LineStream,
    SseStream,
    base_url,
    connect_token,
    run,
    served,
    until,
)


ALL_UNI = UniTransportOptions(uni_websocket=True, uni_sse=True, uni_http_stream=True)
HTTP_UNI = ["uni_http_stream", "uni_sse"]


async def open_uni(
    http: aiohttp.ClientSession, url: str, transport: str, request: Any, method: str = ""
) -> LineStream | SseStream:
    """Open a uni_http_stream (POST body) or uni_sse (GET cf_connect, or POST) stream."""
    body = json.dumps(request)
    if transport == "uni_http_stream":
        resp = await http.post(
            f"{url}/connection/uni_http_stream",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "application/json"
        return LineStream(resp)
    if method == "POST":
        resp = await http.post(
            f"{url}/connection/uni_sse", data=body, headers={"Content-Type": "application/json"}
        )
    else:
        resp = await http.get(f"{url}/connection/uni_sse", params={"cf_connect": body})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    return SseStream(resp)


async def rest(stream: LineStream | SseStream) -> list[Any]:
    out = []
    while (m := await stream.next()) is not None:
        out.append(m)
    return out


# -- uni_http_stream / uni_sse ----------------------------------------------------------


@pytest.mark.parametrize("transport", HTTP_UNI)
def test_stream_of_bare_pushes(transport: str) -> None:
    async def main() -> None:
        async with served(uni=ALL_UNI) as s, aiohttp.ClientSession() as http:
            token = connect_token("alice", channels=["chat:news"], info={"name": "Alice"})
            stream = await open_uni(http, base_url(s), transport, {"token": token, "name": "raw"})
            first = await stream.next()
            assert list(first) == ["connect"]
            connect = first["connect"]
            assert connect["node"] == s.node.id and connect["ping"] == 25
            assert "pong" not in connect
            assert connect["subs"]["chat:news"]["recoverable"] is True
            assert s.node.hub.num_subscribers("chat:news") == 1
            await s.node.publish("chat:news", b'{"title":"hello"}')
            pub = await stream.next()
            assert pub["channel"] == "chat:news" and pub["pub"]["data"] == {"title": "hello"}
            assert pub["pub"]["offset"] == 1
            # A server-side subscription made later (server API): a subscribe push.
            await s.node.subscribe("alice", "chat:later")
            sub = await stream.next()
            assert sub["channel"] == "chat:later" and "subscribe" in sub
            await s.node.publish("chat:later", b'{"n":2}')
            assert (await stream.next())["pub"]["data"] == {"n": 2}
            await s.node.disconnect("alice", code=3503, reason="force disconnect")
            assert await rest(stream) == [
                {"disconnect": {"code": 3503, "reason": "force disconnect"}}
            ]
            await until(lambda: s.node.hub.num_sessions == 0)

    run(main())


def test_uni_sse_post_and_empty_request() -> None:
    async def main() -> None:
        config = {"client": {"allow_anonymous_connect_without_token": True}}
        async with served(config, uni=ALL_UNI) as s, aiohttp.ClientSession() as http:
            url = base_url(s)
            stream = await open_uni(
                http, url, "uni_sse", {"token": connect_token("bob")}, method="POST"
            )
            assert (await stream.next())["connect"]["client"]
            assert stream.preamble == b"\r\n"
            # No cf_connect: the empty request (an anonymous connection here).
            async with http.get(f"{url}/connection/uni_sse") as r:
                assert r.status == 200
                first = await SseStream(r).next()
                assert first["connect"]["client"]
            # A literal null is the empty request too.
            async with http.post(
                f"{url}/connection/uni_http_stream",
                data=b"null",
                headers={"Content-Type": "application/json"},
            ) as r:
                assert "connect" in await LineStream(r).next()

    run(main())


@pytest.mark.parametrize("transport", HTTP_UNI)
def test_pings_are_empty_pushes(transport: str) -> None:
    async def main() -> None:
        config = {"client": {"ping_interval": 1, "pong_timeout": 0.5}}
        async with served(config, uni=ALL_UNI) as s, aiohttp.ClientSession() as http:
            stream = await open_uni(http, base_url(s), transport, {"token": connect_token("carl")})
            assert (await stream.next())["connect"]["ping"] == 1
            # No pong is expected on a unidirectional transport: pings keep coming.
            for _ in range(3):
                assert await stream.next(timeout=3) == {}
            assert s.node.hub.num_sessions == 1

    run(main())


@pytest.mark.parametrize("transport", HTTP_UNI)
def test_recovery_of_server_side_subscriptions(transport: str) -> None:
    async def main() -> None:
        async with served(uni=ALL_UNI) as s, aiohttp.ClientSession() as http:
            url = base_url(s)
            token = connect_token("dora", channels=["chat:feed"])
            stream = await open_uni(http, url, transport, {"token": token})
            sub = (await stream.next())["connect"]["subs"]["chat:feed"]
            await s.node.publish("chat:feed", b'{"n":1}')
            assert (await stream.next())["pub"]["offset"] == 1
            await s.node.disconnect("dora", code=3011, reason="force reconnect")
            assert (await rest(stream))[-1]["disconnect"]["code"] == 3011
            await s.node.publish("chat:feed", b'{"n":2}')
            await s.node.publish("chat:feed", b'{"n":3}')
            request = {
                "token": token,
                "subs": {"chat:feed": {"recover": True, "offset": 1, "epoch": sub["epoch"]}},
            }
            stream = await open_uni(http, url, transport, request)
            recovered = (await stream.next())["connect"]["subs"]["chat:feed"]
            assert recovered["recovered"] is True and recovered["was_recovering"] is True
            assert [p["data"]["n"] for p in recovered["publications"]] == [2, 3]
            await s.node.publish("chat:feed", b'{"n":4}')
            assert (await stream.next())["pub"]["offset"] == 4

    run(main())


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ClientError(110, "expired"), 3005),
        (ClientError(109, "token expired"), 3005),
        (ClientError(111, "too many requests", temporary=True), 3013),
        (ClientError(103, "permission denied"), 3507),
        (ClientError(100, "internal server error", temporary=True), 3004),
        (ClientError(4321, "custom"), 3004),
    ],
)
def test_connect_errors_become_disconnects(error: ClientError, code: int) -> None:
    async def main() -> None:
        async with served(uni=ALL_UNI) as s, aiohttp.ClientSession() as http:

            def refuse(event: ConnectEvent) -> None:
                raise error

            s.node.on_connecting = refuse
            for transport in HTTP_UNI:
                stream = await open_uni(http, base_url(s), transport, {})
                pushes = await rest(stream)
                assert [list(p) for p in pushes] == [["disconnect"]]
                assert pushes[0]["disconnect"]["code"] == code
            assert s.node.hub.num_sessions == 0

    run(main())


def test_token_failures() -> None:
    async def main() -> None:
        async with served(uni=ALL_UNI) as s, aiohttp.ClientSession() as http:
            url = base_url(s)
            stream = await open_uni(
                http, url, "uni_http_stream", {"token": connect_token("e", ttl=-5)}
            )
            assert await rest(stream) == [
                {"disconnect": {"code": 3005, "reason": "connection expired"}}
            ]
            stream = await open_uni(http, url, "uni_sse", {"token": "garbage"})
            assert await rest(stream) == [{"disconnect": {"code": 3500, "reason": "invalid token"}}]

    run(main())


def test_hook_grants_subscriptions() -> None:
    async def main() -> None:
        async with served(uni=ALL_UNI) as s, aiohttp.ClientSession() as http:

            def grant(event: ConnectEvent) -> Credentials:
                assert event.transport == "uni_http_stream"
                return Credentials(
                    user="hooked", subscriptions={"chat:hook": SubscriptionGrant(data=b'{"hi":1}')}
                )

            s.node.on_connecting = grant
            stream = await open_uni(http, base_url(s), "uni_http_stream", {})
            connect = (await stream.next())["connect"]
            assert connect["subs"]["chat:hook"]["data"] == {"hi": 1}
            await s.node.publish("chat:hook", b'{"x":1}')
            assert (await stream.next())["channel"] == "chat:hook"

    run(main())


def test_uni_http_bad_input() -> None:
    async def main() -> None:
        async with served(uni=ALL_UNI) as s, aiohttp.ClientSession() as http:
            url = base_url(s)

            async def status(
                method: str,
                path: str,
                body: bytes = b"",
                ctype: str = "application/json",
                headers: dict[str, str] | None = None,
                params: dict[str, str] | None = None,
            ) -> int:
                async with http.request(
                    method,
                    url + path,
                    data=body,
                    params=params,
                    headers={"Content-Type": ctype, **(headers or {})},
                ) as r:
                    await r.read()
                    return r.status

            hs, sse = "/connection/uni_http_stream", "/connection/uni_sse"
            assert await status("GET", hs) == 405
            assert await status("PUT", sse) == 405
            assert await status("POST", hs, b'{"token":') == 400
            assert await status("POST", hs, b"[1]") == 400
            assert await status("GET", sse, params={"cf_connect": "{bad"}) == 400
            assert await status("POST", hs, b"{}", "application/x-www-form-urlencoded") == 415
            assert await status("POST", sse, b"{}", "application/octet-stream") == 415
            assert await status("POST", hs, json.dumps({"token": "x" * 70000}).encode()) == 413
            assert await status(
                "GET", sse, params={"cf_connect": json.dumps({"token": "x" * 70000})}
            ) in (413, 414, 431)
            assert await status("POST", hs, b"{}", headers={"Origin": "http://evil.example"}) == 403
            assert await status("OPTIONS", hs, headers={"Origin": "http://evil.example"}) == 403
            async with http.options(url + hs, headers={"Origin": "http://allowed.example"}) as r:
                assert r.status == 204
                assert r.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
                assert r.headers["Access-Control-Allow-Origin"] == "http://allowed.example"
            assert s.node.hub.num_sessions == 0

    run(main())


def test_unidirectional_transports_are_off_by_default() -> None:
    async def main() -> None:
        async with served() as s, aiohttp.ClientSession() as http:
            for path in ("/connection/uni_http_stream", "/connection/uni_sse"):
                async with http.post(base_url(s) + path, data=b"{}") as r:
                    assert r.status == 404
            with pytest.raises(websockets.InvalidStatus) as info:
                await websockets.connect(f"ws://127.0.0.1:{s.port}/connection/uni_websocket")
            assert info.value.response.status_code == 404

    run(main())


# -- uni_websocket ------------------------------------------------------------------------


def test_uni_websocket_first_message_connect() -> None:
    async def main() -> None:
        async with served(uni=ALL_UNI) as s:
            ws = await websockets.connect(f"ws://127.0.0.1:{s.port}/connection/uni_websocket")
            token = connect_token("fay", channels=["chat:ws"])
            await ws.send(json.dumps({"token": token}))
            first = json.loads(await ws.recv())
            assert first["connect"]["subs"]["chat:ws"]["recoverable"] is True
            # Later messages are ignored: the client only listens.
            await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "chat:other"}}))
            await s.node.publish("chat:ws", b'{"a":1}')
            await s.node.publish("chat:ws", b'{"a":2}')
            # One push per frame.
            assert json.loads(await ws.recv())["pub"]["data"] == {"a": 1}
            assert json.loads(await ws.recv())["pub"]["data"] == {"a": 2}
            assert s.node.hub.num_subscribers("chat:other") == 0
            await s.node.disconnect("fay", code=3503, reason="force disconnect")
            assert json.loads(await ws.recv()) == {
                "disconnect": {"code": 3503, "reason": "force disconnect"}
            }
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (3503, "force disconnect")

    run(main())


def test_uni_websocket_cf_connect_and_joined_pushes() -> None:
    async def main() -> None:
        options = UniTransportOptions(uni_websocket=True, join_push_messages=True)
        async with served(uni=options) as s:
            request = json.dumps({"token": connect_token("gus", channels=["chat:j"])})
            query = urllib.parse.urlencode({"cf_connect": request})
            url = f"ws://127.0.0.1:{s.port}/connection/uni_websocket?{query}"
            async with websockets.connect(url) as ws:
                assert "connect" in json.loads(await ws.recv())
                # Published in one tick: one frame, pushes joined by newlines.
                await asyncio.gather(*(s.node.publish("chat:j", b'{"k":%d}' % i) for i in range(3)))
                frames: list[str] = []
                while sum(len(f.split("\n")) for f in frames) < 3:
                    frames.append(await asyncio.wait_for(ws.recv(), 3))
                pushes = [json.loads(line) for f in frames for line in f.split("\n")]
                assert [p["pub"]["data"]["k"] for p in pushes] == [0, 1, 2]
                assert any("\n" in f for f in frames)

    run(main())


def test_uni_websocket_bad_request_and_errors() -> None:
    async def main() -> None:
        async with served(uni=ALL_UNI) as s:
            url = f"ws://127.0.0.1:{s.port}/connection/uni_websocket"
            ws = await websockets.connect(url)
            await ws.send("{not json")
            assert json.loads(await ws.recv()) == {
                "disconnect": {"code": 3501, "reason": "bad request"}
            }
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 3501
            # A connect error reply becomes a disconnect push + close with the converted code.
            s.node.on_connecting = lambda event: (_ for _ in ()).throw(
                ClientError(103, "permission denied")
            )
            ws = await websockets.connect(url + "?cf_connect=%7B%7D")
            assert json.loads(await ws.recv()) == {
                "disconnect": {"code": 3507, "reason": "permission denied"}
            }
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 3507
            # Foreign origins are refused at the handshake.
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(url, origin="http://evil.example")
            assert refused.value.response.status_code == 403
            await until(lambda: s.node.hub.num_sessions == 0)

    run(main())


async def _raw_ws(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that never answers pings (handshake by hand)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b1, b2 = await reader.readexactly(2)
    n = b2 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    return b1 & 0x0F, await reader.readexactly(n)


def test_uni_websocket_native_pings_and_read_deadline() -> None:
    async def main() -> None:
        config = {"client": {"ping_interval": 1, "pong_timeout": 0.5}}
        async with served(config, uni=ALL_UNI) as s:
            reader, writer = await _raw_ws(
                s.port,
                "/connection/uni_websocket?cf_connect=%7B%22token%22%3A%22"
                + connect_token("hal")
                + "%22%7D",
            )
            seen: list[tuple[int, bytes]] = []
            try:
                while not seen or seen[-1][0] != 0x8:
                    seen.append(await asyncio.wait_for(_read_frame(reader), 5))
            finally:
                writer.close()
            opcodes = [op for op, _ in seen]
            assert json.loads(seen[0][1])["connect"]["ping"] == 1
            # Native pings (0x9) and protocol pings ({} text frames) arrive...
            assert 0x9 in opcodes
            assert (0x1, b"{}") in seen
            # ...and with no pong back the connection ends with 3012.
            assert seen[-2] == (0x1, b'{"disconnect":{"code":3012,"reason":"no pong"}}')
            assert struct.unpack("!H", seen[-1][1][:2])[0] == 3012

    run(main(), timeout=20)


def test_uni_websocket_answering_pings_stays_connected() -> None:
    async def main() -> None:
        config = {"client": {"ping_interval": 1, "pong_timeout": 0.5}}
        async with served(config, uni=ALL_UNI) as s:
            async with websockets.connect(
                f"ws://127.0.0.1:{s.port}/connection/uni_websocket"
            ) as ws:
                await ws.send(json.dumps({"token": connect_token("ida")}))
                assert "connect" in json.loads(await ws.recv())
                # websockets answers native pings itself; protocol pings are {} frames.
                for _ in range(3):
                    assert await asyncio.wait_for(ws.recv(), 3) == "{}"
                assert s.node.hub.num_sessions == 1

    run(main(), timeout=20)


# -- fan-out ------------------------------------------------------------------------------


def test_one_encoding_per_codec_for_every_transport() -> None:
    async def main() -> None:
        async with served(uni=ALL_UNI) as s, aiohttp.ClientSession() as http:
            url = base_url(s)
            token = connect_token("jo", channels=["chat:mix"])
            uni_stream = await open_uni(http, url, "uni_http_stream", {"token": token})
            uni_sse = await open_uni(http, url, "uni_sse", {"token": token})
            for stream in (uni_stream, uni_sse):
                assert "connect" in await stream.next()
            uni_ws = await websockets.connect(f"ws://127.0.0.1:{s.port}/connection/uni_websocket")
            await uni_ws.send(json.dumps({"token": token}))
            assert "connect" in json.loads(await uni_ws.recv())
            emulated = Emulated(http, url, "sse")
            await emulated.open({"token": connect_token("jo")})
            await emulated.call("subscribe", {"channel": "chat:mix"})
            ws = await websockets.connect(f"ws://127.0.0.1:{s.port}/connection/websocket")
            await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
            assert "connect" in json.loads(await ws.recv())
            before = list(s.node.hub.encodes)
            await s.node.publish("chat:mix", b'{"m":1}')
            bare = {"channel": "chat:mix", "pub": {"data": {"m": 1}, "offset": 1}}

            def strip(m: dict[str, Any]) -> dict[str, Any]:
                m["pub"].pop("time", None)
                m["pub"].pop("info", None)
                return m

            assert strip(await uni_stream.next()) == bare
            assert strip(await uni_sse.next()) == bare
            assert strip(json.loads(await uni_ws.recv())) == bare
            assert strip((await emulated.wait(lambda m: "push" in m))["push"]) == bare
            assert strip(json.loads(await ws.recv())["push"]) == bare
            # JSON once, bare-push JSON once, nothing for Protobuf.
            assert [a - b for a, b in zip(s.node.hub.encodes, before, strict=True)] == [1, 0, 1]
            await ws.close()
            await uni_ws.close()

    run(main())


# -- units ----------------------------------------------------------------------------------


def test_uni_codec_encodes_bare_pushes() -> None:
    json_codec = get_codec("json")
    pub = Publication(data=b'{"a": 1}', offset=5, info=ClientInfo(user="u", client="c"))
    info = ClientInfo(user="u", client="c", conn_info=b'{"x":1}')
    assert (
        UNI_JSON.encode_publication("ch", pub)
        == json_codec.encode_push_bare(Push(channel="ch", pub=pub)) + b"\n"
    )
    assert (
        UNI_JSON.encode_publication("ch", pub)
        == json_codec.encode_publication("ch", pub)[8:-2] + b"\n"
    )
    assert UNI_JSON.encode_join("ch", info) == json_codec.encode_join("ch", info)[8:-2] + b"\n"
    assert UNI_JSON.encode_leave("ch", info) == json_codec.encode_leave("ch", info)[8:-2] + b"\n"
    push = Push(connect=Connect(client="c", ping=25))
    assert UNI_JSON.encode_push(push) == b'{"connect":{"client":"c","ping":25}}\n'
    assert UNI_JSON.encode_push(Push()) == b"{}\n"
    assert UNI_JSON.encode_push(Push(disconnect=Disconnect(code=3001, reason="shutdown"))) == (
        b'{"disconnect":{"code":3001,"reason":"shutdown"}}\n'
    )


def test_connect_error_table() -> None:
    assert connect_error_disconnect(110) == codes.CONNECTION_EXPIRED
    assert connect_error_disconnect(109) == codes.CONNECTION_EXPIRED
    assert connect_error_disconnect(111) == codes.TOO_MANY_REQUESTS
    assert connect_error_disconnect(103) == codes.PERMISSION_DENIED
    for other in (100, 101, 102, 107, 112, 400, 1999):
        assert connect_error_disconnect(other) == codes.INTERNAL_SERVER_ERROR
