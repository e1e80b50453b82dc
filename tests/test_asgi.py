"""rtcore inside an ASGI application (rtcore.AsgiApp) served by uvicorn, in and out of FastAPI.

centrifuge-python connects through a FastAPI application that mounts the node
at ``/rt`` and publishes from one of its own routes; HTTP-streaming and SSE
sessions are driven with raw HTTP; the server API is called with and without
its key. Routing under Starlette's ``Mount`` and Django Channels'
``URLRouter`` (``path_remaining``) is checked on crafted scopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import centrifuge
import httpx
import pytest
import uvicorn
import websockets
from fastapi import FastAPI
from protocol.helpers import connect_token, make_node, run, until
from servers import free_port
from transports.helpers import Emulated, LineStream

import rtcore
from rtcore.engine.events import ConnectEvent
from rtcore.server.asgi.http import route_path


API_KEY = "asgi-test-api-key"

CONFIG: dict[str, Any] = {
    "client": {"allowed_origins": ["http://allowed.example"]},
    "api": {"key": API_KEY},
    "websocket": {"message_size_limit": 4096},
    "uni_websocket": {"enabled": True},
    "uni_http_stream": {"enabled": True},
    "channel": {
        "namespaces": [
            {
                "name": "chat",
                "history_size": 100,
                "history_ttl": 300,
                "force_recovery": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_history_for_subscriber": True,
            }
        ]
    },
}

MODES = [pytest.param(False, id="json"), pytest.param(True, id="protobuf")]


def web_app(node: Any) -> FastAPI:
    """A FastAPI application with rtcore mounted at /rt and a route that publishes."""
    rt = rtcore.AsgiApp(node)
    app = FastAPI(lifespan=rt.lifespan)

    @app.post("/notify/{channel}")
    async def notify(channel: str, payload: dict[str, Any]) -> dict[str, Any]:
        position, _ = await node.publish(channel, json.dumps(payload).encode())
        return {"offset": position.offset}

    app.mount("/rt", rt)
    return app


@contextlib.asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yields ``host:port``."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_level="warning",
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    await until(lambda: server.started or task.done(), 15, "uvicorn to start")
    if task.done():
        task.result()
        raise AssertionError("uvicorn stopped before it started")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


class _Events(centrifuge.ClientEventHandler):
    def __init__(self) -> None:
        self.connects = 0
        self.disconnects: list[tuple[int, str]] = []

    async def on_connected(self, ctx: Any) -> None:
        self.connects += 1

    async def on_disconnected(self, ctx: Any) -> None:
        self.disconnects.append((ctx.code, ctx.reason))


class _SubEvents(centrifuge.SubscriptionEventHandler):
    def __init__(self) -> None:
        self.pubs: list[Any] = []
        self.subscribed: list[Any] = []

    async def on_subscribed(self, ctx: Any) -> None:
        self.subscribed.append(ctx)

    async def on_publication(self, ctx: Any) -> None:
        self.pubs.append(ctx.pub)


def _client(address: str, protobuf: bool, user: str) -> tuple[Any, _Events]:
    events = _Events()
    client = centrifuge.Client(
        f"ws://{address}/rt/connection/websocket",
        events=events,
        use_protobuf=protobuf,
        token=connect_token(user),
        min_reconnect_delay=0.05,
        max_reconnect_delay=0.2,
    )
    return client, events


def _data(protobuf: bool, value: Any) -> Any:
    return json.loads(value) if protobuf else value


@pytest.mark.parametrize("protobuf", MODES)
def test_sdk_subscribes_and_receives_from_a_route_handler(protobuf: bool) -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        transports: list[tuple[str, str]] = []
        node.on_connect = lambda s: transports.append((s.transport.name, s.codec.name))
        async with uvicorn_serving(web_app(node)) as address, httpx.AsyncClient() as http:
            client, _ = _client(address, protobuf, "42")
            await client.connect()
            await client.ready(timeout=5)
            assert transports == [("websocket", "protobuf" if protobuf else "json")]
            handler = _SubEvents()
            sub = client.new_subscription("chat:room", handler)
            await sub.subscribe()
            await sub.ready(timeout=5)
            assert handler.subscribed[0].recoverable is True
            # A FastAPI route publishes through the node that serves the client.
            r = await http.post(f"http://{address}/notify/chat:room", json={"text": "from a route"})
            assert r.status_code == 200 and r.json() == {"offset": 1}
            await until(lambda: handler.pubs, 5, "the publication")
            assert _data(protobuf, handler.pubs[0].data) == {"text": "from a route"}
            assert handler.pubs[0].offset == 1
            # The client publishes too, and reads the history back.
            await sub.publish(
                json.dumps({"text": "from the client"}).encode()
                if protobuf
                else {"text": "from the client"}
            )
            await until(lambda: len(handler.pubs) == 2, 5, "the client's publication")
            assert handler.pubs[1].info.user == "42"
            history = await sub.history(limit=-1)
            assert [p.offset for p in history.publications] == [1, 2]
            assert _data(protobuf, history.publications[0].data) == {"text": "from a route"}
            await client.disconnect()
            await until(lambda: node.hub.user_connection_count("42") == 0, 5, "the session to end")

    run(main(), timeout=60)


@pytest.mark.parametrize("protobuf", MODES)
def test_sdk_recovers_missed_publications(protobuf: bool) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        gate.set()
        node = make_node(CONFIG)

        async def on_connecting(event: ConnectEvent) -> None:
            await gate.wait()  # holds the reconnect while the test publishes

        node.on_connecting = on_connecting
        async with uvicorn_serving(web_app(node)) as address, httpx.AsyncClient() as http:
            client, events = _client(address, protobuf, "7")
            await client.connect()
            handler = _SubEvents()
            sub = client.new_subscription("chat:feed", handler)
            await sub.subscribe()
            await sub.ready(timeout=5)
            for n in (1, 2):
                await http.post(f"http://{address}/notify/chat:feed", json={"n": n})
            await until(lambda: len(handler.pubs) == 2, 5, "two publications")
            gate.clear()
            await node.disconnect("7", code=3011, reason="force reconnect")
            await until(lambda: events.disconnects or node.hub.user_connection_count("7") == 0, 5)
            await until(lambda: node.hub.user_connection_count("7") == 0, 5, "the disconnect")
            for n in (3, 4, 5):
                await http.post(f"http://{address}/notify/chat:feed", json={"n": n})
            gate.set()
            await until(lambda: len(handler.subscribed) == 2, 10, "the resubscribe")
            assert handler.subscribed[1].was_recovering is True
            assert handler.subscribed[1].recovered is True
            await until(lambda: len(handler.pubs) == 5, 5, "the recovered publications")
            assert [_data(protobuf, p.data)["n"] for p in handler.pubs] == [1, 2, 3, 4, 5]
            assert [p.offset for p in handler.pubs] == [1, 2, 3, 4, 5]
            await client.disconnect()

    run(main(), timeout=60)


@pytest.mark.parametrize("transport", ["http_stream", "sse"])
def test_http_stream_and_sse_through_the_mount(transport: str) -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        async with (
            uvicorn_serving(web_app(node)) as address,
            aiohttp.ClientSession() as http,
        ):
            c = Emulated(http, f"http://{address}/rt", transport)
            first = await c.open({"token": connect_token("ann")})
            assert first["connect"]["node"] == node.id
            assert c.response.headers["X-Accel-Buffering"] == "no"
            if transport == "sse":
                assert c.response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
            sub = await c.call("subscribe", {"channel": "chat:room"})
            assert sub["subscribe"]["recoverable"] is True
            async with http.post(f"http://{address}/notify/chat:room", json={"text": "hi"}) as r:
                assert r.status == 200
            pub = await c.wait(lambda m: "pub" in m.get("push", {}))
            assert pub["push"]["pub"]["data"] == {"text": "hi"}
            # An emulation request without data.
            r2 = await c.emulate("")
            assert r2.status == 400
            await node.disconnect("ann", code=3503, reason="force disconnect")
            rest = await c.rest()
            assert rest[-1]["push"]["disconnect"] == {"code": 3503, "reason": "force disconnect"}
            await until(lambda: node.hub.user_connection_count("ann") == 0, 5, "the session to end")

    run(main(), timeout=60)


def test_uni_http_stream_through_the_mount() -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        async with uvicorn_serving(web_app(node)) as address, aiohttp.ClientSession() as http:
            body = json.dumps({"token": connect_token("uni", channels=["chat:uni"])})
            async with http.post(
                f"http://{address}/rt/connection/uni_http_stream",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as response:
                assert response.status == 200
                stream = LineStream(response)
                first = await stream.next()
                assert first["connect"]["client"]
                await until(lambda: node.hub.user_connection_count("uni") == 1, 5, "the session")
                await node.publish("chat:uni", b'{"n":1}')
                push = await stream.next()
                while "pub" not in push:
                    push = await stream.next()
                assert push["channel"] == "chat:uni"
                assert (push["pub"]["data"], push["pub"]["offset"]) == ({"n": 1}, 1)

    run(main(), timeout=60)


def test_stream_client_going_away_ends_its_session() -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        async with uvicorn_serving(web_app(node)) as address:
            async with aiohttp.ClientSession() as http:
                c = Emulated(http, f"http://{address}/rt", "http_stream")
                await c.open({"token": connect_token("bob")})
                await c.call("subscribe", {"channel": "chat:room"})
                assert node.hub.user_connection_count("bob") == 1
            # The HTTP client is closed: its stream's session ends with it.
            await until(lambda: node.hub.user_connection_count("bob") == 0, 5, "the session to end")

    run(main(), timeout=60)


def test_server_api_with_and_without_the_key() -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        async with uvicorn_serving(web_app(node)) as address, httpx.AsyncClient() as http:
            base = f"http://{address}/rt/api"
            body = {"channel": "chat:room", "data": {"text": "api"}}
            r = await http.post(f"{base}/publish", json=body)
            assert r.status_code == 401
            assert r.text == "unauthorized: missing or wrong API key\n"
            r = await http.post(f"{base}/publish", json=body, headers={"X-API-Key": "wrong"})
            assert r.status_code == 401
            r = await http.post(f"{base}/publish", json=body, headers={"X-API-Key": API_KEY})
            assert r.status_code == 200
            assert r.json()["result"]["offset"] == 1
            r = await http.post(
                f"{base}/publish", json=body, headers={"Authorization": f"apikey {API_KEY}"}
            )
            assert r.json()["result"]["offset"] == 2
            # The legacy endpoint, a method other than POST, an unknown method.
            legacy = {"method": "history", "params": {"channel": "chat:room", "limit": -1}}
            r = await http.post(base, json=legacy, headers={"X-API-Key": API_KEY})
            assert r.status_code == 200
            assert [p["offset"] for p in r.json()["result"]["publications"]] == [1, 2]
            r = await http.get(f"{base}/info", headers={"X-API-Key": API_KEY})
            assert r.status_code == 405 and r.headers["allow"] == "POST"
            r = await http.post(f"{base}/nope", json={}, headers={"X-API-Key": API_KEY})
            assert r.status_code == 404 and "unknown API method 'nope'" in r.text
            r = await http.post(f"{base}/publish", content=b"{", headers={"X-API-Key": API_KEY})
            assert r.status_code == 400
            # Bodies over http.max_body_size are refused as on the native edge.
            big = b"x" * ((1 << 20) + 1)
            r = await http.post(f"{base}/publish", content=big, headers={"X-API-Key": API_KEY})
            assert r.status_code == 413
            assert r.text == f"request body exceeds the {1 << 20}-byte limit\n"
            r = await http.get(f"http://{address}/rt/health")
            assert r.status_code == 200 and r.json() == {}
            r = await http.get(f"http://{address}/rt/nothing-here")
            assert r.status_code == 404

    run(main(), timeout=60)


def test_websocket_refusals_and_limits() -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        async with uvicorn_serving(web_app(node)) as address:
            url = f"ws://{address}/rt/connection/websocket"
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(url, origin="http://evil.example")
            assert refused.value.response.status_code == 403
            assert refused.value.response.body == b"origin 'http://evil.example' is not allowed\n"
            # uni_websocket is enabled in the config but only rtcore's own server carries it.
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(f"ws://{address}/rt/connection/uni_websocket")
            assert refused.value.response.status_code == 404
            assert b"served by rtcore's own server only" in refused.value.response.body
            # An allowed origin and the JSON subprotocol; a message over the size limit: 1009.
            async with websockets.connect(
                url, origin="http://allowed.example", subprotocols=["centrifuge-json"]
            ) as ws:
                assert ws.subprotocol == "centrifuge-json"
                token = connect_token("big")
                await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
                reply = json.loads(await ws.recv())
                assert reply["id"] == 1 and reply["connect"]["client"]
                await ws.send("x" * 5000)
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 1009
            await until(lambda: node.hub.user_connection_count("big") == 0, 5, "the session to end")
            # A protocol-level disconnect arrives as the close code and reason.
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"id": 1, "connect": {"token": "not a token"}}))
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                assert (ws.close_code, ws.close_reason) == (3500, "invalid token")

    run(main(), timeout=60)


def test_top_level_app_starts_and_closes_the_node_with_the_lifespan() -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        asgi = rtcore.AsgiApp(node)
        assert not asgi.running
        async with uvicorn_serving(asgi) as address:
            # Started by the lifespan, before any request.
            assert asgi.running
            async with websockets.connect(f"ws://{address}/connection/websocket") as ws:
                await ws.send(json.dumps({"id": 1, "connect": {"token": connect_token("u")}}))
                reply = json.loads(await ws.recv())
                assert reply["connect"]["client"]
                assert node.hub.user_connection_count("u") == 1
                await ws.close()
        # uvicorn ran the lifespan shutdown: the node is closed and stays closed.
        assert node.closing and not asgi.running
        with pytest.raises(RuntimeError, match="was shut down"):
            await asgi.startup()

    run(main(), timeout=60)


def test_the_fastapi_example() -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "asgi_fastapi.py"
    spec = importlib.util.spec_from_file_location("asgi_fastapi_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    async def main() -> None:
        async with uvicorn_serving(example.app) as address, httpx.AsyncClient() as http:
            url = f"ws://{address}/rt/connection/websocket"
            # The connect hook takes the user from a header of the upgrade request.
            async with websockets.connect(url, additional_headers={"X-User": "ann"}) as ws:
                await ws.send(
                    '{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"chat:lobby"}}'
                )
                replies: list[Any] = []
                while len(replies) < 2:
                    replies += [json.loads(line) for line in (await ws.recv()).splitlines()]
                assert replies[0]["id"] == 1 and replies[0]["connect"]["client"]
                assert replies[1]["id"] == 2 and replies[1]["subscribe"]["recoverable"] is True
                assert example.node.hub.user_connection_count("ann") == 1
                r = await http.post(
                    f"http://{address}/rooms/lobby/messages", json={"text": "hello"}
                )
                assert r.status_code == 200 and r.json()["offset"] == 1
                push = json.loads(await ws.recv())["push"]
                assert push["channel"] == "chat:lobby"
                assert push["pub"]["data"]["text"] == "hello"
            r = await http.get(f"http://{address}/rooms/lobby/messages")
            assert [m["text"] for m in r.json()] == ["hello"]
            r = await http.post(f"http://{address}/rooms/lobby/messages", json={"text": " "})
            assert r.status_code == 400
            # Nobody: refused by the hook with 3507.
            async with websockets.connect(url) as ws:
                await ws.send('{"id":1,"connect":{}}')
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 3507

    run(main(), timeout=60)


# -- routing, on crafted scopes ------------------------------------------------------


def test_route_path_under_mounts() -> None:
    # Starlette's Mount and uvicorn --root-path: the whole path, the mount in root_path.
    scope = {"path": "/rt/connection/websocket", "root_path": "/rt"}
    assert route_path(scope) == "/connection/websocket"
    assert route_path({"path": "/rt", "root_path": "/rt/"}) == "/"
    # An older Starlette cut the mount off the path already.
    assert route_path({"path": "/api/publish", "root_path": "/rt"}) == "/api/publish"
    # A path that only starts with the same letters is not under the mount.
    assert route_path({"path": "/rtx/api", "root_path": "/rt"}) == "/rtx/api"
    # Django Channels' URLRouter: what it did not match, without the leading slash.
    channels = {"path": "/rt/api", "root_path": "", "path_remaining": "api"}
    assert route_path(channels) == "/api"
    assert route_path({"path": "/", "path_remaining": ""}) == "/"


async def _call(app: Any, scope: dict[str, Any], body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP request straight through the ASGI interface."""
    sent: list[dict[str, Any]] = []
    requests = [{"type": "http.request", "body": body, "more_body": False}]
    finished = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            finished.set()

    base = {"type": "http", "http_version": "1.1", "method": "GET", "headers": []}
    await app({**base, **scope}, receive, send)
    status = sent[0]["status"]
    return status, b"".join(m.get("body", b"") for m in sent[1:])


def test_channels_url_router_scope_and_lazy_start() -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        asgi = rtcore.AsgiApp(node)
        # URLRouter treats path("rt/", asgi) as a prefix because of this attribute.
        assert asgi._path_routing is True
        scope = {
            "method": "POST",
            "path": "/rt/api/info",
            "path_remaining": "api/info",
            "headers": [(b"x-api-key", API_KEY.encode())],
        }
        # Nobody ran a lifespan: the node starts with the first request.
        assert not asgi.running
        status, body = await _call(asgi, scope)
        assert status == 200 and asgi.running
        assert json.loads(body)["result"]["nodes"][0]["uid"] == node.id
        status, body = await _call(asgi, {"path": "/health", "root_path": ""})
        assert (status, body) == (200, b"{}")
        with pytest.raises(ValueError, match="serves http and websocket, not 'telepathy'"):
            await asgi({"type": "telepathy"}, None, None)  # type: ignore[arg-type]
        await asgi.shutdown()
        status, body = await _call(asgi, scope)
        assert status == 503

    run(main())
