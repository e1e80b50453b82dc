"""Soak: a bounded run of mixed load against one ``rtcore serve`` on a Redis of its own.

    python bench/soak.py                      # 30 minutes, summary on stdout
    python bench/soak.py --duration 60 --json /tmp/soak.json

What runs at once, for ``--duration`` seconds:

* recovering subscribers (``--subscribers``) on ``--channels`` channels with
  history, each reconnecting every 10-40 s with ``recover`` from the last offset
  it saw, resubscribing on an ``unsubscribe`` push (2500, insufficient state);
* a publisher on the server API (``--publish-rate`` per second, round robin);
* connect/disconnect churn (``--churn-rate`` short-lived connections per second,
  each subscribing and reading history once);
* history readers (``--history-rate`` history commands per second);
* slow clients: every ``--slow-every`` seconds a connection subscribes to a
  firehose channel (``--firehose-rate`` publications of ``--firehose-size``
  bytes per second) and never reads; each must be dropped (3008, or 3012 when its pong timeout comes first);
* Redis restarts (``--redis-restarts``, spread over the run): ``SHUTDOWN SAVE``
  and a new redis-server on the same port and data directory.

The server's resident memory is sampled every ``--sample-every`` seconds
(/proc) and fitted with a line (MB/hour). Open files, asyncio tasks, live
objects by type (after a full collection) and sessions are taken from
``/debug/stats`` (``http.debug_endpoint``) while the server is idle before the
load and again after it. At the end the
publisher stops, one marker per channel is published, and every recovering
subscriber must hold every accepted publication after its first subscribe:
nothing lost, nothing twice. The run starts its own redis-server on a free
port (never the shared one) and kills everything it started on exit.

Exit status 1 when a publication was lost or duplicated, a slow client was not
dropped, or the server died.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from websockets.exceptions import WebSocketException


# What a client of the soak expects while the server or Redis restarts or drops it.
CLIENT_ERRORS = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncio.IncompleteReadError,
    WebSocketException,
)


NAMESPACE = "soak"
FIREHOSE = "firehose"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


# -- the processes -------------------------------------------------------------------


class RedisProcess:
    """A redis-server of the run's own on a free port; restarts keep its data (RDB)."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.downtime = 0.0

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--dbfilename", "soak.rdb",
                "--protected-mode", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await wait_port(self.port, self.proc)

    async def restart(self) -> None:
        """SHUTDOWN SAVE, then a new server that loads what was saved."""
        began = time.monotonic()
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(b"*2\r\n$8\r\nSHUTDOWN\r\n$4\r\nSAVE\r\n")
            await writer.drain()
            await reader.read()
            writer.close()
        assert self.proc is not None
        for _ in range(200):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            self.proc.kill()
            self.proc.wait()
        await self.start()
        self.restarts += 1
        self.downtime += time.monotonic() - began

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def server_config(redis_port: int) -> dict[str, Any]:
    history = {
        "history_size": 10000,
        "history_ttl": "1h",
        "force_recovery": True,
        "force_positioning": True,
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
        "allow_history_for_client": True,
        "allow_history_for_anonymous": True,
    }
    return {
        "engine": {"type": "redis", "redis_address": [f"redis://127.0.0.1:{redis_port}/0"]},
        "client": {"allow_anonymous_connect_without_token": True},
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
            },
            "namespaces": [{"name": NAMESPACE, **history}],
        },
        "api": {"insecure": True},
        "http": {"debug_endpoint": True},
        "log": {"level": "warning"},
    }


