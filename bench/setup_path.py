"""Python cost of connection setup, without sockets: the server's side of
handshake + ``connect`` (HS256) + ``subscribe``, fed from memory.

    python bench/setup_path.py --connections 5000 --runs 5
    python bench/setup_path.py --src /tmp/tree-a/src --src /tmp/tree-b/src   # A/B
    python bench/setup_path.py --profile /tmp/setup.prof
    python bench/setup_path.py --instructions --src A/src --src B/src   # noise-free A/B

``bench/connect_profile.py`` measures the whole server process over real
sockets, kernel included; on a shared machine its figure moves by 10-20%
between runs (other work's cache pollution and wake-ups count in it). This
benchmark runs the same server code (the ``rtcore serve`` stack on the
memory engine: connection protocol, HTTP parser, handshake, session,
token check, subscribe with presence, join/leave and history) in one
process, on a transport that keeps what is written in memory, and times the
process's CPU: what rtcore's own code costs per connection (no system calls,
no event-loop wake-ups), to compare trees (``--src``, run by run in turn,
each in a fresh process; read the medians) and to profile (``--profile``,
cProfile of one more run). On a shared machine, pin it to a core of its own
(``taskset -c 1 python bench/setup_path.py ...``): work on the other core
still moves it (both vCPUs may share a physical core).

``--instructions`` counts instructions instead of timing: each tree runs
under valgrind's callgrind twice, with ``--batch * 3`` connections and with
``--connections`` more, and the difference divided by ``--connections`` is
the instructions one connection's setup executes (start-up, imports and the
client frames, made for the larger run in both, cancel out). Counts repeat
to about 0.2% whatever else the machine does, so a change of 1% is visible
in one run where the CPU time needs many; the hash seed is fixed for them. It is slow (about a minute per tree for 1,000
connections) and says nothing of cache misses or system calls: confirm a
gain it shows with the timed runs or ``connect_profile.py``.

Each connection is fed what a client sends (the upgrade request, then a
masked ``connect`` frame, then once connected a masked ``subscribe``),
``--batch`` connections at a time, each step fed to the whole batch
before the loop runs; replies are recognised by their ``"id"``. Client
frames are built before the clock starts. The connections stay open until
the end of the run, as in a real setup phase; the collector's policy is
the one ``rtcore serve`` installs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any


SECRET = "setup-path-benchmark-hmac-secret-0123456789abcdef"


class MemoryTransport:
    """Just enough of an asyncio transport for the server's connection protocol."""

    __slots__ = ("written", "closed", "peer", "on_write")

    def __init__(self, peer: tuple[str, int], on_write: Any) -> None:
        self.written = 0
        self.closed = False
        self.peer = peer
        self.on_write = on_write

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)
        self.on_write(self, data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def feed(protocol: Any, data: bytes) -> None:
    """Hand ``data`` to a BufferedProtocol the way the event loop does."""
    view = memoryview(data)
    while view:
        buf = protocol.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


async def one_run(args: argparse.Namespace) -> dict[str, Any]:
    import rtcore
    from rtcore.auth import make_connect_token
    from rtcore.frames import OP_TEXT
    from rtcore.server.gc_policy import install_gc_policy
    from rtcore.transports.http_connection import _Connection
    from rtcore.wire.websocket import WebSocketConnection

    config = rtcore.config_from_mapping(
        {
            "client": {"token": {"hmac_secret_key": SECRET}},
            "channel": {
                "namespaces": [
                    {
                        "name": "bench",
                        "join_leave": True,
                        "presence": True,
                        "allow_subscribe_for_client": True,
                        "history_size": 100,
                        "history_ttl": "300s",
                        "force_recovery": True,
                    }
                ]
            },
        }
    )
    node = rtcore.Node(config)
    # Listening on an ephemeral port builds the server stack as `rtcore serve`
    # does; no socket connects to it.
    server = await rtcore.serve(node, "127.0.0.1", 0)
    policy = install_gc_policy(config.gc)

    n = args.connections
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    upgrade = (
        "GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\nUser-Agent: setup-path\r\n\r\n"
    ).encode()

    def frame(payload: dict[str, Any]) -> bytes:
        ws = WebSocketConnection(is_server=False, max_message_size=0)
        ws.send(OP_TEXT, json.dumps(payload).encode())
        return b"".join(ws.data_to_send())

    # --prepare: the same client-side work whatever n (--instructions subtracts two runs).
    prepared = max(n, args.prepare)
    connects = [
        frame({"id": 1, "connect": {"token": make_connect_token(SECRET, f"user{i}")}})
        for i in range(prepared)
    ]
    subscribes = [
        frame({"id": 2, "subscribe": {"channel": f"bench:c{i % args.channels}"}})
        for i in range(prepared)
    ]

    loop = asyncio.get_running_loop()
    # transport -> (the reply it waits for, the future that ends the wait)
    waiting: dict[MemoryTransport, tuple[bytes, asyncio.Future[None]]] = {}
    failures: list[str] = []

    def on_write(transport: MemoryTransport, data: Any) -> None:
        wait = waiting.get(transport)
        if wait is None:
            return
        data = bytes(data)
        if data.find(wait[0]) >= 0:
            del waiting[transport]
            wait[1].set_result(None)
        elif b'"error"' in data or b'"disconnect"' in data:
            del waiting[transport]
            failures.append(data[:200].decode("latin-1"))
            wait[1].set_result(None)

    protocols: list[tuple[Any, MemoryTransport]] = []
    gc_time = [0.0, 0.0]

    def gc_timer(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_time[1] = time.process_time()
        else:
            gc_time[0] += time.process_time() - gc_time[1]

    gc.callbacks.insert(0, gc_timer)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    for base in range(0, n, args.batch):
        batch = range(base, min(n, base + args.batch))
        step: list[tuple[Any, MemoryTransport]] = []
        for i in batch:
            transport = MemoryTransport(("127.0.0.2", 10000 + i % 50000), on_write)
            protocol = _Connection(server)
            protocol.connection_made(transport)
            feed(protocol, upgrade)
            step.append((protocol, transport))
        for stage, frames in ((b'"id":1', connects), (b'"id":2', subscribes)):
            futures = []
            for (protocol, transport), i in zip(step, batch, strict=True):
                fut = loop.create_future()
                waiting[transport] = (stage, fut)
                futures.append(fut)
                feed(protocol, frames[i])
            await asyncio.gather(*futures)
        protocols.extend(step)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    gc.callbacks.remove(gc_timer)
    held = node.hub.num_sessions
    for protocol, transport in protocols:
        transport.closed = True
        protocol.connection_lost(None)
    await asyncio.sleep(0.1)
    await server.close(timeout=1)
    await node.close()
    if policy is not None:
        policy.uninstall()
    return {
        "connections": n,
        "held": held,
        "failed": len(failures),
        "first_failure": failures[0] if failures else "",
        "setup_us": round(cpu / n * 1e6, 2),
        "sys_us": round((after.ru_stime - usage.ru_stime) / n * 1e6, 2),
        "gc_us": round(gc_time[0] / n * 1e6, 2),
        "minor_faults": after.ru_minflt - usage.ru_minflt,
        "wall_s": round(wall, 3),
    }


def child_main(argv: list[str]) -> None:
    args = parse(argv)
    import uvloop

    print(json.dumps(uvloop.run(one_run(args))), flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--batch", type=int, default=200, help="connections set up together")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument(
        "--src",
        action="append",
        help="run from this source tree (PYTHONPATH); repeat it to compare trees, "
        "run by run in turn",
    )
    p.add_argument("--profile", help="cProfile the setup of one more run (not counted) into FILE")
    p.add_argument("--prepare", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--top", type=int, default=30, help="functions shown from the profile")
    p.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per connection under valgrind (callgrind) instead of timing",
    )
    p.add_argument(
        "--callgrind-dir",
        help="with --instructions: keep the callgrind outputs here (for callgrind_annotate)",
    )
    args = p.parse_args(argv)
    if args.connections < 1 or args.channels < 1 or args.runs < 1 or args.batch < 1:
        p.error("--connections, --channels, --batch and --runs must be >= 1")
    return args


def run_child(argv: list[str], src: str | None, profile: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    cmd = [sys.executable, os.path.abspath(__file__), "child", *argv]
    if profile:
        cmd += ["--profile", profile]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]), src=src or "")


