"""The configuration of the HTTP-based transports: HTTP-streaming and SSE with
bidirectional emulation, the /emulation endpoint, and the unidirectional
transports (sections ``http_stream``, ``sse``, ``emulation``, ``uni_*``)."""

from __future__ import annotations

from dataclasses import dataclass

from rtcore.config.fields import _f
from rtcore.errors import ConfigError


__all__ = [
    "EmulationSettings",
    "HttpStreamSettings",
    "SseSettings",
    "UniHttpStreamSettings",
    "UniSseSettings",
    "UniWebSocketSettings",
]


@dataclass(slots=True)
class HttpStreamSettings:
    """HTTP-streaming with bidirectional emulation (centrifuge-js fallback)."""

    enabled: bool = _f(True, "Serve /connection/http_stream (and /emulation).")


@dataclass(slots=True)
class SseSettings:
    """Server-Sent Events with bidirectional emulation (centrifuge-js fallback)."""

    enabled: bool = _f(True, "Serve /connection/sse (and /emulation).")


@dataclass(slots=True)
class EmulationSettings:
    """The /emulation endpoint that carries client commands of http_stream/sse sessions."""

    max_request_body_size: int = _f(65536, "Largest emulation request body (larger: 413).")
    rate_limit: float = _f(
        100.0, "Emulation requests per second per session (over it: 429 and disconnect 3013)."
    )
    burst: int = _f(200, "Emulation requests a session may send in a burst.")

    def _validate(self, path: str) -> None:
        if self.max_request_body_size < 1:
            raise ConfigError(f"{path}.max_request_body_size", "must be >= 1")
        if self.rate_limit <= 0:
            raise ConfigError(f"{path}.rate_limit", "must be > 0")
        if self.burst < 1:
            raise ConfigError(f"{path}.burst", "must be >= 1")


@dataclass(slots=True)
class UniWebSocketSettings:
    """Unidirectional WebSocket (server to client only, no SDK needed)."""

    enabled: bool = _f(False, "Serve /connection/uni_websocket.")
    join_push_messages: bool = _f(False, "Send join/leave pushes on uni_websocket.")
    message_size_limit: int = _f(65536, "Largest incoming message (the connect request) in bytes.")


@dataclass(slots=True)
class UniSseSettings:
    """Unidirectional Server-Sent Events."""

    enabled: bool = _f(False, "Serve /connection/uni_sse.")
    max_request_body_size: int = _f(65536, "Largest connect request body (POST) in bytes.")


@dataclass(slots=True)
class UniHttpStreamSettings:
    """Unidirectional HTTP streaming."""

    enabled: bool = _f(False, "Serve /connection/uni_http_stream.")
    max_request_body_size: int = _f(65536, "Largest connect request body in bytes.")
