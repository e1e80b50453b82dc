"""The server API publish path: publications/s through ``POST /api/publish`` and ``/api/batch``.

    python bench/api_publish.py --runs 5 --json /tmp/api.json
    python bench/api_publish.py --subscribers 0 100 1000 --modes publish batch --batch-size 50
    python bench/api_publish.py --src /tmp/before/src --src src --runs 5   # two trees, side by side
    python bench/api_publish.py --runs 0 --profile /tmp/api-prof           # cProfile of the server
    python bench/api_publish.py report /tmp/api.json                       # the markdown table
    python bench/api_publish.py --smoke --json /tmp/smoke.json             # ~5 s check, exit 1 on loss

Every measurement starts a fresh server process (``rtcore.serve``, memory
engine, one process, API key auth, history on the channel by default, no
server pings, the rest of the configuration as shipped) pinned to CPU 0.
``--subscribers`` WebSocket clients connect and subscribe to the channel
(JSON protocol, up to 1,000 per subscriber process, pinned to CPU 1): each
parses its connect and subscribe replies, then counts the publications it
receives by the mark every publication push carries, without parsing
frames, so that a process keeps up with the server. Then
``--client-processes`` publisher processes (pinned to CPU 1) each hold
``--connections`` keep-alive HTTP/1.1 connections; each connection sends one
request, waits for its whole response, checks it and sends the next (no
pipelining): ``POST /api/publish`` with one publication of
``--payload-size`` bytes of JSON data, or ``POST /api/batch`` with
``--batch-size`` publish commands. The client is a raw uvloop
``asyncio.Protocol`` writing one prepared request and finding the end of the
response from its ``Content-Length``, so it costs a few µs per request.
``--write-delay`` sets the server's ``client.write_delay`` (fan-out writes of
several loop turns coalesced).

After ``--warmup`` seconds, a window of ``--duration`` seconds is measured:
publications answered in the window / window (publications/s); the server's
user and system CPU from ``/proc/PID/stat`` over the window / those
publications (µs per publication); request latency (send to whole response)
p50 / p99; and how busy the server, the clients and the rest of the machine
were (who limited the run: a server near 100% of its core is the limit).
Each configuration runs ``--runs`` times in rotation; the summary is the
median of the runs.

Checks (exit status 1 when one fails): every request sent got a 200 whose
body holds one ``result`` per publication and no ``error``; the server's
count of publications equals what the clients were answered; every
subscriber received every publication (all of the run, warm-up included),
and none was disconnected.

``--profile DIR`` adds one run per configuration under cProfile (CPU time;
started and stopped around the window, not counted in the medians) and
prints its top functions; ``--py-spy DIR`` samples the server with py-spy
during the window instead (raw collapsed stacks; summarise them with
``python bench/echo_bench.py profile FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any


HERE = Path(__file__).resolve()
BENCH_DIR = HERE.parent
ROOT = BENCH_DIR.parent
for _path in (str(BENCH_DIR), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from histogram import bucket_index, merge, summary_ms  # noqa: E402
from procstat import ProcTree, machine_busy, proc_cpu, raise_nofile_limit  # noqa: E402


CHANNEL = "apibench"
SECRET = "api-publish-benchmark-hmac-secret-0123456789"
# Subscribers per client process of the load generator's client.
PER_SUBSCRIBER_PROCESS = 1000


# -- the server process ---------------------------------------------------------------


def server_config(args: argparse.Namespace, api_key: str) -> dict[str, Any]:
    channel: dict[str, Any] = {"allow_subscribe_for_client": True}
    if args.history_size:
        channel.update({"history_size": args.history_size, "history_ttl": "300s"})
    return {
        "client": {
            "token": {"hmac_secret_key": SECRET},
            # The subscribers read everything; a slow one would be a benchmark artefact.
            "queue_max_size": 64 << 20,
            # No pings: the subscribers count publications without parsing frames.
            "ping_interval": "0s",
            "write_delay": f"{args.write_delay}s",
        },
        "api": {"key": api_key},
        "channel": {"without_namespace": channel},
        "log": {"level": "warning"},
    }


def server_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="api_publish.py server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--config", required=True, help="JSON config mapping")
    args = p.parse_args(argv)
    raise_nofile_limit()
    import cProfile

    import uvloop

    import rtcore

    profiler: cProfile.Profile | None = None

    async def main() -> None:
        nonlocal profiler
        node = rtcore.Node(rtcore.config_from_mapping(json.loads(args.config)))
        server = await rtcore.serve(node, "127.0.0.1", args.port)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(json.dumps({"ready": os.getpid(), "rtcore": rtcore.__file__}), flush=True)
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "quit":
                break
            cmd, _, arg = line.partition(" ")
            answer: dict[str, Any]
            if cmd == "stats":
                answer = {
                    "publications": node.publications_in,
                    "clients": node.hub.num_sessions,
                    "disconnects": {str(k): v for k, v in node.disconnects.items()},
                }
            elif cmd == "profile-start":
                # CPU time, not wall time: waiting for a busy machine is not ours.
                profiler = cProfile.Profile(time.process_time)
                profiler.enable()
                answer = {"profiling": True}
            elif cmd == "profile-stop" and profiler is not None:
                profiler.disable()
                profiler.dump_stats(arg)
                profiler = None
                answer = {"profile": arg}
            else:
                answer = {"error": f"unknown command {line!r}"}
            print(json.dumps(answer), flush=True)
        await server.close(timeout=1)
        await node.close()

    uvloop.run(main())


def read_line(stream: IO[str], timeout: float) -> dict[str, Any]:
    """One JSON line from a child process, waiting at most ``timeout`` seconds."""
    import select

    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise RuntimeError(f"no answer from a child process in {timeout:.0f} s")
    line = stream.readline()
    if not line:
        raise RuntimeError("a child process exited")
    answer: dict[str, Any] = json.loads(line)
    return answer


def child_env(src: str | None) -> dict[str, str]:
    """The environment of a run's processes: its source tree first on the path.

    The clients import rtcore too (WebSocket frames, tokens, the protocol codec),
    so they run from the same tree as the server, not from whatever state the
    checkout is in.
    """
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env


class ServerProcess:
    def __init__(self, args: argparse.Namespace, src: str | None, port: int, key: str) -> None:
        env = child_env(src)
        config = json.dumps(server_config(args, key))
        cmd = [sys.executable, str(HERE), "server", "--port", str(port), "--config", config]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        if args.pin:
            os.sched_setaffinity(self.proc.pid, {args.server_cpu})
        assert self.proc.stdout is not None
        ready = read_line(self.proc.stdout, 30)
        self.pid = int(ready["ready"])
        self.module = str(ready["rtcore"])

    def ask(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return read_line(self.proc.stdout, 30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)


# -- the publisher client ---------------------------------------------------------------


def request_bytes(mode: str, key: str, batch_size: int, payload_size: int) -> tuple[bytes, int]:
    """The request every connection sends, and the publications it carries."""
    pad = max(0, payload_size - len('{"text":""}'))
    data = '{"text":"' + "x" * pad + '"}'
    publish = f'{{"channel":"{CHANNEL}","data":{data}}}'
    if mode == "publish":
        body, pubs, path = publish, 1, "/api/publish"
    else:
        body = '{"commands":[' + ",".join([f'{{"publish":{publish}}}'] * batch_size) + "]}"
        pubs, path = batch_size, "/api/batch"
    raw = body.encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw, pubs


class _ClientRun:
    """The counters of one publisher process."""

    def __init__(self, request: bytes, pubs: int, start: float, end: float, stop: float) -> None:
        self.request = request
        self.pubs = pubs
        # How a reply to one publication starts (a batch reply names the method).
        self.result = b'{"result":' if pubs == 1 else b'{"publish":{'

        self.start = start  # window start (time.monotonic)
        self.end = end  # window end
        self.stop = stop  # no request is sent after this
        self.sent = 0
        self.answered = 0
        self.window_requests = 0
        self.errors: dict[str, int] = {}
        self.hist: dict[int, int] = {}
        self.idle = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class _ApiConnection(asyncio.Protocol):
    """One keep-alive connection: a request, its whole response, the next request."""

    __slots__ = ("run", "transport", "buf", "sent_at", "closed")

    def __init__(self, run: _ClientRun) -> None:
        self.run = run
        self.transport: Any = None
        self.buf = b""
        self.sent_at = 0.0
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send(self) -> None:
        run = self.run
        if time.monotonic() >= run.stop:
            self.finish()
            return
        run.sent += 1
        self.sent_at = time.monotonic()
        self.transport.write(run.request)

    def finish(self) -> None:
        run = self.run
        run.idle += 1
        if run.idle == len(_CONNECTIONS) and not run.done.done():
            run.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.buf = buf
            return
        at = buf.find(b"Content-Length: ", 0, end)
        if at < 0:
            self.fail("response without Content-Length")
            return
        at += 16
        length = int(buf[at : buf.index(b"\r\n", at)])
        if len(buf) < end + 4 + length:
            self.buf = buf
            return
        if len(buf) > end + 4 + length:
            self.fail("bytes after the response")
            return
        self.buf = b""
        now = time.monotonic()
        run = self.run
        run.answered += 1
        body = buf[end + 4 :]
        if not buf.startswith(b"HTTP/1.1 200 "):
            run.error(buf[9:12].decode("latin-1") + " " + body[:80].decode("latin-1").strip())
        elif b'"error"' in body:
            at = body.find(b'"message":')
            run.error("200 with an error " + body[at : at + 60].decode("latin-1"))
        elif body.count(run.result) != run.pubs:
            run.error(f"200 with {body.count(run.result)} results for {run.pubs} publications")
        if run.start <= now < run.end:
            run.window_requests += 1
            idx = bucket_index(int((now - self.sent_at) * 1e6))
            run.hist[idx] = run.hist.get(idx, 0) + 1
        self.send()

    def fail(self, why: str) -> None:
        self.run.error(why)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.run.error("connection lost")
            self.finish()


_CONNECTIONS: list[_ApiConnection] = []


def client_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="api_publish.py client")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--mode", choices=("publish", "batch"), required=True)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--payload-size", type=int, default=64)
    p.add_argument("--connections", type=int, default=8)
    args = p.parse_args(argv)
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        request, pubs = request_bytes(args.mode, args.key, args.batch_size, args.payload_size)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(json.dumps({"ready": os.getpid()}), flush=True)
        line = (await asyncio.wait_for(reader.readline(), 60)).decode().split()
        if len(line) != 4 or line[0] != "go":
            return
        t0, warmup, duration = (float(x) for x in line[1:])
        run = _ClientRun(request, pubs, t0 + warmup, t0 + warmup + duration, t0 + warmup + duration)
        for _ in range(args.connections):
            _, proto = await loop.create_connection(
                lambda: _ApiConnection(run), "127.0.0.1", args.port
            )
            _CONNECTIONS.append(proto)
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        for conn in _CONNECTIONS:
            conn.send()
        try:
            await asyncio.wait_for(run.done, warmup + duration + 30)
        except TimeoutError:
            run.error("responses still missing 30 s after the end")
        for conn in _CONNECTIONS:
            conn.closed = True
            conn.transport.close()
        print(
            json.dumps(
                {
                    "sent": run.sent,
                    "answered": run.answered,
                    "publications": run.answered * pubs,
                    "window_requests": run.window_requests,
                    "window_publications": run.window_requests * pubs,
                    "errors": run.errors,
                    "hist": run.hist,
                }
            ),
            flush=True,
        )

    uvloop.run(main())


# -- the subscriber processes ------------------------------------------------------------

# How every publication push starts in the JSON protocol (the data is a JSON object
# of x's, so it cannot hold this): once subscribed, a connection counts these in
# the bytes it reads instead of parsing frames, so that a process keeps up with
# hundreds of thousands of deliveries a second.
PUB_MARK = b'"pub":{'


class _Subscriber(asyncio.Protocol):
    """One subscriber: handshake, connect + subscribe (parsed), then publications (counted)."""

    __slots__ = ("group", "transport", "state", "head", "ws", "count", "tail")

    def __init__(self, group: _SubscriberGroup) -> None:
        self.group = group
        self.transport: Any = None
        self.state = "handshake"
        self.head = b""
        self.ws: Any = None
        self.count = 0
        self.tail = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.group.handshake.request)

    def data_received(self, data: bytes) -> None:
        if self.state == "ready":
            chunk = self.tail + data
            self.count += chunk.count(PUB_MARK)
            # A mark split between two reads: keep what could start one.
            self.tail = chunk[1 - len(PUB_MARK) :]
            return
        group = self.group
        if self.state == "handshake":
            head = self.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self.head = head
                return
            why = group.handshake.check(head[:end])
            if why:
                self.fail(why)
                return
            from rtcore.frames import OP_TEXT
            from rtcore.wire.websocket import WebSocketConnection

            self.ws = WebSocketConnection(is_server=False, max_message_size=0)
            self.ws.send(OP_TEXT, group.setup)
            self.transport.writelines(self.ws.data_to_send())
            self.state = "setup"
            data = head[end + 4 :]
        from bench.loadgen.proto import EV_PUB, EV_REPLY

        for _op, payload in self.ws.receive_data(data):
            for event in group.codec.decode(payload):
                if event[0] == EV_REPLY and event[2]:
                    self.fail(f"reply {event[1]}: error {event[2]} {event[3]}")
                    return
                if event[0] == EV_REPLY and event[1] == 2:
                    self.state = "ready"
                    group.ready.add(self)
                elif event[0] == EV_PUB:
                    self.count += 1
        self.ws.receive_done()

    def fail(self, why: str) -> None:
        self.group.why[why] = self.group.why.get(why, 0) + 1
        self.state = "failed"
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == "ready":
            self.group.lost += 1
        self.state = "closed"


class _SubscriberGroup:
    def __init__(self, port: int) -> None:
        from bench.loadgen.proto import ClientCodec, Handshake
        from rtcore.auth import make_connect_token

        self.codec = ClientCodec("json")
        self.handshake = Handshake("127.0.0.1", port, "/connection/websocket", None)
        token = make_connect_token(SECRET, "subscriber")
        self.setup = self.codec.setup(token, CHANNEL, recoverable=False)
        self.ready: set[_Subscriber] = set()
        self.why: dict[str, int] = {}
        self.lost = 0


def subscribers_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="api_publish.py subscribers")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--source", default="127.0.0.1", help="local address of the connections")
    args = p.parse_args(argv)
    raise_nofile_limit()
    import socket

    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        group = _SubscriberGroup(args.port)
        conns = [_Subscriber(group) for _ in range(args.count)]
        limit = asyncio.Semaphore(100)

        async def open_one(conn: _Subscriber) -> None:
            async with limit:
                sock = socket.socket()
                sock.setblocking(False)
                sock.bind((args.source, 0))
                try:
                    await loop.sock_connect(sock, ("127.0.0.1", args.port))
                    await loop.create_connection(lambda: conn, sock=sock)
                except OSError as exc:
                    sock.close()
                    group.why[f"tcp connect: {exc}"] = group.why.get(f"tcp connect: {exc}", 0) + 1
                    return
                deadline = loop.time() + 10
                while conn.state in ("handshake", "setup") and loop.time() < deadline:
                    await asyncio.sleep(0.005)

        await asyncio.gather(*(open_one(c) for c in conns))
        failed = args.count - len(group.ready)
        print(
            json.dumps({"ready": len(group.ready), "failed": failed, "why": group.why}), flush=True
        )
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode().strip()
            if line != "stats":
                break
            counts = [c.count for c in group.ready]
            answer = {"received": sum(counts), "least": min(counts, default=0), "lost": group.lost}
            print(json.dumps(answer), flush=True)
        for conn in conns:
            if conn.transport is not None:
                conn.transport.abort()

    uvloop.run(main())


# -- one measurement --------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Subscribers:
    """The subscriber processes of a run (``api_publish.py subscribers``), pinned like the clients."""

    def __init__(self, args: argparse.Namespace, src: str | None, port: int, n: int) -> None:
        processes = max(1, math.ceil(n / PER_SUBSCRIBER_PROCESS))
        self.procs: list[subprocess.Popen[str]] = []
        try:
            for i in range(processes):
                count = n // processes + (1 if i < n % processes else 0)
                cmd = [sys.executable, str(HERE), "subscribers", "--port", str(port)]
                cmd += ["--count", str(count), "--source", f"127.0.0.{2 + i}"]
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=child_env(src),
                )
                self.procs.append(proc)
                if args.pin:
                    os.sched_setaffinity(proc.pid, {args.client_cpu})
            ready = failed = 0
            why: dict[str, int] = {}
            for proc in self.procs:
                assert proc.stdout is not None
                answer = read_line(proc.stdout, 120)
                ready += answer["ready"]
                failed += answer["failed"]
                for what, k in answer["why"].items():
                    why[what] = why.get(what, 0) + k
            if ready != n:
                raise RuntimeError(f"{ready} of {n} subscribers ready ({why})")
        except BaseException:
            self.close()
            raise

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def stats(self) -> dict[str, int]:
        """``received`` (all), ``least`` (one subscriber's fewest), ``lost`` (connections)."""
        out = {"received": 0, "least": -1, "lost": 0}
        for proc in self.procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("stats\n")
            proc.stdin.flush()
            answer = read_line(proc.stdout, 60)
            out["received"] += answer["received"]
            out["lost"] += answer["lost"]
            if out["least"] < 0 or answer["least"] < out["least"]:
                out["least"] = answer["least"]
        return out

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.write("quit\n")
                    proc.stdin.flush()
                    proc.wait(10)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait(5)


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += proc_cpu(pid)
        except OSError:
            continue
    return total


async def measure(
    args: argparse.Namespace,
    src: str | None,
    subscribers: int,
    mode: str,
    profile: str | None = None,
) -> dict[str, Any]:
    port = free_port()
    key = secrets.token_hex(16)
    server = ServerProcess(args, src, port, key)
    fleet = None
    clients: list[subprocess.Popen[str]] = []
    spy = None
    problems: list[str] = []
    try:
        if subscribers:
            fleet = Subscribers(args, src, port, subscribers)
        cmd = [
            sys.executable,
            str(HERE),
            "client",
            "--port",
            str(port),
            "--key",
            key,
            "--mode",
            mode,
            "--batch-size",
            str(args.batch_size),
            "--payload-size",
            str(args.payload_size),
            "--connections",
            str(args.connections),
        ]
        for _ in range(args.client_processes):
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env(src)
            )
            clients.append(proc)
            if args.pin:
                os.sched_setaffinity(proc.pid, {args.client_cpu})
        for proc in clients:
            assert proc.stdout is not None
            read_line(proc.stdout, 30)
        t0 = time.monotonic() + 0.3
        for proc in clients:
            assert proc.stdin is not None
            proc.stdin.write(f"go {t0} {args.warmup} {args.duration}\n")
            proc.stdin.flush()
        client_pids = [proc.pid for proc in clients] + (fleet.pids() if fleet else [])
        tree = ProcTree(server.pid)
        await asyncio.sleep(max(0.0, t0 + args.warmup - time.monotonic()))
        if profile and profile.endswith(".prof"):
            server.ask("profile-start")
        elif profile:
            spy = start_py_spy(server.pid, profile, args.duration)
        s0, c0, m0, w0 = tree.sample(), _cpu(client_pids), machine_busy(), time.monotonic()
        await asyncio.sleep(max(0.0, t0 + args.warmup + args.duration - time.monotonic()))
        s1, c1, m1, w1 = tree.sample(), _cpu(client_pids), machine_busy(), time.monotonic()
        if profile and profile.endswith(".prof"):
            server.ask(f"profile-stop {profile}")
        results = []
        for proc in clients:
            assert proc.stdout is not None
            results.append(read_line(proc.stdout, 60))
            proc.wait(10)
        if spy is not None:
            spy.wait(30)
        sent = sum(r["sent"] for r in results)
        answered = sum(r["answered"] for r in results)
        publications = sum(r["publications"] for r in results)
        window_pubs = sum(r["window_publications"] for r in results)
        errors: dict[str, int] = {}
        for r in results:
            for what, n in r["errors"].items():
                errors[what] = errors.get(what, 0) + n
        if answered != sent:
            problems.append(f"{sent - answered} of {sent} requests not answered")
        if errors:
            problems.append(f"errors: {errors}")
        stats = server.ask("stats")
        if stats["publications"] != publications:
            problems.append(
                f"the server made {stats['publications']} publications, "
                f"the clients were answered {publications}"
            )
        deliveries = {"expected": publications * subscribers, "received": 0}
        if fleet is not None:
            # The subscribers read what the server still had queued for them.
            deadline = time.monotonic() + 60
            while True:
                seen = fleet.stats()
                if seen["least"] >= publications or seen["lost"] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            deliveries["received"] = seen["received"]
            if seen["least"] != publications or seen["lost"]:
                problems.append(
                    f"subscribers received {seen['received']} of {deliveries['expected']} "
                    f"deliveries (one of them {seen['least']} of {publications}), "
                    f"{seen['lost']} disconnected ({stats['disconnects']})"
                )
        window = w1 - w0
        server_cpu = s1.cpu_s - s0.cpu_s
        per_pub = 1e6 / window_pubs if window_pubs else math.nan
        hist = merge(r["hist"] for r in results)
        latency = summary_ms(hist)
        return {
            "src": src or "",
            "rtcore": server.module,
            "subscribers": subscribers,
            "mode": mode,
            "batch_size": args.batch_size if mode == "batch" else 1,
            "connections": args.connections * args.client_processes,
            "profiled": bool(profile),
            "window_s": round(window, 3),
            "requests_sent": sent,
            "requests": answered,
            "publications": publications,
            "window_publications": window_pubs,
            "publications_per_s": round(window_pubs / window, 1),
            "server_cpu_us_per_publication": round(server_cpu * per_pub, 2),
            "server_user_us_per_publication": round((s1.user_s - s0.user_s) * per_pub, 2),
            "server_sys_us_per_publication": round((s1.sys_s - s0.sys_s) * per_pub, 2),
            "server_core_busy_pct": round(100 * server_cpu / window, 1),
            "clients_cpu_pct": round(100 * (c1 - c0) / window, 1),
            "others_cpu_pct": round(100 * ((m1 - m0) - server_cpu - (c1 - c0)) / window, 1),
            "latency_ms": latency,
            "p50_ms": latency.get("p50", math.nan),
            "p99_ms": latency.get("p99", math.nan),
            "deliveries": deliveries,
            "problems": problems,
        }
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait(5)
        if fleet is not None:
            fleet.close()
        server.stop()


