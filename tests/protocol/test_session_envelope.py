"""Envelope rules, framing and the heartbeat (PROTOCOL.md §1.3-§1.5), sans-I/O.

Every test drives a real ClientSession through a recording transport and
decodes what the server wrote with an independent decoder.
"""

from __future__ import annotations

import pytest

from .helpers import (
    Client,
    FakeClock,
    connect_token,
    heartbeat_node,
    make_node,
    pinged_client,
    run,
    settle,
    until,
)


CODECS = ["json", "protobuf"]


def _node(clock: FakeClock | None = None, **client: object):
    return make_node(
        {
            "client": client,
            "channel": {"without_namespace": {"allow_subscribe_for_client": True}},
        },
        clock=clock,
    )


@pytest.mark.parametrize("codec", CODECS)
def test_first_command_must_be_connect(codec: str) -> None:
    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node, codec)
        assert await c.disconnected("subscribe", {"channel": "news"}) == 3501
        # Nothing but the close: no reply to the refused command.
        assert c.messages == []
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_second_connect_is_bad_request(codec: str) -> None:
    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node, codec)
        await c.connect(connect_token("42"))
        assert await c.disconnected("connect", {"token": connect_token("42")}) == 3501
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_second_connect_in_the_same_frame(codec: str) -> None:
    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node, codec)
        tok = connect_token("42")
        c.send({"id": 1, "connect": {"token": tok}}, {"id": 2, "connect": {"token": tok}})
        await until(lambda: c.closed)
        assert c.closed.code == 3501
        # The first connect was answered before the second one was refused.
        assert "connect" in c.reply(1)
        assert c.reply(2) is None
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "command",
    [
        {"subscribe": {"channel": "news"}},  # a request without an id
        {"id": 0, "publish": {"channel": "news", "data": {"x": 1}}},
    ],
    ids=["no-id", "id-0"],
)
def test_non_empty_command_with_id_0(codec: str, command: dict) -> None:
    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node, codec)
        await c.connect(connect_token("42"))
        c.send(command)
        assert await c.disconnected() == 3501
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_several_requests_in_one_command(codec: str) -> None:
    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node, codec)
        await c.connect(connect_token("42"))
        c.send({"id": 5, "subscribe": {"channel": "a"}, "presence": {"channel": "a"}})
        assert await c.disconnected() == 3501
        assert c.reply(5) is None
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_id_without_request(codec: str) -> None:
    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node, codec)
        await c.connect(connect_token("42"))
        c.send({"id": 7})
        assert await c.disconnected() == 3501
        await node.close()

    run(main())


def test_unknown_method_is_a_command_without_request() -> None:
    """Unknown JSON keys are ignored, so ``{"id":3,"frobnicate":{}}`` has no request: 3501."""

    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node)
        await c.connect(connect_token("42"))
        c.send_raw(b'{"id":3,"frobnicate":{"channel":"x"}}')
        assert await c.disconnected() == 3501
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_ping_command_answers_108(codec: str) -> None:
    """The v2 client never sends ``ping``; the server answers 108 and keeps the connection."""

    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node, codec)
        await c.connect(connect_token("42"))
        assert await c.error("ping") == 108
        await c.subscribe("news")
        await node.close()

    run(main())


