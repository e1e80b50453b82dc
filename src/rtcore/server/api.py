"""The server HTTP API: Centrifugo's ``POST /api/<method>`` (PROTOCOL.md §7).

Requests and responses are exactly Centrifugo's JSON: snake_case keys, a
``{"result": {...}}`` or ``{"error": {"code", "message"}}`` envelope in an
HTTP 200 response, raw JSON in ``data``/``info``/``params`` (kept byte for
byte, never re-serialised) and base64 in ``b64data``/``b64info``. So the
``cent`` client and any Centrifugo integration work unchanged.

What the endpoints answer:

* ``POST /api/<method>``: one method; ``POST /api/batch``: several.
* ``POST /api`` (legacy): ``{"method": "publish", "params": {...}}``, several
  commands separated by newlines, one reply line each.
* 401 without a valid key (``X-API-Key: <key>``, ``Authorization: apikey
  <key>`` or ``?api_key=<key>``) unless ``api.insecure``; 405 for a method
  other than POST; 404 for an unknown method; 400 with a message for a body
  that is not JSON, not an object, or has a field of the wrong type or an
  unknown field; 413 (the server's body limit); 503 while shutting down.
* Errors Centrifugo reports inside a 200 body (107 empty channel, 102
  unknown namespace, 108 history/presence off, 112 wrong epoch, 100 internal)
  are reported the same way, or as HTTP status codes with
  ``api.error_mode = "transport"`` or the request header
  ``X-Centrifugo-Error-Mode: transport``.

See docs/api.md for every method's fields.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from rtcore.errors import HttpError
from rtcore.protocol.codes import ClientError
from rtcore.protocol.types import ClientInfo, Publication, StreamPosition
from rtcore.transports.routing import HttpHandler


if TYPE_CHECKING:
    from rtcore.engine.node import Node
    from rtcore.transports.http_server import HttpResponseWriter, WebSocketRoute
    from rtcore.wire.http import Request


__all__ = [
    "ApiError",
    "ServerApi",
    "InternalApp",
    "METHODS",
    "mount_internal",
]

logger = logging.getLogger("rtcore.server.api")

_JSON_HEADERS: Final = [("Content-Type", "application/json")]
_TEXT_HEADERS: Final = [("Content-Type", "text/plain; charset=utf-8")]

#: Methods served at ``/api/<method>`` (``batch`` included).
METHODS: Final = (
    "publish",
    "broadcast",
    "subscribe",
    "unsubscribe",
    "disconnect",
    "refresh",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "channels",
    "info",
    "rpc",
    "batch",
)

# Legacy ``POST /api``: Centrifugo's numeric method ids.
_LEGACY_IDS: Final = {
    0: "publish",
    1: "broadcast",
    2: "unsubscribe",
    3: "disconnect",
    4: "presence",
    5: "presence_stats",
    6: "history",
    7: "history_remove",
    8: "channels",
    9: "info",
    10: "rpc",
    11: "subscribe",
    12: "refresh",
}

# Error-object code -> HTTP status in the "transport" error mode.
_TRANSPORT_STATUS: Final = {100: 500, 102: 404, 104: 404, 107: 400, 108: 400, 112: 416, 113: 409}


class ApiError(Exception):
    """An error reported in the response body: ``{"code": ..., "message": ...}``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def _bad_request(detail: str) -> ApiError:
    return ApiError(107, f"bad request: {detail}")


ERROR_INTERNAL = ApiError(100, "internal server error")
ERROR_NOT_FOUND = ApiError(104, "not found")
ERROR_NOT_AVAILABLE = ApiError(108, "not available")
ERROR_UNRECOVERABLE_POSITION = ApiError(112, "unrecoverable position")


# -- JSON in: raw-preserving parser --------------------------------------------


class Raw(bytes):
    """The exact source text of a raw-JSON field (``data``, ``info``, ``params``)."""

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
_scan_once: Final = _DECODER.scan_once  # type: ignore[attr-defined]
_scanstring: Final = json.decoder.scanstring  # type: ignore[attr-defined]
_WS: Final = re.compile(r"[ \t\n\r]*")


def _skip_ws(s: str, i: int) -> int:
    """The index of the first non-whitespace character at or after ``i``."""
    m = _WS.match(s, i)
    return m.end() if m is not None else i


