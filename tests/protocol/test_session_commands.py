"""publish, presence, presence_stats, history, rpc and send (PROTOCOL.md §2.3), sans-I/O.

Permission options follow Centrifugo: ``allow_<op>_for_client`` lets any
authenticated client call, ``allow_<op>_for_subscriber`` lets subscribers
call, and anonymous users additionally need ``allow_<op>_for_anonymous``.
A feature that is off (no presence, no history) answers 108 whatever the
permission options say.
"""

from __future__ import annotations

import json

import pytest

from rtcore.engine.events import ChannelEvent, MessageEvent, PublishEvent, RPCEvent
from rtcore.protocol.codes import ClientError, Disconnect, DisconnectError

from .helpers import Client, connect_token, make_node, run, settle, until


HISTORY = {"history_size": 5, "history_ttl": 300}
SUBSCRIBE_ALL = {"allow_subscribe_for_client": True, "allow_subscribe_for_anonymous": True}

CONFIG = {
    "client": {"allow_anonymous_connect_without_token": True},
    "channel": {
        "namespaces": [
            {"name": "sub", **SUBSCRIBE_ALL, "allow_publish_for_subscriber": True},
            {"name": "cli", **SUBSCRIBE_ALL, "allow_publish_for_client": True},
            {
                "name": "anonpub",
                **SUBSCRIBE_ALL,
                "allow_publish_for_subscriber": True,
                "allow_publish_for_anonymous": True,
            },
            {"name": "ro", **SUBSCRIBE_ALL},
            {
                "name": "pres",
                **SUBSCRIBE_ALL,
                "presence": True,
                "allow_presence_for_subscriber": True,
            },
            {
                "name": "prescli",
                **SUBSCRIBE_ALL,
                "presence": True,
                "allow_presence_for_client": True,
                "allow_presence_for_anonymous": True,
            },
            {
                "name": "nopres",
                **SUBSCRIBE_ALL,
                "allow_presence_for_client": True,
                "allow_presence_for_subscriber": True,
            },
            {"name": "hist", **SUBSCRIBE_ALL, **HISTORY, "allow_history_for_subscriber": True},
            {"name": "histcli", **SUBSCRIBE_ALL, **HISTORY, "allow_history_for_client": True},
            {"name": "nohist", **SUBSCRIBE_ALL, "allow_history_for_client": True},
        ]
    },
}


async def _setup(*users: str | None, codec: str = "json", config=CONFIG, hooks: dict | None = None):
    node = make_node(config)
    for name, fn in (hooks or {}).items():
        setattr(node, name, fn)
    await node.start()
    clients = []
    for user in users:
        c = Client(node, codec)
        await c.connect(connect_token(user) if user is not None else "")
        clients.append(c)
    return node, clients


# -- publish ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "channel", "subscribed", "expected"),
    [
        ("42", "sub:a", True, None),
        ("42", "sub:a", False, 103),
        ("42", "cli:a", False, None),
        ("42", "ro:a", True, 103),
        (None, "cli:a", False, 103),
        (
            None,
            "sub:a",
            True,
            103,
        ),  # a subscriber, but anonymous without allow_publish_for_anonymous
        (None, "anonpub:a", True, None),
        (None, "anonpub:a", False, 103),
        ("42", "nope:a", False, 102),
    ],
)
def test_publish_permissions(
    user: str | None, channel: str, subscribed: bool, expected: int | None
) -> None:
    async def main() -> None:
        node, (c,) = await _setup(user)
        if subscribed:
            await c.subscribe(channel)
        body = {"channel": channel, "data": {"text": "hi"}}
        if expected is None:
            assert await c.ok("publish", body) == {}
            if subscribed:
                await until(lambda: c.publications(channel))
                pub = c.publications(channel)[0]
                assert pub["data"] == {"text": "hi"}
                # The publisher travels with client-side publications.
                assert pub["info"]["client"] == c.session.client_id
                assert pub["info"]["user"] == (user or "")
        else:
            assert await c.error("publish", body) == expected
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_publish_reaches_other_subscribers(codec: str) -> None:
    async def main() -> None:
        node, (a, b) = await _setup("1", "2", codec=codec)
        await a.subscribe("sub:room")
        await b.subscribe("sub:room")
        for i in range(3):
            await a.ok("publish", {"channel": "sub:room", "data": {"i": i}})
        await until(lambda: len(b.publications("sub:room")) == 3)
        assert [p["data"]["i"] for p in b.publications("sub:room")] == [0, 1, 2]
        assert all(p["info"]["user"] == "1" for p in b.publications("sub:room"))
        await node.close()

    run(main())


