"""Plain HTTP over ASGI: a :class:`~rtcore.wire.http.Request` from a scope, and its answer.

The HTTP-streaming, SSE, emulation and server API handlers answer through
:class:`~rtcore.transports.http_response.HttpResponseWriter`, which writes to
rtcore's own connection protocol. :class:`AsgiResponseWriter` has the same
interface and turns each call into ASGI ``http.response.*`` messages. The
handlers call it synchronously (a session's writer flushes from a loop
callback), so the messages wait in a queue that :meth:`AsgiResponseWriter.pump`
sends in order; the bytes still queued are the writer's ``write_buffer_size``,
which is what the slow-client check of a stream reads.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from rtcore.errors import HttpError
from rtcore.wire.http import Request


__all__ = [
    "AsgiResponseWriter",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "read_body",
    "request_from_scope",
    "route_path",
]

logger = logging.getLogger("rtcore.server.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Characters left as they are when the decoded ASGI path becomes a raw request path.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"
# Statuses whose responses carry no body (and so no Content-Length).
_BODYLESS = frozenset({204, 304})


def route_path(scope: Scope) -> str:
    """The path below the application's mount point, ``/connection/websocket`` for example.

    Django Channels' ``URLRouter`` leaves what it did not match in
    ``path_remaining`` (no leading slash). Starlette's ``Mount`` and servers
    started with a root path keep the whole path in ``path`` and the mount
    point in ``root_path`` (ASGI 3). Older Starlette versions cut the mount
    point off ``path`` themselves; such a path does not start with
    ``root_path`` and is taken as it is.
    """
    remaining = scope.get("path_remaining")
    if remaining is not None:
        return "/" + str(remaining).lstrip("/")
    path = str(scope.get("path") or "/")
    root = str(scope.get("root_path") or "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return path or "/"


def request_from_scope(scope: Scope, path: str, body: bytes = b"") -> Request:
    """The :class:`Request` the handlers expect, for an ``http`` or ``websocket`` scope."""
    headers = [
        (bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1").strip())
        for name, value in scope.get("headers") or ()
    ]
    version = str(scope.get("http_version") or "1.1")
    connection = {
        token.strip().lower()
        for name, value in headers
        if name == "connection"
        for token in value.split(",")
    }
    keep_alive = "keep-alive" in connection if version == "1.0" else "close" not in connection
    websocket = scope.get("type") == "websocket"
    return Request(
        method="GET" if websocket else str(scope.get("method") or "GET"),
        path=urllib.parse.quote(path, safe=_PATH_SAFE),
        query=bytes(scope.get("query_string") or b"").decode("latin-1"),
        headers=headers,
        body=body,
        keep_alive=keep_alive,
        upgrade=websocket,
        http_version=version,
    )


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when the client left before sending it.

    Raises:
        HttpError: 413 once the body passes ``limit`` bytes (the native
            edge's ``http.max_body_size`` rule, with its message).
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message.get("type")
        if kind == "http.disconnect":
            return None
        if kind != "http.request":
            continue
        chunk = bytes(message.get("body") or b"")
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _header_list(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class AsgiResponseWriter:
    """Answers one ASGI ``http`` request with the interface of ``HttpResponseWriter``.

    :meth:`send` queues a complete response, :meth:`start` + :meth:`write` +
    :meth:`end` a streamed one (the ASGI server picks the framing, chunked
    for HTTP/1.1). :attr:`disconnected` becomes true and the
    ``on_disconnect`` callbacks run when the ASGI server reports
    ``http.disconnect`` (:meth:`client_gone`).
    """

    __slots__ = (
        "_send",
        "_queue",
        "_queued",
        "_wake",
        "_started",
        "_disconnected",
        "_callbacks",
        "finished",
        "remote_address",
        "handler",
    )

    def __init__(self, send: Send, remote_address: Any = None) -> None:
        self._send = send
        # (message, body size) waiting for pump().
        self._queue: deque[tuple[Message, int]] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._started = False
        self._disconnected = False
        self._callbacks: list[Callable[[], None]] = []
        self.finished = False
        #: The peer's address (``(host, port)`` from the scope's ``client``), or None.
        self.remote_address = remote_address
        #: The running handler, cancelled when the client goes away.
        self.handler: asyncio.Future[Any] | None = None

    @property
    def disconnected(self) -> bool:
        return self._disconnected

    @property
    def started(self) -> bool:
        return self._started

    @property
    def write_buffer_size(self) -> int:
        """Body bytes handed to this writer and not yet taken by the ASGI server."""
        return self._queued

    def stream_until_disconnect(self) -> None:
        """Nothing to do: the ASGI application watches every request for ``http.disconnect``."""

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the client goes away before the response is finished."""
        self._callbacks.append(callback)

    def client_gone(self) -> None:
        """The ASGI server reported ``http.disconnect``.

        Before the response is finished: drop what is queued, run the
        ``on_disconnect`` callbacks and cancel the handler, as the native edge
        does when a connection is lost.
        """
        if self._disconnected:
            return
        self._disconnected = True
        self._wake.set()
        if self.finished:
            return
        self._queue.clear()
        self._queued = 0
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001 - a callback must not break teardown
                logger.exception("on_disconnect callback failed")
        if self.handler is not None:
            self.handler.cancel()

    def _queue_message(self, message: Message, size: int) -> None:
        self._queue.append((message, size))
        self._queued += size
        self._wake.set()

    def send(self, status: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b"") -> None:
        """Send a complete response."""
        if self._started:
            raise RuntimeError("response already started")
        hdrs = list(headers)
        if status not in _BODYLESS and status >= 200:
            if not any(name.lower() in ("content-length", "transfer-encoding") for name, _ in hdrs):
                hdrs.append(("Content-Length", str(len(body))))
        self._started = True
        self.finished = True
        if self._disconnected:
            return
        start = {"type": "http.response.start", "status": status, "headers": _header_list(hdrs)}
        self._queue_message(start, 0)
        self._queue_message({"type": "http.response.body", "body": body}, len(body))

    def start(self, status: int, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Send the status line and headers of a streamed response."""
        if self._started:
            raise RuntimeError("response already started")
        self._started = True
        if self._disconnected:
            return
        message = {
            "type": "http.response.start",
            "status": status,
            "headers": _header_list(headers),
        }
        self._queue_message(message, 0)

    def write(self, data: bytes) -> bool:
        """Send a piece of a streamed response; False when the client is gone."""
        if not self._started or self.finished:
            raise RuntimeError("write() outside a started response")
        if self._disconnected:
            return False
        if data:
            body = bytes(data)
            self._queue_message(
                {"type": "http.response.body", "body": body, "more_body": True}, len(body)
            )
        return True

    def end(self) -> None:
        """Finish a streamed response."""
        if self.finished:
            return
        if not self._started:
            raise RuntimeError("end() before start()")
        self.finished = True
        if not self._disconnected:
            self._queue_message({"type": "http.response.body", "body": b""}, 0)

    async def pump(self, until: asyncio.Future[Any] | None = None) -> None:
        """Send the queued messages in order.

        Without ``until``, returns once the queue is empty; with it, keeps
        sending what is queued meanwhile until ``until`` is done.
        """
        if until is not None:
            until.add_done_callback(lambda _: self._wake.set())
        queue = self._queue
        while True:
            while queue:
                message, size = queue[0]
                try:
                    await self._send(message)
                except OSError:
                    # ASGI 2.4: sending on a connection the client closed raises OSError.
                    self.client_gone()
                    break
                if queue and queue[0][0] is message:
                    queue.popleft()
                    self._queued -= size
            if until is None or until.done():
                return
            self._wake.clear()
            if not queue and not until.done():
                await self._wake.wait()
