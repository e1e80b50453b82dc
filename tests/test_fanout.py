"""Fan-out core: writers, the per-tick flusher, subscribers and broadcast().

Every test runs against the compiled module and its pure-Python twin through
the ``fanout_impl`` fixture (ids ``cython`` / ``python``); the contract is the
docstring of ``rtcore._fanout_py``, the positioning rules are PROTOCOL.md §4.4.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import os
import socket
import tracemalloc
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from rtcore.frames import OP_BINARY, OP_TEXT, FrameParser, frame_header


# -- helpers -----------------------------------------------------------------------


class RecordingSink:
    """A Sink that records every call; ``buffered`` is what buffer_size() reports."""

    def __init__(self, buffered: int = 0) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.frames: list[list[bytes]] = []
        self.buffered = buffered
        self.slow_calls = 0

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        assert nbytes == sum(len(p) for p in payloads)
        self.frames.append(list(payloads))
        self.calls.append(("write_batch", tuple(payloads), nbytes))

    def buffer_size(self) -> int:
        self.calls.append(("buffer_size",))
        return self.buffered

    def on_slow(self) -> None:
        self.slow_calls += 1
        self.calls.append(("on_slow",))

    @property
    def messages(self) -> list[bytes]:
        return [m for frame in self.frames for m in frame]


class ManualTimer:
    def __init__(self, delay: float, callback: Callable[[], Any]) -> None:
        self.delay = delay
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualLoop:
    """Stands in for the event loop: collects call_soon callbacks, runs them on demand.

    ``call_later`` timers are kept in ``timers`` and run by :meth:`fire`.
    """

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], Any]] = []
        self.timers: list[ManualTimer] = []

    def call_soon(self, callback: Callable[[], Any]) -> None:
        self.callbacks.append(callback)

    def call_later(self, delay: float, callback: Callable[[], Any]) -> ManualTimer:
        timer = ManualTimer(delay, callback)
        self.timers.append(timer)
        return timer

    def fire(self) -> int:
        """Run the timers that are not cancelled (their delay has passed); returns their number."""
        timers, self.timers = self.timers, []
        live = [t for t in timers if not t.cancelled]
        for t in live:
            t.callback()
        return len(live)

    def run_once(self) -> int:
        """Run the callbacks scheduled so far (one loop iteration); returns their number."""
        callbacks, self.callbacks = self.callbacks, []
        for cb in callbacks:
            cb()
        return len(callbacks)


def make_writer(impl: ModuleType, loop: ManualLoop | None = None, buffered: int = 0, **limits: int):
    loop = loop if loop is not None else ManualLoop()
    flusher = impl.Flusher(loop)
    sink = RecordingSink(buffered)
    return impl.Writer(sink, flusher, **limits), sink, flusher, loop


def msg(i: int, size: int = 8) -> bytes:
    """A distinct delimited message of ``size`` bytes (JSON-line shaped)."""
    body = f'{{"n":{i}}}'.encode()
    return (body + b" " * max(0, size - len(body) - 1) + b"\n")[: max(size, 1)]


# -- writer: coalescing ---------------------------------------------------------------


def test_enqueue_never_writes_and_flushes_in_order(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, loop = make_writer(fanout_impl)
    payloads = [msg(i) for i in range(10)]
    for p in payloads:
        assert writer.enqueue(p) is True
    assert sink.calls == []
    assert (writer.queued_messages, writer.queued_bytes) == (10, 80)
    assert flusher.pending == 1  # registered once per tick, not per message
    assert len(loop.callbacks) == 1
    assert loop.run_once() == 1
    assert sink.calls == [("write_batch", tuple(payloads), 80), ("buffer_size",)]
    assert (writer.messages_sent, writer.frames_sent) == (10, 1)
    assert (writer.queued_messages, writer.queued_bytes) == (0, 0)
    assert flusher.flushes == 1 and flusher.pending == 0


def test_single_frame_hands_over_the_queued_list(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, _ = make_writer(fanout_impl)
    received: list[Any] = []
    sink.write_batch = lambda payloads, nbytes: received.append(payloads)  # type: ignore[method-assign]
    writer.enqueue(b"a\n")
    writer.enqueue(b"b\n")
    flusher.flush()
    assert received == [[b"a\n", b"b\n"]] and type(received[0]) is list


def test_max_batch_boundaries(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, _ = make_writer(fanout_impl, max_batch=3)
    payloads = [msg(i) for i in range(7)]
    for p in payloads:
        writer.enqueue(p)
    flusher.flush()
    assert [len(f) for f in sink.frames] == [3, 3, 1]
    assert sink.messages == payloads
    assert (writer.frames_sent, writer.messages_sent) == (3, 7)


def test_bytes_sent_counts_the_payloads_of_every_frame(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, _ = make_writer(fanout_impl, max_batch=2, max_frame_size=20)
    writer.enqueue(msg(0, 7))  # one message alone
    flusher.flush()
    assert writer.bytes_sent == 7
    for i, size in enumerate([8, 8, 4, 30, 1, 2, 3], start=1):
        writer.enqueue(msg(i, size))
    flusher.flush()
    nbytes = [c[2] for c in sink.calls if c[0] == "write_batch"]
    assert nbytes == [7, 16, 4, 30, 3, 3]
    assert writer.bytes_sent == sum(nbytes) == 7 + 56
    # What a closed or slow writer drops is not sent.
    writer.close()
    writer.enqueue(msg(9, 50))
    flusher.flush()
    slow, _, slow_flusher, _ = make_writer(fanout_impl, max_queue_size=10)
    slow.enqueue(msg(0, 11))
    slow_flusher.flush()
    assert (writer.bytes_sent, slow.bytes_sent, slow.slow) == (63, 0, True)


def test_max_batch_one_sends_every_message_alone(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, _ = make_writer(fanout_impl, max_batch=1)
    for i in range(4):
        writer.enqueue(msg(i))
    flusher.flush()
    assert [len(f) for f in sink.frames] == [1, 1, 1, 1]


def test_max_frame_size_boundaries(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, _ = make_writer(fanout_impl, max_frame_size=20)
    sizes = [8, 8, 4, 5, 10, 10, 1]
    payloads = [msg(i, s) for i, s in enumerate(sizes)]
    for p in payloads:
        writer.enqueue(p)
    flusher.flush()
    # 8+8+4 = 20 fits exactly; 5+10 = 15 (+10 would be 25); 10+1.
    assert [[len(p) for p in f] for f in sink.frames] == [[8, 8, 4], [5, 10], [10, 1]]
    assert [c[2] for c in sink.calls if c[0] == "write_batch"] == [20, 15, 11]
    assert sink.messages == payloads


def test_message_larger_than_max_frame_size_goes_alone(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, _ = make_writer(fanout_impl, max_frame_size=16)
    payloads = [msg(0, 4), msg(1, 100), msg(2, 4), msg(3, 4), msg(4, 17)]
    for p in payloads:
        writer.enqueue(p)
    flusher.flush()
    assert [[len(p) for p in f] for f in sink.frames] == [[4], [100], [4, 4], [17]]
    assert sink.messages == payloads


def test_both_limits_together(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, _ = make_writer(fanout_impl, max_batch=2, max_frame_size=10)
    for i, size in enumerate([3, 3, 3, 9, 2, 2, 2]):
        writer.enqueue(msg(i, size))
    flusher.flush()
    assert [[len(p) for p in f] for f in sink.frames] == [[3, 3], [3], [9], [2, 2], [2]]


@pytest.mark.parametrize("field", ["max_batch", "max_frame_size"])
@pytest.mark.parametrize("value", [0, -1])
def test_limits_are_validated(fanout_impl: ModuleType, field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        make_writer(fanout_impl, **{field: value})


def test_writer_defaults(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, _ = make_writer(fanout_impl)
    assert (writer.max_queue_size, writer.max_batch, writer.max_frame_size) == (1 << 20, 128, 65536)
    assert writer.sink is sink and writer.flusher is flusher
    assert (writer.closed, writer.slow, writer.messages_sent, writer.frames_sent) == (
        False,
        False,
        0,
        0,
    )
    assert writer.bytes_sent == 0


def test_limits_are_writable(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, _ = make_writer(fanout_impl)
    writer.max_batch = 2
    writer.max_frame_size = 1000
    writer.max_queue_size = 0
    for i in range(5):
        writer.enqueue(msg(i))
    flusher.flush()
    assert [len(f) for f in sink.frames] == [2, 2, 1]


# -- flusher: one round per loop tick ---------------------------------------------------


def test_flush_once_per_tick_in_an_event_loop(fanout_impl: ModuleType) -> None:
    async def scenario() -> None:
        flusher = fanout_impl.Flusher()
        writers = [fanout_impl.Writer(RecordingSink(), flusher) for _ in range(50)]
        for round_ in range(3):
            for i in range(20):
                for w in writers:
                    assert w.enqueue(msg(i))
            assert flusher.pending == len(writers)
            assert flusher.flushes == round_
            await asyncio.sleep(0)
            assert flusher.flushes == round_ + 1
            assert flusher.pending == 0
            for w in writers:
                # Everything queued in one tick left as one frame, in one write.
                assert w.sink.frames[round_:] == [[msg(i) for i in range(20)]]
                assert w.queued_messages == 0
        await asyncio.sleep(0)
        assert flusher.flushes == 3  # no empty rounds

    asyncio.run(scenario())


def test_flusher_binds_the_running_loop_lazily(fanout_impl: ModuleType) -> None:
    flusher = fanout_impl.Flusher()
    writer = fanout_impl.Writer(RecordingSink(), flusher)
    with pytest.raises(RuntimeError):
        writer.enqueue(b"x")  # no running loop and none given

    async def scenario() -> RecordingSink:
        flusher = fanout_impl.Flusher()
        sink = RecordingSink()
        fanout_impl.Writer(sink, flusher).enqueue(b"x\n")
        await asyncio.sleep(0)
        return sink

    assert asyncio.run(scenario()).frames == [[b"x\n"]]


def test_enqueue_during_flush_goes_to_the_next_tick(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, loop = make_writer(fanout_impl)
    original = sink.write_batch

    def write_batch(payloads: list[bytes], nbytes: int) -> None:
        original(payloads, nbytes)
        if len(sink.frames) == 1:
            assert writer.enqueue(b"late\n")

    sink.write_batch = write_batch  # type: ignore[method-assign]
    writer.enqueue(b"first\n")
    assert loop.run_once() == 1
    assert sink.frames == [[b"first\n"]]
    assert writer.queued_messages == 1 and flusher.pending == 1
    assert loop.run_once() == 1
    assert sink.frames == [[b"first\n"], [b"late\n"]]
    assert flusher.flushes == 2


def test_one_failing_sink_does_not_stall_the_others(fanout_impl: ModuleType) -> None:
    loop = ManualLoop()
    flusher = fanout_impl.Flusher(loop)
    sinks = [RecordingSink() for _ in range(3)]

    def broken(payloads: list[bytes], nbytes: int) -> None:
        raise OSError("broken sink")

    sinks[1].write_batch = broken  # type: ignore[method-assign]
    writers = [fanout_impl.Writer(s, flusher) for s in sinks]
    for w in writers:
        w.enqueue(b"m\n")
    with pytest.raises(OSError, match="broken sink"):
        flusher.flush()
    assert sinks[0].frames == [[b"m\n"]] and sinks[2].frames == [[b"m\n"]]
    # Every writer is usable again in the next tick.
    for w in writers:
        assert w.enqueue(b"n\n")
    assert flusher.pending == 3


def test_flusher_accepts_duck_typed_writers(fanout_impl: ModuleType) -> None:
    loop = ManualLoop()
    flusher = fanout_impl.Flusher(loop)
    flushed: list[int] = []

    class Other:
        def flush(self) -> None:
            flushed.append(1)

    flusher.add(Other())
    flusher.add(Other())
    assert flusher.pending == 2 and len(loop.callbacks) == 1
    loop.run_once()
    assert flushed == [1, 1] and flusher.flushes == 1


# -- flusher: optional write delay (client message batching) ------------------------------


def test_write_delay_gathers_several_ticks_into_one_write(fanout_impl: ModuleType) -> None:
    loop = ManualLoop()
    flusher = fanout_impl.Flusher(loop, delay=0.05)
    assert flusher.delay == 0.05
    sinks = [RecordingSink() for _ in range(3)]
    writers = [fanout_impl.Writer(s, flusher) for s in sinks]
    for tick in range(4):
        for w in writers:
            assert w.enqueue(msg(tick))
        assert loop.run_once() == 0  # nothing waits for the end of the tick
    assert [t.delay for t in loop.timers] == [0.05]  # one timer per round, not per writer
    assert all(s.calls == [] for s in sinks)
    assert loop.fire() == 1
    for s in sinks:
        assert s.frames == [[msg(t) for t in range(4)]]  # one write per connection
    assert flusher.flushes == 1 and flusher.pending == 0
    writers[0].enqueue(msg(9))
    assert len(loop.timers) == 1  # the next round has its own timer
    loop.fire()
    assert sinks[0].frames[-1] == [msg(9)]


def test_write_delay_round_flushed_early_cancels_its_timer(fanout_impl: ModuleType) -> None:
    loop = ManualLoop()
    flusher = fanout_impl.Flusher(loop, delay=1.0)
    sink = RecordingSink()
    writer = fanout_impl.Writer(sink, flusher)
    writer.enqueue(b"a\n")
    (timer,) = loop.timers
    flusher.flush()  # e.g. when the node closes
    assert sink.frames == [[b"a\n"]] and timer.cancelled
    writer.enqueue(b"b\n")
    assert loop.fire() == 1 and sink.frames == [[b"a\n"], [b"b\n"]]
    assert flusher.flushes == 2


def test_write_delay_zero_is_the_end_of_the_tick(fanout_impl: ModuleType) -> None:
    loop = ManualLoop()
    flusher = fanout_impl.Flusher(loop, delay=0)
    writer = fanout_impl.Writer(RecordingSink(), flusher)
    writer.enqueue(b"a\n")
    assert loop.timers == [] and loop.run_once() == 1
    assert writer.sink.frames == [[b"a\n"]]
    assert fanout_impl.Flusher().delay == 0.0


@pytest.mark.parametrize("delay", [-0.001, float("nan")])
def test_write_delay_is_validated(fanout_impl: ModuleType, delay: float) -> None:
    with pytest.raises(ValueError, match="delay must be >= 0"):
        fanout_impl.Flusher(delay=delay)


def test_write_delay_in_an_event_loop(fanout_impl: ModuleType) -> None:
    async def scenario() -> RecordingSink:
        flusher = fanout_impl.Flusher(delay=0.001)
        sink = RecordingSink()
        writer = fanout_impl.Writer(sink, flusher)
        for i in range(10):
            writer.enqueue(msg(i))
            await asyncio.sleep(0)
        while flusher.pending:
            await asyncio.sleep(0.001)
        return sink

    sink = asyncio.run(scenario())
    assert sink.messages == [msg(i) for i in range(10)]


# -- slow clients -----------------------------------------------------------------------


def test_queue_overflow_marks_slow_and_calls_on_slow_once(fanout_impl: ModuleType) -> None:
    loop = ManualLoop()
    slow, slow_sink, flusher, _ = make_writer(fanout_impl, loop, max_queue_size=100)
    fast_sink = RecordingSink()
    fast = fanout_impl.Writer(fast_sink, flusher, max_queue_size=10_000)
    for i in range(3):
        assert slow.enqueue(msg(i, 30)) and fast.enqueue(msg(i, 30))
    assert slow.queued_bytes == 90
    assert slow.enqueue(msg(3, 30)) is False  # 120 > 100
    assert fast.enqueue(msg(3, 30)) is True
    assert (slow.slow, slow.closed, slow.queued_bytes, slow.queued_messages) == (True, True, 0, 0)
    assert slow_sink.calls == []  # on_slow waits for the flush, never inside enqueue
    assert slow.enqueue(msg(4)) is False  # refused from now on
    loop.run_once()
    assert slow_sink.calls == [("on_slow",)]
    assert slow.sink is None
    assert fast_sink.messages == [msg(i, 30) for i in range(4)]
    for i in range(5, 8):
        assert slow.enqueue(msg(i)) is False
        assert fast.enqueue(msg(i)) is True
    loop.run_once()
    slow.flush()
    flusher.flush()
    assert slow_sink.slow_calls == 1 and slow_sink.frames == []
    assert fast_sink.messages[-3:] == [msg(i) for i in range(5, 8)]
    assert (slow.messages_sent, fast.messages_sent) == (0, 7)


def test_queue_limit_is_inclusive(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, _ = make_writer(fanout_impl, max_queue_size=64)
    assert writer.enqueue(msg(0, 32)) and writer.enqueue(msg(1, 32))  # exactly 64: fine
    assert writer.enqueue(msg(2, 1)) is False


def test_zero_max_queue_size_means_no_limit(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, _ = make_writer(fanout_impl, buffered=1 << 40, max_queue_size=0)
    for i in range(1000):
        assert writer.enqueue(msg(i, 1000))
    flusher.flush()
    assert not writer.slow and len(sink.messages) == 1000
    assert ("buffer_size",) not in sink.calls  # the transport is not even asked


def test_transport_buffer_over_limit_is_detected_at_flush(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, loop = make_writer(fanout_impl, buffered=0, max_queue_size=100)
    writer.enqueue(msg(0))
    loop.run_once()
    assert not writer.slow
    sink.buffered = 101  # the peer stopped reading
    assert writer.enqueue(msg(1))  # the queue itself is small
    assert not writer.slow
    loop.run_once()
    # Written, then the buffer check marks it slow and schedules the on_slow round.
    assert sink.messages == [msg(0), msg(1)]
    assert (writer.slow, writer.closed) == (True, True)
    assert sink.slow_calls == 0 and flusher.pending == 1
    assert writer.enqueue(msg(2)) is False
    loop.run_once()
    assert sink.slow_calls == 1 and sink.calls[-1] == ("on_slow",)
    loop.run_once()
    assert sink.slow_calls == 1


def test_transport_buffer_at_limit_is_fine(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, loop = make_writer(fanout_impl, buffered=100, max_queue_size=100)
    writer.enqueue(msg(0))
    loop.run_once()
    assert not writer.slow and loop.callbacks == []


# -- close ---------------------------------------------------------------------------------


def test_close_drops_the_queue(fanout_impl: ModuleType) -> None:
    writer, sink, flusher, loop = make_writer(fanout_impl)
    for i in range(5):
        writer.enqueue(msg(i))
    writer.close()
    assert (writer.closed, writer.slow, writer.queued_messages, writer.queued_bytes) == (
        True,
        False,
        0,
        0,
    )
    assert writer.enqueue(msg(9)) is False
    loop.run_once()
    # The writer lets go of its sink (which leads back to the session).
    assert sink.calls == [] and writer.sink is None
    assert writer.messages_sent == 0


# -- subscribers and broadcast -----------------------------------------------------------


def make_subscribers(impl: ModuleType, n: int, loop: ManualLoop | None = None, codec: int = 0):
    loop = loop if loop is not None else ManualLoop()
    flusher = impl.Flusher(loop)
    subs = {}
    for i in range(n):
        writer = impl.Writer(RecordingSink(), flusher)
        subs[f"client-{i}"] = impl.Subscriber(writer, codec, f"session-{i}", "chat:room")
    return subs, flusher, loop


def test_subscriber_fields_default_and_are_writable(fanout_impl: ModuleType) -> None:
    writer, *_ = make_writer(fanout_impl)
    sub = fanout_impl.Subscriber(writer, 1, "session", "chat:room")
    assert (sub.writer, sub.codec, sub.session, sub.channel) == (writer, 1, "session", "chat:room")
    assert (sub.positioned, sub.offset, sub.epoch, sub.buffer, sub.join_leave) == (
        False,
        0,
        "",
        None,
        False,
    )
    other, *_ = make_writer(fanout_impl)
    sub.writer, sub.codec, sub.session, sub.channel = other, 0, {"s": 1}, "news"
    sub.positioned, sub.offset, sub.epoch, sub.buffer, sub.join_leave = True, 42, "abcd", [], True
    assert (sub.writer, sub.codec, sub.session, sub.channel) == (other, 0, {"s": 1}, "news")
    assert (sub.positioned, sub.offset, sub.epoch, sub.buffer, sub.join_leave) == (
        True,
        42,
        "abcd",
        [],
        True,
    )
    sub.buffer = None
    assert sub.buffer is None


def test_broadcast_encodes_nothing_and_shares_the_payload(fanout_impl: ModuleType) -> None:
    subs, flusher, loop = make_subscribers(fanout_impl, 100)
    payload = b'{"push":{"channel":"chat:room","pub":{"data":{}}}}\n'
    assert fanout_impl.broadcast(subs.values(), [payload, None], 0, "", object()) is None
    assert flusher.pending == 100 and len(loop.callbacks) == 1
    loop.run_once()
    for sub in subs.values():
        (frame,) = sub.writer.sink.frames
        assert frame == [payload] and frame[0] is payload


def test_ordering_under_many_publishes(fanout_impl: ModuleType) -> None:
    subs, flusher, loop = make_subscribers(fanout_impl, 25)
    for i, sub in enumerate(subs.values()):
        sub.writer.max_batch = 1 + i % 7
        sub.writer.max_frame_size = 40 + 13 * i
        sub.positioned = i % 2 == 0
        sub.epoch = "e1" if i % 4 == 0 else ""
    sent: list[bytes] = []
    for offset in range(1, 2001):
        payload = msg(offset, 10 + offset % 30)
        sent.append(payload)
        assert fanout_impl.broadcast(subs.values(), (payload, None), offset, "e1", None) is None
        if offset % 97 == 0:
            loop.run_once()  # publishes spread over several ticks
    loop.run_once()
    for sub in subs.values():
        assert sub.writer.sink.messages == sent
        assert sub.writer.messages_sent == 2000
        if sub.positioned:
            assert (sub.offset, sub.epoch) == (2000, "e1")
        else:
            assert sub.offset == 0


def test_ordering_with_a_list_of_subscribers_and_a_generator(fanout_impl: ModuleType) -> None:
    subs, flusher, loop = make_subscribers(fanout_impl, 5)
    for i in range(10):
        fanout_impl.broadcast(list(subs.values()), [msg(i)], 0, "", None)
        fanout_impl.broadcast((s for s in subs.values()), [msg(100 + i)], 0, "", None)
    loop.run_once()
    expected = [m for i in range(10) for m in (msg(i), msg(100 + i))]
    assert all(s.writer.sink.messages == expected for s in subs.values())


def positioned_sub(impl: ModuleType, offset: int, epoch: str):
    subs, flusher, loop = make_subscribers(impl, 1)
    (sub,) = subs.values()
    sub.positioned, sub.offset, sub.epoch = True, offset, epoch
    return sub, loop


@pytest.mark.parametrize(
    ("sub_offset", "sub_epoch", "pub_offset", "pub_epoch", "action", "delivered", "after"),
    [
        # The next offset in the same epoch: delivered, position advances.
        (5, "e1", 6, "e1", None, True, (6, "e1")),
        # A gap: insufficient state, nothing delivered, position kept.
        (5, "e1", 7, "e1", "insufficient", False, (5, "e1")),
        (5, "e1", 1000, "e1", "insufficient", False, (5, "e1")),
        # Epoch change: insufficient state even when the offset follows.
        (5, "e1", 6, "e2", "insufficient", False, (5, "e1")),
        # Stale duplicates (already delivered): silently dropped.
        (5, "e1", 5, "e1", None, False, (5, "e1")),
        (5, "e1", 2, "e1", None, False, (5, "e1")),
        # No epoch yet (subscribed to an empty channel): the stream's is adopted.
        (0, "", 1, "e9", None, True, (1, "e9")),
        # Adopted even when the offset then turns out to be a gap.
        (0, "", 3, "e9", "insufficient", False, (0, "e9")),
        # Offset 0: the channel keeps no history; positioning does not apply.
        (5, "e1", 0, "e2", None, True, (5, "e1")),
        (5, "e1", 0, "", None, True, (5, "e1")),
        # Offsets beyond 2**32 (64-bit stream positions).
        ((1 << 40), "e1", (1 << 40) + 1, "e1", None, True, ((1 << 40) + 1, "e1")),
        ((1 << 63), "e1", (1 << 63) + 2, "e1", "insufficient", False, ((1 << 63), "e1")),
        (0, "e1", (1 << 64) - 1, "e1", "insufficient", False, (0, "e1")),
    ],
)
def test_positioning_rules(
    fanout_impl: ModuleType,
    sub_offset: int,
    sub_epoch: str,
    pub_offset: int,
    pub_epoch: str,
    action: str | None,
    delivered: bool,
    after: tuple[int, str],
) -> None:
    sub, loop = positioned_sub(fanout_impl, sub_offset, sub_epoch)
    result = fanout_impl.broadcast([sub], [b"p\n"], pub_offset, pub_epoch, None)
    if action is None:
        assert result is None
    else:
        assert result == [(sub, fanout_impl.ACTION_INSUFFICIENT_STATE)]
        assert result[0][0] is sub
    loop.run_once()
    assert sub.writer.sink.messages == ([b"p\n"] if delivered else [])
    assert (sub.offset, sub.epoch) == after


def test_unpositioned_subscribers_ignore_positions(fanout_impl: ModuleType) -> None:
    subs, flusher, loop = make_subscribers(fanout_impl, 1)
    (sub,) = subs.values()
    for offset, epoch in [(7, "a"), (3, "b"), (100, "a"), (100, "a")]:
        assert fanout_impl.broadcast([sub], [msg(offset)], offset, epoch, None) is None
    loop.run_once()
    assert len(sub.writer.sink.messages) == 4
    assert (sub.offset, sub.epoch) == (0, "")


def test_actions_are_reported_in_subscriber_order(fanout_impl: ModuleType) -> None:
    subs, flusher, loop = make_subscribers(fanout_impl, 6)
    s = list(subs.values())
    s[0].positioned, s[0].offset, s[0].epoch = True, 1, "e"  # follows: delivered
    s[1].positioned, s[1].offset, s[1].epoch = True, 0, "e"  # gap
    s[2].codec = 1  # no payload for its codec
    s[3].positioned, s[3].offset, s[3].epoch = True, 1, "x"  # other epoch
    s[4].codec = -1  # Python indexing: the last codec
    result = fanout_impl.broadcast(s, [b"json\n", None], 2, "e", None)
    insufficient = fanout_impl.ACTION_INSUFFICIENT_STATE
    inappropriate = fanout_impl.ACTION_INAPPROPRIATE_PROTOCOL
    assert result == [
        (s[1], insufficient),
        (s[2], inappropriate),
        (s[3], insufficient),
        (s[4], inappropriate),
    ]
    loop.run_once()
    assert [len(x.writer.sink.messages) for x in s] == [1, 0, 0, 0, 0, 1]


def test_action_constants(fanout_impl: ModuleType) -> None:
    assert fanout_impl.ACTION_INSUFFICIENT_STATE == 1
    assert fanout_impl.ACTION_INAPPROPRIATE_PROTOCOL == 2
    assert type(fanout_impl.ACTION_INSUFFICIENT_STATE) is int


def test_none_payload_is_inappropriate_protocol(fanout_impl: ModuleType) -> None:
    subs, flusher, loop = make_subscribers(fanout_impl, 3, codec=1)
    result = fanout_impl.broadcast(subs.values(), [b"json\n", None], 0, "", None)
    assert result == [(s, fanout_impl.ACTION_INAPPROPRIATE_PROTOCOL) for s in subs.values()]
    assert flusher.pending == 0 and loop.callbacks == []


def test_codec_out_of_range_raises(fanout_impl: ModuleType) -> None:
    subs, flusher, loop = make_subscribers(fanout_impl, 1, codec=2)
    with pytest.raises(IndexError):
        fanout_impl.broadcast(subs.values(), [b"a\n", b"b"], 0, "", None)


def test_buffering_during_subscribe(fanout_impl: ModuleType) -> None:
    subs, flusher, loop = make_subscribers(fanout_impl, 2)
    subscribing, live = subs.values()
    subscribing.positioned, subscribing.offset, subscribing.epoch = True, 1, "e"
    subscribing.buffer = []
    pubs = [object() for _ in range(4)]
    for i, pub in enumerate(pubs):
        # Even a gap or an epoch change is only recorded while buffering.
        epoch = "e" if i < 3 else "other"
        assert fanout_impl.broadcast(subs.values(), [msg(i), None], 10 + i, epoch, pub) is None
    assert subscribing.buffer == [
        (pubs[0], 10, "e"),
        (pubs[1], 11, "e"),
        (pubs[2], 12, "e"),
        (pubs[3], 13, "other"),
    ]
    assert subscribing.buffer[0][0] is pubs[0]
    assert (subscribing.offset, subscribing.epoch) == (1, "e")
    loop.run_once()
    assert subscribing.writer.sink.messages == []
    assert live.writer.sink.messages == [msg(i) for i in range(4)]
    # Subscribe done: live delivery resumes.
    subscribing.buffer = None
    subscribing.offset = 13
    subscribing.epoch = "other"
    fanout_impl.broadcast(subs.values(), [msg(4), None], 14, "other", None)
    loop.run_once()
    assert subscribing.writer.sink.messages == [msg(4)]


def test_buffering_ignores_the_codec(fanout_impl: ModuleType) -> None:
    subs, flusher, loop = make_subscribers(fanout_impl, 1, codec=1)
    (sub,) = subs.values()
    sub.buffer = []
    assert fanout_impl.broadcast(subs.values(), [b"x\n", None], 0, "", "pub") is None
    assert sub.buffer == [("pub", 0, "")]


def test_broadcast_to_closed_and_slow_writers(fanout_impl: ModuleType) -> None:
    subs, flusher, loop = make_subscribers(fanout_impl, 3)
    a, b, c = subs.values()
    b_sink = b.writer.sink
    b.writer.close()
    c.writer.max_queue_size = 5
    assert fanout_impl.broadcast(subs.values(), [b"0123456789\n"], 0, "", None) is None
    loop.run_once()
    assert a.writer.sink.messages == [b"0123456789\n"]
    assert b_sink.calls == [] and b.writer.sink is None
    assert c.writer.slow and c.writer.sink is None


def test_broadcast_accepts_duck_typed_subscribers(fanout_impl: ModuleType) -> None:
    """Any object with the Subscriber attributes works (the generic path)."""
    subs, flusher, loop = make_subscribers(fanout_impl, 1)
    (real,) = subs.values()
    enqueued: list[bytes] = []

    class FakeWriter:
        def enqueue(self, payload: bytes) -> bool:
            enqueued.append(payload)
            return True

    class FakeSub:
        writer = FakeWriter()
        codec = 0
        positioned = True
        offset = 1
        epoch = "e"
        buffer = None

    fake = FakeSub()
    gap = FakeSub()
    gap.offset = 0
    assert fanout_impl.broadcast([fake, real, gap], [b"m\n"], 2, "e", None) == [
        (gap, fanout_impl.ACTION_INSUFFICIENT_STATE)
    ]
    assert enqueued == [b"m\n"] and fake.offset == 2
    loop.run_once()
    assert real.writer.sink.messages == [b"m\n"]


def test_broadcast_honours_writer_subclasses(fanout_impl: ModuleType) -> None:
    seen: list[bytes] = []

    class CountingWriter(fanout_impl.Writer):  # type: ignore[misc, name-defined]
        def enqueue(self, payload: bytes) -> bool:
            seen.append(payload)
            return super().enqueue(payload)

    loop = ManualLoop()
    flusher = fanout_impl.Flusher(loop)
    sink = RecordingSink()
    sub = fanout_impl.Subscriber(CountingWriter(sink, flusher), 0, None, "c")
    fanout_impl.broadcast([sub], [b"x\n"], 0, "", None)
    loop.run_once()
    assert seen == [b"x\n"] and sink.messages == [b"x\n"]


def test_non_bytes_payloads(fanout_impl: ModuleType) -> None:
    subs, flusher, loop = make_subscribers(fanout_impl, 2)
    payload = bytearray(b"abc\n")
    fanout_impl.broadcast(subs.values(), [payload], 0, "", None)
    (a, b) = subs.values()
    assert a.writer.queued_bytes == 4
    loop.run_once()
    assert a.writer.sink.calls[0] == ("write_batch", (payload,), 4)


# -- memory ---------------------------------------------------------------------------------


def _churn(impl: ModuleType, n: int) -> None:
    """Create, use and drop ``n`` writers and subscribers (with reference cycles)."""
    loop = ManualLoop()
    flusher = impl.Flusher(loop)
    subs = {}
    for i in range(n):
        sink = RecordingSink()
        writer = impl.Writer(sink, flusher, max_queue_size=64 if i % 10 == 1 else 4096)
        sub = impl.Subscriber(writer, 0, sink, f"chan-{i % 7}")
        # Session <-> writer cycle, as in a real session.
        sink.session = sub  # type: ignore[attr-defined]
        sub.positioned = i % 3 == 0
        sub.buffer = [] if i % 5 == 0 else None
        subs[i] = sub
    for offset in range(1, 7):
        impl.broadcast(subs.values(), [msg(offset, 40), None], offset, "epoch", object())
        if offset % 2 == 0:
            loop.run_once()  # two messages per tick: the 64-byte writers overflow
    for sub in list(subs.values())[::2]:
        sub.writer.close()
    impl.broadcast(subs.values(), [msg(9, 40), None], 0, "", None)
    loop.run_once()
    assert sum(s.writer.slow for s in subs.values()) == n // 10


def test_memory_returns_to_baseline(fanout_impl: ModuleType) -> None:
    _churn(fanout_impl, 50)  # warm caches and interned strings
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            _churn(fanout_impl, 1000)
        peak = tracemalloc.get_traced_memory()[1]
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # 1,000 writers/subscribers with queued messages take well over 300 KiB...
    assert peak - baseline > 300 * 1024
    # ...and all of it comes back (the margin covers allocator noise only).
    assert after - baseline < 64 * 1024, (baseline, peak, after)


# -- WebSocketSink: frames written from C (compiled) or by the twin ---------------------------

OPEN = 1  # the state of a WebSocketConnection that may still send


class FakeSocket:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


class FakeTransport:
    """An asyncio transport that records calls; ``fd`` stands for its socket."""

    def __init__(self, fd: int | None = None, *, buffered: int = 0, tls: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fd = fd
        self.buffered = buffered
        self.tls = tls
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, parts: Any) -> None:
        self.calls.append(("writelines", list(parts)))

    def get_write_buffer_size(self) -> int:
        self.calls.append(("get_write_buffer_size",))
        return self.buffered

    def is_closing(self) -> bool:
        self.calls.append(("is_closing",))
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return object() if self.tls else None
        if name == "socket":
            return FakeSocket(self.fd) if self.fd is not None else None
        return default

    @property
    def written(self) -> bytes:
        """Everything handed to write/writelines, in order."""
        out = bytearray()
        for call in self.calls:
            if call[0] == "write":
                out += call[1]
            elif call[0] == "writelines":
                out += b"".join(call[1])
        return bytes(out)


class Conn:
    """The protocol state a WebSocketSink asks whether it may still write."""

    def __init__(self) -> None:
        self.state = OPEN


@contextlib.contextmanager
def pipe(capacity: int | None = None) -> Iterator[tuple[int, int]]:
    """A non-blocking pipe (read end, write end): a socket whose bytes can be read back."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    if capacity is not None:
        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), capacity)
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


