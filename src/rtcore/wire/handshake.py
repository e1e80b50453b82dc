"""The WebSocket opening handshake, server side (RFC 6455 section 4.2).

Sans-I/O: :func:`accept_websocket` takes a parsed :class:`~rtcore.wire.http.Request`
and returns the ``101 Switching Protocols`` response bytes together with the
negotiated subprotocol and permessage-deflate extension, or raises
:class:`~rtcore.errors.HandshakeError` carrying the status, message and headers
of the error response (render it with :func:`rtcore.wire.http.error_response`).

Checks run in this order, so a request with several faults gets the status of
the first one: method, HTTP version, ``Host``, ``Upgrade``, ``Connection``,
``Sec-WebSocket-Version``, ``Sec-WebSocket-Key``, ``Origin``,
``Sec-WebSocket-Protocol``, ``Sec-WebSocket-Extensions``. The version is
checked before the key so that a client speaking an older draft (which sends
no ``Sec-WebSocket-Key``) learns which version the server speaks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from rtcore.errors import HandshakeError
from rtcore.wire.deflate import DeflateOptions, PerMessageDeflate, negotiate_deflate
from rtcore.wire.http import Request, render_response
from rtcore.wire.http_request import split_list


__all__ = [
    "WEBSOCKET_GUID",
    "WEBSOCKET_VERSION",
    "WebSocketAccept",
    "accept_key",
    "accept_websocket",
]

# RFC 6455 section 1.3: appended to the client's key before hashing.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# The only protocol version this server speaks (RFC 6455 section 4.1).
WEBSOCKET_VERSION = "13"

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Response headers the handshake owns; extra_headers may not set them.
_RESERVED_HEADERS = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "content-length",
        "transfer-encoding",
    }
)


# The request headers the handshake reads, collected in one pass over the request.
_HANDSHAKE_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-version",
        "sec-websocket-key",
        "origin",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    }
)

_NO_VALUES: list[str] = []

# The 101 response up to the accept value, and its end (no subprotocol,
# extension or extra header): the common response is written without rendering.
_RESPONSE_HEAD = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: "
)


def _collect_headers(request: Request) -> dict[str, list[str]]:
    """The values of every header the handshake reads, by lowercased name, in order."""
    found: dict[str, list[str]] = {}
    for name, value in request.headers:
        if name in _HANDSHAKE_HEADERS:
            values = found.get(name)
            if values is None:
                found[name] = [value]
            else:
                values.append(value)
    return found


def _list_items(values: list[str]) -> list[str]:
    """Split comma-separated header values as ``Request.header_values(split=True)`` does."""
    if len(values) == 1:
        value = values[0]
        if "," not in value and '"' not in value:
            item = value.strip(" \t")
            return [item] if item else []
    return [item for value in values for item in split_list(value)]


def _offers(values: list[str], token: str) -> bool:
    """Whether the comma-separated header ``values`` hold ``token`` (any case)."""
    if len(values) == 1 and values[0].lower() == token:
        return True  # the usual request: one value, that token alone
    return any(item.lower() == token for item in _list_items(values))


class WebSocketAccept(NamedTuple):
    """A successful handshake (immutable; a named tuple, cheaper to build than
    a frozen dataclass, one per connection)."""

    # The complete "HTTP/1.1 101 Switching Protocols" response to write.
    response: bytes
    # The selected subprotocol, or None.
    subprotocol: str | None
    # The negotiated permessage-deflate extension, or None (no compression).
    deflate: PerMessageDeflate | None
    # The request that was accepted.
    request: Request


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``: base64(SHA-1(key + GUID))."""
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def _quote(value: str, limit: int = 80) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


# The last configuration _check_config accepted, when made of tuples (immutable):
# a server passes the same objects with every request.
_checked_config: tuple[object, object] = ((), ())


