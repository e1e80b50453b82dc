"""The I/O edge: an asyncio ``BufferedProtocol`` that serves HTTP/1.1 and WebSocket.

One :class:`_Connection` object lives for the whole TCP connection. It starts
in HTTP mode (requests parsed by :class:`rtcore.wire.http.HttpParser`), answers
plain requests through the application's ``handle_http`` hook and, on a
WebSocket upgrade that the application routes, switches to WebSocket mode:
from then on ``get_buffer``/``buffer_updated`` hand the socket's bytes straight
to the frame parser's own buffer (no copy on the compiled path).

Nothing here creates a task, future or timer per connection on the hot path:
handshake and close timeouts are swept by one periodic task per server
(:class:`rtcore.engine.timers.TimerWheel`), WebSocket messages are dispatched synchronously, and
writes go straight to the transport.

Runs on uvloop (the default, see :func:`new_event_loop`) and on the stdlib loop.

What applications handle lives next door and is re-exported here:
:class:`HttpResponseWriter` in :mod:`rtcore.transports.http_response`,
:class:`WebSocket`, :class:`WebSocketRoute` and :class:`WebSocketHandler` in
:mod:`rtcore.transports.websocket_io`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import ssl as _ssl
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rtcore.engine.timers import TimerWheel
from rtcore.errors import HttpError
from rtcore.frames import CLOSE_ABNORMAL, CLOSE_GOING_AWAY, OP_BINARY, OP_PING, OP_TEXT
from rtcore.transports.http_response import HttpResponseWriter
from rtcore.transports.websocket_io import WebSocket, WebSocketHandler, WebSocketRoute
from rtcore.wire.handshake import accept_websocket
from rtcore.wire.http import HttpParser, Request
from rtcore.wire.http_response import error_response
from rtcore.wire.websocket import OPEN, WebSocketConnection


__all__ = [
    "Application",
    "HttpResponseWriter",
    "Server",
    "ServerOptions",
    "WebSocket",
    "WebSocketHandler",
    "WebSocketRoute",
    "new_event_loop",
    "run",
    "serve",
]

logger = logging.getLogger("rtcore.transports.http_server")

_HTTP_CHUNK = 64 * 1024


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else the stdlib default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Awaitable[Any], *, use_uvloop: bool = True, debug: bool | None = None) -> Any:
    """``asyncio.run`` on uvloop (or the stdlib loop with ``use_uvloop=False``)."""
    factory = new_event_loop if use_uvloop else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory, debug=debug) as runner:
        return runner.run(main)  # type: ignore[arg-type]


# -- application interface ----------------------------------------------------


class Application(Protocol):
    """What the server needs from the application it serves."""

    def route_websocket(self, request: Request) -> WebSocketRoute | None:
        """The route for an upgrade request, or None to answer 404.

        May raise :class:`~rtcore.errors.HttpError` to refuse the upgrade
        with that status (e.g. 503 when over a connection rate limit).
        """

    def handle_http(self, request: Request, response: HttpResponseWriter) -> Awaitable[None] | None:
        """Answer a plain HTTP request (sync, or return an awaitable)."""


@dataclass(slots=True)
class ServerOptions:
    """Connection-level limits and timeouts of the I/O edge."""

    # Seconds a client has to send a complete upgrade/HTTP request after connecting.
    handshake_timeout: float = 10.0
    # Seconds to wait for the peer's close frame after ours, then drop TCP.
    close_timeout: float = 5.0
    # Largest request line + headers (431 beyond) and request body (413 beyond).
    max_header_size: int = 16 * 1024
    max_body_size: int = 1 << 20
    # Transport write-buffer watermarks: above high the connection is "paused".
    write_high_water: int = 1 << 20
    write_low_water: int = 256 * 1024
    # Seconds an idle keep-alive HTTP connection stays open.
    keepalive_timeout: float = 75.0
    # TCP listen backlog.
    backlog: int = 4096


# -- the protocol ---------------------------------------------------------------


class _Connection(asyncio.BufferedProtocol):
    """One TCP connection: HTTP/1.1 until an upgrade, then WebSocket."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peername: Any = None
        self.lost = False
        self.closing = False
        self.write_paused = False
        # While handling several messages of one read: frames to write at the end.
        self.cork: list[bytes | bytearray | memoryview] | None = None
        # HTTP mode state.
        self._http: HttpParser | None = HttpParser(
            max_header_size=server.options.max_header_size,
            max_body_size=server.options.max_body_size,
        )
        # The server's read chunk, shared by every connection in HTTP mode:
        # buffer_updated() hands the bytes to the HTTP parser (which copies
        # them) before any other connection can read into it.
        self._chunk_view = server._http_chunk
        self._pending: list[Request] = []
        # True while a response is being produced (requests wait in _pending).
        self._busy = False
        # True when bytes of a not yet complete request were received.
        self._partial = False
        # True between a keep-alive response and the next request's first byte.
        self._idle = False
        self._writer: HttpResponseWriter | None = None
        self._task: asyncio.Task[None] | None = None
        # WebSocket mode state.
        self.ws: WebSocket | None = None
        self._wsconn: WebSocketConnection | None = None
        self._handler: WebSocketHandler | None = None
        self._closed_notified = False

    # -- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass.
        self.transport = transport  # type: ignore[assignment]
        self.peername = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - e.g. a socket already shut down
                pass
        opts = self.server.options
        transport.set_write_buffer_limits(  # type: ignore[attr-defined]
            high=opts.write_high_water, low=opts.write_low_water
        )
        self.server._connections.add(self)
        self.server._deadlines.schedule_in(self, opts.handshake_timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        wsconn = self._wsconn
        if wsconn is not None:
            return wsconn.get_buffer(sizehint)
        return self._chunk_view

    def buffer_updated(self, nbytes: int) -> None:
        wsconn = self._wsconn
        if wsconn is not None:
            self._ws_messages(wsconn.buffer_updated(nbytes))
            return
        self._http_data(self._chunk_view[:nbytes])

    def eof_received(self) -> bool:
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        server = self.server
        server._connections.discard(self)
        server._deadlines.cancel(self)
        if self._wsconn is not None:
            self._wsconn.receive_eof()
            self._notify_closed()
        if self._writer is not None:
            self._writer._notify_lost()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.transport = None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False

    # -- timers --------------------------------------------------------------

    def on_timer(self, now: float) -> None:
        """A handshake, keep-alive or close timeout expired: drop the connection."""
        if self.transport is None:
            return
        if self._wsconn is None and self._partial and not self.closing:
            # A request was begun but not finished within the timeout.
            self._send_error(HttpError(408, "request not completed in time"))
            return
        self.transport.abort()

    # -- writing -------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)

    def flush_ws(self) -> None:
        wsconn = self._wsconn
        if wsconn is None or self.transport is None:
            return
        out = wsconn.data_to_send()
        cork = self.cork
        if out:
            if cork is not None:
                cork.extend(out)
            elif len(out) > 1:
                self.transport.writelines(out)
            else:
                self.transport.write(out[0])
        if wsconn.should_close_transport:
            if cork is not None:
                return  # closed by _uncork(), after the corked frames are written
            self.server._deadlines.cancel(self)
            self._notify_closed()
            if self.transport is not None:
                self.transport.close()

    # -- WebSocket mode ------------------------------------------------------

    def _ws_messages(self, events: list[tuple[int, bytes]]) -> None:
        wsconn = self._wsconn
        assert wsconn is not None
        handler = self._handler
        if len(events) > 1:
            # Several messages in one read: the frames sent while handling them
            # (replies, pongs) go out in one write instead of one each.
            self.cork = []
            try:
                self._dispatch(wsconn, handler, events)
            finally:
                self._uncork()
        else:
            self._dispatch(wsconn, handler, events)
        wsconn.receive_done()
        self.flush_ws()

    def _uncork(self) -> None:
        cork = self.cork
        self.cork = None
        transport = self.transport
        if cork and transport is not None and not self.lost:
            if len(cork) > 1:
                transport.writelines(cork)
            else:
                transport.write(cork[0])

    def _dispatch(
        self,
        wsconn: WebSocketConnection,
        handler: WebSocketHandler | None,
        events: list[tuple[int, bytes]],
    ) -> None:
        if events and handler is not None:
            for opcode, payload in events:
                if opcode == OP_TEXT or opcode == OP_BINARY:
                    if wsconn.state != OPEN:
                        continue  # we already sent our close frame
                    try:
                        handler.on_message(opcode, payload)
                    except Exception:  # noqa: BLE001
                        logger.exception("WebSocket handler failed; closing with 1011")
                        wsconn.fail(1011, "internal error")
                        break
                elif opcode == OP_PING:
                    # Answer now, so the pong keeps its place among the replies
                    # the handler already wrote.
                    wsconn.pong(payload)
                    self.flush_ws()
                else:
                    on_pong = getattr(handler, "on_pong", None)
                    if on_pong is not None:
                        on_pong(payload)

    def _notify_closed(self) -> None:
        if self._closed_notified or self._wsconn is None:
            return
        self._closed_notified = True
        wsconn = self._wsconn
        handler = self._handler
        if handler is None:
            return
        code = wsconn.close_code_received
        reason = wsconn.close_reason_received
        if code is None:
            code = wsconn.close_code_sent if wsconn.close_code_sent is not None else CLOSE_ABNORMAL
            reason = ""
        try:
            handler.on_close(code, reason)
        except Exception:  # noqa: BLE001
            logger.exception("WebSocket on_close handler failed")

    def _upgrade(self, request: Request, trailing: bytes) -> None:
        try:
            route = self.server.app.route_websocket(request)
        except HttpError as exc:
            self._send_error(exc)
            return
        if route is None:
            self._send_error(HttpError(404, "no WebSocket endpoint at this path"))
            return
        try:
            accepted = accept_websocket(
                request,
                subprotocols=route.subprotocols,
                select_subprotocol=route.select_subprotocol,
                check_origin=route.check_origin,
                deflate=route.deflate,
                extra_headers=route.extra_headers,
            )
        except HttpError as exc:
            self._send_error(exc)
            return
        self.server._deadlines.cancel(self)
        self._http = None
        wsconn = WebSocketConnection(
            is_server=True, max_message_size=route.max_message_size, deflate=accepted.deflate
        )
        self.write(accepted.response)
        self._wsconn = wsconn
        ws = WebSocket(self, request, accepted.subprotocol, wsconn)
        self.ws = ws
        try:
            handler = route.handler_factory(ws)
        except Exception:  # noqa: BLE001
            logger.exception("WebSocket handler factory failed; closing with 1011")
            wsconn.fail(1011, "internal error")
            self.flush_ws()
            return
        ws.handler = handler
        self._handler = handler
        if wsconn.state != OPEN:
            # The factory closed the connection already.
            self.flush_ws()
            return
        if trailing:
            self._ws_messages(wsconn.receive_data(trailing))

    # -- HTTP mode -----------------------------------------------------------

    def _http_data(self, data: memoryview) -> None:
        parser = self._http
        if parser is None or self.closing:
            return
        if self._idle:
            # First bytes of the next request: it gets the handshake timeout.
            self._idle = False
            self.server._deadlines.schedule_in(self, self.server.options.handshake_timeout)
        try:
            requests = parser.feed_data(data)
        except HttpError as exc:
            self._pending.clear()
            self._send_error(exc)
            return
        interim = parser.data_to_send()
        if interim:
            # "100 Continue" for a client that asked before sending its body.
            self.write(interim)
        self._partial = not requests
        if requests:
            self._pending.extend(requests)
            self._next_request()

    def _next_request(self) -> None:
        while self._pending and not self._busy and not self.closing and not self.lost:
            request = self._pending.pop(0)
            if request.upgrade:
                parser = self._http
                trailing = bytes(parser.trailing_data) if parser is not None else b""
                self._pending.clear()
                self._upgrade(request, trailing)
                return
            self._busy = True
            self.server._deadlines.cancel(self)
            writer = HttpResponseWriter(self, request)
            self._writer = writer
            try:
                result = self.server.app.handle_http(request, writer)
            except HttpError as exc:
                self._handler_error(writer, exc)
                continue
            except Exception:  # noqa: BLE001
                logger.exception("HTTP handler failed")
                self._handler_error(writer, HttpError(500, "internal server error"))
                continue
            if inspect.isawaitable(result):
                assert self.transport is not None
                self.transport.pause_reading()
                self._task = asyncio.ensure_future(self._await_handler(result, writer))
                return
            if not writer.started:
                self._handler_error(writer, HttpError(500, "handler sent no response"))

    async def _await_handler(self, result: Awaitable[None], writer: HttpResponseWriter) -> None:
        try:
            await result
        except asyncio.CancelledError:
            raise
        except HttpError as exc:
            self._handler_error(writer, exc)
        except Exception:  # noqa: BLE001
            logger.exception("HTTP handler failed")
            self._handler_error(writer, HttpError(500, "internal server error"))
        else:
            if not writer.started:
                self._handler_error(writer, HttpError(500, "handler sent no response"))
            elif not writer.finished:
                writer.end()
        finally:
            self._task = None
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
            self._next_request()

    def _handler_error(self, writer: HttpResponseWriter, exc: HttpError) -> None:
        if writer.started:
            # Too late for a status line: end the connection.
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        writer.send(
            exc.status,
            [("Content-Type", "text/plain; charset=utf-8"), *exc.headers],
            (exc.message + "\n").encode(),
        )

    def response_done(self, keep_alive: bool) -> None:
        self._busy = False
        self._writer = None
        if not keep_alive:
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        self._idle = True
        self.server._deadlines.schedule_in(self, self.server.options.keepalive_timeout)

    def _send_error(self, exc: HttpError) -> None:
        self.closing = True
        self.write(error_response(exc, keep_alive=False))
        if self.transport is not None:
            self.transport.close()


# -- server -------------------------------------------------------------------


class Server:
    """A listening rtcore server (HTTP + WebSocket on the same port)."""

    def __init__(self, app: Application, options: ServerOptions | None = None) -> None:
        self.app = app
        self.options = options or ServerOptions()
        self._connections: set[_Connection] = set()
        self._deadlines = TimerWheel(tick=0.5)
        self._http_chunk = memoryview(bytearray(_HTTP_CHUNK))
        self._servers: list[asyncio.base_events.Server] = []

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def sockets(self) -> list[socket.socket]:
        return [s for srv in self._servers for s in srv.sockets]

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    async def listen(
        self,
        host: str | Sequence[str] | None = "127.0.0.1",
        port: int = 8000,
        *,
        ssl: _ssl.SSLContext | None = None,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
    ) -> None:
        """Bind and start accepting (returns once listening)."""
        loop = asyncio.get_running_loop()
        self._deadlines.start()
        kwargs: dict[str, Any] = {"ssl": ssl, "backlog": self.options.backlog}
        if sock is not None:
            srv = await loop.create_server(lambda: _Connection(self), sock=sock, **kwargs)
        else:
            srv = await loop.create_server(
                lambda: _Connection(self),
                host=host,
                port=port,
                reuse_port=reuse_port or None,
                reuse_address=True,
                **kwargs,
            )
        self._servers.append(srv)

    def stop_accepting(self) -> None:
        for srv in self._servers:
            srv.close()

    def websockets(self) -> Iterable[WebSocket]:
        return [c.ws for c in self._connections if c.ws is not None]

    async def close(
        self,
        code: int = CLOSE_GOING_AWAY,
        reason: str = "server shutdown",
        timeout: float | None = None,
    ) -> None:
        """Stop accepting, close every WebSocket with ``code`` and drop HTTP connections."""
        self.stop_accepting()
        for conn in list(self._connections):
            if conn.ws is not None:
                conn.ws.close(code, reason)
            elif not conn._busy and conn.transport is not None:
                conn.transport.close()
        deadline = time.monotonic() + (self.options.close_timeout if timeout is None else timeout)
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.abort()
        for srv in self._servers:
            await srv.wait_closed()
        self._deadlines.stop()


async def serve(
    app: Application,
    host: str | Sequence[str] | None = "127.0.0.1",
    port: int = 8000,
    *,
    options: ServerOptions | None = None,
    ssl: _ssl.SSLContext | None = None,
    reuse_port: bool = False,
    sock: socket.socket | None = None,
) -> Server:
    """Start serving ``app``; returns the listening :class:`Server`."""
    server = Server(app, options)
    await server.listen(host, port, ssl=ssl, reuse_port=reuse_port, sock=sock)
    return server