class ServerProcess:
    def __init__(self, config: dict[str, Any], directory: Path, impl: str) -> None:
        self.port = free_port()
        self.config_path = directory / "soak-server.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = directory / "soak-server.log"
        self.impl = impl
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTCORE_")}
        if self.impl == "python":
            env["RTCORE_NO_EXTENSIONS"] = "1"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rtcore", "serve", "-c", str(self.config_path),
                 "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        await wait_port(self.port, self.proc)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def open_files(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def sockets_to(self, port: int) -> int:
        """The server's TCP sockets whose peer is 127.0.0.1:``port`` (its Redis connections)."""
        assert self.proc is not None
        inodes = set()
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        count = 0
        for line in Path(f"/proc/{self.proc.pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].split(":")[1], 16)
            if remote_port == port and fields[9] in inodes:
                count += 1
        return count

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- HTTP ------------------------------------------------------------------------------


class HttpClient:
    """One keep-alive HTTP/1.1 connection, reopened after any error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", timeout: float = 10.0
    ) -> tuple[int, bytes]:
        try:
            return await asyncio.wait_for(self._request(method, path, body), timeout)
        except BaseException:
            self.close()
            raise

    async def _request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self._conn
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: soak\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/json\r\n\r\n".encode()
            + body
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                self._conn = None
        data = await reader.readexactly(length)
        return int(head.split()[1]), data

    def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


# -- the protocol client ---------------------------------------------------------------


class ProtoClient:
    """A JSON-protocol connection: commands with replies, pushes to a callback, pongs."""

    def __init__(self, ws: Any, on_push: Any) -> None:
        self.ws = ws
        self.on_push = on_push
        self._next_id = 1
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())
        self.close_code: int | None = None

    @classmethod
    async def open(cls, url: str, on_push: Any = None) -> ProtoClient:
        ws = await websockets.connect(url, max_size=None, compression=None, open_timeout=10)
        client = cls(ws, on_push)
        try:
            await client.call("connect", {})
        except BaseException:
            await client.close()
            raise
        return client

    async def call(self, method: str, params: dict[str, Any], timeout: float = 15.0) -> Any:
        cid = self._next_id
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = future
        try:
            await self.ws.send(json.dumps({"id": cid, method: params}))
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(cid, None)
        if "error" in reply:
            raise ReplyError(reply["error"].get("code", 0), reply["error"].get("message", ""))
        return reply.get(method, {})

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                for line in frame.splitlines() if isinstance(frame, str) else []:
                    if not line:
                        continue
                    message = json.loads(line)
                    if not message:
                        await self.ws.send("{}")  # pong
                    elif "id" in message:
                        future = self._waiting.get(message["id"])
                        if future is not None and not future.done():
                            future.set_result(message)
                    elif "push" in message and self.on_push is not None:
                        self.on_push(message["push"])
        except WebSocketException:
            pass
        finally:
            self.close_code = self.ws.close_code
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))

    @property
    def closed(self) -> bool:
        return self._reader.done()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._reader)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader


class ReplyError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code


# -- the load ----------------------------------------------------------------------------


@dataclass
class Counters:
    values: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + n


class RecoveringSubscriber:
    """Holds one subscription with recovery across reconnects; records every offset seen."""

    def __init__(self, url: str, channel: str, counters: Counters) -> None:
        self.url = url
        self.channel = channel
        self.counters = counters
        self.epoch = ""
        self.offset = 0
        self.start: int | None = None
        self.received: set[int] = set()
        self.duplicates = 0
        self.unrecovered = 0
        self.epoch_changes = 0
        self.client: ProtoClient | None = None
        self._resubscribing = False

    def _record(self, offset: int) -> None:
        if offset in self.received:
            self.duplicates += 1
        self.received.add(offset)
        self.offset = max(self.offset, offset)

    def _on_push(self, push: dict[str, Any]) -> None:
        if push.get("channel") != self.channel:
            return
        if "pub" in push:
            self._record(push["pub"].get("offset", 0))
        elif "unsubscribe" in push and not self._resubscribing:
            # 2500 (insufficient state: the node saw a gap): recover on the same connection.
            self.counters.add(f"unsubscribe_{push['unsubscribe'].get('code', 0)}")
            self._resubscribing = True
            asyncio.get_running_loop().create_task(self._resubscribe())

    async def _resubscribe(self) -> None:
        try:
            if self.client is not None and not self.client.closed:
                await self._subscribe(self.client)
        except (*CLIENT_ERRORS, ReplyError):
            self.counters.add("resubscribe_errors")
            if self.client is not None:
                await self.client.close()
        finally:
            self._resubscribing = False

    async def _subscribe(self, client: ProtoClient) -> None:
        params: dict[str, Any] = {"channel": self.channel}
        recovering = self.start is not None
        if recovering:
            params.update(recover=True, offset=self.offset, epoch=self.epoch)
        result = await client.call("subscribe", params)
        if self.start is None:
            self.start = result.get("offset", 0)
            self.offset = self.start
        elif result.get("epoch", "") != self.epoch:
            self.epoch_changes += 1
        if recovering and not result.get("recovered", False):
            self.unrecovered += 1
        self.epoch = result.get("epoch", "")
        for pub in result.get("publications", []):
            self._record(pub.get("offset", 0))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.client = client = await ProtoClient.open(self.url, self._on_push)
                try:
                    await self._subscribe(client)
                    self.counters.add("recovering_sessions")
                    hold = random.uniform(10, 40)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(_first(client.wait_closed(), stop.wait()), hold)
                    if client.closed and client.close_code is not None:
                        self.counters.add(f"recovering_closed_{client.close_code}")
                finally:
                    await client.close()
            except (*CLIENT_ERRORS, ReplyError) as exc:
                self.counters.add(f"recovering_errors_{type(exc).__name__}")
                await asyncio.sleep(random.uniform(0.5, 2))

    async def settle(self, client_open_timeout: float = 30.0) -> None:
        """One last connection that recovers up to the stream's top (after the markers)."""
        deadline = time.monotonic() + client_open_timeout
        while time.monotonic() < deadline:
            try:
                client = await ProtoClient.open(self.url, self._on_push)
                try:
                    await self._subscribe(client)
                finally:
                    await client.close()
                return
            except (*CLIENT_ERRORS, ReplyError):
                await asyncio.sleep(0.5)


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


class Publisher:
    """Server API publishes, round robin over the channels; records what was accepted."""

    def __init__(self, port: int, channels: list[str], rate: float, counters: Counters) -> None:
        self.http = HttpClient(port)
        self.channels = channels
        self.rate = rate
        self.counters = counters
        self.accepted: dict[str, dict[int, str]] = {c: {} for c in channels}
        self.seq = 0

    async def publish(self, channel: str, data: Any) -> bool:
        body = json.dumps({"channel": channel, "data": data}).encode()
        try:
            status, reply = await self.http.request("POST", "/api/publish", body)
        except CLIENT_ERRORS:
            self.counters.add("publish_transport_errors")
            return False
        result = json.loads(reply) if status == 200 else {}
        if "result" not in result:
            self.counters.add("publish_refused")
            return False
        self.accepted[channel][result["result"].get("offset", 0)] = result["result"].get(
            "epoch", ""
        )
        self.counters.add("published")
        return True

    async def run(self, stop: asyncio.Event) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not stop.is_set():
            channel = self.channels[self.seq % len(self.channels)]
            self.seq += 1
            await self.publish(channel, {"seq": self.seq, "at": time.time()})
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def paced(rate: float, stop: asyncio.Event, action: Any) -> None:
    """Start ``action()`` ``rate`` times per second (bounded concurrency) until ``stop``."""
    running: set[asyncio.Task[None]] = set()
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        if len(running) < 50:
            task = asyncio.create_task(action())
            running.add(task)
            task.add_done_callback(running.discard)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*running, return_exceptions=True)


