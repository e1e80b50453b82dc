"""The ``rtcore`` command (also ``python -m rtcore``).

Subcommands:

* ``serve``: run a node (WebSocket, server API, metrics) until SIGTERM/SIGINT;
* ``genconfig``: write a commented starter TOML with fresh secrets;
* ``checkconfig``: validate a configuration and print every error;
* ``gentoken`` / ``gensubtoken``: mint connection / subscription JWTs;
* ``version``.

Configuration precedence: defaults < file (``--config`` or ``RTCORE_CONFIG``)
< ``RTCORE_<SECTION>__<KEY>`` environment variables < command-line flags.

Exit codes: 0 success; 1 invalid configuration or a runtime failure (the
message says which); 2 wrong command-line usage; 130 a second SIGTERM/SIGINT
during a graceful shutdown. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import signal
import ssl
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rtcore._version import __version__
from rtcore.config import Config, ConfigErrors, format_duration, load_config, parse_duration
from rtcore.errors import ConfigError


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.server.api import ServerApi
    from rtcore.transports.http_server import Server


__all__ = [
    "main",
    "build_parser",
    "configure_logging",
    "JsonFormatter",
    "TextFormatter",
    "disconnect_spread",
    "starter_config",
]

logger = logging.getLogger("rtcore.server.cli")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Connection tokens minted by ``gentoken`` live this long unless --ttl says otherwise.
DEFAULT_TOKEN_TTL = 7 * 86400.0

# Attributes every LogRecord has; anything else was passed with ``extra=``.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}


# -- logging ------------------------------------------------------------------------


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS and not k.startswith("_")
    }


class TextFormatter(logging.Formatter):
    """``2024-05-01T12:00:00.123Z INFO rtcore.engine.node: message key=value ...``.

    Values passed with ``extra=`` (such as ``client``, the connection id)
    follow the message as ``key=value``.
    """

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c in '"=' for c in text)) else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, the
    ``extra=`` values (e.g. ``client``) and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) as text or JSON."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


# -- helpers -----------------------------------------------------------------------------


def _config_path(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    path = getattr(args, "config", None)
    if path:
        return str(path)
    return env.get("RTCORE_CONFIG") or None


def _print_config_errors(error: ConfigError, where: str | None) -> None:
    errors = error.errors if isinstance(error, ConfigErrors) else [error]
    source = f" in {where}" if where else ""
    print(
        f"rtcore: invalid configuration{source} ({len(errors)} error{_plural(len(errors))}):",
        file=sys.stderr,
    )
    for e in errors:
        print(f"  {e}", file=sys.stderr)


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


def _load(args: argparse.Namespace, overrides: Mapping[str, Any] | None = None) -> Config | None:
    env = os.environ
    path = _config_path(args, env)
    try:
        return load_config(path, env, overrides)
    except ConfigError as exc:
        _print_config_errors(exc, path)
        return None


def _config_warnings(config: Config) -> list[str]:
    out = []
    if config.api.enabled and not config.api.insecure and not config.api.key:
        out.append(
            "api.key is empty: every server API request will get 401 (set api.key or api.insecure)"
        )
    if config.api.enabled and config.api.insecure:
        out.append("api.insecure is true: the server API accepts requests without a key")
    if not config.client.token.has_keys and not config.client.allow_anonymous_connect_without_token:
        out.append(
            "client.token has no key and anonymous connections are off: no client can connect "
            "(set client.token.hmac_secret_key)"
        )
    return out


# -- serve --------------------------------------------------------------------------------


async def disconnect_spread(sessions: Sequence[Any], window: float, disconnect: Any) -> None:
    """Disconnect ``sessions`` with ``disconnect``, spread over ``window`` seconds.

    The window is cut into one slot per session, sessions are shuffled into
    the slots and each is disconnected at a random moment within its slot: the
    disconnects (and so the clients' reconnects) are spread evenly over the
    window, with jitter, and the first and last are at least
    ``window * (n - 2) / n`` apart.
    """
    n = len(sessions)
    if n == 0:
        return
    if window <= 0 or n == 1:
        for session in sessions:
            session.disconnect(disconnect)
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    remaining = n
    slot = window / n

    def fire(session: Any) -> None:
        nonlocal remaining
        try:
            session.disconnect(disconnect)
        except Exception:  # noqa: BLE001 - one failing session must not stop the others
            logger.exception("disconnect at shutdown failed")
        remaining -= 1
        if remaining == 0 and not done.done():
            done.set_result(None)

    order = random.sample(list(sessions), n)
    handles = [loop.call_later((i + random.random()) * slot, fire, s) for i, s in enumerate(order)]
    try:
        await done
    finally:
        for handle in handles:
            handle.cancel()


class _Shutdown:
    """Signal handling: the first SIGTERM/SIGINT starts a graceful stop, a second exits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.requested = asyncio.Event()
        self.signals = 0
        # A --workers child's supervisor watch (kept referenced while it runs).
        self.watchdog: asyncio.Task[None] | None = None

    def on_signal(self, name: str) -> None:
        self.signals += 1
        if self.signals == 1:
            logger.info(
                "%s received: shutting down gracefully (send it again to exit at once)", name
            )
            self.requested.set()
            return
        logger.warning("%s received again: exiting at once", name)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)


