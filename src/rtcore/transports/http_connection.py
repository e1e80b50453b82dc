"""One TCP connection of the server: HTTP/1.1 until an upgrade, then WebSocket.

:class:`_Connection` is the asyncio ``BufferedProtocol`` that
:class:`rtcore.transports.http_server.Server` creates per accepted socket.
In HTTP mode requests are parsed by :class:`rtcore.wire.http.HttpParser`
and answered through the application's ``handle_http`` hook; after an upgrade
that the application routes, ``get_buffer``/``buffer_updated`` hand the
socket's bytes straight to the frame parser's own buffer (no copy on the
compiled path). Nothing here creates a task, future or timer per connection
on the hot path: deadlines are on the server's timer wheel, WebSocket
messages are dispatched synchronously, and writes go straight to the
transport.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from rtcore.errors import HttpError
from rtcore.frames import OP_BINARY, OP_PING, OP_TEXT
from rtcore.transports.http_response import HttpResponseWriter
from rtcore.transports.websocket_io import WebSocket, WebSocketHandler
from rtcore.wire.handshake import accept_websocket
from rtcore.wire.http import HttpParser, Request
from rtcore.wire.http_response import error_response
from rtcore.wire.websocket import OPEN, WebSocketConnection


if TYPE_CHECKING:
    from rtcore.transports.http_server import Server

__all__ = ["current_connection"]

# The server's logger: operators configure one name for the I/O edge.
logger = logging.getLogger("rtcore.transports.http_server")

# Pipelined input is parsed in slices of this size, so that a full pipeline
# stops the parsing of a large read early (the rest waits unparsed).
_PARSE_SLICE = 4096

# The connection whose request the application routes or handles (an async
# handler's task inherits it): admission looks at the peer through it.
_current: ContextVar[_Connection | None] = ContextVar("rtcore_connection", default=None)


def current_connection() -> _Connection | None:
    """The connection of the request being routed or handled (None outside one).

    Per-IP admission uses its ``peer_host`` and ``call_when_closed``.
    """
    return _current.get()


class _Connection(asyncio.BufferedProtocol):
    """One TCP connection: HTTP/1.1 until an upgrade, then WebSocket.

    Nothing is read while the write buffer is above its high-water mark, so a
    peer that never reads the answers (pipelined requests, pings) holds at
    most that buffer, not a growing queue of responses.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peername: Any = None
        self.lost = False
        self.closing = False
        self.write_paused = False
        # Whether the transport reads (as last told by _update_reading).
        self._reading = True
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
        self._pending: list[Request] = []  # short; an empty deque is 760 bytes
        # Received HTTP bytes not yet parsed: they wait while the pipeline is full.
        self._backlog = bytearray()
        # True while a response is being produced (requests wait in _pending).
        self._busy = False
        # True while _next_request runs (a resume inside it must not re-enter).
        self._serving = False
        # True when bytes of a not yet complete request were received.
        self._partial = False
        # True between a keep-alive response and the next request's first byte.
        self._idle = False
        self._writer: HttpResponseWriter | None = None
        self._task: asyncio.Task[None] | None = None
        # Lingering close: input is discarded until EOF, the deadline or the budget.
        self._lingering = False
        self._linger_left = 0
        # Called once when the connection is lost (see call_when_closed).
        self._on_lost: list[Callable[[], None]] | None = None
        # WebSocket mode state.
        self.ws: WebSocket | None = None
        self._wsconn: WebSocketConnection | None = None
        self._handler: WebSocketHandler | None = None
        # Bytes in the write buffer above which pongs end the connection (0: none).
        self._max_output = 0
        # Set when a read was answered with pongs: the output limit is checked.
        self._ponged = False
        # A handshake or keep-alive deadline was seen passed once (see on_timer).
        self._overdue = False
        # The upgrade request waits for its share of an iteration (Server.upgrades),
        # and was given it (start_drain).
        self._upgrade_waiting = False
        self._upgrade_granted = False

    # -- peer ------------------------------------------------------------------

    @property
    def peer_host(self) -> str | None:
        """The peer's IP address as text, or None (e.g. a Unix socket)."""
        peer = self.peername
        if isinstance(peer, tuple) and peer and isinstance(peer[0], str) and peer[0]:
            return peer[0]
        return None

    def call_when_closed(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once when the connection is lost (at once if it already is)."""
        if self.lost:
            callback()
            return
        if self._on_lost is None:
            self._on_lost = []
        self._on_lost.append(callback)

    # -- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass.
        self.transport = transport  # type: ignore[assignment]
        self.peername = transport.get_extra_info("peername")
        opts = self.server.options
        transport.set_write_buffer_limits(  # type: ignore[attr-defined]
            high=opts.write_high_water, low=opts.write_low_water
        )
        self.server._connections.add(self)
        self.server._deadlines.schedule_in(self, opts.handshake_timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        wsconn = self._wsconn
        if wsconn is not None and not self._lingering:
            return wsconn.get_buffer(sizehint)
        return self._chunk_view

    def buffer_updated(self, nbytes: int) -> None:
        if self._lingering:
            self._discard(nbytes)
            return
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
            writer, self._writer = self._writer, None  # it points back here
            writer._notify_lost()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._pending.clear()
        self._backlog = bytearray()
        self.transport = None
        self._drop_http()
        # The WebSocket and its handler point back here: dropped, they and this
        # object are freed by reference counting.
        self.ws = None
        self._handler = None
        callbacks, self._on_lost = self._on_lost, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception:  # noqa: BLE001 - one callback must not break teardown
                logger.exception("connection close callback failed")

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._http is not None and self._wsconn is None:
            self._next_request()
        else:
            self._update_reading()

    # -- flow control --------------------------------------------------------

    def _wants_input(self) -> bool:
        if self._lingering:
            return True
        if self._wsconn is None and self._http is None:
            # A streamed last response: input is discarded, and reading shows
            # at once when the client goes away.
            return True
        if self.write_paused:
            return False
        if self._wsconn is not None:
            return True
        # HTTP: not while an async handler runs, an upgrade waits or the pipeline is full.
        return (
            self._task is None
            and not self._backlog
            and not self._upgrade_waiting
            and len(self._pending) < self.server.options.max_pipelined_requests
        )

    def _update_reading(self) -> None:
        """Pause or resume reading the transport as the state asks."""
        transport = self.transport
        if transport is None or self.lost or transport.is_closing():
            return
        want = self._wants_input()
        if want == self._reading:
            return
        self._reading = want
        if want:
            transport.resume_reading()
        else:
            transport.pause_reading()

    # -- closing -------------------------------------------------------------

    def _close_lingering(self) -> None:
        """Close after what is written, discarding input meanwhile (as nginx does).

        Closing with unread input makes the kernel send a reset that can
        destroy our last bytes (an error response, a close frame) before the
        peer reads them. So the write side is shut down and input discarded
        until the peer closes, ``linger_timeout`` or ``linger_max_bytes``.
        """
        transport = self.transport
        self.closing = True
        if transport is None or self.lost or self._lingering or transport.is_closing():
            return
        opts = self.server.options
        if opts.linger_timeout <= 0 or not transport.can_write_eof():
            # TLS transports cannot half-close: a plain close.
            self._close_transport()
            return
        self._lingering = True
        self._linger_left = opts.linger_max_bytes
        self._drop_http()
        self._pending.clear()
        self._backlog = bytearray()
        transport.write_eof()
        self.server._deadlines.schedule_in(self, opts.linger_timeout)
        self._update_reading()

    def _discard(self, nbytes: int) -> None:
        self._linger_left -= nbytes
        if self._linger_left < 0 and self.transport is not None:
            self.transport.abort()

    def _close_transport(self) -> None:
        """Close once the write buffer is flushed, or drop TCP after the close timeout."""
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            # A peer that never reads would keep the connection and its buffer.
            self.server._deadlines.schedule_in(self, self.server.options.close_timeout)
        else:
            self.server._deadlines.cancel(self)
        transport.close()

    # -- timers --------------------------------------------------------------

    def on_timer(self, now: float) -> None:
        """A handshake, keep-alive, close or linger timeout expired: end the connection."""
        transport = self.transport
        if transport is None:
            return
        server = self.server
        if self._wsconn is None and not self.closing:
            if not self._overdue:
                # A lagging loop may sweep before reading a request waiting in
                # the socket: confirm at the next sweep, after a read.
                self._overdue = True
                server._deadlines.schedule_in(self, 0)
                return
            if self._partial:
                # A request was begun but not finished within the timeout.
                self._send_error(HttpError(408, "request not completed in time"))
                return
            if self._upgrade_waiting:
                # The client did its part; this server could not get to its
                # upgrade in time (Server.upgrades): shed it with advice.
                self._send_error(
                    HttpError(
                        503,
                        "server busy: too many WebSocket handshakes waiting",
                        [("Retry-After", str(random.randint(1, 5)))],
                    )
                )
                return
            if not self._idle:
                server.refusals["handshake_timeout"] += 1
        elif self._wsconn is not None and not self._lingering and not transport.is_closing():
            # Our close frame got no answer: a reset would make the peer's kernel
            # discard it unread. Half-close, drop TCP after the linger timeout.
            server.refusals["close_timeout"] += 1
            self._close_lingering()
            if self._lingering or transport.is_closing():
                return
        transport.abort()

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
            self._notify_closed()
            if self._lingering or self.transport is None:
                return
            if wsconn.close_code_received is None:
                # We failed the connection while the peer may still be sending.
                self._close_lingering()
            else:
                self.closing = True
                self._close_transport()

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
        if self._ponged and self.ws is not None:
            # Pongs count against the output limit like the application's writes.
            self._ponged = False
            self.ws._check_output(self._max_output)

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
                    self._ponged = True
                    self.flush_ws()
                else:
                    on_pong = getattr(handler, "on_pong", None)
                    if on_pong is not None:
                        on_pong(payload)

    def _notify_closed(self) -> None:
        if self.ws is not None:
            self.ws._notify_closed()

    def _drop_http(self) -> None:
        """HTTP mode is over (upgrade, lingering close, lost connection)."""
        parser, self._http = self._http, None
        if parser is not None:
            parser.close()

    def _upgrade(self, request: Request, trailing: bytes) -> None:
        token = _current.set(self)
        try:
            route = self.server.app.route_websocket(request)
        except HttpError as exc:
            self._send_error(exc)
            return
        finally:
            _current.reset(token)
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
        self._drop_http()
        self._backlog = bytearray()
        wsconn = WebSocketConnection(
            is_server=True, max_message_size=route.max_message_size, deflate=accepted.deflate
        )
        self._max_output = route.max_output_size
        self.write(accepted.response)
        self._wsconn = wsconn
        ws = WebSocket(self, request, accepted.subprotocol, wsconn)
        self.ws = ws
        try:
            handler = route.handler_factory(ws)
        except Exception:  # noqa: BLE001
            logger.exception("WebSocket handler factory failed; closing with 1011")
            self.server.refusals["handler_failed"] += 1
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
        self._update_reading()

    # -- HTTP mode -----------------------------------------------------------

    def _http_data(self, data: memoryview) -> None:
        if self._http is None or self.closing:
            return
        if self._idle:
            # First bytes of the next request: it gets the handshake timeout.
            self._idle = self._overdue = False
            self.server._deadlines.schedule_in(self, self.server.options.handshake_timeout)
        if self._backlog:
            self._backlog += data
        else:
            used = self._parse(data)
            if used < len(data):
                self._backlog += data[used:]
        self._next_request()

    def _parse(self, data: memoryview | bytearray) -> int:
        """Feed ``data`` to the parser until the pipeline is full; returns the bytes used."""
        parser = self._http
        if parser is None:
            return len(data)
        limit = self.server.options.max_pipelined_requests
        pending = self._pending
        size = len(data)
        used = 0
        completed = False
        while used < size and len(pending) < limit and not parser.upgraded:
            piece = data[used : used + _PARSE_SLICE] if size - used > _PARSE_SLICE else data[used:]
            used += len(piece)
            try:
                requests = parser.feed_data(piece)
            except HttpError as exc:
                pending.clear()
                self._backlog = bytearray()
                self._send_error(exc)
                return size
            interim = parser.data_to_send()
            if interim:
                # "100 Continue" for a client that asked before sending its body.
                self.write(interim)
            if requests:
                completed = True
                pending.extend(requests)
        self._partial = not completed and not pending
        return used

    def _next_request(self) -> None:
        """Answer the waiting requests in order while the peer keeps up; then read on."""
        if self._serving:
            return
        self._serving = True
        try:
            self._serve_pending()
        finally:
            self._serving = False
        self._update_reading()

    def start_drain(self) -> None:
        """Called by ``Server.upgrades``: the waiting upgrade request has its share now."""
        self._upgrade_granted = True
        if not self._serving:  # else _serve_pending, which asked, goes on with it
            self._next_request()

    def _serve_pending(self) -> None:
        pending = self._pending
        while not self._busy and not self.closing and not self.lost and not self.write_paused:
            if not pending:
                backlog = self._backlog
                if not backlog or self._http is None:
                    return
                used = self._parse(backlog)
                del backlog[:used]
                if not pending:
                    return
                continue
            request = pending[0]
            if request.upgrade and not self._upgrade_granted:
                if self._upgrade_waiting:
                    return  # in line already
                self._upgrade_waiting = True
                self.server.upgrades.add(self)  # may grant it at once
                if not self._upgrade_granted:
                    return  # start_drain resumes it in a later iteration
            pending.pop(0)
            if request.upgrade:
                self._upgrade_waiting = self._upgrade_granted = False
                parser = self._http
                # Bytes after the upgrade request: the parser's and the unparsed rest.
                trailing = bytes(parser.trailing_data) if parser is not None else b""
                trailing += self._backlog
                pending.clear()
                self._upgrade(request, trailing)
                return
            self._busy = True
            self.server._deadlines.cancel(self)
            writer = HttpResponseWriter(self, request)
            self._writer = writer
            token = _current.set(self)
            try:
                result = self.server.app.handle_http(request, writer)
                if inspect.isawaitable(result):
                    # The task inherits the context: admission sees this connection.
                    self._task = asyncio.ensure_future(self._await_handler(result, writer))
                    return
            except HttpError as exc:
                self._handler_error(writer, exc)
                continue
            except Exception:  # noqa: BLE001
                logger.exception("HTTP handler failed")
                self._handler_error(writer, HttpError(500, "internal server error"))
                continue
            finally:
                _current.reset(token)
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
        if self.transport is not None:
            self._next_request()

    def _handler_error(self, writer: HttpResponseWriter, exc: HttpError) -> None:
        if writer.started:
            # Too late for a status line: end the connection.
            self.closing = True
            self._close_transport()
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
            self._close_lingering()
            return
        self._idle, self._overdue = True, False
        self.server._deadlines.schedule_in(self, self.server.options.keepalive_timeout)

    def _send_error(self, exc: HttpError) -> None:
        self.server.refusals[f"http_{exc.status}"] += 1
        self.closing = True
        self.write(error_response(exc, keep_alive=False))
        self._close_lingering()
