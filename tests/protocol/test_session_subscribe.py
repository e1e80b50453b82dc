"""Subscribe permissions and errors, unsubscribe, sub_refresh and subscription expiry, sans-I/O.

Permission rules follow Centrifugo's subscribe handler: a subscription token
grants; otherwise a user-limited channel grants to the users it lists; then
``allow_subscribe_for_client`` (plus ``allow_subscribe_for_anonymous`` for
anonymous users) on channels that are not user-limited; else 103.
"""

from __future__ import annotations

import pytest

from rtcore.engine.events import SubscribeEvent, SubscribeReply
from rtcore.protocol.codes import ClientError

from .helpers import (
    Client,
    FakeClock,
    connect_token,
    make_node,
    run,
    settle,
    subscribe_token,
    until,
)


CONFIG = {
    "client": {
        "allow_anonymous_connect_without_token": True,
        "ping_interval": 0,
        "pong_timeout": 0,
    },
    "channel": {
        "namespaces": [
            {"name": "open", "allow_subscribe_for_client": True},
            {
                "name": "anon",
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
            },
            {"name": "anononly", "allow_subscribe_for_anonymous": True},
            {"name": "limited", "allow_user_limited_channels": True},
            {
                "name": "dialog",
                "allow_user_limited_channels": True,
                "allow_subscribe_for_client": True,
            },
        ]
    },
}


async def _client(user: str | None, codec: str = "json", node=None, clock: FakeClock | None = None):
    node = node or make_node(CONFIG, clock=clock)
    await node.start()
    c = Client(node, codec)
    await c.connect(connect_token(user) if user is not None else "")
    return node, c


@pytest.mark.parametrize(
    ("user", "channel", "expected"),
    [
        ("42", "open:room", None),
        ("42", "anon:room", None),
        ("42", "news", 103),  # no namespace: nothing allowed
        ("42", "limited:dialog#42,43", None),  # listed user: the channel itself grants
        ("42", "limited:dialog#43,44", 103),
        (
            "42",
            "dialog:d#43",
            103,
        ),  # allow_subscribe_for_client does not cover user-limited channels
        ("42", "dialog:d#42", None),
        (
            "42",
            "open:x#43",
            None,
        ),  # '#' is an ordinary character without allow_user_limited_channels
        (None, "open:room", 103),
        (None, "anon:room", None),
        (None, "limited:d#42", 103),
        (None, "anononly:room", 103),  # the anonymous flag only extends allow_subscribe_for_client
        ("42", "$open:room", 103),  # private channels need a token
        ("42", "nope:room", 102),
    ],
)
def test_subscribe_permission_matrix(user: str | None, channel: str, expected: int | None) -> None:
    async def main() -> None:
        node, c = await _client(user)
        if expected is None:
            assert await c.subscribe(channel) == {}
            assert node.hub.num_subscribers(channel) == 1
        else:
            assert await c.error("subscribe", {"channel": channel}) == expected
            assert node.hub.num_subscribers(channel) == 0
            assert channel not in c.session.subscriptions
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_subscription_token(codec: str) -> None:
    async def main() -> None:
        node, c = await _client("42", codec)
        tok = subscribe_token(
            "42", "$news", info={"role": "reader"}, data={"welcome": True}, ttl=600
        )
        res = await c.subscribe("$news", token=tok)
        assert res["data"] == {"welcome": True}
        assert res["expires"] is True and 598 <= res["ttl"] <= 600
        assert c.session.channel_info("$news").chan_info == b'{"role":"reader"}'
        # A token also grants channels the namespace keeps closed.
        await c.subscribe("news", token=subscribe_token("42", "news"))
        await node.close()

    run(main())


def test_subscription_token_expired_109() -> None:
    async def main() -> None:
        node, c = await _client("42")
        assert (
            await c.error(
                "subscribe", {"channel": "$news", "token": subscribe_token("42", "$news", ttl=-5)}
            )
            == 109
        )
        await node.close()

    run(main())


def test_subscription_token_invalid_103() -> None:
    async def main() -> None:
        node, c = await _client("42")
        from rtcore.auth import make_subscribe_token

        forged = make_subscribe_token("some-other-secret-some-other-secret-0000", "42", "$news")
        assert await c.error("subscribe", {"channel": "$news", "token": forged}) == 103
        assert await c.error("subscribe", {"channel": "$news", "token": "garbage"}) == 103
        await node.close()

    run(main())