async def _watch_supervisor(shutdown: _Shutdown, parent: int) -> None:
    """A ``--workers`` child stops gracefully when its supervisor is gone.

    Workers run in their own sessions (see rtcore.server.workers), so nothing else
    would stop them if the supervisor were killed with SIGKILL.
    """
    while not shutdown.requested.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            shutdown.on_signal("supervisor exit")
            return


def _reload_tls(context: ssl.SSLContext, config: Config) -> None:
    cert, key = config.http.tls_cert, config.http.tls_key
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        logger.error(
            "SIGHUP: TLS reload from %s failed, keeping the current certificate: %s", cert, exc
        )
        return
    logger.info("SIGHUP: TLS certificate reloaded from %s", cert)


def _url(scheme: str, host: str, port: int, path: str = "") -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}{path}"


async def _listen(
    node: Node,
    app: Any,
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    reuse_port: bool = False,
) -> Server:
    from rtcore.server.app import serve_node

    try:
        return await serve_node(node, host, port, app=app, ssl=context, reuse_port=reuse_port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise _StartupError(f"cannot listen on {host}:{port}: {reason}") from None


class _StartupError(Exception):
    pass


def _make_node(config: Config) -> Node:
    """A node with the configured engine (memory, or Redis broker + presence)."""
    from rtcore.engine.node import Node

    if config.engine.type == "redis":
        from rtcore.backends.redis import create_redis_engine

        broker, presence = create_redis_engine(
            list(config.engine.redis_address),
            config.engine.redis_prefix,
            presence_ttl=config.engine.presence_ttl,
        )
        return Node(config, broker=broker, presence_manager=presence)
    return Node(config)


async def _serve(config: Config, *, reuse_port: bool = False) -> int:
    from rtcore import fanout, frames
    from rtcore.protocol import codes
    from rtcore.server.api import InternalApp
    from rtcore.server.app import NodeApp, ssl_context_from_config, start_node

    loop = asyncio.get_running_loop()
    shutdown = _Shutdown(loop)
    for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
        loop.add_signal_handler(sig, shutdown.on_signal, name)

    if reuse_port and os.environ.get("RTCORE_WORKER_INDEX") is not None:
        shutdown.watchdog = loop.create_task(_watch_supervisor(shutdown, os.getppid()))

    node = _make_node(config)
    try:
        await start_node(node)
    except Exception as exc:  # noqa: BLE001 - reported to the operator, not raised
        engine = config.engine
        where = ", ".join(engine.redis_address) if engine.type == "redis" else "in process"
        logger.error("cannot start the %s engine (%s): %s", engine.type, where, exc)
        await node.close()
        return EXIT_ERROR
    context = ssl_context_from_config(node)
    app = NodeApp(node)
    servers: list[Server] = []
    api: ServerApi | None = app.api
    http = config.http
    try:
        servers.append(await _listen(node, app, http.address, http.port, context, reuse_port))
        internal_url = ""
        if config.api.port:
            internal = InternalApp(node)
            api = internal.api
            address = config.api.address or http.address
            servers.append(
                await _listen(node, internal, address, config.api.port, context, reuse_port)
            )
            internal_url = _url("https" if context else "http", address, servers[1].port)
    except _StartupError as exc:
        logger.error("%s", exc)
        for server in servers:
            await server.close(timeout=0)
        await node.close()
        return EXIT_ERROR

    if context is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload_tls, context, config)
    else:
        loop.add_signal_handler(
            signal.SIGHUP, lambda: logger.info("SIGHUP: nothing to reload (no TLS configured)")
        )

    port = servers[0].port
    scheme = "wss" if context else "ws"
    base = internal_url or _url("https" if context else "http", http.address, port)
    logger.info(
        "rtcore %s listening on %s (engine: %s, frame core: %s, fan-out: %s, api: %s, metrics: %s)",
        __version__,
        _url(scheme, http.address, port, "/connection/websocket"),
        config.engine.type,
        frames.IMPLEMENTATION,
        fanout.IMPLEMENTATION,
        f"{base}/api" if config.api.enabled else "off",
        f"{base}/metrics" if config.metrics.enabled else "off",
        extra={
            "address": http.address,
            "port": port,
            "engine": config.engine.type,
            "frame_core": frames.IMPLEMENTATION,
            "fanout": fanout.IMPLEMENTATION,
        },
    )
    # (An empty api.key or token key is logged by the API handler / token verifier.)
    if config.api.enabled and config.api.insecure:
        logger.warning("api.insecure is true: the server API accepts requests without a key")

    await shutdown.requested.wait()
    started = time.monotonic()

    # 1. Stop accepting connections; let in-flight API requests finish (bounded).
    for server in servers:
        server.stop_accepting()
    if api is not None and not await api.drain(http.shutdown_timeout):
        logger.warning(
            "%d server API request(s) still running after %s; shutting down anyway",
            api.in_flight,
            format_duration(http.shutdown_timeout),
        )
    # 2. Disconnect clients with 3001 "shutdown", spread over the reconnect window.
    sessions = list(node.hub.sessions())
    window = config.client.reconnect_jitter
    logger.info(
        "disconnecting %d client(s) with %d %s over %s",
        len(sessions),
        codes.SHUTDOWN.code,
        codes.SHUTDOWN.reason,
        format_duration(window),
    )
    await disconnect_spread(sessions, window, codes.SHUTDOWN)
    # 3. Close the node (anyone left gets 3001 too) and the listeners.
    await node.close(codes.SHUTDOWN)
    for server in servers:
        await server.close(
            codes.SHUTDOWN.code, codes.SHUTDOWN.reason, timeout=config.websocket.close_timeout
        )
    logger.info("stopped after %.1fs", time.monotonic() - started)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["http.address"] = args.host
    if args.port is not None:
        overrides["http.port"] = args.port
    if args.log_level is not None:
        overrides["log.level"] = args.log_level
    if args.log_format is not None:
        overrides["log.format"] = args.log_format
    config = _load(args, overrides)
    if config is None:
        return EXIT_ERROR
    configure_logging(config.log.level, config.log.format)
    if args.workers > 1:
        if config.engine.type == "memory":
            logger.error(
                '--workers %d needs engine.type = "redis": the memory engine keeps channels, '
                "history and presence inside one process, so several workers would not see each "
                "other's clients; run one worker or configure the Redis engine",
                args.workers,
            )
            return EXIT_USAGE
        if not config.http.port:
            logger.error("--workers %d needs a fixed http.port (workers share it)", args.workers)
            return EXIT_USAGE
        from rtcore.server.workers import supervise

        return supervise(args.argv, args.workers)
    from rtcore.transports.http_server import run

    try:
        return int(run(_serve(config, reuse_port=args.reuse_port)))
    except Exception:
        logger.exception("the server failed")
        return EXIT_ERROR


