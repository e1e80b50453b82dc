"""websockets echo server (the asyncio implementation, websockets 13+): sends every message back.

    python bench/echo_servers/websockets_echo.py --port 9103 [--loop asyncio]

Runs on uvloop. Compression off, keepalive pings off, no message size limit
beyond ``--max-size``.
"""

from __future__ import annotations

from _common import parse_args, run
from websockets.asyncio.server import ServerConnection, serve


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    async with serve(
        echo, args.host, args.port, compression=None, max_size=args.max_size, ping_interval=None
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__.split("\n")[0])
    try:
        run(main, args.loop)
    except KeyboardInterrupt:
        pass
