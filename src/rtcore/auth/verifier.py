"""Connection and subscription token verification.

Checks run in Centrifugo's order, which decides the error when a token has
several problems:

1. parse the compact JWS and type-check every claim (invalid);
2. match ``issuer_regex``/``audience_regex`` and collect their named groups,
   which may select the JWKS endpoint (invalid);
3. verify the signature with a key that allows the header's ``alg`` (invalid,
   or unavailable when the JWKS endpoint cannot be reached);
4. compare ``aud``/``iss`` with the configured values (invalid);
5. connection tokens only: a ``channel`` claim is refused (invalid);
6. ``exp`` and ``nbf`` against the clock (expired);
7. subscription tokens only: ``channel`` is required (invalid).

``iat`` is type-checked but not compared with the clock, as in Centrifugo.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Final

from rtcore.auth.claims import (
    ConnectTokenClaims,
    RegisteredClaims,
    SubscribeTokenClaims,
    decode_connect,
    decode_registered,
    decode_subscribe,
)
from rtcore.auth.config import TokenConfig
from rtcore.auth.errors import InvalidToken, TokenExpired
from rtcore.auth.jwks import JwksCache, http_get
from rtcore.auth.jws import (
    HMAC_ALGORITHMS,
    RSA_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    ParsedToken,
    VerificationKey,
    ec_algorithm_for_curve,
    parse_compact,
)
from rtcore.errors import ConfigError


__all__ = ["TokenVerifier"]


logger = logging.getLogger("rtcore.auth")

_PLACEHOLDER_RE: Final = re.compile(r"\{\{([^{}]*)\}\}")


class _SectionVerifier:
    """Signature and registered-claim checks for one config section."""

    def __init__(
        self,
        config: TokenConfig,
        *,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        jwks_fetch: Callable[[str, float], bytes],
    ) -> None:
        self.config = config
        self._clock = clock
        # Static keys, by the algorithm they verify.
        self._keys: dict[str, list[VerificationKey]] = {}
        # The previous HMAC secret, honoured until its deadline.
        self._previous_hmac: VerificationKey | None = None
        self._jwks: JwksCache | None = None

        static: list[VerificationKey] = []
        if config._hmac is not None:
            static.append(VerificationKey(HMAC_ALGORITHMS, config._hmac))
        if config._rsa is not None:
            static.append(VerificationKey(RSA_ALGORITHMS, config._rsa))
        if config._ecdsa is not None:
            curve_alg = ec_algorithm_for_curve(config._ecdsa.curve)
            static.append(VerificationKey(frozenset({curve_alg}), config._ecdsa))
        for key in static:
            for alg in key.algorithms:
                self._keys.setdefault(alg, []).append(key)
        if config._hmac_previous is not None:
            self._previous_hmac = VerificationKey(HMAC_ALGORITHMS, config._hmac_previous)
        if config.jwks_url is not None:
            self._jwks = JwksCache(
                ttl=config.jwks_cache_ttl,
                refetch_interval=config.jwks_refetch_interval,
                timeout=config.jwks_timeout,
                fetch=jwks_fetch,
                monotonic=monotonic,
            )

    async def check(self, token: ParsedToken, registered: RegisteredClaims) -> None:
        """Steps 2-4 of the module docstring."""
        token_vars = self._token_vars(registered)
        await self._check_signature(token, token_vars)
        config = self.config
        if config.audience is not None and not any(
            hmac.compare_digest(aud.encode(), config.audience.encode()) for aud in registered.aud
        ):
            raise InvalidToken("audience mismatch")
        if config.issuer is not None and not hmac.compare_digest(
            (registered.iss or "").encode(), config.issuer.encode()
        ):
            raise InvalidToken("issuer mismatch")

    def check_time(self, registered: RegisteredClaims) -> None:
        """Step 6: ``exp`` must be in the future and ``nbf`` not."""
        now = self._clock()
        if registered.exp is not None and now >= registered.exp:
            raise TokenExpired("token expired")
        if registered.nbf is not None and now < registered.nbf:
            raise TokenExpired("token not valid yet (nbf is in the future)")

    def _token_vars(self, registered: RegisteredClaims) -> dict[str, str]:
        token_vars: dict[str, str] = {}
        issuer_re = self.config._issuer_re
        if issuer_re is not None:
            match = issuer_re.search(registered.iss or "")
            if match is None:
                raise InvalidToken("issuer does not match issuer_regex")
            token_vars.update({k: v for k, v in match.groupdict().items() if v is not None})
        audience_re = self.config._audience_re
        if audience_re is not None:
            for aud in registered.aud:
                match = audience_re.search(aud)
                if match is not None:
                    token_vars.update({k: v for k, v in match.groupdict().items() if v is not None})
                    break
            else:
                raise InvalidToken("audience does not match audience_regex")
        return token_vars

    def _jwks_url(self, token_vars: dict[str, str]) -> str:
        template = self.config.jwks_url
        assert template is not None

        def fill(match: re.Match[str]) -> str:
            value = token_vars.get(match.group(1))
            if value is None:
                raise InvalidToken(f"no value for JWKS URL placeholder {match.group(0)}")
            return urllib.parse.quote(value, safe="")

        url = _PLACEHOLDER_RE.sub(fill, template)
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        if any(segment in (".", "..") for segment in path.split("/")):
            raise InvalidToken("JWKS URL path contains a relative segment")
        return url

    async def _check_signature(self, token: ParsedToken, token_vars: dict[str, str]) -> None:
        alg = token.alg
        if alg not in SUPPORTED_ALGORITHMS:
            raise InvalidToken(f"unsupported algorithm {alg!r}")
        if self._jwks is not None:
            if alg in HMAC_ALGORITHMS:
                # A public key set never holds shared secrets; refuse before
                # the lookup so such tokens cannot even cause a fetch.
                raise InvalidToken(f"algorithm {alg} is not accepted with a JWKS endpoint")
            kid = token.kid
            if not kid:
                raise InvalidToken("token has no kid header (required with a JWKS endpoint)")
            key = await self._jwks.get_key(self._jwks_url(token_vars), kid)
            if alg not in key.algorithms:
                raise InvalidToken(f"algorithm {alg} is not allowed for JWKS key {kid!r}")
            if not key.verify(token):
                raise InvalidToken("signature verification failed")
            return
        if not self.config.has_keys:
            raise InvalidToken(
                f"token verification is not configured ({self.config.section} has no key)"
            )
        keys = self._keys.get(alg)
        if keys is None and not (alg in HMAC_ALGORITHMS and self._previous_hmac is not None):
            raise InvalidToken(f"algorithm {alg} is not enabled by the configured keys")
        for key in keys or ():
            if key.verify(token):
                return
        previous = self._previous_hmac
        if previous is not None and alg in HMAC_ALGORITHMS:
            valid_until = self.config.hmac_previous_secret_key_valid_until
            if (valid_until == 0 or self._clock() <= valid_until) and previous.verify(token):
                return
        raise InvalidToken("signature verification failed")


class TokenVerifier:
    """Verifies connection and subscription JWTs (Centrifugo semantics).

    Example::

        verifier = TokenVerifier(TokenConfig(hmac_secret_key=secret))
        try:
            claims = await verifier.verify_connect(token)
        except TokenError as exc:
            outcome = exc.outcome(TokenOp.CONNECT)   # code to reply/disconnect with
    """

    def __init__(
        self,
        config: TokenConfig,
        subscription: TokenConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        jwks_fetch: Callable[[str, float], bytes] = http_get,
    ) -> None:
        """
        Args:
            config: the ``client.token`` section; used for connection tokens,
                and for subscription tokens when ``subscription`` is None.
            subscription: the ``client.subscription_token`` section when it is
                enabled; it then replaces ``config`` entirely for
                subscription tokens (no per-key fallback, as in Centrifugo).
            clock: wall clock in unix seconds (tests pass a fixed one).
            monotonic: clock for JWKS cache ages.
            jwks_fetch: blocking ``(url, timeout) -> bytes`` used for JWKS.

        Raises:
            ConfigError: ``subscription`` is given but configures no key; a
                separate subscription section that can verify nothing is
                always a mistake.
        """
        if subscription is not None and not subscription.has_keys:
            raise ConfigError(
                subscription.section,
                "separate subscription token verification is enabled but no key is "
                "configured (set hmac_secret_key, rsa_public_key, ecdsa_public_key or jwks_url)",
            )
        if not config.has_keys:
            logger.warning(
                "%s has no key configured: every connection token will be refused",
                config.section,
            )
        self._connect = _SectionVerifier(
            config, clock=clock, monotonic=monotonic, jwks_fetch=jwks_fetch
        )
        self._subscribe = (
            self._connect
            if subscription is None
            else _SectionVerifier(
                subscription, clock=clock, monotonic=monotonic, jwks_fetch=jwks_fetch
            )
        )

    @property
    def enabled(self) -> bool:
        """True when connection tokens can be verified (a key is configured)."""
        return self._connect.config.has_keys

    async def verify_connect(self, token: str) -> ConnectTokenClaims:
        """Verify a connection token (``connect`` and ``refresh`` commands).

        Raises:
            InvalidToken: malformed, badly signed, refused algorithm, wrong
                ``aud``/``iss``, a ``channel`` claim, or no key configured.
            TokenExpired: ``exp`` passed or ``nbf`` not reached.
            TokenUnavailable: the JWKS endpoint could not be reached.
        """
        section = self._connect
        parsed = parse_compact(token)
        registered = decode_registered(parsed.claims)
        claims, channel = decode_connect(parsed.claims, registered, section.config.user_id_claim)
        await section.check(parsed, registered)
        if channel:
            raise InvalidToken(
                "connection token must not contain a channel claim (only subscription tokens can)"
            )
        section.check_time(registered)
        return claims

    async def verify_subscribe(self, token: str) -> SubscribeTokenClaims:
        """Verify a subscription token (``subscribe`` and ``sub_refresh``).

        The caller must still compare channel, user and client with
        :meth:`SubscribeTokenClaims.check`.

        Raises:
            InvalidToken: as for :meth:`verify_connect`, or no ``channel`` claim.
            TokenExpired: ``exp`` passed or ``nbf`` not reached.
            TokenUnavailable: the JWKS endpoint could not be reached.
        """
        section = self._subscribe
        parsed = parse_compact(token)
        registered = decode_registered(parsed.claims)
        claims = decode_subscribe(parsed.claims, registered, section.config.user_id_claim)
        await section.check(parsed, registered)
        section.check_time(registered)
        if not claims.channel:
            raise InvalidToken("subscription token has no channel claim")
        return claims
