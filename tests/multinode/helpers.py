"""Several ``rtcore serve`` processes sharing one Redis, and clients for them.

* :func:`require_redis`: the shared Redis on 127.0.0.1:6379 (skip without it,
  fail under ``CI=true``).
* :class:`Cluster`: N nodes (subprocesses on free loopback ports) on one Redis
  with a key prefix of their own; the prefix's keys are deleted afterwards
  (``SCAN`` + ``DEL``, never a flush).
* :class:`Events` / :class:`SubEvents`: centrifuge-python handlers that record
  what a client and a subscription saw.
* :class:`EndpointsClient`: a centrifuge-python client with a list of node URLs
  that moves to the next one when a connection attempt fails.
* :func:`api`: one server API call over HTTP.

Every wait is bounded; nodes are SIGKILLed when a test ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import centrifuge
import pytest

from rtcore.auth import make_connect_token


IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "yes", "true", "on"}
HOST = "127.0.0.1"
SECRET = "multinode-hmac-secret-0123456789abcdefghijklmnop"
KEY = "multinode-api-key"
REDIS_URL = "redis://127.0.0.1:6379"

#: The namespace every test uses: history, recovery, presence, join/leave.
CHAT_NAMESPACE = """
[[channel.namespaces]]
name = "chat"
history_size = 1000
history_ttl = "300s"
force_recovery = true
presence = true
join_leave = true
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
allow_presence_for_subscriber = true
allow_history_for_subscriber = true
"""


def redis_up(port: int = 6379, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def require_redis() -> None:
    """Skip without the shared Redis on 127.0.0.1:6379; under CI=true, fail."""
    if redis_up():
        return
    if IN_CI:
        pytest.fail("Redis is required on 127.0.0.1:6379 (CI=true)")
    pytest.skip("no Redis on 127.0.0.1:6379")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This environment without rtcore configuration variables of the caller."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("RTCORE_") and "__" in k)}
    for name in ("RTCORE_CONFIG", "RTCORE_WORKER_INDEX"):
        env.pop(name, None)
    return env


def node_config(
    port: int,
    name: str,
    prefix: str,
    redis_url: str = REDIS_URL,
    extra: str = "",
    engine_extra: str = "",
) -> str:
    return f"""
[http]
address = "{HOST}"
port = {port}
shutdown_timeout = "2s"

[client]
node_name = "{name}"
reconnect_jitter = "200ms"
ping_interval = "5s"
pong_timeout = "3s"

[client.token]
hmac_secret_key = "{SECRET}"

[api]
key = "{KEY}"

[metrics]
enabled = true

[engine]
type = "redis"
redis_address = ["{redis_url}"]
redis_prefix = "{prefix}"
{engine_extra}

[log]
level = "info"
{CHAT_NAMESPACE}
{extra}
"""


class NodeProc:
    """One ``rtcore serve`` subprocess."""

    def __init__(
        self, name: str, port: int, config: Path, log: Path, args: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.port = port
        self.config = config
        self.log_path = log
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{HOST}:{self.port}/connection/websocket"

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rtcore", "serve", "--config", str(self.config), *self.args],
                env=clean_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_listening(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"node {self.name} exited with {self.proc.returncode}:\n{self.log[-3000:]}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(
            f"node {self.name} does not listen on {self.port}:\n{self.log[-3000:]}"
        )

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful shutdown) and wait for the exit code.

        A second SIGTERM after ``timeout`` makes a node (or a ``--workers``
        supervisor and its workers) exit at once; SIGKILL after that.
        """
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(10)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """Nodes ``a``, ``b``, ``c``... on one Redis, with a key prefix of their own."""

    def __init__(self, nodes: list[NodeProc], prefix: str, redis_url: str) -> None:
        self.nodes = nodes
        self.prefix = prefix
        self.redis_url = redis_url

    def __getitem__(self, index: int) -> NodeProc:
        return self.nodes[index]

    def logs(self) -> str:
        return "\n".join(f"--- node {n.name} ---\n{n.log[-4000:]}" for n in self.nodes)


@contextmanager
def cluster(
    tmp_path: Path,
    count: int = 3,
    *,
    redis_url: str = REDIS_URL,
    extra: str = "",
    engine_extra: str = "",
) -> Iterator[Cluster]:
    """``count`` nodes on ``redis_url``; keys of the prefix are removed afterwards."""
    prefix = f"rtcore-mn-{uuid.uuid4().hex[:10]}"
    nodes: list[NodeProc] = []
    for i in range(count):
        name = f"node-{chr(ord('a') + i)}-{prefix[-6:]}"
        port = free_port()
        config = tmp_path / f"{name}.toml"
        config.write_text(
            node_config(port, name, prefix, redis_url, extra, engine_extra), encoding="utf-8"
        )
        nodes.append(NodeProc(name, port, config, tmp_path / f"{name}.log"))
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_listening()
        yield Cluster(nodes, prefix, redis_url)
    finally:
        for node in nodes:
            node.kill()
        delete_prefix(redis_url, prefix)


