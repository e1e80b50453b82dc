"""Cleanup after sessions end, at shutdown and during an engine outage: bounded by
the close timeout and reported in summary lines, never one traceback per client."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from rtcore.engine.memory import MemoryBroker, MemoryPresenceManager
from rtcore.engine.node import Node
from rtcore.protocol.types import ClientInfo

from .helpers import Client, FakeClock, build_config, connect_token, make_node, run


CONFIG: dict[str, Any] = {
    "client": {"ping_interval": 0, "pong_timeout": 0},
    "channel": {
        "namespaces": [
            {
                "name": "room",
                "allow_subscribe_for_client": True,
                "presence": True,
                "join_leave": True,
            }
        ]
    },
}


class _StuckPresence(MemoryPresenceManager):
    """Presence whose removals never finish (an engine that stopped answering)."""

    def __init__(self) -> None:
        super().__init__()
        self.removals_started = 0

    async def remove(self, channel: str, client_id: str, user_id: str) -> None:
        self.removals_started += 1
        await asyncio.Event().wait()


class _FailingPresence(MemoryPresenceManager):
    """Presence whose removals fail as a lost engine connection does."""

    async def remove(self, channel: str, client_id: str, user_id: str) -> None:
        raise ConnectionError("engine connection lost")


class _FailingLeaveBroker(MemoryBroker):
    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        raise ConnectionError("engine connection lost")


async def _clients(node: Node, n: int) -> list[Client]:
    clients = []
    for i in range(n):
        c = Client(node)
        await c.connect(connect_token(f"u{i}"))
        await c.subscribe("room:a")
        clients.append(c)
    return clients


def _node_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("rtcore.engine")]


def test_close_abandons_stuck_cleanup_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        presence = _StuckPresence()
        node = Node(build_config(CONFIG), presence_manager=presence)
        await node.start()
        clients = await _clients(node, 100)
        # A mass disconnect: every session's cleanup hangs on its presence removal.
        for c in clients:
            c.session.transport_closed()
        await asyncio.sleep(0)
        assert presence.removals_started == 100
        with caplog.at_level(logging.INFO, logger="rtcore"):
            await node.close(timeout=0.05)
        records = _node_records(caplog)
        assert len(records) == 1, [r.getMessage() for r in records]
        assert records[0].levelno == logging.WARNING
        assert "100 background task(s) abandoned" in records[0].getMessage()
        assert records[0].exc_info is None
        assert not node._tasks

    run(main())


def test_failures_while_closing_are_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        node = Node(build_config(CONFIG), broker=_FailingLeaveBroker())
        await node.start()
        await _clients(node, 150)
        with caplog.at_level(logging.INFO, logger="rtcore"):
            # close() disconnects them all; every leave publication fails.
            await node.close()
        records = _node_records(caplog)
        assert len(records) == 1, [r.getMessage() for r in records]
        message = records[0].getMessage()
        assert "0 background task(s) abandoned" in message
        assert "leave 150" in message
        assert node.broker_errors["leave"] == 150

    run(main())


def test_outage_failures_log_one_line_per_second(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        clock = FakeClock()
        node = make_node(CONFIG, clock=clock)
        node.presence_manager = _FailingPresence()
        await node.start()
        clients = await _clients(node, 50)
        with caplog.at_level(logging.INFO, logger="rtcore"):
            for c in clients[:40]:
                c.session.transport_closed()
            while node._tasks:
                await asyncio.sleep(0)
            first = _node_records(caplog)
            # The first failure is logged at once; the 39 that follow within the second are not.
            assert len(first) == 1 and first[0].exc_info is None
            assert "1 cleanup operation(s) failed" in first[0].getMessage()
            clock.advance(1.5)
            for c in clients[40:]:
                c.session.transport_closed()
            while node._tasks:
                await asyncio.sleep(0)
            records = _node_records(caplog)
            assert len(records) == 2
            # The second line counts every failure since the first one.
            assert "40 cleanup operation(s) failed" in records[1].getMessage()
        assert node.cleanup_failures == {"presence_remove": 50}
        await node.close()

    run(main())


def test_an_unexpected_cleanup_error_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class _BuggyPresence(MemoryPresenceManager):
        async def remove(self, channel: str, client_id: str, user_id: str) -> None:
            raise KeyError("a bug, not an outage")

    async def main() -> None:
        node = Node(build_config(CONFIG), presence_manager=_BuggyPresence())
        await node.start()
        (c,) = await _clients(node, 1)
        with caplog.at_level(logging.INFO, logger="rtcore"):
            c.session.transport_closed()
            while node._tasks:
                await asyncio.sleep(0)
        records = _node_records(caplog)
        assert len(records) == 1 and records[0].levelno == logging.ERROR
        assert records[0].exc_info is not None
        await node.close()

    run(main())


class _UnreachableBroker(MemoryBroker):
    """A broker that cannot subscribe: the engine is out of reach (a reconnect storm on Redis)."""

    async def subscribe(self, channel: str) -> None:
        raise ConnectionError("engine did not confirm the subscription")


def test_subscribes_failing_on_an_unreachable_engine_log_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        node = Node(build_config(CONFIG), broker=_UnreachableBroker())
        await node.start()
        clients = [Client(node) for _ in range(40)]
        with caplog.at_level(logging.INFO, logger="rtcore"):
            for i, c in enumerate(clients):
                await c.connect(connect_token(f"u{i}"))
                assert await c.error("subscribe", {"channel": "room:a"}) == 100
        records = [r for r in _node_records(caplog) if "subscribe" in r.getMessage()]
        assert len(records) == 1, [r.getMessage() for r in records]
        assert records[0].levelno == logging.WARNING
        assert "engine unavailable" in records[0].getMessage()
        assert records[0].exc_info is None
        assert node.broker_errors["subscribe"] == 40
        await node.close()

    run(main())


def test_unexpected_subscribe_failures_keep_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class _BrokenBroker(MemoryBroker):
        async def subscribe(self, channel: str) -> None:
            raise ValueError("a bug")

    async def main() -> None:
        node = Node(build_config(CONFIG), broker=_BrokenBroker())
        await node.start()
        c = Client(node)
        await c.connect(connect_token("u"))
        with caplog.at_level(logging.INFO, logger="rtcore"):
            assert await c.error("subscribe", {"channel": "room:a"}) == 100
        records = [r for r in _node_records(caplog) if "subscribe" in r.getMessage()]
        assert records and records[0].exc_info is not None
        await node.close()

    run(main())
