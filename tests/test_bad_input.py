"""Bad input on every endpoint: the right status or code, and a good client still works.

One ``rtcore serve`` per module (every endpoint on: WebSocket, HTTP-streaming,
SSE, emulation, the three unidirectional transports, the server API with a
key, metrics, health). Each case sends one kind of bad input on its own
connection and checks what came back: an HTTP status, a WebSocket close code,
or a protocol error code. After each case a good client must still get its
answers: ``/health`` is 200 and a WebSocket client connects, subscribes,
publishes and receives its publication.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from servers import free_port, wait_port

from rtcore.protocol import client_pb2 as pb


API_KEY = "bad-input-api-key"
ORIGIN_OK = "https://good.example"

CONFIG: dict[str, Any] = {
    "client": {
        "allow_anonymous_connect_without_token": True,
        "allowed_origins": [ORIGIN_OK],
        "token": {"hmac_secret_key": "bad-input-tests-secret-0123456789abcdef"},
    },
    "channel": {
        "without_namespace": {
            "allow_subscribe_for_client": True,
            "allow_subscribe_for_anonymous": True,
            "allow_publish_for_client": True,
            "allow_publish_for_anonymous": True,
        },
        "namespaces": [{"name": "locked"}],
    },
    "api": {"key": API_KEY},
    "metrics": {"enabled": True},
    "websocket": {"handshake_timeout": "1s", "message_size_limit": 65536},
    "uni_websocket": {"enabled": True},
    "uni_sse": {"enabled": True},
    "uni_http_stream": {"enabled": True},
    "log": {"level": "error"},
}


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    directory = tmp_path_factory.mktemp("bad-input")
    config = directory / "config.json"
    config.write_text(json.dumps(CONFIG))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not (k.startswith("RTCORE_") and "__" in k)}
    with (directory / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rtcore", "serve", "-c", str(config), "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port("127.0.0.1", port, proc=proc)
        yield port
        assert proc.poll() is None, "the server died"
    finally:
        proc.kill()
        proc.wait(timeout=10)


# -- the wire ------------------------------------------------------------------------------


def recv_all(s: socket.socket, timeout: float = 5.0, until: bytes | None = None) -> bytes:
    """Read until the peer closes (or ``until`` was read, or ``timeout`` of silence)."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if until is not None and until in data:
                break
    except TimeoutError:
        pass
    return data


