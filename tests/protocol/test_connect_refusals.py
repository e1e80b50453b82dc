"""Every connection the server ends between the 101 response and a successful
connect gets a close frame with a code and reason, and is counted by code in
``rtcore_client_connect_refusals_total``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from rtcore.server.metrics import NodeCollector

from .helpers import ServedNode, connect_token, run, serve, until


CONFIG: dict[str, Any] = {
    "client": {
        "ping_interval": 0,
        "pong_timeout": 0,
        "stale_close_delay": 0.5,
        "connection_limit": 2,
    },
}


async def _refused(s: ServedNode, *frames: str) -> tuple[int, str]:
    """Open a WebSocket, send ``frames``; return the server's close code and reason."""
    async with connect(s.url, ping_interval=None) as ws:
        for frame in frames:
            await ws.send(frame)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "the server dropped TCP without a close frame"
            return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("unreachable")


def _refusals(node: Any) -> dict[str, float]:
    return {
        s.labels["code"]: s.value
        for m in NodeCollector(node).collect()
        for s in m.samples
        if s.name == "rtcore_client_connect_refusals_total"
    }


def test_refusals_after_the_handshake_carry_a_code_and_are_counted() -> None:
    async def main() -> None:
        async with serve(CONFIG) as s:
            connect_cmd = {"id": 1, "connect": {"token": connect_token("42")}}
            assert await _refused(s, json.dumps({"id": 1, "connect": {"token": "x.y.z"}})) == (
                3500,
                "invalid token",
            )
            assert await _refused(s, "not json") == (3501, "bad request")
            assert await _refused(s) == (3502, "stale")  # no connect in time
            # Two connected clients reach the connection limit: the third is refused.
            held = [await connect(s.url, ping_interval=None) for _ in range(2)]
            for ws in held:
                await ws.send(json.dumps(connect_cmd))
                assert "connect" in json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert await _refused(s, json.dumps(connect_cmd)) == (3504, "connection limit")
            for ws in held:
                await ws.close()
            await until(lambda: s.node.hub.num_sessions == 0, 10)
            assert _refusals(s.node) == {"3500": 1, "3501": 1, "3502": 1, "3504": 1}
            # Connected clients that leave are disconnects, not refusals.
            assert s.node.disconnects[3000] == 2

    run(main())
