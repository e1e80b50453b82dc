"""The official JavaScript SDK (centrifuge-js 5.x in Node with ``ws``) against a served node.

The scenarios live in ``js/scenario.mjs`` (the same list as
``test_sdk_python.py``), once over JSON and once over Protobuf (the SDK's
``centrifuge/build/protobuf`` build). The script prints one JSON event per
line; scenarios that need the server to act in between wait for a line on
stdin.

Setup: ``npm ci`` in ``tests/protocol/js`` (done here when ``node_modules``
is missing). Without Node.js 20+, npm or the packages these tests are
skipped locally and FAIL under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from rtcore.engine.events import ConnectEvent, RPCEvent

from .helpers import ServedNode, connect_token, run, serve, until


JS_DIR = Path(__file__).parent / "js"
SCRIPT = JS_DIR / "scenario.mjs"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}

CONFIG = {
    "client": {"ping_interval": 25, "pong_timeout": 8},
    "channel": {
        "namespaces": [
            {
                "name": "chat",
                "history_size": 100,
                "history_ttl": 300,
                "force_recovery": True,
                "presence": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_presence_for_subscriber": True,
                "allow_history_for_subscriber": True,
            }
        ]
    },
}

PROTOCOLS = ["json", "protobuf"]


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"centrifuge-js tests cannot run under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def js_env() -> str:
    """Path of ``node`` once Node.js 20+ and the npm packages are in place."""
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not installed")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        major = 0
    if major < 20:
        _unavailable(f"Node.js 20+ is required, found {version or 'nothing'}")
    # pytest-xdist workers may get here together: one installs, the others wait.
    key = hashlib.sha256(str(JS_DIR).encode()).hexdigest()[:12]
    lock_path = Path(tempfile.gettempdir()) / f"rtcore-npm-{key}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (JS_DIR / "node_modules" / "centrifuge" / "package.json").exists():
            npm = shutil.which("npm")
            if npm is None:
                _unavailable("npm is not installed and tests/protocol/js/node_modules is missing")
            proc = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=JS_DIR,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if proc.returncode != 0:
                _unavailable(f"npm ci failed in {JS_DIR}: {proc.stderr[-2000:]}")
    for package in ("centrifuge", "ws"):
        if not (JS_DIR / "node_modules" / package / "package.json").exists():
            _unavailable(f"npm package {package} is missing in {JS_DIR}/node_modules")
    return node


class Scenario:
    """One running ``scenario.mjs`` process: its events and its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, node: str, name: str, params: dict[str, Any]) -> Scenario:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(SCRIPT),
            name,
            json.dumps(params),
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def next(self, event: str, timeout: float = 15.0) -> dict[str, Any]:
        """Read events until one named ``event`` (fails on an ``error`` event or exit)."""
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                stderr = (
                    (await self.proc.stderr.read()).decode(errors="replace")
                    if self.proc.stderr
                    else ""
                )
                raise AssertionError(
                    f"scenario exited before {event!r}; events={self.events}; "
                    f"stderr={stderr[-3000:]}"
                )
            item = json.loads(line)
            self.events.append(item)
            if item["event"] == "error":
                raise AssertionError(f"scenario failed: {item['message']}")
            if item["event"] == event:
                return item

    def count(self, event: str) -> int:
        return sum(1 for e in self.events if e["event"] == event)

    def go_on(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def finish(self) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), 10)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()


