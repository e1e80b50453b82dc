"""``start_eagerly``: commands run at once, and only a command that waits gets a
task, which carries on exactly where the command waited (results, exceptions
and cancellation included)."""

from __future__ import annotations

import asyncio

import pytest

from rtcore.engine.session import start_eagerly

from .helpers import run


def test_a_coroutine_that_does_not_wait_needs_no_task() -> None:
    async def main() -> None:
        done: list[int] = []

        async def work() -> None:
            done.append(1)

        assert start_eagerly(work()) is None
        assert done == [1]  # already ran

    run(main())


def test_a_waiting_coroutine_continues_in_a_task() -> None:
    async def main() -> None:
        steps: list[str] = []
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def work() -> int:
            steps.append("before")
            value = await gate
            steps.append(f"got {value}")
            await asyncio.sleep(0)  # a bare yield on the way
            steps.append("after")
            return value * 2

        task = start_eagerly(work())
        assert task is not None and steps == ["before"]
        gate.set_result(21)
        assert await task == 42
        assert steps == ["before", "got 21", "after"]

    run(main())


def test_exceptions_reach_the_caller_or_the_task() -> None:
    async def main() -> None:
        async def fails_at_once() -> None:
            raise ValueError("now")

        with pytest.raises(ValueError, match="now"):
            start_eagerly(fails_at_once())

        async def fails_later() -> None:
            await asyncio.sleep(0)
            raise KeyError("later")

        task = start_eagerly(fails_later())
        assert task is not None
        with pytest.raises(KeyError):
            await task

    run(main())


def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    async def main() -> None:
        seen: list[str] = []
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def work() -> None:
            try:
                await gate
            except asyncio.CancelledError:
                seen.append("cancelled inside")
                raise
            finally:
                seen.append("finally")

        task = start_eagerly(work())
        assert task is not None
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["cancelled inside", "finally"]
        assert gate.cancelled()

    run(main())


def test_a_task_cancelled_before_its_first_step_cancels_the_coroutine() -> None:
    async def main() -> None:
        seen: list[str] = []
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def work() -> None:
            try:
                await gate
            except asyncio.CancelledError:
                seen.append("cancelled inside")
                raise

        task = start_eagerly(work())
        assert task is not None
        task.cancel()  # before the task ever ran
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == ["cancelled inside"]

    run(main())
