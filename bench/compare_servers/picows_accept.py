"""Baseline server: a bare picows WebSocket handshake, nothing after it.

    python bench/compare_servers/picows_accept.py --port 9201 [--no-aiofastnet]

The cost floor of accepting a WebSocket connection in Python on this machine:
TCP accept, the HTTP upgrade and the 101, then the connection is held idle
(close frames are answered; data frames are dropped). With
``--ping-interval S`` it pings every idle connection every S seconds
(picows' auto-ping, in its compiled code) and expects the pong: the floor
of holding idle connections alive. The load generator's
``hold --raw --server-cmd`` measures it beside rtcore
(``docs/benchmarks.md``, "Scale"). picows uses aiofastnet's transports when
that package is installed; ``--no-aiofastnet`` makes it use uvloop's own, as
rtcore does. No stdin control loop (``picows_server.py`` has one, for the
fan-out benchmark), so it runs detached.
"""

from __future__ import annotations

import argparse
import resource

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server


class AcceptOnly(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def main(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = await ws_create_server(
        lambda request: AcceptOnly(),
        args.host,
        args.port,
        backlog=4096,
        websocket_handshake_timeout=10,
        use_aiofastnet=False if args.no_aiofastnet else None,
        enable_auto_ping=args.ping_interval > 0,
        auto_ping_idle_timeout=args.ping_interval or 20,
        auto_ping_reply_timeout=args.ping_interval or 20,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--no-aiofastnet", action="store_true", help="uvloop's transports instead of aiofastnet's"
    )
    p.add_argument(
        "--ping-interval",
        type=float,
        default=0,
        help="ping each connection after this many idle seconds (0: no pings)",
    )
    args = p.parse_args()
    if not (args.host.startswith("127.") or args.host == "::1"):
        p.error("--host must be a loopback address")
    try:
        uvloop.run(main(args))
    except KeyboardInterrupt:
        pass
