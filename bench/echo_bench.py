"""WebSocket echo over loopback: rtcore (compiled and pure) against picows, aiohttp, websockets.

One server process per contender (fresh for every measurement), load from
separate client processes that all run the same client: rtcore's sans-I/O
``WebSocketConnection(is_server=False)`` over a uvloop ``asyncio.Protocol``.
Every client connection keeps ``--inflight`` binary messages in flight
(pipelined: each echo received sends the next message) from the "go" signal
on; after ``--warmup`` seconds the measured window of ``--duration`` seconds
starts. Reported per measurement:

* msgs/s: echoes received by all clients inside the window / window length;
* server CPU per message: the server's user and system time from
  /proc/PID/stat, sampled at the window's start and end, divided by the echoes
  of the window (one echo = one message received and one sent by the server);
* the clients' CPU (user+sys, all client processes) and what the rest of the
  machine used meanwhile (from /proc/stat), which tells who was the bottleneck
  and how noisy the run was;
* errors: echoes that were not byte-for-byte what was sent (every
  ``--verify-every``-th echo of a connection is compared in full, every echo's
  length is checked).

Client frames are masked (RFC 6455) with a fixed key and built once per
connection from a small pool of random payloads, so the client's cost per
message is parsing one echo and appending a prepared frame; the server's work
is the same as with fresh keys.

Every round (``--runs``) measures every contender at every size, in a rotated
order, so ratios are taken between measurements of the same round; the report
gives medians over rounds. ``--pin`` (default) runs the server on CPU 0 and
the clients on CPU 1.

Examples::

    python bench/echo_bench.py --runs 3 --json /tmp/echo.json      # the full matrix
    python bench/echo_bench.py --contenders rtcore picows --sizes 64 --runs 1 --duration 2
    python bench/echo_bench.py report /tmp/echo.json --plot docs/img  # tables + plots
    python bench/echo_bench.py --smoke                                 # 1 s each, exits 1 on errors

Everything stays on 127.0.0.1; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procstat import machine_busy, proc_cpu, proc_cpu_split, raise_nofile_limit  # noqa: E402


SERVERS_DIR = HERE / "echo_servers"
PY = sys.executable

# name -> (command without the port arguments, extra environment, event loop / notes)
CONTENDERS: dict[str, tuple[list[str], dict[str, str], str]] = {
    "rtcore": ([PY, "-m", "rtcore.examples.echo", "--no-deflate"], {}, "uvloop, Cython frame core"),
    "rtcore-pure": (
        [PY, "-m", "rtcore.examples.echo", "--no-deflate"],
        {"RTCORE_NO_EXTENSIONS": "1"},
        "uvloop, pure-Python frame core",
    ),
    "picows": (
        [PY, str(SERVERS_DIR / "picows_echo.py")],
        {},
        "uvloop loop, aiofastnet transports (picows default)",
    ),
    "picows-uvloop": (
        [PY, str(SERVERS_DIR / "picows_echo.py"), "--no-aiofastnet"],
        {},
        "uvloop loop and transports",
    ),
    "aiohttp": ([PY, str(SERVERS_DIR / "aiohttp_echo.py")], {}, "uvloop"),
    "websockets": ([PY, str(SERVERS_DIR / "websockets_echo.py")], {}, "uvloop, websockets.asyncio"),
    # Another rtcore source tree (--baseline SRC, e.g. a worktree of an earlier
    # commit with its modules built in place): before/after in the same rounds.
    "rtcore-baseline": (
        [PY, "-m", "rtcore.examples.echo", "--no-deflate"],
        {},
        "uvloop, Cython frame core, from the --baseline source tree",
    ),
}
DEFAULT_CONTENDERS = ["rtcore", "rtcore-pure", "picows", "picows-uvloop", "aiohttp", "websockets"]
DEFAULT_SIZES = [64, 1024, 65536]

# The goals: rtcore (compiled) msgs/s over each contender's.
GOALS = {"picows": 1.0, "aiohttp": 2.0, "websockets": 4.0}


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# Client process
# ---------------------------------------------------------------------------


class _Stats:
    __slots__ = ("received", "errors", "verified", "closed", "snap")

    def __init__(self) -> None:
        self.received = 0
        self.errors = 0
        self.verified = 0
        self.closed = 0
        self.snap: dict[str, int] = {}


def client_main(argv: list[str]) -> None:
    import asyncio

    import uvloop

    from rtcore import frames
    from rtcore.wire.handshake import accept_key
    from rtcore.wire.websocket import WebSocketConnection

    p = argparse.ArgumentParser(prog="echo_bench.py client")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--inflight", type=int, default=8)
    p.add_argument("--verify-every", type=int, default=8)
    p.add_argument("--text", action="store_true", help="text messages (ASCII) instead of binary")
    args = p.parse_args(argv)
    raise_nofile_limit()

    OP_DATA = frames.OP_TEXT if args.text else frames.OP_BINARY
    OP_PING = frames.OP_PING
    POOL = 8  # distinct payloads per connection
    stats = _Stats()
    verify_every = max(1, args.verify_every)
    size = args.size

    def make_payloads(conn_index: int) -> list[bytes]:
        out = []
        for i in range(POOL):
            if args.text:
                body = base64.b64encode(os.urandom(size))[:size]
            else:
                body = os.urandom(size)
            # A recognisable head where it fits (connection, pool index).
            head = b"%d.%d:" % (conn_index, i)
            out.append((head + body)[:size] if size >= len(head) else body)
        return out

    class EchoClient(asyncio.Protocol):
        def __init__(self, index: int, ready: asyncio.Future[None]) -> None:
            self.index = index
            self.ready = ready
            self.transport: Any = None
            self.key = base64.b64encode(os.urandom(16)).decode()
            self.handshake = bytearray()
            self.conn: WebSocketConnection | None = None
            self.payloads = make_payloads(index)
            mask = os.urandom(4)
            self.frames = [
                frames.encode_frame(OP_DATA, pl, True, False, mask) for pl in self.payloads
            ]
            self.sent = 0
            self.received = 0
            self.running = False
            self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            transport.write(
                (
                    f"GET / HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )

        def data_received(self, data: bytes) -> None:
            conn = self.conn
            if conn is None:
                self.handshake += data
                end = self.handshake.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.handshake[:end]).decode("latin-1").split("\r\n")
                rest = bytes(self.handshake[end + 4 :])
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])
                }
                if " 101 " not in head[0] + " " or headers.get(
                    "sec-websocket-accept"
                ) != accept_key(self.key):
                    self.ready.set_exception(RuntimeError(f"handshake failed: {head[0]!r}"))
                    self.transport.close()
                    return
                if "sec-websocket-extensions" in headers:
                    self.ready.set_exception(RuntimeError("server negotiated an extension"))
                    return
                conn = self.conn = WebSocketConnection(is_server=False, max_message_size=0)
                if not self.ready.done():
                    self.ready.set_result(None)
                if not rest:
                    return
                data = rest
            events = conn.receive_data(data)
            n = self.received
            payloads = self.payloads
            for op, payload in events:
                if op == OP_DATA:
                    if len(payload) != size:
                        stats.errors += 1
                    elif n % verify_every == 0:
                        if payload == payloads[n % POOL]:
                            stats.verified += 1
                        else:
                            stats.errors += 1
                    n += 1
                elif op == OP_PING:
                    conn.pong(payload)
            got = n - self.received
            self.received = n
            stats.received += got
            conn.receive_done()
            # data_to_send() may hand back its own (empty) outbox list: never extend it.
            out = conn.data_to_send()
            if self.running and got:
                fr = self.frames
                s = self.sent
                out = out + [fr[(s + j) % POOL] for j in range(got)]
                self.sent = s + got
            if out:
                self.transport.writelines(out)
            if conn.should_close_transport:
                self.transport.close()

        def start(self) -> None:
            self.running = True
            k = args.inflight
            fr = self.frames
            self.transport.writelines([fr[j % POOL] for j in range(k)])
            self.sent = k

        def close(self) -> None:
            self.running = False
            if (
                self.conn is not None
                and self.transport is not None
                and not self.transport.is_closing()
            ):
                self.conn.close(1000)
                self.transport.writelines(self.conn.data_to_send())

        def connection_lost(self, exc: Exception | None) -> None:
            stats.closed += 1
            if not self.ready.done():
                self.ready.set_exception(exc or ConnectionError("closed during handshake"))
            if not self.done.done():
                self.done.set_result(None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clients: list[EchoClient] = []
        readies = []
        for i in range(args.connections):
            ready = loop.create_future()
            readies.append(ready)
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda i=i, r=ready: EchoClient(i, r), args.host, args.port),
                10,
            )
            clients.append(proto)
        await asyncio.wait_for(asyncio.gather(*readies), 20)
        emit({"ready": len(clients)})
        line = await loop.run_in_executor(None, sys.stdin.readline)
        go = json.loads(line)
        t0, t1 = go["t0"], go["t1"]
        for c in clients:
            c.start()

        def snap(name: str) -> None:
            stats.snap[name] = stats.received
            stats.snap[name + "_t"] = time.monotonic()  # type: ignore[assignment]

        loop.call_later(max(0.0, t0 - time.monotonic()), snap, "t0")
        loop.call_later(max(0.0, t1 - time.monotonic()), snap, "t1")
        await asyncio.sleep(max(0.0, t1 - time.monotonic()) + 0.01)
        # Stop sending, let what is in flight come back (bounded), then close.
        for c in clients:
            c.running = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(c.sent != c.received for c in clients):
            await asyncio.sleep(0.01)
        lost_in_flight = sum(c.sent - c.received for c in clients)
        for c in clients:
            c.close()
        await asyncio.wait([c.done for c in clients], timeout=3)
        for c in clients:
            if c.transport is not None and not c.transport.is_closing():
                c.transport.abort()
        window = stats.snap.get("t1", 0) - stats.snap.get("t0", 0)
        elapsed = stats.snap.get("t1_t", t1) - stats.snap.get("t0_t", t0)
        emit(
            {
                "result": {
                    "window_msgs": window,
                    "window_s": elapsed,
                    "total_msgs": stats.received,
                    "errors": stats.errors,
                    "verified": stats.verified,
                    "unanswered": lost_in_flight,
                    "per_conn_min": min(c.received for c in clients),
                    "per_conn_max": max(c.received for c in clients),
                }
            }
        )

    uvloop.run(main())


# ---------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout}s")


def read_json_line(stream: IO[str], timeout: float, proc: subprocess.Popen[Any]) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer from a client process")
        r, _, _ = select.select([stream], [], [], min(left, 0.5))
        if r:
            line = stream.readline()
            if not line:
                raise RuntimeError(f"client process ended (rc={proc.poll()})")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)


def _affinity(cpus: set[int] | None):  # type: ignore[no-untyped-def]
    if not cpus:
        return None

    def fn() -> None:
        os.sched_setaffinity(0, cpus)

    return fn


def start_server(name: str, port: int, cpus: set[int] | None) -> subprocess.Popen[Any]:
    cmd, env_extra, _ = CONTENDERS[name]
    env = dict(os.environ)
    env.pop("RTCORE_NO_EXTENSIONS", None)
    env.update(env_extra)
    proc = subprocess.Popen(
        cmd + ["--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_affinity(cpus),
        start_new_session=True,
    )
    try:
        wait_port(port, proc)
    except Exception:
        stop_process(proc)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"{name}: {err[-2000:]}") from None
    return proc


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Measurement:
    contender: str
    size: int
    round: int
    msgs_per_s: float = 0.0
    window_msgs: int = 0
    window_s: float = 0.0
    server_cpu_s: float = 0.0
    server_user_s: float = 0.0
    server_sys_s: float = 0.0
    server_us_per_msg: float = 0.0
    server_util: float = 0.0
    clients_cpu_s: float = 0.0
    clients_util: float = 0.0
    other_util: float = 0.0
    errors: int = 0
    verified: int = 0
    unanswered: int = 0
    per_conn_min: int = 0
    per_conn_max: int = 0
    profile: str = ""
    syscalls: dict[str, int] | None = None
    failure: str = ""


@dataclass
class Options:
    processes: int
    connections: int
    inflight: int
    warmup: float
    duration: float
    pin: bool
    verify_every: int
    text: bool
    profile_dir: Path | None = None
    profile_native: bool = False
    syscalls: bool = False


SYSCALL_EVENTS = [
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_readv",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_sendmsg",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_pwait",
]


def parse_perf_csv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].strip().isdigit():
            event = parts[2]
            name = (
                "all"
                if event.startswith("raw_syscalls")
                else event.split(":")[-1].replace("sys_enter_", "")
            )
            out[name] = int(parts[0])
    return out


def measure(name: str, size: int, rnd: int, opt: Options) -> Measurement:
    m = Measurement(name, size, rnd)
    port = free_port()
    server_cpus = {0} if opt.pin else None
    client_cpus = {1} if opt.pin else None
    server = start_server(name, port, server_cpus)
    clients: list[subprocess.Popen[str]] = []
    profiler: subprocess.Popen[Any] | None = None
    try:
        for _ in range(opt.processes):
            cmd = [
                PY,
                __file__,
                "client",
                "--port",
                str(port),
                "--connections",
                str(opt.connections),
                "--size",
                str(size),
                "--inflight",
                str(opt.inflight),
                "--verify-every",
                str(opt.verify_every),
            ]
            if opt.text:
                cmd.append("--text")
            clients.append(
                subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    preexec_fn=_affinity(client_cpus),
                )
            )
        for c in clients:
            msg = read_json_line(c.stdout, 30, c)  # type: ignore[arg-type]
            if "ready" not in msg:
                raise RuntimeError(f"unexpected client message {msg}")
        now = time.monotonic()
        t0 = now + opt.warmup
        t1 = t0 + opt.duration
        for c in clients:
            c.stdin.write(json.dumps({"t0": t0, "t1": t1}) + "\n")  # type: ignore[union-attr]
            c.stdin.flush()  # type: ignore[union-attr]
        if opt.profile_dir is not None:
            opt.profile_dir.mkdir(parents=True, exist_ok=True)
            out = opt.profile_dir / f"{name}-{size}-r{rnd}.txt"
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
            pcmd.append("--native" if opt.profile_native else "--nonblocking")
            time.sleep(max(0.0, t0 - time.monotonic()))
            profiler = subprocess.Popen(pcmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            m.profile = str(out)
        perf: subprocess.Popen[Any] | None = None
        perf_out = Path(f"/tmp/echo_bench_perf_{os.getpid()}_{port}.csv")
        if opt.syscalls:
            time.sleep(max(0.0, t0 - time.monotonic()))
            perf = subprocess.Popen(
                [
                    "perf",
                    "stat",
                    "-x,",
                    "-o",
                    str(perf_out),
                    "-e",
                    ",".join(SYSCALL_EVENTS),
                    "-p",
                    str(server.pid),
                    "--",
                    "sleep",
                    str(opt.duration),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        time.sleep(max(0.0, t0 - time.monotonic()))
        s_user0, s_sys0 = proc_cpu_split(server.pid)
        c0 = sum(proc_cpu(c.pid) for c in clients)
        b0 = machine_busy()
        w0 = time.monotonic()
        time.sleep(max(0.0, t1 - time.monotonic()))
        s_user1, s_sys1 = proc_cpu_split(server.pid)
        c1 = sum(proc_cpu(c.pid) for c in clients)
        b1 = machine_busy()
        w1 = time.monotonic()
        results = [read_json_line(c.stdout, 30, c)["result"] for c in clients]  # type: ignore[arg-type]
        wall = w1 - w0
        m.window_msgs = sum(r["window_msgs"] for r in results)
        m.window_s = statistics.mean(r["window_s"] for r in results)
        m.msgs_per_s = m.window_msgs / m.window_s if m.window_s > 0 else 0.0
        m.server_user_s = s_user1 - s_user0
        m.server_sys_s = s_sys1 - s_sys0
        m.server_cpu_s = m.server_user_s + m.server_sys_s
        m.server_us_per_msg = (
            m.server_cpu_s / m.window_msgs * 1e6 if m.window_msgs else float("inf")
        )
        m.server_util = m.server_cpu_s / wall
        m.clients_cpu_s = c1 - c0
        m.clients_util = m.clients_cpu_s / wall
        m.other_util = max(0.0, (b1 - b0) - m.server_cpu_s - m.clients_cpu_s) / wall
        m.errors = sum(r["errors"] for r in results)
        m.verified = sum(r["verified"] for r in results)
        m.unanswered = sum(r["unanswered"] for r in results)
        m.per_conn_min = min(r["per_conn_min"] for r in results)
        m.per_conn_max = max(r["per_conn_max"] for r in results)
        if perf is not None:
            perf.wait(opt.duration + 10)
            m.syscalls = parse_perf_csv(perf_out)
            perf_out.unlink()
        for c in clients:
            c.wait(10)
    except Exception as e:  # a failed measurement is reported, not fatal
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
        stop_process(server)
    return m


def run_matrix(
    contenders: list[str], sizes: list[int], runs: int, opt: Options
) -> list[Measurement]:
    out: list[Measurement] = []
    for rnd in range(runs):
        for size in sizes:
            k = (rnd + sizes.index(size)) % len(contenders)
            order = contenders[k:] + contenders[:k]
            for name in order:
                m = measure(name, size, rnd, opt)
                out.append(m)
                line = (
                    f"round {rnd} size {size:>6} {name:<14} "
                    f"{m.msgs_per_s:>10.0f} msgs/s  server {m.server_us_per_msg:6.2f} us/msg "
                    f"(util {m.server_util:4.0%})  clients {m.clients_util:4.0%}  other {m.other_util:4.0%}  "
                    f"errors {m.errors} verified {m.verified}"
                )
                if m.failure:
                    line += f"  FAILED: {m.failure}"
                print(line, file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def _fmt_rate(v: float) -> str:
    return f"{v / 1000:,.1f} k" if v < 1e6 else f"{v / 1e6:,.2f} M"


def _size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    ms = [Measurement(**m) for m in data["measurements"]]
    contenders = data["contenders"]
    sizes = data["sizes"]
    rounds = sorted({m.round for m in ms})
    by = {(m.contender, m.size, m.round): m for m in ms}
    table: dict[tuple[str, int], dict[str, float]] = {}
    for name in contenders:
        for size in sizes:
            good = [
                by[(name, size, r)]
                for r in rounds
                if (name, size, r) in by and not by[(name, size, r)].failure
            ]
            if not good:
                continue
            table[(name, size)] = {
                "msgs": statistics.median(m.msgs_per_s for m in good),
                "msgs_min": min(m.msgs_per_s for m in good),
                "msgs_max": max(m.msgs_per_s for m in good),
                "us": statistics.median(m.server_us_per_msg for m in good),
                "us_min": min(m.server_us_per_msg for m in good),
                "us_max": max(m.server_us_per_msg for m in good),
                "user_us": statistics.median(
                    m.server_user_s / m.window_msgs * 1e6 for m in good if m.window_msgs
                ),
                "sys_us": statistics.median(
                    m.server_sys_s / m.window_msgs * 1e6 for m in good if m.window_msgs
                ),
                "util": statistics.median(m.server_util for m in good),
                "clients": statistics.median(m.clients_util for m in good),
                "other": statistics.median(m.other_util for m in good),
                "errors": sum(m.errors for m in good),
                "verified": sum(m.verified for m in good),
                "n": len(good),
            }
    # Ratios of rtcore (compiled) to each contender, per round, then the median.
    ratios: dict[tuple[str, int], dict[str, float]] = {}
    for name in contenders:
        if name == "rtcore":
            continue
        for size in sizes:
            tput, cpu, user = [], [], []
            for r in rounds:
                a, b = by.get(("rtcore", size, r)), by.get((name, size, r))
                if a is None or b is None or a.failure or b.failure or not b.msgs_per_s:
                    continue
                tput.append(a.msgs_per_s / b.msgs_per_s)
                cpu.append(b.server_us_per_msg / a.server_us_per_msg)
                if a.server_user_s and a.window_msgs and b.window_msgs:
                    user.append(
                        (b.server_user_s / b.window_msgs) / (a.server_user_s / a.window_msgs)
                    )
            if tput:
                ratios[(name, size)] = {
                    "tput": statistics.median(tput),
                    "tput_min": min(tput),
                    "tput_max": max(tput),
                    "cpu": statistics.median(cpu),
                    "cpu_min": min(cpu),
                    "cpu_max": max(cpu),
                    "user": statistics.median(user) if user else 0.0,
                    "user_min": min(user, default=0.0),
                    "user_max": max(user, default=0.0),
                }
    return {"table": table, "ratios": ratios, "rounds": len(rounds)}


def _met(ratio: float, goal: float) -> str:
    """yes / no, or "tie" when the median is within 5% of the goal (below this machine's noise)."""
    if abs(ratio - goal) <= 0.05 * goal:
        return "tie (±5%)"
    return "yes" if ratio > goal else "no"


def markdown(data: dict[str, Any]) -> str:
    s = summarize(data)
    table, ratios = s["table"], s["ratios"]
    sizes = data["sizes"]
    lines = []
    lines.append(f"Medians of {s['rounds']} rounds (min–max in brackets).\n")
    lines.append(
        "| server | size | msgs/s | server µs/msg (user+sys) | user µs | sys µs | server core busy | clients' core busy | others |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in data["contenders"]:
        for size in sizes:
            t = table.get((name, size))
            if t is None:
                lines.append(f"| {name} | {_size_label(size)} | failed | | | | | | |")
                continue
            lines.append(
                f"| {name} | {_size_label(size)} | {_fmt_rate(t['msgs'])} ({_fmt_rate(t['msgs_min'])}–{_fmt_rate(t['msgs_max'])}) "
                f"| {t['us']:.2f} ({t['us_min']:.2f}–{t['us_max']:.2f}) | {t['user_us']:.2f} | {t['sys_us']:.2f} "
                f"| {t['util']:.0%} | {t['clients']:.0%} | {t['other']:.0%} |"
            )
    lines.append("")
    lines.append(
        "rtcore (compiled) against each contender, ratios taken inside each round, median (min–max):\n"
    )
    lines.append(
        "| vs | size | msgs/s ratio | CPU/msg ratio (theirs / rtcore's) "
        "| user CPU/msg ratio | goal | met (msgs/s) | met (CPU/msg) |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---|---|")
    for name in data["contenders"]:
        for size in sizes:
            r = ratios.get((name, size))
            if r is None:
                continue
            goal = GOALS.get(name.split("-")[0] if name.startswith("picows") else name)
            gtxt = f"≥ {goal:g}×" if goal else "—"
            met_t = _met(r["tput"], goal) if goal else ""
            met_c = _met(r["cpu"], goal) if goal else ""
            lines.append(
                f"| {name} | {_size_label(size)} | {r['tput']:.2f}× ({r['tput_min']:.2f}–{r['tput_max']:.2f}) "
                f"| {r['cpu']:.2f}× ({r['cpu_min']:.2f}–{r['cpu_max']:.2f}) "
                f"| {r['user']:.2f}× ({r['user_min']:.2f}–{r['user_max']:.2f}) "
                f"| {gtxt} | {met_t} | {met_c} |"
            )
    ms = [Measurement(**m) for m in data["measurements"]]
    with_sc = [m for m in ms if m.syscalls and m.window_msgs and not m.failure]
    if with_sc:
        lines.append("")
        lines.append(
            "Server system calls per echoed message (perf stat over the window; medians):\n"
        )
        keys = [
            "all",
            "recvfrom",
            "read",
            "write",
            "writev",
            "sendto",
            "sendmsg",
            "epoll_wait",
            "epoll_pwait",
        ]
        present = [k for k in keys if any(m.syscalls.get(k, 0) for m in with_sc)]  # type: ignore[union-attr]
        lines.append("| server | size | " + " | ".join(present) + " |")
        lines.append("|---|---|" + "---:|" * len(present))
        for name in data["contenders"]:
            for size in sizes:
                sel = [m for m in with_sc if m.contender == name and m.size == size]
                if not sel:
                    continue
                vals = [
                    statistics.median(m.syscalls.get(k, 0) / m.window_msgs for m in sel)
                    for k in present
                ]  # type: ignore[union-attr]
                lines.append(
                    f"| {name} | {_size_label(size)} | "
                    + " | ".join(f"{v:.2f}" for v in vals)
                    + " |"
                )
    errors = sum(t["errors"] for t in table.values())
    verified = sum(t["verified"] for t in table.values())
    lines.append("")
    lines.append(
        f"Echo verification: {verified:,} echoes compared byte for byte, {errors} mismatches."
    )
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(data)
    table = s["table"]
    sizes = data["sizes"]
    names = [n for n in data["contenders"] if any((n, sz) in table for sz in sizes)]
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, title, fname, ylabel in (
        (
            "msgs",
            "Echo throughput over loopback (higher is better)",
            "echo_msgs.png",
            "messages / s",
        ),
        (
            "us",
            "Server CPU per echoed message, user (solid) + system (hatched), lower is better",
            "echo_cpu.png",
            "µs of CPU / message",
        ),
    ):
        fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 4.2))
        if len(sizes) == 1:
            axes = [axes]
        for ax, size in zip(axes, sizes, strict=False):
            vals = [table.get((n, size), {}).get(key, 0.0) for n in names]
            lo = [
                v - table.get((n, size), {}).get(key + "_min", v)
                for n, v in zip(names, vals, strict=False)
            ]
            hi = [
                table.get((n, size), {}).get(key + "_max", v) - v
                for n, v in zip(names, vals, strict=False)
            ]
            colors = ["#d62728" if n.startswith("rtcore") else "#7f7f7f" for n in names]
            if key == "us":
                user = [table.get((n, size), {}).get("user_us", 0.0) for n in names]
                sysv = [table.get((n, size), {}).get("sys_us", 0.0) for n in names]
                ax.bar(range(len(names)), user, color=colors, label="user")
                ax.bar(
                    range(len(names)),
                    sysv,
                    bottom=user,
                    color=colors,
                    alpha=0.45,
                    hatch="//",
                    label="system",
                )
                bars = ax.bar(
                    range(len(names)), vals, yerr=[lo, hi], fill=False, capsize=3, linewidth=0
                )
                if ax is axes[0]:
                    ax.legend(fontsize=7, loc="upper left")
            else:
                bars = ax.bar(range(len(names)), vals, yerr=[lo, hi], color=colors, capsize=3)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
            ax.set_title(_size_label(size))
            ax.set_ylabel(ylabel if ax is axes[0] else "")
            for b, v in zip(bars, vals, strict=False):
                label = f"{v / 1000:.0f}k" if key == "msgs" else f"{v:.1f}"
                ax.annotate(
                    label,
                    (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        fig.suptitle(title + f" — median of {s['rounds']} rounds, bars show min–max")
        fig.tight_layout()
        path = outdir / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_noise(data: dict[str, Any], outdir: Path, size: int = 64) -> Path:
    """Server CPU per message against what the rest of the machine used, per measurement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = [Measurement(**m) for m in data["measurements"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "osD^v<>p*"
    for i, name in enumerate(data["contenders"]):
        pts = [
            (m.other_util * 100, m.server_us_per_msg)
            for m in ms
            if m.contender == name and m.size == size and not m.failure
        ]
        if pts:
            ax.scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                label=name,
                marker=markers[i % len(markers)],
            )
    ax.set_xlabel(
        "CPU used by other processes during the window (% of one core, 200% = both cores)"
    )
    ax.set_ylabel("server µs of CPU per message")
    ax.set_title(f"Echo {_size_label(size)}: server CPU per message vs machine noise")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / f"echo_noise_{size}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def merge(paths: list[Path]) -> dict[str, Any]:
    """Several result files as one, rounds renumbered so that each file's rounds stay distinct."""
    out: dict[str, Any] | None = None
    offset = 0
    for path in paths:
        data = json.loads(path.read_text())
        rounds = sorted({m["round"] for m in data["measurements"]})
        for m in data["measurements"]:
            m["round"] = m["round"] + offset
        offset += (max(rounds) + 1) if rounds else 0
        if out is None:
            out = data
            out["files"] = [str(path)]
        else:
            out["measurements"].extend(data["measurements"])
            out["files"].append(str(path))
            for n in data["contenders"]:
                if n not in out["contenders"]:
                    out["contenders"].append(n)
    assert out is not None
    return out


def report_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="echo_bench.py report")
    p.add_argument(
        "json", type=Path, nargs="+", help="one or more result files (their rounds are pooled)"
    )
    p.add_argument(
        "--plot", type=Path, help="directory for echo_msgs.png, echo_cpu.png, echo_noise_64.png"
    )
    args = p.parse_args(argv)
    data = merge(args.json)
    print(markdown(data))
    if args.plot:
        for path in plot(data, args.plot) + [plot_noise(data, args.plot)]:
            print(f"wrote {path}")


def profile_main(argv: list[str]) -> None:
    """Summarize py-spy raw (collapsed) stacks: self and inclusive share per function."""
    p = argparse.ArgumentParser(prog="echo_bench.py profile")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    for path in args.files:
        self_n: dict[str, int] = {}
        incl_n: dict[str, int] = {}
        total = 0
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames_ = stack.split(";")
            leaf = frames_[-1]
            self_n[leaf] = self_n.get(leaf, 0) + n
            for fr in set(frames_):
                incl_n[fr] = incl_n.get(fr, 0) + n
        print(f"## {path.name}: {total} samples\n")
        print("| function | self | inclusive |")
        print("|---|---:|---:|")
        for fr, n in sorted(self_n.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"| `{fr}` | {n / total:.1%} | {incl_n[fr] / total:.1%} |")
        print()


def versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("uvloop", "Cython", "picows", "aiofastnet", "aiohttp", "websockets", "rtcore"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "-"
    try:
        with open("/proc/cpuinfo") as f:
            out["cpu"] = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        out["cpu"] = "?"
    out["cores"] = str(os.cpu_count())
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        report_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "profile":
        profile_main(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contenders", nargs="+", default=DEFAULT_CONTENDERS, choices=list(CONTENDERS))
    p.add_argument("--sizes", nargs="+", type=int, default=DEFAULT_SIZES)
    p.add_argument("--runs", type=int, default=3, help="rounds over the whole matrix")
    p.add_argument("--processes", type=int, default=2, help="client processes")
    p.add_argument("--connections", type=int, default=50, help="connections per client process")
    p.add_argument("--inflight", type=int, default=8, help="messages in flight per connection")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--verify-every", type=int, default=8)
    p.add_argument("--text", action="store_true", help="text messages instead of binary")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU affinity")
    p.add_argument("--json", type=Path, help="write all measurements here")
    p.add_argument(
        "--profile", type=Path, help="py-spy record (raw format) the server into this directory"
    )
    p.add_argument(
        "--native", action="store_true", help="with --profile: include native (Cython/C) frames"
    )
    p.add_argument(
        "--syscalls",
        action="store_true",
        help="count the server's system calls in the window (perf stat)",
    )
    p.add_argument(
        "--smoke", action="store_true", help="rtcore and rtcore-pure, 64 B, 1 s; exit 1 on errors"
    )
    p.add_argument(
        "--baseline",
        type=Path,
        help="the src/ directory of another rtcore tree, run as contender rtcore-baseline",
    )
    args = p.parse_args()
    if "rtcore-baseline" in args.contenders:
        if args.baseline is None or not (args.baseline / "rtcore").is_dir():
            p.error("rtcore-baseline needs --baseline SRC (a directory holding rtcore/)")
        CONTENDERS["rtcore-baseline"][1]["PYTHONPATH"] = str(args.baseline.resolve())
    if args.smoke:
        args.contenders, args.sizes, args.runs = ["rtcore", "rtcore-pure"], [64], 1
        args.warmup, args.duration, args.processes, args.connections = 0.5, 1.0, 1, 10
    if args.processes * args.connections > 20000 - 100:
        p.error("too many connections for the open-files limit")
    if args.warmup + args.duration > 120:
        p.error("warmup + duration must stay under 120 s")
    if args.pin and (os.cpu_count() or 1) < 2:
        args.pin = False
    raise_nofile_limit()
    opt = Options(
        processes=args.processes,
        connections=args.connections,
        inflight=args.inflight,
        warmup=args.warmup,
        duration=args.duration,
        pin=args.pin,
        verify_every=args.verify_every,
        text=args.text,
        profile_dir=args.profile,
        profile_native=args.native,
        syscalls=args.syscalls,
    )
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    ms = run_matrix(args.contenders, args.sizes, args.runs, opt)
    data = {
        "started": started,
        "versions": versions(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in opt.__dict__.items()},
        "contenders": args.contenders,
        "notes": {n: CONTENDERS[n][2] for n in args.contenders},
        "sizes": args.sizes,
        "measurements": [m.__dict__ for m in ms],
    }
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    print(markdown(data))
    failed = [m for m in ms if m.failure]
    if any(m.errors for m in ms) or failed or (args.smoke and not all(m.window_msgs for m in ms)):
        sys.exit(1)


if __name__ == "__main__":
    main()
