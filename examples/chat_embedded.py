"""A small chat server that embeds rtcore's Node in its own asyncio program.

What it shows:

* in-process hooks instead of tokens and proxies: ``on_connecting`` accepts a
  simple signed token (``user:signature`` in the connect ``data``) or an
  anonymous guest with a display name; ``on_subscribe`` opens the ``chat:``
  rooms; ``on_publish`` validates and stamps every message with its author and
  the server time; ``on_rpc`` answers ``online`` (who is in a room);
* serving the protocol endpoint ``/connection/websocket`` together with the
  application's own HTTP routes (a static page) on one port, via
  ``NodeApp.mount``;
* a browser chat page (``chat.html`` next to this file) using centrifuge-js
  from a local copy of its browser build (no CDN).

Run it::

    python examples/chat_embedded.py --port 8000
    # then open http://127.0.0.1:8000/ (or /?name=Ann to skip the name prompt)

The page loads ``/centrifuge.js``: the browser build ``dist/centrifuge.js`` of
the npm package ``centrifuge`` (5.x). Get it once with::

    cd examples && npm install --no-save centrifuge@5

or point ``CENTRIFUGE_JS`` at any copy of ``centrifuge.js``. The server also
finds the copy installed for the SDK tests (``tests/protocol/js``).

Any Centrifuge SDK can join, e.g. centrifuge-python::

    client = centrifuge.Client("ws://127.0.0.1:8000/connection/websocket", data={"name": "Ann"})
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import signal
import time
from pathlib import Path

import rtcore
from rtcore import (
    ClientError,
    ConnectEvent,
    Credentials,
    DisconnectError,
    HttpResponseWriter,
    Node,
    NodeApp,
    PublishEvent,
    Request,
    RPCEvent,
    SubscribeEvent,
    codes,
    config_from_mapping,
)


HERE = Path(__file__).resolve().parent
ROOM_PREFIX = "chat:"
MAX_TEXT = 500


# -- the application's own "simple token" ----------------------------------------


def make_token(secret: str, user: str) -> str:
    """``user:hexdigest``, an HMAC-SHA256 of the user id (what a login page would hand out)."""
    sig = hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()
    return f"{user}:{sig}"


def check_token(secret: str, token: str) -> str | None:
    """The user id of a valid token, else None."""
    user, _, sig = token.rpartition(":")
    if not user or not hmac.compare_digest(make_token(secret, user), token):
        return None
    return user


# -- hooks -----------------------------------------------------------------------


def install_hooks(node: Node, secret: str) -> None:
    def on_connecting(event: ConnectEvent) -> Credentials:
        try:
            data = json.loads(event.data) if event.data else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        token = data.get("token")
        if isinstance(token, str):
            user = check_token(secret, token)
            if user is None:
                raise DisconnectError(codes.INVALID_TOKEN)
            return Credentials(user=user, info=json.dumps({"name": user}).encode())
        name = data.get("name")
        if isinstance(name, str) and 0 < len(name.strip()) <= 32:
            # An anonymous guest: user id "", the display name travels in conn_info.
            return Credentials(
                user="", info=json.dumps({"name": name.strip(), "guest": True}).encode()
            )
        raise DisconnectError(codes.BAD_REQUEST)

    def on_subscribe(event: SubscribeEvent) -> bool:
        return event.channel.startswith(ROOM_PREFIX)

    def on_publish(event: PublishEvent) -> bool:
        if (
            not event.channel.startswith(ROOM_PREFIX)
            or event.channel not in event.client.subscriptions
        ):
            return False
        try:
            text = json.loads(event.data).get("text")
        except (ValueError, AttributeError):
            text = None
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise ClientError(4000, 'a message is {"text": "..."} with 1-500 characters')
        author = json.loads(event.client.info or b"{}").get("name", "?")
        event.data = json.dumps(
            {"text": text.strip(), "from": author, "ts": int(time.time() * 1000)}
        ).encode()
        return True

    async def on_rpc(event: RPCEvent) -> bytes:
        if event.method != "online":
            raise ClientError(104, "method not found")
        room = json.loads(event.data or b"{}").get("room", "")
        if not isinstance(room, str) or not room.startswith(ROOM_PREFIX):
            raise ClientError(4000, "room must be a chat: channel")
        clients = await node.presence(room)
        names = sorted(
            {json.loads(info.conn_info or b"{}").get("name", "?") for info in clients.values()}
        )
        return json.dumps({"room": room, "online": names}).encode()

    node.on_connecting = on_connecting
    node.on_subscribe = on_subscribe
    node.on_publish = on_publish
    node.on_rpc = on_rpc


# -- static files ------------------------------------------------------------------


def find_centrifuge_js() -> Path | None:
    candidates = [
        os.environ.get("CENTRIFUGE_JS", ""),
        HERE / "node_modules" / "centrifuge" / "dist" / "centrifuge.js",
        HERE.parent
        / "tests"
        / "protocol"
        / "js"
        / "node_modules"
        / "centrifuge"
        / "dist"
        / "centrifuge.js",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


PAGE = HERE / "chat.html"


def mount_static(app: NodeApp) -> None:
    def index(request: Request, response: HttpResponseWriter) -> None:
        response.send(200, [("Content-Type", "text/html; charset=utf-8")], PAGE.read_bytes())

    def centrifuge_js(request: Request, response: HttpResponseWriter) -> None:
        path = find_centrifuge_js()
        if path is None:
            body = (
                b"centrifuge.js not found: run 'npm install --no-save centrifuge@5' in examples/\n"
            )
            response.send(404, [("Content-Type", "text/plain; charset=utf-8")], body)
            return
        response.send(200, [("Content-Type", "text/javascript; charset=utf-8")], path.read_bytes())

    app.mount("/", index)
    app.mount("/centrifuge.js", centrifuge_js)


# -- the program ---------------------------------------------------------------------


def build_node(host: str, port: int) -> Node:
    config = config_from_mapping(
        {
            "client": {
                # Browsers send Origin: allow this page's own origin.
                "allowed_origins": [
                    f"http://{host}:{port}",
                    f"http://localhost:{port}",
                    f"http://127.0.0.1:{port}",
                ],
            },
            "channel": {
                "namespaces": [
                    {
                        "name": "chat",
                        "presence": True,
                        "history_size": 50,
                        "history_ttl": "1h",
                        "force_recovery": True,
                    }
                ]
            },
        }
    )
    return Node(config)


async def main(host: str, port: int, secret: str) -> None:
    node = build_node(host, port)
    install_hooks(node, secret)
    app = NodeApp(node)
    mount_static(app)
    server = await rtcore.serve(node, host, port, app=app)
    print(f"chat listening on http://{host}:{server.port}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await node.close()
    await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--secret",
        default=os.environ.get("CHAT_SECRET", "change-me"),
        help="key of the simple user tokens (env CHAT_SECRET)",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(main(args.host, args.port, args.secret))
