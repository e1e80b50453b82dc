"""Upgrade requests past a share per event-loop iteration wait for the next ones.

Connections are driven in memory (a transport that records what is written
and whether it reads), so that many upgrade requests arrive in one loop
callback, as they do when the loop reads a storm's worth of sockets at once.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import rtcore
from rtcore.config import config_from_mapping
from rtcore.engine.node import Node
from rtcore.transports.http_connection import _Connection
from rtcore.transports.http_server import run as run_loop


sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.setup_path import MemoryTransport as BenchTransport, feed  # noqa: E402


UPGRADE = (
    b"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


class MemoryTransport(BenchTransport):
    """bench/setup_path.py's in-memory transport, keeping what is written
    (``data``) and whether the connection asked to read."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.2", 40000), _keep)
        self.data = bytearray()
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    @property
    def upgraded(self) -> bool:
        return self.data.startswith(b"HTTP/1.1 101 ")


def _keep(transport: MemoryTransport, data: Any) -> None:
    transport.data += data


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


Conn = tuple[_Connection, MemoryTransport]


def with_server(
    per_iteration: int,
    test: Callable[[Callable[[], Conn]], Awaitable[None]],
    config: dict[str, Any] | None = None,
) -> None:
    """Serve a node whose server answers ``per_iteration`` upgrades per iteration, and run
    ``test`` with a maker of in-memory connections to it (all closed at the end)."""

    async def main() -> None:
        node = Node(config_from_mapping(config or {}))
        server = await rtcore.serve(node, "127.0.0.1", 0)
        server.upgrades.per_iteration = per_iteration
        made: list[Conn] = []

        def connection() -> Conn:
            transport = MemoryTransport()
            protocol = _Connection(server)
            protocol.connection_made(transport)  # type: ignore[arg-type]
            made.append((protocol, transport))
            return protocol, transport

        try:
            await _turns(2)  # a fresh iteration: a whole share
            await test(connection)
        finally:
            for protocol, transport in made:
                if not protocol.lost:
                    transport.closed = True
                    protocol.connection_lost(None)
            await server.close(timeout=1)
            await node.close()

    run_loop(asyncio.wait_for(main(), 30))


def test_upgrades_past_the_share_wait_for_later_iterations() -> None:
    async def test(connection: Callable[[], Conn]) -> None:
        conns = [connection() for _ in range(8)]
        server = conns[0][0].server
        # Eight upgrade requests handled in one callback, as from one poll.
        for protocol, _ in conns:
            feed(protocol, UPGRADE)
        assert [t.upgraded for _, t in conns] == [True] * 3 + [False] * 5
        # The waiting ones read nothing more meanwhile.
        assert [t.reading for _, t in conns[3:]] == [False] * 5
        assert server.upgrades.deferred == 5
        await _turns(1)
        assert [t.upgraded for _, t in conns] == [True] * 6 + [False] * 2  # in order
        await _turns(2)
        assert all(t.upgraded for _, t in conns)
        assert all(t.reading for _, t in conns)  # WebSocket mode reads again

    with_server(3, test)


def test_a_connection_lost_while_waiting_is_skipped() -> None:
    async def test(connection: Callable[[], Conn]) -> None:
        (p1, first), (p2, second) = connection(), connection()
        feed(p1, UPGRADE)
        feed(p2, UPGRADE)
        assert first.upgraded and not second.upgraded
        second.closed = True
        p2.connection_lost(None)  # gone while in line
        await _turns(3)
        assert not second.data  # nothing was answered to it
        assert p1.server.connections == 1

    with_server(1, test)


def test_bytes_after_a_waiting_upgrade_reach_the_websocket() -> None:
    """A client that sends its first frame right behind the upgrade request."""
    from rtcore.frames import OP_PING
    from rtcore.wire.websocket import WebSocketConnection

    async def test(connection: Callable[[], Conn]) -> None:
        client = WebSocketConnection(is_server=False, max_message_size=0)
        client.send(OP_PING, b"early")
        ping = b"".join(client.data_to_send())
        (p1, _), (p2, t2) = connection(), connection()
        feed(p1, UPGRADE)
        feed(p2, UPGRADE + ping)  # waits, with a frame behind it
        assert not t2.upgraded
        await _turns(3)
        assert t2.upgraded
        # The early ping was handled after the 101: its pong follows it.
        _, _, rest = bytes(t2.data).partition(b"\r\n\r\n")
        assert rest[:1] == b"\x8a" and rest.endswith(b"early")

    with_server(1, test)


def test_an_upgrade_that_waits_past_the_handshake_timeout_gets_503() -> None:
    """The client sent its request in time; the server sheds it with advice."""

    class Stalled:
        """A scheduler that never grants: the server is busy for good."""

        def __init__(self) -> None:
            self.waiting: list[_Connection] = []

        def add(self, connection: _Connection) -> None:
            self.waiting.append(connection)

    async def test(connection: Callable[[], Conn]) -> None:
        protocol, transport = connection()
        protocol.server.upgrades = Stalled()  # type: ignore[assignment]
        feed(protocol, UPGRADE)
        assert not transport.data
        for _ in range(100):  # the deadline wheel ticks every 0.5 s
            if transport.data:
                break
            await asyncio.sleep(0.05)
        head = bytes(transport.data).split(b"\r\n\r\n")[0].decode()
        assert head.startswith("HTTP/1.1 503 ")
        assert "\r\nRetry-After: " in head
        assert protocol.server.refusals["http_503"] == 1
        assert protocol.server.refusals["handshake_timeout"] == 0

    with_server(1, test, {"websocket": {"handshake_timeout": "0.2s"}})
