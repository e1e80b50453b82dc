"""Loop lag never costs a healthy client its connection: a pong (or a connect)
that arrived in time is read before its deadline is enforced, even when the
timer wheel sweeps before the loop reads the socket; a client that really
stays silent is still disconnected (3012 / 3502), one sweep later."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from rtcore.engine.session import CLOSED, CONNECTED
from rtcore.protocol import codes
from rtcore.transports.http_server import run as run_on_uvloop

from .helpers import (
    Client,
    FakeClock,
    connect_token,
    make_node,
    pinged_client,
    run,
    serve,
    settle,
    until,
)


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_pong_read_after_a_late_sweep_counts(codec: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        node, c = await pinged_client(clock, codec)
        # The loop lagged: the first sweep after the deadline comes before the
        # loop has read the pong that is waiting in the socket.
        clock.advance(6)
        node.timers.sweep()
        await settle()
        assert c.closed is None
        c.pong()  # read now, before the next sweep
        clock.advance(0.25)
        node.timers.sweep()
        await settle()
        assert c.closed is None
        # Pings go on, and a later silence is still a 3012.
        clock.advance(10)
        node.timers.sweep()
        await until(lambda: c.pings() == 2)
        clock.advance(4.3)
        node.timers.sweep()
        await settle()
        assert c.closed is None
        clock.advance(0.25)
        node.timers.sweep()
        assert await c.disconnected() == 3012
        await node.close()

    run(main())


def test_connect_read_after_a_late_sweep_counts() -> None:
    async def main() -> None:
        clock = FakeClock()
        node = make_node({"client": {"stale_close_delay": 10}}, clock=clock)
        await node.start()
        c = Client(node)
        clock.advance(12)
        node.timers.sweep()
        await settle()
        assert c.closed is None
        await c.connect(connect_token("42"))
        clock.advance(0.25)
        node.timers.sweep()
        await settle()
        assert c.closed is None and c.session.state == CONNECTED
        await node.close()

    run(main())


class _PongingClient(threading.Thread):
    """A client in its own thread: connects, then answers every ping once allowed to."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.connected = threading.Event()
        self.may_pong = threading.Event()
        self.may_pong.set()
        self.pongs = 0
        self.stop = threading.Event()
        self.closed: tuple[int, str] | None = None

    def run(self) -> None:
        with sync_connect(self.url) as ws:
            ws.send(json.dumps({"id": 1, "connect": {"token": connect_token("42")}}))
            assert "connect" in json.loads(str(ws.recv(10)))
            self.connected.set()
            try:
                while not self.stop.is_set():
                    try:
                        frame = ws.recv(0.05)
                    except TimeoutError:
                        continue
                    if frame == "{}\n":
                        self.may_pong.wait(10)
                        ws.send("{}")
                        self.pongs += 1
            except ConnectionClosed as exc:
                self.closed = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")


def test_a_blocked_loop_does_not_disconnect_a_client_that_answered() -> None:
    config = {"client": {"ping_interval": 1, "pong_timeout": 0.4}}
    client: _PongingClient | None = None

    def blocking_route(request: Any, response: Any) -> None:
        # Runs inside the loop's I/O phase, like a burst of handshakes: the
        # client answers its ping meanwhile, and the pong deadline passes.
        assert client is not None
        client.may_pong.set()
        time.sleep(1.0)
        response.send(200, [("Content-Type", "text/plain")], b"done\n")

    def get(port: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/block", timeout=10) as r:
            assert r.read() == b"done\n"

    async def main() -> None:
        nonlocal client
        setup = lambda node, app: app.mount("/block", blocking_route)  # noqa: E731
        async with serve(config, setup=setup) as s:
            node = s.node
            client = _PongingClient(s.url)
            client.start()
            await until(lambda: client.connected.is_set() and node.hub.num_sessions, 10)
            (session,) = node.hub.sessions()
            client.may_pong.clear()
            sent = session.writer.messages_sent
            await until(lambda: session._ping_outstanding, 10, "a ping")
            await until(lambda: session.writer.messages_sent > sent, 10, "the ping written")
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, get, s.port)
            await until(
                lambda: (
                    (client.pongs >= 1 and not session._ping_outstanding) or session.state == CLOSED
                ),
                10,
            )
            assert codes.NO_PONG.code not in node.disconnects, node.disconnects
            # Two more pings answered on a free loop.
            await until(lambda: client.pongs >= 3 or session.state == CLOSED, 10, "more pongs")
            assert session.state == CONNECTED and client.closed is None
            client.stop.set()
            await loop.run_in_executor(None, client.join, 10)

    # On uvloop the sweep after a long I/O phase runs before the sockets are read again.
    run_on_uvloop(asyncio.wait_for(main(), 30))
