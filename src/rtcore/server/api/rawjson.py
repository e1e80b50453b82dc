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
from rtcore.protocol.json import check_json_text, msgspec_json, scan_json_value


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
# json.dumps(value, ensure_ascii=False) of a str, without building an encoder per call.
_encode_str: Final = json.encoder.encode_basestring
_WS: Final = re.compile(r"[ \t\n\r]*")
# A character (or "", the end of the text: in any string) that may start whitespace.
_WS_CHARS: Final = " \t\n\r"


def _skip_ws(s: str, i: int) -> int:
    """The index of the first non-whitespace character at or after ``i``."""
    # Compact JSON has no whitespace: answer that case without the regex.
    if s[i : i + 1] not in _WS_CHARS:
        return i
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


# NaN/Infinity are refused; an integer past Python's digit limit is valid
# JSON (kept as HugeInt, never converted), so raw fields may hold one.
_scan: Final = scan_json_value


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
    c = s[i : i + 1]
    if c == ",":
        return _skip_ws(s, i + 1), False
    if c == close:
        return i + 1, True
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
        if not s.startswith(":", i):
            i = _skip_ws(s, i)
            if not s.startswith(":", i):
                raise json.JSONDecodeError("Expecting ':' delimiter", s, i)
        i = _skip_ws(s, i + 1)
        field_spec = spec.get(key)
        # _parse_value inline for the common cases: a value kept as parsed, a raw one.
        if field_spec is None:
            out[key], i = _scan(s, i)
        elif field_spec is RAW:
            value, end = _scan(s, i)
            out[key] = None if value is None else Raw(s[i:end].encode("utf-8"))
            i = end
        else:
            out[key], i = _parse_value(s, i, field_spec)
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
    value = _parse_canonical(text, spec)
    if value is not _NOT_CANONICAL:
        return value
    try:
        value, end = _parse_value(text, _skip_ws(text, 0), spec)
        end = _skip_ws(text, end)
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
    except (ValueError, RecursionError) as exc:
        raise _json_error(exc) from None
    return value


# -- canonical texts in one C call --------------------------------------------------------
#
# Most clients send JSON exactly as a standard encoder writes it: compact
# (JSON.stringify, Go's encoding/json) or Python's json.dumps defaults. For
# such a text, the source of every value is the encoder's output for it (the
# encoding is compositional), so the raw fields can be written back from the
# parsed values with that encoder, byte for byte. Such a text is parsed and
# checked in C (decode, encode, compare); any other text (whitespace, escapes
# an encoder would not write, 1e5, duplicate keys, invalid JSON...) goes to
# the walker above, which gives the same values or the error.


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_NOT_CANONICAL: Final = object()
# The C scanner as the walker uses it: no NaN/Infinity (an integer past the
# digit limit fails too, and then the walker keeps it as HugeInt).
_decode: Final = json.JSONDecoder(parse_constant=_no_constant).decode


def _encoder(ensure_ascii: bool, item_separator: str, key_separator: str) -> Any:
    """``json.JSONEncoder(...).encode`` with the C encoder made once, not per call."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator
        return json.JSONEncoder(
            ensure_ascii=ensure_ascii, separators=(item_separator, key_separator)
        ).encode
    strings = json.encoder.encode_basestring_ascii if ensure_ascii else _encode_str
    # No cycle check (parsed values have none), no default, no NaN (never parsed).
    chunks = make(None, None, strings, None, key_separator, item_separator, False, False, False)

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


_ENCODERS: Final = (_encoder(False, ",", ":"), _encoder(True, ", ", ": "))


# msgspec (when installed) parses the text and checks compact ones, several times faster.
_compact: Final = msgspec_json


def _parse_canonical(text: str, spec: Any) -> Any:
    """What the walker gives for ``text`` when an encoder of _ENCODERS wrote it, else _NOT_CANONICAL."""
    try:
        if _compact is not None:
            value, compact = _compact.decode_value(text)
            if compact:
                return _keep_raw(value, spec, _compact.encode_compact)
        else:
            value = _decode(text)
        for encode in _ENCODERS:
            if encode(value) == text:
                return _keep_raw(value, spec, encode)
    except (ValueError, RecursionError):
        pass
    return _NOT_CANONICAL


def _keep_raw(value: Any, spec: Any, encode: Any) -> Any:
    """``value`` shaped as the walker shapes it under ``spec`` (raw fields: their source)."""
    if spec is RAW:
        if value is None:
            return None
        raw = encode(value)  # str, or bytes from msgspec
        return Raw(raw if type(raw) is bytes else raw.encode("utf-8"))
    if type(spec) is dict and type(value) is dict:
        out = {}
        for key, item in value.items():
            item_spec = spec.get(key)
            out[key] = item if item_spec is None else _keep_raw(item, item_spec, encode)
        return out
    if type(spec) is ListOf and type(value) is list:
        item_spec = spec.item
        return [_keep_raw(item, item_spec, encode) for item in value]
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
    out: list[bytes] = []
    _write(value, out)
    return b"".join(out) if len(out) != 1 else out[0]


def _write(value: Any, out: list[bytes]) -> None:
    """Append the compact JSON of ``value`` to ``out``, in pieces (one join at the end).

    The common types are told apart by exact type; anything else (subclasses,
    floats, tuples) takes the generic path, which is what :func:`dump` always did.
    """
    kind = type(value)
    if kind is str:
        out.append(_encode_str(value).encode("utf-8"))
    elif kind is dict:
        _write_dict(value, out)
    elif kind is int:
        out.append(int.__repr__(value).encode("ascii"))
    elif kind is Raw:
        out.append(bytes(value))
    elif kind is list:
        _write_list(value, out)
    elif value is True:
        out.append(b"true")
    elif value is False:
        out.append(b"false")
    elif value is None:
        out.append(b"null")
    elif isinstance(value, Raw):
        out.append(bytes(value))
    elif isinstance(value, dict):
        _write_dict(value, out)
    elif isinstance(value, list):
        _write_list(value, out)
    else:
        out.append(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _write_dict(value: dict[Any, Any], out: list[bytes]) -> None:
    append = out.append
    sep = b"{"
    for k, v in value.items():
        append(sep)
        append(_encode_str(k if type(k) is str else str(k)).encode("utf-8"))
        append(b":")
        _write(v, out)
        sep = b","
    append(b"{}" if sep == b"{" else b"}")


def _write_list(value: list[Any], out: list[bytes]) -> None:
    append = out.append
    sep = b"["
    for v in value:
        append(sep)
        _write(v, out)
        sep = b","
    append(b"[]" if sep == b"[" else b"]")


def is_json(data: bytes) -> bool:
    """Whether ``data`` is one JSON text (UTF-8, no NaN/Infinity, integers of any length)."""
    try:
        check_json_text(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return False
    return True
