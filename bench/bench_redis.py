"""Micro-benchmark: 10k publications with history, memory broker vs Redis broker.

Run by hand (``bench/`` is outside the test paths)::

    python bench/bench_redis.py [--runs 5] [--publications 10000]
    python bench/bench_redis.py --urls redis://127.0.0.1:7001,redis://127.0.0.1:7002

Without ``--urls`` it starts three throwaway ``redis-server`` processes on
free local ports (no persistence) and stops them afterwards. The 1-shard
case uses the first of them, the 3-shard case all three.

Each case publishes ``--publications`` publications with history
(``HistoryOptions(size=100, ttl=300)``, a ~100-byte JSON payload) into 100
channels, which one node is subscribed to, in two modes:

* ``sequential``: one task, ``await publish(...)`` after ``await publish(...)``;
  the time per publish is the round-trip latency;
* ``concurrent``: 100 tasks publishing at once (one per channel); the
  number is throughput, and the time runs until the subscribing node's
  handler has received every publication (so Redis delivery is included).

The script prints a markdown table of the medians over ``--runs`` runs (the
table in docs/redis.md). Everything, Redis included, shares the machine's
cores, so compare rows with each other rather than with other machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis as redis_sync

from rtcore.backends import MemoryBroker
from rtcore.backends.redis import RedisBroker
from rtcore.engine.history import HistoryOptions
from rtcore.protocol.types import ClientInfo, Publication, StreamPosition


CHANNELS = [f"bench:{i}" for i in range(100)]
HISTORY = HistoryOptions(size=100, ttl=300.0, meta_ttl=600.0)
PAYLOAD = json.dumps({"input": "x" * 60, "user": "alice", "ts": 1718000000}).encode()
INFO = ClientInfo(user="42", client="0e9e4d2a-7d0b-4b7c-9d3b-6a8f1e0c5a11")


class CountingHandler:
    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done: asyncio.Event | None = None

    def expect(self, n: int) -> asyncio.Event:
        self.count = 0
        self.target = n
        self.done = asyncio.Event()
        return self.done

    def on_publication(
        self, channel: str, pub: Publication, position: StreamPosition, prev: Publication | None
    ) -> None:
        self.count += 1
        if self.count == self.target and self.done is not None:
            self.done.set()

    def on_join(self, channel: str, info: ClientInfo) -> None:
        pass

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        pass

    def on_control(self, data: bytes) -> None:
        pass


def _pub() -> Publication:
    return Publication(data=PAYLOAD, info=INFO)


async def _sequential(broker: Any, handler: CountingHandler, n: int) -> float:
    done = handler.expect(n)
    start = time.perf_counter()
    for i in range(n):
        await broker.publish(CHANNELS[i % len(CHANNELS)], _pub(), history=HISTORY)
    await asyncio.wait_for(done.wait(), 60)
    return time.perf_counter() - start


async def _concurrent(broker: Any, handler: CountingHandler, n: int) -> float:
    per_task = n // len(CHANNELS)
    done = handler.expect(per_task * len(CHANNELS))

    async def task(channel: str) -> None:
        for _ in range(per_task):
            await broker.publish(channel, _pub(), history=HISTORY)

    start = time.perf_counter()
    await asyncio.gather(*(task(c) for c in CHANNELS))
    await asyncio.wait_for(done.wait(), 60)
    return time.perf_counter() - start


async def _run_case(make: Callable[[], Any], mode: str, n: int) -> float:
    broker = make()
    handler = CountingHandler()
    await broker.start(handler)
    try:
        for channel in CHANNELS:
            await broker.subscribe(channel)
        # Warm up (connections, script cache) outside the measurement.
        await _sequential(broker, handler, 200)
        run = _sequential if mode == "sequential" else _concurrent
        return await run(broker, handler, n)
    finally:
        await broker.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _redis_servers(count: int) -> Iterator[list[str]]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found; pass --urls")
    workdir = tempfile.mkdtemp(prefix="rtcore-bench-")
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for _ in range(count):
            port = _free_port()
            procs.append(
                subprocess.Popen(
                    [
                        binary,
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        workdir,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"redis://127.0.0.1:{port}")
            client = redis_sync.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis_sync.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            client.close()
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _cleanup(urls: list[str], prefix: str) -> None:
    for url in urls:
        client = redis_sync.Redis.from_url(url)
        for key in client.scan_iter(match=f"{prefix}.*", count=1000):
            client.delete(key)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--publications", type=int, default=10_000)
    parser.add_argument("--urls", help="comma-separated Redis URLs (at least 3 for all cases)")
    args = parser.parse_args()
    n = args.publications

    def measure(label: str, make: Callable[[], Any], urls: list[str]) -> list[str]:
        row = [label]
        for mode in ("sequential", "concurrent"):
            times = []
            for _ in range(args.runs):
                prefix = f"bench-{uuid.uuid4().hex[:8]}"
                try:
                    times.append(asyncio.run(_run_case(lambda p=prefix: make(p), mode, n)))
                finally:
                    _cleanup(urls, prefix)
            median = statistics.median(times)
            row += [f"{median * 1e6 / n:.1f} µs", f"{n / median:,.0f}/s"]
        return row

    def run_all(urls: list[str]) -> list[list[str]]:
        rows = [measure("memory", lambda p: MemoryBroker(), [])]
        rows.append(measure("Redis, 1 shard", lambda p: RedisBroker(urls[:1], prefix=p), urls[:1]))
        if len(urls) >= 3:
            rows.append(
                measure("Redis, 3 shards", lambda p: RedisBroker(urls[:3], prefix=p), urls[:3])
            )
        return rows

    if args.urls:
        rows = run_all(args.urls.split(","))
    else:
        with _redis_servers(3) as urls:
            rows = run_all(urls)

    print(
        f"{n} publications with history into 100 channels, median of {args.runs} runs; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    print()
    print(
        "| broker | sequential, per publish | sequential, rate "
        "| 100 tasks, per publish | 100 tasks, rate |"
    )
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
