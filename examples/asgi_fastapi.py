"""rtcore inside a FastAPI application: one process, one port, one event loop.

What it shows:

* ``rtcore.AsgiApp(node)`` mounted at ``/rt``: Centrifuge clients connect to
  ``/rt/connection/websocket`` (or the HTTP-streaming / SSE fallbacks) and the
  server API answers at ``/rt/api/<method>``;
* the node started and closed by the application's lifespan;
* a route of the application publishing through the node
  (``POST /rooms/{room}/messages``) after its own work, and reading the
  room's history (``GET /rooms/{room}/messages``);
* a connect hook in plain Python instead of tokens: the user comes from a
  header the application trusts (here ``X-User``, standing in for your
  session cookie check).

Run it::

    pip install fastapi uvicorn
    uvicorn examples.asgi_fastapi:app --port 8000      # from the repository root
    # or: python examples/asgi_fastapi.py --port 8000

then connect any Centrifuge SDK to ``ws://127.0.0.1:8000/rt/connection/websocket``
(sending ``X-User`` with the upgrade request, or a ``name`` in the connect data)
and post a message::

    curl -X POST localhost:8000/rooms/lobby/messages -H 'Content-Type: application/json' \\
         -d '{"text": "hello"}'

Every subscriber of ``chat:lobby`` gets it; a client that reconnects recovers
what it missed (the namespace keeps 100 messages for 5 minutes).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import rtcore


CONFIG = {
    "channel": {
        "namespaces": [
            {
                "name": "chat",
                "history_size": 100,
                "history_ttl": 300,
                "force_recovery": True,
                "allow_subscribe_for_client": True,
                "allow_history_for_subscriber": True,
            }
        ]
    },
}

node = rtcore.Node(rtcore.config_from_mapping(CONFIG))
realtime = rtcore.AsgiApp(node)


@node.hook
def on_connecting(event: rtcore.ConnectEvent) -> rtcore.Credentials:
    """Who is connecting: the application's own authentication goes here."""
    # The HTTP headers of the request that opened the connection (lowercased names).
    http_headers = event.client.request_info.get("headers", {})
    user = http_headers.get("x-user", "")
    if not user and event.data:
        user = str(json.loads(event.data).get("name", ""))
    if not user:
        raise rtcore.DisconnectError(rtcore.codes.PERMISSION_DENIED)
    return rtcore.Credentials(user=user)


app = FastAPI(title="chat", lifespan=realtime.lifespan)
app.mount("/rt", realtime)


class Message(BaseModel):
    text: str
    author: str = "web"


@app.post("/rooms/{room}/messages")
async def post_message(room: str, message: Message) -> dict[str, Any]:
    """Store-then-publish: what a view does after its transaction commits."""
    if not message.text.strip() or len(message.text) > 500:
        raise HTTPException(400, "text must be 1 to 500 characters")
    body = {"text": message.text, "author": message.author, "at": time.time()}
    try:
        position, _ = await node.publish(f"chat:{room}", json.dumps(body).encode())
    except rtcore.ClientError as exc:  # an invalid room name (107)
        raise HTTPException(400, exc.message) from None
    return {"room": room, "offset": position.offset, "epoch": position.epoch}


@app.get("/rooms/{room}/messages")
async def recent_messages(room: str, limit: int = 20) -> list[dict[str, Any]]:
    """The room's history, newest last."""
    history = await node.history(f"chat:{room}", limit=limit, reverse=True)
    return [json.loads(p.data) for p in reversed(history.publications)]


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)
