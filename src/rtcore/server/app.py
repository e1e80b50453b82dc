"""The HTTP application of an rtcore server: routes of one port.

* ``/connection/websocket``: the Centrifuge protocol over WebSocket (JSON, or
  Protobuf with the ``centrifuge-protobuf`` subprotocol / ``format=protobuf``).
* ``/connection/http_stream``, ``/connection/sse`` and ``/emulation``: the
  centrifuge-js fallbacks, and ``/connection/uni_websocket``, ``uni_sse``,
  ``uni_http_stream`` when enabled (``rtcore.transports.http_stream``,
  ``rtcore.transports.uni``, docs/transports.md).
* ``/health``: liveness (200 ``{}``); ``/debug/stats`` when ``http.debug_endpoint``.
* ``/`` and ``/admin/...``: the admin web UI when ``admin.enabled``
  (``rtcore.server.admin``), unless ``api.port`` moves it to the internal port.
* ``/api`` and ``/api/<method>``: the server API (see ``rtcore.server.api``) and
  ``/metrics`` when ``metrics.enabled``; both move to an internal port of
  their own when ``api.port`` is set (``rtcore.server.internal.InternalApp``).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import functools
import gc
import hmac
import ipaddress
import json
import logging
import math
import os
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from rtcore.backends.proxy import install_proxies
from rtcore.engine.ratelimit import TokenBucket
from rtcore.errors import HttpError
from rtcore.protocol import get_codec
from rtcore.server.admin import AdminEndpoints, mount_admin
from rtcore.server.api import ServerApi
from rtcore.server.internal import mount_internal
from rtcore.server.tracing import install as install_tracing
from rtcore.transports.http_server import (
    HttpResponseWriter,
    Server,
    ServerOptions,
    WebSocketRoute,
    current_connection,
)
from rtcore.transports.http_stream import mount_http_transports
from rtcore.transports.routing import HttpHandler, origin_checker
from rtcore.transports.uni import mount_uni_transports
from rtcore.transports.websocket import ProtocolWebSocketHandler
from rtcore.wire.deflate import DeflateOptions
from rtcore.wire.http import Request


if TYPE_CHECKING:
    from rtcore.engine.node import Node


__all__ = ["NodeApp", "serve_node", "ssl_context_from_config", "start_node"]

logger = logging.getLogger("rtcore.server.app")

PROTOBUF_SUBPROTOCOL = "centrifuge-protobuf"
JSON_SUBPROTOCOL = "centrifuge-json"


class PeerLimits:
    """``client.per_ip_connection_limit`` and ``client.per_ip_connect_rate_limit``.

    Client connections (WebSocket upgrades and streams, not plain HTTP
    requests) are counted per IP address, an IPv6 address by its /64 (what
    one host usually gets). A connection is counted from its admission to the
    end of its TCP connection.
    """

    # Buckets kept before full (idle) ones are dropped, and the hard cap.
    _PRUNE_AT = 10_000
    _MAX_BUCKETS = 100_000

    def __init__(self, limit: int, rate: float, burst: int) -> None:
        self.limit = limit
        self.rate = rate
        self.burst = burst
        self.open: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self.refused = 0

    @staticmethod
    def key(host: str) -> str:
        """The address an IPv4 client is counted by, or the /64 of an IPv6 one."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return host
        if isinstance(address, ipaddress.IPv6Address):
            mapped = address.ipv4_mapped
            if mapped is not None:
                return str(mapped)
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        return str(address)

    def admit(self, host: str) -> str:
        """Count a new connection from ``host``; HttpError 429 when over a limit. Returns its key."""
        key = self.key(host)
        if self.limit and self.open.get(key, 0) >= self.limit:
            self.refused += 1
            raise HttpError(
                429,
                "too many connections from this address",
                [("Retry-After", str(random.randint(5, 15)))],
            )
        if self.rate:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self._PRUNE_AT:
                    self._prune()
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
            if not bucket.allow():
                self.refused += 1
                wait = bucket.retry_after() + random.uniform(0, 1)
                raise HttpError(
                    429,
                    "too many new connections from this address, retry later",
                    [("Retry-After", str(max(1, math.ceil(wait))))],
                )
        self.open[key] = self.open.get(key, 0) + 1
        return key

    def release(self, key: str) -> None:
        left = self.open.get(key, 0) - 1
        if left > 0:
            self.open[key] = left
        else:
            self.open.pop(key, None)

    def _prune(self) -> None:
        # Full buckets remember nothing: dropping them changes no decision.
        for key in [k for k, b in self._buckets.items() if b.full()]:
            del self._buckets[key]
        if len(self._buckets) >= self._MAX_BUCKETS:
            self._buckets.clear()


