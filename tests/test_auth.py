"""Tests for rtcore.auth: JWT verification with Centrifugo semantics."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from rtcore.auth import (
    DISCONNECT_EXPIRED,
    DISCONNECT_INVALID_TOKEN,
    ERROR_INTERNAL,
    ERROR_PERMISSION_DENIED,
    ERROR_TOKEN_EXPIRED,
    ConnectTokenClaims,
    InvalidToken,
    SubscribeOverride,
    SubscribeTokenClaims,
    TokenConfig,
    TokenError,
    TokenExpired,
    TokenMismatch,
    TokenOp,
    TokenOutcome,
    TokenSubscription,
    TokenUnavailable,
    TokenVerifier,
    make_connect_token,
    make_subscribe_token,
)
from rtcore.auth.jwks import MAX_JWKS_BYTES, JwksFetchError, http_get, parse_jwks
from rtcore.errors import ConfigError


SECRET = "s3cr3t-for-tests-0123456789abcdef"
OTHER_SECRET = "another-secret-0123456789abcdefgh"
NOW = 1_750_000_000.0


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(
    header: dict[str, Any] | bytes,
    claims: dict[str, Any] | bytes,
    signer: Callable[[bytes], bytes] | None = None,
) -> str:
    """Build a compact JWS by hand, with any header/claims and signature."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    c = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{b64url(h)}.{b64url(c)}"
    signature = signer(signing_input.encode()) if signer else b""
    return f"{signing_input}.{b64url(signature)}"


def hs256(key: bytes) -> Callable[[bytes], bytes]:
    return lambda msg: hmac.new(key, msg, hashlib.sha256).digest()


def public_pem(private_key: Any) -> str:
    return str(
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    return {
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "ES384": ec.generate_private_key(ec.SECP384R1()),
        "ES512": ec.generate_private_key(ec.SECP521R1()),
    }


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def hs_verifier() -> TokenVerifier:
    return TokenVerifier(TokenConfig(hmac_secret_key=SECRET))


def fixed_verifier(config: TokenConfig, now: float = NOW, **kwargs: Any) -> TokenVerifier:
    return TokenVerifier(config, clock=lambda: now, **kwargs)


# ---------------------------------------------------------------------------
# Configuration


class TestConfig:
    def test_empty_config_is_valid_and_refuses_tokens_at_verify_time(self) -> None:
        config = TokenConfig()
        assert not config.has_keys
        verifier = TokenVerifier(config)
        assert not verifier.enabled
        token = make_connect_token(SECRET, "42")
        with pytest.raises(InvalidToken, match="not configured"):
            run(verifier.verify_connect(token))
        with pytest.raises(InvalidToken, match="not configured"):
            run(verifier.verify_subscribe(make_subscribe_token(SECRET, "42", "news")))

    def test_empty_strings_mean_unset(self) -> None:
        config = TokenConfig(hmac_secret_key="", rsa_public_key="", jwks_url="", audience="")
        assert config.hmac_secret_key is None
        assert config.jwks_url is None
        assert config.audience is None
        assert not config.has_keys

    def test_enabled_algorithms_follow_keys(
        self, rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, Any]
    ) -> None:
        assert TokenConfig(hmac_secret_key=SECRET).static_algorithms == {
            "HS256",
            "HS384",
            "HS512",
        }
        assert TokenConfig(rsa_public_key=public_pem(rsa_key)).static_algorithms == {
            "RS256",
            "RS384",
            "RS512",
        }
        for alg, key in ec_keys.items():
            assert TokenConfig(ecdsa_public_key=public_pem(key)).static_algorithms == {alg}

    @pytest.mark.parametrize(
        ("kwargs", "path"),
        [
            ({"rsa_public_key": "not a pem"}, "client.token.rsa_public_key"),
            (
                {"ecdsa_public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"},
                "client.token.ecdsa_public_key",
            ),
            ({"hmac_secret_key": 123}, "client.token.hmac_secret_key"),
            ({"audience": "a", "audience_regex": "a"}, "client.token.audience_regex"),
            ({"issuer": "i", "issuer_regex": "i"}, "client.token.issuer_regex"),
            ({"issuer_regex": "(unclosed"}, "client.token.issuer_regex"),
            ({"audience_regex": "[z-a]"}, "client.token.audience_regex"),
            ({"hmac_previous_secret_key": OTHER_SECRET}, "client.token.hmac_previous_secret_key"),
            (
                {"hmac_secret_key": SECRET, "hmac_previous_secret_key_valid_until": -1},
                "client.token.hmac_previous_secret_key_valid_until",
            ),
            ({"jwks_cache_ttl": 0}, "client.token.jwks_cache_ttl"),
            ({"jwks_timeout": -1}, "client.token.jwks_timeout"),
            ({"jwks_refetch_interval": -0.5}, "client.token.jwks_refetch_interval"),
            ({"user_id_claim": ""}, "client.token.user_id_claim"),
            ({"jwks_url": "ftp://example.com/jwks"}, "client.token.jwks_url"),
            ({"jwks_url": "/relative/jwks"}, "client.token.jwks_url"),
            (
                {"jwks_url": "https://example.com/jwks", "hmac_secret_key": SECRET},
                "client.token.jwks_url",
            ),
            ({"jwks_url": "https://example.com/{{tenant}}/jwks"}, "client.token.jwks_url"),
            ({"jwks_url": "https://example.com/{{tenant/jwks"}, "client.token.jwks_url"),
        ],
    )
    def test_invalid_values_raise_config_error(self, kwargs: dict[str, Any], path: str) -> None:
        with pytest.raises(ConfigError) as info:
            TokenConfig(**kwargs)
        assert info.value.path == path

    def test_wrong_key_type_for_the_slot(
        self, rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, Any]
    ) -> None:
        with pytest.raises(ConfigError, match="expected an RSA public key"):
            TokenConfig(rsa_public_key=public_pem(ec_keys["ES256"]))
        with pytest.raises(ConfigError, match="expected an ECDSA public key"):
            TokenConfig(ecdsa_public_key=public_pem(rsa_key))

    def test_unsupported_ec_curve(self) -> None:
        key = ec.generate_private_key(ec.SECP256K1())
        with pytest.raises(ConfigError, match="unsupported ECDSA curve"):
            TokenConfig(ecdsa_public_key=public_pem(key))

    def test_public_key_as_hmac_secret_is_refused(self, rsa_key: rsa.RSAPrivateKey) -> None:
        with pytest.raises(ConfigError) as info:
            TokenConfig(hmac_secret_key=public_pem(rsa_key))
        assert info.value.path == "client.token.hmac_secret_key"
        assert "asymmetric key" in info.value.message

    def test_pkcs1_and_certificate_pem_are_accepted(self, rsa_key: rsa.RSAPrivateKey) -> None:
        pkcs1 = (
            rsa_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
            .decode()
        )
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokens")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(rsa_key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(rsa_key, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        token = make_connect_token(rsa_key, "42", algorithm="RS256")
        for pem in (pkcs1, cert_pem):
            claims = run(TokenVerifier(TokenConfig(rsa_public_key=pem)).verify_connect(token))
            assert claims.user == "42"

    def test_section_names_the_error_path(self) -> None:
        with pytest.raises(ConfigError) as info:
            TokenConfig(rsa_public_key="junk", section="client.subscription_token")
        assert info.value.path == "client.subscription_token.rsa_public_key"

    def test_subscription_section_without_keys_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError) as info:
            TokenVerifier(
                TokenConfig(hmac_secret_key=SECRET),
                TokenConfig(section="client.subscription_token"),
            )
        assert info.value.path == "client.subscription_token"

    @pytest.mark.parametrize(
        ("regex", "ok"),
        [
            (r"^https://auth\.example\.com/(?P<tenant>acme|globex)$", True),
            (r"^(?P<tenant>acme)$", True),
            (r"^https://auth\.example\.com/(?P<tenant>.+)$", False),
            (r"^(?P<tenant>[a-z]+)$", False),
            (r"^(?P<tenant>\w+)$", False),
            (r"^(?P<tenant>acme|)$", False),
            (r"^(?P<tenant>acme|glob.x)$", False),
            (r"^(?P<tenant>(acme|globex))$", False),
            (r"^(?P<tenant>acme*)$", False),
        ],
    )
    def test_jwks_template_groups_must_be_literal_lists(self, regex: str, ok: bool) -> None:
        kwargs: dict[str, Any] = {
            "jwks_url": "https://keys.example.com/{{tenant}}/jwks",
            "issuer_regex": regex,
        }
        if ok:
            assert TokenConfig(**kwargs).jwks_placeholders == ("tenant",)
        else:
            with pytest.raises(ConfigError) as info:
                TokenConfig(**kwargs)
            assert info.value.path == "client.token.issuer_regex"

    def test_regex_groups_not_in_the_template_are_unrestricted(self) -> None:
        config = TokenConfig(
            jwks_url="https://keys.example.com/{{tenant}}/jwks",
            issuer_regex=r"^(?P<tenant>acme|globex)$",
            audience_regex=r"^(?P<app>.+)$",
        )
        assert config.jwks_placeholders == ("tenant",)


