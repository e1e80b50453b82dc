"""The Centrifuge protocol over an ASGI ``websocket`` connection.

The ASGI server does the framing, the opening handshake, permessage-deflate
and the WebSocket pings. What is left is the session's side:
:class:`AsgiWebSocketTransport` is the session's
:class:`~rtcore.engine.session.Transport`. A batch of delimited protocol
messages becomes one ``websocket.send`` (``text`` for JSON, ``bytes`` for
Protobuf); batches wait in a queue that one task per connection sends in
order, and the bytes still queued are the session's buffer size, so a client
that does not read is disconnected as slow (3008) exactly as on the native
edge.

:func:`accept` decides the handshake as the native edge does: the node's
routes choose JSON or Protobuf (``centrifuge-protobuf`` offered, or
``format=protobuf`` in the query), the origin is checked against
``client.allowed_origins``, and the subprotocol is the first one the client
offered that the route speaks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from rtcore.engine.session import ClientSession
from rtcore.errors import HttpError
from rtcore.protocol import codes
from rtcore.protocol.codes import Disconnect
from rtcore.server.asgi.http import Message, Receive, Scope, Send


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.protocol.codec import Codec
    from rtcore.transports.http_server import WebSocketRoute
    from rtcore.wire.http import Request


__all__ = ["AsgiWebSocketTransport", "accept", "reject"]

# The close code of a message over the route's size limit (RFC 6455 §7.4.1).
_MESSAGE_TOO_BIG = 1009


def _subprotocol(request: Request, route: WebSocketRoute) -> str | None:
    offered = request.header_values("sec-websocket-protocol", split=True)
    if route.select_subprotocol is not None:
        chosen = route.select_subprotocol(request, list(offered))
        if chosen is not None and chosen not in offered:
            raise ValueError(
                f"select_subprotocol returned {chosen!r}, which the client did not offer"
            )
        return chosen
    return next((name for name in offered if name in route.subprotocols), None)


def accept(request: Request, route: WebSocketRoute) -> str | None:
    """Check the origin of an upgrade request; return the subprotocol to accept with.

    Raises:
        HttpError: 400 with several ``Origin`` headers, 403 for an origin the
            route refuses (the native handshake's statuses and messages).
    """
    origins = request.header_values("origin")
    if len(origins) > 1:
        raise HttpError(400, "multiple Origin headers")
    origin = origins[0] if origins else None
    if route.check_origin is not None and not route.check_origin(origin):
        if origin is None:
            raise HttpError(403, "requests without an Origin header are not allowed")
        raise HttpError(403, f"origin {origin[:80]!r} is not allowed")
    return _subprotocol(request, route)


async def reject(scope: Scope, send: Send, exc: HttpError) -> None:
    """Refuse an upgrade with ``exc``'s status, headers and message.

    Servers with the ``websocket.http.response`` extension (uvicorn, Daphne
    4+) send exactly that response; others answer ``websocket.close`` with
    403.
    """
    if "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [("content-type", "text/plain; charset=utf-8"), *exc.headers]
        await send(
            {
                "type": "websocket.http.response.start",
                "status": exc.status,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )
        await send({"type": "websocket.http.response.body", "body": (exc.message + "\n").encode()})
        return
    await send({"type": "websocket.close", "code": 1008})


class AsgiWebSocketTransport:
    """One client WebSocket over ASGI speaking the Centrifuge protocol.

    Args:
        node: the node the session belongs to (started).
        codec: the JSON or Protobuf codec the handshake chose.
        send: the connection's ASGI ``send``.
        request: the upgrade request (headers, path and query for hooks).
        remote_address: ``(host, port)`` of the client, or None.
        max_message_size: largest client message in bytes; a larger one
            closes the connection with 1009 (0: no limit of ours).
    """

    name = "websocket"
    unidirectional = False
    emulation = False

    __slots__ = (
        "codec",
        "session",
        "_send",
        "_text",
        "_queue",
        "_queued",
        "_waiter",
        "_open",
        "_max_size",
    )

    def __init__(
        self,
        node: Node,
        codec: Codec,
        send: Send,
        request: Request,
        remote_address: Any,
        max_message_size: int,
    ) -> None:
        self.codec = codec
        self._send = send
        self._text = not codec.binary
        self._queue: deque[tuple[Message, int]] = deque()
        self._queued = 0
        # The pump's wake-up while it waits for work (a bare future: cheaper than an Event).
        self._waiter: asyncio.Future[None] | None = None
        self._open = True
        self._max_size = max_message_size
        self.session = ClientSession(
            node,
            self,
            request_info={
                "headers": dict(request.headers),
                "remote_address": remote_address,
                "path": request.path,
                "query": request.query,
            },
        )

    # -- Transport / Sink ------------------------------------------------------

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        if not self._open:
            return
        data = payloads[0] if len(payloads) == 1 else b"".join(payloads)
        # ASGI carries a text message as str: JSON is decoded here and encoded
        # again by the server (part of what ASGI costs, see docs/asgi.md).
        message = (
            {"type": "websocket.send", "text": data.decode("utf-8")}
            if self._text
            else {"type": "websocket.send", "bytes": data}
        )
        self._queue.append((message, len(data)))
        self._queued += len(data)
        self._wake()

    def buffer_size(self) -> int:
        return self._queued

    def on_slow(self) -> None:
        self.session.disconnect(codes.SLOW)

    def close(self, disconnect: Disconnect) -> None:
        """Close with the disconnect's code and reason, after what is queued.

        ASGI cannot drop a connection without a close frame, so 3000
        (connection closed, no advice) is sent as a close code too; SDKs
        reconnect on it as they do after a dropped connection.
        """
        self._close(disconnect.code, disconnect.reason)

    def _close(self, code: int, reason: str) -> None:
        if not self._open:
            return
        self._open = False
        self._queue.append(({"type": "websocket.close", "code": code, "reason": reason}, 0))
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- the connection ----------------------------------------------------------

    async def run(self, receive: Receive) -> None:
        """Feed the client's messages to the session until the connection ends."""
        pump = asyncio.get_running_loop().create_task(self._pump())
        session = self.session
        try:
            while True:
                message = await receive()
                kind = message.get("type")
                if kind == "websocket.disconnect":
                    break
                if kind != "websocket.receive":
                    continue
                data = message.get("bytes")
                if data is None:
                    data = str(message.get("text") or "").encode("utf-8")
                if self._max_size and len(data) > self._max_size:
                    self._close(_MESSAGE_TOO_BIG, "message too big")
                    session.transport_closed()
                    continue
                session.handle_frame(data)
        finally:
            self._open = False
            session.transport_closed()
            pump.cancel()

    async def _pump(self) -> None:
        queue = self._queue
        send = self._send
        loop = asyncio.get_running_loop()
        while True:
            while queue:
                message, size = queue[0]
                try:
                    await send(message)
                except OSError:
                    # ASGI 2.4: the client is gone; websocket.disconnect follows.
                    self._open = False
                    queue.clear()
                    self._queued = 0
                    return
                queue.popleft()
                self._queued -= size
                if message["type"] == "websocket.close":
                    return
            waiter = self._waiter = loop.create_future()
            await waiter
