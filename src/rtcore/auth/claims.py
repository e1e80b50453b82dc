"""Verified token contents, and their decoding from a JWT claims object.

Decoding is strict about types (a claim of the wrong JSON type makes the token
invalid) and lenient about unknown claims (ignored), like Centrifugo's
``encoding/json`` structs. JSON values that the engine passes on as raw JSON
(``info``, ``data``) are re-encoded compactly as UTF-8 bytes; ``b64info`` and
``b64data`` are standard base64 (with padding) and win over their JSON twins.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from rtcore.auth.errors import InvalidToken, TokenMismatch


__all__ = [
    "SubscribeOverride",
    "TokenSubscription",
    "ConnectTokenClaims",
    "SubscribeTokenClaims",
    "RegisteredClaims",
    "decode_registered",
    "decode_connect",
    "decode_subscribe",
]


_STD_B64_RE: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_INT64_MAX: Final = 2**63 - 1
_INT64_MIN: Final = -(2**63)
_EMPTY_SUBS: Final[Mapping[str, TokenSubscription]] = MappingProxyType({})

OVERRIDE_NAMES: Final = (
    "presence",
    "join_leave",
    "force_push_join_leave",
    "force_positioning",
    "force_recovery",
)


@dataclass(frozen=True, slots=True)
class SubscribeOverride:
    """Per-subscription overrides of namespace options from a token.

    ``None`` means "use the namespace setting"; ``True``/``False`` replace it.
    In the token each is written ``{"value": bool}``.
    """

    # Take part in channel presence (namespace ``presence``).
    presence: bool | None = None
    # Emit join/leave for this client (namespace ``join_leave``).
    join_leave: bool | None = None
    # Push join/leave to this client (namespace ``force_push_join_leave``).
    force_push_join_leave: bool | None = None
    # Track the stream position (namespace ``force_positioning``).
    force_positioning: bool | None = None
    # Enable recovery (namespace ``force_recovery``).
    force_recovery: bool | None = None


_NO_OVERRIDE: Final = SubscribeOverride()


@dataclass(frozen=True, slots=True)
class TokenSubscription:
    """Options of one server-side subscription granted by a connection token."""

    # Channel info (ClientInfo.chan_info); raw JSON, or bytes from b64info.
    info: bytes | None = None
    # Sent to the client in SubscribeResult.data; raw JSON, or bytes from b64data.
    data: bytes | None = None
    override: SubscribeOverride = _NO_OVERRIDE


@dataclass(frozen=True, slots=True)
class ConnectTokenClaims:
    """What a verified connection token grants."""

    # User id ("" = anonymous), from ``sub`` or the configured user_id_claim.
    user: str
    # Unix seconds when the connection expires; 0 = never. ``expire_at`` if
    # present (<= 0 means never), otherwise ``exp``.
    expire_at: int = 0
    # Connection info (ClientInfo.conn_info); raw JSON, or bytes from b64info.
    info: bytes | None = None
    # ``channels`` claim: server-side subscriptions with namespace defaults.
    channels: tuple[str, ...] = ()
    # ``subs`` claim: server-side subscriptions with options.
    subs: Mapping[str, TokenSubscription] = field(default_factory=lambda: _EMPTY_SUBS)
    # ``meta`` claim: server-only metadata (a JSON object); never sent to clients.
    meta: dict[str, Any] | None = None
    # ``jti`` ("" when absent) and ``iat`` (None when absent), for revocation.
    token_id: str = ""
    issued_at: int | None = None

    @property
    def server_side_subscriptions(self) -> Mapping[str, TokenSubscription]:
        """Channels to subscribe at connect: ``subs`` if non-empty, else
        ``channels`` with default options (``subs`` takes precedence and the
        two are never merged, as in Centrifugo)."""
        if self.subs:
            return self.subs
        return MappingProxyType({channel: TokenSubscription() for channel in self.channels})

    def check_user(self, user: str) -> None:
        """For ``refresh``: the new token must be for the connection's user.

        Raises:
            TokenMismatch: the token names another user.
        """
        if self.user != user:
            raise TokenMismatch(
                f"refresh token is for user {self.user!r}, connection user is {user!r}"
            )


@dataclass(frozen=True, slots=True)
class SubscribeTokenClaims:
    """What a verified subscription token grants."""

    user: str
    channel: str
    # Client id the token is bound to; "" = any connection of ``user``.
    client: str = ""
    # Unix seconds when the subscription expires; 0 = never.
    expire_at: int = 0
    # Channel info (ClientInfo.chan_info).
    info: bytes | None = None
    # SubscribeResult.data.
    data: bytes | None = None
    override: SubscribeOverride = _NO_OVERRIDE
    token_id: str = ""
    issued_at: int | None = None

    def check(self, *, channel: str, user: str, client: str) -> None:
        """The token must be for this channel, user and (if bound) client.

        Raises:
            TokenMismatch: any of the three differs; Centrifugo disconnects
                with 3500 in that case, for ``subscribe`` and ``sub_refresh``.
        """
        if self.channel != channel:
            raise TokenMismatch(f"token is for channel {self.channel!r}, not {channel!r}")
        if self.user != user:
            raise TokenMismatch(f"token is for user {self.user!r}, not {user!r}")
        if self.client and self.client != client:
            raise TokenMismatch(f"token is for client {self.client!r}, not {client!r}")


class RegisteredClaims(NamedTuple):
    """The RFC 7519 claims the verifier checks itself (a named tuple: one is
    made per token checked, for half the cost of a frozen dataclass)."""

    exp: float | None
    nbf: float | None
    iat: float | None
    aud: tuple[str, ...]
    iss: str | None
    jti: str
    sub: str


# -- type checks ---------------------------------------------------------


def _bad(name: str, expected: str) -> InvalidToken:
    return InvalidToken(f"invalid claim {name!r}: must be {expected}")


def _opt_str(claims: Mapping[str, Any], name: str, where: str = "") -> str | None:
    value = claims.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _bad(where + name, "a string")


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(name, "a number (unix seconds)")
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(name, "a finite number")
    return float(value) if isinstance(value, float) else value


def _int64(claims: Mapping[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, "an integer (unix seconds)")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _bad(name, "a 64-bit integer")
    return value


def _raw_json(value: Any) -> bytes | None:
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _bytes_claim(
    claims: Mapping[str, Any], json_name: str, b64_name: str, where: str = ""
) -> bytes | None:
    encoded = _opt_str(claims, b64_name, where)
    if encoded:
        # Go's base64.StdEncoding: standard alphabet, padding required and
        # only at the end (Python's decoder alone tolerates excess "=").
        if len(encoded) % 4 or not _STD_B64_RE.fullmatch(encoded):
            raise _bad(where + b64_name, "standard base64 with padding")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _bad(where + b64_name, "standard base64 with padding") from exc
    return _raw_json(claims.get(json_name))


def _override(value: Any, where: str) -> SubscribeOverride:
    if value is None:
        return _NO_OVERRIDE
    if not isinstance(value, dict):
        raise _bad(where + "override", "an object")
    flags: dict[str, bool | None] = {}
    for name in OVERRIDE_NAMES:
        item = value.get(name)
        if item is None:
            flags[name] = None
            continue
        if not isinstance(item, dict):
            raise _bad(f"{where}override.{name}", 'an object like {"value": true}')
        flag = item.get("value", False)
        if not isinstance(flag, bool):
            raise _bad(f"{where}override.{name}.value", "a boolean")
        flags[name] = flag
    return SubscribeOverride(**flags)


def _timestamp(value: float | None) -> int | None:
    return None if value is None else math.floor(value)


def _expire_at(expire_at: int | None, exp: float | None) -> int:
    # Centrifugo: an explicit expire_at (even 0 or negative) replaces exp for
    # the session's lifetime; only a positive one sets an expiry.
    if expire_at is not None:
        return expire_at if expire_at > 0 else 0
    if exp is not None:
        return max(math.floor(exp), 0)
    return 0


def _user_id(claims: Mapping[str, Any], claim: str, sub: str) -> str:
    if claim == "sub":
        return sub
    if claim in claims:
        value = claims[claim]
    elif "." in claim:
        value = claims
        for part in claim.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    else:
        value = None
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _bad(claim, "a string or an integer (user id)")


# -- decoders ------------------------------------------------------------


def decode_registered(claims: Mapping[str, Any]) -> RegisteredClaims:
    """Type-check the registered claims.

    Raises:
        InvalidToken: a registered claim has the wrong type.
    """
    aud_value = claims.get("aud")
    if aud_value is None:
        aud: tuple[str, ...] = ()
    elif isinstance(aud_value, str):
        aud = (aud_value,)
    elif isinstance(aud_value, list) and all(isinstance(a, str) for a in aud_value):
        aud = tuple(aud_value)
    else:
        raise _bad("aud", "a string or a list of strings")
    return RegisteredClaims(
        exp=_numeric_date(claims, "exp"),
        nbf=_numeric_date(claims, "nbf"),
        iat=_numeric_date(claims, "iat"),
        aud=aud,
        iss=_opt_str(claims, "iss"),
        jti=_opt_str(claims, "jti") or "",
        sub=_opt_str(claims, "sub") or "",
    )


def decode_connect(
    claims: Mapping[str, Any], registered: RegisteredClaims, user_id_claim: str
) -> tuple[ConnectTokenClaims, str]:
    """Decode a connection token's claims.

    Returns:
        The claims and the value of the ``channel`` claim (``""`` if absent),
        which a connection token must not carry; the caller rejects it at the
        point Centrifugo does.

    Raises:
        InvalidToken: a claim has the wrong type or bad base64.
    """
    channels_value = claims.get("channels")
    if channels_value is None:
        channels: tuple[str, ...] = ()
    elif isinstance(channels_value, list) and all(isinstance(c, str) for c in channels_value):
        channels = tuple(channels_value)
    else:
        raise _bad("channels", "a list of strings")

    subs_value = claims.get("subs")
    subs: Mapping[str, TokenSubscription] = _EMPTY_SUBS
    if subs_value is not None:
        if not isinstance(subs_value, dict):
            raise _bad("subs", "an object mapping channels to options")
        decoded: dict[str, TokenSubscription] = {}
        for channel, options in subs_value.items():
            where = f"subs.{channel}."
            if options is None:
                decoded[channel] = TokenSubscription()
                continue
            if not isinstance(options, dict):
                raise _bad(f"subs.{channel}", "an object")
            decoded[channel] = TokenSubscription(
                info=_bytes_claim(options, "info", "b64info", where),
                data=_bytes_claim(options, "data", "b64data", where),
                override=_override(options.get("override"), where),
            )
        subs = MappingProxyType(decoded)

    meta = claims.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise _bad("meta", "an object")

    channel = _opt_str(claims, "channel") or ""
    result = ConnectTokenClaims(
        user=_user_id(claims, user_id_claim, registered.sub),
        expire_at=_expire_at(_int64(claims, "expire_at"), registered.exp),
        info=_bytes_claim(claims, "info", "b64info"),
        channels=channels,
        subs=subs,
        meta=meta,
        token_id=registered.jti,
        issued_at=_timestamp(registered.iat),
    )
    return result, channel


def decode_subscribe(
    claims: Mapping[str, Any], registered: RegisteredClaims, user_id_claim: str
) -> SubscribeTokenClaims:
    """Decode a subscription token's claims (``channel`` may still be empty;
    the caller rejects that after the expiry check, as Centrifugo does).

    Raises:
        InvalidToken: a claim has the wrong type or bad base64.
    """
    return SubscribeTokenClaims(
        user=_user_id(claims, user_id_claim, registered.sub),
        channel=_opt_str(claims, "channel") or "",
        client=_opt_str(claims, "client") or "",
        expire_at=_expire_at(_int64(claims, "expire_at"), registered.exp),
        info=_bytes_claim(claims, "info", "b64info"),
        data=_bytes_claim(claims, "data", "b64data"),
        override=_override(claims.get("override"), ""),
        token_id=registered.jti,
        issued_at=_timestamp(registered.iat),
    )
