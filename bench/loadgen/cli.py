"""Command line of the load generator (see bench/README.md for the figures it reports).

    python -m bench.loadgen hold    --spawn-server -n 20000 -c 100 --rate 2000 --hold 60
    python -m bench.loadgen storm   --spawn-server -n 10000 -c 100 --missed 5
    python -m bench.loadgen storm   --spawn-server --engine redis --workers 2 --restart -n 10000
    python -m bench.loadgen publish --spawn-server -n 5000 -c 10 --deliveries 50000 --duration 10
    python -m bench.loadgen hold    --url ws://127.0.0.1:8000/connection/websocket --secret S -n 1000
    python -m bench.loadgen plot    RESULTS.json -o docs/img
    python -m bench.loadgen report  RESULTS.json ... [--baseline BARE.json]

Exit status: 0 the run passed its checks, 1 it did not (failed connections,
a recovery that went wrong, a lost publication: see "problems" in the
results), 2 bad command line, 3 the run could not be carried out (server did
not start, a client process died or timed out), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import platform
import resource
import secrets
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.loadgen import report
from bench.loadgen.client import WorkerSpec
from bench.loadgen.fleet import Fleet, FleetError, Monitor, ProgressUI
from bench.loadgen.proto import FORMATS
from bench.loadgen.scenarios import SCENARIOS, Run
from bench.loadgen.server import (
    ApiClient,
    ApiError,
    ServerOptions,
    SpawnedServer,
    TargetError,
    listener_pids,
    parse_http_url,
    parse_ws_url,
)


__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: Sockets one client process may hold (the hard open-files limit here is 20,000).
DEFAULT_PER_PROCESS = 15_000


def _positive(kind: type[Any]) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


def _non_negative(kind: type[Any]) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be 0 or above, got {text}")
        return value

    return parse


def _setting(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a dotted config key), got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a bare string: durations such as 25s
    return key, value


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("load")
    g.add_argument("-n", "--connections", type=_positive(int), default=1000)
    g.add_argument(
        "-c",
        "--channels",
        type=_positive(int),
        default=1,
        help="connection i subscribes to channel i %% C",
    )
    g.add_argument("--channel-prefix", default="loadgen", help="channels are PREFIX0, PREFIX1, ...")
    g.add_argument("--format", choices=FORMATS, default="json", help="Centrifuge wire format")
    g.add_argument(
        "--rate",
        type=_non_negative(float),
        default=0.0,
        help="connects per second overall (0: as fast as --concurrency allows)",
    )
    g.add_argument(
        "--concurrency",
        type=_non_negative(int),
        default=500,
        help="handshakes in flight per client process (0: no limit)",
    )
    g.add_argument(
        "--processes",
        type=_non_negative(int),
        default=0,
        help="client processes (0: enough for --per-process)",
    )
    g.add_argument(
        "--per-process",
        type=_positive(int),
        default=DEFAULT_PER_PROCESS,
        help="most connections per client process",
    )
    g.add_argument(
        "--source-base",
        default="127.0.0.2",
        help="client process i binds SOURCE_BASE + i (IPv4 targets)",
    )
    g.add_argument(
        "--connect-timeout",
        type=_positive(float),
        default=30.0,
        help="seconds from TCP connect to the subscribe reply",
    )
    g.add_argument(
        "--phase-timeout",
        type=_positive(float),
        default=600.0,
        help="seconds within which every connection of a (re)connect phase must be started",
    )
    g.add_argument(
        "--token-ttl",
        type=_positive(float),
        default=None,
        help="connection token lifetime (default: no expiry); tokens are not refreshed",
    )
    g.add_argument(
        "--raw",
        action="store_true",
        help="handshake only: ready at 101 (a bare WebSocket server, e.g. --server-cmd)",
    )
    g.add_argument(
        "--idle",
        type=_non_negative(float),
        default=1.0,
        help="seconds of the server's idle baseline before connecting",
    )
    g.add_argument(
        "--payload-size", type=_positive(int), default=64, help="bytes of publication data"
    )

    t = p.add_argument_group("target: a server started here, or one running")
    t.add_argument(
        "--spawn-server",
        action="store_true",
        help="start python -m rtcore serve with a generated config",
    )
    t.add_argument("--engine", choices=["memory", "redis"], default="memory")
    t.add_argument(
        "--workers",
        type=_positive(int),
        default=1,
        help="server worker processes (needs --engine redis above 1)",
    )
    t.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    t.add_argument(
        "--ping-interval",
        type=_non_negative(float),
        default=25.0,
        help="seconds between server pings",
    )
    t.add_argument(
        "--pong-timeout",
        type=_non_negative(float),
        default=None,
        help="default: 8 s, or half the ping interval when shorter",
    )
    t.add_argument("--history-size", type=_non_negative(int), default=100)
    t.add_argument(
        "--no-presence",
        action="store_true",
        help="presence (and join/leave) off in the spawned config",
    )
    t.add_argument(
        "--no-join-leave", action="store_true", help="join/leave off in the spawned config"
    )
    t.add_argument(
        "--set",
        dest="sets",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config key of the spawned server, e.g. client.connect_rate_limit=2000",
    )
    t.add_argument(
        "--server-log-level", choices=["debug", "info", "warning", "error"], default="warning"
    )
    t.add_argument(
        "--server-cmd",
        default="",
        help="spawn this command instead of rtcore ({port} is replaced), e.g. a bare picows server with --raw",
    )
    t.add_argument(
        "--url", default="", help="a running server: ws://127.0.0.1:PORT/connection/websocket"
    )
    t.add_argument(
        "--api-url", default="", help="its server API (default: http://HOST:PORT/api of --url)"
    )
    t.add_argument("--api-key", default="", help="its api.key")
    t.add_argument("--secret", default="", help="its client.token.hmac_secret_key (HS256 tokens)")
    t.add_argument(
        "--server-pid",
        type=_positive(int),
        default=0,
        help="sample this process tree (default: the spawned server, or whoever listens on the port)",
    )

    o = p.add_argument_group("output")
    o.add_argument(
        "--results",
        default="",
        help="results JSON file (default: a new file in the temp directory)",
    )
    o.add_argument("--plot", default="", metavar="DIR", help="also write the plots into DIR")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("--sample-interval", type=_positive(float), default=0.5)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description="Load generator: hold, reconnect storm and publish-latency scenarios "
        "against rtcore on this machine (loopback only).",
    )
    sub = p.add_subparsers(dest="scenario", required=True)
    hold = sub.add_parser("hold", help="N idle subscribed connections held for a while")
    _common(hold)
    hold.add_argument("--hold", type=_non_negative(float), default=30.0, help="seconds to hold")

    storm = sub.add_parser(
        "storm", help="drop all, publish while away, reconnect all with recovery"
    )
    _common(storm)
    storm.add_argument(
        "--missed", type=_positive(int), default=5, help="publications per channel while away"
    )
    storm.add_argument(
        "--away",
        type=_non_negative(float),
        default=1.0,
        help="seconds between the drop and the publications",
    )
    storm.add_argument(
        "--restart", action="store_true", help="restart the spawned server before the reconnect"
    )
    storm.add_argument(
        "--restart-cmd",
        default="",
        help="shell command restarting a running server before the reconnect",
    )
    storm.add_argument("--restart-timeout", type=_positive(float), default=60.0)
    storm.add_argument(
        "--reconnect-rate",
        type=_non_negative(float),
        default=0.0,
        help="reconnects per second (0: all at once)",
    )
    storm.add_argument(
        "--reconnect-concurrency",
        type=_non_negative(int),
        default=0,
        help="reconnects in flight per client process (0: no limit, every client at once)",
    )
    storm.add_argument(
        "--after",
        type=_non_negative(float),
        default=0.0,
        help="seconds to hold the reconnected clients (with a short --ping-interval: "
        "whether pings go missed after the storm)",
    )

    pub = sub.add_parser("publish", help="publish -> receive latency at a target deliveries/s")
    _common(pub)
    pub.add_argument(
        "--deliveries", type=_positive(float), default=10_000.0, help="target deliveries per second"
    )
    pub.add_argument(
        "--duration", type=_positive(float), default=10.0, help="seconds of publishing"
    )
    pub.add_argument(
        "--publications",
        type=_non_negative(int),
        default=0,
        help="cap on publications (0: rate x duration)",
    )
    pub.add_argument(
        "--warmup",
        type=_non_negative(float),
        default=1.0,
        help="seconds of publications left out of the latency",
    )
    pub.add_argument(
        "--api-connections",
        type=_positive(int),
        default=4,
        help="server API connections of the publisher",
    )
    pub.add_argument("--drain-timeout", type=_positive(float), default=30.0)

    plot = sub.add_parser("plot", help="PNG plots from results files")
    plot.add_argument("files", nargs="+")
    plot.add_argument("-o", "--out", default=".", help="output directory")

    rep = sub.add_parser("report", help="tables from results files")
    rep.add_argument("files", nargs="+")
    rep.add_argument("--baseline", default="", help="results file to compare every other one with")
    return p


# -- checks -----------------------------------------------------------------------------------


def _sources(args: argparse.Namespace, host: str, processes: int) -> list[str]:
    if ":" in host:
        if args.connections > 28_000:
            raise TargetError(
                "::1 has one source address: at most ~28,000 connections (use 127.0.0.1)"
            )
        return ["::1"] * processes
    try:
        base = ipaddress.IPv4Address(args.source_base)
    except ValueError:
        raise TargetError(f"--source-base {args.source_base!r} is not an IPv4 address") from None
    out = [str(base + i) for i in range(processes)]
    if not all(ipaddress.IPv4Address(a) in ipaddress.IPv4Network("127.0.0.0/8") for a in out):
        raise TargetError(f"--source-base {base}: source addresses must stay in 127.0.0.0/8")
    return out


def _specs(
    args: argparse.Namespace, host: str, port: int, path: str, secret: str, channels: list[str]
) -> list[WorkerSpec]:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if args.per_process > hard - 100:
        raise TargetError(
            f"--per-process {args.per_process} is too close to the open-files limit ({hard})"
        )
    processes = args.processes or max(1, math.ceil(args.connections / args.per_process))
    if math.ceil(args.connections / processes) > args.per_process:
        raise TargetError(
            f"{args.connections} connections over {processes} processes exceeds "
            f"--per-process {args.per_process}"
        )
    sources = _sources(args, host, processes)
    specs, first = [], 0
    for i in range(processes):
        count = args.connections // processes + (1 if i < args.connections % processes else 0)
        specs.append(
            WorkerSpec(
                index=i,
                host=host,
                port=port,
                path=path,
                source=sources[i],
                fmt=args.format,
                raw=args.raw,
                secret=secret,
                channels=channels,
                first=first,
                count=count,
                recoverable=args.scenario == "storm",
                concurrency=args.concurrency,
                connect_timeout=args.connect_timeout,
                phase_timeout=args.phase_timeout,
                token_ttl=args.token_ttl,
            )
        )
        first += count
    return [s for s in specs if s.count]


def _check(args: argparse.Namespace) -> None:
    if args.spawn_server == bool(args.url):
        raise TargetError("give either --spawn-server or --url")
    if args.url:
        parse_ws_url(args.url)
    if args.api_url:
        parse_http_url(args.api_url)
    if args.raw and args.scenario != "hold":
        raise TargetError("--raw (handshake only) goes with hold")
    if args.server_cmd and not args.spawn_server:
        raise TargetError("--server-cmd goes with --spawn-server")
    if args.url and not args.raw and not args.secret:
        raise TargetError("--url needs --secret (the server's HMAC secret for connection tokens)")
    if args.url and args.scenario != "hold" and not args.api_key:
        raise TargetError(f"{args.scenario} publishes through the server API: give --api-key")
    if args.scenario == "storm":
        if args.restart and not args.spawn_server:
            raise TargetError("--restart restarts a spawned server; use --restart-cmd for --url")
        if args.restart and args.restart_cmd:
            raise TargetError("give --restart or --restart-cmd, not both")
    for rate, what in (
        (args.rate, "--rate"),
        (getattr(args, "reconnect_rate", 0.0), "--reconnect-rate"),
    ):
        if rate > 0 and args.connections / rate > args.phase_timeout:
            raise TargetError(
                f"{args.connections} connections at {what} {rate:g}/s take "
                f"{args.connections / rate:.0f} s, more than --phase-timeout {args.phase_timeout:g}"
            )
    if args.workers > 1 and args.engine != "redis" and not args.server_cmd:
        raise TargetError("--workers above 1 needs --engine redis")


def _machine() -> dict[str, Any]:
    import rtcore
    from rtcore import fanout, frames

    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "rtcore": rtcore.__version__,
        "frames": frames.IMPLEMENTATION,
        "fanout": fanout.IMPLEMENTATION,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


# -- a run --------------------------------------------------------------------------------------


async def _run(args: argparse.Namespace, results: dict[str, Any], ui: ProgressUI) -> int:
    server: SpawnedServer | None = None
    fleet: Fleet | None = None
    monitor: Monitor | None = None
    api: ApiClient | None = None
    run: Run | None = None
    status = EXIT_OK
    channels = [f"{args.channel_prefix}{i}" for i in range(args.channels)]
    # SIGTERM ends a run as Ctrl-C does: cancelled, then every process cleaned up.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        if args.spawn_server:
            opts = ServerOptions(
                engine=args.engine,
                workers=args.workers,
                redis_url=args.redis_url,
                ping_interval=args.ping_interval,
                pong_timeout=args.pong_timeout
                if args.pong_timeout is not None
                else min(8.0, args.ping_interval / 2),
                history_size=max(args.history_size, getattr(args, "missed", 0)),
                presence=not args.no_presence,
                join_leave=not (args.no_presence or args.no_join_leave),
                log_level=args.server_log_level,
                sets=list(args.sets),
                command=args.server_cmd,
            )
            workdir = Path(tempfile.mkdtemp(prefix="loadgen-"))
            server = SpawnedServer(
                opts, secrets.token_urlsafe(32), secrets.token_urlsafe(24), workdir
            )
            results["server"] = server.describe()
            host, port, path = "127.0.0.1", server.port, "/connection/websocket"
            api_target = ("127.0.0.1", server.port, "/api", server.api_key)
            secret = server.secret
            roots: list[int] = []
        else:
            host, port, path = parse_ws_url(args.url)
            api_host, api_port, prefix = parse_http_url(
                args.api_url or f"http://{'[::1]' if ':' in host else host}:{port}/api"
            )
            api_target = (api_host, api_port, prefix, args.api_key)
            secret = args.secret
            roots = [args.server_pid] if args.server_pid else listener_pids(port)
            results["server"] = {"spawned": False, "url": args.url, "pids": roots}
            if not roots:
                ui.log("no process found listening on the port: no server CPU/RSS figures")
        if args.scenario != "hold":
            api = ApiClient(*api_target, connections=getattr(args, "api_connections", 4))
        specs = _specs(args, host, port, path, secret, channels)
        results["clients"] = {
            "processes": len(specs),
            "sources": [s.source for s in specs],
            "per_process": [s.count for s in specs],
        }
        if server is not None and not args.server_cmd:
            per_worker = math.ceil(args.connections / args.workers)
            if per_worker > 18_000:
                # SO_REUSEPORT spreads connections by hash, not evenly: keep a margin.
                warning = (
                    f"~{per_worker} connections per server process: above ~18,000 a worker "
                    "runs out of files (limit 20,000); raise --workers"
                )
                results["warnings"].append(warning)
                ui.log(f"warning: {warning}")
        # The client processes import while the server starts.
        fleet = Fleet(specs)
        if server is not None:
            ui.log(f"starting the server: {' '.join(server.cmd)}")
            server.launch()
            await asyncio.to_thread(server.wait_ready)
            roots = [args.server_pid] if args.server_pid else [server.pid]
        await fleet.wait_started(120.0)
        monitor = Monitor(fleet, roots, ui, args.sample_interval)
        monitor.start()
        run = Run(args, fleet, monitor, ui, channels, api=api, server=server, api_target=api_target)
        await SCENARIOS[args.scenario](run)
        if run.problems:
            status = EXIT_FAILED
    except (TargetError, ValueError) as exc:
        results["problems"].append(f"bad setup: {exc}")
        status = EXIT_USAGE
    except (FleetError, ApiError, RuntimeError, OSError) as exc:
        results["problems"].append(f"run error: {exc}")
        status = EXIT_ERROR
    except Exception as exc:
        # A bug of the load generator: keep what was measured, and the traceback.
        traceback.print_exc()
        results["problems"].append(f"internal error: {exc!r}")
        status = EXIT_ERROR
    finally:
        if monitor is not None:
            await monitor.stop()
            results["phases"], results["timeline"] = monitor.phases, monitor.timeline
        if run is not None:
            results["summary"] = run.summary
            results["histograms"] = run.histograms
            results["problems"] = run.problems + results["problems"]
        if fleet is not None:
            await fleet.close()
        if api is not None:
            await api.close()
        if server is not None:
            if status == EXIT_ERROR:
                results["server_log_tail"] = server.log_tail()
            results["server_stop_seconds"] = round(await asyncio.to_thread(server.stop, 30.0), 3)
            await asyncio.to_thread(server.cleanup_redis)
    return status


def _public_args(args: argparse.Namespace) -> dict[str, Any]:
    hidden = {"secret", "api_key"}
    return {k: v for k, v in vars(args).items() if k not in hidden}


def run_scenario(args: argparse.Namespace) -> int:
    import uvloop

    try:
        _check(args)
    except TargetError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = Path(
        args.results or Path(tempfile.gettempdir()) / f"loadgen-{args.scenario}-{stamp}.json"
    )
    results: dict[str, Any] = {
        "tool": "bench.loadgen",
        "version": 1,
        "scenario": args.scenario,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": _public_args(args),
        "machine": _machine(),
        "server": {},
        "problems": [],
        "warnings": [],
    }
    ui = ProgressUI(not args.no_progress)
    t0 = time.monotonic()
    interrupted = False
    with ui:
        try:
            status = uvloop.run(_run(args, results, ui))
        except (KeyboardInterrupt, asyncio.CancelledError):
            interrupted = True
            status = EXIT_INTERRUPTED
            results["problems"].append("interrupted")
    results["seconds"] = round(time.monotonic() - t0, 3)
    results["ok"] = status == EXIT_OK
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))
    console = Console()
    if "summary" in results:
        report.print_summary(results, console)
    elif results["problems"]:
        for problem in results["problems"]:
            console.print(f"[red]problem:[/red] {problem}")
    console.print(f"results: {path}")
    if args.plot and not interrupted:
        for png in report.plot(path, args.plot):
            console.print(f"plot: {png}")
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scenario == "plot":
        try:
            for path in args.files:
                for png in report.plot(path, args.out):
                    print(png)
        except (OSError, ValueError) as exc:
            print(f"loadgen plot: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK
    if args.scenario == "report":
        console = Console()
        try:
            runs = [(Path(f).stem, report.load(f)) for f in args.files]
            for _, data in runs:
                report.print_summary(data, console)
            if args.baseline:
                report.compare(runs, report.load(args.baseline), console)
        except (OSError, ValueError) as exc:
            print(f"loadgen report: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK
    with contextlib.suppress(KeyboardInterrupt):
        return run_scenario(args)
    return EXIT_INTERRUPTED
