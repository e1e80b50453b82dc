"""The scenarios: hold, storm and publish.

Each one is a coroutine taking the :class:`Run` (the fleet of client
processes, the monitor, the API client, the spawned server if any) and
filling ``run.summary`` (the figures, flat, with their unit in the name),
``run.histograms`` (latency histograms in microseconds) and ``run.problems``
(what makes the run fail: connections refused, a recovery that went wrong, a
lost publication). Figures that need the server's process tree are left out
when it could not be found.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from histogram import bucket_index, merge, summary_ms
from load_control import make_data

from bench.loadgen.fleet import Fleet, Monitor, ProgressUI
from bench.loadgen.server import (
    ApiClient,
    ApiError,
    SpawnedServer,
    listener_pids,
    scrape_metrics,
    wait_listening,
)


__all__ = ["Run", "SCENARIOS", "hold", "publish", "storm"]

# The stages of a (re)connect timed before the reply (bench.loadgen.client: Worker.stage).
STAGES = ("tcp", "upgrade")


@dataclass
class Run:
    """Everything a scenario works with, and what it reports."""

    args: argparse.Namespace
    fleet: Fleet
    monitor: Monitor
    ui: ProgressUI
    channels: list[str]
    api: ApiClient | None = None
    server: SpawnedServer | None = None
    api_target: tuple[str, int, str, str] | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    histograms: dict[str, dict[int, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def add_counts(dicts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _per_connection(phase: dict[str, Any], key: str, count: int, scale: float) -> float | None:
    server = phase.get("server")
    if not server or server.get(key) is None or count <= 0:
        return None
    return round(float(server[key]) / count * scale, 2)


def _top(counts: Mapping[str, int], n: int = 3) -> str:
    return ", ".join(f"{k}: {v}" for k, v in list(counts.items())[:n])


async def idle_phase(run: Run) -> dict[str, Any]:
    """The server's baseline: RSS and CPU with no client connected (``--idle`` seconds)."""
    with run.monitor.phase("idle") as ph:
        await asyncio.sleep(run.args.idle)
    return ph


async def connect_phase(run: Run, name: str = "connect") -> tuple[dict[str, Any], dict[str, Any]]:
    """Open every connection at ``--rate``; returns (figures, phase record)."""
    args, fleet = run.args, run.fleet
    n = args.connections
    per_process = args.rate / len(fleet.handles) if args.rate > 0 else 0.0
    bound = args.phase_timeout + args.connect_timeout + 30.0
    run.monitor.follow(
        "connecting",
        n,
        lambda: (
            fleet.total("ready"),
            f"failed {fleet.total('failed')}  in flight {fleet.total('pending')}",
        ),
    )
    with run.monitor.phase(name) as ph:
        replies = await fleet.request("connect", bound, rate=per_process)
    figures = _phase_figures(replies)
    run.histograms["connect_us"] = figures.pop("hist")
    for stage, hist in figures.pop("stages").items():
        run.histograms[f"connect_{stage}_us"] = hist
    ph.update(ready=figures["ready"], failed=figures["failed"])
    if figures["failed"]:
        run.problems.append(
            f"{figures['failed']} of {n} connections failed ({_top(figures['failures'])})"
        )
    return figures, ph


def _phase_figures(replies: list[dict[str, Any]]) -> dict[str, Any]:
    ready = sum(r["ready"] for r in replies)
    failures = add_counts(r["failures"] for r in replies)
    starts = [r["first_start"] for r in replies if r["first_start"]]
    ends = [r["last_ready"] for r in replies if r["last_ready"]]
    seconds = (max(ends) - min(starts)) / 1e9 if starts and ends else 0.0
    return {
        "ready": ready,
        "failed": sum(failures.values()),
        "failures": failures,
        "seconds": round(seconds, 3),
        "rate_per_s": round(ready / seconds, 1) if seconds > 0 else None,
        "hist": merge(r["hist"] for r in replies),
        "stages": {name: merge(r["stages"].get(name, {}) for r in replies) for name in STAGES},
        "first_start": min(starts) if starts else 0,
        "last_ready": max(ends) if ends else 0,
    }