def test_publish_bad_requests() -> None:
    async def main() -> None:
        node, (c,) = await _setup("42")
        assert await c.error("publish", {"channel": "cli:a"}) == 107  # no data
        # A map publish into a stream namespace: refused, as in Centrifugo.
        assert await c.error("publish", {"channel": "cli:a", "data": {"x": 1}, "type": 1}) == 103
        assert await c.error("publish", {"channel": "cli:a", "data": {"x": 1}, "type": 2}) == 108
        assert await c.error("publish", {"channel": "cli:" + "x" * 300, "data": 1}) == 107
        assert await c.disconnected("publish", {"channel": "", "data": 1}) == 3501
        await node.close()

    run(main())


def test_on_publish_hook_decides_and_stamps() -> None:
    async def main() -> None:
        def on_publish(event: PublishEvent):
            if event.channel.endswith(":deny"):
                return False
            if event.channel.endswith(":custom"):
                raise ClientError(4029, "slow down")
            event.data = event.data[:-1] + b',"stamped":true}'
            return None

        node, (c,) = await _setup("42", hooks={"on_publish": on_publish})
        await c.subscribe("ro:a")
        # ro: closed by the options, opened by the hook.
        await c.ok("publish", {"channel": "ro:a", "data": {"t": 1}})
        await until(lambda: c.publications("ro:a"))
        assert c.publications("ro:a")[0]["data"] == {"t": 1, "stamped": True}
        assert await c.error("publish", {"channel": "ro:deny", "data": {"t": 1}}) == 103
        assert await c.error("publish", {"channel": "ro:custom", "data": {"t": 1}}) == 4029
        await node.close()

    run(main())


# -- presence --------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_presence_and_stats(codec: str) -> None:
    async def main() -> None:
        node, (a, b, c) = await _setup("1", "2", "2", codec=codec)
        for cl in (a, b, c):
            await cl.subscribe("pres:room")
        res = await a.ok("presence", {"channel": "pres:room"})
        presence = res["presence"]
        assert set(presence) == {a.session.client_id, b.session.client_id, c.session.client_id}
        assert presence[a.session.client_id]["user"] == "1"
        assert presence[b.session.client_id] == {"user": "2", "client": b.session.client_id}
        stats = await a.ok("presence_stats", {"channel": "pres:room"})
        assert stats == {"num_clients": 3, "num_users": 2}
        await c.ok("unsubscribe", {"channel": "pres:room"})
        await until(lambda: node.hub.num_subscribers("pres:room") == 2)
        await settle()
        assert await a.ok("presence_stats", {"channel": "pres:room"}) == {
            "num_clients": 2,
            "num_users": 2,
        }
        await node.close()

    run(main())


def test_presence_of_an_empty_channel_json_keeps_fields() -> None:
    async def main() -> None:
        node, (c,) = await _setup("42")
        reply = await c.call("presence", {"channel": "prescli:empty"})
        assert reply["presence"] == {"presence": {}}
        reply = await c.call("presence_stats", {"channel": "prescli:empty"})
        assert reply["presence_stats"] == {"num_clients": 0, "num_users": 0}
        await node.close()

    run(main())


