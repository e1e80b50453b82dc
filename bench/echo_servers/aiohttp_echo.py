"""aiohttp echo server: a web.WebSocketResponse handler that sends every message back.

    python bench/echo_servers/aiohttp_echo.py --port 9102 [--loop asyncio]

Runs on uvloop (the loop is created by uvloop and handed to ``web.run_app``).
Compression off, heartbeat off, autoping on (aiohttp's default).
"""

from __future__ import annotations

import asyncio

import aiohttp
from _common import parse_args, raise_nofile_limit
from aiohttp import web


def make_app(max_size: int) -> web.Application:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=max_size)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    return app


if __name__ == "__main__":
    args = parse_args(__doc__.split("\n")[0])
    raise_nofile_limit()
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(
        make_app(args.max_size),
        host=args.host,
        port=args.port,
        loop=loop,
        print=None,
        access_log=None,
    )
