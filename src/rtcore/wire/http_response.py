"""HTTP/1.1 response rendering (sans-I/O).

:func:`render_response` and :func:`error_response` build response bytes
without a ``Date`` or ``Server`` header, so the output is deterministic and
tests can compare it byte for byte. Importable from :mod:`rtcore.wire.http`
as well, next to the request parser.
"""

from __future__ import annotations

import http as _http_status
import re
from collections.abc import Sequence

from rtcore.errors import HttpError


__all__ = ["error_response", "render_response"]

# RFC 9110 section 5.6.2: a header name is a token.
_TOKEN_STR_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Characters never allowed in a rendered header value (response splitting).
_BAD_VALUE_RE = re.compile(r"[\r\n\x00]")


# The standard reason phrases ("" for an unregistered status); a dict, not an
# HTTPStatus(status) call per response.
_REASONS: dict[int, str] = {s.value: s.phrase for s in _http_status.HTTPStatus}


def _check_header(name: str, value: str) -> None:
    if not _TOKEN_STR_RE.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    if _BAD_VALUE_RE.search(value):
        raise ValueError(f"header {name} has a value with CR, LF or NUL: {value!r}")


def render_response(
    status: int,
    headers: Sequence[tuple[str, str]],
    body: bytes = b"",
    *,
    keep_alive: bool = True,
    reason: str | None = None,
) -> bytes:
    """Serialize an HTTP/1.1 response.

    The output is deterministic (no ``Date``): the status line, ``headers``
    in the given order, then ``Content-Length`` (unless ``headers`` carry
    ``Content-Length`` or ``Transfer-Encoding``, or the status forbids a body:
    1xx, 204, 304), then ``Connection: close`` when ``keep_alive`` is false,
    then the blank line and ``body``.

    Args:
        status: status code, 100 to 599.
        headers: (name, value) pairs; names must be tokens, values must not
            contain CR, LF or NUL and must be Latin-1.
        body: the body bytes (sent as-is, even with ``Transfer-Encoding``).
        keep_alive: false adds ``Connection: close``.
        reason: the reason phrase; defaults to the standard one ("" for an
            unregistered status).

    Raises:
        ValueError: bad status, header name or value, reason, or a body on a
            status that forbids one.
    """
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"status must be an integer from 100 to 599, got {status!r}")
    if reason is None:
        reason = _REASONS.get(status, "")
    elif _BAD_VALUE_RE.search(reason):
        raise ValueError(f"reason phrase contains CR, LF or NUL: {reason!r}")
    bodyless = status < 200 or status in (204, 304)
    if bodyless and body:
        raise ValueError(f"a {status} response cannot have a body")
    lines = [f"HTTP/1.1 {status} {reason}"]
    has_length = False
    for name, value in headers:
        _check_header(name, value)
        lname = name.lower()
        if lname in ("content-length", "transfer-encoding"):
            has_length = True
        lines.append(f"{name}: {value}")
    if not has_length and not bodyless:
        lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    lines.append("\r\n")
    try:
        head = "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"response head is not Latin-1: {exc}") from None
    return head + bytes(body)


def error_response(exc: HttpError, *, keep_alive: bool = False) -> bytes:
    """The response for an :class:`~rtcore.errors.HttpError`.

    A ``text/plain`` body holding ``exc.message`` and a newline, with
    ``exc.headers`` (``Allow``, ``Sec-WebSocket-Version``...) after
    ``Content-Type``; ``Connection: close`` unless ``keep_alive``.
    """
    body = (exc.message + "\n").encode("utf-8")
    headers = [("Content-Type", "text/plain; charset=utf-8"), *exc.headers]
    return render_response(exc.status, headers, body, keep_alive=keep_alive)