@pytest.mark.parametrize(
    ("codec", "frame"),
    [
        ("json", b"{not json"),
        ("json", b"[1,2,3]"),
        ("json", b'{"id":"one","connect":{}}'),
        ("json", b'{"id":1,"connect":{}}\n\n{"id":2,"connect":{}}'),
        ("json", b"\xff\xfe"),
        ("json", b"null"),
        ("protobuf", b"\x05\x08\x01"),  # length prefix longer than the data
        ("protobuf", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),  # overlong varint
        ("protobuf", b"\x03\xff\xff\xff"),  # not a Command
    ],
    ids=[
        "json-syntax",
        "json-array",
        "json-id-type",
        "json-empty-line",
        "json-utf8",
        "json-null",
        "pb-truncated",
        "pb-varint",
        "pb-garbage",
    ],
)
def test_malformed_frame(codec: str, frame: bytes) -> None:
    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node, codec)
        c.send_raw(frame)
        assert await c.disconnected() == 3501
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_malformed_frame_after_connect(codec: str) -> None:
    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node, codec)
        await c.connect(connect_token("42"))
        c.send_raw(b"{{{" if codec == "json" else b"\x7f\x01")
        assert await c.disconnected() == 3501
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_empty_frame(codec: str) -> None:
    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node, codec)
        c.send_raw(b"")
        assert await c.disconnected() == 3501
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_batch_at_and_over_max_commands_in_frame(codec: str) -> None:
    async def main() -> None:
        node = _node(max_commands_in_frame=10)
        await node.start()
        ok = Client(node, codec)
        await ok.connect(connect_token("1"))
        # Exactly the limit is fine: 10 subscribes in one frame, 10 replies in order.
        ok.send(*({"id": 100 + i, "subscribe": {"channel": f"c{i}"}} for i in range(10)))
        await until(lambda: all(ok.reply(100 + i) for i in range(10)))
        ids = [m["id"] for m in ok.messages if m.get("id", 0) >= 100]
        assert ids == list(range(100, 110))
        bad = Client(node, codec)
        await bad.connect(connect_token("2"))
        bad.send(*({"id": 100 + i, "subscribe": {"channel": f"c{i}"}} for i in range(11)))
        assert await bad.disconnected() == 3501
        # Nothing of the oversized batch was executed.
        assert all(bad.reply(100 + i) is None for i in range(11))
        assert node.hub.num_subscribers("c0") == 1
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_connect_and_commands_in_one_frame(codec: str) -> None:
    """SDKs batch connect with subscribes; replies keep command order."""

    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node, codec)
        c.send(
            {"id": 1, "connect": {"token": connect_token("42")}},
            {"id": 2, "subscribe": {"channel": "a"}},
            {"id": 3, "subscribe": {"channel": "b"}},
        )
        await until(lambda: c.reply(3))
        assert [m["id"] for m in c.messages] == [1, 2, 3]
        assert c.reply(2)["subscribe"] == {}  # empty result still present
        await node.close()

    run(main())


def test_duplicate_command_ids_are_each_answered() -> None:
    """Centrifuge does not check id uniqueness; each command gets its own reply with its id."""

    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node)
        await c.connect(connect_token("42"))
        c.send({"id": 9, "subscribe": {"channel": "a"}}, {"id": 9, "subscribe": {"channel": "a"}})
        await until(lambda: len([m for m in c.messages if m.get("id") == 9]) == 2)
        first, second = [m for m in c.messages if m.get("id") == 9]
        assert first == {"id": 9, "subscribe": {}}
        assert second["error"]["code"] == 105
        assert c.closed is None
        await node.close()

    run(main())


def test_empty_results_are_present_on_protobuf() -> None:
    """An empty result is still written (tag + zero length): ``3a 00`` for unsubscribe."""

    async def main() -> None:
        node = _node()
        await node.start()
        c = Client(node, "protobuf")
        await c.connect(connect_token("42"))
        await c.subscribe("a")
        start = len(c.transport.frames)
        assert await c.ok("unsubscribe", {"channel": "a"}) == {}
        raw = b"".join(c.transport.frames[start:])
        # Reply{id:3, unsubscribe:{}} delimited: 04 08 03 3a 00
        assert raw == b"\x04\x08\x03\x3a\x00"
        await node.close()

    run(main())


