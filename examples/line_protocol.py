"""rtcore's engine over a framing of your own: the Centrifuge JSON protocol, one line each.

A raw TCP (or Unix-socket) server where every line a client sends is one
Centrifuge command and every line the server sends is one reply or push::

    -> {"id":1,"connect":{"token":"<JWT>"}}
    <- {"id":1,"connect":{"client":"...","version":"...","ping":25,"pong":true,...}}
    -> {"id":2,"subscribe":{"channel":"chat:room"}}
    <- {"id":2,"subscribe":{"recoverable":true,"epoch":"...","offset":0,...}}
    <- {"push":{"channel":"chat:room","pub":{"data":{"text":"hi"},"offset":1}}}
    <- {}                                       (a ping: answer it with the line {})

Each connection is an ``asyncio.Protocol`` that is also the session's
:class:`rtcore.Transport`: it feeds each line to
``ClientSession.handle_frame`` and writes the session's batches of replies
and pushes (JSON messages that already end in a newline). Sessions, channels,
history, recovery, presence, hooks and fan-out are the node's, exactly as for
WebSocket clients; docs/embedding.md explains the seam.

Run it::

    python examples/line_protocol.py --port 9100 --secret "$SECRET"
    python examples/line_protocol.py --unix /tmp/rtcore.sock --secret "$SECRET"
    python examples/line_protocol.py --config rtcore.toml --port 9100

and talk to it with ``nc 127.0.0.1 9100`` (or ``nc -U /tmp/rtcore.sock``),
minting a token with
``python -c "from rtcore.auth import make_connect_token as t; print(t('$SECRET', 'ann'))"``
(or ``rtcore gentoken`` with a config file). Without ``--config`` the node
has a ``chat`` namespace with history and recovery.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import rtcore
from rtcore import ClientSession, Disconnect, Node, codes
from rtcore.protocol import JSON, Codec, Disconnect as DisconnectPush, Push


logger = logging.getLogger("line_protocol")

#: Longest line accepted from a client; a longer one ends the session with 3501.
MAX_LINE = 65536


class LineConnection(asyncio.Protocol):
    """One client connection: the asyncio protocol and the session's transport.

    The attributes and the four methods under "the Transport seam" are what
    :class:`rtcore.Transport` asks of a connection.
    """

    #: What hooks see as ``event.transport`` and logs as ``transport``.
    name = "line"
    #: Newline-delimited JSON: each encoded message already ends with ``\\n``.
    codec: Codec = JSON
    unidirectional = False
    emulation = False

    def __init__(self, node: Node, max_line: int = MAX_LINE) -> None:
        self.node = node
        self.max_line = max_line
        self.transport: asyncio.Transport | None = None
        self.session: ClientSession | None = None
        self._buffer = bytearray()

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        # The node must be started (node.start() or rtcore.serve) before sessions exist.
        self.session = ClientSession(self.node, self, request_info={"remote_address": peer})

    def data_received(self, data: bytes) -> None:
        session = self.session
        assert session is not None
        buffer = self._buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end])
            start = end + 1
            if line.strip():
                # One line, one command (the empty command {} is the pong).
                session.handle_frame(line)
        del buffer[:start]
        if len(buffer) > self.max_line:
            logger.info("line longer than %d bytes from %s", self.max_line, session.client_id)
            session.disconnect(codes.BAD_REQUEST)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            self.session.transport_closed()

    # -- the Transport seam ----------------------------------------------------------

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        """Replies and pushes of one flush, each a JSON line."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(payloads)

    def buffer_size(self) -> int:
        """Bytes not yet sent: past ``client.queue_max_size`` the client is too slow."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def on_slow(self) -> None:
        assert self.session is not None
        self.session.disconnect(codes.SLOW)

    def close(self, disconnect: Disconnect) -> None:
        """The session ended: say why in a last line (as HTTP-streaming does), then close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if disconnect.code != codes.CONNECTION_CLOSED.code:
            advice = DisconnectPush(code=disconnect.code, reason=disconnect.reason)
            transport.write(self.codec.encode_push(Push(disconnect=advice)))
        transport.close()


async def serve_lines(
    node: Node,
    host: str | None = "127.0.0.1",
    port: int = 9100,
    *,
    unix: str | None = None,
    max_line: int = MAX_LINE,
) -> asyncio.AbstractServer:
    """Listen on ``host:port`` (or the Unix socket ``unix``); the node must be started."""
    loop = asyncio.get_running_loop()
    if unix is not None:
        return await loop.create_unix_server(lambda: LineConnection(node, max_line), unix)
    return await loop.create_server(lambda: LineConnection(node, max_line), host, port)


def demo_config(secret: str) -> rtcore.Config:
    """A node with a ``chat`` namespace that keeps history, so clients can recover."""
    return rtcore.config_from_mapping(
        {
            "client": {"token": {"hmac_secret_key": secret}},
            "channel": {
                "namespaces": [
                    {
                        "name": "chat",
                        "history_size": 100,
                        "history_ttl": 300,
                        "force_recovery": True,
                        "allow_subscribe_for_client": True,
                        "allow_publish_for_subscriber": True,
                    }
                ]
            },
        }
    )


async def main(args: argparse.Namespace) -> None:
    if args.config:
        config = rtcore.load_config(args.config, os.environ)
    else:
        config = demo_config(args.secret)
    node = Node(config)
    await node.start()
    server = await serve_lines(node, args.host, args.port, unix=args.unix)
    where = args.unix or f"{args.host}:{args.port}"
    logger.info("Centrifuge JSON lines on %s", where)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    # Every client gets a last line: {"push":{"disconnect":{"code":3001,"reason":"shutdown"}}}.
    await node.close()
    await server.wait_closed()


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--unix", help="listen on this Unix socket instead of TCP")
    parser.add_argument("--config", help="an rtcore configuration file (default: a demo node)")
    parser.add_argument(
        "--secret",
        default=os.environ.get("LINE_PROTOCOL_SECRET", ""),
        help="HMAC secret of connection tokens for the demo node ($LINE_PROTOCOL_SECRET)",
    )
    args = parser.parse_args(argv)
    if not args.config and not args.secret:
        parser.error("give --secret (or $LINE_PROTOCOL_SECRET) or --config")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    rtcore.run(main(args))


if __name__ == "__main__":
    cli()
