"""HTTP/1.1 request parsing and response rendering (sans-I/O).

This module never touches a socket and imports no event loop: the server
adapter feeds it the bytes it received and writes the bytes it returns.

* :class:`HttpParser` turns a byte stream into :class:`Request` values. It
  runs over httptools (llhttp in strict mode) for the syntax, and adds the
  limits and framing rules a public server needs: a bounded header section,
  a bounded body, a bounded number of header fields, deterministic error
  statuses for any chunking of the input, pipelining, and a clean stop after
  an ``Upgrade`` request so the WebSocket parser can take over the stream.
* :func:`render_response` and :func:`error_response` build response bytes
  (they live in :mod:`rtcore.wire.http_response` and are re-exported here).

How the parser finds message boundaries: llhttp reports completed messages
through callbacks but does not say where in the input they ended. To keep
exact per-message limits and to stop exactly at the end of an upgrade request,
the parser feeds llhttp only bytes that it knows belong to the current
message: the request line once its CRLF has arrived, then the header section
up to the blank line, then exactly ``Content-Length`` body bytes, or, for a
chunked body, one chunk-size line, chunk, CRLF or trailer line at a time.
llhttp validates every byte it is given; the boundaries only decide how much
it is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httptools

from rtcore.errors import HttpError
from rtcore.wire.http_request import Request, shorten, split_list, split_target
from rtcore.wire.http_response import error_response, render_response


__all__ = [
    "CONTINUE_RESPONSE",
    "HttpParser",
    "Request",
    "error_response",
    "render_response",
]

# The interim response sent to a client that asked for ``Expect: 100-continue``.
CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"

# RFC 9110 section 5.6.2: token characters.
_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN_RE = re.compile(rb"[" + _TCHAR + rb"]+")

# A complete request line: method SP request-target SP HTTP-version CRLF.
_REQUEST_LINE_RE = re.compile(rb"([" + _TCHAR + rb"]+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])\r\n")
# Any prefix of a well-formed request line (used before its LF arrives, so a
# non-HTTP client is rejected at once rather than after max_header_size bytes).
_REQUEST_LINE_PREFIX_RE = re.compile(
    rb"[" + _TCHAR + rb"]*"
    rb"(?: [\x21-\x7e]*(?: (?:H(?:T(?:T(?:P(?:/(?:[0-9](?:\.(?:[0-9]\r?)?)?)?)?)?)?)?)?)?)?"
)
# How many leading bytes of an incomplete request line get the full prefix
# check; later bytes only need to be printable ASCII, space or CR.
_PREFIX_CHECK = 256
_LINE_CHARS_RE = re.compile(rb"[\x20-\x7e\r]*")

_SUPPORTED_VERSIONS = {(1, 0), (1, 1)}

# Longest chunk-size line (size, extensions, CRLF) accepted in a chunked body.
_MAX_CHUNK_LINE = 4096

# Parser states.
_REQUEST_LINE = 0  # waiting for the CRLF that ends the request line
_HEADERS = 1  # streaming header fields until the blank line
_BODY = 2  # Content-Length body: self._remaining bytes to go
_CHUNK_SIZE = 3  # reading a chunk-size line
_CHUNK_DATA = 4  # inside a chunk: self._remaining bytes to go
_CHUNK_END = 5  # the CRLF after a chunk: self._remaining bytes to go
_TRAILER = 6  # trailer section lines until the blank line


class _Sink:
    """The callback object httptools looks methods up on (bound once)."""

    __slots__ = (
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
    )

    on_message_begin: Callable[[], None]
    on_url: Callable[[bytes], None]
    on_header: Callable[[bytes, bytes], None]
    on_headers_complete: Callable[[], None]
    on_body: Callable[[bytes], None]
    on_message_complete: Callable[[], None]


# What a closed HttpParser holds instead of its llhttp parser.
_CLOSED = httptools.HttpRequestParser(_Sink())


class HttpParser:
    """Incremental HTTP/1.1 request parser with limits and pipelining.

    Feed received bytes with :meth:`feed_data`; it returns the requests those
    bytes complete, in order. Any chunking of the same stream gives the same
    requests and the same errors.

    After a request whose ``Connection`` header (or HTTP/1.0 default) closes
    the connection, later bytes are ignored (RFC 9112 section 9.6: no further
    request on that connection is processed). After an upgrade request the
    parser stops: :attr:`upgraded` is true and :attr:`trailing_data` holds the
    bytes received after it (the start of the new protocol's stream).

    Trailer fields of chunked bodies are validated and counted against the
    limits, then dropped.

    Args:
        max_header_size: largest request line plus header section (including
            the final blank line), in bytes; larger requests fail with 431,
            or 414 when the request line alone does not fit.
        max_body_size: largest body, in bytes; larger ones fail with 413 (as
            soon as ``Content-Length`` announces it, or as soon as a chunk
            would cross the limit).
        max_headers: most header field lines per request (and trailer lines
            per chunked body); more fail with 431. Fields are counted in the
            bytes: the first field line past the limit fails the request
            with 431 once llhttp accepted it, a malformed field before it
            with 400, whatever the chunking.

    Raises:
        ValueError: a limit is not a positive integer (``max_body_size`` may
            be 0: no body accepted).
    """

    def __init__(
        self,
        *,
        max_header_size: int = 16384,
        max_body_size: int = 1 << 20,
        max_headers: int = 100,
    ) -> None:
        if not (
            # The usual call (one per connection) passes plain ints.
            type(max_header_size) is int
            and type(max_body_size) is int
            and type(max_headers) is int
            and max_header_size >= 1
            and max_body_size >= 0
            and max_headers >= 1
        ):
            for name, value, minimum in (
                ("max_header_size", max_header_size, 1),
                ("max_body_size", max_body_size, 0),
                ("max_headers", max_headers, 1),
            ):
                if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.max_headers = max_headers

        sink = _Sink()
        sink.on_message_begin = self._on_message_begin
        sink.on_url = self._on_url
        sink.on_header = self._on_header
        sink.on_headers_complete = self._on_headers_complete
        sink.on_body = self._on_body
        sink.on_message_complete = self._on_message_complete
        # The llhttp parser; it keeps its state across requests.
        self._llhttp = httptools.HttpRequestParser(sink)

        # Received bytes not yet handed to llhttp.
        self._buf = bytearray()
        # Current parser state (see the _REQUEST_LINE... constants).
        self._state = _REQUEST_LINE
        # Bytes of the current header section (or trailer section) so far.
        self._head_len = 0
        # Field lines of the current header (or trailer) section fed so far.
        self._field_lines = 0
        # Last (up to 3) bytes of the header section already fed, to find a
        # blank line split across two feed_data calls.
        self._tail = b""
        # Body bytes still expected in the _BODY, _CHUNK_DATA, _CHUNK_END states.
        self._remaining = 0
        # Current chunk-size line, or trailer line, as received so far.
        self._line = bytearray()
        # Bytes of a still incomplete request line already checked.
        self._scanned = 0
        # Method token of the current request line (for error messages).
        self._method_token = b""

        # Per-request values collected from the callbacks.
        self._url = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._body_len = 0
        self._in_trailers = False
        self._trailer_count = 0
        self._headers_done = False
        self._message_done = False
        self._request: Request | None = None

        # Requests completed during the current feed_data call.
        self._completed: list[Request] = []
        # Interim response waiting to be written (100 Continue).
        self._to_send = b""
        # Set after a request that closes the connection: ignore later bytes.
        self._closed = False
        # Set after an upgrade request.
        self._upgraded = False
        self._trailing = b""
        # The error that stopped the parser, if any.
        self._error: HttpError | None = None

    # -- public state --------------------------------------------------------

    @property
    def upgraded(self) -> bool:
        """True once an upgrade request was parsed; the parser then stops."""
        return self._upgraded

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the upgrade request (empty before an upgrade)."""
        return self._trailing

    def data_to_send(self) -> bytes:
        """Bytes the parser wants written to the client, then forgets them.

        Currently only :data:`CONTINUE_RESPONSE`, when an HTTP/1.1 request
        with a body sent ``Expect: 100-continue`` and its body has not fully
        arrived yet. Call it after each :meth:`feed_data`.
        """
        data, self._to_send = self._to_send, b""
        return data

    def close(self) -> None:
        """Parse nothing more, and let go of llhttp: its callbacks point back
        here, a reference cycle that only the cycle collector would free."""
        self._llhttp = _CLOSED

    # -- input ---------------------------------------------------------------

    def feed_data(self, data: bytes | bytearray | memoryview) -> list[Request]:
        """Add received bytes; return the requests they complete.

        Raises:
            HttpError: the request is malformed or over a limit; the status
                and message are ready for :func:`error_response`, after which
                the connection must be closed. Requests completed earlier in
                the same call are dropped.
            RuntimeError: the parser already failed, was closed, or the
                connection was upgraded (hand further bytes to the new
                protocol instead).
        """
        if self._llhttp is _CLOSED:
            raise RuntimeError("the HTTP parser is closed")
        if self._error is not None:
            raise RuntimeError(f"the HTTP parser already failed ({self._error})")
        if self._upgraded:
            raise RuntimeError(
                "the connection was upgraded; pass further bytes to the new protocol"
            )
        if self._closed:
            return []
        self._buf += data
        try:
            self._parse()
        except HttpError as exc:
            self._error = exc
            self._buf = bytearray()
            self._completed = []
            self._to_send = b""
            raise
        completed, self._completed = self._completed, []
        return completed

    # -- parsing -------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buf
        pos = 0
        try:
            while pos < len(buf) and not (self._closed or self._upgraded):
                state = self._state
                if state == _REQUEST_LINE:
                    pos, progressed = self._parse_request_line(buf, pos)
                elif state == _HEADERS:
                    pos, progressed = self._parse_headers(buf, pos)
                elif state == _BODY or state == _CHUNK_DATA or state == _CHUNK_END:
                    pos, progressed = self._parse_counted(buf, pos)
                else:
                    pos, progressed = self._parse_line(buf, pos)
                if not progressed:
                    break
        finally:
            if self._upgraded:
                self._trailing += bytes(buf[pos:])
                pos = len(buf)
            if self._closed:
                pos = len(buf)
            del buf[:pos]

    def _feed(self, chunk: bytes | bytearray) -> int:
        """Hand ``chunk`` to llhttp, mapping its errors; return the upgrade offset.

        The return value is ``-1`` unless llhttp reported an upgrade, in which
        case it is the offset in ``chunk`` where the new protocol starts.
        """
        try:
            self._llhttp.feed_data(chunk)
        except httptools.HttpParserUpgrade as exc:
            return int(exc.args[0])
        except httptools.HttpParserCallbackError as exc:
            context = exc.__context__
            if isinstance(context, HttpError):
                raise context from None
            if context is not None:
                raise context from None
            raise
        except httptools.HttpParserInvalidURLError as exc:
            raise HttpError(400, f"invalid request target: {exc.args[0]}") from exc
        except httptools.HttpParserInvalidMethodError as exc:
            # The request line regex already proved the method is a token.
            method = bytes(self._method_token).decode("ascii")
            raise HttpError(501, f"method {method!r} is not implemented") from exc
        except httptools.HttpParserError as exc:
            raise HttpError(400, f"malformed HTTP request: {exc.args[0]}") from exc
        return -1

    def _parse_request_line(self, buf: bytearray, pos: int) -> tuple[int, bool]:
        end = len(buf)
        if not self._scanned:
            # RFC 9112 section 2.2: ignore empty lines before a request line.
            while pos < end and buf[pos] in (13, 10):
                pos += 1
            if pos == end:
                return pos, True
        limit = self.max_header_size
        scan_from = pos + self._scanned
        nl = buf.find(b"\n", scan_from, pos + limit)
        if nl < 0:
            # Reject a non-HTTP client at once instead of after `limit` bytes.
            # Only new bytes are checked, so a slow sender costs linear time.
            avail = min(end, pos + limit)
            if scan_from < pos + _PREFIX_CHECK:
                head = bytes(buf[pos : min(avail, pos + _PREFIX_CHECK)])
                if not _REQUEST_LINE_PREFIX_RE.fullmatch(head):
                    raise HttpError(400, "malformed request line")
            rest_from = max(scan_from, pos + _PREFIX_CHECK)
            if rest_from < avail and not _LINE_CHARS_RE.fullmatch(buf, rest_from, avail):
                raise HttpError(400, "malformed request line")
            self._scanned = avail - pos
            if self._scanned >= limit:
                if b" " in buf[pos:avail]:
                    raise HttpError(
                        414, f"request target too long (request line limit {limit} bytes)"
                    )
                raise HttpError(400, "malformed request line: method too long")
            return pos, False
        self._scanned = 0
        line = bytes(buf[pos : nl + 1])
        match = _REQUEST_LINE_RE.fullmatch(line)
        if match is None:
            if not line.endswith(b"\r\n"):
                raise HttpError(400, "malformed request line: it must end with CRLF")
            raise HttpError(400, "malformed request line")
        version = (int(match.group(3)), int(match.group(4)))
        if version not in _SUPPORTED_VERSIONS:
            raise HttpError(505, f"HTTP/{version[0]}.{version[1]} is not supported (use HTTP/1.1)")
        self._method_token = match.group(1)
        self._state = _HEADERS
        # Usually the whole header section came with the request line: fed to
        # llhttp with it in one call when every limit holds, which gives what
        # the two steps below would (llhttp parses the same bytes either way).
        # Otherwise _parse_headers takes it from here.
        end = buf.find(b"\r\n\r\n", nl - 1, pos + limit)
        if end >= 0:
            head = bytes(buf[pos : end + 4])
            lines = head.count(b"\n") - 2
            if lines <= self.max_headers:
                self._head_len = len(head)
                self._field_lines = lines
                self._tail = head[-3:]
                offset = self._feed(head)
                if not self._headers_done:
                    raise HttpError(400, "malformed header section")
                if offset >= 0:
                    self._upgrade(head, offset)
                return end + 4, True
        self._feed(line)
        self._head_len = len(line)
        self._field_lines = 0
        self._tail = line[-3:]
        return nl + 1, True

    def _parse_headers(self, buf: bytearray, pos: int) -> tuple[int, bool]:
        budget = self.max_header_size - self._head_len
        tail = self._tail
        region = tail + bytes(buf[pos : pos + budget])
        found = region.find(b"\r\n\r\n")
        if found < 0:
            n = len(region) - len(tail)
            chunk = bytes(buf[pos : pos + n])
            # Let llhttp judge the bytes first: a malformed header is a 400
            # even when it is also too long.
            self._feed_fields(chunk, chunk.count(b"\n"))
            self._head_len += n
            self._tail = (tail + chunk)[-3:]
            if self._head_len >= self.max_header_size:
                raise HttpError(
                    431,
                    f"request header section too large (limit {self.max_header_size} bytes)",
                )
            return pos + n, False
        n = found + 4 - len(tail)
        chunk = bytes(buf[pos : pos + n])
        # The last LF ends the blank line, not a field line.
        offset = self._feed_fields(chunk, chunk.count(b"\n") - 1)
        pos += n
        if not self._headers_done:
            # llhttp saw the blank line without completing the headers.
            raise HttpError(400, "malformed header section")
        if offset >= 0:
            self._upgrade(chunk, offset)
        return pos, True

    def _feed_fields(self, chunk: bytes, lines: int) -> int:
        """Feed header-section bytes that end ``lines`` field lines; enforce ``max_headers``.

        Fields are counted in the bytes, not in llhttp's callbacks, which
        report a field only once the next one starts (or the section ends),
        so at a point that depends on the chunking. The rule: llhttp judges
        every byte up to the end of the first field line past the limit
        (a malformed field up to there is a 400), then the request fails
        with 431; bytes after that line are never looked at.
        """
        if self._field_lines + lines <= self.max_headers:
            self._field_lines += lines
            return self._feed(chunk)
        cut = -1
        for _ in range(self.max_headers + 1 - self._field_lines):
            cut = chunk.index(b"\n", cut + 1)
        self._feed(chunk[: cut + 1])
        raise HttpError(431, f"too many header fields (limit {self.max_headers})")

    def _parse_counted(self, buf: bytearray, pos: int) -> tuple[int, bool]:
        # Read the state first: completing the message resets it.
        state = self._state
        n = min(self._remaining, len(buf) - pos)
        chunk = bytes(buf[pos : pos + n])
        self._feed(chunk)
        pos += n
        self._remaining -= n
        if self._remaining:
            return pos, False
        if state == _BODY:
            self._check_complete()
        elif state == _CHUNK_DATA:
            self._state = _CHUNK_END
            self._remaining = 2
        else:
            self._state = _CHUNK_SIZE
            self._line.clear()
        return pos, True

    def _parse_line(self, buf: bytearray, pos: int) -> tuple[int, bool]:
        """One chunk-size line or trailer line (states _CHUNK_SIZE, _TRAILER)."""
        trailer = self._state == _TRAILER
        if trailer:
            budget = self.max_header_size - self._head_len
        else:
            budget = _MAX_CHUNK_LINE - len(self._line)
        nl = buf.find(b"\n", pos, pos + budget)
        end = len(buf) if nl < 0 else nl + 1
        end = min(end, pos + budget)
        chunk = bytes(buf[pos:end])
        self._feed(chunk)
        self._line += chunk
        if trailer:
            self._head_len += len(chunk)
        if nl < 0:
            if len(chunk) >= budget:
                if trailer:
                    raise HttpError(
                        431, f"trailer section too large (limit {self.max_header_size} bytes)"
                    )
                raise HttpError(400, "chunk size line too long")
            return end, False
        line = bytes(self._line)
        self._line.clear()
        if trailer:
            if line == b"\r\n":
                self._check_complete()
            else:
                # Counted by line, as header fields are (see _feed_fields).
                self._field_lines += 1
                if self._field_lines > self.max_headers:
                    raise HttpError(431, f"too many trailer fields (limit {self.max_headers})")
            return end, True
        size_text = line.split(b";", 1)[0].strip(b" \t\r\n")
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
            raise HttpError(400, "malformed chunk size")
        size = int(size_text, 16)
        if self._body_len + size > self.max_body_size:
            raise HttpError(413, f"request body exceeds the {self.max_body_size}-byte limit")
        if size == 0:
            self._state = _TRAILER
            self._head_len = 0
            self._field_lines = 0
            self._in_trailers = True
        else:
            self._state = _CHUNK_DATA
            self._remaining = size
        return end, True

    def _check_complete(self) -> None:
        if not self._message_done:
            # Our framing and llhttp's disagree: never guess, fail.
            raise HttpError(400, "malformed message body")

    def _upgrade(self, chunk: bytes, offset: int) -> None:
        self._upgraded = True
        self._trailing = chunk[offset:]

    # -- llhttp callbacks ----------------------------------------------------

    def _on_message_begin(self) -> None:
        self._url.clear()
        self._headers = []
        self._body = []
        self._body_len = 0
        self._in_trailers = False
        self._headers_done = False
        self._message_done = False
        self._request = None

    def _on_url(self, data: bytes) -> None:
        self._url += data

    def _on_header(self, name: bytes, value: bytes) -> None:
        # The count is enforced on the bytes (_feed_fields); these checks
        # only back it up.
        if self._in_trailers:
            # Trailer fields are counted but not kept.
            self._trailer_count += 1
            if self._trailer_count > self.max_headers:
                raise HttpError(431, f"too many trailer fields (limit {self.max_headers})")
            return
        if len(self._headers) >= self.max_headers:
            raise HttpError(431, f"too many header fields (limit {self.max_headers})")
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1").strip(" \t")))

    def _on_headers_complete(self) -> None:
        llhttp = self._llhttp
        headers = self._headers
        version = llhttp.get_http_version()
        self._headers_done = True
        self._trailer_count = 0

        # One pass over the headers for the few that frame the message.
        hosts = 0
        encodings: list[str] = []
        lengths: list[str] = []
        expect: list[str] = []
        for name, value in headers:
            if name == "host":
                hosts += 1
            elif name == "transfer-encoding":
                encodings.append(value)
            elif name == "content-length":
                lengths.append(value)
            elif name == "expect":
                expect.append(value.lower())
        if hosts > 1:
            raise HttpError(400, "multiple Host headers")
        if version == "1.1" and not hosts:
            raise HttpError(400, "missing Host header")

        chunked = False
        length = 0
        if encodings:
            codings = [item.lower() for value in encodings for item in split_list(value)]
            if version == "1.0":
                raise HttpError(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request")
            if lengths:
                raise HttpError(400, "both Content-Length and Transfer-Encoding are present")
            if not codings or codings[-1] != "chunked":
                raise HttpError(400, "chunked must be the final transfer coding")
            if "chunked" in codings[:-1]:
                raise HttpError(400, "chunked transfer coding applied more than once")
            if len(codings) > 1:
                raise HttpError(501, f"transfer coding {codings[0]!r} is not supported")
            chunked = True
        elif lengths:
            if len(set(lengths)) > 1 or not lengths[0].isdigit() or not lengths[0].isascii():
                raise HttpError(400, "invalid Content-Length")
            length = int(lengths[0])
            if length > self.max_body_size:
                raise HttpError(
                    413,
                    f"request body of {length} bytes exceeds the {self.max_body_size}-byte limit",
                )

        upgrade = llhttp.should_upgrade()
        if upgrade and (chunked or length):
            raise HttpError(400, "an upgrade request must not have a body")

        if (chunked or length) and expect:
            if expect != ["100-continue"]:
                raise HttpError(417, f"unsupported expectation {shorten(', '.join(expect))}")
            if version == "1.1":
                self._to_send = CONTINUE_RESPONSE

        target = self._url.decode("ascii")
        path, query = split_target(target)
        self._request = Request(
            method=llhttp.get_method().decode("ascii"),
            path=path,
            query=query,
            headers=headers,
            keep_alive=llhttp.should_keep_alive(),
            upgrade=upgrade,
            http_version=version,
        )
        if chunked:
            self._state = _CHUNK_SIZE
            self._line.clear()
        elif length:
            self._state = _BODY
            self._remaining = length

    def _on_body(self, data: bytes) -> None:
        # Sizes were checked against max_body_size before these bytes were fed.
        self._body_len += len(data)
        self._body.append(data)

    def _on_message_complete(self) -> None:
        request = self._request
        if request is None:
            # llhttp completes the headers first; never build a partial request.
            raise HttpError(400, "malformed HTTP request")
        request.body = b"".join(self._body)
        self._body = []
        self._message_done = True
        self._completed.append(request)
        self._to_send = b""
        self._state = _REQUEST_LINE
        self._head_len = 0
        self._tail = b""
        if not request.keep_alive and not request.upgrade:
            self._closed = True
