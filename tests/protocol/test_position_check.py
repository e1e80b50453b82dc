"""The periodic position check (``client.channel_position_check_delay``).

Positioning notices a lost publication when the next one arrives with a gap.
When nothing arrives after the loss, the periodic check notices it: a
channel whose positioned subscribers got nothing for the delay has its
stream top read once, and every subscriber whose position differs from it is
told to resubscribe (client side: unsubscribe 2500) or to reconnect (server
side: 3010), and recovers what it lost. Tested sans-I/O with a manual clock,
and between two nodes on Redis with centrifuge-python, by dropping a
publication on its way to one node.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import pytest

from rtcore.engine.node import Node

from .helpers import (
    Client,
    FakeClock,
    build_config,
    connect_token,
    make_node,
    run,
    serve,
    settle,
    until,
)


NS = {"history_size": 20, "history_ttl": 300, "allow_subscribe_for_client": True}
CONFIG = {
    "client": {"ping_interval": 0, "pong_timeout": 0, "channel_position_check_delay": 40},
    "channel": {
        "namespaces": [
            {"name": "rec", **NS, "force_recovery": True},
            {"name": "plain", **NS},
        ]
    },
}


def _drop_next_publication(node: Node, channel: str) -> list[int]:
    """The next publication of ``channel`` never reaches ``node`` (lost between nodes)."""
    dropped: list[int] = []
    deliver = node.on_publication

    def on_publication(ch: str, pub: Any, position: Any, prev_pub: Any) -> None:
        if ch == channel and not dropped:
            dropped.append(pub.offset)
            return
        deliver(ch, pub, position, prev_pub)

    node.on_publication = on_publication  # type: ignore[method-assign]
    return dropped


def test_a_subscriber_behind_its_idle_stream_resubscribes() -> None:
    async def main() -> None:
        clock = FakeClock()
        node = make_node(CONFIG, clock=clock)
        await node.start()
        behind = Client(node)
        await behind.connect(connect_token("1"))
        epoch = (await behind.subscribe("rec:x"))["epoch"]
        fine = Client(node)
        await fine.connect(connect_token("2"))
        await fine.subscribe("rec:y")
        unpositioned = Client(node)
        await unpositioned.connect(connect_token("3"))
        await unpositioned.subscribe("plain:x")
        await node.publish("rec:x", b'{"n":1}')
        await node.publish("rec:y", b'{"n":1}')
        dropped = _drop_next_publication(node, "rec:x")
        await node.publish("rec:x", b'{"n":2}')
        assert dropped == [2]
        await node.publish("plain:x", b'{"n":1}')
        await settle()
        check = node.position_check
        await check.sweep()  # channels first seen: due one delay later
        assert check.checks == 0
        clock.advance(39)
        await check.sweep()
        assert check.checks == 0  # not idle for the delay yet
        clock.advance(2)
        await check.sweep()
        # rec:x and rec:y are read; plain:x has no positioned subscriber.
        assert check.checks == 2 and check.lost == 1
        await until(lambda: behind.pushes("unsubscribe"))
        assert behind.pushes("unsubscribe")[0]["unsubscribe"]["code"] == 2500
        assert fine.pushes("unsubscribe") == [] and unpositioned.pushes("unsubscribe") == []
        # The client resubscribes with recovery and gets what it lost.
        await until(lambda: "rec:x" not in behind.session.subscriptions)
        res = await behind.subscribe("rec:x", recover=True, offset=1, epoch=epoch)
        assert res["recovered"] is True
        assert [p["offset"] for p in res["publications"]] == [2]
        await node.close()

    run(main())


def test_found_positions_are_checked_again_one_delay_later() -> None:
    async def main() -> None:
        clock = FakeClock()
        node = make_node(CONFIG, clock=clock)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("1"))
        await c.subscribe("rec:z")
        check = node.position_check
        await check.sweep()
        clock.advance(41)
        await check.sweep()
        assert check.checks == 1 and check.lost == 0
        clock.advance(20)
        await check.sweep()
        assert check.checks == 1  # checked 20 s ago
        # A publication keeps the channel from being due.
        await node.publish("rec:z", b'{"n":1}')
        clock.advance(30)
        await check.sweep()
        assert check.checks == 1
        clock.advance(15)
        await check.sweep()
        assert check.checks == 2 and check.lost == 0
        assert c.pushes("unsubscribe") == []
        await node.close()

    run(main())


def test_a_server_side_subscriber_behind_reconnects() -> None:
    from rtcore.auth import make_connect_token

    from .helpers import SECRET

    async def main() -> None:
        clock = FakeClock()
        node = make_node(CONFIG, clock=clock)
        await node.start()
        c = Client(node)
        await c.connect(make_connect_token(SECRET, "1", channels=["rec:server"]))
        await node.publish("rec:server", b'{"n":1}')
        _drop_next_publication(node, "rec:server")
        await node.publish("rec:server", b'{"n":2}')
        await node.position_check.sweep()
        clock.advance(41)
        await node.position_check.sweep()
        assert await c.disconnected() == 3010
        await node.close()

    run(main())


def test_off_when_the_delay_is_zero() -> None:
    async def main() -> None:
        config = {**CONFIG, "client": {**CONFIG["client"], "channel_position_check_delay": 0}}
        node = make_node(config)
        await node.start()
        assert node.position_check._task is None
        await node.close()

    run(main())


# -- two nodes on Redis, centrifuge-python -------------------------------------------------


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.mark.redis
def test_publication_lost_between_nodes_is_recovered_with_centrifuge_python() -> None:
    if not _redis_up():
        pytest.skip("no Redis on 127.0.0.1:6379")
    import centrifuge

    from rtcore.backends.redis import RedisBroker

    prefix = f"rtcore-pc-{uuid.uuid4().hex[:10]}"
    config = {
        "client": {"ping_interval": 25, "pong_timeout": 8, "channel_position_check_delay": 0.3},
        "channel": {"namespaces": [{"name": "rec", **NS, "force_recovery": True}]},
    }

    class SubEvents(centrifuge.SubscriptionEventHandler):
        def __init__(self) -> None:
            self.pubs: list[Any] = []
            self.subscribed: list[Any] = []
            self.subscribing: list[Any] = []

        async def on_subscribing(self, ctx: Any) -> None:
            self.subscribing.append(ctx)

        async def on_subscribed(self, ctx: Any) -> None:
            self.subscribed.append(ctx)

        async def on_publication(self, ctx: Any) -> None:
            self.pubs.append(ctx.pub.data)

    async def main() -> None:
        a = Node(build_config(config), broker=RedisBroker("redis://127.0.0.1:6379", prefix=prefix))
        b = Node(build_config(config), broker=RedisBroker("redis://127.0.0.1:6379", prefix=prefix))
        await a.start()
        try:
            async with serve(node=b) as s:
                client = centrifuge.Client(
                    s.url, token=connect_token("42"), min_reconnect_delay=0.05
                )
                events = SubEvents()
                sub = client.new_subscription("rec:lost", events)
                await client.connect()
                await sub.subscribe()
                await sub.ready(timeout=5)
                await a.publish("rec:lost", b'{"n":1}')
                await until(lambda: len(events.pubs) == 1, 5)
                dropped = _drop_next_publication(b, "rec:lost")
                await a.publish("rec:lost", b'{"n":2}')
                await until(lambda: dropped == [2], 5)
                # Nothing else is published: only the position check can notice.
                await until(lambda: len(events.subscribed) == 2, 10, "resubscribe after 2500")
                assert events.subscribing[-1].code == 2500
                assert events.subscribed[1].recovered is True
                await until(lambda: len(events.pubs) == 2, 5)
                assert [p["n"] for p in events.pubs] == [1, 2]
                assert b.position_check.lost == 1
                await client.disconnect()
        finally:
            await a.close()
            import redis

            r = redis.Redis.from_url("redis://127.0.0.1:6379")
            keys = list(r.scan_iter(match=f"{prefix}.*", count=1000))
            if keys:
                r.delete(*keys)
            r.close()
        await asyncio.sleep(0)

    run(main(), timeout=60)
