"""Proxies to the application backend (rtcore.backends.proxy) against a real HTTP backend.

The backend is an aiohttp application in the test's event loop that records
every request (path, JSON body, headers) and answers with what the test
scripted. The node is served on a free loopback port; clients speak the JSON
protocol over a raw WebSocket, and one scenario uses centrifuge-python.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import centrifuge
import pytest
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import rtcore
from rtcore.auth import make_connect_token
from rtcore.backends.proxy import (
    HttpEndpoint,
    ProxyResponseError,
    ProxyStatusError,
    ProxyTimeout,
    ProxyUnavailable,
    install_proxies,
)
from rtcore.config import config_from_mapping
from rtcore.engine.events import RPCEvent, SubscribeEvent
from rtcore.engine.node import Node
from rtcore.errors import ConfigError


T = TypeVar("T")
SECRET = "rtcore-proxy-tests-hmac-secret-0123456789abcdef"


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


async def until(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


# -- the backend -------------------------------------------------------------------


@dataclass
class Call:
    kind: str
    body: dict[str, Any]
    headers: dict[str, str]
    peer_port: int


Answer = Callable[[Call], Any]


@dataclass
class Backend:
    """An HTTP backend: ``answers[kind](call)`` returns a dict (200 JSON), bytes
    (200, raw body), an ``aiohttp.web.Response``, or an awaitable of those."""

    answers: dict[str, Answer] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    port: int = 0

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}"

    def of(self, kind: str) -> list[Call]:
        return [c for c in self.calls if c.kind == kind]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        peer = request.transport.get_extra_info("peername") if request.transport else None
        call = Call(
            kind, json.loads(await request.read()), dict(request.headers), peer[1] if peer else 0
        )
        self.calls.append(call)
        answer = self.answers.get(kind, lambda c: {"result": {}})(call)
        if asyncio.iscoroutine(answer):
            answer = await answer
        if isinstance(answer, web.StreamResponse):
            return answer
        if isinstance(answer, bytes):
            return web.Response(body=answer, content_type="application/json")
        return web.json_response(answer)


@asynccontextmanager
async def backend(keepalive_timeout: float = 75.0) -> AsyncIterator[Backend]:
    b = Backend()
    app = web.Application()
    app.router.add_post("/{kind}", b.handle)
    runner = web.AppRunner(app, keepalive_timeout=keepalive_timeout, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    b.port = runner.addresses[0][1]
    try:
        yield b
    finally:
        await runner.cleanup()


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Served:
    node: Node
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"


@asynccontextmanager
async def served(
    overrides: Mapping[str, Any], setup: Callable[[Node], None] | None = None
) -> AsyncIterator[Served]:
    config = config_from_mapping(
        _merge({"client": {"token": {"hmac_secret_key": SECRET}}}, overrides)
    )
    node = Node(config)
    if setup is not None:
        setup(node)
    server = await rtcore.serve(node, "127.0.0.1", 0)
    try:
        yield Served(node, server.port)
    finally:
        await node.close()
        await server.close(timeout=1.0)


# -- a raw JSON-protocol client ------------------------------------------------------


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.replies: dict[int, dict[str, Any]] = {}
        self.pushes: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                for line in str(frame).splitlines():
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    if msg.get("id"):
                        self.replies[msg["id"]] = msg
                    elif "push" in msg:
                        self.pushes.append(msg["push"])
        except ConnectionClosed:
            pass
        self.closed = (self.ws.close_code or 1006, self.ws.close_reason or "")

    async def call(self, method: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        cmd_id = self.next_id
        await self.ws.send(json.dumps({"id": cmd_id, method: dict(body or {})}))
        await until(lambda: cmd_id in self.replies or self.closed, what=f"reply to {method}")
        if cmd_id not in self.replies:
            raise AssertionError(f"closed {self.closed} instead of replying to {method}")
        return self.replies[cmd_id]

    async def result(self, method: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        reply = await self.call(method, body)
        assert "error" not in reply, reply
        return reply[method]

    async def error(self, method: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        reply = await self.call(method, body)
        assert "error" in reply, reply
        return reply["error"]

    async def closed_with(self, timeout: float = 5.0) -> tuple[int, str]:
        await until(lambda: self.closed, timeout, "the server to close the connection")
        assert self.closed is not None
        return self.closed

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


@asynccontextmanager
async def client(s: Served, headers: Mapping[str, str] | None = None) -> AsyncIterator[Client]:
    ws = await connect(s.url, additional_headers=dict(headers or {}))
    c = Client(ws)
    try:
        yield c
    finally:
        await c.close()


def connect_proxy(b: Backend, **extra: Any) -> dict[str, Any]:
    return {
        "client": {"proxy": {"connect": {"enabled": True, "endpoint": b.url("connect"), **extra}}}
    }


# -- connect -------------------------------------------------------------------------


CHANNELS = {
    "channel": {
        "namespaces": [
            {"name": "news", "presence": True},
            {"name": "chat", "history_size": 10, "history_ttl": 60, "presence": True},
        ]
    }
}


def test_connect_proxy_gives_credentials_and_server_side_subscriptions() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["connect"] = lambda call: {
                "result": {
                    "user": "56",
                    "info": {"name": "Ann"},
                    "data": {"welcome": True},
                    "meta": {"plan": "gold"},
                    "channels": ["news:index"],
                    "subs": {
                        "chat:room": {
                            "b64data": base64.b64encode(b'{"room":1}').decode(),
                            "info": {"role": "admin"},
                            "override": {"presence": {"value": False}},
                        }
                    },
                }
            }
            async with served(_merge(connect_proxy(b), CHANNELS)) as s, client(s) as c:
                result = await c.result(
                    "connect", {"data": {"hello": "world"}, "name": "test-sdk", "version": "1.2"}
                )
                assert result["data"] == {"welcome": True}
                assert "expires" not in result
                assert set(result["subs"]) == {"news:index", "chat:room"}
                assert result["subs"]["chat:room"]["data"] == {"room": 1}
                (call,) = b.of("connect")
                assert call.body == {
                    "client": result["client"],
                    "transport": "websocket",
                    "protocol": "json",
                    "encoding": "json",
                    "name": "test-sdk",
                    "version": "1.2",
                    "data": {"hello": "world"},
                }
                assert call.headers["Content-Type"] == "application/json"
                session = s.node.hub.session(result["client"])
                assert session is not None
                assert (session.user, session.info, session.meta) == (
                    "56",
                    b'{"name":"Ann"}',
                    {"plan": "gold"},
                )
                assert json.loads(session.subscriptions["chat:room"].chan_info) == {"role": "admin"}
                # The override switched presence off for chat:room only.
                assert not session.subscriptions["chat:room"].presence
                assert session.subscriptions["news:index"].presence

    run(main())


def test_connect_with_token_does_not_call_the_connect_proxy() -> None:
    async def main() -> None:
        async with backend() as b, served(connect_proxy(b)) as s, client(s) as c:
            result = await c.result("connect", {"token": make_connect_token(SECRET, "7")})
            assert s.node.hub.session(result["client"]).user == "7"
            assert b.of("connect") == []

    run(main())


def test_connect_refused_with_error_keeps_code_message_and_temporary() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["connect"] = lambda call: {
                "error": {"code": 1000, "message": "come back later", "temporary": True}
            }
            async with served(connect_proxy(b)) as s, client(s) as c:
                error = await c.error("connect")
                assert error == {"code": 1000, "message": "come back later", "temporary": True}
                assert s.node.hub.num_sessions == 0

    run(main())


def test_connect_refused_with_disconnect_closes_with_its_code() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["connect"] = lambda call: {
                "disconnect": {"code": 4501, "reason": "unauthorized"}
            }
            async with served(connect_proxy(b)) as s, client(s) as c:
                await c.ws.send(json.dumps({"id": 1, "connect": {}}))
                assert await c.closed_with() == (4501, "unauthorized")

    run(main())


def test_connect_result_without_result_falls_back_to_the_anonymous_rule() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["connect"] = lambda call: {}
            async with served(connect_proxy(b)) as s, client(s) as c:
                await c.ws.send(json.dumps({"id": 1, "connect": {}}))
                assert await c.closed_with() == (3501, "bad request")
            config = _merge(
                connect_proxy(b), {"client": {"allow_anonymous_connect_without_token": True}}
            )
            async with served(config) as s, client(s) as c:
                result = await c.result("connect")
                assert s.node.hub.session(result["client"]).user == ""

    run(main())


def test_connect_proxy_expire_at_in_the_past_is_error_110() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["connect"] = lambda call: {
                "result": {"user": "1", "expire_at": int(time.time()) - 10}
            }
            async with served(connect_proxy(b)) as s, client(s) as c:
                assert (await c.error("connect"))["code"] == 110

    run(main())


def test_connect_proxy_expire_at_without_refresh_proxy_is_client_side() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["connect"] = lambda call: {
                "result": {"user": "1", "expire_at": int(time.time()) + 600}
            }
            async with served(connect_proxy(b)) as s, client(s) as c:
                result = await c.result("connect")
                assert result["expires"] is True and 590 <= result["ttl"] <= 600

    run(main())


# -- failures ------------------------------------------------------------------------


def test_backend_timeout_is_error_100_and_the_next_call_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with backend() as b:
            slow = {"on": True}

            async def answer(call: Call) -> dict[str, Any]:
                if slow["on"]:
                    await asyncio.sleep(1.0)
                return {"result": {"user": "9"}}

            b.answers["connect"] = answer
            async with served(connect_proxy(b, timeout="200ms")) as s:
                async with client(s) as c:
                    started = time.monotonic()
                    error = await c.error("connect")
                    assert error["code"] == 100 and error["temporary"] is True
                    assert time.monotonic() - started < 0.9
                slow["on"] = False
                async with client(s) as c:
                    result = await c.result("connect")
                    assert s.node.hub.session(result["client"]).user == "9"

    with caplog.at_level(logging.ERROR, logger="rtcore.backends.proxy"):
        run(main())
    assert "no response within 0.2s" in caplog.text


def test_backend_down_is_error_100(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with backend() as b:
            down = b.url("connect")
        # The backend is gone: nothing listens on its port any more.
        async with served(
            {"client": {"proxy": {"connect": {"enabled": True, "endpoint": down}}}}
        ) as s:
            async with client(s) as c:
                error = await c.error("connect")
                assert error["code"] == 100 and error["temporary"] is True

    with caplog.at_level(logging.ERROR, logger="rtcore.backends.proxy"):
        run(main())
    assert "cannot connect to 127.0.0.1" in caplog.text


def test_non_200_status_is_error_100(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["connect"] = lambda call: web.Response(status=503, text="busy")
            async with served(connect_proxy(b)) as s, client(s) as c:
                assert (await c.error("connect"))["code"] == 100

    with caplog.at_level(logging.ERROR, logger="rtcore.backends.proxy"):
        run(main())
    assert "unexpected HTTP status 503" in caplog.text


@pytest.mark.parametrize(
    ("body", "logged"),
    [
        (b"not json", "the body is not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"result": {"user": 56}}', "result.user must be a string"),
        (b'{"result": {"user": "1", "b64info": "%%%"}}', "result.b64info must be standard base64"),
        (b'{"result": {"user": "1", "expire_at": "soon"}}', "result.expire_at must be an integer"),
        (b'{"result": {"user": "1", "channels": "news:index"}}', "result.channels must be a list"),
        (b'{"result": {"user": "1", "meta": [1]}}', "result.meta must be an object"),
        (b'{"error": {"message": "no code"}}', "error.code is required"),
        (
            b'{"disconnect": {"code": 1000, "reason": "x"}}',
            "disconnect.code must be an integer in 3000..4999",
        ),
        (b'{"result": {"user": "1", "data": 1e400}}', "number out of range"),
    ],
)
def test_malformed_backend_answer_is_error_100_with_a_log_line(
    body: bytes, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["connect"] = lambda call: body
            async with served(connect_proxy(b)) as s, client(s) as c:
                error = await c.error("connect")
                assert error["code"] == 100

    with caplog.at_level(logging.ERROR, logger="rtcore.backends.proxy"):
        run(main())
    assert "malformed response" in caplog.text
    assert logged in caplog.text


# -- headers -------------------------------------------------------------------------


def test_headers_allow_list_static_and_emulated() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["connect"] = lambda call: {"result": {"user": "u1"}}
            proxy = {
                "http_headers": ["Cookie", "X-Forwarded-For", "X-Absent"],
                "emulated_headers": ["X-Token", "Cookie"],
                "http": {
                    "static_headers": {
                        "X-Static": "static",
                        "Cookie": "from-static",
                        "X-Token": "from-static",
                    }
                },
            }
            config = _merge(
                connect_proxy(b, **proxy),
                {
                    "channel": {
                        "proxy": {"subscribe": {"endpoint": b.url("subscribe"), **proxy}},
                        "without_namespace": {"subscribe_proxy_enabled": True},
                    }
                },
            )
            upgrade = {
                "Cookie": "session=abc",
                "Authorization": "Bearer secret",
                "X-Forwarded-For": "10.1.2.3",
            }
            async with served(config) as s, client(s, upgrade) as c:
                await c.result(
                    "connect", {"headers": {"x-token": "t-1", "X-Other": "o", "Cookie": "emulated"}}
                )
                await c.result("subscribe", {"channel": "room"})
                for call in (b.of("connect")[0], b.of("subscribe")[0]):
                    h = {k.lower(): v for k, v in call.headers.items()}
                    # The transport's Cookie wins over the emulated one, which wins over the static one.
                    assert h["cookie"] == "session=abc"
                    assert h["x-forwarded-for"] == "10.1.2.3"
                    assert h["x-token"] == "t-1"
                    assert h["x-static"] == "static"
                    assert "authorization" not in h and "x-other" not in h and "x-absent" not in h
                    assert h["content-type"] == "application/json"

    run(main())


def test_emulated_header_with_a_line_break_is_refused() -> None:
    async def main() -> None:
        async with backend() as b, served(connect_proxy(b, emulated_headers=["X-Token"])) as s:
            async with client(s) as c:
                await c.ws.send(
                    json.dumps({"id": 1, "connect": {"headers": {"X-Token": "a\r\nX-Evil: 1"}}})
                )
                assert await c.closed_with() == (3501, "bad request")
            assert b.of("connect") == []

    run(main())


# -- subscribe -------------------------------------------------------------------------


def _channel_proxies(b: Backend, **namespace: Any) -> dict[str, Any]:
    return {
        "client": {"allow_anonymous_connect_without_token": True},
        "proxy": {"named": [{"name": "backend-1", "endpoint": b.url("sub_named")}]},
        "channel": {
            "proxy": {
                "subscribe": {"endpoint": b.url("subscribe"), "include_connection_meta": True},
                "publish": {"endpoint": b.url("publish")},
                "sub_refresh": {"endpoint": b.url("sub_refresh")},
            },
            "namespaces": [
                {
                    "name": "room",
                    "subscribe_proxy_enabled": True,
                    "publish_proxy_enabled": True,
                    "history_size": 10,
                    "history_ttl": 60,
                    "allow_history_for_subscriber": True,
                    **namespace,
                },
                {
                    "name": "named",
                    "subscribe_proxy_enabled": True,
                    "subscribe_proxy_name": "backend-1",
                },
                {
                    "name": "open",
                    "allow_subscribe_for_client": True,
                    "allow_publish_for_subscriber": True,
                },
                {"name": "closed"},
            ],
        },
    }


def test_subscribe_proxy_grants_info_data_and_override() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["subscribe"] = lambda call: {
                "result": {
                    "info": {"seat": 3},
                    "b64data": base64.b64encode(b'{"hi":1}').decode(),
                    "override": {"presence": {"value": True}},
                }
            }
            b.answers["sub_named"] = lambda call: {"result": {"data": {"named": True}}}
            token = make_connect_token(SECRET, "42", meta={"tier": 2})
            async with served(_channel_proxies(b)) as s, client(s) as c:
                connected = await c.result("connect", {"token": token})
                result = await c.result(
                    "subscribe", {"channel": "room:1", "data": {"want": "seat"}}
                )
                assert result.get("data") == {"hi": 1}
                assert "expires" not in result
                (call,) = b.of("subscribe")
                assert call.body == {
                    "client": connected["client"],
                    "transport": "websocket",
                    "protocol": "json",
                    "encoding": "json",
                    "user": "42",
                    "meta": {"tier": 2},
                    "channel": "room:1",
                    "data": {"want": "seat"},
                }
                state = s.node.hub.session(connected["client"]).subscriptions["room:1"]
                assert json.loads(state.chan_info) == {"seat": 3}
                assert state.presence  # the namespace has no presence; the override turned it on
                # A namespace naming a proxy of proxy.named uses it.
                named = await c.result("subscribe", {"channel": "named:1"})
                assert named["data"] == {"named": True}
                assert b.of("sub_named")[0].body["channel"] == "named:1"
                assert "meta" not in b.of("sub_named")[0].body  # include_connection_meta is off

    run(main())


def test_subscribe_proxy_refusals_and_namespaces_without_proxy() -> None:
    async def main() -> None:
        async with backend() as b:
            answers = {
                "room:denied": {"error": {"code": 403, "message": "permission denied"}},
                "room:later": {"error": {"code": 1001, "message": "try later", "temporary": True}},
                "room:kick": {"disconnect": {"code": 4503, "reason": "kicked"}},
            }
            b.answers["subscribe"] = lambda call: answers[call.body["channel"]]
            async with served(_channel_proxies(b)) as s, client(s) as c:
                await c.result("connect", {"token": make_connect_token(SECRET, "42")})
                assert await c.error("subscribe", {"channel": "room:denied"}) == {
                    "code": 403,
                    "message": "permission denied",
                }
                assert await c.error("subscribe", {"channel": "room:later"}) == {
                    "code": 1001,
                    "message": "try later",
                    "temporary": True,
                }
                # Namespaces without a proxy keep their options.
                await c.result("subscribe", {"channel": "open:1"})
                assert (await c.error("subscribe", {"channel": "closed:1"}))["code"] == 103
                assert [call.body["channel"] for call in b.of("subscribe")] == [
                    "room:denied",
                    "room:later",
                ]
                await c.ws.send(json.dumps({"id": 99, "subscribe": {"channel": "room:kick"}}))
                assert await c.closed_with() == (4503, "kicked")

    run(main())


def test_hooks_registered_before_start_decide_where_no_proxy_is_configured() -> None:
    seen: list[str] = []

    def setup(node: Node) -> None:
        def on_subscribe(event: SubscribeEvent) -> bool:
            seen.append(event.channel)
            return event.channel == "closed:ok"

        def on_rpc(event: RPCEvent) -> bytes:
            return b'{"local":true}'

        node.on_subscribe = on_subscribe
        node.on_rpc = on_rpc

    async def main() -> None:
        async with backend() as b:
            config = _merge(
                _channel_proxies(b),
                {
                    "rpc": {
                        "proxy": {"endpoint": b.url("rpc")},
                        "namespaces": [{"name": "remote", "proxy_enabled": True}],
                    }
                },
            )
            b.answers["rpc"] = lambda call: {"result": {"data": {"remote": True}}}
            async with served(config, setup) as s, client(s) as c:
                await c.result("connect", {"token": make_connect_token(SECRET, "42")})
                await c.result("subscribe", {"channel": "closed:ok"})
                assert (await c.error("subscribe", {"channel": "closed:no"}))["code"] == 103
                await c.result("subscribe", {"channel": "room:1"})
                assert seen == ["closed:ok", "closed:no"]
                assert (await c.result("rpc", {"method": "calc", "data": {}}))["data"] == {
                    "local": True
                }
                assert (await c.result("rpc", {"method": "remote:calc", "data": {}}))["data"] == {
                    "remote": True
                }

    run(main())


# -- publish ---------------------------------------------------------------------------


def test_publish_proxy_replaces_data_and_skips_history() -> None:
    async def main() -> None:
        async with backend() as b:

            def answer(call: Call) -> dict[str, Any]:
                text = call.body["data"]["text"]
                if text == "bad":
                    return {"error": {"code": 1002, "message": "not allowed"}}
                if text == "ephemeral":
                    return {"result": {"skip_history": True}}
                return {"result": {"data": {"text": text.upper(), "checked": True}}}

            b.answers["publish"] = answer
            async with served(_channel_proxies(b)) as s, client(s) as c:
                await c.result("connect", {"token": make_connect_token(SECRET, "42")})
                await c.result("subscribe", {"channel": "room:1"})
                await c.result("publish", {"channel": "room:1", "data": {"text": "hello"}})
                await c.result("publish", {"channel": "room:1", "data": {"text": "ephemeral"}})
                assert await c.error("publish", {"channel": "room:1", "data": {"text": "bad"}}) == {
                    "code": 1002,
                    "message": "not allowed",
                }
                await until(
                    lambda: len([p for p in c.pushes if "pub" in p]) == 2, what="publications"
                )
                delivered = [p["pub"]["data"] for p in c.pushes if "pub" in p]
                assert delivered == [{"text": "HELLO", "checked": True}, {"text": "ephemeral"}]
                history = await c.result("history", {"channel": "room:1", "limit": -1})
                assert [p["data"] for p in history.get("publications", [])] == [
                    {"text": "HELLO", "checked": True}
                ]
                assert b.of("publish")[0].body["channel"] == "room:1"
                assert b.of("publish")[0].body["user"] == "42"
                # Without a publish proxy the namespace options decide.
                await c.result("subscribe", {"channel": "open:1"})
                await c.result("publish", {"channel": "open:1", "data": {"text": "plain"}})
                assert (await c.error("publish", {"channel": "closed:1", "data": {}}))[
                    "code"
                ] == 103
                assert len(b.of("publish")) == 3

    run(main())


def test_publish_proxy_failure_is_error_100() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["publish"] = lambda call: web.Response(status=500)
            async with served(_channel_proxies(b)) as s, client(s) as c:
                await c.result("connect", {"token": make_connect_token(SECRET, "42")})
                error = await c.error("publish", {"channel": "room:1", "data": {"x": 1}})
                assert error == {"code": 100, "message": "internal server error", "temporary": True}

    run(main())


# -- rpc ---------------------------------------------------------------------------------


def test_rpc_proxy_by_namespace() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["rpc"] = lambda call: {
                "result": {"data": {"echo": call.body.get("data"), "m": call.body["method"]}}
            }
            b.answers["rpc_named"] = lambda call: {
                "result": {"b64data": base64.b64encode(b'"named"').decode()}
            }
            b.answers["rpc_refuse"] = lambda call: {
                "error": {"code": 1404, "message": "no such thing"}
            }
            config = {
                "proxy": {
                    "named": [
                        {"name": "named-rpc", "endpoint": b.url("rpc_named")},
                        {"name": "refuse", "endpoint": b.url("rpc_refuse")},
                    ]
                },
                "rpc": {
                    "proxy": {"endpoint": b.url("rpc")},
                    "without_namespace": {"proxy_enabled": True},
                    "namespaces": [
                        {"name": "ns", "proxy_enabled": True, "proxy_name": "named-rpc"},
                        {"name": "refusing", "proxy_enabled": True, "proxy_name": "refuse"},
                        {"name": "off"},
                    ],
                },
            }
            async with served(config) as s, client(s) as c:
                connected = await c.result("connect", {"token": make_connect_token(SECRET, "42")})
                result = await c.result("rpc", {"method": "getPrice", "data": {"id": 12}})
                assert result["data"] == {"echo": {"id": 12}, "m": "getPrice"}
                assert b.of("rpc")[0].body == {
                    "client": connected["client"],
                    "transport": "websocket",
                    "protocol": "json",
                    "encoding": "json",
                    "user": "42",
                    "method": "getPrice",
                    "data": {"id": 12},
                }
                assert (await c.result("rpc", {"method": "ns:x", "data": {}}))["data"] == "named"
                assert await c.error("rpc", {"method": "refusing:x", "data": {}}) == {
                    "code": 1404,
                    "message": "no such thing",
                }
                assert (await c.error("rpc", {"method": "off:x", "data": {}}))["code"] == 108
                assert (await c.error("rpc", {"method": "unknown:x", "data": {}}))["code"] == 104

    run(main())


def test_binary_encoding_sends_and_accepts_base64() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["rpc"] = lambda call: {
                "result": {"b64data": base64.b64encode(b'{"ok":1}').decode()}
            }
            config = {
                "rpc": {
                    "proxy": {"endpoint": b.url("rpc"), "binary_encoding": True},
                    "without_namespace": {"proxy_enabled": True},
                }
            }
            async with served(config) as s, client(s) as c:
                await c.result("connect", {"token": make_connect_token(SECRET, "42")})
                assert (await c.result("rpc", {"method": "m", "data": {"a": 1}}))["data"] == {
                    "ok": 1
                }
                body = b.of("rpc")[0].body
                assert body["encoding"] == "binary"
                # The client's bytes as they were sent.
                assert base64.b64decode(body["b64data"]) == b'{"a": 1}'
                assert "data" not in body

    run(main())


# -- refresh / sub_refresh -------------------------------------------------------------------


def test_refresh_proxy_prolongs_then_expires_the_connection() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["connect"] = lambda call: {
                "result": {"user": "5", "expire_at": int(time.time()) + 1, "meta": {"m": 1}}
            }
            refreshes = iter(
                [
                    lambda: {
                        "result": {
                            "expire_at": int(time.time()) + 1,
                            "info": {"v": 2},
                            "meta": {"m": 2},
                        }
                    },
                    lambda: {"result": {"expired": True}},
                ]
            )
            b.answers["refresh"] = lambda call: next(refreshes)()
            config = _merge(
                connect_proxy(b),
                {
                    "client": {
                        "proxy": {
                            "refresh": {
                                "enabled": True,
                                "endpoint": b.url("refresh"),
                                "include_connection_meta": True,
                            }
                        }
                    }
                },
            )
            async with served(config) as s, client(s) as c:
                result = await c.result("connect")
                # Server-side refresh: the client is not asked to refresh.
                assert "expires" not in result and "ttl" not in result
                session = s.node.hub.session(result["client"])
                await until(lambda: len(b.of("refresh")) == 1, 4, "the first refresh")
                first = b.of("refresh")[0].body
                assert first == {
                    "client": result["client"],
                    "transport": "websocket",
                    "protocol": "json",
                    "encoding": "json",
                    "user": "5",
                    "meta": {"m": 1},
                }
                await until(lambda: session.info == b'{"v":2}', 2, "the refreshed info")
                assert session.meta == {"m": 2}
                assert c.closed is None
                assert await c.closed_with(4) == (3005, "connection expired")
                assert b.of("refresh")[1].body["meta"] == {"m": 2}

    run(main())


def test_refresh_proxy_failure_keeps_the_connection_and_retries() -> None:
    async def main() -> None:
        async with backend() as b:
            answers = iter([web.Response(status=502), b"garbage", {"result": {"expired": True}}])
            b.answers["refresh"] = lambda call: next(answers)
            config = {
                "proxy": {"refresh_retry_interval": "200ms"},
                "client": {"proxy": {"refresh": {"enabled": True, "endpoint": b.url("refresh")}}},
            }
            async with served(config) as s, client(s) as c:
                # A token's expiry is refreshed server-side too once a refresh proxy is on.
                token = make_connect_token(SECRET, "3", expire_at=int(time.time()) + 1)
                result = await c.result("connect", {"token": token})
                assert "expires" not in result
                await until(lambda: len(b.of("refresh")) == 2, 4, "a retried refresh")
                assert c.closed is None and s.node.hub.num_sessions == 1
                assert await c.closed_with(4) == (3005, "connection expired")
                assert len(b.of("refresh")) == 3

    run(main())


def test_sub_refresh_proxy_prolongs_then_unsubscribes() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["subscribe"] = lambda call: {"result": {"expire_at": int(time.time()) + 1}}
            answers = iter(
                [
                    lambda: {
                        "result": {"expire_at": int(time.time()) + 1, "info": {"fresh": True}}
                    },
                    lambda: {"result": {"expired": True}},
                ]
            )
            b.answers["sub_refresh"] = lambda call: next(answers)()
            async with (
                served(_channel_proxies(b, sub_refresh_proxy_enabled=True)) as s,
                client(s) as c,
            ):
                connected = await c.result("connect", {"token": make_connect_token(SECRET, "42")})
                result = await c.result("subscribe", {"channel": "room:1"})
                assert "expires" not in result
                session = s.node.hub.session(connected["client"])
                await until(lambda: b.of("sub_refresh"), 4, "the first sub_refresh")
                assert b.of("sub_refresh")[0].body["channel"] == "room:1"
                assert b.of("sub_refresh")[0].body["user"] == "42"
                await until(
                    lambda: session.subscriptions["room:1"].chan_info == b'{"fresh":true}',
                    2,
                    "new info",
                )
                await until(
                    lambda: [p for p in c.pushes if "unsubscribe" in p], 4, "the unsubscribe push"
                )
                (push,) = [p for p in c.pushes if "unsubscribe" in p]
                assert push["channel"] == "room:1"
                assert push["unsubscribe"]["code"] == 2501
                assert "room:1" not in session.subscriptions
                assert c.closed is None

    run(main())


def test_subscribe_expire_at_without_sub_refresh_proxy_is_client_side() -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["subscribe"] = lambda call: {"result": {"expire_at": int(time.time()) + 300}}
            async with served(_channel_proxies(b)) as s, client(s) as c:
                await c.result("connect", {"token": make_connect_token(SECRET, "42")})
                result = await c.result("subscribe", {"channel": "room:1"})
                assert result["expires"] is True and 290 <= result["ttl"] <= 300
                b.answers["subscribe"] = lambda call: {
                    "result": {"expire_at": int(time.time()) - 5}
                }
                assert (await c.error("subscribe", {"channel": "room:2"}))["code"] == 110

    run(main())


# -- the SDK ------------------------------------------------------------------------------


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
def test_centrifuge_python_sdk_through_connect_subscribe_and_rpc_proxies(protobuf: bool) -> None:
    async def main() -> None:
        async with backend() as b:
            b.answers["connect"] = lambda call: {
                "result": {"user": "sdk-user", "data": {"motd": "hi"}}
            }
            b.answers["subscribe"] = lambda call: {
                "result": {"data": {"room": call.body["channel"]}}
            }
            b.answers["rpc"] = lambda call: {
                "result": {"data": {"sum": sum(call.body["data"]["n"])}}
            }
            config = _merge(
                _merge(connect_proxy(b), _channel_proxies(b)),
                {
                    "rpc": {
                        "proxy": {"endpoint": b.url("rpc")},
                        "without_namespace": {"proxy_enabled": True},
                    }
                },
            )
            async with served(config) as s:
                sdk = centrifuge.Client(
                    s.url, use_protobuf=protobuf, min_reconnect_delay=0.05, max_reconnect_delay=0.2
                )
                await sdk.connect()
                await sdk.ready(timeout=5)
                sub = sdk.new_subscription("room:lobby")
                await sub.subscribe()
                await sub.ready(timeout=5)
                args: Any = {"n": [1, 2, 3]}
                reply = await sdk.rpc("add", json.dumps(args).encode() if protobuf else args)
                assert (json.loads(reply.data) if protobuf else reply.data) == {"sum": 6}
                assert s.node.hub.user_connection_count("sdk-user") == 1
                assert [c.kind for c in b.calls] == ["connect", "subscribe", "rpc"]
                assert {c.body["protocol"] for c in b.calls} == {"protobuf" if protobuf else "json"}
                assert b.of("rpc")[0].body["data"] == {"n": [1, 2, 3]}
                if protobuf:
                    # Bytes that are not JSON cannot travel in a JSON request.
                    with pytest.raises(centrifuge.ReplyError) as info:
                        await sdk.rpc("add", b"\x00\xff")
                    assert info.value.code == 107
                    assert len(b.of("rpc")) == 1
                await sdk.disconnect()

    run(main())


# -- the HTTP client -------------------------------------------------------------------------


@asynccontextmanager
async def raw_server(
    respond: Callable[[bytes], Awaitable[bytes | None]],
) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server answering each request with ``respond(request bytes)`` (None: close)."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer.get_extra_info("peername")[1])
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                answer = await respond(head + body)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook?x=1", connections
    finally:
        server.close()
        await server.wait_closed()


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_http_client_reuses_connections_and_sends_the_request_line() -> None:
    async def main() -> None:
        seen: list[bytes] = []

        async def respond(request: bytes) -> bytes:
            seen.append(request)
            return _ok(b'{"result":{}}')

        async with raw_server(respond) as (url, connections):
            endpoint = HttpEndpoint(url)
            for _ in range(3):
                assert await endpoint.post(b"{}", [("X-A", "1")], 1.0) == (200, b'{"result":{}}')
            assert len(connections) == 1
            head = seen[0].split(b"\r\n")
            assert head[0] == b"POST /hook?x=1 HTTP/1.1"
            assert b"Content-Type: application/json" in head and b"X-A: 1" in head
            assert f"Host: 127.0.0.1:{url.split(':')[2].split('/')[0]}".encode() in head
            # close() drops the kept-alive connection; the next call opens another.
            await endpoint.close()
            assert (await endpoint.post(b"{}", [], 1.0))[0] == 200
            assert len(connections) == 2
            await endpoint.close()

    run(main())


def test_http_client_recovers_from_a_closed_kept_alive_connection() -> None:
    async def main() -> None:
        async with backend(keepalive_timeout=0.05) as b:
            endpoint = HttpEndpoint(b.url("x"))
            assert (await endpoint.post(b'{"a":1}', [], 1.0))[0] == 200
            await asyncio.sleep(0.3)  # the backend closes the idle connection
            assert (await endpoint.post(b'{"a":2}', [], 1.0))[0] == 200
            assert [c.body for c in b.calls] == [{"a": 1}, {"a": 2}]
            assert b.calls[0].peer_port != b.calls[1].peer_port
            await endpoint.close()

    run(main())


def test_http_client_retries_once_when_a_reused_connection_closes_unanswered() -> None:
    async def main() -> None:
        requests: list[bytes] = []

        async def respond(request: bytes) -> bytes | None:
            requests.append(request)
            # The second request arrives on the kept-alive connection, which the
            # server closes without an answer (an idle close racing the request).
            return None if len(requests) == 2 else _ok(b"{}")

        async with raw_server(respond) as (url, connections):
            endpoint = HttpEndpoint(url)
            assert await endpoint.post(b'{"n":1}', [], 1.0) == (200, b"{}")
            assert await endpoint.post(b'{"n":2}', [], 1.0) == (200, b"{}")
            assert len(connections) == 2 and len(requests) == 3
            assert requests[1].endswith(b'{"n":2}') and requests[2].endswith(b'{"n":2}')
            await endpoint.close()

    run(main())


def test_http_client_response_framings() -> None:
    async def main() -> None:
        answers = iter(
            [
                b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b"{}"),
                b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n3\r\n":1\r\n1\r\n}\r\n0\r\n\r\n',
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            ]
        )

        async def respond(request: bytes) -> bytes:
            return next(answers)

        async with raw_server(respond) as (url, _):
            endpoint = HttpEndpoint(url)
            assert await endpoint.post(b"{}", [], 1.0) == (200, b"{}")
            assert await endpoint.post(b"{}", [], 1.0) == (200, b'{"a":1}')
            assert await endpoint.post(b"{}", [], 1.0) == (404, b"")
            await endpoint.close()

        # A body delimited by the end of the connection.
        async def eof_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"eof":true}')
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(eof_body, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        endpoint = HttpEndpoint(f"http://127.0.0.1:{port}/")
        assert await endpoint.post(b"{}", [], 1.0) == (200, b'{"eof":true}')
        server.close()
        await server.wait_closed()
        await endpoint.close()

    run(main())


def test_http_client_failures() -> None:
    async def main() -> None:
        async def garbage(request: bytes) -> bytes:
            return b"SMTP ready\r\n\r\n"

        async with raw_server(garbage) as (url, _):
            with pytest.raises(ProxyResponseError, match="invalid HTTP response"):
                await HttpEndpoint(url).post(b"{}", [], 1.0)

        async def hang(request: bytes) -> bytes:
            await asyncio.sleep(5)
            return _ok(b"{}")

        async with raw_server(hang) as (url, _):
            with pytest.raises(ProxyTimeout, match="no response within 0.1s"):
                await HttpEndpoint(url).post(b"{}", [], 0.1)

        async def close(request: bytes) -> None:
            return None

        async with raw_server(close) as (url, _):
            with pytest.raises(ProxyUnavailable, match="closed the connection without a response"):
                await HttpEndpoint(url).post(b"{}", [], 1.0)

        async def truncated(request: bytes) -> bytes:
            return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"

        async def truncated_then_close(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            writer.write(await truncated(b""))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(truncated_then_close, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ProxyUnavailable, match="in the middle of the response"):
            await HttpEndpoint(f"http://127.0.0.1:{port}/").post(b"{}", [], 1.0)
        server.close()
        await server.wait_closed()

    run(main())


def test_status_error_carries_the_status() -> None:
    assert ProxyStatusError(418).status == 418
    assert "418" in str(ProxyStatusError(418))


def _self_signed(tmp_path: Any) -> tuple[str, str]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtcore proxy test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_https_endpoint_verifies_the_server_certificate(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)

    async def main() -> None:
        async def respond(request: bytes) -> bytes:
            return _ok(b'{"tls":true}')

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)
                writer.write(await respond(head))
                await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
        try:
            # Not signed by a trusted authority: refused.
            with pytest.raises(ProxyUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                await HttpEndpoint(url).post(b"{}", [], 2.0)
            # Trusted through the standard SSL_CERT_FILE variable: accepted.
            monkeypatch.setenv("SSL_CERT_FILE", cert)
            endpoint = HttpEndpoint(url)
            assert await endpoint.post(b"{}", [], 2.0) == (200, b'{"tls":true}')
            await endpoint.close()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            {"channel": {"without_namespace": {"subscribe_proxy_enabled": True}}},
            "channel.without_namespace.subscribe_proxy_name: 'default' needs channel.proxy.subscribe.endpoint",
        ),
        (
            {
                "channel": {
                    "namespaces": [
                        {"name": "a", "publish_proxy_enabled": True, "publish_proxy_name": "nope"}
                    ]
                }
            },
            "channel.namespaces[0].publish_proxy_name: no proxy named 'nope' in proxy.named",
        ),
        (
            {"rpc": {"without_namespace": {"proxy_enabled": True}}},
            "rpc.without_namespace.proxy_name: 'default' needs rpc.proxy.endpoint",
        ),
        (
            {"client": {"proxy": {"connect": {"enabled": True}}}},
            "client.proxy.connect.endpoint: must be set when the proxy is enabled",
        ),
        (
            {
                "client": {
                    "proxy": {"refresh": {"enabled": True, "endpoint": "grpc://backend:9000"}}
                }
            },
            "grpc:// proxies are not supported",
        ),
        (
            {"channel": {"proxy": {"publish": {"endpoint": "ftp://backend/x"}}}},
            "channel.proxy.publish.endpoint: must be an http:// or https:// URL",
        ),
        (
            {"proxy": {"named": [{"name": "default", "endpoint": "http://b/x"}]}},
            "proxy.named[0].name: 'default' names the default proxies",
        ),
        (
            {
                "proxy": {
                    "named": [
                        {"name": "aa", "endpoint": "http://b/x"},
                        {"name": "aa", "endpoint": "http://b/y"},
                    ]
                }
            },
            "proxy.named[1].name: duplicate proxy name 'aa'",
        ),
        (
            {"proxy": {"named": [{"name": "aa"}]}},
            "proxy.named[0].endpoint: must be set",
        ),
        (
            {"rpc": {"proxy": {"endpoint": "http://b/x", "http_headers": ["Host"]}}},
            "rpc.proxy.http_headers[0]: Host is written by rtcore",
        ),
        (
            {
                "rpc": {
                    "proxy": {
                        "endpoint": "http://b/x",
                        "http": {"static_headers": {"X-A": "1\r\n2"}},
                    }
                }
            },
            "rpc.proxy.http.static_headers: the value of X-A holds CR, LF or NUL",
        ),
        (
            {"rpc": {"proxy": {"endpoint": "http://b/x", "http": {"static_headers": ["X-A"]}}}},
            "rpc.proxy.http.static_headers: expected a table/object, got a list",
        ),
        (
            {"rpc": {"proxy": {"endpoint": "http://b/x", "timeout": "0s"}}},
            "rpc.proxy.timeout: must be > 0",
        ),
        (
            {"rpc": {"namespaces": [{"name": "x"}]}},
            "rpc.namespaces[0].name: invalid RPC namespace name 'x'",
        ),
        (
            {"proxy": {"refresh_retry_interval": 0}},
            "proxy.refresh_retry_interval: must be > 0",
        ),
    ],
)
def test_invalid_proxy_configuration(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(mapping)
    assert message in str(info.value)


def test_static_headers_from_the_environment() -> None:
    from rtcore.config import load_config

    config = load_config(
        None,
        {
            "RTCORE_CLIENT__PROXY__CONNECT__ENABLED": "true",
            "RTCORE_CLIENT__PROXY__CONNECT__ENDPOINT": "http://127.0.0.1:3000/connect",
            "RTCORE_CLIENT__PROXY__CONNECT__HTTP__STATIC_HEADERS": '{"X-Api-Key": "k"}',
            "RTCORE_PROXY__NAMED": '[{"name": "p1", "endpoint": "http://127.0.0.1:3000/p1"}]',
        },
    )
    assert config.client.proxy.connect.http.static_headers == {"X-Api-Key": "k"}
    assert config.proxy.named[0].name == "p1"


def test_no_proxy_configured_installs_nothing() -> None:
    node = Node(config_from_mapping({}))
    assert install_proxies(node) is None
    assert node.proxies is None and not node.has_hook("on_connecting")
