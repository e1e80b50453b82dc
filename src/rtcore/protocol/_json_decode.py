"""JSON decoding of client messages: parse, validate types and ranges, build dataclasses.

Two parsing paths produce the same plain ``dict``:

* Lines that cannot hold a raw-JSON field (no ``data`` key, no ``\\u``
  escape that could spell one) go through the C JSON decoder in one call.
* Other lines go through a small walker that parses the envelope object by
  object with the C scanner and keeps the exact source text of every raw-JSON
  field (``data``), returned as ``bytes``. Nested values the walker does not
  need to look into are still parsed by the C scanner in one call.

The converters then check every field's type and range (JSON ``null`` means
absent, unknown keys are ignored) and build the message dataclasses.

With msgspec installed, command frames and connect requests first go to
``_json_msgspec``, which parses and checks them in C; what it does not
decode (every error among them) comes here, so the results and the error
messages are this module's either way.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any, Final, TypeVar

from rtcore.protocol.errors import ProtocolDecodeError
from rtcore.protocol.messages import (
    Command,
    ConnectRequest,
    EmulationRequest,
    FilterNode,
    HistoryRequest,
    KeyedItem,
    PingRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    RefreshRequest,
    RPCRequest,
    SendRequest,
    SubRefreshRequest,
    SubscribeRequest,
    TrackBatch,
    UnsubscribeRequest,
)
from rtcore.protocol.types import StreamPosition


try:
    from rtcore.protocol import _json_msgspec
except ImportError:  # msgspec is optional
    _json_msgspec = None  # type: ignore[assignment]

__all__ = [
    "HugeInt",
    "check_json_text",
    "decode_command_frame",
    "decode_command_frame_general",
    "decode_connect_request",
    "decode_connect_request_general",
    "decode_emulation_request",
    "scan_json_value",
]

T = TypeVar("T")
Converter = Callable[[Any], Any]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class HugeInt:
    """A JSON integer with more digits than ``int()`` converts (``sys.get_int_max_str_digits``).

    The digit limit guards against int parsing that is quadratic in the
    number of digits. Such an integer is valid JSON, so raw-JSON payloads
    holding one pass unchanged; it is never converted, and no protocol field
    can hold one.
    """

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"HugeInt(digits={self.digits})"


def _parse_int_bounded(text: str) -> int | HugeInt:
    digits = len(text) - (text[0] == "-")
    limit = sys.get_int_max_str_digits()
    if limit and digits > limit:
        return HugeInt(digits)
    return int(text)


# NaN / Infinity are not JSON; Python's decoder accepts them unless told not to.
# _DECODER converts integers in C and fails on one past the digit limit;
# _LENIENT_DECODER, used only after such a failure, keeps those as HugeInt
# (a Python call per integer makes it slower).
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
_LENIENT_DECODER: Final = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_parse_int_bounded
)
_scan_once: Final = _DECODER.scan_once  # type: ignore[attr-defined]
_scan_once_lenient: Final = _LENIENT_DECODER.scan_once  # type: ignore[attr-defined]
_scanstring: Final = json.decoder.scanstring  # type: ignore[attr-defined]
_skip_ws: Final = re.compile(r"[ \t\n\r]*").match


def _loads(s: str) -> Any:
    """One JSON text (whitespace around it allowed); a ValueError if invalid."""
    try:
        return _DECODER.decode(s)
    except json.JSONDecodeError:
        raise
    except ValueError:
        # The digit limit or a NaN/Infinity; the latter fails again here.
        return _LENIENT_DECODER.decode(s)


def scan_json_value(s: str, i: int) -> tuple[Any, int]:
    """Parse the JSON value starting exactly at ``s[i]``; return it and its end index.

    Integers past the interpreter's digit limit come back as :class:`HugeInt`.
    Raises ``ValueError`` (``json.JSONDecodeError`` for syntax) if there is no
    valid value at ``i``, ``RecursionError`` if it is nested too deeply.
    """
    try:
        return _scan_once(s, i)  # type: ignore[no-any-return]
    except StopIteration:
        raise json.JSONDecodeError("Expecting value", s, i) from None
    except json.JSONDecodeError:
        raise
    except ValueError:
        pass
    try:
        return _scan_once_lenient(s, i)  # type: ignore[no-any-return]
    except StopIteration:  # pragma: no cover - the strict scan found a value here
        raise json.JSONDecodeError("Expecting value", s, i) from None


def check_json_text(text: str) -> None:
    """Check that ``text`` is one JSON value, whitespace around it allowed; ValueError if not.

    Integers of any length are accepted and none is converted to ``int``
    past the interpreter's digit limit.
    """
    if _json_msgspec is not None and _json_msgspec.is_json(text):
        return
    i = _skip_ws(text).end()  # type: ignore[union-attr]
    end = scan_json_value(text, i)[1]
    end = _skip_ws(text, end).end()  # type: ignore[union-attr]
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)


class _Invalid(Exception):
    """A field-level error; ``path`` is filled innermost-first while unwinding."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []

    def describe(self) -> str:
        if not self.path:
            return self.reason
        where = ""
        for part in reversed(self.path):
            where += part if part.startswith("[") or not where else "." + part
        return where + ": " + self.reason


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "a boolean"
    if type(value) is int:
        return "an integer"
    if type(value) is float:
        return "a number with a fraction or exponent"
    if type(value) is str:
        return "a string"
    if type(value) is list:
        return "an array"
    if type(value) is dict:
        return "an object"
    if type(value) is bytes:
        return "a raw JSON value"
    if type(value) is HugeInt:
        return f"an integer of {value.digits} digits"
    return type(value).__name__