def delete_prefix(redis_url: str, prefix: str) -> None:
    """Delete the keys of one prefix (bounded SCAN; no FLUSHALL/FLUSHDB)."""
    try:
        import redis

        r = redis.Redis.from_url(redis_url, socket_timeout=2)
        try:
            for _ in range(200):
                keys = list(r.scan_iter(match=f"{prefix}.*", count=1000))
                if not keys:
                    break
                r.delete(*keys)
        finally:
            r.close()
    except Exception:  # noqa: BLE001 - cleanup only; the keys also expire
        pass


# -- clients ------------------------------------------------------------------------------


def token(user: str, **kwargs: Any) -> str:
    return make_connect_token(SECRET, user, **kwargs)


async def api(
    http: aiohttp.ClientSession,
    node: NodeProc,
    method: str,
    params: dict[str, Any],
    timeout: float = 10.0,
) -> dict[str, Any]:
    """A server API call; returns the JSON body (``result`` or ``error``)."""
    async with http.post(
        f"{node.http}/api/{method}",
        json=params,
        headers={"X-API-Key": KEY},
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as r:
        body = await r.read()
        assert r.status == 200, (r.status, body)
        return dict(json.loads(body))


async def until(
    condition: Callable[[], Any], timeout: float, what: str | Callable[[], str] = ""
) -> None:
    """Poll ``condition`` every 20 ms; AssertionError after ``timeout`` seconds.

    ``what`` describes the wait; a callable is called at the timeout, to show
    the state then.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() >= deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {text or condition}")
        await asyncio.sleep(0.02)


class Events(centrifuge.ClientEventHandler):
    """What a client saw: (re)connecting with its reason, connects, disconnects,
    server-side subscriptions."""

    def __init__(self) -> None:
        self.connects: list[Any] = []
        self.connecting: list[tuple[int, str]] = []
        self.disconnects: list[tuple[int, str]] = []
        self.errors: list[Any] = []
        self.server_subscribed: list[Any] = []
        self.server_unsubscribed: list[Any] = []
        self.server_pubs: list[Any] = []

    async def on_connecting(self, ctx: Any) -> None:
        self.connecting.append((ctx.code, ctx.reason))

    async def on_connected(self, ctx: Any) -> None:
        self.connects.append(ctx)

    async def on_disconnected(self, ctx: Any) -> None:
        self.disconnects.append((ctx.code, ctx.reason))

    async def on_error(self, ctx: Any) -> None:
        self.errors.append(ctx)

    async def on_subscribed(self, ctx: Any) -> None:
        self.server_subscribed.append(ctx)

    async def on_unsubscribed(self, ctx: Any) -> None:
        self.server_unsubscribed.append(ctx)

    async def on_publication(self, ctx: Any) -> None:
        self.server_pubs.append(ctx)


class SubEvents(centrifuge.SubscriptionEventHandler):
    """What a subscription saw."""

    def __init__(self) -> None:
        self.pubs: list[Any] = []
        self.subscribed: list[Any] = []
        self.subscribed_at: list[float] = []
        self.unsubscribed: list[tuple[int, str]] = []
        self.joins: list[Any] = []
        self.leaves: list[Any] = []
        self.errors: list[Any] = []

    async def on_subscribed(self, ctx: Any) -> None:
        self.subscribed.append(ctx)
        self.subscribed_at.append(time.monotonic())

    async def on_unsubscribed(self, ctx: Any) -> None:
        self.unsubscribed.append((ctx.code, ctx.reason))

    async def on_publication(self, ctx: Any) -> None:
        self.pubs.append(ctx.pub)

    async def on_join(self, ctx: Any) -> None:
        self.joins.append(ctx.info)

    async def on_leave(self, ctx: Any) -> None:
        self.leaves.append(ctx.info)

    async def on_error(self, ctx: Any) -> None:
        self.errors.append(ctx)

    def seqs(self) -> list[int]:
        """``seq`` of every publication received, in order."""
        return [int(p.data["seq"]) for p in self.pubs]


class EndpointsClient(centrifuge.Client):
    """A client given several node URLs: a failed connection attempt moves it to the next.

    centrifuge-python takes one address; this keeps a list and switches the
    address the SDK dials (``_address``) after each attempt that could not
    open a WebSocket, so reconnects after a node's death land on a live one.
    """

    def __init__(self, endpoints: Sequence[str], **kwargs: Any) -> None:
        super().__init__(endpoints[0], **kwargs)
        self.endpoints = list(endpoints)
        self.endpoint_index = 0
        self.dialed: list[str] = []

    async def _open_transport(self) -> Any:
        address = self.endpoints[self.endpoint_index]
        self._address = address
        self.dialed.append(address)
        try:
            return await super()._open_transport()
        except Exception:
            self.endpoint_index = (self.endpoint_index + 1) % len(self.endpoints)
            raise


def client(address: str | Sequence[str], user: str, **kwargs: Any) -> tuple[Any, Events]:
    """A centrifuge-python client (JSON) with fast reconnects; not connected yet."""
    events = Events()
    options: dict[str, Any] = {
        "events": events,
        "token": token(user),
        "min_reconnect_delay": 0.05,
        "max_reconnect_delay": 0.3,
        "timeout": 5.0,
        **kwargs,
    }
    if isinstance(address, str):
        return centrifuge.Client(address, **options), events
    return EndpointsClient(address, **options), events


async def subscribed(
    c: Any, channel: str, *, join_leave: bool = False, timeout: float = 10.0
) -> tuple[Any, SubEvents]:
    """Subscribe ``c`` to ``channel`` and wait until the subscription is ready."""
    events = SubEvents()
    sub = c.new_subscription(channel, events, join_leave=join_leave)
    await sub.subscribe()
    await sub.ready(timeout=timeout)
    return sub, events


class Publisher:
    """Publishes ``{"seq": n}`` through one node's server API at a fixed rate.

    One request at a time, so sequence numbers and offsets rise together; the
    n-th request is due at ``n / rate`` seconds after the start (late ones are
    sent at once). Every outcome is kept: ``ok`` with the stream position, an
    ``error`` reply, or ``exception`` (no reply at all, e.g. a timeout).
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        node: NodeProc,
        channel: str,
        rate: float,
        timeout: float = 10.0,
    ) -> None:
        self.http = http
        self.node = node
        self.channel = channel
        self.rate = rate
        self.timeout = timeout
        self.results: list[dict[str, Any]] = []
        self.stop = asyncio.Event()

    async def run(self, max_count: int = 2000) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for seq in range(1, max_count + 1):
            delay = start + (seq - 1) / self.rate - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self.stop.wait(), delay)
                except TimeoutError:
                    pass
            if self.stop.is_set():
                return
            self.results.append(await self._publish(seq))

    async def _publish(self, seq: int) -> dict[str, Any]:
        sent = time.monotonic()
        out: dict[str, Any] = {"seq": seq, "sent": sent}
        try:
            async with self.http.post(
                f"{self.node.http}/api/publish",
                json={"channel": self.channel, "data": {"seq": seq}},
                headers={"X-API-Key": KEY},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as r:
                body = await r.read()
                out["status"] = r.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            out["exception"] = repr(exc)
            return out
        finally:
            out["done"] = time.monotonic()
        reply = json.loads(body) if body else {}
        if r.status == 200 and "result" in reply:
            out["ok"] = True
            out["offset"] = reply["result"].get("offset", 0)
            out["epoch"] = reply["result"].get("epoch", "")
        else:
            out["error"] = reply.get("error", body.decode(errors="replace"))
        return out

    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r.get("ok")]

    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r.get("ok")]


async def metric(http: aiohttp.ClientSession, node: NodeProc, name: str, labels: str = "") -> float:
    """The value of one sample of the node's /metrics (0 when absent)."""
    async with http.get(f"{node.http}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
        assert r.status == 200
        text = await r.text()
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


class LineStream:
    """The JSON lines of an HTTP-streaming response, matched out of order."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.backlog: list[dict[str, Any]] = []

    async def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> Any:
        """The first message ``match`` accepts (earlier ones are kept); None at the end."""
        for i, m in enumerate(self.backlog):
            if match(m):
                return self.backlog.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            line = await asyncio.wait_for(
                self.response.content.readline(), max(0.01, deadline - loop.time())
            )
            if not line:
                return None
            m = json.loads(line)
            if match(m):
                return m
            self.backlog.append(m)


def run(coro: Any, timeout: float = 120.0) -> Any:
    """Run ``coro`` in a fresh event loop, bounded in time."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())
