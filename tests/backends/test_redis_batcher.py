"""How the Redis command batcher groups commands into pipelines (no server needed)."""

from __future__ import annotations

import asyncio
from typing import Any

from rtcore.backends.redis import connection
from rtcore.backends.redis.connection import _Batcher, _Health


class RecordingBatcher(_Batcher):
    """Records each pipeline and holds it in flight until the test releases it."""

    def __init__(self, max_pipelines: int = 4) -> None:
        super().__init__(None, _Health(), max_batch=256, max_pipelines=max_pipelines)  # type: ignore[arg-type]
        self.pipelines: list[list[tuple[Any, ...]]] = []
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0

    async def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        self.pipelines.append(commands)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await self.release.wait()
        self.in_flight -= 1
        return [("ok", *args) for args in commands]


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_one_loop_turn_is_one_pipeline() -> None:
    async def main() -> None:
        b = RecordingBatcher()
        b.release.set()
        futs = [b.call(("SET", str(i))) for i in range(10)]
        assert await asyncio.gather(*futs) == [("ok", "SET", str(i)) for i in range(10)]
        assert b.pipelines == [[("SET", str(i)) for i in range(10)]]

    asyncio.run(main())


def test_commands_behind_a_pipeline_in_flight_go_together() -> None:
    async def main() -> None:
        b = RecordingBatcher()
        first = b.call(("GET", "a"))
        await _turns()
        assert b.in_flight == 1
        # Arriving one loop turn apart while the first pipeline is out: they
        # wait for it instead of each starting a pipeline of one.
        later = []
        for i in range(5):
            later.append(b.call(("GET", str(i))))
            await _turns(1)
        assert len(b.pipelines) == 1
        b.release.set()
        assert await first == ("ok", "GET", "a")
        assert await asyncio.gather(*later) == [("ok", "GET", str(i)) for i in range(5)]
        assert b.pipelines[1] == [("GET", str(i)) for i in range(5)]
        assert len(b.pipelines) == 2
        assert b.most_in_flight == 1

    asyncio.run(main())


def test_a_burst_starts_pipelines_in_parallel() -> None:
    async def main() -> None:
        b = RecordingBatcher(max_pipelines=2)
        b.call(("GET", "first"))
        await _turns()
        burst = [b.call(("GET", str(i))) for i in range(connection._BURST)]
        await _turns()
        assert b.in_flight == 2  # the burst did not wait for the first pipeline
        more = [b.call(("GET", f"m{i}")) for i in range(connection._BURST)]
        await _turns()
        assert b.in_flight == 2  # never more than max_pipelines
        b.release.set()
        await asyncio.gather(*burst, *more)
        assert [len(p) for p in b.pipelines] == [1, connection._BURST, connection._BURST]
        assert b.most_in_flight == 2

    asyncio.run(main())


def test_a_cancelled_caller_is_not_sent() -> None:
    async def main() -> None:
        b = RecordingBatcher()
        b.release.set()
        gone = b.call(("GET", "gone"))
        kept = b.call(("GET", "kept"))
        gone.cancel()
        assert await kept == ("ok", "GET", "kept")
        assert b.pipelines == [[("GET", "kept")]]

    asyncio.run(main())