def drain(fd: int) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


def ws_writer(impl: ModuleType, transport: FakeTransport, opcode: int = OP_TEXT, **limits: int):
    slow: list[int] = []
    loop = ManualLoop()
    flusher = impl.Flusher(loop)
    sink = impl.WebSocketSink(transport, opcode, Conn(), OPEN, lambda: slow.append(1))
    return impl.Writer(sink, flusher, **limits), sink, loop, slow


JSON_BATCH = [b'{"id":1,"connect":{"client":"c"}}\n', b'{"push":{"channel":"a","pub":{}}}\n']
PROTOBUF_BATCH = [bytes([5]) + b"\x08\x01\x12\x01x", bytes([3]) + b"\x0a\x01a"]


@pytest.mark.parametrize(
    ("opcode", "batch"),
    [(OP_TEXT, JSON_BATCH), (OP_BINARY, PROTOBUF_BATCH), (OP_TEXT, JSON_BATCH[:1])],
    ids=["json", "protobuf", "json-one"],
)
def test_websocket_sink_writes_one_frame_per_batch(
    fanout_impl: ModuleType, opcode: int, batch: list[bytes]
) -> None:
    """The bytes on the wire: one unmasked frame, header + the delimited messages joined."""
    transport = FakeTransport()
    writer, sink, loop, _ = ws_writer(fanout_impl, transport, opcode)
    assert sink.direct is False  # no socket: everything goes through the transport
    for payload in batch:
        writer.enqueue(payload)
    loop.run_once()
    frame = frame_header(opcode, sum(map(len, batch))) + b"".join(batch)
    assert transport.calls == [("write", frame), ("get_write_buffer_size",)]
    parser = FrameParser(is_server=False)
    assert parser.feed_data(frame) == [(opcode, b"".join(batch))]
    assert (writer.frames_sent, writer.messages_sent) == (1, len(batch))