# ---------------------------------------------------------------------------
# Algorithms


class TestAlgorithms:
    @pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
    def test_hmac(self, alg: str, hs_verifier: TokenVerifier) -> None:
        token = make_connect_token(SECRET, "42", algorithm=alg)
        assert jwt.get_unverified_header(token)["alg"] == alg
        assert run(hs_verifier.verify_connect(token)).user == "42"

    @pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
    @pytest.mark.parametrize("key_len", [32, 64, 65, 128, 129, 300])
    def test_hmac_key_lengths(self, alg: str, key_len: int) -> None:
        # The verifier prepares the key's pads once (RFC 2104); keys shorter
        # than, as long as and longer than the hash's block (64 or 128 bytes)
        # must give hmac.digest's value, and one flipped bit must fail.
        secret = "".join(chr(0x61 + i % 26) for i in range(key_len))
        verifier = TokenVerifier(TokenConfig(hmac_secret_key=secret))
        header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        claims = b64url(json.dumps({"sub": "42"}).encode())
        signing_input = f"{header}.{claims}".encode()
        digest = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}[alg]
        good = hmac.digest(secret.encode(), signing_input, digest)
        for _ in range(2):  # the second time from the prepared pads
            token = f"{header}.{claims}.{b64url(good)}"
            assert run(verifier.verify_connect(token)).user == "42"
        bad = bytes([good[0] ^ 1]) + good[1:]
        with pytest.raises(InvalidToken, match="signature verification failed"):
            run(verifier.verify_connect(f"{header}.{claims}.{b64url(bad)}"))

    @pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
    def test_rsa(self, alg: str, rsa_key: rsa.RSAPrivateKey) -> None:
        verifier = TokenVerifier(TokenConfig(rsa_public_key=public_pem(rsa_key)))
        pem_private = rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        token = make_connect_token(pem_private, "42", algorithm=alg)
        assert run(verifier.verify_connect(token)).user == "42"
        sub = make_subscribe_token(rsa_key, "42", "news", algorithm=alg)
        assert run(verifier.verify_subscribe(sub)).channel == "news"

    @pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
    def test_ecdsa(self, alg: str, ec_keys: dict[str, Any]) -> None:
        key = ec_keys[alg]
        verifier = TokenVerifier(TokenConfig(ecdsa_public_key=public_pem(key)))
        token = make_connect_token(key, "42", algorithm=alg)
        assert run(verifier.verify_connect(token)).user == "42"

    def test_ecdsa_key_enables_only_its_curve(self, ec_keys: dict[str, Any]) -> None:
        verifier = TokenVerifier(TokenConfig(ecdsa_public_key=public_pem(ec_keys["ES256"])))
        # Well-formed ES384 token (P-384 key): refused, ES384 is not enabled.
        token = make_connect_token(ec_keys["ES384"], "42", algorithm="ES384")
        with pytest.raises(InvalidToken, match="ES384 is not enabled"):
            run(verifier.verify_connect(token))

    def test_all_static_keys_together(
        self, rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, Any]
    ) -> None:
        verifier = TokenVerifier(
            TokenConfig(
                hmac_secret_key=SECRET,
                rsa_public_key=public_pem(rsa_key),
                ecdsa_public_key=public_pem(ec_keys["ES256"]),
            )
        )
        for key, alg in ((SECRET, "HS512"), (rsa_key, "RS256"), (ec_keys["ES256"], "ES256")):
            assert (
                run(verifier.verify_connect(make_connect_token(key, "u", algorithm=alg))).user
                == "u"
            )

    def test_algorithm_not_enabled(self, rsa_key: rsa.RSAPrivateKey) -> None:
        verifier = TokenVerifier(TokenConfig(rsa_public_key=public_pem(rsa_key)))
        with pytest.raises(InvalidToken, match="HS256 is not enabled"):
            run(verifier.verify_connect(make_connect_token(SECRET, "42")))

    def test_algorithm_confusion_rsa_pem_as_hmac_secret(self, rsa_key: rsa.RSAPrivateKey) -> None:
        pem = public_pem(rsa_key)
        forged = compact({"alg": "HS256", "typ": "JWT"}, {"sub": "admin"}, hs256(pem.encode()))
        only_rsa = TokenVerifier(TokenConfig(rsa_public_key=pem))
        with pytest.raises(InvalidToken):
            run(only_rsa.verify_connect(forged))
        # With an HMAC secret configured too, HS256 is verified with that
        # secret only, never with the RSA key material.
        both = TokenVerifier(TokenConfig(rsa_public_key=pem, hmac_secret_key=SECRET))
        with pytest.raises(InvalidToken, match="signature verification failed"):
            run(both.verify_connect(forged))

    def test_rsa_signature_claimed_as_ecdsa(
        self, rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, Any]
    ) -> None:
        rs = make_connect_token(rsa_key, "42", algorithm="RS256")
        header, payload, signature = rs.split(".")
        relabeled = f"{b64url(json.dumps({'alg': 'ES256'}).encode())}.{payload}.{signature}"
        verifier = TokenVerifier(
            TokenConfig(
                rsa_public_key=public_pem(rsa_key), ecdsa_public_key=public_pem(ec_keys["ES256"])
            )
        )
        with pytest.raises(InvalidToken):
            run(verifier.verify_connect(relabeled))

    @pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
    def test_alg_none_is_refused(self, alg: str, hs_verifier: TokenVerifier) -> None:
        token = compact({"alg": alg, "typ": "JWT"}, {"sub": "42"})
        with pytest.raises(InvalidToken, match="unsupported algorithm"):
            run(hs_verifier.verify_connect(token))
        with pytest.raises(InvalidToken, match="unsupported algorithm"):
            run(hs_verifier.verify_subscribe(compact({"alg": alg}, {"sub": "", "channel": "c"})))

    def test_ps256_is_not_supported(self, rsa_key: rsa.RSAPrivateKey) -> None:
        token = jwt.encode({"sub": "42"}, rsa_key, algorithm="PS256")
        verifier = TokenVerifier(TokenConfig(rsa_public_key=public_pem(rsa_key)))
        with pytest.raises(InvalidToken, match="unsupported algorithm 'PS256'"):
            run(verifier.verify_connect(token))

    def test_wrong_hmac_secret(self, hs_verifier: TokenVerifier) -> None:
        with pytest.raises(InvalidToken, match="signature verification failed"):
            run(hs_verifier.verify_connect(make_connect_token(OTHER_SECRET, "42")))

    def test_wrong_rsa_key(
        self, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
    ) -> None:
        verifier = TokenVerifier(TokenConfig(rsa_public_key=public_pem(rsa_key)))
        token = make_connect_token(other_rsa_key, "42", algorithm="RS256")
        with pytest.raises(InvalidToken, match="signature verification failed"):
            run(verifier.verify_connect(token))

    def test_wrong_ecdsa_key(self) -> None:
        key, other = (
            ec.generate_private_key(ec.SECP256R1()),
            ec.generate_private_key(ec.SECP256R1()),
        )
        verifier = TokenVerifier(TokenConfig(ecdsa_public_key=public_pem(key)))
        with pytest.raises(InvalidToken, match="signature verification failed"):
            run(verifier.verify_connect(make_connect_token(other, "42", algorithm="ES256")))

    def test_tampered_claims(self, hs_verifier: TokenVerifier) -> None:
        header, _, signature = make_connect_token(SECRET, "42").split(".")
        forged = f"{header}.{b64url(json.dumps({'sub': 'admin'}).encode())}.{signature}"
        with pytest.raises(InvalidToken, match="signature verification failed"):
            run(hs_verifier.verify_connect(forged))

    @pytest.mark.parametrize("signature", [b"", b"\x00", b"x" * 300])
    def test_garbage_signatures(
        self, signature: bytes, rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, Any]
    ) -> None:
        verifier = TokenVerifier(
            TokenConfig(
                hmac_secret_key=SECRET,
                rsa_public_key=public_pem(rsa_key),
                ecdsa_public_key=public_pem(ec_keys["ES512"]),
            )
        )
        for alg in ("HS256", "RS256", "ES512"):
            token = compact({"alg": alg}, {"sub": "42"}, lambda _: signature)
            with pytest.raises(InvalidToken, match="signature verification failed"):
                run(verifier.verify_connect(token))


