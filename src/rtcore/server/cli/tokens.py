"""``gentoken`` and ``gensubtoken``: mint connection and subscription JWTs.

Both sign HS256 with the configured HMAC secret (``client.token``, or
``client.subscription_token`` for subscription tokens when it is set).
"""

from __future__ import annotations

import argparse
import os
import sys

from rtcore.config import Config, format_duration, parse_duration
from rtcore.errors import ConfigError
from rtcore.server.cli.configs import config_path, load
from rtcore.server.cli.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_USAGE


__all__ = ["DEFAULT_TOKEN_TTL", "ttl_arg", "cmd_gentoken", "cmd_gensubtoken"]

#: Tokens minted by ``gentoken`` / ``gensubtoken`` live this long unless --ttl says otherwise.
DEFAULT_TOKEN_TTL = 7 * 86400.0


def ttl_arg(value: str) -> float:
    """``--ttl``: seconds, or a duration such as ``1h`` or ``7d``."""
    try:
        return parse_duration(value if not value.strip().isdigit() else int(value), "--ttl")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _hmac_secret(config: Config, section: str, where: str | None) -> str | None:
    token = (
        config.client.subscription_token
        if section == "client.subscription_token"
        else config.client.token
    )
    secret = token.hmac_secret_key if token is not None else None
    if not secret:
        source = where or "the defaults and environment"
        print(
            f"rtcore: {section}.hmac_secret_key is not set in {source}; tokens are signed with it "
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
    secret = _hmac_secret(config, "client.token", config_path(args, os.environ))
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

    config = load(args)
    if config is None:
        return EXIT_ERROR
    section = (
        "client.subscription_token"
        if config.client.subscription_token is not None
        else "client.token"
    )
    secret = _hmac_secret(config, section, config_path(args, os.environ))
    if secret is None:
        return EXIT_ERROR
    if not args.channel:
        print("rtcore: --channel must not be empty", file=sys.stderr)
        return EXIT_USAGE
    token = make_subscribe_token(secret, args.user, args.channel, ttl=args.ttl or None)
    print(
        f'HS256 subscription token for user "{args.user}" and channel "{args.channel}", '
        f"{_expiry_text(args.ttl)}:",
        file=sys.stderr,
    )
    print(token)
    return EXIT_OK