# -- heartbeat -------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_server_pings_and_pong(codec: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        node = heartbeat_node(clock)
        await node.start()
        c = Client(node, codec)
        res = await c.connect(connect_token("42"))
        assert res["ping"] == 10 and res["pong"] is True
        start = len(c.transport.frames)
        # The first ping comes at a random point in [interval/2, interval].
        clock.advance(4.9)
        node.timers.sweep()
        await settle()
        assert c.pings() == 0
        clock.advance(5.2)
        node.timers.sweep()
        await until(lambda: c.pings() == 1)
        # The ping is an empty Reply: "{}\n" on JSON, the single byte 0 on Protobuf.
        assert c.transport.frames[start] == (b"{}\n" if codec == "json" else b"\x00")
        c.pong()
        clock.advance(4.5)
        node.timers.sweep()
        await settle()
        assert c.closed is None
        # Pings keep coming every interval; every one answered keeps the connection.
        for n in range(2, 5):
            clock.advance(10)
            node.timers.sweep()
            await until(lambda n=n: c.pings() == n)
            c.pong()
        assert c.closed is None
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_missing_pong_disconnects_3012(codec: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        node, c = await pinged_client(clock, codec)
        # Ordinary commands are not a pong.
        await c.subscribe("news")
        clock.advance(3.9)
        node.timers.sweep()
        await settle()
        assert c.closed is None
        clock.advance(0.5)
        node.timers.sweep()
        await settle()
        # The deadline is confirmed at the next sweep (input read meanwhile counts).
        assert c.closed is None
        clock.advance(0.25)
        node.timers.sweep()
        assert await c.disconnected() == 3012
        await node.close()

    run(main())


@pytest.mark.parametrize(
    ("codec", "frame"),
    [
        # Answered without decoding (Codec.pongs) ...
        ("json", b"{}"),
        ("json", "{}"),
        ("json", b"{}\n"),
        ("protobuf", b"\x00"),
        # ... or decoded: the same outcome.
        ("json", b" {} "),
        ("json", b'{"id":0}'),
    ],
)
def test_every_form_of_the_pong_counts(codec: str, frame: bytes | str) -> None:
    async def main() -> None:
        clock = FakeClock()
        node, c = await pinged_client(clock, codec)
        received = c.session.bytes_received
        c.session.handle_frame(frame)  # type: ignore[arg-type]
        assert c.session.bytes_received == received + len(frame)
        for _ in range(3):  # past the pong deadline (4 s), confirmed at a second sweep
            clock.advance(2.5)
            node.timers.sweep()
            await settle()
        assert c.closed is None
        # A second one, not asked for, is a bad request whatever its form.
        c.session.handle_frame(frame)  # type: ignore[arg-type]
        assert await c.disconnected() == 3501
        await node.close()

    run(main())


def test_unsolicited_pong_is_bad_request() -> None:
    async def main() -> None:
        clock = FakeClock()
        node = heartbeat_node(clock)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("42"))
        c.pong()
        assert await c.disconnected() == 3501
        await node.close()

    run(main())


def test_no_pings_when_interval_is_zero() -> None:
    async def main() -> None:
        clock = FakeClock()
        node = _node(clock, ping_interval=0, pong_timeout=0)
        await node.start()
        c = Client(node)
        res = await c.connect(connect_token("42"))
        assert "ping" not in res and "pong" not in res
        clock.advance(3600)
        node.timers.sweep()
        await settle()
        assert c.pings() == 0 and c.closed is None
        await node.close()

    run(main())


def test_pings_without_pong_requirement() -> None:
    async def main() -> None:
        clock = FakeClock()
        node = _node(clock, ping_interval=10, pong_timeout=0)
        await node.start()
        c = Client(node)
        res = await c.connect(connect_token("42"))
        assert res["ping"] == 10 and "pong" not in res
        for n in (1, 2, 3):
            # The wheel fires within one tick (0.25 s) after a deadline.
            clock.advance(10.3)
            node.timers.sweep()
            await until(lambda n=n: c.pings() == n)
        assert c.closed is None
        await node.close()

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_stale_connection_3502(codec: str) -> None:
    async def main() -> None:
        clock = FakeClock()
        node = _node(clock, stale_close_delay=10)
        await node.start()
        c = Client(node, codec)
        late = Client(node, codec)
        clock.advance(9.5)
        node.timers.sweep()
        await settle()
        assert c.closed is None
        # Connecting in time disarms the stale timer.
        await late.connect(connect_token("7"))
        clock.advance(1)
        node.timers.sweep()
        await settle()
        assert c.closed is None  # confirmed at the next sweep
        clock.advance(0.25)
        node.timers.sweep()
        assert await c.disconnected() == 3502
        assert late.closed is None
        await node.close()

    run(main())


def test_an_idle_session_holds_no_command_queue() -> None:
    """The command queue exists while commands wait and is dropped once they
    ran (an empty deque is 760 bytes, a tenth of an idle connection)."""

    async def main() -> None:
        node = _node(FakeClock(), ping_interval=0, pong_timeout=0)
        await node.start()
        c = Client(node)
        await c.connect(connect_token("42"))
        await c.subscribe("news")
        await settle()
        assert c.session._commands is None and c.session._task is None
        # Several commands in one frame still run in order.
        c.send({"id": 10, "presence_stats": {"channel": "news"}}, {"id": 11, "rpc": {}})
        assert c.session._commands is not None
        await until(lambda: c.reply(10) is not None and c.reply(11) is not None)
        await settle()
        assert c.session._commands is None
        await node.close()

    run(main())