# ---------------------------------------------------------------------------
# Time claims


class TestTime:
    def test_expired(self, hs_verifier: TokenVerifier) -> None:
        with pytest.raises(TokenExpired):
            run(hs_verifier.verify_connect(make_connect_token(SECRET, "42", ttl=-10)))
        with pytest.raises(TokenExpired):
            run(hs_verifier.verify_subscribe(make_subscribe_token(SECRET, "42", "c", ttl=-10)))

    def test_exp_boundary(self) -> None:
        verifier = fixed_verifier(TokenConfig(hmac_secret_key=SECRET))
        at_now = make_connect_token(SECRET, "42", extra_claims={"exp": int(NOW)})
        with pytest.raises(TokenExpired):
            run(verifier.verify_connect(at_now))
        later = make_connect_token(SECRET, "42", extra_claims={"exp": int(NOW) + 1})
        assert run(verifier.verify_connect(later)).expire_at == int(NOW) + 1

    def test_fractional_exp(self) -> None:
        verifier = fixed_verifier(TokenConfig(hmac_secret_key=SECRET))
        token = make_connect_token(SECRET, "42", extra_claims={"exp": NOW + 0.5})
        assert run(verifier.verify_connect(token)).expire_at == int(NOW)

    def test_nbf(self) -> None:
        verifier = fixed_verifier(TokenConfig(hmac_secret_key=SECRET))
        future = make_connect_token(SECRET, "42", extra_claims={"nbf": NOW + 60})
        with pytest.raises(TokenExpired, match="nbf"):
            run(verifier.verify_connect(future))
        past = make_connect_token(SECRET, "42", extra_claims={"nbf": NOW - 60})
        assert run(verifier.verify_connect(past)).user == "42"
        at_now = make_connect_token(SECRET, "42", extra_claims={"nbf": NOW})
        assert run(verifier.verify_connect(at_now)).user == "42"

    def test_iat_in_the_future_is_not_checked(self) -> None:
        verifier = fixed_verifier(TokenConfig(hmac_secret_key=SECRET))
        token = make_connect_token(SECRET, "42", extra_claims={"iat": NOW + 10 * 365 * 86400})
        claims = run(verifier.verify_connect(token))
        assert claims.issued_at == int(NOW) + 10 * 365 * 86400

    def test_signature_is_checked_before_expiry(self, hs_verifier: TokenVerifier) -> None:
        token = make_connect_token(OTHER_SECRET, "42", ttl=-10)
        with pytest.raises(InvalidToken):
            run(hs_verifier.verify_connect(token))

    def test_audience_is_checked_before_expiry(self) -> None:
        verifier = TokenVerifier(TokenConfig(hmac_secret_key=SECRET, audience="rtcore"))
        token = make_connect_token(SECRET, "42", ttl=-10, audience="other")
        with pytest.raises(InvalidToken, match="audience"):
            run(verifier.verify_connect(token))

    def test_connect_channel_claim_is_checked_before_expiry(
        self, hs_verifier: TokenVerifier
    ) -> None:
        token = make_connect_token(SECRET, "42", ttl=-10, extra_claims={"channel": "news"})
        with pytest.raises(InvalidToken, match="channel"):
            run(hs_verifier.verify_connect(token))

    def test_subscribe_channel_is_checked_after_expiry(self, hs_verifier: TokenVerifier) -> None:
        token = make_connect_token(SECRET, "42", ttl=-10)  # no channel claim
        with pytest.raises(TokenExpired):
            run(hs_verifier.verify_subscribe(token))
        with pytest.raises(InvalidToken, match="no channel claim"):
            run(hs_verifier.verify_subscribe(make_connect_token(SECRET, "42", ttl=60)))


# ---------------------------------------------------------------------------
# Audience and issuer


class TestAudienceIssuer:
    def test_audience(self) -> None:
        verifier = TokenVerifier(TokenConfig(hmac_secret_key=SECRET, audience="rtcore"))
        for aud in ("rtcore", ["other", "rtcore"]):
            token = make_connect_token(SECRET, "42", audience=aud)
            assert run(verifier.verify_connect(token)).user == "42"
        for bad in ("other", ["a", "b"], []):
            with pytest.raises(InvalidToken, match="audience mismatch"):
                run(verifier.verify_connect(make_connect_token(SECRET, "42", audience=bad)))
        with pytest.raises(InvalidToken, match="audience mismatch"):
            run(verifier.verify_connect(make_connect_token(SECRET, "42")))

    def test_issuer(self) -> None:
        verifier = TokenVerifier(TokenConfig(hmac_secret_key=SECRET, issuer="https://idp"))
        good = make_subscribe_token(SECRET, "42", "news", issuer="https://idp")
        assert run(verifier.verify_subscribe(good)).channel == "news"
        for token in (
            make_subscribe_token(SECRET, "42", "news", issuer="https://evil"),
            make_subscribe_token(SECRET, "42", "news"),
        ):
            with pytest.raises(InvalidToken, match="issuer mismatch"):
                run(verifier.verify_subscribe(token))

    def test_unconfigured_checks_ignore_claims(self, hs_verifier: TokenVerifier) -> None:
        token = make_connect_token(SECRET, "42", audience="anything", issuer="anyone")
        assert run(hs_verifier.verify_connect(token)).user == "42"

    def test_regexes(self) -> None:
        verifier = TokenVerifier(
            TokenConfig(
                hmac_secret_key=SECRET,
                issuer_regex=r"^https://[a-z]+\.example\.com$",
                audience_regex=r"^app-\d+$",
            )
        )
        ok = make_connect_token(
            SECRET, "42", issuer="https://eu.example.com", audience=["x", "app-7"]
        )
        assert run(verifier.verify_connect(ok)).user == "42"
        bad_iss = make_connect_token(SECRET, "42", issuer="https://example.org", audience="app-1")
        with pytest.raises(InvalidToken, match="issuer_regex"):
            run(verifier.verify_connect(bad_iss))
        bad_aud = make_connect_token(SECRET, "42", issuer="https://eu.example.com", audience="x")
        with pytest.raises(InvalidToken, match="audience_regex"):
            run(verifier.verify_connect(bad_aud))
        no_claims = make_connect_token(SECRET, "42")
        with pytest.raises(InvalidToken, match="issuer_regex"):
            run(verifier.verify_connect(no_claims))


# ---------------------------------------------------------------------------
# Malformed tokens and claim types