def _connect_summary(
    run: Run, figures: dict[str, Any], ph: dict[str, Any], idle: dict[str, Any]
) -> dict[str, Any]:
    ready = figures["ready"]
    out: dict[str, Any] = {
        "connections": run.args.connections,
        "ready": ready,
        "failed": figures["failed"],
        "failures": figures["failures"],
        "connect_seconds": figures["seconds"],
        "connect_rate_per_s": figures["rate_per_s"],
        "connect_ms": summary_ms(run.histograms["connect_us"]),
        "server_cpu_us_per_connection": _per_connection(ph, "cpu_s", ready, 1e6),
        "server_user_us_per_connection": _per_connection(ph, "user_s", ready, 1e6),
        "server_sys_us_per_connection": _per_connection(ph, "sys_s", ready, 1e6),
        "clients_cpu_us_per_connection": round(ph["clients_cpu_s"] / ready * 1e6, 2)
        if ready
        else None,
    }
    if ready:
        grown = ph["clients_rss"] - idle["clients_rss"]
        out["clients_rss_kib_per_connection"] = round(grown / ready / 1024, 2)
    server, base = ph.get("server"), idle.get("server")
    if server and base and ready:
        out["server_rss_kib_per_connection"] = round(
            (server["rss_end"] - base["rss_end"]) / ready / 1024, 2
        )
        out["server_rss_mib"] = round(server["rss_end"] / 2**20, 1)
        out["server_processes"] = server["processes"]
    return out


async def _sleep_watched(run: Run, label: str, seconds: float, info: Any) -> None:
    t0 = time.monotonic()
    run.monitor.follow(label, seconds, lambda: (min(time.monotonic() - t0, seconds), info()))
    await asyncio.sleep(seconds)


# -- hold --------------------------------------------------------------------------------------


async def hold(run: Run) -> None:
    """N idle subscribed connections, held for ``--hold`` seconds, answering pings."""
    args, fleet = run.args, run.fleet
    idle = await idle_phase(run)
    figures, ph = await connect_phase(run)
    run.summary.update(_connect_summary(run, figures, ph, idle))
    with run.monitor.phase("hold") as hold_ph:
        await _sleep_watched(
            run,
            "holding",
            args.hold,
            lambda: (
                f"ready {fleet.total('ready')}  lost {fleet.total('lost')}  "
                f"pings {fleet.total('pings')}"
            ),
        )
        stats = await fleet.request("stats", 60.0)
    lost = add_counts(s["lost"] for s in stats)
    ready_now = sum(s["ready"] for s in stats)
    server = hold_ph.get("server") or {}
    run.summary.update(
        {
            "hold_seconds": hold_ph["seconds"],
            "hold_server_cpu_pct": server.get("cpu_pct"),
            "hold_server_cpu_us_per_connection_per_s": round(
                server["cpu_s"] / hold_ph["seconds"] / ready_now * 1e6, 3
            )
            if server.get("cpu_s") is not None and ready_now
            else None,
            "hold_server_rss_mib": round(server["rss_end"] / 2**20, 1) if server else None,
            "pings_answered": sum(s["pings"] for s in stats),
            "still_ready": ready_now,
            "lost": lost,
            "pushed_disconnects": add_counts(s["pushed_disconnects"] for s in stats),
        }
    )
    if lost:
        run.problems.append(
            f"{sum(lost.values())} ready connections were closed while held ({_top(lost)})"
        )


# -- storm ------------------------------------------------------------------------------------


