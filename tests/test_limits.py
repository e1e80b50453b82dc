"""Memory stays bounded under abuse, and the per-client limits hold.

Each test runs ``rtcore serve`` in a subprocess and reads the server's
resident memory from ``/proc/<pid>/status``: growth is asserted in bytes,
never in time.

* pipelined HTTP requests whose responses are never read (10,000 ``GET
  /metrics`` in one write) leave at most the write buffer queued, and other
  clients are answered meanwhile;
* a ping flood on a WebSocket that never reads: pongs count against
  ``client.queue_max_size`` (close 3008), before and after ``connect``;
* a message over ``websocket.message_size_limit`` always gets close 1009 with
  its reason, even while the client is still sending (lingering close);
* per-connection command rate limits (error 111 or disconnect 3013), per-IP
  connection limits and per-IP connection rate (429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets
from servers import free_port, impl_env, wait_port
from websockets.exceptions import ConnectionClosed


# -- the server under test ---------------------------------------------------------


def base_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """Anonymous clients may subscribe, publish and read history in every channel."""
    config: dict[str, Any] = {
        "client": {"allow_anonymous_connect_without_token": True},
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
                "allow_publish_for_client": True,
                "allow_publish_for_anonymous": True,
                "allow_history_for_client": True,
                "allow_history_for_anonymous": True,
                "allow_presence_for_client": True,
                "allow_presence_for_anonymous": True,
                "presence": True,
                "history_size": 10,
                "history_ttl": "60s",
            }
        },
        "api": {"insecure": True},
        "metrics": {"enabled": True},
        "log": {"level": "warning"},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def rss(self) -> int:
        """Resident memory of the server process, in bytes."""
        return _status_kb(self.proc.pid, "VmRSS") * 1024

    def settled_rss(self, quiet: float = 1.0, limit: float = 20.0) -> int:
        """The RSS once it stopped changing for ``quiet`` seconds (or after ``limit``)."""
        deadline = time.monotonic() + limit
        last = self.rss()
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.rss()
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= quiet:
                break
        return last

    def reset_peak(self) -> int:
        """Restart the peak-RSS count (``VmHWM``) from the current RSS; returns it."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self.rss()

    def peak_rss(self) -> int:
        """The highest RSS since :meth:`reset_peak`, in bytes."""
        return _status_kb(self.proc.pid, "VmHWM") * 1024

    def alive(self) -> bool:
        return self.proc.poll() is None


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@contextmanager
def serve(config: dict[str, Any], tmp_path: Path, impl: str = "cython") -> Iterator[Served]:
    port = free_port()
    path = tmp_path / f"config-{port}.json"
    path.write_text(json.dumps(config))
    log = tmp_path / f"serve-{port}.log"
    env = {k: v for k, v in impl_env(impl).items() if not k.startswith("RTCORE_") or "__" not in k}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rtcore", "serve", "-c", str(path), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        wait_port("127.0.0.1", port, proc=proc)
        yield Served(proc, port)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, headers (lowercased names), body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def connect_frame(cid: int = 1) -> str:
    return json.dumps({"id": cid, "connect": {}})