class TestMalformed:
    @pytest.mark.parametrize(
        "token",
        [
            "",
            "not a jwt",
            "a.b",
            "a.b.c.d",
            "é.b.c",
            "!!!.e30.",
            "eyJhbGciOiJIUzI1NiJ9=.e30.",  # padding is not allowed in JWS
            "eyJhbGciOiJIUzI1NiJ9.e+30.",  # '+' is standard base64, not base64url
            "eyJhbGciOiJIUzI1NiJ9.e30.a",  # 1 char mod 4 cannot be base64
        ],
    )
    def test_not_a_jws(self, token: str, hs_verifier: TokenVerifier) -> None:
        with pytest.raises(InvalidToken, match="malformed"):
            run(hs_verifier.verify_connect(token))

    @pytest.mark.parametrize(
        ("header", "claims", "match"),
        [
            (b"not json", b"{}", "header is not valid JSON"),
            (b'["alg"]', b"{}", "header is not a JSON object"),
            (b"{}", b"{}", "no alg"),
            (b'{"alg": 256}', b"{}", "no alg"),
            (b'{"alg": "HS256", "kid": 5}', b"{}", "kid header"),
            (b'{"alg": "HS256"}', b"{not json", "claims is not valid JSON"),
            (b'{"alg": "HS256"}', b"[1, 2]", "claims is not a JSON object"),
            (b'{"alg": "HS256"}', b'{"exp": NaN}', "claims is not valid JSON"),
            (b'{"alg": "HS256"}', b'"\xff\xfe"', "claims is not valid JSON"),
            (b'{"alg": "HS256", "crit": ["exp"]}', b"{}", "crit"),
        ],
    )
    def test_bad_segments(
        self, header: bytes, claims: bytes, match: str, hs_verifier: TokenVerifier
    ) -> None:
        token = compact(header, claims, hs256(SECRET.encode()))
        with pytest.raises(InvalidToken, match=match):
            run(hs_verifier.verify_connect(token))

    @pytest.mark.parametrize(
        ("claims", "match"),
        [
            ({"exp": "9999999999"}, "'exp'"),
            ({"exp": True}, "'exp'"),
            ({"nbf": "0"}, "'nbf'"),
            ({"iat": [1]}, "'iat'"),
            ({"aud": 5}, "'aud'"),
            ({"aud": ["ok", 1]}, "'aud'"),
            ({"iss": 1}, "'iss'"),
            ({"jti": {}}, "'jti'"),
            ({"sub": 42}, "'sub'"),
            ({"channels": "news"}, "'channels'"),
            ({"channels": ["news", 1]}, "'channels'"),
            ({"subs": ["news"]}, "'subs'"),
            ({"subs": {"news": 5}}, "'subs.news'"),
            ({"subs": {"news": {"b64info": "***"}}}, "'subs.news.b64info'"),
            ({"subs": {"news": {"b64data": 7}}}, "'subs.news.b64data'"),
            ({"subs": {"news": {"override": {"presence": True}}}}, "'subs.news.override.presence'"),
            ({"subs": {"news": {"override": []}}}, "'subs.news.override'"),
            ({"meta": [1]}, "'meta'"),
            ({"meta": "x"}, "'meta'"),
            ({"expire_at": 1.5}, "'expire_at'"),
            ({"expire_at": "0"}, "'expire_at'"),
            ({"expire_at": 2**63}, "'expire_at'"),
            ({"b64info": "not base64!"}, "'b64info'"),
            ({"b64info": "YWJj="}, "'b64info'"),
            ({"b64info": "YWI"}, "'b64info'"),
            ({"b64info": 5}, "'b64info'"),
            ({"channel": 5}, "'channel'"),
        ],
    )
    def test_wrong_claim_types_on_connect(
        self, claims: dict[str, Any], match: str, hs_verifier: TokenVerifier
    ) -> None:
        token = make_connect_token(SECRET, "42", extra_claims=claims)
        with pytest.raises(InvalidToken, match=f"invalid claim {match}"):
            run(hs_verifier.verify_connect(token))

    @pytest.mark.parametrize(
        ("claims", "match"),
        [
            ({"channel": ["news"]}, "'channel'"),
            ({"client": 1}, "'client'"),
            ({"b64data": "%%"}, "'b64data'"),
            ({"override": "all"}, "'override'"),
            ({"override": {"join_leave": {"value": "yes"}}}, "'override.join_leave.value'"),
            ({"expire_at": None, "exp": "soon"}, "'exp'"),
        ],
    )
    def test_wrong_claim_types_on_subscribe(
        self, claims: dict[str, Any], match: str, hs_verifier: TokenVerifier
    ) -> None:
        token = make_subscribe_token(SECRET, "42", "news", extra_claims=claims)
        with pytest.raises(InvalidToken, match=f"invalid claim {match}"):
            run(hs_verifier.verify_subscribe(token))

    def test_overflowing_number_literal(self, hs_verifier: TokenVerifier) -> None:
        token = compact({"alg": "HS256"}, b'{"sub": "42", "exp": 1e400}', hs256(SECRET.encode()))
        with pytest.raises(InvalidToken, match="invalid claim 'exp': must be a finite number"):
            run(hs_verifier.verify_connect(token))

    def test_nulls_mean_absent(self, hs_verifier: TokenVerifier) -> None:
        token = make_connect_token(
            SECRET,
            "42",
            extra_claims={
                "exp": None,
                "nbf": None,
                "aud": None,
                "info": None,
                "channels": None,
                "subs": None,
                "meta": None,
                "expire_at": None,
            },
        )
        claims = run(hs_verifier.verify_connect(token))
        assert claims == ConnectTokenClaims(user="42", issued_at=claims.issued_at)

    def test_unknown_claims_are_ignored(self, hs_verifier: TokenVerifier) -> None:
        token = make_connect_token(SECRET, "42", extra_claims={"scope": ["a"], "x-custom": {}})
        assert run(hs_verifier.verify_connect(token)).user == "42"


# ---------------------------------------------------------------------------
# Connection token claims


