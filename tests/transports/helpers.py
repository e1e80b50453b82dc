"""Raw HTTP clients for the HTTP-based transports (aiohttp's streaming client).

* :func:`served`: a node served on a free loopback port with the HTTP
  transports (and, when asked, the unidirectional ones) mounted.
* :class:`LineStream`, :class:`SseStream`, :class:`ProtobufStream`: read one
  streamed response message by message (JSON lines, ``data:`` events,
  varint-delimited Protobuf Replies), each with a timeout; ``None`` at the
  end of the response.
* :class:`Emulated`: one http_stream / SSE session driven by raw requests:
  commands go to ``POST /emulation``, replies come back on the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

# tests/ is on sys.path (pytest's rootdir insertion for packages under it).
from protocol.helpers import (
    SECRET,
    ServedNode,
    connect_token,
    make_node,
    run,
    serve,
    subscribe_token,
    until,
)

from rtcore.protocol import client_pb2 as pb
from rtcore.transports.http_stream import HttpTransportOptions, mount_http_transports
from rtcore.transports.uni import UniTransportOptions, mount_uni_transports


__all__ = [
    "SECRET",
    "BASE",
    "ServedNode",
    "Emulated",
    "LineStream",
    "SseStream",
    "ProtobufStream",
    "connect_token",
    "subscribe_token",
    "make_node",
    "run",
    "served",
    "until",
    "varint",
    "pb_frame",
]

#: Namespace ``chat``: history + recovery, clients may subscribe and publish.
BASE: dict[str, Any] = {
    "client": {"allowed_origins": ["http://allowed.example"]},
    "channel": {
        "namespaces": [
            {
                "name": "chat",
                "history_size": 50,
                "history_ttl": 300,
                "force_recovery": True,
                "presence": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_presence_for_client": True,
            }
        ]
    },
}


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@contextlib.asynccontextmanager
async def served(
    overrides: Mapping[str, Any] | None = None,
    *,
    uni: UniTransportOptions | None = None,
    http: HttpTransportOptions | None = None,
    node: Any = None,
) -> AsyncIterator[ServedNode]:
    """Serve a node with the HTTP transports (``http`` options) and ``uni`` ones when given."""

    def setup(n: Any, app: Any) -> None:
        if http is not None:
            mount_http_transports(app, http)
        if uni is not None:
            mount_uni_transports(app, uni)

    async with serve(_merge(BASE, overrides or {}), node=node, setup=setup) as s:
        yield s


def base_url(s: ServedNode) -> str:
    return f"http://127.0.0.1:{s.port}"


# -- stream readers ----------------------------------------------------------------


class LineStream:
    """JSON lines of a streamed response (http_stream JSON, uni_http_stream)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def raw(self, timeout: float = 3.0) -> bytes:
        return await asyncio.wait_for(self.response.content.readline(), timeout)

    async def next(self, timeout: float = 3.0) -> Any:
        line = await self.raw(timeout)
        if not line:
            return None
        assert line.endswith(b"\n"), line
        return json.loads(line)


class SseStream:
    """Server-Sent Events of a response: each event's ``data`` JSON-decoded."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.preamble: bytes | None = None

    async def next(self, timeout: float = 3.0) -> Any:
        data: list[bytes] = []
        while True:
            line = await asyncio.wait_for(self.response.content.readline(), timeout)
            if not line:
                assert not data, "stream ended inside an event"
                return None
            if self.preamble is None:
                # The server opens the stream with a bare CRLF.
                self.preamble = line
                continue
            line = line.rstrip(b"\r\n")
            if not line:
                if data:
                    return json.loads(b"\n".join(data))
                continue
            field, _, value = line.partition(b":")
            assert field == b"data", f"unexpected SSE field {line!r}"
            data.append(value[1:] if value.startswith(b" ") else value)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_frame(*messages: Any) -> bytes:
    """Varint-delimited Protobuf messages."""
    out = bytearray()
    for msg in messages:
        body = msg.SerializeToString()
        out += varint(len(body)) + body
    return bytes(out)


class ProtobufStream:
    """Varint-delimited Protobuf Replies of a streamed response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 3.0) -> pb.Reply | None:
        async def read() -> pb.Reply | None:
            content = self.response.content
            n = shift = 0
            while True:
                try:
                    b = (await content.readexactly(1))[0]
                except asyncio.IncompleteReadError:
                    return None
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            return pb.Reply.FromString(await content.readexactly(n) if n else b"")

        return await asyncio.wait_for(read(), timeout)


# -- an emulated session -------------------------------------------------------------


class Emulated:
    """An http_stream or SSE session driven with raw HTTP requests (JSON)."""

    def __init__(
        self, http: aiohttp.ClientSession, url: str, transport: str = "http_stream"
    ) -> None:
        self.http = http
        self.url = url
        self.transport = transport
        self.response: aiohttp.ClientResponse | None = None
        self.stream: LineStream | SseStream | None = None
        self.session = ""
        self.node = ""
        self.client = ""
        self._id = 1
        # Messages read while waiting for something else.
        self.backlog: list[Any] = []

    async def open(
        self, connect: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        """Open the stream with a connect command; returns the first message (the connect reply)."""
        frame = json.dumps({"id": 1, "connect": dict(connect or {})})
        if self.transport == "http_stream":
            self.response = await self.http.post(
                f"{self.url}/connection/http_stream",
                data=frame.encode(),
                headers={"Content-Type": "application/json", **(headers or {})},
            )
            self.stream = LineStream(self.response)
        else:
            self.response = await self.http.get(
                f"{self.url}/connection/sse",
                params={"cf_connect": frame},
                headers=dict(headers or {}),
            )
            self.stream = SseStream(self.response)
        assert self.response.status == 200, await self.response.text()
        first = await self.stream.next()
        if first is not None and "connect" in first:
            self.session = first["connect"]["session"]
            self.node = first["connect"]["node"]
            self.client = first["connect"]["client"]
        return first

    async def next(self, timeout: float = 3.0) -> Any:
        if self.backlog:
            return self.backlog.pop(0)
        assert self.stream is not None
        return await self.stream.next(timeout)

    async def emulate(self, data: str, **fields: Any) -> aiohttp.ClientResponse:
        body = {"session": self.session, "node": self.node, "data": data, **fields}
        async with self.http.post(f"{self.url}/emulation", json=body) as r:
            await r.read()
            return r

    async def call(
        self, method: str, body: Mapping[str, Any] | None = None, timeout: float = 3.0
    ) -> Any:
        """Send one command through /emulation and return its reply from the stream."""
        self._id += 1
        cmd_id = self._id
        r = await self.emulate(json.dumps({"id": cmd_id, method: dict(body or {})}))
        assert r.status == 204, r.status
        return await self.wait(lambda m: m.get("id") == cmd_id, timeout)

    async def wait(self, match: Any, timeout: float = 3.0) -> Any:
        """The first message (backlog first) that ``match`` accepts; others are kept."""
        for i, m in enumerate(self.backlog):
            if match(m):
                return self.backlog.pop(i)
        assert self.stream is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            m = await self.stream.next(max(0.01, deadline - loop.time()))
            if m is None:
                raise AssertionError("stream ended while waiting")
            if match(m):
                return m
            self.backlog.append(m)

    async def rest(self, timeout: float = 3.0) -> list[Any]:
        """Every message until the end of the stream."""
        out = list(self.backlog)
        self.backlog.clear()
        assert self.stream is not None
        while True:
            m = await self.stream.next(timeout)
            if m is None:
                return out
            out.append(m)
