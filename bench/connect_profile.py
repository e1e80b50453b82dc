"""Connection setup cost: server CPU per connection for handshake + connect + subscribe.

    python bench/connect_profile.py --connections 5000 --channels 1 --runs 5
    python bench/connect_profile.py --connections 3000 --profile /tmp/connect.prof
    python bench/connect_profile.py --server picows --connections 5000   # bare handshake

Every run starts a fresh server process (memory engine, uvloop, one
namespace ``bench`` with join/leave, presence and history by default) and
opens ``--connections`` WebSocket connections from this process over
loopback, ``--concurrency`` of them being set up at a time. Each connection
does what an SDK does: the upgrade request, ``connect`` with an HS256 token
(one user per connection), then, once connected, ``subscribe`` to one of
``--channels`` channels (JSON). The server's CPU time (user + system, from
``/proc/<pid>/stat``) is read before the first connection and after the last
subscribe reply plus a short settle, minus the server's idle rate measured
just before; divided by the number of connections that is the *setup cost*.
The connections are then closed at once and the *teardown cost* is measured
the same way, until the server reports no client left.

``--server picows`` runs a bare picows server (handshake only, its default
transports) with the same client doing the handshake only: the floor the
issue compares against. ``--profile FILE`` runs the rtcore server under
cProfile for the setup phase of the first run only and prints the top
functions (the profiler roughly doubles the cost, so its runs are not
reported as measurements). ``--pure`` sets ``RTCORE_NO_EXTENSIONS=1`` for
the server.

The output is one line per run on stderr and a JSON summary (medians) on
stdout. No run opens more files than the process limit allows (raised soft
to hard); a run above it is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import IO, Any


SECRET = "connect-profile-benchmark-hmac-secret-0123456789"
HERE = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(HERE))

from procstat import proc_cpu as cpu_seconds, proc_cpu_split, raise_nofile_limit  # noqa: E402


# -- the server processes --------------------------------------------------------


def server_config(args: argparse.Namespace) -> dict[str, Any]:
    namespace: dict[str, Any] = {
        "name": "bench",
        "join_leave": not args.no_join_leave,
        "presence": not args.no_presence,
        "allow_subscribe_for_client": True,
        "allow_presence_for_subscriber": True,
        "allow_history_for_subscriber": True,
    }
    if not args.no_history:
        namespace.update({"history_size": 100, "history_ttl": "300s", "force_recovery": True})
    return {
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {"namespaces": [namespace]},
    }


def rtcore_server_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="connect_profile.py rtcore-server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--config", required=True, help="JSON config mapping")
    p.add_argument("--redis", help="Redis engine at this URL (default: memory engine)")
    args = p.parse_args(argv)
    raise_nofile_limit()
    import cProfile

    import uvloop

    import rtcore

    profiler: cProfile.Profile | None = None

    async def main() -> None:
        nonlocal profiler
        config = rtcore.config_from_mapping(json.loads(args.config))
        prefix = f"connect-profile-{os.getpid()}"
        if args.redis:
            from rtcore.backends.redis import create_redis_engine

            # A key prefix of its own, deleted at the end: the server is shared.
            broker, presence = create_redis_engine([args.redis], prefix)
            node = rtcore.Node(config, broker=broker, presence_manager=presence)
        else:
            node = rtcore.Node(config)
        server = await rtcore.serve(node, "127.0.0.1", args.port)
        try:  # as `rtcore serve` does (older trees have no policy)
            from rtcore.server.gc_policy import install_gc_policy
        except ImportError:
            pass
        else:
            install_gc_policy(config.gc)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(json.dumps({"ready": os.getpid()}), flush=True)
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "quit":
                break
            cmd, _, arg = line.partition(" ")
            if cmd == "stats":
                answer: dict[str, Any] = {
                    "clients": node.hub.num_sessions,
                    "subscriptions": node.hub.num_subscriptions,
                    "tasks": len(node._tasks),
                    "connections": server.connections,
                    "disconnects": {str(k): v for k, v in node.disconnects.items()},
                }
            elif cmd == "profile-start":
                # CPU time, not wall time: on a loaded machine a syscall that
                # wakes the client often costs a reschedule, which is not ours.
                profiler = cProfile.Profile(time.process_time)
                profiler.enable()
                answer = {"profiling": True}
            elif cmd == "profile-stop":
                assert profiler is not None
                profiler.disable()
                profiler.dump_stats(arg)
                profiler = None
                answer = {"profile": arg}
            else:
                answer = {"error": f"unknown command {cmd!r}"}
            print(json.dumps(answer), flush=True)
        await server.close(timeout=1)
        await node.close()
        if args.redis:
            import redis

            client = redis.Redis.from_url(args.redis)
            for key in client.scan_iter(f"{prefix}*", count=1000):
                client.delete(key)

    uvloop.run(main())


def picows_server_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="connect_profile.py picows-server")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    raise_nofile_limit()
    import uvloop
    from picows import WSListener, ws_create_server

    class Bare(WSListener):  # type: ignore[misc]
        pass

    async def main() -> None:
        server = await ws_create_server(lambda request: Bare(), "127.0.0.1", args.port)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(json.dumps({"ready": os.getpid()}), flush=True)
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "quit":
                break
            print(json.dumps({"clients": 0}), flush=True)
        server.close()

    uvloop.run(main())


# -- the client -------------------------------------------------------------------


class _Client(asyncio.Protocol):
    """One connection: handshake, connect, subscribe; then idle, answering pings."""

    __slots__ = ("run", "index", "transport", "buf", "state", "conn", "done", "lost")

    def __init__(self, run: _ClientRun, index: int) -> None:
        self.run = run
        self.index = index
        self.transport: Any = None
        self.buf = bytearray()
        self.state = 0  # 0 handshake, 1 connecting, 2 subscribing, 3 ready
        self.conn: Any = None
        self.done = run.loop.create_future()
        self.lost = run.loop.create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.transport.write(self.run.upgrade)

    def data_received(self, data: bytes) -> None:
        run = self.run
        if self.state == 0:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self._fail(f"handshake refused: {bytes(self.buf[:40])!r}")
                return
            rest = bytes(self.buf[end + 4 :])
            self.buf = bytearray()
            self.conn = run.WebSocketConnection(is_server=False, max_message_size=0)
            if run.handshake_only:
                self.state = 3
                self.done.set_result(None)
                return
            self.state = 1
            self._send(run.connect_frame(self.index))
            if not rest:
                return
            data = rest
        events = self.conn.receive_data(data)
        for op, payload in events:
            if op == run.OP_PING:
                self.conn.pong(payload)
                continue
            if op != run.OP_TEXT:
                continue
            for line in payload.split(b"\n"):
                if line == b"{}":
                    self.conn.send(run.OP_TEXT, b"{}")
                elif b'"error"' in line:
                    self._fail(f"error reply: {line[:200]!r}")
                    return
                elif self.state == 1 and line.startswith(b'{"id":1'):
                    self.state = 2
                    self.conn.send(run.OP_TEXT, run.subscribe_frame(self.index))
                elif self.state == 2 and line.startswith(b'{"id":2'):
                    self.state = 3
                    self.done.set_result(None)
        self.conn.receive_done()
        out = self.conn.data_to_send()
        if out:
            self.transport.writelines(out)

    def _send(self, payload: bytes) -> None:
        self.conn.send(self.run.OP_TEXT, payload)
        self.transport.writelines(self.conn.data_to_send())

    def _fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            stage = ("handshake", "connect", "subscribe")[self.state] if self.state < 3 else ""
            close = ""
            if self.conn is not None and self.conn.close_code_received is not None:
                close = f" with close {self.conn.close_code_received}"
            self.done.set_exception(
                exc or ConnectionError(f"closed by the server during {stage}{close}")
            )
        if not self.lost.done():
            self.lost.set_result(None)


class _ClientRun:
    def __init__(self, args: argparse.Namespace, port: int, handshake_only: bool) -> None:
        from rtcore.auth import make_connect_token
        from rtcore.frames import OP_PING, OP_TEXT
        from rtcore.wire.websocket import WebSocketConnection

        self.loop = asyncio.get_running_loop()
        self.OP_PING = OP_PING
        self.OP_TEXT = OP_TEXT
        self.WebSocketConnection = WebSocketConnection
        self.handshake_only = handshake_only
        self.port = port
        # Why connections failed, with counts.
        self.failures: dict[str, int] = {}
        self.channels = args.channels
        key = base64.b64encode(os.urandom(16)).decode()
        self.upgrade = (
            f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nUser-Agent: connect-profile\r\n\r\n"
        ).encode()
        self.tokens = (
            []
            if handshake_only
            else [make_connect_token(SECRET, f"user{i}") for i in range(args.connections)]
        )

    def connect_frame(self, index: int) -> bytes:
        return json.dumps({"id": 1, "connect": {"token": self.tokens[index]}}).encode()

    def subscribe_frame(self, index: int) -> bytes:
        channel = f"bench:c{index % self.channels}"
        return json.dumps({"id": 2, "subscribe": {"channel": channel}}).encode()


async def open_connections(args: argparse.Namespace, run: _ClientRun) -> list[_Client]:
    loop = run.loop
    port = run.port
    sem = asyncio.Semaphore(args.concurrency)
    clients: list[_Client] = []

    async def one(i: int) -> None:
        async with sem:
            try:
                _, proto = await loop.create_connection(lambda: _Client(run, i), "127.0.0.1", port)
                clients.append(proto)
                await asyncio.wait_for(proto.done, 30)
            except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                why = f"{type(exc).__name__}: {exc}"[:120]
                run.failures[why] = run.failures.get(why, 0) + 1

    await asyncio.gather(*(one(i) for i in range(args.connections)))
    if run.failures:
        print(json.dumps({"failures": run.failures}), file=sys.stderr, flush=True)
    return [c for c in clients if c.state == 3 and not c.lost.done()]


# -- orchestration ----------------------------------------------------------------


def _cpu_list(text: str) -> set[int]:
    return {int(cpu) for cpu in text.split(",")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_line(stream: IO[str], timeout: float) -> dict[str, Any]:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise TimeoutError("the server did not answer")
    line = stream.readline()
    if not line:
        raise RuntimeError("the server exited")
    return dict(json.loads(line))


class ServerProcess:
    def __init__(self, args: argparse.Namespace, src: str | None) -> None:
        self.port = free_port()
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        if args.pure:
            env["RTCORE_NO_EXTENSIONS"] = "1"
        if args.server == "picows":
            cmd = [sys.executable, HERE, "picows-server", "--port", str(self.port)]
        else:
            cfg = json.dumps(server_config(args))
            cmd = [sys.executable, HERE, "rtcore-server", "--port", str(self.port), "--config", cfg]
            if args.redis:
                cmd += ["--redis", args.redis]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        self.pid = int(read_line(self.proc.stdout, 30)["ready"])
        if args.server_cpus:
            os.sched_setaffinity(self.pid, args.server_cpus)

    def ask(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return read_line(self.proc.stdout, 60)

    def stop(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


async def idle_rate(pid: int, seconds: float = 0.5) -> float:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


async def one_run(args: argparse.Namespace, index: int, src: str | None) -> dict[str, Any]:
    server = ServerProcess(args, src)
    handshake_only = args.server == "picows"
    profile = args.profile if args.profile and index == 0 and not handshake_only else None
    try:
        await asyncio.sleep(0.3)
        idle = await idle_rate(server.pid)
        if profile:
            server.ask("profile-start")
        run = _ClientRun(args, server.port, handshake_only)
        spy = start_py_spy(args, server.pid) if index == 0 and args.py_spy else None
        u0, s0 = proc_cpu_split(server.pid)
        c0, t0 = u0 + s0, time.monotonic()
        clients = await open_connections(args, run)
        setup_wall = time.monotonic() - t0
        await asyncio.sleep(args.settle)
        u1, s1 = proc_cpu_split(server.pid)
        c1, t1 = u1 + s1, time.monotonic()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        if profile:
            server.ask(f"profile-stop {profile}")
        setup = (c1 - c0 - idle * (t1 - t0)) / len(clients)
        stats = server.ask("stats")
        # Teardown: every client closes its TCP connection at once (no close frame).
        c2, t2 = cpu_seconds(server.pid), time.monotonic()
        for c in clients:
            c.transport.abort()
        await asyncio.wait([c.lost for c in clients], timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.ask("stats").get("clients"):
            await asyncio.sleep(0.05)
        await asyncio.sleep(args.settle)
        c3, t3 = cpu_seconds(server.pid), time.monotonic()
        teardown = (c3 - c2 - idle * (t3 - t2)) / len(clients)
    finally:
        server.stop()
    result = {
        "server": args.server + ("-pure" if args.pure else "") + ("-redis" if args.redis else ""),
        "src": src or "",
        "connections": len(clients),
        "channels": args.channels,
        "setup_us": round(setup * 1e6, 1),
        # The kernel's share (system time, idle not subtracted): sockets, not Python.
        "setup_sys_us": round((s1 - s0) / len(clients) * 1e6, 1),
        "teardown_us": round(teardown * 1e6, 1),
        "setup_wall_s": round(setup_wall, 3),
        "connects_per_s": round(len(clients) / setup_wall),
        "idle_cpu": round(idle, 4),
        "held": stats.get("clients"),
        "failed": sum(run.failures.values()),
    }
    print(json.dumps(result), file=sys.stderr, flush=True)
    if profile:
        print_profile(profile, args.top)
    if index == 0 and args.py_spy:
        summarize_py_spy(args.py_spy, args.top)
    return result


def start_py_spy(args: argparse.Namespace, pid: int) -> subprocess.Popen[Any]:
    """py-spy sampling the server (raw collapsed stacks), without pausing it."""
    exe = shutil.which("py-spy") or args.py_spy_bin
    if not exe:
        raise SystemExit("py-spy not found (pip install py-spy, or --py-spy-bin PATH)")
    cmd = [exe, "record", "-p", str(pid), "-f", "raw", "-o", args.py_spy, "-r", "400"]
    proc = subprocess.Popen([*cmd, "--nonblocking"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the first connection
    return proc


def summarize_py_spy(path: str, top: int) -> None:
    """Self time by function and by module from py-spy's collapsed stacks."""
    by_function: dict[str, int] = {}
    by_module: dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            leaf = stack.rsplit(";", 1)[-1]
            total += n
            by_function[leaf] = by_function.get(leaf, 0) + n
            module = leaf.partition("(")[2].partition(":")[0] or leaf
            by_module[module] = by_module.get(module, 0) + n
    for title, table in (("module", by_module), ("function", by_function)):
        print(f"-- py-spy self time by {title} ({total} samples)", file=sys.stderr)
        for name, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            print(f"{100 * n / total:5.1f}%  {name}", file=sys.stderr)


