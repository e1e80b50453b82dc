"""Connect, refresh and connection expiry (PROTOCOL.md §5.2, §5.4), sans-I/O."""

from __future__ import annotations

import time

import pytest

from rtcore.auth import make_connect_token
from rtcore.engine.events import ConnectEvent, Credentials
from rtcore.protocol.codes import ClientError, DisconnectError

from .helpers import Client, FakeClock, connect_token, make_node, run, settle, until


CODECS = ["json", "protobuf"]


@pytest.mark.parametrize("codec", CODECS)
def test_connect_with_valid_token(codec: str) -> None:
    async def main() -> None:
        node = make_node()
        await node.start()
        c = Client(node, codec)
        res = await c.connect(connect_token("42", info={"name": "Ann"}), name="js", version="1.2")
        assert res["client"] == c.session.client_id
        assert res["version"] == node.version
        assert res["ping"] == 25 and res["pong"] is True
        assert "expires" not in res and "ttl" not in res
        assert c.session.user == "42"
        assert c.session.info == b'{"name":"Ann"}'
        assert c.session.name == "js" and c.session.version == "1.2"
        assert node.hub.user_connection_count("42") == 1
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_expired_token_is_error_109(codec: str) -> None:
    async def main() -> None:
        node = make_node()
        await node.start()
        c = Client(node, codec)
        assert await c.error("connect", {"token": connect_token("42", ttl=-30)}) == 109
        # The connection stays open: the SDK refreshes its token and connects again.
        await c.connect(connect_token("42", ttl=60))
        await node.close()

    run(main())


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        make_connect_token("another-secret-another-secret-0123456789", "42"),
        make_connect_token(
            "rtcore-protocol-tests-hmac-secret-0123456789", "42", extra_claims={"channel": "x"}
        ),
    ],
    ids=["garbage", "wrong-key", "channel-claim"],
)
def test_invalid_token_disconnects_3500(token: str) -> None:
    async def main() -> None:
        node = make_node()
        await node.start()
        c = Client(node)
        assert await c.disconnected("connect", {"token": token}) == 3500
        assert node.hub.num_sessions == 0
        await node.close()

    run(main())


def test_anonymous_without_token() -> None:
    async def main() -> None:
        closed = make_node()
        opened = make_node({"client": {"allow_anonymous_connect_without_token": True}})
        await closed.start()
        await opened.start()
        refused = Client(closed)
        assert await refused.disconnected("connect", {}) == 3501
        anon = Client(opened)
        res = await anon.connect()
        assert res["client"] and anon.session.user == ""
        await closed.close()
        await opened.close()

    run(main())


def test_anonymous_token() -> None:
    async def main() -> None:
        node = make_node()
        strict = make_node({"client": {"disallow_anonymous_connection_tokens": True}})
        await node.start()
        await strict.start()
        ok = Client(node)
        await ok.connect(connect_token(""))
        assert ok.session.user == ""
        refused = Client(strict)
        assert await refused.disconnected("connect", {"token": connect_token("")}) == 3507
        # A token with a user is still fine there.
        await Client(strict).connect(connect_token("42"))
        await node.close()
        await strict.close()

    run(main())


def test_expire_at_in_the_past_is_error_110() -> None:
    async def main() -> None:
        node = make_node()
        await node.start()
        c = Client(node)
        tok = connect_token("42", expire_at=int(time.time()) - 5)
        assert await c.error("connect", {"token": tok}) == 110
        await node.close()

    run(main())


def test_user_connection_limit_3504() -> None:
    async def main() -> None:
        node = make_node({"client": {"user_connection_limit": 2}})
        await node.start()
        first, second = Client(node), Client(node)
        await first.connect(connect_token("42"))
        await second.connect(connect_token("42"))
        third = Client(node)
        assert await third.disconnected("connect", {"token": connect_token("42")}) == 3504
        # Other users are not affected; a freed slot can be reused.
        await Client(node).connect(connect_token("43"))
        first.session.transport_closed()
        await Client(node).connect(connect_token("42"))
        await node.close()

    run(main())


def test_on_connecting_hook() -> None:
    """The hook sees the token's credentials and may replace them or refuse."""

    async def main() -> None:
        node = make_node({"client": {"allow_anonymous_connect_without_token": True}})
        seen: list[ConnectEvent] = []

        def on_connecting(event: ConnectEvent) -> Credentials | None:
            seen.append(event)
            if event.data == {"deny": True} or event.data == b'{"deny":true}':
                raise ClientError(4403, "go away")
            if event.data == b'{"kick":true}':
                raise DisconnectError(__import__("rtcore").codes.Disconnect(4501, "kicked"))
            if event.credentials is None:
                return Credentials(
                    user="guest-" + event.name, info=b'{"guest":true}', data=b'{"hello":1}'
                )
            return None

        node.on_connecting = on_connecting
        await node.start()
        tok = Client(node)
        await tok.connect(connect_token("42"))
        assert tok.session.user == "42"
        assert seen[-1].credentials is not None and seen[-1].credentials.user == "42"
        guest = Client(node)
        res = await guest.connect(name="web")
        assert guest.session.user == "guest-web" and res["data"] == {"hello": 1}
        denied = Client(node)
        assert await denied.error("connect", {"data": {"deny": True}}) == 4403
        kicked = Client(node)
        assert await kicked.disconnected("connect", {"data": {"kick": True}}) == 4501
        await node.close()

    run(main())


