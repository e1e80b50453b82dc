"""HTTP-streaming and SSE: the bidirectional emulation transports of centrifuge-js.

Browsers that cannot open a WebSocket (proxies that strip the upgrade,
corporate networks) fall back to two HTTP transports (PROTOCOL.md §6.1):

* ``POST /connection/http_stream``: the request body is the client's first
  command frame (the ``connect`` command); the response is an endless body of
  the same Replies and Pushes a WebSocket carries, JSON lines
  (``Content-Type: application/json``) or varint-delimited Protobuf
  (``application/octet-stream``).
* ``GET /connection/sse?cf_connect=<frame>`` (or ``POST`` with the frame as the
  body): the same messages as Server-Sent Events, one ``data:`` event each.
  JSON only.
* ``POST /emulation``: the client-to-server half of both. Its body is an
  ``EmulationRequest{node, session, data}``; ``data`` (the client's command
  frame) is fed to the session that the stream created. The connect result
  of a stream tells the client its ``session`` (a secret, separate from the
  public client id) and ``node``.

The transports are edges only: each stream is one :class:`ClientSession`
with the same hub, fan-out, recovery and timers as a WebSocket client. A
disconnect travels as a Disconnect push, then the response ends (§1.6). When
the client goes away the session is closed through
``HttpResponseWriter.on_disconnect``.

Emulation requests may reach any node: a request naming another node is
forwarded to it as a control message through the broker (``op: "emulation"``,
see :meth:`Node.forward_emulation`), and the owning node feeds the frame to its
session (:func:`apply_forwarded_emulation`), so no sticky load balancing is
needed. With the memory broker there is no other node: such a request answers
404 (centrifuge-js then closes its stream and reconnects).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtcore.engine.session import CLOSED, ClientSession
from rtcore.errors import HttpError
from rtcore.protocol import (
    Command,
    Disconnect as DisconnectPush,
    ProtocolDecodeError,
    Push,
    codes,
    get_codec,
)
from rtcore.protocol.codes import Disconnect
from rtcore.transports.routing import AppHost, Cors, origin_checker


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.protocol.codec import Codec
    from rtcore.transports.http_server import HttpResponseWriter
    from rtcore.wire.http import Request


__all__ = [
    "HttpTransportOptions",
    "HttpTransports",
    "EmulatedTransport",
    "Cors",
    "mount_http_transports",
    "emulation_sessions",
    "apply_forwarded_emulation",
]

logger = logging.getLogger("rtcore.transports.http")

JSON_CONTENT_TYPE = "application/json"
PROTOBUF_CONTENT_TYPE = "application/octet-stream"
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"

#: Headers of every streamed response: no caching, no proxy buffering.
STREAM_HEADERS: tuple[tuple[str, str], ...] = (
    ("Cache-Control", "private, no-cache, no-store, must-revalidate, max-age=0"),
    ("Pragma", "no-cache"),
    ("Expires", "0"),
    ("X-Accel-Buffering", "no"),
)

_TEXT = ("Content-Type", "text/plain; charset=utf-8")


def config_value(config: Any, section: str, key: str, default: Any) -> Any:
    """``config.<section>.<key>`` when the configuration has that key, else ``default``."""
    sec = getattr(config, section, None)
    return getattr(sec, key, default) if sec is not None else default


@dataclass(slots=True)
class HttpTransportOptions:
    """Settings of the HTTP-streaming, SSE and emulation endpoints.

    :meth:`from_config` reads them from the configuration sections
    ``http_stream``, ``sse`` and ``emulation`` where those exist (see
    docs/transports.md); the defaults apply otherwise.
    """

    #: Serve ``/connection/http_stream``.
    http_stream: bool = True
    #: Serve ``/connection/sse``.
    sse: bool = True
    http_stream_path: str = "/connection/http_stream"
    sse_path: str = "/connection/sse"
    #: Served while either transport is on.
    emulation_path: str = "/emulation"
    #: Largest connect frame (request body or ``cf_connect``) and emulation body (larger: 413).
    max_request_body_size: int = 65536
    #: Emulation requests per second one session may make (0: no limit); over it: 429 and
    #: the session is disconnected with 3013 (too many requests, the client reconnects).
    emulation_rate_limit: float = 100.0
    #: Burst of emulation requests allowed above the rate.
    emulation_burst: int = 200

    @classmethod
    def from_config(cls, config: Any) -> HttpTransportOptions:
        d = cls()
        return cls(
            http_stream=bool(config_value(config, "http_stream", "enabled", d.http_stream)),
            sse=bool(config_value(config, "sse", "enabled", d.sse)),
            max_request_body_size=int(
                config_value(config, "emulation", "max_request_body_size", d.max_request_body_size)
            ),
            emulation_rate_limit=float(
                config_value(config, "emulation", "rate_limit", d.emulation_rate_limit)
            ),
            emulation_burst=int(config_value(config, "emulation", "burst", d.emulation_burst)),
        )


# -- CORS ------------------------------------------------------------------------


def send_error(
    response: HttpResponseWriter, status: int, message: str, headers: Sequence[tuple[str, str]] = ()
) -> None:
    """A short plain-text error response."""
    response.send(status, [_TEXT, *headers], (message + "\n").encode())


def media_type(request: Request) -> str:
    """The request's media type, lowercased, without parameters ("" when absent)."""
    value = request.header("content-type")
    if value is None:
        return ""
    return value.split(";", 1)[0].strip().lower()


