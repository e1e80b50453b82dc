"""Micro-benchmarks of the fan-out core, compiled against its pure-Python twin.

Run with ``python -m pytest bench/bench_fanout.py --benchmark-only`` (add
``--benchmark-disable`` for a quick smoke run). One 100-byte payload is
broadcast to 1,000 or 10,000 subscribers whose writers write into a null
sink; the loop is a stand-in whose ``call_soon`` only records the flush
callback, so what is measured is the fan-out code and nothing else.

* ``test_broadcast``: broadcast() alone (every writer's queue is drained,
  untimed, before each round);
* ``test_flush``: the flush round alone (one message queued per writer);
* ``test_broadcast_and_flush``: both, i.e. one publication until every
  writer queue is empty again (the clock stops only after the drain);
* ``test_flush_websocket_sink``: the flush round with every writer on a
  ``WebSocketSink`` (what a WebSocket connection uses): the frame is built
  and written with ``write(2)`` to ``/dev/null``, the transport's state is
  asked through C functions that stand in for uvloop's methods. This one
  includes a system call per writer.

Each benchmark records ``ns_per_delivery`` in its ``extra_info``; the groups
put the two implementations of one measurement side by side.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest


PAYLOAD = b'{"push":{"channel":"bench","pub":{"data":{"n":1,"text":"' + b"x" * 38 + b'"}}}}\n'
assert len(PAYLOAD) == 100


class NullSink:
    """Accepts every batch and never reports a transport backlog."""

    __slots__ = ()

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        pass

    def buffer_size(self) -> int:
        return 0

    def on_slow(self) -> None:
        pass


class NullSocket:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


class NullTransport:
    """A transport whose methods are C functions, as uvloop's are: it holds nothing,
    is never closing, and its socket is /dev/null."""

    __slots__ = ("sock",)
    # Called as method(transport, ...): is_(t, data) ignores the data, not_(t) is False (0).
    write = writelines = operator.is_
    get_write_buffer_size = is_closing = operator.not_

    def __init__(self, fd: int) -> None:
        self.sock = NullSocket(fd)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default


class OpenState:
    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = 1


@pytest.fixture
def devnull() -> Iterator[int]:
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        yield fd
    finally:
        os.close(fd)


class NullLoop:
    __slots__ = ("scheduled",)

    def __init__(self) -> None:
        self.scheduled = 0

    def call_soon(self, callback: Any) -> None:
        self.scheduled += 1


def world(impl: ModuleType, n: int) -> tuple[Any, Any, list[bytes | None]]:
    flusher = impl.Flusher(NullLoop())
    sink = NullSink()
    subs = {
        f"client-{i}": impl.Subscriber(impl.Writer(sink, flusher), 0, None, "bench")
        for i in range(n)
    }
    return flusher, subs, [PAYLOAD, None]


def record(benchmark: Any, n: int) -> None:
    """Store the median per delivery (absent with --benchmark-disable)."""
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["ns_per_delivery"] = stats.stats.median / n * 1e9


SIZES = [pytest.param(1000, id="1k"), pytest.param(10_000, id="10k")]


@pytest.mark.parametrize("n", SIZES)
def test_broadcast(benchmark: Any, fanout_impl: ModuleType, n: int) -> None:
    flusher, subs, payloads = world(fanout_impl, n)
    benchmark.group = f"broadcast {n}"
    values = subs.values()

    def run() -> None:
        fanout_impl.broadcast(values, payloads, 0, "", None)

    benchmark.pedantic(run, setup=flusher.flush, rounds=200 if n <= 1000 else 50, warmup_rounds=2)
    flusher.flush()
    sub = next(iter(subs.values()))
    assert sub.writer.messages_sent >= 1 and sub.writer.queued_messages == 0
    record(benchmark, n)


@pytest.mark.parametrize("n", SIZES)
def test_flush(benchmark: Any, fanout_impl: ModuleType, n: int) -> None:
    flusher, subs, payloads = world(fanout_impl, n)
    benchmark.group = f"flush {n}"
    values = subs.values()

    def setup() -> None:
        fanout_impl.broadcast(values, payloads, 0, "", None)

    benchmark.pedantic(flusher.flush, setup=setup, rounds=200 if n <= 1000 else 50, warmup_rounds=2)
    sub = next(iter(subs.values()))
    assert sub.writer.frames_sent == sub.writer.messages_sent >= 1
    record(benchmark, n)


@pytest.mark.parametrize("n", SIZES)
def test_broadcast_and_flush(benchmark: Any, fanout_impl: ModuleType, n: int) -> None:
    flusher, subs, payloads = world(fanout_impl, n)
    benchmark.group = f"broadcast+flush {n}"
    values = subs.values()
    broadcast = fanout_impl.broadcast
    flush = flusher.flush

    def run() -> None:
        broadcast(values, payloads, 0, "", None)
        flush()

    benchmark(run)
    assert all(s.writer.queued_messages == 0 for s in subs.values())
    record(benchmark, n)


@pytest.mark.parametrize("n", SIZES)
def test_broadcast_positioned(benchmark: Any, fanout_impl: ModuleType, n: int) -> None:
    """A positioned (recoverable) channel: every subscriber's offset is checked and advanced."""
    flusher, subs, payloads = world(fanout_impl, n)
    for sub in subs.values():
        sub.positioned, sub.epoch = True, "epoch"
    benchmark.group = f"broadcast positioned {n}"
    values = subs.values()
    offset = [0]

    def run() -> None:
        offset[0] += 1
        assert fanout_impl.broadcast(values, payloads, offset[0], "epoch", None) is None

    benchmark.pedantic(run, setup=flusher.flush, rounds=200 if n <= 1000 else 50, warmup_rounds=2)
    assert next(iter(subs.values())).offset == offset[0]
    record(benchmark, n)


@pytest.mark.parametrize("n", SIZES)
def test_flush_websocket_sink(
    benchmark: Any, fanout_impl: ModuleType, n: int, devnull: int
) -> None:
    flusher = fanout_impl.Flusher(NullLoop())
    subs = {
        f"client-{i}": fanout_impl.Subscriber(
            fanout_impl.Writer(
                fanout_impl.WebSocketSink(NullTransport(devnull), 1, OpenState(), 1, lambda: None),
                flusher,
            ),
            0,
            None,
            "bench",
        )
        for i in range(n)
    }
    benchmark.group = f"flush websocket sink {n}"
    values = subs.values()
    payloads = [PAYLOAD, None]

    def setup() -> None:
        fanout_impl.broadcast(values, payloads, 0, "", None)

    benchmark.pedantic(flusher.flush, setup=setup, rounds=200 if n <= 1000 else 50, warmup_rounds=2)
    sub = next(iter(subs.values()))
    assert sub.writer.frames_sent == sub.writer.messages_sent >= 1 and not sub.writer.slow
    assert sub.writer.sink.direct
    record(benchmark, n)