# A parse spec says which values to keep as raw source text: _RAW for a
# value, a dict for an object's keys, a _ListOf for an array's items.
_RAW: Final = object()


class _ListOf:
    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


def _scan(s: str, i: int) -> tuple[Any, int]:
    try:
        return _scan_once(s, i)  # type: ignore[no-any-return]
    except StopIteration:
        raise json.JSONDecodeError("Expecting value", s, i) from None


def _parse_value(s: str, i: int, spec: Any) -> tuple[Any, int]:
    if spec is _RAW:
        value, end = _scan(s, i)
        return (None if value is None else Raw(s[i:end].encode("utf-8"))), end
    if type(spec) is dict and s.startswith("{", i):
        return _parse_object(s, i, spec)
    if type(spec) is _ListOf and s.startswith("[", i):
        return _parse_array(s, i, spec.item)
    return _scan(s, i)


def _parse_object(s: str, i: int, spec: dict[str, Any]) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    i = _skip_ws(s, i + 1)
    if s.startswith("}", i):
        return out, i + 1
    while True:
        if not s.startswith('"', i):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", s, i)
        key, i = _scanstring(s, i + 1, True)
        i = _skip_ws(s, i)
        if not s.startswith(":", i):
            raise json.JSONDecodeError("Expecting ':' delimiter", s, i)
        i = _skip_ws(s, i + 1)
        out[key], i = _parse_value(s, i, spec.get(key))
        i = _skip_ws(s, i)
        if s.startswith(",", i):
            i = _skip_ws(s, i + 1)
        elif s.startswith("}", i):
            return out, i + 1
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", s, i)


def _parse_array(s: str, i: int, item: Any) -> tuple[list[Any], int]:
    out: list[Any] = []
    i = _skip_ws(s, i + 1)
    if s.startswith("]", i):
        return out, i + 1
    while True:
        value, i = _parse_value(s, i, item)
        out.append(value)
        i = _skip_ws(s, i)
        if s.startswith(",", i):
            i = _skip_ws(s, i + 1)
        elif s.startswith("]", i):
            return out, i + 1
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", s, i)


def _decode_text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HttpError(400, f"request body is not UTF-8 (byte {exc.start})") from None


