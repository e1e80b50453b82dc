"""Fuzzing of the HTTP/1.1 request parser (``rtcore.wire.http.HttpParser``).

The input is a byte stream fed in pieces, with limits taken from the input.
``feed_data`` may only raise :class:`~rtcore.errors.HttpError` (with a 4xx/5xx
status), and any chunking must give the same requests and the same error as
feeding everything at once (the parser's documented guarantee). Every parsed
:class:`~rtcore.wire.http.Request` is then read the way the routes read it:
``decoded_path`` and ``query_params`` may only raise ``HttpError``.

    python fuzz/fuzz_http.py -atheris_runs=1000000
"""

from __future__ import annotations

from typing import Any

from fuzzlib import Input, instrumented, main


with instrumented(__name__ == "__main__"):
    from rtcore.errors import HttpError
    from rtcore.wire.http import HttpParser, Request

_HEADER_LIMITS = (16384, 64, 200)
_BODY_LIMITS = (1 << 20, 0, 10)
_HEADER_COUNTS = (100, 1, 3)


def _read(request: Request) -> None:
    request.header("host")
    request.header_values("connection", split=True)
    for name in ("decoded_path", "query_params"):
        try:
            value = getattr(request, name)
            if callable(value):
                value()
        except HttpError as exc:
            assert exc.status == 400, exc


def _run(pieces: list[bytes], limits: tuple[int, int, int]) -> tuple[list[Any], Any, Any]:
    parser = HttpParser(max_header_size=limits[0], max_body_size=limits[1], max_headers=limits[2])
    requests: list[Request] = []
    error = None
    for piece in pieces:
        try:
            requests.extend(parser.feed_data(piece))
        except HttpError as exc:
            assert 400 <= exc.status <= 505, exc
            error = (exc.status, exc.message)
            break
        parser.data_to_send()
        if parser.upgraded:
            break
    trailing = parser.trailing_data if parser.upgraded else None
    return requests, error, trailing


def outcome(stream: bytes, cut: int, max_headers: int) -> tuple[int, int]:
    """Error statuses of ``stream`` fed whole and fed cut at ``cut`` (0: no error)."""
    statuses = []
    for pieces in ([stream], [stream[:cut], stream[cut:]]):
        error = _run(pieces, (16384, 1 << 20, max_headers))[1]
        statuses.append(0 if error is None else error[0])
    return statuses[0], statuses[1]


#: Found by this harness, now fixed (docs/fuzzing.md): a header section with
#: more fields than max_headers and a malformed field after them failed with
#: 400 when it arrived whole and with 431 when cut inside the malformed line
#: (the count followed llhttp's callbacks, whose timing depends on where the
#: input ends). Streams and max_headers; tests/test_fuzz_smoke.py cuts each
#: at every position.
FINDINGS = [(b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nbad\r\n\r\n", 1)]


def TestOneInput(data: bytes) -> None:
    inp = Input(data)
    limits = (
        _HEADER_LIMITS[inp.byte() % 3],
        _BODY_LIMITS[inp.byte() % 3],
        _HEADER_COUNTS[inp.byte() % 3],
    )
    stream = inp.rest()
    pieces = Input(stream[-8:]).split(stream)
    whole = _run([stream], limits)
    split = _run(pieces, limits)
    # The same error status (the message may name the fault differently when
    # a request line is cut before its end); the same requests when there is
    # no error (on an error the requests completed earlier in the same
    # feed_data call are dropped, so they depend on the chunking).
    assert (whole[1] is None) == (split[1] is None), (whole, split)
    if whole[1] is not None:
        assert whole[1][0] == split[1][0], (whole, split)
    elif whole[2] is None and split[2] is None:
        assert whole[0] == split[0], (whole, split)
    else:
        # After an upgrade the bytes that follow belong to the new protocol;
        # the split run may have stopped feeding before all of them arrived.
        assert whole[0] == split[0], (whole, split)
        assert whole[2] is not None and split[2] is not None
        assert whole[2].startswith(split[2]), (whole[2], split[2])
    for request in whole[0]:
        _read(request)


SEEDS = [
    b"\x00\x00\x00GET /connection/websocket?cf_protocol=json HTTP/1.1\r\nHost: a\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n\x81\x80",
    b"\x00\x00\x00POST /api/publish HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\x00\x00\x00POST /emulation HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Expect: 100-continue\r\n\r\n5;x=y\r\nhello\r\n0\r\nTrailer: v\r\n\r\n",
    b"\x00\x00\x00GET /a%20b?x=1&y=%e2%82%ac+z HTTP/1.0\r\n\r\n",
]


if __name__ == "__main__":
    main(TestOneInput, SEEDS)
