"""A timer wheel shared by many objects: no handle, task or future per object.

Objects are scheduled at an absolute monotonic time; one periodic task per
wheel wakes every ``tick`` seconds and calls ``obj.on_timer(now)`` for every
object whose time came. Scheduling again replaces the previous entry, so an
object with several deadlines (ping, pong, expiry) schedules the earliest and
re-schedules itself from ``on_timer``. Cost: O(1) per schedule/cancel and
O(due) per tick, whatever the number of objects.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol


__all__ = ["TimerWheel", "TimerTarget"]

logger = logging.getLogger("rtcore.engine.timers")


class TimerTarget(Protocol):
    def on_timer(self, now: float) -> None: ...


class TimerWheel:
    """Buckets of objects keyed by the tick in which they are due."""

    __slots__ = ("tick", "now", "_buckets", "_where", "_task", "_last")

    def __init__(self, tick: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        if tick <= 0:
            raise ValueError("tick must be > 0")
        self.tick = tick
        # now(): monotonic seconds on the wheel's clock (the clock itself, not
        # a method around it: it is read several times per connection).
        self.now: Callable[[], float] = clock
        self._buckets: dict[int, set[TimerTarget]] = {}
        self._where: dict[TimerTarget, int] = {}
        self._task: asyncio.Task[None] | None = None
        # The last slot swept: entries due at or before it go to the next one.
        self._last = math.floor(clock() / tick)

    def start(self) -> None:
        """Start the sweeping task on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def schedule(self, obj: TimerTarget, when: float) -> None:
        """Call ``obj.on_timer`` at (or within one tick after) monotonic time ``when``."""
        slot = max(math.ceil(when / self.tick), self._last + 1)
        old = self._where.get(obj)
        if old == slot:
            return
        if old is not None:
            self._drop(obj, old)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = set()
        bucket.add(obj)
        self._where[obj] = slot

    def schedule_in(self, obj: TimerTarget, delay: float) -> None:
        self.schedule(obj, self.now() + delay)

    def cancel(self, obj: TimerTarget) -> None:
        slot = self._where.pop(obj, None)
        if slot is not None:
            bucket = self._buckets.get(slot)
            if bucket is not None:
                bucket.discard(obj)
                if not bucket:
                    del self._buckets[slot]

    def _drop(self, obj: TimerTarget, slot: int) -> None:
        bucket = self._buckets.get(slot)
        if bucket is not None:
            bucket.discard(obj)
            if not bucket:
                del self._buckets[slot]

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, obj: object) -> bool:
        return obj in self._where

    def sweep(self, now: float | None = None) -> int:
        """Fire every due entry; returns how many fired."""
        if now is None:
            now = self.now()
        current = math.floor(now / self.tick)
        first = self._last + 1
        if current < first:
            return 0
        self._last = current
        if current - first > len(self._buckets):
            due = sorted(s for s in self._buckets if s <= current)
        else:
            due = [s for s in range(first, current + 1) if s in self._buckets]
        fired = 0
        for slot in due:
            for obj in self._buckets.pop(slot, ()):
                if self._where.get(obj) != slot:
                    continue
                del self._where[obj]
                fired += 1
                try:
                    obj.on_timer(now)
                except Exception:  # noqa: BLE001 - one bad target must not stop the wheel
                    logger.exception("timer callback failed")
        return fired

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self.sweep()
