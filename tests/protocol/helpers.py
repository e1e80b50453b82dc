"""Test harness for the protocol engine.

* :class:`FakeClock` drives a node's timer wheel and wall clock by hand.
* :class:`RecordingTransport` is a session's transport and writer sink that
  keeps every written frame and every close advice.
* :class:`Client` speaks the protocol to a :class:`~rtcore.engine.session.ClientSession`
  over a recording transport, in JSON or Protobuf, and decodes what the
  server wrote back into plain dicts shaped like the JSON wire format (raw
  JSON ``bytes`` fields decoded, Protobuf messages converted field by field
  with an independent decoder: the generated ``client_pb2``).
* :func:`serve` runs a node on a free loopback port inside the running loop.

Everything here is asyncio without pytest-asyncio: tests call :func:`run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message

from rtcore.auth import make_connect_token, make_subscribe_token
from rtcore.config import config_from_mapping
from rtcore.engine.memory import MemoryBroker
from rtcore.engine.node import Node
from rtcore.engine.session import ClientSession
from rtcore.engine.timers import TimerWheel
from rtcore.protocol import client_pb2 as pb, codes, get_codec
from rtcore.protocol.codec import Codec
from rtcore.protocol.codes import Disconnect
from rtcore.server.app import NodeApp, serve_node
from rtcore.transports.http_server import Server


__all__ = [
    "SECRET",
    "FakeClock",
    "RecordingTransport",
    "Client",
    "GatedBroker",
    "ServedNode",
    "build_config",
    "heartbeat_node",
    "make_node",
    "pinged_client",
    "run",
    "serve",
    "until",
    "connect_token",
    "subscribe_token",
    "encode_commands",
    "decode_replies",
]

T = TypeVar("T")

#: HMAC secret of every test node (32+ bytes, so the verifier does not warn).
SECRET = "rtcore-protocol-tests-hmac-secret-0123456789"

#: Defaults every test node starts from; tests merge their own mapping on top.
BASE_CONFIG: dict[str, Any] = {
    "client": {"token": {"hmac_secret_key": SECRET}},
}


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_config(overrides: Mapping[str, Any] | None = None) -> Any:
    """A validated Config: the test defaults with ``overrides`` merged in (deeply)."""
    return config_from_mapping(_merge(BASE_CONFIG, overrides or {}))


def connect_token(user: str, **kwargs: Any) -> str:
    return make_connect_token(SECRET, user, **kwargs)


def subscribe_token(user: str, channel: str, **kwargs: Any) -> str:
    return make_subscribe_token(SECRET, user, channel, **kwargs)


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run one test coroutine in a fresh event loop, bounded in time."""

    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


async def until(cond: Callable[[], Any], timeout: float = 3.0, what: str = "condition") -> Any:
    """Let the loop run until ``cond()`` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    spins = 0
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        spins += 1
        # A few bare yields first (flushes are call_soon callbacks), then real sleeps.
        await asyncio.sleep(0 if spins < 20 else 0.002)


async def settle(rounds: int = 30) -> None:
    """Give queued tasks and flush callbacks a chance to run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


# -- clock ---------------------------------------------------------------------


class FakeClock:
    """Monotonic and wall time that only move when told to."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall_start = time.time()
        self.offset = 0.0

    def monotonic(self) -> float:
        return self.mono + self.offset

    def wall(self) -> float:
        return self.wall_start + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def make_node(
    overrides: Mapping[str, Any] | None = None,
    *,
    clock: FakeClock | None = None,
    broker: Any = None,
) -> Node:
    """A Node from a config mapping; with ``clock`` its timers and wall clock are manual.

    With a fake clock the wheel's own sweeping task is never started: call
    ``node.timers.sweep()`` after ``clock.advance()``.
    """
    node = Node(build_config(overrides), broker=broker)
    if clock is not None:
        node.timers = _ManualWheel(tick=0.25, clock=clock.monotonic)
        node.wall_clock = clock.wall
    return node


def heartbeat_node(clock: FakeClock) -> Node:
    """A node that pings every 10 s and wants each pong within 4 s."""
    return make_node(
        {
            "client": {"ping_interval": 10, "pong_timeout": 4},
            "channel": {"without_namespace": {"allow_subscribe_for_client": True}},
        },
        clock=clock,
    )


async def pinged_client(clock: FakeClock, codec: str = "json") -> tuple[Node, Client]:
    """A started :func:`heartbeat_node` and a client that has just got its first ping."""
    node = heartbeat_node(clock)
    await node.start()
    c = Client(node, codec)
    await c.connect(connect_token("42"))
    clock.advance(10.1)  # the first ping is due within [interval / 2, interval]
    node.timers.sweep()
    await until(lambda: c.pings() == 1)
    return node, c


class _ManualWheel(TimerWheel):
    """A timer wheel swept only by the test."""

    __slots__ = ()

    def start(self) -> None:
        return None


class GatedBroker(MemoryBroker):
    """A memory broker whose history reads can be held open.

    While :attr:`gate` is set, ``history`` reads the stream *first* (when
    ``read_before`` is true) or *last*, and waits for the gate in between, so
    a test can publish while a subscribe is in the middle of its recovery.
    :attr:`subscribe_gate` holds ``subscribe`` (after it took effect) the same
    way. :attr:`waiting` is set once a call is held.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.read_before = True
        self.waiting = asyncio.Event()
        # Held open the same way: the broker subscription of a channel.
        self.subscribe_gate: asyncio.Event | None = None

    async def subscribe(self, channel: str) -> None:
        await super().subscribe(channel)
        if self.subscribe_gate is not None:
            self.waiting.set()
            await self.subscribe_gate.wait()

    async def history(self, channel: str, **kwargs: Any) -> Any:
        gate = self.gate
        if gate is None:
            return await super().history(channel, **kwargs)
        if self.read_before:
            result = await super().history(channel, **kwargs)
            self.waiting.set()
            await gate.wait()
            return result
        self.waiting.set()
        await gate.wait()
        return await super().history(channel, **kwargs)


