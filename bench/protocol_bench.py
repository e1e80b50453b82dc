"""Full-protocol publish -> deliver: one rtcore Node server, JSON and Protobuf clients.

The server process runs ``Node(config)`` (anonymous connect, subscribe and
publish allowed in the namespace-free channels) on the memory engine, served
by ``rtcore.serve``. Client processes open raw WebSocket connections to
``/connection/websocket`` (Protobuf via the ``centrifuge-protobuf``
subprotocol), send the protocol's ``connect`` and ``subscribe`` commands and
count the publication pushes they receive. Client process 0 also holds the
publisher connections, which send ``publish`` commands into the same channel,
keeping ``--inflight`` publications between "sent" and "came back to the
publishers' own subscriptions" (so the server is never asked to queue an
unbounded backlog).

Reported per measurement:

* deliveries/s: publication pushes received by all subscribers inside the
  measured window / window length (and publications/s);
* server CPU per delivered message: user+system time of the server from
  /proc/PID/stat over the window / deliveries in the window;
* loss: after the window every subscriber must have received exactly the
  number of publications that were accepted;
* encode-once: the server's ``node.hub.encodes`` (encodes per codec index)
  must equal the number of publications for every codec that has subscribers
  and 0 for the others, whatever the number of subscribers.

Commands go out encoded with the JSON wire format / the generated Protobuf
messages of ``rtcore.protocol.client_pb2``; replies are counted on every frame
and decoded in full on a sample (``--verify-every``).

Examples::

    python bench/protocol_bench.py --runs 3 --json /tmp/protocol.json   # compiled vs pure, json/protobuf/mixed
    python bench/protocol_bench.py --encode-check                      # encodes vs subscriber count
    python bench/protocol_bench.py report /tmp/protocol.json
    python bench/protocol_bench.py --smoke                             # 1 s, exits 1 on loss/errors

Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from echo_bench import (  # noqa: E402
    PY,
    _affinity,
    emit,
    free_port,
    read_json_line,
    stop_process,
    versions,
    wait_port,
)
from procstat import machine_busy, proc_cpu, proc_cpu_split, raise_nofile_limit  # noqa: E402


CHANNEL = "bench"


def node_config(queue_max_size: int) -> Any:
    from rtcore.config import config_from_mapping

    return config_from_mapping(
        {
            "client": {
                "allow_anonymous_connect_without_token": True,
                # Room for a burst per connection; loss would show in the report.
                "queue_max_size": queue_max_size,
            },
            "channel": {
                "without_namespace": {
                    # allow_subscribe_for_anonymous only takes effect together with
                    # allow_subscribe_for_client (as in Centrifugo): without it the
                    # anonymous subscribe is refused with 103.
                    "allow_subscribe_for_client": True,
                    "allow_subscribe_for_anonymous": True,
                    "allow_publish_for_anonymous": True,
                    "allow_publish_for_subscriber": True,
                }
            },
        }
    )


# ---------------------------------------------------------------------------
# Server process
# ---------------------------------------------------------------------------


def server_main(argv: list[str]) -> None:
    import asyncio

    import rtcore
    from rtcore import fanout, frames
    from rtcore.engine.node import Node
    from rtcore.transports.http_server import run

    p = argparse.ArgumentParser(prog="protocol_bench.py server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--queue-max-size", type=int, default=16 << 20)
    args = p.parse_args(argv)
    raise_nofile_limit()

    async def main() -> None:
        node = Node(node_config(args.queue_max_size))
        server = await rtcore.serve(node, "127.0.0.1", args.port)
        hub = node.hub
        # Unique labels: the hub also holds the unidirectional JSON codec (also named "json").
        labels = [
            c.name
            if type(c).__name__ in ("JsonCodec", "ProtobufCodec")
            else f"{c.name} ({type(c).__name__})"
            for c in hub.codecs
        ]
        emit(
            {
                "listening": args.port,
                "frames": frames.IMPLEMENTATION,
                "fanout": fanout.IMPLEMENTATION,
                "codecs": labels,
            }
        )
        loop = asyncio.get_running_loop()
        try:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line or line.strip() == "quit":
                    break
                if line.strip() == "stats":
                    emit(
                        {
                            "stats": {
                                "encodes": list(hub.encodes),
                                "codecs": labels,
                                "publications_in": node.publications_in,
                                "subscribers": hub.num_subscribers(CHANNEL),
                                "sessions": hub.num_sessions,
                            }
                        }
                    )
        finally:
            await node.close()
            await server.close()

    run(main(), use_uvloop=True)


# ---------------------------------------------------------------------------
# Client process
# ---------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def client_main(argv: list[str]) -> None:
    import asyncio
    import base64

    import uvloop

    from rtcore import frames
    from rtcore.protocol import SUBPROTOCOL_PROTOBUF, client_pb2 as pb
    from rtcore.wire.handshake import accept_key
    from rtcore.wire.websocket import WebSocketConnection

    p = argparse.ArgumentParser(prog="protocol_bench.py client")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--codec", choices=["json", "protobuf"], default="json")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument(
        "--publishers", type=int, default=0, help="of the connections, how many also publish"
    )
    p.add_argument("--inflight", type=int, default=32)
    p.add_argument("--payload-size", type=int, default=64)
    p.add_argument(
        "--verify-every",
        type=int,
        default=64,
        help="decode every N-th frame of a connection in full",
    )
    args = p.parse_args(argv)
    raise_nofile_limit()

    is_pb = args.codec == "protobuf"
    OP = frames.OP_BINARY if is_pb else frames.OP_TEXT
    MASK = os.urandom(4)
    PAD = b"x" * max(1, args.payload_size - 24)

    def pub_data(seq: int) -> bytes:
        head = b'{"s":%d,"p":"' % seq
        return head + PAD[: max(1, args.payload_size - len(head) - 2)] + b'"}'

    def frame(payload: bytes) -> bytes:
        return frames.encode_frame(OP, payload, True, False, MASK)

    # -- command encoding (JSON wire format / generated Protobuf messages) --
    if is_pb:

        def encode(cmds: list[Any]) -> bytes:
            out = bytearray()
            for c in cmds:
                body = c.SerializeToString()
                out += _varint(len(body)) + body
            return bytes(out)

        def setup_frame() -> bytes:
            return frame(
                encode(
                    [
                        pb.Command(id=1, connect=pb.ConnectRequest()),
                        pb.Command(id=2, subscribe=pb.SubscribeRequest(channel=CHANNEL)),
                    ]
                )
            )

        def publish_cmd(cid: int, seq: int) -> bytes:
            return encode(
                [pb.Command(id=cid, publish=pb.PublishRequest(channel=CHANNEL, data=pub_data(seq)))]
            )

        PONG = frame(b"\x00")
    else:

        def setup_frame() -> bytes:
            return frame(
                b'{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"%s"}}' % CHANNEL.encode()
            )

        def publish_cmd(cid: int, seq: int) -> bytes:
            return b'{"id":%d,"publish":{"channel":"%s","data":%s}}' % (
                cid,
                CHANNEL.encode(),
                pub_data(seq),
            )

        PONG = frame(b"{}")

    class Shared:
        delivered = 0
        published = 0  # publish commands sent
        accepted = 0  # publish replies without error
        errors = 0  # error replies and failed checks
        verified = 0
        pings = 0
        closed = 0
        first_error = ""
        snap: dict[str, float] = {}
        running = False

    S = Shared
    publishers: list[Client] = []
    verify_every = max(1, args.verify_every)

    def record_error(what: str) -> None:
        S.errors += 1
        if not S.first_error:
            S.first_error = what[:300]

    def check_push_json(obj: dict[str, Any]) -> None:
        push = obj.get("push")
        if push is None:
            return
        pub = push.get("pub")
        if (
            push.get("channel") != CHANNEL
            or pub is None
            or pub.get("data", {}).get("p", "")[:1] != "x"
        ):
            record_error(f"unexpected push {obj!r}")
        else:
            S.verified += 1

    class Client(asyncio.Protocol):
        def __init__(self, index: int, ready: asyncio.Future[None]) -> None:
            self.index = index
            self.ready = ready
            self.transport: Any = None
            self.key = base64.b64encode(os.urandom(16)).decode()
            self.buf = bytearray()
            self.conn: WebSocketConnection | None = None
            self.setup_replies = 0
            self.received = 0  # publications
            self.frames_in = 0
            self.is_publisher = False
            self.pending: list[bytes] = []
            self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            proto = f"Sec-WebSocket-Protocol: {SUBPROTOCOL_PROTOBUF}\r\n" if is_pb else ""
            transport.write(
                (
                    f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
                    f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\n"
                    f"Sec-WebSocket-Version: 13\r\n{proto}\r\n"
                ).encode()
            )

        def _handshake(self, data: bytes) -> bytes | None:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return None
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            rest = bytes(self.buf[end + 4 :])
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])
            }
            ok = " 101 " in head[0] + " " and headers.get("sec-websocket-accept") == accept_key(
                self.key
            )
            if is_pb and headers.get("sec-websocket-protocol") != SUBPROTOCOL_PROTOBUF:
                ok = False
            if not ok:
                self.ready.set_exception(RuntimeError(f"handshake failed: {head!r}"))
                self.transport.close()
                return None
            self.conn = WebSocketConnection(is_server=False, max_message_size=0)
            self.transport.write(setup_frame())
            return rest

        def data_received(self, data: bytes) -> None:
            conn = self.conn
            if conn is None:
                rest = self._handshake(data)
                if rest is None or self.conn is None:
                    return
                conn = self.conn
                if not rest:
                    return
                data = rest
            pubs = 0
            pong = False
            for op, payload in conn.receive_data(data):
                if op != OP:
                    if op == frames.OP_PING:
                        conn.pong(payload)
                    continue
                self.frames_in += 1
                sample = self.frames_in % verify_every == 0
                if is_pb:
                    n, pong = self._scan_pb(payload, sample, pong)
                else:
                    n = payload.count(b'"pub":')
                    if n != payload.count(b"\n") or sample:
                        pong = self._slow_json(payload) or pong
                pubs += n
            conn.receive_done()
            if pubs:
                self.received += pubs
                S.delivered += pubs
            out = conn.data_to_send()
            if pong:
                out = out + [PONG]
            if out:
                self.transport.writelines(out)
            if conn.should_close_transport:
                self.transport.close()
            if self.is_publisher and S.running:
                pump()

        def _slow_json(self, payload: bytes) -> bool:
            """Decode a frame's replies in full: setup replies, publish replies, pings, a sample."""
            pong = False
            for line in payload.split(b"\n"):
                if not line:
                    continue
                obj = json.loads(line)
                if not obj:
                    S.pings += 1
                    pong = True
                elif "error" in obj:
                    record_error(f"error reply {obj!r}")
                elif "push" in obj:
                    check_push_json(obj)
                    if "disconnect" in obj["push"]:
                        record_error(f"disconnect push {obj!r}")
                elif obj.get("id") in (1, 2) and not self.ready.done():
                    self._setup_reply()
                elif "publish" in obj:
                    S.accepted += 1
            return pong

        def _scan_pb(self, buf: bytes, sample: bool, pong: bool) -> tuple[int, bool]:
            pos = 0
            end = len(buf)
            n = 0
            while pos < end:
                b = buf[pos]
                pos += 1
                ln = b & 0x7F
                shift = 7
                while b & 0x80:
                    b = buf[pos]
                    pos += 1
                    ln |= (b & 0x7F) << shift
                    shift += 7
                if ln == 0:
                    S.pings += 1
                    pong = True
                elif buf[pos] == 0x22 and not sample:  # Reply.push (field 4) first: a push
                    n += 1
                else:
                    reply = pb.Reply.FromString(buf[pos : pos + ln])
                    if reply.HasField("error"):
                        record_error(f"error reply {reply}")
                    elif reply.HasField("push"):
                        push = reply.push
                        if push.HasField("pub"):
                            n += 1
                            if (
                                push.channel != CHANNEL
                                or json.loads(push.pub.data).get("p", "")[:1] != "x"
                            ):
                                record_error(f"unexpected push {reply}")
                            else:
                                S.verified += 1
                        elif push.HasField("disconnect"):
                            record_error(f"disconnect push {reply}")
                    elif reply.id in (1, 2) and not self.ready.done():
                        self._setup_reply()
                    elif reply.HasField("publish"):
                        S.accepted += 1
                pos += ln
            return n, pong

        def _setup_reply(self) -> None:
            self.setup_replies += 1
            if self.setup_replies == 2:
                self.ready.set_result(None)

        def connection_lost(self, exc: Exception | None) -> None:
            S.closed += 1
            if not self.ready.done():
                self.ready.set_exception(exc or ConnectionError("closed before subscribing"))
            if not self.done.done():
                self.done.set_result(None)

    def pump() -> None:
        """Publish while fewer than --inflight publications are on their way back."""
        low = min(c.received for c in publishers)
        want = args.inflight - (S.published - low)
        if want <= 0:
            return
        for _ in range(want):
            c = publishers[S.published % len(publishers)]
            S.published += 1
            c.pending.append(publish_cmd(1000 + S.published, S.published))
        for c in publishers:
            if c.pending:
                payload = b"".join(c.pending) if is_pb else b"\n".join(c.pending)
                c.pending = []
                c.transport.write(frame(payload))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        readies = []
        for i in range(args.connections):
            ready = loop.create_future()
            readies.append(ready)
            _, client = await asyncio.wait_for(
                loop.create_connection(lambda i=i, r=ready: Client(i, r), "127.0.0.1", args.port),
                10,
            )
            all_clients.append(client)
        await asyncio.wait_for(asyncio.gather(*readies), 30)
        emit({"ready": args.connections})
        line = await loop.run_in_executor(None, sys.stdin.readline)
        go = json.loads(line)
        t0, t1 = go["t0"], go["t1"]
        publishers.extend(all_clients[: args.publishers])
        for c in publishers:
            c.is_publisher = True

        def snap(name: str) -> None:
            S.snap[name] = S.delivered
            S.snap[name + "_pub"] = S.published
            S.snap[name + "_t"] = time.monotonic()

        loop.call_later(max(0.0, t0 - time.monotonic()), snap, "t0")
        loop.call_later(max(0.0, t1 - time.monotonic()), snap, "t1")
        S.running = True
        if publishers:
            pump()
        await asyncio.sleep(max(0.0, t1 - time.monotonic()) + 0.01)
        S.running = False
        # Publish replies of what is in flight (bounded), then tell the orchestrator.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and S.accepted + S.errors < S.published:
            await asyncio.sleep(0.01)
        emit({"stopped": {"published": S.published, "accepted": S.accepted}})
        line = await loop.run_in_executor(None, sys.stdin.readline)
        expect = json.loads(line)["expect"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(c.received < expect for c in all_clients):
            await asyncio.sleep(0.01)
        window = S.snap.get("t1", 0) - S.snap.get("t0", 0)
        elapsed = S.snap.get("t1_t", t1) - S.snap.get("t0_t", t0)
        result = {
            "window_delivered": window,
            "window_published": S.snap.get("t1_pub", 0) - S.snap.get("t0_pub", 0),
            "window_s": elapsed,
            "delivered": S.delivered,
            "published": S.published,
            "accepted": S.accepted,
            "min_per_conn": min(c.received for c in all_clients),
            "max_per_conn": max(c.received for c in all_clients),
            "missing": sum(max(0, expect - c.received) for c in all_clients),
            "extra": sum(max(0, c.received - expect) for c in all_clients),
            "errors": S.errors,
            "first_error": S.first_error,
            "verified": S.verified,
            "pings": S.pings,
            "closed_early": S.closed,
        }
        for c in all_clients:
            if c.transport is not None:
                c.transport.close()
        emit({"result": result})

    all_clients: list[Client] = []
    uvloop.run(main())


# ---------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------


@dataclass
class Measurement:
    impl: str
    codecs: str
    subscribers: int
    round: int
    deliveries_per_s: float = 0.0
    publications_per_s: float = 0.0
    window_delivered: int = 0
    window_s: float = 0.0
    server_cpu_s: float = 0.0
    server_user_s: float = 0.0
    server_sys_s: float = 0.0
    server_us_per_delivery: float = 0.0
    server_util: float = 0.0
    clients_util: float = 0.0
    other_util: float = 0.0
    published: int = 0
    accepted: int = 0
    missing: int = 0
    extra: int = 0
    errors: int = 0
    first_error: str = ""
    verified: int = 0
    encodes: list[int] | None = None
    encode_codecs: list[str] | None = None
    encode_once_ok: bool = False
    publications_in: int = 0
    implementation: str = ""
    failure: str = ""


def measure(
    impl: str, codecs: list[str], per_process: int, rnd: int, opt: argparse.Namespace
) -> Measurement:
    """codecs: one entry per client process (its codec)."""
    m = Measurement(impl, "+".join(sorted(set(codecs))), per_process * len(codecs), rnd)
    port = free_port()
    env = dict(os.environ)
    env.pop("RTCORE_NO_EXTENSIONS", None)
    if impl == "pure":
        env["RTCORE_NO_EXTENSIONS"] = "1"
    server = subprocess.Popen(
        [PY, __file__, "server", "--port", str(port), "--queue-max-size", str(opt.queue_max_size)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_affinity({0} if opt.pin else None),
        start_new_session=True,
    )
    clients: list[subprocess.Popen[str]] = []
    profiler: subprocess.Popen[Any] | None = None
    try:
        hello = read_json_line(server.stdout, 20, server)  # type: ignore[arg-type]
        m.implementation = f"frames={hello['frames']} fanout={hello['fanout']}"
        wait_port(port, server)
        for i, codec in enumerate(codecs):
            cmd = [
                PY,
                __file__,
                "client",
                "--port",
                str(port),
                "--codec",
                codec,
                "--connections",
                str(per_process),
                "--publishers",
                str(opt.publishers if i == 0 else 0),
                "--inflight",
                str(opt.inflight),
                "--payload-size",
                str(opt.payload_size),
                "--verify-every",
                str(opt.verify_every),
            ]
            clients.append(
                subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    preexec_fn=_affinity({1} if opt.pin else None),
                )
            )
        for c in clients:
            msg = read_json_line(c.stdout, 90, c)  # type: ignore[arg-type]
            if "ready" not in msg:
                raise RuntimeError(f"unexpected client message {msg}")
        now = time.monotonic()
        t0 = now + opt.warmup
        t1 = t0 + opt.duration
        for c in clients:
            c.stdin.write(json.dumps({"t0": t0, "t1": t1}) + "\n")  # type: ignore[union-attr]
            c.stdin.flush()  # type: ignore[union-attr]
        if opt.profile is not None:
            opt.profile.mkdir(parents=True, exist_ok=True)
            out = opt.profile / f"protocol-{impl}-{m.codecs}-{m.subscribers}-r{rnd}.txt"
            pcmd = [
                "py-spy",
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(int(opt.duration)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out),
            ]
            # --native cannot sample without pausing the process; without it, don't pause.
            pcmd.append("--native" if opt.native else "--nonblocking")
            time.sleep(max(0.0, t0 - time.monotonic()))
            profiler = subprocess.Popen(pcmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(max(0.0, t0 - time.monotonic()))
        su0, ss0 = proc_cpu_split(server.pid)
        c0 = sum(proc_cpu(c.pid) for c in clients)
        b0 = machine_busy()
        w0 = time.monotonic()
        time.sleep(max(0.0, t1 - time.monotonic()))
        su1, ss1 = proc_cpu_split(server.pid)
        c1 = sum(proc_cpu(c.pid) for c in clients)
        b1 = machine_busy()
        w1 = time.monotonic()
        stopped = [read_json_line(c.stdout, 30, c)["stopped"] for c in clients]  # type: ignore[arg-type]
        accepted = sum(s["accepted"] for s in stopped)
        for c in clients:
            c.stdin.write(json.dumps({"expect": accepted}) + "\n")  # type: ignore[union-attr]
            c.stdin.flush()  # type: ignore[union-attr]
        results = [read_json_line(c.stdout, 30, c)["result"] for c in clients]  # type: ignore[arg-type]
        server.stdin.write("stats\n")  # type: ignore[union-attr]
        server.stdin.flush()  # type: ignore[union-attr]
        stats = read_json_line(server.stdout, 10, server)["stats"]  # type: ignore[arg-type]
        wall = w1 - w0
        m.window_delivered = sum(r["window_delivered"] for r in results)
        m.window_s = statistics.mean(r["window_s"] for r in results)
        m.deliveries_per_s = m.window_delivered / m.window_s if m.window_s else 0.0
        m.publications_per_s = (
            results[0]["window_published"] / results[0]["window_s"]
            if results[0]["window_s"]
            else 0.0
        )
        m.server_user_s, m.server_sys_s = su1 - su0, ss1 - ss0
        m.server_cpu_s = m.server_user_s + m.server_sys_s
        m.server_us_per_delivery = (
            m.server_cpu_s / m.window_delivered * 1e6 if m.window_delivered else float("inf")
        )
        m.server_util = m.server_cpu_s / wall
        m.clients_util = (c1 - c0) / wall
        m.other_util = max(0.0, (b1 - b0) - m.server_cpu_s - (c1 - c0)) / wall
        m.published = sum(s["published"] for s in stopped)
        m.accepted = accepted
        m.missing = sum(r["missing"] for r in results)
        m.extra = sum(r["extra"] for r in results)
        m.errors = sum(r["errors"] for r in results)
        m.first_error = next((r["first_error"] for r in results if r["first_error"]), "")
        m.verified = sum(r["verified"] for r in results)
        m.encodes = stats["encodes"]
        m.encode_codecs = stats["codecs"]
        m.publications_in = stats["publications_in"]
        present = set(codecs)
        m.encode_once_ok = all(
            n == (accepted if name in present else 0)
            for name, n in zip(stats["codecs"], stats["encodes"], strict=False)
        )
        for c in clients:
            c.wait(10)
    except Exception as e:
        m.failure = f"{type(e).__name__}: {e}"
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait(5)
        if profiler is not None:
            try:
                profiler.wait(opt.duration + 15)
            except subprocess.TimeoutExpired:
                profiler.kill()
        if server.poll() is None:
            try:
                server.stdin.write("quit\n")  # type: ignore[union-attr]
                server.stdin.flush()  # type: ignore[union-attr]
                server.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(server)
    return m


def describe(m: Measurement) -> str:
    enc = ", ".join(
        f"{n}={e}" for n, e in zip(m.encode_codecs or [], m.encodes or [], strict=False)
    )
    line = (
        f"round {m.round} {m.impl:<8} {m.codecs:<14} subs {m.subscribers:>5}: "
        f"{m.deliveries_per_s:>10.0f} deliveries/s ({m.publications_per_s:,.0f} pubs/s)  "
        f"server {m.server_us_per_delivery:6.2f} us/delivery (util {m.server_util:4.0%})  "
        f"clients {m.clients_util:4.0%}  other {m.other_util:4.0%}  "
        f"publications {m.accepted}  hub.encodes [{enc}] encode-once {'OK' if m.encode_once_ok else 'FAIL'}  "
        f"missing {m.missing} errors {m.errors}"
    )
    if m.first_error:
        line += f"  first error: {m.first_error}"
    if m.failure:
        line += f"  FAILED: {m.failure}"
    return line


MODES = {
    "json": ["json", "json"],
    "protobuf": ["protobuf", "protobuf"],
    "mixed": ["json", "protobuf"],
}


def summarize(data: dict[str, Any]) -> str:
    def load(d: dict[str, Any]) -> Measurement:
        return Measurement(**{k: v for k, v in d.items() if k != "kind"})

    ms = [load(m) for m in data["measurements"] if m.get("kind", "throughput") == "throughput"]
    rounds = sorted({m.round for m in ms})
    by = {(m.impl, m.codecs, m.round): m for m in ms}
    lines = [
        f"Medians of {len(rounds)} rounds (min–max). {ms[0].subscribers if ms else 0} subscribers, "
        f"payload {data['options']['payload_size']} B, {data['options']['inflight']} publications in flight.\n"
    ]
    lines.append(
        "| server | clients | deliveries/s | publications/s | server µs/delivery | server core busy | clients' core busy | others | loss | encode-once |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    codec_names = {"json": "JSON", "protobuf": "Protobuf", "json+protobuf": "JSON + Protobuf"}
    for impl in ("compiled", "pure"):
        for codecs in ("json", "protobuf", "json+protobuf"):
            good = [
                by[(impl, codecs, r)]
                for r in rounds
                if (impl, codecs, r) in by and not by[(impl, codecs, r)].failure
            ]
            if not good:
                continue
            d = [m.deliveries_per_s for m in good]
            u = [m.server_us_per_delivery for m in good]
            lines.append(
                f"| rtcore {impl} | {codec_names[codecs]} | {statistics.median(d) / 1000:,.1f} k ({min(d) / 1000:,.1f}–{max(d) / 1000:,.1f}) "
                f"| {statistics.median(m.publications_per_s for m in good):,.0f} "
                f"| {statistics.median(u):.2f} ({min(u):.2f}–{max(u):.2f}) "
                f"| {statistics.median(m.server_util for m in good):.0%} | {statistics.median(m.clients_util for m in good):.0%} "
                f"| {statistics.median(m.other_util for m in good):.0%} | {sum(m.missing for m in good)} "
                f"| {'yes' if all(m.encode_once_ok for m in good) else 'NO'} |"
            )
    lines.append("")
    lines.append("Compiled against pure, ratios inside each round, median (min–max):\n")
    lines.append("| clients | deliveries/s ratio | CPU/delivery ratio (pure / compiled) |")
    lines.append("|---|---:|---:|")
    for codecs in ("json", "protobuf", "json+protobuf"):
        t, c = [], []
        for r in rounds:
            a, b = by.get(("compiled", codecs, r)), by.get(("pure", codecs, r))
            if a and b and not a.failure and not b.failure and b.deliveries_per_s:
                t.append(a.deliveries_per_s / b.deliveries_per_s)
                c.append(b.server_us_per_delivery / a.server_us_per_delivery)
        if t:
            lines.append(
                f"| {codec_names[codecs]} | {statistics.median(t):.2f}× ({min(t):.2f}–{max(t):.2f}) "
                f"| {statistics.median(c):.2f}× ({min(c):.2f}–{max(c):.2f}) |"
            )
    checks = [m for m in (load(x) for x in data["measurements"]) if m.encodes is not None]
    if checks:
        lines.append("")
        lines.append("Encode-once check (`node.hub.encodes` after the run, per codec index):\n")
        lines.append(
            "| server | clients | subscribers | publications | hub.encodes | expected | ok |"
        )
        lines.append("|---|---|---:|---:|---|---|---|")
        seen = set()
        for m in sorted(checks, key=lambda m: (m.impl, m.subscribers, m.codecs, m.round)):
            key = (m.impl, m.codecs, m.subscribers)
            if key in seen:
                continue
            seen.add(key)
            present = set(m.codecs.split("+"))
            enc = ", ".join(
                f"{n}: {e:,}" for n, e in zip(m.encode_codecs or [], m.encodes or [], strict=False)
            )
            exp = ", ".join(
                f"{n}: {m.accepted if n in present else 0:,}" for n in (m.encode_codecs or [])
            )
            lines.append(
                f"| {m.impl} | {codec_names.get(m.codecs, m.codecs)} | {m.subscribers:,} | {m.accepted:,} | {enc} | {exp} | {'yes' if m.encode_once_ok else 'NO'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "server":
        server_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        print(summarize(json.loads(Path(sys.argv[2]).read_text())))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impls", nargs="+", choices=["compiled", "pure"], default=["compiled", "pure"])
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--connections",
        type=int,
        default=50,
        help="subscriber connections per client process (2 processes)",
    )
    p.add_argument(
        "--publishers", type=int, default=1, help="publisher connections (in client process 0)"
    )
    p.add_argument("--inflight", type=int, default=32, help="publications in flight")
    p.add_argument("--payload-size", type=int, default=64)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--verify-every", type=int, default=64)
    p.add_argument("--queue-max-size", type=int, default=16 << 20)
    p.add_argument("--no-pin", dest="pin", action="store_false")
    p.add_argument(
        "--encode-check",
        action="store_true",
        help="encodes vs subscriber count (1..1000), compiled and pure",
    )
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--profile", type=Path, help="py-spy record (raw format) the server into this directory"
    )
    p.add_argument(
        "--native", action="store_true", help="with --profile: include native (Cython/C) frames"
    )
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.runs, args.warmup, args.duration, args.connections = 1, 0.5, 1.0, 5
    if args.warmup + args.duration > 20:
        p.error("warmup + duration must stay under 20 s (the server pings every 25 s)")
    if args.connections * 2 > 19000:
        p.error("too many connections for the open-files limit")
    raise_nofile_limit()
    out: list[dict[str, Any]] = []
    if args.encode_check:
        for impl in args.impls:
            for per_process, mode in (
                (1, "json"),
                (1, "mixed"),
                (5, "mixed"),
                (50, "mixed"),
                (500, "mixed"),
                (50, "protobuf"),
            ):
                m = measure(impl, MODES[mode], per_process, 0, args)
                print(describe(m), file=sys.stderr, flush=True)
                d = m.__dict__ | {"kind": "encode-check"}
                out.append(d)
    else:
        for rnd in range(args.runs):
            combos = [(impl, mode) for mode in args.modes for impl in args.impls]
            k = rnd % len(combos)
            for impl, mode in combos[k:] + combos[:k]:
                m = measure(impl, MODES[mode], args.connections, rnd, args)
                print(describe(m), file=sys.stderr, flush=True)
                out.append(m.__dict__ | {"kind": "throughput"})
    data = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "measurements": out,
    }
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    ms = [Measurement(**{k: v for k, v in d.items() if k != "kind"}) for d in out]
    bad = [m for m in ms if m.failure or m.missing or m.errors or not m.encode_once_ok]
    for m in bad:
        print("PROBLEM: " + describe(m), file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
