"""The official Python SDK (centrifuge-python) against a served node, JSON and Protobuf.

Scenarios (the same list as ``test_sdk_js.py``): connect with a JWT,
subscribe/publish/receive, presence, presence_stats, history, recovery after
a forced disconnect with publications missed meanwhile, connection token
refresh before expiry, RPC through ``node.on_rpc``, and a bad token ending
in disconnect 3500.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import centrifuge
import pytest

from rtcore.engine.events import ConnectEvent, RPCEvent

from .helpers import ServedNode, connect_token, run, serve, until


CONFIG = {
    "client": {"ping_interval": 25, "pong_timeout": 8},
    "channel": {
        "namespaces": [
            {
                "name": "chat",
                "history_size": 100,
                "history_ttl": 300,
                "force_recovery": True,
                "presence": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_presence_for_subscriber": True,
                "allow_history_for_subscriber": True,
            }
        ]
    },
}

MODES = [pytest.param(False, id="json"), pytest.param(True, id="protobuf")]


def _enc(protobuf: bool, value: Any) -> Any:
    return json.dumps(value).encode() if protobuf else value


def _dec(protobuf: bool, value: Any) -> Any:
    return json.loads(value) if protobuf else value


class _Events(centrifuge.ClientEventHandler):
    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.connects = 0
        self.disconnects: list[tuple[int, str]] = []
        self.disconnected = asyncio.Event()

    async def on_connected(self, ctx: Any) -> None:
        self.connects += 1
        self.connected.set()

    async def on_disconnected(self, ctx: Any) -> None:
        self.disconnects.append((ctx.code, ctx.reason))
        self.disconnected.set()


class _SubEvents(centrifuge.SubscriptionEventHandler):
    def __init__(self) -> None:
        self.pubs: list[Any] = []
        self.subscribed: list[Any] = []

    async def on_subscribed(self, ctx: Any) -> None:
        self.subscribed.append(ctx)

    async def on_publication(self, ctx: Any) -> None:
        self.pubs.append(ctx.pub)


def _client(s: ServedNode, protobuf: bool, **kwargs: Any) -> tuple[Any, _Events]:
    events = _Events()
    client = centrifuge.Client(
        s.url,
        events=events,
        use_protobuf=protobuf,
        min_reconnect_delay=0.05,
        max_reconnect_delay=0.2,
        **kwargs,
    )
    return client, events


@pytest.mark.parametrize("protobuf", MODES)
def test_connect_subscribe_publish_receive(protobuf: bool) -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            codecs: list[str] = []
            s.node.on_connect = lambda session: codecs.append(session.codec.name)
            client, events = _client(s, protobuf, token=connect_token("42", info={"name": "Ann"}))
            await client.connect()
            await client.ready(timeout=5)
            assert codecs == ["protobuf" if protobuf else "json"]
            assert s.node.hub.user_connection_count("42") == 1
            handler = _SubEvents()
            sub = client.new_subscription("chat:room", handler)
            await sub.subscribe()
            await sub.ready(timeout=5)
            assert handler.subscribed[0].recoverable is True
            await sub.publish(_enc(protobuf, {"text": "hello"}))
            await until(lambda: handler.pubs, 5)
            pub = handler.pubs[0]
            assert _dec(protobuf, pub.data) == {"text": "hello"}
            assert pub.offset == 1
            assert pub.info is not None and pub.info.user == "42"
            # A server-side publish reaches the client too.
            await s.node.publish("chat:room", b'{"text":"from server"}')
            await until(lambda: len(handler.pubs) == 2, 5)
            assert _dec(protobuf, handler.pubs[1].data) == {"text": "from server"}
            await client.disconnect()

    run(main())


@pytest.mark.parametrize("protobuf", MODES)
def test_presence_stats_history(protobuf: bool) -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            clients = []
            for user in ("1", "2", "2"):
                client, _ = _client(s, protobuf, token=connect_token(user))
                await client.connect()
                sub = client.new_subscription("chat:room", _SubEvents())
                await sub.subscribe()
                await sub.ready(timeout=5)
                clients.append((client, sub))
            client, sub = clients[0]
            presence = await sub.presence()
            assert {info.user for info in presence.clients.values()} == {"1", "2"}
            assert len(presence.clients) == 3
            stats = await sub.presence_stats()
            assert (stats.num_clients, stats.num_users) == (3, 2)
            for n in range(1, 6):
                await sub.publish(_enc(protobuf, {"n": n}))
            history = await sub.history(limit=-1)
            assert [_dec(protobuf, p.data)["n"] for p in history.publications] == [1, 2, 3, 4, 5]
            assert history.offset == 5 and len(history.epoch) == 8
            newest = await sub.history(limit=2, reverse=True)
            assert [p.offset for p in newest.publications] == [5, 4]
            since = await sub.history(
                limit=-1, since=centrifuge.StreamPosition(offset=3, epoch=history.epoch)
            )
            assert [p.offset for p in since.publications] == [4, 5]
            for c, _ in clients:
                await c.disconnect()

    run(main())


@pytest.mark.parametrize("protobuf", MODES)
def test_recovery_after_forced_disconnect(protobuf: bool) -> None:
    async def main() -> None:
        node_gate = asyncio.Event()
        node_gate.set()

        async with serve(CONFIG) as s:

            async def on_connecting(event: ConnectEvent) -> None:
                await node_gate.wait()  # holds reconnects while the test publishes
                return None

            s.node.on_connecting = on_connecting
            client, events = _client(s, protobuf, token=connect_token("42"))
            await client.connect()
            handler = _SubEvents()
            sub = client.new_subscription("chat:feed", handler)
            await sub.subscribe()
            await sub.ready(timeout=5)
            for n in (1, 2):
                await s.node.publish("chat:feed", b'{"n":%d}' % n)
            await until(lambda: len(handler.pubs) == 2, 5)
            # Force a reconnect and publish while the client is away.
            node_gate.clear()
            await s.node.disconnect("42", code=3011, reason="force reconnect")
            await until(
                lambda: events.disconnects or s.node.hub.user_connection_count("42") == 0, 5
            )
            await until(lambda: s.node.hub.user_connection_count("42") == 0, 5)
            for n in (3, 4, 5, 6):
                await s.node.publish("chat:feed", b'{"n":%d}' % n)
            node_gate.set()
            await until(lambda: len(handler.subscribed) == 2, 10)
            resub = handler.subscribed[1]
            assert resub.was_recovering is True and resub.recovered is True
            await until(lambda: len(handler.pubs) == 6, 5)
            assert [_dec(protobuf, p.data)["n"] for p in handler.pubs] == [1, 2, 3, 4, 5, 6]
            assert [p.offset for p in handler.pubs] == [1, 2, 3, 4, 5, 6]
            await s.node.publish("chat:feed", b'{"n":7}')
            await until(lambda: len(handler.pubs) == 7, 5)
            assert events.connects >= 2
            await client.disconnect()

    run(main())


@pytest.mark.parametrize("protobuf", MODES)
def test_token_refresh_before_expiry(protobuf: bool) -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            refreshed: list[Any] = []
            s.node.on_refresh = refreshed.append
            calls = 0

            async def get_token() -> str:
                nonlocal calls
                calls += 1
                return connect_token("42", ttl=3600)

            client, events = _client(
                s, protobuf, token=connect_token("42", ttl=2), get_token=get_token
            )
            await client.connect()
            await client.ready(timeout=5)
            session = next(iter(s.node.hub.user_sessions("42")))
            first_expiry = session.expire_at
            await until(lambda: refreshed, 8, "client-side refresh")
            assert calls >= 1
            assert session.expire_at >= first_expiry + 3000
            assert events.disconnects == []
            assert s.node.hub.user_connection_count("42") == 1
            await client.disconnect()

    run(main(), timeout=40)


@pytest.mark.parametrize("protobuf", MODES)
def test_rpc_through_hook(protobuf: bool) -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:

            def on_rpc(event: RPCEvent) -> bytes:
                args = json.loads(event.data)
                return json.dumps(
                    {"method": event.method, "sum": sum(args), "user": event.client.user}
                ).encode()

            s.node.on_rpc = on_rpc
            client, _ = _client(s, protobuf, token=connect_token("42"))
            await client.connect()
            result = await client.rpc("sum", _enc(protobuf, [1, 2, 3]))
            assert _dec(protobuf, result.data) == {"method": "sum", "sum": 6, "user": "42"}
            await client.disconnect()

    run(main())


@pytest.mark.parametrize("protobuf", MODES)
def test_bad_token_is_rejected_3500(protobuf: bool, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            client, events = _client(s, protobuf, token="definitely.not.valid")
            with caplog.at_level(logging.CRITICAL):
                await client.connect()
                await asyncio.wait_for(events.disconnected.wait(), 5)
            assert events.disconnects[0][0] == 3500
            assert events.connects == 0
            # Terminal: the SDK does not try again.
            await asyncio.sleep(0.3)
            assert len(events.disconnects) == 1
            assert s.node.hub.num_sessions == 0

    run(main())