def request_info(request: Request, response: HttpResponseWriter) -> dict[str, Any]:
    """What hooks see of the HTTP request that opened a session."""
    return {
        "headers": dict(request.headers),
        "remote_address": response.remote_address,
        "path": request.path,
        "query": request.query,
    }


def admit(app: AppHost) -> None:
    """Refuse new connections while shutting down (503) or over the connect rate limit."""
    if app.node.closing:
        raise HttpError(503, "server is shutting down", [("Retry-After", "1")])
    app.admit_connection()


# -- sessions by emulation id -------------------------------------------------------

_REGISTRIES: weakref.WeakKeyDictionary[Any, dict[str, EmulatedTransport]] = (
    weakref.WeakKeyDictionary()
)


def emulation_sessions(node: Node) -> dict[str, EmulatedTransport]:
    """The node's live HTTP-streaming / SSE transports by emulation session id."""
    registry = _REGISTRIES.get(node)
    if registry is None:
        registry = _REGISTRIES[node] = {}
    return registry


class _Bucket:
    """A token bucket: ``rate`` events per second, bursts up to ``burst``."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


#: Sessions of other nodes whose request rate a forwarding node tracks (oldest dropped).
FORWARD_BUCKETS_MAX = 10_000


def deliver_emulation(node: Node, session_id: str, fmt: str, data: bytes) -> int:
    """Feed a command frame to a local emulated session; returns the HTTP status.

    204 delivered, or no such live session (dropped); 400 the frame's
    format (``"json"``/``"protobuf"``) is not the session's; 429 over the
    session's request rate (the session is disconnected with 3013).
    """
    transport = emulation_sessions(node).get(session_id)
    if transport is None or transport.session.state == CLOSED:
        return 204
    if transport.codec.name != fmt:
        return 400
    if not transport.allow_request():
        transport.session.disconnect(codes.TOO_MANY_REQUESTS)
        return 429
    transport.session.handle_frame(data)
    return 204


def apply_forwarded_emulation(node: Node, msg: dict[str, Any]) -> None:
    """Apply an ``emulation`` control message addressed to this node.

    Another node answered the HTTP request already, so the outcome is only
    logged: a wrong format drops the frame, and going over the session's rate
    disconnects it with 3013, as for a request made to this node.
    """
    session_id = str(msg.get("session") or "")
    if msg.get("limited"):
        transport = emulation_sessions(node).get(session_id)
        if transport is not None and transport.session.state != CLOSED:
            transport.session.disconnect(codes.TOO_MANY_REQUESTS)
        return
    data = msg.get("data")
    if not isinstance(data, bytes | bytearray) or not data:
        logger.warning("forwarded emulation request without data ignored")
        return
    status = deliver_emulation(node, session_id, str(msg.get("format") or ""), bytes(data))
    if status != 204:
        logger.info("forwarded emulation request refused with %d", status)


# -- the transport -------------------------------------------------------------------


def sse_events(payloads: Sequence[bytes]) -> bytes:
    """JSON lines as Server-Sent Events: one ``data: <line>`` event per message."""
    out = bytearray()
    for payload in payloads:
        for line in payload.split(b"\n"):
            if line:
                out += b"data: "
                out += line
                out += b"\n\n"
    return bytes(out)


class StreamSink:
    """The writer's sink of a streamed HTTP response (HTTP-streaming or SSE).

    A batch of delimited messages becomes one chunk of the response (SSE:
    one ``data:`` event per message). Subclasses set ``response``,
    ``session`` and ``_sse``.
    """

    __slots__ = ()

    response: HttpResponseWriter
    session: ClientSession
    _sse: bool

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        response = self.response
        if response.finished or response.disconnected:
            return
        if self._sse:
            response.write(sse_events(payloads))
        else:
            response.write(payloads[0] if len(payloads) == 1 else b"".join(payloads))

    def buffer_size(self) -> int:
        return self.response.write_buffer_size

    def on_slow(self) -> None:
        self.session.disconnect(codes.SLOW)


class EmulatedTransport(StreamSink):
    """One HTTP-streaming or SSE response carrying a session's Replies and Pushes.

    It is the session's :class:`~rtcore.engine.session.Transport` and its writer's
    sink; commands reach the session through ``/emulation``.
    """

    unidirectional = False
    emulation = True

    __slots__ = ("name", "codec", "response", "session", "_sse", "_done", "_bucket")

    def __init__(
        self,
        name: str,
        codec: Codec,
        node: Node,
        request: Request,
        response: HttpResponseWriter,
        done: asyncio.Future[None],
        options: HttpTransportOptions,
    ) -> None:
        self.name = name
        self.codec = codec
        self.response = response
        self._sse = name == "sse"
        self._done = done
        rate = options.emulation_rate_limit
        self._bucket = _Bucket(rate, options.emulation_burst) if rate > 0 else None
        self.session = ClientSession(node, self, request_info=request_info(request, response))

    # -- Transport / Sink: write_batch, buffer_size, on_slow from StreamSink --------

    def close(self, disconnect: Disconnect) -> None:
        """A Disconnect push, then the end of the response (PROTOCOL.md §1.6)."""
        response = self.response
        if response.started and not response.finished and not response.disconnected:
            if disconnect.code != codes.CONNECTION_CLOSED.code:
                push = self.codec.encode_push(
                    Push(disconnect=DisconnectPush(code=disconnect.code, reason=disconnect.reason))
                )
                response.write(sse_events((push,)) if self._sse else push)
            response.end()
        self.finish()

    # -- lifecycle -----------------------------------------------------------------

    def finish(self) -> None:
        """Let the request handler return."""
        if not self._done.done():
            self._done.set_result(None)

    def client_gone(self) -> None:
        """The HTTP connection was lost: close the session without advice."""
        self.session.transport_closed()
        self.finish()

    def allow_request(self) -> bool:
        """Account one emulation request against this session's rate."""
        return self._bucket is None or self._bucket.allow()