def count_instructions(
    n: int, batch: int, channels: int, prepare: int, src: str | None, out: str
) -> int:
    """Instructions callgrind counts for a child run of ``n`` connections
    (client frames made for ``prepare``: that work is the same in both runs)."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        os.path.abspath(__file__),
        "child",
        f"--connections={n}",
        f"--channels={channels}",
        f"--batch={batch}",
        f"--prepare={prepare}",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    if proc.returncode or result.get("failed") or result.get("held") != n:
        raise SystemExit(f"setup failed under valgrind: {proc.stderr[-2000:]}")
    for line in proc.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].replace(",", "").strip())
    raise SystemExit("no instruction count in valgrind's output")


def instructions_main(args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    base = args.batch * 3
    keep = args.callgrind_dir or tempfile.mkdtemp(prefix="setup-path-cg-")
    os.makedirs(keep, exist_ok=True)
    sources: list[str | None] = list(args.src or [None])
    jobs = []
    for i, src in enumerate(sources):
        for n in (base, base + args.connections):
            out = os.path.join(keep, f"callgrind.{i}.{n}")
            jobs.append((src, n, out))
    # Two at a time: the counts do not depend on what else runs.
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(
            pool.map(
                lambda job: count_instructions(
                    job[1], args.batch, args.channels, base + args.connections, job[0], job[2]
                ),
                jobs,
            )
        )
    for i, src in enumerate(sources):
        small, large = counts[2 * i], counts[2 * i + 1]
        result: dict[str, Any] = {
            "src": src or "",
            "connections": args.connections,
            "channels": args.channels,
            "instructions_per_connection": round((large - small) / args.connections),
            "instructions": [small, large],
        }
        if args.callgrind_dir:
            result["callgrind"] = [job[2] for job in jobs[2 * i : 2 * i + 2]]
        print(json.dumps(result), flush=True)
    if not args.callgrind_dir:
        shutil.rmtree(keep, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child_main(sys.argv[2:])
        return
    args = parse(sys.argv[1:])
    if args.instructions:
        instructions_main(args)
        return
    child_argv = [
        f"--connections={args.connections}",
        f"--channels={args.channels}",
        f"--batch={args.batch}",
    ]
    sources: list[str | None] = list(args.src or [None])
    results = []
    for _ in range(args.runs):
        for src in sources:
            result = run_child(child_argv, src)
            print(json.dumps(result), file=sys.stderr, flush=True)
            if result["failed"] or result["held"] != args.connections:
                raise SystemExit(f"setup failed: {result}")
            results.append(result)
    for src in sources:
        mine = [r["setup_us"] for r in results if r["src"] == (src or "")]
        print(
            json.dumps(
                {
                    "src": src or "",
                    "connections": args.connections,
                    "channels": args.channels,
                    "runs": len(mine),
                    "setup_us_median": statistics.median(mine),
                    "setup_us_all": mine,
                }
            ),
            flush=True,
        )
    if args.profile:
        run_child(child_argv, sources[0], args.profile)
        import pstats

        pstats.Stats(args.profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
