"""examples/chat_embedded.py in a subprocess, used by centrifuge-python clients and plain HTTP."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import centrifuge
import pytest

from .helpers import run, until


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chat_embedded.py"
SECRET = "example-test-secret"


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("chat_embedded", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chat_server() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", str(port), "--secret", SECRET],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # log lines may come first
            seen.append(line)
            if "chat listening on" in line:
                break
        else:
            raise AssertionError(f"example did not start: {''.join(seen)}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        if proc.stdout is not None:
            rest = proc.stdout.read()
            proc.stdout.close()
            # A clean shutdown on SIGTERM, with nothing logged as an error.
            assert code == 0, rest
            assert "Traceback" not in rest and "ERROR" not in rest, rest


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def test_page_and_script(chat_server: str) -> None:
    status, ctype, body = _get(f"http://{chat_server}/")
    assert status == 200 and ctype.startswith("text/html")
    assert b'<script src="/centrifuge.js">' in body and b"/connection/websocket" in body
    status, ctype, body = _get(f"http://{chat_server}/centrifuge.js")
    example = _load_example()
    if example.find_centrifuge_js() is not None:
        assert status == 200 and ctype.startswith("text/javascript") and b"Centrifuge" in body
    else:
        assert status == 404 and b"npm install" in body
    assert _get(f"http://{chat_server}/nothing-here")[0] == 404


class _Sub(centrifuge.SubscriptionEventHandler):
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def on_publication(self, ctx: Any) -> None:
        data = ctx.pub.data
        self.messages.append(json.loads(data) if isinstance(data, bytes) else data)


class _Conn(centrifuge.ClientEventHandler):
    def __init__(self) -> None:
        self.codes: list[int] = []

    async def on_disconnected(self, ctx: Any) -> None:
        self.codes.append(ctx.code)


def test_guests_and_token_users_chat(chat_server: str) -> None:
    example = _load_example()
    url = f"ws://{chat_server}/connection/websocket"

    async def main() -> None:
        ann = centrifuge.Client(url, data={"name": "Ann"})
        bob_data = json.dumps({"token": example.make_token(SECRET, "bob")}).encode()
        bob = centrifuge.Client(url, data=bob_data, use_protobuf=True)
        await ann.connect()
        await bob.connect()
        ann_room, bob_room = _Sub(), _Sub()
        ann_sub = ann.new_subscription("chat:lobby", ann_room)
        bob_sub = bob.new_subscription("chat:lobby", bob_room)
        for sub in (ann_sub, bob_sub):
            await sub.subscribe()
            await sub.ready(timeout=5)
        await ann_sub.publish({"text": "  hi there "})
        await until(lambda: ann_room.messages and bob_room.messages, 5)
        for msg in (ann_room.messages[0], bob_room.messages[0]):
            assert msg["text"] == "hi there" and msg["from"] == "Ann"
            assert abs(msg["ts"] - time.time() * 1000) < 60_000
        await bob_sub.publish(json.dumps({"text": "hello Ann"}).encode())
        await until(lambda: len(ann_room.messages) == 2, 5)
        assert ann_room.messages[1]["from"] == "bob"
        online = await ann.rpc("online", {"room": "chat:lobby"})
        assert online.data == {"room": "chat:lobby", "online": ["Ann", "bob"]}
        with pytest.raises(centrifuge.ReplyError) as err:
            await ann_sub.publish({"text": ""})
        assert err.value.code == 4000
        with pytest.raises(centrifuge.ReplyError) as err:
            await ann.rpc("nope", {})
        assert err.value.code == 104
        await ann.disconnect()
        await bob.disconnect()

    run(main())


@pytest.mark.parametrize(
    ("data", "code"), [({"token": "bob:forged"}, 3500), ({}, 3501)], ids=["forged", "nameless"]
)
def test_refused_connections(chat_server: str, data: dict, code: int) -> None:
    async def main() -> None:
        events = _Conn()
        client = centrifuge.Client(
            f"ws://{chat_server}/connection/websocket", data=data, events=events
        )
        await client.connect()
        await until(lambda: events.codes, 5)
        assert events.codes[0] == code
        await asyncio.sleep(0)

    run(main())
