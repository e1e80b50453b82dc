"""A WebSocket echo server on a plain ``asyncio.Protocol`` and rtcore's sans-I/O wire layer.

No rtcore server runs here: the protocol below owns the socket, and rtcore's
``wire`` modules only turn bytes into values and values into bytes.

* :class:`rtcore.wire.http.HttpParser` parses the opening request;
* :func:`rtcore.wire.handshake.accept_websocket` checks it and builds the
  ``101`` response (subprotocol, permessage-deflate from
  :mod:`rtcore.wire.deflate`);
* :class:`rtcore.wire.websocket.WebSocketConnection` parses frames, answers
  the closing handshake, and encodes what we send.

The contract is the one websockets documents for its sans-I/O layer: feed
received bytes, handle the events, then write ``data_to_send()`` and close
the transport when ``should_close_transport`` says so (docs/embedding.md).

Run it::

    python examples/sansio_echo.py --port 9002

Plain HTTP requests get a short text answer; any WebSocket upgrade is
echoed. SIGINT/SIGTERM close every connection with 1001 (going away).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from rtcore.errors import HttpError
from rtcore.frames import CLOSE_GOING_AWAY, OP_BINARY, OP_PING, OP_TEXT
from rtcore.wire.deflate import DeflateOptions
from rtcore.wire.handshake import accept_websocket
from rtcore.wire.http import HttpParser, Request, error_response, render_response
from rtcore.wire.websocket import WebSocketConnection


logger = logging.getLogger("sansio_echo")

#: Seconds to wait for the client's close frame after ours.
CLOSE_TIMEOUT = 5.0


class EchoProtocol(asyncio.Protocol):
    """One TCP connection: HTTP until the upgrade, then WebSocket frames."""

    def __init__(self, connections: set[EchoProtocol], max_message_size: int) -> None:
        self.connections = connections
        self.max_message_size = max_message_size
        self.transport: asyncio.Transport | None = None
        self.http: HttpParser | None = HttpParser()
        self.ws: WebSocketConnection | None = None

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:
            self.websocket_data(data)
        elif self.http is not None:
            self.http_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self.ws is not None:
            # Sets close_code_received to 1006 when no close frame came.
            self.ws.receive_eof()
        self.transport = None

    # -- HTTP until the upgrade -----------------------------------------------------

    def http_data(self, data: bytes) -> None:
        assert self.http is not None and self.transport is not None
        try:
            requests = self.http.feed_data(data)
        except HttpError as exc:
            self.refuse(exc)
            return
        interim = self.http.data_to_send()  # "100 Continue"
        if interim:
            self.transport.write(interim)
        for request in requests:
            if request.upgrade:
                self.upgrade(request, self.http.trailing_data)
                return
            self.answer(request)

    def answer(self, request: Request) -> None:
        assert self.transport is not None
        body = b"sans-I/O echo server: open a WebSocket on any path\n"
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        self.transport.write(render_response(200, headers, body, keep_alive=request.keep_alive))
        if not request.keep_alive:
            self.transport.close()

    def refuse(self, exc: HttpError) -> None:
        assert self.transport is not None
        self.http = None  # whatever else arrives is ignored
        self.transport.write(error_response(exc))  # Connection: close
        self.transport.close()

    def upgrade(self, request: Request, trailing: bytes) -> None:
        assert self.transport is not None
        try:
            accepted = accept_websocket(request, deflate=DeflateOptions())
        except HttpError as exc:  # HandshakeError: 400, 403, 405, 426 ...
            self.refuse(exc)
            return
        self.http = None  # from now on every byte belongs to the WebSocket
        self.transport.write(accepted.response)
        self.ws = WebSocketConnection(
            is_server=True, max_message_size=self.max_message_size, deflate=accepted.deflate
        )
        if trailing:
            # The client may send its first frames in the packet of the request.
            self.websocket_data(trailing)

    # -- WebSocket --------------------------------------------------------------------

    def websocket_data(self, data: bytes) -> None:
        ws = self.ws
        assert ws is not None
        for opcode, payload in ws.receive_data(data):
            if opcode in (OP_TEXT, OP_BINARY):
                ws.send(opcode, payload)  # the echo
            elif opcode == OP_PING:
                ws.pong(payload)
            # OP_PONG: nothing to do.
        # A close frame or a protocol error that ended this input takes effect here.
        ws.receive_done()
        self.flush()

    def flush(self) -> None:
        """Write what the connection queued; close TCP when the closing handshake is over."""
        ws = self.ws
        transport = self.transport
        if ws is None or transport is None:
            return
        out = ws.data_to_send()
        if out:
            transport.writelines(out)
        if ws.should_close_transport:
            transport.close()

    def close(self, code: int = CLOSE_GOING_AWAY, reason: str = "") -> None:
        """Start the closing handshake; drop the connection if the client never answers."""
        transport = self.transport
        if transport is None:
            return
        if self.ws is None:
            transport.close()
            return
        self.ws.close(code, reason)
        self.flush()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)


async def main(host: str, port: int, max_message_size: int) -> None:
    loop = asyncio.get_running_loop()
    connections: set[EchoProtocol] = set()
    server = await loop.create_server(
        lambda: EchoProtocol(connections, max_message_size), host, port
    )
    logger.info("sans-I/O echo server on ws://%s:%d", host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for connection in list(connections):
        connection.close(CLOSE_GOING_AWAY, "server shutdown")
    deadline = loop.time() + CLOSE_TIMEOUT
    while connections and loop.time() < deadline:
        await asyncio.sleep(0.05)
    await server.wait_closed()


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument("--max-size", type=int, default=1 << 20, help="largest message (bytes)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(main(args.host, args.port, args.max_size))


if __name__ == "__main__":
    cli()
