"""Logs an operator can work with, from a node served on a real socket.

Connect, subscribe, unsubscribe and disconnect (with code and reason) at
debug; refused tokens, permissions and browser origins at info with the
reason; every one with the client id, user, transport and remote address as
fields, which the JSON format shows as keys and the text format as
``key=value``. Also: the optional access log of the server API, warnings
that only come when they are true for how the node is used, the error line
of an ``on_rpc`` hook returning the wrong type, and error 102 naming the
namespace.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import pytest
import websockets

import rtcore
from rtcore.auth import make_connect_token
from rtcore.server.cli.logs import configure_logging
from rtcore.transports.http_server import run as run_loop


SECRET = "logging-tests-hmac-secret-0123456789abcdefgh"
KEY = "logging-tests-api-key"

BASE: dict[str, Any] = {
    "client": {
        "token": {"hmac_secret_key": SECRET},
        "allowed_origins": ["https://app.example"],
        "ping_interval": "0s",
        "pong_timeout": "0s",
    },
    "api": {"key": KEY},
    "channel": {
        "namespaces": [
            {"name": "chat", "allow_subscribe_for_client": True},
            {
                "name": "talk",
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
            },
            {"name": "locked"},
        ]
    },
}


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return run_loop(bounded())


def merged(extra: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(BASE))
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out


@asynccontextmanager
async def served(config: dict[str, Any], node: rtcore.Node | None = None) -> AsyncIterator[Any]:
    node = node if node is not None else rtcore.Node(rtcore.config_from_mapping(config))
    server = await rtcore.serve(node, "127.0.0.1", 0)
    try:
        yield node, server.port
    finally:
        await node.close()
        await server.close(timeout=1.0)


async def connect(port: int, user: str = "alice", **kwargs: Any) -> Any:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket", **kwargs)
    await ws.send(json.dumps({"id": 1, "connect": {"token": make_connect_token(SECRET, user)}}))
    reply = json.loads(await ws.recv())
    assert "connect" in reply, reply
    return ws


async def call(ws: Any, cmd_id: int, method: str, body: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps({"id": cmd_id, method: body}))
    while True:
        reply = json.loads(await ws.recv())
        if reply.get("id") == cmd_id:
            return dict(reply)


async def until(records: list[logging.LogRecord], message: str) -> logging.LogRecord:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for record in records:
            if record.getMessage().startswith(message):
                return record
        await asyncio.sleep(0.01)
    raise AssertionError(f"no log line {message!r} in {[r.getMessage() for r in records]}")


class Records(logging.Handler):
    """Every record of the ``rtcore`` loggers, at every level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def recording(level: int = logging.DEBUG) -> Iterator[list[logging.LogRecord]]:
    handler = Records()
    root = logging.getLogger("rtcore")
    old = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: getattr(record, k) for k in ("client", "user", "transport", "remote")}


# -- the life of a connection ---------------------------------------------------------


def test_connect_subscribe_unsubscribe_disconnect_at_debug() -> None:
    async def main() -> None:
        with recording() as records:
            async with served(BASE) as (node, port):
                ws = await connect(port)
                connected = await until(records, "client connected")
                assert connected.levelno == logging.DEBUG
                assert connected.name == "rtcore.engine.commands"
                client = connected.client  # type: ignore[attr-defined]
                assert fields(connected) == {
                    "client": client,
                    "user": "alice",
                    "transport": "websocket",
                    "remote": connected.remote,  # type: ignore[attr-defined]
                }
                local_port = ws.local_address[1]
                assert connected.remote == f"127.0.0.1:{local_port}"  # type: ignore[attr-defined]
                assert "subscribe" in await call(ws, 2, "subscribe", {"channel": "chat:a"})
                subscribed = await until(records, "subscribed to chat:a")
                assert subscribed.levelno == logging.DEBUG
                assert subscribed.channel == "chat:a"  # type: ignore[attr-defined]
                assert subscribed.client == client  # type: ignore[attr-defined]
                assert "unsubscribe" in await call(ws, 3, "unsubscribe", {"channel": "chat:a"})
                left = await until(records, "unsubscribed from chat:a")
                assert fields(left) == fields(connected)
                await call(ws, 4, "subscribe", {"channel": "chat:b"})
                await node.unsubscribe("alice", "chat:b")
                kicked = await until(records, "unsubscribed from chat:b: 2000")
                assert kicked.code == 2000  # type: ignore[attr-defined]
                await ws.close()
                gone = await until(records, "client disconnected: 3000 connection closed")
                assert (gone.code, gone.reason) == (3000, "connection closed")  # type: ignore[attr-defined]
                assert fields(gone) == fields(connected)
                ws = await connect(port, "bob")
                await node.disconnect("bob", code=4000, reason="go away")
                await until(records, "client disconnected: 4000 go away")

    run(main())