def _json_error(exc: Exception) -> HttpError:
    if isinstance(exc, json.JSONDecodeError):
        return HttpError(400, f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
    if isinstance(exc, RecursionError):
        return HttpError(400, "invalid JSON: nested too deeply")
    return HttpError(400, f"invalid JSON: {exc}")


def parse_json(text: str, spec: Any) -> Any:
    """Parse one JSON text, keeping the fields ``spec`` marks raw; HttpError 400 if invalid."""
    try:
        value, end = _parse_value(text, _skip_ws(text, 0), spec)
        end = _skip_ws(text, end)
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
    except (ValueError, RecursionError) as exc:
        raise _json_error(exc) from None
    return value


def _iter_json(text: str, spec: Any) -> Iterator[Any]:
    """Successive JSON values separated by whitespace (legacy ``/api`` bodies)."""
    i = _skip_ws(text, 0)
    while i < len(text):
        try:
            value, i = _parse_value(text, i, spec)
        except (ValueError, RecursionError) as exc:
            raise _json_error(exc) from None
        yield value
        i = _skip_ws(text, i)


# -- field validation -------------------------------------------------------------


class _Invalid(Exception):
    """A field of the wrong type; ``path`` is filled innermost-first."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def where(self) -> str:
        out = ""
        for part in reversed(self.path):
            out += part if part.startswith("[") or not out else "." + part
        return out


def _kind(value: Any) -> str:
    if value is True or value is False:
        return "a boolean"
    if isinstance(value, Raw):
        return "a JSON value"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


def _str(v: Any) -> str:
    if type(v) is not str:
        raise _Invalid(f"expected a string, got {_kind(v)}")
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise _Invalid("string holds an unpaired surrogate escape") from None
    return v


def _bool(v: Any) -> bool:
    if v is True or v is False:
        return bool(v)
    raise _Invalid(f"expected true or false, got {_kind(v)}")


def _int(lo: int, hi: int, what: str) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if type(v) is not int:
            raise _Invalid(f"expected an integer, got {_kind(v)}")
        if not lo <= v <= hi:
            raise _Invalid(f"{v} is out of range for {what}")
        return v

    return conv


_i32: Final = _int(-(1 << 31), (1 << 31) - 1, "int32")
_u32: Final = _int(0, (1 << 32) - 1, "uint32")
_i64: Final = _int(-(1 << 63), (1 << 63) - 1, "int64")
_u64: Final = _int(0, (1 << 64) - 1, "uint64")


def _raw(v: Any) -> Raw:
    if isinstance(v, Raw):
        return v
    raise _Invalid(f"expected a JSON value, got {_kind(v)}")  # pragma: no cover - parser guarantees


def _str_list(v: Any) -> list[str]:
    if type(v) is not list:
        raise _Invalid(f"expected an array of strings, got {_kind(v)}")
    out = []
    for n, item in enumerate(v):
        try:
            out.append(_str(item))
        except _Invalid as exc:
            exc.path.append(f"[{n}]")
            raise
    return out


def _str_map(v: Any) -> dict[str, str]:
    if type(v) is not dict:
        raise _Invalid(f"expected an object of strings, got {_kind(v)}")
    out = {}
    for k, item in v.items():
        try:
            out[_str(k)] = _str(item)
        except _Invalid as exc:
            exc.path.append(k)
            raise
    return out


def _message(fields: dict[str, Callable[[Any], Any]]) -> Callable[[Any], dict[str, Any]]:
    """An object with these fields; null means absent; unknown fields are refused."""

    def conv(v: Any) -> dict[str, Any]:
        if type(v) is not dict:
            raise _Invalid(f"expected an object, got {_kind(v)}")
        out: dict[str, Any] = {}
        for key, value in v.items():
            field_conv = fields.get(key)
            if field_conv is None:
                exc = _Invalid(f"unknown field (known: {', '.join(fields)})")
                exc.path.append(key)
                raise exc
            if value is None:
                continue
            try:
                out[key] = field_conv(value)
            except _Invalid as exc:
                exc.path.append(key)
                raise
        return out

    return conv


def _unsupported(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A Centrifugo field this server does not implement: only its zero value is accepted."""

    def check(v: Any) -> Any:
        value = conv(v)
        if value:
            raise _Invalid("not supported by this server (only its empty value is accepted)")
        return value

    return check


_POSITION: Final = _message({"offset": _u64, "epoch": _str})
_BOOL_VALUE: Final = _message({"value": _bool})
_OVERRIDE: Final = _message(
    {
        "presence": _BOOL_VALUE,
        "join_leave": _BOOL_VALUE,
        "force_push_join_leave": _BOOL_VALUE,
        "force_recovery": _BOOL_VALUE,
        "force_positioning": _BOOL_VALUE,
    }
)
_DISCONNECT: Final = _message({"code": _u32, "reason": _str})
_NO_FILTER: Final = _unsupported(lambda v: v)

# Request fields of every method, as Centrifugo v6 names them.
_FIELDS: Final[dict[str, dict[str, Callable[[Any], Any]]]] = {
    "publish": {
        "channel": _str,
        "data": _raw,
        "b64data": _str,
        "skip_history": _bool,
        "tags": _str_map,
        "idempotency_key": _str,
        "delta": _unsupported(_bool),
        "version": _unsupported(_u64),
        "version_epoch": _unsupported(_str),
    },
    "broadcast": {
        "channels": _str_list,
        "data": _raw,
        "b64data": _str,
        "skip_history": _bool,
        "tags": _str_map,
        "idempotency_key": _str,
        "delta": _unsupported(_bool),
        "version": _unsupported(_u64),
        "version_epoch": _unsupported(_str),
    },
    "subscribe": {
        "channel": _str,
        "user": _str,
        "expire_at": _i64,
        "info": _raw,
        "b64info": _str,
        "client": _str,
        "data": _raw,
        "b64data": _str,
        "recover_since": _POSITION,
        "override": _OVERRIDE,
        "session": _str,
        "label_filter": _NO_FILTER,
        "all_users": _unsupported(_bool),
    },
    "unsubscribe": {
        "channel": _str,
        "user": _str,
        "client": _str,
        "session": _str,
        "label_filter": _NO_FILTER,
        "all_users": _unsupported(_bool),
    },
    "disconnect": {
        "user": _str,
        "disconnect": _DISCONNECT,
        "client": _str,
        "whitelist": _str_list,
        "session": _str,
        "label_filter": _NO_FILTER,
        "all_users": _unsupported(_bool),
    },
    "refresh": {
        "user": _str,
        "client": _str,
        "expired": _bool,
        "expire_at": _i64,
        "info": _raw,
        "session": _str,
        "label_filter": _NO_FILTER,
        "all_users": _unsupported(_bool),
    },
    "presence": {"channel": _str},
    "presence_stats": {"channel": _str},
    "history": {"channel": _str, "limit": _i32, "since": _POSITION, "reverse": _bool},
    "history_remove": {"channel": _str},
    "channels": {"pattern": _str},
    "info": {},
    "rpc": {"method": _str, "params": _raw},
}
_CONVERTERS: Final = {method: _message(fields) for method, fields in _FIELDS.items()}

# Which fields hold raw JSON, per method (for the parser).
_RAW_SPECS: Final[dict[str, dict[str, Any]]] = {
    method: {key: _RAW for key, conv in fields.items() if conv is _raw}
    for method, fields in _FIELDS.items()
}
_BATCH_SPEC: Final = {"commands": _ListOf(dict(_RAW_SPECS))}
_LEGACY_SPEC: Final = {"params": _RAW}


def _params(method: str, value: Any, where: str) -> dict[str, Any]:
    """Validate ``value`` as the request of ``method``; HttpError 400 naming the field."""
    try:
        return _CONVERTERS[method](value)
    except _Invalid as exc:
        path = exc.where()
        at = f"{where}.{path}" if where and path else (where or path)
        raise HttpError(400, f"{at}: {exc.reason}" if at else exc.reason) from None


# -- JSON out -----------------------------------------------------------------------


def _dump(value: Any) -> bytes:
    """Compact JSON; :class:`Raw` values are written as they are."""
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, dict):
        return b"{" + b",".join(_dump(str(k)) + b":" + _dump(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(_dump(v) for v in value) + b"]"
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


def _put_bytes(out: dict[str, Any], key: str, data: bytes | None) -> None:
    """``key``: raw JSON when ``data`` is JSON, else ``b64<key>``: base64 (binary payloads)."""
    if not data:
        return
    if _is_json(data):
        out[key] = Raw(data)
    else:
        out["b64" + key] = base64.b64encode(data).decode("ascii")


def _client_info(info: ClientInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"user": info.user, "client": info.client}
    _put_bytes(out, "conn_info", info.conn_info)
    _put_bytes(out, "chan_info", info.chan_info)
    return out


def _publication(pub: Publication) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if _is_json(pub.data):
        out["data"] = Raw(pub.data)
    else:
        out["b64data"] = base64.b64encode(pub.data).decode("ascii")
    if pub.info is not None:
        out["info"] = _client_info(pub.info)
    if pub.offset:
        out["offset"] = pub.offset
    if pub.tags:
        out["tags"] = dict(pub.tags)
    return out


def _position(position: StreamPosition) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if position.offset:
        out["offset"] = position.offset
    if position.epoch:
        out["epoch"] = position.epoch
    return out


# -- channel patterns (Centrifugo uses gobwas/glob syntax) ---------------------------


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob: ``*``, ``?``, ``[abc]``, ``[!a-z]``, ``{a,b}`` and ``\\`` escapes.

    Raises:
        ValueError: an unclosed ``[`` or ``{``, or a trailing backslash.
    """
    out: list[str] = []
    depth = 0
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("trailing backslash")
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if end < 0:
                raise ValueError(f"unclosed '[' at {i}")
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            if not body:
                raise ValueError(f"empty character class at {i}")
            out.append(
                "[" + ("^" if negate else "") + body.replace("\\", "\\\\").replace("^", "\\^") + "]"
            )
            i = end + 1
            continue
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ValueError("unclosed '{'")
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error as exc:
        raise ValueError(str(exc)) from None


# -- the executor ---------------------------------------------------------------------

RpcHandler = Callable[[bytes | None], Awaitable[Any]]


def _decode_b64(value: str, key: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_request(f"{key} is not valid base64") from None


def _payload(p: dict[str, Any], key: str) -> bytes | None:
    """``b64<key>`` (decoded) wins over ``<key>`` (raw JSON), as in Centrifugo."""
    b64 = p.get("b64" + key)
    if b64:
        return _decode_b64(b64, "b64" + key)
    raw = p.get(key)
    return bytes(raw) if raw is not None else None


def _override(value: dict[str, Any] | None) -> dict[str, bool] | None:
    if not value:
        return None
    return {name: bool(flag.get("value", False)) for name, flag in value.items()}


class _Executor:
    """Runs API methods against a node; results are plain data, errors :class:`ApiError`."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.rpc_handlers: dict[str, RpcHandler] = {}

    async def call(self, method: str, p: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, "_" + method)
        try:
            return await handler(p)  # type: ignore[no-any-return]
        except ApiError:
            raise
        except ClientError as exc:
            raise ApiError(exc.code, exc.message) from None
        except asyncio.CancelledError:
            raise
        except ConnectionError as exc:
            # The engine is unreachable (e.g. Redis down): one line, not a
            # traceback per request; /health and rtcore_engine_up say more.
            logger.warning("API %s failed: engine unavailable: %s", method, exc)
            raise ERROR_INTERNAL from None
        except Exception:
            logger.exception("API %s failed", method)
            raise ERROR_INTERNAL from None

    @staticmethod
    def _channel(p: dict[str, Any]) -> str:
        channel = p.get("channel", "")
        if not channel:
            raise _bad_request("channel is required")
        return str(channel)

    async def _publish_one(self, channel: str, data: bytes, p: dict[str, Any]) -> dict[str, Any]:
        position, _suppressed = await self.node.publish(
            channel,
            data,
            tags=p.get("tags") or None,
            idempotency_key=p.get("idempotency_key") or None,
            skip_history=bool(p.get("skip_history")),
        )
        return _position(position)

    async def _publish(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        data = _payload(p, "data")
        if data is None:
            raise _bad_request("data (or b64data) is required")
        return await self._publish_one(channel, data, p)

    async def _broadcast(self, p: dict[str, Any]) -> dict[str, Any]:
        channels = p.get("channels") or []
        if not channels:
            raise _bad_request("channels is required")
        data = _payload(p, "data")
        if data is None:
            raise _bad_request("data (or b64data) is required")

        async def one(channel: str) -> dict[str, Any]:
            try:
                if not channel:
                    raise _bad_request("channel must not be empty")
                return {"result": await self._publish_guarded(channel, data, p)}
            except ApiError as exc:
                return {"error": exc.to_json()}

        return {"responses": list(await asyncio.gather(*(one(ch) for ch in channels)))}

    async def _publish_guarded(
        self, channel: str, data: bytes, p: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            return await self._publish_one(channel, data, p)
        except ApiError:
            raise
        except ClientError as exc:
            raise ApiError(exc.code, exc.message) from None
        except ConnectionError as exc:
            logger.warning("API broadcast to %s failed: engine unavailable: %s", channel, exc)
            raise ERROR_INTERNAL from None
        except Exception:
            logger.exception("API broadcast to %s failed", channel)
            raise ERROR_INTERNAL from None

    async def _subscribe(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        since = p.get("recover_since")
        expire_at = p.get("expire_at", 0)
        if expire_at < 0:
            raise _bad_request("expire_at must not be negative")
        await self.node.subscribe(
            p.get("user", ""),
            channel,
            client=p.get("client", ""),
            session=p.get("session", ""),
            info=_payload(p, "info"),
            data=_payload(p, "data"),
            recover_since=StreamPosition(since.get("offset", 0), since.get("epoch", ""))
            if since
            else None,
            override=_override(p.get("override")),
            expire_at=expire_at,
        )
        return {}

    async def _unsubscribe(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = p.get("channel", "")
        if channel:
            self.node._channel_options(channel)
        await self.node.unsubscribe(
            p.get("user", ""), channel, client=p.get("client", ""), session=p.get("session", "")
        )
        return {}

    async def _disconnect(self, p: dict[str, Any]) -> dict[str, Any]:
        code, reason = 3503, "force disconnect"
        d = p.get("disconnect")
        if d is not None:
            code = d.get("code", 0)
            reason = d.get("reason", "")
            if not 3000 <= code <= 4999:
                raise _bad_request("disconnect.code must be within 3000..4999")
            if len(reason.encode("utf-8")) > 123:
                raise _bad_request("disconnect.reason must be at most 123 bytes of UTF-8")
        await self.node.disconnect(
            p.get("user", ""),
            code=code,
            reason=reason,
            client=p.get("client", ""),
            session=p.get("session", ""),
            whitelist=p.get("whitelist") or None,
        )
        return {}

    async def _refresh(self, p: dict[str, Any]) -> dict[str, Any]:
        expire_at = p.get("expire_at", 0)
        if expire_at < 0:
            raise _bad_request("expire_at must not be negative")
        await self.node.refresh(
            p.get("user", ""),
            client=p.get("client", ""),
            session=p.get("session", ""),
            expired=bool(p.get("expired")),
            expire_at=expire_at or None,
            info=_payload(p, "info"),
        )
        return {}

    async def _presence(self, p: dict[str, Any]) -> dict[str, Any]:
        presence = await self.node.presence(self._channel(p))
        return {"presence": {cid: _client_info(info) for cid, info in presence.items()}}

    async def _presence_stats(self, p: dict[str, Any]) -> dict[str, Any]:
        stats = await self.node.presence_stats(self._channel(p))
        return {"num_clients": stats.num_clients, "num_users": stats.num_users}

    async def _history(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        limit = p.get("limit", 0)
        if limit < -1:
            raise _bad_request("limit must be -1 (all), 0 (position only) or positive")
        since = p.get("since")
        position = (
            StreamPosition(since.get("offset", 0), since.get("epoch", ""))
            if since is not None
            else None
        )
        result = await self.node.history(
            channel, limit=limit, since=position, reverse=bool(p.get("reverse"))
        )
        if position is not None and position.epoch and position.epoch != result.position.epoch:
            raise ERROR_UNRECOVERABLE_POSITION
        return {
            "publications": [_publication(pub) for pub in result.publications],
            "epoch": result.position.epoch,
            "offset": result.position.offset,
        }

    async def _history_remove(self, p: dict[str, Any]) -> dict[str, Any]:
        await self.node.history_remove(self._channel(p))
        return {}

    async def _channels(self, p: dict[str, Any]) -> dict[str, Any]:
        pattern = p.get("pattern", "")
        match = None
        if pattern:
            try:
                match = glob_to_regex(pattern).fullmatch
            except ValueError as exc:
                raise _bad_request(f"invalid pattern: {exc}") from None
        hub = self.node.hub
        return {
            "channels": {
                ch: {"num_clients": hub.num_subscribers(ch)}
                for ch in hub.channels()
                if match is None or match(ch)
            }
        }

    async def _info(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"nodes": [self.node.info()]}

    async def _rpc(self, p: dict[str, Any]) -> dict[str, Any]:
        method = p.get("method", "")
        if not method:
            raise _bad_request("method is required")
        handler = self.rpc_handlers.get(method)
        if handler is None:
            raise ERROR_NOT_FOUND
        params = p.get("params")
        data = await handler(bytes(params) if params is not None else None)
        if data is None:
            return {}
        if isinstance(data, bytes | bytearray):
            if not _is_json(bytes(data)):
                raise ERROR_INTERNAL
            return {"data": Raw(data)}
        return {"data": Raw(_dump(data))}


# -- HTTP -----------------------------------------------------------------------------


class ServerApi:
    """The ``/api`` HTTP handler of a node (mounted by :class:`~rtcore.server.app.NodeApp`).

    Args:
        node: the node the methods act on.

    Attributes:
        closing: set at shutdown; new requests get 503 while in-flight ones finish.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config.api
        self.executor = _Executor(node)
        self.closing = False
        self._in_flight = 0
        self._idle: asyncio.Event | None = None
        if not self.config.insecure and not self.config.key:
            logger.warning("api.key is empty: every server API request gets 401 (set api.key)")

    # -- extension and lifecycle ------------------------------------------------

    def add_rpc(self, method: str, handler: RpcHandler) -> None:
        """Serve the ``rpc`` method ``method``: ``handler(params_json_or_None)`` returns
        the result ``data`` (JSON bytes or a JSON-serialisable value) or raises
        :class:`ApiError`."""
        if not method:
            raise ValueError("rpc method name must not be empty")
        self.executor.rpc_handlers[method] = handler

    @property
    def in_flight(self) -> int:
        """Requests being executed now."""
        return self._in_flight

    async def drain(self, timeout: float) -> bool:
        """Refuse new requests (503) and wait up to ``timeout`` s for in-flight ones.

        Returns:
            True when nothing is in flight any more.
        """
        self.closing = True
        if not self._in_flight:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- request handling ---------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        """Whether the request carries the configured API key (or the API is insecure)."""
        if self.config.insecure:
            return True
        key = self.config.key
        if not key:
            return False
        given = request.header("x-api-key")
        if given is None:
            auth = request.header("authorization")
            if auth is not None:
                scheme, _, value = auth.partition(" ")
                if scheme.lower() == "apikey":
                    given = value.strip()
        if given is None:
            try:
                values = request.query_params().get("api_key")
            except HttpError:
                values = None
            given = values[0] if values else None
        return given is not None and hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8"))

    async def __call__(self, request: Request, response: HttpResponseWriter) -> None:
        if request.path == "/api":
            method = ""
        elif request.path.startswith("/api/") and len(request.path) > 5:
            method = request.path[5:]
        else:
            response.send(404, _TEXT_HEADERS, b"not found\n")
            return
        if not self.authorized(request):
            response.send(401, _TEXT_HEADERS, b"unauthorized: missing or wrong API key\n")
            return
        if request.method != "POST":
            response.send(
                405,
                [*_TEXT_HEADERS, ("Allow", "POST")],
                f"method {request.method} not allowed: the server API takes POST\n".encode(),
            )
            return
        if method and method not in METHODS:
            shown = method if len(method) <= 64 and method.isprintable() else method[:64] + "..."
            response.send(
                404,
                _TEXT_HEADERS,
                f"unknown API method {shown!r}; methods: {', '.join(METHODS)}\n".encode(),
            )
            return
        if self.closing:
            response.send(503, [*_TEXT_HEADERS, ("Retry-After", "1")], b"server is shutting down\n")
            return
        self._in_flight += 1
        try:
            status, body = await self._execute(method, request)
        except HttpError as exc:
            status, body = exc.status, (exc.message + "\n").encode()
            if status == 400:
                logger.debug("API request refused: %s", exc.message)
            response.send(status, _TEXT_HEADERS, body)
            return
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._idle is not None:
                self._idle.set()
        response.send(status, _JSON_HEADERS, body)

    async def _execute(self, method: str, request: Request) -> tuple[int, bytes]:
        text = _decode_text(request.body)
        if not method:
            return 200, await self._legacy(text)
        if method == "batch":
            return 200, _dump(await self._batch(text))
        value = parse_json(text, _RAW_SPECS[method]) if text.strip() else {}
        params = _params(method, value, "")
        try:
            result = await self.executor.call(method, params)
        except ApiError as exc:
            if self._transport_errors(request):
                return _TRANSPORT_STATUS.get(exc.code, 500), _dump(exc.to_json())
            return 200, _dump({"error": exc.to_json()})
        return 200, _dump({"result": result})

    def _transport_errors(self, request: Request) -> bool:
        if self.config.error_mode == "transport":
            return True
        mode = request.header("x-centrifugo-error-mode")
        return mode is not None and mode.strip().lower() == "transport"

    async def _batch(self, text: str) -> dict[str, Any]:
        value = parse_json(text, _BATCH_SPEC) if text.strip() else {}
        if type(value) is not dict:
            raise HttpError(400, f"expected a JSON object, got {_kind(value)}")
        for key in value:
            if key not in ("commands", "parallel"):
                raise HttpError(400, f"{key}: unknown field (known: commands, parallel)")
        commands = value.get("commands")
        if commands is None:
            commands = []
        parallel = value.get("parallel")
        if parallel is not None and type(parallel) is not bool:
            raise HttpError(400, f"parallel: expected true or false, got {_kind(parallel)}")
        if type(commands) is not list:
            raise HttpError(400, f"commands: expected an array, got {_kind(commands)}")
        # Validate every command before running any: a malformed batch runs nothing.
        jobs: list[tuple[str, dict[str, Any]] | ApiError] = []
        for n, command in enumerate(commands):
            where = f"commands[{n}]"
            if command is None:
                jobs.append(_bad_request("null command"))
                continue
            if type(command) is not dict:
                raise HttpError(400, f"{where}: expected an object, got {_kind(command)}")
            known = [k for k in command if k in _FIELDS and command[k] is not None]
            if not known:
                jobs.append(ERROR_NOT_FOUND)
            elif len(known) > 1:
                jobs.append(_bad_request(f"one method per command, got {', '.join(known)}"))
            else:
                method = known[0]
                jobs.append((method, _params(method, command[method], f"{where}.{method}")))

        async def run(job: tuple[str, dict[str, Any]] | ApiError) -> dict[str, Any]:
            if isinstance(job, ApiError):
                return {"error": job.to_json()}
            method, params = job
            try:
                return {method: await self.executor.call(method, params)}
            except ApiError as exc:
                return {"error": exc.to_json()}

        if parallel:
            replies = list(await asyncio.gather(*(run(job) for job in jobs)))
        else:
            replies = [await run(job) for job in jobs]
        return {"replies": replies}

    async def _legacy(self, text: str) -> bytes:
        if not text.strip():
            raise HttpError(400, "empty request body")
        lines: list[bytes] = []
        for n, command in enumerate(_iter_json(text, _LEGACY_SPEC)):
            if type(command) is not dict:
                raise HttpError(400, f"command {n}: expected an object, got {_kind(command)}")
            reply: dict[str, Any] = {}
            cid = command.get("id")
            if cid is not None:
                if type(cid) is not int or not 0 <= cid < (1 << 32):
                    raise HttpError(400, f"command {n}: id must be an unsigned 32-bit integer")
                if cid:
                    reply["id"] = cid
            method = self._legacy_method(command.get("method"), n)
            params = command.get("params")
            try:
                if method is None:
                    raise ERROR_NOT_FOUND
                try:
                    value = parse_json(params.decode("utf-8"), _RAW_SPECS[method]) if params else {}
                    p = _params(method, value, "params")
                except HttpError as exc:
                    raise _bad_request(exc.message) from None
                reply["result"] = await self.executor.call(method, p)
            except ApiError as exc:
                reply["error"] = exc.to_json()
            lines.append(_dump(reply))
        return b"\n".join(lines)

    @staticmethod
    def _legacy_method(value: Any, n: int) -> str | None:
        if value is None:
            return "publish"  # Centrifugo's enum value 0
        if type(value) is int:
            return _LEGACY_IDS.get(value)
        if type(value) is str:
            name = value.lower()
            return name if name in _FIELDS else None
        raise HttpError(
            400, f"command {n}: method must be a string or an integer, got {_kind(value)}"
        )


# -- the internal port ----------------------------------------------------------------


def _health(request: Request, response: HttpResponseWriter) -> None:
    response.send(200, _JSON_HEADERS, b"{}")


def mount_internal(app: Any) -> ServerApi | None:
    """Mount ``/api`` (and ``/api/<method>``) and ``/metrics`` on ``app`` as configured.

    ``app`` is a :class:`~rtcore.server.app.NodeApp` or an :class:`InternalApp`.
    Returns the API handler, or None when ``api.enabled`` is false.
    """
    node = app.node
    api = None
    if node.config.api.enabled:
        api = ServerApi(node)
        app.mount("/api", api)
        app.mount("/api/", api, prefix=True)
    if node.config.metrics.enabled:
        from rtcore.server.metrics import MetricsEndpoint

        app.mount("/metrics", MetricsEndpoint(node))
    return api


class InternalApp:
    """The application of the internal port (``api.port``): ``/api``, ``/metrics``, ``/health``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.http_routes: dict[str, HttpHandler] = {"/health": _health}
        self.http_prefixes: list[tuple[str, HttpHandler]] = []
        self.api = mount_internal(self)

    def mount(self, path: str, handler: HttpHandler, *, prefix: bool = False) -> None:
        if prefix:
            self.http_prefixes.append((path, handler))
        else:
            self.http_routes[path] = handler

    def route_websocket(self, request: Request) -> WebSocketRoute | None:
        return None

    def handle_http(self, request: Request, response: HttpResponseWriter) -> Awaitable[None] | None:
        handler = self.http_routes.get(request.path)
        if handler is None:
            for prefix, h in self.http_prefixes:
                if request.path.startswith(prefix):
                    handler = h
                    break
        if handler is None:
            response.send(404, _TEXT_HEADERS, b"not found\n")
            return None
        return handler(request, response)
