"""Proxies to the application backend: Centrifugo's HTTP proxy protocol.

A proxy turns a client event into an HTTP POST of Centrifugo's JSON request
to a configured backend URL and applies the backend's answer
(``{"result": ...}``, ``{"error": ...}`` or ``{"disconnect": ...}``):

* ``connect`` (``client.proxy.connect``): connections without a token; the
  result gives the user, info, data, meta, expiry and server-side
  subscriptions.
* ``refresh`` (``client.proxy.refresh``): connections that expire are
  refreshed by the server (the client is told ``expires: false``); at expiry
  the backend prolongs the connection or lets it end with disconnect 3005.
* ``subscribe``, ``publish``, ``sub_refresh`` (channel namespaces'
  ``*_proxy_enabled`` / ``*_proxy_name``) and ``rpc`` (RPC namespaces).

:func:`install_proxies` plugs the proxies into a node's hooks
(:mod:`rtcore.engine.events`); :meth:`rtcore.engine.node.Node.start` calls it when the
configuration enables a proxy, so embedders get them without code. Where a
proxy is configured it decides; elsewhere the hooks registered before the
node started keep deciding, and without such a hook the namespace options do.

Failures never hang a client: a timeout, a refused connection, a non-200
status or a malformed answer is logged and becomes error 100 (internal,
temporary) for connect/subscribe/publish/rpc; a failed refresh or
sub_refresh is tried again after ``proxy.refresh_retry_interval`` while the
connection or subscription lives on. See docs/proxy.md.

The HTTP client is a small HTTP/1.1 client on asyncio streams: ``httptools``
parses responses, kept-alive connections are reused per endpoint, and one
deadline bounds each call (connect, send and response).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import inspect
import json
import logging
import math
import re
import ssl
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httptools

from rtcore._version import __version__
from rtcore.auth import SubscribeOverride
from rtcore.engine.events import (
    ChannelEvent,
    ConnectEvent,
    Credentials,
    DisconnectEvent,
    PublishEvent,
    RPCEvent,
    SubscribeEvent,
    SubscribeReply,
    SubscriptionGrant,
)
from rtcore.engine.session import CLOSED
from rtcore.protocol import codes
from rtcore.protocol.codes import ClientError, DisconnectError


if TYPE_CHECKING:
    from rtcore.config import ChannelOptions, Config, ProxyOptions, RpcOptions
    from rtcore.engine.node import Node
    from rtcore.engine.session import ClientSession


__all__ = [
    "HttpEndpoint",
    "ProxyError",
    "ProxyHooks",
    "ProxyResponseError",
    "ProxyStatusError",
    "ProxyTimeout",
    "ProxyUnavailable",
    "install_proxies",
    "proxies_configured",
]

logger = logging.getLogger("rtcore.backends.proxy")

#: Largest backend response body read (larger: the call fails).
MAX_RESPONSE_SIZE = 8 << 20
#: Idle kept-alive connections kept per endpoint.
MAX_IDLE_CONNECTIONS = 64
#: Idle connections older than this are closed instead of reused.
IDLE_TIMEOUT = 30.0
_READ_SIZE = 65536
_UINT32_MAX = 2**32 - 1
_STD_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_OVERRIDE_NAMES = (
    "presence",
    "join_leave",
    "force_push_join_leave",
    "force_positioning",
    "force_recovery",
)


# -- errors --------------------------------------------------------------------


class ProxyError(Exception):
    """A proxy call that produced no usable answer."""


class ProxyUnavailable(ProxyError):
    """The backend could not be reached, or the connection broke."""


class ProxyTimeout(ProxyError):
    """No complete response within the proxy's timeout."""


class ProxyStatusError(ProxyError):
    """The backend answered with an HTTP status other than 200."""

    def __init__(self, status: int) -> None:
        super().__init__(f"unexpected HTTP status {status}")
        self.status = status


class ProxyResponseError(ProxyError):
    """The backend's answer is not the documented JSON."""


class _StaleConnection(Exception):
    """A reused connection was closed by the server before any response byte."""


# -- HTTP/1.1 client -------------------------------------------------------------


