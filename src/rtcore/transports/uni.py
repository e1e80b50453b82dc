"""Unidirectional transports: server-to-client streams that need no SDK.

PROTOCOL.md §6.2. The client sends one ``ConnectRequest`` (bare JSON, no
Command wrapper, no id) and then only listens:

* ``/connection/uni_websocket``: the request is the first text message, or
  the ``cf_connect`` query parameter; then one bare Push per text frame
  (several joined by ``\\n`` with ``join_push_messages``). Keep-alive: native
  WebSocket pings plus ``{}`` pushes.
* ``/connection/uni_sse``: ``GET`` with ``cf_connect`` (absent: the empty
  request) or ``POST`` with the request as a JSON body; Server-Sent Events,
  one ``data: <push>`` event per Push.
* ``/connection/uni_http_stream``: ``POST`` with the request as a JSON body;
  one Push per line of a chunked response.

The first message is a ``Connect`` push, then pushes of the server-side
subscriptions (from the connection token, the ``on_connecting`` hook or the
server API), pings as empty pushes ``{}``, and at the end a ``Disconnect``
push (uni_websocket: then a close frame with the same code). Connect errors
become disconnects: 109/110 ⇒ 3005, 111 ⇒ 3013, 103 ⇒ 3507, others ⇒ 3004.

Sessions are ordinary :class:`~rtcore.engine.session.ClientSession` objects; their
codec is :data:`UNI_JSON`, the JSON codec whose fan-out encodings are bare
pushes, so a publication is still encoded once for every uni subscriber of
the node.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtcore.engine.session import ClientSession
from rtcore.errors import HttpError
from rtcore.frames import OP_TEXT
from rtcore.protocol import (
    Command,
    Connect,
    Disconnect as DisconnectPush,
    ProtocolDecodeError,
    Push,
    Reply,
    codes,
)
from rtcore.protocol.codes import Disconnect
from rtcore.protocol.uni_json import UNI_JSON
from rtcore.transports.http_server import WebSocketRoute
from rtcore.transports.http_stream import (
    JSON_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    STREAM_HEADERS,
    StreamSink,
    admit,
    config_value,
    media_type,
    request_info,
    run_stream,
    sse_events,
)
from rtcore.transports.routing import AppHost, Cors, origin_checker
from rtcore.wire.deflate import DeflateOptions


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.protocol.codec import Codec
    from rtcore.transports.http_server import HttpResponseWriter, WebSocket
    from rtcore.wire.http import Request


__all__ = [
    "UniTransportOptions",
    "UniTransports",
    "UniStreamTransport",
    "UniWebSocketHandler",
    "connect_error_disconnect",
    "mount_uni_transports",
]

logger = logging.getLogger("rtcore.transports.uni")


def connect_error_disconnect(code: int) -> Disconnect:
    """The disconnect that replaces a connect error reply (PROTOCOL.md §3.3)."""
    if code in (109, 110):
        return codes.CONNECTION_EXPIRED
    if code == 111:
        return codes.TOO_MANY_REQUESTS
    if code == 103:
        return codes.PERMISSION_DENIED
    return codes.INTERNAL_SERVER_ERROR


def deliver_uni_reply(session: ClientSession, reply: Reply) -> None:
    """A reply on a unidirectional transport: connect result ⇒ Connect push, error ⇒ disconnect."""
    if reply.error is not None:
        session.disconnect(connect_error_disconnect(reply.error.code))
        return
    result = reply.connect
    if result is None:
        # Only connect is ever executed for these sessions.
        logger.debug("reply dropped on unidirectional transport: %r", reply)
        return
    session.send_push(
        Push(
            connect=Connect(
                client=result.client,
                version=result.version,
                data=result.data,
                subs=result.subs,
                expires=result.expires,
                ttl=result.ttl,
                ping=result.ping,
                pong=False,
                session=result.session,
                node=result.node,
                time=result.time,
            )
        )
    )


def connect_command(request: Any) -> Command:
    """The connect command a unidirectional session runs (its id is internal, never sent)."""
    return Command(id=1, connect=request)


@dataclass(slots=True)
class UniTransportOptions:
    """Settings of the unidirectional endpoints (off unless enabled).

    :meth:`from_config` reads ``uni_websocket``, ``uni_sse`` and
    ``uni_http_stream`` sections where the configuration has them.
    """

    uni_websocket: bool = False
    uni_sse: bool = False
    uni_http_stream: bool = False
    uni_websocket_path: str = "/connection/uni_websocket"
    uni_sse_path: str = "/connection/uni_sse"
    uni_http_stream_path: str = "/connection/uni_http_stream"
    #: uni_websocket: several pushes in one frame, joined by ``\\n``.
    join_push_messages: bool = False
    #: uni_websocket: largest incoming message (the connect request).
    message_size_limit: int = 65536
    #: Largest connect request (uni_sse body or ``cf_connect``; uni_http_stream body); larger: 413.
    uni_sse_max_request_body_size: int = 65536
    uni_http_stream_max_request_body_size: int = 65536

    @classmethod
    def from_config(cls, config: Any) -> UniTransportOptions:
        d = cls()
        return cls(
            uni_websocket=bool(config_value(config, "uni_websocket", "enabled", d.uni_websocket)),
            uni_sse=bool(config_value(config, "uni_sse", "enabled", d.uni_sse)),
            uni_http_stream=bool(
                config_value(config, "uni_http_stream", "enabled", d.uni_http_stream)
            ),
            join_push_messages=bool(
                config_value(config, "uni_websocket", "join_push_messages", d.join_push_messages)
            ),
            message_size_limit=int(
                config_value(config, "uni_websocket", "message_size_limit", d.message_size_limit)
            ),
            uni_sse_max_request_body_size=int(
                config_value(
                    config, "uni_sse", "max_request_body_size", d.uni_sse_max_request_body_size
                )
            ),
            uni_http_stream_max_request_body_size=int(
                config_value(
                    config,
                    "uni_http_stream",
                    "max_request_body_size",
                    d.uni_http_stream_max_request_body_size,
                )
            ),
        )


# -- uni_sse / uni_http_stream ----------------------------------------------------------


class UniStreamTransport(StreamSink):
    """A uni_sse or uni_http_stream response: the session's pushes, bare."""

    unidirectional = True
    emulation = False
    codec: Codec = UNI_JSON

    __slots__ = ("name", "response", "session", "_sse", "_done")

    def __init__(
        self,
        name: str,
        node: Node,
        request: Request,
        response: HttpResponseWriter,
        done: asyncio.Future[None],
    ) -> None:
        self.name = name
        self.response = response
        self._sse = name == "uni_sse"
        self._done = done
        self.session = ClientSession(node, self, request_info=request_info(request, response))

    def handle_reply(self, reply: Reply) -> None:
        deliver_uni_reply(self.session, reply)

    def close(self, disconnect: Disconnect) -> None:
        response = self.response
        if response.started and not response.finished and not response.disconnected:
            if disconnect.code != codes.CONNECTION_CLOSED.code:
                push = UNI_JSON.encode_push(
                    Push(disconnect=DisconnectPush(code=disconnect.code, reason=disconnect.reason))
                )
                response.write(sse_events((push,)) if self._sse else push)
            response.end()
        self.finish()

    def finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def client_gone(self) -> None:
        self.session.transport_closed()
        self.finish()


