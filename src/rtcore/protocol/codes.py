"""Protocol error, unsubscribe and disconnect codes (PROTOCOL.md §3).

* Reply errors 100-113 (0-399 reserved for the library; applications use 400-1999).
* Unsubscribe codes 2000-2999: below 2500 terminal, 2500 and above resubscribe.
* Disconnect codes: 3000-3499 and 4000-4499 reconnect; 3500-3999 and
  4500-4999 are terminal.
"""

from __future__ import annotations

from dataclasses import dataclass

from rtcore.errors import RtcoreError


__all__ = [
    "ClientError",
    "Disconnect",
    "DisconnectError",
    "Unsubscribe",
    "ERROR_INTERNAL",
    "ERROR_UNAUTHORIZED",
    "ERROR_UNKNOWN_CHANNEL",
    "ERROR_PERMISSION_DENIED",
    "ERROR_METHOD_NOT_FOUND",
    "ERROR_ALREADY_SUBSCRIBED",
    "ERROR_LIMIT_EXCEEDED",
    "ERROR_BAD_REQUEST",
    "ERROR_NOT_AVAILABLE",
    "ERROR_TOKEN_EXPIRED",
    "ERROR_EXPIRED",
    "ERROR_TOO_MANY_REQUESTS",
    "ERROR_UNRECOVERABLE_POSITION",
]


class ClientError(RtcoreError):
    """An error reply to one command: ``{"code", "message", "temporary"}``.

    Raise it from a hook to refuse a command; codes 400-1999 are the
    application's own.
    """

    def __init__(self, code: int, message: str, temporary: bool = False) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.temporary = temporary

    def __repr__(self) -> str:
        return f"ClientError({self.code}, {self.message!r})"


ERROR_INTERNAL = ClientError(100, "internal server error", temporary=True)
ERROR_UNAUTHORIZED = ClientError(101, "unauthorized")
ERROR_UNKNOWN_CHANNEL = ClientError(102, "unknown channel")
ERROR_PERMISSION_DENIED = ClientError(103, "permission denied")
ERROR_METHOD_NOT_FOUND = ClientError(104, "method not found")
ERROR_ALREADY_SUBSCRIBED = ClientError(105, "already subscribed")
ERROR_LIMIT_EXCEEDED = ClientError(106, "limit exceeded")
ERROR_BAD_REQUEST = ClientError(107, "bad request")
ERROR_NOT_AVAILABLE = ClientError(108, "not available")
ERROR_TOKEN_EXPIRED = ClientError(109, "token expired")
ERROR_EXPIRED = ClientError(110, "expired")
ERROR_TOO_MANY_REQUESTS = ClientError(111, "too many requests", temporary=True)
ERROR_UNRECOVERABLE_POSITION = ClientError(112, "unrecoverable position")


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Disconnect advice: a close code and a short reason."""

    code: int
    reason: str

    @property
    def reconnect(self) -> bool:
        """Whether SDKs reconnect after this code (PROTOCOL.md §3.3)."""
        c = self.code
        return c < 3500 or 4000 <= c < 4500 or c >= 5000


class DisconnectError(RtcoreError):
    """Raise from a hook to disconnect the client with ``disconnect``."""

    def __init__(self, disconnect: Disconnect) -> None:
        super().__init__(disconnect.code, disconnect.reason)
        self.disconnect = disconnect


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    code: int
    reason: str


CONNECTION_CLOSED = Disconnect(3000, "connection closed")
SHUTDOWN = Disconnect(3001, "shutdown")
INTERNAL_SERVER_ERROR = Disconnect(3004, "internal server error")
CONNECTION_EXPIRED = Disconnect(3005, "connection expired")
SUBSCRIPTION_EXPIRED = Disconnect(3006, "subscription expired")
SLOW = Disconnect(3008, "slow")
WRITE_ERROR = Disconnect(3009, "write error")
INSUFFICIENT_STATE = Disconnect(3010, "insufficient state")
FORCE_RECONNECT = Disconnect(3011, "force reconnect")
NO_PONG = Disconnect(3012, "no pong")
TOO_MANY_REQUESTS = Disconnect(3013, "too many requests")
STATE_INVALIDATED = Disconnect(3014, "state invalidated")
INVALID_TOKEN = Disconnect(3500, "invalid token")
BAD_REQUEST = Disconnect(3501, "bad request")
STALE = Disconnect(3502, "stale")
FORCE_DISCONNECT = Disconnect(3503, "force disconnect")
CONNECTION_LIMIT = Disconnect(3504, "connection limit")
CHANNEL_LIMIT = Disconnect(3505, "channel limit")
INAPPROPRIATE_PROTOCOL = Disconnect(3506, "inappropriate protocol")
PERMISSION_DENIED = Disconnect(3507, "permission denied")
NOT_AVAILABLE = Disconnect(3508, "not available")
TOO_MANY_ERRORS = Disconnect(3509, "too many errors")

UNSUBSCRIBE_SERVER = Unsubscribe(2000, "server unsubscribe")
UNSUBSCRIBE_INSUFFICIENT_STATE = Unsubscribe(2500, "insufficient state")
UNSUBSCRIBE_EXPIRED = Unsubscribe(2501, "subscription expired")
UNSUBSCRIBE_STATE_INVALIDATED = Unsubscribe(2502, "state invalidated")
