"""Token verification settings: Centrifugo's ``client.token`` section.

The same class describes ``client.subscription_token`` (Centrifugo verifies
subscription tokens with the connection settings unless that section is
enabled); ``section`` only changes the key path in error messages.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Final

from rtcore.auth.jws import (
    ECDSA_ALGORITHMS,
    HMAC_ALGORITHMS,
    RSA_ALGORITHMS,
    ec_algorithm_for_curve,
    hmac_key,
    load_ec_public_key,
    load_rsa_public_key,
)
from rtcore.errors import ConfigError


__all__ = ["TokenConfig"]


logger = logging.getLogger("rtcore.auth")

_PLACEHOLDER_RE: Final = re.compile(r"\{\{([^{}]*)\}\}")
_GROUP_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters a template group may match unescaped; anything else must be
# backslash-escaped punctuation (e.g. "\." or "\/").
_LITERAL_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-~:@!,;='"
)
# Short HMAC secrets are accepted (Centrifugo accepts them) but logged.
_HMAC_RECOMMENDED_MIN_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """How to verify connection (or subscription) JWTs.

    Key sources decide which algorithms are accepted: an HMAC secret enables
    HS256/384/512, an RSA key RS256/384/512, an ECDSA key the one ES* algorithm
    of its curve, and a JWKS endpoint whatever its keys declare (RS*, ES*,
    EdDSA). A config with no key source at all is valid and means "tokens are
    not configured": every token is then refused as invalid at verify time.
    """

    # HMAC secret for HS256/HS384/HS512. Default: None (HMAC tokens refused).
    hmac_secret_key: str | None = None
    # Previous HMAC secret, still accepted during a rotation. Default: None.
    hmac_previous_secret_key: str | None = None
    # Unix seconds after which the previous secret stops working; 0 means no
    # deadline. Default: 0.
    hmac_previous_secret_key_valid_until: int = 0
    # PEM RSA public key (SPKI, PKCS#1 or certificate) for RS256/384/512.
    # Default: None.
    rsa_public_key: str | None = None
    # PEM ECDSA public key (P-256/P-384/P-521) for ES256/384/512. Default: None.
    ecdsa_public_key: str | None = None
    # JWKS endpoint (http/https); may contain {{name}} placeholders filled from
    # named groups of issuer_regex/audience_regex. Centrifugo calls it
    # ``jwks_public_endpoint``. Cannot be combined with static keys.
    # Default: None.
    jwks_url: str | None = None
    # Seconds a fetched key set is trusted before it is fetched again.
    # Default: 3600.
    jwks_cache_ttl: float = 3600.0
    # Minimum seconds between two fetches of one endpoint. Bounds refetches
    # caused by unknown ``kid`` values and retries against a failing
    # endpoint. Default: 10.
    jwks_refetch_interval: float = 10.0
    # Timeout in seconds of one JWKS HTTP request (two attempts are made).
    # Default: 3.
    jwks_timeout: float = 3.0
    # Required ``aud`` value (any element when ``aud`` is a list). Default: None.
    audience: str | None = None
    # Python regex an ``aud`` element must match (``re.search``). Default: None.
    audience_regex: str | None = None
    # Required ``iss`` value. Default: None.
    issuer: str | None = None
    # Python regex ``iss`` must match (``re.search``). Default: None.
    issuer_regex: str | None = None
    # Claim holding the user id. A top-level claim name; if no claim has that
    # exact name and it contains dots, it is read as a path into nested
    # objects ("user.id"). Default: "sub".
    user_id_claim: str = "sub"
    # Where this section lives, for error messages only. Default: "client.token".
    section: str = field(default="client.token", compare=False)

    # Parsed forms, filled by __post_init__.
    _hmac: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _hmac_previous: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _rsa: Any = field(default=None, init=False, repr=False, compare=False)
    _ecdsa: Any = field(default=None, init=False, repr=False, compare=False)
    _audience_re: re.Pattern[str] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _issuer_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # "" means unset, as in Centrifugo (environment variables cannot be None).
        for name in (
            "hmac_secret_key",
            "hmac_previous_secret_key",
            "rsa_public_key",
            "ecdsa_public_key",
            "jwks_url",
            "audience",
            "audience_regex",
            "issuer",
            "issuer_regex",
        ):
            value = getattr(self, name)
            if value == "":
                object.__setattr__(self, name, None)
            elif value is not None and not isinstance(value, str):
                self._fail(name, f"must be a string, got {type(value).__name__}")

        if self.hmac_secret_key is not None:
            object.__setattr__(self, "_hmac", self._load_hmac("hmac_secret_key"))
        if self.hmac_previous_secret_key is not None:
            if self.hmac_secret_key is None:
                self._fail("hmac_previous_secret_key", "requires hmac_secret_key to be set")
            object.__setattr__(self, "_hmac_previous", self._load_hmac("hmac_previous_secret_key"))
        valid_until = self.hmac_previous_secret_key_valid_until
        if isinstance(valid_until, bool) or not isinstance(valid_until, int) or valid_until < 0:
            self._fail(
                "hmac_previous_secret_key_valid_until",
                "must be a non-negative integer (unix seconds, 0 = no deadline)",
            )

        if self.rsa_public_key is not None:
            try:
                object.__setattr__(self, "_rsa", load_rsa_public_key(self.rsa_public_key))
            except ValueError as exc:
                self._fail("rsa_public_key", str(exc))
        if self.ecdsa_public_key is not None:
            try:
                object.__setattr__(self, "_ecdsa", load_ec_public_key(self.ecdsa_public_key))
            except ValueError as exc:
                self._fail("ecdsa_public_key", str(exc))

        for name in ("jwks_cache_ttl", "jwks_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                self._fail(name, "must be a positive number of seconds")
        refetch = self.jwks_refetch_interval
        if isinstance(refetch, bool) or not isinstance(refetch, int | float) or not refetch >= 0:
            self._fail("jwks_refetch_interval", "must be a non-negative number of seconds")

        if self.audience is not None and self.audience_regex is not None:
            self._fail("audience_regex", "cannot be combined with audience; set only one")
        if self.issuer is not None and self.issuer_regex is not None:
            self._fail("issuer_regex", "cannot be combined with issuer; set only one")
        object.__setattr__(self, "_audience_re", self._compile("audience_regex"))
        object.__setattr__(self, "_issuer_re", self._compile("issuer_regex"))

        if not isinstance(self.user_id_claim, str) or not self.user_id_claim:
            self._fail("user_id_claim", "must be a non-empty claim name")

        if self.jwks_url is not None:
            self._check_jwks_url()

    # -- derived views ---------------------------------------------------

    @property
    def has_keys(self) -> bool:
        """True when at least one key source is configured."""
        return (
            self.hmac_secret_key is not None
            or self.rsa_public_key is not None
            or self.ecdsa_public_key is not None
            or self.jwks_url is not None
        )

    @property
    def static_algorithms(self) -> frozenset[str]:
        """Algorithms enabled by the static keys (not JWKS)."""
        algorithms: set[str] = set()
        if self._hmac is not None:
            algorithms |= HMAC_ALGORITHMS
        if self._rsa is not None:
            algorithms |= RSA_ALGORITHMS
        if self._ecdsa is not None:
            algorithms.add(ec_algorithm_for_curve(self._ecdsa.curve))
        assert algorithms <= HMAC_ALGORITHMS | RSA_ALGORITHMS | ECDSA_ALGORITHMS
        return frozenset(algorithms)

    @property
    def jwks_placeholders(self) -> tuple[str, ...]:
        """Names of the ``{{name}}`` placeholders in ``jwks_url``, in order."""
        if self.jwks_url is None:
            return ()
        return tuple(m.group(1) for m in _PLACEHOLDER_RE.finditer(self.jwks_url))

    # -- helpers ---------------------------------------------------------

    def _fail(self, key: str, message: str) -> None:
        raise ConfigError(f"{self.section}.{key}", message)

    def _load_hmac(self, name: str) -> bytes:
        secret = getattr(self, name)
        try:
            key = hmac_key(secret)
        except ValueError as exc:
            self._fail(name, str(exc))
            raise  # pragma: no cover - _fail always raises
        if len(key) < _HMAC_RECOMMENDED_MIN_BYTES:
            logger.warning(
                "%s.%s is %d bytes long; at least %d random bytes are recommended",
                self.section,
                name,
                len(key),
                _HMAC_RECOMMENDED_MIN_BYTES,
            )
        return key

    def _compile(self, name: str) -> re.Pattern[str] | None:
        pattern = getattr(self, name)
        if pattern is None:
            return None
        try:
            return re.compile(pattern)
        except re.error as exc:
            self._fail(name, f"invalid regular expression: {exc}")
            raise  # pragma: no cover - _fail always raises

    def _check_jwks_url(self) -> None:
        url = self.jwks_url
        assert url is not None
        static = [
            name
            for name in ("hmac_secret_key", "rsa_public_key", "ecdsa_public_key")
            if getattr(self, name) is not None
        ]
        if static:
            # Centrifugo silently ignores static keys when a JWKS endpoint is
            # set; refusing the combination avoids a config that looks like
            # it accepts more than it does.
            self._fail("jwks_url", f"cannot be combined with {', '.join(static)}")
        placeholders = self.jwks_placeholders
        probe = _PLACEHOLDER_RE.sub("x", url)
        parsed = urllib.parse.urlsplit(probe)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            self._fail("jwks_url", "must be an absolute http:// or https:// URL")
        if "{{" in probe or "}}" in probe:
            self._fail("jwks_url", "has an unterminated {{placeholder}}")
        for name in placeholders:
            if not _GROUP_NAME_RE.fullmatch(name):
                self._fail("jwks_url", f"placeholder {{{{{name}}}}} is not a valid group name")
            sources = [
                (key, pattern)
                for key, pattern in (
                    ("issuer_regex", self.issuer_regex),
                    ("audience_regex", self.audience_regex),
                )
                if pattern is not None and _find_named_group(pattern, name) is not None
            ]
            if not sources:
                self._fail(
                    "jwks_url",
                    f"placeholder {{{{{name}}}}} is not a named group (?P<{name}>...) "
                    "of issuer_regex or audience_regex",
                )
            for key, pattern in sources:
                body = _find_named_group(pattern, name)
                assert body is not None
                problem = _literal_alternation_problem(body)
                if problem is not None:
                    # The group's value comes from an unverified claim and
                    # selects where keys are fetched from: it must be one of
                    # a fixed list, or an attacker picks the key server.
                    self._fail(
                        key,
                        f"group {name!r} is used in jwks_url, so it must be an explicit "
                        f"list of allowed values such as (?P<{name}>acme|globex): {problem}",
                    )


def _find_named_group(pattern: str, name: str) -> str | None:
    """The source text inside ``(?P<name>...)`` in ``pattern``, or None."""
    opener = f"(?P<{name}>"
    start = pattern.find(opener)
    while start != -1:
        # An escaped "(" is a literal parenthesis, not a group.
        backslashes = start - len(pattern[:start].rstrip("\\"))
        if backslashes % 2 == 0:
            break
        start = pattern.find(opener, start + 1)
    if start == -1:
        return None
    i = start + len(opener)
    depth = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                return pattern[start + len(opener) : i]
            depth -= 1
        i += 1
    return None


def _literal_alternation_problem(body: str) -> str | None:
    """Why ``body`` is not ``lit|lit|...`` of plain literals, or None if it is."""
    alternatives: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            if i + 1 >= len(body):
                return "trailing backslash"
            escaped = body[i + 1]
            if escaped.isalnum():
                return f"escape \\{escaped} is a class or special sequence"
            current.append(escaped)
            i += 2
            continue
        if ch == "|":
            alternatives.append("".join(current))
            current = []
        elif ch in _LITERAL_CHARS:
            current.append(ch)
        else:
            return f"{ch!r} is not a literal character (escape punctuation, e.g. \\.)"
        i += 1
    alternatives.append("".join(current))
    if any(alt == "" for alt in alternatives):
        return "empty alternative"
    return None
