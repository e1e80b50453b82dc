"""HTTP/1.1 request parsing and response rendering."""

from __future__ import annotations

import random

import pytest

from rtcore.errors import HttpError
from rtcore.wire.http import (
    CONTINUE_RESPONSE,
    HttpParser,
    Request,
    error_response,
    render_response,
)


def feed_in_chunks(
    parser: HttpParser, data: bytes, sizes: list[int] | int
) -> tuple[list[Request], bytes]:
    """Feed ``data`` in pieces; return the requests and the bytes not fed
    (after an upgrade) plus the parser's trailing data."""
    requests: list[Request] = []
    pos = 0
    i = 0
    while pos < len(data):
        size = sizes if isinstance(sizes, int) else sizes[i % len(sizes)]
        i += 1
        requests += parser.feed_data(data[pos : pos + size])
        pos += size
        if parser.upgraded:
            return requests, parser.trailing_data + data[pos:]
    return requests, b""


def parse_one(data: bytes, **limits: int) -> Request:
    requests = HttpParser(**limits).feed_data(data)
    assert len(requests) == 1
    return requests[0]


def parse_error(data: bytes, chunk: int | None = None, **limits: int) -> HttpError:
    parser = HttpParser(**limits)
    with pytest.raises(HttpError) as info:
        feed_in_chunks(parser, data, chunk or len(data))
    return info.value


CHUNKINGS = [1, 2, 3, 7, 64, 1 << 20, [1, 3, 7, 2, 50]]
CHUNK_IDS = ["1", "2", "3", "7", "64", "all", "mixed"]

PIPELINE = (
    b"\r\n"
    b"GET /chat/room%201?user=al%C3%AFce&x=1&x=2&flag HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"X-Multi: a\r\n"
    b"x-multi: b, c\r\n"
    b"\r\n"
    b"POST /api HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 13\r\n"
    b"\r\n"
    b'{"hello": 1}\n'
    b"PUT /upload HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"5;name=value\r\nhello\r\n"
    b"7\r\n, world\r\n"
    b"0\r\n"
    b"X-Checksum: 1234\r\n"
    b"\r\n"
    b"GET / HTTP/1.0\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
    b"OPTIONS * HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"GET /ignored HTTP/1.1\r\n"
)


