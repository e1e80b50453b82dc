"""Local ``redis-server`` processes for the Redis backend tests.

Every server binds 127.0.0.1 only, on a free port, keeps no data on disk
(``--save "" --appendonly no``), and lives in a temporary directory. Waits
are bounded, and :meth:`RedisServer.stop` always reaps the process
(terminate, then kill).

Tests that need a server call :func:`require_binary` first: it skips the test
when the binary is missing, except under ``CI=true``, where it fails it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest


__all__ = [
    "IN_CI",
    "LocalRedisCluster",
    "RedisServer",
    "free_port",
    "redis_ping",
    "require_binary",
    "wait_until",
]


IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "yes", "true", "on"}

HOST = "127.0.0.1"


def require_binary(name: str) -> str:
    """The path of ``name``; skip the test if missing (fail it under CI=true)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true requires it")
        pytest.skip(message)
    return path


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` (with SO_REUSEADDR, as redis-server does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A free TCP port on 127.0.0.1; with ``with_bus``, ``port + 10000`` is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if not with_bus:
            return port
        if port + 10000 < 65536 and _port_free(port + 10000):
            return port
    raise RuntimeError("no free port found")


def redis_ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis server on ``port`` answers PING."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def wait_until(condition: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition()`` until it is true; TimeoutError after ``timeout`` seconds."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not reached within {timeout} s")
        time.sleep(interval)


class RedisServer:
    """One ``redis-server`` process on a fixed port, restartable on that port."""

    def __init__(
        self,
        *,
        port: int | None = None,
        cluster: bool = False,
        workdir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = require_binary("redis-server")
        self.cluster = cluster
        self.port = port if port is not None else free_port(with_bus=cluster)
        # A port picked here may be taken before redis-server binds it (the
        # cluster bus port, port + 10000, is often in the ephemeral range):
        # the first start then retries on another free port.
        self._may_move = port is None
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"rtcore-redis-{self.port}-"))
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def args(self) -> list[str]:
        args = [
            self.binary,
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{self.port}.conf",
                "--cluster-node-timeout",
                "2000",
            ]
        return args + self.extra_args

    def start(self, timeout: float = 10.0) -> None:
        for attempt in range(5):
            try:
                self._start(timeout)
                break
            except RuntimeError as exc:
                if not (self._may_move and "Address already in use" in str(exc)) or attempt == 4:
                    raise
                self.port = free_port(with_bus=self.cluster)
        self._may_move = False

    def _start(self, timeout: float) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        log_path = self.workdir / f"redis-{self.port}.log"
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.args(), stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        deadline = time.monotonic() + timeout
        while not redis_ping(self.port):
            if self.proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on {self.port} exited: {tail}")
            if time.monotonic() >= deadline:
                self.stop()
                raise TimeoutError(f"redis-server on {self.port} did not answer in {timeout} s")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (then kill) the process; nothing is saved."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        # Wait until the port is really released, so a restart can bind it.
        wait_until(lambda: _port_free(self.port), timeout, f"port {self.port} released")

    def kill(self) -> None:
        """SIGKILL the process, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.stop()

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down ``down_for`` seconds, start on the same port (data lost)."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def redis_servers(count: int) -> Iterator[list[RedisServer]]:
    """``count`` standalone servers, stopped and removed on exit."""
    servers: list[RedisServer] = []
    try:
        for _ in range(count):
            server = RedisServer()
            servers.append(server)
            server.start()
        yield servers
    finally:
        for server in servers:
            server.cleanup()


class LocalRedisCluster:
    """A Redis Cluster of ``masters`` primaries (no replicas) on local ports."""

    def __init__(self, masters: int = 3) -> None:
        self.cli = require_binary("redis-cli")
        self.workdir = Path(tempfile.mkdtemp(prefix="rtcore-redis-cluster-"))
        self.servers = [RedisServer(cluster=True, workdir=self.workdir) for _ in range(masters)]

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def start(self, timeout: float = 30.0) -> None:
        for server in self.servers:
            server.start()
        subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(server.address for server in self.servers),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self.wait_ok(timeout)

    def cli_call(self, port: int, *args: str, timeout: float = 10.0) -> str:
        result = subprocess.run(
            [self.cli, "-h", HOST, "-p", str(port), *args],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        return result.stdout.decode()

    def _ok(self) -> bool:
        for server in self.servers:
            try:
                info = self.cli_call(server.port, "cluster", "info", timeout=2.0)
            except (subprocess.SubprocessError, OSError):
                return False
            if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                return False
        return True

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every node reports ``cluster_state:ok`` with all slots served."""
        wait_until(self._ok, timeout, "cluster_state:ok on every node", interval=0.2)

    def node_id(self, port: int) -> str:
        return self.cli_call(port, "cluster", "myid").strip()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
