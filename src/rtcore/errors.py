"""Exception hierarchy shared by the compiled modules and their pure-Python twins.

Exceptions live here, in plain Python, so both twins raise the very same classes
and so they can be imported (and type-checked) without the compiled extension.
"""

__all__ = [
    "RtcoreError",
    "WebSocketProtocolError",
    "HttpError",
    "HandshakeError",
    "ConfigError",
]


class RtcoreError(Exception):
    """Base class of every error rtcore raises on purpose."""


class WebSocketProtocolError(RtcoreError):
    """The peer broke RFC 6455 / RFC 7692; the connection must be failed.

    Attributes:
        code: the close code to send (1002 protocol error, 1007 invalid payload
            data, 1009 message too big, ...).
        reason: a short human-readable explanation (sent as the close reason,
            so keep it under 123 bytes of UTF-8).
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, WebSocketProtocolError)
            and other.code == self.code
            and other.reason == self.reason
        )

    def __hash__(self) -> int:
        return hash((self.code, self.reason))


class HttpError(RtcoreError):
    """An HTTP request that must be answered with an error status.

    Attributes:
        status: the HTTP status code (400, 404, 426, 431, ...).
        message: the text for the response body.
        headers: extra response headers, e.g. ``Sec-WebSocket-Version: 13`` on 426.
    """

    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers = headers or []

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


class HandshakeError(HttpError):
    """A WebSocket upgrade request that cannot be accepted."""


class ConfigError(RtcoreError):
    """An invalid configuration value; ``path`` names the key (``server.port``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message
