"""What the transports need from the server that mounts them.

Transports sit below the server edge: they never import it. The edge hands
itself in as an :class:`AppHost` (``rtcore.server.app.NodeApp`` is one), and a
transport mounts its HTTP handlers and WebSocket routers on it. The origin
rule and CORS headers are shared by every transport and the WebSocket route.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from rtcore.errors import HttpError


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.transports.http_server import HttpResponseWriter, WebSocketRoute
    from rtcore.wire.http import Request


__all__ = ["AppHost", "Cors", "HttpHandler", "WebSocketRouter", "origin_checker"]

HttpHandler = Callable[["Request", "HttpResponseWriter"], Awaitable[None] | None]
WebSocketRouter = Callable[["Request"], "WebSocketRoute | None"]


class AppHost(Protocol):
    """The routes of one port, as a transport sees them."""

    node: Node
    http_routes: dict[str, HttpHandler]
    ws_routers: dict[str, WebSocketRouter]

    def mount(self, path: str, handler: HttpHandler, *, prefix: bool = False) -> None: ...

    def admit_connection(self) -> None:
        """Raise HttpError (503 with Retry-After) when new connections are over the rate limit."""


def origin_checker(allowed: list[str]) -> Callable[[str | None], bool]:
    """Centrifugo's rule: no Origin header is accepted; otherwise it must match a pattern."""
    patterns = [p.lower() for p in allowed]

    def check(origin: str | None) -> bool:
        if origin is None:
            return True
        o = origin.lower()
        return any(p == "*" or fnmatch.fnmatchcase(o, p) for p in patterns)

    return check


# A comma-separated list of header names, echoed in a preflight answer.
_HEADER_LIST_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+(\s*,\s*[A-Za-z0-9!#$%&'*+\-.^_`|~]+)*$"
)


class Cors:
    """Origin check and CORS headers of the HTTP transports.

    The rule is the WebSocket one (``client.allowed_origins``, PROTOCOL.md
    §1.1): a request without ``Origin`` is accepted (not a browser); with
    ``Origin`` it must match a pattern, else 403 before anything runs.
    Allowed origins are reflected with ``Vary: Origin``.
    """

    __slots__ = ("_check",)

    def __init__(self, check_origin: Callable[[str | None], bool]) -> None:
        self._check = check_origin

    def headers(self, request: Request) -> list[tuple[str, str]]:
        """CORS headers for a response to ``request``; HttpError 403 for a foreign origin."""
        origin = request.header("origin")
        if origin is None:
            return []
        if not self._check(origin):
            raise HttpError(403, "origin not allowed", [("Vary", "Origin")])
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]

    def preflight(self, request: Request, response: HttpResponseWriter, methods: str) -> None:
        """Answer an ``OPTIONS`` request: 204 with the allowed methods and headers."""
        headers = self.headers(request)
        headers.append(("Access-Control-Allow-Methods", methods))
        wanted = request.header("access-control-request-headers")
        if wanted and _HEADER_LIST_RE.match(wanted.strip()):
            headers.append(("Access-Control-Allow-Headers", wanted.strip()))
        else:
            headers.append(("Access-Control-Allow-Headers", "Content-Type"))
        headers.append(("Access-Control-Max-Age", "300"))
        response.send(204, headers)
