"""Fan-out load scenario: one server process, N client processes, loopback only.

Starts a server (rtcore by default; ``--server`` picks a comparison server
from ``bench/compare_servers/``), opens ``--subscribers`` WebSocket
connections from client processes of at most ``--per-client`` connections
each (every process binds its own 127.0.0.x source address), subscribes them
all to one channel, has the server publish at ``--rate`` publications per
second (0: as fast as the clients drain) for ``--duration`` seconds, and
reports:

* deliveries per second (in-order publications counted by the clients,
  from the first publish to the last receive),
* publish-to-receive latency p50 / p99 / max (the publication carries its
  CLOCK_MONOTONIC publish time),
* loss: publications published times subscribers, minus what was counted
  (every connection counts its own publications; gaps and duplicates are
  reported too),
* the server's user and system CPU time per delivery, from /proc/PID/stat,
  between the first publish and the last receive.

``--write-delay`` runs the rtcore server with flush rounds that wait that
many seconds after their first message (client message batching; several
values run side by side). ``--versus SERVER`` (default picows) adds the
ratios of every server's CPU per delivery to that server's, round by round.

``--impl compiled`` / ``pure`` runs the rtcore server with or without its
compiled modules (``RTCORE_NO_EXTENSIONS=1`` in the server's environment);
``--impl both`` alternates them inside every run so that the reported ratios
come from measurements taken side by side.

Examples::

    python bench/fanout_load.py --smoke                   # CI: exits 1 on any loss
    python bench/fanout_load.py --subscribers 1000 5000 10000 --impl both --runs 3
    python bench/fanout_load.py --subscribers 10000 --payload-size 1024 --rate 0
    python bench/fanout_load.py --server websockets --subscribers 5000
    python bench/fanout_load.py --server rtcore picows --subscribers 10000 --rate 50 \
        --duration 2 --runs 5                             # CPU per delivery beside picows
    python bench/fanout_load.py --impl compiled --subscribers 1000 --rate 500 \
        --write-delay 0 0.005 0.02                        # client message batching curve

Every run is bounded: publications by ``--count`` and ``--duration``, connect,
publish and drain phases by timeouts; all traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from histogram import percentiles  # noqa: E402
from procstat import proc_cpu_split  # noqa: E402


# name -> (script, client protocol, extra server arguments)
SERVERS: dict[str, tuple[Path, str, list[str]]] = {
    "rtcore": (HERE / "fanout_load_server.py", "centrifuge", []),
    # rtcore from another source tree (--ref-src): a before/after in one run.
    "rtcore-ref": (HERE / "fanout_load_server.py", "centrifuge", []),
    "websockets": (HERE / "compare_servers" / "websockets_server.py", "raw", []),
    "picows": (HERE / "compare_servers" / "picows_server.py", "raw", []),
    "picows-uvloop": (HERE / "compare_servers" / "picows_server.py", "raw", ["--no-aiofastnet"]),
    "socketio": (HERE / "compare_servers" / "socketio_server.py", "socketio", []),
}
CLIENT = HERE / "fanout_load_client.py"


class LoadError(RuntimeError):
    """A run could not be carried out (a process failed or timed out)."""


# -- small process helpers ------------------------------------------------------------


def free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_PENDING: dict[int, bytes] = {}


def read_json(proc: subprocess.Popen[bytes], timeout: float, what: str) -> dict[str, Any]:
    """The next JSON line printed by ``proc`` within ``timeout`` seconds.

    Reads the pipe with ``os.read`` and keeps what follows the line for the
    next call: a buffered ``readline`` can swallow two lines at once, after
    which ``select`` never reports the second one.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while True:
        buf = _PENDING.get(fd, b"")
        end = buf.find(b"\n")
        if end >= 0:
            line, _PENDING[fd] = buf[: end + 1], buf[end + 1 :]
            try:
                return dict(json.loads(line))
            except ValueError:
                continue  # stray output (e.g. a library's print)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LoadError(f"timed out after {timeout:.0f}s waiting for {what}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            _PENDING.pop(fd, None)
            raise LoadError(f"{what}: process exited with {proc.wait()}")
        _PENDING[fd] = buf + chunk


def send(proc: subprocess.Popen[bytes], obj: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(obj) + "\n").encode())
    proc.stdin.flush()