class NodeApp:
    """Routes HTTP and WebSocket requests of one port to a node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        cfg = node.config
        ws_cfg = cfg.websocket
        deflate = (
            DeflateOptions(compress_threshold=ws_cfg.compression_min_size)
            if ws_cfg.compression
            else None
        )
        self._check_origin = origin_checker(cfg.client.allowed_origins, "websocket")
        # New client connections per second (mass reconnects); None: unlimited.
        rate = cfg.client.connect_rate_limit
        self.connect_limiter = TokenBucket(rate) if rate else None
        self.connections_refused = 0
        client = cfg.client
        self.peer_limits = (
            PeerLimits(
                client.per_ip_connection_limit,
                client.per_ip_connect_rate_limit,
                client.per_ip_connect_burst,
            )
            if client.per_ip_connection_limit or client.per_ip_connect_rate_limit
            else None
        )
        self._json = get_codec("json")
        self._protobuf = get_codec("protobuf")
        self.ws_route_json = self._route(deflate, self._json)
        self.ws_route_protobuf = self._route(deflate, self._protobuf)
        # Extra HTTP routes (path -> handler) mounted by other components.
        self.http_routes: dict[str, HttpHandler] = {"/health": self._health}
        if cfg.http.debug_endpoint:
            self.http_routes["/debug/stats"] = self._debug_stats
        self.http_prefixes: list[tuple[str, HttpHandler]] = []
        # WebSocket endpoints besides /connection/websocket (path -> router).
        self.ws_routers: dict[str, Callable[[Request], WebSocketRoute | None]] = {}
        # HTTP-streaming, SSE, /emulation and the unidirectional transports.
        self.http_transports = mount_http_transports(self)
        self.uni_transports = mount_uni_transports(self)
        # Pongs on uni_websocket count against the session's output limit too (3008).
        self.uni_transports.ws_route.max_output_size = cfg.client.queue_max_size
        # The server API (/api) and /metrics live here unless api.port gives
        # them an internal port of their own (rtcore.server.internal.InternalApp).
        self.api: ServerApi | None = None
        if cfg.api.port == 0:
            self.api = mount_internal(self)
        # The admin web UI, unless it belongs on the internal port.
        self.admin: AdminEndpoints | None = mount_admin(self, internal=False)

    def _route(self, deflate: DeflateOptions | None, codec: Any) -> WebSocketRoute:
        node = self.node
        return WebSocketRoute(
            handler_factory=lambda ws: ProtocolWebSocketHandler(ws, node, codec),
            subprotocols=(PROTOBUF_SUBPROTOCOL, JSON_SUBPROTOCOL),
            check_origin=self._check_origin,
            deflate=deflate,
            max_message_size=node.config.websocket.message_size_limit,
            # Pongs count against the same limit as the session's writes (3008).
            max_output_size=node.config.client.queue_max_size,
        )

    def mount(self, path: str, handler: HttpHandler, *, prefix: bool = False) -> None:
        if prefix:
            self.http_prefixes.append((path, handler))
        else:
            self.http_routes[path] = handler

    def admit_connection(self) -> None:
        """Apply ``client.connect_rate_limit``: 503 with a jittered Retry-After when over it.

        Refusing at the handshake costs no session; SDKs treat it as a
        transport failure and reconnect with backoff, and the jitter spreads
        the retries of a mass reconnect.
        """
        # First the limits per IP address (client.per_ip_*, PeerLimits): 429.
        peers = self.peer_limits
        conn = current_connection() if peers is not None else None
        if peers is None or conn is None or conn.peer_host is None:
            self._admit_rate()
            return
        release = functools.partial(peers.release, peers.admit(conn.peer_host))
        try:
            self._admit_rate()
        except HttpError:
            release()
            raise
        conn.call_when_closed(release)

    def _admit_rate(self) -> None:
        limiter = self.connect_limiter
        if limiter is not None and not limiter.allow():
            self.connections_refused += 1
            wait = limiter.retry_after() + random.uniform(
                0, max(1.0, self.node.config.client.reconnect_jitter)
            )
            raise HttpError(
                503,
                "too many new connections, retry later",
                [("Retry-After", str(max(1, round(wait))))],
            )

    def route_websocket(self, request: Request) -> WebSocketRoute | None:
        if request.path != "/connection/websocket":
            router = self.ws_routers.get(request.path)
            return router(request) if router is not None else None
        if not self.node.config.websocket.enabled:
            return None
        if self.node.closing:
            raise HttpError(503, "server is shutting down", [("Retry-After", "1")])
        self.admit_connection()
        offered = [p.strip() for p in request.header_values("sec-websocket-protocol", split=True)]
        params = request.query_params()
        wants_protobuf = PROTOBUF_SUBPROTOCOL in offered or "protobuf" in (
            params.get("format", []) + params.get("cf_protocol", [])
        )
        return self.ws_route_protobuf if wants_protobuf else self.ws_route_json

    def handle_http(self, request: Request, response: HttpResponseWriter) -> Awaitable[None] | None:
        handler = self.http_routes.get(request.path)
        if handler is None:
            for prefix, h in self.http_prefixes:
                if request.path.startswith(prefix):
                    handler = h
                    break
        if handler is None:
            response.send(404, [("Content-Type", "text/plain; charset=utf-8")], b"not found\n")
            return None
        return handler(request, response)

    def _health(self, request: Request, response: HttpResponseWriter) -> None:
        """200 ``{}`` while the engine works; 503 with the reason when it does not.

        A load balancer can then take a node whose Redis connection is down
        out of rotation.
        """
        problem = self.node.engine_problem()
        if problem is None:
            response.send(200, [("Content-Type", "application/json")], b"{}")
            return
        body = json.dumps({"error": problem}).encode()
        response.send(503, [("Content-Type", "application/json"), ("Retry-After", "1")], body)

    def _debug_stats(self, request: Request, response: HttpResponseWriter) -> None:
        """``http.debug_endpoint``: what a leak shows in, as JSON (soak runs read it).

        Needs the API key in a header (``X-API-Key`` or ``Authorization: apikey``)
        unless ``api.insecure``.
        """
        api = self.node.config.api
        if not api.insecure:
            given = request.header("x-api-key")
            scheme, _, value = (request.header("authorization") or "").partition(" ")
            if given is None and scheme.lower() == "apikey":
                given = value.strip()
            if not api.key or given is None or not hmac.compare_digest(given, api.key):
                response.send(401, [("Content-Type", "text/plain")], b"unauthorized\n")
                return
        hub = self.node.hub
        # Closed connections are reference cycles until a collection: count live objects.
        gc.collect()
        objects = gc.get_objects()
        rss = _rss_bytes()
        trimmed = None
        if "trim=1" in request.query.split("&"):
            # Hand free heap back to the system (glibc): what stays is in use
            # or fragmented, what goes was only kept by the allocator.
            trimmed = _malloc_trim()
        stats = {
            "asyncio_tasks": len(asyncio.all_tasks()),
            "open_files": _count_open_files(),
            "rss_bytes": rss,
            "rss_bytes_after_trim": _rss_bytes() if trimmed else None,
            "gc_objects": len(objects),
            # The most numerous types: what grows when the count does.
            "gc_types": dict(
                collections.Counter(type(o).__name__ for o in objects).most_common(40)
            ),
            "clients": hub.num_sessions,
            "channels": hub.num_channels,
            "subscriptions": hub.num_subscriptions,
            "timers": len(self.node.timers),
            "disconnects": {str(code): n for code, n in sorted(self.node.disconnects.items())},
            "peer_addresses": len(self.peer_limits.open) if self.peer_limits else 0,
            "connections_refused": self.connections_refused
            + (self.peer_limits.refused if self.peer_limits else 0),
        }
        response.send(200, [("Content-Type", "application/json")], json.dumps(stats).encode())


def _count_open_files() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return None


def _malloc_trim() -> bool:
    """``malloc_trim(0)``; False where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        return None


