"""Token buckets: per-connection command rate limits and connection rate limits.

:class:`TokenBucket` is ``rate`` events per second with bursts of ``burst``.
:class:`CommandRateLimits` holds one connection's buckets, one per command
kind of ``client.command_rate_limit`` (``COMMAND_RATE_KINDS``), created at
the first command of that kind; a kind whose rate is 0 is not limited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rtcore.config.model import COMMAND_RATE_KINDS


if TYPE_CHECKING:
    from rtcore.config.model import CommandRateLimitConfig


__all__ = ["CommandRateLimits", "TokenBucket"]

# Protocol method -> its kind in client.command_rate_limit.
KIND_OF_METHOD: dict[str, str] = {
    method: kind for kind, methods in COMMAND_RATE_KINDS.items() for method in methods
}


class TokenBucket:
    """``rate`` events per second with bursts of up to ``burst``."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp", "_clock")

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def allow(self) -> bool:
        """Take a token: True when one was there."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until a token is available."""
        return max(0.0, (1.0 - self._tokens) / self.rate)

    def full(self) -> bool:
        """True when the bucket has refilled to its burst (it remembers nothing)."""
        self._refill()
        return self._tokens >= self.burst


class CommandRateLimits:
    """One connection's command buckets (``client.command_rate_limit``)."""

    __slots__ = ("config", "_buckets", "refused")

    def __init__(self, config: CommandRateLimitConfig) -> None:
        self.config = config
        # kind -> its bucket, or None when the kind is not limited.
        self._buckets: dict[str, TokenBucket | None] = {}
        # Commands refused so far (the first one is logged).
        self.refused = 0

    def allow(self, method: str) -> bool:
        """Whether a command of ``method`` may run now (it takes a token)."""
        kind = KIND_OF_METHOD.get(method)
        if kind is None:
            return True
        buckets = self._buckets
        if kind in buckets:
            bucket = buckets[kind]
        else:
            rate = getattr(self.config, kind)
            bucket = TokenBucket(rate, getattr(self.config, f"{kind}_burst")) if rate else None
            buckets[kind] = bucket
        if bucket is None or bucket.allow():
            return True
        self.refused += 1
        return False

    @property
    def disconnect(self) -> bool:
        """True when a refused command ends the connection (3013) rather than failing (111)."""
        return self.config.action == "disconnect"