def test_websocket_sink_bytes_sent_leave_out_the_frame_headers(fanout_impl: ModuleType) -> None:
    """The compiled writer counts in C what the twin counts in Python: the payloads."""
    with pipe(1 << 20) as (r, w):
        transport = FakeTransport(w)
        writer, _, loop, _ = ws_writer(fanout_impl, transport, max_batch=3)
        rounds = [[msg(0, 40)], [msg(1, 10), msg(2, 20), msg(3, 30), msg(4, 5)], [msg(5, 6000)]]
        headers = 0
        for batch in rounds:
            for m in batch:
                writer.enqueue(m)
            loop.run_once()
            frames = [batch] if len(batch) < 4 else [batch[:3], batch[3:]]
            headers += sum(len(frame_header(OP_TEXT, sum(map(len, f)))) for f in frames)
        wire = drain(r) + transport.written  # large frames go through writelines
        assert writer.bytes_sent == 40 + 65 + 6000 == len(wire) - headers
        assert writer.frames_sent == 4


def test_websocket_sink_frames_follow_the_batch_limits(fanout_impl: ModuleType) -> None:
    transport = FakeTransport()
    writer, _, loop, _ = ws_writer(fanout_impl, transport, max_batch=2, max_frame_size=64)
    payloads = [msg(i, 20) for i in range(5)] + [msg(5, 100)]
    for p in payloads:
        writer.enqueue(p)
    loop.run_once()
    groups = [payloads[0:2], payloads[2:4], payloads[4:5], payloads[5:6]]
    expected = [("write", frame_header(OP_TEXT, sum(map(len, g))) + b"".join(g)) for g in groups]
    assert transport.calls == [*expected, ("get_write_buffer_size",)]