def test_nothing_is_built_for_debug_lines_that_are_off() -> None:
    async def main() -> None:
        with recording(logging.INFO) as records:
            async with served(BASE) as (_, port):
                ws = await connect(port)
                await call(ws, 2, "subscribe", {"channel": "chat:a"})
                await ws.close()
                await asyncio.sleep(0.05)
        assert not [r for r in records if r.levelno < logging.INFO]

    run(main())


# -- refusals, with the reason ---------------------------------------------------------


def test_refused_tokens_and_permissions_at_info() -> None:
    async def main() -> None:
        with recording(logging.INFO) as records:
            async with served(BASE) as (_, port):
                ws = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket")
                bad = make_connect_token("another-secret-0123456789abcdefghijklmn", "mallory")
                await ws.send(json.dumps({"id": 1, "connect": {"token": bad}}))
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                refused = await until(records, "token refused (connect):")
                assert refused.levelno == logging.INFO and refused.transport == "websocket"  # type: ignore[attr-defined]
                assert refused.remote.startswith("127.0.0.1:")  # type: ignore[attr-defined]
                ws = await connect(port)
                reply = await call(ws, 2, "subscribe", {"channel": "locked:x"})
                assert reply["error"]["code"] == 103
                record = await until(records, "subscribe to locked:x refused:")
                assert record.reason == (  # type: ignore[attr-defined]
                    "no subscription token, and allow_subscribe_for_client is off"
                )
                assert record.user == "alice" and record.channel == "locked:x"  # type: ignore[attr-defined]
                reply = await call(ws, 3, "subscribe", {"channel": "$chat:secret"})
                await until(records, "subscribe to $chat:secret refused: a private channel")
                reply = await call(ws, 4, "publish", {"channel": "chat:a", "data": {"x": 1}})
                assert reply["error"]["code"] == 103
                record = await until(records, "publish to chat:a refused:")
                assert record.reason == (  # type: ignore[attr-defined]
                    "allow_publish_for_subscriber and allow_publish_for_client are off"
                )
                reply = await call(ws, 5, "publish", {"channel": "talk:a", "data": {"x": 1}})
                assert reply["error"]["code"] == 103
                record = await until(records, "publish to talk:a refused:")
                assert record.reason == (  # type: ignore[attr-defined]
                    "not subscribed, and allow_publish_for_client is off"
                )
                await ws.close()
            anonymous = merged({"client": {"allow_anonymous_connect_without_token": False}})
            async with served(anonymous) as (_, port):
                ws = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket")
                await ws.send(json.dumps({"id": 1, "connect": {}}))
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                await until(
                    records,
                    "connect refused: no token, and client.allow_anonymous_connect_without_token "
                    "is off",
                )

    run(main())


def test_a_refused_browser_origin_is_logged() -> None:
    async def main() -> None:
        with recording(logging.INFO) as records:
            async with served(BASE) as (_, port):
                url = f"ws://127.0.0.1:{port}/connection/websocket"
                with pytest.raises(websockets.InvalidStatus):
                    await websockets.connect(url, origin="https://evil.example")  # type: ignore[arg-type]
                record = await until(records, "origin 'https://evil.example' refused (403)")
                assert record.levelno == logging.INFO
                assert record.transport == "websocket"  # type: ignore[attr-defined]
                assert record.reason == (  # type: ignore[attr-defined]
                    "it matches none of client.allowed_origins (https://app.example)"
                )
                ok = await connect(port, origin="https://app.example")  # type: ignore[arg-type]
                await ok.close()
                async with aiohttp.ClientSession() as http:
                    async with http.post(
                        f"http://127.0.0.1:{port}/connection/http_stream",
                        data=b"{}",
                        headers={"Origin": "https://evil.example"},
                    ) as response:
                        assert response.status == 403
                stream = [r for r in records if getattr(r, "transport", "") == "http_stream"]
                assert stream and stream[0].path == "/connection/http_stream"  # type: ignore[attr-defined]
        assert len([r for r in records if r.getMessage().startswith("origin")]) == 2
        empty = merged({"client": {"allowed_origins": []}})
        with recording(logging.INFO) as records:
            async with served(empty) as (_, port):
                url = f"ws://127.0.0.1:{port}/connection/websocket"
                with pytest.raises(websockets.InvalidStatus):
                    await websockets.connect(url, origin="http://localhost:3000")  # type: ignore[arg-type]
                record = await until(records, "origin 'http://localhost:3000' refused")
                assert "client.allowed_origins is empty" in record.reason  # type: ignore[attr-defined]

    run(main())


