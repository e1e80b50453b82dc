"""The WebSocket side of the I/O edge handed to applications.

:class:`WebSocketRoute` tells the server how to accept an upgrade request,
:class:`WebSocketHandler` is what the application plugs into an accepted
connection, and :class:`WebSocket` is the server side of that connection.
The connection protocol that drives them is
:class:`rtcore.transports.http_connection._Connection`; all three names are also
importable from :mod:`rtcore.transports.http_server`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rtcore.frames import (
    CLOSE_ABNORMAL,
    CLOSE_POLICY_VIOLATION,
    OP_BINARY,
    OP_TEXT,
    frame_header,
)
from rtcore.wire.deflate import DeflateOptions
from rtcore.wire.http import Request
from rtcore.wire.websocket import OPEN, WebSocketConnection


if TYPE_CHECKING:
    from rtcore.transports.http_connection import _Connection


__all__ = ["WebSocket", "WebSocketHandler", "WebSocketRoute"]

# The I/O edge logs under one name, whichever of its modules speaks.
logger = logging.getLogger("rtcore.transports.http_server")

# Uncompressed ``bytes`` payloads from this size on are written as header +
# payload (one writev, the payload object itself) instead of being copied into
# a new frame: copying 16 KiB costs ~0.8 µs, about what uvloop's writelines
# adds over write, and the gap grows with size (docs/benchmarks.md, echo).
SPLIT_FRAME_ABOVE = 16 * 1024


class WebSocketHandler(Protocol):
    """Per-connection callbacks of a WebSocket application.

    Called synchronously from the event loop, in order; they must not block.
    ``on_close`` is called exactly once, after which the handler gets nothing.
    """

    def on_message(self, opcode: int, payload: bytes) -> None:
        """A complete text (``OP_TEXT``, UTF-8 bytes) or binary message."""

    def on_close(self, code: int, reason: str) -> None:
        """The connection ended: the peer's close code, or 1006 if it dropped."""

    # Optional: ``on_pong(payload)`` for the peer's pongs, and ``on_slow()``,
    # called when pongs pushed the write buffer over the route's
    # ``max_output_size`` (it should close the connection).


@dataclass(slots=True)
class WebSocketRoute:
    """How to accept a WebSocket upgrade request (returned by ``route_websocket``)."""

    # Builds the connection's handler once the 101 response is written.
    handler_factory: Callable[[WebSocket], WebSocketHandler]
    # Subprotocols the server speaks, in order of preference.
    subprotocols: Sequence[str] = ()
    # Hook choosing among the client's offered subprotocols (overrides the list).
    select_subprotocol: Callable[[Request, list[str]], str | None] | None = None
    # Origin check: called with the Origin header (None when absent); False -> 403.
    check_origin: Callable[[str | None], bool] | None = None
    # permessage-deflate settings, or None to refuse compression.
    deflate: DeflateOptions | None = None
    # Largest incoming message in bytes (1009 beyond it); 0 = unlimited.
    max_message_size: int = 1 << 20
    # Bytes in the connection's write buffer above which answering pings ends
    # it: the handler's ``on_slow()`` when it has one, else close 1008; 0: no
    # limit (reading still pauses while the buffer is above its high-water mark).
    max_output_size: int = 0
    # Extra headers for the 101 response.
    extra_headers: Sequence[tuple[str, str]] = ()


