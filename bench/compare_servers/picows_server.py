"""Comparison server: a picows fan-out loop.

Trivial protocol: connecting subscribes, every text frame is one
publication. The loop calls ``WSTransport.send`` for every connection, so
each connection gets its own frame built by picows' C code (no
encode-once, no per-client queue bound). Driven by ``bench/fanout_load.py
--server picows`` through the stdin control loop of ``bench/load_control.py``.

picows uses aiofastnet's transports when that package is installed (its
default); ``--no-aiofastnet`` (``--server picows-uvloop``) makes it use
uvloop's own TCP transports, as rtcore does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop  # noqa: E402
from load_control import raise_nofile_limit, sampled_max, serve_control  # noqa: E402
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server  # noqa: E402


async def main(args: argparse.Namespace) -> None:
    raise_nofile_limit()
    conns: dict[WSTransport, None] = {}
    snapshot: list[WSTransport] = []

    class Subscriber(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            conns[transport] = None

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            conns.pop(transport, None)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    def publish(data: bytes) -> None:
        send = WSMsgType.TEXT
        for transport in conns:
            transport.send(send, data)

    def backlog() -> int:
        if len(snapshot) != len(conns):
            snapshot[:] = conns
        return sampled_max(snapshot, lambda t: t.underlying_transport.get_write_buffer_size())

    server = await ws_create_server(
        lambda request: Subscriber(),
        args.host,
        args.port,
        backlog=4096,
        use_aiofastnet=False if args.no_aiofastnet else None,
    )
    try:
        await serve_control(args.port, publish, lambda: len(conns), backlog)
    finally:
        server.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--channel", default="bench", help="ignored: one implicit channel")
    p.add_argument(
        "--no-aiofastnet", action="store_true", help="uvloop's transports instead of aiofastnet's"
    )
    uvloop.run(main(p.parse_args()))
