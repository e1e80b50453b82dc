"""How late the event loop runs, and how long the cycle collector stops it.

Everything a node does runs on one event loop: a callback that takes a
second (a burst of handshakes, a full garbage collection over a large heap)
delays every reply, ping, timer and server API request of the process by
that second, and no other metric shows it. :class:`LoopMonitor` measures
both, for ``/metrics``:

* ``rtcore_event_loop_lag_seconds``: a timer due every ``interval`` seconds
  records how late it fired (about 0 on a loop that keeps up; an iteration
  of N seconds shows as an observation of about N);
* ``rtcore_gc_pause_seconds{generation}``: the duration of each collection
  of the cycle collector, by generation (2: a full collection).

``rtcore serve`` runs one per process while it serves; an embedding program
can start its own (``LoopMonitor().start()`` on its loop) and read it.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from rtcore.engine.stats import Histogram


__all__ = ["LoopMonitor", "current_monitor"]

# The monitor ``/metrics`` reports (the last one started in this process).
_current: LoopMonitor | None = None


def current_monitor() -> LoopMonitor | None:
    """The running monitor of this process, if any."""
    return _current


class LoopMonitor:
    """Event-loop lag and cycle-collector pauses, as histograms.

    Args:
        interval: seconds between two lag samples (each a timer callback).
    """

    __slots__ = ("interval", "lag", "gc_pauses", "_loop", "_handle", "_due", "_gc_started")

    def __init__(self, interval: float = 0.1) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.interval = interval
        self.lag = Histogram()
        # By generation: 0, 1 and 2 (full collections).
        self.gc_pauses = (Histogram(), Histogram(), Histogram())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._gc_started = 0.0

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        """Start sampling on the running loop, and timing collections (idempotent)."""
        global _current
        if self._handle is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._due = loop.time() + self.interval
        self._handle = loop.call_at(self._due, self._tick)
        # First, so that the collector's time is not counted with the other
        # callbacks' (the freeze policy's) work.
        gc.callbacks.insert(0, self._on_gc)
        _current = self

    def stop(self) -> None:
        global _current
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if _current is self:
            _current = None

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        self.lag.observe(max(0.0, now - self._due))
        self._due = now + self.interval
        self._handle = loop.call_at(self._due, self._tick)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        generation = info.get("generation", 2)
        if 0 <= generation <= 2 and self._gc_started:
            self.gc_pauses[generation].observe(time.perf_counter() - self._gc_started)
        self._gc_started = 0.0
