"""A closed connection is freed by reference counting, not by the cycle collector.

With thousands of connections coming and going, every connection left as a
reference cycle is work for the collector's full passes, and memory held
until one runs. Each case below opens connections with the collector off,
closes them, and asks the collector what only it could free: nothing of
rtcore's (or of llhttp's parser) may be among it. The stdlib loop's own
transports are cycles of their own and are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import pytest
from websockets.asyncio.client import ClientConnection, connect

from rtcore.protocol import codes

from .helpers import ServedNode, connect_token, run, serve


CONFIG = {
    "client": {"ping_interval": 25},
    "channel": {
        "without_namespace": {
            "allow_subscribe_for_client": True,
            "presence": True,
            "join_leave": True,
            "history_size": 10,
            "history_ttl": "60s",
        }
    },
    "websocket": {"compression": True},
    "uni_sse": {"enabled": True},
    "uni_http_stream": {"enabled": True},
    "uni_websocket": {"enabled": True},
}
ROUNDS = 20


@contextlib.contextmanager
def collector_off() -> Iterator[Callable[[], Counter[str]]]:
    """Collector off; the function returns what a collection would free, by type."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)

    def garbage() -> Counter[str]:
        gc.collect()
        found = Counter(
            f"{type(o).__module__}.{type(o).__qualname__}"
            for o in gc.garbage
            if type(o).__module__.startswith(("rtcore", "httptools"))
        )
        gc.garbage.clear()
        return found

    try:
        yield garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def _session(s: ServedNode, *, compress: bool) -> ClientConnection:
    ws = await connect(
        s.url, ping_interval=None, compression="deflate" if compress else None, max_size=None
    )
    await ws.send(json.dumps({"id": 1, "connect": {"token": connect_token("u1")}}))
    await ws.recv()
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "news", "recover": True}}))
    await ws.recv()
    return ws


async def _settle(s: ServedNode) -> None:
    # Until the server has seen every close and the sessions' cleanup ran.
    for _ in range(200):
        if s.server.connections == 0 and not s.node.hub.num_sessions and not s.node._tasks:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)


def _check(cycle: Callable[[ServedNode], Awaitable[None]]) -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            await cycle(s)  # warm up: first-use caches are not per connection
            await _settle(s)
            with collector_off() as garbage:
                for _ in range(ROUNDS):
                    await cycle(s)
                await _settle(s)
                assert garbage() == Counter()

    run(main())


def test_websocket_closed_by_the_client() -> None:
    async def cycle(s: ServedNode) -> None:
        ws = await _session(s, compress=False)
        await ws.close()

    _check(cycle)


def test_compressed_websocket_closed_by_the_client() -> None:
    async def cycle(s: ServedNode) -> None:
        ws = await _session(s, compress=True)
        await ws.close()

    _check(cycle)


def test_websocket_disconnected_by_the_server() -> None:
    async def cycle(s: ServedNode) -> None:
        ws = await _session(s, compress=False)
        for session in s.node.hub.sessions():
            session.disconnect(codes.FORCE_DISCONNECT)
        with contextlib.suppress(Exception):
            await ws.recv()
        await ws.close()

    _check(cycle)


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5) as r:
        r.read()


def test_plain_http_requests() -> None:
    async def cycle(s: ServedNode) -> None:
        url = f"http://127.0.0.1:{s.port}/health"
        await asyncio.get_running_loop().run_in_executor(None, _get, url)

    _check(cycle)


def _stream_request(kind: str) -> bytes:
    token = connect_token("u1")
    frame = json.dumps({"id": 1, "connect": {"token": token, "subs": {"news": {}}}})
    uni = json.dumps({"token": token})
    if kind == "http_stream":
        body = frame.encode()
        return (
            b"POST /connection/http_stream HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
    if kind == "uni_http_stream":
        body = uni.encode()
        return (
            b"POST /connection/uni_http_stream HTTP/1.1\r\nHost: t\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
    query = urllib.parse.quote(frame if kind == "sse" else uni).encode()
    return b"GET /connection/%s?cf_connect=%s HTTP/1.1\r\nHost: t\r\n\r\n" % (
        kind.encode(),
        query,
    )


@pytest.mark.parametrize("kind", ["http_stream", "sse", "uni_sse", "uni_http_stream"])
def test_streams_closed_by_the_client(kind: str) -> None:
    async def cycle(s: ServedNode) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(_stream_request(kind))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        await asyncio.wait_for(reader.read(1), 5)  # the connect reply or push
        writer.close()
        await writer.wait_closed()

    _check(cycle)


def test_uni_websocket_closed_by_the_client() -> None:
    async def cycle(s: ServedNode) -> None:
        query = urllib.parse.quote(json.dumps({"token": connect_token("u1")}))
        url = f"ws://127.0.0.1:{s.port}/connection/uni_websocket?cf_connect={query}"
        ws = await connect(url, ping_interval=None)
        await ws.recv()
        await ws.close()

    _check(cycle)
