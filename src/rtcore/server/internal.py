"""The operator's endpoints: ``/api``, ``/metrics``, ``/health`` and the admin UI.

:func:`mount_internal` puts the server API and ``/metrics`` on a node's port;
:class:`InternalApp` is the internal port (``api.port``) that serves them on
their own. Both compose the API, the metrics and the admin UI, so they sit
beside those packages rather than inside one of them.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from rtcore.server.admin import mount_admin
from rtcore.server.api.endpoint import JSON_HEADERS, TEXT_HEADERS, ServerApi
from rtcore.transports.routing import HttpHandler


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.transports.http_server import HttpResponseWriter, WebSocketRoute
    from rtcore.wire.http import Request


__all__ = ["InternalApp", "health", "mount_internal"]


def health(request: Request, response: HttpResponseWriter) -> None:
    response.send(200, JSON_HEADERS, b"{}")


def mount_internal(app: Any) -> ServerApi | None:
    """Mount ``/api`` (and ``/api/<method>``) and ``/metrics`` on ``app`` as configured.

    ``app`` is a :class:`~rtcore.server.app.NodeApp` or an
    :class:`~rtcore.server.internal.InternalApp`.
    Returns the API handler, or None when ``api.enabled`` is false.
    """
    node = app.node
    api = None
    if node.config.api.enabled:
        api = ServerApi(node)
        app.mount("/api", api)
        app.mount("/api/", api, prefix=True)
    if node.config.metrics.enabled:
        from rtcore.server.metrics import MetricsEndpoint

        app.mount("/metrics", MetricsEndpoint(node, api_stats=api.stats if api else None))
    return api


class InternalApp:
    """The application of the internal port (``api.port``): ``/api``, ``/metrics``, ``/health``,
    and the admin web UI (``admin.enabled``) unless ``admin.external`` keeps it public."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.http_routes: dict[str, HttpHandler] = {"/health": health}
        self.http_prefixes: list[tuple[str, HttpHandler]] = []
        self.api = mount_internal(self)
        self.admin = mount_admin(self, internal=True)

    def mount(self, path: str, handler: HttpHandler, *, prefix: bool = False) -> None:
        if prefix:
            self.http_prefixes.append((path, handler))
        else:
            self.http_routes[path] = handler

    def route_websocket(self, request: Request) -> WebSocketRoute | None:
        return None

    def handle_http(self, request: Request, response: HttpResponseWriter) -> Awaitable[None] | None:
        handler = self.http_routes.get(request.path)
        if handler is None:
            for prefix, h in self.http_prefixes:
                if request.path.startswith(prefix):
                    handler = h
                    break
        if handler is None:
            response.send(404, TEXT_HEADERS, b"not found\n")
            return None
        return handler(request, response)
