"""The server side of a run: which server, started how, and its HTTP API.

* :func:`parse_ws_url` / :func:`parse_http_url`: the target, loopback only
  (127.0.0.1 or ::1; anything else is refused);
* :func:`server_config`: the configuration a spawned server runs with
  (memory or Redis engine, history and recovery on the load generator's
  channels, the ping interval, ``--set`` overrides);
* :class:`SpawnedServer`: ``python -m rtcore serve --config ... [--workers N]``
  (or any command given with ``--server-cmd``) in its own session, stopped
  with SIGTERM and, past a timeout, SIGKILL to every process of its tree;
* :class:`ApiClient`: keep-alive HTTP/1.1 connections to ``POST /api/<method>``;
* :func:`listener_pids`: the processes listening on a port (to sample a server
  the load generator did not start).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from procstat import ProcTree


__all__ = [
    "ApiClient",
    "ApiError",
    "LOOPBACK",
    "ServerOptions",
    "SpawnedServer",
    "TargetError",
    "free_port",
    "listener_pids",
    "parse_http_url",
    "parse_ws_url",
    "server_config",
    "wait_listening",
]

#: The only hosts a run may target.
LOOPBACK = ("127.0.0.1", "::1")


class TargetError(ValueError):
    """A target the load generator refuses (not loopback, bad URL)."""


class ApiError(RuntimeError):
    """The server API failed a request."""


def _host_port(url: str, schemes: tuple[str, ...], default_path: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise TargetError(
            f"{url!r}: the scheme must be {' or '.join(schemes)} (TLS is not supported)"
        )
    host = parts.hostname or ""
    if host not in LOOPBACK:
        raise TargetError(
            f"{url!r}: the load generator only targets {' or '.join(LOOPBACK)}, not {host!r}"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise TargetError(f"{url!r}: {exc}") from None
    if port is None:
        raise TargetError(f"{url!r}: give the port explicitly")
    path = parts.path or default_path
    if parts.query:
        path += "?" + parts.query
    return host, port, path


def parse_ws_url(url: str) -> tuple[str, int, str]:
    """``ws://127.0.0.1:8000/connection/websocket`` -> (host, port, path)."""
    return _host_port(url, ("ws",), "/connection/websocket")


def parse_http_url(url: str) -> tuple[str, int, str]:
    """``http://127.0.0.1:8000/api`` -> (host, port, path prefix of the API)."""
    host, port, path = _host_port(url, ("http",), "/api")
    return host, port, path.rstrip("/")


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    # local_address is ADDR:PORT in hex; state 0A is LISTEN.
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        except OSError:
            continue
    return inodes