class TestConnectClaims:
    def test_full_claims(self) -> None:
        verifier = fixed_verifier(TokenConfig(hmac_secret_key=SECRET))
        token = make_connect_token(
            SECRET,
            "42",
            info={"name": "Ann", "tags": ["ü"]},
            channels=["ignored-because-subs"],
            subs={
                "news": {
                    "info": {"role": "reader"},
                    "data": {"welcome": True},
                    "override": {"presence": False, "force_recovery": True},
                },
                "chat:room": {"b64info": base64.b64encode(b"\x00\x01").decode(), "b64data": "AQ=="},
                "plain": {},
            },
            meta={"tenant": "acme"},
            extra_claims={"exp": NOW + 100, "iat": NOW - 5, "jti": "t-1"},
        )
        claims = run(verifier.verify_connect(token))
        assert claims.user == "42"
        assert claims.expire_at == int(NOW) + 100
        assert json.loads(claims.info or b"") == {"name": "Ann", "tags": ["ü"]}
        assert claims.info == '{"name":"Ann","tags":["ü"]}'.encode()
        assert claims.channels == ("ignored-because-subs",)
        assert claims.meta == {"tenant": "acme"}
        assert claims.token_id == "t-1"
        assert claims.issued_at == int(NOW) - 5
        assert claims.subs["news"] == TokenSubscription(
            info=b'{"role":"reader"}',
            data=b'{"welcome":true}',
            override=SubscribeOverride(presence=False, force_recovery=True),
        )
        assert claims.subs["chat:room"] == TokenSubscription(info=b"\x00\x01", data=b"\x01")
        assert claims.subs["plain"] == TokenSubscription()
        # subs takes precedence over channels; they are not merged.
        assert set(claims.server_side_subscriptions) == {"news", "chat:room", "plain"}

    def test_channels_alone_become_default_subscriptions(self, hs_verifier: TokenVerifier) -> None:
        token = make_connect_token(SECRET, "42", channels=["a", "b:c"])
        claims = run(hs_verifier.verify_connect(token))
        assert dict(claims.server_side_subscriptions) == {
            "a": TokenSubscription(),
            "b:c": TokenSubscription(),
        }

    def test_b64info_wins_over_info(self, hs_verifier: TokenVerifier) -> None:
        token = make_connect_token(SECRET, "42", info={"json": 1}, b64info=b"\xffbinary")
        assert run(hs_verifier.verify_connect(token)).info == b"\xffbinary"

    def test_empty_b64info_falls_back_to_info(self, hs_verifier: TokenVerifier) -> None:
        token = make_connect_token(SECRET, "42", info=[1], extra_claims={"b64info": ""})
        assert run(hs_verifier.verify_connect(token)).info == b"[1]"

    @pytest.mark.parametrize("claims", [{}, {"sub": ""}, {"sub": None}])
    def test_anonymous(self, claims: dict[str, Any], hs_verifier: TokenVerifier) -> None:
        token = compact({"alg": "HS256"}, claims, hs256(SECRET.encode()))
        assert run(hs_verifier.verify_connect(token)).user == ""

    @pytest.mark.parametrize(
        ("expire_at", "exp", "expected"),
        [
            (None, None, 0),
            (None, NOW + 50, int(NOW) + 50),
            (int(NOW) + 500, NOW + 50, int(NOW) + 500),
            (0, NOW + 50, 0),
            (-5, NOW + 50, 0),
            (int(NOW) + 500, None, int(NOW) + 500),
        ],
    )
    def test_expire_at(self, expire_at: int | None, exp: float | None, expected: int) -> None:
        verifier = fixed_verifier(TokenConfig(hmac_secret_key=SECRET))
        extra: dict[str, Any] = {}
        if exp is not None:
            extra["exp"] = exp
        token = make_connect_token(SECRET, "42", expire_at=expire_at, extra_claims=extra)
        assert run(verifier.verify_connect(token)).expire_at == expected

    def test_expire_at_does_not_disable_exp_check(self) -> None:
        verifier = fixed_verifier(TokenConfig(hmac_secret_key=SECRET))
        token = make_connect_token(SECRET, "42", expire_at=0, extra_claims={"exp": NOW - 1})
        with pytest.raises(TokenExpired):
            run(verifier.verify_connect(token))

    def test_channel_claim_is_refused(self, hs_verifier: TokenVerifier) -> None:
        token = make_connect_token(SECRET, "42", extra_claims={"channel": "news"})
        with pytest.raises(InvalidToken, match="must not contain a channel claim"):
            run(hs_verifier.verify_connect(token))
        empty = make_connect_token(SECRET, "42", extra_claims={"channel": ""})
        assert run(hs_verifier.verify_connect(empty)).user == "42"

    @pytest.mark.parametrize(
        ("claim", "extra", "expected"),
        [
            ("uid", {"uid": "u-1"}, "u-1"),
            ("uid", {"uid": 1234}, "1234"),
            ("uid", {}, ""),
            ("user.id", {"user": {"id": "nested"}}, "nested"),
            ("user.id", {"user": "flat"}, ""),
            ("https://example.com/uid", {"https://example.com/uid": "ns"}, "ns"),
        ],
    )
    def test_user_id_claim(self, claim: str, extra: dict[str, Any], expected: str) -> None:
        verifier = TokenVerifier(TokenConfig(hmac_secret_key=SECRET, user_id_claim=claim))
        token = make_connect_token(SECRET, "sub-is-ignored", extra_claims=extra)
        assert run(verifier.verify_connect(token)).user == expected
        sub_token = make_subscribe_token(SECRET, "sub-is-ignored", "news", extra_claims=extra)
        assert run(verifier.verify_subscribe(sub_token)).user == expected

    @pytest.mark.parametrize("value", [True, 1.5, ["x"], {"id": 1}])
    def test_user_id_claim_bad_type(self, value: Any) -> None:
        verifier = TokenVerifier(TokenConfig(hmac_secret_key=SECRET, user_id_claim="uid"))
        token = make_connect_token(SECRET, "", extra_claims={"uid": value})
        with pytest.raises(InvalidToken, match="invalid claim 'uid'"):
            run(verifier.verify_connect(token))

    def test_check_user_for_refresh(self, hs_verifier: TokenVerifier) -> None:
        claims = run(hs_verifier.verify_connect(make_connect_token(SECRET, "42")))
        claims.check_user("42")
        with pytest.raises(TokenMismatch) as info:
            claims.check_user("43")
        assert info.value.outcome(TokenOp.REFRESH) == TokenOutcome(True, 3500, "invalid token")


# ---------------------------------------------------------------------------
# Subscription token claims


class TestSubscribeClaims:
    def test_full_claims(self) -> None:
        verifier = fixed_verifier(TokenConfig(hmac_secret_key=SECRET))
        token = make_subscribe_token(
            SECRET,
            "42",
            "$private:room",
            client="c-1",
            info={"role": "mod"},
            data={"hello": "world"},
            override={
                "presence": True,
                "join_leave": False,
                "force_push_join_leave": True,
                "force_positioning": True,
                "force_recovery": False,
            },
            extra_claims={"exp": NOW + 30, "jti": "j"},
        )
        claims = run(verifier.verify_subscribe(token))
        assert claims == SubscribeTokenClaims(
            user="42",
            channel="$private:room",
            client="c-1",
            expire_at=int(NOW) + 30,
            info=b'{"role":"mod"}',
            data=b'{"hello":"world"}',
            override=SubscribeOverride(
                presence=True,
                join_leave=False,
                force_push_join_leave=True,
                force_positioning=True,
                force_recovery=False,
            ),
            token_id="j",
            issued_at=claims.issued_at,
        )

    def test_binary_info_and_data(self, hs_verifier: TokenVerifier) -> None:
        token = make_subscribe_token(
            SECRET, "42", "news", info={"x": 1}, b64info=b"\x01\x02", data=1, b64data=b"\xff"
        )
        claims = run(hs_verifier.verify_subscribe(token))
        assert (claims.info, claims.data) == (b"\x01\x02", b"\xff")

    def test_override_value_defaults_to_false(self, hs_verifier: TokenVerifier) -> None:
        token = make_subscribe_token(
            SECRET, "42", "news", extra_claims={"override": {"presence": {}, "join_leave": None}}
        )
        override = run(hs_verifier.verify_subscribe(token)).override
        assert override == SubscribeOverride(presence=False, join_leave=None)

    def test_check(self, hs_verifier: TokenVerifier) -> None:
        unbound = run(hs_verifier.verify_subscribe(make_subscribe_token(SECRET, "42", "news")))
        unbound.check(channel="news", user="42", client="any-client")
        bound = run(
            hs_verifier.verify_subscribe(make_subscribe_token(SECRET, "42", "news", client="c1"))
        )
        bound.check(channel="news", user="42", client="c1")
        for kwargs in (
            {"channel": "sport", "user": "42", "client": "c1"},
            {"channel": "news", "user": "43", "client": "c1"},
            {"channel": "news", "user": "42", "client": "c2"},
        ):
            with pytest.raises(TokenMismatch) as info:
                bound.check(**kwargs)
            # A mismatch disconnects even on subscribe (unlike InvalidToken).
            assert info.value.outcome(TokenOp.SUBSCRIBE).code == DISCONNECT_INVALID_TOKEN
            assert isinstance(info.value, InvalidToken)

    def test_separate_subscription_section(self) -> None:
        verifier = TokenVerifier(
            TokenConfig(hmac_secret_key=SECRET),
            TokenConfig(hmac_secret_key=OTHER_SECRET, section="client.subscription_token"),
        )
        ok = make_subscribe_token(OTHER_SECRET, "42", "news")
        assert run(verifier.verify_subscribe(ok)).channel == "news"
        # No fallback to the connection keys for subscription tokens ...
        with pytest.raises(InvalidToken):
            run(verifier.verify_subscribe(make_subscribe_token(SECRET, "42", "news")))
        # ... and the subscription keys do not verify connection tokens.
        with pytest.raises(InvalidToken):
            run(verifier.verify_connect(make_connect_token(OTHER_SECRET, "42")))
        assert run(verifier.verify_connect(make_connect_token(SECRET, "42"))).user == "42"

    def test_subscription_section_has_its_own_audience(self) -> None:
        verifier = TokenVerifier(
            TokenConfig(hmac_secret_key=SECRET, audience="conn"),
            TokenConfig(hmac_secret_key=SECRET, audience="subs"),
        )
        token = make_subscribe_token(SECRET, "42", "news", audience="subs")
        assert run(verifier.verify_subscribe(token)).channel == "news"
        with pytest.raises(InvalidToken, match="audience"):
            run(verifier.verify_subscribe(make_subscribe_token(SECRET, "42", "n", audience="conn")))


