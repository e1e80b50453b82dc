"""Fossil delta compression: bytes on the wire and server CPU on realistic streams.

One rtcore ``Node`` (memory engine) in this process; sans-I/O sessions
(no sockets) subscribe to a channel of a namespace with
``allowed_delta_types = ["fossil"]`` and recovery: a plain subscriber and a
delta subscriber (``delta: "fossil"``) per codec, JSON and Protobuf. Each
stream publishes ``--count`` versions of a JSON document through
``node.publish(..., delta=True)``; every subscriber's transport counts the
bytes the writer hands to it (the WebSocket frame payloads: the replies and
pushes exactly as sent). Each delta subscriber rebuilds every document with
rtcore's fossil decoder and the run fails if one differs.

Streams (a document, then small changes per publication):

* ``orderbook``: 2 × 25 price levels (~1 KB); each update changes 1-3 level
  sizes, the sequence number and the time; now and then a level is
  inserted or removed;
* ``scoreboard``: 40 players with scores and states (~2.3 KB); each update
  changes one player's score and the time;
* ``dashboard``: 12 metric series of 20 points (~1.6 KB); each update drops
  the oldest point of one series and appends a new one;
* ``status``: a small object (~75 B) whose one field changes: the case
  where deltas barely pay.

Reported per stream and codec: bytes per publication of the plain and of the
delta subscriber (the first publication, always full, included) and the
saving; the CPU time of one fossil delta (computed once per publication,
whatever the number of subscribers); and the server CPU per publication
(``time.process_time``, memory engine, publish to queued bytes) with plain
subscribers only and with delta subscribers too (one delta and three more
encodings per publication: the JSON full and delta forms, the Protobuf
delta form).

    python bench/delta_bench.py                 # markdown table
    python bench/delta_bench.py --count 50      # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

from rtcore.config import config_from_mapping
from rtcore.engine.node import Node
from rtcore.engine.session import ClientSession
from rtcore.protocol import Command, ConnectRequest, SubscribeRequest, get_codec
from rtcore.protocol.codes import Disconnect
from rtcore.protocol.fossil import apply_delta, create_delta


CONFIG = {
    "client": {
        "ping_interval": 0,
        "pong_timeout": 0,
        "allow_anonymous_connect_without_token": True,
    },
    "channel": {
        "namespaces": [
            {
                "name": "d",
                "history_size": 10,
                "history_ttl": 300,
                "force_recovery": True,
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
                "allowed_delta_types": ["fossil"],
            }
        ]
    },
}


# -- streams --------------------------------------------------------------------------


def orderbook(rnd: random.Random) -> Callable[[], dict[str, Any]]:
    mid = 27_000.0
    bids = [[round(mid - 0.5 * (i + 1), 2), round(rnd.uniform(0.01, 5), 4)] for i in range(25)]
    asks = [[round(mid + 0.5 * (i + 1), 2), round(rnd.uniform(0.01, 5), 4)] for i in range(25)]
    state = {"seq": 0}

    def step() -> dict[str, Any]:
        state["seq"] += 1
        for _ in range(rnd.randint(1, 3)):
            side = rnd.choice((bids, asks))
            side[rnd.randrange(len(side))][1] = round(rnd.uniform(0.01, 5), 4)
        if rnd.random() < 0.1:
            side = rnd.choice((bids, asks))
            i = rnd.randrange(1, len(side))
            if rnd.random() < 0.5:
                del side[i]
            else:
                price = round((side[i - 1][0] + side[i][0]) / 2, 2)
                side.insert(i, [price, round(rnd.uniform(0.01, 5), 4)])
        return {
            "symbol": "BTC-USD",
            "seq": state["seq"],
            "ts": 1_700_000_000_000 + state["seq"] * 37,
            "bids": bids,
            "asks": asks,
        }

    return step


def scoreboard(rnd: random.Random) -> Callable[[], dict[str, Any]]:
    players = [
        {"id": i, "name": f"player-{i:02d}", "score": rnd.randint(0, 500), "state": "alive"}
        for i in range(40)
    ]
    state = {"tick": 0}

    def step() -> dict[str, Any]:
        state["tick"] += 1
        p = rnd.choice(players)
        p["score"] += rnd.randint(1, 25)
        if rnd.random() < 0.05:
            p["state"] = rnd.choice(("alive", "respawning", "dead"))
        return {"game": "arena-7", "tick": state["tick"], "players": players}

    return step


def dashboard(rnd: random.Random) -> Callable[[], dict[str, Any]]:
    series = {f"metric_{i}": [round(rnd.uniform(0, 100), 2) for _ in range(20)] for i in range(12)}
    state = {"t": 0}

    def step() -> dict[str, Any]:
        state["t"] += 1
        name = rnd.choice(list(series))
        points = series[name]
        points.pop(0)
        points.append(round(rnd.uniform(0, 100), 2))
        return {"dashboard": "ops", "t": state["t"], "series": series}

    return step


def status(rnd: random.Random) -> Callable[[], dict[str, Any]]:
    doc = {"service": "payments", "region": "eu-west-1", "healthy": True, "latency_ms": 12}

    def step() -> dict[str, Any]:
        doc["latency_ms"] = rnd.randint(5, 200)
        return doc

    return step


STREAMS = {
    "orderbook": orderbook,
    "scoreboard": scoreboard,
    "dashboard": dashboard,
    "status": status,
}


# -- sans-I/O subscribers --------------------------------------------------------------------


class CountingTransport:
    """A session transport that counts (and keeps) what the writer hands it."""

    name = "websocket"
    unidirectional = False
    emulation = False

    def __init__(self, codec: str) -> None:
        self.codec = get_codec(codec)
        self.bytes = 0
        self.frames: list[bytes] = []
        self.closes: list[Disconnect] = []

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        self.bytes += nbytes
        self.frames.append(b"".join(payloads))

    def buffer_size(self) -> int:
        return 0

    def on_slow(self) -> None:
        raise AssertionError("a benchmark subscriber was too slow")

    def close(self, disconnect: Disconnect) -> None:
        self.closes.append(disconnect)


class Subscriber:
    def __init__(self, node: Node, codec: str, delta: bool) -> None:
        self.codec = codec
        self.delta = delta
        self.transport = CountingTransport(codec)
        self.session = ClientSession(node, self.transport)

    async def start(self, channel: str) -> None:
        c = self.transport.codec
        self.session.handle_frame(_frame(c, Command(id=1, connect=ConnectRequest())))
        req = SubscribeRequest(channel=channel, delta="fossil" if self.delta else "")
        self.session.handle_frame(_frame(c, Command(id=2, subscribe=req)))
        for _ in range(100):
            await asyncio.sleep(0)
            if (
                channel in self.session.subscriptions
                and not self.session.subscriptions[channel].pending
            ):
                break
        self.start_bytes = self.transport.bytes
        self.start_frames = len(self.transport.frames)

    def documents(self) -> list[bytes]:
        """Every document this subscriber received, rebuilt as an SDK would."""
        out: list[bytes] = []
        base = b""
        for frame in self.transport.frames[self.start_frames :]:
            for pub in _publications(self.codec, frame):
                data, is_delta = pub
                base = apply_delta(base, data) if is_delta else data
                out.append(base)
        return out


def _frame(codec: Any, cmd: Command) -> bytes:
    if codec.name == "json":
        body: dict[str, Any] = {"id": cmd.id}
        if cmd.connect is not None:
            body["connect"] = {}
        if cmd.subscribe is not None:
            body["subscribe"] = {"channel": cmd.subscribe.channel}
            if cmd.subscribe.delta:
                body["subscribe"]["delta"] = cmd.subscribe.delta
        return json.dumps(body).encode()
    from rtcore.protocol import client_pb2 as pb

    msg = pb.Command(id=cmd.id)
    if cmd.connect is not None:
        msg.connect.SetInParent()
    if cmd.subscribe is not None:
        msg.subscribe.channel = cmd.subscribe.channel
        msg.subscribe.delta = cmd.subscribe.delta
    body_bytes = msg.SerializeToString()
    return _varint(len(body_bytes)) + body_bytes


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _publications(codec: str, frame: bytes) -> list[tuple[bytes, bool]]:
    out = []
    if codec == "json":
        for line in frame.decode().splitlines():
            push = json.loads(line).get("push")
            if push and "pub" in push:
                data = push["pub"]["data"]
                raw = data.encode() if isinstance(data, str) else json.dumps(data).encode()
                out.append((raw, bool(push["pub"].get("delta"))))
        return out
    from rtcore.protocol import client_pb2 as pb

    pos = 0
    while pos < len(frame):
        n = shift = 0
        while True:
            b = frame[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        reply = pb.Reply.FromString(frame[pos : pos + n])
        pos += n
        if reply.push.HasField("pub"):
            out.append((reply.push.pub.data, reply.push.pub.delta))
    return out


# -- the runs ---------------------------------------------------------------------------


async def run_stream(name: str, count: int, seed: int) -> dict[str, Any]:
    node = Node(config_from_mapping(CONFIG))
    await node.start()
    channel = f"d:{name}"
    subs = [
        Subscriber(node, codec, delta) for codec in ("json", "protobuf") for delta in (False, True)
    ]
    for s in subs:
        await s.start(channel)
    step = STREAMS[name](random.Random(seed))
    docs = [json.dumps(step(), separators=(",", ":")).encode() for _ in range(count)]
    cpu = time.process_time()
    for doc in docs:
        await node.publish(channel, doc, delta=True)
        node.flusher.flush()
    cpu_delta = time.process_time() - cpu
    result: dict[str, Any] = {"stream": name, "doc_bytes": sum(map(len, docs)) / count}
    for s in subs:
        if s.transport.closes:
            raise AssertionError(f"{name}/{s.codec}: disconnected: {s.transport.closes}")
        got = s.documents()
        if s.delta and got != docs:
            raise AssertionError(f"{name}/{s.codec}: a rebuilt document differs")
        if len(got) != count:
            raise AssertionError(f"{name}/{s.codec}: {len(got)} of {count} publications")
        key = f"{s.codec}_{'delta' if s.delta else 'plain'}"
        result[key] = (s.transport.bytes - s.start_bytes) / count
    await node.close()
    # The same stream to plain subscribers only: no delta is computed.
    node = Node(config_from_mapping(CONFIG))
    await node.start()
    plain = [Subscriber(node, codec, False) for codec in ("json", "protobuf")]
    for s in plain:
        await s.start(channel)
    cpu = time.process_time()
    for doc in docs:
        await node.publish(channel, doc, delta=True)
        node.flusher.flush()
    cpu_plain = time.process_time() - cpu
    await node.close()
    result["cpu_us_delta"] = cpu_delta / count * 1e6
    result["cpu_us_plain"] = cpu_plain / count * 1e6
    # The fossil delta alone, as the hub computes it once per publication.
    started = time.process_time()
    for prev, doc in zip(docs, docs[1:], strict=False):
        create_delta(prev, doc)
    result["fossil_us"] = (time.process_time() - started) / max(1, count - 1) * 1e6
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| stream | document | codec | plain B/pub | delta B/pub | saved "
        "| fossil delta | publish CPU: plain subscribers → plus delta ones |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for codec in ("json", "protobuf"):
            plain, delta = r[f"{codec}_plain"], r[f"{codec}_delta"]
            lines.append(
                f"| {r['stream']} | {r['doc_bytes']:.0f} B | {codec} | {plain:.0f} | {delta:.0f} "
                f"| {100 * (1 - delta / plain):.0f}% | {r['fossil_us']:.0f} µs | "
                f"{r['cpu_us_plain']:.0f} µs → {r['cpu_us_delta']:.0f} µs |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="publications per stream")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--stream", choices=sorted(STREAMS), action="append")
    args = parser.parse_args()
    if not 1 <= args.count <= 100_000:
        parser.error("--count must be within 1..100000")
    results = [
        asyncio.run(run_stream(name, args.count, args.seed)) for name in args.stream or STREAMS
    ]
    print(table(results))


if __name__ == "__main__":
    main()