# -- genconfig ---------------------------------------------------------------------------


def starter_config(hmac_secret: str | None = None, api_key: str | None = None) -> str:
    """A commented starter TOML; fresh random secrets unless given."""
    hmac_secret = hmac_secret or secrets.token_urlsafe(32)
    api_key = api_key or secrets.token_urlsafe(32)
    return f'''# rtcore configuration, written by `rtcore genconfig`.
#
# Every key is listed in docs/config.md. Environment variables
# RTCORE_<SECTION>__<KEY> (for example RTCORE_HTTP__PORT=9000 or
# RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY=...) override this file, and
# command-line flags (rtcore serve --port 9000) override both.
# Check the file with: rtcore checkconfig --config <this file>

[http]
# Interface and port for WebSocket clients and the server API
# ("0.0.0.0" listens on every interface).
address = "127.0.0.1"
port = 8000
# TLS for wss:// and https://: PEM files, reloaded on SIGHUP.
# tls_cert = "/etc/rtcore/cert.pem"
# tls_key = "/etc/rtcore/key.pem"

[client]
# Origins browsers may connect from: "*" for any, or patterns such as
# "https://*.example.com". Connections without an Origin header are accepted.
allowed_origins = []
# On shutdown, clients are disconnected (code 3001) spread over this window,
# so their reconnects arrive spread out too.
reconnect_jitter = "5s"

[client.token]
# Connection tokens are JWTs signed with this secret (HS256/HS384/HS512).
# Mint one with: rtcore gentoken --config <this file> -u <user id>
hmac_secret_key = "{hmac_secret}"

[api]
# Key of the server API: send it as "X-API-Key: <key>" or
# "Authorization: apikey <key>" with POST /api/<method>.
key = "{api_key}"
# port = 9000   # serve /api and /metrics on an internal port of their own

[metrics]
# Prometheus metrics at GET /metrics.
enabled = true

[log]
# debug, info, warning or error; "text" or "json" (one object per line).
level = "info"
format = "text"

[channel.without_namespace]
# Channels without a namespace ("news", "updates"): any client with a valid
# connection token may subscribe; the last 100 publications (5 minutes) are
# kept so that clients recover what they missed during a short disconnect.
allow_subscribe_for_client = true
presence = true
allow_presence_for_subscriber = true
history_size = 100
history_ttl = "5m"
force_recovery = true
allow_history_for_subscriber = true

# Namespaces: channels named "chat:..." get these options.
# [[channel.namespaces]]
# name = "chat"
# presence = true
# join_leave = true
# history_size = 100
# history_ttl = "5m"
# force_recovery = true
# allow_subscribe_for_client = true
'''


