"""Reading the backend's answer: its JSON, the refusal it may carry, and the result of each kind.

Every answer is ``{"result": ...}``, ``{"error": ...}`` or ``{"disconnect": ...}``
(refresh and sub_refresh: ``result`` only). A field of the wrong type raises
:class:`ProxyResponseError` naming it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import re
import sys
from typing import Any, Final

from rtcore.auth import SubscribeOverride
from rtcore.backends.proxy.errors import ProxyResponseError
from rtcore.engine.events import Credentials, SubscribeReply, SubscriptionGrant
from rtcore.protocol import codes
from rtcore.protocol.codes import ClientError, DisconnectError


__all__ = [
    "RefreshAnswer",
    "connect_answer",
    "dumps",
    "parse_json",
    "publish_answer",
    "refresh_answer",
    "reject_constant",
    "rpc_answer",
    "subscribe_answer",
]

_UINT32_MAX = 2**32 - 1
_STD_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_OVERRIDE_NAMES = (
    "presence",
    "join_leave",
    "force_push_join_leave",
    "force_positioning",
    "force_recovery",
)


# -- JSON ------------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _LongInt:
    """A JSON integer past Python's int digit limit, kept as its text, never converted.

    Python refuses to convert one (``sys.get_int_max_str_digits``, a guard
    against quadratic parsing), yet it is valid JSON: a payload holding one
    passes re-encoded with the same digits; any other field refuses it.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _bounded_int(text: str) -> int | _LongInt:
    if len(text) - text.startswith("-") > sys.get_int_max_str_digits():
        return _LongInt(text)
    return int(text)