def print_profile(path: str, top: int) -> None:
    import pstats

    st = pstats.Stats(path, stream=sys.stderr)
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "rtcore-server":
        rtcore_server_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "picows-server":
        picows_server_main(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", choices=("rtcore", "picows"), default="rtcore")
    p.add_argument("--connections", type=int, default=3000)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=200, help="setups in progress at once")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--settle", type=float, default=0.5, help="seconds after each phase")
    p.add_argument("--pure", action="store_true", help="RTCORE_NO_EXTENSIONS=1 for the server")
    p.add_argument(
        "--redis",
        metavar="URL",
        help="the Redis engine at URL (e.g. redis://127.0.0.1:6379/0; keys under a "
        "prefix of the server's own, deleted at its end) instead of the memory engine",
    )
    p.add_argument("--no-join-leave", action="store_true")
    p.add_argument("--no-presence", action="store_true")
    p.add_argument("--no-history", action="store_true")
    p.add_argument(
        "--src",
        action="append",
        help="run the server from this source tree (PYTHONPATH); repeat it to compare "
        "trees, run by run in turn",
    )
    p.add_argument("--profile", help="cProfile the setup phase of the first run into FILE")
    p.add_argument("--py-spy", help="py-spy the setup phase of the first run into FILE (raw)")
    p.add_argument("--py-spy-bin", help="the py-spy executable when it is not on PATH")
    p.add_argument("--top", type=int, default=40, help="functions shown from the profile")
    p.add_argument(
        "--server-cpus",
        type=_cpu_list,
        help="pin the server to these CPUs (e.g. 1 or 0,1); --client-cpus likewise: on a "
        "shared machine, a core of the server's own keeps other work out of its caches",
    )
    p.add_argument("--client-cpus", type=_cpu_list, help="pin this (client) process")
    args = p.parse_args()
    if args.client_cpus:
        os.sched_setaffinity(0, args.client_cpus)
    limit = raise_nofile_limit()
    if args.connections + 100 > limit:
        p.error(f"--connections above this process's open-files limit ({limit})")
    if args.connections < 1 or args.channels < 1 or args.runs < 1:
        p.error("--connections, --channels and --runs must be >= 1")
    import uvloop

    sources: list[str | None] = list(args.src or [None])

    async def runs() -> list[dict[str, Any]]:
        return [
            await one_run(args, i * len(sources) + k, src)
            for i in range(args.runs)
            for k, src in enumerate(sources)
        ]

    results = uvloop.run(runs())
    if args.profile and len(results) > 1:
        results = results[1:]
    for src in sources:
        measured = [r for r in results if r["src"] == (src or "")]
        summary = {key: measured[0][key] for key in ("server", "src", "connections", "channels")}
        summary |= {
            "runs": len(measured),
            "setup_us_median": statistics.median(r["setup_us"] for r in measured),
            "teardown_us_median": statistics.median(r["teardown_us"] for r in measured),
            "connects_per_s_median": statistics.median(r["connects_per_s"] for r in measured),
            "setup_us_all": [r["setup_us"] for r in measured],
            "setup_sys_us_median": statistics.median(r["setup_sys_us"] for r in measured),
        }
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