def test_websocket_sink_writes_to_the_socket_when_the_transport_is_empty(
    fanout_impl: ModuleType,
) -> None:
    with pipe() as (r, w):
        transport = FakeTransport(w)
        writer, sink, loop, _ = ws_writer(fanout_impl, transport, OP_BINARY)
        assert sink.direct is True
        writer.enqueue(PROTOBUF_BATCH[0])
        writer.enqueue(PROTOBUF_BATCH[1])
        loop.run_once()
        frame = frame_header(OP_BINARY, 10) + b"".join(PROTOBUF_BATCH)
        assert drain(r) == frame
        # Nothing left in the transport: no buffer check after the write.
        assert transport.calls == [("is_closing",), ("get_write_buffer_size",)]
        assert not writer.slow


@pytest.mark.parametrize("reason", ["buffered", "closing", "tls"])
def test_websocket_sink_uses_the_transport_when_it_must(
    fanout_impl: ModuleType, reason: str
) -> None:
    """Bytes already buffered must go first; a closing transport drops writes; TLS encrypts."""
    with pipe() as (r, w):
        transport = FakeTransport(w, buffered=7 if reason == "buffered" else 0, tls=reason == "tls")
        transport.closing = reason == "closing"
        writer, sink, loop, _ = ws_writer(fanout_impl, transport)
        assert sink.direct is (reason != "tls")
        writer.enqueue(b"x\n")
        loop.run_once()
        assert drain(r) == b""
        frame = frame_header(OP_TEXT, 2) + b"x\n"
        checks = {
            "buffered": [("is_closing",), ("get_write_buffer_size",)],
            "closing": [("is_closing",)],
            "tls": [],
        }[reason]
        assert transport.calls == [*checks, ("write", frame), ("get_write_buffer_size",)]


