"""The ``rtcore`` command: run as a real process (console script / ``python -m rtcore``).

``serve`` tests start the server on a free port, talk to it with the
``websockets`` library (raw JSON protocol), centrifuge-python, ``cent`` and
aiohttp, then signal it and check the exit code and what clients saw: close
code 3001 "shutdown" spread over ``client.reconnect_jitter``, and an
immediate exit on a second signal.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import websockets

from rtcore import fanout, frames
from rtcore.auth import make_connect_token, make_subscribe_token
from rtcore.transports.http_server import run as run_loop


SECRET = "cli-tests-hmac-secret-0123456789abcdefghij"
KEY = "cli-test-api-key"


# -- helpers ---------------------------------------------------------------------------


def rtcore_script() -> str:
    script = Path(sys.executable).with_name("rtcore")
    if script.exists():
        return str(script)
    found = shutil.which("rtcore")
    assert found, "the rtcore console script is not installed"
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without configuration variables of the calling shell."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("RTCORE_") and "__" in k)}
    env.pop("RTCORE_CONFIG", None)
    env.update(extra)
    return env


def rtcore(
    *args: str, env: dict[str, str] | None = None, script: bool = False, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [rtcore_script()] if script else [sys.executable, "-m", "rtcore"]
    return subprocess.run(
        [*command, *args],
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        # Never a directory holding an rtcore.toml by chance: it would be read.
        cwd=cwd if cwd is not None else EMPTY_DIR,
    )


EMPTY_DIR = Path(tempfile.mkdtemp(prefix="rtcore-cli-tests-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, text: str, name: str = "rtcore.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def base_config(port: int, *, jitter: str = "2s", extra: str = "") -> str:
    return f"""
[http]
address = "127.0.0.1"
port = {port}

[client]
ping_interval = "0s"
pong_timeout = "0s"
reconnect_jitter = "{jitter}"

[client.token]
hmac_secret_key = "{SECRET}"

[api]
key = "{KEY}"

[metrics]
enabled = true

[[channel.namespaces]]
name = "chat"
allow_subscribe_for_client = true
{extra}
"""


class Served:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


def wait_port(port: int, proc: subprocess.Popen[str], log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rtcore serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}:\n{log.read_text()}")


@contextmanager
def serving(
    args: Sequence[str],
    port: int,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    script: bool = False,
    cwd: Path | None = None,
) -> Iterator[Served]:
    log = tmp_path / f"serve-{port}.log"
    command = [rtcore_script()] if script else [sys.executable, "-m", "rtcore"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*command, "serve", *args],
            env=env if env is not None else clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd if cwd is not None else tmp_path,
        )
    try:
        wait_port(port, proc, log)
        yield Served(proc, port, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 60)

    return run_loop(bounded())


class Conn:
    """A raw JSON-protocol client recording when and how it was closed."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.closed_at: float | None = None
        self.code: int | None = None
        self.reason = ""

    @classmethod
    async def open(cls, url: str, user: str, **kwargs: Any) -> Conn:
        ws = await websockets.connect(url, **kwargs)
        await ws.send(json.dumps({"id": 1, "connect": {"token": make_connect_token(SECRET, user)}}))
        reply = json.loads(await ws.recv())
        assert "connect" in reply, reply
        return cls(ws)

    async def wait_closed(self) -> None:
        try:
            async for _ in self.ws:
                pass
        except websockets.ConnectionClosed:
            pass
        self.closed_at = time.monotonic()
        self.code = self.ws.close_code
        self.reason = self.ws.close_reason or ""


# -- help, version, usage --------------------------------------------------------------


