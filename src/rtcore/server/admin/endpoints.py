"""The HTTP endpoints of the admin web UI.

Under ``admin.handler_prefix`` (empty by default):

* ``GET /``: the single-page app; ``GET /admin/static/<file>``: its script and style.
* ``POST /admin/auth`` ``{"password": ...}``: 200 ``{"token", "expires"}`` and an
  HttpOnly cookie; 401 for a wrong password; 429 with ``Retry-After`` past the
  attempt limit.
* ``GET /admin/session``: whether the request is signed in.
* ``POST /admin/logout``: ends the session.
* ``POST /admin/api/<method>``: a server API method (``info``, ``channels``,
  ``presence``, ``history``, ``publish``, ``broadcast``, ``disconnect``, ...) run
  with the admin's authorization: the body and the answer are those of
  ``/api/<method>``. The browser never holds the API key.

The session is the cookie, or ``Authorization: token <token>`` for scripts.
POSTs must say ``Content-Type: application/json``, which a page of another
site cannot send without a CORS preflight that is never answered, and the
cookie is ``SameSite=Strict``: no cross-site request acts as the admin.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from rtcore.errors import HttpError
from rtcore.server.admin.auth import AdminAuth, SignInLimiter
from rtcore.server.api.errors import ApiError
from rtcore.server.api.methods import Executor
from rtcore.server.api.rawjson import decode_text, dump, parse_json
from rtcore.server.api.schema import RAW_SPECS, request_params


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.transports.http_server import HttpResponseWriter
    from rtcore.wire.http import Request


__all__ = ["ADMIN_METHODS", "AdminEndpoints", "COOKIE_NAME", "STATIC_FILES"]

logger = logging.getLogger("rtcore.server.admin")

#: The server API methods the admin UI may call (those Centrifugo's admin calls).
ADMIN_METHODS: Final = (
    "info",
    "channels",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "publish",
    "broadcast",
    "subscribe",
    "unsubscribe",
    "disconnect",
)
#: Methods that change something: each call is logged at info.
_ACTIONS: Final = frozenset(ADMIN_METHODS[5:])

COOKIE_NAME: Final = "rtcore_admin"

#: The files of the single-page app (package data: rtcore/server/admin/static/).
STATIC_FILES: Final = {
    "index.html": "text/html; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
    "admin.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

_JSON: Final = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
_TEXT: Final = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
_PAGE_HEADERS: Final = [
    # Only the app's own files run; no framing (clickjacking), no referrer.
    (
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
]


def _read_static() -> dict[str, bytes]:
    root = resources.files("rtcore.server.admin").joinpath("static")
    return {name: root.joinpath(name).read_bytes() for name in STATIC_FILES}


def _remote_host(peer: Any) -> str:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "" if peer is None else str(peer)


class AdminEndpoints:
    """The admin UI of a node: its static files, sign-in and the API proxy.

    Args:
        node: the node whose ``admin`` configuration and API methods are used.
        limiter: the sign-in attempt limit (default: 5 at once, then one per 12 s
            per address).
    """

    def __init__(self, node: Node, limiter: SignInLimiter | None = None) -> None:
        cfg = node.config.admin
        self.node = node
        self.prefix = cfg.handler_prefix.rstrip("/")
        self.insecure = cfg.insecure
        self.auth = AdminAuth(cfg.password, cfg.secret, cfg.token_ttl)
        self.limiter = limiter if limiter is not None else SignInLimiter()
        self.executor = Executor(node)
        self.files = _read_static()
        # The cookie goes only to the admin's own paths.
        self._cookie_path = self.prefix + "/" if self.prefix else "/"
        if self.insecure:
            logger.warning(
                "admin.insecure: the admin web UI at %s/ needs no sign-in; anyone who reaches "
                "it can publish and disconnect",
                self.prefix,
            )

    def mount(self, app: Any) -> None:
        """Mount the routes on ``app`` (a NodeApp or an InternalApp)."""
        p = self.prefix
        app.mount(p + "/", self.page)
        if p:
            app.mount(p, self.to_page)
        for name in STATIC_FILES:
            if name != "index.html":
                app.mount(f"{p}/admin/static/{name}", self.static)
        app.mount(p + "/admin/auth", self.sign_in)
        app.mount(p + "/admin/session", self.session)
        app.mount(p + "/admin/logout", self.sign_out)
        app.mount(p + "/admin/api/", self.api, prefix=True)

    # -- the page ----------------------------------------------------------------

    def _get_only(self, request: Request, response: HttpResponseWriter) -> bool:
        if request.method in ("GET", "HEAD"):
            return True
        response.send(405, [*_TEXT, ("Allow", "GET, HEAD")], b"method not allowed: use GET\n")
        return False

    def page(self, request: Request, response: HttpResponseWriter) -> None:
        if self._get_only(request, response):
            self._send_file(request, response, "index.html", _PAGE_HEADERS)

    def to_page(self, request: Request, response: HttpResponseWriter) -> None:
        response.send(308, [("Location", self.prefix + "/"), *_TEXT], b"")

    def static(self, request: Request, response: HttpResponseWriter) -> None:
        if self._get_only(request, response):
            name = request.path.rsplit("/", 1)[1]
            headers = [("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-cache")]
            self._send_file(request, response, name, headers)

    def _send_file(
        self,
        request: Request,
        response: HttpResponseWriter,
        name: str,
        headers: Sequence[tuple[str, str]],
    ) -> None:
        body = self.files[name]
        all_headers = [("Content-Type", STATIC_FILES[name]), *headers]
        if request.method == "HEAD":
            response.send(200, [*all_headers, ("Content-Length", str(len(body)))], b"")
        else:
            response.send(200, all_headers, body)

    # -- sign-in -----------------------------------------------------------------

    def token_of(self, request: Request) -> str | None:
        """The session token the request carries (header first, then the cookie)."""
        auth = request.header("authorization")
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "token" and value.strip():
                return value.strip()
        for cookie in request.header_values("cookie"):
            for part in cookie.split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE_NAME and value:
                    return value
        return None

    def signed_in(self, request: Request) -> int | None:
        """The session's expiry (0 with ``admin.insecure``), or None when not signed in."""
        if self.insecure:
            return 0
        token = self.token_of(request)
        return self.auth.verify(token) if token is not None else None

    def _post_json(self, request: Request, response: HttpResponseWriter) -> bool:
        if request.method != "POST":
            response.send(405, [*_TEXT, ("Allow", "POST")], b"method not allowed: use POST\n")
            return False
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            response.send(415, _TEXT, b"Content-Type must be application/json\n")
            return False
        return True

    def _cookie(self, token: str, max_age: int) -> tuple[str, str]:
        return (
            "Set-Cookie",
            f"{COOKIE_NAME}={token}; Path={self._cookie_path}; Max-Age={max_age}; "
            "HttpOnly; SameSite=Strict",
        )

    def sign_in(self, request: Request, response: HttpResponseWriter) -> None:
        if not self._post_json(request, response):
            return
        host = _remote_host(response.remote_address)
        wait = self.limiter.attempt(host)
        if wait > 0:
            logger.warning("admin sign-in refused: too many attempts from %s", host)
            retry = str(max(1, math.ceil(wait)))
            body = dump({"error": f"too many sign-in attempts, retry in {retry} s"})
            response.send(429, [*_JSON, ("Retry-After", retry)], body)
            return
        try:
            value = json.loads(decode_text(request.body))
        except HttpError as exc:
            response.send(400, _JSON, dump({"error": exc.message}))
            return
        except ValueError:
            response.send(400, _JSON, dump({"error": "the body is not JSON"}))
            return
        password = value.get("password") if isinstance(value, dict) else None
        if not isinstance(password, str):
            response.send(400, _JSON, dump({"error": 'expected {"password": "..."}'}))
            return
        if self.insecure:
            response.send(200, _JSON, dump({"token": "", "expires": 0, "insecure": True}))
            return
        if not self.auth.password_matches(password):
            logger.warning("admin sign-in from %s: wrong password", host)
            response.send(401, _JSON, dump({"error": "wrong password"}))
            return
        token, expires = self.auth.issue()
        logger.info("admin signed in from %s", host)
        response.send(
            200,
            [*_JSON, self._cookie(token, int(self.auth.ttl))],
            dump({"token": token, "expires": expires}),
        )

    def session(self, request: Request, response: HttpResponseWriter) -> None:
        if not self._get_only(request, response):
            return
        expires = self.signed_in(request)
        body: dict[str, bool | int] = {
            "authenticated": expires is not None,
            "insecure": self.insecure,
        }
        if expires:
            body["expires"] = expires
        response.send(200, _JSON, dump(body))

    def sign_out(self, request: Request, response: HttpResponseWriter) -> None:
        if not self._post_json(request, response):
            return
        token = self.token_of(request)
        if token is not None:
            self.auth.revoke(token)
        response.send(200, [*_JSON, self._cookie("", 0)], b"{}")

    # -- the server API --------------------------------------------------------------

    async def api(self, request: Request, response: HttpResponseWriter) -> None:
        method = request.path[len(self.prefix) + len("/admin/api/") :]
        if self.signed_in(request) is None:
            response.send(401, _JSON, dump({"error": "sign in first"}))
            return
        if not self._post_json(request, response):
            return
        if method not in ADMIN_METHODS:
            shown = method[:64] if method.isprintable() else "?"
            message = f"unknown admin method {shown!r}; methods: {', '.join(ADMIN_METHODS)}"
            response.send(404, _JSON, dump({"error": message}))
            return
        try:
            text = decode_text(request.body)
            value = parse_json(text, RAW_SPECS[method]) if text.strip() else {}
            params = request_params(method, value, "")
        except HttpError as exc:
            response.send(exc.status, _JSON, dump({"error": exc.message}))
            return
        if method in _ACTIONS:
            logger.info(
                "admin %s from %s: %s",
                method,
                _remote_host(response.remote_address),
                _summary(params),
                extra={"admin_method": method},
            )
        try:
            result = await self.executor.call(method, params)
        except ApiError as exc:
            response.send(200, _JSON, dump({"error": exc.to_json()}))
            return
        response.send(200, _JSON, dump({"result": result}))


def _summary(params: dict[str, Any]) -> str:
    """What an action was aimed at, for the log (never the data)."""
    keys = ("channel", "channels", "user", "client")
    return ", ".join(f"{k}={params[k]!r}" for k in keys if params.get(k)) or "-"