async def churn_once(url: str, channels: list[str], counters: Counters) -> None:
    try:
        client = await ProtoClient.open(url)
        try:
            channel = random.choice(channels)
            await client.call("subscribe", {"channel": channel})
            await client.call("history", {"channel": channel, "limit": 5})
            counters.add("churn_ok")
        finally:
            await client.close()
    except (*CLIENT_ERRORS, ReplyError) as exc:
        counters.add(f"churn_errors_{type(exc).__name__}")


async def history_reader(
    url: str, channels: list[str], rate: float, stop: asyncio.Event, counters: Counters
) -> None:
    while not stop.is_set():
        try:
            client = await ProtoClient.open(url)
        except (*CLIENT_ERRORS, ReplyError):
            counters.add("history_connect_errors")
            await asyncio.sleep(1)
            continue
        try:
            while not stop.is_set() and not client.closed:
                channel = random.choice(channels)
                try:
                    await client.call("history", {"channel": channel, "limit": 20})
                    counters.add("history_ok")
                except ReplyError as exc:
                    counters.add(f"history_error_{exc.code}")  # 100 while Redis restarts
                await asyncio.sleep(1.0 / rate)
        except CLIENT_ERRORS:
            counters.add("history_connection_lost")
        finally:
            await client.close()


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    head = (
        struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        if n < 126
        else struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    )
    return head + b"\0\0\0\0" + payload


