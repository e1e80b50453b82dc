"""The Centrifuge protocol over WebSocket: glue between the I/O edge and a session.

:class:`ProtocolWebSocketHandler` is the per-connection ``WebSocketHandler``
for ``/connection/websocket``. It is also the session's :class:`Transport`
and its writer's sink: a batch of delimited protocol messages becomes one
WebSocket frame (text for JSON, binary for Protobuf), written with one
``writelines`` of ``[frame header, *messages]`` so the messages (shared by
every subscriber of a publication) are never copied per connection on an
uncompressed connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rtcore.engine.session import ClientSession
from rtcore.frames import OP_BINARY, OP_TEXT, frame_header
from rtcore.protocol import codes
from rtcore.protocol.codec import Codec
from rtcore.protocol.codes import Disconnect
from rtcore.wire.websocket import OPEN


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.transports.http_server import WebSocket


__all__ = ["ProtocolWebSocketHandler"]

# Frames up to this size are written as one joined buffer; larger ones as a
# gather write of the shared message objects (no copy per connection).
_COPY_LIMIT = 4096

logger = logging.getLogger("rtcore.websocket")


class ProtocolWebSocketHandler:
    """One client WebSocket speaking the Centrifuge protocol."""

    name = "websocket"
    unidirectional = False
    emulation = False

    __slots__ = (
        "ws",
        "codec",
        "session",
        "_opcode",
        "_transport",
        "_conn",
        "_proto",
        "_compressed",
    )

    def __init__(self, ws: WebSocket, node: Node, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec
        self._opcode = OP_BINARY if codec.binary else OP_TEXT
        self._transport = ws._transport
        # Read on every batch: keep direct references instead of properties.
        self._conn = ws.conn
        self._proto = ws._proto
        self._compressed = ws.compressed
        req = ws.request
        self.session = ClientSession(
            node,
            self,
            request_info={
                "headers": dict(req.headers),
                "remote_address": ws.remote_address,
                "path": req.path,
                "query": req.query,
            },
        )

    # -- WebSocketHandler ------------------------------------------------------

    def on_message(self, opcode: int, payload: bytes) -> None:
        self.session.handle_frame(payload)

    def on_close(self, code: int, reason: str) -> None:
        self.session.transport_closed()

    # -- Transport / Sink ------------------------------------------------------

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        if self._conn.state != OPEN or self._proto.lost:
            return
        if self._compressed:
            self.ws.send(self._opcode, payloads[0] if len(payloads) == 1 else b"".join(payloads))
            return
        header = frame_header(self._opcode, nbytes)
        if nbytes <= _COPY_LIMIT:
            # Small frames: one contiguous buffer is cheaper than a gather write.
            self._transport.write(
                header + (payloads[0] if len(payloads) == 1 else b"".join(payloads))
            )
        elif len(payloads) == 1:
            self._transport.writelines((header, payloads[0]))
        else:
            self._transport.writelines([header, *payloads])

    def buffer_size(self) -> int:
        return self.ws.write_buffer_size

    def on_slow(self) -> None:
        self.session.disconnect(codes.SLOW)

    def close(self, disconnect: Disconnect) -> None:
        if disconnect.code == codes.CONNECTION_CLOSED.code:
            # 3000: close without server advice (no close frame).
            self.ws.abort()
            return
        self.ws.close(disconnect.code, disconnect.reason)
