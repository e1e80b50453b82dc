"""The NATS broker (PUB/SUB only, no history).

Runs against the NATS server on 127.0.0.1:4222 when one answers there, or
else against a ``nats-server`` started on a free local port. Fault tests
always start their own server. Without nats-py or ``nats-server`` the tests
skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from rtcore.engine.broker import BrokerClosedError, BrokerNotStartedError, BrokerStateError
from rtcore.engine.history import ZERO_POSITION, HistoryOptions
from rtcore.protocol.types import ClientInfo, Publication

from .conformance import FailingOnceHandler, RecordingHandler
from .redis_servers import IN_CI, free_port, require_binary, wait_until


try:
    from rtcore.backends.nats import (
        FeatureNotAvailableError,
        NatsBroker,
        NatsUnavailableError,
        _round_trip,
        subject_for,
    )
except ImportError:  # nats-py missing
    if IN_CI:
        raise
    pytest.skip("nats-py is not installed", allow_module_level=True)


# The project's marker for tests that need an external service.
pytestmark = pytest.mark.redis

SHARED_PORT = 4222
OPTS = HistoryOptions(size=10, ttl=60.0, meta_ttl=120.0)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            return s.recv(4) == b"INFO"
    except OSError:
        return False


class NatsServer:
    """A ``nats-server`` on a local port, restartable on that port."""

    def __init__(self) -> None:
        self.binary = require_binary("nats-server")
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="rtcore-nats-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        log = open(self.workdir / "nats.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(lambda: _listening(self.port), timeout, f"nats-server on {self.port}")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    if _listening(SHARED_PORT):
        yield f"nats://127.0.0.1:{SHARED_PORT}"
        return
    server = NatsServer()
    server.start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def own_nats() -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def prefix() -> str:
    return f"rtcore-test-{uuid.uuid4().hex[:12]}"


def run(fn: Callable[[], Awaitable[None]], timeout: float = 30.0) -> None:
    async def main() -> None:
        await asyncio.wait_for(fn(), timeout)

    asyncio.run(main())


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def pub(data: str) -> Publication:
    return Publication(data=data.encode())


def broker(url: str, prefix: str) -> NatsBroker:
    return NatsBroker(
        url, prefix=prefix, connect_timeout=1.0, reconnect_wait=0.1, request_timeout=2.0
    )


class TestNatsBroker:
    def test_lifecycle(self, nats_url: str, prefix: str) -> None:
        async def body() -> None:
            b = broker(nats_url, prefix)
            info = ClientInfo("u", "c")
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: b.subscribe("a"),
                lambda: b.unsubscribe("a"),
                lambda: b.publish("a", pub("x")),
                lambda: b.publish_join("a", info),
                lambda: b.publish_leave("a", info),
                lambda: b.publish_control(b"x"),
                lambda: b.history("a"),
                lambda: b.remove_history("a"),
            ]
            for call in calls:
                with pytest.raises(BrokerNotStartedError):
                    await call()
            await b.start(RecordingHandler())
            assert b.healthy
            with pytest.raises(BrokerStateError):
                await b.start(RecordingHandler())
            await b.close()
            await b.close()
            assert not b.healthy
            for call in calls:
                with pytest.raises(BrokerClosedError):
                    await call()
            with pytest.raises(BrokerClosedError):
                await b.start(RecordingHandler())

        run(body)

    def test_publications_joins_and_leaves_reach_every_node(
        self, nats_url: str, prefix: str
    ) -> None:
        async def body() -> None:
            nodes = [broker(nats_url, prefix) for _ in range(2)]
            handlers = [RecordingHandler() for _ in nodes]
            for node, handler in zip(nodes, handlers, strict=True):
                await node.start(handler)
                await node.subscribe("a")
            try:
                info = ClientInfo("u1", "c1", b'{"a":1}', b"[]")
                p = Publication(b'{"x":1}', offset=9, info=info, tags={"k": "v"})
                result = await nodes[0].publish("a", p, use_delta=True)
                assert result.position == ZERO_POSITION and not result.suppressed
                assert p.offset == 0 and p.time > 0
                await nodes[1].publish_join("a", info)
                await nodes[1].publish("a", pub("m2"))
                await nodes[1].publish_leave("a", info)
                for handler in handlers:
                    await handler.wait_until(lambda h=handler: len(h.events) == 4)
                    kinds = [e.kind for e in handler.events]
                    # One publisher's events arrive in its order.
                    assert kinds[kinds.index("join") :] == ["join", "publication", "leave"]
                    first = handler.publications("a")[0]
                    assert first.pub == Publication(
                        b'{"x":1}', 0, info, {"k": "v"}, p.time, "", False
                    )
                    assert first.position == ZERO_POSITION and first.prev is None
            finally:
                for node in nodes:
                    await node.close()

        run(body)

    def test_subscriptions_are_per_channel_and_not_reference_counted(
        self, nats_url: str, prefix: str
    ) -> None:
        async def body() -> None:
            node, other = broker(nats_url, prefix), broker(nats_url, prefix)
            handler = RecordingHandler()
            await node.start(handler)
            await other.start(RecordingHandler())
            try:
                await asyncio.gather(*(node.subscribe("a") for _ in range(5)))
                assert node.subscribed_channels == 1
                await node.unsubscribe("a")
                await node.unsubscribe("a")
                await node.unsubscribe("never")
                await other.publish("a", pub("lost"))
                await other.publish("b", pub("other channel"))
                await node.subscribe("a")
                await other.publish("a", pub("barrier"))
                await handler.wait_for_payload("a", "barrier")
                await asyncio.sleep(0.1)
                assert [(e.channel, e.pub.data) for e in handler.events if e.pub] == [
                    ("a", b"barrier")
                ]
            finally:
                await node.close()
                await other.close()

        run(body)

    def test_odd_channel_names_do_not_leak(self, nats_url: str, prefix: str) -> None:
        channels = ["a.b", "a.*", "a.>", "a", "", "space name", "ünï", "..", "x:y#1"]
        assert len({subject_for(prefix, c) for c in channels}) == len(channels)

        async def body() -> None:
            node = broker(nats_url, prefix)
            handler = RecordingHandler()
            await node.start(handler)
            try:
                for channel in channels:
                    await node.subscribe(channel)
                for channel in channels:
                    await node.publish(channel, pub(f"to:{channel}"))
                await handler.wait_until(lambda: len(handler.events) == len(channels))
                await asyncio.sleep(0.1)
                got = sorted((e.channel, e.pub.data.decode()) for e in handler.events if e.pub)
                assert got == sorted((c, f"to:{c}") for c in channels)
            finally:
                await node.close()

        run(body)

    def test_control_reaches_every_node_once(self, nats_url: str, prefix: str) -> None:
        async def body() -> None:
            nodes = [broker(nats_url, prefix) for _ in range(3)]
            handlers = [RecordingHandler() for _ in nodes]
            for node, handler in zip(nodes, handlers, strict=True):
                await node.start(handler)
            try:
                await nodes[0].publish_control(b"\x00bin\xff")
                for handler in handlers:
                    await handler.wait_until(lambda h=handler: len(h.events) == 1)
                await asyncio.sleep(0.1)
                for handler in handlers:
                    assert [(e.kind, e.data) for e in handler.events] == [
                        ("control", b"\x00bin\xff")
                    ]
            finally:
                for node in nodes:
                    await node.close()

        run(body)

    def test_history_and_idempotency_are_not_available(self, nats_url: str, prefix: str) -> None:
        async def body() -> None:
            node = broker(nats_url, prefix)
            handler = RecordingHandler()
            await node.start(handler)
            await node.subscribe("a")
            try:
                with pytest.raises(FeatureNotAvailableError):
                    await node.publish("a", pub("h"), history=OPTS)
                with pytest.raises(FeatureNotAvailableError):
                    await node.publish("a", pub("i"), idempotency_key="k")
                with pytest.raises(ValueError):
                    await node.publish("a", pub("i"), idempotency_key="k", idempotent_ttl=0)
                with pytest.raises(FeatureNotAvailableError):
                    await node.history("a", limit=-1)
                with pytest.raises(FeatureNotAvailableError):
                    await node.remove_history("a")
                assert isinstance(FeatureNotAvailableError("x"), NotImplementedError)
                # Nothing went out for the refused publishes.
                await node.publish("a", pub("barrier"))
                await handler.wait_for_payload("a", "barrier")
                assert handler.payloads("a") == ["barrier"]
            finally:
                await node.close()

        run(body)

    def test_handler_errors_do_not_break_delivery(self, nats_url: str, prefix: str) -> None:
        async def body() -> None:
            node = broker(nats_url, prefix)
            handler = FailingOnceHandler()
            await node.start(handler)
            await node.subscribe("a")
            try:
                await node.publish("a", pub("m1"))
                await node.publish("a", pub("m2"))
                await handler.wait_for_payload("a", "m2")
                assert handler.failed and handler.payloads("a") == ["m2"]
            finally:
                await node.close()

        run(body)

    def test_invalid_options(self) -> None:
        for bad_prefix in ("", "a b", "a.*", "a..b"):
            with pytest.raises(ValueError):
                NatsBroker(prefix=bad_prefix)
        with pytest.raises(ValueError):
            NatsBroker([])
        with pytest.raises(ValueError):
            NatsBroker(connect_timeout=0)


class TestConfirmation:
    """A subscribe or publish is confirmed by a PING/PONG sent after it."""

    def test_round_trip_writes_what_is_pending_before_its_ping(self) -> None:
        class Client:
            """nats-py's shape: commands wait in a buffer, a flush's PING does not."""

            def __init__(self) -> None:
                self._pending: list[bytes] = [b"SUB a 1"]
                self.wire: list[bytes] = []

            async def _flush_pending(self, force_flush: bool = False) -> None:
                await asyncio.sleep(0)
                self.wire.extend(self._pending)
                self._pending = []

            async def flush(self, timeout: float) -> None:
                self.wire.append(b"PING")

        client = Client()
        asyncio.run(_round_trip(client, 1.0))  # type: ignore[arg-type]
        assert client.wire == [b"SUB a 1", b"PING"]

    def test_round_trip_is_bounded_when_the_flusher_never_answers(self) -> None:
        class Client:
            async def _flush_pending(self, force_flush: bool = False) -> None:
                await asyncio.get_running_loop().create_future()  # never resolved

            async def flush(self, timeout: float) -> None:
                raise AssertionError("not reached")

        with pytest.raises(TimeoutError):
            asyncio.run(_round_trip(Client(), 0.05))  # type: ignore[arg-type]

    def test_round_trip_keeps_a_cancellation_the_client_swallowed(self) -> None:
        class Client:
            async def _flush_pending(self, force_flush: bool = False) -> None:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    pass  # as nats-py does

            async def flush(self, timeout: float) -> None:
                raise AssertionError("not reached")

        async def main() -> None:
            task = asyncio.ensure_future(_round_trip(Client(), 1.0))  # type: ignore[arg-type]
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())


class TestNatsFaults:
    def test_start_fails_cleanly_without_a_server(self) -> None:
        port = free_port()  # nothing listens there

        async def body() -> None:
            b = broker(f"nats://127.0.0.1:{port}", "rtcore")
            with pytest.raises(NatsUnavailableError):
                await b.start(RecordingHandler())
            assert not b.healthy
            await b.close()

        run(body)

    def test_outage_raises_and_reconnect_restores_subscriptions(self, own_nats: NatsServer) -> None:
        async def body() -> None:
            node, other = broker(own_nats.url, "rtcore"), broker(own_nats.url, "rtcore")
            handler = RecordingHandler()
            await node.start(handler)
            await other.start(RecordingHandler())
            await node.subscribe("a")
            await other.publish("a", pub("before"))
            await handler.wait_for_payload("a", "before")
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, own_nats.stop)
            await eventually(lambda: not node.healthy and not other.healthy)
            with pytest.raises(NatsUnavailableError):
                await other.publish("a", pub("lost"))
            with pytest.raises(NatsUnavailableError):
                await other.publish_control(b"lost")
            with pytest.raises(NatsUnavailableError):
                await node.subscribe("b")
            await loop.run_in_executor(None, own_nats.start)
            await eventually(lambda: node.healthy and other.healthy, timeout=15)
            assert node.reconnects >= 1
            await node.subscribe("b")
            await other.publish("a", pub("after"))
            await other.publish("b", pub("b-after"))
            await handler.wait_for_payload("a", "after")
            await handler.wait_for_payload("b", "b-after")
            assert handler.payloads("a") == ["before", "after"]
            await node.close()
            await other.close()

        run(body, timeout=60)
