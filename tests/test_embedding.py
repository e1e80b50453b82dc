"""rtcore inside a protocol of your own (docs/embedding.md): both examples, run and spoken to.

* examples/sansio_echo.py: a plain ``asyncio.Protocol`` on the sans-I/O wire
  layer (HTTP parser, handshake, permessage-deflate, WebSocket connection),
  in a subprocess, with the ``websockets`` client and raw sockets.
* examples/line_protocol.py: the engine over a line protocol through the
  session's ``Transport`` seam (rtcore.ClientSession), over TCP and a Unix
  socket, with raw sockets: connect, subscribe, a publication, recovery of
  what a client missed, disconnect advice.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from protocol.helpers import SECRET, connect_token, make_node, run, until
from servers import free_port, run_server, wait_port
from websockets.exceptions import ConnectionClosed

import rtcore


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IMPLS = ["cython", "python"]


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the sans-I/O echo server ---------------------------------------------------------


def _http(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("impl", IMPLS)
def test_sansio_echo_server(impl: str) -> None:
    port = free_port()
    args = [str(EXAMPLES / "sansio_echo.py"), "--port", str(port), "--max-size", "100000"]
    with run_server(args, port, impl=impl) as proc:

        async def main() -> None:
            # permessage-deflate is offered by the client and negotiated by the handshake.
            async with websockets.connect(f"ws://127.0.0.1:{port}/any") as ws:
                assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
                await ws.send("héllo")
                assert await ws.recv() == "héllo"
                await ws.send(b"\x00\x01" * 5000)
                assert await ws.recv() == b"\x00\x01" * 5000
                pong = await ws.ping(b"are you there")
                await asyncio.wait_for(pong, 5)
                # Fragmented messages come back whole.
                await ws.send(iter(["frag", "ments"]))
                assert await ws.recv() == "fragments"
            assert ws.close_code == 1000
            async with websockets.connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
                await ws.send("x" * 100001)
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
            assert ws.close_code == 1009
            # Shutdown: the server closes with 1001 and the client answers.
            async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
                proc.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
            assert (ws.close_code, ws.close_reason) == (1001, "server shutdown")

        # Plain HTTP and a handshake the server refuses.
        answer = _http(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b"\r\n\r\nsans-I/O echo server: open a WebSocket on any path\n")
        old = (
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = _http(port, old)
        assert answer.startswith(b"HTTP/1.1 426 ")
        assert b"Sec-WebSocket-Version: 13\r\n" in answer
        run(main())
        assert proc.wait(10) == 0


# -- the engine over a line protocol -----------------------------------------------------

CONFIG: dict[str, Any] = {
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


class LineClient:
    """A raw socket speaking Centrifuge JSON, one command per line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._id = 0
        self.pushes: list[dict[str, Any]] = []

    async def read(self) -> dict[str, Any] | None:
        line = await asyncio.wait_for(self.reader.readline(), 5)
        if not line:
            return None
        assert line.endswith(b"\n") and line.count(b"\n") == 1, line
        return json.loads(line)

    def send_line(self, line: bytes) -> None:
        self.writer.write(line + b"\n")

    async def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        self._id += 1
        self.send_line(json.dumps({"id": self._id, method: body}).encode())
        while True:
            message = await self.read()
            assert message is not None, "connection ended before the reply"
            if message.get("id") == self._id:
                return message
            self.pushes.append(message)

    async def push(self) -> dict[str, Any]:
        if self.pushes:
            return self.pushes.pop(0)
        message = await self.read()
        assert message is not None and "push" in message, message
        return message["push"]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@asynccontextmanager
