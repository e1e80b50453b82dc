"""``rtcore serve``: run a node until SIGTERM/SIGINT, then shut it down gracefully.

One process serves the port (the WebSocket and HTTP transports, the server
API, metrics); with ``--workers N`` a supervisor (rtcore.server.workers) runs
N such processes sharing it. SIGHUP reloads the TLS certificate. The first
SIGTERM/SIGINT stops accepting connections, lets in-flight API requests
finish, disconnects clients (3001) spread over ``client.reconnect_jitter`` and
closes the node; a second one exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rtcore._version import __version__
from rtcore.config import Config, format_duration
from rtcore.server.cli.configs import ConfigSource, config_warnings, load
from rtcore.server.cli.exit_codes import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from rtcore.server.cli.logs import configure_logging


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.server.api import ServerApi
    from rtcore.transports.http_server import Server


__all__ = ["cmd_serve", "disconnect_spread"]

# The command's logger (the package's name): the start line is known by it (docs/cli.md).
logger = logging.getLogger("rtcore.server.cli")


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


async def _start_consumers(node: Node, config: Config, apps: Sequence[Any]) -> Any:
    """The enabled consumers, started, with their metrics on every ``/metrics``."""
    if not any(c.enabled for c in config.consumers):
        return None
    from rtcore.server.consumers import Consumers
    from rtcore.server.metrics import MetricsEndpoint

    try:
        consumers = Consumers(node, config.consumers)
    except ImportError as exc:
        raise _StartupError(f"cannot start the consumers: {exc}") from None
    for app in apps:
        endpoint = app.http_routes.get("/metrics")
        if isinstance(endpoint, MetricsEndpoint):
            endpoint.registry.register(consumers.collector)
    await consumers.start()
    return consumers


def _sentinel_settings(config: Config) -> Any:
    """The engine's Redis Sentinel settings, or None without Sentinel."""
    engine = config.engine
    if not engine.redis_sentinel_address:
        return None
    from rtcore.backends.redis import SentinelSettings

    return SentinelSettings(
        tuple(engine.redis_sentinel_address),
        engine.redis_sentinel_master_name,
        username=engine.redis_sentinel_user or None,
        password=engine.redis_sentinel_password or None,
        tls=engine.redis_sentinel_tls,
        tls_ca_file=engine.redis_sentinel_tls_server_ca_pem_file or None,
        tls_cert_file=engine.redis_sentinel_tls_cert_pem_file or None,
        tls_key_file=engine.redis_sentinel_tls_key_pem_file or None,
        tls_insecure_skip_verify=engine.redis_sentinel_tls_insecure_skip_verify,
    )


def _make_node(config: Config) -> Node:
    """A node with the configured engine (memory, or Redis broker + presence).

    With ``broker.type = "nats"``, NATS carries the publications and the
    engine keeps history and presence (Redis), or only presence (memory).
    """
    from rtcore.engine.node import Node

    if config.broker.type == "nats":
        from rtcore.backends.nats import NatsBroker

        history = presence = None
        if config.engine.type == "redis":
            from rtcore.backends.redis import create_redis_stores

            history, presence = create_redis_stores(
                list(config.engine.redis_address),
                config.engine.redis_prefix,
                presence_ttl=config.engine.presence_ttl,
                sentinel=_sentinel_settings(config),
            )
        nats = config.broker
        nats_broker = NatsBroker(
            list(nats.nats_url),
            prefix=nats.nats_prefix,
            name=f"rtcore {config.client.node_name}".strip(),
            connect_timeout=nats.nats_dial_timeout,
            request_timeout=nats.nats_write_timeout,
            history=history,
        )
        return Node(config, broker=nats_broker, presence_manager=presence)
    if config.engine.type == "redis":
        from rtcore.backends.redis import create_redis_engine

        broker, presence = create_redis_engine(
            list(config.engine.redis_address),
            config.engine.redis_prefix,
            presence_ttl=config.engine.presence_ttl,
            sentinel=_sentinel_settings(config),
        )
        from rtcore.backends.redis.maps import RedisMapStore

        maps = RedisMapStore(broker)
        return Node(config, broker=broker, presence_manager=presence, map_store=maps)
    return Node(config)


async def _serve(config: Config, *, reuse_port: bool = False) -> int:
    from rtcore import fanout, frames
    from rtcore.protocol import codes
    from rtcore.server.app import NodeApp, ssl_context_from_config, start_node
    from rtcore.server.gc_policy import install_gc_policy
    from rtcore.server.internal import InternalApp
    from rtcore.server.loop_monitor import LoopMonitor

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
        where = "in process"
        if engine.type == "redis":
            where = ", ".join(engine.redis_sentinel_address or engine.redis_address)
        if config.broker.type == "nats":
            where += "; NATS broker at " + ", ".join(config.broker.nats_url)
        logger.error("cannot start the %s engine (%s): %s", engine.type, where, exc)
        await node.close()
        return EXIT_ERROR
    context = ssl_context_from_config(node)
    app = NodeApp(node)
    servers: list[Server] = []
    api: ServerApi | None = app.api
    http = config.http
    apps: list[Any] = [app]
    consumers: Any = None
    try:
        servers.append(await _listen(node, app, http.address, http.port, context, reuse_port))
        internal_url = ""
        if config.api.port:
            internal = InternalApp(node)
            apps.append(internal)
            api = internal.api
            address = config.api.address or http.address
            servers.append(
                await _listen(node, internal, address, config.api.port, context, reuse_port)
            )
            internal_url = _url("https" if context else "http", address, servers[1].port)
        consumers = await _start_consumers(node, config, apps)
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

    # Running before the "listening" line: /metrics has the loop from the start.
    monitor = LoopMonitor()
    monitor.start()
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
    for warning in config_warnings(config):
        logger.warning("%s", warning)

    gc_policy = install_gc_policy(config.gc)
    await shutdown.requested.wait()
    started = time.monotonic()
    monitor.stop()
    if gc_policy is not None:
        gc_policy.uninstall()

    # 0. Stop consuming: unapplied commands stay at their sources for the other nodes.
    if consumers is not None:
        await consumers.close()

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
    config = load(args, overrides, announce=False)
    if config is None:
        return EXIT_ERROR
    configure_logging(config.log.level, config.log.format)
    source: ConfigSource = args.config_source
    if os.environ.get("RTCORE_WORKER_INDEX") is None:
        # Said once, by the supervisor or the single process.
        logger.info("%s", source.describe(), extra={"config": source.path or ""})
        for name in source.ignored:
            logger.warning("%s is not read (only %s is)", name, source.path)
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