def _compact(value: Any) -> str:
    """:func:`dumps` of a value that holds :class:`_LongInt` (as text)."""
    if type(value) is _LongInt:
        return value.text
    if type(value) is dict:
        items = (_compact(str(k)) + ":" + _compact(v) for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if type(value) is list:
        return "[" + ",".join(_compact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _dumps_payload(value: Any, what: str) -> bytes:
    try:
        return dumps(value)
    except TypeError:
        pass
    try:
        return _compact(value).encode("utf-8")
    except RecursionError:
        raise ProxyResponseError(f"{what} is nested too deeply") from None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def reject_constant(name: str) -> Any:
    """``parse_constant`` of :func:`json.loads`: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")


# The C scanner converts every integer; _LENIENT, used only after it failed,
# keeps integers past the digit limit as _LongInt (a Python call per integer).
_STRICT: Final = json.JSONDecoder(parse_float=_finite_float, parse_constant=reject_constant)
_LENIENT: Final = json.JSONDecoder(
    parse_float=_finite_float, parse_constant=reject_constant, parse_int=_bounded_int
)


def parse_json(body: bytes) -> Any:
    """The JSON value of a response body (finite numbers only).

    An integer past Python's digit limit is kept as its text: valid in a
    payload (``data``, ``info``), refused by every other field.
    """
    try:
        text = body.decode("utf-8")
        try:
            return _STRICT.decode(text)
        except json.JSONDecodeError:
            raise
        except ValueError:
            # The digit limit, or a NaN/Infinity/out-of-range number that fails again.
            return _LENIENT.decode(text)
    except UnicodeDecodeError:
        raise ProxyResponseError("the body is not UTF-8") from None
    except ValueError as exc:
        raise ProxyResponseError(f"the body is not JSON ({exc})") from None
    except RecursionError:
        raise ProxyResponseError("the body is nested too deeply") from None


# -- fields ----------------------------------------------------------------------------


def _object(value: Any, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ProxyResponseError(f"{what} must be an object")
    return value


def _meta(result: dict[str, Any], what: str) -> dict[str, Any] | None:
    """The connection's meta: kept as values, so no integer past the digit limit."""
    meta = _object(result.get("meta"), what)
    stack: list[Any] = [meta]
    while stack:
        value = stack.pop()
        if type(value) is dict:
            stack.extend(value.values())
        elif type(value) is list:
            stack.extend(value)
        elif type(value) is _LongInt:
            digits = len(value.text.lstrip("-"))
            raise ProxyResponseError(f"{what} holds an integer of {digits} digits")
    return meta


def _string(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProxyResponseError(f"{what}.{key} must be a string")
    return value


def _boolean(obj: dict[str, Any], key: str, what: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ProxyResponseError(f"{what}.{key} must be true or false")
    return value


def _integer(obj: dict[str, Any], key: str, what: str, lo: int, hi: int) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProxyResponseError(f"{what}.{key} must be an integer in {lo}..{hi}")
    return value


def _payload(obj: dict[str, Any], json_key: str, b64_key: str, what: str) -> bytes | None:
    """``b64<key>`` (standard base64) wins over ``<key>`` (any JSON value)."""
    encoded = obj.get(b64_key)
    if encoded is not None and encoded != "":
        if not isinstance(encoded, str) or len(encoded) % 4 or not _STD_B64_RE.fullmatch(encoded):
            raise ProxyResponseError(f"{what}.{b64_key} must be standard base64 with padding")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ProxyResponseError(
                f"{what}.{b64_key} must be standard base64 with padding"
            ) from None
    value = obj.get(json_key)
    if value is None:
        return None
    return _dumps_payload(value, f"{what}.{json_key}")


def _override(value: Any, what: str) -> SubscribeOverride | None:
    obj = _object(value, what)
    if obj is None:
        return None
    flags: dict[str, bool | None] = {}
    for name in _OVERRIDE_NAMES:
        item = _object(obj.get(name), f"{what}.{name}")
        flags[name] = None if item is None else _boolean(item, "value", f"{what}.{name}")
    return SubscribeOverride(**flags)


def _expire_at(obj: dict[str, Any], what: str) -> int:
    return _integer(obj, "expire_at", what, 0, 2**63 - 1)


# -- the answer of each kind -------------------------------------------------------


def _raise_refusal(response: dict[str, Any]) -> None:
    """Raise the backend's ``disconnect`` (checked first) or ``error``, if any."""
    disconnect = _object(response.get("disconnect"), "disconnect")
    if disconnect is not None:
        code = _integer(disconnect, "code", "disconnect", 3000, 4999)
        if not code:
            raise ProxyResponseError("disconnect.code is required")
        reason = _string(disconnect, "reason", "disconnect")
        if len(reason.encode("utf-8")) > 123:
            raise ProxyResponseError("disconnect.reason is longer than 123 bytes")
        raise DisconnectError(codes.Disconnect(code, reason))
    error = _object(response.get("error"), "error")
    if error is not None:
        code = _integer(error, "code", "error", 1, _UINT32_MAX)
        if not code:
            raise ProxyResponseError("error.code is required")
        raise ClientError(
            code, _string(error, "message", "error"), _boolean(error, "temporary", "error")
        )


def connect_answer(response: dict[str, Any]) -> Credentials | None:
    """The connection the backend grants (None: no result, the client keeps its own)."""
    _raise_refusal(response)
    result = _object(response.get("result"), "result")
    if result is None:
        return None
    user = result.get("user", "")
    if not isinstance(user, str):
        raise ProxyResponseError("result.user must be a string")
    meta = _meta(result, "result.meta")
    subscriptions: dict[str, SubscriptionGrant] = {}
    channels = result.get("channels")
    if channels is not None:
        if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
            raise ProxyResponseError("result.channels must be a list of channel names")
        for channel in channels:
            subscriptions[channel] = SubscriptionGrant()
    subs = _object(result.get("subs"), "result.subs")
    for channel, value in (subs or {}).items():
        where = f"result.subs[{channel!r}]"
        if not channel:
            raise ProxyResponseError("result.subs has an empty channel name")
        options = _object(value, where) or {}
        subscriptions[channel] = SubscriptionGrant(
            info=_payload(options, "info", "b64info", where),
            data=_payload(options, "data", "b64data", where),
            override=_override(options.get("override"), where + ".override"),
        )
    return Credentials(
        user=user,
        info=_payload(result, "info", "b64info", "result"),
        expire_at=_expire_at(result, "result"),
        meta=meta,
        data=_payload(result, "data", "b64data", "result"),
        subscriptions=subscriptions,
    )


def subscribe_answer(response: dict[str, Any]) -> SubscribeReply:
    """The subscription the backend allows."""
    _raise_refusal(response)
    result = _object(response.get("result"), "result") or {}
    return SubscribeReply(
        info=_payload(result, "info", "b64info", "result"),
        data=_payload(result, "data", "b64data", "result"),
        expire_at=_expire_at(result, "result"),
        override=_override(result.get("override"), "result.override"),
    )


def publish_answer(response: dict[str, Any]) -> tuple[bytes | None, bool]:
    """``(data replacing the client's or None, skip_history)`` of an allowed publication."""
    _raise_refusal(response)
    result = _object(response.get("result"), "result") or {}
    return (
        _payload(result, "data", "b64data", "result"),
        _boolean(result, "skip_history", "result"),
    )


def rpc_answer(response: dict[str, Any]) -> bytes:
    """The data answering an RPC."""
    _raise_refusal(response)
    result = _object(response.get("result"), "result") or {}
    return _payload(result, "data", "b64data", "result") or b""


@dataclasses.dataclass(frozen=True, slots=True)
class RefreshAnswer:
    """Whether a connection or subscription lives on, and what it is told."""

    expired: bool
    #: Unix seconds of the next refresh (0: none given).
    expire_at: int = 0
    info: bytes | None = None
    meta: dict[str, Any] | None = None


def refresh_answer(response: dict[str, Any], *, with_meta: bool) -> RefreshAnswer:
    """The refresh or sub_refresh answer (no result: expired); ``meta`` only ``with_meta``."""
    result = _object(response.get("result"), "result")
    if result is None:
        return RefreshAnswer(expired=True)
    return RefreshAnswer(
        expired=_boolean(result, "expired", "result"),
        expire_at=_expire_at(result, "result"),
        info=_payload(result, "info", "b64info", "result"),
        meta=_meta(result, "result.meta") if with_meta else None,
    )