def test_hook_attributes() -> None:
    """Hooks are attributes: set, read back, replaced, removed with None; the
    decorator registers by name; a non-callable or unknown name is refused."""
    from rtcore.engine.events import HOOKS

    node = make_node()
    assert all(getattr(node, name) is None for name in HOOKS)
    assert "on_connect" in HOOKS and len(HOOKS) == 11

    def first(session: object) -> None: ...

    def on_connect(session: object) -> None: ...

    node.on_connect = first
    assert node.on_connect is first and node.has_hook("on_connect")
    assert node.hook(on_connect) is on_connect and node.on_connect is on_connect
    node.on_connect = None
    assert node.on_connect is None and not node.has_hook("on_connect")
    with pytest.raises(TypeError, match="on_publish must be callable"):
        node.on_publish = "not a function"
    assert not node.has_hook("on_publish")

    def on_typo(event: object) -> None: ...

    with pytest.raises(ValueError, match="unknown hook 'on_typo'"):
        node.hook(on_typo)
    # Other attributes are plain attributes.
    node.custom_value = 5
    assert node.custom_value == 5 and not node.has_hook("custom_value")


# -- refresh ------------------------------------------------------------------------


def _expiring_node(clock: FakeClock):
    return make_node(
        {"client": {"expired_close_delay": 25, "ping_interval": 0, "pong_timeout": 0}}, clock=clock
    )


def _exp_token(user: str, clock: FakeClock, ttl: int) -> str:
    return connect_token(user, expire_at=int(clock.wall()) + ttl)


@pytest.mark.parametrize("codec", CODECS)
def test_connection_expiry_3005(codec: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        node = _expiring_node(clock)
        await node.start()
        c = Client(node, codec)
        res = await c.connect(_exp_token("42", clock, 60))
        assert res["expires"] is True and 58 <= res["ttl"] <= 60
        clock.advance(60 + 24)
        node.timers.sweep()
        await settle()
        assert c.closed is None
        clock.advance(2)
        node.timers.sweep()
        assert await c.disconnected() == 3005
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_refresh_extends_the_connection(codec: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        node = _expiring_node(clock)
        await node.start()
        c = Client(node, codec)
        await c.connect(_exp_token("42", clock, 60))
        clock.advance(55)
        node.timers.sweep()
        res = await c.ok("refresh", {"token": _exp_token("42", clock, 120)})
        assert res["expires"] is True and 118 <= res["ttl"] <= 120
        assert res["client"] == c.session.client_id
        # Past the old deadline (60 + 25) the connection lives on.
        clock.advance(60)
        node.timers.sweep()
        await settle()
        assert c.closed is None
        # ... until the new one.
        clock.advance(120 + 25 - 60)
        node.timers.sweep()
        assert await c.disconnected() == 3005
        await node.close()

    run(main())


def test_refresh_user_mismatch_3500() -> None:
    async def main() -> None:
        clock = FakeClock()
        node = _expiring_node(clock)
        await node.start()
        c = Client(node)
        await c.connect(_exp_token("42", clock, 60))
        assert await c.disconnected("refresh", {"token": _exp_token("43", clock, 60)}) == 3500
        await node.close()

    run(main())


def test_refresh_with_expired_token_3005() -> None:
    async def main() -> None:
        clock = FakeClock()
        node = _expiring_node(clock)
        await node.start()
        c = Client(node)
        await c.connect(_exp_token("42", clock, 60))
        assert await c.disconnected("refresh", {"token": connect_token("42", ttl=-10)}) == 3005
        await node.close()

    run(main())


def test_refresh_with_empty_token_3501() -> None:
    async def main() -> None:
        clock = FakeClock()
        node = _expiring_node(clock)
        await node.start()
        c = Client(node)
        await c.connect(_exp_token("42", clock, 60))
        assert await c.disconnected("refresh", {"token": ""}) == 3501
        await node.close()

    run(main())


def test_refresh_with_invalid_token_3500() -> None:
    async def main() -> None:
        clock = FakeClock()
        node = _expiring_node(clock)
        await node.start()
        c = Client(node)
        await c.connect(_exp_token("42", clock, 60))
        assert await c.disconnected("refresh", {"token": "x.y.z"}) == 3500
        await node.close()

    run(main())


def test_server_side_refresh_and_expire() -> None:
    """node.refresh sends a refresh push with the new ttl; expired=True disconnects 3005."""

    async def main() -> None:
        clock = FakeClock()
        node = _expiring_node(clock)
        await node.start()
        a, b = Client(node), Client(node)
        await a.connect(_exp_token("42", clock, 60))
        await b.connect(_exp_token("43", clock, 60))
        await node.refresh("42", expire_at=int(clock.wall()) + 600)
        await until(lambda: a.pushes("refresh"))
        push = a.pushes("refresh")[0]["refresh"]
        assert push["expires"] is True and 598 <= push["ttl"] <= 600
        assert b.pushes("refresh") == []
        clock.advance(200)
        node.timers.sweep()
        await until(lambda: b.closed is not None)
        assert b.closed.code == 3005
        assert a.closed is None
        await node.refresh("42", expired=True)
        assert await a.disconnected() == 3005
        await node.close()

    run(main())
