"""Errors of the Redis backends, and how redis-py's failures map onto them."""

from __future__ import annotations

import asyncio

from redis import exceptions as redis_errors

from rtcore.errors import RtcoreError


__all__ = ["RedisEngineError", "RedisUnavailableError", "translate"]


class RedisEngineError(RtcoreError):
    """A Redis command failed: the server answered with an error."""


class RedisUnavailableError(RedisEngineError, ConnectionError):
    """Redis could not be reached, or did not answer in time.

    The operation may or may not have been applied: a publish whose reply was
    lost can still be in history. Retry with the same idempotency key to make
    a retried publish safe.
    """


_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.SlotNotCoveredError,
    redis_errors.TryAgainError,
    redis_errors.MasterDownError,
    redis_errors.ReadOnlyError,
    redis_errors.MaxConnectionsError,
    OSError,
    asyncio.TimeoutError,
)


def translate(exc: BaseException, what: str) -> RedisEngineError:
    """The rtcore error for a failure of ``what``."""
    if isinstance(exc, RedisEngineError):
        return exc
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return RedisUnavailableError(f"{what}: Redis unavailable: {exc}")
    return RedisEngineError(f"{what}: {exc}")