class _Response:
    """httptools callbacks collecting one response."""

    __slots__ = (
        "parser",
        "status",
        "headers",
        "body",
        "size",
        "informational",
        "headers_done",
        "complete",
        "keep_alive",
    )

    def __init__(self) -> None:
        self.parser: Any = None
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.informational = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.informational = 100 <= self.status < 200
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_RESPONSE_SIZE:
            raise ProxyResponseError(f"response body larger than {MAX_RESPONSE_SIZE} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.informational:
            # 1xx: the real response follows.
            self.headers = {}
            self.headers_done = False
            self.informational = False
            return
        self.complete = True
        # Asked here: once the callback returns the parser is reset for the next message.
        self.keep_alive = self.parser.should_keep_alive()

    @property
    def delimited_by_eof(self) -> bool:
        """A response without Content-Length or chunked framing ends at EOF."""
        if self.status in (204, 304):
            return False
        te = self.headers.get(b"transfer-encoding", b"").lower()
        return b"content-length" not in self.headers and b"chunked" not in te


class _Connection:
    __slots__ = ("reader", "writer", "idle_since", "generation")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, generation: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        # HttpEndpoint.close() starts a new generation: older connections are not reused.
        self.generation = generation

    def usable(self, now: float) -> bool:
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and now - self.idle_since < IDLE_TIMEOUT
        )

    def close(self) -> None:
        self.writer.close()


