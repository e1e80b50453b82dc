"""The I/O edge end to end: the echo example in a subprocess, on both twins.

Also checks that bad input gets its status or close code and never disturbs
other connections (a healthy connection keeps echoing beside the bad one).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from collections.abc import Iterator

import pytest
import websockets
from servers import free_port, run_server
from websockets.exceptions import ConnectionClosed


@pytest.fixture
def echo(server_impl: str) -> Iterator[str]:
    port = free_port()
    args = ["-m", "rtcore.examples.echo", "--port", str(port), "--max-size", str(1 << 20)]
    with run_server(args, port, server_impl):
        yield f"ws://127.0.0.1:{port}/"


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(asyncio.wait_for(coro, 30))


def raw_exchange(url: str, data: bytes, read_for: float = 2.0) -> bytes:
    host, port = url[5:].rstrip("/").split(":")
    out = b""
    with socket.create_connection((host, int(port)), timeout=read_for) as s:
        s.sendall(data)
        deadline = time.monotonic() + read_for
        try:
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            pass
    return out


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_echo_text_binary_and_large(echo: str) -> None:
    async def main() -> None:
        async with websockets.connect(echo, max_size=None, compression=None) as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
            big = os.urandom(900_000)
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send(["frag", "mented"])
            assert await ws.recv() == "fragmented"
            pong = await ws.ping(b"abc")
            await asyncio.wait_for(pong, 5)

    run(main())


def test_echo_with_permessage_deflate(echo: str) -> None:
    async def main() -> None:
        async with websockets.connect(echo, compression="deflate") as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions", "").startswith(
                "permessage-deflate"
            )
            for i in range(20):
                msg = "compress me " * (i * 50 + 1)
                await ws.send(msg)
                assert await ws.recv() == msg

    run(main())


def test_close_handshake_code_and_reason(echo: str) -> None:
    async def main() -> None:
        ws = await websockets.connect(echo)
        await ws.close(4001, "bye")
        assert ws.close_code == 4001

    run(main())


def test_oversized_message_closes_1009_and_others_survive(echo: str) -> None:
    async def main() -> None:
        async with websockets.connect(echo, max_size=None) as healthy:
            bad = await websockets.connect(echo, max_size=None)
            await bad.send(b"x" * ((1 << 20) + 1))
            with pytest.raises(ConnectionClosed) as info:
                await bad.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009
            await healthy.send("still here")
            assert await healthy.recv() == "still here"

    run(main())


def test_huge_length_header_is_refused_at_once(echo: str) -> None:
    # Masked binary frame header announcing 1 GB, no payload follows.
    header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 30) + b"\x00\x00\x00\x00"
    out = raw_exchange(echo, UPGRADE + header)
    assert out.startswith(b"HTTP/1.1 101")
    frame = out[out.index(b"\r\n\r\n") + 4 :]
    assert frame[0] == 0x88 and struct.unpack("!H", frame[2:4])[0] == 1009


def test_garbage_before_handshake_gets_400(echo: str) -> None:
    out = raw_exchange(echo, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")


def test_wrong_version_gets_426(echo: str) -> None:
    req = UPGRADE.replace(b"Version: 13", b"Version: 8")
    out = raw_exchange(echo, req)
    assert out.startswith(b"HTTP/1.1 426")
    assert b"sec-websocket-version: 13" in out.lower()


def test_oversized_headers_get_431(echo: str) -> None:
    req = UPGRADE.replace(b"Host: x\r\n", b"Host: x\r\nX-Big: " + b"a" * 20000 + b"\r\n")
    assert raw_exchange(echo, req).startswith(b"HTTP/1.1 431")


def test_plain_http_request_is_routed(echo: str) -> None:
    out = raw_exchange(echo, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"echo server" in out


def test_ping_burst_is_answered_in_order(echo: str) -> None:
    async def main() -> None:
        async with websockets.connect(echo) as ws:
            waiters = [await ws.ping(str(i).encode()) for i in range(500)]
            await asyncio.wait_for(asyncio.gather(*waiters), 10)
            await ws.send("after")
            assert await ws.recv() == "after"

    run(main())


def test_half_sent_handshake_does_not_block_others(echo: str) -> None:
    host, port = echo[5:].rstrip("/").split(":")
    stalled = socket.create_connection((host, int(port)))
    try:
        stalled.sendall(UPGRADE[:40])

        async def main() -> None:
            async with websockets.connect(echo) as ws:
                await ws.send("ok")
                assert await ws.recv() == "ok"

        run(main())
    finally:
        stalled.close()


def test_pipelined_large_and_small_messages_keep_their_order(echo: str) -> None:
    # One write of several messages, so the server handles them in one read:
    # replies mixing header + payload writes (large bytes payloads) and whole
    # frames (small ones) must leave in order, each byte for byte.
    from rtcore.frames import OP_BINARY, OP_CLOSE, OP_TEXT, FrameParser, encode_frame
    from rtcore.transports.websocket_io import SPLIT_FRAME_ABOVE as split

    messages = [
        (OP_BINARY, os.urandom(split + 5000)),
        (OP_TEXT, b"small"),
        (OP_BINARY, os.urandom(100_000)),
        (OP_TEXT, b"t" * (split + 1)),
        (OP_BINARY, b"\x00" * (split - 1)),
        (OP_BINARY, os.urandom(split)),
        (OP_BINARY, b""),
    ]
    wire = b"".join(encode_frame(op, data, mask=os.urandom(4)) for op, data in messages)
    wire += encode_frame(OP_CLOSE, struct.pack("!H", 1000), mask=b"abcd")
    out = raw_exchange(echo, UPGRADE + wire, read_for=5.0)
    assert out.startswith(b"HTTP/1.1 101")
    client = FrameParser(is_server=False, max_message_size=0)
    events = client.feed_data(out[out.index(b"\r\n\r\n") + 4 :])
    assert events[:-1] == messages
    assert events[-1][0] == OP_CLOSE