def test_websocket_sink_hands_what_the_socket_refuses_to_the_transport(
    fanout_impl: ModuleType,
) -> None:
    with pipe(capacity=4096) as (r, w):
        transport = FakeTransport(w)
        writer, _, loop, _ = ws_writer(fanout_impl, transport, max_frame_size=1 << 20)
        os.write(w, b"\0" * 1000)
        big = b"b" * 4095 + b"\n"  # a 4,100-byte frame: the pipe takes only part of it
        writer.enqueue(big)
        loop.run_once()
        frame = frame_header(OP_TEXT, len(big)) + big
        head = drain(r)[1000:]
        assert 0 < len(head) < len(frame)
        assert transport.calls == [
            ("is_closing",),
            ("get_write_buffer_size",),
            ("write", frame[len(head) :]),
            ("get_write_buffer_size",),
        ]
        # A full socket (EAGAIN): the whole frame goes to the transport.
        transport.calls.clear()
        while True:
            try:
                os.write(w, b"\0")
            except BlockingIOError:
                break
        writer.enqueue(b"y\n")
        loop.run_once()
        assert transport.calls[2] == ("write", frame_header(OP_TEXT, 2) + b"y\n")


def test_websocket_sink_gathers_large_frames_without_copying(fanout_impl: ModuleType) -> None:
    with pipe() as (r, w):
        transport = FakeTransport(w)
        writer, _, loop, _ = ws_writer(fanout_impl, transport, max_frame_size=1 << 20)
        payloads = [bytes([97 + i]) * 3000 + b"\n" for i in range(2)]
        for p in payloads:
            writer.enqueue(p)
        loop.run_once()
        assert drain(r) == b""
        ((name, parts), last) = transport.calls
        assert name == "writelines" and last == ("get_write_buffer_size",)
        assert parts[0] == frame_header(OP_TEXT, 6002)
        assert parts[1] is payloads[0] and parts[2] is payloads[1]


