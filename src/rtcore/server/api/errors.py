"""Errors the server API reports in the response body."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any


__all__ = [
    "ERROR_INTERNAL",
    "ERROR_NOT_AVAILABLE",
    "ERROR_NOT_FOUND",
    "ERROR_UNRECOVERABLE_POSITION",
    "ApiError",
    "bad_request",
    "reply_of",
]


class ApiError(Exception):
    """An error reported in the response body: ``{"code": ..., "message": ...}``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def bad_request(detail: str) -> ApiError:
    """Error 107 with ``detail``."""
    return ApiError(107, f"bad request: {detail}")


ERROR_INTERNAL = ApiError(100, "internal server error")
ERROR_NOT_FOUND = ApiError(104, "not found")
ERROR_NOT_AVAILABLE = ApiError(108, "not available")
ERROR_UNRECOVERABLE_POSITION = ApiError(112, "unrecoverable position")


async def reply_of(key: str, result: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """``{key: <result>}``, or ``{"error": ...}`` when awaiting ``result`` raises ApiError."""
    try:
        return {key: await result}
    except ApiError as exc:
        return {"error": exc.to_json()}
