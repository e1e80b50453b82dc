"""Differential test: the compiled fan-out core against its pure-Python twin.

Hypothesis draws a small world (writers with random limits, subscribers with
random codecs and positions) and a random sequence of operations: enqueues of
random sizes, flush rounds, single-writer flushes, closes, transport buffer
changes, subscriber state changes and broadcasts with random offsets, epochs
and missing codec payloads. The same sequence is replayed on both modules;
after every operation the results (return values, actions, exception types),
the complete sink call logs, the loop's scheduled callbacks and every public
attribute must be identical.

``test_same_websocket_frames`` does the same for writers whose sink is a
``WebSocketSink`` (which the compiled writer drives from C): the transports
log every call, their "socket" is a one-page non-blocking pipe (so writes
to it can succeed, stop half-way or fail with EAGAIN, as on a socket), and
the operations also change the transport's buffer and closing state, the
connection's state, and read from or fill the pipe.
"""

from __future__ import annotations

import fcntl
import importlib
import os
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import rtcore._fanout_py as twin


try:
    compiled: ModuleType | None = importlib.import_module("rtcore._fanout")
except ImportError:  # pragma: no cover - depends on the build
    compiled = None

pytestmark = pytest.mark.skipif(compiled is None, reason="rtcore._fanout is not built")


class LogSink:
    """Records every call into a log shared by all the sinks of one world."""

    def __init__(self, name: int, log: list[tuple[Any, ...]]) -> None:
        self.name = name
        self.log = log
        self.buffered = 0

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        self.log.append(
            ("write_batch", self.name, type(payloads).__name__, tuple(payloads), nbytes)
        )

    def buffer_size(self) -> int:
        self.log.append(("buffer_size", self.name))
        return self.buffered

    def on_slow(self) -> None:
        self.log.append(("on_slow", self.name))


