"""The hub's index of join/leave listeners: a join or leave reaches exactly the
subscribers that asked for it and touches nobody else; the index follows
subscribe, resubscribe, unsubscribe and disconnect without leaking."""

from __future__ import annotations

from typing import Any

from rtcore.engine.hub import Hub
from rtcore.fanout import Flusher, Subscriber, Writer
from rtcore.protocol import get_codec
from rtcore.protocol.types import ClientInfo

from .helpers import Client, RecordingTransport, connect_token, make_node, run, settle, until


class _Session:
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id


def _hub() -> tuple[Hub, list[tuple[Subscriber, int]]]:
    actions: list[tuple[Subscriber, int]] = []
    codecs = (get_codec("json"), get_codec("protobuf"))
    return Hub(codecs, lambda sub, action: actions.append((sub, action))), actions


def _subscriber(client_id: str, channel: str, *, join_leave: bool, codec: int = 0) -> Subscriber:
    transport = RecordingTransport(get_codec("json" if codec == 0 else "protobuf"))
    writer = Writer(transport, Flusher())
    sub = Subscriber(writer, codec, _Session(client_id), channel)
    sub.join_leave = join_leave
    return sub


def test_join_without_listeners_encodes_nothing() -> None:
    hub, _ = _hub()
    for i in range(500):
        hub.add_subscriber(_subscriber(f"c{i}", "room", join_leave=False))
    hub.broadcast_join("room", ClientInfo(user="u", client="x"))
    hub.broadcast_leave("room", ClientInfo(user="u", client="x"))
    assert hub.encodes == [0, 0]
    assert hub.num_join_leave_listeners("room") == 0


def test_join_reaches_listeners_only_once_encoded_per_codec() -> None:
    async def main() -> None:
        hub, actions = _hub()
        quiet = [_subscriber(f"q{i}", "room", join_leave=False) for i in range(50)]
        listeners = [_subscriber(f"l{i}", "room", join_leave=True, codec=i % 2) for i in range(6)]
        for sub in quiet + listeners:
            hub.add_subscriber(sub)
        assert hub.num_join_leave_listeners("room") == 6
        hub.broadcast_join("room", ClientInfo(user="u", client="x"))
        # One encoding per codec in use by a listener, not per subscriber.
        assert hub.encodes == [1, 1]
        assert all(s.writer.queued_messages == 1 for s in listeners)
        assert all(s.writer.queued_messages == 0 for s in quiet)
        assert actions == []

    run(main())


def test_listener_still_subscribing_gets_nothing() -> None:
    async def main() -> None:
        hub, _ = _hub()
        pending = _subscriber("p", "room", join_leave=True)
        pending.buffer = []
        hub.add_subscriber(pending)
        hub.broadcast_join("room", ClientInfo(user="u", client="x"))
        assert pending.writer.queued_messages == 0
        assert pending.buffer == []

    run(main())


def test_index_follows_replace_and_remove() -> None:
    async def main() -> None:
        hub, _ = _hub()
        hub.add_subscriber(_subscriber("a", "room", join_leave=True))
        hub.add_subscriber(_subscriber("b", "room", join_leave=True))
        # The same client subscribing again without join/leave replaces its entry.
        hub.add_subscriber(_subscriber("a", "room", join_leave=False))
        assert hub.num_join_leave_listeners("room") == 1
        assert hub.remove_subscriber("room", "b") is False
        assert hub.num_join_leave_listeners("room") == 0
        assert hub.remove_subscriber("room", "a") is True
        assert hub._join_leave == {} and hub._channels == {}

    run(main())


def test_unencodable_join_flags_the_listener_after_delivery() -> None:
    async def main() -> None:
        hub, actions = _hub()
        json_sub = _subscriber("j", "room", join_leave=True, codec=0)
        pb_sub = _subscriber("p", "room", join_leave=True, codec=1)
        hub.add_subscriber(json_sub)
        hub.add_subscriber(pb_sub)
        # Binary conn_info is not representable in JSON: the JSON listener is flagged.
        hub.broadcast_join("room", ClientInfo(user="u", client="x", conn_info=b"\xff\x00"))
        assert [(s.session.client_id, a) for s, a in actions] == [("j", 2)]
        assert pb_sub.writer.queued_messages == 1

    run(main())


CONFIG: dict[str, Any] = {
    "client": {"ping_interval": 0, "pong_timeout": 0},
    "channel": {
        "namespaces": [
            {
                "name": "room",
                "allow_subscribe_for_client": True,
                "presence": True,
                "join_leave": True,
                "allow_presence_for_subscriber": True,
            }
        ]
    },
}


def test_sessions_keep_the_index_exact() -> None:
    async def main() -> None:
        node = make_node(CONFIG)
        await node.start()
        hub = node.hub
        watchers = []
        for i in range(3):
            c = Client(node)
            await c.connect(connect_token(f"w{i}"))
            await c.subscribe("room:a", join_leave=True)
            watchers.append(c)
        others = []
        for i in range(20):
            c = Client(node)
            await c.connect(connect_token(f"o{i}"))
            await c.subscribe("room:a")
            others.append(c)
        assert hub.num_join_leave_listeners("room:a") == 3
        await until(lambda: all(len(w.pushes("join", "room:a")) >= 20 for w in watchers))
        await watchers[0].ok("unsubscribe", {"channel": "room:a"})
        watchers[1].session.transport_closed()
        assert hub.num_join_leave_listeners("room:a") == 1
        await settle()
        assert all(o.pushes("join") == [] and o.pushes("leave") == [] for o in others)
        for c in [watchers[2], *others]:
            c.session.transport_closed()
        assert hub.num_join_leave_listeners("room:a") == 0
        assert hub._join_leave == {}
        await node.close()

    run(main())
