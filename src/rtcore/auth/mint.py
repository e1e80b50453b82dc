"""Token minting for tools and tests (the CLI's ``gentoken``/``gensubtoken``).

Production applications usually mint tokens in their own backend with any
JWT library; these helpers produce exactly the claim layout rtcore (and
Centrifugo) reads, which keeps tests and the CLI honest.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rtcore.auth.claims import OVERRIDE_NAMES
from rtcore.auth.jws import sign


__all__ = ["make_connect_token", "make_subscribe_token"]


def _override_claim(override: Mapping[str, Any]) -> dict[str, Any]:
    """``{"presence": True}`` -> ``{"presence": {"value": True}}``; values that
    are already ``{"value": ...}`` objects pass through."""
    result: dict[str, Any] = {}
    for name, value in override.items():
        if name not in OVERRIDE_NAMES:
            raise ValueError(f"unknown override {name!r}; known: {', '.join(OVERRIDE_NAMES)}")
        if isinstance(value, bool):
            result[name] = {"value": value}
        elif isinstance(value, Mapping) and isinstance(value.get("value"), bool):
            result[name] = dict(value)
        else:
            raise ValueError(f"override {name!r} must be a bool or {{'value': bool}}")
    return result


def _subs_claim(subs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for channel, options in subs.items():
        entry = dict(options)
        if "override" in entry:
            entry["override"] = _override_claim(entry["override"])
        result[channel] = entry
    return result


def _common_claims(
    user: str,
    *,
    ttl: float | None,
    expire_at: int | None,
    audience: str | Sequence[str] | None,
    issuer: str | None,
    info: Any,
    b64info: bytes | None,
) -> dict[str, Any]:
    if not isinstance(user, str):
        raise TypeError(f"user must be a string, got {type(user).__name__}")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user, "iat": now}
    if ttl is not None:
        claims["exp"] = now + int(ttl)
    if expire_at is not None:
        claims["expire_at"] = int(expire_at)
    if audience is not None:
        claims["aud"] = audience if isinstance(audience, str) else list(audience)
    if issuer is not None:
        claims["iss"] = issuer
    if info is not None:
        claims["info"] = info
    if b64info is not None:
        claims["b64info"] = base64.b64encode(b64info).decode("ascii")
    return claims


def make_connect_token(
    key: Any,
    user: str,
    *,
    ttl: float | None = None,
    algorithm: str = "HS256",
    info: Any = None,
    b64info: bytes | None = None,
    channels: Sequence[str] | None = None,
    subs: Mapping[str, Mapping[str, Any]] | None = None,
    meta: Mapping[str, Any] | None = None,
    audience: str | Sequence[str] | None = None,
    issuer: str | None = None,
    expire_at: int | None = None,
    kid: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """Mint a connection JWT.

    Args:
        key: HMAC secret for HS*; a private key (PEM or cryptography object)
            for RS*/ES*/EdDSA.
        user: user id for ``sub``; ``""`` mints an anonymous token.
        ttl: seconds until ``exp``; None mints a token that never expires. A
            negative value mints an already expired token (for tests).
        algorithm: HS256/384/512, RS256/384/512, ES256/384/512 or EdDSA.
        info: connection info, any JSON value.
        b64info: binary connection info (sent as base64; wins over ``info``).
        channels: server-side subscriptions with namespace defaults.
        subs: server-side subscriptions with options, e.g.
            ``{"news": {"data": {...}, "override": {"presence": True}}}``;
            override values may be plain bools.
        meta: server-only metadata object.
        audience: ``aud`` (a string or a list).
        issuer: ``iss``.
        expire_at: connection expiry decoupled from ``exp`` (0 = never).
        kid: ``kid`` header (needed with JWKS).
        extra_claims: merged last; may override anything above.

    Raises:
        ValueError: unsupported algorithm, unusable key, bad override.
    """
    claims = _common_claims(
        user,
        ttl=ttl,
        expire_at=expire_at,
        audience=audience,
        issuer=issuer,
        info=info,
        b64info=b64info,
    )
    if channels is not None:
        claims["channels"] = list(channels)
    if subs is not None:
        claims["subs"] = _subs_claim(subs)
    if meta is not None:
        claims["meta"] = dict(meta)
    if extra_claims:
        claims.update(extra_claims)
    return sign(claims, key, algorithm, kid)


def make_subscribe_token(
    key: Any,
    user: str,
    channel: str,
    *,
    ttl: float | None = None,
    algorithm: str = "HS256",
    client: str | None = None,
    info: Any = None,
    b64info: bytes | None = None,
    data: Any = None,
    b64data: bytes | None = None,
    override: Mapping[str, Any] | None = None,
    audience: str | Sequence[str] | None = None,
    issuer: str | None = None,
    expire_at: int | None = None,
    kid: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """Mint a subscription JWT for ``channel``.

    Args:
        key, user, ttl, algorithm, audience, issuer, expire_at, kid,
        extra_claims: as for :func:`make_connect_token`.
        channel: the channel the token grants (required, non-empty).
        client: bind the token to one client id.
        info / b64info: channel info (``ClientInfo.chan_info``).
        data / b64data: returned to the client in ``SubscribeResult.data``.
        override: e.g. ``{"presence": False, "force_recovery": True}``.

    Raises:
        ValueError: empty channel, unsupported algorithm, unusable key, bad
            override.
    """
    if not channel:
        raise ValueError("channel must not be empty")
    claims = _common_claims(
        user,
        ttl=ttl,
        expire_at=expire_at,
        audience=audience,
        issuer=issuer,
        info=info,
        b64info=b64info,
    )
    claims["channel"] = channel
    if client is not None:
        claims["client"] = client
    if data is not None:
        claims["data"] = data
    if b64data is not None:
        claims["b64data"] = base64.b64encode(b64data).decode("ascii")
    if override is not None:
        claims["override"] = _override_claim(override)
    if extra_claims:
        claims.update(extra_claims)
    return sign(claims, key, algorithm, kid)