@pytest.mark.parametrize(
    ("user", "channel", "subscribed", "expected"),
    [
        ("42", "pres:a", True, None),
        ("42", "pres:a", False, 103),
        (None, "pres:a", True, 103),
        ("42", "prescli:a", False, None),
        (None, "prescli:a", False, None),
        ("42", "nopres:a", True, 108),  # presence off: 108 whatever the permissions
        ("42", "nope:a", False, 102),
    ],
)
@pytest.mark.parametrize("method", ["presence", "presence_stats"])
def test_presence_permissions(
    method: str, user: str | None, channel: str, subscribed: bool, expected: int | None
) -> None:
    async def main() -> None:
        node, (c,) = await _setup(user)
        if subscribed:
            await c.subscribe(channel)
        if expected is None:
            await c.ok(method, {"channel": channel})
        else:
            assert await c.error(method, {"channel": channel}) == expected
        await node.close()

    run(main())


def test_on_presence_hook() -> None:
    async def main() -> None:
        calls: list[ChannelEvent] = []

        def on_presence(event: ChannelEvent):
            calls.append(event)
            return event.channel.endswith(":yes")

        node, (c,) = await _setup("42", hooks={"on_presence": on_presence})
        await c.ok("presence", {"channel": "pres:yes"})  # not subscribed, but the hook allows
        assert await c.error("presence_stats", {"channel": "prescli:no"}) == 103
        assert [e.channel for e in calls] == ["pres:yes", "prescli:no"]
        await node.close()

    run(main())


# -- history ---------------------------------------------------------------------------


async def _history_setup(codec: str = "json", **client: object):
    config = {**CONFIG, "client": {**CONFIG["client"], **client}}
    node, (c,) = await _setup("42", codec=codec, config=config)
    await c.subscribe("hist:a")
    for i in range(1, 9):
        await node.publish("hist:a", b'{"n":%d}' % i)
    return node, c


def _ns(pubs: list[dict]) -> list[int]:
    return [p["data"]["n"] for p in pubs]


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_history_limit_since_reverse(codec: str) -> None:
    async def main() -> None:
        node, c = await _history_setup(codec)
        top = await c.ok("history", {"channel": "hist:a"})  # limit 0: only the position
        assert top.get("publications", []) == [] and top["offset"] == 8
        epoch = top["epoch"]
        assert len(epoch) == 8
        # The stream keeps the newest 5 (history_size).
        full = await c.ok("history", {"channel": "hist:a", "limit": -1})
        assert _ns(full["publications"]) == [4, 5, 6, 7, 8]
        assert [p["offset"] for p in full["publications"]] == [4, 5, 6, 7, 8]
        assert full["offset"] == 8 and full["epoch"] == epoch
        assert _ns((await c.ok("history", {"channel": "hist:a", "limit": 2}))["publications"]) == [
            4,
            5,
        ]
        since = {"offset": 5, "epoch": epoch}
        assert _ns(
            (await c.ok("history", {"channel": "hist:a", "limit": -1, "since": since}))[
                "publications"
            ]
        ) == [6, 7, 8]
        assert _ns(
            (await c.ok("history", {"channel": "hist:a", "limit": 2, "since": since}))[
                "publications"
            ]
        ) == [6, 7]
        at_top = await c.ok(
            "history", {"channel": "hist:a", "limit": -1, "since": {"offset": 8, "epoch": epoch}}
        )
        assert at_top.get("publications", []) == []
        rev = await c.ok("history", {"channel": "hist:a", "limit": -1, "reverse": True})
        assert _ns(rev["publications"]) == [8, 7, 6, 5, 4]
        assert _ns(
            (await c.ok("history", {"channel": "hist:a", "limit": 2, "reverse": True}))[
                "publications"
            ]
        ) == [8, 7]
        rev_since = {
            "channel": "hist:a",
            "limit": -1,
            "reverse": True,
            "since": {"offset": 7, "epoch": epoch},
        }
        assert _ns((await c.ok("history", rev_since))["publications"]) == [6, 5, 4]
        await node.close()

    run(main())


def test_history_wrong_epoch_112_and_bad_reverse_107() -> None:
    async def main() -> None:
        node, c = await _history_setup()
        body = {"channel": "hist:a", "limit": -1, "since": {"offset": 3, "epoch": "NotThis1"}}
        assert await c.error("history", body) == 112
        body = {
            "channel": "hist:a",
            "limit": -1,
            "reverse": True,
            "since": {"offset": 0, "epoch": ""},
        }
        assert await c.error("history", body) == 107
        await node.close()

    run(main())