def _check_config(subprotocols: Sequence[str], extra_headers: Sequence[tuple[str, str]]) -> None:
    global _checked_config
    last_subprotocols, last_extra_headers = _checked_config
    if subprotocols is last_subprotocols and extra_headers is last_extra_headers:
        return
    _validate_config(subprotocols, extra_headers)
    if (
        type(subprotocols) is tuple
        and type(extra_headers) is tuple
        and all(type(header) is tuple for header in extra_headers)
    ):
        _checked_config = (subprotocols, extra_headers)


def _validate_config(subprotocols: Sequence[str], extra_headers: Sequence[tuple[str, str]]) -> None:
    if isinstance(subprotocols, str):
        raise ValueError(
            f"subprotocols must be a sequence of strings, not the string {subprotocols!r}"
        )
    for name in subprotocols:
        if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
            raise ValueError(f"subprotocol {name!r} is not a valid token")
    for header in extra_headers:
        if len(header) != 2:
            raise ValueError(f"extra_headers items must be (name, value) pairs, got {header!r}")
        if header[0].lower() in _RESERVED_HEADERS:
            raise ValueError(f"extra_headers must not set {header[0]}: the handshake sets it")


def _check_request(request: Request, found: dict[str, list[str]]) -> str:
    """Validate the handshake headers (``found``: see _collect_headers); return the key."""
    if request.method != "GET":
        raise HandshakeError(
            405,
            f"the WebSocket handshake requires GET, not {_quote(request.method)}",
            [("Allow", "GET")],
        )

    version = request.http_version
    major, _, minor = version.partition(".")
    if version != "1.1" and (
        not (major.isdigit() and minor.isdigit()) or (int(major), int(minor)) < (1, 1)
    ):
        raise HandshakeError(
            400,
            f"the WebSocket handshake requires HTTP/1.1 or later, got HTTP/{request.http_version}",
        )

    hosts = found.get("host", _NO_VALUES)
    if not hosts:
        raise HandshakeError(400, "missing Host header")
    if len(hosts) > 1:
        raise HandshakeError(400, "multiple Host headers")
    if not hosts[0]:
        raise HandshakeError(400, "empty Host header")

    upgrade = found.get("upgrade", _NO_VALUES)
    if not upgrade:
        raise HandshakeError(400, "missing Upgrade header (expected 'websocket')")
    if not _offers(upgrade, "websocket"):
        raise HandshakeError(
            400, f"the Upgrade header does not offer 'websocket': {_quote(', '.join(upgrade))}"
        )

    connection = found.get("connection", _NO_VALUES)
    if not connection:
        raise HandshakeError(400, "missing Connection header (expected 'Upgrade')")
    if not _offers(connection, "upgrade"):
        raise HandshakeError(
            400,
            f"the Connection header lacks the 'upgrade' option: {_quote(', '.join(connection))}",
        )

    versions = found.get("sec-websocket-version", _NO_VALUES)
    if versions != [WEBSOCKET_VERSION]:
        version_headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", WEBSOCKET_VERSION),
        ]
        if not versions:
            message = "missing Sec-WebSocket-Version header"
        else:
            message = f"unsupported WebSocket version {_quote(', '.join(versions))}"
        raise HandshakeError(
            426, f"{message} (this server speaks version {WEBSOCKET_VERSION})", version_headers
        )

    keys = found.get("sec-websocket-key", _NO_VALUES)
    if not keys:
        raise HandshakeError(400, "missing Sec-WebSocket-Key header")
    if len(keys) > 1:
        raise HandshakeError(400, "multiple Sec-WebSocket-Key headers")
    key = keys[0]
    try:
        raw = binascii.a2b_base64(key.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(
            400, f"Sec-WebSocket-Key must be the base64 encoding of 16 bytes, got {_quote(key)}"
        )
    return key


def _select_subprotocol(
    request: Request,
    found: dict[str, list[str]],
    subprotocols: Sequence[str],
    select_subprotocol: Callable[[Request, list[str]], str | None] | None,
    prefer_server_order: bool,
) -> str | None:
    offered = _list_items(found.get("sec-websocket-protocol", _NO_VALUES))
    for name in offered:
        if not _TOKEN_RE.fullmatch(name):
            raise HandshakeError(
                400, f"invalid subprotocol {_quote(name)} in Sec-WebSocket-Protocol"
            )
    if select_subprotocol is not None:
        chosen = select_subprotocol(request, list(offered))
        if chosen is not None and (not isinstance(chosen, str) or chosen not in offered):
            raise ValueError(
                f"select_subprotocol returned {chosen!r}, which the client did not offer "
                f"(offered: {offered})"
            )
        return chosen
    if prefer_server_order:
        return next((name for name in subprotocols if name in offered), None)
    return next((name for name in offered if name in subprotocols), None)


def accept_websocket(
    request: Request,
    *,
    subprotocols: Sequence[str] = (),
    select_subprotocol: Callable[[Request, list[str]], str | None] | None = None,
    prefer_server_order: bool = False,
    check_origin: Callable[[str | None], bool] | None = None,
    deflate: DeflateOptions | None = None,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> WebSocketAccept:
    """Validate a WebSocket upgrade request and build the 101 response.

    Args:
        request: the parsed request (see :class:`rtcore.wire.http.HttpParser`).
        subprotocols: subprotocols the server supports. By default the first
            one *the client* offered that is in this list is selected; none
            in common means no ``Sec-WebSocket-Protocol`` in the response
            (the client decides whether to go on).
        select_subprotocol: replaces the default choice. Called as
            ``select_subprotocol(request, offered)`` (``offered`` may be
            empty); returns one of ``offered`` or ``None``. It may raise
            :class:`~rtcore.errors.HandshakeError` to refuse the connection.
        prefer_server_order: pick the first of ``subprotocols`` the client
            offered, instead of the first offered that the server supports.
        check_origin: called with the ``Origin`` header value (``None`` when
            absent); returning false refuses the request with 403. Without
            it every origin is accepted.
        deflate: permessage-deflate options; ``None`` disables compression
            (the ``Sec-WebSocket-Extensions`` header is then ignored).
        extra_headers: more response headers (``Set-Cookie``...), after the
            handshake's own; they may not set ``Upgrade``, ``Connection``,
            ``Sec-WebSocket-*``, ``Content-Length`` or ``Transfer-Encoding``.

    Returns:
        The response bytes, the subprotocol, the extension and the request.

    Raises:
        HandshakeError: the request is not an acceptable WebSocket handshake;
            render it with :func:`rtcore.wire.http.error_response` and close.
        ValueError: a configuration error: an invalid entry in
            ``subprotocols`` or ``extra_headers``, or ``select_subprotocol``
            returned a subprotocol the client did not offer.
    """
    _check_config(subprotocols, extra_headers)
    found = _collect_headers(request)
    key = _check_request(request, found)

    origins = found.get("origin", _NO_VALUES)
    if len(origins) > 1:
        raise HandshakeError(400, "multiple Origin headers")
    origin = origins[0] if origins else None
    if check_origin is not None and not check_origin(origin):
        if origin is None:
            raise HandshakeError(403, "requests without an Origin header are not allowed")
        raise HandshakeError(403, f"origin {_quote(origin)} is not allowed")

    subprotocol = _select_subprotocol(
        request, found, subprotocols, select_subprotocol, prefer_server_order
    )

    extension: PerMessageDeflate | None = None
    extension_header: str | None = None
    if deflate is not None:
        negotiated = negotiate_deflate(found.get("sec-websocket-extensions", []), deflate)
        if negotiated is not None:
            extension_header, extension = negotiated

    accept = accept_key(key)
    if subprotocol is None and extension_header is None and not extra_headers:
        # The same bytes render_response gives, without rendering.
        response = b"".join((_RESPONSE_HEAD, accept.encode("ascii"), b"\r\n\r\n"))
    else:
        headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept),
        ]
        if subprotocol is not None:
            headers.append(("Sec-WebSocket-Protocol", subprotocol))
        if extension_header is not None:
            headers.append(("Sec-WebSocket-Extensions", extension_header))
        headers.extend(extra_headers)
        response = render_response(101, headers)
    return WebSocketAccept(
        response=response, subprotocol=subprotocol, deflate=extension, request=request
    )