def start_py_spy(pid: int, path: str, duration: float) -> subprocess.Popen[Any]:
    exe = shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--py-spy needs py-spy on PATH (pip install py-spy)")
    cmd = [exe, "record", "--pid", str(pid), "--rate", "400", "--format", "raw"]
    cmd += ["--duration", str(max(1, round(duration))), "--output", path, "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- the runs and their summary ----------------------------------------------------------

KEYS = (
    "publications_per_s",
    "server_cpu_us_per_publication",
    "server_user_us_per_publication",
    "server_sys_us_per_publication",
    "p50_ms",
    "p99_ms",
    "server_core_busy_pct",
    "clients_cpu_pct",
    "others_cpu_pct",
)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for run in runs:
        if not run["profiled"]:
            groups.setdefault((run["src"], run["subscribers"], run["mode"]), []).append(run)
    out = []
    for (src, subscribers, mode), group in groups.items():
        row: dict[str, Any] = {
            "src": src,
            "subscribers": subscribers,
            "mode": mode,
            "batch_size": group[0]["batch_size"],
            "runs": len(group),
        }
        for key in KEYS:
            values = [r[key] for r in group if not math.isnan(r[key])]
            row[key] = round(statistics.median(values), 2) if values else None
            row[key + "_range"] = [min(values), max(values)] if values else None
        out.append(row)
    return out


def print_table(summary: list[dict[str, Any]]) -> None:
    print(
        "| tree | subscribers | request | publications/s | server µs/pub (user+sys) "
        "| p50 / p99 ms | server core | clients | others |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in summary:
        request = "publish" if r["mode"] == "publish" else f"batch of {r['batch_size']}"
        lo, hi = r["publications_per_s_range"] or (0, 0)
        print(
            f"| {r['src'] or 'rtcore on the path'} | {r['subscribers']} | {request} "
            f"| {r['publications_per_s']:,.0f} ({lo:,.0f}–{hi:,.0f}) "
            f"| {r['server_cpu_us_per_publication']} ({r['server_user_us_per_publication']}"
            f"+{r['server_sys_us_per_publication']}) "
            f"| {r['p50_ms']} / {r['p99_ms']} | {r['server_core_busy_pct']:.0f}% "
            f"| {r['clients_cpu_pct']:.0f}% | {r['others_cpu_pct']:.0f}% |"
        )


def print_profile(path: str, top: int) -> None:
    import pstats

    print(f"\n== {path}: top {top} by own time", file=sys.stderr)
    pstats.Stats(path, stream=sys.stderr).sort_stats("tottime").print_stats(top)
    print(f"== {path}: top {top} by cumulative time", file=sys.stderr)
    pstats.Stats(path, stream=sys.stderr).sort_stats("cumulative").print_stats(top)


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if "model name" in ln), "")
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    sources: list[str | None] = list(args.src or [None])
    configs = [(n, mode) for n in args.subscribers for mode in args.modes]
    runs: list[dict[str, Any]] = []
    for i in range(args.runs):
        # Rotate the order so that no tree or configuration always runs first.
        order = [(src, n, mode) for src in sources for n, mode in configs]
        shift = i % len(order)
        for src, n, mode in order[shift:] + order[:shift]:
            run = await measure(args, src, n, mode)
            runs.append(run)
            report(run, i)
            if args.json:
                # What is measured so far survives a failure of a later run.
                Path(args.json).write_text(json.dumps(results(args, runs), indent=1))
    if args.profile or args.py_spy:
        directory = Path(args.profile or args.py_spy)
        directory.mkdir(parents=True, exist_ok=True)
        for k, src in enumerate(sources):
            for n, mode in configs:
                suffix = "prof" if args.profile else "txt"
                path = str(directory / f"api-{mode}-{n}-src{k}.{suffix}")
                run = await measure(args, src, n, mode, profile=path)
                runs.append(run)
                report(run, -1)
                if args.profile:
                    print_profile(path, args.top)
    return results(args, runs)