def test_websocket_sink_writes_nothing_once_the_connection_is_not_open(
    fanout_impl: ModuleType,
) -> None:
    with pipe() as (r, w):
        transport = FakeTransport(w)
        writer, sink, loop, _ = ws_writer(fanout_impl, transport)
        sink.conn.state = 2  # CLOSING: a close frame went out
        writer.enqueue(b"late\n")
        loop.run_once()
        assert drain(r) == b"" and transport.calls == [("get_write_buffer_size",)]
        assert (writer.frames_sent, writer.messages_sent) == (1, 1)


def test_websocket_sink_slow_client(fanout_impl: ModuleType) -> None:
    transport = FakeTransport(buffered=0)
    writer, sink, loop, slow = ws_writer(fanout_impl, transport, max_queue_size=100)
    writer.enqueue(b"a\n")
    loop.run_once()
    assert not writer.slow
    transport.buffered = 101  # the peer stopped reading
    writer.enqueue(b"b\n")
    loop.run_once()
    assert writer.slow and slow == []  # on_slow waits for the next round
    assert writer.enqueue(b"c\n") is False
    loop.run_once()
    assert slow == [1] and writer.sink is None
    loop.run_once()
    assert slow == [1]


def test_websocket_sink_non_bytes_payloads(fanout_impl: ModuleType) -> None:
    with pipe() as (r, w):
        transport = FakeTransport(w)
        writer, _, loop, _ = ws_writer(fanout_impl, transport)
        writer.enqueue(bytearray(b"ab\n"))
        writer.enqueue(memoryview(b"cd\n"))
        loop.run_once()
        assert drain(r) == frame_header(OP_TEXT, 6) + b"ab\ncd\n"


