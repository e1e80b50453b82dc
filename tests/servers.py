"""Helpers that run rtcore servers in subprocesses for integration tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(
    host: str, port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def impl_env(impl: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment forcing the compiled (``cython``) or pure (``python``) modules."""
    env = dict(os.environ)
    env.pop("RTCORE_NO_EXTENSIONS", None)
    env.pop("RTCORE_REQUIRE_EXTENSIONS", None)
    if impl == "python":
        env["RTCORE_NO_EXTENSIONS"] = "1"
    else:
        env["RTCORE_REQUIRE_EXTENSIONS"] = "1"
    env.update(extra or {})
    return env


@contextmanager
def run_server(
    args: Sequence[str],
    port: int,
    impl: str = "cython",
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> Iterator[subprocess.Popen]:
    """Run ``python <args>`` until the port answers; terminate it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        env=impl_env(impl, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(host, port, proc=proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