# -- uni_websocket -------------------------------------------------------------------


class UniWebSocketHandler:
    """One uni_websocket connection: its ``WebSocketHandler`` and the session's transport."""

    name = "uni_websocket"
    unidirectional = True
    emulation = False
    codec: Codec = UNI_JSON

    __slots__ = (
        "ws",
        "node",
        "session",
        "_join",
        "_connecting",
        "_last_seen",
        "_interval",
        "_deadline",
    )

    def __init__(self, ws: WebSocket, node: Node, options: UniTransportOptions) -> None:
        self.ws = ws
        self.node = node
        self._join = options.join_push_messages
        self._connecting = False
        req = ws.request
        self.session = ClientSession(
            node,
            self,
            request_info={
                "headers": dict(req.headers),
                "remote_address": ws.remote_address,
                "path": req.path,
                "query": req.query,
            },
        )
        cfg = node.config.client
        # Native pings every ping interval; no frame from the client for
        # interval + pong timeout (a pong answers a ping) ends the connection.
        self._interval = cfg.ping_interval
        self._deadline = cfg.ping_interval + cfg.pong_timeout
        self._last_seen = node.timers.now()
        if self._interval:
            node.timers.schedule_in(self, self._interval)
        try:
            values = req.query_params().get("cf_connect")
        except HttpError:
            values = None
            self.session.disconnect(codes.BAD_REQUEST)
        if values:
            self._connect(values[0].encode("utf-8"))

    def _connect(self, data: bytes) -> None:
        self._connecting = True
        try:
            request = self.codec.decode_connect_request(data)
        except ProtocolDecodeError as exc:
            logger.info("uni_websocket connect request malformed: %s", exc)
            self.session.disconnect(codes.BAD_REQUEST)
            return
        self.session.handle_commands([connect_command(request)])

    # -- WebSocketHandler ----------------------------------------------------------

    def on_message(self, opcode: int, payload: bytes) -> None:
        self._last_seen = self.node.timers.now()
        if not self._connecting:
            self._connect(payload)
        # Anything after the connect request is ignored: the client only listens.

    def on_pong(self, payload: bytes) -> None:
        self._last_seen = self.node.timers.now()

    def on_close(self, code: int, reason: str) -> None:
        self.node.timers.cancel(self)
        self.session.transport_closed()

    def on_timer(self, now: float) -> None:
        if not self.ws.open:
            return
        if now - self._last_seen > self._deadline:
            self.session.disconnect(codes.NO_PONG)
            return
        self.ws.ping()
        self.node.timers.schedule(self, now + self._interval)

    # -- Transport / Sink ----------------------------------------------------------

    def handle_reply(self, reply: Reply) -> None:
        deliver_uni_reply(self.session, reply)

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        ws = self.ws
        if not ws.open:
            return
        if self._join and len(payloads) > 1:
            ws.send(OP_TEXT, b"".join(payloads)[:-1])
            return
        for payload in payloads:
            ws.send(OP_TEXT, payload[:-1])

    def buffer_size(self) -> int:
        return self.ws.write_buffer_size

    def on_slow(self) -> None:
        self.session.disconnect(codes.SLOW)

    def close(self, disconnect: Disconnect) -> None:
        self.node.timers.cancel(self)
        ws = self.ws
        if disconnect.code == codes.CONNECTION_CLOSED.code:
            ws.abort()
            return
        ws.send(
            OP_TEXT,
            UNI_JSON.encode_push_bare(
                Push(disconnect=DisconnectPush(code=disconnect.code, reason=disconnect.reason))
            ),
        )
        ws.close(disconnect.code, disconnect.reason)


