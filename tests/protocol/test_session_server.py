"""Server-side subscriptions, server operations reaching clients, join/leave,
slow clients and encode-once fan-out, sans-I/O."""

from __future__ import annotations

import pytest

from rtcore.engine.events import ChannelEvent, DisconnectEvent
from rtcore.protocol import get_codec
from rtcore.protocol.types import Publication

from .helpers import Client, connect_token, make_node, run, settle, until


OPEN = {"allow_subscribe_for_client": True}
HISTORY = {"history_size": 20, "history_ttl": 300}
CONFIG = {
    "client": {"ping_interval": 0, "pong_timeout": 0},
    "channel": {
        "without_namespace": OPEN,
        "namespaces": [
            {"name": "srv", **OPEN},
            {"name": "rec", **OPEN, **HISTORY, "force_recovery": True},
            {
                "name": "room",
                **OPEN,
                "presence": True,
                "join_leave": True,
                "allow_presence_for_subscriber": True,
            },
            {
                "name": "lobby",
                **OPEN,
                "presence": True,
                "join_leave": True,
                "force_push_join_leave": True,
            },
            {"name": "quiet", **OPEN, "presence": True, "join_leave": True},
        ],
    },
}


async def _node(config=CONFIG):
    node = make_node(config)
    await node.start()
    return node


async def _connect(node, user: str, codec: str = "json", **token: object) -> Client:
    c = Client(node, codec)
    await c.connect(connect_token(user, **token))
    return c


# -- server-side subscriptions ----------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_token_channels_in_connect_result(codec: str) -> None:
    async def main() -> None:
        node = await _node()
        c = Client(node, codec)
        res = await c.connect(connect_token("42", channels=["srv:a", "rec:b"]))
        subs = res["subs"]
        assert set(subs) == {"srv:a", "rec:b"}
        assert subs["srv:a"] == {}
        assert subs["rec:b"]["recoverable"] is True and subs["rec:b"]["positioned"] is True
        assert len(subs["rec:b"]["epoch"]) == 8
        assert all(c.session.subscriptions[ch].server_side for ch in subs)
        await node.publish("srv:a", b'{"n":1}')
        await until(lambda: c.publications("srv:a"))
        # Already subscribed (server-side): a client subscribe to it is 105.
        assert await c.error("subscribe", {"channel": "srv:a"}) == 105
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_token_subs_with_options(codec: str) -> None:
    """``subs`` carries per-channel options and, as in Centrifugo, wins over ``channels``."""

    async def main() -> None:
        node = await _node()
        c = Client(node, codec)
        tok = connect_token(
            "42",
            channels=["srv:ignored"],
            subs={
                "srv:c": {
                    "data": {"welcome": 1},
                    "info": {"seat": 3},
                    "override": {"presence": True},
                },
                "srv:d": {},
            },
        )
        res = await c.connect(tok)
        assert set(res["subs"]) == {"srv:c", "srv:d"}
        assert res["subs"]["srv:c"]["data"] == {"welcome": 1}
        assert c.session.channel_info("srv:c").chan_info == b'{"seat":3}'
        # The presence override took effect for srv:c only.
        assert c.session.client_id in await node.presence_manager.presence("srv:c")
        assert await node.presence_manager.presence("srv:d") == {}
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_server_side_recovery_through_connect_subs(codec: str) -> None:
    async def main() -> None:
        node = await _node()
        tok = connect_token("42", channels=["rec:feed"])
        first = Client(node, codec)
        res = await first.connect(tok)
        epoch = res["subs"]["rec:feed"]["epoch"]
        for n in (1, 2):
            await node.publish("rec:feed", b'{"n":%d}' % n)
        await until(lambda: len(first.publications("rec:feed")) == 2)
        position = first.publications("rec:feed")[-1]["offset"]
        first.session.transport_closed()
        for n in (3, 4, 5):
            await node.publish("rec:feed", b'{"n":%d}' % n)
        again = Client(node, codec)
        res = await again.connect(
            tok, subs={"rec:feed": {"recover": True, "offset": position, "epoch": epoch}}
        )
        sub = res["subs"]["rec:feed"]
        assert sub["recovered"] is True and sub["was_recovering"] is True
        assert [p["data"]["n"] for p in sub["publications"]] == [3, 4, 5]
        assert sub["offset"] == position
        await node.publish("rec:feed", b'{"n":6}')
        await until(lambda: again.publications("rec:feed"))
        assert [p["offset"] for p in again.publications("rec:feed")] == [6]
        # Recovery hints for channels the connection is not granted are ignored.
        other = Client(node, codec)
        res = await other.connect(
            connect_token("43"), subs={"rec:feed": {"recover": True, "offset": 1, "epoch": epoch}}
        )
        assert "subs" not in res
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_node_subscribe_and_unsubscribe_reach_clients(codec: str) -> None:
    async def main() -> None:
        node = await _node()
        a = await _connect(node, "42", codec)
        b = await _connect(node, "42", codec)
        other = await _connect(node, "43", codec)
        await node.subscribe("42", "rec:news", data=b'{"why":"promo"}')
        await until(lambda: a.pushes("subscribe") and b.pushes("subscribe"))
        push = a.pushes("subscribe", "rec:news")[0]["subscribe"]
        assert (
            push["recoverable"] is True
            and push["positioned"] is True
            and push["data"] == {"why": "promo"}
        )
        assert other.pushes("subscribe") == []
        await node.publish("rec:news", b'{"n":1}')
        await until(lambda: a.publications("rec:news") and b.publications("rec:news"))
        # One connection only.
        await node.unsubscribe("42", "rec:news", client=a.session.client_id)
        await until(lambda: a.pushes("unsubscribe"))
        assert a.pushes("unsubscribe")[0] == {
            "channel": "rec:news",
            "unsubscribe": {"code": 2000, "reason": "server unsubscribe"},
        }
        assert b.pushes("unsubscribe") == []
        await node.publish("rec:news", b'{"n":2}')
        await until(lambda: len(b.publications("rec:news")) == 2)
        await settle()
        assert len(a.publications("rec:news")) == 1
        await node.close()

    run(main())


