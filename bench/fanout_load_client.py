"""Client process of the fan-out load scenario (started by ``fanout_load.py``).

Opens ``--connections`` raw WebSocket connections to the server from the
``--source`` loopback address, subscribes each one, then counts every
publication per connection and records publish-to-receive latency. It talks
to the orchestrator with JSON lines: it prints ``{"ready": ...}`` once every
connection is subscribed, waits for ``{"finish": <publications>, "timeout":
<seconds>}`` on stdin, prints its results when every connection has received
that many publications (or at the timeout), and exits on ``{"quit": true}``.

Protocols (``--protocol``):

* ``centrifuge``: rtcore; a connect and a subscribe command in one JSON frame,
  ready once the subscribe reply arrived; answers the server's ``{}`` pings.
* ``raw``: the comparison servers; connecting is subscribing, every text
  frame is one publication.
* ``socketio``: Engine.IO v4 / Socket.IO v5 over WebSocket; ready once the
  namespace connect is acknowledged; every ``42["pub", ...]`` event is one
  publication; answers Engine.IO pings.

Every publication carries ``{"t": <CLOCK_MONOTONIC ns at publish>, "s": <seq>}``
(monotonic time is shared by every process on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import sys
import time
from typing import Any

from histogram import bucket_index
from procstat import raise_nofile_limit

from rtcore.frames import OP_TEXT
from rtcore.wire.websocket import WebSocketConnection


# Publication fields (all protocols): publish time and sequence number.
PUB_RE = re.compile(rb'"t": ?(\d+), ?"s": ?(\d+)')


class Stats:
    """Counters shared by the connections of this process."""

    def __init__(self) -> None:
        self.hist: dict[int, int] = {}
        self.first_recv = 0
        self.last_recv = 0
        self.received = 0
        self.out_of_order = 0
        self.duplicates = 0
        self.closed = 0
        self.errors: dict[str, int] = {}

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class LoadConnection(asyncio.Protocol):
    """One subscribed client connection."""

    def __init__(
        self, stats: Stats, protocol: str, channel: str, ready: asyncio.Future[None], connect: bytes
    ) -> None:
        self.stats = stats
        # The Centrifuge connect + subscribe commands (one frame).
        self.connect = connect
        self.protocol = protocol
        self.channel = channel
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.ws = WebSocketConnection(is_server=False, max_message_size=1 << 24)
        self.head = b""
        self.upgraded = False
        # Publications received and the last sequence number seen.
        self.count = 0
        self.last_seq = 0
        self.done: asyncio.Future[None] | None = None
        self.target = 0

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass.
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        path = "/connection/websocket"
        if self.protocol == "socketio":
            path = "/socket.io/?EIO=4&transport=websocket"
        transport.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.head[: self.head.find(b"\r\n")]
            if b" 101 " not in status:
                self.fail(f"handshake: {status.decode(errors='replace')}")
                return
            data = self.head[end + 4 :]
            self.head = b""
            self.upgraded = True
            if self.protocol == "centrifuge":
                self.send(self.connect)
            elif self.protocol == "raw":
                self.set_ready()
            if not data:
                return
        try:
            messages = self.ws.receive_data(data)
        except Exception as exc:  # noqa: BLE001 - counted, the run reports it
            self.fail(f"websocket: {exc!r}")
            return
        out = self.ws.data_to_send()
        if out and self.transport is not None:
            self.transport.writelines(out)
        if not messages:
            return
        now = time.monotonic_ns()
        for opcode, payload in messages:
            if opcode == OP_TEXT:
                self.on_text(payload, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc!r}"))
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    # -- protocol -------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        self.ws.send(OP_TEXT, payload)
        assert self.transport is not None
        self.transport.writelines(self.ws.data_to_send())

    def set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def fail(self, why: str) -> None:
        self.stats.error(why[:120])
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()

    def on_text(self, payload: bytes, now: int) -> None:
        found = PUB_RE.findall(payload)
        if found:
            self.on_publications(found, now)
            if self.protocol == "centrifuge" and b"{}" in payload and b"{}" in payload.split(b"\n"):
                self.send(b"{}")  # a ping coalesced with publications -> pong
            return
        if self.protocol == "centrifuge":
            if b"{}" in payload.split(b"\n"):
                self.send(b"{}")  # ping -> pong
            elif b'"id":2' in payload:
                if b'"error"' in payload:
                    self.fail(f"subscribe refused: {payload[:200]!r}")
                else:
                    self.set_ready()
            elif b'"disconnect"' in payload:
                self.stats.error(f"disconnect push: {payload[:120]!r}")
        elif self.protocol == "socketio":
            if payload.startswith(b"0"):
                self.send(b"40")  # Engine.IO open -> Socket.IO namespace connect
            elif payload == b"2":
                self.send(b"3")  # Engine.IO ping -> pong
            elif payload.startswith(b"40"):
                self.set_ready()

    def on_publications(self, found: list[tuple[bytes, bytes]], now: int) -> None:
        stats = self.stats
        hist = stats.hist
        last = self.last_seq
        for t, s in found:
            seq = int(s)
            if seq == last + 1:
                last = seq
            elif seq <= last:
                stats.duplicates += 1
                continue
            else:
                stats.out_of_order += 1
                last = seq
            self.count += 1
            us = (now - int(t)) // 1000
            idx = bucket_index(us)
            hist[idx] = hist.get(idx, 0) + 1
        self.last_seq = last
        stats.received += len(found)
        if not stats.first_recv:
            stats.first_recv = now
        stats.last_recv = now
        if self.done is not None and self.count >= self.target and not self.done.done():
            self.done.set_result(None)


async def open_all(args: argparse.Namespace, stats: Stats) -> list[LoadConnection]:
    loop = asyncio.get_running_loop()
    conns: list[LoadConnection] = []
    sem = asyncio.Semaphore(args.concurrency)
    request = {"token": args.token} if args.token else {}
    connect = (
        json.dumps({"id": 1, "connect": request}, separators=(",", ":"))
        + "\n"
        + json.dumps({"id": 2, "subscribe": {"channel": args.channel}}, separators=(",", ":"))
    ).encode()

    async def one() -> None:
        async with sem:
            ready = loop.create_future()
            conn = LoadConnection(stats, args.protocol, args.channel, ready, connect)
            await loop.create_connection(
                lambda: conn, args.host, args.port, local_addr=(args.source, 0)
            )
            conns.append(conn)
            await asyncio.wait_for(ready, args.connect_timeout)

    results = await asyncio.gather(
        *(one() for _ in range(args.connections)), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    for exc in failures[:3]:
        stats.error(f"connect: {exc!r}"[:120])
    return conns


async def read_command(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readline()
    if not line:
        return {"quit": True}
    return json.loads(line)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stats = Stats()
    t0 = time.monotonic()
    conns = await open_all(args, stats)
    ready = sum(
        1
        for c in conns
        if c.ready.done() and not c.ready.cancelled() and c.ready.exception() is None
    )
    emit({"ready": ready, "seconds": round(time.monotonic() - t0, 3), "errors": stats.errors})
    while True:
        cmd = await read_command(reader)
        if cmd.get("quit"):
            break
        if "finish" in cmd:
            target = int(cmd["finish"])
            waits = []
            for c in conns:
                c.target = target
                c.done = loop.create_future()
                if c.count >= target or (c.transport is not None and c.transport.is_closing()):
                    c.done.set_result(None)
                waits.append(c.done)
            if waits:
                await asyncio.wait(waits, timeout=float(cmd.get("timeout", 30)))
            counts = [c.count for c in conns]
            emit(
                {
                    "connections": len(conns),
                    "received": stats.received,
                    "counted": sum(counts),
                    "min_count": min(counts, default=0),
                    "max_count": max(counts, default=0),
                    "complete": sum(1 for n in counts if n >= target),
                    "out_of_order": stats.out_of_order,
                    "duplicates": stats.duplicates,
                    "closed": stats.closed,
                    "first_recv": stats.first_recv,
                    "last_recv": stats.last_recv,
                    "hist": stats.hist,
                    "errors": stats.errors,
                }
            )
    for c in conns:
        if c.transport is not None:
            c.transport.abort()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--source", default="127.0.0.2", help="loopback source address to bind")
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--channel", default="bench")
    p.add_argument("--protocol", choices=["centrifuge", "raw", "socketio"], default="centrifuge")
    p.add_argument("--token", default="", help="connection token (centrifuge protocol)")
    p.add_argument("--concurrency", type=int, default=200, help="handshakes in flight")
    p.add_argument("--connect-timeout", type=float, default=60.0)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = p.parse_args(argv)
    if not args.source.startswith("127."):
        p.error("--source must be a loopback address (127.0.0.0/8)")
    if not (args.host.startswith("127.") or args.host == "localhost"):
        p.error("--host must be a loopback address")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.loop == "uvloop":
        import uvloop

        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
