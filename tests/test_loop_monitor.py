"""The event-loop lag and GC pause histograms (rtcore.server.loop_monitor) and their metrics."""

from __future__ import annotations

import asyncio
import gc
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import rtcore
from rtcore.config import config_from_mapping
from rtcore.engine.node import Node
from rtcore.engine.stats import Histogram
from rtcore.server.loop_monitor import LoopMonitor, current_monitor
from rtcore.transports.http_server import run as run_loop


def _count_above(hist: Histogram, seconds: float) -> int:
    """Observations in buckets whose lower bound is at least ``seconds``."""
    total = 0
    lower = 0.0
    for bound, n in zip((*hist.BUCKETS, float("inf")), hist.counts, strict=True):
        if lower >= seconds:
            total += n
        lower = bound
    return total


def test_a_blocked_loop_is_recorded_as_lag() -> None:
    async def main() -> None:
        monitor = LoopMonitor(interval=0.01)
        monitor.start()
        try:
            await asyncio.sleep(0.05)
            calm = monitor.lag.count
            assert calm >= 2
            assert _count_above(monitor.lag, 0.1) == 0
            time.sleep(0.3)  # one callback that holds the loop
            await asyncio.sleep(0.05)
            assert _count_above(monitor.lag, 0.1) == 1
            assert monitor.lag.sum >= 0.25
        finally:
            monitor.stop()

    run_loop(main())


def test_collections_are_timed_by_generation() -> None:
    async def main() -> None:
        monitor = LoopMonitor()
        monitor.start()
        try:
            before = [h.count for h in monitor.gc_pauses]
            gc.collect(0)
            gc.collect()
            after = [h.count for h in monitor.gc_pauses]
            assert after[0] >= before[0] + 1
            assert after[2] >= before[2] + 1
            assert monitor.gc_pauses[2].sum > 0
        finally:
            monitor.stop()
        assert monitor._on_gc not in gc.callbacks
        n = monitor.gc_pauses[2].count
        gc.collect()
        assert monitor.gc_pauses[2].count == n  # stopped: no longer timed

    run_loop(main())


def test_start_and_stop() -> None:
    with pytest.raises(ValueError, match="interval"):
        LoopMonitor(interval=0)

    async def main() -> None:
        monitor = LoopMonitor()
        assert current_monitor() is None and not monitor.running
        monitor.start()
        monitor.start()  # idempotent: one timer, one callback
        assert gc.callbacks.count(monitor._on_gc) == 1
        assert current_monitor() is monitor and monitor.running
        monitor.stop()
        monitor.stop()
        assert current_monitor() is None and not monitor.running

    run_loop(main())


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_endpoint_reports_the_running_monitor() -> None:
    async def main() -> None:
        node = Node(config_from_mapping({"metrics": {"enabled": True}}))
        server = await rtcore.serve(node, "127.0.0.1", 0)
        try:
            samples = await _scrape(server.port)
            assert not any(name.startswith("rtcore_event_loop_lag") for name, _ in samples)
            monitor = LoopMonitor(interval=0.01)
            monitor.start()
            try:
                await asyncio.sleep(0.05)
                gc.collect()
                samples = await _scrape(server.port)
            finally:
                monitor.stop()
        finally:
            await server.close(timeout=1)
            await node.close()
        lag = samples[("rtcore_event_loop_lag_seconds_count", ())]
        assert lag >= 2
        assert samples[("rtcore_event_loop_lag_seconds_bucket", (("le", "+Inf"),))] == lag
        full = (("generation", "2"),)
        assert samples[("rtcore_gc_pause_seconds_count", full)] >= 1
        assert samples[("rtcore_gc_pause_seconds_bucket", (*full, ("le", "+Inf")))] >= 1

    run_loop(asyncio.wait_for(main(), 30))
