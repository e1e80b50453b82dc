"""Config keys that shape a node's fan-out and memory engine, from a config mapping.

* ``client.write_delay`` reaches the node's flusher: publications of several
  ticks go out to a raw WebSocket client in one frame.
* ``engine.memory_max_streams`` reaches the memory engine's history store:
  a stream beyond the bound evicts the least recently used one.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
import websockets
from protocol.helpers import SECRET, connect_token, run, until

import rtcore
from rtcore.config import config_from_mapping
from rtcore.engine.memory import DEFAULT_MAX_STREAMS, MemoryBroker
from rtcore.engine.node import Node
from rtcore.errors import ConfigError


async def ticks(n: int = 20) -> None:
    """Let the loop run ``n`` iterations (a flush without a delay runs in the first)."""
    for _ in range(n):
        await asyncio.sleep(0)


# -- client.write_delay ----------------------------------------------------------------


def test_write_delay_reaches_the_flusher() -> None:
    config = config_from_mapping({"client": {"write_delay": "20ms"}})
    assert config.client.write_delay == 0.02

    async def main() -> None:
        node = Node(config)
        assert node.flusher.delay == 0.02
        await node.start()
        try:
            assert node.flusher.delay == 0.02  # the flusher start() makes on the loop
        finally:
            await node.close()

    run(main())
    assert Node(config_from_mapping({})).flusher.delay == 0.0


@pytest.mark.parametrize(
    "client",
    [{"write_delay": "-1s"}, {"write_delay": "8s"}, {"write_delay": "9s", "pong_timeout": "8s"}],
)
def test_write_delay_is_checked(client: dict[str, Any]) -> None:
    """A delay is at least 0 and shorter than the pong timeout (a ping waits for it too)."""
    with pytest.raises(ConfigError, match="client.write_delay"):
        config_from_mapping({"client": client})


def test_write_delay_coalesces_two_publications_into_one_write() -> None:
    """The delay is an hour, so no timer can end a round during the test: the test ends
    each round itself (what the timer does) and sees what the rounds wrote."""
    config = config_from_mapping(
        {
            "client": {
                "token": {"hmac_secret_key": SECRET},
                "ping_interval": 0,
                "pong_timeout": 0,
                "write_delay": "1h",
            },
            "channel": {"without_namespace": {"allow_subscribe_for_client": True}},
        }
    )

    async def main() -> None:
        node = Node(config)
        server = await rtcore.serve(node, "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{server.port}/connection/websocket"
        try:
            assert node.flusher.delay == 3600
            async with websockets.connect(url, compression=None) as ws:
                commands = [
                    {"id": 1, "connect": {"token": connect_token("alice")}},
                    {"id": 2, "subscribe": {"channel": "news"}},
                ]
                for command in commands:
                    await ws.send(json.dumps(command))
                    # The reply waits in its round until the round ends.
                    await until(lambda: node.flusher.pending == 1)
                    node.flusher.flush()
                    assert json.loads(await ws.recv())["id"] == command["id"]
                (session,) = node.hub.sessions()
                writer = session.writer
                frames = writer.frames_sent
                await node.publish("news", b'{"n":1}')
                await ticks()  # without the delay the first publication is written here
                await node.publish("news", b'{"n":2}')
                await ticks()
                assert (writer.frames_sent, writer.queued_messages) == (frames, 2)
                assert node.flusher.pending == 1
                node.flusher.flush()
                # One frame, one read: both publications.
                frame = await asyncio.wait_for(ws.recv(), 5)
                pushes = [json.loads(line)["push"] for line in frame.splitlines()]
                assert [p["pub"]["data"]["n"] for p in pushes] == [1, 2]
                assert writer.frames_sent == frames + 1
        finally:
            await server.close(timeout=1)
            await node.close()

    run(main())


# -- engine.memory_max_streams --------------------------------------------------------


def test_memory_max_streams_bounds_the_node_history() -> None:
    config = config_from_mapping(
        {
            "engine": {"memory_max_streams": 2},
            "channel": {"without_namespace": {"history_size": 10, "history_ttl": "1m"}},
        }
    )

    async def main() -> None:
        node = Node(config)
        assert isinstance(node.broker, MemoryBroker)
        store = node.broker.history_store
        assert store.max_streams == 2
        await node.start()
        try:
            for channel in ("a", "b", "c"):
                await node.publish(channel, b'{"n":1}')
            # "a" was the least recently used stream when "c" needed room.
            assert store.channel_count == 2 and store.evicted_count == 1
            assert (await node.history("a", limit=10)).publications == []
            for channel in ("b", "c"):
                assert len((await node.history(channel, limit=10)).publications) == 1
        finally:
            await node.close()

    run(main())


def test_memory_max_streams_default_and_checks() -> None:
    assert config_from_mapping({}).engine.memory_max_streams == DEFAULT_MAX_STREAMS
    node = Node(config_from_mapping({}))
    assert isinstance(node.broker, MemoryBroker)
    assert node.broker.history_store.max_streams == DEFAULT_MAX_STREAMS
    for bad in (0, -1, 2.5, "many"):
        with pytest.raises(ConfigError, match="engine.memory_max_streams"):
            config_from_mapping({"engine": {"memory_max_streams": bad}})


# -- http.accept_queues ---------------------------------------------------------------


def test_accept_queues_listen_on_one_port_with_several_sockets() -> None:
    """Each socket has its own kernel accept queue; clients reach the node through any."""
    config = config_from_mapping(
        {
            "http": {"accept_queues": 3},
            "client": {"token": {"hmac_secret_key": SECRET}, "ping_interval": 0},
        }
    )

    async def main() -> None:
        node = Node(config)
        server = await rtcore.serve(node, "127.0.0.1", 0)
        try:
            sockets = server.sockets
            assert len(sockets) == 3
            assert {s.getsockname()[1] for s in sockets} == {server.port}
            assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)
            url = f"ws://127.0.0.1:{server.port}/connection/websocket"
            for n in range(12):  # spread by the kernel over the three queues
                async with websockets.connect(url) as ws:
                    await ws.send(
                        json.dumps({"id": 1, "connect": {"token": connect_token(f"u{n}")}})
                    )
                    assert "connect" in json.loads(await ws.recv())
        finally:
            await server.close(timeout=1)
            await node.close()
        # One queue (the default): one socket, no SO_REUSEPORT.
        node = Node(config_from_mapping({}))
        server = await rtcore.serve(node, "127.0.0.1", 0)
        try:
            (sock,) = server.sockets
            assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        finally:
            await server.close(timeout=1)
            await node.close()

    run(main())


@pytest.mark.parametrize("queues", [0, 65, -1])
def test_accept_queues_is_checked(queues: int) -> None:
    with pytest.raises(ConfigError, match="http.accept_queues"):
        config_from_mapping({"http": {"accept_queues": queues}})