async def line_server(
    tmp_path: Path, unix: bool, config: dict[str, Any] | None = None
) -> AsyncIterator[tuple[rtcore.Node, Any]]:
    example = _load("line_protocol")
    node = make_node(config if config is not None else CONFIG)
    await node.start()
    if unix:
        path = str(tmp_path / "rt.sock")
        server = await example.serve_lines(node, unix=path)

        async def connect() -> LineClient:
            return LineClient(*await asyncio.open_unix_connection(path))

    else:
        server = await example.serve_lines(node, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def connect() -> LineClient:
            return LineClient(*await asyncio.open_connection("127.0.0.1", port))

    try:
        yield node, connect
    finally:
        server.close()
        await node.close()
        await server.wait_closed()


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_line_protocol_subscribe_publish_recover(unix: bool, tmp_path: Path) -> None:
    async def main() -> None:
        async with line_server(tmp_path, unix) as (node, connect):
            seen: list[str] = []
            node.on_connect = lambda session: seen.append(session.transport.name)
            c = await connect()
            reply = await c.call("connect", {"token": connect_token("ann")})
            assert reply["connect"]["client"] and reply["connect"]["ping"] == 25
            assert seen == ["line"]
            reply = await c.call("subscribe", {"channel": "chat:room"})
            sub = reply["subscribe"]
            assert sub["recoverable"] is True
            epoch = sub["epoch"]
            await node.publish("chat:room", b'{"n":1}')
            push = await c.push()
            assert push["channel"] == "chat:room"
            assert (push["pub"]["data"], push["pub"]["offset"]) == ({"n": 1}, 1)
            # Two commands in one write: a line back for each, and the publication's push.
            c.send_line(b'{"id":10,"publish":{"channel":"chat:room","data":{"n":2}}}')
            c.send_line(b'{"id":11,"history":{"channel":"chat:room","limit":-1}}')
            lines = [await c.read() for _ in range(3)]
            replies = [m for m in lines if m is not None and "id" in m]
            assert replies[0] == {"id": 10, "publish": {}}
            assert [p["offset"] for p in replies[1]["history"]["publications"]] == [1, 2]
            pub = next(m for m in lines if m is not None and "push" in m)["push"]["pub"]
            assert pub["offset"] == 2 and pub["info"]["user"] == "ann"
            await c.close()
            await until(lambda: node.hub.user_connection_count("ann") == 0, 5, "the session end")
            # Missed while away, recovered on the next subscribe.
            for n in (3, 4, 5):
                await node.publish("chat:room", b'{"n":%d}' % n)
            c = await connect()
            await c.call("connect", {"token": connect_token("ann")})
            reply = await c.call(
                "subscribe",
                {"channel": "chat:room", "recover": True, "epoch": epoch, "offset": 2},
            )
            sub = reply["subscribe"]
            assert sub["recovered"] is True and sub["was_recovering"] is True
            assert [p["data"]["n"] for p in sub["publications"]] == [3, 4, 5]
            assert [p["offset"] for p in sub["publications"]] == [3, 4, 5]
            # The server ends the session: the advice is the last line, then EOF.
            await node.disconnect("ann", code=3503, reason="force disconnect")
            assert await c.push() == {"disconnect": {"code": 3503, "reason": "force disconnect"}}
            assert await c.read() is None

    run(main())


def test_line_protocol_bad_input(tmp_path: Path) -> None:
    async def main() -> None:
        async with line_server(tmp_path, False) as (node, connect):
            c = await connect()
            c.send_line(b"this is not json")
            assert await c.push() == {"disconnect": {"code": 3501, "reason": "bad request"}}
            assert await c.read() is None
            # A line longer than the limit never ends: 3501 too.
            c = await connect()
            c.writer.write(b"x" * 70000)
            assert await c.push() == {"disconnect": {"code": 3501, "reason": "bad request"}}
            assert await c.read() is None

    run(main())


def test_line_protocol_ping_pong(tmp_path: Path) -> None:
    async def main() -> None:
        overrides = {**CONFIG, "client": {"ping_interval": 1, "pong_timeout": 0.5}}
        async with line_server(tmp_path, False, overrides) as (node, connect):
            # The ping is the line {}; a client answers with the line {}.
            c = await connect()
            await c.call("connect", {"token": connect_token("bob")})
            assert await c.read() == {}
            c.send_line(b"{}")
            # Answered: the next ping comes (no pong would end the session first).
            assert await c.read() == {}
            await c.close()
            # Unanswered: disconnected with 3012 half a second later.
            c = await connect()
            await c.call("connect", {"token": connect_token("eve")})
            assert await c.read() == {}
            assert await c.push() == {"disconnect": {"code": 3012, "reason": "no pong"}}
            assert await c.read() is None

    run(main())


def test_line_protocol_example_runs(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "line_protocol.py"),
            "--port",
            str(port),
            "--secret",
            SECRET,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port("127.0.0.1", port, proc=proc)

        async def main() -> None:
            c = LineClient(*await asyncio.open_connection("127.0.0.1", port))
            reply = await c.call("connect", {"token": connect_token("cli")})
            assert reply["connect"]["client"]
            reply = await c.call("subscribe", {"channel": "chat:x"})
            assert reply["subscribe"]["recoverable"] is True
            proc.send_signal(signal.SIGTERM)
            assert await c.push() == {"disconnect": {"code": 3001, "reason": "shutdown"}}
            assert await c.read() is None

        run(main())
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
