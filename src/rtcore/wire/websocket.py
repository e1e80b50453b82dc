"""Sans-I/O WebSocket connection: the RFC 6455 state machine above the frame parser.

:class:`WebSocketConnection` takes received bytes and returns the events
they complete; what it must send in response (pongs, the close handshake)
accumulates in an outbox that the I/O layer drains with
:meth:`WebSocketConnection.data_to_send` after every call. It never touches a
socket or an event loop, so tests drive it with byte strings.

Contract for the I/O layer (the websockets ``Protocol`` contract):

1. Feed input with :meth:`receive_data` (or ``get_buffer``/``buffer_updated``),
   handle the returned events in order (answer ``OP_PING`` with :meth:`pong`),
   call :meth:`receive_done`, then write :meth:`data_to_send` out.
2. After any ``send_*``/``close``/``fail`` call, write :meth:`data_to_send`.
3. When :attr:`should_close_transport` becomes true, write what is pending
   and close the TCP connection (the server closes first, RFC 6455 §7.1.1).
"""

from __future__ import annotations

import os
from typing import Protocol

from rtcore import frames
from rtcore.errors import WebSocketProtocolError
from rtcore.frames import (
    CLOSE_ABNORMAL,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    encode_close,
    encode_frame,
    parse_close,
)


__all__ = ["WebSocketConnection", "Compressor", "OPEN", "CLOSING", "CLOSED"]

# Connection states.
OPEN = 1
CLOSING = 2  # we sent a close frame and wait for the peer's
CLOSED = 3  # the close handshake is over (or the connection failed)


class Compressor(Protocol):
    """What the connection needs from a negotiated permessage-deflate extension."""

    threshold: int

    def compress(self, payload: bytes) -> bytes: ...

    def decompress(self, payload: bytes, max_size: int) -> bytes: ...


