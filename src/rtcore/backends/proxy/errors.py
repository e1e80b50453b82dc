"""Why a proxy call produced no usable answer."""

from __future__ import annotations


__all__ = [
    "ProxyError",
    "ProxyResponseError",
    "ProxyStatusError",
    "ProxyTimeout",
    "ProxyUnavailable",
]


class ProxyError(Exception):
    """A proxy call that produced no usable answer."""


class ProxyUnavailable(ProxyError):
    """The backend could not be reached, or the connection broke."""


class ProxyTimeout(ProxyError):
    """No complete response within the proxy's timeout."""


class ProxyStatusError(ProxyError):
    """The backend answered with an HTTP status other than 200."""

    def __init__(self, status: int) -> None:
        super().__init__(f"unexpected HTTP status {status}")
        self.status = status


class ProxyResponseError(ProxyError):
    """The backend's answer is not the documented JSON."""