def _header_bytes(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


class HttpEndpoint:
    """POSTs JSON bodies to one URL over reused HTTP/1.1 connections.

    Args:
        url: an ``http://`` or ``https://`` URL (validated by the config model).
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        self.url = url
        self.host = parts.hostname
        default_port = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default_port
        self._ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        if parts.query:
            target += "?" + quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != default_port:
            host = f"{host}:{self.port}"
        self._head = (
            f"POST {target} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nUser-Agent: rtcore/{__version__}\r\n"
        ).encode("ascii")
        self._idle: list[_Connection] = []
        self._generation = 0

    def __repr__(self) -> str:
        return f"HttpEndpoint({self.url!r})"

    async def post(
        self, body: bytes, headers: list[tuple[str, str]], timeout: float
    ) -> tuple[int, bytes]:
        """POST ``body``; returns ``(status, response body)``.

        Raises:
            ProxyTimeout: no complete response within ``timeout`` seconds.
            ProxyUnavailable: connecting failed or the connection broke.
            ProxyResponseError: the response is not valid HTTP or too large.
        """
        request = bytearray(self._head)
        for name, value in headers:
            request += name.encode("ascii") + b": " + _header_bytes(value) + b"\r\n"
        request += b"Content-Length: %d\r\n\r\n" % len(body)
        request += body
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(bytes(request))
        except TimeoutError:
            raise ProxyTimeout(f"no response within {timeout:g}s") from None

    async def close(self) -> None:
        """Close the idle connections; those in use close when their call ends.

        A later :meth:`post` opens a new connection.
        """
        self._generation += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        conn = self._take_idle()
        if conn is not None:
            try:
                return await self._roundtrip(conn, request)
            except _StaleConnection:
                # The server closed the kept-alive connection without answering
                # (an idle close racing this request): once more on a new one.
                pass
        conn = await self._open()
        try:
            return await self._roundtrip(conn, request)
        except _StaleConnection:
            raise ProxyUnavailable("the server closed the connection without a response") from None

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now):
                return conn
            conn.close()
        return None

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self._ssl is not None else None,
                limit=_READ_SIZE,
            )
        except OSError as exc:
            raise ProxyUnavailable(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        return _Connection(reader, writer, self._generation)

    async def _roundtrip(self, conn: _Connection, request: bytes) -> tuple[int, bytes]:
        keep = False
        received = False
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            resp = _Response()
            parser = httptools.HttpResponseParser(resp)
            resp.parser = parser
            while not resp.complete:
                data = await conn.reader.read(_READ_SIZE)
                if not data:
                    if resp.headers_done and resp.delimited_by_eof:
                        resp.complete = True
                        break
                    if not received:
                        raise _StaleConnection
                    raise ProxyUnavailable("the connection closed in the middle of the response")
                received = True
                try:
                    parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    if isinstance(exc.__context__, ProxyResponseError):
                        raise exc.__context__ from None
                    if not resp.complete:
                        raise ProxyResponseError(f"invalid HTTP response: {exc}") from None
                    break  # bytes after the response: the connection is not reused
                else:
                    keep = resp.complete and resp.keep_alive
            return resp.status, b"".join(resp.body)
        except (ConnectionError, OSError) as exc:
            keep = False
            if not received:
                raise _StaleConnection from exc
            raise ProxyUnavailable(f"connection error: {exc.strerror or exc}") from None
        finally:
            if (
                keep
                and conn.generation == self._generation
                and len(self._idle) < MAX_IDLE_CONNECTIONS
            ):
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()


# -- JSON in and out -------------------------------------------------------------


class _RawJSON:
    """Bytes that are already JSON (client payloads), spliced into a request as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _encode_request(fields: dict[str, Any]) -> bytes:
    parts = [
        _dumps(key) + b":" + (value.data if isinstance(value, _RawJSON) else _dumps(value))
        for key, value in fields.items()
    ]
    return b"{" + b",".join(parts) + b"}"


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(
            body.decode("utf-8"), parse_float=_finite_float, parse_constant=_reject_constant
        )
    except UnicodeDecodeError:
        raise ProxyResponseError("the body is not UTF-8") from None
    except ValueError as exc:
        raise ProxyResponseError(f"the body is not JSON ({exc})") from None


def _object(value: Any, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProxyResponseError(f"{what} must be an object")
    return value


def _string(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProxyResponseError(f"{what}.{key} must be a string")
    return value


def _boolean(obj: dict[str, Any], key: str, what: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ProxyResponseError(f"{what}.{key} must be true or false")
    return value


def _integer(obj: dict[str, Any], key: str, what: str, lo: int, hi: int) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProxyResponseError(f"{what}.{key} must be an integer in {lo}..{hi}")
    return value


def _payload(obj: dict[str, Any], json_key: str, b64_key: str, what: str) -> bytes | None:
    """``b64<key>`` (standard base64) wins over ``<key>`` (any JSON value)."""
    encoded = obj.get(b64_key)
    if encoded is not None and encoded != "":
        if not isinstance(encoded, str) or len(encoded) % 4 or not _STD_B64_RE.fullmatch(encoded):
            raise ProxyResponseError(f"{what}.{b64_key} must be standard base64 with padding")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ProxyResponseError(
                f"{what}.{b64_key} must be standard base64 with padding"
            ) from None
    value = obj.get(json_key)
    if value is None:
        return None
    return _dumps(value)


def _override(value: Any, what: str) -> SubscribeOverride | None:
    obj = _object(value, what)
    if obj is None:
        return None
    flags: dict[str, bool | None] = {}
    for name in _OVERRIDE_NAMES:
        item = _object(obj.get(name), f"{what}.{name}")
        flags[name] = None if item is None else _boolean(item, "value", f"{what}.{name}")
    return SubscribeOverride(**flags)


def _expire_at(obj: dict[str, Any], what: str) -> int:
    return _integer(obj, "expire_at", what, 0, 2**63 - 1)


def _refusal(response: dict[str, Any]) -> ClientError | DisconnectError | None:
    """The backend's ``disconnect`` (checked first) or ``error``, if any."""
    disconnect = _object(response.get("disconnect"), "disconnect")
    if disconnect is not None:
        code = _integer(disconnect, "code", "disconnect", 3000, 4999)
        if not code:
            raise ProxyResponseError("disconnect.code is required")
        reason = _string(disconnect, "reason", "disconnect")
        if len(reason.encode("utf-8")) > 123:
            raise ProxyResponseError("disconnect.reason is longer than 123 bytes")
        return DisconnectError(codes.Disconnect(code, reason))
    error = _object(response.get("error"), "error")
    if error is not None:
        code = _integer(error, "code", "error", 1, _UINT32_MAX)
        if not code:
            raise ProxyResponseError("error.code is required")
        return ClientError(
            code, _string(error, "message", "error"), _boolean(error, "temporary", "error")
        )
    return None


# -- one configured proxy --------------------------------------------------------


class _Proxy:
    """A configured proxy: its endpoint and how requests to it are built."""

    __slots__ = (
        "name",
        "endpoint",
        "timeout",
        "binary",
        "include_meta",
        "static_headers",
        "http_headers",
        "emulated_headers",
    )

    def __init__(self, name: str, options: ProxyOptions, endpoint: HttpEndpoint) -> None:
        self.name = name
        self.endpoint = endpoint
        self.timeout = options.timeout
        self.binary = options.binary_encoding
        self.include_meta = options.include_connection_meta
        self.static_headers = list(options.http.static_headers.items())
        # lowercase name -> the configured spelling
        self.http_headers = {h.lower(): h for h in options.http_headers}
        self.emulated_headers = {h.lower(): h for h in options.emulated_headers}

    def headers(
        self, session: ClientSession, emulated: dict[str, str] | None
    ) -> list[tuple[str, str]]:
        """Static headers, then emulated ones, then the transport's (later wins)."""
        out: dict[str, tuple[str, str]] = {n.lower(): (n, v) for n, v in self.static_headers}
        if emulated and self.emulated_headers:
            for lower, spelled in self.emulated_headers.items():
                value = emulated.get(lower)
                if value is not None:
                    out[lower] = (spelled, value)
        if self.http_headers:
            transport: dict[str, str] = session.request_info.get("headers") or {}
            for lower, spelled in self.http_headers.items():
                value = transport.get(lower)
                if value is not None:
                    out[lower] = (spelled, value)
        return list(out.values())

    async def call(self, fields: dict[str, Any], headers: list[tuple[str, str]]) -> dict[str, Any]:
        """POST the request; the response object (raises ProxyError)."""
        status, body = await self.endpoint.post(_encode_request(fields), headers, self.timeout)
        if status != 200:
            raise ProxyStatusError(status)
        response = _parse_json(body)
        if not isinstance(response, dict):
            raise ProxyResponseError("the body must be a JSON object")
        return response


# -- server-side expiry of connections and subscriptions ----------------------------


class _Expiry:
    """Refresh deadlines of one session: the connection's and its subscriptions'.

    A timer-wheel target: at the earliest deadline it calls the refresh or
    sub_refresh proxy, then re-arms itself.
    """

    __slots__ = ("hooks", "session", "conn_at", "subs", "busy")

    def __init__(self, hooks: ProxyHooks, session: ClientSession) -> None:
        self.hooks = hooks
        self.session = session
        # Unix seconds (0: not tracked).
        self.conn_at = 0.0
        self.subs: dict[str, float] = {}
        self.busy = False

    def schedule(self) -> None:
        timers = self.hooks.node.timers
        deadlines = [t for t in (self.conn_at, *self.subs.values()) if t]
        if not deadlines or self.session.state == CLOSED:
            timers.cancel(self)
            return
        delay = max(0.0, min(deadlines) - self.hooks.node.wall_clock())
        timers.schedule_in(self, delay)

    def on_timer(self, now: float) -> None:
        if not self.busy:
            self.busy = True
            self.hooks.node.spawn(self._run())

    async def _run(self) -> None:
        hooks, session = self.hooks, self.session
        try:
            if self.conn_at and self.conn_at <= hooks.node.wall_clock():
                try:
                    await hooks.refresh_connection(self)
                except Exception:  # noqa: BLE001 - keep the connection, try again later
                    logger.exception("refresh of %s failed", session.client_id)
                    self.conn_at = hooks.node.wall_clock() + hooks.retry_interval
            for channel, at in list(self.subs.items()):
                if session.state == CLOSED:
                    break
                if at and at <= hooks.node.wall_clock():
                    try:
                        await hooks.refresh_subscription(self, channel)
                    except Exception:  # noqa: BLE001 - keep the subscription, try again later
                        logger.exception(
                            "sub_refresh of %s in %s failed", session.client_id, channel
                        )
                        if channel in self.subs:
                            self.subs[channel] = hooks.node.wall_clock() + hooks.retry_interval
        finally:
            self.busy = False
            if session.state == CLOSED:
                hooks.forget(session)
            else:
                self.schedule()


# -- the hooks ---------------------------------------------------------------------


def _channel_kinds() -> tuple[str, ...]:
    return ("subscribe", "publish", "sub_refresh")


def proxies_configured(config: Config) -> bool:
    """Whether the configuration enables any proxy."""
    client = config.client.proxy
    if client.connect.enabled or client.refresh.enabled:
        return True
    channel = config.channel
    for opts in (channel.without_namespace, *channel.namespaces):
        if any(getattr(opts, f"{kind}_proxy_enabled") for kind in _channel_kinds()):
            return True
    rpc = config.rpc
    return any(o.proxy_enabled for o in (rpc.without_namespace, *rpc.namespaces))


def install_proxies(node: Node) -> ProxyHooks | None:
    """Install the configured proxies into ``node``'s hooks (idempotent).

    Hooks registered before the call become the fallback where no proxy is
    configured (other channel namespaces, RPC methods, connections with a
    token). :meth:`Node.start <rtcore.engine.node.Node.start>` calls this; call it
    yourself only to install proxies into a node you never start. Returns
    the installed :class:`ProxyHooks`, or ``None`` when no proxy is enabled.
    """
    existing = getattr(node, "proxies", None)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    if not proxies_configured(node.config):
        return None
    hooks = ProxyHooks(node)
    hooks.install()
    node.proxies = hooks
    return hooks


HookFn = Callable[..., Any]


class ProxyHooks:
    """The proxies of one node and the hooks that call them."""

    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config
        self.retry_interval = config.proxy.refresh_retry_interval
        self._endpoints: dict[str, HttpEndpoint] = {}
        client = config.client.proxy
        self.connect = self._proxy("connect", client.connect) if client.connect.enabled else None
        self.refresh = self._proxy("refresh", client.refresh) if client.refresh.enabled else None
        self._named: dict[str, _Proxy] = {
            p.name: self._proxy(p.name, p) for p in config.proxy.named if p.endpoint
        }
        channel = config.channel
        self._channel_defaults: dict[str, _Proxy | None] = {}
        for kind in _channel_kinds():
            options = getattr(channel.proxy, kind)
            self._channel_defaults[kind] = (
                self._proxy("default", options) if options.endpoint else None
            )
        self._rpc_default = (
            self._proxy("default", config.rpc.proxy) if config.rpc.proxy.endpoint else None
        )
        self._rpc_namespaces = {ns.name: ns for ns in config.rpc.namespaces}
        self._rpc_boundary = config.rpc.namespace_boundary
        # id(ChannelOptions) -> kind -> proxy (None: not proxied)
        self._resolved: dict[int, dict[str, _Proxy | None]] = {}
        # Emulated headers of each session, for proxies that forward them.
        self._emulated_names = {h.lower() for p in self._all_proxies() for h in p.emulated_headers}
        self._emulated: weakref.WeakKeyDictionary[ClientSession, dict[str, str]] = (
            weakref.WeakKeyDictionary()
        )
        # Connection expiry taken over at connect, armed once the session is connected.
        self._pending_expiry: weakref.WeakKeyDictionary[ClientSession, int] = (
            weakref.WeakKeyDictionary()
        )
        self._expiries: dict[ClientSession, _Expiry] = {}
        self._previous: dict[str, HookFn] = {}
        self.sub_refresh_enabled = any(
            opts.sub_refresh_proxy_enabled
            for opts in (channel.without_namespace, *channel.namespaces)
        )

    def _proxy(self, name: str, options: ProxyOptions) -> _Proxy:
        endpoint = self._endpoints.get(options.endpoint)
        if endpoint is None:
            endpoint = self._endpoints[options.endpoint] = HttpEndpoint(options.endpoint)
        return _Proxy(name, options, endpoint)

    def _all_proxies(self) -> list[_Proxy]:
        out = [p for p in (self.connect, self.refresh, self._rpc_default) if p is not None]
        out += [p for p in self._channel_defaults.values() if p is not None]
        out += list(self._named.values())
        return out

    # -- installation ---------------------------------------------------------------

    def install(self) -> None:
        config = self.node.config
        channel = config.channel
        scopes = (channel.without_namespace, *channel.namespaces)
        wanted: dict[str, HookFn] = {}
        if self.connect is not None or self.refresh is not None or self._emulated_names:
            wanted["on_connecting"] = self.on_connecting
        if any(o.subscribe_proxy_enabled or o.sub_refresh_proxy_enabled for o in scopes):
            wanted["on_subscribe"] = self.on_subscribe
        if any(o.publish_proxy_enabled for o in scopes):
            wanted["on_publish"] = self.on_publish
        rpc = config.rpc
        if any(o.proxy_enabled for o in (rpc.without_namespace, *rpc.namespaces)):
            wanted["on_rpc"] = self.on_rpc
        if self.refresh is not None or self.sub_refresh_enabled:
            wanted["on_connect"] = self.on_connect
            wanted["on_disconnect"] = self.on_disconnect
        if self.sub_refresh_enabled:
            wanted["on_unsubscribe"] = self.on_unsubscribe
        for name, fn in wanted.items():
            previous = getattr(self.node, name)
            if previous is not None:
                self._previous[name] = previous
            setattr(self.node, name, fn)

    async def close(self) -> None:
        """Stop the refresh timers and close the HTTP connections."""
        for expiry in list(self._expiries.values()):
            self.node.timers.cancel(expiry)
        self._expiries.clear()
        for endpoint in self._endpoints.values():
            await endpoint.close()

    async def _call_previous(self, name: str, event: Any) -> Any:
        fn = self._previous.get(name)
        if fn is None:
            return None
        result = fn(event)
        if inspect.isawaitable(result):
            result = await result
        return result

    # -- requests -------------------------------------------------------------------

    def _base(self, proxy: _Proxy, session: ClientSession, *, user: bool = True) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "client": session.client_id,
            "transport": session.transport.name,
            "protocol": "protobuf" if session.codec.binary else "json",
            "encoding": "binary" if proxy.binary else "json",
        }
        if user:
            fields["user"] = session.user
            if proxy.include_meta and session.meta is not None:
                fields["meta"] = session.meta
        return fields

    def _data(
        self, proxy: _Proxy, session: ClientSession, data: bytes, fields: dict[str, Any]
    ) -> None:
        if not data:
            return
        if proxy.binary:
            fields["b64data"] = base64.b64encode(data).decode("ascii")
            return
        if session.codec.binary:
            # Protobuf clients send any bytes; a JSON request can carry only JSON.
            try:
                json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
            except ValueError:
                logger.info(
                    "client data is not JSON and proxy %s has no binary_encoding: refused",
                    proxy.name,
                    extra=session.log_fields,
                )
                raise ClientError(107, "bad request: data must be JSON") from None
        fields["data"] = _RawJSON(data)

    async def _request(
        self, proxy: _Proxy, kind: str, session: ClientSession, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Call ``proxy``; a failure is logged and becomes error 100."""
        try:
            return await proxy.call(fields, proxy.headers(session, self._emulated.get(session)))
        except ProxyError as exc:
            self._log_failure(proxy, kind, session, exc)
            raise codes.ERROR_INTERNAL from None

    def _log_failure(
        self, proxy: _Proxy, kind: str, session: ClientSession, exc: Exception
    ) -> None:
        what = "malformed response from" if isinstance(exc, ProxyResponseError) else "failed:"
        logger.error(
            "%s proxy %s (%s) %s %s",
            kind,
            proxy.name,
            proxy.endpoint.url,
            what,
            exc,
            extra={**session.log_fields, "proxy": proxy.name, "event": kind},
        )

    def _malformed(
        self, proxy: _Proxy, kind: str, session: ClientSession, exc: Exception
    ) -> ClientError:
        self._log_failure(proxy, kind, session, exc)
        return codes.ERROR_INTERNAL

    # -- connect ----------------------------------------------------------------------

    def _capture_emulated(self, session: ClientSession, headers: dict[str, str]) -> None:
        if not self._emulated_names or not headers:
            return
        kept: dict[str, str] = {}
        for name, value in headers.items():
            lower = name.lower()
            if lower not in self._emulated_names:
                continue
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                logger.info(
                    "emulated header %s holds CR, LF or NUL: connection refused",
                    name,
                    extra=session.log_fields,
                )
                raise DisconnectError(codes.BAD_REQUEST)
            kept[lower] = value
        if kept:
            self._emulated[session] = kept

    async def on_connecting(self, event: ConnectEvent) -> Credentials | None:
        session = event.client
        self._capture_emulated(session, event.headers)
        credentials: Credentials | None
        if self.connect is not None and not event.token:
            credentials = await self._connect(self.connect, event)
        else:
            credentials = await self._call_previous("on_connecting", event)
        if self.refresh is not None:
            # Server-side refresh: the client is told the connection does not
            # expire; at expire_at the refresh proxy decides.
            base = credentials if credentials is not None else event.credentials
            if base is not None and base.expire_at:
                if base.expire_at <= self.node.wall_clock():
                    raise codes.ERROR_EXPIRED
                self._pending_expiry[session] = base.expire_at
                credentials = dataclasses.replace(base, expire_at=0)
        return credentials

    async def _connect(self, proxy: _Proxy, event: ConnectEvent) -> Credentials | None:
        session = event.client
        fields = self._base(proxy, session, user=False)
        if event.name:
            fields["name"] = event.name
        if event.version:
            fields["version"] = event.version
        self._data(proxy, session, event.data, fields)
        response = await self._request(proxy, "connect", session, fields)
        try:
            refusal = _refusal(response)
            if refusal is not None:
                raise refusal
            result = _object(response.get("result"), "result")
            if result is None:
                return None
            credentials = self._credentials(result)
        except ProxyResponseError as exc:
            raise self._malformed(proxy, "connect", session, exc) from None
        if credentials.expire_at and credentials.expire_at <= self.node.wall_clock():
            raise codes.ERROR_EXPIRED
        return credentials

    @staticmethod
    def _credentials(result: dict[str, Any]) -> Credentials:
        user = result.get("user", "")
        if not isinstance(user, str):
            raise ProxyResponseError("result.user must be a string")
        meta = _object(result.get("meta"), "result.meta")
        subscriptions: dict[str, SubscriptionGrant] = {}
        channels = result.get("channels")
        if channels is not None:
            if not isinstance(channels, list) or not all(
                isinstance(c, str) and c for c in channels
            ):
                raise ProxyResponseError("result.channels must be a list of channel names")
            for channel in channels:
                subscriptions[channel] = SubscriptionGrant()
        subs = _object(result.get("subs"), "result.subs")
        for channel, value in (subs or {}).items():
            where = f"result.subs[{channel!r}]"
            if not channel:
                raise ProxyResponseError("result.subs has an empty channel name")
            options = _object(value, where) or {}
            subscriptions[channel] = SubscriptionGrant(
                info=_payload(options, "info", "b64info", where),
                data=_payload(options, "data", "b64data", where),
                override=_override(options.get("override"), where + ".override"),
            )
        return Credentials(
            user=user,
            info=_payload(result, "info", "b64info", "result"),
            expire_at=_expire_at(result, "result"),
            meta=meta,
            data=_payload(result, "data", "b64data", "result"),
            subscriptions=subscriptions,
        )

    async def on_connect(self, session: ClientSession) -> None:
        expire_at = self._pending_expiry.pop(session, 0)
        if expire_at and session.state != CLOSED:
            expiry = self._expiry(session)
            expiry.conn_at = expire_at
            expiry.schedule()
        await self._call_previous("on_connect", session)

    async def on_disconnect(self, event: DisconnectEvent) -> None:
        self.forget(event.client)
        await self._call_previous("on_disconnect", event)

    def _expiry(self, session: ClientSession) -> _Expiry:
        expiry = self._expiries.get(session)
        if expiry is None:
            expiry = self._expiries[session] = _Expiry(self, session)
        return expiry

    def forget(self, session: ClientSession) -> None:
        """Drop a closed session's refresh deadlines."""
        expiry = self._expiries.pop(session, None)
        if expiry is not None:
            self.node.timers.cancel(expiry)

    async def refresh_connection(self, expiry: _Expiry) -> None:
        """Ask the refresh proxy whether the connection lives on (at its expiry)."""
        proxy = self.refresh
        session = expiry.session
        if proxy is None:  # conn_at is only set with a refresh proxy
            expiry.conn_at = 0.0
            return
        fields = self._base(proxy, session)
        try:
            response = await proxy.call(fields, proxy.headers(session, self._emulated.get(session)))
            result = _object(response.get("result"), "result")
            expired = result is None or _boolean(result, "expired", "result")
            expire_at = 0 if result is None else _expire_at(result, "result")
            info = None if result is None else _payload(result, "info", "b64info", "result")
            meta = None if result is None else _object(result.get("meta"), "result.meta")
        except ProxyError as exc:
            # The backend is down or confused: keep the connection and ask again later.
            self._log_failure(proxy, "refresh", session, exc)
            expiry.conn_at = self.node.wall_clock() + self.retry_interval
            return
        if session.state == CLOSED:
            return
        if not expired and expire_at <= self.node.wall_clock():
            logger.info(
                "refresh proxy %s returned no future expire_at: connection expired",
                proxy.name,
                extra=session.log_fields,
            )
            expired = True
        if expired:
            session.disconnect(codes.CONNECTION_EXPIRED)
            return
        expiry.conn_at = expire_at
        if info is not None:
            session.info = info
        if meta is not None:
            session.meta = meta

    # -- subscribe / sub_refresh --------------------------------------------------------

    def _channel_proxy(self, opts: ChannelOptions, kind: str) -> _Proxy | None:
        resolved = self._resolved.get(id(opts))
        if resolved is None:
            resolved = {}
            for k in _channel_kinds():
                proxy: _Proxy | None = None
                if getattr(opts, f"{k}_proxy_enabled"):
                    name = getattr(opts, f"{k}_proxy_name")
                    proxy = self._channel_defaults[k] if name == "default" else self._named[name]
                resolved[k] = proxy
            self._resolved[id(opts)] = resolved
        return resolved[kind]

    def _options(self, channel: str) -> ChannelOptions:
        opts = self.node.channels.options(channel)
        if opts is None:  # the node checked the channel before calling the hook
            raise codes.ERROR_UNKNOWN_CHANNEL
        return opts

    async def on_subscribe(self, event: SubscribeEvent) -> Any:
        session, channel = event.client, event.channel
        opts = self._options(channel)
        proxy = self._channel_proxy(opts, "subscribe")
        result: Any
        if proxy is not None:
            result = await self._subscribe(proxy, event)
        elif "on_subscribe" in self._previous:
            result = await self._call_previous("on_subscribe", event)
        else:
            # Node.subscribe_session's rule when no hook decides.
            result = opts.allow_subscribe_for_client and (
                session.user != "" or opts.allow_subscribe_for_anonymous
            )
        if isinstance(result, SubscribeReply) and result.expire_at:
            if proxy is not None and result.expire_at <= self.node.wall_clock():
                raise codes.ERROR_EXPIRED
            if self._channel_proxy(opts, "sub_refresh") is not None and session.state != CLOSED:
                # Server-side refresh: the client is told the subscription does
                # not expire; at expire_at the sub_refresh proxy decides. The
                # node creates the subscription right after this hook returns.
                expiry = self._expiry(session)
                expiry.subs[channel] = result.expire_at
                expiry.schedule()
                result = dataclasses.replace(result, expire_at=0)
        return result

    async def _subscribe(self, proxy: _Proxy, event: SubscribeEvent) -> SubscribeReply:
        session = event.client
        fields = self._base(proxy, session)
        fields["channel"] = event.channel
        self._data(proxy, session, event.data, fields)
        response = await self._request(proxy, "subscribe", session, fields)
        try:
            refusal = _refusal(response)
            if refusal is not None:
                raise refusal
            result = _object(response.get("result"), "result") or {}
            return SubscribeReply(
                info=_payload(result, "info", "b64info", "result"),
                data=_payload(result, "data", "b64data", "result"),
                expire_at=_expire_at(result, "result"),
                override=_override(result.get("override"), "result.override"),
            )
        except ProxyResponseError as exc:
            raise self._malformed(proxy, "subscribe", session, exc) from None

    async def on_unsubscribe(self, event: ChannelEvent) -> None:
        session, channel = event.client, event.channel
        expiry = self._expiries.get(session)
        # A new subscription to the channel may already exist (server API
        # unsubscribes run concurrently with client commands): keep its entry.
        if expiry is not None and channel not in session.subscriptions:
            expiry.subs.pop(channel, None)
        await self._call_previous("on_unsubscribe", event)

    async def refresh_subscription(self, expiry: _Expiry, channel: str) -> None:
        """Ask the sub_refresh proxy whether a subscription lives on (at its expiry)."""
        session = expiry.session
        state = session.subscriptions.get(channel)
        proxy = self._channel_proxy(state.options, "sub_refresh") if state is not None else None
        if state is None or proxy is None:
            # Unsubscribed, or the subscribe failed after the hook.
            expiry.subs.pop(channel, None)
            return
        fields = self._base(proxy, session)
        fields["channel"] = channel
        try:
            response = await proxy.call(fields, proxy.headers(session, self._emulated.get(session)))
            result = _object(response.get("result"), "result")
            expired = result is None or _boolean(result, "expired", "result")
            expire_at = 0 if result is None else _expire_at(result, "result")
            info = None if result is None else _payload(result, "info", "b64info", "result")
        except ProxyError as exc:
            self._log_failure(proxy, "sub_refresh", session, exc)
            if session.subscriptions.get(channel) is state:
                expiry.subs[channel] = self.node.wall_clock() + self.retry_interval
            return
        if session.state == CLOSED or session.subscriptions.get(channel) is not state:
            return  # disconnected or resubscribed meanwhile
        if not expired and expire_at <= self.node.wall_clock():
            logger.info(
                "sub_refresh proxy %s returned no future expire_at for %s: subscription expired",
                proxy.name,
                channel,
                extra=session.log_fields,
            )
            expired = True
        if expired:
            expiry.subs.pop(channel, None)
            if state.server_side:
                session.disconnect(codes.SUBSCRIPTION_EXPIRED)
            else:
                await self.node.unsubscribe_session(session, channel, codes.UNSUBSCRIBE_EXPIRED)
            return
        expiry.subs[channel] = expire_at
        if info is not None:
            state.chan_info = info

    # -- publish ---------------------------------------------------------------------

    async def on_publish(self, event: PublishEvent) -> Any:
        session, channel = event.client, event.channel
        opts = self._options(channel)
        proxy = self._channel_proxy(opts, "publish")
        if proxy is None:
            if "on_publish" in self._previous:
                return await self._call_previous("on_publish", event)
            # The namespace rule of rtcore.engine.commands._permit when no hook decides.
            state = session.subscriptions.get(channel)
            subscribed = state is not None and not state.pending
            return (
                (opts.allow_publish_for_subscriber and subscribed) or opts.allow_publish_for_client
            ) and (session.user != "" or opts.allow_publish_for_anonymous)
        fields = self._base(proxy, session)
        fields["channel"] = channel
        self._data(proxy, session, event.data, fields)
        response = await self._request(proxy, "publish", session, fields)
        try:
            refusal = _refusal(response)
            if refusal is not None:
                raise refusal
            result = _object(response.get("result"), "result") or {}
            data = _payload(result, "data", "b64data", "result")
            skip_history = _boolean(result, "skip_history", "result")
        except ProxyResponseError as exc:
            raise self._malformed(proxy, "publish", session, exc) from None
        if data is not None:
            event.data = data
        if skip_history:
            event.skip_history = True
        return True

    # -- rpc -------------------------------------------------------------------------

    def _rpc_options(self, method: str) -> RpcOptions | None:
        if self._rpc_boundary in method:
            return self._rpc_namespaces.get(method.split(self._rpc_boundary, 1)[0])
        return self.node.config.rpc.without_namespace

    async def on_rpc(self, event: RPCEvent) -> bytes:
        session = event.client
        options = self._rpc_options(event.method)
        if options is None or not options.proxy_enabled:
            if "on_rpc" in self._previous:
                return await self._call_previous("on_rpc", event)  # type: ignore[no-any-return]
            raise codes.ERROR_METHOD_NOT_FOUND if options is None else codes.ERROR_NOT_AVAILABLE
        proxy = (
            self._rpc_default
            if options.proxy_name == "default"
            else self._named[options.proxy_name]
        )
        assert proxy is not None  # the config model checks the reference
        fields = self._base(proxy, session)
        if event.method:
            fields["method"] = event.method
        self._data(proxy, session, event.data, fields)
        response = await self._request(proxy, "rpc", session, fields)
        try:
            refusal = _refusal(response)
            if refusal is not None:
                raise refusal
            result = _object(response.get("result"), "result") or {}
            return _payload(result, "data", "b64data", "result") or b""
        except ProxyResponseError as exc:
            raise self._malformed(proxy, "rpc", session, exc) from None