class TestRequestParsing:
    @pytest.mark.parametrize("chunks", CHUNKINGS, ids=CHUNK_IDS)
    def test_pipeline_in_any_chunking(self, chunks: list[int] | int) -> None:
        parser = HttpParser()
        requests, rest = feed_in_chunks(parser, PIPELINE, chunks)
        assert rest == b""
        assert [(r.method, r.path, r.body, r.keep_alive) for r in requests] == [
            ("GET", "/chat/room%201", b"", True),
            ("POST", "/api", b'{"hello": 1}\n', True),
            ("PUT", "/upload", b"hello, world", True),
            ("GET", "/", b"", True),
            ("OPTIONS", "*", b"", False),
        ]
        first = requests[0]
        assert first.query == "user=al%C3%AFce&x=1&x=2&flag"
        assert first.headers == [
            ("host", "example.com"),
            ("x-multi", "a"),
            ("x-multi", "b, c"),
        ]
        assert first.http_version == "1.1"
        assert first.upgrade is False
        # Trailer fields are dropped.
        assert requests[2].headers == [
            ("host", "example.com"),
            ("transfer-encoding", "chunked"),
        ]
        assert requests[3].http_version == "1.0"
        # After "Connection: close" later bytes are ignored.
        assert parser.feed_data(b"Host: x\r\n\r\n") == []

    def test_random_chunkings_agree(self) -> None:
        expected = HttpParser().feed_data(PIPELINE)
        rng = random.Random(1234)
        for _ in range(50):
            sizes = [rng.randint(1, 40) for _ in range(20)]
            requests, _ = feed_in_chunks(HttpParser(), PIPELINE, sizes)
            assert requests == expected

    def test_request_fields(self) -> None:
        request = parse_one(
            b"GET /a%2Fb/%E2%82%AC?q=a+b&q=%26&empty=&flag HTTP/1.1\r\n"
            b"Host: example.com:8000\r\n"
            b"Connection: keep-alive,  Upgrade ,\r\n"
            b"Connection: close\r\n"
            b'X-Quoted: "a, b", c\r\n'
            b"X-Spaces:   padded value  \r\n"
            b"X-Latin: caf\xe9\r\n"
            b"\r\n"
        )
        assert request.path == "/a%2Fb/%E2%82%AC"
        assert request.decoded_path == "/a/b/\u20ac"
        assert request.query_params() == {"q": ["a b", "&"], "empty": [""], "flag": [""]}
        assert request.header("HOST") == "example.com:8000"
        assert request.header("connection") == "keep-alive,  Upgrade ,"
        assert request.header("missing") is None
        assert request.header_values("Connection") == ["keep-alive,  Upgrade ,", "close"]
        assert request.header_values("connection", split=True) == ["keep-alive", "Upgrade", "close"]
        assert request.header_values("x-quoted", split=True) == ['"a, b"', "c"]
        assert request.header_values("missing", split=True) == []
        assert request.header("x-spaces") == "padded value"
        assert request.header("x-latin") == "caf\xe9"
        assert request.keep_alive is False

    @pytest.mark.parametrize(
        ("target", "path", "query"),
        [
            (b"/", "/", ""),
            (b"/a?", "/a", ""),
            (b"/a?b?c", "/a", "b?c"),
            (b"/a#frag", "/a", ""),
            (b"http://example.com/x/y?z=1", "/x/y", "z=1"),
            (b"http://example.com", "/", ""),
            (b"http://example.com?z=1", "/", "z=1"),
            (b"*", "*", ""),
        ],
    )
    def test_request_targets(self, target: bytes, path: str, query: str) -> None:
        request = parse_one(b"OPTIONS " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        assert (request.path, request.query) == (path, query)

    def test_connect_authority_form(self) -> None:
        parser = HttpParser()
        [request] = parser.feed_data(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n"
        )
        assert request.path == "example.com:443"
        assert request.upgrade is True
        assert parser.upgraded is True

    @pytest.mark.parametrize(
        ("path", "query"),
        [("/%zz", ""), ("/%4", ""), ("/", "a=%"), ("/", "a=%G1")],
    )
    def test_bad_percent_escapes(self, path: str, query: str) -> None:
        request = Request("GET", path, query)
        with pytest.raises(HttpError) as info:
            if path != "/":
                _ = request.decoded_path
            else:
                request.query_params()
        assert info.value.status == 400
        assert "malformed percent-escape" in info.value.message

    def test_non_utf8_escapes(self) -> None:
        request = Request("GET", "/%ff", "a=%ff")
        with pytest.raises(HttpError, match="not percent-encoded UTF-8"):
            _ = request.decoded_path
        with pytest.raises(HttpError, match="not percent-encoded UTF-8"):
            request.query_params()

    def test_http10_defaults_to_close(self) -> None:
        parser = HttpParser()
        [request] = parser.feed_data(b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n")
        assert request.keep_alive is False
        assert request.http_version == "1.0"

    def test_leading_empty_lines_are_ignored(self) -> None:
        request = parse_one(b"\r\n\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert request.path == "/"

    def test_empty_input(self) -> None:
        parser = HttpParser()
        assert parser.feed_data(b"") == []
        assert parser.feed_data(memoryview(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"))[0].path == "/"

    def test_chunked_body_with_extensions_and_trailers(self) -> None:
        request = parse_one(
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'A;a=1;b="x y"\r\n0123456789\r\n'
            b"1\r\n!\r\n"
            b"0;last\r\nT1: a\r\nT2: b\r\n\r\n"
        )
        assert request.body == b"0123456789!"


class TestUpgrade:
    REQUEST = (
        b"GET /connection/websocket HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"\r\n"
    )
    FRAMES = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58" * 3

    @pytest.mark.parametrize("chunks", CHUNKINGS, ids=CHUNK_IDS)
    def test_stops_after_upgrade_with_trailing_frames(self, chunks: list[int] | int) -> None:
        parser = HttpParser()
        requests, rest = feed_in_chunks(parser, self.REQUEST + self.FRAMES, chunks)
        assert parser.upgraded is True
        assert rest == self.FRAMES
        [request] = requests
        assert request.upgrade is True
        assert request.path == "/connection/websocket"

    def test_trailing_data_is_exact(self) -> None:
        parser = HttpParser()
        assert parser.trailing_data == b""
        assert len(parser.feed_data(self.REQUEST + self.FRAMES)) == 1
        assert parser.trailing_data == self.FRAMES

    def test_feeding_after_upgrade_is_an_error(self) -> None:
        parser = HttpParser()
        parser.feed_data(self.REQUEST)
        assert parser.upgraded
        with pytest.raises(RuntimeError, match="upgraded"):
            parser.feed_data(b"\x81\x00")

    def test_upgrade_without_connection_upgrade_is_a_plain_request(self) -> None:
        parser = HttpParser()
        data = self.REQUEST.replace(b"Connection: Upgrade\r\n", b"")
        [request] = parser.feed_data(data)
        assert request.upgrade is False
        assert parser.upgraded is False

    @pytest.mark.parametrize(
        "framing", [b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n"]
    )
    def test_upgrade_with_a_body_is_rejected(self, framing: bytes) -> None:
        data = self.REQUEST[:-2] + framing + b"\r\nabc"
        error = parse_error(data)
        assert (error.status, error.message) == (400, "an upgrade request must not have a body")


class TestErrors:
    @pytest.mark.parametrize(
        ("data", "status", "message"),
        [
            (b"GET / HTTP/1.1\nHost: h\n\n", 400, "it must end with CRLF"),
            (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "malformed request line"),
            (b"GET / http/1.1\r\nHost: h\r\n\r\n", 400, "malformed request line"),
            (b"GET /\r\n\r\n", 400, "malformed request line"),
            (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400, "malformed request line"),
            (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400, "Invalid header token"),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",
                400,
                "malformed HTTP request",
            ),
            (b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400, "malformed HTTP request"),
            (b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400, "malformed HTTP request"),
            (b"GET /a\x7fb HTTP/1.1\r\nHost: h\r\n\r\n", 400, "malformed request line"),
            (b"GET a HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid request target"),
            (b"GET / HTTP/1.1\r\n\r\n", 400, "missing Host header"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "multiple Host headers"),
            (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, "HTTP/2.0 is not supported"),
            (b"GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505, "HTTP/0.9 is not supported"),
            (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505, "HTTP/1.2 is not supported"),
            (b"BREW / HTTP/1.1\r\nHost: h\r\n\r\n", 501, "method 'BREW' is not implemented"),
            (b"get / HTTP/1.1\r\nHost: h\r\n\r\n", 501, "method 'get' is not implemented"),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
                400,
                "chunked must be the final transfer coding",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                400,
                "Transfer-Encoding",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
                "transfer coding 'gzip' is not supported",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Length: 3\r\n\r\n",
                400,
                "Content-Length",
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                400,
                "Transfer-Encoding is not allowed in an HTTP/1.0 request",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
                "Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n",
                400,
                "Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                400,
                "malformed HTTP request",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
                400,
                "malformed HTTP request",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx",
                417,
                "unsupported expectation 'teapot'",
            ),
        ],
    )
    @pytest.mark.parametrize("chunk", [1, 5, None], ids=["1", "5", "all"])
    def test_rejections_in_any_chunking(
        self, data: bytes, status: int, message: str, chunk: int | None
    ) -> None:
        error = parse_error(data, chunk)
        assert error.status == status
        assert message in error.message

    @pytest.mark.parametrize(
        "garbage",
        [
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
            b"\x00\x00\x00\x10\x01",  # a binary protocol
            b"SSH-2.0-OpenSSH_9.6 \x01",
            b"GET /\x00",
            b"GET / HTTP/1.1\x00",
        ],
    )
    def test_non_http_is_rejected_before_a_line_ends(self, garbage: bytes) -> None:
        parser = HttpParser()
        with pytest.raises(HttpError) as info:
            parser.feed_data(garbage)
        assert info.value.status == 400

    def test_feeding_after_an_error(self) -> None:
        parser = HttpParser()
        with pytest.raises(HttpError):
            parser.feed_data(b"GET / HTTP/9.9\r\n")
        with pytest.raises(RuntimeError, match="already failed"):
            parser.feed_data(b"GET / HTTP/1.1\r\n")

    def test_error_drops_earlier_requests_of_the_same_call(self) -> None:
        parser = HttpParser()
        with pytest.raises(HttpError):
            parser.feed_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/3.0\r\n")


class TestLimits:
    @staticmethod
    def head_of_size(size: int) -> bytes:
        base = b"GET / HTTP/1.1\r\nHost: h\r\nX: \r\n\r\n"
        return base.replace(b"X: ", b"X: " + b"a" * (size - len(base)))

    @pytest.mark.parametrize("chunk", [1, 100, None], ids=["1", "100", "all"])
    def test_header_section_limit_is_exact(self, chunk: int | None) -> None:
        head = self.head_of_size(1000)
        assert len(head) == 1000
        requests, _ = feed_in_chunks(HttpParser(max_header_size=1000), head, chunk or 1000)
        assert len(requests) == 1
        error = parse_error(self.head_of_size(1001), chunk, max_header_size=1000)
        assert error.status == 431
        assert "1000" in error.message

    def test_header_limit_applies_per_request(self) -> None:
        head = self.head_of_size(1000)
        requests, _ = feed_in_chunks(HttpParser(max_header_size=1000), head * 5, 7)
        assert len(requests) == 5

    def test_endless_header_is_stopped_at_the_limit(self) -> None:
        parser = HttpParser(max_header_size=1000)
        parser.feed_data(b"GET / HTTP/1.1\r\nX-Long: ")
        with pytest.raises(HttpError) as info:
            for _ in range(100):
                parser.feed_data(b"a" * 100)
        assert info.value.status == 431

    @pytest.mark.parametrize("chunk", [1, None], ids=["1", "all"])
    def test_long_request_line_is_414(self, chunk: int | None) -> None:
        data = b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
        error = parse_error(data, chunk, max_header_size=1000)
        assert error.status == 414

    def test_long_method_is_400(self) -> None:
        error = parse_error(b"A" * 2000, None, max_header_size=1000)
        assert (error.status, error.message) == (400, "malformed request line: method too long")

    @pytest.mark.parametrize("chunk", [1, None], ids=["1", "all"])
    def test_header_count_limit(self, chunk: int | None) -> None:
        fields = b"".join(b"X-%d: v\r\n" % i for i in range(9))
        data = b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n"
        requests, _ = feed_in_chunks(HttpParser(max_headers=10), data, chunk or len(data))
        assert len(requests[0].headers) == 10
        data = data.replace(b"\r\n\r\n", b"\r\nX-Last: v\r\n\r\n")
        error = parse_error(data, chunk, max_headers=10)
        assert (error.status, error.message) == (431, "too many header fields (limit 10)")

    def test_trailer_count_limit(self) -> None:
        trailers = b"".join(b"T-%d: v\r\n" % i for i in range(3))
        head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        data = head + b"0\r\n" + trailers + b"\r\n"
        error = parse_error(data, None, max_headers=2)
        assert (error.status, error.message) == (431, "too many trailer fields (limit 2)")

    # The field count against a malformed field: the first violation in byte
    # order decides, whatever the chunking (found by fuzz/fuzz_http.py: a cut
    # inside the malformed line made llhttp report the field before it early).
    COUNT_CASES = [
        # A field past the limit, then a malformed one: 431.
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nbad\r\n\r\n",
            1,
            (431, "too many header fields (limit 1)"),
        ),
        # A malformed field within the limit: 400.
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nbad\r\nX: y\r\nZ: w\r\n\r\n",
            2,
            (400, "malformed HTTP request: Invalid header token"),
        ),
        # The field past the limit is itself malformed: 400.
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nb@d\r\nZ: w\r\n\r\n",
            2,
            (400, "malformed HTTP request: Invalid header token"),
        ),
        # Only well-formed fields, one too many: 431.
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nZ: w\r\n\r\n",
            2,
            (431, "too many header fields (limit 2)"),
        ),
        # The same in a chunked body's trailers.
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\nT: 1\r\nU: 2\r\nV: 3\r\nbad\r\n\r\n",
            2,
            (431, "too many trailer fields (limit 2)"),
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\nbad\r\nT: 1\r\nU: 2\r\nV: 3\r\n\r\n",
            2,
            (400, "malformed HTTP request: Invalid header token"),
        ),
    ]

    @pytest.mark.parametrize(("data", "max_headers", "expected"), COUNT_CASES)
    def test_field_count_error_is_the_same_for_every_cut(
        self, data: bytes, max_headers: int, expected: tuple[int, str]
    ) -> None:
        whole = parse_error(data, None, max_headers=max_headers)
        assert (whole.status, whole.message) == expected
        for cut in range(len(data) + 1):
            parser = HttpParser(max_headers=max_headers)
            with pytest.raises(HttpError) as info:
                parser.feed_data(data[:cut])
                parser.feed_data(data[cut:])
            error = info.value
            assert (error.status, error.message) == expected, cut
        byte_by_byte = parse_error(data, 1, max_headers=max_headers)
        assert (byte_by_byte.status, byte_by_byte.message) == expected

    def test_trailer_size_limit(self) -> None:
        data = (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
            b"T: " + b"v" * 200 + b"\r\n\r\n"
        )
        error = parse_error(data, 3, max_header_size=100)
        assert error.status == 431
        assert "trailer" in error.message

    def test_content_length_limit_before_the_body_arrives(self) -> None:
        parser = HttpParser(max_body_size=10)
        assert (
            parser.feed_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789")[
                0
            ].body
            == b"0123456789"
        )
        with pytest.raises(HttpError) as info:
            HttpParser(max_body_size=10).feed_data(
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n"
            )
        assert info.value.status == 413
        assert "11 bytes" in info.value.message

    @pytest.mark.parametrize("chunk", [1, None], ids=["1", "all"])
    def test_chunked_body_limit(self, chunk: int | None) -> None:
        head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        ok = head + b"5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n"
        requests, _ = feed_in_chunks(HttpParser(max_body_size=10), ok, chunk or len(ok))
        assert requests[0].body == b"0123456789"
        too_big = head + b"5\r\n01234\r\n6\r\n"
        error = parse_error(too_big, chunk, max_body_size=10)
        assert error.status == 413

    def test_huge_chunk_size_is_413(self) -> None:
        head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        data = head + b"ffffffffffffffff\r\n"
        assert parse_error(data).status == 413

    def test_chunk_size_line_limit(self) -> None:
        data = (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1;ext=" + b"a" * 5000
        )
        error = parse_error(data, 100)
        assert (error.status, error.message) == (400, "chunk size line too long")

    def test_zero_body_limit(self) -> None:
        parser = HttpParser(max_body_size=0)
        assert parser.feed_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        with pytest.raises(HttpError) as info:
            parser.feed_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n")
        assert info.value.status == 413

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"max_header_size": 0},
            {"max_header_size": -1},
            {"max_body_size": -1},
            {"max_headers": 0},
            {"max_headers": 1.5},
            {"max_body_size": True},
        ],
    )
    def test_invalid_limits(self, kwargs: dict[str, object]) -> None:
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=name):
            HttpParser(**kwargs)  # type: ignore[arg-type]