# -- codecs for the client side ---------------------------------------------------


def _set_pb(msg: Message, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        fd = msg.DESCRIPTOR.fields_by_name[key]
        target = getattr(msg, key) if fd.type == fd.TYPE_MESSAGE or fd.is_repeated else None
        if fd.type == fd.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_fd.type == value_fd.TYPE_MESSAGE:
                    _set_pb(target[k], v)
                else:
                    target[k] = v
        elif fd.is_repeated:
            for item in value:
                if fd.type == fd.TYPE_MESSAGE:
                    _set_pb(target.add(), item)
                else:
                    target.append(item)
        elif fd.type == fd.TYPE_MESSAGE:
            target.SetInParent()
            _set_pb(target, value)
        elif fd.type == fd.TYPE_BYTES:
            setattr(msg, key, value if isinstance(value, bytes) else json.dumps(value).encode())
        else:
            setattr(msg, key, value)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_commands(codec: str, commands: list[Mapping[str, Any]]) -> bytes:
    """One client frame: JSON lines (``data`` embedded as JSON) or varint-delimited Protobuf."""
    if codec == "json":
        return b"\n".join(json.dumps(c, separators=(",", ":")).encode() for c in commands)
    out = bytearray()
    for c in commands:
        msg = pb.Command()
        _set_pb(msg, c)
        body = msg.SerializeToString()
        out += _varint(len(body)) + body
    return bytes(out)


def _raw(value: bytes) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def pb_to_dict(msg: Message) -> dict[str, Any]:
    """A Protobuf message as the JSON protocol would show it (bytes fields decoded as JSON)."""
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        if fd.type == fd.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry:
            out[fd.name] = {
                k: pb_to_dict(v) if isinstance(v, Message) else v for k, v in value.items()
            }
        elif fd.is_repeated:
            out[fd.name] = [pb_to_dict(v) if isinstance(v, Message) else v for v in value]
        elif fd.type == fd.TYPE_MESSAGE:
            out[fd.name] = pb_to_dict(value)
        elif fd.type == fd.TYPE_BYTES:
            out[fd.name] = _raw(value)
        else:
            out[fd.name] = value
    return out


def decode_replies(codec: str, frame: bytes) -> list[dict[str, Any]]:
    """Every Reply in one server frame, as dicts."""
    if codec == "json":
        text = frame.decode("utf-8")
        assert text.endswith("\n") and not text.endswith("\n\n"), f"bad JSON framing: {text!r}"
        return [json.loads(line) for line in text[:-1].split("\n")]
    replies = []
    data = memoryview(frame)
    pos = 0
    while pos < len(data):
        n = shift = 0
        while True:
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        reply = pb.Reply.FromString(bytes(data[pos : pos + n]))
        pos += n
        replies.append(pb_to_dict(reply))
    return replies


# -- transport and client -----------------------------------------------------------


class RecordingTransport:
    """A Transport (and writer sink) that records frames and close advice."""

    name = "websocket"
    unidirectional = False
    emulation = False

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.frames: list[bytes] = []
        # The messages of every frame as the writer handed them over (identity kept).
        self.batches: list[list[bytes]] = []
        self.closes: list[Disconnect] = []
        # What buffer_size() reports: raise it to simulate a client that does not read.
        self.buffered = 0
        self.session: ClientSession | None = None

    def write_batch(self, payloads: list[bytes], nbytes: int) -> None:
        assert sum(len(p) for p in payloads) == nbytes
        self.batches.append(list(payloads))
        self.frames.append(b"".join(payloads))

    def buffer_size(self) -> int:
        return self.buffered

    def on_slow(self) -> None:
        assert self.session is not None
        self.session.disconnect(codes.SLOW)

    def close(self, disconnect: Disconnect) -> None:
        self.closes.append(disconnect)


class Client:
    """Drives one ClientSession over a RecordingTransport."""

    def __init__(self, node: Node, codec: str = "json") -> None:
        self.node = node
        self.codec = codec
        self.transport = RecordingTransport(get_codec(codec))
        self.session = ClientSession(node, self.transport)
        self.transport.session = self.session
        self._next_id = 0
        self._decoded = 0
        self._messages: list[dict[str, Any]] = []

    # -- output of the server ---------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every reply, push and ping the server wrote, in order."""
        frames = self.transport.frames
        while self._decoded < len(frames):
            self._messages.extend(decode_replies(self.codec, frames[self._decoded]))
            self._decoded += 1
        return self._messages

    @property
    def closed(self) -> Disconnect | None:
        closes = self.transport.closes
        assert len(closes) <= 1, f"closed more than once: {closes}"
        return closes[0] if closes else None

    def reply(self, cmd_id: int) -> dict[str, Any] | None:
        for m in self.messages:
            if m.get("id") == cmd_id:
                return m
        return None

    def pushes(self, kind: str | None = None, channel: str | None = None) -> list[dict[str, Any]]:
        out = []
        for m in self.messages:
            push = m.get("push")
            if push is None:
                continue
            if kind is not None and kind not in push:
                continue
            if channel is not None and push.get("channel", "") != channel:
                continue
            out.append(push)
        return out

    def publications(self, channel: str) -> list[dict[str, Any]]:
        return [p["pub"] for p in self.pushes("pub", channel)]

    def pings(self) -> int:
        return sum(1 for m in self.messages if m == {})

    # -- input to the server ----------------------------------------------------

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send_raw(self, data: bytes) -> None:
        self.session.handle_frame(data)

    def send(self, *commands: Mapping[str, Any]) -> None:
        """Send the commands in one frame."""
        self.send_raw(encode_commands(self.codec, list(commands)))

    def pong(self) -> None:
        self.send_raw(b"{}" if self.codec == "json" else b"\x00")

    async def call(
        self, method: str, body: Mapping[str, Any] | None = None, timeout: float = 3.0
    ) -> dict[str, Any]:
        """Send one command; wait for its reply (or the connection's end). Returns the reply."""
        cmd_id = self.new_id()
        self.send({"id": cmd_id, method: dict(body or {})})
        await until(
            lambda: self.reply(cmd_id) is not None or self.closed is not None,
            timeout,
            f"reply {cmd_id}",
        )
        reply = self.reply(cmd_id)
        if reply is None:
            raise AssertionError(
                f"{method}: connection closed with {self.closed} instead of a reply"
            )
        return reply

    async def ok(self, method: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Call and return the result object (fails on an error reply)."""
        reply = await self.call(method, body)
        assert "error" not in reply, f"{method} failed: {reply['error']}"
        assert method in reply, f"no {method} result in {reply}"
        return dict(reply[method])

    async def error(self, method: str, body: Mapping[str, Any] | None = None) -> int:
        """Call and return the error code (fails on success); the connection stays open."""
        reply = await self.call(method, body)
        assert "error" in reply, f"{method} succeeded: {reply}"
        assert self.closed is None
        return int(reply["error"]["code"])

    async def disconnected(
        self, method: str | None = None, body: Mapping[str, Any] | None = None
    ) -> int:
        """Optionally send a command; wait for the close; return its code."""
        if method is not None:
            self.send({"id": self.new_id(), method: dict(body or {})})
        await until(lambda: self.closed is not None, 3.0, "disconnect")
        assert self.closed is not None
        return self.closed.code

    async def connect(self, token: str = "", **fields: Any) -> dict[str, Any]:
        body = dict(fields)
        if token:
            body["token"] = token
        return await self.ok("connect", body)

    async def subscribe(self, channel: str, **fields: Any) -> dict[str, Any]:
        return await self.ok("subscribe", {"channel": channel, **fields})


# -- a node on a real socket ---------------------------------------------------------


@dataclass
class ServedNode:
    node: Node
    server: Server
    app: NodeApp

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"


@contextlib.asynccontextmanager
async def serve(
    overrides: Mapping[str, Any] | None = None,
    *,
    node: Node | None = None,
    setup: Callable[[Node, NodeApp], None] | None = None,
) -> AsyncIterator[ServedNode]:
    """Start a node and serve it on a free loopback port in the running loop."""
    if node is None:
        node = make_node(overrides)
    app = NodeApp(node)
    if setup is not None:
        setup(node, app)
    await node.start()
    server = await serve_node(node, "127.0.0.1", 0, app=app)
    try:
        yield ServedNode(node, server, app)
    finally:
        await node.close()
        await server.close(timeout=1.0)
