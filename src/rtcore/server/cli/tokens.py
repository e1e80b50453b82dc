"""``gentoken``, ``gensubtoken`` and ``checktoken``: mint and check JWTs.

``gentoken`` and ``gensubtoken`` sign HS256 with the configured HMAC secret
(``client.token``, or ``client.subscription_token`` for subscription tokens
when it is set). ``checktoken`` verifies any token exactly as the server
would and prints its claims, or the reason the server would refuse it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from rtcore.config import Config, format_duration, parse_duration
from rtcore.config.documents import format_of
from rtcore.errors import ConfigError
from rtcore.server.cli.configs import ConfigSource, load
from rtcore.server.cli.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_USAGE


__all__ = ["DEFAULT_TOKEN_TTL", "ttl_arg", "cmd_gentoken", "cmd_gensubtoken", "cmd_checktoken"]

#: Tokens minted by ``gentoken`` / ``gensubtoken`` live this long unless --ttl says otherwise.
DEFAULT_TOKEN_TTL = 7 * 86400.0


def ttl_arg(value: str) -> float:
    """``--ttl``: seconds, or a duration such as ``1h`` or ``7d``."""
    try:
        return parse_duration(value if not value.strip().isdigit() else int(value), "--ttl")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _where(args: argparse.Namespace) -> str:
    source: ConfigSource = args.config_source
    return source.path or "the defaults and environment"


def _hmac_secret(config: Config, section: str, where: str) -> str | None:
    token = (
        config.client.subscription_token
        if section == "client.subscription_token"
        else config.client.token
    )
    secret = token.hmac_secret_key if token is not None else None
    if not secret:
        print(
            f"rtcore: {section}.hmac_secret_key is not set in {where}; tokens are signed with it "
            f"(rtcore genconfig writes a config with one)",
            file=sys.stderr,
        )
        return None
    return secret


def _expiry_text(ttl: float) -> str:
    return f"expires in {format_duration(ttl)}" if ttl else "never expires"


def cmd_gentoken(args: argparse.Namespace) -> int:
    from rtcore.auth import make_connect_token

    config = load(args)
    if config is None:
        return EXIT_ERROR
    secret = _hmac_secret(config, "client.token", _where(args))
    if secret is None:
        return EXIT_ERROR
    token = make_connect_token(secret, args.user, ttl=args.ttl or None)
    print(
        f'HS256 connection token for user "{args.user}", {_expiry_text(args.ttl)}:', file=sys.stderr
    )
    print(token)
    return EXIT_OK


def cmd_gensubtoken(args: argparse.Namespace) -> int:
    from rtcore.auth import make_subscribe_token

    if args.channel is None:
        if args.config and format_of(args.config) is None:
            # The old spelling: -c was the channel before it meant the configuration.
            print(
                f"rtcore: -c names the configuration file now; give the channel with -s "
                f"(or --channel): rtcore gensubtoken -u {args.user} -s {args.config}",
                file=sys.stderr,
            )
        else:
            print("rtcore: gensubtoken needs the channel: -s CHANNEL", file=sys.stderr)
        return EXIT_USAGE
    if not args.channel:
        print("rtcore: the channel (-s) must not be empty", file=sys.stderr)
        return EXIT_USAGE
    config = load(args)
    if config is None:
        return EXIT_ERROR
    section = (
        "client.subscription_token"
        if config.client.subscription_token is not None
        else "client.token"
    )
    secret = _hmac_secret(config, section, _where(args))
    if secret is None:
        return EXIT_ERROR
    token = make_subscribe_token(secret, args.user, args.channel, ttl=args.ttl or None)
    print(
        f'HS256 subscription token for user "{args.user}" and channel "{args.channel}", '
        f"{_expiry_text(args.ttl)}:",
        file=sys.stderr,
    )
    print(token)
    return EXIT_OK


# -- checktoken --------------------------------------------------------------------------


def _span(seconds: float) -> str:
    """``6d 23h``, ``5h 2m``, ``3m 10s``, ``42s``: the largest unit and the next one."""
    left = int(round(seconds))
    units = [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)]
    for i, (name, size) in enumerate(units):
        if left >= size or name == "s":
            text = f"{left // size}{name}"
            if i + 1 < len(units):
                next_name, next_size = units[i + 1]
                if left % size >= next_size:
                    text += f" {left % size // next_size}{next_name}"
            return text
    raise AssertionError("unreachable")  # pragma: no cover


def _moment(unix: float) -> str:
    shown = datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    delta = unix - time.time()
    span = _span(abs(delta))
    return f"{shown}, {'in ' + span if delta >= 0 else span + ' ago'}"


def _token_kind(claims: dict[str, Any], forced: str | None) -> str:
    if forced:
        return forced
    return "subscription" if "channel" in claims else "connection"


def cmd_checktoken(args: argparse.Namespace) -> int:
    from rtcore.auth import TokenError, TokenExpired, TokenVerifier
    from rtcore.auth.jws import parse_compact

    token = args.token.strip()
    try:
        parsed = parse_compact(token)
    except TokenError as exc:
        print(f"rtcore: not a token the server accepts: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    kind = _token_kind(parsed.claims, args.kind)
    config = load(args)
    if config is None:
        return EXIT_ERROR
    client = config.client
    section = (
        "client.subscription_token"
        if kind == "subscription" and client.subscription_token is not None
        else "client.token"
    )
    keys = client.subscription_token if section == "client.subscription_token" else client.token
    assert keys is not None
    header = json.dumps(parsed.header, ensure_ascii=False)
    print(f"rtcore: a {kind} token, header {header}", file=sys.stderr)
    print(json.dumps(parsed.claims, indent=2, ensure_ascii=False))
    if not keys.has_keys:
        print(
            f"rtcore: INVALID: {section} has no key in {_where(args)}, so the server refuses "
            "every token (set hmac_secret_key, rsa_public_key, ecdsa_public_key or jwks_url)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    verifier = TokenVerifier(client.token, client.subscription_token)
    try:
        if kind == "subscription":
            asyncio.run(verifier.verify_subscribe(token))
        else:
            asyncio.run(verifier.verify_connect(token))
    except TokenError as exc:
        reason = exc.message
        if isinstance(exc, TokenExpired):
            claims = parsed.claims
            moments = [
                f"{name} {_moment(float(claims[name]))}"
                for name in ("exp", "nbf")
                if isinstance(claims.get(name), int | float)
            ]
            reason += f" ({', '.join(moments)})" if moments else ""
        print(f"rtcore: INVALID against {section}: {reason}", file=sys.stderr)
        return EXIT_ERROR
    exp = parsed.claims.get("exp")
    expiry = f"expires {_moment(float(exp))}" if isinstance(exp, int | float) else "never expires"
    print(f"rtcore: VALID against {section} ({parsed.alg}); {expiry}", file=sys.stderr)
    return EXIT_OK