class TestExpectContinue:
    HEAD = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"

    def test_continue_is_offered_while_the_body_is_awaited(self) -> None:
        parser = HttpParser()
        assert parser.feed_data(self.HEAD) == []
        assert parser.data_to_send() == CONTINUE_RESPONSE
        assert parser.data_to_send() == b""
        assert parser.feed_data(b"abc")[0].body == b"abc"
        assert parser.data_to_send() == b""

    def test_no_continue_when_the_body_came_along(self) -> None:
        parser = HttpParser()
        assert parser.feed_data(self.HEAD + b"abc")[0].body == b"abc"
        assert parser.data_to_send() == b""

    def test_no_continue_for_http10_or_without_body(self) -> None:
        parser = HttpParser()
        parser.feed_data(self.HEAD.replace(b"HTTP/1.1", b"HTTP/1.0"))
        assert parser.data_to_send() == b""
        parser = HttpParser()
        parser.feed_data(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n")
        assert parser.data_to_send() == b""


class TestRenderResponse:
    def test_exact_bytes(self) -> None:
        assert render_response(200, [("Content-Type", "text/plain")], b"hi") == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        )

    def test_connection_close(self) -> None:
        assert render_response(404, [], keep_alive=False) == (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )

    def test_reason_and_unregistered_status(self) -> None:
        assert render_response(299, [], reason="Fine").startswith(b"HTTP/1.1 299 Fine\r\n")
        assert render_response(299, []).startswith(b"HTTP/1.1 299 \r\n")

    def test_transfer_encoding_or_given_length_skips_content_length(self) -> None:
        assert render_response(200, [("Transfer-Encoding", "chunked")], b"0\r\n\r\n") == (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        # A HEAD response announces the length of the body it does not send.
        assert render_response(200, [("content-length", "42")]) == (
            b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n"
        )

    @pytest.mark.parametrize("status", [101, 204, 304])
    def test_bodyless_statuses(self, status: int) -> None:
        assert b"Content-Length" not in render_response(status, [])
        with pytest.raises(ValueError, match="cannot have a body"):
            render_response(status, [], b"x")

    @pytest.mark.parametrize(
        ("status", "headers", "reason", "match"),
        [
            (99, [], None, "status"),
            (600, [], None, "status"),
            (True, [], None, "status"),
            (200, [("Bad Name", "v")], None, "invalid header name"),
            (200, [("", "v")], None, "invalid header name"),
            (200, [("X", "a\r\nSet-Cookie: evil")], None, "CR, LF or NUL"),
            (200, [("X", "a\x00")], None, "CR, LF or NUL"),
            (200, [("X", "\u20ac")], None, "Latin-1"),
            (200, [], "OK\r\nX: y", "reason phrase"),
        ],
    )
    def test_invalid_input(
        self, status: int, headers: list[tuple[str, str]], reason: str | None, match: str
    ) -> None:
        with pytest.raises(ValueError, match=match):
            render_response(status, headers, reason=reason)

    def test_error_response(self) -> None:
        error = HttpError(405, "use GET", [("Allow", "GET")])
        assert error_response(error) == (
            b"HTTP/1.1 405 Method Not Allowed\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Allow: GET\r\n"
            b"Content-Length: 8\r\n"
            b"Connection: close\r\n"
            b"\r\n"
            b"use GET\n"
        )
        assert b"Connection" not in error_response(HttpError(400, "x"), keep_alive=True)

    def test_error_response_utf8_body(self) -> None:
        response = error_response(HttpError(400, "caf\u00e9"))
        assert response.endswith(b"Content-Length: 6\r\nConnection: close\r\n\r\ncaf\xc3\xa9\n")

    def test_parser_errors_render(self) -> None:
        error = parse_error(b"GET / HTTP/1.1\r\n\r\n")
        assert error_response(error) == (
            b"HTTP/1.1 400 Bad Request\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 20\r\n"
            b"Connection: close\r\n"
            b"\r\n"
            b"missing Host header\n"
        )
