"""Deadlines swept from ordinary operations: the expiry of the memory engine's stores.

See :mod:`rtcore.engine.memory` for the scheme (a min-heap of one deadline
per key, popped ``sweep_batch`` at a time once ``sweep_interval`` passed).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar


__all__ = ["INF", "ExpiryQueue", "check_sweep_args"]

INF = float("inf")
_K = TypeVar("_K", bound=Hashable)


def check_sweep_args(sweep_interval: float, sweep_batch: int) -> None:
    """Raise ValueError unless the interval is positive and the batch at least 1."""
    if not sweep_interval > 0:
        raise ValueError(f"sweep_interval must be > 0 seconds, got {sweep_interval}")
    if sweep_batch < 1:
        raise ValueError(f"sweep_batch must be >= 1, got {sweep_batch}")


class ExpiryQueue(Generic[_K]):
    """Deadlines in a min-heap, swept from ordinary operations.

    Entries are never updated in place. Each owner decides, when an entry
    comes due, whether it is stale (the key was refreshed or deleted since)
    and reschedules the key if needed.
    """

    __slots__ = ("heap", "next_sweep", "interval", "batch")

    def __init__(self, interval: float, batch: int) -> None:
        self.heap: list[tuple[float, _K]] = []
        # Clock time of the next sweep; -inf so the first operation sets the pace.
        self.next_sweep = -INF
        self.interval = interval
        self.batch = batch

    def push(self, deadline: float, key: _K) -> None:
        heapq.heappush(self.heap, (deadline, key))

    def sweep(self, now: float, on_due: Callable[[float, _K, float], None]) -> None:
        heap = self.heap
        for _ in range(self.batch):
            if not heap or heap[0][0] > now:
                self.next_sweep = now + self.interval
                return
            deadline, key = heapq.heappop(heap)
            on_due(deadline, key, now)
        # The batch is used up: go on at the next operation if more are due.
        self.next_sweep = now if heap and heap[0][0] <= now else now + self.interval
