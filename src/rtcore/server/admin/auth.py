"""Sign-in to the admin web UI: the password check, signed tokens and the attempt limit.

A token is ``<expiry>.<nonce>.<signature>``: the expiry in unix seconds, 16
random bytes, and an HMAC-SHA256 of both keyed with ``admin.secret``. The
password takes part in the signature too, so changing the password (or the
secret) and restarting signs every admin out. Tokens are checked without any
stored state; signing out adds the token's nonce to a small in-memory set
until its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Final


__all__ = ["AdminAuth", "SignInLimiter", "TOKEN_PREFIX"]

#: What the signature covers besides expiry and nonce (a version, for later changes).
TOKEN_PREFIX: Final = "rtcore-admin-v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class AdminAuth:
    """Checks the admin password and issues and verifies sign-in tokens.

    Args:
        password: ``admin.password``.
        secret: ``admin.secret``, the HMAC key of the tokens.
        ttl: seconds a token stays valid.
        clock: unix time in seconds (tests pass their own).
    """

    def __init__(
        self, password: str, secret: str, ttl: float, clock: Callable[[], float] = time.time
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self.ttl = ttl
        self.clock = clock
        self._password_digest = hashlib.sha256(password.encode("utf-8")).digest()
        # Keyed by the secret, bound to the password: a new password voids old tokens.
        self._key = hmac.new(
            secret.encode("utf-8"), b"password:" + self._password_digest, hashlib.sha256
        ).digest()
        # nonce -> expiry of signed-out tokens (pruned as they expire).
        self._revoked: dict[str, int] = {}

    def password_matches(self, given: str) -> bool:
        """Constant-time comparison (of digests, so the length leaks nothing either)."""
        digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self._password_digest)

    def _signature(self, expiry: str, nonce: str) -> str:
        message = f"{TOKEN_PREFIX}.{expiry}.{nonce}".encode("ascii")
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def issue(self) -> tuple[str, int]:
        """A new token and its expiry (unix seconds)."""
        expiry = int(self.clock() + self.ttl)
        nonce = _b64(secrets.token_bytes(16))
        return f"{expiry}.{nonce}.{self._signature(str(expiry), nonce)}", expiry

    def verify(self, token: str) -> int | None:
        """The token's expiry when it is ours, unexpired and not signed out; else None."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 12:
            return None
        expiry_text, nonce, signature = parts
        if not nonce.isascii() or not signature.isascii():
            return None
        expected = self._signature(expiry_text, nonce)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
            return None
        expiry = int(expiry_text)
        if expiry <= self.clock() or nonce in self._revoked:
            return None
        return expiry

    def revoke(self, token: str) -> None:
        """Sign a valid token out before its expiry."""
        expiry = self.verify(token)
        if expiry is None:
            return
        now = self.clock()
        self._revoked = {n: e for n, e in self._revoked.items() if e > now}
        self._revoked[token.split(".")[1]] = expiry


class SignInLimiter:
    """Sign-in attempts per remote address: a token bucket each.

    ``burst`` attempts at once, then one every ``interval`` seconds. The
    table forgets addresses whose bucket is full again, so it stays small.
    Behind a reverse proxy every attempt comes from the proxy's address and
    the limit is shared.
    """

    #: Addresses tracked before full buckets are dropped.
    MAX_ADDRESSES: Final = 10_000

    def __init__(
        self, burst: int = 5, interval: float = 12.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if burst < 1 or interval <= 0:
            raise ValueError("burst must be >= 1 and interval > 0")
        self.burst = burst
        self.interval = interval
        self.clock = clock
        # address -> (tokens, time of that count)
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, address: str, now: float) -> float:
        tokens, stamp = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - stamp) / self.interval)

    def attempt(self, address: str) -> float:
        """Take one attempt for ``address``: 0.0 when allowed, else seconds to wait."""
        now = self.clock()
        tokens = self._tokens(address, now)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return (1.0 - tokens) * self.interval
        if len(self._buckets) >= self.MAX_ADDRESSES and address not in self._buckets:
            self._forget_full(now)
        self._buckets[address] = (tokens - 1.0, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        self._buckets = {
            a: v for a, v in self._buckets.items() if self._tokens(a, now) < self.burst
        }
        if len(self._buckets) >= self.MAX_ADDRESSES:
            # Every tracked address is limited: forget the oldest half.
            by_age = sorted(self._buckets.items(), key=lambda kv: kv[1][1])
            self._buckets = dict(by_age[len(by_age) // 2 :])