def total_cpu(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds summed over ``pids`` (every worker process of a server)."""
    times = [proc_cpu_split(pid) for pid in pids]
    return sum(t[0] for t in times), sum(t[1] for t in times)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        try:
            send(proc, {"quit": True})
            proc.stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if proc.stdout is not None and not proc.stdout.closed:
        _PENDING.pop(proc.stdout.fileno(), None)
    for stream in (proc.stdout, proc.stdin):
        if stream is not None and not stream.closed:
            stream.close()


# -- results --------------------------------------------------------------------------


@dataclass
class Result:
    server: str
    impl: str
    subscribers: int
    payload: int
    rate: float
    run: int
    engine: str = "memory"
    shards: int = 1
    workers: int = 1
    # rtcore's flush-round delay in seconds (client message batching; 0: off).
    write_delay: float = 0.0
    asked: int = 0
    published: int = 0
    # Achieved publications per second (first to last publish) and how far
    # behind the fixed-rate schedule the server's publisher fell.
    pub_rate: float = 0.0
    max_lag_ms: float = 0.0
    expected: int = 0
    deliveries: int = 0
    loss: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    closed: int = 0
    seconds: float = 0.0
    deliveries_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    server_user_s: float = 0.0
    server_sys_s: float = 0.0
    user_us_per_delivery: float = 0.0
    sys_us_per_delivery: float = 0.0
    connect_s: float = 0.0
    # Server CPU use while idle with every client connected (before publishing).
    idle_cpu_pct: float = 0.0
    # With --perf: the share of the server's CPU samples taken in user mode
    # during the publish phase, and that share of its total CPU per delivery.
    perf_user_share: float = 0.0
    perf_user_us_per_delivery: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)


# -- one run ------------------------------------------------------------------------------


def is_rtcore(server: str) -> bool:
    return server in ("rtcore", "rtcore-ref")


def server_env(impl: str, secret: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTCORE_")}
    env["RTCORE_BENCH_SECRET"] = secret
    if impl == "pure":
        env["RTCORE_NO_EXTENSIONS"] = "1"
    else:
        env["RTCORE_REQUIRE_EXTENSIONS"] = "1"
    return env


def run_once(
    args: argparse.Namespace,
    server: str,
    impl: str,
    subscribers: int,
    payload: int,
    run: int,
    write_delay: float = 0.0,
) -> Result:
    script, protocol, extra = SERVERS[server]
    host = "127.0.0.1"
    port = free_port(host)
    secret = secrets.token_hex(16)
    result = Result(
        server, impl if is_rtcore(server) else "-", subscribers, payload, args.rate, run
    )
    server_cmd = [
        sys.executable,
        str(script),
        "--host",
        host,
        "--port",
        str(port),
        "--channel",
        args.channel,
        *extra,
    ]
    workers = args.workers if is_rtcore(server) else 1
    if is_rtcore(server):
        server_cmd += ["--auth", args.auth, "--engine", args.engine]
        if write_delay:
            result.write_delay = write_delay
            server_cmd += ["--write-delay", str(write_delay)]
        if args.engine == "redis":
            result.engine, result.shards = "redis", len(args.redis_urls)
            prefix = f"rtbench-{secrets.token_hex(4)}"
            server_cmd += ["--redis-prefix", prefix]
            for url in args.redis_urls:
                server_cmd += ["--redis-url", url]
        if workers > 1:
            server_cmd += ["--reuse-port"]
    result.workers = workers
    errlog = tempfile.TemporaryFile()
    srvs: list[subprocess.Popen[bytes]] = []
    for index in range(workers):
        env = server_env(impl, secret)
        if server == "rtcore-ref":
            env["PYTHONPATH"] = str(args.ref_src)
        if workers > 1:
            env["RTCORE_WORKER_INDEX"] = str(index)
        srvs.append(
            subprocess.Popen(
                server_cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errlog,
                env=env,
            )
        )
    srv = srvs[0]  # the publisher; with several workers, the others receive through Redis
    clients: list[subprocess.Popen[bytes]] = []
    try:
        for proc in srvs:
            while True:
                line = read_json(proc, 60, "the server to listen")
                if "implementation" in line:
                    got = line["implementation"]["fanout"]
                    want = "python" if impl == "pure" else "cython"
                    if got != want:
                        raise LoadError(f"server runs the {got} fan-out, {want} was asked for")
                if "listening" in line:
                    break
        nproc = max(1, math.ceil(subscribers / args.per_client))
        share = [subscribers // nproc + (1 if i < subscribers % nproc else 0) for i in range(nproc)]
        token: list[str] = []
        if is_rtcore(server) and args.auth == "token":
            from rtcore.auth import make_connect_token

            token = ["--token", make_connect_token(secret, "bench-user", ttl=3600)]
        t0 = time.monotonic()
        for i, n in enumerate(share):
            clients.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(CLIENT),
                        "--host",
                        host,
                        "--port",
                        str(port),
                        "--source",
                        f"127.0.0.{10 + i}",
                        "--connections",
                        str(n),
                        "--channel",
                        args.channel,
                        "--protocol",
                        protocol,
                        *token,
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            )
        ready = 0
        for c in clients:
            line = read_json(c, args.connect_timeout, "clients to subscribe")
            ready += int(line["ready"])
            for k, v in line.get("errors", {}).items():
                result.errors[k] = result.errors.get(k, 0) + v
        result.connect_s = round(time.monotonic() - t0, 2)
        counted = 0
        for proc in srvs:
            send(proc, {"stats": True})
            stats = read_json(proc, 30, "server stats")
            counted += int(stats["subscribers"])
            for code, n in stats.get("disconnects", {}).items():
                key = f"server disconnect {code} before publishing"
                result.errors[key] = result.errors.get(key, 0) + n
        if ready != subscribers or counted != subscribers:
            raise LoadError(
                f"{ready} clients ready, server counts {counted}, wanted {subscribers}: "
                f"{result.errors}"
            )
        count = (
            args.count
            if args.count
            else (int(args.rate * args.duration) if args.rate > 0 else 1_000_000)
        )
        spy = None
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            out = args.profile / f"{server}-{impl}-{subscribers}-{payload}-run{run + 1}.txt"
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(srv.pid),
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--duration",
                    str(int(args.duration) + 1),
                    "--rate",
                    "250",
                    # Native unwinding has to stop the process for each sample.
                    *(["--native"] if args.native else ["--nonblocking"]),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # let py-spy attach before the clock starts
        pids = [proc.pid for proc in srvs]
        i0 = total_cpu(pids)
        time.sleep(args.idle_sample)
        result.idle_cpu_pct = (sum(total_cpu(pids)) - sum(i0)) / args.idle_sample * 100
        sampler = start_perf(args, pids) if args.perf else None
        u0, s0 = total_cpu(pids)
        send(
            srv,
            {
                "publish": count,
                "rate": args.rate,
                "size": payload,
                "duration": args.duration,
                "window": args.window,
            },
        )
        bound = args.duration + (max(60.0, 3 * args.duration) if args.rate > 0 else 0.0)
        pub = read_json(srv, bound + 60, "the server to publish")
        result.published = published = int(pub["published"])
        result.asked = int(pub.get("asked", count))
        result.max_lag_ms = float(pub.get("max_lag_ms", 0.0))
        if published > 1:
            result.pub_rate = (published - 1) / max((pub["t_last"] - pub["t_first"]) / 1e9, 1e-9)
        if args.rate > 0 and published < result.asked:
            result.errors[f"published {published} of {result.asked}"] = 1
        for c in clients:
            send(c, {"finish": published, "timeout": args.drain_timeout})
        reports = [read_json(c, args.drain_timeout + 30, "client results") for c in clients]
        u1, s1 = total_cpu(pids)
        if sampler is not None:
            result.perf_user_share = stop_perf(*sampler)
        after: dict[str, int] = {}
        for proc in srvs:
            send(proc, {"stats": True})
            for code, n in read_json(proc, 30, "server stats").get("disconnects", {}).items():
                after[code] = after.get(code, 0) + n
        for code, n in after.items():
            key = f"server disconnect {code}"
            result.errors[key] = n - result.errors.get(f"{key} before publishing", 0)
            if not result.errors[key]:
                del result.errors[key]
        if spy is not None:
            spy.wait(args.duration + 30)
    finally:
        for c in clients:
            stop(c)
        for proc in srvs:
            stop(proc)
        errlog.seek(0)
        stderr = errlog.read().decode(errors="replace")
        errlog.close()
    hist: dict[int, int] = {}
    for r in reports:
        for k, v in r["hist"].items():
            hist[int(k)] = hist.get(int(k), 0) + v
        for k, v in r["errors"].items():
            result.errors[k] = result.errors.get(k, 0) + v
        result.deliveries += r["counted"]
        result.out_of_order += r["out_of_order"]
        result.duplicates += r["duplicates"]
        result.closed += r["closed"]
    if "Traceback" in stderr or "ERROR" in stderr:
        result.errors["server stderr: " + stderr.strip().splitlines()[-1][:100]] = 1
    result.expected = published * subscribers
    result.loss = result.expected - result.deliveries
    last = max((r["last_recv"] for r in reports), default=0)
    result.seconds = max((last - int(pub["t_first"])) / 1e9, 1e-9) if published else 0.0
    result.deliveries_per_s = result.deliveries / result.seconds if result.seconds else 0.0
    p50, p99, pmax = percentiles(hist, [0.5, 0.99, 1.0])
    result.p50_ms, result.p99_ms, result.max_ms = p50 / 1000, p99 / 1000, pmax / 1000
    result.server_user_s = u1 - u0
    result.server_sys_s = s1 - s0
    if result.deliveries:
        result.user_us_per_delivery = result.server_user_s / result.deliveries * 1e6
        result.sys_us_per_delivery = result.server_sys_s / result.deliveries * 1e6
        result.perf_user_us_per_delivery = result.perf_user_share * (
            result.user_us_per_delivery + result.sys_us_per_delivery
        )
    return result


def start_perf(args: argparse.Namespace, pids: list[int]) -> tuple[subprocess.Popen[bytes], Path]:
    """``perf record`` of the server processes: CPU-clock samples at ``--perf`` Hz.

    /proc's user/system split comes from the scheduler tick (250 Hz here): with
    the user share of a fan-out server at a few percent, a run of a few
    hundred milliseconds of CPU gets a handful of user ticks. Sampling at
    several kHz splits the same CPU time with far more samples.
    """
    fd, name = tempfile.mkstemp(suffix=".perf")
    os.close(fd)
    proc = subprocess.Popen(
        ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(args.perf), "-o", name]
        + ["-p", ",".join(map(str, pids))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # attached before the clock starts
    return proc, Path(name)


def stop_perf(proc: subprocess.Popen[bytes], data: Path) -> float:
    """Stop the recording; the share of its samples taken in user mode."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--sort", "dso", "-g", "none"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        data.unlink(missing_ok=True)
    user = kernel = 0.0
    for line in report.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].endswith("%") and not line.lstrip().startswith("#"):
            share = float(fields[0].rstrip("%"))
            # Kernel samples: [kernel.kallsyms] and kernel modules; [vdso] is user mode.
            if fields[1].startswith("[") and fields[1] != "[vdso]":
                kernel += share
            else:
                user += share
    return user / (user + kernel) if user + kernel else 0.0