# ---------------------------------------------------------------------------
# HMAC key rotation


class TestHmacRotation:
    def test_previous_secret_until_deadline(self) -> None:
        config = TokenConfig(
            hmac_secret_key=SECRET,
            hmac_previous_secret_key=OTHER_SECRET,
            hmac_previous_secret_key_valid_until=int(NOW) + 10,
        )
        token = make_connect_token(OTHER_SECRET, "42", algorithm="HS384")
        assert run(fixed_verifier(config, NOW).verify_connect(token)).user == "42"
        assert run(fixed_verifier(config, NOW + 10).verify_connect(token)).user == "42"
        with pytest.raises(InvalidToken):
            run(fixed_verifier(config, NOW + 11).verify_connect(token))
        # The current secret keeps working after the deadline.
        current = make_connect_token(SECRET, "42")
        assert run(fixed_verifier(config, NOW + 11).verify_connect(current)).user == "42"

    def test_previous_secret_without_deadline(self) -> None:
        config = TokenConfig(hmac_secret_key=SECRET, hmac_previous_secret_key=OTHER_SECRET)
        token = make_subscribe_token(OTHER_SECRET, "42", "news")
        assert run(TokenVerifier(config).verify_subscribe(token)).channel == "news"


# ---------------------------------------------------------------------------
# Protocol outcomes


class TestOutcomes:
    @pytest.mark.parametrize(
        ("error", "op", "expected"),
        [
            (TokenExpired(), TokenOp.CONNECT, (False, ERROR_TOKEN_EXPIRED, False)),
            (TokenExpired(), TokenOp.SUBSCRIBE, (False, ERROR_TOKEN_EXPIRED, False)),
            (TokenExpired(), TokenOp.REFRESH, (True, DISCONNECT_EXPIRED, False)),
            (TokenExpired(), TokenOp.SUB_REFRESH, (True, DISCONNECT_EXPIRED, False)),
            (InvalidToken("x"), TokenOp.CONNECT, (True, DISCONNECT_INVALID_TOKEN, False)),
            (InvalidToken("x"), TokenOp.REFRESH, (True, DISCONNECT_INVALID_TOKEN, False)),
            (InvalidToken("x"), TokenOp.SUBSCRIBE, (False, ERROR_PERMISSION_DENIED, False)),
            (InvalidToken("x"), TokenOp.SUB_REFRESH, (True, DISCONNECT_INVALID_TOKEN, False)),
            (TokenMismatch("x"), TokenOp.SUBSCRIBE, (True, DISCONNECT_INVALID_TOKEN, False)),
            (TokenMismatch("x"), TokenOp.SUB_REFRESH, (True, DISCONNECT_INVALID_TOKEN, False)),
            (TokenUnavailable("x"), TokenOp.CONNECT, (False, ERROR_INTERNAL, True)),
            (TokenUnavailable("x"), TokenOp.SUBSCRIBE, (False, ERROR_INTERNAL, True)),
            (TokenUnavailable("x"), TokenOp.REFRESH, (False, ERROR_INTERNAL, True)),
        ],
    )
    def test_table(self, error: TokenError, op: TokenOp, expected: tuple[bool, int, bool]) -> None:
        outcome = error.outcome(op)
        assert (outcome.disconnect, outcome.code, outcome.temporary) == expected

    def test_codes_and_messages(self) -> None:
        assert TokenExpired().outcome(TokenOp.CONNECT) == TokenOutcome(False, 109, "token expired")
        assert InvalidToken("bad").outcome(TokenOp.CONNECT) == TokenOutcome(
            True, 3500, "invalid token"
        )
        assert InvalidToken("bad").outcome(TokenOp.SUBSCRIBE) == TokenOutcome(
            False, 103, "permission denied"
        )
        assert TokenExpired().outcome(TokenOp.REFRESH) == TokenOutcome(
            True, 3005, "connection expired"
        )
        assert TokenUnavailable("down").outcome("connect") == TokenOutcome(  # type: ignore[arg-type]
            False, 100, "internal server error", temporary=True
        )

    def test_message_is_kept(self) -> None:
        error = InvalidToken("signature verification failed")
        assert error.message == str(error) == "signature verification failed"


# ---------------------------------------------------------------------------
# Minting


class TestMint:
    def test_claim_layout(self) -> None:
        token = make_connect_token(
            SECRET,
            "42",
            ttl=60,
            info={"a": 1},
            channels=["x"],
            subs={"y": {"override": {"presence": True, "join_leave": {"value": False}}}},
            meta={"m": 1},
            audience=["a1", "a2"],
            issuer="me",
            expire_at=5,
            kid="k1",
        )
        header = jwt.get_unverified_header(token)
        assert header == {"alg": "HS256", "typ": "JWT", "kid": "k1"}
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="a1")
        assert claims["exp"] - claims["iat"] == 60
        assert claims["subs"] == {
            "y": {"override": {"presence": {"value": True}, "join_leave": {"value": False}}}
        }
        assert {k: claims[k] for k in ("sub", "info", "channels", "meta", "iss", "expire_at")} == {
            "sub": "42",
            "info": {"a": 1},
            "channels": ["x"],
            "meta": {"m": 1},
            "iss": "me",
            "expire_at": 5,
        }

    def test_no_ttl_means_no_exp(self) -> None:
        claims = jwt.decode(make_connect_token(SECRET, "42"), SECRET, algorithms=["HS256"])
        assert "exp" not in claims

    def test_refusals(self, rsa_key: rsa.RSAPrivateKey) -> None:
        with pytest.raises(ValueError, match="unsupported algorithm"):
            make_connect_token(SECRET, "42", algorithm="none")
        with pytest.raises(ValueError, match="unsupported algorithm"):
            make_connect_token(SECRET, "42", algorithm="PS256")
        with pytest.raises(ValueError, match="private key"):
            make_connect_token(public_pem(rsa_key), "42", algorithm="RS256")
        with pytest.raises(ValueError, match="asymmetric key"):
            make_connect_token(public_pem(rsa_key), "42", algorithm="HS256")
        with pytest.raises(ValueError, match="unknown override"):
            make_subscribe_token(SECRET, "42", "news", override={"recover": True})
        with pytest.raises(ValueError, match="must be a bool"):
            make_subscribe_token(SECRET, "42", "news", override={"presence": "yes"})
        with pytest.raises(ValueError, match="channel must not be empty"):
            make_subscribe_token(SECRET, "42", "")
        with pytest.raises(TypeError):
            make_connect_token(SECRET, 42)  # type: ignore[arg-type]

    def test_ecdsa_curve_must_match_algorithm(self, ec_keys: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="ES512"):
            make_connect_token(ec_keys["ES256"], "42", algorithm="ES512")


# ---------------------------------------------------------------------------
# JWKS


