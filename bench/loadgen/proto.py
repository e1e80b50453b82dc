"""The client side of the Centrifuge protocol v2, as far as the load generator needs it.

rtcore's codecs (``rtcore.protocol``) are the server's half: they decode
commands and encode replies. A client does the opposite, so this module
encodes the ``connect`` + ``subscribe`` commands (JSON lines, or
varint-delimited ``rtcore.protocol.client_pb2.Command`` messages) and decodes
the server's frames into small tuples:

* ``(EV_PING,)``: the server's ping (an empty reply), to be answered with
  :attr:`ClientCodec.pong`;
* ``(EV_REPLY, id, error_code, error_message, sub)``: a reply; ``sub`` is a
  :data:`SubResult` for a subscribe reply, else None;
* ``(EV_PUB, channel, pub)``: a publication push, ``pub`` a :data:`Pub`;
* ``(EV_DISCONNECT, code, reason)``: a disconnect push.

Other pushes (join, leave, ...) are dropped. Publication data is expected to
be JSON with ``"t"`` (CLOCK_MONOTONIC ns at publish) and ``"s"`` (the
publisher's sequence number in the channel), as ``load_control.make_data``
writes; other data gives ``t = s = 0``.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, NamedTuple

from rtcore.frames import OP_BINARY, OP_TEXT
from rtcore.protocol import SUBPROTOCOL_PROTOBUF, client_pb2 as pb
from rtcore.wire.handshake import accept_key


__all__ = [
    "EV_DISCONNECT",
    "EV_PING",
    "EV_PUB",
    "EV_REPLY",
    "FORMATS",
    "ClientCodec",
    "Handshake",
    "Pub",
    "SubResult",
]

FORMATS = ("json", "protobuf")

EV_PING = 0
EV_REPLY = 1
EV_PUB = 2
EV_DISCONNECT = 3


class Pub(NamedTuple):
    """A publication: its stream offset and the ``t`` / ``s`` fields of its data."""

    offset: int
    t: int
    s: int


class SubResult(NamedTuple):
    """What a subscribe reply says about the stream position and recovery."""

    recovered: bool
    was_recovering: bool
    epoch: str
    offset: int
    publications: list[Pub]


def _data_fields(data: Any) -> tuple[int, int]:
    if isinstance(data, dict):
        t, s = data.get("t", 0), data.get("s", 0)
        return (t if isinstance(t, int) else 0), (s if isinstance(s, int) else 0)
    return 0, 0


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


class Handshake:
    """The HTTP upgrade request of one client process, and the check of the response.

    Every connection of a process sends the same ``Sec-WebSocket-Key`` (a
    random one per process): the server treats each request on its own, and
    the expected ``Sec-WebSocket-Accept`` is computed once.
    """

    def __init__(self, host: str, port: int, path: str, subprotocol: str | None) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        proto = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{proto}\r\n"
        ).encode()
        self.accept = accept_key(key)
        self.subprotocol = subprotocol

    def check(self, head: bytes) -> str:
        """``""`` when ``head`` (the response up to the blank line) accepts the upgrade, else why not."""
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0]
        parts = status.split(" ", 2)
        if len(parts) < 2 or parts[1] != "101":
            code = parts[1] if len(parts) > 1 else "?"
            return f"http {code} {parts[2] if len(parts) > 2 else ''}".strip()
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != self.accept:
            return "handshake: wrong Sec-WebSocket-Accept"
        if self.subprotocol and headers.get("sec-websocket-protocol") != self.subprotocol:
            return f"handshake: subprotocol {self.subprotocol} not accepted"
        return ""


class ClientCodec:
    """Commands out and replies in for one wire format (``json`` or ``protobuf``)."""

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.binary = fmt == "protobuf"
        #: WebSocket opcode of the protocol's frames.
        self.opcode = OP_BINARY if self.binary else OP_TEXT
        #: The client's pong: the empty command.
        self.pong = b"\x00" if self.binary else b"{}"
        #: The subprotocol to ask for in the handshake.
        self.subprotocol = SUBPROTOCOL_PROTOBUF if self.binary else None
        self.decode = self._decode_pb if self.binary else self._decode_json

    # -- commands -------------------------------------------------------------------

    def setup(
        self,
        token: str,
        channel: str,
        *,
        recoverable: bool,
        recover_from: tuple[int, str] | None = None,
    ) -> bytes:
        """One frame: ``connect`` (id 1) and ``subscribe`` (id 2), recovering when asked.

        ``recover_from`` is ``(offset, epoch)`` of the last publication seen.
        """
        sub: dict[str, Any] = {"channel": channel}
        if recoverable:
            sub["recoverable"] = True
        if recover_from is not None:
            sub["recover"] = True
            sub["offset"], sub["epoch"] = recover_from
        if not self.binary:
            connect = {"id": 1, "connect": {"token": token, "name": "loadgen"}}
            return (
                json.dumps(connect, separators=(",", ":"))
                + "\n"
                + json.dumps({"id": 2, "subscribe": sub}, separators=(",", ":"))
            ).encode()
        out = bytearray()
        for cmd in (
            pb.Command(id=1, connect=pb.ConnectRequest(token=token, name="loadgen")),
            pb.Command(id=2, subscribe=pb.SubscribeRequest(**sub)),
        ):
            body = cmd.SerializeToString()
            out += _varint(len(body)) + body
        return bytes(out)

    # -- replies ----------------------------------------------------------------------

    @staticmethod
    def _pub_json(pub: dict[str, Any]) -> Pub:
        t, s = _data_fields(pub.get("data"))
        return Pub(int(pub.get("offset", 0)), t, s)

    def _decode_json(self, payload: bytes) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for line in payload.split(b"\n"):
            if not line:
                continue
            if line == b"{}":
                out.append((EV_PING,))
                continue
            obj = json.loads(line)
            push = obj.get("push")
            if push is not None:
                if "pub" in push:
                    out.append((EV_PUB, push.get("channel", ""), self._pub_json(push["pub"])))
                elif "disconnect" in push:
                    d = push["disconnect"]
                    out.append((EV_DISCONNECT, int(d.get("code", 0)), str(d.get("reason", ""))))
                continue
            err = obj.get("error")
            if err:
                code, message = int(err.get("code", 0)), str(err.get("message", ""))
                out.append((EV_REPLY, obj.get("id", 0), code, message, None))
                continue
            sub = obj.get("subscribe")
            result = None
            if sub is not None:
                result = SubResult(
                    bool(sub.get("recovered", False)),
                    bool(sub.get("was_recovering", False)),
                    str(sub.get("epoch", "")),
                    int(sub.get("offset", 0)),
                    [self._pub_json(p) for p in sub.get("publications", ())],
                )
            out.append((EV_REPLY, obj.get("id", 0), 0, "", result))
        return out

    @staticmethod
    def _pub_pb(pub: Any) -> Pub:
        t = s = 0
        if pub.data:
            try:
                t, s = _data_fields(json.loads(pub.data))
            except ValueError:
                pass
        return Pub(pub.offset, t, s)

    def _decode_pb(self, payload: bytes) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        pos, end = 0, len(payload)
        while pos < end:
            n = shift = 0
            while True:
                b = payload[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            if n == 0:
                out.append((EV_PING,))
                continue
            reply = pb.Reply.FromString(payload[pos : pos + n])
            pos += n
            if reply.HasField("push"):
                push = reply.push
                if push.HasField("pub"):
                    out.append((EV_PUB, push.channel, self._pub_pb(push.pub)))
                elif push.HasField("disconnect"):
                    out.append((EV_DISCONNECT, push.disconnect.code, push.disconnect.reason))
                continue
            if reply.HasField("error"):
                out.append((EV_REPLY, reply.id, reply.error.code, reply.error.message, None))
                continue
            result = None
            if reply.HasField("subscribe"):
                sub = reply.subscribe
                result = SubResult(
                    sub.recovered,
                    sub.was_recovering,
                    sub.epoch,
                    sub.offset,
                    [self._pub_pb(p) for p in sub.publications],
                )
            out.append((EV_REPLY, reply.id, 0, "", result))
        return out
