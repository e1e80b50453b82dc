"""Configuration for the commands: loading it, ``checkconfig`` and ``genconfig``.

Every command that needs a configuration loads it with :func:`load`:
defaults < file (``--config`` or ``RTCORE_CONFIG``) < ``RTCORE_<SECTION>__<KEY>``
environment variables < the command's flags.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rtcore.config import Config, ConfigErrors, load_config
from rtcore.errors import ConfigError
from rtcore.server.cli.exit_codes import EXIT_ERROR, EXIT_OK


__all__ = ["config_path", "load", "starter_config", "cmd_genconfig", "cmd_checkconfig"]


def config_path(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """The configuration file: ``--config``, else ``RTCORE_CONFIG``, else none."""
    path = getattr(args, "config", None)
    if path:
        return str(path)
    return env.get("RTCORE_CONFIG") or None


def _print_config_errors(error: ConfigError, where: str | None) -> None:
    errors = error.errors if isinstance(error, ConfigErrors) else [error]
    source = f" in {where}" if where else ""
    print(
        f"rtcore: invalid configuration{source} ({len(errors)} error{_plural(len(errors))}):",
        file=sys.stderr,
    )
    for e in errors:
        print(f"  {e}", file=sys.stderr)


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


def load(args: argparse.Namespace, overrides: Mapping[str, Any] | None = None) -> Config | None:
    """The configuration, or None after printing every error in it to stderr."""
    env = os.environ
    path = config_path(args, env)
    try:
        return load_config(path, env, overrides)
    except ConfigError as exc:
        _print_config_errors(exc, path)
        return None


def _config_warnings(config: Config) -> list[str]:
    out = []
    if config.api.enabled and not config.api.insecure and not config.api.key:
        out.append(
            "api.key is empty: every server API request will get 401 (set api.key or api.insecure)"
        )
    if config.api.enabled and config.api.insecure:
        out.append("api.insecure is true: the server API accepts requests without a key")
    if not config.client.token.has_keys and not config.client.allow_anonymous_connect_without_token:
        out.append(
            "client.token has no key and anonymous connections are off: no client can connect "
            "(set client.token.hmac_secret_key)"
        )
    return out


# -- checkconfig ---------------------------------------------------------------------------


def cmd_checkconfig(args: argparse.Namespace) -> int:
    config = load(args)
    if config is None:
        return EXIT_ERROR
    path = config_path(args, os.environ)
    for warning in _config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"configuration OK{f': {path}' if path else ' (defaults and environment)'}")
    return EXIT_OK


# -- genconfig ---------------------------------------------------------------------------


def starter_config(hmac_secret: str | None = None, api_key: str | None = None) -> str:
    """A commented starter TOML; fresh random secrets unless given."""
    hmac_secret = hmac_secret or secrets.token_urlsafe(32)
    api_key = api_key or secrets.token_urlsafe(32)
    return f'''# rtcore configuration, written by `rtcore genconfig`.
#
# Every key is listed in docs/config.md. Environment variables
# RTCORE_<SECTION>__<KEY> (for example RTCORE_HTTP__PORT=9000 or
# RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY=...) override this file, and
# command-line flags (rtcore serve --port 9000) override both.
# Check the file with: rtcore checkconfig --config <this file>

[http]
# Interface and port for WebSocket clients and the server API
# ("0.0.0.0" listens on every interface).
address = "127.0.0.1"
port = 8000
# TLS for wss:// and https://: PEM files, reloaded on SIGHUP.
# tls_cert = "/etc/rtcore/cert.pem"
# tls_key = "/etc/rtcore/key.pem"

[client]
# Origins browsers may connect from: "*" for any, or patterns such as
# "https://*.example.com". Connections without an Origin header are accepted.
allowed_origins = []
# On shutdown, clients are disconnected (code 3001) spread over this window,
# so their reconnects arrive spread out too.
reconnect_jitter = "5s"

[client.token]
# Connection tokens are JWTs signed with this secret (HS256/HS384/HS512).
# Mint one with: rtcore gentoken --config <this file> -u <user id>
hmac_secret_key = "{hmac_secret}"

[api]
# Key of the server API: send it as "X-API-Key: <key>" or
# "Authorization: apikey <key>" with POST /api/<method>.
key = "{api_key}"
# port = 9000   # serve /api and /metrics on an internal port of their own

[metrics]
# Prometheus metrics at GET /metrics.
enabled = true

[log]
# debug, info, warning or error; "text" or "json" (one object per line).
level = "info"
format = "text"

[channel.without_namespace]
# Channels without a namespace ("news", "updates"): any client with a valid
# connection token may subscribe; the last 100 publications (5 minutes) are
# kept so that clients recover what they missed during a short disconnect.
allow_subscribe_for_client = true
presence = true
allow_presence_for_subscriber = true
history_size = 100
history_ttl = "5m"
force_recovery = true
allow_history_for_subscriber = true

# Namespaces: channels named "chat:..." get these options.
# [[channel.namespaces]]
# name = "chat"
# presence = true
# join_leave = true
# history_size = 100
# history_ttl = "5m"
# force_recovery = true
# allow_subscribe_for_client = true
'''


def cmd_genconfig(args: argparse.Namespace) -> int:
    text = starter_config()
    if args.output == "-":
        sys.stdout.write(text)
        return EXIT_OK
    path = Path(args.output)
    if path.exists() and not args.force:
        print(f"rtcore: {path} already exists; use --force to overwrite it", file=sys.stderr)
        return EXIT_ERROR
    try:
        # The file holds secrets: readable by its owner only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        print(f"rtcore: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {path} (with a new HMAC secret and API key; keep it private)", file=sys.stderr)
    return EXIT_OK
