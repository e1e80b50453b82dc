"""Comparison server: python-socketio room emit (aiohttp integration).

Clients speak Engine.IO v4 / Socket.IO v5 over WebSocket directly
(``/socket.io/?EIO=4&transport=websocket``); the connect handler puts every
client into one room and a publication is ``sio.emit("pub", data,
room=...)``. The backlog of individual connections is not reachable through
the public API, so use this server with a fixed ``--rate``. Driven by
``bench/fanout_load.py --server socketio`` through the stdin control loop of
``bench/load_control.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import socketio  # noqa: E402
import uvloop  # noqa: E402
from aiohttp import web  # noqa: E402
from load_control import raise_nofile_limit, serve_control  # noqa: E402


async def main(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
    app = web.Application()
    sio.attach(app)
    members: set[str] = set()

    @sio.event
    async def connect(sid: str, environ: dict, auth: object = None) -> None:
        await sio.enter_room(sid, args.channel)
        members.add(sid)

    @sio.event
    async def disconnect(sid: str, *reason: object) -> None:
        members.discard(sid)

    async def publish(data: bytes) -> None:
        await sio.emit("pub", json.loads(data), room=args.channel)

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, backlog=4096)
    await site.start()
    try:
        await serve_control(args.port, publish, lambda: len(members), lambda: 0)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--channel", default="bench")
    uvloop.run(main(p.parse_args()))
