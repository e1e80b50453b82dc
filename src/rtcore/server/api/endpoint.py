"""The ``/api`` HTTP handler: key check, method routing, error modes, draining at
shutdown, the optional access log (``api.access_log``), and the counts and
durations of requests (:class:`ApiStats`, read by ``rtcore.server.metrics``)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from rtcore.engine import tracing
from rtcore.engine.stats import Histogram
from rtcore.errors import HttpError
from rtcore.server.api.batch import run_batch, run_legacy
from rtcore.server.api.errors import ApiError
from rtcore.server.api.methods import Executor, RpcHandler
from rtcore.server.api.rawjson import decode_text, dump, parse_json
from rtcore.server.api.schema import FIELDS, RAW_SPECS, request_params


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.transports.http_server import HttpResponseWriter
    from rtcore.wire.http import Request


__all__ = ["ApiStats", "JSON_HEADERS", "METHODS", "TEXT_HEADERS", "ServerApi"]

logger = logging.getLogger("rtcore.server.api")
#: One info line per request when ``api.access_log`` is on.
access_logger = logging.getLogger("rtcore.server.api.access")

JSON_HEADERS: Final = [("Content-Type", "application/json")]
TEXT_HEADERS: Final = [("Content-Type", "text/plain; charset=utf-8")]

#: Methods served at ``/api/<method>`` (``batch`` included).
METHODS: Final = (*FIELDS, "batch")
_METHOD_SET: Final = frozenset(METHODS)

#: The ``method`` label of ``POST /api`` (the legacy form) and of paths that name no method.
LEGACY_METHOD: Final = "legacy"
UNKNOWN_METHOD: Final = "unknown"

# Error-object code -> HTTP status in the "transport" error mode.
_TRANSPORT_STATUS: Final = {100: 500, 102: 404, 104: 404, 107: 400, 108: 400, 112: 416, 113: 409}


class ApiStats:
    """Requests of the server API: counts by method and status, durations by method.

    ``method`` is the API method of the path (``batch`` for ``/api/batch``,
    ``legacy`` for ``/api``, ``unknown`` for a path that names no method, so
    the label set stays bounded); ``status`` is the HTTP status (0: the
    handler failed before answering). Errors Centrifugo reports in a 200 body
    are counted by method and error code in ``errors``.
    """

    __slots__ = ("requests", "errors", "durations")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.errors: dict[tuple[str, int], int] = {}
        self.durations: dict[str, Histogram] = {}

    def observe(self, method: str, status: int, seconds: float) -> None:
        key = (method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.durations.get(method)
        if histogram is None:
            histogram = self.durations[method] = Histogram()
        histogram.observe(seconds)

    def count_error(self, method: str, code: int) -> None:
        key = (method, code)
        self.errors[key] = self.errors.get(key, 0) + 1


def _method_label(path: str) -> str:
    if path == "/api":
        return LEGACY_METHOD
    method = path[5:] if path.startswith("/api/") else ""
    return method if method in _METHOD_SET else UNKNOWN_METHOD


class ServerApi:
    """The ``/api`` HTTP handler of a node (mounted by :class:`~rtcore.server.app.NodeApp`).

    Args:
        node: the node the methods act on.

    Attributes:
        closing: set at shutdown; new requests get 503 while in-flight ones finish.
        stats: counts and durations of the requests (metrics).
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config.api
        self.executor = Executor(node)
        self.stats = ApiStats()
        self.closing = False
        self._in_flight = 0
        self._idle: asyncio.Event | None = None
        # An empty key is said when a request meets it, once: an application that
        # embeds the node and never calls the API is not told about it.
        self._told_empty_key = False

    # -- extension and lifecycle ------------------------------------------------

    def add_rpc(self, method: str, handler: RpcHandler) -> None:
        """Serve the ``rpc`` method ``method``: ``handler(params_json_or_None)`` returns
        the result ``data`` (JSON bytes or a JSON-serialisable value) or raises
        :class:`ApiError`."""
        if not method:
            raise ValueError("rpc method name must not be empty")
        self.executor.rpc_handlers[method] = handler

    @property
    def in_flight(self) -> int:
        """Requests being executed now."""
        return self._in_flight

    async def drain(self, timeout: float) -> bool:
        """Refuse new requests (503) and wait up to ``timeout`` s for in-flight ones.

        Returns:
            True when nothing is in flight any more.
        """
        self.closing = True
        if not self._in_flight:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # -- request handling ---------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        """Whether the request carries the configured API key (or the API is insecure)."""
        if self.config.insecure:
            return True
        key = self.config.key
        if not key:
            if not self._told_empty_key:
                self._told_empty_key = True
                logger.warning(
                    "server API request refused: api.key is empty, so every request gets 401 "
                    "(set api.key, or api.insecure = true behind a trusted network)"
                )
            return False
        given = request.header("x-api-key")
        if given is None:
            auth = request.header("authorization")
            if auth is not None:
                scheme, _, value = auth.partition(" ")
                if scheme.lower() == "apikey":
                    given = value.strip()
        if given is None:
            try:
                values = request.query_params().get("api_key")
            except HttpError:
                values = None
            given = values[0] if values else None
        return given is not None and hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8"))

    async def __call__(self, request: Request, response: HttpResponseWriter) -> None:
        method = _method_label(request.path)
        started = time.perf_counter()
        recorded = _StatusRecorder(response)
        tracer = tracing.tracer
        try:
            if tracer is None:
                await self._serve(request, recorded)
            else:
                with tracer.span("rtcore.api " + method, {"rtcore.api.method": method}) as span:
                    await self._serve(request, recorded)
                    if span is not None:
                        span.set_attribute("http.response.status_code", recorded.status)
        finally:
            self.stats.observe(method, recorded.status, time.perf_counter() - started)
            if recorded.error_code:
                self.stats.count_error(method, recorded.error_code)
            if self.config.access_log:
                _log_access(request, response.remote_address, recorded.status, started)

    async def _serve(self, request: Request, response: _StatusRecorder) -> None:
        if request.path == "/api":
            method = ""
        elif request.path.startswith("/api/") and len(request.path) > 5:
            method = request.path[5:]
        else:
            response.send(404, TEXT_HEADERS, b"not found\n")
            return
        if not self.authorized(request):
            response.send(401, TEXT_HEADERS, b"unauthorized: missing or wrong API key\n")
            return
        if request.method != "POST":
            response.send(
                405,
                [*TEXT_HEADERS, ("Allow", "POST")],
                f"method {request.method} not allowed: the server API takes POST\n".encode(),
            )
            return
        if method and method not in _METHOD_SET:
            shown = method if len(method) <= 64 and method.isprintable() else method[:64] + "..."
            response.send(
                404,
                TEXT_HEADERS,
                f"unknown API method {shown!r}; methods: {', '.join(METHODS)}\n".encode(),
            )
            return
        if self.closing:
            response.send(503, [*TEXT_HEADERS, ("Retry-After", "1")], b"server is shutting down\n")
            return
        self._in_flight += 1
        try:
            status, body = await self._execute(method, request, response)
        except HttpError as exc:
            status, body = exc.status, (exc.message + "\n").encode()
            if status == 400:
                logger.debug("API request refused: %s", exc.message)
            response.send(status, TEXT_HEADERS, body)
            return
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._idle is not None:
                self._idle.set()
        response.send(status, JSON_HEADERS, body)

    async def _execute(
        self, method: str, request: Request, response: _StatusRecorder
    ) -> tuple[int, bytes]:
        text = decode_text(request.body)
        if not method:
            return 200, await run_legacy(self.executor, text)
        if method == "batch":
            return 200, dump(await run_batch(self.executor, text))
        value = parse_json(text, RAW_SPECS[method]) if text.strip() else {}
        params = request_params(method, value, "")
        try:
            result = await self.executor.call(method, params)
        except ApiError as exc:
            response.error_code = exc.code
            if self._transport_errors(request):
                return _TRANSPORT_STATUS.get(exc.code, 500), dump(exc.to_json())
            return 200, dump({"error": exc.to_json()})
        return 200, dump({"result": result})

    def _transport_errors(self, request: Request) -> bool:
        if self.config.error_mode == "transport":
            return True
        mode = request.header("x-centrifugo-error-mode")
        return mode is not None and mode.strip().lower() == "transport"


class _Sender(Protocol):
    """What the handler needs of a response: one complete send."""

    def send(
        self, status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
    ) -> None: ...


class _StatusRecorder:
    """A response that remembers its status and API error code (metrics, access log)."""

    __slots__ = ("response", "status", "error_code")

    def __init__(self, response: _Sender) -> None:
        self.response = response
        self.status = 0  # 0: no response was sent (the handler failed)
        self.error_code = 0  # the code of an error object in the answer (0: none)

    def send(self, status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b"") -> None:
        self.status = status
        self.response.send(status, headers, body)


def _log_access(request: Request, peer: Any, status: int, started: float) -> None:
    if not access_logger.isEnabledFor(logging.INFO):
        return
    duration_ms = (time.perf_counter() - started) * 1000
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        remote = f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    else:
        remote = "" if peer is None else str(peer)
    path = request.path
    api_method = path[5:] if path.startswith("/api/") else ("legacy" if path == "/api" else "")
    access_logger.info(
        "%s %s %d %.1fms %s",
        request.method,
        path,
        status,
        duration_ms,
        remote,
        extra={
            "http_method": request.method,
            "path": path,
            "api_method": api_method,
            "status": status,
            "duration_ms": round(duration_ms, 3),
            "remote": remote,
        },
    )
