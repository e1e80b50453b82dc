"""centrifuge-js (browser build) in headless Chromium over each transport.

The page (``page/transports.js``) is served by the node under test together
with the SDK from ``node_modules``. For every transport it forces that
transport only, connects, subscribes, publishes and receives; then the
server disconnects the user with 3011 (force reconnect), publishes while the
client is away, and the client must come back on the same transport and
recover the missed publications (``recovered: true``).
"""

from __future__ import annotations

import json
from typing import Any

from protocol.helpers import run, serve, until

from rtcore.engine.events import ConnectEvent, Credentials
from rtcore.errors import HttpError
from rtcore.transports.http_server import HttpResponseWriter
from rtcore.wire.http import Request

from .harness import BROWSER_DIR, SDK_DIR, describe, mount_files, prerequisites, run_node


CONFIG: dict[str, Any] = {
    "client": {
        "allowed_origins": ["http://127.0.0.1:*"],
        "ping_interval": 25,
        "pong_timeout": 8,
    },
    "channel": {
        "namespaces": [
            {
                "name": "chat",
                "history_size": 100,
                "history_ttl": 300,
                "force_recovery": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
            }
        ]
    },
}

SCENARIOS = [
    {"transport": "websocket", "protocol": "json"},
    {"transport": "http_stream", "protocol": "json"},
    {"transport": "sse", "protocol": "json"},
    {"transport": "http_stream", "protocol": "protobuf"},
    {"transport": "websocket", "protocol": "protobuf"},
]


def _setup(node: Any, app: Any) -> None:
    def on_connecting(event: ConnectEvent) -> Credentials:
        user = json.loads(event.data or b"{}").get("user", "")
        if not user:
            raise HttpError(400, "no user")  # never reached by the page
        return Credentials(user=user)

    node.on_connecting = on_connecting

    async def force_reconnect(request: Request, response: HttpResponseWriter) -> None:
        body = json.loads(request.body)
        user = body["user"]
        await node.disconnect(user, code=3011, reason="force reconnect")
        await until(lambda: not node.hub.user_sessions(user), what="user's sessions gone")
        for data in body["publish"]:
            await node.publish(body["channel"], json.dumps(data).encode())
        response.send(204)

    page = BROWSER_DIR / "page"
    mount_files(
        app,
        {
            "/": page / "transports.html",
            "/protobuf": page / "transports-protobuf.html",
            "/transports.js": page / "transports.js",
            "/sdk/centrifuge.js": SDK_DIR / "centrifuge.js",
            "/sdk/centrifuge.protobuf.js": SDK_DIR / "centrifuge.protobuf.js",
        },
    )
    app.mount("/test/force-reconnect", force_reconnect)


def test_centrifuge_js_in_chromium_over_every_transport() -> None:
    browser, node_exe = prerequisites()

    async def main() -> None:
        async with serve(CONFIG, setup=_setup) as s:
            code, out, err = await run_node(
                node_exe,
                browser,
                "transports.mjs",
                f"http://127.0.0.1:{s.port}",
                json.dumps(SCENARIOS),
                timeout=150,
            )
            results = [json.loads(line) for line in out.splitlines() if line.strip()]
            assert code == 0 and len(results) == len(SCENARIOS), describe(code, out, err)
            for scenario, result in zip(SCENARIOS, results, strict=True):
                what = f"{scenario}: {result}"
                assert result["ok"], what
                assert result["connectedTransport"] == scenario["transport"], what
                assert result["reconnectedTransport"] == scenario["transport"], what
                assert result["recoverable"] is True, what
                assert result["reconnectCode"] == 3011, what
                assert result["wasRecovering"] is True and result["recovered"] is True, what
                assert result["received"] == [1, 2, 3, 4], what
            await until(lambda: s.node.hub.num_sessions == 0, timeout=5, what="sessions closed")

    run(main(), timeout=200)
