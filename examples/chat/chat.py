"""A browser chat over any transport, with rooms, a presence list and history on join.

One Python program embeds rtcore's :class:`rtcore.Node` and serves, on
one port, the chat page (``static/``), the centrifuge-js browser build and
every client transport: WebSocket, and the HTTP-streaming and SSE fallbacks
(``/connection/http_stream``, ``/connection/sse``, ``/emulation``). Each
browser picks its transport on the login form, so people on a WebSocket and
on SSE talk in the same rooms.

Authentication and permissions are in-process hooks, no tokens:

* ``on_connecting``: the connect ``data`` carries ``{"name": ...}``; a valid
  display name becomes the user (and the connection info others see);
* ``on_subscribe``: only the rooms listed in ``ROOMS``;
* ``on_publish``: a message is ``{"text": ...}``; the server replaces it with
  ``{"user", "name", "text", "ts"}`` so nobody can post under another name.

The ``room`` namespace keeps 100 messages per room for 24 hours (history on
join, recovery after a reconnect) and tracks presence with join/leave pushes.

Run it (Node.js only to fetch the SDK's browser build once)::

    npm install --prefix examples/chat centrifuge@5.8.0
    python examples/chat/chat.py --port 8000
    # open http://127.0.0.1:8000/ in two browsers (or ?name=Ann&transport=sse)

``--sdk PATH`` points at another copy of ``centrifuge.js``; by default the
program looks in ``examples/chat/node_modules`` and ``tests/browser/node_modules``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rtcore import (
    ClientError,
    ConnectEvent,
    Credentials,
    Disconnect,
    DisconnectError,
    HttpResponseWriter,
    Node,
    NodeApp,
    PublishEvent,
    Request,
    SubscribeEvent,
    config_from_mapping,
    run,
    serve,
)


HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
ROOMS = ("lobby", "random", "dev")
NAMESPACE = "room"
MAX_TEXT = 500
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,23}$")
SDK_CANDIDATES = (
    HERE / "node_modules" / "centrifuge" / "dist" / "centrifuge.js",
    HERE.parents[1]
    / "tests"
    / "browser"
    / "node_modules"
    / "centrifuge"
    / "dist"
    / "centrifuge.js",
)
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

logger = logging.getLogger("chat")


def build_config(origins: list[str]) -> Any:
    return config_from_mapping(
        {
            "client": {"allowed_origins": origins, "ping_interval": 25, "pong_timeout": 8},
            "channel": {
                "namespaces": [
                    {
                        "name": NAMESPACE,
                        "history_size": 100,
                        "history_ttl": "24h",
                        "force_recovery": True,
                        "presence": True,
                        "join_leave": True,
                        "force_push_join_leave": True,
                        "allow_history_for_subscriber": True,
                        "allow_presence_for_subscriber": True,
                    }
                ]
            },
        }
    )


# -- hooks ------------------------------------------------------------------------


def on_connecting(event: ConnectEvent) -> Credentials:
    try:
        data = json.loads(event.data) if event.data else {}
    except ValueError:
        data = {}
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not NAME_RE.match(name.strip()):
        # Terminal (4500-4999): the page shows the reason instead of reconnecting.
        raise DisconnectError(Disconnect(4501, "invalid name"))
    name = name.strip()
    return Credentials(user=name.lower(), info=json.dumps({"name": name}).encode())


def on_subscribe(event: SubscribeEvent) -> bool:
    prefix = NAMESPACE + ":"
    return event.channel.startswith(prefix) and event.channel[len(prefix) :] in ROOMS


def on_publish(event: PublishEvent) -> bool:
    if event.channel not in event.client.subscriptions:
        return False
    try:
        message = json.loads(event.data)
    except ValueError:
        raise ClientError(400, "message must be JSON") from None
    text = message.get("text") if isinstance(message, dict) else None
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise ClientError(401, f"text must be 1 to {MAX_TEXT} characters")
    info = json.loads(event.client.info or b"{}")
    event.data = json.dumps(
        {
            "user": event.client.user,
            "name": info.get("name", event.client.user),
            "text": text.strip(),
            "ts": int(time.time() * 1000),
        }
    ).encode()
    return True


def install_hooks(node: Node) -> None:
    node.on_connecting = on_connecting
    node.on_subscribe = on_subscribe
    node.on_publish = on_publish


# -- static files -------------------------------------------------------------------


def find_sdk(explicit: str | None) -> Path:
    candidates = [Path(explicit)] if explicit else list(SDK_CANDIDATES)
    for path in candidates:
        if path.is_file():
            return path
    sys.exit(
        "centrifuge.js not found; run `npm install --prefix examples/chat centrifuge@5.8.0` "
        "or pass --sdk PATH/TO/centrifuge.js"
    )


def static(path: Path) -> Any:
    content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")

    def handler(request: Request, response: HttpResponseWriter) -> None:
        if request.method not in ("GET", "HEAD"):
            response.send(405, [("Allow", "GET, HEAD")])
            return
        body = path.read_bytes()
        response.send(
            200,
            [("Content-Type", content_type), ("Cache-Control", "no-cache")],
            b"" if request.method == "HEAD" else body,
        )

    return handler


def mount_static(app: NodeApp, sdk: Path) -> None:
    app.mount("/", static(STATIC / "index.html"))
    app.mount("/chat.js", static(STATIC / "chat.js"))
    app.mount("/chat.css", static(STATIC / "chat.css"))
    app.mount("/centrifuge.js", static(sdk))
    app.mount("/favicon.ico", lambda request, response: response.send(204))


# -- main ------------------------------------------------------------------------------


async def serve_chat(host: str, port: int, origins: list[str], sdk: Path) -> None:
    node = Node(build_config(origins))
    install_hooks(node)
    app = NodeApp(node)
    mount_static(app, sdk)
    await node.start()
    server = await serve(node, host, port, app=app)
    print(f"chat listening on http://{host}:{server.port}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await node.close()
    await server.close(timeout=2.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--origin",
        action="append",
        default=[],
        help="allowed browser origin (repeatable; default: this server's own)",
    )
    parser.add_argument("--sdk", help="path of centrifuge.js (the SDK's browser build)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    origins = args.origin or [f"http://{args.host}:{args.port}", f"http://localhost:{args.port}"]
    run(serve_chat(args.host, args.port, origins, find_sdk(args.sdk)))


if __name__ == "__main__":
    main()