async def slow_client(port: int, hold: float, counters: Counters) -> None:
    """Subscribe to the firehose and never read: the server must drop it with 3008.

    The close frame waits behind what the client did not read, and the server
    drops the TCP connection after its close timeout, so the verdict is the
    server's own count of 3008 disconnects (``/debug/stats``), watched for at
    most ``hold`` seconds. 3012 counts too: a client that reads nothing answers
    no ping either, and if its subscription failed (during a Redis restart) or
    the firehose is slow, the pong timeout drops it first.
    """
    start = await _slow_disconnects(port)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(
            sock,
            b"GET /connection/websocket HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
            + _frame(1, b'{"id":1,"connect":{}}')
            + _frame(1, json.dumps({"id": 2, "subscribe": {"channel": FIREHOSE}}).encode()),
        )
        counters.add("slow_clients")
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            if await _slow_disconnects(port) > start:
                counters.add("slow_dropped")
                break
    except (*CLIENT_ERRORS, RuntimeError) as exc:
        counters.add(f"slow_errors_{type(exc).__name__}")
    finally:
        sock.close()


async def _slow_disconnects(port: int) -> int:
    stats = await debug_stats(port)
    disconnects = stats.get("disconnects", {})
    return int(disconnects.get("3008", 0)) + int(disconnects.get("3012", 0))


async def firehose(publisher: Publisher, rate: float, size: int, stop: asyncio.Event) -> None:
    pad = "x" * size
    while not stop.is_set():
        await publisher.publish(FIREHOSE, {"pad": pad})
        await asyncio.sleep(1.0 / rate)


# -- measurement -------------------------------------------------------------------------


async def debug_stats(port: int, trim: bool = False) -> dict[str, Any]:
    http = HttpClient(port)
    try:
        status, body = await http.request("GET", "/debug/stats?trim=1" if trim else "/debug/stats")
    finally:
        http.close()
    if status != 200:
        raise RuntimeError(f"/debug/stats answered {status}")
    return dict(json.loads(body))