class LogLoop:
    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log
        self.callbacks: list[Any] = []

    def call_soon(self, callback: Any) -> None:
        self.log.append(("call_soon",))
        self.callbacks.append(callback)

    def run_once(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for cb in callbacks:
            cb()


def payload(tag: int, size: int) -> bytes:
    return bytes([97 + tag % 26]) * (size - 1) + b"\n" if size else b""


class World:
    """One module's writers, subscribers, flusher and loop, driven by operations."""

    def __init__(self, impl: ModuleType, spec: dict[str, Any]) -> None:
        self.impl = impl
        self.log: list[tuple[Any, ...]] = []
        self.loop = LogLoop(self.log)
        self.flusher = impl.Flusher(self.loop)
        self.sinks = [LogSink(i, self.log) for i in range(len(spec["writers"]))]
        self.writers = [
            impl.Writer(sink, self.flusher, max_queue_size=q, max_batch=b, max_frame_size=f)
            for sink, (q, b, f) in zip(self.sinks, spec["writers"], strict=True)
        ]
        self.subs = []
        for w, codec, positioned, offset, epoch in spec["subs"]:
            sub = impl.Subscriber(
                self.writers[w % len(self.writers)], codec, f"s{len(self.subs)}", "ch"
            )
            sub.positioned, sub.offset, sub.epoch = positioned, offset, epoch
            self.subs.append(sub)
        self.tick = 0

    def apply(self, op: tuple[Any, ...]) -> Any:
        kind = op[0]
        try:
            if kind == "enqueue":
                _, w, size = op
                self.tick += 1
                return self.writers[w % len(self.writers)].enqueue(payload(self.tick, size))
            if kind == "tick":
                self.loop.run_once()
                return None
            if kind == "flush_all":
                self.flusher.flush()
                return None
            if kind == "flush_one":
                self.writers[op[1] % len(self.writers)].flush()
                return None
            if kind == "close":
                self.writers[op[1] % len(self.writers)].close()
                return None
            if kind == "buffered":
                self.sinks[op[1] % len(self.sinks)].buffered = op[2]
                return None
            if kind == "set_sub":
                _, s, positioned, offset, epoch, buffering = op
                sub = self.subs[s % len(self.subs)]
                sub.positioned, sub.offset, sub.epoch = positioned, offset, epoch
                sub.buffer = [] if buffering else None
                return None
            if kind == "broadcast":
                _, sizes, offset, epoch, as_list = op
                self.tick += 1
                payloads = [
                    None if s is None else payload(self.tick + i, s) for i, s in enumerate(sizes)
                ]
                subs = (
                    list(self.subs) if as_list else {i: s for i, s in enumerate(self.subs)}.values()
                )
                actions = self.impl.broadcast(subs, payloads, offset, epoch, ("pub", self.tick))
                if actions is None:
                    return None
                return [(self.subs.index(sub), action) for sub, action in actions]
            raise AssertionError(op)
        except Exception as exc:  # compared by type between the twins
            return ("raised", type(exc).__name__)

    def state(self) -> dict[str, Any]:
        return {
            "log": list(self.log),
            "flusher": (self.flusher.flushes, self.flusher.pending),
            "writers": [
                (
                    w.closed,
                    w.slow,
                    w.queued_bytes,
                    w.queued_messages,
                    w.messages_sent,
                    w.frames_sent,
                    w.bytes_sent,
                    w.sink is None,
                    w.max_queue_size,
                    w.max_batch,
                    w.max_frame_size,
                )
                for w in self.writers
            ],
            "subs": [
                (
                    s.positioned,
                    s.offset,
                    s.epoch,
                    None if s.buffer is None else list(s.buffer),
                    s.codec,
                )
                for s in self.subs
            ],
        }


offsets = st.one_of(st.integers(0, 12), st.integers(0, (1 << 64) - 1))
epochs = st.sampled_from(["", "e1", "e2"])
writer_spec = st.tuples(
    st.one_of(st.just(0), st.integers(1, 400)),  # max_queue_size (0: unlimited)
    st.integers(1, 5),  # max_batch
    st.integers(1, 60),  # max_frame_size
)
sub_spec = st.tuples(st.integers(0, 3), st.integers(-2, 1), st.booleans(), offsets, epochs)
operation = st.one_of(
    st.tuples(st.just("enqueue"), st.integers(0, 3), st.integers(0, 80)),
    st.tuples(st.just("tick")),
    st.tuples(st.just("flush_all")),
    st.tuples(st.just("flush_one"), st.integers(0, 3)),
    st.tuples(st.just("close"), st.integers(0, 3)),
    st.tuples(st.just("buffered"), st.integers(0, 3), st.integers(0, 500)),
    st.tuples(st.just("set_sub"), st.integers(0, 7), st.booleans(), offsets, epochs, st.booleans()),
    st.tuples(
        st.just("broadcast"),
        st.lists(st.one_of(st.none(), st.integers(1, 70)), min_size=1, max_size=3),
        offsets,
        epochs,
        st.booleans(),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.fixed_dictionaries(
        {
            "writers": st.lists(writer_spec, min_size=1, max_size=4),
            "subs": st.lists(sub_spec, min_size=1, max_size=8),
        }
    ),
    ops=st.lists(operation, max_size=60),
)
def test_same_behaviour(spec: dict[str, Any], ops: list[tuple[Any, ...]]) -> None:
    assert compiled is not None
    ours, reference = World(compiled, spec), World(twin, spec)
    assert ours.state() == reference.state()
    for op in ops:
        got, expected = ours.apply(op), reference.apply(op)
        assert got == expected, op
        assert ours.state() == reference.state(), op


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 200), max_size=40),
    max_batch=st.integers(1, 8),
    max_frame_size=st.integers(1, 256),
)
def test_same_frames(sizes: list[int], max_batch: int, max_frame_size: int) -> None:
    """Coalescing alone, with larger queues than the operation sequences reach."""
    logs = []
    for impl in (compiled, twin):
        assert impl is not None
        log: list[tuple[Any, ...]] = []
        flusher = impl.Flusher(LogLoop(log))
        writer = impl.Writer(
            LogSink(0, log),
            flusher,
            max_queue_size=0,
            max_batch=max_batch,
            max_frame_size=max_frame_size,
        )
        for i, size in enumerate(sizes):
            assert writer.enqueue(payload(i, size))
        flusher.flush()
        logs.append((log, writer.frames_sent, writer.messages_sent, writer.bytes_sent))
    assert logs[0] == logs[1]
    # Every payload byte is counted once, whatever the frames.
    assert logs[0][3] == sum(sizes)
    # And the frames respect the limits.
    for entry in logs[0][0]:
        if entry[0] == "write_batch":
            frame = entry[3]
            assert len(frame) <= max_batch
            assert len(frame) == 1 or entry[4] <= max_frame_size


# -- WebSocketSink: the compiled writer writes frames itself; the twin calls write_batch --------


class LogTransport:
    """An asyncio transport logging every call; ``fd`` (a pipe) stands for its socket."""

    def __init__(self, name: int, log: list[tuple[Any, ...]], fd: int | None, tls: bool) -> None:
        self.name = name
        self.log = log
        self.fd = fd
        self.tls = tls
        self.buffered = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.log.append(("write", self.name, type(data).__name__, bytes(data)))

    def writelines(self, parts: Any) -> None:
        parts = list(parts)
        self.log.append(("writelines", self.name, type(parts).__name__, tuple(map(bytes, parts))))

    def get_write_buffer_size(self) -> int:
        self.log.append(("get_write_buffer_size", self.name))
        return self.buffered

    def is_closing(self) -> bool:
        self.log.append(("is_closing", self.name))
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return object() if self.tls else None
        if name == "socket" and self.fd is not None:
            return PipeSocket(self.fd)
        return default


class PipeSocket:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


class State:
    def __init__(self) -> None:
        self.state = 1


