"""Fuzzing of token parsing and verification (``rtcore.auth``).

Three modes, chosen by the first byte:

* a raw token string goes through ``TokenVerifier.verify_connect`` and
  ``verify_subscribe``;
* a JOSE header and a claims set from the input (any bytes, not only JSON)
  are base64url-encoded and signed with the configured HMAC secret, so that
  claim decoding past the signature check is reached, then verified under
  one of several configurations (audience, issuer regex, user id claim);
* a JWKS document goes through ``parse_jwks``.

Verification may only raise :class:`~rtcore.auth.TokenError` (it never
needs I/O here: no JWKS endpoint is configured), ``parse_jwks`` only
``JwksFetchError``.

    python fuzz/fuzz_token.py -atheris_runs=1000000
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Coroutine
from typing import Any

from fuzzlib import Input, instrumented, main


# parse_jwks logs every key it skips: silent while fuzzing, but never when
# imported by the suite (logging.disable is process-wide).
if __name__ == "__main__":
    logging.disable(logging.WARNING)

with instrumented(__name__ == "__main__"):
    from rtcore.auth import TokenConfig, TokenError, TokenVerifier
    from rtcore.auth.jwks import JwksFetchError, parse_jwks

SECRET = "fuzz-secret-0123456789-0123456789-abcdef"
_NOW = 1_700_000_000.0


def _no_fetch(url: str, timeout: float) -> bytes:
    raise AssertionError(f"no JWKS endpoint is configured, yet {url} was fetched")


_VERIFIERS = [
    TokenVerifier(TokenConfig(hmac_secret_key=SECRET), clock=lambda: _NOW, jwks_fetch=_no_fetch),
    TokenVerifier(
        TokenConfig(
            hmac_secret_key=SECRET,
            audience="rtcore",
            issuer_regex=r"^https://(?P<tenant>[a-z]+)\.example\.com$",
            user_id_claim="user.id",
        ),
        clock=lambda: _NOW,
        jwks_fetch=_no_fetch,
    ),
    TokenVerifier(
        TokenConfig(hmac_secret_key=SECRET, issuer="me", audience_regex=r"^a(?P<x>.*)"),
        TokenConfig(hmac_secret_key=SECRET + "-subs", section="client.subscription_token"),
        clock=lambda: _NOW,
        jwks_fetch=_no_fetch,
    ),
]
_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _run(coroutine: Coroutine[Any, Any, Any]) -> None:
    try:
        coroutine.send(None)
    except StopIteration:
        return
    finally:
        coroutine.close()
    raise AssertionError("token verification waited for something")


def _verify(verifier: TokenVerifier, token: str) -> None:
    for method in (verifier.verify_connect, verifier.verify_subscribe):
        try:
            _run(method(token))
        except TokenError:
            pass


def _signed(inp: Input) -> str:
    alg = str(inp.pick(tuple(_HASHES)))
    secret = SECRET + ("-subs" if inp.flag() else "")
    header = inp.sized() if inp.flag() else b'{"alg":"' + alg.encode() + b'","typ":"JWT"}'
    claims = inp.rest()
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), _HASHES[alg]).digest()
    return f"{signing_input}.{_b64(signature)}"


def TestOneInput(data: bytes) -> None:
    inp = Input(data)
    mode = inp.byte() % 3
    verifier = _VERIFIERS[inp.byte() % len(_VERIFIERS)]
    if mode == 0:
        _verify(verifier, inp.rest().decode("latin-1"))
    elif mode == 1:
        _verify(verifier, _signed(inp))
    else:
        try:
            parse_jwks(inp.rest())
        except JwksFetchError:
            pass


SEEDS = [
    b"\x01\x00\x00\x00\x00"
    + b'{"sub":"u1","exp":1800000000,"info":{"a":1},"channels":["c"],'
    + b'"subs":{"c":{"data":{"x":1},"override":{"presence":{"value":true}}}},"meta":{}}',
    b"\x01\x01\x01\x00\x00"
    + b'{"user":{"id":42},"aud":["rtcore"],"iss":"https://t.example.com","channel":"c",'
    + b'"b64info":"AAEC","expire_at":1800000000,"nbf":1.5e9,"iat":1.6e9}',
    b"\x01\x02\x02\x00\x01\x19"
    + b'{"alg":"HS512","kid":"k"}'
    + b'{"sub":"u","channel":"$c","client":"x","iss":"me","aud":"ab"}',
    b"\x00\x00eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln",
    # Lone surrogate escapes in string claims (they crashed the raw-JSON claims).
    b"\x01\x00\x00\x00\x00"
    + b'{"sub":"u\\ud83d\\ude00","info":["\\udc00\\ud800x"],"\\ud800":1,"channels":["\\udfff"]}',
    b"\x02\x00"
    + b'{"keys":[{"kty":"RSA","kid":"r","n":"sXch","e":"AQAB","alg":"RS256","use":"sig"},'
    + b'{"kty":"EC","kid":"e","crv":"P-256","x":"AA","y":"AA"},{"kty":"OKP","crv":"Ed25519",'
    + b'"kid":"o","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},{"kty":"oct","k":"AA"}]}',
]


if __name__ == "__main__":
    main(TestOneInput, SEEDS)