async def idle_snapshot(
    server: ServerProcess, redis: RedisProcess, timeout: float = 60.0
) -> dict[str, Any]:
    """Server figures once it holds no client (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    stats = await debug_stats(server.port)
    while stats["clients"] and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        stats = await debug_stats(server.port)
    # Let closing connections (this very request's too) and their tasks finish.
    await asyncio.sleep(2)
    open_files = server.open_files()
    redis_connections = server.sockets_to(redis.port)
    stats = await debug_stats(server.port, trim=True)
    stats["open_files_proc"] = open_files
    # The Redis client's pool grows on demand up to its bound (32): not a leak.
    stats["redis_connections"] = redis_connections
    stats["open_files_without_redis"] = open_files - redis_connections
    stats["rss_mb"] = round(stats["rss_bytes"] / (1 << 20), 1)
    if stats.get("rss_bytes_after_trim"):
        # What is left once the allocator returned its free heap (glibc).
        stats["rss_mb_after_trim"] = round(stats["rss_bytes_after_trim"] / (1 << 20), 1)
    return stats


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per hour."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if not var:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return cov / var * 3600


async def sampler(
    server: ServerProcess, every: float, stop: asyncio.Event, out: list[dict[str, Any]], t0: float
) -> None:
    while not stop.is_set():
        sample: dict[str, Any] = {"t": round(time.monotonic() - t0, 1)}
        if not server.alive:
            return
        # Only /proc: /debug/stats runs a full collection, which would change the curve.
        sample["rss_mb"] = round(server.rss_mb(), 2)
        sample["open_files"] = server.open_files()
        out.append(sample)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


# -- the run -------------------------------------------------------------------------------


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="rtcore-soak-"))
    redis = RedisProcess(args.redis_server, directory)
    await redis.start()
    server = ServerProcess(server_config(redis.port), directory, args.impl)
    counters = Counters()
    try:
        await server.start()
        url = f"ws://127.0.0.1:{server.port}/connection/websocket"
        channels = [f"{NAMESPACE}:c{i}" for i in range(args.channels)]
        publisher = Publisher(server.port, channels, args.publish_rate, counters)

        # Warm up every path once, then take the idle figures.
        await churn_once(url, channels, counters)
        await publisher.publish(channels[0], {"warmup": True})
        before = await idle_snapshot(server, redis)

        stop = asyncio.Event()
        subscribers = [
            RecoveringSubscriber(url, channels[i % len(channels)], counters)
            for i in range(args.subscribers)
        ]
        samples: list[dict[str, Any]] = []
        t0 = time.monotonic()
        tasks = [asyncio.create_task(s.run(stop)) for s in subscribers]
        # The subscribers hold their first subscription before anything is published.
        await asyncio.sleep(min(5.0, args.duration / 10))
        tasks += [
            asyncio.create_task(publisher.run(stop)),
            asyncio.create_task(paced(args.churn_rate, stop, lambda: churn_once(url, channels, counters))),
            asyncio.create_task(history_reader(url, channels, args.history_rate, stop, counters)),
            asyncio.create_task(firehose(Publisher(server.port, [FIREHOSE], 1, counters), args.firehose_rate, args.firehose_size, stop)),
            asyncio.create_task(sampler(server, args.sample_every, stop, samples, t0)),
        ]  # fmt: skip
        slow_tasks: list[asyncio.Task[None]] = []
        restarts_at = [
            t0 + args.duration * (i + 1) / (args.redis_restarts + 1)
            for i in range(args.redis_restarts)
        ]
        next_slow = t0 + min(5.0, args.slow_every)
        end = t0 + args.duration
        while time.monotonic() < end and server.alive:
            now = time.monotonic()
            if restarts_at and now >= restarts_at[0]:
                restarts_at.pop(0)
                await redis.restart()
            if now >= next_slow and now + args.slow_hold + 10 < end:
                slow_tasks.append(
                    asyncio.create_task(slow_client(server.port, args.slow_hold, counters))
                )
                next_slow += args.slow_every
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks, *slow_tasks, return_exceptions=True)
        load_seconds = time.monotonic() - t0

        # One marker per channel: every subscriber recovers up to it.
        for channel in channels:
            for _ in range(60):
                if await publisher.publish(channel, {"marker": True}):
                    break
                await asyncio.sleep(0.5)
        await asyncio.gather(*(s.settle() for s in subscribers))
        after = await idle_snapshot(server, redis)
        return report(
            args,
            before,
            after,
            samples,
            subscribers,
            publisher,
            counters,
            redis,
            server,
            load_seconds,
        )
    finally:
        server.stop()
        redis.stop()
        shutil.rmtree(directory, ignore_errors=True)


def report(
    args: argparse.Namespace,
    before: dict[str, Any],
    after: dict[str, Any],
    samples: list[dict[str, Any]],
    subscribers: list[RecoveringSubscriber],
    publisher: Publisher,
    counters: Counters,
    redis: RedisProcess,
    server: ServerProcess,
    load_seconds: float,
) -> dict[str, Any]:
    lost = 0
    duplicates = 0
    unconfirmed = 0
    for sub in subscribers:
        accepted = publisher.accepted[sub.channel]
        start = sub.start if sub.start is not None else 0
        expected = {o for o in accepted if o > start}
        lost += len(expected - sub.received)
        unconfirmed += len(sub.received - set(accepted))
        duplicates += sub.duplicates
    rss = [(s["t"], s["rss_mb"]) for s in samples if "rss_mb" in s]
    half = [p for p in rss if p[0] >= rss[-1][0] / 2] if rss else []
    return {
        "duration_s": round(load_seconds, 1),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "server_alive": server.alive,
        "publications_accepted": sum(len(a) for a in publisher.accepted.values()),
        "lost": lost,
        "duplicates": duplicates,
        "received_unconfirmed": unconfirmed,
        "unrecovered_subscribes": sum(s.unrecovered for s in subscribers),
        "epoch_changes": sum(s.epoch_changes for s in subscribers),
        "subscribers_never_subscribed": sum(1 for s in subscribers if s.start is None),
        "slow_disconnects_3008": after.get("disconnects", {}).get("3008", 0)
        - before.get("disconnects", {}).get("3008", 0),
        "no_pong_disconnects_3012": after.get("disconnects", {}).get("3012", 0)
        - before.get("disconnects", {}).get("3012", 0),
        "redis_restarts": redis.restarts,
        "redis_downtime_s": round(redis.downtime, 2),
        "rss_mb_first": rss[0][1] if rss else None,
        "rss_mb_last": rss[-1][1] if rss else None,
        "rss_slope_mb_per_hour": round(slope_per_hour(rss), 2),
        "rss_slope_second_half_mb_per_hour": round(slope_per_hour(half), 2),
        "idle_rss_mb": [before.get("rss_mb"), after.get("rss_mb")],
        "idle_rss_mb_after_trim": [before.get("rss_mb_after_trim"), after.get("rss_mb_after_trim")],
        "live_objects": [before.get("gc_objects"), after.get("gc_objects")],
        "gc_growth": _type_growth(before.get("gc_types", {}), after.get("gc_types", {})),
        "idle_before": before,
        "idle_after": after,
        "counters": dict(sorted(counters.values.items())),
        "samples": samples,
    }


def _type_growth(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Object types whose count grew between the idle snapshots, most first."""
    growth = {name: after.get(name, 0) - before.get(name, 0) for name in set(before) | set(after)}
    return dict(sorted(((k, v) for k, v in growth.items() if v > 0), key=lambda kv: -kv[1])[:15])


