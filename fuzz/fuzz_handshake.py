"""Fuzzing of the WebSocket opening handshake (``rtcore.wire.handshake.accept_websocket``).

The input picks the method, HTTP version, server options (subprotocols, their
order, an origin check, permessage-deflate settings) and header lines; a
valid base set of handshake headers is included unless the input says
otherwise, so that the later checks (subprotocol, extensions) are reached.
``accept_websocket`` may only raise :class:`~rtcore.errors.HandshakeError`
with a 4xx status. An accepted handshake must answer ``101`` with the right
``Sec-WebSocket-Accept``, a subprotocol the client offered and the server
supports, and ``Sec-WebSocket-Extensions`` only when deflate was negotiated.

    python fuzz/fuzz_handshake.py -atheris_runs=1000000
"""

from __future__ import annotations

from fuzzlib import Input, instrumented, main


with instrumented(__name__ == "__main__"):
    from rtcore.errors import HandshakeError
    from rtcore.wire.deflate import DeflateOptions
    from rtcore.wire.handshake import accept_key, accept_websocket
    from rtcore.wire.http import Request

_BASE = [
    ("host", "example.com"),
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
]
_METHODS = ("GET", "GET", "POST", "get", "")
_VERSIONS = ("1.1", "1.1", "1.0", "2.0", "x.y")
_SUBPROTOCOLS = ((), ("centrifuge-json",), ("centrifuge-protobuf", "centrifuge-json"))
_DEFLATE = (
    None,
    DeflateOptions(),
    DeflateOptions(server_no_context_takeover=True, client_max_window_bits=9),
    DeflateOptions(server_max_window_bits=8, client_no_context_takeover=True),
    DeflateOptions(enabled=False),
)


def _origin_allowed(origin: str | None) -> bool:
    return origin is None or origin.endswith(".example.com")


def TestOneInput(data: bytes) -> None:
    inp = Input(data)
    options = inp.byte()
    method = str(inp.pick(_METHODS))
    version = str(inp.pick(_VERSIONS))
    subprotocols = inp.pick(_SUBPROTOCOLS)
    deflate = inp.pick(_DEFLATE)
    headers = [] if options & 1 else list(_BASE)
    for line in inp.rest().split(b"\n"):
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip().lower(), value.strip(" \t")))
    request = Request(method=method, path="/", headers=headers, http_version=version)
    try:
        accepted = accept_websocket(
            request,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            prefer_server_order=bool(options & 2),
            check_origin=_origin_allowed if options & 4 else None,
            deflate=deflate,  # type: ignore[arg-type]
        )
    except HandshakeError as exc:
        assert 400 <= exc.status < 500, exc
        return
    response = accepted.response
    assert response.startswith(b"HTTP/1.1 101 "), response
    key = request.header_values("sec-websocket-key")[0]
    assert b"\r\nSec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n" in response
    offered = request.header_values("sec-websocket-protocol", split=True)
    if accepted.subprotocol is not None:
        assert accepted.subprotocol in offered and accepted.subprotocol in subprotocols
    assert (accepted.deflate is None) == (b"Sec-WebSocket-Extensions" not in response)
    if accepted.deflate is not None:
        assert deflate is not None and deflate.enabled  # type: ignore[attr-defined]


SEEDS = [
    b"\x00\x00\x00\x01\x01sec-websocket-protocol: centrifuge-protobuf, centrifuge-json",
    b"\x04\x00\x00\x02\x02sec-websocket-extensions: permessage-deflate; client_max_window_bits,"
    b" permessage-deflate; server_no_context_takeover; server_max_window_bits=10\n"
    b"origin: https://a.example.com",
    b"\x01\x00\x00\x00\x03host: h\nupgrade: WebSocket, h2c\nconnection: keep-alive, Upgrade\n"
    b'sec-websocket-version: 13\nsec-websocket-key: AAAAAAAAAAAAAAAAAAAAAA==\nsec-websocket-extensions: x; y="z"',
]


if __name__ == "__main__":
    main(TestOneInput, SEEDS)