class WebSocket:
    """The server side of one accepted WebSocket connection.

    Sending never awaits: frames are written to the transport at once, and
    :attr:`write_buffer_size` / :attr:`paused` tell a caller that the peer is
    slow (the transport's buffer is above its high-water mark).
    """

    __slots__ = (
        "request",
        "subprotocol",
        "conn",
        "_transport",
        "_proto",
        "handler",
        "remote_address",
        "_closed_notified",
    )

    def __init__(
        self,
        proto: _Connection,
        request: Request,
        subprotocol: str | None,
        conn: WebSocketConnection,
    ) -> None:
        self._proto = proto
        transport = proto.transport
        assert transport is not None, "a WebSocket is made on a live connection"
        self._transport: asyncio.Transport = transport
        # The upgrade request (path, query, headers).
        self.request = request
        # The negotiated subprotocol, or None.
        self.subprotocol = subprotocol
        # The sans-I/O protocol state (close codes, negotiated deflate).
        self.conn = conn
        self.handler: WebSocketHandler | None = None
        self.remote_address: Any = proto.peername
        self._closed_notified = False

    @property
    def open(self) -> bool:
        return self.conn.state == OPEN and not self._proto.lost

    @property
    def paused(self) -> bool:
        """True while the transport's write buffer is above the high-water mark."""
        return self._proto.write_paused

    @property
    def write_buffer_size(self) -> int:
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    @property
    def compressed(self) -> bool:
        """True when permessage-deflate was negotiated (prepared frames can't be shared)."""
        return self.conn.deflate is not None

    def send(self, opcode: int, payload: bytes | bytearray | memoryview) -> bool:
        """Send a text (``OP_TEXT``) or binary message; False if no longer open."""
        proto = self._proto
        conn = self.conn
        if conn.state != OPEN or proto.lost:
            return False
        if (
            len(payload) >= SPLIT_FRAME_ABOVE
            and type(payload) is bytes  # immutable: the transport may keep it unsent
            and conn.deflate is None
            and (opcode == OP_BINARY or opcode == OP_TEXT)
        ):
            parts = (frame_header(opcode, len(payload)), payload)
            cork = proto.cork
            if cork is not None:
                cork.extend(parts)
            else:
                self._transport.writelines(parts)
            return True
        frame = conn.encode_message(opcode, payload)
        cork = proto.cork
        if cork is not None:
            cork.append(frame)
        else:
            self._transport.write(frame)
        return True

    def send_text(self, text: str | bytes) -> bool:
        return self.send(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_binary(self, data: bytes | bytearray | memoryview) -> bool:
        return self.send(OP_BINARY, data)

    def write_frames(self, data: bytes | bytearray | memoryview) -> bool:
        """Write already-encoded frame bytes as they are (fan-out's prepared frames).

        Only valid for uncompressed connections (see :attr:`compressed`).
        """
        proto = self._proto
        if self.conn.state != OPEN or proto.lost:
            return False
        cork = proto.cork
        if cork is not None:
            cork.append(data)
        else:
            self._transport.write(data)
        return True

    def ping(self, payload: bytes = b"") -> None:
        self.conn.send_ping(payload)
        self._proto.flush_ws()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; TCP is dropped after the close timeout."""
        if self.conn.state != OPEN:
            return
        self.conn.close(code, reason)
        self._proto.flush_ws()
        self._proto.server._deadlines.schedule_in(
            self._proto, self._proto.server.options.close_timeout
        )

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""
        if self._transport is not None:
            self._transport.abort()

    # -- called by the connection ----------------------------------------------

    def _check_output(self, limit: int) -> None:
        """After pongs: over ``limit`` buffered bytes the peer is slow, and the connection ends."""
        conn = self.conn
        if not limit or conn.state != OPEN or self.write_buffer_size <= limit:
            return
        on_slow = getattr(self.handler, "on_slow", None)
        if on_slow is not None:
            on_slow()
        if conn.state == OPEN:
            self.close(CLOSE_POLICY_VIOLATION, "output buffer full (peer not reading)")

    def _notify_closed(self) -> None:
        """Call the handler's ``on_close`` once: the peer's code, else ours, else 1006."""
        if self._closed_notified:
            return
        self._closed_notified = True
        handler = self.handler
        if handler is None:
            return
        conn = self.conn
        code = conn.close_code_received
        reason = conn.close_reason_received
        if code is None:
            code = conn.close_code_sent if conn.close_code_sent is not None else CLOSE_ABNORMAL
            reason = ""
        self.handler = None  # it gets nothing more (and holds this object)
        try:
            handler.on_close(code, reason)
        except Exception:  # noqa: BLE001
            logger.exception("WebSocket on_close handler failed")
