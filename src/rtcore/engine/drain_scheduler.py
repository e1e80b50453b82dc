"""Start sessions' command drains a bounded number per event-loop iteration.

A session handles its commands in a task of its own (``ClientSession._drain``).
Normally a drain starts as soon as its commands arrive. During a reconnect
storm one loop iteration can read the commands of thousands of connections
that arrived while the loop was busy with handshakes; started at once, all
their drains would run in that one iteration, seconds of work during which
the loop polls nothing: no reply is written (the writers' flush round comes
after them), the server API waits, and timers are late. Past
``per_iteration`` drains in an iteration, sessions wait here, in arrival
order, and that many start in each later iteration, so that replies, the
API and timers interleave with the storm.

The transports' HTTP server uses one the same way for WebSocket upgrade
requests (``Server.upgrades``): a connection "drains" its waiting upgrade.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol


__all__ = ["DrainScheduler", "Drainable"]


class Drainable(Protocol):
    def start_drain(self) -> None:
        """Start the work that waited: a session's queued commands (it checks it
        still has any), a connection's upgrade request (it checks it is still open)."""
        ...


class DrainScheduler:
    """Starts drains: up to ``per_iteration`` in a loop iteration, the rest in later ones.

    Args:
        per_iteration: drains started in one iteration before later sessions
            wait for the next one (a connect or subscribe costs 0.1-0.3 ms,
            so 64 is a few tens of milliseconds of work per iteration).
    """

    __slots__ = ("per_iteration", "_started", "_waiting", "_tick_scheduled", "deferred")

    def __init__(self, per_iteration: int = 64) -> None:
        if per_iteration < 1:
            raise ValueError(f"per_iteration must be >= 1, got {per_iteration}")
        self.per_iteration = per_iteration
        # Drains started since the last tick (about: in this iteration).
        self._started = 0
        self._waiting: deque[Drainable] = deque()
        self._tick_scheduled = False
        # Sessions that waited for a later iteration (a counter for metrics and tests).
        self.deferred = 0

    @property
    def waiting(self) -> int:
        """Sessions whose drain waits for a later iteration."""
        return len(self._waiting)

    def add(self, session: Drainable) -> None:
        """Start ``session``'s drain now, or in a later iteration when this one has had its share."""
        if not self._tick_scheduled:
            self._tick_scheduled = True
            asyncio.get_running_loop().call_soon(self._tick)
        if self._started < self.per_iteration and not self._waiting:
            self._started += 1
            session.start_drain()
            return
        self.deferred += 1
        self._waiting.append(session)

    def _tick(self) -> None:
        # Runs once per iteration while there is work: a new share begins.
        self._started = 0
        waiting = self._waiting
        while waiting and self._started < self.per_iteration:
            self._started += 1
            waiting.popleft().start_drain()
        if waiting:
            asyncio.get_running_loop().call_soon(self._tick)
        else:
            self._tick_scheduled = False