def ws_handshake(port: int, path: str = "/connection/websocket") -> socket.socket:
    """A raw WebSocket connection after its 101 (the caller owns the socket)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (mask of zeros: the payload goes as it is)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\x00\x00\x00\x00" + payload


def read_frames_until_close(s: socket.socket, budget: int = 64 << 20) -> tuple[int, str, int]:
    """Read server frames until a close frame: (code, reason, data frames before it)."""
    buf = bytearray()
    frames_seen = 0
    read = 0
    while True:
        while True:
            if len(buf) < 2:
                break
            length = buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    break
                length = struct.unpack("!H", buf[2:4])[0]
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length = struct.unpack("!Q", buf[2:10])[0]
                offset = 10
            if len(buf) < offset + length:
                break
            opcode = buf[0] & 0x0F
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return code, payload[2:].decode(), frames_seen
            frames_seen += 1
        chunk = s.recv(1 << 20)
        if not chunk:
            raise AssertionError(f"connection closed without a close frame ({frames_seen} frames)")
        read += len(chunk)
        assert read < budget, "no close frame within the read budget"
        buf += chunk


def send_in_thread(s: socket.socket, data: bytes) -> threading.Thread:
    """``sendall`` in a thread: it blocks while the server does not read."""

    def send() -> None:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server closed the connection

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


MB = 1 << 20


# -- 1. pipelined requests whose responses are never read -------------------------------


def test_pipelined_requests_never_read_keep_memory_bounded(tmp_path: Path) -> None:
    with serve(base_config(), tmp_path) as server:
        # Warm up what a /metrics answer allocates once.
        for _ in range(3):
            assert http_get(server.port, "/metrics")[0] == 200
        one = len(http_get(server.port, "/metrics")[2])
        server.settled_rss()
        before = server.reset_peak()

        n = 10_000
        flood = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sender = send_in_thread(flood, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * n)
        server.settled_rss()
        # Another client is answered meanwhile.
        assert http_get(server.port, "/health", timeout=60)[0] == 200

        # Every request is answered, in order, once the client reads.
        received = 0
        tail = b""
        while received < n:
            chunk = flood.recv(1 << 20)
            assert chunk, f"closed after {received} responses"
            data = tail + chunk
            received += data.count(b"HTTP/1.1 200 OK\r\n")
            # Keep the end in case a status line is split across reads.
            tail = data[-16:]
        sender.join(10)
        flood.close()
        assert server.alive()
        # Unbounded, the server would have queued n responses (tens of MB).
        assert n * one > 40 * MB
        assert server.peak_rss() - before < 6 * MB, (before, server.peak_rss())


def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    """Pipelining keeps working across the pause: each request gets its own answer."""
    with serve(base_config(), tmp_path) as server:
        paths = ["/health", "/nope", "/metrics"] * 200
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths))
            data = b""
            statuses: list[int] = []
            while len(statuses) < len(paths):
                chunk = s.recv(1 << 20)
                assert chunk
                data += chunk
                while True:
                    head_end = data.find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    head = data[:head_end].decode("latin-1")
                    length = 0
                    for line in head.split("\r\n")[1:]:
                        name, _, value = line.partition(":")
                        if name.lower() == "content-length":
                            length = int(value)
                    if len(data) < head_end + 4 + length:
                        break
                    statuses.append(int(head.split()[1]))
                    data = data[head_end + 4 + length :]
        assert statuses == [200, 404, 200] * 200


# -- 2. a ping flood on a WebSocket that never reads ------------------------------------


@pytest.mark.parametrize("after_connect", [False, True], ids=["before-connect", "after-connect"])
def test_ping_flood_never_read_is_closed_3008(
    tmp_path: Path, after_connect: bool, server_impl: str
) -> None:
    with serve(base_config(), tmp_path, server_impl) as server:
        warm = ws_handshake(server.port)
        warm.sendall(client_frame(0x9, b"x" * 125) * 100)
        warm.close()
        server.settled_rss()
        before = server.reset_peak()

        s = ws_handshake(server.port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        if after_connect:
            s.sendall(client_frame(0x1, connect_frame().encode()))
        ping = client_frame(0x9, b"p" * 125)
        flood = ping * (24 * MB // len(ping))
        sender = send_in_thread(s, flood)
        server.settled_rss()
        assert http_get(server.port, "/health", timeout=60)[0] == 200

        # What the server queued ends with close 3008 "slow".
        code, reason, _ = read_frames_until_close(s)
        assert (code, reason) == (3008, "slow")
        sender.join(10)
        s.close()
        assert server.alive()
        # Unbounded, 24 MB of pongs would have been queued (the pure-Python
        # frame parser's transient objects take a few MB more than the compiled one's).
        assert server.peak_rss() - before < 10 * MB, (before, server.peak_rss())
        # A good client still works.
        run(_echo_publish(server.ws_url))


def test_ping_flood_on_uni_websocket_is_closed_3008(tmp_path: Path) -> None:
    config = base_config(uni_websocket={"enabled": True})
    with serve(config, tmp_path) as server:
        s = ws_handshake(server.port, "/connection/uni_websocket")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(client_frame(0x1, b"{}"))  # the connect request
        ping = client_frame(0x9, b"p" * 125)
        sender = send_in_thread(s, ping * (24 * MB // len(ping)))
        server.settled_rss()  # the client reads only once the server stalled
        code, reason, frames = read_frames_until_close(s)
        assert (code, reason) == (3008, "slow")
        assert frames > 1000
        sender.join(10)
        s.close()
        assert server.alive()


async def _echo_publish(url: str) -> None:
    async with websockets.connect(url) as ws:
        await ws.send(connect_frame())
        assert "connect" in json.loads(await ws.recv())
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "ok"}}))
        assert "subscribe" in json.loads(await ws.recv())
        await ws.send(json.dumps({"id": 3, "publish": {"channel": "ok", "data": {"n": 1}}}))
        got = [json.loads(line) for line in (await ws.recv()).splitlines()]
        while not any("push" in m for m in got):
            got += [json.loads(line) for line in (await ws.recv()).splitlines()]
        assert any(m.get("push", {}).get("pub", {}).get("data") == {"n": 1} for m in got)


# -- 5. lingering close: 1009 reaches a client that is still sending ---------------------


def test_oversized_message_always_gets_1009_under_load(tmp_path: Path) -> None:
    config = base_config(websocket={"message_size_limit": 65536})

    async def oversized(url: str) -> tuple[int | None, str | None]:
        async with websockets.connect(url, max_size=None, compression=None) as ws:
            await ws.send(connect_frame())
            await ws.recv()
            try:
                await ws.send(os.urandom(65536 + 1_400_000))
                await ws.recv()
            except ConnectionClosed:
                pass
            return ws.close_code, ws.close_reason

    async def load(url: str, stop: asyncio.Event) -> int:
        n = 0
        async with websockets.connect(url) as ws:
            await ws.send(connect_frame())
            await ws.recv()
            await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "load"}}))
            await ws.recv()
            while not stop.is_set():
                n += 1
                await ws.send(json.dumps({"id": 2 + n, "publish": {"channel": "load", "data": n}}))
                await ws.recv()
        return n

    async def main(url: str) -> None:
        stop = asyncio.Event()
        loaders = [asyncio.create_task(load(url, stop)) for _ in range(4)]
        try:
            for _ in range(5):
                results = await asyncio.gather(*(oversized(url) for _ in range(6)))
                for code, reason in results:
                    assert (code, reason) == (1009, "message exceeds the 65536-byte limit"), results
        finally:
            stop.set()
        assert all(n > 0 for n in await asyncio.gather(*loaders))

    with serve(config, tmp_path) as server:
        run(main(server.ws_url))
        assert server.alive()


def test_http_error_reaches_a_client_still_sending(tmp_path: Path) -> None:
    """413 for an announced oversized body arrives although the body keeps coming."""
    with serve(base_config(http={"max_body_size": 1024}), tmp_path) as server:
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                body = b"x" * 2_000_000
                head = (
                    f"POST /api/info HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                sender = send_in_thread(s, head + body)
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                sender.join(10)
            assert data.startswith(b"HTTP/1.1 413 "), data[:100]


def test_oversized_message_from_a_client_that_reads_late(tmp_path: Path) -> None:
    """1009 reaches a client that reads only after sending, with pushes queued before it.

    The client's small receive window keeps the pushes and the close frame in
    the server's socket buffer: closing with unread input would reset the
    connection and discard them.
    """
    config = base_config(websocket={"message_size_limit": 65536})
    with serve(config, tmp_path) as server:
        for i in range(5):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(10)
            s.connect(("127.0.0.1", server.port))
            s.sendall(
                b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            s.sendall(client_frame(0x1, connect_frame().encode()))
            sub = json.dumps({"id": 2, "subscribe": {"channel": f"late{i}"}})
            s.sendall(client_frame(0x1, sub.encode()))
            while b"subscribe" not in s.recv(4096):
                pass
            body = json.dumps({"channel": f"late{i}", "data": {"pad": "x" * 1000}}).encode()
            for _ in range(40):
                _api_post(server.port, "/api/publish", body)
            try:
                s.sendall(client_frame(0x2, b"\x00" * (65536 + 1_400_000)))
            except OSError as exc:
                raise AssertionError(f"the server reset the connection: {exc!r}") from None
            try:
                code, reason, pushes = read_frames_until_close(s)
            except ConnectionResetError as exc:
                raise AssertionError("reset before the close frame") from exc
            assert (code, reason) == (1009, "message exceeds the 65536-byte limit")
            assert pushes >= 40
            s.close()


def _api_post(port: int, path: str, body: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


# -- per-client limits -------------------------------------------------------------------


async def _in_process(config: dict[str, Any]) -> tuple[Any, Any]:
    from rtcore.config import config_from_mapping
    from rtcore.engine.node import Node
    from rtcore.server.app import serve_node

    node = Node(config_from_mapping(config))
    server = await serve_node(node, "127.0.0.1", 0)
    return node, server


async def _stop(node: Any, server: Any) -> None:
    await server.close(timeout=0)
    await node.close()


async def _connected(url: str) -> Any:
    ws = await websockets.connect(url)
    await ws.send(connect_frame())
    assert "connect" in json.loads(await ws.recv())
    return ws


async def _replies(ws: Any, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        out += [json.loads(line) for line in (await ws.recv()).splitlines()]
    return out


def test_command_rate_limit_error_111_per_kind() -> None:
    config = base_config(client={"command_rate_limit": {"publish": 5, "publish_burst": 3}})

    async def main() -> None:
        node, server = await _in_process(config)
        try:
            url = f"ws://127.0.0.1:{server.port}/connection/websocket"
            ws = await _connected(url)
            frame = "\n".join(
                json.dumps({"id": 10 + i, "publish": {"channel": "c", "data": i}})
                for i in range(10)
            )
            await ws.send(frame)
            replies = sorted(await _replies(ws, 10), key=lambda r: r["id"])
            assert all("publish" in r for r in replies[:3]), replies
            refused = [r for r in replies if "error" in r]
            assert len(refused) >= 6
            assert all(r["error"]["code"] == 111 for r in refused)
            assert all(r["error"]["message"] == "too many requests" for r in refused)
            assert all(r["error"].get("temporary") for r in refused)
            # Another kind has its own bucket; the connection keeps working.
            await ws.send(json.dumps({"id": 30, "history": {"channel": "c", "limit": 10}}))
            (reply,) = await _replies(ws, 1)
            assert reply["id"] == 30 and "history" in reply, reply
            await ws.close()
        finally:
            await _stop(node, server)

    run(main())


def test_command_rate_limit_disconnect_3013() -> None:
    config = base_config(
        client={"command_rate_limit": {"history": 1, "history_burst": 2, "action": "disconnect"}}
    )

    async def main() -> None:
        node, server = await _in_process(config)
        try:
            url = f"ws://127.0.0.1:{server.port}/connection/websocket"
            ws = await _connected(url)
            frame = "\n".join(
                json.dumps({"id": 10 + i, "history": {"channel": "c", "limit": 1}})
                for i in range(5)
            )
            await ws.send(frame)
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
            assert (ws.close_code, ws.close_reason) == (3013, "too many requests")
            # A new connection has full buckets.
            ws = await _connected(url)
            await ws.send(json.dumps({"id": 2, "history": {"channel": "c", "limit": 1}}))
            assert "history" in (await _replies(ws, 1))[0]
            await ws.close()
        finally:
            await _stop(node, server)

    run(main())


def test_command_rate_limit_drops_send_and_leaves_unlimited_kinds_alone() -> None:
    config = base_config(client={"command_rate_limit": {"send": 1, "send_burst": 1}})

    async def main() -> None:
        node, server = await _in_process(config)
        received: list[bytes] = []

        async def on_message(event: Any) -> None:
            received.append(event.data)

        node.hook(on_message)
        try:
            url = f"ws://127.0.0.1:{server.port}/connection/websocket"
            ws = await _connected(url)
            sends = "\n".join(json.dumps({"send": {"data": {"n": i}}}) for i in range(5))
            publishes = "\n".join(
                json.dumps({"id": 10 + i, "publish": {"channel": "c", "data": i}})
                for i in range(150)
            )
            await ws.send(sends + "\n" + publishes)
            replies = await _replies(ws, 150)
            # publish has no limit by default; the sends over the limit got no reply.
            assert all("publish" in r for r in replies), [r for r in replies if "error" in r]
            assert len(received) == 1
            await ws.close()
        finally:
            await _stop(node, server)

    run(main())


async def _status_of_upgrade(port: int, path: str = "/connection/websocket") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    writer.close()
    retry = ""
    for line in head.split("\r\n"):
        if line.lower().startswith("retry-after:"):
            retry = line.split(":", 1)[1].strip()
    return int(head.split()[1]), retry


def test_per_ip_connection_limit_429_and_release() -> None:
    config = base_config(client={"per_ip_connection_limit": 2})

    async def main() -> None:
        node, server = await _in_process(config)
        try:
            url = f"ws://127.0.0.1:{server.port}/connection/websocket"
            first, second = await _connected(url), await _connected(url)
            status, retry = await _status_of_upgrade(server.port)
            assert status == 429 and int(retry) >= 1
            # HTTP-streaming connections count too; plain requests do not.
            stream_status = await _post_status(server.port, "/connection/http_stream")
            assert stream_status == 429
            assert await _get_status(server.port, "/health") == 200
            await first.close()
            # Released when the TCP connection ends.
            for _ in range(100):
                if (await _status_of_upgrade(server.port))[0] == 101:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the slot was not released")
            await second.close()
        finally:
            await _stop(node, server)

    run(main())


def test_per_ip_connect_rate_429_with_retry_after() -> None:
    config = base_config(client={"per_ip_connect_rate_limit": 0.5, "per_ip_connect_burst": 3})

    async def main() -> None:
        node, server = await _in_process(config)
        try:
            statuses = [(await _status_of_upgrade(server.port)) for _ in range(5)]
            assert [s for s, _ in statuses[:3]] == [101, 101, 101]
            refused = [(s, r) for s, r in statuses if s != 101]
            assert refused and all(s == 429 and int(r) >= 1 for s, r in refused)
            assert await _get_status(server.port, "/health") == 200
        finally:
            await _stop(node, server)

    run(main())


async def _get_status(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    writer.close()
    return int(head.split()[1])


async def _post_status(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = connect_frame().encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    writer.close()
    return int(head.split()[1])