@pytest.mark.parametrize(
    "token_args",
    [
        {"user": "42", "channel": "$other"},
        {"user": "43", "channel": "$news"},
        {"user": "42", "channel": "$news", "client": "someone-else"},
    ],
    ids=["channel", "user", "client"],
)
def test_subscription_token_mismatch_3500(token_args: dict) -> None:
    async def main() -> None:
        node, c = await _client("42")
        tok = subscribe_token(
            token_args["user"], token_args["channel"], client=token_args.get("client")
        )
        assert await c.disconnected("subscribe", {"channel": "$news", "token": tok}) == 3500
        await node.close()

    run(main())


def test_subscription_token_bound_to_this_client() -> None:
    async def main() -> None:
        node, c = await _client("42")
        tok = subscribe_token("42", "$news", client=c.session.client_id)
        await c.subscribe("$news", token=tok)
        await node.close()

    run(main())


def test_on_subscribe_hook_decides() -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        seen: list[SubscribeEvent] = []

        def on_subscribe(event: SubscribeEvent):
            seen.append(event)
            if event.channel == "news:deny":
                return False
            if event.channel == "news:custom":
                raise ClientError(4004, "no such room")
            if event.channel == "news:reply":
                return SubscribeReply(info=b'{"seat":7}', data=b'{"hi":1}')
            return None

        node.on_subscribe = on_subscribe
        node.config.channel.namespaces.append(type(node.config.channel.namespaces[0])(name="news"))
        node.channels = type(node.channels)(node.config.channel)
        node, c = await _client("42", node=node)
        # Closed by the options, opened by the hook.
        assert await c.subscribe("news:ok", data={"x": 1}) == {}
        assert seen[-1].data == b'{"x":1}'
        assert await c.error("subscribe", {"channel": "news:deny"}) == 103
        assert await c.error("subscribe", {"channel": "news:custom"}) == 4004
        assert (await c.subscribe("news:reply"))["data"] == {"hi": 1}
        assert c.session.channel_info("news:reply").chan_info == b'{"seat":7}'
        # Private channels still need a token, hook or not.
        assert await c.error("subscribe", {"channel": "$news:ok"}) == 103
        await node.close()

    run(main())


def test_unknown_namespace_102() -> None:
    async def main() -> None:
        node, c = await _client("42")
        assert await c.error("subscribe", {"channel": "missing:chan"}) == 102
        await node.close()

    run(main())


def test_already_subscribed_105() -> None:
    async def main() -> None:
        node, c = await _client("42")
        await c.subscribe("open:a")
        assert await c.error("subscribe", {"channel": "open:a"}) == 105
        assert node.hub.num_subscribers("open:a") == 1
        await node.close()

    run(main())


def test_channel_limit_106() -> None:
    async def main() -> None:
        node = make_node({**CONFIG, "client": {**CONFIG["client"], "channel_limit": 2}})
        node, c = await _client("42", node=node)
        await c.subscribe("open:a")
        await c.subscribe("open:b")
        assert await c.error("subscribe", {"channel": "open:c"}) == 106
        await c.ok("unsubscribe", {"channel": "open:a"})
        await c.subscribe("open:c")
        await node.close()

    run(main())


@pytest.mark.parametrize("channel", ["open:" + "x" * 251, "open:bad\x00name", "open:tab\there"])
def test_invalid_channel_name_107(channel: str) -> None:
    async def main() -> None:
        node, c = await _client("42")
        assert await c.error("subscribe", {"channel": channel}) == 107
        await node.close()

    run(main())


def test_longest_valid_channel_name() -> None:
    async def main() -> None:
        node, c = await _client("42")
        await c.subscribe("open:" + "x" * 250)  # 255 bytes
        await node.close()

    run(main())


def test_empty_channel_3501() -> None:
    async def main() -> None:
        node, c = await _client("42")
        assert await c.disconnected("subscribe", {"channel": ""}) == 3501
        await node.close()

    run(main())


def test_shared_poll_type_108() -> None:
    async def main() -> None:
        node, c = await _client("42")
        assert await c.error("subscribe", {"channel": "open:a", "type": 4}) == 108
        await node.close()

    run(main())


@pytest.mark.parametrize("sub_type", [1, 2, 3])
def test_map_types_on_a_stream_namespace_103(sub_type: int) -> None:
    async def main() -> None:
        node, c = await _client("42")
        body = {"channel": "open:a", "type": sub_type, "phase": 2}
        assert await c.error("subscribe", body) == 103
        await node.close()

    run(main())