def wait_listening(port: int, sockets: int, timeout: float, alive: Any = None) -> None:
    """Wait until ``sockets`` listening sockets exist on ``port`` (one per worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError("the server exited while starting")
        if len(_listening_inodes(port)) >= sockets:
            return
        time.sleep(0.05)
    raise RuntimeError(f"no {sockets} listening socket(s) on port {port} after {timeout:.0f} s")


def listener_pids(port: int) -> list[int]:
    """Processes holding a listening socket on ``port`` (a scan of /proc/*/fd)."""
    inodes = {f"socket:[{i}]" for i in _listening_inodes(port)}
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{name}/fd/{fd}") in inodes:
                    pids.append(int(name))
                    break
            except OSError:
                continue
    return pids


# -- a spawned server --------------------------------------------------------------------


@dataclass
class ServerOptions:
    """How a spawned server is configured."""

    engine: str = "memory"
    workers: int = 1
    redis_url: str = "redis://127.0.0.1:6379/0"
    ping_interval: float = 25.0
    pong_timeout: float = 8.0
    history_size: int = 100
    history_ttl: float = 300.0
    presence: bool = True
    join_leave: bool = True
    log_level: str = "warning"
    sets: list[tuple[str, Any]] = field(default_factory=list)
    # A command of its own instead of rtcore (a bare WebSocket server): "{port}" is replaced.
    command: str = ""


def _set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def server_config(
    opts: ServerOptions, port: int, secret: str, api_key: str, redis_prefix: str
) -> dict[str, Any]:
    """The configuration of a spawned rtcore server (docs/config.md)."""
    if opts.workers > 1 and opts.engine != "redis":
        raise ValueError("--workers above 1 needs --engine redis (workers share channels there)")
    engine: dict[str, Any] = {"type": opts.engine}
    if opts.engine == "redis":
        engine.update(redis_address=[opts.redis_url], redis_prefix=redis_prefix)
    config: dict[str, Any] = {
        "http": {"address": "127.0.0.1", "port": port},
        "client": {
            "token": {"hmac_secret_key": secret},
            "ping_interval": opts.ping_interval,
            "pong_timeout": opts.pong_timeout,
        },
        "api": {"key": api_key},
        "metrics": {"enabled": True},
        "log": {"level": opts.log_level, "format": "text"},
        "engine": engine,
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "presence": opts.presence,
                "join_leave": opts.join_leave and opts.presence,
                "history_size": opts.history_size,
                "history_ttl": opts.history_ttl if opts.history_size else 0,
                "allow_recovery": bool(opts.history_size),
            }
        },
    }
    for key, value in opts.sets:
        _set_dotted(config, key, value)
    return config


def _die_with_parent() -> None:
    """In the server's process before exec: SIGTERM when the load generator dies.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that started the process
    exits, hence :meth:`SpawnedServer.launch` runs on the main thread. Best
    effort: without it, a killed load generator would leave its server running.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class SpawnedServer:
    """A server process (tree) started and stopped by the load generator."""

    def __init__(self, opts: ServerOptions, secret: str, api_key: str, workdir: Path) -> None:
        self.opts = opts
        self.port = free_port()
        self.secret = secret
        self.api_key = api_key
        self.redis_prefix = f"loadgen{os.getpid()}{secrets.token_hex(3)}"
        self.workdir = workdir
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        if opts.command:
            self.cmd = shlex.split(opts.command.format(port=self.port, host="127.0.0.1"))
            self.sockets = 1
        else:
            config = server_config(opts, self.port, secret, api_key, self.redis_prefix)
            path = workdir / "server.json"
            path.write_text(json.dumps(config, indent=2))
            self.cmd = [sys.executable, "-m", "rtcore", "serve", "--config", str(path)]
            if opts.workers > 1:
                self.cmd += ["--workers", str(opts.workers)]
            self.sockets = max(1, opts.workers)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def describe(self) -> dict[str, Any]:
        return {
            "spawned": True,
            "command": self.cmd,
            "engine": "custom" if self.opts.command else self.opts.engine,
            "workers": self.opts.workers,
            "port": self.port,
            "ping_interval": self.opts.ping_interval,
            "presence": self.opts.presence,
            "join_leave": self.opts.join_leave,
            "history_size": self.opts.history_size,
            "sets": {k: v for k, v in self.opts.sets},
        }

    def start(self, timeout: float = 60.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process (call it from the main thread: see :func:`_die_with_parent`)."""
        # RTCORE_<SECTION>__<KEY> variables would override the generated file.
        env = {k: v for k, v in os.environ.items() if not (k.startswith("RTCORE_") and "__" in k)}
        env.pop("RTCORE_CONFIG", None)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        self.starts += 1

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every worker listens; stops the server and raises if it does not."""
        proc = self.proc
        assert proc is not None
        try:
            wait_listening(self.port, self.sockets, timeout, alive=lambda: proc.poll() is None)
        except RuntimeError as exc:
            self.stop(5.0)
            raise RuntimeError(f"{exc}; server log:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM, then SIGKILL to what is left of the tree; returns the seconds it took."""
        proc = self.proc
        if proc is None:
            return 0.0
        t0 = time.monotonic()
        tree = ProcTree(proc.pid).pids() if proc.poll() is None else []
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Workers live in sessions of their own: kill each one we saw that is still there.
        deadline = time.monotonic() + max(1.0, timeout - (time.monotonic() - t0))
        for pid in tree[1:]:
            while ProcTree(pid).alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        for pid in reversed(tree):
            if ProcTree(pid).alive():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        self.proc = None
        return time.monotonic() - t0

    def cleanup_redis(self) -> int:
        """Delete the keys of this run from Redis (best effort); returns how many."""
        if self.opts.engine != "redis" or self.opts.command:
            return 0
        try:
            import redis  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            return 0
        try:
            client = redis.Redis.from_url(self.opts.redis_url, socket_timeout=5)
            keys = list(client.scan_iter(match=f"{self.redis_prefix}*", count=1000))
            for i in range(0, len(keys), 500):
                client.unlink(*keys[i : i + 500])
            client.close()
            return len(keys)
        except Exception:  # noqa: BLE001 - cleanup must not hide the run's results
            return 0


# -- the server API ----------------------------------------------------------------------


class ApiClient:
    """``POST /api/<method>`` over a few keep-alive connections (one request each at a time)."""

    def __init__(self, host: str, port: int, prefix: str, key: str, connections: int = 4) -> None:
        self.host, self.port, self.prefix, self.key = host, port, prefix, key
        self.netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = (
            asyncio.Queue()
        )
        for _ in range(max(1, connections)):
            self.pool.put_nowait(None)  # opened on first use

    async def call(self, method: str, body: bytes, timeout: float = 10.0) -> dict[str, Any]:
        conn = await self.pool.get()
        try:
            if conn is None:
                conn = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), timeout
                )
            reader, writer = conn
            writer.write(
                (
                    f"POST {self.prefix}/{method} HTTP/1.1\r\nHost: {self.netloc}\r\n"
                    f"X-API-Key: {self.key}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
            )
            status, payload = await asyncio.wait_for(self._response(reader), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if conn is not None:
                conn[1].close()
            self.pool.put_nowait(None)
            raise ApiError(f"{method}: {type(exc).__name__}: {exc}") from None
        self.pool.put_nowait(conn)
        if status != 200:
            raise ApiError(f"{method}: HTTP {status}: {payload[:200]!r}")
        obj = json.loads(payload)
        if obj.get("error"):
            raise ApiError(
                f"{method}: error {obj['error'].get('code')}: {obj['error'].get('message')}"
            )
        return dict(obj.get("result") or {})

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                raise ValueError("chunked API responses are not supported")
        return status, await reader.readexactly(length)

    async def publish(self, channel: str, data: bytes) -> tuple[int, str]:
        """Publish raw JSON ``data``; returns the publication's (offset, epoch)."""
        body = b'{"channel":%s,"data":%s}' % (json.dumps(channel).encode(), data)
        result = await self.call("publish", body)
        return int(result.get("offset", 0)), str(result.get("epoch", ""))

    async def close(self) -> None:
        while not self.pool.empty():
            conn = self.pool.get_nowait()
            if conn is not None:
                conn[1].close()


async def scrape_metrics(
    host: str, port: int, names: tuple[str, ...], attempts: int = 1, timeout: float = 5.0
) -> dict[str, float] | None:
    """Sum ``names`` over every process answering ``GET /metrics`` on ``host:port``.

    With ``--workers`` each worker answers for itself and the kernel picks the
    worker per connection, so ``attempts`` fresh connections are made and the
    answers are told apart by ``rtcore_node_info``'s node id (servers before
    it: ``process_start_time_seconds``, which workers started in the same
    10 ms share). None when no answer came (metrics off, or not on this port).
    """
    seen: dict[str, dict[str, float]] = {}
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    for _ in range(max(1, attempts)):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (TimeoutError, OSError):
            continue
        try:
            writer.write(
                f"GET /metrics HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\n\r\n".encode()
            )
            status, body = await asyncio.wait_for(ApiClient._response(reader), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            continue
        finally:
            writer.close()
        if status != 200:
            continue
        values: dict[str, float] = {}
        identity = ""
        for line in body.decode("utf-8", "replace").splitlines():
            if line.startswith("rtcore_node_info{"):
                identity = line.partition(" ")[0]
            elif line.startswith("process_start_time_seconds ") and not identity:
                identity = line.split()[1]
            elif not line.startswith("#"):
                name, _, value = line.partition(" ")
                if name in names:
                    values[name] = float(value)
        seen[identity] = values
    if not seen:
        return None
    return {n: sum(v.get(n, 0.0) for v in seen.values()) for n in names} | {
        "processes_seen": float(len(seen))
    }
