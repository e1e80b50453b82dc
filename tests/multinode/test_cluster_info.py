"""The server API's ``info`` and ``channels`` answer for every node on the Redis engine.

Three ``rtcore serve`` processes share one Redis. Each publishes its node
info through the broker every few seconds, so ``info`` asked on any node
lists all three with their own counters; ``channels`` asks every node for
its channels (a survey) and sums the subscriber counts. A node that stops
drops out of ``info`` and no longer holds ``channels`` up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .helpers import api, client, cluster, require_redis, run, subscribed


pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def _redis() -> None:
    require_redis()


def test_info_and_channels_of_the_whole_cluster(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as nodes:

        async def main() -> None:
            clients = []
            # Node a: 2 clients in chat:shared and one in chat:a; node b: one in
            # chat:shared; node c: none.
            for user, node, channels in (
                ("u1", nodes[0], ["chat:shared", "chat:a"]),
                ("u2", nodes[0], ["chat:shared"]),
                ("u3", nodes[1], ["chat:shared", "chat:b"]),
            ):
                c, _ = client(node.ws, user)
                await c.connect()
                await c.ready(timeout=10)
                for channel in channels:
                    await subscribed(c, channel)
                clients.append(c)
            async with aiohttp.ClientSession() as http:
                infos: dict[str, Any] = {}

                async def poll_info() -> None:
                    reply = await api(http, nodes[2], "info", {})
                    infos.clear()
                    infos.update({n["name"]: n for n in reply["result"]["nodes"]})

                async def three_nodes_with_clients() -> bool:
                    await poll_info()
                    return (
                        len(infos) == 3
                        and infos.get(nodes[0].name, {}).get("num_clients") == 2
                        and infos.get(nodes[1].name, {}).get("num_clients") == 1
                    )

                await _poll(three_nodes_with_clients, 20, lambda: f"info: {infos}")
                a, b, c = (infos[n.name] for n in nodes.nodes)
                assert (a["num_users"], a["num_channels"], a["num_subs"]) == (2, 2, 3)
                assert (b["num_users"], b["num_channels"], b["num_subs"]) == (1, 2, 2)
                assert (c["num_clients"], c["num_channels"]) == (0, 0)
                assert {a["uid"], b["uid"], c["uid"]} == {n.name for n in nodes.nodes}
                assert all(n["version"] and n["uptime"] >= 0 for n in infos.values())

                # channels, asked on the node that has no subscriber at all.
                reply = await api(http, nodes[2], "channels", {})
                assert reply["result"]["channels"] == {
                    "chat:shared": {"num_clients": 3},
                    "chat:a": {"num_clients": 1},
                    "chat:b": {"num_clients": 1},
                }
                reply = await api(http, nodes[1], "channels", {"pattern": "chat:[ab]"})
                assert reply["result"]["channels"] == {
                    "chat:a": {"num_clients": 1},
                    "chat:b": {"num_clients": 1},
                }

                # Node b goes away: it leaves info, and channels answers without it.
                await clients[2].disconnect()
                nodes[1].kill()

                async def two_nodes() -> bool:
                    await poll_info()
                    return set(infos) == {nodes[0].name, nodes[2].name}

                await _poll(two_nodes, 30, lambda: f"info: {infos}")
                reply = await api(http, nodes[0], "channels", {})
                assert reply["result"]["channels"] == {
                    "chat:shared": {"num_clients": 2},
                    "chat:a": {"num_clients": 1},
                }
            for c in clients[:2]:
                await c.disconnect()

        run(main())


async def _poll(check: Any, timeout: float, what: Any) -> None:
    """Await ``check()`` every 200 ms until it is true; AssertionError after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s: {what()}")
        await asyncio.sleep(0.2)