# -- reporting ------------------------------------------------------------------------------


COLUMNS = [
    ("server", "server", "{}"),
    ("impl", "impl", "{}"),
    ("subs", "subscribers", "{}"),
    ("payload", "payload", "{}"),
    ("engine", "engine", "{}"),
    ("shards", "shards", "{}"),
    ("workers", "workers", "{}"),
    ("rate/s", "rate", "{:g}"),
    ("delay ms", "write_delay_ms", "{:g}"),
    ("pubs", "published", "{}"),
    ("asked", "asked", "{}"),
    ("pubs/s done", "pub_rate", "{:.1f}"),
    ("lag ms", "max_lag_ms", "{:.0f}"),
    ("deliv/s", "deliveries_per_s", "{:,.0f}"),
    ("p50 ms", "p50_ms", "{:.2f}"),
    ("p99 ms", "p99_ms", "{:.2f}"),
    ("max ms", "max_ms", "{:.2f}"),
    ("loss", "loss", "{}"),
    ("user µs/d", "user_us_per_delivery", "{:.2f}"),
    ("sys µs/d", "sys_us_per_delivery", "{:.2f}"),
    ("perf user µs/d", "perf_user_us_per_delivery", "{:.2f}"),
]


def median_rows(results: list[Result]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[Result]] = {}
    for r in results:
        key = (
            r.server,
            r.impl,
            r.engine,
            r.shards,
            r.workers,
            r.subscribers,
            r.payload,
            r.rate,
            r.write_delay,
        )
        groups.setdefault(key, []).append(r)
    rows = []
    for rs in groups.values():
        row = asdict(rs[0])
        row["write_delay_ms"] = rs[0].write_delay * 1000
        for key in (
            "published",
            "pub_rate",
            "max_lag_ms",
            "deliveries_per_s",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "user_us_per_delivery",
            "sys_us_per_delivery",
            "perf_user_us_per_delivery",
        ):
            row[key] = statistics.median(getattr(r, key) for r in rs)
        row["loss"] = sum(r.loss for r in rs)
        row["runs"] = len(rs)
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], out: IO[str]) -> None:
    header = "| " + " | ".join(c[0] for c in COLUMNS) + " | runs |"
    out.write(header + "\n|" + "---|" * (len(COLUMNS) + 1) + "\n")
    for row in rows:
        cells = [fmt.format(row[key]) for _, key, fmt in COLUMNS]
        out.write("| " + " | ".join(cells) + f" | {row['runs']} |\n")


