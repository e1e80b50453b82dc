"""``broker.type = "nats"`` from the config: NATS carries publications, Redis keeps history.

Two ``rtcore serve`` nodes share a ``nats-server`` (JetStream not needed,
started here on a free port) and the Redis on 127.0.0.1:6379 (a key prefix of
their own). A client on node B receives what node A's server API publishes,
with the offsets of the Redis stream; after a disconnect it recovers, through
node B, what node A published meanwhile. The idempotency key suppresses a
repeated publish across nodes. And at the broker level: one node's concurrent
publishes to a channel arrive in offset order.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest

from rtcore.config import config_from_mapping
from rtcore.engine.history import HistoryOptions
from rtcore.protocol.types import Publication
from tests.multinode.helpers import api, client, cluster, require_redis, subscribed, until

from .redis_servers import IN_CI
from .test_nats import NatsServer


try:
    import nats  # noqa: F401
except ImportError:  # pragma: no cover - nats-py missing
    if IN_CI:
        raise
    pytest.skip("nats-py is not installed", allow_module_level=True)


pytestmark = pytest.mark.redis


@pytest.fixture
def nats_server() -> NatsServer:
    server = NatsServer()
    server.start()
    try:
        yield server  # type: ignore[misc]
    finally:
        server.stop()
        server.cleanup()


def _broker_section(url: str, prefix: str) -> str:
    return f'\n[broker]\ntype = "nats"\nnats_url = ["{url}"]\nnats_prefix = "{prefix}"\n'


def test_two_nodes_publish_over_nats_and_recover_from_redis(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    require_redis()
    subjects = f"rtcore-nats-{uuid.uuid4().hex[:8]}"
    with cluster(tmp_path, 2, extra=_broker_section(nats_server.url, subjects)) as nodes:
        for node in nodes.nodes:
            assert "NATS" not in node.log or "error" not in node.log.lower()

        async def main() -> None:
            cb, _ = client(nodes[1].ws, "bob")
            await cb.connect()
            await cb.ready(timeout=10)
            sub, events = await subscribed(cb, "chat:room")
            async with aiohttp.ClientSession() as http:
                for seq in (1, 2, 3):
                    reply = await api(
                        http, nodes[0], "publish", {"channel": "chat:room", "data": {"seq": seq}}
                    )
                    assert reply["result"]["offset"] == seq, reply
                await until(lambda: len(events.pubs) >= 3, 10, "3 publications on node B")
                assert events.seqs() == [1, 2, 3]
                assert [p.offset for p in events.pubs] == [1, 2, 3]
                epoch = reply["result"]["epoch"]

                # The same idempotency key on the other node: one publication.
                params = {"channel": "chat:room", "data": {"seq": 4}, "idempotency_key": "k4"}
                first = await api(http, nodes[0], "publish", params)
                again = await api(http, nodes[1], "publish", params)
                assert first["result"] == again["result"] == {"offset": 4, "epoch": epoch}
                await until(lambda: len(events.pubs) >= 4, 10, "publication 4")

                # Away for a while: node A publishes, node B's client recovers from Redis.
                await cb.disconnect()
                for seq in (5, 6, 7):
                    await api(
                        http, nodes[0], "publish", {"channel": "chat:room", "data": {"seq": seq}}
                    )
                await cb.connect()
                await until(lambda: len(events.subscribed) >= 2, 10, "resubscribed")
                resub = events.subscribed[-1]
                assert resub.was_recovering is True and resub.recovered is True
                await until(lambda: len(events.pubs) >= 7, 10, "recovered publications")
                assert events.seqs() == [1, 2, 3, 4, 5, 6, 7]

                history = await api(
                    http, nodes[1], "history", {"channel": "chat:room", "limit": -1}
                )
                assert [p["offset"] for p in history["result"]["publications"]] == list(range(1, 8))
            await sub.unsubscribe()
            await cb.disconnect()

        asyncio.run(asyncio.wait_for(main(), 60))


def test_one_node_sends_a_channel_in_offset_order(nats_server: NatsServer) -> None:
    require_redis()
    from rtcore.server.cli.serve import _make_node

    from .conformance import RecordingHandler

    prefix = f"rtcore-nats-order-{uuid.uuid4().hex[:8]}"
    config = config_from_mapping(
        {
            "engine": {"type": "redis", "redis_prefix": prefix},
            "broker": {"type": "nats", "nats_url": [nats_server.url], "nats_prefix": prefix},
        }
    )

    async def main() -> None:
        sender = _make_node(config)
        receiver = _make_node(config)
        recording = RecordingHandler()
        await sender.broker.start(RecordingHandler())
        await receiver.broker.start(recording)
        try:
            await receiver.broker.subscribe("ch")
            opts = HistoryOptions(size=1000, ttl=60.0, meta_ttl=120.0)
            results = await asyncio.gather(
                *(
                    sender.broker.publish("ch", Publication(data=b"%d" % i), history=opts)
                    for i in range(300)
                )
            )
            assert sorted(r.position.offset for r in results) == list(range(1, 301))

            def delivered() -> list[int]:
                return [e.position.offset for e in recording.events if e.kind == "publication"]

            await until(lambda: len(delivered()) >= 300, 10, "300 deliveries")
            offsets = delivered()
            assert offsets == list(range(1, 301))
        finally:
            await sender.close()
            await receiver.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_history_needs_the_redis_engine() -> None:
    with pytest.raises(Exception, match="needs engine.type = 'redis'"):
        config_from_mapping(
            {
                "broker": {"type": "nats"},
                "channel": {"without_namespace": {"history_size": 10, "history_ttl": "1m"}},
            }
        )
