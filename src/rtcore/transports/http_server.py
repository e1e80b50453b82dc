"""The I/O edge: a server for HTTP/1.1 and WebSocket on one port.

:class:`Server` listens and owns its connections, each a
:class:`rtcore.transports.http_connection._Connection` (an asyncio
``BufferedProtocol``): HTTP mode until a WebSocket upgrade that the
application routes, then WebSocket mode. Handshake and close timeouts are
swept by one :class:`rtcore.engine.timers.TimerWheel` per server, not a timer
per connection.

Runs on uvloop (the default, see :func:`new_event_loop`) and on the stdlib loop.

What applications handle lives next door and is re-exported here:
:class:`HttpResponseWriter` in :mod:`rtcore.transports.http_response`,
:class:`WebSocket`, :class:`WebSocketRoute` and :class:`WebSocketHandler` in
:mod:`rtcore.transports.websocket_io`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as _ssl
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rtcore.engine.drain_scheduler import DrainScheduler
from rtcore.engine.timers import TimerWheel
from rtcore.frames import CLOSE_GOING_AWAY
from rtcore.transports.http_connection import _Connection, current_connection
from rtcore.transports.http_response import HttpResponseWriter
from rtcore.transports.websocket_io import WebSocket, WebSocketHandler, WebSocketRoute
from rtcore.wire.http import Request


__all__ = [
    "Application",
    "HttpResponseWriter",
    "Server",
    "ServerOptions",
    "WebSocket",
    "WebSocketHandler",
    "WebSocketRoute",
    "current_connection",
    "new_event_loop",
    "run",
    "serve",
]

_HTTP_CHUNK = 64 * 1024
# Every Server of this process: the metrics sum their refusals.
live_servers: weakref.WeakSet[Server] = weakref.WeakSet()


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
    # Seconds to wait for the peer's close frame after ours, then half-close (linger).
    close_timeout: float = 5.0
    # Largest request line + headers (431 beyond) and request body (413 beyond).
    max_header_size: int = 16 * 1024
    max_body_size: int = 1 << 20
    # Transport write-buffer watermarks: above high the connection is "paused"
    # and not read (no request parsed, no frame handled) until under low.
    write_high_water: int = 1 << 20
    write_low_water: int = 256 * 1024
    # Most pipelined HTTP requests parsed and waiting for their turn on one
    # connection; past it the connection is not read until they are answered.
    max_pipelined_requests: int = 32
    # Lingering close: after the server's last bytes (an HTTP error, a close
    # frame for a protocol violation) input is discarded for up to this long
    # and this many bytes before the socket closes (0 s: close at once).
    linger_timeout: float = 5.0
    linger_max_bytes: int = 16 << 20
    # Seconds an idle keep-alive HTTP connection stays open.
    keepalive_timeout: float = 75.0
    # TCP listen backlog.
    backlog: int = 4096
    # WebSocket upgrades answered in one event-loop iteration; more wait, in
    # arrival order, for the next iterations (see Server.upgrades).
    upgrades_per_iteration: int = 64


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
        # Connections refused or dropped by this core, by reason: http_<status>
        # (an error response), handshake_timeout, close_timeout, handler_failed.
        self.refusals: Counter[str] = Counter()
        # In a reconnect storm the upgrade requests of thousands of connections
        # arrive together, and the event loop reads all of them before it runs
        # anything else (libuv polls again at once while its event array comes
        # back full): answered as they are read, they would hold the loop for a
        # second. Past a share per iteration they wait here, reading paused.
        self.upgrades = DrainScheduler(self.options.upgrades_per_iteration)
        live_servers.add(self)

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
