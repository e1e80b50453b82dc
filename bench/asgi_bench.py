"""What going through ASGI costs: rtcore.AsgiApp under uvicorn against rtcore's own server.

For each edge, in the same run, one server process is started and measured
from /proc (the CPU time of its threads, in nanoseconds from
``/proc/PID/task/*/schedstat``):

1. ``--connections`` WebSocket clients connect (HS256 token) and subscribe
   to one channel: server CPU per connection;
2. ``--publications`` publications (``--payload-size`` bytes of JSON) go out
   through the server API (``/api/batch``, ``--batch`` per request, one
   request after another) and every client counts all of them: server CPU
   per delivery (publications x connections; the API requests are included,
   spread over all deliveries). With ``--batch 100`` a client gets many
   publications in one WebSocket frame; with ``--batch 1`` about one frame
   per publication, which is where a per-message cost shows.

Edges: ``native`` (``rtcore.serve``), ``asgi`` (``uvicorn`` serving
``rtcore.AsgiApp`` as the top-level application) and ``fastapi`` (the same
app mounted at ``/rt`` in a FastAPI application). Both servers run on uvloop;
uvicorn uses httptools and its default WebSocket implementation. Each edge
runs ``--runs`` times, alternating, and the medians are reported.

The clients are one asyncio process speaking WebSocket through rtcore's
sans-I/O connection (``rtcore.wire.websocket``, client side), so the clients
cost the same whatever the server. Everything stays on 127.0.0.1.

    python bench/asgi_bench.py                                  # 500 x 200, 3 runs
    python bench/asgi_bench.py --batch 1                        # a frame per publication
    python bench/asgi_bench.py --connections 2000 --publications 100 --runs 5
    python bench/asgi_bench.py --edges native asgi fastapi --json results.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any


SECRET = "asgi-bench-hmac-secret-0123456789abcdef"
API_KEY = "asgi-bench-api-key"
CHANNEL = "bench"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
EDGES = ("native", "asgi", "fastapi")


# -- the server side (run as a subprocess: --serve EDGE --port PORT) ----------------------


def _node() -> Any:
    import rtcore

    return rtcore.Node(
        rtcore.config_from_mapping(
            {
                "client": {
                    "token": {"hmac_secret_key": SECRET},
                    "ping_interval": 0,
                    "queue_max_size": 64 << 20,
                },
                "api": {"key": API_KEY},
                "channel": {"without_namespace": {"allow_subscribe_for_client": True}},
            }
        )
    )


def serve(edge: str, port: int, uvicorn_ws: str = "auto") -> None:
    import rtcore

    node = _node()
    if edge == "native":

        async def main() -> None:
            await rtcore.serve(node, "127.0.0.1", port)
            await asyncio.Event().wait()

        rtcore.run(main())
        return
    import uvicorn

    app: Any = rtcore.AsgiApp(node)
    if edge == "fastapi":
        from fastapi import FastAPI

        rt = app
        app = FastAPI(lifespan=rt.lifespan)
        app.mount("/rt", rt)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        ws=uvicorn_ws,
        lifespan="on",
        log_level="warning",
        access_log=False,
        ws_max_size=1 << 20,
        ws_ping_interval=None,
    )


# -- the clients -----------------------------------------------------------------------------


def _token(user: str) -> str:
    from rtcore.auth import make_connect_token

    return make_connect_token(SECRET, user)


class BenchClient(asyncio.Protocol):
    """One WebSocket client: connect + subscribe, then count publications."""

    def __init__(self, host: str, path: str, user: str, subscribed: asyncio.Future[None]) -> None:
        from rtcore.wire.websocket import WebSocketConnection

        self.host = host
        self.path = path
        self.user = user
        self.subscribed = subscribed
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.ws = WebSocketConnection(is_server=False, max_message_size=0)
        self.upgraded = False
        self.pubs = 0
        self.target = 0
        self.done: asyncio.Future[None] | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(  # type: ignore[attr-defined]
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.fail(f"handshake refused: {bytes(self.head[:80])!r}")
                return
            self.upgraded = True
            rest = bytes(self.head[end + 4 :])
            self.send(
                b'{"id":1,"connect":{"token":"%s"}}\n{"id":2,"subscribe":{"channel":"%s"}}'
                % (_token(self.user).encode(), CHANNEL.encode())
            )
            if not rest:
                return
            data = rest
        from rtcore.frames import OP_BINARY, OP_TEXT

        for opcode, payload in self.ws.receive_data(data):
            if opcode not in (OP_TEXT, OP_BINARY):
                continue
            if not self.subscribed.done():
                if b'"id":2' in payload:
                    if b'"error"' in payload:
                        self.fail(f"subscribe failed: {payload[:200]!r}")
                        return
                    self.subscribed.set_result(None)
                continue
            self.pubs += payload.count(b'"pub":')
            if self.done is not None and self.pubs >= self.target and not self.done.done():
                self.done.set_result(None)
        self.ws.receive_done()
        self._flush()

    def send(self, payload: bytes) -> None:
        from rtcore.frames import OP_TEXT

        self.ws.send(OP_TEXT, payload)
        self._flush()

    def _flush(self) -> None:
        out = self.ws.data_to_send()
        if out and self.transport is not None:
            self.transport.writelines(out)

    def fail(self, why: str) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(RuntimeError(why))
        if self.done is not None and not self.done.done():
            self.done.set_exception(RuntimeError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.fail(f"connection lost ({exc}) after {self.pubs} publications")


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid``: nanoseconds from schedstat, else clock ticks."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


async def api_batch(port: int, prefix: str, publications: list[dict[str, Any]]) -> None:
    body = json.dumps({"commands": [{"publish": p} for p in publications]}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST {prefix}/api/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        + body
    )
    response = await reader.read()
    writer.close()
    if not response.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"API refused the batch: {response[:200]!r}")


@dataclass
class Result:
    edge: str
    connections: int
    publications: int
    cpu_per_connection_us: float
    cpu_per_delivery_us: float
    deliveries_per_second: float


async def measure(
    edge: str,
    connections: int,
    publications: int,
    payload_size: int,
    batch: int,
    uvicorn_ws: str = "auto",
) -> Result:
    port = free_port()
    server_args = ["--serve", edge, "--port", str(port), "--uvicorn-ws", uvicorn_ws]
    proc = subprocess.Popen([sys.executable, __file__, *server_args], stdout=subprocess.DEVNULL)
    prefix = "/rt" if edge == "fastapi" else ""
    loop = asyncio.get_running_loop()
    clients: list[BenchClient] = []
    try:
        await wait_port(port, proc)
        await asyncio.sleep(0.5)  # let the server settle after its first accept
        cpu0 = cpu_seconds(proc.pid)
        for start in range(0, connections, 100):
            pending = []
            for i in range(start, min(connections, start + 100)):
                subscribed: asyncio.Future[None] = loop.create_future()
                host = f"127.0.0.1:{port}"
                path = f"{prefix}/connection/websocket"
                _, client = await loop.create_connection(
                    functools.partial(BenchClient, host, path, str(i), subscribed),
                    "127.0.0.1",
                    port,
                )
                clients.append(client)
                pending.append(subscribed)
            await asyncio.wait_for(asyncio.gather(*pending), 60)
        cpu1 = cpu_seconds(proc.pid)
        for client in clients:
            client.target = publications
            client.done = loop.create_future()
        data = {"text": "x" * max(0, payload_size - 11)}
        started = time.monotonic()
        for start in range(0, publications, batch):
            count = min(batch, publications - start)
            await api_batch(port, prefix, [{"channel": CHANNEL, "data": data}] * count)
        await asyncio.wait_for(asyncio.gather(*(c.done for c in clients if c.done)), 300)
        elapsed = time.monotonic() - started
        cpu2 = cpu_seconds(proc.pid)
    finally:
        for client in clients:
            client.closing = True
            if client.transport is not None:
                client.transport.abort()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    deliveries = connections * publications
    return Result(
        edge=edge,
        connections=connections,
        publications=publications,
        cpu_per_connection_us=(cpu1 - cpu0) / connections * 1e6,
        cpu_per_delivery_us=(cpu2 - cpu1) / deliveries * 1e6,
        deliveries_per_second=deliveries / elapsed,
    )


def report(results: list[Result], edges: list[str]) -> dict[str, dict[str, float]]:
    medians: dict[str, dict[str, float]] = {}
    for edge in edges:
        mine = [r for r in results if r.edge == edge]
        medians[edge] = {
            key: statistics.median(getattr(r, key) for r in mine)
            for key in ("cpu_per_connection_us", "cpu_per_delivery_us", "deliveries_per_second")
        }
    base = medians.get("native")
    print(f"\n{'edge':<9} {'CPU/connection':>16} {'CPU/delivery':>14} {'deliveries/s':>14}")
    for edge, m in medians.items():
        ratio = ""
        if base is not None and edge != "native":
            ratio = (
                f"   x{m['cpu_per_connection_us'] / base['cpu_per_connection_us']:.2f} /"
                f" x{m['cpu_per_delivery_us'] / base['cpu_per_delivery_us']:.2f}"
            )
        print(
            f"{edge:<9} {m['cpu_per_connection_us']:>13.0f} us {m['cpu_per_delivery_us']:>11.2f} us"
            f" {m['deliveries_per_second']:>14,.0f}{ratio}"
        )
    return medians


async def bench(args: argparse.Namespace) -> None:
    results = []
    for run in range(args.runs):
        for edge in args.edges:
            result = await measure(
                edge,
                args.connections,
                args.publications,
                args.payload_size,
                args.batch,
                args.uvicorn_ws,
            )
            results.append(result)
            print(
                f"run {run + 1} {edge:<8} {result.cpu_per_connection_us:8.0f} us/connection"
                f" {result.cpu_per_delivery_us:7.2f} us/delivery"
                f" {result.deliveries_per_second:10,.0f} deliveries/s",
                flush=True,
            )
    medians = report(results, args.edges)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": [asdict(r) for r in results], "medians": medians}, f, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--publications", type=int, default=200)
    parser.add_argument("--payload-size", type=int, default=100, help="bytes of JSON data")
    parser.add_argument("--batch", type=int, default=100, help="publications per API request")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--edges", nargs="+", choices=EDGES, default=["native", "asgi"])
    parser.add_argument("--json", help="write every run and the medians to this file")
    parser.add_argument(
        "--uvicorn-ws",
        default="auto",
        choices=["auto", "websockets", "websockets-sansio", "wsproto"],
        help="uvicorn's WebSocket implementation (auto: websockets-sansio)",
    )
    parser.add_argument("--serve", choices=EDGES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.uvicorn_ws)
        return
    if min(args.connections, args.publications, args.runs, args.batch) < 1:
        parser.error("--connections, --publications, --runs and --batch must be >= 1")
    import uvloop

    uvloop.run(bench(args))


if __name__ == "__main__":
    main()