def cmd_genconfig(args: argparse.Namespace) -> int:
    text = starter_config()
    if args.output == "-":
        sys.stdout.write(text)
        return EXIT_OK
    path = Path(args.output)
    if path.exists() and not args.force:
        print(f"rtcore: {path} already exists; use --force to overwrite it", file=sys.stderr)
        return EXIT_ERROR
    try:
        # The file holds secrets: readable by its owner only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        print(f"rtcore: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {path} (with a new HMAC secret and API key; keep it private)", file=sys.stderr)
    return EXIT_OK


# -- checkconfig ---------------------------------------------------------------------------


def cmd_checkconfig(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_ERROR
    path = _config_path(args, os.environ)
    for warning in _config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"configuration OK{f': {path}' if path else ' (defaults and environment)'}")
    return EXIT_OK


# -- tokens ---------------------------------------------------------------------------------


def _ttl(value: str) -> float:
    try:
        return parse_duration(value if not value.strip().isdigit() else int(value), "--ttl")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _hmac_secret(config: Config, section: str, where: str | None) -> str | None:
    token = (
        config.client.subscription_token
        if section == "client.subscription_token"
        else config.client.token
    )
    secret = token.hmac_secret_key if token is not None else None
    if not secret:
        source = where or "the defaults and environment"
        print(
            f"rtcore: {section}.hmac_secret_key is not set in {source}; tokens are signed with it "
            f"(rtcore genconfig writes a config with one)",
            file=sys.stderr,
        )
        return None
    return secret


def _expiry_text(ttl: float) -> str:
    return f"expires in {format_duration(ttl)}" if ttl else "never expires"


def cmd_gentoken(args: argparse.Namespace) -> int:
    from rtcore.auth import make_connect_token

    config = _load(args)
    if config is None:
        return EXIT_ERROR
    secret = _hmac_secret(config, "client.token", _config_path(args, os.environ))
    if secret is None:
        return EXIT_ERROR
    token = make_connect_token(secret, args.user, ttl=args.ttl or None)
    print(
        f'HS256 connection token for user "{args.user}", {_expiry_text(args.ttl)}:', file=sys.stderr
    )
    print(token)
    return EXIT_OK


