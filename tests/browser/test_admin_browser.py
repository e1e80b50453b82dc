"""The admin web UI in headless Chromium (``admin.mjs``).

A node is served in this process with six WebSocket clients in four channels
and some history. The driver signs in (a wrong password first), sees the node
and its counts, watches a seventh client appear without reloading, opens a
channel (presence, history), publishes into it, disconnects that seventh
user, broadcasts and publishes from the console, and signs out. The clients
here check that the publications reached them. Screenshots go to a temporary
directory, or to ``docs/img/admin-*.png`` with ``RTCORE_UPDATE_SCREENSHOTS=1``
(how the pictures in docs/admin.md are made).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import websockets
from protocol.helpers import run

import rtcore
from rtcore.auth import make_connect_token
from rtcore.config import config_from_mapping
from rtcore.engine.node import Node

from .harness import REPO, describe, prerequisites, run_node


SECRET = "rtcore-admin-browser-hmac-secret-0123456789"
PASSWORD = "admin-browser-password"
SHOTS = [
    "admin-signin.png",
    "admin-overview.png",
    "admin-channels.png",
    "admin-channel.png",
    "admin-actions.png",
]
UPDATE = os.environ.get("RTCORE_UPDATE_SCREENSHOTS") == "1"

CONFIG: dict[str, Any] = {
    "admin": {"enabled": True, "password": PASSWORD, "secret": "admin-browser-token-secret-0123"},
    "api": {"key": "not-for-browsers"},
    "client": {
        "token": {"hmac_secret_key": SECRET},
        "node_name": "rtcore-1",
        "allowed_origins": ["*"],
        "ping_interval": 0,
        "pong_timeout": 0,
    },
    "channel": {
        "namespaces": [
            {
                "name": "room",
                "presence": True,
                "history_size": 50,
                "history_ttl": "1h",
                "allow_subscribe_for_client": True,
            },
            {
                "name": "news",
                "history_size": 20,
                "history_ttl": "1h",
                "allow_subscribe_for_client": True,
            },
        ]
    },
}

CLIENTS = [
    ("alice", "room:lobby"),
    ("bob", "room:lobby"),
    ("carol", "room:random"),
    ("erin", "room:random"),
    ("frank", "news:updates"),
    ("grace", "room:support"),
]


async def _client(port: int, user: str, channel: str) -> Any:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/connection/websocket", max_size=None)
    await ws.send(json.dumps({"id": 1, "connect": {"token": make_connect_token(SECRET, user)}}))
    assert "connect" in json.loads(await ws.recv())
    await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
    assert "subscribe" in json.loads((await ws.recv()).splitlines()[0])
    return ws


async def _pushes(ws: Any, count: int) -> list[Any]:
    out: list[Any] = []
    while len(out) < count:
        for line in (await ws.recv()).splitlines():
            push = json.loads(line).get("push", {})
            if "pub" in push:
                out.append(push["pub"]["data"])
    return out


def test_admin_ui_in_chromium() -> None:
    browser, node_exe = prerequisites()
    shots = REPO / "docs" / "img" if UPDATE else Path(tempfile.mkdtemp(prefix="rtcore-admin-"))

    async def main() -> tuple[int, str, str, dict[str, list[Any]]]:
        node = Node(config_from_mapping(CONFIG))
        server = await rtcore.serve(node, "127.0.0.1", 0)
        clients = {}
        try:
            for user, channel in CLIENTS:
                clients[user] = await _client(server.port, user, channel)
            for text in ("Welcome to the lobby!", "Anyone around?", "Stand-up in 5 minutes"):
                await node.publish("room:lobby", json.dumps({"text": text}).encode())
            await node.publish("news:updates", b'{"title": "rtcore 1.0 is out"}')
            await _pushes(clients["alice"], 3)
            await _pushes(clients["frank"], 1)
            code, out, err = await run_node(
                node_exe,
                browser,
                "admin.mjs",
                f"http://127.0.0.1:{server.port}",
                str(shots),
                PASSWORD,
                make_connect_token(SECRET, "dave"),
                timeout=120,
            )
            received = {}
            if code == 0:
                received["alice"] = await _pushes(clients["alice"], 2)
                received["frank"] = await _pushes(clients["frank"], 1)
                received["carol"] = await _pushes(clients["carol"], 1)
            return code, out, err, received
        finally:
            for ws in clients.values():
                await ws.close()
            await server.close(timeout=1)
            await node.close()

    code, out, err, received = run(main(), timeout=150)
    assert code == 0, describe(code, out, err)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["wrongPassword"] == "Wrong password."
    [node_row] = summary["nodes"]
    assert node_row[0] == "rtcore-1" and node_row[1] == rtcore.__version__
    # Connections, users, subscriptions, channels.
    assert node_row[3:] == ["6", "6", "6", "4"]
    assert summary["liveTotal"] == "7" and summary["reloads"] == 0
    assert summary["channels"][0] == ["room:lobby", "3"]
    assert sorted(summary["channels"][1:]) == [
        ["news:updates", "1"],
        ["room:random", "2"],
        ["room:support", "1"],
    ]
    assert summary["title"] == "room:lobby"
    assert summary["presence"] == ["alice", "bob", "dave"]
    assert [json.loads(h)["text"] for h in summary["history"]] == [
        "Hello from the admin UI",
        "Stand-up in 5 minutes",
        "Anyone around?",
        "Welcome to the lobby!",
    ]
    assert summary["daveClosed"] == 3503
    assert summary["results"][0].startswith("Published to room:random at offset 1")
    assert summary["results"][1].startswith("Data is not valid JSON")
    assert summary["results"][2:] == [
        "Broadcast to 2 channels.",
        "Disconnected every connection of dave.",
        "Published to room:lobby at offset 4.",
    ]
    assert summary["afterSignOut"] == {"authenticated": False, "insecure": False}
    # What the admin published reached the subscribers.
    assert received["alice"] == [
        {"text": "Hello from the admin UI"},
        {"text": "Maintenance at 22:00"},
    ]
    assert received["frank"] == [{"text": "Maintenance at 22:00"}]
    assert received["carol"] == [{"text": "hi"}]
    for name in SHOTS:
        png = (shots / name).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000, name