def test_node_disconnect_reaches_clients() -> None:
    async def main() -> None:
        node = await _node()
        a = await _connect(node, "42")
        b = await _connect(node, "42")
        c = await _connect(node, "42")
        other = await _connect(node, "43")
        await node.disconnect("42", whitelist=[c.session.client_id])
        await until(lambda: a.closed and b.closed)
        assert a.closed.code == 3503 and a.closed.reason == "force disconnect"
        assert c.closed is None and other.closed is None
        await node.disconnect("42", code=3011, reason="force reconnect", client=c.session.client_id)
        assert await c.disconnected() == 3011
        assert other.closed is None
        await node.close()

    run(main())


def test_node_refresh_push() -> None:
    async def main() -> None:
        node = await _node()
        c = await _connect(node, "42")
        await node.refresh("42", expire_at=int(node.wall_clock()) + 300, info=b'{"v":2}')
        await until(lambda: c.pushes("refresh"))
        assert c.pushes("refresh")[0]["refresh"]["expires"] is True
        assert c.session.info == b'{"v":2}'
        await node.close()

    run(main())


def test_disconnect_and_unsubscribe_hooks() -> None:
    async def main() -> None:
        node = await _node()
        disconnects: list[DisconnectEvent] = []
        unsubscribes: list[ChannelEvent] = []
        node.on_disconnect = disconnects.append
        node.on_unsubscribe = unsubscribes.append
        c = await _connect(node, "42")
        await c.subscribe("srv:x")
        await c.ok("unsubscribe", {"channel": "srv:x"})
        await until(lambda: unsubscribes)
        assert unsubscribes[0].channel == "srv:x"
        await node.disconnect("42", code=4100, reason="custom")
        await until(lambda: disconnects)
        assert (disconnects[0].code, disconnects[0].reason) == (4100, "custom")
        assert disconnects[0].client is c.session
        await node.close()

    run(main())


# -- join / leave -------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_join_leave_pushes(codec: str) -> None:
    async def main() -> None:
        node = await _node()
        watcher = await _connect(node, "1", codec, info={"name": "w"})
        plain = await _connect(node, "3", codec)
        joiner = await _connect(node, "2", codec, info={"name": "j"})
        await watcher.subscribe("room:a", join_leave=True)
        await plain.subscribe("room:a")  # did not ask for join/leave
        await joiner.subscribe("room:a")
        jid = joiner.session.client_id

        def joins(c: Client) -> list[dict]:
            return [
                p["join"]["info"]
                for p in c.pushes("join", "room:a")
                if p["join"]["info"]["client"] == jid
            ]

        await until(lambda: joins(watcher))
        assert joins(watcher)[0] == {"user": "2", "client": jid, "conn_info": {"name": "j"}}
        await joiner.ok("unsubscribe", {"channel": "room:a"})
        await until(lambda: watcher.pushes("leave", "room:a"))
        assert watcher.pushes("leave", "room:a")[0]["leave"]["info"]["client"] == jid
        await settle()
        assert plain.pushes("join") == [] and plain.pushes("leave") == []
        # A disconnect is a leave too.
        again = await _connect(node, "2", codec)
        await again.subscribe("room:a")
        again.session.transport_closed()
        await until(lambda: len(watcher.pushes("leave", "room:a")) == 2)
        await node.close()

    run(main())