def _watch_peer(response: HttpResponseWriter) -> None:
    """Notice at once when the client of a long-lived response goes away.

    The server stops reading a connection while its handler runs, so a
    client's FIN would only surface at a later failed write (one or two ping
    intervals). A stream is the last response of its connection (it is sent
    with ``Connection: close``): the connection's request parser is dropped,
    so whatever else the client sends is discarded rather than queued, and
    reading resumes, so the end of the connection runs ``on_disconnect``.
    """
    response.stream_until_disconnect()


async def run_stream(
    transport: Any,
    request: Request,
    response: HttpResponseWriter,
    status_headers: Sequence[tuple[str, str]],
    preamble: bytes,
    commands: list[Command],
    done: asyncio.Future[None],
    registry: dict[str, Any] | None = None,
) -> None:
    """Start a streamed response, run the session's first commands, wait for its end.

    Shared by the emulation and the unidirectional HTTP transports.
    """
    session: ClientSession = transport.session
    headers = list(status_headers)
    if request.keep_alive and request.http_version == "1.1":
        # Otherwise the server adds it.
        headers.append(("Connection", "close"))
    response.start(200, headers)
    _watch_peer(response)
    if preamble:
        response.write(preamble)
    if registry is not None:
        registry[session.session_id] = transport
    response.on_disconnect(transport.client_gone)
    try:
        session.handle_commands(commands)
        await done
    finally:
        if registry is not None and registry.get(session.session_id) is transport:
            del registry[session.session_id]
        if session.state != CLOSED:
            # Cancelled (connection lost, server stopped) without a close.
            session.transport_closed()


# -- the endpoints -------------------------------------------------------------------