async def _publish_missed(run: Run, api: ApiClient) -> dict[int, tuple[str, int, int]]:
    """K publications per channel through the server API; per channel (epoch, final offset, K)."""
    k = run.args.missed
    channels = run.channels
    expect: dict[int, tuple[str, int, int]] = {}
    hist: dict[int, int] = {}
    done = 0
    run.monitor.follow("publishing", k * len(channels), lambda: (done, ""))
    for seq in range(1, k + 1):
        for c, channel in enumerate(channels):
            t0 = time.monotonic_ns()
            offset, epoch = await api.publish(channel, make_data(seq, run.args.payload_size))
            idx = bucket_index((time.monotonic_ns() - t0) // 1000)
            hist[idx] = hist.get(idx, 0) + 1
            prev = expect.get(c)
            if prev is not None and offset and offset != prev[1] + 1:
                run.problems.append(f"{channel}: the API gave offset {offset} after {prev[1]}")
            expect[c] = (epoch, offset, seq)
            done += 1
    run.histograms["api_publish_us"] = hist
    return expect


async def _restart(run: Run) -> None:
    args = run.args
    with run.monitor.phase("restart") as ph:
        if args.restart_cmd:
            proc = await asyncio.create_subprocess_shell(args.restart_cmd)
            try:
                rc = await asyncio.wait_for(proc.wait(), args.restart_timeout)
            except TimeoutError:
                proc.kill()
                raise RuntimeError(
                    f"--restart-cmd did not finish in {args.restart_timeout:.0f} s"
                ) from None
            if rc != 0:
                raise RuntimeError(f"--restart-cmd exited with {rc}")
            port = run.fleet.handles[0].spec.port
            await asyncio.to_thread(wait_listening, port, 1, args.restart_timeout)
            if not args.server_pid:
                run.monitor.roots = listener_pids(port)
        elif run.server is not None:
            ph["stop_seconds"] = round(
                await asyncio.to_thread(run.server.stop, args.restart_timeout), 3
            )
            run.server.launch()
            await asyncio.to_thread(run.server.wait_ready, args.restart_timeout)
            run.monitor.roots = [run.server.pid]


async def _probe_api(api: ApiClient, channel: str, stop: asyncio.Event) -> dict[str, Any]:
    """Every 50 ms an ``info`` request, then a publish into a channel nobody reads.

    How the server API answers during the storm: ``info`` touches no channel
    (the loop's own responsiveness), the publish goes through the broker.
    """
    hists: dict[str, dict[int, int]] = {"info": {}, "publish": {}}
    errors: dict[str, int] = {"info": 0, "publish": 0}
    calls = {
        "info": lambda: api.call("info", b"{}"),
        "publish": lambda: api.publish(channel, b'{"probe":true}'),
    }
    while not stop.is_set():
        for name, call in calls.items():
            t0 = time.monotonic_ns()
            try:
                await call()
                idx = bucket_index((time.monotonic_ns() - t0) // 1000)
                hists[name][idx] = hists[name].get(idx, 0) + 1
            except ApiError:
                errors[name] += 1
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    return {"hists": hists, "errors": errors}


# The event loop's lag past these bounds (seconds; buckets of rtcore_event_loop_lag_seconds).
LAG_BOUNDS = ("0.1", "0.5", "1.0")
_LAG = "rtcore_event_loop_lag_seconds"
_FULL_GC = 'rtcore_gc_pause_seconds_{}{{generation="2"{}}}'
_COUNTERS = (
    "rtcore_recovery_reads_total",
    "rtcore_recovery_reads_merged_total",
    f"{_LAG}_count",
    *(f'{_LAG}_bucket{{le="{bound}"}}' for bound in LAG_BOUNDS),
    _FULL_GC.format("count", ""),
    _FULL_GC.format("sum", ""),
    _FULL_GC.format("bucket", ',le="0.1"'),
)


async def _server_counters(run: Run) -> dict[str, float] | None:
    """The server's recovery reads, loop lag and full collections, summed over its
    workers (None without /metrics)."""
    if run.api_target is None:
        return None
    host, port = run.api_target[0], run.api_target[1]
    workers = max(1, getattr(run.args, "workers", 1))
    return await scrape_metrics(host, port, _COUNTERS, attempts=1 if workers == 1 else 8 * workers)


def _loop_figures(after: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    """How often the server's loop lagged past each bound, and its full collections, since ``base``."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - base.get(name, 0.0)

    samples = delta(f"{_LAG}_count")
    out = {"lag_samples": samples}
    for bound in LAG_BOUNDS:
        out[f"lag_over_{bound}s"] = samples - delta(f'{_LAG}_bucket{{le="{bound}"}}')
    full = delta(_FULL_GC.format("count", ""))
    out["full_collections"] = full
    out["full_collections_over_0.1s"] = full - delta(_FULL_GC.format("bucket", ',le="0.1"'))
    out["full_collection_s"] = round(delta(_FULL_GC.format("sum", "")), 3)
    return out


async def storm(run: Run) -> None:
    """Drop every client, publish K per channel, reconnect all at once with recovery."""
    args, fleet = run.args, run.fleet
    assert run.api is not None and run.api_target is not None
    idle = await idle_phase(run)
    figures, ph = await connect_phase(run)
    run.summary.update(_connect_summary(run, figures, ph, idle))
    before = figures["ready"]
    with run.monitor.phase("drop"):
        dropped = await fleet.request("drop", 30.0)
        await asyncio.sleep(args.away)
    run.summary["dropped"] = sum(d["dropped"] for d in dropped)
    with run.monitor.phase("publish"):
        expect = await _publish_missed(run, run.api)
    if args.restart or args.restart_cmd:
        await _restart(run)
    counters_before = await _server_counters(run)
    host, port, prefix, key = run.api_target
    probe_api = ApiClient(host, port, prefix, key, connections=1)
    stop = asyncio.Event()
    probe = asyncio.get_running_loop().create_task(
        _probe_api(probe_api, f"{args.channel_prefix}probe", stop)
    )
    bound = args.phase_timeout + args.connect_timeout + 30.0
    per_process = args.reconnect_rate / len(fleet.handles) if args.reconnect_rate > 0 else 0.0
    run.monitor.follow(
        "recovering",
        before,
        lambda: (fleet.total("recovered"), f"ready {fleet.total('ready')}"),
    )
    try:
        with run.monitor.phase("reconnect") as rph:
            t0 = time.monotonic_ns()
            replies = await fleet.request(
                "reconnect",
                bound,
                t0=t0,
                expect={c: list(v) for c, v in expect.items()},
                rate=per_process,
                concurrency=args.reconnect_concurrency,
            )
    finally:
        stop.set()
        probed = await probe
        await probe_api.close()
    if args.after > 0:
        with run.monitor.phase("after"):
            await asyncio.sleep(args.after)
    stats = await fleet.request("stats", 60.0)
    again = _phase_figures(replies)
    run.histograms["recovery_us"] = again.pop("hist")
    for stage, hist in again.pop("stages").items():
        run.histograms[f"recovery_{stage}_us"] = hist
    run.histograms["api_probe_us"] = probed["hists"]["publish"]
    run.histograms["api_info_us"] = probed["hists"]["info"]
    counters_after = await _server_counters(run)
    reads: dict[str, Any] | None = None
    loop: dict[str, float] | None = None
    if counters_before is not None and counters_after is not None:
        # After a restart the counters start again from zero.
        base = {} if (args.restart or args.restart_cmd) else counters_before
        loop = _loop_figures(counters_after, base)
        reads = {
            "history_reads": counters_after["rtcore_recovery_reads_total"]
            - base.get("rtcore_recovery_reads_total", 0.0),
            "reads_merged": counters_after["rtcore_recovery_reads_merged_total"]
            - base.get("rtcore_recovery_reads_merged_total", 0.0),
            "before": counters_before,
            "after": counters_after,
        }
    verdicts = add_counts(r["verdicts"] for r in replies)
    recovered = verdicts.get("ok", 0)
    last_recovered = max(r["last_recovered"] for r in replies)
    rph.update(ready=again["ready"], recovered=recovered)
    server = rph.get("server") or {}
    run.summary.update(
        {
            "clients": before,
            "channels": len(run.channels),
            "missed_per_channel": args.missed,
            "restarted": bool(args.restart or args.restart_cmd),
            "recovered": recovered,
            "recovered_pct": round(recovered / before * 100, 3) if before else 0.0,
            "verdicts": verdicts,
            "reconnect_failures": again["failures"],
            "last_recovered_s": round((last_recovered - t0) / 1e9, 3) if last_recovered else None,
            "last_reconnected_s": round((again["last_ready"] - t0) / 1e9, 3)
            if again["last_ready"]
            else None,
            "recovery_ms": summary_ms(run.histograms["recovery_us"]),
            # From the storm's start: TCP connection up, then the 101 (where the time went).
            **{
                f"reconnect_{stage}_ms": summary_ms(run.histograms[f"recovery_{stage}_us"])
                for stage in STAGES
            },
            "reconnect_server_cpu_us_per_client": _per_connection(rph, "cpu_s", before, 1e6),
            "reconnect_server_cpu_pct": server.get("cpu_pct"),
            "api_publish_ms": summary_ms(run.histograms["api_publish_us"]),
            "api_probe_ms": summary_ms(probed["hists"]["publish"]),
            "api_probe_errors": probed["errors"]["publish"],
            "api_info_ms": summary_ms(probed["hists"]["info"]),
            "api_info_errors": probed["errors"]["info"],
            "recovery_reads": reads,
            # The server's event loop from the reconnect to the end of --after.
            "server_loop": loop,
            # Closed by the server once ready (e.g. 3012: a pong not seen in time), over the run.
            "lost": add_counts(s["lost"] for s in stats),
            "pings_answered": sum(s["pings"] for s in stats),
            "still_ready": sum(s["ready"] for s in stats),
        }
    )
    if recovered != args.connections:
        bad = {k: v for k, v in verdicts.items() if k != "ok"}
        if again["failed"]:
            bad["reconnect failed"] = again["failed"]
        lost_before = args.connections - before
        if lost_before:
            bad["not connected before the drop"] = lost_before
        run.problems.append(
            f"{recovered} of {args.connections} clients recovered ({_top(add_counts([bad]), 4)})"
        )


# -- publish ----------------------------------------------------------------------------------


async def publish(run: Run) -> None:
    """Publications at a rate that makes ``--deliveries`` per second; publish -> receive latency."""
    args, fleet = run.args, run.fleet
    assert run.api is not None
    idle = await idle_phase(run)
    figures, ph = await connect_phase(run)
    run.summary.update(_connect_summary(run, figures, ph, idle))
    ready = figures["ready"]
    nchan = len(run.channels)
    if not ready:
        run.problems.append("no connection is ready: nothing to publish to")
        return
    # Round robin over the channels: each publication reaches ready / nchan subscribers.
    pub_rate = args.deliveries * nchan / ready
    count = max(1, int(pub_rate * args.duration))
    if args.publications:
        count = min(count, args.publications)
    start_ns = time.monotonic_ns()
    await fleet.request("arm", 30.0, from_ns=start_ns + int(args.warmup * 1e9))
    last_seq: dict[int, int] = {}
    errors: list[str] = []
    hist: dict[int, int] = {}
    sent = 0
    max_lag = 0.0
    api = run.api
    slots = asyncio.Semaphore(args.api_connections)

    async def one(c: int, seq: int) -> None:
        t0 = time.monotonic_ns()
        try:
            await api.publish(run.channels[c], make_data(seq, args.payload_size))
            idx = bucket_index((time.monotonic_ns() - t0) // 1000)
            hist[idx] = hist.get(idx, 0) + 1
        except ApiError as exc:
            errors.append(str(exc))
        finally:
            slots.release()

    run.monitor.follow("publishing", count, lambda: (sent, f"received {fleet.total('received')}"))
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    with run.monitor.phase("publish") as pph:
        t_start = loop.time()
        hard_stop = t_start + args.duration * 3 + 30.0
        for i in range(count):
            due = t_start + i / pub_rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                max_lag = max(max_lag, -delay)
            await slots.acquire()
            if loop.time() > hard_stop:
                slots.release()
                errors.append(f"stopped after {i} publications: far behind schedule")
                break
            c = i % nchan
            seq = last_seq.get(c, 0) + 1
            last_seq[c] = seq
            tasks.append(loop.create_task(one(c, seq)))
            sent += 1
        await asyncio.gather(*tasks)
        t_published = loop.time()
        collected = await fleet.request(
            "collect", args.drain_timeout + 30.0, expected=last_seq, timeout=args.drain_timeout
        )
    run.histograms["latency_us"] = merge(r["hist"] for r in collected)
    run.histograms["api_publish_us"] = hist
    received = sum(r["received"] for r in collected)
    complete = sum(r["complete"] for r in collected)
    gaps = sum(r["gaps"] for r in collected)
    dups = sum(r["duplicates"] for r in collected)
    still_ready = sum(r["ready"] for r in collected)
    expected = sum(r["expected"] for r in collected)
    # Closed by the server during the run (e.g. 3008 when a client fell too far
    # behind): their deliveries are in `received` but not in `expected`, which
    # counts the connections still ready only.
    lost = add_counts(r["lost"] for r in collected)
    last_recv = max((r["last_recv"] for r in collected), default=0)
    window = (last_recv - start_ns) / 1e9 if last_recv else 0.0
    server = pph.get("server") or {}
    run.summary.update(
        {
            "publications": sent,
            "publication_rate_per_s": round(sent / max(t_published - t_start, 1e-9), 1),
            "target_deliveries_per_s": args.deliveries,
            "max_schedule_lag_ms": round(max_lag * 1000, 1),
            "api_errors": len(errors),
            "deliveries_expected": expected,
            "deliveries_received": received,
            "deliveries_per_s": round(received / window, 1) if window > 0 else None,
            "complete_connections": complete,
            "still_ready": still_ready,
            "lost": lost,
            "gaps": gaps,
            "duplicates": dups,
            "latency_ms": summary_ms(run.histograms["latency_us"]),
            "api_publish_ms": summary_ms(hist),
            "server_cpu_us_per_delivery": round(server["cpu_s"] / received * 1e6, 3)
            if server.get("cpu_s") is not None and received
            else None,
            "publish_server_cpu_pct": server.get("cpu_pct"),
        }
    )
    if errors:
        run.problems.append(f"{len(errors)} publish requests failed ({errors[0]})")
    if lost:
        run.problems.append(
            f"{sum(lost.values())} connections closed by the server during the run "
            f"({_top(lost, 3)})"
        )
    if (received != expected and not lost) or gaps or dups or complete != still_ready:
        run.problems.append(
            f"deliveries: {received} received of {expected} expected by the {still_ready} "
            f"connections still ready, {gaps} missing in gaps, {dups} duplicates, "
            f"{still_ready - complete} connections incomplete"
        )


SCENARIOS = {"hold": hold, "storm": storm, "publish": publish}
