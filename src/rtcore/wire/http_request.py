"""A parsed HTTP/1.1 request (sans-I/O): what :class:`rtcore.wire.http.HttpParser`
returns, importable from :mod:`rtcore.wire.http` as well."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from rtcore.errors import HttpError


__all__ = ["Request", "shorten", "split_list", "split_target"]

# A percent sign that does not start a valid %XX escape.
_BAD_PERCENT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, honouring quoted strings.

    Elements are stripped of optional whitespace; empty elements (allowed by
    RFC 9110 section 5.6.1) are dropped.
    """
    items: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == ",":
            items.append(value[start:i])
            start = i + 1
    items.append(value[start:])
    return [item.strip(" \t") for item in items if item.strip(" \t")]


@dataclass(slots=True)
class Request:
    """One parsed HTTP request.

    ``path`` and ``query`` are kept exactly as received (still
    percent-encoded); use :attr:`decoded_path` and :meth:`query_params` for
    decoded values. ``headers`` keeps every field line in order, with
    lowercased names and values stripped of surrounding whitespace.
    """

    # Request method, case preserved (methods are case-sensitive).
    method: str
    # Raw path of the request target ("/chat", "*" for OPTIONS *, the
    # authority for CONNECT); for an absolute-form target, its path part.
    path: str
    # Raw query string without the "?"; "" when there is none.
    query: str = ""
    # (lowercased name, value) for every header line, in order.
    headers: list[tuple[str, str]] = field(default_factory=list)
    # The whole body (de-chunked); b"" when there is none.
    body: bytes = b""
    # Whether the connection may carry another request after this one.
    keep_alive: bool = True
    # Whether the request asks to switch protocols (Connection: upgrade and an
    # Upgrade header, or CONNECT).
    upgrade: bool = False
    # "1.1" or "1.0".
    http_version: str = "1.1"

    def header(self, name: str) -> str | None:
        """The value of the first ``name`` header line, or ``None``."""
        key = name.lower()
        for hname, value in self.headers:
            if hname == key:
                return value
        return None

    def header_values(self, name: str, *, split: bool = False) -> list[str]:
        """The values of every ``name`` header line, in order.

        Args:
            name: header name, any case.
            split: treat the header as a comma-separated list (``Connection``,
                ``Upgrade``, ``Sec-WebSocket-Protocol``...): split each line on
                commas outside quoted strings, strip whitespace and drop empty
                elements.
        """
        key = name.lower()
        values = [value for hname, value in self.headers if hname == key]
        if not split:
            return values
        return [item for value in values for item in split_list(value)]

    @property
    def decoded_path(self) -> str:
        """``path`` with percent-escapes decoded as UTF-8.

        Note that an encoded ``%2F`` becomes ``/``: route on :attr:`path` when
        that distinction matters.

        Raises:
            HttpError: 400 when the path has a malformed escape or does not
                decode to UTF-8.
        """
        if _BAD_PERCENT_RE.search(self.path):
            raise HttpError(400, f"malformed percent-escape in path {shorten(self.path)}")
        try:
            return urllib.parse.unquote(self.path, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise HttpError(
                400, f"path {shorten(self.path)} is not percent-encoded UTF-8"
            ) from None

    def query_params(self) -> dict[str, list[str]]:
        """Decode ``query`` (``application/x-www-form-urlencoded`` rules).

        ``+`` means a space, blank values are kept, and repeated names collect
        every value in order.

        Raises:
            HttpError: 400 when the query has a malformed escape or does not
                decode to UTF-8.
        """
        if not self.query:
            return {}  # most upgrades: parse_qsl's argument coercion is not free
        if _BAD_PERCENT_RE.search(self.query):
            raise HttpError(400, f"malformed percent-escape in query {shorten(self.query)}")
        params: dict[str, list[str]] = {}
        try:
            pairs = urllib.parse.parse_qsl(
                self.query, keep_blank_values=True, encoding="utf-8", errors="strict"
            )
        except UnicodeDecodeError:
            raise HttpError(
                400, f"query {shorten(self.query)} is not percent-encoded UTF-8"
            ) from None
        for key, value in pairs:
            params.setdefault(key, []).append(value)
        return params


def shorten(text: str, limit: int = 80) -> str:
    """``repr`` of ``text``, cut so error messages stay short."""
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


def split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target in any of the RFC 9112 forms."""
    target = target.split("#", 1)[0]
    if not target.startswith("/") and "://" in target:
        # absolute-form: drop scheme and authority.
        rest = target.split("://", 1)[1]
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=-1)
        target = "/" if cut < 0 else rest[cut:]
        if target.startswith("?"):
            target = "/" + target
    path, _, query = target.partition("?")
    return path, query
