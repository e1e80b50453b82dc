"""JSON Web Key Set fetching and caching.

One :class:`JwksCache` serves one verifier. Per endpoint URL it keeps the
signing keys of the last successful fetch, indexed by ``kid``.

Fetch rules:

* A key set is trusted for ``ttl`` seconds, then fetched again on next use.
* An unknown ``kid`` triggers a fetch, but an endpoint is fetched at most once
  per ``refetch_interval`` seconds whatever the reason. Tokens with random
  ``kid`` values therefore cost one HTTP request per interval, not one each.
* Concurrent verifications that need the same endpoint share one fetch.
* If a fetch fails, the previous keys stay in use (stale-if-error) and the
  failure is logged; a token whose key is not cached then raises
  :class:`TokenUnavailable` (temporary) rather than :class:`InvalidToken`.
* HTTP runs in a worker thread (``asyncio.to_thread``), never on the loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from rtcore._version import __version__
from rtcore.auth.errors import InvalidToken, TokenUnavailable
from rtcore.auth.jws import RSA_ALGORITHMS, VerificationKey, ec_algorithm_for_curve


__all__ = ["JwksCache", "JwksFetchError", "parse_jwks", "http_get"]


logger = logging.getLogger("rtcore.auth")

# A key set larger than this is refused (real ones are a few KiB).
MAX_JWKS_BYTES: Final = 1 << 20
# Attempts per fetch (Centrifugo makes two as well).
FETCH_ATTEMPTS: Final = 2
# Endpoints remembered at once (templated URLs can name several).
MAX_ENDPOINTS: Final = 64

_ALGS = get_default_algorithms()


class JwksFetchError(Exception):
    """The key set could not be downloaded or parsed."""


def http_get(url: str, timeout: float) -> bytes:
    """GET ``url`` and return the body; blocking, meant for a worker thread.

    Raises:
        JwksFetchError: every attempt failed (network error, non-200 status,
            body over ``MAX_JWKS_BYTES``).
    """
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": f"rtcore/{__version__}"}
    )
    problem = "no attempt made"
    for _ in range(FETCH_ATTEMPTS):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if response.status != 200:
                    problem = f"HTTP status {response.status}"
                    continue
                body: bytes = response.read(MAX_JWKS_BYTES + 1)
        except urllib.error.HTTPError as exc:
            problem = f"HTTP status {exc.code}"
            continue
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problem = f"request failed: {exc}"
            continue
        if len(body) > MAX_JWKS_BYTES:
            raise JwksFetchError(f"key set larger than {MAX_JWKS_BYTES} bytes")
        return body
    raise JwksFetchError(problem)


def _jwk_to_key(jwk: dict[str, Any]) -> VerificationKey | None:
    """A signing key from one JWK, or None when the JWK is not usable here.

    Raises:
        ValueError: the JWK claims a supported type but its material is broken.
    """
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        return None  # cannot be selected by a token
    use = jwk.get("use")
    if use is not None and use != "sig":
        return None
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        return None
    kty = jwk.get("kty")
    key: Any
    if kty == "RSA":
        key = _ALGS["RS256"].from_jwk(jwk)
        if isinstance(key, rsa.RSAPrivateKey):
            key = key.public_key()
        if alg is None:
            # "alg" is optional (RFC 7517 §4.4): any RS* then, never HS*/PS*.
            algorithms = RSA_ALGORITHMS
        elif alg in RSA_ALGORITHMS:
            algorithms = frozenset({alg})
        else:
            return None
    elif kty == "EC":
        key = _ALGS["ES256"].from_jwk(jwk)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            key = key.public_key()
        curve_alg = ec_algorithm_for_curve(key.curve)
        if alg is not None and alg != curve_alg:
            return None
        algorithms = frozenset({curve_alg})
    elif kty == "OKP":
        if jwk.get("crv") != "Ed25519":
            return None
        key = _ALGS["EdDSA"].from_jwk(jwk)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            key = key.public_key()
        if alg is not None and alg != "EdDSA":
            return None
        algorithms = frozenset({"EdDSA"})
    else:
        # "oct" keys (shared secrets) never come from a public endpoint.
        return None
    return VerificationKey(algorithms=algorithms, key=key, kid=kid)


def parse_jwks(data: bytes) -> dict[str, VerificationKey]:
    """Parse a JWKS document into signing keys by ``kid``.

    Keys that are not usable for signature verification here (encryption
    keys, unknown types, no ``kid``, broken material) are skipped.

    Raises:
        JwksFetchError: not a JSON object with a ``keys`` list, or no usable
            key at all.
    """
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise JwksFetchError(f"key set is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksFetchError('key set is not a JSON object with a "keys" list')
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            continue
        try:
            key = _jwk_to_key(jwk)
        except Exception as exc:  # PyJWT raises assorted errors on bad material
            logger.warning("skipping JWK kid=%r: %s", jwk.get("kid"), exc)
            continue
        if key is not None:
            keys[key.kid] = key
    if not keys:
        raise JwksFetchError("key set has no usable signing keys")
    return keys


@dataclass(slots=True)
class _Endpoint:
    keys: dict[str, VerificationKey] = field(default_factory=dict)
    # Monotonic time of the last successful fetch, None before the first.
    fetched_at: float | None = None
    # Monotonic time of the last fetch attempt, successful or not.
    attempted_at: float | None = None
    # Why the last attempt failed; None when it succeeded.
    error: str | None = None


class JwksCache:
    """Signing keys from JWKS endpoints, with TTL and refetch limiting."""

    def __init__(
        self,
        *,
        ttl: float,
        refetch_interval: float,
        timeout: float,
        fetch: Callable[[str, float], bytes] = http_get,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            ttl: seconds a fetched key set is trusted.
            refetch_interval: minimum seconds between fetches of one URL.
            timeout: per-request HTTP timeout in seconds.
            fetch: blocking ``(url, timeout) -> body``; run in a thread.
            monotonic: clock, replaceable in tests.
        """
        self._ttl = ttl
        self._refetch_interval = refetch_interval
        self._timeout = timeout
        self._fetch = fetch
        self._monotonic = monotonic
        # LRU of endpoints; least recently used first.
        self._endpoints: OrderedDict[str, _Endpoint] = OrderedDict()
        # One running fetch per URL, shared by all callers.
        self._inflight: dict[str, asyncio.Future[_Endpoint]] = {}

    async def get_key(self, url: str, kid: str) -> VerificationKey:
        """The signing key ``kid`` published at ``url``.

        Raises:
            InvalidToken: the endpoint was fetched and has no such key.
            TokenUnavailable: the key is not cached and the endpoint could not
                be fetched (now, or at the last attempt within the refetch
                interval).
        """
        endpoint = self._endpoints.get(url)
        if endpoint is not None:
            self._endpoints.move_to_end(url)
            now = self._monotonic()
            key = endpoint.keys.get(kid)
            fresh = endpoint.fetched_at is not None and now - endpoint.fetched_at < self._ttl
            if key is not None and fresh:
                return key
            rate_limited = (
                endpoint.attempted_at is not None
                and now - endpoint.attempted_at < self._refetch_interval
            )
            if rate_limited:
                return self._resolve(url, endpoint, kid)
        endpoint = await self._refresh(url)
        return self._resolve(url, endpoint, kid)

    def _resolve(self, url: str, endpoint: _Endpoint, kid: str) -> VerificationKey:
        key = endpoint.keys.get(kid)
        if key is not None:
            return key
        if endpoint.error is not None:
            raise TokenUnavailable(f"JWKS endpoint {url} unavailable: {endpoint.error}")
        raise InvalidToken(f"no signing key with kid {kid!r} in the JWKS")

    async def _refresh(self, url: str) -> _Endpoint:
        future = self._inflight.get(url)
        if future is None:
            future = asyncio.ensure_future(self._fetch_into(url))
            self._inflight[url] = future
            future.add_done_callback(functools.partial(self._forget, url))
        # A cancelled waiter must not cancel the fetch others wait for.
        return await asyncio.shield(future)

    def _forget(self, url: str, future: asyncio.Future[_Endpoint]) -> None:
        if self._inflight.get(url) is future:
            del self._inflight[url]

    def _remember(self, url: str, endpoint: _Endpoint) -> None:
        self._endpoints[url] = endpoint
        self._endpoints.move_to_end(url)
        while len(self._endpoints) > MAX_ENDPOINTS:
            self._endpoints.popitem(last=False)

    async def _fetch_into(self, url: str) -> _Endpoint:
        endpoint = self._endpoints.get(url) or _Endpoint()
        endpoint.attempted_at = self._monotonic()
        self._remember(url, endpoint)
        try:
            body = await asyncio.to_thread(self._fetch, url, self._timeout)
            keys = parse_jwks(body)
        except JwksFetchError as exc:
            endpoint.error = str(exc)
            logger.warning("JWKS fetch from %s failed: %s", url, exc)
        except Exception as exc:
            endpoint.error = f"{type(exc).__name__}: {exc}"
            logger.exception("JWKS fetch from %s failed unexpectedly", url)
        else:
            endpoint.keys = keys
            endpoint.fetched_at = self._monotonic()
            endpoint.error = None
            logger.debug("JWKS fetched from %s: kids %s", url, sorted(keys))
        # Re-insert: it may have been evicted while the request ran.
        self._remember(url, endpoint)
        return endpoint