def http(port: int, raw: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send raw request bytes on a new connection: the status and the body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        data = recv_all(s, timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return int(head.split()[1]), body


def request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """A client frame (masked with zeros unless ``mask`` is false)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    return head + (b"\0\0\0\0" if mask else b"") + payload


def text(message: Any) -> bytes:
    return frame(1, json.dumps(message, separators=(",", ":")).encode())


UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
)


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete frames at the start of ``data``, and the bytes after them."""
    frames = []
    while len(data) >= 2:
        n, offset = data[1] & 0x7F, 2
        if n == 126:
            if len(data) < 4:
                break
            n, offset = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            if len(data) < 10:
                break
            n, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + n:
            break
        frames.append((data[0] & 0x0F, data[offset : offset + n]))
        data = data[offset + n :]
    return frames, data


def websocket(
    port: int,
    sends: list[bytes],
    path: str = "/connection/websocket",
    extra: str = "",
    until_reply: int | None = None,
    timeout: float = 5.0,
) -> tuple[int | None, list[bytes]]:
    """Handshake, send the frames, read the server's frames until its close frame.

    The close frame is answered, as a client does, so the server ends the TCP
    connection at once. Reading also stops at the reply to ``until_reply`` (a
    Protobuf reply counts when it carries that id). Returns the close code
    (None when the server did not close) and the payloads of the data frames.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(UPGRADE.format(path=path, extra=extra).encode() + b"".join(sends))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), data[:200]
        payloads: list[bytes] = []
        while True:
            frames, rest = parse_frames(rest)
            for opcode, payload in frames:
                if opcode == 8:
                    s.sendall(frame(8, payload[:2]))
                    return struct.unpack("!H", payload[:2])[0], payloads
                payloads.append(payload)
                if until_reply is not None and _has_reply(payload, until_reply):
                    return None, payloads
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                return None, payloads
            if not chunk:
                return None, payloads
            rest += chunk


def _has_reply(payload: bytes, command_id: int) -> bool:
    if payload[:1] == b"{":
        return any(m.get("id") == command_id for m in json_lines([payload]))
    return command_id in pb_replies([payload])


def json_lines(payloads: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for p in payloads for line in p.splitlines() if line]


def pb_replies(payloads: list[bytes]) -> dict[int, int]:
    """{command id: error code (0: success)} of varint-delimited Protobuf replies."""
    errors: dict[int, int] = {}
    for payload in payloads:
        pos = 0
        while pos < len(payload):
            n = shift = 0
            while True:
                byte = payload[pos]
                pos += 1
                n |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            reply = pb.Reply.FromString(payload[pos : pos + n])
            pos += n
            if reply.id:
                errors[reply.id] = reply.error.code if reply.HasField("error") else 0
    return errors


def reply_error(payloads: list[bytes], command_id: int) -> int | None:
    """The error code of the JSON reply to ``command_id`` (0: success, None: no reply)."""
    for m in json_lines(payloads):
        if m.get("id") == command_id:
            return int(m["error"]["code"]) if "error" in m else 0
    return None


# -- the good client -------------------------------------------------------------------------


def assert_good_client_works(port: int) -> None:
    status, body = http(port, request("GET", "/health"))
    assert (status, body) == (200, b"{}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            UPGRADE.format(path="/connection/websocket", extra="").encode()
            + text({"id": 1, "connect": {}})
            + text({"id": 2, "subscribe": {"channel": "good"}})
            + text({"id": 3, "publish": {"channel": "good", "data": {"ok": True}}})
        )
        data = recv_all(s, 10, until=b'"pub":{"data":{"ok":true}')
    assert b'"pub":{"data":{"ok":true}' in data, data[-500:]


CONNECT = text({"id": 1, "connect": {}})


# -- HTTP: the parser, routing, and every endpoint's own checks ---------------------------------

JSON = {"Content-Type": "application/json"}
KEY = {"X-API-Key": API_KEY}

HTTP_CASES = [
    # the HTTP/1.1 parser
    ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n", 400),
    ("unknown method", b"FOO /health HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    ("request line too long", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (
        "headers too large",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n",
        431,
    ),
    ("header without colon", b"GET /health HTTP/1.1\r\nHost: x\r\nBad\r\n\r\n", 400),
    ("obsolete line folding", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    (
        "Content-Length and Transfer-Encoding",
        b"POST /api/info HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "two Content-Lengths",
        b"POST /api/info HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        400,
    ),
    (
        "bad chunk size",
        b"POST /api/info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
        400,
    ),
    (
        "body over http.max_body_size",
        request("POST", "/api/info", b"x" * (1 << 20) + b"x", KEY),
        413,
    ),
    ("request not finished in time", b"GET /health HTTP/1.1\r\nHost: x\r\n", 408),
    ("unknown path", request("GET", "/nope"), 404),
    # the WebSocket handshake
    ("upgrade path unknown", UPGRADE.format(path="/nope", extra="").encode(), 404),
    ("websocket without upgrade", request("GET", "/connection/websocket"), 404),
    (
        "websocket version 8",
        UPGRADE.format(path="/connection/websocket", extra="")
        .replace("Version: 13", "Version: 8")
        .encode(),
        426,
    ),
    (
        "websocket key not 16 bytes",
        UPGRADE.format(path="/connection/websocket", extra="")
        .replace("dGhlIHNhbXBsZSBub25jZQ==", "abc")
        .encode(),
        400,
    ),
    (
        "websocket over POST",
        UPGRADE.format(path="/connection/websocket", extra="Content-Length: 0\r\n")
        .replace("GET", "POST")
        .encode(),
        405,
    ),
    (
        "websocket over HTTP/1.0",
        UPGRADE.format(path="/connection/websocket", extra="")
        .replace("HTTP/1.1", "HTTP/1.0")
        .encode(),
        400,
    ),
    (
        "websocket from a foreign origin",
        UPGRADE.format(
            path="/connection/websocket", extra="Origin: https://evil.example\r\n"
        ).encode(),
        403,
    ),
    # HTTP-streaming
    ("http_stream GET", request("GET", "/connection/http_stream"), 405),
    (
        "http_stream text/plain",
        request("POST", "/connection/http_stream", b"{}", {"Content-Type": "text/plain"}),
        415,
    ),
    ("http_stream bad JSON", request("POST", "/connection/http_stream", b"{x", JSON), 400),
    (
        "http_stream first command not connect",
        request("POST", "/connection/http_stream", b'{"id":1,"subscribe":{"channel":"a"}}', JSON),
        400,
    ),
    (
        "http_stream connect frame too large",
        request(
            "POST",
            "/connection/http_stream",
            b'{"id":1,"connect":{"data":"' + b"x" * 70000 + b'"}}',
            JSON,
        ),
        413,
    ),
    (
        "http_stream foreign origin",
        request(
            "POST",
            "/connection/http_stream",
            b'{"id":1,"connect":{}}',
            {**JSON, "Origin": "https://evil.example"},
        ),
        403,
    ),
    # SSE
    ("sse without cf_connect", request("GET", "/connection/sse"), 400),
    ("sse bad cf_connect", request("GET", "/connection/sse?cf_connect=" + quote("{x")), 400),
    ("sse PUT", request("PUT", "/connection/sse"), 405),
    (
        "sse Protobuf body",
        request("POST", "/connection/sse", b"{}", {"Content-Type": "application/octet-stream"}),
        415,
    ),
    # emulation
    ("emulation GET", request("GET", "/emulation"), 405),
    ("emulation empty body", request("POST", "/emulation", b"", JSON), 400),
    ("emulation bad JSON", request("POST", "/emulation", b"{x", JSON), 400),
    (
        "emulation data not a string",
        request("POST", "/emulation", b'{"node":"n","session":"s","data":{"id":1}}', JSON),
        400,
    ),
    (
        "emulation body too large",
        request(
            "POST", "/emulation", b'{"node":"n","session":"s","data":"' + b"x" * 70000 + b'"}', JSON
        ),
        413,
    ),
    (
        "emulation text/plain",
        request("POST", "/emulation", b"{}", {"Content-Type": "text/plain"}),
        415,
    ),
    # the unidirectional HTTP transports
    (
        "uni_sse bad cf_connect",
        request("GET", "/connection/uni_sse?cf_connect=" + quote("{x")),
        400,
    ),
    ("uni_sse PUT", request("PUT", "/connection/uni_sse"), 405),
    ("uni_http_stream GET", request("GET", "/connection/uni_http_stream"), 405),
    ("uni_http_stream bad JSON", request("POST", "/connection/uni_http_stream", b"{x", JSON), 400),
    (
        "uni_http_stream connect too large",
        request("POST", "/connection/uni_http_stream", b'{"data":"' + b"x" * 70000 + b'"}', JSON),
        413,
    ),
    # the server API
    ("api without key", request("POST", "/api/info", b"{}"), 401),
    ("api with a wrong key", request("POST", "/api/info", b"{}", {"X-API-Key": "nope"}), 401),
    ("api GET", request("GET", "/api/info", b"", KEY), 405),
    ("api unknown method", request("POST", "/api/nope", b"{}", KEY), 404),
    ("api bad JSON", request("POST", "/api/publish", b"{x}", KEY), 400),
    ("api batch commands not a list", request("POST", "/api/batch", b'{"commands": 12}', KEY), 400),
    # metrics and health
    ("metrics POST", request("POST", "/metrics"), 405),
]


@pytest.mark.parametrize(("raw", "status"), [pytest.param(r, s, id=i) for i, r, s in HTTP_CASES])
def test_http_bad_input(port: int, raw: bytes, status: int) -> None:
    assert http(port, raw)[0] == status
    assert_good_client_works(port)


def test_api_error_in_the_body_and_good_requests_answered(port: int) -> None:
    status, body = http(port, request("POST", "/api/publish", b'{"data": 1}', KEY))
    assert status == 200
    assert json.loads(body)["error"]["code"] == 107
    status, body = http(port, request("GET", "/metrics"))
    assert status == 200 and b"rtcore_build_info" in body
    assert_good_client_works(port)


def test_pipelined_requests_after_an_error_are_not_answered(port: int) -> None:
    """A request smuggled behind a malformed one is never processed."""
    raw = (
        b"POST /api/info HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"
        + request("POST", "/api/publish", b'{"channel":"good","data":1}', KEY)
    )
    status, body = http(port, raw)
    assert status == 400
    assert b"HTTP/1.1 200" not in body
    assert_good_client_works(port)


# -- WebSocket frames ----------------------------------------------------------------------------

FRAME_CASES = [
    ("unmasked frame", [frame(1, b"x", mask=False)], 1002),
    ("reserved bit", [frame(1, b"x", rsv=2)], 1002),
    ("reserved opcode", [frame(3, b"x")], 1002),
    ("fragmented ping", [frame(9, b"x", fin=False)], 1002),
    ("ping over 125 bytes", [frame(9, b"x" * 126)], 1002),
    ("continuation without a start", [frame(0, b"x")], 1002),
    ("new message inside a fragmented one", [frame(1, b"a", fin=False), frame(1, b"b")], 1002),
    ("invalid UTF-8 text", [frame(1, b"\xff\xfe")], 1007),
    ("message over the size limit", [frame(2, b"x" * 70000)], 1009),
    (
        "fragments over the size limit",
        [frame(2, b"x" * 40000, fin=False), frame(0, b"x" * 40000)],
        1009,
    ),
    ("close code 999", [frame(8, struct.pack("!H", 999))], 1002),
    ("close payload of one byte", [frame(8, b"x")], 1002),
    ("close reason not UTF-8", [frame(8, struct.pack("!H", 1000) + b"\xff")], 1007),
    ("frames after connect: bad UTF-8", [CONNECT, frame(1, b"\xc0")], 1007),
]


@pytest.mark.parametrize(("sends", "code"), [pytest.param(f, c, id=i) for i, f, c in FRAME_CASES])
def test_websocket_bad_frames(port: int, sends: list[bytes], code: int) -> None:
    assert websocket(port, sends)[0] == code
    assert_good_client_works(port)


def test_websocket_close_echoed_and_ping_answered(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            UPGRADE.format(path="/connection/websocket", extra="").encode()
            + frame(9, b"hi")
            + frame(8, struct.pack("!H", 4000) + b"bye")
        )
        frames, _ = parse_frames(recv_all(s).partition(b"\r\n\r\n")[2])
    assert frames == [(10, b"hi"), (8, struct.pack("!H", 4000))]
    assert_good_client_works(port)


# -- Centrifuge commands ------------------------------------------------------------------------

PB = "Sec-WebSocket-Protocol: centrifuge-protobuf\r\n"


def pb_frame(*commands: pb.Command) -> bytes:
    out = b""
    for command in commands:
        data = command.SerializeToString()
        n = len(data)
        varint = b""
        while True:
            byte = n & 0x7F
            n >>= 7
            varint += bytes([byte | (0x80 if n else 0)])
            if not n:
                break
        out += varint + data
    return frame(2, out)


PB_CONNECT = pb_frame(pb.Command(id=1, connect=pb.ConnectRequest()))

# (id, frames, extra handshake headers, close code or None, (command id, error code) or None)
COMMAND_CASES: list[tuple[str, list[bytes], str, int | None, tuple[int, int] | None]] = [
    ("not JSON", [frame(1, b"{nope")], "", 3501, None),
    ("JSON array", [frame(1, b"[1,2]")], "", 3501, None),
    ("JSON nested 60,000 deep", [frame(1, b"[" * 60000)], "", 3501, None),
    ("command without id", [text({"connect": {}})], "", 3501, None),
    ("id not a number", [text({"id": "one", "connect": {}})], "", 3501, None),
    ("id past 64 bits", [text({"id": 10**30, "connect": {}})], "", 3501, None),
    ("first command not connect", [text({"id": 1, "subscribe": {"channel": "a"}})], "", 3501, None),
    ("connect twice", [CONNECT, text({"id": 2, "connect": {}})], "", 3501, None),
    ("command without method", [CONNECT, text({"id": 2})], "", 3501, None),
    (
        "two methods in one command",
        [
            CONNECT,
            text({"id": 2, "subscribe": {"channel": "a"}, "publish": {"channel": "a", "data": 1}}),
        ],
        "",
        3501,
        None,
    ),
    ("unknown method", [CONNECT, text({"id": 2, "frobnicate": {}})], "", 3501, None),
    (
        "more commands than max_commands_in_frame",
        [
            CONNECT,
            frame(
                1,
                b"\n".join(
                    b'{"id":%d,"presence_stats":{"channel":"a"}}' % (i + 2) for i in range(300)
                ),
            ),
        ],
        "",
        3501,
        None,
    ),
    ("malformed token", [text({"id": 1, "connect": {"token": "x.y.z"}})], "", 3500, None),
    (
        "channel name too long",
        [CONNECT, text({"id": 2, "subscribe": {"channel": "a" * 300}})],
        "",
        None,
        (2, 107),
    ),
    (
        "unknown namespace",
        [CONNECT, text({"id": 2, "subscribe": {"channel": "nope:a"}})],
        "",
        None,
        (2, 102),
    ),
    (
        "namespace without permission",
        [CONNECT, text({"id": 2, "subscribe": {"channel": "locked:a"}})],
        "",
        None,
        (2, 103),
    ),
    (
        "private channel without token",
        [CONNECT, text({"id": 2, "subscribe": {"channel": "$a"}})],
        "",
        None,
        (2, 103),
    ),
    (
        "history without history",
        [CONNECT, text({"id": 2, "history": {"channel": "a"}})],
        "",
        None,
        (2, 108),
    ),
    ("Protobuf garbage", [frame(2, b"\xff\xff\xff\xff\xff\x01")], PB, 3501, None),
    ("Protobuf length past the frame", [frame(2, b"\x10\x08\x01")], PB, 3501, None),
    ("Protobuf text frame", [frame(1, b"hello")], PB, 3501, None),
    (
        "Protobuf subscribe first",
        [pb_frame(pb.Command(id=1, subscribe=pb.SubscribeRequest(channel="a")))],
        PB,
        3501,
        None,
    ),
    (
        "Protobuf channel name too long",
        [PB_CONNECT, pb_frame(pb.Command(id=2, subscribe=pb.SubscribeRequest(channel="a" * 300)))],
        PB,
        None,
        (2, 107),
    ),
]


@pytest.mark.parametrize(
    ("sends", "extra", "close", "error"), [pytest.param(*c[1:], id=c[0]) for c in COMMAND_CASES]
)
def test_bad_commands(
    port: int, sends: list[bytes], extra: str, close: int | None, error: tuple[int, int] | None
) -> None:
    code, payloads = websocket(
        port, sends, extra=extra, until_reply=error[0] if error is not None else None
    )
    if error is not None:
        got = pb_replies(payloads) if extra == PB else {error[0]: reply_error(payloads, error[0])}
        assert got.get(error[0]) == error[1], payloads
    assert code == close
    assert_good_client_works(port)


# -- emulation against a live stream -------------------------------------------------------------


def test_emulation_with_commands_that_do_not_decode_ends_only_that_session(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stream:
        stream.sendall(request("POST", "/connection/http_stream", b'{"id":1,"connect":{}}', JSON))
        head = recv_all(stream, 10, until=b'"session"')
        connect = json.loads(head[head.index(b'{"id":1') :].split(b"\n")[0])["connect"]
        envelope = {"node": connect["node"], "session": connect["session"], "data": "{nope"}
        status, _ = http(port, request("POST", "/emulation", json.dumps(envelope).encode(), JSON))
        assert status == 204
        rest = recv_all(stream, 10, until=b"3501")
    assert b'"disconnect":{"code":3501' in rest, rest[-300:]
    assert_good_client_works(port)


def test_emulation_for_a_session_that_is_gone_is_accepted_and_dropped(port: int) -> None:
    envelope = {"node": "", "session": "no-such-session", "data": '{"id":2,"presence":{}}'}
    envelope["node"] = _node_name(port)
    status, _ = http(port, request("POST", "/emulation", json.dumps(envelope).encode(), JSON))
    assert status == 204
    assert_good_client_works(port)


def _node_name(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stream:
        stream.sendall(request("POST", "/connection/http_stream", b'{"id":1,"connect":{}}', JSON))
        head = recv_all(stream, 10, until=b'"node"')
    return str(json.loads(head[head.index(b'{"id":1') :].split(b"\n")[0])["connect"]["node"])


# -- unidirectional WebSocket ------------------------------------------------------------------------

UNI_CASES = [
    ("not JSON", [frame(1, b"{x")], 3501),
    ("binary connect", [frame(2, b"\x00")], 3501),
    ("connect request of the wrong shape", [frame(1, b"[1]")], 3501),
    ("message over the size limit", [frame(1, b"x" * 70000)], 1009),
    ("unmasked frame", [frame(1, b"{}", mask=False)], 1002),
]


@pytest.mark.parametrize(("sends", "code"), [pytest.param(s, c, id=i) for i, s, c in UNI_CASES])
def test_uni_websocket_bad_input(port: int, sends: list[bytes], code: int) -> None:
    close, payloads = websocket(port, sends, path="/connection/uni_websocket")
    assert close == code
    if code >= 3000:
        # The disconnect comes as a push before the close frame too.
        assert json_lines(payloads)[-1]["disconnect"]["code"] == code
    assert_good_client_works(port)


def test_slow_handshake_does_not_hold_others(port: int) -> None:
    """A client that sends half a handshake gets 408; others connect meanwhile."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        slow.sendall(b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\n")
        assert_good_client_works(port)
        began = time.monotonic()
        data = recv_all(slow, 10)
    assert data.startswith(b"HTTP/1.1 408 "), (data[:100], time.monotonic() - began)
    assert_good_client_works(port)