class HttpTransports:
    """The ``/connection/http_stream``, ``/connection/sse`` and ``/emulation`` handlers."""

    def __init__(self, app: AppHost, options: HttpTransportOptions, cors: Cors) -> None:
        self.app = app
        self.node = app.node
        self.options = options
        self.cors = cors
        self.sessions = emulation_sessions(app.node)
        # Request rates of other nodes' sessions whose requests this node forwards:
        # (node, session) -> [bucket, whether the owning node was told it is over].
        self._forward_buckets: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()
        self._json = get_codec("json")
        self._protobuf = get_codec("protobuf")

    def _body(self, request: Request) -> bytes:
        if len(request.body) > self.options.max_request_body_size:
            raise HttpError(413, "request body too large")
        return request.body

    def _connect_commands(self, codec: Codec, frame: bytes) -> list[Command]:
        """Decode the first command frame; it must start with ``connect`` (else 400)."""
        try:
            commands = codec.decode_commands(frame, self.node.config.client.max_commands_in_frame)
        except ProtocolDecodeError as exc:
            raise HttpError(400, f"malformed command frame: {exc}") from None
        if commands[0].connect is None:
            raise HttpError(400, "the first command must be connect")
        return commands

    async def _stream(
        self,
        name: str,
        codec: Codec,
        request: Request,
        response: HttpResponseWriter,
        commands: list[Command],
        headers: list[tuple[str, str]],
        preamble: bytes,
    ) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        transport = EmulatedTransport(name, codec, self.node, request, response, done, self.options)
        await run_stream(
            transport, request, response, headers, preamble, commands, done, self.sessions
        )

    async def http_stream(self, request: Request, response: HttpResponseWriter) -> None:
        """``POST /connection/http_stream``: body = first command frame; response = the stream."""
        if request.method == "OPTIONS":
            self.cors.preflight(request, response, "POST, OPTIONS")
            return
        if request.method != "POST":
            raise HttpError(405, "method not allowed", [("Allow", "POST, OPTIONS")])
        cors = self.cors.headers(request)
        kind = media_type(request)
        if kind == PROTOBUF_CONTENT_TYPE:
            codec = self._protobuf
        elif kind in ("", JSON_CONTENT_TYPE):
            codec = self._json
        else:
            raise HttpError(
                415, "Content-Type must be application/json or application/octet-stream", cors
            )
        try:
            body = self._body(request)
            commands = self._connect_commands(codec, body)
            admit(self.app)
        except HttpError as exc:
            exc.headers = [*exc.headers, *cors]
            raise
        content_type = PROTOBUF_CONTENT_TYPE if codec is self._protobuf else JSON_CONTENT_TYPE
        headers = [("Content-Type", content_type), *STREAM_HEADERS, *cors]
        await self._stream("http_stream", codec, request, response, commands, headers, b"")

    async def sse(self, request: Request, response: HttpResponseWriter) -> None:
        """``GET /connection/sse?cf_connect=<frame>`` (or POST): the stream as SSE events."""
        if request.method == "OPTIONS":
            self.cors.preflight(request, response, "GET, POST, OPTIONS")
            return
        if request.method not in ("GET", "POST"):
            raise HttpError(405, "method not allowed", [("Allow", "GET, POST, OPTIONS")])
        cors = self.cors.headers(request)
        try:
            if request.method == "GET":
                values = request.query_params().get("cf_connect")
                if not values:
                    raise HttpError(400, "cf_connect query parameter required")
                frame = values[0].encode("utf-8")
                if len(frame) > self.options.max_request_body_size:
                    raise HttpError(413, "cf_connect too large")
            else:
                if media_type(request) not in ("", JSON_CONTENT_TYPE):
                    raise HttpError(
                        415, "SSE speaks JSON only: Content-Type must be application/json"
                    )
                frame = self._body(request)
            commands = self._connect_commands(self._json, frame)
            admit(self.app)
        except HttpError as exc:
            exc.headers = [*exc.headers, *cors]
            raise
        headers = [("Content-Type", SSE_CONTENT_TYPE), *STREAM_HEADERS, *cors]
        await self._stream("sse", self._json, request, response, commands, headers, b"\r\n")

    def emulation(self, request: Request, response: HttpResponseWriter) -> Awaitable[None] | None:
        """``POST /emulation``: feed a command frame to a stream's session.

        A session of another node is reached through the broker (see
        :meth:`_forward`). 204 when accepted, and also when no such session
        lives on this node (the commands are dropped; its stream has ended);
        400 undecodable body, empty fields, or a codec other than the
        session's; 404 another node's id with the memory broker (no other node
        can exist); 413 body too large; 415 unsupported Content-Type; 429 over
        the session's request rate (the session is disconnected with 3013);
        503 the broker could not forward the request.
        """
        if request.method == "OPTIONS":
            self.cors.preflight(request, response, "POST, OPTIONS")
            return None
        if request.method != "POST":
            send_error(response, 405, "method not allowed", [("Allow", "POST, OPTIONS")])
            return None
        cors = self.cors.headers(request)
        kind = media_type(request)
        if kind == PROTOBUF_CONTENT_TYPE:
            codec = self._protobuf
        elif kind in ("", JSON_CONTENT_TYPE):
            codec = self._json
        else:
            send_error(
                response,
                415,
                "Content-Type must be application/json or application/octet-stream",
                cors,
            )
            return None
        if len(request.body) > self.options.max_request_body_size:
            send_error(response, 413, "request body too large", cors)
            return None
        try:
            req = codec.decode_emulation_request(request.body)
        except ProtocolDecodeError as exc:
            send_error(response, 400, f"malformed emulation request: {exc}", cors)
            return None
        if not req.session or not req.node or not req.data:
            send_error(response, 400, "node, session and data are required", cors)
            return None
        if req.node != self.node.id:
            if not self.node.clustered:
                send_error(response, 404, "unknown node", cors)
                return None
            return self._forward(req.node, req.session, bytes(req.data), codec.name, response, cors)
        status = deliver_emulation(self.node, req.session, codec.name, req.data)
        if status == 400:
            send_error(response, 400, "emulation request format differs from the session's", cors)
        elif status == 429:
            send_error(response, 429, "too many requests", [("Retry-After", "1"), *cors])
        else:
            response.send(204, cors)
        return None

    def _forward_rate(self, node: str, session: str) -> str:
        """Account a forwarded request against the session's rate, as seen by this node.

        "ok" within the rate; "over" the first time over it (the owning node
        is to be told); "again" when over it once more (nothing to send).
        """
        rate = self.options.emulation_rate_limit
        if rate <= 0:
            return "ok"
        buckets = self._forward_buckets
        key = (node, session)
        entry = buckets.get(key)
        if entry is None:
            entry = buckets[key] = [_Bucket(rate, self.options.emulation_burst), False]
            if len(buckets) > FORWARD_BUCKETS_MAX:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
        if entry[0].allow():
            return "ok"
        if entry[1]:
            return "again"
        entry[1] = True
        return "over"

    async def _forward(
        self,
        node: str,
        session: str,
        data: bytes,
        fmt: str,
        response: HttpResponseWriter,
        cors: list[tuple[str, str]],
    ) -> None:
        """Send a request for another node's session through the broker's control channel.

        204 once the broker took it (whether that node still has the session
        is not known here); 429 over the rate this node has seen for the
        session (the first time, the owning node is told to disconnect it with
        3013; later ones send nothing); 503 when the broker cannot publish.
        """
        rate = self._forward_rate(node, session)
        if rate == "again":
            # The owning node was told already: no more broker traffic for this session.
            send_error(response, 429, "too many requests", [("Retry-After", "1"), *cors])
            return
        limited = rate == "over"
        try:
            await self.node.forward_emulation(node, session, data, fmt, limited=limited)
        except Exception as exc:  # noqa: BLE001 - answered to the client
            logger.warning("cannot forward an emulation request to node %s: %s", node, exc)
            if limited:
                send_error(response, 429, "too many requests", [("Retry-After", "1"), *cors])
            else:
                send_error(
                    response, 503, "cannot reach the session's node", [("Retry-After", "1"), *cors]
                )
            return
        if limited:
            send_error(response, 429, "too many requests", [("Retry-After", "1"), *cors])
            return
        response.send(204, cors)


def mount_http_transports(
    app: AppHost, options: HttpTransportOptions | None = None
) -> HttpTransports:
    """Mount the enabled endpoints on ``app`` (options from the node's config by default)."""
    node = app.node
    opts = options if options is not None else HttpTransportOptions.from_config(node.config)
    cors = Cors(origin_checker(node.config.client.allowed_origins))
    transports = HttpTransports(app, opts, cors)
    # Emulation requests that another node forwards to a session of this one.
    node.control_handlers["emulation"] = lambda msg: apply_forwarded_emulation(node, msg)
    for enabled, path, handler in (
        (opts.http_stream, opts.http_stream_path, transports.http_stream),
        (opts.sse, opts.sse_path, transports.sse),
        (opts.http_stream or opts.sse, opts.emulation_path, transports.emulation),
    ):
        if enabled:
            app.mount(path, handler)
        else:
            app.http_routes.pop(path, None)
    return transports
