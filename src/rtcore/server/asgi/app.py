"""The ASGI application of a node: :class:`AsgiApp`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from rtcore.errors import HttpError
from rtcore.protocol import get_codec
from rtcore.server.app import NodeApp, start_node
from rtcore.server.asgi.http import (
    AsgiResponseWriter,
    Receive,
    Scope,
    Send,
    read_body,
    request_from_scope,
    route_path,
)
from rtcore.server.asgi.websocket import AsgiWebSocketTransport, accept, reject


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.transports.http_server import Application, HttpResponseWriter, WebSocketRoute
    from rtcore.wire.http import Request


__all__ = ["AsgiApp"]

logger = logging.getLogger("rtcore.server.asgi")

_TEXT = [("Content-Type", "text/plain; charset=utf-8")]


def _client(scope: Scope) -> Any:
    client = scope.get("client")
    return tuple(client) if client else None


class AsgiApp:
    """An ASGI 3 application that serves a node's Centrifuge endpoints.

    It serves what :func:`rtcore.serve` serves on its port, through the same
    handlers: ``/connection/websocket`` (JSON, or Protobuf with the
    ``centrifuge-protobuf`` subprotocol), ``/connection/http_stream``,
    ``/connection/sse``, ``/emulation``, the unidirectional SSE and
    HTTP-streaming endpoints when enabled, ``/health``, and ``/api`` with
    ``/api/<method>`` (and ``/metrics``) unless ``api.port`` moves them to an
    internal port. Paths are relative to where it is mounted.

    Mount it in Starlette or FastAPI (``app.mount("/rt", asgi)``) or in a
    Django Channels ``URLRouter`` (``path("rt/", asgi)``), or run it on its
    own (``uvicorn module:asgi``). The node starts with the ASGI ``lifespan``
    when this is the top-level application; mounted, start it from the host
    application's lifespan (``FastAPI(lifespan=asgi.lifespan)``, or
    :meth:`startup` / :meth:`shutdown`). A node nobody started starts with
    the first request.

    Args:
        node: the node to serve; publish through it from anywhere in the
            process (``await node.publish(...)``).
        app: the routes to serve, by default ``NodeApp(node)``; pass your own
            :class:`~rtcore.server.app.NodeApp` to serve the routes you
            mounted on it, or an :class:`~rtcore.server.internal.InternalApp` for
            the internal port's endpoints.
    """

    #: Django Channels' URLRouter treats ``path("rt/", asgi)`` as a prefix, not an endpoint.
    _path_routing = True

    def __init__(self, node: Node, *, app: Application | None = None) -> None:
        self.node = node
        self.app: Application = app if app is not None else NodeApp(node)
        self._json = get_codec("json")
        self._started = False
        self._stopped = False
        self._lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True from :meth:`startup` until :meth:`shutdown`."""
        return self._started and not self._stopped

    async def startup(self) -> None:
        """Start the node (and its configured proxies) as ``rtcore.serve`` does; idempotent."""
        async with self._lock:
            if self._stopped:
                raise RuntimeError("this AsgiApp was shut down: make a new node to serve again")
            if self._started:
                return
            await start_node(self.node)
            self._started = True

    async def shutdown(self) -> None:
        """Finish in-flight server API requests (``http.shutdown_timeout``), then close the node.

        Clients are disconnected with 3001 (shutdown) and reconnect elsewhere.
        """
        async with self._lock:
            if self._stopped:
                return
            self._stopped = True
            api = getattr(self.app, "api", None)
            if api is not None:
                timeout = self.node.config.http.shutdown_timeout
                if not await api.drain(timeout):
                    logger.warning(
                        "%d server API request(s) still running at shutdown", api.in_flight
                    )
            await self.node.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """The node's lifetime as a host application's lifespan: ``FastAPI(lifespan=asgi.lifespan)``.

        Inside another lifespan: ``async with asgi.lifespan(): yield``.
        """
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server
                    logger.exception("node startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:  # noqa: BLE001 - reported to the server
                    logger.exception("node shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- ASGI --------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind not in ("http", "websocket"):
            raise ValueError(f"rtcore's ASGI application serves http and websocket, not {kind!r}")
        if not self._started and not self._stopped:
            await self.startup()
        if kind == "http":
            await self._http(scope, receive, send)
        else:
            await self._websocket(scope, receive, send)

    # -- HTTP --------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = AsgiResponseWriter(send, _client(scope))
        try:
            body = await read_body(receive, self.node.config.http.max_body_size)
        except HttpError as exc:
            _error(response, exc)
            await response.pump()
            return
        if body is None:
            return
        request = request_from_scope(scope, route_path(scope), body)
        watcher = asyncio.get_running_loop().create_task(_watch(receive, response))
        try:
            await self._answer(request, response)
            await response.pump()
        finally:
            watcher.cancel()

    async def _answer(self, request: Request, response: AsgiResponseWriter) -> None:
        """Run the route's handler as the native edge does (its error statuses included)."""
        try:
            # The handlers use the HttpResponseWriter interface, which this writer has.
            result = self.app.handle_http(request, cast("HttpResponseWriter", response))
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                # As on the native edge, a handler whose client went away is cancelled.
                response.handler = task
                try:
                    await response.pump(until=task)
                except asyncio.CancelledError:
                    task.cancel()
                    raise
                if task.cancelled():
                    return
                task.result()
        except HttpError as exc:
            _error(response, exc)
        except Exception:  # noqa: BLE001 - answered with 500
            logger.exception("HTTP handler failed")
            _error(response, HttpError(500, "internal server error"))
        else:
            if not response.started:
                _error(response, HttpError(500, "handler sent no response"))
            elif not response.finished:
                response.end()

    # -- WebSocket -----------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message.get("type") != "websocket.connect":
            return
        request = request_from_scope(scope, route_path(scope))
        try:
            route = self._protocol_route(request)
            subprotocol = accept(request, route)
        except HttpError as exc:
            await reject(scope, send, exc)
            return
        codec = self._json if route is getattr(self.app, "ws_route_json", None) else None
        transport = AsgiWebSocketTransport(
            self.node,
            codec if codec is not None else get_codec("protobuf"),
            send,
            request,
            _client(scope),
            route.max_message_size,
        )
        accepted: dict[str, Any] = {"type": "websocket.accept"}
        if subprotocol is not None:
            accepted["subprotocol"] = subprotocol
        try:
            await send(accepted)
        except OSError:
            transport.session.transport_closed()
            return
        await transport.run(receive)

    def _protocol_route(self, request: Request) -> WebSocketRoute:
        """The node's Centrifuge WebSocket route for this request (HttpError when there is none)."""
        route = self.app.route_websocket(request)
        if route is None:
            raise HttpError(404, "no WebSocket endpoint at this path")
        protocol_routes = (
            getattr(self.app, "ws_route_json", None),
            getattr(self.app, "ws_route_protobuf", None),
        )
        if not any(route is r for r in protocol_routes):
            raise HttpError(
                404, f"{request.path} is served by rtcore's own server only (rtcore.serve)"
            )
        return route


def _error(response: AsgiResponseWriter, exc: HttpError) -> None:
    if response.started:
        # Too late for a status line: end the connection, as the native edge does.
        raise RuntimeError(f"HTTP handler failed after its response started: {exc.message}")
    response.send(exc.status, [*_TEXT, *exc.headers], (exc.message + "\n").encode())


async def _watch(receive: Receive, response: AsgiResponseWriter) -> None:
    """Wait for ``http.disconnect`` and tell the response (it cancels the handler, ends streams)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            response.client_gone()
            return