def results(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tool": "bench/api_publish.py",
        "args": {k: v for k, v in vars(args).items() if k not in ("func",)},
        "machine": machine(),
        "runs": runs,
        "summary": summarize(runs),
        "problems": [p for run in runs for p in run["problems"]],
    }


def report(run: dict[str, Any], index: int) -> None:
    tag = "profiled" if run["profiled"] else f"run {index}"
    print(
        f"{tag} src={run['src'] or '-'} subs={run['subscribers']} {run['mode']}: "
        f"{run['publications_per_s']:,.0f} pub/s, "
        f"{run['server_cpu_us_per_publication']} µs/pub "
        f"(user {run['server_user_us_per_publication']}, sys {run['server_sys_us_per_publication']}), "
        f"p50 {run['p50_ms']} ms p99 {run['p99_ms']} ms, server {run['server_core_busy_pct']}% "
        f"clients {run['clients_cpu_pct']}% others {run['others_cpu_pct']}%"
        + (f" PROBLEMS: {run['problems']}" if run["problems"] else ""),
        file=sys.stderr,
        flush=True,
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--subscribers", type=int, nargs="+", default=[0, 100, 1000])
    p.add_argument("--modes", nargs="+", choices=("publish", "batch"), default=["publish", "batch"])
    p.add_argument("--batch-size", type=int, default=50, help="publications per /api/batch")
    p.add_argument("--payload-size", type=int, default=64, help="bytes of JSON data")
    p.add_argument("--connections", type=int, default=8, help="per publisher process")
    p.add_argument("--client-processes", type=int, default=1, help="publisher processes")
    p.add_argument("--history-size", type=int, default=100, help="0: no history")
    p.add_argument("--write-delay", type=float, default=0.0, help="client.write_delay, seconds")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--src", action="append", help="run the server from this source tree")
    p.add_argument("--profile", help="directory: one extra cProfile run per configuration")
    p.add_argument("--py-spy", help="directory: one extra py-spy run per configuration")
    p.add_argument("--top", type=int, default=40, help="functions shown of a profile")
    p.add_argument("--json", help="write every run and the summary here")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--no-pin", dest="pin", action="store_false")
    p.add_argument("--smoke", action="store_true", help="a few seconds with tiny numbers")
    args = p.parse_args(argv)
    if args.smoke:
        args.subscribers, args.modes, args.batch_size = [3], ["publish", "batch"], 5
        args.connections, args.warmup, args.duration, args.runs = 2, 0.2, 0.5, 1
    if args.pin and (os.cpu_count() or 1) < 2:
        args.pin = False
    for name in ("batch_size", "connections", "client_processes"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if any(n < 0 for n in args.subscribers) or args.duration <= 0 or args.warmup < 0:
        p.error("subscribers, --warmup must not be negative; --duration must be positive")
    return args


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] == "server":
        server_main(argv[1:])
        return
    if argv and argv[0] == "client":
        client_main(argv[1:])
        return
    if argv and argv[0] == "subscribers":
        subscribers_main(argv[1:])
        return
    if argv and argv[0] == "report":
        with open(argv[1]) as f:
            print_table(json.load(f)["summary"])
        return
    args = parse_args(argv)
    raise_nofile_limit()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import uvloop

    result = uvloop.run(run_all(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))
    print_table(result["summary"])
    if result["problems"]:
        print("PROBLEMS:\n  " + "\n  ".join(result["problems"]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