class WsWorld:
    """Writers over WebSocketSinks; each transport's socket is a small non-blocking pipe."""

    def __init__(self, impl: ModuleType, spec: list[tuple[Any, ...]]) -> None:
        self.impl = impl
        self.log: list[tuple[Any, ...]] = []
        self.loop = LogLoop(self.log)
        self.flusher = impl.Flusher(self.loop)
        self.pipes: list[tuple[int, int]] = []
        self.transports, self.conns, self.writers = [], [], []
        for i, (kind, opcode, q, b, f) in enumerate(spec):
            fd = None
            if kind != "none":
                r, w = os.pipe()
                os.set_blocking(r, False)
                os.set_blocking(w, False)
                fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
                self.pipes.append((r, w))
                fd = w
            else:
                self.pipes.append((-1, -1))
            transport = LogTransport(i, self.log, fd, kind == "tls")
            conn = State()
            sink = impl.WebSocketSink(
                transport, opcode, conn, 1, lambda i=i: self.log.append(("on_slow", i))
            )
            self.transports.append(transport)
            self.conns.append(conn)
            self.writers.append(
                impl.Writer(sink, self.flusher, max_queue_size=q, max_batch=b, max_frame_size=f)
            )
        self.tick = 0

    def close(self) -> None:
        for r, w in self.pipes:
            if r >= 0:
                os.close(r)
                os.close(w)

    def apply(self, op: tuple[Any, ...]) -> Any:
        kind, i = op[0], op[1] % len(self.writers) if len(op) > 1 else 0
        try:
            if kind == "enqueue":
                self.tick += 1
                return self.writers[i].enqueue(payload(self.tick, op[2]))
            if kind == "tick":
                self.loop.run_once()
            elif kind == "flush_all":
                self.flusher.flush()
            elif kind == "flush_one":
                self.writers[i].flush()
            elif kind == "close":
                self.writers[i].close()
            elif kind == "buffered":
                self.transports[i].buffered = op[2]
            elif kind == "closing":
                self.transports[i].closing = op[2]
            elif kind == "state":
                self.conns[i].state = op[2]
            elif kind == "read" and self.pipes[i][0] >= 0:
                try:
                    return ("read", os.read(self.pipes[i][0], op[2]))
                except BlockingIOError:
                    return ("read", b"")
            elif kind == "fill" and self.pipes[i][1] >= 0:
                try:
                    return ("fill", os.write(self.pipes[i][1], b"\0" * op[2]))
                except BlockingIOError:
                    return ("fill", -1)
            return None
        except Exception as exc:  # compared by type between the twins
            return ("raised", type(exc).__name__)

    def state(self) -> dict[str, Any]:
        return {
            "log": list(self.log),
            "flusher": (self.flusher.flushes, self.flusher.pending),
            "writers": [
                (
                    w.closed,
                    w.slow,
                    w.queued_bytes,
                    w.queued_messages,
                    w.messages_sent,
                    w.frames_sent,
                    w.bytes_sent,
                    w.sink is None,
                )
                for w in self.writers
            ],
        }


ws_spec = st.tuples(
    st.sampled_from(["pipe", "pipe", "none", "tls"]),  # the transport's socket
    st.sampled_from([1, 2]),  # OP_TEXT, OP_BINARY
    # max_queue_size: mostly roomy, so that writers live long enough to write
    st.one_of(st.just(0), st.just(1 << 20), st.integers(1, 20_000)),
    st.integers(1, 5),  # max_batch
    st.integers(1, 9000),  # max_frame_size
)
ws_operation = st.one_of(
    st.tuples(st.just("enqueue"), st.integers(0, 2), st.integers(0, 4200)),
    st.tuples(st.just("enqueue"), st.integers(0, 2), st.integers(0, 60)),
    # Frames around COPY_LIMIT: the largest that are copied (4,097 to 4,100
    # bytes) fit a one-page pipe only in part.
    st.tuples(st.just("enqueue"), st.integers(0, 2), st.integers(4090, 4097)),
    st.tuples(st.just("tick")),
    st.tuples(st.just("flush_all")),
    st.tuples(st.just("flush_one"), st.integers(0, 2)),
    st.tuples(st.just("close"), st.integers(0, 2)),
    st.tuples(
        st.just("buffered"), st.integers(0, 2), st.one_of(st.just(0), st.integers(0, 30_000))
    ),
    st.tuples(st.just("closing"), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("state"), st.integers(0, 2), st.sampled_from([1, 1, 2, 3])),
    st.tuples(st.just("read"), st.integers(0, 2), st.integers(1, 9000)),
    st.tuples(st.just("fill"), st.integers(0, 2), st.integers(1, 5000)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=st.lists(ws_spec, min_size=1, max_size=3),
    ops=st.lists(ws_operation, min_size=10, max_size=60),
)
def test_same_websocket_frames(spec: list[tuple[Any, ...]], ops: list[tuple[Any, ...]]) -> None:
    """Same transport calls, same bytes through the socket, same slow-client decisions."""
    assert compiled is not None
    ours, reference = WsWorld(compiled, spec), WsWorld(twin, spec)
    try:
        assert ours.state() == reference.state()
        for op in ops:
            got, expected = ours.apply(op), reference.apply(op)
            assert got == expected, op
            assert ours.state() == reference.state(), op
    finally:
        ours.close()
        reference.close()