# -- the formats -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_formats_show_the_connection_fields(fmt: str) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("debug", fmt, stream)
    try:

        async def main() -> None:
            async with served(BASE) as (_, port):
                ws = await connect(port)
                await call(ws, 2, "subscribe", {"channel": "chat:a"})
                await ws.close()
                await asyncio.sleep(0.05)

        run(main())
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    wanted = ("client connected", "subscribed to chat:a", "client disconnected: 3000")
    for message in wanted:
        (line,) = [line for line in lines if message in line]
        if fmt == "json":
            record = json.loads(line)
            assert {"client", "user", "transport", "remote"} <= set(record), record
            assert record["user"] == "alice" and record["transport"] == "websocket"
        else:
            assert " user=alice " in line + " " and " transport=websocket" in line
            assert " client=" in line and " remote=127.0.0.1:" in line


# -- the server API's access log ---------------------------------------------------------


def test_api_access_log_is_off_by_default_and_on_when_configured() -> None:
    async def publish(port: int, key: str = KEY) -> int:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{port}/api/publish",
                json={"channel": "chat:a", "data": {"x": 1}},
                headers={"X-API-Key": key},
            ) as response:
                await response.read()
                return response.status

    async def main() -> None:
        with recording() as records:
            async with served(BASE) as (_, port):
                assert await publish(port) == 200
        assert not [r for r in records if r.name == "rtcore.server.api.access"]
        with recording() as records:
            async with served(merged({"api": {"access_log": True}})) as (_, port):
                assert await publish(port) == 200
                assert await publish(port, "wrong") == 401
        access = [r for r in records if r.name == "rtcore.server.api.access"]
        assert [r.status for r in access] == [200, 401]  # type: ignore[attr-defined]
        first = access[0]
        assert first.levelno == logging.INFO
        assert (first.http_method, first.api_method) == ("POST", "publish")  # type: ignore[attr-defined]
        assert first.remote.startswith("127.0.0.1:")  # type: ignore[attr-defined]
        assert first.duration_ms >= 0  # type: ignore[attr-defined]
        assert first.getMessage().startswith("POST /api/publish 200 ")

    run(main())


# -- warnings only when they are true -------------------------------------------------


def test_an_embedded_node_with_hooks_is_not_warned_about_keys_it_does_not_use() -> None:
    config = {"channel": {"without_namespace": {"allow_subscribe_for_client": True}}}

    def on_connecting(event: rtcore.ConnectEvent) -> rtcore.Credentials:
        return rtcore.Credentials(user="hooked")

    async def main() -> None:
        with recording() as records:
            node = rtcore.Node(rtcore.config_from_mapping(config))
            node.on_connecting = on_connecting
            async with served(config, node) as (_, port):
                ws = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket")
                await ws.send(json.dumps({"id": 1, "connect": {}}))
                assert "connect" in json.loads(await ws.recv())
                texts = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
                assert texts == []
                # True once a request or a client meets them; said once.
                async with aiohttp.ClientSession() as http:
                    for _ in range(2):
                        async with http.post(f"http://127.0.0.1:{port}/api/info") as response:
                            assert response.status == 401
                token = make_connect_token(SECRET, "alice")
                for _ in range(2):
                    other = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket")
                    await other.send(json.dumps({"id": 1, "connect": {"token": token}}))
                    with pytest.raises(websockets.ConnectionClosed):
                        await other.recv()
                await until(records, "token refused (connect)")
                await ws.close()
        texts = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
        assert len([t for t in texts if t.startswith("server API request refused: api.key")]) == 1
        assert len([t for t in texts if "every connection token will be refused" in t]) == 1
        assert len(texts) == 2, texts

    run(main())


# -- hooks that return the wrong thing ------------------------------------------------


def test_on_rpc_returning_a_dict_is_one_clear_error_line() -> None:
    node = rtcore.Node(rtcore.config_from_mapping(BASE))

    def on_rpc(event: rtcore.RPCEvent) -> Any:
        return {"answer": 42}

    node.on_rpc = on_rpc

    async def main() -> None:
        with recording() as records:
            async with served(BASE, node) as (_, port):
                ws = await connect(port)
                reply = await call(ws, 2, "rpc", {"method": "ask", "data": {}})
                assert reply["error"]["code"] == 100
                record = await until(records, "on_rpc returned dict for method 'ask'")
                await ws.close()
        assert record.levelno == logging.ERROR and record.exc_info is None
        assert "it must return bytes" in record.getMessage()
        assert not [r for r in records if r.exc_info]

    run(main())


# -- error 102 -----------------------------------------------------------------------------


def test_unknown_channel_names_the_namespace() -> None:
    async def main() -> None:
        async with served(BASE) as (_, port):
            ws = await connect(port)
            reply = await call(ws, 2, "subscribe", {"channel": "news:today"})
            assert reply["error"] == {
                "code": 102,
                "message": "unknown channel: namespace 'news' is not in channel.namespaces",
            }
            await ws.close()
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"http://127.0.0.1:{port}/api/publish",
                    json={"channel": "news:today", "data": {}},
                    headers={"X-API-Key": KEY},
                ) as response:
                    body = await response.json()
            assert body["error"]["code"] == 102
            assert "namespace 'news'" in body["error"]["message"]

    run(main())
