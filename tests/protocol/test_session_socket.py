"""Bad input over a real WebSocket: each case ends that connection with its
documented close code while another client on the same node keeps working.

Duplicate command ids: the protocol does not require them to be unique and
Centrifuge does not check; each command is executed and answered with its own
id, so a client that reuses an id gets two replies carrying it.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .helpers import ServedNode, connect_token, encode_commands, run, serve


CONFIG = {
    "client": {"max_commands_in_frame": 16, "ping_interval": 0, "pong_timeout": 0},
    "websocket": {"message_size_limit": 4096},
    "channel": {"without_namespace": {"allow_subscribe_for_client": True}},
}


async def _open(s: ServedNode, protobuf: bool = False) -> ClientConnection:
    return await connect(
        s.url,
        subprotocols=["centrifuge-protobuf"] if protobuf else None,
        max_size=None,
        ping_interval=None,
    )


async def _closed_with(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; return (code, reason)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "the server dropped TCP without a close frame"
        return exc.rcvd.code, exc.rcvd.reason


async def _json_lines(ws: ClientConnection) -> list[dict]:
    frame = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(frame, str)
    return [json.loads(line) for line in frame.strip().split("\n")]


async def _healthy_client(s: ServedNode) -> ClientConnection:
    ws = await _open(s)
    await ws.send(json.dumps({"id": 1, "connect": {"token": connect_token("healthy")}}))
    assert "connect" in (await _json_lines(ws))[0]
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "news"}}))
    assert (await _json_lines(ws))[0] == {"id": 2, "subscribe": {}}
    return ws


async def _still_works(s: ServedNode, ws: ClientConnection) -> None:
    await s.node.publish("news", b'{"still":"here"}')
    msgs = await _json_lines(ws)
    assert msgs[0]["push"]["pub"]["data"] == {"still": "here"}
    await ws.send(json.dumps({"id": 3, "presence_stats": {"channel": "news"}}))
    assert (await _json_lines(ws))[0]["error"]["code"] == 108


async def _case(send_bad, protobuf: bool = False) -> tuple[int, str]:
    async with serve(CONFIG) as s:
        healthy = await _healthy_client(s)
        bad = await _open(s, protobuf)
        await send_bad(bad)
        code, reason = await _closed_with(bad)
        await _still_works(s, healthy)
        await healthy.close()
        return code, reason


def _token() -> str:
    return connect_token("42")


@pytest.mark.parametrize(
    "frame",
    ["{oops", '{"id":"1","connect":{}}', "[]", "\n"],
    ids=["syntax", "id-type", "array", "blank"],
)
def test_malformed_json(frame: str) -> None:
    async def bad(ws: ClientConnection) -> None:
        await ws.send(frame)

    assert run(_case(bad)) == (3501, "bad request")


@pytest.mark.parametrize(
    "frame",
    [b"\x05\x08", b"\x02\xff\xff", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"],
    ids=["truncated", "garbage", "varint"],
)
def test_malformed_protobuf(frame: bytes) -> None:
    async def bad(ws: ClientConnection) -> None:
        await ws.send(frame)

    assert run(_case(bad, protobuf=True)) == (3501, "bad request")


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
def test_command_before_connect(protobuf: bool) -> None:
    async def bad(ws: ClientConnection) -> None:
        frame = encode_commands(
            "protobuf" if protobuf else "json", [{"id": 1, "subscribe": {"channel": "news"}}]
        )
        await ws.send(frame if protobuf else frame.decode())

    assert run(_case(bad, protobuf))[0] == 3501


def test_unknown_method() -> None:
    async def bad(ws: ClientConnection) -> None:
        await ws.send(json.dumps({"id": 1, "connect": {"token": _token()}}))
        await ws.recv()
        await ws.send(json.dumps({"id": 2, "launch": {"missiles": True}}))

    assert run(_case(bad))[0] == 3501


def test_batch_over_max_commands_in_frame() -> None:
    async def bad(ws: ClientConnection) -> None:
        await ws.send(json.dumps({"id": 1, "connect": {"token": _token()}}))
        await ws.recv()
        await ws.send(
            "\n".join(
                json.dumps({"id": 10 + i, "subscribe": {"channel": f"c{i}"}}) for i in range(17)
            )
        )

    assert run(_case(bad))[0] == 3501


def test_oversized_frame_1009() -> None:
    async def bad(ws: ClientConnection) -> None:
        await ws.send(
            json.dumps({"id": 1, "connect": {"token": _token(), "data": {"pad": "x" * 5000}}})
        )

    assert run(_case(bad))[0] == 1009


def test_frame_at_the_size_limit_is_accepted() -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            ws = await _open(s)
            head = {"id": 1, "connect": {"token": _token(), "data": {"pad": ""}}}
            pad = 4096 - len(json.dumps(head))
            head["connect"]["data"]["pad"] = "x" * pad
            frame = json.dumps(head)
            assert len(frame) == 4096
            await ws.send(frame)
            assert "connect" in (await _json_lines(ws))[0]
            await ws.close()

    run(main())


def test_duplicate_ids_get_one_reply_each() -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            ws = await _open(s)
            await ws.send(json.dumps({"id": 1, "connect": {"token": _token()}}))
            await ws.recv()
            await ws.send(
                json.dumps({"id": 7, "subscribe": {"channel": "a"}})
                + "\n"
                + json.dumps({"id": 7, "subscribe": {"channel": "b"}})
            )
            replies: list[dict] = []
            while len(replies) < 2:
                replies += await _json_lines(ws)
            assert replies == [{"id": 7, "subscribe": {}}, {"id": 7, "subscribe": {}}]
            assert s.node.hub.num_subscribers("a") == s.node.hub.num_subscribers("b") == 1
            await ws.close()

    run(main())


def test_protobuf_by_query_parameter() -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            ws = await connect(s.url + "?format=protobuf", ping_interval=None)
            await ws.send(encode_commands("protobuf", [{"id": 1, "connect": {"token": _token()}}]))
            frame = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(frame, bytes)  # binary frames on Protobuf connections
            await ws.close()

    run(main())


def test_disconnect_reaches_the_socket_as_close_frame() -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            ws = await _open(s)
            await ws.send(json.dumps({"id": 1, "connect": {"token": _token()}}))
            await ws.recv()
            await s.node.disconnect("42", code=4321, reason="custom reason")
            assert await _closed_with(ws) == (4321, "custom reason")

    run(main())