def _params(s: ServedNode, protocol: str, **extra: Any) -> dict[str, Any]:
    return {"url": s.url, "protocol": protocol, **extra}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connect_subscribe_publish_receive(js_env: str, protocol: str) -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            codecs: list[str] = []
            s.node.on_connect = lambda session: codecs.append(session.codec.name)
            sc = await Scenario.start(
                js_env, "basic", _params(s, protocol, token=connect_token("42"), channel="chat:js")
            )
            result = await sc.next("result")
            assert codecs == [protocol]
            assert result["pubs"] == [{"data": {"text": "hello"}, "offset": 1, "user": "42"}]
            assert result["subscribed"][0]["recoverable"] is True
            assert await sc.finish() == 0

    run(main(), timeout=60)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_presence_stats_history(js_env: str, protocol: str) -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            sc = await Scenario.start(
                js_env,
                "channel_ops",
                _params(s, protocol, token=connect_token("42"), channel="chat:ops"),
            )
            result = await sc.next("result")
            assert result["presenceUsers"] == ["42"]
            assert result["stats"] == {"numClients": 1, "numUsers": 1}
            assert result["history"] == [1, 2, 3, 4, 5]
            assert result["offset"] == 5 and len(result["epoch"]) == 8
            assert result["newest"] == [5, 4]
            assert result["since"] == [4, 5]
            assert await sc.finish() == 0

    run(main(), timeout=60)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_recovery_after_forced_disconnect(js_env: str, protocol: str) -> None:
    async def main() -> None:
        gate = asyncio.Event()
        gate.set()
        async with serve(CONFIG) as s:

            async def on_connecting(event: ConnectEvent) -> None:
                await gate.wait()  # holds the reconnect while the test publishes
                return None

            s.node.on_connecting = on_connecting
            params = _params(s, protocol, token=connect_token("42"), channel="chat:feed", expect=7)
            sc = await Scenario.start(js_env, "recovery", params)
            await sc.next("ready")
            for n in (1, 2):
                await s.node.publish("chat:feed", b'{"n":%d}' % n)
            await sc.next("pub")
            if sc.count("pub") < 2:
                await sc.next("pub")
            gate.clear()
            await s.node.disconnect("42", code=3011, reason="force reconnect")
            await until(lambda: s.node.hub.user_connection_count("42") == 0, 5)
            for n in (3, 4, 5, 6):
                await s.node.publish("chat:feed", b'{"n":%d}' % n)
            gate.set()
            sc.go_on()
            resubscribed = await sc.next("subscribed")
            assert resubscribed["wasRecovering"] is True and resubscribed["recovered"] is True
            await s.node.publish("chat:feed", b'{"n":7}')
            sc.go_on()
            result = await sc.next("result")
            assert [p["data"]["n"] for p in result["pubs"]] == [1, 2, 3, 4, 5, 6, 7]
            assert [p["offset"] for p in result["pubs"]] == [1, 2, 3, 4, 5, 6, 7]
            assert result["connects"] >= 2
            assert await sc.finish() == 0

    run(main(), timeout=60)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_token_refresh_before_expiry(js_env: str, protocol: str) -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            refreshed: list[Any] = []
            s.node.on_refresh = refreshed.append
            params = _params(
                s,
                protocol,
                token=connect_token("42", ttl=2),
                refreshToken=connect_token("42", ttl=3600),
            )
            sc = await Scenario.start(js_env, "refresh", params)
            await sc.next("refreshing")
            await until(lambda: refreshed, 5, "refresh command")
            session = refreshed[0]
            assert session.expire_at > node_wall(s) + 3000
            sc.go_on()
            result = await sc.next("result")
            assert result["getTokenCalls"] >= 1
            assert result["connects"] == 1 and result["disconnects"] == []
            assert await sc.finish() == 0

    run(main(), timeout=60)


def node_wall(s: ServedNode) -> float:
    return s.node.wall_clock()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rpc_through_hook(js_env: str, protocol: str) -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:

            def on_rpc(event: RPCEvent) -> bytes:
                return json.dumps(
                    {"method": event.method, "sum": sum(json.loads(event.data))}
                ).encode()

            s.node.on_rpc = on_rpc
            sc = await Scenario.start(
                js_env, "rpc", _params(s, protocol, token=connect_token("42"))
            )
            result = await sc.next("result")
            assert result["data"] == {"method": "sum", "sum": 6}
            assert await sc.finish() == 0

    run(main(), timeout=60)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_token_is_rejected_3500(js_env: str, protocol: str) -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            sc = await Scenario.start(
                js_env, "bad_token", _params(s, protocol, token="not.a.token")
            )
            result = await sc.next("result")
            assert result["disconnects"][0]["code"] == 3500
            assert len(result["disconnects"]) == 1 and result["connects"] == 0
            assert result["state"] == "disconnected"
            assert await sc.finish() == 0

    run(main(), timeout=60)
