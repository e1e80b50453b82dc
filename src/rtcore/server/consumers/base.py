"""What every consumer shares: its lifecycle, the retry of a command, backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import Any

from rtcore.server.consumers.dispatch import Dispatcher, Outcome
from rtcore.server.consumers.metrics import ConsumerStats


__all__ = ["Backoff", "Consumer"]

logger = logging.getLogger("rtcore.server.consumers")

# close(): how many times a task is cancelled, and how long each wait lasts.
_CANCEL_ROUNDS = 20
_CANCEL_WAIT = 0.25


class Backoff:
    """Jittered exponential delays between ``low`` and ``high`` seconds."""

    def __init__(self, low: float = 0.05, high: float = 5.0) -> None:
        self.low = low
        self.high = high
        self.delay = low

    def reset(self) -> None:
        self.delay = self.low

    async def wait(self) -> None:
        await asyncio.sleep(self.delay * (0.5 + random.random()))
        self.delay = min(self.delay * 2, self.high)


class Consumer(ABC):
    """A consumer: tasks that read a source and apply its commands through a dispatcher.

    Subclasses implement :meth:`_run` (the tasks are started by :meth:`start`
    and cancelled by :meth:`close`). A message is acknowledged at its source
    only after :meth:`apply` returned ``DONE`` or ``DROPPED``.
    """

    def __init__(self, name: str, dispatcher: Dispatcher, stats: ConsumerStats) -> None:
        self.name = name
        self.dispatcher = dispatcher
        self.stats = stats
        self.closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.get_running_loop().create_task(
            coro, name=f"rtcore-consumer-{self.name}-{what}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "consumer %s: task %s stopped",
                self.name,
                task.get_name(),
                exc_info=task.exception(),
            )

    async def start(self) -> None:
        """Start reading; connection failures are retried in the background."""
        self._run()

    @abstractmethod
    def _run(self) -> None:
        """Spawn the reading tasks."""

    async def close(self) -> None:
        """Stop reading; a message being applied is left unacknowledged."""
        self.closing = True
        # One cancel is not always enough on Python 3.11: asyncio.wait_for,
        # which redis-py wraps around every send when socket_timeout is set,
        # returns the result and drops the cancellation when both land in the
        # same loop turn. A task that lost it is cancelled again.
        running = [task for task in self._tasks if not task.done()]
        for _ in range(_CANCEL_ROUNDS):
            if not running:
                break
            for task in running:
                task.cancel()
            await asyncio.wait(running, timeout=_CANCEL_WAIT)
            running = [task for task in running if not task.done()]
        if running:
            logger.warning("consumer %s: %d task(s) ignored close", self.name, len(running))
        await self._close_source()

    @abstractmethod
    async def _close_source(self) -> None:
        """Release the connections the tasks left open."""

    async def apply(
        self, method: str, payload: bytes | str, *, message_id: str, key: str = ""
    ) -> Outcome:
        """Apply one command, retrying in place while the node cannot apply it yet.

        Order within a partition (stream, durable) is kept by not moving on
        until the command is done. Returns ``RETRY`` only when closing.
        """
        backoff = Backoff()
        while True:
            outcome = await self.dispatcher.dispatch(
                method, payload, message_id=message_id, default_key=key
            )
            if outcome is not Outcome.RETRY or self.closing:
                return outcome
            await backoff.wait()

    def source_failed(self, what: str, exc: BaseException) -> None:
        self.stats.count_error("source")
        logger.warning("consumer %s: %s: %s", self.name, what, exc)