def print_ratios(results: list[Result], out: IO[str]) -> None:
    """compiled / pure ratios of runs taken side by side (same run index), medians."""
    pairs: dict[tuple[Any, ...], list[tuple[Result, Result]]] = {}
    by_key = {
        (r.subscribers, r.payload, r.write_delay, r.run, r.impl): r
        for r in results
        if r.server == "rtcore"
    }
    for (subs, size, delay, run, impl), r in by_key.items():
        pure = by_key.get((subs, size, delay, run, "pure"))
        if impl == "compiled" and pure is not None:
            pairs.setdefault((subs, size, delay), []).append((r, pure))
    if not pairs:
        return
    out.write(
        "\n| subs | payload | delay ms | pure/compiled user CPU per delivery | pure/compiled "
        "total CPU per delivery | compiled/pure deliveries/s | runs |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    for (subs, size, delay), ps in sorted(pairs.items()):
        user = statistics.median(
            p.user_us_per_delivery / max(c.user_us_per_delivery, 1e-9) for c, p in ps
        )
        total = statistics.median(
            (p.user_us_per_delivery + p.sys_us_per_delivery)
            / max(c.user_us_per_delivery + c.sys_us_per_delivery, 1e-9)
            for c, p in ps
        )
        rate = statistics.median(c.deliveries_per_s / max(p.deliveries_per_s, 1e-9) for c, p in ps)
        out.write(
            f"| {subs} | {size} | {delay * 1000:g} | {user:.2f}x | {total:.2f}x | {rate:.2f}x "
            f"| {len(ps)} |\n"
        )


def print_versus(results: list[Result], baseline: str, out: IO[str]) -> None:
    """CPU per delivery of every server relative to ``baseline`` in the same round, medians."""
    base = {(r.subscribers, r.payload, r.run): r for r in results if r.server == baseline}
    ratios: dict[tuple[Any, ...], list[tuple[float, float, float]]] = {}
    for r in results:
        b = base.get((r.subscribers, r.payload, r.run))
        if b is None or r.server == baseline:
            continue
        user = r.user_us_per_delivery / max(b.user_us_per_delivery, 1e-9)
        total = (r.user_us_per_delivery + r.sys_us_per_delivery) / max(
            b.user_us_per_delivery + b.sys_us_per_delivery, 1e-9
        )
        perf = r.perf_user_us_per_delivery / max(b.perf_user_us_per_delivery, 1e-9)
        key = (r.subscribers, r.payload, r.server, r.impl, r.write_delay)
        ratios.setdefault(key, []).append((user, total, perf))
    if not ratios:
        return
    sampled = all(r.perf_user_share for r in results)
    out.write(
        f"\n| subs | payload | server | impl | delay ms | user CPU / {baseline}'s | "
        f"user+sys CPU / {baseline}'s |"
        + (f" perf user CPU / {baseline}'s |" if sampled else "")
        + " runs |\n|---|---|---|---|---|---|---|"
        + ("---|" if sampled else "")
        + "---|\n"
    )

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f}x ({min(values):.2f}–{max(values):.2f})"

    for (subs, size, server, impl, delay), rs in sorted(ratios.items()):
        out.write(
            f"| {subs} | {size} | {server} | {impl} | {delay * 1000:g} | "
            f"{cell([u for u, _, _ in rs])} | {cell([t for _, t, _ in rs])} | "
            + (f"{cell([p for _, _, p in rs])} | " if sampled else "")
            + f"{len(rs)} |\n"
        )


