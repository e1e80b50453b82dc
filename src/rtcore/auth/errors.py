"""Token failures and the protocol outcome each one becomes.

A verifier raises one of four exceptions. The session layer does not decide
on its own what to send back: it asks the exception, with
:meth:`TokenError.outcome`, passing the command that carried the token. The
table below is what Centrifugo (v6) does; two rows differ on purpose and are
marked.

=================  ==============  ==============  ==============  ==============
exception          connect         refresh         subscribe       sub_refresh
=================  ==============  ==============  ==============  ==============
TokenExpired       error 109       disconnect      error 109       disconnect
                                   3005                            3005 (1)
InvalidToken       disconnect      disconnect      error 103       disconnect
                   3500            3500                            3500
TokenMismatch      disconnect      disconnect      disconnect      disconnect
                   3500            3500            3500            3500
TokenUnavailable   error 100,      error 100,      error 100,      error 100,
(2)                temporary       temporary       temporary       temporary
=================  ==============  ==============  ==============  ==============

(1) Centrifugo's handler reports "expired" for a ``sub_refresh`` token, and
    centrifuge documents that this closes the connection with 3005; the
    library's client-side ``sub_refresh`` path at the commit we read ignores
    the flag, which we do not copy.
(2) Centrifugo folds JWKS fetch failures into "invalid token" (a terminal
    3500). A key server outage is transient, so rtcore answers with the
    temporary internal error instead; SDKs retry it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from rtcore.errors import RtcoreError


__all__ = [
    "TokenOp",
    "TokenOutcome",
    "TokenError",
    "TokenExpired",
    "InvalidToken",
    "TokenMismatch",
    "TokenUnavailable",
    "ERROR_INTERNAL",
    "ERROR_PERMISSION_DENIED",
    "ERROR_TOKEN_EXPIRED",
    "DISCONNECT_EXPIRED",
    "DISCONNECT_INVALID_TOKEN",
]


# Reply error codes (PROTOCOL.md §3.1) and disconnect codes (§3.3) used here.
ERROR_INTERNAL = 100
ERROR_PERMISSION_DENIED = 103
ERROR_TOKEN_EXPIRED = 109
DISCONNECT_EXPIRED = 3005
DISCONNECT_INVALID_TOKEN = 3500


class TokenOp(enum.StrEnum):
    """The client command that carried the token."""

    CONNECT = "connect"
    REFRESH = "refresh"
    SUBSCRIBE = "subscribe"
    SUB_REFRESH = "sub_refresh"


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    """What the session sends when a token is refused.

    ``disconnect`` False means an error reply ``{code, message, temporary}`` to
    the command; True means closing the connection with ``code`` and ``message``
    as the reason (``temporary`` is then always False).
    """

    disconnect: bool
    code: int
    message: str
    temporary: bool = False


_ERR_INTERNAL = TokenOutcome(False, ERROR_INTERNAL, "internal server error", temporary=True)
_ERR_PERMISSION_DENIED = TokenOutcome(False, ERROR_PERMISSION_DENIED, "permission denied")
_ERR_TOKEN_EXPIRED = TokenOutcome(False, ERROR_TOKEN_EXPIRED, "token expired")
_DISC_EXPIRED = TokenOutcome(True, DISCONNECT_EXPIRED, "connection expired")
_DISC_INVALID_TOKEN = TokenOutcome(True, DISCONNECT_INVALID_TOKEN, "invalid token")


class TokenError(RtcoreError):
    """A token was refused; ``message`` says why (for logs, never sent to clients)."""

    # Filled by each subclass: the outcome per command.
    _outcomes: ClassVar[dict[TokenOp, TokenOutcome]] = {}

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def outcome(self, op: TokenOp) -> TokenOutcome:
        """The protocol reaction to this failure for the command ``op``."""
        return self._outcomes[TokenOp(op)]


class TokenExpired(TokenError):
    """The token is well formed and correctly signed but ``exp`` has passed
    or ``nbf`` has not been reached yet (Centrifugo treats both alike)."""

    _outcomes: ClassVar[dict[TokenOp, TokenOutcome]] = {
        TokenOp.CONNECT: _ERR_TOKEN_EXPIRED,
        TokenOp.REFRESH: _DISC_EXPIRED,
        TokenOp.SUBSCRIBE: _ERR_TOKEN_EXPIRED,
        TokenOp.SUB_REFRESH: _DISC_EXPIRED,
    }

    def __init__(self, message: str = "token expired") -> None:
        super().__init__(message)


class InvalidToken(TokenError):
    """The token is malformed, badly signed, uses a refused algorithm, or
    fails an ``aud``/``iss``/claim rule."""

    _outcomes: ClassVar[dict[TokenOp, TokenOutcome]] = {
        TokenOp.CONNECT: _DISC_INVALID_TOKEN,
        TokenOp.REFRESH: _DISC_INVALID_TOKEN,
        TokenOp.SUBSCRIBE: _ERR_PERMISSION_DENIED,
        TokenOp.SUB_REFRESH: _DISC_INVALID_TOKEN,
    }


class TokenMismatch(InvalidToken):
    """A valid token issued for another user, channel or client.

    Raised by the claims' ``check_*`` helpers. Unlike a plain
    :class:`InvalidToken`, a mismatch on ``subscribe`` disconnects (3500).
    """

    _outcomes: ClassVar[dict[TokenOp, TokenOutcome]] = {
        TokenOp.CONNECT: _DISC_INVALID_TOKEN,
        TokenOp.REFRESH: _DISC_INVALID_TOKEN,
        TokenOp.SUBSCRIBE: _DISC_INVALID_TOKEN,
        TokenOp.SUB_REFRESH: _DISC_INVALID_TOKEN,
    }


class TokenUnavailable(TokenError):
    """The token could not be checked right now: the JWKS endpoint failed and
    no cached key applies. The client should retry later."""

    _outcomes: ClassVar[dict[TokenOp, TokenOutcome]] = {
        TokenOp.CONNECT: _ERR_INTERNAL,
        TokenOp.REFRESH: _ERR_INTERNAL,
        TokenOp.SUBSCRIBE: _ERR_INTERNAL,
        TokenOp.SUB_REFRESH: _ERR_INTERNAL,
    }
