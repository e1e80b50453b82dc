"""Comparison server: ``websockets.asyncio.server.broadcast()`` fan-out.

Trivial protocol: connecting to ``/`` subscribes, every text message is one
publication. ``broadcast()`` frames the message once per connection and has
no per-client queue bound (the library documents both); compression is off,
as in rtcore's default. Driven by ``bench/fanout_load.py --server websockets``
through the stdin control loop of ``bench/load_control.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop  # noqa: E402
from load_control import raise_nofile_limit, sampled_max, serve_control  # noqa: E402
from websockets.asyncio.server import ServerConnection, broadcast, serve  # noqa: E402


async def main(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    conns: set[ServerConnection] = set()
    snapshot: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    def publish(data: bytes) -> None:
        broadcast(conns, data.decode())

    def backlog() -> int:
        if len(snapshot) != len(conns):
            snapshot[:] = conns
        return sampled_max(snapshot, lambda ws: ws.transport.get_write_buffer_size())

    async with serve(
        handler,
        args.host,
        args.port,
        compression=None,
        ping_interval=None,
        max_size=1 << 16,
        backlog=4096,
    ):
        await serve_control(args.port, publish, lambda: len(conns), backlog)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--channel", default="bench", help="ignored: one implicit channel")
    uvloop.run(main(p.parse_args()))