# -- main ----------------------------------------------------------------------------------


def compiled_available() -> bool:
    env = server_env("compiled", "x")
    probe = subprocess.run(
        [sys.executable, "-c", "import rtcore._fanout, rtcore._frames"],
        env=env,
        capture_output=True,
    )
    return probe.returncode == 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--server", choices=sorted(SERVERS), nargs="+", default=["rtcore"])
    p.add_argument("--subscribers", type=int, nargs="+", default=[1000])
    p.add_argument("--payload-size", type=int, nargs="+", default=[100])
    p.add_argument(
        "--rate",
        type=float,
        default=20.0,
        help="publications per second (0: as fast as the clients drain)",
    )
    p.add_argument("--duration", type=float, default=5.0, help="seconds of publishing")
    p.add_argument("--count", type=int, default=0, help="most publications (0: rate x duration)")
    p.add_argument("--impl", choices=["compiled", "pure", "both"], default="both")
    p.add_argument(
        "--ref-src",
        type=Path,
        help="with --server rtcore-ref: the src/ directory of another rtcore tree (built)",
    )
    p.add_argument(
        "--write-delay",
        type=float,
        nargs="+",
        default=[0.0],
        help="rtcore: seconds each flush round waits after its first message "
        "(client message batching); several values run side by side",
    )
    p.add_argument(
        "--versus",
        default="picows",
        help="server whose CPU per delivery the others are divided by, round by round",
    )
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--per-client", type=int, default=5000, help="connections per client process")
    p.add_argument("--channel", default="bench")
    p.add_argument("--auth", choices=["anonymous", "token"], default="anonymous")
    p.add_argument(
        "--window",
        type=int,
        default=64 * 1024,
        help="max-rate backpressure: per-connection backlog in bytes",
    )
    p.add_argument("--connect-timeout", type=float, default=180.0)
    p.add_argument("--drain-timeout", type=float, default=60.0)
    p.add_argument(
        "--profile",
        type=Path,
        help="record the server with py-spy (raw collapsed stacks) into this directory",
    )
    p.add_argument("--native", action="store_true", help="with --profile: include C frames")
    p.add_argument(
        "--perf",
        type=int,
        default=0,
        metavar="HZ",
        help="sample the server with perf at this rate during the publish phase and report "
        "the user share of its CPU per delivery from the samples (see start_perf)",
    )
    p.add_argument(
        "--idle-sample",
        type=float,
        default=1.0,
        help="seconds of idle server CPU measured before publishing",
    )
    p.add_argument("--json", type=Path, help="write every run's result here")
    p.add_argument(
        "--engine",
        choices=["memory", "redis"],
        default="memory",
        help="rtcore's broker: in process, or Redis (publications go through Redis PUBLISH)",
    )
    p.add_argument(
        "--redis-url",
        dest="redis_urls",
        action="append",
        help="Redis shard URL (repeat for several; default redis://127.0.0.1:6379/0)",
    )
    p.add_argument(
        "--shards",
        type=int,
        default=0,
        help="with --engine redis: this many shards; missing ones are started as "
        "temporary redis-server processes on free loopback ports and stopped afterwards",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="rtcore server processes sharing the port (SO_REUSEPORT); >1 needs --engine redis",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="200 subscribers, 2 s at 50/s, token auth; exit 1 on any loss or error",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.subscribers, args.payload_size, args.rate, args.duration = [200], [100], 50.0, 2.0
        args.runs, args.count, args.server, args.auth = 1, 0, ["rtcore"], "token"
        args.drain_timeout = 30.0
    if max(args.subscribers) > 20 * args.per_client or args.per_client > 8000:
        p.error("too many connections for the loopback source addresses / open-file limits")
    if args.redis_urls is None:
        args.redis_urls = ["redis://127.0.0.1:6379/0"]
    if args.workers < 1 or args.workers > 8 or args.shards > 8:
        p.error("--workers and --shards are bounded: 1..8")
    if args.workers > 1 and args.engine != "redis":
        p.error("--workers > 1 needs --engine redis (the memory engine is per process)")
    if args.duration > 600 or args.runs > 20:
        p.error("runs are bounded: --duration <= 600, --runs <= 20")
    if "rtcore-ref" in args.server and (
        args.ref_src is None or not (args.ref_src / "rtcore").is_dir()
    ):
        p.error("--server rtcore-ref needs --ref-src pointing at a src/ directory with rtcore/")
    if not all(0 <= d <= 1 for d in args.write_delay):
        p.error("--write-delay is in seconds, 0 to 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    impls = ["compiled", "pure"] if args.impl == "both" else [args.impl]
    if "compiled" in impls and "rtcore" in args.server and not compiled_available():
        if args.smoke:
            impls = ["pure"]
            print(
                "compiled modules not built: smoke test on the pure-Python twins", file=sys.stderr
            )
        else:
            print(
                "compiled modules are not built (python setup.py build_ext --inplace)",
                file=sys.stderr,
            )
            return 2
    extra_redis: list[subprocess.Popen[bytes]] = []
    try:
        if args.engine == "redis":
            extra_redis = start_redis_shards(args)
        return run_all(args, impls)
    except LoadError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in extra_redis:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_redis_shards(args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    """Start the shards ``--shards`` asks for beyond ``--redis-url`` (no persistence)."""
    procs: list[subprocess.Popen[bytes]] = []
    while len(args.redis_urls) < args.shards:
        port = free_port("127.0.0.1")
        proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "1000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        deadline = time.monotonic() + 10
        import socket

        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    for q in procs:
                        q.terminate()
                    raise LoadError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)
        args.redis_urls.append(f"redis://127.0.0.1:{port}/0")
    return procs


def run_all(args: argparse.Namespace, impls: list[str]) -> int:
    results: list[Result] = []
    failed = False
    for run in range(args.runs):
        for subs in args.subscribers:
            for size in args.payload_size:
                for server in args.server:
                    for impl, delay in [
                        (i, d)
                        for i in (impls if is_rtcore(server) else ["compiled"])
                        for d in (args.write_delay if server == "rtcore" else [0.0])
                    ]:
                        what = f"{server} {impl}" if is_rtcore(server) else server
                        if delay:
                            what += f" delay {delay * 1000:g} ms"
                        label = f"run {run + 1}: {what} {subs} subs {size} B"
                        print(label + " ...", file=sys.stderr, flush=True)
                        try:
                            r = run_once(args, server, impl, subs, size, run, delay)
                        except LoadError as exc:
                            print(f"  FAILED: {exc}", file=sys.stderr)
                            failed = True
                            continue
                        results.append(r)
                        print(
                            f"  {r.published} pubs, {r.deliveries_per_s:,.0f} deliveries/s, "
                            f"p99 {r.p99_ms:.2f} ms, loss {r.loss}, server "
                            f"{r.user_us_per_delivery:.2f} µs user + "
                            f"{r.sys_us_per_delivery:.2f} µs sys per delivery, "
                            f"connect {r.connect_s}s, idle CPU {r.idle_cpu_pct:.0f}%, "
                            f"closed {r.closed}, out of order {r.out_of_order}"
                            + (f", errors {r.errors}" if r.errors else ""),
                            file=sys.stderr,
                            flush=True,
                        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    if results:
        print_table(median_rows(results), sys.stdout)
        print_ratios(results, sys.stdout)
        if args.versus:
            print_versus(results, args.versus, sys.stdout)
    bad = [
        r
        for r in results
        if r.loss or r.out_of_order or r.duplicates or r.errors or not r.published
    ]
    if args.smoke and (failed or bad or not results):
        print(
            f"SMOKE FAILED: {len(bad)} run(s) with loss/errors, {int(failed)} failed",
            file=sys.stderr,
        )
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
