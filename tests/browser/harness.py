"""Shared setup of the browser tests: tools, npm packages, static routes, the Node driver.

Chromium comes from Debian (``apt-get install chromium``; ``CHROMIUM`` overrides
``/usr/bin/chromium``), Node.js 20+ and npm from the system, ``playwright-core``
and ``centrifuge`` from ``package.json`` (``npm ci`` here when ``node_modules``
is missing). Without them these tests are skipped locally and FAIL under
``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rtcore.transports.http_server import HttpResponseWriter
from rtcore.wire.http import Request


BROWSER_DIR = Path(__file__).resolve().parent
REPO = BROWSER_DIR.parents[1]
NODE_MODULES = BROWSER_DIR / "node_modules"
SDK_DIR = NODE_MODULES / "centrifuge" / "dist"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".png": "image/png",
}


def unavailable(reason: str) -> None:
    """Skip locally; under CI a missing prerequisite is a failure."""
    if IN_CI:
        pytest.fail(f"browser tests cannot run under CI: {reason}")
    pytest.skip(reason)


def chromium() -> str:
    path = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        unavailable(f"no Chromium at {path} (apt-get install chromium)")
    return path


def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        unavailable("node is not installed")
    assert exe is not None
    out = subprocess.run(
        [exe, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    try:
        major = int(out.lstrip("v").split(".")[0])
    except ValueError:
        major = 0
    if major < 20:
        unavailable(f"Node.js 20+ needed, found {out or 'nothing'}")
    return exe


def ensure_node_modules() -> None:
    """``npm ci`` in tests/browser when the packages are missing."""
    wanted = [NODE_MODULES / "playwright-core" / "package.json", SDK_DIR / "centrifuge.js"]
    if all(p.exists() for p in wanted):
        return
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed")
    assert npm is not None
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=BROWSER_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0 or not all(p.exists() for p in wanted):
        unavailable(f"npm ci in {BROWSER_DIR} failed: {proc.stderr.strip()[-2000:]}")


def prerequisites() -> tuple[str, str]:
    """(chromium path, node path), with the npm packages installed."""
    browser = chromium()
    exe = node()
    ensure_node_modules()
    return browser, exe


def static_file(path: Path) -> Callable[[Request, HttpResponseWriter], None]:
    """An rtcore HTTP handler serving one file (read at each request)."""
    content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")

    def handler(request: Request, response: HttpResponseWriter) -> None:
        if request.method not in ("GET", "HEAD"):
            response.send(405, [("Allow", "GET, HEAD")])
            return
        body = path.read_bytes()
        response.send(
            200,
            [("Content-Type", content_type), ("Cache-Control", "no-store")],
            b"" if request.method == "HEAD" else body,
        )

    return handler


async def run_node(
    exe: str, browser: str, script: str, *args: str, timeout: float = 120.0
) -> tuple[int, str, str]:
    """Run a driver script of tests/browser; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        exe,
        str(BROWSER_DIR / script),
        *args,
        cwd=BROWSER_DIR,
        env={**os.environ, "CHROMIUM": browser},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"{script} timed out after {timeout}s\nstdout:\n{out.decode()}\nstderr:\n{err.decode()}"
        ) from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def describe(code: int, out: str, err: str) -> str:
    return f"exit {code}\nstdout:\n{out}\nstderr (last 6000 chars):\n{err[-6000:]}"


def mount_files(app: Any, files: dict[str, Path]) -> None:
    for route, path in files.items():
        app.mount(route, static_file(path))