# ---------------------------------------------------------------------------
# The walker: exact source text of raw-JSON fields.

# Walker specs: key -> _RAW (keep the source text as bytes), a nested spec
# (descend into an object value), or a _MapOf (descend into an object whose
# every value follows the inner spec). Keys not listed are scanned whole.
_RAW: Final = object()


class _MapOf:
    __slots__ = ("spec",)

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec


_DATA_SPEC: Final[dict[str, Any]] = {"data": _RAW}
_CONNECT_SPEC: Final[dict[str, Any]] = {"data": _RAW, "subs": _MapOf(_DATA_SPEC)}
_COMMAND_SPEC: Final[dict[str, Any]] = {
    "connect": _CONNECT_SPEC,
    "subscribe": _DATA_SPEC,
    "publish": _DATA_SPEC,
    "rpc": _DATA_SPEC,
    "send": _DATA_SPEC,
}


def _walk_object(
    s: str, i: int, spec: dict[str, Any] | None, every: dict[str, Any] | None
) -> tuple[dict[str, Any], int]:
    """Parse the object starting at ``s[i] == "{"``; return it and the end index."""
    out: dict[str, Any] = {}
    i = _skip_ws(s, i + 1).end()  # type: ignore[union-attr]
    if s[i : i + 1] == "}":
        return out, i + 1
    while True:
        if s[i : i + 1] != '"':
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", s, i)
        key, i = _scanstring(s, i + 1, True)
        i = _skip_ws(s, i).end()  # type: ignore[union-attr]
        if s[i : i + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' delimiter", s, i)
        i = _skip_ws(s, i + 1).end()  # type: ignore[union-attr]
        kind = every if every is not None else (spec.get(key) if spec is not None else None)
        if kind is None:
            value, i = scan_json_value(s, i)
        elif kind is _RAW:
            value, end = scan_json_value(s, i)
            value = None if value is None else s[i:end].encode("utf-8")
            i = end
        elif s[i : i + 1] == "{":
            if type(kind) is _MapOf:
                value, i = _walk_object(s, i, None, kind.spec)
            else:
                value, i = _walk_object(s, i, kind, None)
        else:
            value, i = scan_json_value(s, i)
        out[key] = value
        i = _skip_ws(s, i).end()  # type: ignore[union-attr]
        c = s[i : i + 1]
        if c == ",":
            i = _skip_ws(s, i + 1).end()  # type: ignore[union-attr]
        elif c == "}":
            return out, i + 1
        else:
            raise json.JSONDecodeError("Expecting ',' delimiter", s, i)


def _parse_object(s: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Parse one JSON text that must be an object; raw fields per ``spec``."""
    if "data" not in s and "\\u" not in s:
        # No key can be "data": one call into the C decoder.
        value = _loads(s)
    else:
        i = _skip_ws(s, 0).end()  # type: ignore[union-attr]
        if s[i : i + 1] == "{":
            value, i = _walk_object(s, i, spec, None)
            i = _skip_ws(s, i).end()  # type: ignore[union-attr]
            if i != len(s):
                raise json.JSONDecodeError("Extra data", s, i)
        else:
            value = _loads(s)
    if type(value) is not dict:
        raise _Invalid(f"expected a JSON object, got {_kind(value)}")
    return value


# ---------------------------------------------------------------------------
# Field converters: validate one JSON value and return the Python value.


def _str(v: Any) -> str:
    if type(v) is str:
        if not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise _Invalid("string holds an unpaired surrogate escape") from None
        return v
    raise _Invalid(f"expected a string, got {_kind(v)}")


def _bool(v: Any) -> bool:
    if v is True or v is False:
        return v
    raise _Invalid(f"expected a boolean, got {_kind(v)}")


def _int(lo: int, hi: int, what: str) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if type(v) is int:
            if lo <= v <= hi:
                return v
            raise _Invalid(f"{v} is out of range for {what}")
        if type(v) is HugeInt:
            raise _Invalid(f"an integer of {v.digits} digits is out of range for {what}")
        raise _Invalid(f"expected an integer, got {_kind(v)}")

    return conv


_u32: Final = _int(0, 0xFFFF_FFFF, "uint32")
_i32: Final = _int(-0x8000_0000, 0x7FFF_FFFF, "int32")
_u64: Final = _int(0, 0xFFFF_FFFF_FFFF_FFFF, "uint64")
_i64: Final = _int(-0x8000_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF, "int64")


def _raw(v: Any) -> bytes:
    # The walker hands raw fields over as their exact source bytes. Anything
    # else reaching here (a value parsed by the C decoder) is re-serialised
    # compactly; the walker's spec normally makes that path unused.
    if type(v) is bytes:
        return v
    try:
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as e:  # pragma: no cover - defensive
        raise _Invalid(f"invalid raw JSON value: {e}") from None


def _list_of(item: Converter) -> Converter:
    def conv(v: Any) -> list[Any]:
        if type(v) is not list:
            raise _Invalid(f"expected an array, got {_kind(v)}")
        out = []
        for n, x in enumerate(v):
            if x is None:
                e = _Invalid("null is not allowed in an array")
                e.path.append(f"[{n}]")
                raise e
            try:
                out.append(item(x))
            except _Invalid as e:
                e.path.append(f"[{n}]")
                raise
        return out

    return conv


def _map_of(value_conv: Converter) -> Converter:
    def conv(v: Any) -> dict[str, Any]:
        if type(v) is not dict:
            raise _Invalid(f"expected an object, got {_kind(v)}")
        out = {}
        for k, x in v.items():
            if x is None:
                # null = absent, for map entries too.
                continue
            try:
                out[_str(k)] = value_conv(x)
            except _Invalid as e:
                e.path.append(k if k.isascii() else repr(k))
                raise
        return out

    return conv


def _message(cls: Callable[[], T], fields: dict[str, Converter]) -> Callable[[Any], T]:
    def conv(v: Any) -> T:
        if type(v) is not dict:
            raise _Invalid(f"expected an object, got {_kind(v)}")
        obj = cls()
        for key, value in v.items():
            field_conv = fields.get(key)
            if field_conv is None or value is None:
                continue
            try:
                setattr(obj, key, field_conv(value))
            except _Invalid as e:
                e.path.append(key)
                raise
        return obj

    return conv


def _stream_position(v: Any) -> StreamPosition:
    if type(v) is not dict:
        raise _Invalid(f"expected an object, got {_kind(v)}")
    offset = v.get("offset")
    epoch = v.get("epoch")
    try:
        offset = 0 if offset is None else _u64(offset)
    except _Invalid as e:
        e.path.append("offset")
        raise
    try:
        epoch = "" if epoch is None else _str(epoch)
    except _Invalid as e:
        e.path.append("epoch")
        raise
    return StreamPosition(offset=offset, epoch=epoch)


_FILTER_NODE_FIELDS: dict[str, Converter] = {}
_filter_node: Final = _message(FilterNode, _FILTER_NODE_FIELDS)
_FILTER_NODE_FIELDS.update(
    op=_str, key=_str, cmp=_str, val=_str, vals=_list_of(_str), nodes=_list_of(_filter_node)
)

_subscribe_request: Final = _message(
    SubscribeRequest,
    {
        "channel": _str,
        "token": _str,
        "recover": _bool,
        "epoch": _str,
        "offset": _u64,
        "data": _raw,
        "positioned": _bool,
        "recoverable": _bool,
        "join_leave": _bool,
        "delta": _str,
        "tf": _filter_node,
        "flag": _i64,
        "type": _i32,
        "phase": _i32,
        "cursor": _str,
        "limit": _i32,
        "asc": _bool,
    },
)

_connect_request: Final = _message(
    ConnectRequest,
    {
        "token": _str,
        "data": _raw,
        "subs": _map_of(_subscribe_request),
        "name": _str,
        "version": _str,
        "headers": _map_of(_str),
        "flag": _i64,
        "dict": _str,
        "profile": _str,
    },
)

_channel_only: Final[dict[str, Converter]] = {"channel": _str}
_track_batch: Final = _message(
    TrackBatch,
    {"signature": _str, "items": _list_of(_message(KeyedItem, {"key": _str, "version": _u64}))},
)

_COMMAND_FIELDS: Final[dict[str, Converter]] = {
    "id": _u32,
    "connect": _connect_request,
    "subscribe": _subscribe_request,
    "unsubscribe": _message(UnsubscribeRequest, _channel_only),
    "publish": _message(
        PublishRequest,
        {"channel": _str, "data": _raw, "type": _i32, "key": _str, "removed": _bool},
    ),
    "presence": _message(PresenceRequest, _channel_only),
    "presence_stats": _message(PresenceStatsRequest, _channel_only),
    "history": _message(
        HistoryRequest,
        {"channel": _str, "limit": _i32, "since": _stream_position, "reverse": _bool},
    ),
    "ping": _message(PingRequest, {}),
    "send": _message(SendRequest, {"data": _raw}),
    "rpc": _message(RPCRequest, {"data": _raw, "method": _str}),
    "refresh": _message(RefreshRequest, {"token": _str}),
    "sub_refresh": _message(
        SubRefreshRequest,
        {
            "channel": _str,
            "token": _str,
            "type": _i32,
            "track": _list_of(_track_batch),
            "untrack": _list_of(_str),
        },
    ),
}
_command: Final = _message(Command, _COMMAND_FIELDS)


# ---------------------------------------------------------------------------
# Entry points


def _as_text(data: bytes | bytearray | memoryview | str, what: str) -> str:
    if type(data) is str:
        return data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, got {type(data).__name__}")
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolDecodeError(
            f"{what} is not valid UTF-8: {e.reason} at byte {e.start}"
        ) from None


def _fail(where: str, exc: Exception) -> ProtocolDecodeError:
    if isinstance(exc, json.JSONDecodeError):
        return ProtocolDecodeError(f"{where}invalid JSON: {exc.msg} at column {exc.colno}")
    if isinstance(exc, _Invalid):
        return ProtocolDecodeError(where + exc.describe())
    return ProtocolDecodeError(f"{where}invalid JSON: {exc}")


def decode_command_frame(data: bytes | bytearray | memoryview | str) -> list[Command]:
    """Decode a newline-delimited frame of JSON commands (see ``Codec.decode_commands``)."""
    if _json_msgspec is not None and (type(data) is bytes or type(data) is str):
        commands = _json_msgspec.decode_command_lines(data)
        if commands is not None:
            return commands
    return decode_command_frame_general(data)


def decode_command_frame_general(data: bytes | bytearray | memoryview | str) -> list[Command]:
    """``decode_command_frame`` without msgspec: the walker and the converters."""
    text = _as_text(data, "frame")
    if text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise ProtocolDecodeError("frame holds no command")
    lines = text.split("\n")
    commands = []
    for n, line in enumerate(lines, 1):
        try:
            if not line or line.isspace():
                raise _Invalid("empty line, expected a JSON object")
            commands.append(_command(_parse_object(line, _COMMAND_SPEC)))
        except (_Invalid, ValueError) as e:
            # json.JSONDecodeError and the NaN/Infinity rejection are ValueErrors.
            raise _fail(f"command {n}: ", e) from None
        except RecursionError:
            raise ProtocolDecodeError(f"command {n}: JSON nested too deeply") from None
    return commands


def decode_connect_request(data: bytes | bytearray | memoryview | str) -> ConnectRequest:
    """Decode a bare JSON ConnectRequest; empty input and ``null`` are the empty request."""
    if _json_msgspec is not None and (type(data) is bytes or type(data) is str):
        request = _json_msgspec.decode_connect_text(data)
        if request is not None:
            return request
    return decode_connect_request_general(data)


def decode_connect_request_general(data: bytes | bytearray | memoryview | str) -> ConnectRequest:
    """``decode_connect_request`` without msgspec: the walker and the converters."""
    text = _as_text(data, "connect request")
    if not text or text.isspace():
        return ConnectRequest()
    try:
        if text.strip() == "null":
            return ConnectRequest()
        request: ConnectRequest = _connect_request(_parse_object(text, _CONNECT_SPEC))
        return request
    except (_Invalid, ValueError) as e:
        raise _fail("connect request: ", e) from None
    except RecursionError:
        raise ProtocolDecodeError("connect request: JSON nested too deeply") from None


def _emulation_data(v: Any) -> bytes:
    if type(v) is not str:
        raise _Invalid(f"expected a string holding the command frame, got {_kind(v)}")
    return _str(v).encode("utf-8")


_emulation_request: Final = _message(
    EmulationRequest, {"node": _str, "session": _str, "data": _emulation_data}
)


def decode_emulation_request(data: bytes | bytearray | memoryview | str) -> EmulationRequest:
    """Decode a JSON ``/emulation`` body; ``data`` comes back as the inner frame's bytes."""
    text = _as_text(data, "emulation request")
    try:
        value = _loads(text)
        if type(value) is not dict:
            raise _Invalid(f"expected a JSON object, got {_kind(value)}")
        request: EmulationRequest = _emulation_request(value)
        return request
    except (_Invalid, ValueError) as e:
        raise _fail("emulation request: ", e) from None
    except RecursionError:
        raise ProtocolDecodeError("emulation request: JSON nested too deeply") from None