def ssl_context_from_config(node: Node) -> ssl.SSLContext | None:
    """A server TLS context from ``http.tls_cert``/``http.tls_key``, or None without TLS."""
    http = node.config.http
    if not http.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(http.tls_cert, http.tls_key)
    return ctx


async def start_node(node: Node) -> None:
    """Start ``node`` as the server runs it: configured proxies first (docs/proxy.md).

    OpenTelemetry spans are made from here on when a tracer provider is
    configured (``rtcore.server.tracing``).
    """
    install_tracing()
    if node.proxies is None:
        install_proxies(node)
    await node.start()


async def serve_node(
    node: Node, host: str | None = None, port: int | None = None, **kwargs: Any
) -> Server:
    """Start ``node`` and serve it on ``host:port`` (defaults from the config).

    Returns the listening server; ``await server.close()`` stops listening and
    ``await node.close()`` disconnects the clients. Public as ``rtcore.serve``.
    """
    await start_node(node)
    cfg = node.config
    app = kwargs.pop("app", None) or NodeApp(node)
    options = ServerOptions(
        handshake_timeout=cfg.websocket.handshake_timeout,
        close_timeout=cfg.websocket.close_timeout,
        max_body_size=cfg.http.max_body_size,
        max_pipelined_requests=cfg.http.max_pipelined_requests,
        linger_timeout=cfg.http.linger_timeout,
    )
    ssl_context = kwargs.pop("ssl", None)
    server = Server(app, options)
    host = host if host is not None else cfg.http.address
    ssl_context = ssl_context if ssl_context is not None else ssl_context_from_config(node)
    queues = cfg.http.accept_queues if kwargs.get("sock") is None else 1
    if queues > 1:
        kwargs["reuse_port"] = True
    await server.listen(
        host, port if port is not None else cfg.http.port, ssl=ssl_context, **kwargs
    )
    for _ in range(queues - 1):
        # Same port (the one bound if 0 was asked): the kernel spreads new
        # connections over the sockets, each with an accept queue of its own.
        await server.listen(host, server.port, ssl=ssl_context, **kwargs)
    return server