def test_websocket_sink_called_directly(fanout_impl: ModuleType) -> None:
    transport = FakeTransport()
    called: list[int] = []
    sink = fanout_impl.WebSocketSink(transport, OP_TEXT, Conn(), OPEN, lambda: called.append(1))
    assert (sink.transport, sink.opcode, sink.open_state) == (transport, OP_TEXT, OPEN)
    sink.write_batch((b"a\n", b"b\n"), 4)
    transport.buffered = 9
    assert sink.buffer_size() == 9
    sink.on_slow()
    assert called == [1]
    assert transport.calls == [
        ("write", frame_header(OP_TEXT, 4) + b"a\nb\n"),
        ("get_write_buffer_size",),
    ]
    with pytest.raises(ValueError, match="negative length"):
        sink.write_batch([b"a"], -1)
    for opcode in (-1, 16):
        with pytest.raises(ValueError, match="opcode out of range"):
            fanout_impl.WebSocketSink(transport, opcode, Conn(), OPEN, lambda: None)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_websocket_sink_on_real_transports(fanout_impl: ModuleType, loop_kind: str) -> None:
    """A socket pair under asyncio's and uvloop's own transports: the bytes arrive in
    order, and a peer that stops reading makes the writer slow."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ours, peer = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        slow: list[int] = []
        sink = fanout_impl.WebSocketSink(transport, OP_TEXT, Conn(), OPEN, lambda: slow.append(1))
        assert sink.direct is True
        writer = fanout_impl.Writer(sink, fanout_impl.Flusher(), max_queue_size=200_000)
        try:
            expected = bytearray()
            for i in range(50):
                batch = [msg(i * 3 + k, 30) for k in range(1 + i % 3)]
                for m in batch:
                    writer.enqueue(m)
                expected += frame_header(OP_TEXT, sum(map(len, batch))) + b"".join(batch)
                await asyncio.sleep(0)
            received = bytearray()
            peer.setblocking(False)
            while len(received) < len(expected):
                try:
                    received += peer.recv(1 << 16)
                except BlockingIOError:
                    await asyncio.sleep(0.01)
            assert bytes(received) == bytes(expected)
            # The peer stops reading: the transport buffers, then the writer gives up.
            chunk = b"z" * 3999 + b"\n"
            for _ in range(200):
                if writer.slow:
                    break
                writer.enqueue(chunk)
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert writer.slow and slow == [1]
        finally:
            transport.abort()
            peer.close()
            await asyncio.sleep(0)

    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(scenario())
    else:
        asyncio.run(scenario())