# -- the endpoints -------------------------------------------------------------------


class UniTransports:
    """Handlers of the unidirectional endpoints of one app."""

    def __init__(
        self, app: AppHost, options: UniTransportOptions, cors: Cors, check_origin: Any
    ) -> None:
        self.app = app
        self.node = app.node
        self.options = options
        self.cors = cors
        ws_cfg = self.node.config.websocket
        node = self.node
        self.ws_route = WebSocketRoute(
            handler_factory=lambda ws: UniWebSocketHandler(ws, node, options),
            subprotocols=(),
            check_origin=check_origin,
            deflate=DeflateOptions(compress_threshold=ws_cfg.compression_min_size)
            if ws_cfg.compression
            else None,
            max_message_size=options.message_size_limit,
        )

    def route_uni_websocket(self, request: Request) -> WebSocketRoute:
        admit(self.app)
        return self.ws_route

    def _connect_request(self, name: str, data: bytes) -> Any:
        opts = self.options
        limit = (
            opts.uni_sse_max_request_body_size
            if name == "uni_sse"
            else opts.uni_http_stream_max_request_body_size
        )
        if len(data) > limit:
            raise HttpError(413, "connect request too large")
        try:
            return UNI_JSON.decode_connect_request(data)
        except ProtocolDecodeError as exc:
            raise HttpError(400, f"malformed connect request: {exc}") from None

    async def _stream(
        self,
        name: str,
        request: Request,
        response: HttpResponseWriter,
        data: bytes,
        cors: list[tuple[str, str]],
    ) -> None:
        try:
            connect = self._connect_request(name, data)
            admit(self.app)
        except HttpError as exc:
            exc.headers = [*exc.headers, *cors]
            raise
        sse = name == "uni_sse"
        headers = [
            ("Content-Type", SSE_CONTENT_TYPE if sse else JSON_CONTENT_TYPE),
            *STREAM_HEADERS,
            *cors,
        ]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        transport = UniStreamTransport(name, self.node, request, response, done)
        await run_stream(
            transport,
            request,
            response,
            headers,
            b"\r\n" if sse else b"",
            [connect_command(connect)],
            done,
        )

    def _json_body(self, request: Request, cors: list[tuple[str, str]]) -> bytes:
        if media_type(request) not in ("", JSON_CONTENT_TYPE):
            raise HttpError(415, "Content-Type must be application/json", cors)
        return request.body

    async def uni_sse(self, request: Request, response: HttpResponseWriter) -> None:
        if request.method == "OPTIONS":
            self.cors.preflight(request, response, "GET, POST, OPTIONS")
            return
        if request.method not in ("GET", "POST"):
            raise HttpError(405, "method not allowed", [("Allow", "GET, POST, OPTIONS")])
        cors = self.cors.headers(request)
        if request.method == "GET":
            try:
                values = request.query_params().get("cf_connect")
            except HttpError as exc:
                exc.headers = [*exc.headers, *cors]
                raise
            data = values[0].encode("utf-8") if values else b""
        else:
            data = self._json_body(request, cors)
        await self._stream("uni_sse", request, response, data, cors)

    async def uni_http_stream(self, request: Request, response: HttpResponseWriter) -> None:
        if request.method == "OPTIONS":
            self.cors.preflight(request, response, "POST, OPTIONS")
            return
        if request.method != "POST":
            raise HttpError(405, "method not allowed", [("Allow", "POST, OPTIONS")])
        cors = self.cors.headers(request)
        await self._stream(
            "uni_http_stream", request, response, self._json_body(request, cors), cors
        )


def mount_uni_transports(app: AppHost, options: UniTransportOptions | None = None) -> UniTransports:
    """Mount the enabled unidirectional endpoints on ``app`` (default options: the config's)."""
    node = app.node
    opts = options if options is not None else UniTransportOptions.from_config(node.config)
    check = origin_checker(node.config.client.allowed_origins)
    transports = UniTransports(app, opts, Cors(check), check)
    for enabled, path, handler in (
        (opts.uni_sse, opts.uni_sse_path, transports.uni_sse),
        (opts.uni_http_stream, opts.uni_http_stream_path, transports.uni_http_stream),
    ):
        if enabled:
            app.mount(path, handler)
        else:
            app.http_routes.pop(path, None)
    if opts.uni_websocket:
        app.ws_routers[opts.uni_websocket_path] = transports.route_uni_websocket
    else:
        app.ws_routers.pop(opts.uni_websocket_path, None)
    return transports