class WebSocketConnection:
    """One WebSocket connection's protocol state, server or client side.

    Args:
        is_server: parse masked client frames and send unmasked ones (server),
            or the reverse (client; outgoing frames get a random mask).
        max_message_size: largest incoming message in bytes (1009 beyond it);
            0 disables the limit.
        deflate: the negotiated permessage-deflate extension, or ``None``.
    """

    def __init__(
        self,
        *,
        is_server: bool = True,
        max_message_size: int = 1 << 20,
        deflate: Compressor | None = None,
    ) -> None:
        self.is_server = is_server
        # The frame parser (compiled or twin, chosen by rtcore.frames).
        self.parser = frames.FrameParser(
            max_message_size=max_message_size, is_server=is_server, deflate=deflate
        )
        # Negotiated permessage-deflate, used for outgoing messages too.
        self.deflate = deflate
        # OPEN -> CLOSING -> CLOSED.
        self.state = OPEN
        # Bytes waiting to be written by the I/O layer.
        self._out: list[bytes] = []
        # Close code/reason received from the peer (1005: close without status,
        # 1006: the connection ended without a close frame).
        self.close_code_received: int | None = None
        self.close_reason_received = ""
        # Close code we sent (or the error code we failed with).
        self.close_code_sent: int | None = None
        # True once the TCP connection should be closed by the I/O layer.
        self.should_close_transport = False
        # Set when the connection failed because of the peer's protocol error.
        self.error: WebSocketProtocolError | None = None
        # A received close frame waiting for receive_done().
        self._pending_close: bytes | None = None

    # -- input ---------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.parser.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> list[tuple[int, bytes]]:
        """Bytes landed in the last ``get_buffer``; returns the events (see :meth:`receive_data`)."""
        return self._split(self.parser.buffer_updated(nbytes))

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
        """Feed received bytes; returns the ``(opcode, payload)`` events, in order.

        Events are ``OP_TEXT``/``OP_BINARY`` messages (text as validated,
        undecoded UTF-8 bytes), ``OP_PING`` (answer it with :meth:`pong` when
        you reach it, so the pong keeps its place among your replies) and
        ``OP_PONG``. A close frame or a protocol error that ended the input is
        not an event: it takes effect in :meth:`receive_done`, which the
        caller invokes after handling the events, so that the replies to
        messages that came first are written before the close frame.
        """
        return self._split(self.parser.feed_data(data))

    def receive_done(self) -> None:
        """Apply a close frame or protocol error that ended the last input."""
        close = self._pending_close
        if close is not None:
            self._pending_close = None
            self._on_close_frame(close)
        error = self.parser.error
        if error is not None and self.error is None:
            self.error = error
            self.fail(error.code, error.reason)

    def receive_eof(self) -> None:
        """The peer closed its side of the TCP connection."""
        if self.close_code_received is None:
            self.close_code_received = CLOSE_ABNORMAL
        self.state = CLOSED
        self.should_close_transport = True

    def _split(self, events: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        # The parser stops after a close frame, so it can only be the last event.
        if events and events[-1][0] == OP_CLOSE:
            self._pending_close = events.pop()[1]
        return events

    def pong(self, payload: bytes) -> None:
        """Queue the answer to a ping (nothing once the connection is closing)."""
        if self.state == OPEN:
            self._out.append(self._frame(OP_PONG, payload))

    def _on_close_frame(self, payload: bytes) -> None:
        code, reason = parse_close(payload)  # validated by the parser already
        self.close_code_received = code
        self.close_reason_received = reason
        if self.state == OPEN:
            # Echo the status code (RFC 6455 §5.5.1); an empty close gets an empty one.
            reply = b"" if code == CLOSE_NO_STATUS else encode_close(code)
            self._out.append(self._frame(OP_CLOSE, reply))
            self.close_code_sent = CLOSE_NORMAL if code == CLOSE_NO_STATUS else code
        self.state = CLOSED
        self.should_close_transport = True

    # -- output --------------------------------------------------------------

    def _frame(
        self, opcode: int, payload: bytes | bytearray | memoryview, rsv1: bool = False
    ) -> bytes:
        if self.is_server:
            return encode_frame(opcode, payload, True, rsv1)
        return encode_frame(opcode, payload, True, rsv1, os.urandom(4))

    def encode_message(self, opcode: int, payload: bytes | bytearray | memoryview) -> bytes:
        """One complete frame for a text/binary message, compressed when negotiated.

        Pure with respect to the outbox: the caller writes the result itself.
        With ``server_no_context_takeover`` off, compression state advances, so
        frames must be written in the order they were encoded.
        """
        deflate = self.deflate
        if deflate is not None and len(payload) >= deflate.threshold:
            return self._frame(opcode, deflate.compress(bytes(payload)), True)
        return self._frame(opcode, payload)

    def send(self, opcode: int, payload: bytes | bytearray | memoryview) -> bool:
        """Queue a text (``OP_TEXT``) or binary (``OP_BINARY``) message.

        Returns False (and queues nothing) once the connection is closing or
        closed: a message can no longer reach the peer then.
        """
        if self.state != OPEN:
            return False
        self._out.append(self.encode_message(opcode, payload))
        return True

    def send_ping(self, payload: bytes = b"") -> None:
        if self.state == OPEN:
            self._out.append(self._frame(OP_PING, payload))

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the closing handshake (no-op unless open)."""
        if self.state != OPEN:
            return
        self._out.append(self._frame(OP_CLOSE, encode_close(code, reason)))
        self.close_code_sent = code
        self.state = CLOSING
        if not self.is_server:
            return
        # The server waits for the client's close frame; the I/O layer applies
        # a close timeout and closes the transport if it never comes.

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (RFC 6455 §7.1.7): send a close frame, then close TCP."""
        if self.state == OPEN:
            self._out.append(self._frame(OP_CLOSE, encode_close(code, reason)))
            self.close_code_sent = code
        self.state = CLOSED
        self.should_close_transport = True

    def data_to_send(self) -> list[bytes]:
        """Take the bytes queued for the network (possibly an empty list)."""
        out = self._out
        self._out = []
        return out
