"""WebSocket echo server on rtcore's I/O edge (used by the conformance run).

    python -m rtcore.examples.echo --port 9001 [--host 127.0.0.1] [--asyncio]

Echoes every text and binary message on any path, negotiates
permessage-deflate, accepts messages up to ``--max-size`` bytes (64 MiB by
default, enough for the conformance suite's largest cases). Set
``RTCORE_NO_EXTENSIONS=1`` to run it on the pure-Python frame core.
Plain HTTP GET answers with a short text saying which implementation runs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from rtcore import frames
from rtcore.transports.http_server import (
    HttpResponseWriter,
    Server,
    ServerOptions,
    WebSocket,
    WebSocketRoute,
    run,
)
from rtcore.wire.deflate import DeflateOptions
from rtcore.wire.http import Request


class EchoHandler:
    __slots__ = ("ws",)

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    def on_message(self, opcode: int, payload: bytes) -> None:
        self.ws.send(opcode, payload)

    def on_close(self, code: int, reason: str) -> None:
        pass


class EchoApp:
    def __init__(self, max_size: int, deflate: bool) -> None:
        self.route = WebSocketRoute(
            handler_factory=EchoHandler,
            max_message_size=max_size,
            deflate=DeflateOptions() if deflate else None,
        )

    def route_websocket(self, request: Request) -> WebSocketRoute:
        return self.route

    def handle_http(self, request: Request, response: HttpResponseWriter) -> None:
        body = f"rtcore echo server ({frames.IMPLEMENTATION} frame core)\n".encode()
        response.send(200, [("Content-Type", "text/plain; charset=utf-8")], body)


async def main(host: str, port: int, max_size: int, deflate: bool) -> None:
    server = Server(EchoApp(max_size, deflate), ServerOptions())
    await server.listen(host, port)
    logging.info(
        "echo server on ws://%s:%d (%s frame core)", host, server.port, frames.IMPLEMENTATION
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rtcore.examples.echo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--max-size", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--no-deflate", action="store_true", help="refuse permessage-deflate")
    parser.add_argument(
        "--asyncio", action="store_true", help="stdlib event loop instead of uvloop"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(main(args.host, args.port, args.max_size, not args.no_deflate), use_uvloop=not args.asyncio)


if __name__ == "__main__":
    cli()
