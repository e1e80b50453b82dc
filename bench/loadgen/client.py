"""One client process of the load generator: many connections on one uvloop loop.

Each connection is a :class:`Conn`, an ``asyncio.Protocol`` with
``__slots__`` over rtcore's sans-I/O ``WebSocketConnection`` (client side):
no task, no buffer and no per-connection closure once it is connected, so a
process holds ~15,000 of them in a few tens of MiB. A task exists only while
a TCP connect is in flight.

The orchestrator drives the process over a ``multiprocessing`` pipe with
small dicts (``{"op": ...}``); every op gets one reply with the same ``op``,
and the process sends ``{"op": "progress", ...}`` four times a second:

* ``connect`` ``{rate}``: open every connection at ``rate`` connects/s
  (0: as fast as ``concurrency`` handshakes in flight allow), each one a
  WebSocket handshake, then ``connect`` with an HS256 token and ``subscribe``
  in one frame; ready on the subscribe reply.
* ``stats``: pings answered, connections lost (by close code), publications.
* ``drop``: abort every connection at once (RST, no close frame).
* ``reconnect`` ``{t0, expect, rate, concurrency}``: reopen the connections that were ready
  before the drop, subscribing with ``recover`` from their last offset and
  epoch; judge every recovery against ``expect`` (per channel: epoch, final
  offset, publications missed).
* ``arm`` ``{from_ns}`` / ``collect`` ``{expected, timeout}``: the publish
  scenario; latency is recorded for publications stamped at or after
  ``from_ns``, ``collect`` waits until every connection saw the last
  sequence number of its channel.
* ``close``: close frames (1000), then exit.

Every wait is bounded: connections are started within ``phase_timeout``
seconds, each one is ready within ``connect_timeout`` or counted as failed,
and the other waits take the op's ``timeout``.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from histogram import bucket_index
from procstat import raise_nofile_limit

from bench.loadgen.proto import (
    EV_DISCONNECT,
    EV_PING,
    EV_PUB,
    EV_REPLY,
    ClientCodec,
    Handshake,
    Pub,
    SubResult,
)
from rtcore.auth import make_connect_token
from rtcore.frames import OP_BINARY, OP_PING, OP_TEXT
from rtcore.wire.websocket import WebSocketConnection


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux 4.2+


__all__ = ["Conn", "Worker", "WorkerSpec", "judge_recovery", "worker_main"]

# Connection states.
IDLE, TCP, HANDSHAKE, SETUP, READY, CLOSED = range(6)
STATE_NAMES = ("idle", "tcp connect", "handshake", "connect/subscribe", "ready", "closed")
PENDING = (TCP, HANDSHAKE, SETUP)
PROGRESS_EVERY = 0.25


@dataclass
class WorkerSpec:
    """What one client process does (sent to it pickled)."""

    index: int
    host: str
    port: int
    path: str
    source: str
    fmt: str
    raw: bool
    secret: str
    channels: list[str]
    first: int
    count: int
    recoverable: bool
    concurrency: int
    connect_timeout: float
    phase_timeout: float
    token_ttl: float | None


def _label(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def judge_recovery(
    sub: SubResult | None, expect: tuple[str, int, int] | None, offset: int, last_s: int
) -> tuple[str, int, int]:
    """Judge a recovering subscribe reply: ``(verdict, new offset, new last sequence)``.

    ``expect`` is the channel's (epoch, final offset, publications missed);
    ``offset`` and ``last_s`` are the stream offset and publisher sequence of
    the last publication the client saw before it dropped. The verdict is
    ``"ok"`` when the reply is recovered, in the same epoch, and lists exactly
    the missed publications: offsets ``offset + 1 .. final`` in order, each
    once, with consecutive sequence numbers.
    """
    if sub is None or not sub.was_recovering:
        return "no recovery attempted", offset, last_s
    if not sub.recovered:
        return "not recovered", offset, last_s
    if expect is None:
        return "no expectation for the channel", offset, last_s
    epoch, final, missed = expect
    if sub.epoch != epoch:
        return "epoch changed", offset, last_s
    pubs = sub.publications
    prev, prev_s = offset, last_s
    for i, pub in enumerate(pubs):
        if pub.offset <= prev:
            # Every offset up to prev was seen already (they follow one another).
            return "duplicate", offset, last_s
        if pub.offset != prev + 1:
            later = any(p.offset == prev + 1 for p in pubs[i + 1 :])
            return ("out of order" if later else "gap"), offset, last_s
        if pub.s != prev_s + 1:
            return "wrong data", offset, last_s
        prev, prev_s = pub.offset, pub.s
    if prev < final:
        return "missing publications", max(prev, sub.offset), prev_s
    if len(pubs) != missed:
        return "wrong count", max(prev, sub.offset), prev_s
    return "ok", max(prev, sub.offset), prev_s


class Conn(asyncio.Protocol):
    """One client connection (see the module doc)."""

    __slots__ = (
        "w",
        "gid",
        "chan",
        "transport",
        "ws",
        "head",
        "state",
        "t0",
        "offset",
        "epoch",
        "last_s",
        "recovering",
        "was_ready",
    )

    def __init__(self, worker: Worker, gid: int, chan: int) -> None:
        self.w = worker
        self.gid = gid
        self.chan = chan
        self.transport: Any = None
        self.ws: WebSocketConnection | None = None
        self.head = b""
        self.state = IDLE
        self.t0 = 0
        # Stream position of the channel as this connection saw it.
        self.offset = 0
        self.epoch = ""
        # The publisher's sequence number of the last publication received.
        self.last_s = 0
        self.recovering = False
        self.was_ready = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.w.open += 1
        if self.state != TCP:  # aborted while the connect was in flight
            transport.abort()
            return
        self.state = HANDSHAKE
        self.w.stage(self, "tcp")
        transport.write(self.w.hs.request)

    def data_received(self, data: bytes) -> None:
        w = self.w
        if self.state == HANDSHAKE:
            head = self.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                if len(head) > 16384:
                    self.fail("handshake: response head too large")
                else:
                    self.head = head
                return
            self.head = b""
            why = w.hs.check(head[:end])
            if why:
                self.fail(_label(why))
                return
            self.ws = WebSocketConnection(is_server=False, max_message_size=0)
            w.stage(self, "upgrade")
            if w.spec.raw:
                w.on_ready(self, None)
            else:
                self.state = SETUP
                self.ws.send(w.codec.opcode, w.setup_frame(self))
                self.transport.writelines(self.ws.data_to_send())
            data = head[end + 4 :]
            if not data:
                return
        ws = self.ws
        if ws is None or self.state == CLOSED:
            return
        pong = False
        raw = w.spec.raw
        for op, payload in ws.receive_data(data):
            if op == OP_TEXT or op == OP_BINARY:
                if raw:
                    continue
                try:
                    events = w.codec.decode(payload)
                except Exception as exc:  # noqa: BLE001 - a bad frame fails the connection, counted
                    self.fail(f"undecodable frame: {type(exc).__name__}")
                    return
                for ev in events:
                    kind = ev[0]
                    if kind == EV_PUB:
                        w.on_pub(self, ev[2])
                    elif kind == EV_PING:
                        pong = True
                    elif kind == EV_REPLY:
                        if not self.on_reply(ev[1], ev[2], ev[3], ev[4]):
                            return
                    elif kind == EV_DISCONNECT:
                        w.count(w.pushed_disconnects, _label(f"disconnect push {ev[1]} {ev[2]}"))
            elif op == OP_PING:
                ws.pong(payload)
        ws.receive_done()
        if pong:
            w.pings += 1
            ws.send(w.codec.opcode, w.codec.pong)
        out = ws.data_to_send()
        if out:
            self.transport.writelines(out)
        if ws.should_close_transport:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        state = self.state
        self.state = CLOSED
        self.transport = None
        w = self.w
        if state in PENDING:
            w.pending.discard(self)
            w.count(w.failures, self.close_label(exc, state))
        elif state == READY:
            w.ready -= 1
            if not w.dropping:
                w.count(w.lost, self.close_label(exc, state))
        self.ws = None
        w.open -= 1

    # -- protocol -------------------------------------------------------------------------

    def on_reply(self, rid: int, code: int, message: str, sub: SubResult | None) -> bool:
        """Handle a reply; False when the connection was failed by it."""
        if code:
            what = {1: "connect", 2: "subscribe"}.get(rid, f"reply {rid}")
            self.fail(_label(f"{what} error {code} {message}"))
            return False
        if rid == 2 and self.state == SETUP:
            self.w.on_ready(self, sub)
        return True

    def close_label(self, exc: Exception | None, state: int) -> str:
        ws = self.ws
        if ws is not None and ws.close_code_received not in (None, 1005, 1006):
            reason = ws.close_reason_received
            return _label(f"close {ws.close_code_received} {reason}".rstrip())
        if exc is not None:
            return _label(f"lost in {STATE_NAMES[state]}: {type(exc).__name__}")
        return f"closed without close frame in {STATE_NAMES[state]}"

    def start(self) -> None:
        """Open the TCP connection (the state machine does the rest)."""
        w = self.w
        self.state = TCP
        self.t0 = time.monotonic_ns()
        self.head = b""
        self.ws = None
        w.pending.add(self)
        spec = w.spec
        task = w.loop.create_task(self._open(spec.host, spec.port, spec.source))
        task.add_done_callback(self._tcp_done)

    async def _open(self, host: str, port: int, source: str) -> None:
        loop = self.w.loop
        if not source or ":" in host:
            await loop.create_connection(lambda: self, host, port)
            return
        # bind((source, 0)) picks a port unused by every socket bound to that
        # address, a search that grows with the connections already open (and
        # fails long before 28,000); IP_BIND_ADDRESS_NO_PORT defers the choice
        # to connect(), which needs the 4-tuple to be unique only.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            await loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        await loop.create_connection(lambda: self, sock=sock)

    def _tcp_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self.fail("connect cancelled")
            return
        exc = task.exception()
        if exc is not None:
            code = getattr(exc, "errno", None)
            name = errno.errorcode.get(code, type(exc).__name__) if code else type(exc).__name__
            self.fail(f"tcp connect: {name}")

    def fail(self, label: str) -> None:
        """A connection that did not become ready: count why, drop it."""
        if self.state in PENDING:
            self.w.pending.discard(self)
            self.w.count(self.w.failures, label)
        self.state = CLOSED
        if self.transport is not None:
            self.transport.abort()


class Worker:
    """Every connection of one client process, and the ops of the orchestrator."""

    def __init__(self, spec: WorkerSpec, pipe: Connection) -> None:
        self.spec = spec
        self.pipe = pipe
        self.loop = asyncio.get_running_loop()
        self.codec = ClientCodec(spec.fmt)
        self.hs = Handshake(
            spec.host, spec.port, spec.path, None if spec.raw else self.codec.subprotocol
        )
        nchan = len(spec.channels)
        self.conns = [
            Conn(self, spec.first + i, (spec.first + i) % nchan) for i in range(spec.count)
        ]
        # Tokens are minted up front (~0.1 ms each), outside the measured phases, and
        # reused on reconnect, as a client SDK keeps its token until it expires.
        self.tokens = (
            []
            if spec.raw
            else [
                make_connect_token(spec.secret, f"lg{c.gid}", ttl=spec.token_ttl)
                for c in self.conns
            ]
        )
        self.pending: set[Conn] = set()
        self.open = 0  # transports made and not yet lost
        self.ready = 0
        # Per phase: why connections failed to become ready, and a latency histogram
        # (connect: TCP connect to subscribe reply; reconnect: storm start to the reply).
        self.failures: dict[str, int] = {}
        self.hist: dict[int, int] = {}
        # Per phase, from the same start: when the TCP connection was up ("tcp")
        # and when the 101 arrived ("upgrade"), to tell where the time went.
        self.stages: dict[str, dict[int, int]] = {}
        self.first_start = 0
        self.last_ready = 0
        # Ready connections closed by the other side, by close code.
        self.lost: dict[str, int] = {}
        self.pushed_disconnects: dict[str, int] = {}
        self.pings = 0
        self.dropping = False
        # storm: per channel (epoch, final offset, publications missed); verdicts.
        self.expect: dict[int, tuple[str, int, int]] = {}
        self.storm_t0 = 0
        self.verdicts: dict[str, int] = {}
        self.last_recovered = 0
        # publish: latency of publications stamped from measure_from on.
        self.measure_from = 0
        self.pub_hist: dict[int, int] = {}
        self.received = 0
        self.gaps = 0
        self.duplicates = 0
        self.first_recv = 0
        self.last_recv = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stopped: asyncio.Future[None] = self.loop.create_future()

    # -- plumbing -----------------------------------------------------------------------------

    @staticmethod
    def count(counter: dict[str, int], label: str) -> None:
        counter[label] = counter.get(label, 0) + 1

    def send(self, msg: dict[str, Any]) -> None:
        try:
            if msg["op"] != "progress":
                # Fresh counters arrive before the reply they lead to (the pipe keeps order).
                self.pipe.send(self._progress())
            self.pipe.send(msg)
        except (BrokenPipeError, OSError):
            self.stop()

    def _progress(self) -> dict[str, Any]:
        return {
            "op": "progress",
            "ready": self.ready,
            "pending": len(self.pending),
            "failed": sum(self.failures.values()),
            "lost": sum(self.lost.values()),
            "pings": self.pings,
            "received": self.received,
            "recovered": self.verdicts.get("ok", 0),
        }

    def stop(self) -> None:
        if not self.stopped.done():
            self.stopped.set_result(None)

    async def run(self) -> None:
        self.loop.add_reader(self.pipe.fileno(), self._on_pipe)
        self.loop.call_later(PROGRESS_EVERY, self._tick)
        try:
            await self.stopped
        finally:
            self.loop.remove_reader(self.pipe.fileno())
            for c in self.conns:
                if c.transport is not None:
                    c.transport.abort()
            await asyncio.sleep(0)

    def _on_pipe(self) -> None:
        try:
            while self.pipe.poll():
                msg = self.pipe.recv()
                handler = getattr(self, "op_" + str(msg.get("op")), None)
                if handler is None:
                    self.send({"op": "error", "error": f"unknown op {msg.get('op')!r}"})
                    continue
                task = self.loop.create_task(handler(msg))
                self.tasks.add(task)
                task.add_done_callback(self._op_done)
        except (EOFError, OSError):
            self.stop()  # the orchestrator is gone

    def _op_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.send({"op": "error", "error": repr(task.exception())})

    def _tick(self) -> None:
        if self.stopped.done():
            return
        # Connections stuck in a pending state past the connect timeout.
        limit = time.monotonic_ns() - int(self.spec.connect_timeout * 1e9)
        for c in [c for c in self.pending if c.t0 < limit]:
            c.fail(f"timeout in {STATE_NAMES[c.state]}")
        self.send(self._progress())
        self.loop.call_later(PROGRESS_EVERY, self._tick)

    # -- connection events --------------------------------------------------------------------

    def setup_frame(self, conn: Conn) -> bytes:
        spec = self.spec
        token = self.tokens[conn.gid - spec.first]
        recover_from = (conn.offset, conn.epoch) if conn.recovering else None
        return self.codec.setup(
            token,
            spec.channels[conn.chan],
            recoverable=spec.recoverable,
            recover_from=recover_from,
        )

    def _record(self, hist: dict[int, int], conn: Conn, now: int) -> None:
        """Count ``conn``'s time from its start (the storm's, when recovering) into ``hist``."""
        start = self.storm_t0 if conn.recovering else conn.t0
        idx = bucket_index((now - start) // 1000)
        hist[idx] = hist.get(idx, 0) + 1

    def stage(self, conn: Conn, name: str) -> None:
        """``conn`` reached stage ``name`` of its (re)connect: into that stage's histogram."""
        self._record(self.stages.setdefault(name, {}), conn, time.monotonic_ns())

    def on_ready(self, conn: Conn, sub: SubResult | None) -> None:
        now = time.monotonic_ns()
        self.pending.discard(conn)
        conn.state = READY
        conn.was_ready = True
        self.ready += 1
        self.last_ready = now
        if conn.recovering:
            verdict, conn.offset, conn.last_s = judge_recovery(
                sub, self.expect.get(conn.chan), conn.offset, conn.last_s
            )
            if sub is not None:
                conn.epoch = sub.epoch
            self.count(self.verdicts, verdict)
            if verdict == "ok":
                self.last_recovered = now
        elif sub is not None:
            conn.epoch, conn.offset = sub.epoch, sub.offset
        self._record(self.hist, conn, now)

    def on_pub(self, conn: Conn, pub: Pub) -> None:
        now = time.monotonic_ns()
        self.received += 1
        if not self.first_recv:
            self.first_recv = now
        self.last_recv = now
        if pub.s:
            if pub.s == conn.last_s + 1:
                conn.last_s = pub.s
            elif pub.s <= conn.last_s:
                self.duplicates += 1
                return
            else:
                self.gaps += pub.s - conn.last_s - 1
                conn.last_s = pub.s
        if pub.offset:
            conn.offset = max(conn.offset, pub.offset)
        if pub.t and pub.t >= self.measure_from:
            idx = bucket_index((now - pub.t) // 1000)
            self.pub_hist[idx] = self.pub_hist.get(idx, 0) + 1

    # -- ops ----------------------------------------------------------------------------------

    async def _open_all(self, conns: list[Conn], rate: float, concurrency: int) -> None:
        """Start ``conns`` at ``rate`` per second (0: at once) with at most ``concurrency``
        pending (0: no limit), then wait until none is pending (bounded)."""
        loop = self.loop
        n = len(conns)
        start = loop.time()
        # Starting ends by the phase limit; the last ones started get their connect timeout.
        last_start = start + self.spec.phase_timeout
        deadline = last_start + self.spec.connect_timeout + 1.0
        limit = concurrency if concurrency > 0 else n
        if not self.first_start:
            self.first_start = time.monotonic_ns()
        i = 0
        while i < n:
            now = loop.time()
            due = n if rate <= 0 else min(n, int((now - start) * rate) + 1)
            while i < due and len(self.pending) < limit:
                conns[i].start()
                i += 1
            if i < n:
                if now > last_start:
                    label = "not started within --phase-timeout"
                    self.failures[label] = self.failures.get(label, 0) + n - i
                    break
                await asyncio.sleep(0.002)
        while self.pending and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for c in list(self.pending):
            c.fail(f"timeout in {STATE_NAMES[c.state]}")

    def _phase_report(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "failures": self.failures,
            "hist": self.hist,
            "stages": self.stages,
            "first_start": self.first_start,
            "last_ready": self.last_ready,
        }

    async def op_connect(self, msg: dict[str, Any]) -> None:
        self.failures, self.hist, self.first_start, self.last_ready = {}, {}, 0, 0
        self.stages = {}
        await self._open_all(self.conns, float(msg.get("rate", 0)), self.spec.concurrency)
        self.send({"op": "connect", **self._phase_report()})

    async def op_stats(self, msg: dict[str, Any]) -> None:
        self.send(
            {
                "op": "stats",
                "ready": self.ready,
                "lost": self.lost,
                "pushed_disconnects": self.pushed_disconnects,
                "pings": self.pings,
                "received": self.received,
            }
        )

    async def _wait_closed(self, timeout: float) -> None:
        deadline = self.loop.time() + timeout
        while self.open > 0 and self.loop.time() < deadline:
            await asyncio.sleep(0.01)

    async def op_drop(self, msg: dict[str, Any]) -> None:
        self.dropping = True
        dropped = 0
        for c in self.conns:
            if c.transport is not None:
                c.transport.abort()
                dropped += 1
            c.state = CLOSED
        self.pending.clear()
        self.ready = 0
        await self._wait_closed(10.0)
        self.send({"op": "drop", "dropped": dropped, "still_open": self.open})

    async def op_reconnect(self, msg: dict[str, Any]) -> None:
        self.expect = {int(k): (str(v[0]), int(v[1]), int(v[2])) for k, v in msg["expect"].items()}
        self.storm_t0 = int(msg["t0"])
        self.dropping = False
        self.failures, self.hist, self.verdicts, self.stages = {}, {}, {}, {}
        self.first_start = self.last_ready = self.last_recovered = 0
        self.ready = 0
        conns = [c for c in self.conns if c.was_ready]
        for c in conns:
            c.recovering = True
        await self._open_all(conns, float(msg.get("rate", 0)), int(msg.get("concurrency", 0)))
        self.send(
            {
                "op": "reconnect",
                "verdicts": self.verdicts,
                "last_recovered": self.last_recovered,
                **self._phase_report(),
            }
        )

    async def op_arm(self, msg: dict[str, Any]) -> None:
        self.measure_from = int(msg["from_ns"])
        self.pub_hist = {}
        self.received = self.gaps = self.duplicates = self.first_recv = self.last_recv = 0
        self.send({"op": "arm"})

    async def op_collect(self, msg: dict[str, Any]) -> None:
        expected = {int(k): int(v) for k, v in msg["expected"].items()}
        deadline = self.loop.time() + float(msg.get("timeout", 30))
        waiting = [c for c in self.conns if c.state == READY]
        while waiting and self.loop.time() < deadline:
            waiting = [
                c for c in waiting if c.state == READY and c.last_s < expected.get(c.chan, 0)
            ]
            if waiting:
                await asyncio.sleep(0.05)
        ready = [c for c in self.conns if c.state == READY]
        complete = sum(1 for c in ready if c.last_s >= expected.get(c.chan, 0))
        self.send(
            {
                "op": "collect",
                "ready": self.ready,
                "complete": complete,
                "expected": sum(expected.get(c.chan, 0) for c in ready),
                "received": self.received,
                "gaps": self.gaps,
                "duplicates": self.duplicates,
                "hist": self.pub_hist,
                "first_recv": self.first_recv,
                "last_recv": self.last_recv,
                "lost": self.lost,
            }
        )

    async def op_close(self, msg: dict[str, Any]) -> None:
        self.dropping = True
        for c in self.conns:
            t = c.transport
            if t is None:
                continue
            if c.ws is not None and c.state == READY:
                c.ws.close(1000)
                t.writelines(c.ws.data_to_send())
            c.state = CLOSED
            t.close()
        self.pending.clear()
        await self._wait_closed(float(msg.get("timeout", 10)))
        for c in self.conns:
            if c.transport is not None:
                c.transport.abort()
        self.send({"op": "close", "still_open": self.open})
        self.stop()


def worker_main(spec: WorkerSpec, pipe: Connection) -> None:
    """Entry point of a client process (``multiprocessing`` target)."""
    # Ctrl-C reaches the whole process group: the orchestrator stops this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile_limit()
    import uvloop

    async def main() -> None:
        await Worker(spec, pipe).run()

    uvloop.run(main())
