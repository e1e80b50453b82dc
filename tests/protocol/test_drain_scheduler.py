"""Sessions' command drains start a bounded number per loop iteration
(rtcore.engine.drain_scheduler): during a storm, replies, the server API and
timers interleave with the commands instead of waiting for all of them."""

from __future__ import annotations

import asyncio

import pytest

from rtcore.engine.drain_scheduler import DrainScheduler
from rtcore.engine.events import RPCEvent
from rtcore.server.metrics import NodeCollector

from .helpers import Client, connect_token, make_node, run, until


class Recorder:
    def __init__(self, name: int, started: list[tuple[int, int]], iteration: list[int]) -> None:
        self.name = name
        self.started = started
        self.iteration = iteration

    def start_drain(self) -> None:
        self.started.append((self.name, self.iteration[0]))


def test_past_its_share_an_iteration_defers_sessions_in_arrival_order() -> None:
    async def main() -> None:
        started: list[tuple[int, int]] = []
        iteration = [0]
        scheduler = DrainScheduler(per_iteration=3)
        for i in range(10):
            scheduler.add(Recorder(i, started, iteration))
        # Three start at once; seven wait.
        assert started == [(0, 0), (1, 0), (2, 0)]
        assert scheduler.waiting == 7 and scheduler.deferred == 7
        for n in range(1, 5):
            iteration[0] = n
            await asyncio.sleep(0)
        assert [name for name, _ in started] == list(range(10))
        # Then three per iteration.
        assert [it for _, it in started[3:]] == [1, 1, 1, 2, 2, 2, 3]
        assert scheduler.waiting == 0
        # A new iteration with nobody waiting: its share starts at once again.
        await asyncio.sleep(0)
        scheduler.add(Recorder(10, started, iteration))
        assert started[-1] == (10, 4)

    run(main())


def test_per_iteration_must_be_positive() -> None:
    with pytest.raises(ValueError, match="per_iteration"):
        DrainScheduler(per_iteration=0)


def test_replies_of_a_storm_go_out_before_its_last_commands_are_handled() -> None:
    """Commands of 200 sessions ready in one iteration: the first session's reply is
    written (the flush round of an early iteration) before the last session's
    command runs; the later sessions were deferred, none lost, each answered once."""

    async def main() -> None:
        node = make_node({"client": {"ping_interval": 0, "pong_timeout": 0}})
        first_replied: list[bool] = []
        clients: list[Client] = []

        def on_rpc(event: RPCEvent) -> bytes:
            first_replied.append(clients[0].reply(100) is not None)
            return b"{}"

        node.on_rpc = on_rpc
        await node.start()
        for i in range(200):
            c = Client(node)
            await c.connect(connect_token(f"u{i}"))
            clients.append(c)
        deferred = node.drain_scheduler.deferred
        for c in clients:
            c.send({"id": 100, "rpc": {"method": "m", "data": {}}})
        await until(lambda: all(c.reply(100) is not None for c in clients))
        assert node.drain_scheduler.deferred - deferred == 200 - 64
        assert first_replied[0] is False and first_replied[-1] is True
        assert all(len([m for m in c.messages if m.get("id") == 100]) == 1 for c in clients)
        samples = {s.name: s.value for m in NodeCollector(node).collect() for s in m.samples}
        assert samples["rtcore_command_drains_deferred_total"] == node.drain_scheduler.deferred
        await node.close()

    run(main())


def test_a_session_closed_while_waiting_does_not_run_its_commands() -> None:
    async def main() -> None:
        node = make_node({"client": {"ping_interval": 0, "pong_timeout": 0}})
        calls: list[str] = []

        def on_rpc(event: RPCEvent) -> bytes:
            calls.append(event.client.user)
            return b"{}"

        node.on_rpc = on_rpc
        await node.start()
        clients = []
        for i in range(70):
            c = Client(node)
            await c.connect(connect_token(f"u{i}"))
            clients.append(c)
        for c in clients:
            c.send({"id": 100, "rpc": {"method": "m", "data": {}}})
        # The last six wait for the next iteration; one of them goes away first.
        assert node.drain_scheduler.waiting == 6
        clients[-1].session.transport_closed()
        await until(lambda: len(calls) == 69)
        await asyncio.sleep(0.05)
        assert "u69" not in calls and len(calls) == 69
        await node.close()

    run(main())