def test_help_and_usage_errors() -> None:
    result = rtcore("--help")
    assert result.returncode == 0
    for command in (
        "serve",
        "genconfig",
        "checkconfig",
        "defaultconfig",
        "defaultenv",
        "gentoken",
        "gensubtoken",
        "checktoken",
        "config",
        "version",
    ):
        assert command in result.stdout
    result = rtcore()
    assert result.returncode == 2 and "usage: rtcore" in result.stderr
    result = rtcore("serve", "--port", "99999")
    assert result.returncode == 2 and "port must be within 0..65535" in result.stderr
    result = rtcore("serve", "--workers", "0")
    assert result.returncode == 2 and "must be at least 1" in result.stderr
    result = rtcore("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_version_through_the_console_script() -> None:
    result = rtcore("version", script=True)
    assert result.returncode == 0, result.stderr
    from rtcore import __version__

    assert f"rtcore {__version__}" in result.stdout
    assert f"frame core: {frames.IMPLEMENTATION}, fan-out: {fanout.IMPLEMENTATION}" in result.stdout
    assert rtcore("--version").stdout.strip() == f"rtcore {__version__}"


# -- genconfig / checkconfig -----------------------------------------------------------


def test_genconfig_writes_private_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "rtcore.toml"
    result = rtcore("genconfig", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    first = target.read_text()
    assert "hmac_secret_key" in first and "# " in first
    result = rtcore("genconfig", "-o", str(target))
    assert result.returncode == 1
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert target.read_text() == first
    result = rtcore("genconfig", "-o", str(target), "--force")
    assert result.returncode == 0
    assert target.read_text() != first  # fresh secrets
    assert rtcore("checkconfig", "--config", str(target)).returncode == 0
    # The default name, in the working directory; and standard output.
    work = tmp_path / "work"
    work.mkdir()
    assert rtcore("genconfig", cwd=work).returncode == 0
    assert (work / "rtcore.toml").exists()
    printed = rtcore("genconfig", "-o", "-")
    assert printed.returncode == 0 and printed.stdout.startswith("# rtcore configuration")
    result = rtcore("genconfig", "-o", str(tmp_path / "missing-dir" / "x.toml"))
    assert result.returncode == 1 and "cannot write" in result.stderr


def test_checkconfig_reports_every_error(tmp_path: Path) -> None:
    good = write_config(tmp_path, base_config(8000))
    result = rtcore("checkconfig", "--config", str(good))
    assert result.returncode == 0, result.stderr
    assert f"configuration OK: {good} (given with --config)" in result.stdout
    bad = write_config(
        tmp_path,
        """
[http]
port = 123456
[client]
ping_interval = "soon"
[[channel.namespaces]]
name = "a b"
[log]
format = "xml"
""",
        "bad.toml",
    )
    result = rtcore("checkconfig", "--config", str(bad))
    assert result.returncode == 1
    assert f"invalid configuration in {bad} (4 errors)" in result.stderr
    for line in (
        "http.port: must be within 0..65535",
        "client.ping_interval: invalid duration 'soon'",
        "channel.namespaces[0].name: invalid namespace name 'a b'",
        "log.format: must be 'text' or 'json'",
    ):
        assert line in result.stderr, result.stderr


def test_checkconfig_environment_and_warnings(tmp_path: Path) -> None:
    path = write_config(tmp_path, base_config(8000))
    env = clean_env(RTCORE_HTTP__PORT="http", RTCORE_CONFIG=str(path))
    result = rtcore("checkconfig", env=env)
    assert result.returncode == 1
    assert (
        "http.port: expected an integer, got 'http' (set by environment variable RTCORE_HTTP__PORT)"
        in result.stderr
    )
    result = rtcore("checkconfig", env=clean_env(RTCORE_CONFIG=str(path)))
    assert result.returncode == 0
    assert f"configuration OK: {path} (from $RTCORE_CONFIG)" in result.stdout
    result = rtcore("checkconfig")
    assert result.returncode == 0
    assert "warning: api.key is empty" in result.stderr
    assert "warning: client.token has no key" in result.stderr
    result = rtcore("checkconfig", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "nope.yaml: no such file" in result.stderr


def test_genconfig_writes_the_format_of_its_extension(tmp_path: Path) -> None:
    import yaml

    loaded = {}
    for name in ("c.toml", "c.yaml", "c.yml", "c.json"):
        target = tmp_path / name
        result = rtcore("genconfig", "-o", str(target))
        assert result.returncode == 0, result.stderr
        text = target.read_text()
        suffix = target.suffix
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
            assert "# Connection tokens are JWTs" in text
        loaded[name] = data
        assert data["channel"]["namespaces"][0]["name"] == "chat"
        assert rtcore("checkconfig", "-c", str(target)).returncode == 0
    shapes = {name: _without_secrets(data) for name, data in loaded.items()}
    assert len({json.dumps(shape, sort_keys=True) for shape in shapes.values()}) == 1
    # -c/--config names the file to write, as in Centrifugo's genconfig.
    result = rtcore("genconfig", "-c", str(tmp_path / "centrifugo-style.json"))
    assert result.returncode == 0 and "(JSON," in result.stderr
    # Standard output: TOML, or --format.
    printed = rtcore("genconfig", "-o", "-", "--format", "yaml")
    assert printed.returncode == 0 and "\nhttp:\n" in printed.stdout
    result = rtcore("genconfig", "-o", str(tmp_path / "c.ini"))
    assert result.returncode == 2 and "cannot tell the format of" in result.stderr
    result = rtcore("genconfig", "-o", str(tmp_path / "d.json"), "--format", "yaml")
    assert result.returncode == 2 and "does not match the extension" in result.stderr


def _without_secrets(data: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))
    data["client"]["token"]["hmac_secret_key"] = "x"
    data["api"]["key"] = "x"
    return data


def test_commands_read_rtcore_toml_of_the_current_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result = rtcore("gentoken", "-u", "alice", cwd=work)
    assert result.returncode == 1
    assert "no configuration file (defaults and environment)" in result.stderr
    write_config(work, base_config(8000), "rtcore.yaml.bak")
    (work / "rtcore.yaml").write_text(
        f"client:\n  token:\n    hmac_secret_key: {SECRET}\n", encoding="utf-8"
    )
    result = rtcore("gentoken", "-u", "alice", cwd=work)
    assert result.returncode == 0, result.stderr
    assert "configuration rtcore.yaml (found in the current directory)" in result.stderr
    jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    # rtcore.toml comes first; the other file is named as not read.
    other = SECRET + "-toml"
    write_config(work, f'[client.token]\nhmac_secret_key = "{other}"\n', "rtcore.toml")
    result = rtcore("gentoken", "-u", "alice", cwd=work)
    assert "configuration rtcore.toml (found in the current directory)" in result.stderr
    assert "rtcore.yaml is not read (only rtcore.toml is)" in result.stderr
    jwt.decode(result.stdout.strip(), other, algorithms=["HS256"])
    # $RTCORE_CONFIG and -c win over the directory.
    named = write_config(tmp_path, base_config(8000), "named.toml")
    result = rtcore("gentoken", "-u", "a", cwd=work, env=clean_env(RTCORE_CONFIG=str(named)))
    assert f"configuration {named} (from $RTCORE_CONFIG)" in result.stderr
    jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    result = rtcore("gentoken", "-c", str(named), "-u", "a", cwd=work)
    assert f"configuration {named} (given with --config)" in result.stderr
    result = rtcore("checkconfig", cwd=work)
    assert "configuration OK: rtcore.toml (found in the current directory)" in result.stdout


def test_defaultconfig_and_defaultenv_are_the_defaults(tmp_path: Path) -> None:
    import shlex

    import yaml

    from rtcore.config import Config, config_from_mapping, load_config

    for fmt, parse in (("toml", tomllib.loads), ("yaml", yaml.safe_load), ("json", json.loads)):
        result = rtcore("defaultconfig", "--format", fmt)
        assert result.returncode == 0, result.stderr
        assert config_from_mapping(parse(result.stdout)) == Config()
    target = tmp_path / "all.yaml"
    assert rtcore("defaultconfig", "-o", str(target)).returncode == 0
    assert "# TCP port." in target.read_text()
    result = rtcore("defaultenv")
    assert result.returncode == 0
    env = {}
    for line in result.stdout.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            (env[name],) = shlex.split(value) or [""]
    assert env["RTCORE_HTTP__PORT"] == "8000"
    assert env["RTCORE_CLIENT__PING_INTERVAL"] == "25s"
    assert "# RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY=" in result.stdout
    assert load_config(None, env) == Config()


CENTRIFUGO_CONFIG = {
    "client": {
        "token": {"hmac_secret_key": SECRET},
        "allowed_origins": ["http://localhost:3000"],
        "ping_interval": "20s",
    },
    "admin": {"enabled": False, "password": "p", "secret": "s"},
    "http_api": {"key": KEY},
    "http_server": {"port": "9000"},
    "channel": {
        "namespaces": [
            {"name": "chat", "history_size": 10, "history_ttl": "300s", "force_recovery": True}
        ]
    },
    "log": {"file": "/var/log/centrifugo.log"},
}


def test_a_centrifugo_config_is_recognised_and_imported(tmp_path: Path) -> None:
    source = tmp_path / "config.json"
    source.write_text(json.dumps(CENTRIFUGO_CONFIG, indent=2), encoding="utf-8")
    result = rtcore("checkconfig", "-c", str(source))
    assert result.returncode == 1
    assert (
        f"{source}:17: http_api.key: unknown key: Centrifugo's http_api.key is api.key in rtcore"
        in result.stderr
    )
    assert "http_server.port: unknown key: Centrifugo's http_server.port is http.port" in (
        result.stderr
    )
    assert f"rtcore config import {source} -o rtcore.toml" in result.stderr
    target = tmp_path / "rtcore.toml"
    result = rtcore("config", "import", str(source), "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert "log.file: rtcore logs to standard error" in result.stderr
    text = target.read_text()
    assert "#   log.file: rtcore logs to standard error" in text
    converted = tomllib.loads(text)
    assert converted["api"] == {"key": KEY}
    assert converted["http"] == {"port": 9000}
    assert converted["client"]["ping_interval"] == "20s"
    assert converted["channel"]["namespaces"][0]["history_ttl"] == "5m"
    result = rtcore("checkconfig", "-c", str(target))
    assert result.returncode == 0, result.stderr
    # YAML out, and standard output.
    result = rtcore("config", "import", str(source), "-o", str(tmp_path / "rtcore.yaml"))
    assert result.returncode == 0 and rtcore("checkconfig", "-c", str(tmp_path / "rtcore.yaml"))
    printed = rtcore("config", "import", str(source))
    assert tomllib.loads(printed.stdout) == converted
    # What converts but cannot load yet is said, with exit code 1.
    broken = tmp_path / "broken.yaml"
    broken.write_text("channel:\n  namespaces:\n    - name: a b\n", encoding="utf-8")
    result = rtcore("config", "import", str(broken), "-o", "-")
    assert result.returncode == 1
    assert "the converted configuration does not load yet" in result.stderr
    assert "channel.namespaces[0].name: invalid namespace name 'a b'" in result.stderr
    assert rtcore("config").returncode == 2
    result = rtcore("config", "import", str(tmp_path / "missing.json"))
    assert result.returncode == 1 and "no such file" in result.stderr


# -- tokens ----------------------------------------------------------------------------


def test_gentoken(tmp_path: Path) -> None:
    path = write_config(tmp_path, base_config(8000))
    result = rtcore("gentoken", "--config", str(path), "-u", "alice", "--ttl", "1h")
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert 3590 <= claims["exp"] - time.time() <= 3600
    assert 'user "alice", expires in 1h' in result.stderr
    result = rtcore("gentoken", "--config", str(path), "-u", "bob", "--ttl", "0")
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert "exp" not in claims and "never expires" in result.stderr
    result = rtcore("gentoken", "--config", str(path), "-u", "carol")
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert abs(claims["exp"] - time.time() - 7 * 86400) < 60
    result = rtcore("gentoken", "--config", str(path), "-u", "x", "--ttl", "soon")
    assert result.returncode == 2 and "invalid duration" in result.stderr
    result = rtcore("gentoken", "--config", str(path))
    assert result.returncode == 2 and "-u/--user" in result.stderr
    result = rtcore("gentoken", "-u", "alice")
    assert result.returncode == 1
    assert "client.token.hmac_secret_key is not set" in result.stderr


def test_gensubtoken(tmp_path: Path) -> None:
    path = write_config(tmp_path, base_config(8000))
    result = rtcore(
        "gensubtoken", "-c", str(path), "-u", "alice", "-s", "chat:room", "--ttl", "600"
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["channel"]) == ("alice", "chat:room")
    assert 590 <= claims["exp"] - time.time() <= 600
    sub_secret = SECRET + "-subscriptions"
    path2 = write_config(
        tmp_path,
        base_config(8000) + f'\n[client.subscription_token]\nhmac_secret_key = "{sub_secret}"\n',
        "s.toml",
    )
    # --channel, the earlier long spelling, is still accepted.
    result = rtcore("gensubtoken", "--config", str(path2), "-u", "alice", "--channel", "chat:room")
    assert (
        jwt.decode(result.stdout.strip(), sub_secret, algorithms=["HS256"])["channel"]
        == "chat:room"
    )
    result = rtcore("gensubtoken", "--config", str(path), "-u", "alice")
    assert result.returncode == 2 and "needs the channel: -s CHANNEL" in result.stderr
    result = rtcore("gensubtoken", "--config", str(path), "-u", "alice", "-s", "")
    assert result.returncode == 2 and "the channel (-s) must not be empty" in result.stderr
    # -c is the configuration now: the earlier "-c CHANNEL" gets a pointer to -s.
    result = rtcore("gensubtoken", "-u", "alice", "-c", "chat:room")
    assert result.returncode == 2
    assert "give the channel with -s (or --channel)" in result.stderr
    assert "rtcore gensubtoken -u alice -s chat:room" in result.stderr
    help_text = rtcore("gensubtoken", "--help").stdout
    assert "-s CHANNEL, --channel CHANNEL" in help_text and "earlier spelling" in help_text


def test_checktoken(tmp_path: Path) -> None:
    path = write_config(tmp_path, base_config(8000))
    token = make_connect_token(SECRET, "alice", ttl=3600)
    result = rtcore("checktoken", "-c", str(path), token)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sub"] == "alice"
    assert "a connection token" in result.stderr
    assert "VALID against client.token (HS256); expires" in result.stderr
    assert "in 59m" in result.stderr or "in 1h" in result.stderr
    sub = make_subscribe_token(SECRET, "alice", "chat:room", ttl=None)
    result = rtcore("checktoken", "-c", str(path), sub)
    assert result.returncode == 0, result.stderr
    assert "a subscription token" in result.stderr and "never expires" in result.stderr
    # The reasons the server would give.
    expired = jwt.encode({"sub": "alice", "exp": int(time.time()) - 7200}, SECRET)
    result = rtcore("checktoken", "-c", str(path), expired)
    assert result.returncode == 1
    assert "INVALID against client.token: token expired (exp " in result.stderr
    assert "2h ago" in result.stderr
    wrong = make_connect_token("another-secret-0123456789abcdefghijklmnop", "alice")
    result = rtcore("checktoken", "-c", str(path), wrong)
    assert result.returncode == 1 and "INVALID against client.token:" in result.stderr
    assert "signature" in result.stderr
    result = rtcore("checktoken", "-c", str(path), "not.a.token")
    assert result.returncode == 1 and "not a token the server accepts" in result.stderr
    result = rtcore("checktoken", "-c", str(path), "--kind", "connection", sub)
    assert result.returncode == 1 and "channel claim" in result.stderr
    result = rtcore("checktoken", token)
    assert result.returncode == 1
    assert "client.token has no key in the defaults and environment" in result.stderr


# -- serve -----------------------------------------------------------------------------


def test_serve_spreads_shutdown_disconnects_and_exits_0(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, base_config(port, jitter="2s"))
    with serving(["--config", str(path)], port, tmp_path, script=True) as server:
        url = f"ws://127.0.0.1:{port}/connection/websocket"

        async def main() -> list[Conn]:
            conns = [await Conn.open(url, f"user{i}") for i in range(10)]
            waiters = [asyncio.ensure_future(c.wait_closed()) for c in conns]
            await asyncio.sleep(0.1)
            signalled = time.monotonic()
            server.signal(signal.SIGTERM)
            await asyncio.gather(*waiters)
            for c in conns:
                assert c.closed_at is not None
                assert c.closed_at - signalled < 2.0 + 1.5
            return conns

        conns = run(main())
        assert server.wait(timeout=15) == 0, server.log
    assert {(c.code, c.reason) for c in conns} == {(3001, "shutdown")}
    times = sorted(c.closed_at for c in conns if c.closed_at is not None)
    assert times[-1] - times[0] >= 1.0, times
    log = server.log
    assert f"listening on ws://127.0.0.1:{port}/connection/websocket" in log
    assert "engine: memory" in log and f"frame core: {frames.IMPLEMENTATION}" in log
    assert "disconnecting 10 client(s) with 3001 shutdown over 2s" in log


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, base_config(port, jitter="60s"))
    with serving(["--config", str(path)], port, tmp_path) as server:
        url = f"ws://127.0.0.1:{port}/connection/websocket"

        async def main() -> None:
            conns = [await Conn.open(url, f"u{i}") for i in range(4)]
            server.signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert server.proc.poll() is None  # still spreading the disconnects over 60 s
            started = time.monotonic()
            server.signal(signal.SIGINT)
            code = await asyncio.to_thread(server.wait, 5)
            assert time.monotonic() - started < 2.0
            assert code == 130
            for c in conns:
                await c.wait_closed()

        run(main())
    assert "received again: exiting at once" in server.log


def test_sigint_shutdown_and_sdk_reconnects_on_3001(tmp_path: Path) -> None:
    from centrifuge import Client, ClientEventHandler, ConnectingContext

    port = free_port()
    path = write_config(tmp_path, base_config(port, jitter="0s"))
    with serving(["--config", str(path)], port, tmp_path) as server:

        async def main() -> ConnectingContext:
            reconnecting: asyncio.Future[ConnectingContext] = (
                asyncio.get_running_loop().create_future()
            )

            class Events(ClientEventHandler):
                async def on_connecting(self, ctx: ConnectingContext) -> None:
                    if ctx.code == 3001 and not reconnecting.done():
                        reconnecting.set_result(ctx)

            client = Client(
                f"ws://127.0.0.1:{port}/connection/websocket",
                events=Events(),
                token=make_connect_token(SECRET, "sdk-user"),
                min_reconnect_delay=5.0,
            )
            await client.connect()
            await client.ready(timeout=5)
            server.signal(signal.SIGINT)
            ctx = await asyncio.wait_for(reconnecting, 10)
            await client.disconnect()
            return ctx

        ctx = run(main())
        assert (ctx.code, ctx.reason) == (3001, "shutdown")
        assert server.wait(timeout=15) == 0, server.log


def test_serve_api_and_metrics_end_to_end(tmp_path: Path) -> None:
    from cent import Client as CentClient, InfoRequest, PublishRequest

    port = free_port()
    path = write_config(tmp_path, base_config(port))
    with serving(["--config", str(path)], port, tmp_path) as server:

        async def main() -> None:
            conn = await Conn.open(f"ws://127.0.0.1:{port}/connection/websocket", "alice")
            await conn.ws.send(json.dumps({"id": 2, "subscribe": {"channel": "chat:room"}}))
            assert "subscribe" in json.loads(await conn.ws.recv())
            cent = CentClient(f"http://127.0.0.1:{port}/api", KEY)
            await asyncio.to_thread(
                cent.publish, PublishRequest(channel="chat:room", data={"hello": "world"})
            )
            push = json.loads(await conn.ws.recv())
            assert push["push"]["pub"]["data"] == {"hello": "world"}
            info = await asyncio.to_thread(cent.info, InfoRequest())
            assert info.nodes[0].num_clients == 1
            async with aiohttp.ClientSession() as http:

                async def metrics() -> str:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        assert resp.status == 200
                        return await resp.text()

                text = await metrics()
                assert "rtcore_node_num_clients 1.0" in text
                # rtcore serve times its event loop (a sample every 0.1 s) and its collections.
                assert 'rtcore_gc_pause_seconds_count{generation="0"}' in text
                for _ in range(50):
                    if re.search(r"^rtcore_event_loop_lag_seconds_count [1-9]", text, re.M):
                        break
                    await asyncio.sleep(0.1)
                    text = await metrics()
                else:
                    raise AssertionError("no event-loop lag sample in 5 s")
            await conn.ws.close()

        run(main())
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0


def test_api_examples_run_on_the_starter_config(tmp_path: Path) -> None:
    """docs/api.md's request bodies against `rtcore genconfig && rtcore serve`."""
    assert rtcore("genconfig", cwd=tmp_path).returncode == 0
    text = (tmp_path / "rtcore.toml").read_text()
    (key,) = re.findall(r'^key = "(.*)"$', text, re.M)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    requests = re.findall(
        r"curl -s -X POST http://127.0.0.1:8000(/api/\w+).*?-d '(.*?)'", docs, re.S
    )
    assert {path for path, _ in requests} >= {"/api/publish", "/api/subscribe", "/api/batch"}
    port = free_port()

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            for path, body in requests:
                async with http.post(
                    f"http://127.0.0.1:{port}{path}", data=body, headers={"X-API-Key": key}
                ) as response:
                    reply = await response.json()
                assert response.status == 200 and "error" not in reply, (path, body, reply)
                for item in reply.get("replies", []):
                    assert "error" not in item, (path, body, reply)
            history = {"channel": "chat:room", "limit": -1}
            async with http.post(
                f"http://127.0.0.1:{port}/api/history", json=history, headers={"X-API-Key": key}
            ) as response:
                assert (await response.json())["result"]["publications"]

    with serving(["--port", str(port)], port, tmp_path, cwd=tmp_path) as server:
        run(main())
        assert "configuration rtcore.toml (found in the current directory)" in server.log
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0


def test_flags_override_env_override_file(tmp_path: Path) -> None:
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    path = write_config(tmp_path, base_config(file_port))
    env = clean_env(RTCORE_HTTP__PORT=str(env_port), RTCORE_LOG__FORMAT="json")
    with serving(["--config", str(path)], env_port, tmp_path, env=env) as server:
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
    with serving(
        ["--config", str(path), "--port", str(flag_port), "--log-format", "text"],
        flag_port,
        tmp_path,
        env=env,
    ) as server:
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
        assert f"listening on ws://127.0.0.1:{flag_port}/" in server.log
        assert not server.log.lstrip().startswith("{")


def test_json_logs(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, base_config(port))
    with serving(
        ["--config", str(path), "--log-format", "json", "--log-level", "debug"], port, tmp_path
    ) as server:
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
        lines = [json.loads(line) for line in server.log.splitlines() if line.strip()]
    assert lines, "no log lines"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line)
        assert line["time"].endswith("Z")
    (start,) = [line for line in lines if "listening on" in line["message"]]
    assert start["port"] == port and start["address"] == "127.0.0.1"
    assert start["engine"] == "memory" and start["frame_core"] == frames.IMPLEMENTATION
    assert start["level"] == "info" and start["logger"] == "rtcore.server.cli"


def test_serve_refuses_bad_setups(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, base_config(port))
    result = rtcore("serve", "--config", str(path), "--workers", "4")
    assert result.returncode == 2
    assert 'needs engine.type = "redis"' in result.stderr
    redis_env = clean_env(RTCORE_ENGINE__TYPE="redis", RTCORE_HTTP__PORT="0")
    result = rtcore("serve", "--config", str(path), "--workers", "2", env=redis_env)
    assert result.returncode == 2 and "needs a fixed http.port" in result.stderr
    # A Redis engine that cannot be reached: a clear error naming the address, exit 1.
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    result = rtcore(
        "serve",
        "--config",
        str(path),
        env=clean_env(RTCORE_ENGINE__TYPE="redis", RTCORE_ENGINE__REDIS_ADDRESS=unreachable),
    )
    assert result.returncode == 1
    assert f"cannot start the redis engine ({unreachable})" in result.stderr
    bad = write_config(tmp_path, "[http]\nport = -3\n", "bad.toml")
    result = rtcore("serve", "--config", str(bad))
    assert result.returncode == 1
    assert "http.port: must be within 0..65535" in result.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = rtcore("serve", "--config", str(path), "--port", str(taken))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{taken}" in result.stderr


def test_api_on_an_internal_port(tmp_path: Path) -> None:
    port, api_port = free_port(), free_port()
    path = write_config(
        tmp_path, base_config(port).replace(f'key = "{KEY}"', f'key = "{KEY}"\nport = {api_port}')
    )
    with serving(["--config", str(path)], port, tmp_path) as server:
        wait_port(api_port, server.proc, server.log_path)

        async def main() -> None:
            async with aiohttp.ClientSession() as http:
                headers = {"X-API-Key": KEY}
                async with http.post(
                    f"http://127.0.0.1:{port}/api/info", data="{}", headers=headers
                ) as resp:
                    assert resp.status == 404
                async with http.post(
                    f"http://127.0.0.1:{api_port}/api/info", data="{}", headers=headers
                ) as resp:
                    assert resp.status == 200
                async with http.get(f"http://127.0.0.1:{api_port}/metrics") as resp:
                    assert resp.status == 200

        run(main())
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
    assert f"api: http://127.0.0.1:{api_port}/api" in server.log


@pytest.mark.redis
def test_serve_on_the_redis_engine(tmp_path: Path) -> None:
    import uuid

    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping()
    except redis.RedisError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("no Redis server on 127.0.0.1:6379, and CI=true requires it")
        pytest.skip("no Redis server on 127.0.0.1:6379")
    prefix = f"rtcore-cli-test-{uuid.uuid4().hex[:12]}"
    port = free_port()
    path = write_config(tmp_path, base_config(port))
    env = clean_env(
        RTCORE_ENGINE__TYPE="redis",
        RTCORE_ENGINE__REDIS_ADDRESS="redis://127.0.0.1:6379/0",
        RTCORE_ENGINE__REDIS_PREFIX=prefix,
    )
    try:
        with serving(["--config", str(path)], port, tmp_path, env=env) as server:

            async def main() -> None:
                conn = await Conn.open(f"ws://127.0.0.1:{port}/connection/websocket", "alice")
                await conn.ws.send(json.dumps({"id": 2, "subscribe": {"channel": "chat:redis"}}))
                assert "subscribe" in json.loads(await conn.ws.recv())
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(
                        f"http://127.0.0.1:{port}/api/publish",
                        headers={"X-API-Key": KEY},
                        data=json.dumps({"channel": "chat:redis", "data": {"via": "redis"}}),
                    ) as resp,
                ):
                    assert resp.status == 200
                push = json.loads(await conn.ws.recv())
                assert push["push"]["pub"]["data"] == {"via": "redis"}
                waiter = asyncio.ensure_future(conn.wait_closed())
                server.signal(signal.SIGTERM)
                await waiter
                assert (conn.code, conn.reason) == (3001, "shutdown")

            run(main())
            assert server.wait(timeout=15) == 0, server.log
        assert "engine: redis" in server.log
    finally:
        client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()


