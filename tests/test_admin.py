"""The admin web UI's endpoints over HTTP (rtcore.server.admin).

Sign-in (wrong password, the cookie and the token header, sign-out, expiry
with a clock of the test's own, the attempt limit), the page and its files,
where the UI is served (public port, internal port, ``admin.external``, a
handler prefix), and every server API method the admin may call, against a
served node with WebSocket clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tomllib
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import websockets

import rtcore
from rtcore.auth import make_connect_token
from rtcore.config import config_from_mapping
from rtcore.engine.node import Node
from rtcore.errors import ConfigError
from rtcore.server.admin import ADMIN_METHODS, AdminAuth, AdminEndpoints, SignInLimiter
from rtcore.server.admin.endpoints import COOKIE_NAME, STATIC_FILES
from rtcore.server.internal import InternalApp
from rtcore.transports.http_server import Server, run as run_loop


T = TypeVar("T")

SECRET = "rtcore-admin-tests-hmac-secret-0123456789"
PASSWORD = "correct horse battery staple"
ADMIN_SECRET = "admin-token-secret-0123456789abcdef"
JSON = {"Content-Type": "application/json"}


def run(coro: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 30)

    return run_loop(bounded())  # type: ignore[no-any-return]


def config(**admin: Any) -> dict[str, Any]:
    return {
        "admin": {"enabled": True, "password": PASSWORD, "secret": ADMIN_SECRET, **admin},
        "api": {"key": "api-key-never-sent-to-browsers"},
        "client": {"token": {"hmac_secret_key": SECRET}, "ping_interval": 0, "pong_timeout": 0},
        "channel": {
            "namespaces": [
                {
                    "name": "room",
                    "history_size": 10,
                    "history_ttl": "5m",
                    "presence": True,
                    "allow_subscribe_for_client": True,
                }
            ]
        },
    }


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Admin:
    """An HTTP client of the admin endpoints of one served node."""

    def __init__(self, node: Node, server: Server, http: aiohttp.ClientSession, prefix: str = ""):
        self.node = node
        self.server = server
        self.http = http
        self.base = f"http://127.0.0.1:{server.port}{prefix}"

    @property
    def endpoints(self) -> AdminEndpoints:
        admin = self.server.app.admin  # type: ignore[attr-defined]
        assert isinstance(admin, AdminEndpoints)
        return admin

    async def sign_in(self, password: str = PASSWORD) -> aiohttp.ClientResponse:
        async with self.http.post(
            self.base + "/admin/auth", data=json.dumps({"password": password}), headers=JSON
        ) as resp:
            await resp.read()
            return resp

    async def call(
        self, method: str, params: Mapping[str, Any] | None = None, **headers: str
    ) -> tuple[int, Any]:
        async with self.http.post(
            self.base + "/admin/api/" + method,
            data=json.dumps(params or {}),
            headers={**JSON, **headers},
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def result(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        status, body = await self.call(method, params)
        assert status == 200, body
        assert "result" in body, body
        return body["result"]

    async def session(self) -> Any:
        async with self.http.get(self.base + "/admin/session") as resp:
            assert resp.status == 200
            return await resp.json()

    async def client(self, user: str, channel: str) -> Any:
        ws = await websockets.connect(f"ws://127.0.0.1:{self.server.port}/connection/websocket")
        await ws.send(json.dumps({"id": 1, "connect": {"token": make_connect_token(SECRET, user)}}))
        assert "connect" in json.loads(await ws.recv())
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
        assert "subscribe" in json.loads((await ws.recv()).splitlines()[0])
        return ws


@asynccontextmanager
async def served(mapping: Mapping[str, Any], prefix: str = "") -> AsyncIterator[Admin]:
    node = Node(config_from_mapping(mapping))
    server = await rtcore.serve(node, "127.0.0.1", 0)
    try:
        # A cookie jar that keeps cookies of an IP address host (127.0.0.1).
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            yield Admin(node, server, http, prefix)
    finally:
        await server.close(timeout=1)
        await node.close()


# -- configuration and placement ----------------------------------------------------------


def test_off_by_default_and_root_is_404() -> None:
    async def main() -> None:
        async with served({"api": {"key": "k"}}) as admin:
            assert admin.server.app.admin is None  # type: ignore[attr-defined]
            async with admin.http.get(admin.base + "/") as resp:
                assert resp.status == 404
            async with admin.http.post(admin.base + "/admin/auth", data="{}", headers=JSON) as resp:
                assert resp.status == 404

    run(main())


def test_configuration_errors_name_the_keys() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"admin": {"enabled": True}})
    text = str(info.value)
    assert "admin.password" in text and "admin.secret" in text
    with pytest.raises(ConfigError, match="admin.handler_prefix"):
        config_from_mapping(config(handler_prefix="ops/"))
    with pytest.raises(ConfigError, match="admin.token_ttl"):
        config_from_mapping(config(token_ttl=0))
    # Insecure needs neither; a disabled UI needs nothing.
    config_from_mapping({"admin": {"enabled": True, "insecure": True}})
    config_from_mapping({"admin": {"password": ""}})


def test_the_page_and_its_files() -> None:
    async def main() -> None:
        async with served(config()) as admin:
            async with admin.http.get(admin.base + "/") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
                assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
                assert resp.headers["X-Frame-Options"] == "DENY"
                page = await resp.text()
            assert '<script src="admin/static/admin.js" defer></script>' in page
            assert "http://" not in page and "https://" not in page  # no CDN
            for name, kind in (("admin.js", "text/javascript"), ("admin.css", "text/css")):
                async with admin.http.get(admin.base + "/admin/static/" + name) as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Type"].startswith(kind)
                    assert len(await resp.read()) > 1000
            async with admin.http.head(admin.base + "/admin/static/admin.js") as resp:
                assert resp.status == 200 and int(resp.headers["Content-Length"]) > 1000
            async with admin.http.get(admin.base + "/admin/static/nope.js") as resp:
                assert resp.status == 404
            async with admin.http.post(admin.base + "/") as resp:
                assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD"

    run(main())


def test_the_files_ship_in_the_wheel() -> None:
    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["rtcore"]
    static = root / "src" / "rtcore" / "server" / "admin" / "static"
    assert sorted(p.name for p in static.iterdir()) == sorted(STATIC_FILES)
    for name in STATIC_FILES:
        assert any(fnmatch(f"server/admin/static/{name}", p) for p in patterns), name


def test_served_on_the_internal_port_when_there_is_one() -> None:
    async def main() -> None:
        for external in (False, True):
            mapping = config(external=external)
            mapping["api"]["port"] = 1  # any non-zero port: the internal app is built below
            node = Node(config_from_mapping(mapping))
            public = await rtcore.serve(node, "127.0.0.1", 0)
            internal = Server(InternalApp(node))
            await internal.listen("127.0.0.1", 0)
            try:
                on_public = public.app.admin is not None  # type: ignore[attr-defined]
                on_internal = internal.app.admin is not None  # type: ignore[attr-defined]
                assert (on_public, on_internal) == (external, not external)
                async with aiohttp.ClientSession() as http:
                    for server, served_here in ((public, on_public), (internal, on_internal)):
                        async with http.get(f"http://127.0.0.1:{server.port}/") as resp:
                            assert resp.status == (200 if served_here else 404)
            finally:
                await internal.close(timeout=1)
                await public.close(timeout=1)
                await node.close()

    run(main())


def test_handler_prefix() -> None:
    async def main() -> None:
        async with served(config(handler_prefix="/ops"), prefix="/ops") as admin:
            root = f"http://127.0.0.1:{admin.server.port}"
            async with admin.http.get(root + "/", allow_redirects=False) as resp:
                assert resp.status == 404
            async with admin.http.get(root + "/ops", allow_redirects=False) as resp:
                assert resp.status == 308 and resp.headers["Location"] == "/ops/"
            async with admin.http.get(root + "/ops/") as resp:
                assert resp.status == 200
            resp = await admin.sign_in()
            assert resp.status == 200
            assert "Path=/ops/;" in resp.headers["Set-Cookie"]
            assert (await admin.result("info"))["nodes"]

    run(main())


# -- sign-in --------------------------------------------------------------------------------


def test_sign_in_cookie_token_and_sign_out() -> None:
    async def main() -> None:
        async with served(config()) as admin:
            assert await admin.session() == {"authenticated": False, "insecure": False}
            status, body = await admin.call("info")
            assert (status, body) == (401, {"error": "sign in first"})

            resp = await admin.sign_in("wrong")
            assert resp.status == 401
            assert "Set-Cookie" not in resp.headers
            assert await admin.session() == {"authenticated": False, "insecure": False}

            async with admin.http.post(
                admin.base + "/admin/auth", data=json.dumps({"password": PASSWORD})
            ) as resp:
                assert resp.status == 415  # not application/json: no cross-site form posts
            async with admin.http.post(
                admin.base + "/admin/auth", data="not json", headers=JSON
            ) as resp:
                assert resp.status == 400
            async with admin.http.get(admin.base + "/admin/auth") as resp:
                assert resp.status == 405

            async with admin.http.post(
                admin.base + "/admin/auth", data=json.dumps({"password": PASSWORD}), headers=JSON
            ) as resp:
                assert resp.status == 200
                body = await resp.json()
                cookie = resp.headers["Set-Cookie"]
            token = body["token"]
            assert f"{COOKIE_NAME}={token};" in cookie
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/;" in cookie
            session = await admin.session()
            assert session["authenticated"] is True and session["expires"] == body["expires"]
            info = await admin.result("info")
            assert info["nodes"][0]["name"] == admin.node.id

            # Scripts send the token; a forged or altered one is refused.
            admin.http.cookie_jar.clear()
            status, _ = await admin.call("info", Authorization=f"token {token}")
            assert status == 200
            forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
            for bad in (forged, "", "1.2.3", "x" * 100):
                status, _ = await admin.call("info", Authorization=f"token {bad}")
                assert status == 401, bad
            # A POST to the API must be JSON too.
            async with admin.http.post(
                admin.base + "/admin/api/info",
                data="{}",
                headers={"Authorization": f"token {token}"},
            ) as resp:
                assert resp.status == 415

            async with admin.http.post(
                admin.base + "/admin/logout",
                data="{}",
                headers={**JSON, "Authorization": f"token {token}"},
            ) as resp:
                assert resp.status == 200
                assert "Max-Age=0" in resp.headers["Set-Cookie"]
            status, _ = await admin.call("info", Authorization=f"token {token}")
            assert status == 401

    run(main())


def test_token_expiry() -> None:
    async def main() -> None:
        async with served(config(token_ttl="10m")) as admin:
            clock = Clock()
            admin.endpoints.auth.clock = clock
            assert (await admin.sign_in()).status == 200
            session = await admin.session()
            assert session["expires"] == int(clock.now + 600)
            clock.now += 599
            assert (await admin.call("info"))[0] == 200
            clock.now += 1
            assert (await admin.call("info"))[0] == 401
            assert (await admin.session())["authenticated"] is False

    run(main())


def test_sign_in_attempts_are_limited_per_address() -> None:
    async def main() -> None:
        async with served(config()) as admin:
            clock = Clock()
            admin.endpoints.limiter = SignInLimiter(burst=3, interval=10.0, clock=clock)
            for _ in range(3):
                assert (await admin.sign_in("guess")).status == 401
            resp = await admin.sign_in("guess")
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "10"
            # Even the right password waits.
            assert (await admin.sign_in()).status == 429
            clock.now += 9.5
            assert (await admin.sign_in()).status == 429
            clock.now += 10.0
            assert (await admin.sign_in()).status == 200

    run(main())


def test_tokens_are_bound_to_secret_and_password() -> None:
    clock = Clock()
    auth = AdminAuth("pw", "secret", ttl=60, clock=clock)
    token, expires = auth.issue()
    assert auth.verify(token) == expires == int(clock.now + 60)
    assert AdminAuth("pw", "other secret", ttl=60, clock=clock).verify(token) is None
    assert AdminAuth("new pw", "secret", ttl=60, clock=clock).verify(token) is None
    assert AdminAuth("pw", "secret", ttl=60, clock=clock).verify(token) == expires
    expiry, nonce, signature = token.split(".")
    # A later expiry with the old signature does not verify.
    assert auth.verify(f"{int(expiry) + 3600}.{nonce}.{signature}") is None
    assert auth.password_matches("pw") and not auth.password_matches("pw ")
    assert not auth.password_matches("\udc80")  # an unpaired surrogate does not crash
    auth.revoke(token)
    assert auth.verify(token) is None
    with pytest.raises(ValueError):
        AdminAuth("pw", "secret", ttl=0)


def test_limiter_forgets_addresses_that_recovered() -> None:
    clock = Clock()
    limiter = SignInLimiter(burst=2, interval=1.0, clock=clock)
    limiter.MAX_ADDRESSES = 4  # type: ignore[misc]
    for n in range(4):
        assert limiter.attempt(f"10.0.0.{n}") == 0.0
    clock.now += 5  # every bucket is full again
    assert limiter.attempt("10.0.1.1") == 0.0
    assert len(limiter._buckets) == 1
    assert limiter.attempt("10.0.1.1") == 0.0
    assert limiter.attempt("10.0.1.1") == pytest.approx(1.0)


def test_insecure_needs_no_sign_in(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with served({"admin": {"enabled": True, "insecure": True}}) as admin:
            assert await admin.session() == {"authenticated": True, "insecure": True}
            assert (await admin.result("info"))["nodes"]

    with caplog.at_level(logging.WARNING, "rtcore.server.admin"):
        run(main())
    assert any("admin.insecure" in r.getMessage() for r in caplog.records)


# -- the server API through the admin -------------------------------------------------


def test_every_admin_method(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with served(config()) as admin:
            assert (await admin.sign_in()).status == 200
            alice = await admin.client("alice", "room:lobby")
            bob = await admin.client("bob", "room:lobby")

            nodes = (await admin.result("info"))["nodes"]
            assert [n["num_clients"] for n in nodes] == [2]
            assert nodes[0]["num_subs"] == 2 and nodes[0]["num_channels"] == 1
            channels = await admin.result("channels")
            assert channels == {"channels": {"room:lobby": {"num_clients": 2}}}
            assert await admin.result("channels", {"pattern": "news*"}) == {"channels": {}}

            presence = (await admin.result("presence", {"channel": "room:lobby"}))["presence"]
            assert sorted(c["user"] for c in presence.values()) == ["alice", "bob"]
            stats = await admin.result("presence_stats", {"channel": "room:lobby"})
            assert stats == {"num_clients": 2, "num_users": 2}

            published = await admin.result(
                "publish", {"channel": "room:lobby", "data": {"text": "from the admin"}}
            )
            assert published["offset"] == 1
            for ws in (alice, bob):
                push = json.loads(await ws.recv())
                assert push["push"]["pub"]["data"] == {"text": "from the admin"}
            history = await admin.result(
                "history", {"channel": "room:lobby", "limit": 10, "reverse": True}
            )
            assert [p["data"] for p in history["publications"]] == [{"text": "from the admin"}]

            result = await admin.result(
                "broadcast", {"channels": ["room:lobby", "nope:x"], "data": {"n": 2}}
            )
            assert result["responses"][0]["result"]["offset"] == 2
            assert result["responses"][1]["error"]["code"] == 102

            await admin.result("subscribe", {"user": "alice", "channel": "room:extra"})
            assert "room:extra" in (await admin.result("channels"))["channels"]
            await admin.result("unsubscribe", {"user": "alice", "channel": "room:extra"})

            await admin.result("history_remove", {"channel": "room:lobby"})
            history = await admin.result("history", {"channel": "room:lobby", "limit": 10})
            assert history["publications"] == []

            await admin.result(
                "disconnect", {"user": "bob", "disconnect": {"code": 4001, "reason": "bye"}}
            )
            await bob.wait_closed()
            assert (bob.close_code, bob.close_reason) == (4001, "bye")
            await alice.close()

            # Errors of the API come back as the API gives them.
            status, body = await admin.call("history", {"channel": "nope:x"})
            assert (status, body["error"]["code"]) == (200, 102)
            status, body = await admin.call("publish", {"channel": 5})
            assert status == 400 and "channel: expected a string" in body["error"]
            status, body = await admin.call("history", {"channel": "room:lobby", "x": 1})
            assert status == 400
            async with admin.http.post(
                admin.base + "/admin/api/publish", data="{", headers=JSON
            ) as resp:
                assert resp.status == 400
            # Methods the admin may not call, and methods that do not exist.
            for method in ("rpc", "refresh", "batch", "nope", "Publish"):
                status, body = await admin.call(method, {})
                assert status == 404, method
                assert "unknown admin method" in body["error"]

    with caplog.at_level(logging.INFO, "rtcore.server.admin"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "rtcore.server.admin"]
    assert any(
        line.startswith("admin publish from 127.0.0.1: channel='room:lobby'") for line in lines
    )
    assert any(line.startswith("admin disconnect from 127.0.0.1: user='bob'") for line in lines)
    assert not any("from the admin" in line for line in lines)  # data is never logged
    assert set(ADMIN_METHODS) == {
        "info",
        "channels",
        "presence",
        "presence_stats",
        "history",
        "history_remove",
        "publish",
        "broadcast",
        "subscribe",
        "unsubscribe",
        "disconnect",
    }