def cmd_gensubtoken(args: argparse.Namespace) -> int:
    from rtcore.auth import make_subscribe_token

    config = _load(args)
    if config is None:
        return EXIT_ERROR
    section = (
        "client.subscription_token"
        if config.client.subscription_token is not None
        else "client.token"
    )
    secret = _hmac_secret(config, section, _config_path(args, os.environ))
    if secret is None:
        return EXIT_ERROR
    if not args.channel:
        print("rtcore: --channel must not be empty", file=sys.stderr)
        return EXIT_USAGE
    token = make_subscribe_token(secret, args.user, args.channel, ttl=args.ttl or None)
    print(
        f'HS256 subscription token for user "{args.user}" and channel "{args.channel}", '
        f"{_expiry_text(args.ttl)}:",
        file=sys.stderr,
    )
    print(token)
    return EXIT_OK


# -- version ----------------------------------------------------------------------------------


def version_text() -> str:
    from rtcore import fanout, frames

    try:
        import uvloop

        loop = f"uvloop {getattr(uvloop, '__version__', 'unknown version')}"
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        loop = "asyncio (uvloop not installed)"
    py = sys.version.split()[0]
    return (
        f"rtcore {__version__}\n"
        f"frame core: {frames.IMPLEMENTATION}, fan-out: {fanout.IMPLEMENTATION}\n"
        f"Python {py} ({sys.implementation.name}), {loop}"
    )


def cmd_version(args: argparse.Namespace) -> int:
    print(version_text())
    return EXIT_OK


# -- argument parsing ----------------------------------------------------------------------


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be within 0..65535, got {port}")
    return port


def _workers(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of workers, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtcore",
        description="Real-time messaging server speaking the Centrifuge client protocol v2.",
        epilog="Configuration: defaults < --config file < RTCORE_<SECTION>__<KEY> environment "
        "variables < flags. See docs/cli.md and docs/config.md.",
    )
    parser.add_argument("--version", action="version", version=f"rtcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            metavar="FILE",
            help="configuration file: .toml, .yaml/.yml or .json (default: $RTCORE_CONFIG)",
        )

    p = sub.add_parser(
        "serve", help="run the server", description="Run the server until SIGTERM/SIGINT."
    )
    config_arg(p)
    p.add_argument("--host", help="interface to listen on (http.address)")
    p.add_argument("--port", type=_port, help="port to listen on (http.port)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="log.level")
    p.add_argument("--log-format", choices=("text", "json"), help="log.format")
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="worker processes sharing the port (SO_REUSEPORT); more than 1 needs the Redis engine",
    )
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "genconfig",
        help="write a starter configuration with fresh secrets",
        description="Write a commented starter TOML configuration with a new HMAC secret "
        "and API key.",
    )
    p.add_argument(
        "-o",
        "--output",
        default="rtcore.toml",
        help="file to write ('-': stdout; default: rtcore.toml)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_genconfig)

    p = sub.add_parser(
        "checkconfig",
        help="validate a configuration",
        description="Validate the configuration (file + environment) and print every error "
        "with its key path.",
    )
    config_arg(p)
    p.set_defaults(func=cmd_checkconfig)

    p = sub.add_parser(
        "gentoken",
        help="mint a connection token",
        description="Mint an HS256 connection JWT signed with client.token.hmac_secret_key.",
    )
    config_arg(p)
    p.add_argument(
        "-u", "--user", required=True, help="user id (the 'sub' claim; '' for anonymous)"
    )
    p.add_argument(
        "-t",
        "--ttl",
        type=_ttl,
        default=DEFAULT_TOKEN_TTL,
        help="lifetime: seconds or a duration such as 1h, 7d (0: never expires; default: 7d)",
    )
    p.set_defaults(func=cmd_gentoken)

    p = sub.add_parser(
        "gensubtoken",
        help="mint a subscription token",
        description="Mint an HS256 subscription JWT (client.subscription_token, else "
        "client.token).",
    )
    config_arg(p)
    p.add_argument("-u", "--user", required=True, help="user id (the 'sub' claim)")
    p.add_argument("-c", "--channel", required=True, help="channel the token grants")
    p.add_argument(
        "-t",
        "--ttl",
        type=_ttl,
        default=DEFAULT_TOKEN_TTL,
        help="lifetime: seconds or a duration such as 1h, 7d (0: never expires; default: 7d)",
    )
    p.set_defaults(func=cmd_gensubtoken)

    p = sub.add_parser("version", help="print version and implementation details")
    p.set_defaults(func=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    # The worker supervisor re-runs the same command line.
    args.argv = raw
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