def test_tags_filter_107() -> None:
    async def main() -> None:
        node, c = await _client("42")
        body = {"channel": "open:a", "tf": {"key": "team", "cmp": "eq", "val": "eng"}}
        assert await c.error("subscribe", body) == 107
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_unsubscribe(codec: str) -> None:
    async def main() -> None:
        node, c = await _client("42", codec)
        await c.subscribe("open:a")
        await node.publish("open:a", b'{"n":1}')
        await until(lambda: len(c.publications("open:a")) == 1)
        assert await c.ok("unsubscribe", {"channel": "open:a"}) == {}
        assert node.hub.num_subscribers("open:a") == 0
        await node.publish("open:a", b'{"n":2}')
        await settle()
        assert len(c.publications("open:a")) == 1
        # Unsubscribing from a channel one is not in is harmless.
        assert await c.ok("unsubscribe", {"channel": "open:zzz"}) == {}
        # And one can subscribe again.
        await c.subscribe("open:a")
        await node.close()

    run(main())


# -- sub_refresh and subscription expiry ----------------------------------------------


def test_sub_refresh() -> None:
    async def main() -> None:
        clock = FakeClock()
        node, c = await _client("42", clock=clock)
        exp = int(clock.wall()) + 60
        await c.subscribe("$news", token=subscribe_token("42", "$news", expire_at=exp))
        res = await c.ok(
            "sub_refresh",
            {"channel": "$news", "token": subscribe_token("42", "$news", expire_at=exp + 300)},
        )
        assert res["expires"] is True and 358 <= res["ttl"] <= 360
        # The old deadline (60 + 25 s) passes without an unsubscribe.
        clock.advance(100)
        node.timers.sweep()
        await settle()
        assert c.pushes("unsubscribe") == []
        assert c.closed is None
        await node.close()

    run(main())


def test_sub_refresh_errors() -> None:
    async def main() -> None:
        node, c = await _client("42")
        tok = subscribe_token("42", "$news", ttl=60)
        # Not subscribed: 103.
        assert await c.error("sub_refresh", {"channel": "$news", "token": tok}) == 103
        await c.subscribe("$news", token=tok)
        # Empty token: 107.
        assert await c.error("sub_refresh", {"channel": "$news", "token": ""}) == 107
        # A token for another channel: 3500.
        bad = subscribe_token("42", "$other", ttl=60)
        assert await c.disconnected("sub_refresh", {"channel": "$news", "token": bad}) == 3500
        await node.close()

    run(main())


def test_sub_refresh_expired_token_3005() -> None:
    async def main() -> None:
        node, c = await _client("42")
        await c.subscribe("$news", token=subscribe_token("42", "$news", ttl=60))
        expired = subscribe_token("42", "$news", ttl=-1)
        assert await c.disconnected("sub_refresh", {"channel": "$news", "token": expired}) == 3005
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", ["json", "protobuf"])
def test_subscription_expiry_unsubscribes_2501(codec: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        node, c = await _client("42", codec, clock=clock)
        exp = int(clock.wall()) + 30
        await c.subscribe("$news", token=subscribe_token("42", "$news", expire_at=exp))
        await c.subscribe("open:other")
        clock.advance(30 + 24)
        node.timers.sweep()
        await settle()
        assert c.pushes("unsubscribe") == []
        clock.advance(2)
        node.timers.sweep()
        await until(lambda: c.pushes("unsubscribe"))
        push = c.pushes("unsubscribe")[0]
        assert push["channel"] == "$news"
        assert push["unsubscribe"]["code"] == 2501
        assert "$news" not in c.session.subscriptions
        assert node.hub.num_subscribers("$news") == 0
        # The connection and its other subscription live on.
        assert c.closed is None and "open:other" in c.session.subscriptions
        await node.close()

    run(main())


def test_server_side_subscription_expiry_3006() -> None:
    """An expiring server-side subscription that is not refreshed ends the connection (3006)."""

    async def main() -> None:
        clock = FakeClock()
        node, c = await _client("42", clock=clock)
        await node.subscribe("42", "open:srv", expire_at=int(clock.wall()) + 10)
        await until(lambda: c.pushes("subscribe", "open:srv"))
        state = c.session.subscriptions["open:srv"]
        assert state.server_side and not state.pending
        # Server-side subscriptions are refreshed by the server, not with sub_refresh.
        assert "expires" not in c.pushes("subscribe", "open:srv")[0]["subscribe"]
        clock.advance(10 + 24)
        node.timers.sweep()
        await settle()
        assert c.closed is None
        clock.advance(2)
        node.timers.sweep()
        assert await c.disconnected() == 3006
        await node.close()

    run(main())
