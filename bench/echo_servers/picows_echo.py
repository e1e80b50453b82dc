"""picows echo server: a WSListener that sends every data frame back.

    python bench/echo_servers/picows_echo.py --port 9101 [--no-aiofastnet] [--loop asyncio]

Runs on uvloop. picows uses the aiofastnet transports when that package is
installed (its default); ``--no-aiofastnet`` makes it use the event loop's own
transports (uvloop's TCPTransport). Auto-ping is off, as in the other servers.
Frames are echoed one by one, which is a whole message for the unfragmented
messages of the benchmark client.
"""

from __future__ import annotations

import sys

from _common import parse_args, run
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server


class EchoListener(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if (
            msg_type == WSMsgType.BINARY
            or msg_type == WSMsgType.TEXT
            or msg_type == WSMsgType.CONTINUATION
        ):
            transport.send(msg_type, frame.get_payload_as_memoryview(), frame.fin)
        elif msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


async def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    use_aiofastnet = False if "--no-aiofastnet" in sys.argv else None
    server = await ws_create_server(
        lambda request: EchoListener(),
        args.host,
        args.port,
        max_frame_size=args.max_size,
        websocket_handshake_timeout=10,
        use_aiofastnet=use_aiofastnet,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parse_args(__doc__.split("\n")[0])
    try:
        run(main, args.loop)
    except KeyboardInterrupt:
        pass