@pytest.mark.parametrize("overridden", [False, True])
def test_join_is_delivered_in_process_or_by_a_task(overridden: bool) -> None:
    """The memory broker's join reaches the listeners before the subscribe
    returns, without a task; a broker overriding publish_join gets the call
    in a task of its own (it may wait). Counted as sent either way."""
    from rtcore.engine.memory import MemoryBroker

    published: list[str] = []

    class Recording(MemoryBroker):
        async def publish_join(self, channel, info):  # type: ignore[no-untyped-def]
            published.append(channel)
            await super().publish_join(channel, info)

    async def main() -> None:
        broker = Recording() if overridden else MemoryBroker()
        assert broker.joins_in_process is not overridden
        node = make_node(CONFIG, broker=broker)
        await node.start()
        watcher = await _connect(node, "1")
        await watcher.subscribe("room:a", join_leave=True)
        joiner = await _connect(node, "2")
        spawned = []
        spawn = node.spawn
        node.spawn = lambda coro: spawned.append(coro) or spawn(coro)  # type: ignore[method-assign]
        await joiner.subscribe("room:a")
        jid = joiner.session.client_id
        if overridden:
            assert len(spawned) == 1
            await until(lambda: published == ["room:a", "room:a"])  # the watcher's and the joiner's
        else:
            assert spawned == [] and published == []
        await until(lambda: watcher.pushes("join", "room:a"))
        assert watcher.pushes("join", "room:a")[-1]["join"]["info"]["client"] == jid
        assert node.messages_sent["join"] == 2
        await node.close()

    run(main())


def test_force_push_join_leave_and_presence_permission() -> None:
    async def main() -> None:
        node = await _node()
        forced = await _connect(node, "1")
        await forced.subscribe("lobby:a")  # force_push_join_leave: pushes without asking
        asking = await _connect(node, "1")
        # quiet: join_leave on, but the client may not see presence, so no pushes for it.
        await asking.subscribe("quiet:a", join_leave=True)
        other = await _connect(node, "2")
        await other.subscribe("lobby:a")
        await other.subscribe("quiet:a")
        await until(
            lambda: [
                p for p in forced.pushes("join", "lobby:a") if p["join"]["info"]["user"] == "2"
            ]
        )
        await settle()
        assert asking.pushes("join") == []
        await node.close()

    run(main())


# -- slow clients and fan-out ------------------------------------------------------------


def test_slow_client_is_disconnected_3008_others_keep_receiving() -> None:
    async def main() -> None:
        config = {**CONFIG, "client": {**CONFIG["client"], "queue_max_size": 4096}}
        node = await _node(config)
        fast = await _connect(node, "1")
        slow = await _connect(node, "2")
        await fast.subscribe("news")
        await slow.subscribe("news")
        # The slow client stops reading: its socket buffer fills up.
        slow.transport.buffered = 10 * 4096
        for n in range(1, 21):
            await node.publish("news", b'{"n":%d,"pad":"%s"}' % (n, b"x" * 100))
            await settle(3)
        assert await slow.disconnected() == 3008
        await until(lambda: len(fast.publications("news")) == 20)
        assert [p["data"]["n"] for p in fast.publications("news")] == list(range(1, 21))
        assert fast.closed is None
        assert node.hub.num_subscribers("news") == 1
        await node.close()

    run(main())


def test_queue_overflow_within_one_tick_is_slow() -> None:
    """Bytes queued faster than one flush can take also make the client slow."""

    async def main() -> None:
        config = {**CONFIG, "client": {**CONFIG["client"], "queue_max_size": 2048}}
        node = await _node(config)
        c = await _connect(node, "1")
        await c.subscribe("news")
        for n in range(50):  # no await yields to the loop in between: one tick
            node.hub.broadcast_publication(
                "news", Publication(data=b'{"n":%d}' % n + b" " * 64), ""
            )
        assert await c.disconnected() == 3008
        await node.close()

    run(main())


def test_encode_once_per_codec_for_100_subscribers() -> None:
    async def main() -> None:
        node = await _node()
        clients = []
        for i in range(100):
            c = await _connect(node, str(i), "json" if i % 2 else "protobuf")
            await c.subscribe("news")
            clients.append(c)
        before = list(node.hub.encodes)
        for n in range(5):
            await node.publish("news", b'{"n":%d}' % n)
        await until(lambda: all(len(c.publications("news")) == 5 for c in clients))
        made = [after - b for after, b in zip(node.hub.encodes, before, strict=True)]
        json_i = node.codec_index(get_codec("json"))
        pb_i = node.codec_index(get_codec("protobuf"))
        # One encode per publication for each codec with subscribers, none for the others.
        assert made[json_i] == 5 and made[pb_i] == 5
        assert sum(made) == 10, made
        # Every subscriber of a codec was handed the very same bytes object.
        for is_json in (True, False):
            group = [c for i, c in enumerate(clients) if (i % 2 == 1) == is_json]
            per_client = [[p for batch in c.transport.batches for p in batch][-5:] for c in group]
            for n in range(5):
                assert len({id(msgs[n]) for msgs in per_client}) == 1
        await node.close()

    run(main())