# -- TLS -------------------------------------------------------------------------------


def make_cert(directory: Path, name: str) -> tuple[Path, Path, bytes]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path = directory / f"{name}-cert.pem"
    key_path = directory / f"{name}-key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, pem


def served_cert_pem(port: int) -> str:
    return ssl.get_server_certificate(("127.0.0.1", port))


def same_cert(pem_a: str | bytes, pem_b: str | bytes) -> bool:
    def der(pem: str | bytes) -> bytes:
        return ssl.PEM_cert_to_DER_cert(pem.decode() if isinstance(pem, bytes) else pem)

    return der(pem_a) == der(pem_b)


def test_tls_wss_https_and_sighup_reload(tmp_path: Path) -> None:
    cert1, key1, pem1 = make_cert(tmp_path, "first")
    live_cert, live_key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    shutil.copy(cert1, live_cert)
    shutil.copy(key1, live_key)
    port = free_port()
    path = write_config(
        tmp_path,
        base_config(port).replace(
            "[client]", f'tls_cert = "{live_cert}"\ntls_key = "{live_key}"\n\n[client]'
        ),
    )
    with serving(["--config", str(path)], port, tmp_path) as server:
        assert f"listening on wss://127.0.0.1:{port}/connection/websocket" in server.log
        context = ssl.create_default_context(cafile=str(cert1))

        async def main() -> None:
            conn = await Conn.open(
                f"wss://127.0.0.1:{port}/connection/websocket", "alice", ssl=context
            )
            await conn.ws.send(json.dumps({"id": 2, "subscribe": {"channel": "chat:tls"}}))
            assert "subscribe" in json.loads(await conn.ws.recv())
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"https://127.0.0.1:{port}/api/publish",
                    ssl=context,
                    headers={"X-API-Key": KEY},
                    data=json.dumps({"channel": "chat:tls", "data": {"secure": True}}),
                ) as resp,
            ):
                assert resp.status == 200
            push = json.loads(await conn.ws.recv())
            assert push["push"]["pub"]["data"] == {"secure": True}
            await conn.ws.close()
            # Plain ws:// to the TLS port does not work.
            with pytest.raises(
                (websockets.InvalidMessage, OSError, EOFError, websockets.InvalidHandshake)
            ):
                await websockets.connect(
                    f"ws://127.0.0.1:{port}/connection/websocket", open_timeout=3
                )

        run(main())
        assert same_cert(served_cert_pem(port), pem1)

        # SIGHUP reloads the certificate from the same paths.
        cert2, key2, pem2 = make_cert(tmp_path, "second")
        shutil.copy(cert2, live_cert)
        shutil.copy(key2, live_key)
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not same_cert(served_cert_pem(port), pem2):
            assert time.monotonic() < deadline, server.log
            time.sleep(0.1)
        # A broken file is refused and the served certificate stays.
        live_cert.write_text("garbage")
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "TLS reload from" not in server.log:
            assert time.monotonic() < deadline, server.log
            time.sleep(0.1)
        assert same_cert(served_cert_pem(port), pem2)
        assert server.proc.poll() is None
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
    assert "SIGHUP: TLS certificate reloaded" in server.log


def test_sighup_without_tls_is_harmless(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, base_config(port))
    with serving(["--config", str(path)], port, tmp_path) as server:
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "nothing to reload" not in server.log:
            assert time.monotonic() < deadline, server.log
            time.sleep(0.05)
        assert server.proc.poll() is None
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