def test_history_limit_is_capped() -> None:
    async def main() -> None:
        node, c = await _history_setup(history_max_publication_limit=3)
        assert _ns((await c.ok("history", {"channel": "hist:a", "limit": -1}))["publications"]) == [
            4,
            5,
            6,
        ]
        assert _ns(
            (await c.ok("history", {"channel": "hist:a", "limit": 100}))["publications"]
        ) == [4, 5, 6]
        await node.close()

    run(main())


@pytest.mark.parametrize(
    ("user", "channel", "subscribed", "expected"),
    [
        ("42", "hist:b", True, None),
        ("42", "hist:b", False, 103),
        (None, "hist:b", True, 103),
        ("42", "histcli:b", False, None),
        (None, "histcli:b", False, 103),
        ("42", "nohist:b", True, 108),
    ],
)
def test_history_permissions(
    user: str | None, channel: str, subscribed: bool, expected: int | None
) -> None:
    async def main() -> None:
        node, (c,) = await _setup(user)
        if subscribed:
            await c.subscribe(channel)
        if expected is None:
            res = await c.call("history", {"channel": channel, "limit": -1})
            # JSON always writes publications, epoch and offset.
            assert set(res["history"]) == {"publications", "epoch", "offset"}
        else:
            assert await c.error("history", {"channel": channel}) == expected
        await node.close()

    run(main())


# -- rpc and send ----------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_rpc_without_hook_108(codec: str) -> None:
    async def main() -> None:
        node, (c,) = await _setup("42", codec=codec)
        assert await c.error("rpc", {"method": "sum", "data": [1, 2]}) == 108
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_rpc_with_hook(codec: str) -> None:
    async def main() -> None:
        async def on_rpc(event: RPCEvent) -> bytes:
            if event.method == "sum":
                return json.dumps(
                    {"sum": sum(json.loads(event.data)), "user": event.client.user}
                ).encode()
            if event.method == "kick":
                raise DisconnectError(Disconnect(4500, "bye"))
            raise ClientError(104, "method not found")

        node, (c,) = await _setup("42", codec=codec, hooks={"on_rpc": on_rpc})
        assert await c.ok("rpc", {"method": "sum", "data": [1, 2, 3]}) == {
            "data": {"sum": 6, "user": "42"}
        }
        assert await c.error("rpc", {"method": "nope", "data": {}}) == 104
        assert await c.disconnected("rpc", {"method": "kick", "data": {}}) == 4500
        await node.close()

    run(main())


def test_rpc_hook_failure_is_internal_error() -> None:
    async def main() -> None:
        def on_rpc(event: RPCEvent) -> bytes:
            raise RuntimeError("boom")

        node, (c,) = await _setup("42", hooks={"on_rpc": on_rpc})
        reply = await c.call("rpc", {"method": "x", "data": {}})
        assert reply["error"] == {
            "code": 100,
            "message": "internal server error",
            "temporary": True,
        }
        assert c.closed is None
        await node.close()

    run(main())


def test_send_without_hook_3508() -> None:
    async def main() -> None:
        node, (c,) = await _setup("42")
        c.send({"send": {"data": {"x": 1}}})
        assert await c.disconnected() == 3508
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_send_with_hook(codec: str) -> None:
    async def main() -> None:
        got: list[MessageEvent] = []
        node, (c,) = await _setup("42", codec=codec, hooks={"on_message": got.append})
        c.send({"send": {"data": {"x": 1}}}, {"send": {"data": {"x": 2}}})
        await until(lambda: len(got) == 2)
        assert [json.loads(e.data) for e in got] == [{"x": 1}, {"x": 2}]
        assert all(e.client is c.session for e in got)
        await settle()
        # Fire-and-forget: no reply at all.
        assert [m for m in c.messages if "id" in m and m["id"] > 1] == []
        assert c.closed is None
        await node.close()

    run(main())
