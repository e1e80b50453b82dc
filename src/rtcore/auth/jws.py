"""Compact JWS parsing, the algorithm table and public-key loading.

The verifier never hands a token to a general-purpose ``jwt.decode``: it
parses the three segments itself (strict base64url, UTF-8 JSON objects), looks
the header ``alg`` up in the keys it actually holds, and only then calls the
matching PyJWT algorithm object's ``verify`` (``HS*``: the same HMAC,
computed here from hash states prepared once per key, and compared in
constant time). A key is stored together with the algorithms it may be used
with, so an HMAC secret can only ever verify ``HS*`` and an RSA key only
``RS*``: algorithm confusion has no code path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import Algorithm, get_default_algorithms

from rtcore.auth.errors import InvalidToken


__all__ = [
    "HMAC_ALGORITHMS",
    "RSA_ALGORITHMS",
    "ECDSA_ALGORITHMS",
    "EDDSA_ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "ParsedToken",
    "VerificationKey",
    "parse_compact",
    "load_rsa_public_key",
    "load_ec_public_key",
    "ec_algorithm_for_curve",
    "hmac_key",
    "sign",
]


HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512"})
ECDSA_ALGORITHMS: Final = frozenset({"ES256", "ES384", "ES512"})
# Only through JWKS (OKP keys), as in Centrifugo.
EDDSA_ALGORITHMS: Final = frozenset({"EdDSA"})
SUPPORTED_ALGORITHMS: Final = HMAC_ALGORITHMS | RSA_ALGORITHMS | ECDSA_ALGORITHMS | EDDSA_ALGORITHMS

# PyJWT algorithm objects, looked up once. ES* carry the curve they require.
_PYJWT_ALGORITHMS: Final[dict[str, Algorithm]] = {
    name: alg for name, alg in get_default_algorithms().items() if name in SUPPORTED_ALGORITHMS
}

_EC_CURVE_ALGORITHM: Final[dict[str, str]] = {
    "secp256r1": "ES256",
    "secp384r1": "ES384",
    "secp521r1": "ES512",
}

_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")
# A \u escape of a UTF-16 surrogate (paired or not).
_SURROGATE_ESCAPE_RE: Final = re.compile(r"\\u[dD][89a-fA-F]")

# Digest of each HMAC algorithm (as PyJWT's HMACAlgorithm uses).
_HMAC_DIGESTS: Final = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
# RFC 2104's inner and outer pads, XORed into the key block.
_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))

# base64url to base64 (the alphabet is checked before decoding).
_FROM_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")

# Decoded and checked headers by their base64url segment: a deployment signs
# with a handful of headers, so most tokens skip decoding theirs. Bounded.
_HEADER_CACHE: dict[str, dict[str, Any]] = {}
_HEADER_CACHE_SIZE: Final = 64

# RFC 7515 §4.1.11: a token naming a critical extension we do not implement
# must be rejected. We implement none.
_REJECTED_HEADERS: Final = ("crit",)


def _b64url_decode(segment: str, what: str) -> bytes:
    # base64.urlsafe_b64decode silently skips characters outside the alphabet,
    # so the alphabet is checked first. JWS forbids "=" padding.
    if not _B64URL_RE.fullmatch(segment) or len(segment) % 4 == 1:
        raise InvalidToken(f"malformed token: {what} is not valid base64url")
    try:
        padded = (segment + "=" * (-len(segment) % 4)).encode("ascii")
        return binascii.a2b_base64(padded.translate(_FROM_URLSAFE))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - alphabet checked above
        raise InvalidToken(f"malformed token: {what} is not valid base64url") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every token (json.loads with an option builds one per call).
_JSON_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _replace_lone_surrogates(value: Any) -> Any:
    """``value`` with every unpaired surrogate in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, list):
        return [_replace_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {
            _replace_lone_surrogates(key): _replace_lone_surrogates(item)
            for key, item in value.items()
        }
    return value


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        value = _JSON_DECODER.decode(text)
        if _SURROGATE_ESCAPE_RE.search(text):
            # "\ud800" alone is valid JSON but no UTF-8 text: every string
            # claim must encode (user ids, channels, raw info re-serialised).
            # Go's decoder, and so Centrifugo, replaces it with U+FFFD.
            try:
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                value = _replace_lone_surrogates(value)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidToken(f"malformed token: {what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise InvalidToken(f"malformed token: {what} is not a JSON object")
    return value


class ParsedToken(NamedTuple):
    """A compact JWS split and decoded, signature not yet checked.

    Immutable; a named tuple because one is made per token checked (a
    frozen dataclass costs twice as much to build)."""

    header: dict[str, Any]
    claims: dict[str, Any]
    # ASCII bytes of "<header>.<payload>", the signed message.
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        # parse_compact checked that it is a non-empty string.
        alg: str = self.header["alg"]
        return alg

    @property
    def kid(self) -> str:
        """The ``kid`` header, ``""`` when absent."""
        kid: str = self.header.get("kid", "")
        return kid


def parse_compact(token: str) -> ParsedToken:
    """Split a compact JWS and decode its header and claims.

    Raises:
        InvalidToken: not three base64url segments, header or claims not a
            UTF-8 JSON object, ``alg`` missing or not a string, ``kid`` not a
            string, or a ``crit`` header present.
    """
    if not isinstance(token, str):
        raise InvalidToken("malformed token: not a string")
    if not token.isascii():
        raise InvalidToken("malformed token: non-ASCII characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed token: expected three dot-separated segments")
    header_b64, claims_b64, signature_b64 = parts
    header = _HEADER_CACHE.get(header_b64)
    if header is None:
        header = _parse_header(header_b64)
        if len(_HEADER_CACHE) >= _HEADER_CACHE_SIZE:
            _HEADER_CACHE.clear()
        _HEADER_CACHE[header_b64] = header
    claims = _json_object(_b64url_decode(claims_b64, "claims"), "claims")
    signature = _b64url_decode(signature_b64, "signature")
    return ParsedToken(
        header=header,
        claims=claims,
        signing_input=f"{header_b64}.{claims_b64}".encode("ascii"),
        signature=signature,
    )


def _parse_header(header_b64: str) -> dict[str, Any]:
    header = _json_object(_b64url_decode(header_b64, "header"), "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise InvalidToken("malformed token: header has no alg")
    if "kid" in header and not isinstance(header["kid"], str):
        raise InvalidToken("malformed token: kid header is not a string")
    for name in _REJECTED_HEADERS:
        if name in header:
            raise InvalidToken(f"unsupported token: {name!r} header")
    return header


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key (or HMAC secret) and the algorithms it may verify."""

    algorithms: frozenset[str]
    # bytes for HMAC; a cryptography public key object otherwise.
    key: Any
    # Key id (JWKS keys only).
    kid: str = ""
    # HMAC: algorithm -> the hash states after the inner and the outer key
    # block, made on first use (copying them is half the cost of hmac.digest,
    # which sets a key up for every token).
    _pads: dict[str, tuple[Any, Any]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def verify(self, token: ParsedToken) -> bool:
        """True when the signature is valid for ``token.alg`` under this key.

        The caller has already checked that ``token.alg`` is in ``algorithms``.
        """
        alg = token.alg
        if alg not in self.algorithms:
            return False
        pads = self._pads.get(alg)
        if pads is None and alg in _HMAC_DIGESTS:
            pads = self._pads[alg] = _hmac_pads(self.key, _HMAC_DIGESTS[alg])
        if pads is not None:
            inner = pads[0].copy()
            inner.update(token.signing_input)
            outer = pads[1].copy()
            outer.update(inner.digest())
            return hmac.compare_digest(token.signature, outer.digest())
        try:
            return bool(
                _PYJWT_ALGORITHMS[alg].verify(token.signing_input, self.key, token.signature)
            )
        except (InvalidSignature, ValueError, TypeError):
            # Signatures of the wrong length or shape for the key.
            return False


def _hmac_pads(key: bytes, new: Any) -> tuple[Any, Any]:
    """The hash states of RFC 2104 after the inner and the outer key block."""
    block = new().block_size
    if len(key) > block:
        key = new(key).digest()
    key = key.ljust(block, b"\0")
    return new(key.translate(_IPAD)), new(key.translate(_OPAD))


def hmac_key(secret: str) -> bytes:
    """Validate an HMAC secret the way PyJWT does and return its bytes.

    PyJWT refuses secrets that look like PEM/SSH/DER keys or JWKs: a public
    key used as an HMAC secret is the classic algorithm-confusion setup.

    Raises:
        ValueError: with PyJWT's explanation.
    """
    try:
        prepared = _PYJWT_ALGORITHMS["HS256"].prepare_key(secret)
    except Exception as exc:  # jwt.InvalidKeyError and friends
        raise ValueError(str(exc)) from exc
    assert isinstance(prepared, bytes)
    return prepared


def _load_public_pem(pem: str) -> Any:
    data = pem.strip().encode("utf-8")
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return load_pem_public_key(data)


def load_rsa_public_key(pem: str) -> rsa.RSAPublicKey:
    """Parse a PEM RSA public key (SPKI ``PUBLIC KEY``, PKCS#1 ``RSA PUBLIC
    KEY``) or an X.509 certificate carrying one.

    Raises:
        ValueError: not PEM, or not an RSA public key.
    """
    try:
        key = _load_public_pem(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key or certificate ({exc})") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"expected an RSA public key, got {type(key).__name__}")
    return key


def load_ec_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    """Parse a PEM ECDSA public key or certificate on P-256, P-384 or P-521.

    Raises:
        ValueError: not PEM, not an EC key, or an unsupported curve.
    """
    try:
        key = _load_public_pem(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key or certificate ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"expected an ECDSA public key, got {type(key).__name__}")
    ec_algorithm_for_curve(key.curve)
    return key


def ec_algorithm_for_curve(curve: ec.EllipticCurve) -> str:
    """The one ``ES*`` algorithm a curve is used with (P-256 -> ES256, ...).

    Raises:
        ValueError: a curve JWS does not pair with an ES256/384/512 algorithm.
    """
    try:
        return _EC_CURVE_ALGORITHM[curve.name]
    except KeyError:
        raise ValueError(
            f"unsupported ECDSA curve {curve.name!r}: use P-256, P-384 or P-521"
        ) from None


def sign(claims: dict[str, Any], key: Any, algorithm: str, kid: str | None = None) -> str:
    """Encode and sign a compact JWS (used by the token minting helpers).

    Args:
        claims: a JSON-serialisable object.
        key: HMAC secret (str/bytes) for HS*; a private key (PEM str/bytes or
            a cryptography object) otherwise.
        algorithm: one of ``SUPPORTED_ALGORITHMS``.
        kid: optional ``kid`` header.

    Raises:
        ValueError: unsupported algorithm, or a key that cannot sign with it.
    """
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise ValueError(
            f"unsupported algorithm {algorithm!r}; use one of {sorted(SUPPORTED_ALGORITHMS)}"
        )
    alg = _PYJWT_ALGORITHMS[algorithm]
    try:
        prepared = alg.prepare_key(key)
    except Exception as exc:  # jwt.InvalidKeyError, ValueError, TypeError
        raise ValueError(f"key cannot be used with {algorithm}: {exc}") from exc
    if algorithm not in HMAC_ALGORITHMS and not hasattr(prepared, "sign"):
        raise ValueError(f"{algorithm} signing needs a private key, got a public key")
    header: dict[str, Any] = {"alg": algorithm, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    segments = [
        _b64url_encode(json.dumps(header, separators=(",", ":")).encode()),
        _b64url_encode(
            json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        ),
    ]
    signing_input = ".".join(segments).encode("ascii")
    segments.append(_b64url_encode(alg.sign(signing_input, prepared)))
    return ".".join(segments)


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
