"""What the transports need from the server that mounts them.

Transports sit below the server edge: they never import it. The edge hands
itself in as an :class:`AppHost` (``rtcore.server.app.NodeApp`` is one), and a
transport mounts its HTTP handlers and WebSocket routers on it. The origin
rule and CORS headers are shared by every transport and the WebSocket route.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from rtcore.errors import HttpError


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.transports.http_server import HttpResponseWriter, WebSocketRoute
    from rtcore.wire.http import Request


__all__ = ["AppHost", "Cors", "HttpHandler", "OriginCheck", "WebSocketRouter", "origin_checker"]

logger = logging.getLogger("rtcore.transports.routing")

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


class OriginCheck:
    """``client.allowed_origins`` as a callable: True for an allowed ``Origin``.

    Centrifugo's rule: a request without ``Origin`` is accepted; otherwise
    the origin must match a pattern. A refusal is logged at info level with
    the origin and the allowed patterns, so that a browser page that cannot
    connect is explained in the server's log; :meth:`allows` checks without
    logging.
    """

    __slots__ = ("allowed", "transport", "_patterns")

    def __init__(self, allowed: list[str], transport: str = "") -> None:
        self.allowed = list(allowed)
        # Named in the refusal's log line ("websocket"); "" when unknown.
        self.transport = transport
        self._patterns = [p.lower() for p in allowed]

    def allows(self, origin: str | None) -> bool:
        if origin is None:
            return True
        o = origin.lower()
        return any(p == "*" or fnmatch.fnmatchcase(o, p) for p in self._patterns)

    def __call__(self, origin: str | None) -> bool:
        if self.allows(origin):
            return True
        log_refused_origin(origin or "", self.allowed, self.transport)
        return False


def origin_checker(allowed: list[str], transport: str = "") -> OriginCheck:
    """The origin rule of ``client.allowed_origins`` (see :class:`OriginCheck`)."""
    return OriginCheck(allowed, transport)


def log_refused_origin(origin: str, allowed: list[str], transport: str, path: str = "") -> None:
    """The info line of a refused browser origin."""
    if not logger.isEnabledFor(logging.INFO):
        return
    if allowed:
        why = "it matches none of client.allowed_origins (" + ", ".join(allowed) + ")"
    else:
        why = "client.allowed_origins is empty, so only clients without an Origin header connect"
    extra = {"origin": origin, "reason": why}
    if transport:
        extra["transport"] = transport
    if path:
        extra["path"] = path
    logger.info("origin %r refused (403): %s", origin, why, extra=extra)


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
        check = self._check
        if isinstance(check, OriginCheck):
            # Logged here, where the request says which endpoint refused it.
            allowed = check.allows(origin)
            if not allowed:
                path = request.path
                log_refused_origin(origin, check.allowed, path.rsplit("/", 1)[-1], path)
        else:
            allowed = check(origin)
        if not allowed:
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
