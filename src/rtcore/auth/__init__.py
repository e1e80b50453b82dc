"""JWT authentication for connections and subscriptions (Centrifugo semantics).

Public surface:

* :class:`TokenConfig`: the ``client.token`` / ``client.subscription_token``
  settings, validated on construction.
* :class:`TokenVerifier`: ``verify_connect`` / ``verify_subscribe``.
* :class:`ConnectTokenClaims`, :class:`SubscribeTokenClaims` and their parts.
* The failures :class:`TokenExpired`, :class:`InvalidToken`,
  :class:`TokenMismatch`, :class:`TokenUnavailable` (all :class:`TokenError`),
  each mapping to a protocol reply or disconnect via
  :meth:`TokenError.outcome`.
* :func:`make_connect_token`, :func:`make_subscribe_token` for tools and tests.

See ``docs/auth.md``.
"""

from typing import TYPE_CHECKING, Any

from rtcore.auth.claims import (
    ConnectTokenClaims,
    SubscribeOverride,
    SubscribeTokenClaims,
    TokenSubscription,
)
from rtcore.auth.config import TokenConfig
from rtcore.auth.errors import (
    DISCONNECT_EXPIRED,
    DISCONNECT_INVALID_TOKEN,
    ERROR_INTERNAL,
    ERROR_PERMISSION_DENIED,
    ERROR_TOKEN_EXPIRED,
    InvalidToken,
    TokenError,
    TokenExpired,
    TokenMismatch,
    TokenOp,
    TokenOutcome,
    TokenUnavailable,
)
from rtcore.auth.jws import SUPPORTED_ALGORITHMS
from rtcore.auth.mint import make_connect_token, make_subscribe_token


if TYPE_CHECKING:
    from rtcore.auth.verifier import TokenVerifier


def __getattr__(name: str) -> Any:
    # The verifier (JWKS fetching, asyncio) loads on first use, so the
    # configuration model can import TokenConfig without an event loop stack.
    if name == "TokenVerifier":
        from rtcore.auth.verifier import TokenVerifier

        return TokenVerifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TokenConfig",
    "TokenVerifier",
    "ConnectTokenClaims",
    "SubscribeTokenClaims",
    "TokenSubscription",
    "SubscribeOverride",
    "TokenError",
    "TokenExpired",
    "InvalidToken",
    "TokenMismatch",
    "TokenUnavailable",
    "TokenOp",
    "TokenOutcome",
    "ERROR_INTERNAL",
    "ERROR_PERMISSION_DENIED",
    "ERROR_TOKEN_EXPIRED",
    "DISCONNECT_EXPIRED",
    "DISCONNECT_INVALID_TOKEN",
    "SUPPORTED_ALGORITHMS",
    "make_connect_token",
    "make_subscribe_token",
]