def failures(result: dict[str, Any]) -> list[str]:
    problems = []
    if not result["server_alive"]:
        problems.append("the server died")
    if result["lost"]:
        problems.append(f"{result['lost']} publications lost")
    if result["duplicates"]:
        problems.append(f"{result['duplicates']} publications delivered twice")
    slow = result["counters"].get("slow_clients", 0)
    dropped = result["counters"].get("slow_dropped", 0)
    if dropped < slow:
        problems.append(f"{slow} slow clients, only {dropped} dropped (3008 or 3012)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=1800.0, help="seconds of load (default 1800)"
    )
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--publish-rate", type=float, default=50.0)
    parser.add_argument("--churn-rate", type=float, default=10.0)
    parser.add_argument("--history-rate", type=float, default=10.0)
    parser.add_argument("--firehose-rate", type=float, default=20.0)
    parser.add_argument("--firehose-size", type=int, default=32 * 1024)
    parser.add_argument("--slow-every", type=float, default=60.0)
    parser.add_argument(
        "--slow-hold", type=float, default=60.0, help="longest wait for a slow client's 3008"
    )
    parser.add_argument("--redis-restarts", type=int, default=2)
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--sample-every", type=float, default=10.0)
    parser.add_argument("--impl", choices=("cython", "python"), default="cython")
    parser.add_argument("--json", type=Path, help="write the full result here")
    args = parser.parse_args(argv)
    result = asyncio.run(soak(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result.items() if k not in ("samples", "settings")}
    print(json.dumps(summary, indent=1))
    problems = failures(result)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
