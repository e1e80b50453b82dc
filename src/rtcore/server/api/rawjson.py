"""JSON that keeps raw fields as their source text: parsing request bodies, writing responses.

``data``, ``info`` and ``params`` are kept byte for byte (never re-serialised):
a parse spec names them, and :class:`Raw` values are written back as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Final

from rtcore.errors import HttpError
from rtcore.protocol.json import check_json_text, scan_json_value


__all__ = [
    "RAW",
    "ListOf",
    "Raw",
    "decode_text",
    "dump",
    "is_json",
    "iter_json",
    "parse_json",
]


class Raw(bytes):
    """The exact source text of a raw-JSON field (``data``, ``info``, ``params``)."""

    __slots__ = ()


_scanstring: Final = json.decoder.scanstring  # type: ignore[attr-defined]
_WS: Final = re.compile(r"[ \t\n\r]*")


def _skip_ws(s: str, i: int) -> int:
    """The index of the first non-whitespace character at or after ``i``."""
    m = _WS.match(s, i)
    return m.end() if m is not None else i


# A parse spec says which values to keep as raw source text: RAW for a
# value, a dict for an object's keys, a ListOf for an array's items.
RAW: Final = object()


class ListOf:
    """The parse spec of an array whose items all follow ``item``."""

    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


def _scan(s: str, i: int) -> tuple[Any, int]:
    # NaN/Infinity are refused; an integer past Python's digit limit is valid
    # JSON (kept as HugeInt, never converted), so raw fields may hold one.
    return scan_json_value(s, i)


def _parse_value(s: str, i: int, spec: Any) -> tuple[Any, int]:
    if spec is RAW:
        value, end = _scan(s, i)
        return (None if value is None else Raw(s[i:end].encode("utf-8"))), end
    if type(spec) is dict and s.startswith("{", i):
        return _parse_object(s, i, spec)
    if type(spec) is ListOf and s.startswith("[", i):
        return _parse_array(s, i, spec.item)
    return _scan(s, i)


def _separator(s: str, i: int, close: str) -> tuple[int, bool]:
    """After an item: ``(index of the next item, False)``, or ``(index past close, True)``."""
    i = _skip_ws(s, i)
    if s.startswith(",", i):
        return _skip_ws(s, i + 1), False
    if s.startswith(close, i):
        return i + 1, True
    raise json.JSONDecodeError("Expecting ',' delimiter", s, i)


def _parse_object(s: str, i: int, spec: dict[str, Any]) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    i = _skip_ws(s, i + 1)
    if s.startswith("}", i):
        return out, i + 1
    closed = False
    while not closed:
        if not s.startswith('"', i):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", s, i)
        key, i = _scanstring(s, i + 1, True)
        i = _skip_ws(s, i)
        if not s.startswith(":", i):
            raise json.JSONDecodeError("Expecting ':' delimiter", s, i)
        out[key], i = _parse_value(s, _skip_ws(s, i + 1), spec.get(key))
        i, closed = _separator(s, i, "}")
    return out, i


def _parse_array(s: str, i: int, item: Any) -> tuple[list[Any], int]:
    out: list[Any] = []
    i = _skip_ws(s, i + 1)
    if s.startswith("]", i):
        return out, i + 1
    closed = False
    while not closed:
        value, i = _parse_value(s, i, item)
        out.append(value)
        i, closed = _separator(s, i, "]")
    return out, i


def decode_text(body: bytes) -> str:
    """The request body as text; HttpError 400 if it is not UTF-8."""
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


def iter_json(text: str, spec: Any) -> Iterator[Any]:
    """Successive JSON values separated by whitespace (legacy ``/api`` bodies)."""
    i = _skip_ws(text, 0)
    while i < len(text):
        try:
            value, i = _parse_value(text, i, spec)
        except (ValueError, RecursionError) as exc:
            raise _json_error(exc) from None
        yield value
        i = _skip_ws(text, i)


def dump(value: Any) -> bytes:
    """Compact JSON; :class:`Raw` values are written as they are."""
    if isinstance(value, Raw):
        return bytes(value)
    if isinstance(value, dict):
        return b"{" + b",".join(dump(str(k)) + b":" + dump(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(dump(v) for v in value) + b"]"
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def is_json(data: bytes) -> bool:
    """Whether ``data`` is one JSON text (UTF-8, no NaN/Infinity, integers of any length)."""
    try:
        check_json_text(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return False
    return True