@dataclass
class JwksServer:
    """A real HTTP server in a thread serving JWKS documents by path."""

    base_url: str
    # path -> (status, body)
    routes: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, path: str, keys: list[dict[str, Any]], status: int = 200) -> None:
        with self.lock:
            self.routes[path] = (status, json.dumps({"keys": keys}).encode())

    def serve_raw(self, path: str, status: int, body: bytes) -> None:
        with self.lock:
            self.routes[path] = (status, body)

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits.get(path, 0)


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    state: JwksServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            with state.lock:
                state.hits[self.path] = state.hits.get(self.path, 0) + 1
                status, body = state.routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = JwksServer(base_url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def jwk(private_key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
    data.update({"kid": kid, "use": "sig"})
    data.update(extra)
    return dict(data)


def jwks_verifier(url: str, clock: FakeClock | None = None, **config: Any) -> TokenVerifier:
    kwargs: dict[str, Any] = {"jwks_refetch_interval": 30.0, "jwks_cache_ttl": 300.0}
    kwargs.update(config)
    return TokenVerifier(
        TokenConfig(jwks_url=url, **kwargs),
        monotonic=clock or FakeClock(),
    )


class TestJwks:
    def test_every_key_type(
        self,
        jwks_server: JwksServer,
        rsa_key: rsa.RSAPrivateKey,
        ec_keys: dict[str, Any],
        ed_key: ed25519.Ed25519PrivateKey,
    ) -> None:
        jwks_server.serve(
            "/jwks",
            [
                jwk(rsa_key, "rsa"),
                jwk(ec_keys["ES256"], "p256"),
                jwk(ec_keys["ES384"], "p384"),
                jwk(ec_keys["ES512"], "p521"),
                jwk(ed_key, "ed"),
            ],
        )
        verifier = jwks_verifier(jwks_server.base_url + "/jwks")
        cases = [
            (rsa_key, "RS256", "rsa"),
            (rsa_key, "RS512", "rsa"),
            (ec_keys["ES256"], "ES256", "p256"),
            (ec_keys["ES384"], "ES384", "p384"),
            (ec_keys["ES512"], "ES512", "p521"),
            (ed_key, "EdDSA", "ed"),
        ]

        async def scenario() -> None:
            for key, alg, kid in cases:
                token = make_connect_token(key, f"user-{kid}", algorithm=alg, kid=kid)
                assert (await verifier.verify_connect(token)).user == f"user-{kid}"
                sub = make_subscribe_token(key, "u", "news", algorithm=alg, kid=kid)
                assert (await verifier.verify_subscribe(sub)).channel == "news"

        run(scenario())
        assert jwks_server.count("/jwks") == 1

    def test_kid_is_required(self, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey) -> None:
        jwks_server.serve("/jwks", [jwk(rsa_key, "rsa")])
        verifier = jwks_verifier(jwks_server.base_url + "/jwks")
        token = make_connect_token(rsa_key, "42", algorithm="RS256")
        with pytest.raises(InvalidToken, match="no kid"):
            run(verifier.verify_connect(token))
        assert jwks_server.count("/jwks") == 0

    def test_algorithm_must_fit_the_key(
        self, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, ec_keys: dict[str, Any]
    ) -> None:
        jwks_server.serve(
            "/jwks",
            [
                jwk(rsa_key, "pinned", alg="RS256"),
                jwk(rsa_key, "free"),
                jwk(ec_keys["ES256"], "ec"),
            ],
        )
        verifier = jwks_verifier(jwks_server.base_url + "/jwks")

        async def scenario() -> None:
            rs512 = make_connect_token(rsa_key, "42", algorithm="RS512", kid="pinned")
            with pytest.raises(InvalidToken, match="not allowed for JWKS key 'pinned'"):
                await verifier.verify_connect(rs512)
            free = make_connect_token(rsa_key, "42", algorithm="RS384", kid="free")
            assert (await verifier.verify_connect(free)).user == "42"
            # HMAC over the RSA key's public modulus, or any secret: never accepted.
            n = jwk(rsa_key, "free")["n"].encode()
            forged = compact({"alg": "HS256", "kid": "free"}, {"sub": "admin"}, hs256(n))
            with pytest.raises(InvalidToken, match="HS256 is not accepted with a JWKS"):
                await verifier.verify_connect(forged)
            # An RSA signature relabelled as ES256 under the EC key.
            header, payload, signature = make_connect_token(
                rsa_key, "42", algorithm="RS256", kid="ec"
            ).split(".")
            ec_header = b64url(json.dumps({"alg": "ES256", "kid": "ec"}).encode())
            relabeled = f"{ec_header}.{payload}.{signature}"
            with pytest.raises(InvalidToken, match="signature verification failed"):
                await verifier.verify_connect(relabeled)

        run(scenario())

    def test_unusable_keys_are_skipped(
        self, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        secret = b"a-shared-secret-that-must-not-be-trusted"
        jwks_server.serve(
            "/jwks",
            [
                {"kty": "oct", "kid": "sym", "k": b64url(secret)},
                jwk(rsa_key, "enc", use="enc"),
                jwk(rsa_key, "ps", alg="PS256"),
                {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                {"kty": "OKP", "kid": "x448", "crv": "X448", "x": "AAAA"},
                jwk(rsa_key, "good"),
            ],
        )
        verifier = jwks_verifier(jwks_server.base_url + "/jwks")

        async def scenario() -> None:
            hs = compact({"alg": "HS256", "kid": "sym"}, {"sub": "admin"}, hs256(secret))
            with pytest.raises(InvalidToken, match="HS256 is not accepted"):
                await verifier.verify_connect(hs)
            # Not even a key set fetch for HMAC tokens.
            assert jwks_server.count("/jwks") == 0
            for kid in ("enc", "ps", "broken"):
                token = make_connect_token(rsa_key, "42", algorithm="RS256", kid=kid)
                with pytest.raises(InvalidToken, match=f"kid '{kid}'"):
                    await verifier.verify_connect(token)
            good = make_connect_token(rsa_key, "42", algorithm="RS256", kid="good")
            assert (await verifier.verify_connect(good)).user == "42"

        run(scenario())
        status, body = jwks_server.routes["/jwks"]
        assert status == 200
        assert set(parse_jwks(body)) == {"good"}

    def test_unknown_kid_refetch_is_rate_limited(
        self, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        jwks_server.serve("/jwks", [jwk(rsa_key, "k1")])
        clock = FakeClock()
        verifier = jwks_verifier(jwks_server.base_url + "/jwks", clock)

        async def scenario() -> None:
            good = make_connect_token(rsa_key, "42", algorithm="RS256", kid="k1")
            await verifier.verify_connect(good)
            assert jwks_server.count("/jwks") == 1
            # An attacker sends many random kids: at most one fetch per interval.
            clock.now += 31
            for i in range(50):
                token = make_connect_token(rsa_key, "42", algorithm="RS256", kid=f"random-{i}")
                with pytest.raises(InvalidToken, match="no signing key"):
                    await verifier.verify_connect(token)
            assert jwks_server.count("/jwks") == 2
            clock.now += 29
            with pytest.raises(InvalidToken):
                await verifier.verify_connect(
                    make_connect_token(rsa_key, "42", algorithm="RS256", kid="random-x")
                )
            assert jwks_server.count("/jwks") == 2
            clock.now += 2
            with pytest.raises(InvalidToken):
                await verifier.verify_connect(
                    make_connect_token(rsa_key, "42", algorithm="RS256", kid="random-y")
                )
            assert jwks_server.count("/jwks") == 3
            # Known keys keep working without fetches meanwhile.
            await verifier.verify_connect(good)
            assert jwks_server.count("/jwks") == 3

        run(scenario())

    def test_kid_rotation(
        self, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
    ) -> None:
        jwks_server.serve("/jwks", [jwk(rsa_key, "2024")])
        clock = FakeClock()
        verifier = jwks_verifier(jwks_server.base_url + "/jwks", clock)
        old = make_connect_token(rsa_key, "42", algorithm="RS256", kid="2024")
        new = make_connect_token(other_rsa_key, "42", algorithm="RS256", kid="2025")

        async def scenario() -> None:
            assert (await verifier.verify_connect(old)).user == "42"
            # The issuer publishes the new key and retires the old one.
            jwks_server.serve("/jwks", [jwk(other_rsa_key, "2025")])
            clock.now += 31
            assert (await verifier.verify_connect(new)).user == "42"
            assert jwks_server.count("/jwks") == 2
            # The retired key is gone from the cache with the refreshed set.
            with pytest.raises(InvalidToken, match="kid '2024'"):
                await verifier.verify_connect(old)

        run(scenario())

    def test_ttl_expiry_refetches_known_keys(
        self, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        jwks_server.serve("/jwks", [jwk(rsa_key, "k")])
        clock = FakeClock()
        verifier = jwks_verifier(jwks_server.base_url + "/jwks", clock, jwks_cache_ttl=100.0)
        token = make_connect_token(rsa_key, "42", algorithm="RS256", kid="k")

        async def scenario() -> None:
            await verifier.verify_connect(token)
            clock.now += 99
            await verifier.verify_connect(token)
            assert jwks_server.count("/jwks") == 1
            clock.now += 2
            await verifier.verify_connect(token)
            assert jwks_server.count("/jwks") == 2

        run(scenario())

    def test_concurrent_misses_share_one_fetch(
        self, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        jwks_server.serve("/jwks", [jwk(rsa_key, "k")])
        verifier = jwks_verifier(jwks_server.base_url + "/jwks")
        token = make_connect_token(rsa_key, "42", algorithm="RS256", kid="k")

        async def scenario() -> list[ConnectTokenClaims]:
            return await asyncio.gather(*(verifier.verify_connect(token) for _ in range(25)))

        assert [c.user for c in run(scenario())] == ["42"] * 25
        assert jwks_server.count("/jwks") == 1

    def test_endpoint_failure_is_temporary(
        self, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        jwks_server.serve_raw("/jwks", 503, b"down")
        clock = FakeClock()
        verifier = jwks_verifier(jwks_server.base_url + "/jwks", clock)
        token = make_connect_token(rsa_key, "42", algorithm="RS256", kid="k")

        async def scenario() -> None:
            with pytest.raises(TokenUnavailable, match="HTTP status 503") as info:
                await verifier.verify_connect(token)
            assert info.value.outcome(TokenOp.CONNECT) == TokenOutcome(
                False, 100, "internal server error", temporary=True
            )
            attempts = jwks_server.count("/jwks")
            assert attempts == 2  # two attempts per fetch
            # Within the refetch interval the failure is remembered, no new request.
            with pytest.raises(TokenUnavailable):
                await verifier.verify_connect(token)
            assert jwks_server.count("/jwks") == attempts
            jwks_server.serve("/jwks", [jwk(rsa_key, "k")])
            clock.now += 31
            assert (await verifier.verify_connect(token)).user == "42"

        run(scenario())

    @pytest.mark.parametrize(
        "body",
        [b"<html>", b'{"keys": "none"}', b"[]", b'{"keys": []}', b'{"keys": [{"kty": "oct"}]}'],
    )
    def test_unusable_documents_are_failures(
        self, body: bytes, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        jwks_server.serve_raw("/jwks", 200, body)
        verifier = jwks_verifier(jwks_server.base_url + "/jwks")
        token = make_connect_token(rsa_key, "42", algorithm="RS256", kid="k")
        with pytest.raises(TokenUnavailable):
            run(verifier.verify_connect(token))

    def test_stale_keys_are_used_when_the_endpoint_fails(
        self, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        jwks_server.serve("/jwks", [jwk(rsa_key, "k")])
        clock = FakeClock()
        verifier = jwks_verifier(jwks_server.base_url + "/jwks", clock, jwks_cache_ttl=60.0)
        token = make_connect_token(rsa_key, "42", algorithm="RS256", kid="k")

        async def scenario() -> None:
            await verifier.verify_connect(token)
            jwks_server.serve_raw("/jwks", 500, b"oops")
            clock.now += 61
            assert (await verifier.verify_connect(token)).user == "42"
            assert jwks_server.count("/jwks") == 3  # 1 success + 2 failed attempts
            # An unknown kid cannot be checked while the endpoint is down.
            other = make_connect_token(rsa_key, "42", algorithm="RS256", kid="other")
            with pytest.raises(TokenUnavailable):
                await verifier.verify_connect(other)

        run(scenario())

    def test_templated_endpoint_per_issuer(
        self, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
    ) -> None:
        jwks_server.serve("/acme/jwks", [jwk(rsa_key, "main")])
        jwks_server.serve("/globex/jwks", [jwk(other_rsa_key, "main")])
        verifier = jwks_verifier(
            jwks_server.base_url + "/{{tenant}}/jwks",
            issuer_regex=r"^https://idp\.example\.com/(?P<tenant>acme|globex)$",
        )

        def token(key: Any, tenant: str) -> str:
            return make_connect_token(
                key, "42", algorithm="RS256", kid="main", issuer=f"https://idp.example.com/{tenant}"
            )

        async def scenario() -> None:
            assert (await verifier.verify_connect(token(rsa_key, "acme"))).user == "42"
            assert (await verifier.verify_connect(token(other_rsa_key, "globex"))).user == "42"
            # Same kid, other tenant's key: the cache is scoped per endpoint.
            with pytest.raises(InvalidToken, match="signature verification failed"):
                await verifier.verify_connect(token(other_rsa_key, "acme"))
            with pytest.raises(InvalidToken, match="issuer_regex"):
                await verifier.verify_connect(token(rsa_key, "evil"))

        run(scenario())
        assert jwks_server.count("/acme/jwks") == 1
        assert jwks_server.count("/globex/jwks") == 1
        assert set(jwks_server.hits) == {"/acme/jwks", "/globex/jwks"}

    def test_template_from_audience_regex(
        self, jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        jwks_server.serve("/keys/eu.json", [jwk(rsa_key, "k")])
        verifier = jwks_verifier(
            jwks_server.base_url + "/keys/{{region}}.json",
            audience_regex=r"^rtcore-(?P<region>eu|us)$",
        )
        token = make_connect_token(
            rsa_key, "42", algorithm="RS256", kid="k", audience=["other", "rtcore-eu"]
        )
        assert run(verifier.verify_connect(token)).user == "42"

    def test_fetch_runs_off_the_event_loop(self, rsa_key: rsa.RSAPrivateKey) -> None:
        threads: list[threading.Thread] = []
        body = json.dumps({"keys": [jwk(rsa_key, "k")]}).encode()

        def fetch(url: str, timeout: float) -> bytes:
            threads.append(threading.current_thread())
            assert url == "https://keys.example.com/jwks"
            assert timeout == 3.0
            return body

        verifier = TokenVerifier(
            TokenConfig(jwks_url="https://keys.example.com/jwks"), jwks_fetch=fetch
        )

        async def scenario() -> threading.Thread:
            await verifier.verify_connect(
                make_connect_token(rsa_key, "42", algorithm="RS256", kid="k")
            )
            return threading.current_thread()

        loop_thread = run(scenario())
        assert len(threads) == 1
        assert threads[0] is not loop_thread

    def test_http_get_limits(self, jwks_server: JwksServer) -> None:
        jwks_server.serve_raw("/big", 200, b" " * (MAX_JWKS_BYTES + 1))
        with pytest.raises(JwksFetchError, match="larger than"):
            http_get(jwks_server.base_url + "/big", 3.0)
        with pytest.raises(JwksFetchError, match="HTTP status 404"):
            http_get(jwks_server.base_url + "/missing", 3.0)
        assert jwks_server.count("/missing") == 2
        with pytest.raises(JwksFetchError, match="request failed"):
            http_get("http://127.0.0.1:9/unreachable", 1.0)

    def test_parse_jwks_private_members_are_reduced_to_public_keys(
        self, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        data = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key, as_dict=True)
        data.update({"kid": "priv"})
        keys = parse_jwks(json.dumps({"keys": [data]}).encode())
        assert isinstance(keys["priv"].key, rsa.RSAPublicKey)
