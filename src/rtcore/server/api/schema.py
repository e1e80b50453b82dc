"""The request fields of every method, as Centrifugo v6 names them, and their validation.

A field of the wrong type, or an unknown one, is an HttpError 400 naming the
field (``commands[2].publish.tags.x: expected a string, got an integer``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from rtcore.errors import HttpError
from rtcore.protocol.json import HugeInt
from rtcore.server.api.rawjson import RAW, ListOf, Raw


__all__ = ["BATCH_SPEC", "FIELDS", "LEGACY_SPEC", "RAW_SPECS", "kind_of", "request_params"]


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


def kind_of(value: Any) -> str:
    """What ``value`` is, for error messages ("an integer", "a JSON value")."""
    if value is True or value is False:
        return "a boolean"
    if isinstance(value, Raw):
        return "a JSON value"
    if isinstance(value, HugeInt):
        return f"an integer of {value.digits} digits"
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
        raise _Invalid(f"expected a string, got {kind_of(v)}")
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise _Invalid("string holds an unpaired surrogate escape") from None
    return v


def _bool(v: Any) -> bool:
    if v is True or v is False:
        return bool(v)
    raise _Invalid(f"expected true or false, got {kind_of(v)}")


def _int(lo: int, hi: int, what: str) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if type(v) is not int:
            raise _Invalid(f"expected an integer, got {kind_of(v)}")
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
    raise _Invalid(
        f"expected a JSON value, got {kind_of(v)}"
    )  # pragma: no cover - parser guarantees


def _str_list(v: Any) -> list[str]:
    if type(v) is not list:
        raise _Invalid(f"expected an array of strings, got {kind_of(v)}")
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
        raise _Invalid(f"expected an object of strings, got {kind_of(v)}")
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
            raise _Invalid(f"expected an object, got {kind_of(v)}")
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

# What publish and broadcast take besides where to publish.
_PUBLICATION: Final = {
    "data": _raw,
    "b64data": _str,
    "skip_history": _bool,
    "tags": _str_map,
    "idempotency_key": _str,
    "delta": _bool,
    "version": _unsupported(_u64),
    "version_epoch": _unsupported(_str),
}
# The last fields of the methods acting on a user's connections: their session
# (label filters and all_users are not implemented).
_SELECTION: Final = {
    "session": _str,
    "label_filter": _NO_FILTER,
    "all_users": _unsupported(_bool),
}

# Request fields of every method, as Centrifugo v6 names them.
FIELDS: Final[dict[str, dict[str, Callable[[Any], Any]]]] = {
    "publish": {"channel": _str, **_PUBLICATION},
    "broadcast": {"channels": _str_list, **_PUBLICATION},
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
        **_SELECTION,
    },
    "unsubscribe": {
        "channel": _str,
        "user": _str,
        "client": _str,
        **_SELECTION,
    },
    "disconnect": {
        "user": _str,
        "disconnect": _DISCONNECT,
        "client": _str,
        "whitelist": _str_list,
        **_SELECTION,
    },
    "refresh": {
        "user": _str,
        "client": _str,
        "expired": _bool,
        "expire_at": _i64,
        "info": _raw,
        **_SELECTION,
    },
    "presence": {"channel": _str},
    "presence_stats": {"channel": _str},
    "history": {"channel": _str, "limit": _i32, "since": _POSITION, "reverse": _bool},
    "history_remove": {"channel": _str},
    "channels": {"pattern": _str},
    "info": {},
    "rpc": {"method": _str, "params": _raw},
    # Map channels (server/api/map_methods.py). Ordered maps, versions and
    # stream-only data are not built.
    "map_publish": {
        "channel": _str,
        "key": _str,
        "data": _raw,
        "b64data": _str,
        "tags": _str_map,
        "idempotency_key": _str,
        "stream_data": _unsupported(_raw),
        "b64stream_data": _unsupported(_str),
        "delta": _unsupported(_bool),
        "version": _unsupported(_u64),
        "version_epoch": _unsupported(_str),
        "score": _unsupported(_i64),
        "key_mode": _str,
    },
    "map_remove": {"channel": _str, "key": _str, "idempotency_key": _str},
    "map_read_state": {
        "channel": _str,
        "cursor": _str,
        "limit": _i32,
        "key": _str,
        "asc": _unsupported(_bool),
        "revision_offset": _u64,
        "revision_epoch": _str,
    },
    "map_read_stream": {
        "channel": _str,
        "since_offset": _u64,
        "since_epoch": _str,
        "limit": _i32,
        "reverse": _bool,
    },
    "map_stats": {"channel": _str},
    "map_clear": {"channel": _str},
}
_CONVERTERS: Final = {method: _message(fields) for method, fields in FIELDS.items()}

# Which fields hold raw JSON, per method (for the parser).
RAW_SPECS: Final[dict[str, dict[str, Any]]] = {
    method: {key: RAW for key, conv in fields.items() if conv is _raw}
    for method, fields in FIELDS.items()
}
BATCH_SPEC: Final = {"commands": ListOf(dict(RAW_SPECS))}
LEGACY_SPEC: Final = {"params": RAW}


def request_params(method: str, value: Any, where: str) -> dict[str, Any]:
    """Validate ``value`` as the request of ``method``; HttpError 400 naming the field."""
    try:
        return _CONVERTERS[method](value)
    except _Invalid as exc:
        path = exc.where()
        at = f"{where}.{path}" if where and path else (where or path)
        raise HttpError(400, f"{at}: {exc.reason}" if at else exc.reason) from None
