"""The Centrifuge protocol over WebSocket: glue between the I/O edge and a session.

:class:`ProtocolWebSocketHandler` is the per-connection ``WebSocketHandler``
for ``/connection/websocket`` and the session's :class:`Transport`. A batch
of delimited protocol messages becomes one WebSocket frame (text for JSON,
binary for Protobuf). On an uncompressed connection the session's writer
writes through a :class:`rtcore.fanout.WebSocketSink`: the compiled writer
builds the frame and calls the transport from C, with no Python call per
connection per flush. A compressed connection's frames go through
``WebSocket.send`` (permessage-deflate), from the handler's ``write_batch``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from rtcore.engine.session import ClientSession
from rtcore.fanout import WebSocketSink
from rtcore.frames import OP_BINARY, OP_TEXT
from rtcore.protocol import codes
from rtcore.protocol.codec import Codec
from rtcore.protocol.codes import Disconnect
from rtcore.wire.websocket import OPEN


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.transports.http_server import WebSocket


__all__ = ["ProtocolWebSocketHandler"]

logger = logging.getLogger("rtcore.websocket")


class _LazyHeaders(Mapping[str, str]):
    """A request's headers as a dict (last line wins), built on first use.

    Only the proxies read them: a connection that never calls one does not
    pay for the copy.
    """

    __slots__ = ("_lines", "_dict")

    def __init__(self, lines: list[tuple[str, str]]) -> None:
        self._lines = lines
        self._dict: dict[str, str] | None = None

    def _headers(self) -> dict[str, str]:
        headers = self._dict
        if headers is None:
            headers = self._dict = dict(self._lines)
        return headers

    def __getitem__(self, name: str) -> str:
        return self._headers()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers())

    def __len__(self) -> int:
        return len(self._headers())

    def __repr__(self) -> str:
        return repr(self._headers())


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
        "_sink",
    )

    def __init__(self, ws: WebSocket, node: Node, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec
        self._opcode = OP_BINARY if codec.binary else OP_TEXT
        # Uncompressed: frames are written by the fan-out core (see the module
        # docstring). A lost connection is CLOSED too, so conn.state alone
        # says whether a frame may still be written.
        self._sink: WebSocketSink | None = (
            None
            if ws.compressed
            else WebSocketSink(ws._transport, self._opcode, ws.conn, OPEN, self.on_slow)
        )
        req = ws.request
        self.session = ClientSession(
            node,
            self,
            request_info={
                "headers": _LazyHeaders(req.headers),
                "remote_address": ws.remote_address,
                "path": req.path,
                "query": req.query,
            },
        )
        if self._sink is not None:
            self.session.writer.sink = self._sink

    # -- WebSocketHandler ------------------------------------------------------

    def on_message(self, opcode: int, payload: bytes) -> None:
        self.session.handle_frame(payload)

    def on_close(self, code: int, reason: str) -> None:
        # The sink calls back into this handler: kept, the two would be a
        # reference cycle, freed only by the cycle collector.
        self._sink = None
        self.session.transport_closed()

    # -- Transport / Sink ------------------------------------------------------

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        sink = self._sink
        if sink is not None:
            sink.write_batch(payloads, nbytes)
            return
        # Compressed: the frame is deflated (no shared frame bytes).
        self.ws.send(self._opcode, payloads[0] if len(payloads) == 1 else b"".join(payloads))

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
