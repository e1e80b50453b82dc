"""Micro-benchmarks of the RFC 6455 frame core.

Two ways to run it:

* ``python -m pytest bench/bench_frames.py --benchmark-only`` (pytest-benchmark);
  ``bench/`` is outside ``testpaths``, so a plain ``pytest`` never collects it.
* ``python bench/bench_frames.py --runs 5`` prints a markdown table of medians
  and of ratios measured in the same run (the table in docs/frames.md).

Cases:

* masking 64 KiB and 1 MiB: ``rtcore._frames.apply_mask`` (new bytes) and
  ``mask_inplace`` (bytearray), the twin ``rtcore._frames_py.apply_mask``,
  ``websockets.speedups.apply_mask`` and aiohttp's Cython
  ``aiohttp._websocket.mask._websocket_mask_cython`` (in place);
* parsing streams of masked binary frames with 100-byte and 16 KiB payloads,
  delivered in 64 KiB reads through ``get_buffer``/``buffer_updated`` (the
  ``asyncio.BufferedProtocol`` path): the compiled parser, the twin, and
  picows' parser. picows keeps its parser inside ``WSProtocol``; it is driven
  here through a stub transport after a real upgrade handshake, and its
  listener copies each payload out (``get_payload_as_bytes``) so that every
  parser produces one ``bytes`` object per frame.

Libraries that are not installed are left out (and their pytest cases skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rtcore._frames_py as twin


try:
    import rtcore._frames as compiled
except ImportError:  # pragma: no cover - depends on the build
    compiled = None  # type: ignore[assignment]

try:
    from websockets.speedups import apply_mask as websockets_apply_mask
except ImportError:  # pragma: no cover
    websockets_apply_mask = None

try:
    from aiohttp._websocket.mask import _websocket_mask_cython as aiohttp_mask
except ImportError:  # pragma: no cover
    aiohttp_mask = None

try:
    import picows
    from picows.picows import WSProtocol as PicowsProtocol
except ImportError:  # pragma: no cover
    picows = None
    PicowsProtocol = None


KEY = b"\x37\xfa\x21\x3d"
READ_SIZE = 64 * 1024  # bytes per simulated socket read
MASK_SIZES = {"64 KiB": 64 * 1024, "1 MiB": 1024 * 1024}
# Payload size -> number of frames per stream (about 200 KiB and 1 MiB of input).
PARSE_SIZES = {"100 B": (100, 2000), "16 KiB": (16 * 1024, 64)}


@dataclass
class Case:
    """One benchmarked call: ``fn()`` processes ``units`` bytes or frames."""

    group: str
    name: str
    fn: Callable[[], Any]
    units: int
    unit: str  # "GB/s" or "frames/s"
    baseline: bool = False  # the twin: ratios are relative to it
    close: Callable[[], None] | None = None  # releases sockets/loops after timing


# -- masking ------------------------------------------------------------------------


def mask_case(group: str, name: str, size: int) -> Case | None:
    data = os.urandom(size)
    reference = twin.apply_mask(data, KEY)
    if name == "rtcore._frames_py.apply_mask":
        return Case(group, name, lambda: twin.apply_mask(data, KEY), size, "GB/s", baseline=True)
    if name == "rtcore._frames.apply_mask" and compiled is not None:
        assert compiled.apply_mask(data, KEY) == reference
        return Case(group, name, lambda: compiled.apply_mask(data, KEY), size, "GB/s")
    if name == "rtcore._frames.mask_inplace" and compiled is not None:
        buf = bytearray(data)
        compiled.mask_inplace(buf, KEY)
        assert buf == reference
        return Case(group, name, lambda: compiled.mask_inplace(buf, KEY), size, "GB/s")
    if name == "websockets.speedups.apply_mask" and websockets_apply_mask is not None:
        assert websockets_apply_mask(data, KEY) == reference
        return Case(group, name, lambda: websockets_apply_mask(data, KEY), size, "GB/s")
    if name == "aiohttp._websocket.mask (in place)" and aiohttp_mask is not None:
        buf = bytearray(data)
        aiohttp_mask(KEY, buf)
        assert buf == reference
        return Case(group, name, lambda: aiohttp_mask(KEY, buf), size, "GB/s")
    return None


MASK_IMPLS = [
    "rtcore._frames_py.apply_mask",
    "rtcore._frames.apply_mask",
    "rtcore._frames.mask_inplace",
    "websockets.speedups.apply_mask",
    "aiohttp._websocket.mask (in place)",
]


# -- parsing ------------------------------------------------------------------------


def frame_stream(payload_size: int, count: int) -> bytes:
    payload = bytes(i % 251 for i in range(payload_size))
    return twin.encode_frame(twin.OP_BINARY, payload, mask=KEY) * count


def reads(stream: bytes) -> list[bytes]:
    return [stream[i : i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]


def rtcore_parser(module: Any, stream: bytes, count: int, via: str) -> Callable[[], int]:
    parser = module.FrameParser(max_message_size=0)
    chunks = reads(stream)

    def buffered() -> int:
        n = 0
        for chunk in chunks:
            size = len(chunk)
            parser.get_buffer(size)[:size] = chunk
            n += len(parser.buffer_updated(size))
        return n

    def fed() -> int:
        n = 0
        for chunk in chunks:
            n += len(parser.feed_data(chunk))
        return n

    run = buffered if via == "buffered" else fed
    assert run() == count and parser.error is None
    return run


class _StubTransport:
    """Just enough of an asyncio transport for picows' WSProtocol."""

    def __init__(self) -> None:
        # picows sets TCP options on the socket, so it must be a TCP one.
        server = socket.create_server(("127.0.0.1", 0))
        self.peer = socket.create_connection(server.getsockname())
        self.sock, _ = server.accept()
        server.close()
        self.written: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        info = {"socket": self.sock, "peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}
        return info.get(name, default)

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def writelines(self, items: Any) -> None:
        for data in items:
            self.write(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.sock.close()
        self.peer.close()


_UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def picows_parser(stream: bytes, count: int) -> tuple[Callable[[], int], Callable[[], None]]:
    class Counter(picows.WSListener):  # type: ignore[misc, name-defined]
        frames = 0

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            frame.get_payload_as_bytes()
            self.frames += 1

    listener = Counter()
    transport = _StubTransport()
    loop = asyncio.new_event_loop()

    async def connect() -> Any:
        # Positional arguments of picows 2.x WSProtocol.__init__ (see picows/api.py).
        protocol = PicowsProtocol(
            None,
            None,
            False,
            lambda request: listener,
            logging.getLogger("bench.picows"),
            True,
            None,
            False,
            10.0,
            10.0,
            picows.WSAutoPingStrategy.PING_WHEN_IDLE,
            False,
            64 << 20,
            None,
            256 * 1024,
        )
        protocol.connection_made(transport)
        protocol.get_buffer(-1)[: len(_UPGRADE)] = _UPGRADE
        protocol.buffer_updated(len(_UPGRADE))
        return protocol

    protocol = loop.run_until_complete(connect())
    assert transport.written and transport.written[0].startswith(b"HTTP/1.1 101")
    chunks = reads(stream)

    def run() -> int:
        before = listener.frames
        for chunk in chunks:
            size = len(chunk)
            protocol.get_buffer(-1)[:size] = chunk
            protocol.buffer_updated(size)
        return listener.frames - before

    def close() -> None:
        transport.close()
        loop.close()

    assert run() == count
    return run, close


def parse_case(group: str, name: str, payload_size: int, count: int) -> Case | None:
    stream = frame_stream(payload_size, count)
    if name == "rtcore._frames_py (buffered)":
        run = rtcore_parser(twin, stream, count, "buffered")
        return Case(group, name, run, count, "frames/s", baseline=True)
    if name == "rtcore._frames (buffered)" and compiled is not None:
        return Case(
            group, name, rtcore_parser(compiled, stream, count, "buffered"), count, "frames/s"
        )
    if name == "rtcore._frames (feed_data)" and compiled is not None:
        return Case(group, name, rtcore_parser(compiled, stream, count, "feed"), count, "frames/s")
    if name == "picows (buffered)" and picows is not None:
        run, close = picows_parser(stream, count)
        label = f"picows {picows.__version__} (buffered)"
        return Case(group, label, run, count, "frames/s", close=close)
    return None


PARSE_IMPLS = [
    "rtcore._frames_py (buffered)",
    "rtcore._frames (buffered)",
    "rtcore._frames (feed_data)",
    "picows (buffered)",
]


def case_specs() -> list[tuple[str, str, Callable[[], Case | None]]]:
    """(group, implementation, factory) for every case; factories return None when unavailable."""
    specs: list[tuple[str, str, Callable[[], Case | None]]] = []
    for label, size in MASK_SIZES.items():
        group = f"mask {label}"
        for name in MASK_IMPLS:
            specs.append((group, name, lambda g=group, n=name, s=size: mask_case(g, n, s)))
    for label, (payload_size, count) in PARSE_SIZES.items():
        group = f"parse {label} frames"
        for name in PARSE_IMPLS:
            specs.append(
                (
                    group,
                    name,
                    lambda g=group, n=name, p=payload_size, c=count: parse_case(g, n, p, c),
                )
            )
    return specs


# -- pytest-benchmark -----------------------------------------------------------------


if "pytest" in sys.modules:
    import pytest

    @pytest.mark.parametrize(
        "spec",
        [pytest.param(spec, id=f"{spec[0]}-{spec[1]}".replace(" ", "")) for spec in case_specs()],
    )
    def test_frames(benchmark: Any, spec: tuple[str, str, Callable[[], Case | None]]) -> None:
        group, name, factory = spec
        case = factory()
        if case is None:
            pytest.skip(f"{name} is not available")
        benchmark.group = group
        benchmark.extra_info["unit"] = case.unit
        benchmark.extra_info["units_per_call"] = case.units
        try:
            benchmark(case.fn)
        finally:
            if case.close is not None:
                case.close()


# -- standalone table -------------------------------------------------------------------


def calibrate(fn: Callable[[], Any], min_time: float) -> int:
    """Number of calls that take at least ``min_time`` seconds."""
    fn()
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls
        calls *= 2 if elapsed == 0 else max(2, min(10, int(min_time / elapsed) + 1))


def time_calls(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def format_rate(case: Case, seconds: float) -> str:
    rate = case.units / seconds
    if case.unit == "GB/s":
        return f"{rate / 1e9:.2f} GB/s"
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M frames/s"
    return f"{rate / 1e3:.1f} k frames/s"


def format_time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument(
        "--min-time",
        type=float,
        default=0.2,
        help="seconds per run; the call count is calibrated to it",
    )
    args = parser.parse_args(argv)
    if compiled is None:
        print("rtcore._frames is not built: only the twin is measured", file=sys.stderr)
    cases = [case for _, _, factory in case_specs() if (case := factory()) is not None]
    calls = [calibrate(case.fn, args.min_time) for case in cases]
    # Runs are interleaved (one timing of every case per round), so that a
    # change in machine load affects all cases alike and the ratios stay fair.
    samples: list[list[float]] = [[] for _ in cases]
    for _ in range(args.runs):
        for i, case in enumerate(cases):
            samples[i].append(time_calls(case.fn, calls[i]))
    results = [(case, statistics.median(times)) for case, times in zip(cases, samples, strict=True)]
    for case in cases:
        if case.close is not None:
            case.close()
    baseline = {case.group: seconds for case, seconds in results if case.baseline}
    print(
        f"Median of {args.runs} runs, {datetime.date.today().isoformat()}, Python "
        f"{platform.python_version()}, {platform.machine()}, one core "
        f"(`python bench/bench_frames.py --runs {args.runs}`)\n"
    )
    print("| case | implementation | time per call | throughput | vs twin |")
    print("|---|---|---:|---:|---:|")
    for case, seconds in results:
        ratio = baseline[case.group] / seconds
        print(
            f"| {case.group} | {case.name} | {format_time(seconds)} | "
            f"{format_rate(case, seconds)} | {ratio:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
