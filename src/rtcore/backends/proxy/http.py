"""The HTTP/1.1 client that carries proxy requests to the application backend.

A small client on asyncio streams: ``httptools`` parses responses, kept-alive
connections are reused per endpoint, and one deadline bounds each call
(connect, send and response).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any
from urllib.parse import quote, urlsplit

import httptools

from rtcore._version import __version__
from rtcore.backends.proxy.errors import ProxyResponseError, ProxyTimeout, ProxyUnavailable


__all__ = ["IDLE_TIMEOUT", "MAX_IDLE_CONNECTIONS", "MAX_RESPONSE_SIZE", "HttpEndpoint"]

#: Largest backend response body read (larger: the call fails).
MAX_RESPONSE_SIZE = 8 << 20
#: Idle kept-alive connections kept per endpoint.
MAX_IDLE_CONNECTIONS = 64
#: Idle connections older than this are closed instead of reused.
IDLE_TIMEOUT = 30.0
_READ_SIZE = 65536


class _StaleConnection(Exception):
    """A reused connection was closed by the server before any response byte."""


class _Response:
    """httptools callbacks collecting one response."""

    __slots__ = (
        "parser",
        "status",
        "headers",
        "body",
        "size",
        "informational",
        "headers_done",
        "complete",
        "keep_alive",
    )

    def __init__(self) -> None:
        self.parser: Any = None
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.informational = False
        self.headers_done = False
        self.complete = False
        self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.informational = 100 <= self.status < 200
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_RESPONSE_SIZE:
            raise ProxyResponseError(f"response body larger than {MAX_RESPONSE_SIZE} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.informational:
            # 1xx: the real response follows.
            self.headers = {}
            self.headers_done = False
            self.informational = False
            return
        self.complete = True
        # Asked here: once the callback returns the parser is reset for the next message.
        self.keep_alive = self.parser.should_keep_alive()

    @property
    def delimited_by_eof(self) -> bool:
        """A response without Content-Length or chunked framing ends at EOF."""
        if self.status in (204, 304):
            return False
        te = self.headers.get(b"transfer-encoding", b"").lower()
        return b"content-length" not in self.headers and b"chunked" not in te


class _Connection:
    __slots__ = ("reader", "writer", "idle_since", "generation")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, generation: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        # HttpEndpoint.close() starts a new generation: older connections are not reused.
        self.generation = generation

    def usable(self, now: float) -> bool:
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and now - self.idle_since < IDLE_TIMEOUT
        )

    def close(self) -> None:
        self.writer.close()


def _header_bytes(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


class HttpEndpoint:
    """POSTs JSON bodies to one URL over reused HTTP/1.1 connections.

    Args:
        url: an ``http://`` or ``https://`` URL (validated by the config model).
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        self.url = url
        self.host = parts.hostname
        default_port = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default_port
        self._ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        if parts.query:
            target += "?" + quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != default_port:
            host = f"{host}:{self.port}"
        self._head = (
            f"POST {target} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nUser-Agent: rtcore/{__version__}\r\n"
        ).encode("ascii")
        self._idle: list[_Connection] = []
        self._generation = 0

    def __repr__(self) -> str:
        return f"HttpEndpoint({self.url!r})"

    async def post(
        self, body: bytes, headers: list[tuple[str, str]], timeout: float
    ) -> tuple[int, bytes]:
        """POST ``body``; returns ``(status, response body)``.

        Raises:
            ProxyTimeout: no complete response within ``timeout`` seconds.
            ProxyUnavailable: connecting failed or the connection broke.
            ProxyResponseError: the response is not valid HTTP or too large.
        """
        request = bytearray(self._head)
        for name, value in headers:
            request += name.encode("ascii") + b": " + _header_bytes(value) + b"\r\n"
        request += b"Content-Length: %d\r\n\r\n" % len(body)
        request += body
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(bytes(request))
        except TimeoutError:
            raise ProxyTimeout(f"no response within {timeout:g}s") from None

    async def close(self) -> None:
        """Close the idle connections; those in use close when their call ends.

        A later :meth:`post` opens a new connection.
        """
        self._generation += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        conn = self._take_idle()
        if conn is not None:
            try:
                return await self._roundtrip(conn, request)
            except _StaleConnection:
                # The server closed the kept-alive connection without answering
                # (an idle close racing this request): once more on a new one.
                pass
        conn = await self._open()
        try:
            return await self._roundtrip(conn, request)
        except _StaleConnection:
            raise ProxyUnavailable("the server closed the connection without a response") from None

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now):
                return conn
            conn.close()
        return None

    async def _open(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self._ssl is not None else None,
                limit=_READ_SIZE,
            )
        except OSError as exc:
            raise ProxyUnavailable(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        return _Connection(reader, writer, self._generation)

    async def _roundtrip(self, conn: _Connection, request: bytes) -> tuple[int, bytes]:
        keep = False
        received = False
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            resp = _Response()
            parser = httptools.HttpResponseParser(resp)
            resp.parser = parser
            while not resp.complete:
                data = await conn.reader.read(_READ_SIZE)
                if not data:
                    if resp.headers_done and resp.delimited_by_eof:
                        resp.complete = True
                        break
                    if not received:
                        raise _StaleConnection
                    raise ProxyUnavailable("the connection closed in the middle of the response")
                received = True
                try:
                    parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    if isinstance(exc.__context__, ProxyResponseError):
                        raise exc.__context__ from None
                    if not resp.complete:
                        raise ProxyResponseError(f"invalid HTTP response: {exc}") from None
                    break  # bytes after the response: the connection is not reused
                else:
                    keep = resp.complete and resp.keep_alive
            return resp.status, b"".join(resp.body)
        except (ConnectionError, OSError) as exc:
            keep = False
            if not received:
                raise _StaleConnection from exc
            raise ProxyUnavailable(f"connection error: {exc.strerror or exc}") from None
        finally:
            if (
                keep
                and conn.generation == self._generation
                and len(self._idle) < MAX_IDLE_CONNECTIONS
            ):
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
