"""Configuration for the commands: finding and loading it, ``checkconfig``,
``genconfig``, ``defaultconfig`` and ``defaultenv``.

Every command that needs a configuration loads it with :func:`load`:
defaults < file < ``RTCORE_<SECTION>__<KEY>`` environment variables < the
command's flags. The file is ``-c``/``--config``, else ``$RTCORE_CONFIG``,
else the first of ``rtcore.toml``, ``rtcore.yaml``, ``rtcore.yml`` and
``rtcore.json`` in the current directory; commands say which one they read.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtcore.config import Config, ConfigErrors, load_config
from rtcore.config.centrifugo_table import CENTRIFUGO_MARK
from rtcore.config.documents import Document, default_document, default_env, format_of, render
from rtcore.errors import ConfigError
from rtcore.server.cli.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_USAGE


__all__ = [
    "DEFAULT_FILES",
    "ConfigSource",
    "find_config",
    "config_path",
    "load",
    "starter_config",
    "starter_document",
    "write_output",
    "cmd_genconfig",
    "cmd_checkconfig",
    "cmd_defaultconfig",
    "cmd_defaultenv",
]

#: Files looked for in the current directory when no configuration is named, in order.
DEFAULT_FILES = ("rtcore.toml", "rtcore.yaml", "rtcore.yml", "rtcore.json")


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """The configuration file a command reads (``path`` None: none) and how it was chosen."""

    path: str | None
    how: str
    # Other default files present in the directory and not read.
    ignored: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.path is None:
            return "no configuration file (defaults and environment)"
        return f"configuration {self.path} ({self.how})"


def find_config(args: argparse.Namespace, env: Mapping[str, str]) -> ConfigSource:
    """``-c``/``--config``, else ``$RTCORE_CONFIG``, else a default file here, else none."""
    path = getattr(args, "config", None)
    if path:
        return ConfigSource(str(path), "given with --config")
    if env.get("RTCORE_CONFIG"):
        return ConfigSource(env["RTCORE_CONFIG"], "from $RTCORE_CONFIG")
    present = [name for name in DEFAULT_FILES if Path(name).is_file()]
    if not present:
        return ConfigSource(None, "")
    return ConfigSource(present[0], "found in the current directory", tuple(present[1:]))


def config_path(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    """The configuration file the command reads, or None."""
    return find_config(args, env).path


def _print_config_errors(error: ConfigError, where: str | None) -> None:
    errors = error.errors if isinstance(error, ConfigErrors) else [error]
    source = f" in {where}" if where else ""
    print(
        f"rtcore: invalid configuration{source} ({len(errors)} error{_plural(len(errors))}):",
        file=sys.stderr,
    )
    for e in errors:
        print(f"  {e}", file=sys.stderr)
    if any(CENTRIFUGO_MARK in e.message for e in errors):
        shown = where or "config.json"
        print(
            "hint: this looks like a Centrifugo v6 configuration; convert it with\n"
            f"  rtcore config import {shown} -o rtcore.toml\n"
            "(docs/centrifugo.md lists every key's rtcore name)",
            file=sys.stderr,
        )


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


def load(
    args: argparse.Namespace,
    overrides: Mapping[str, Any] | None = None,
    *,
    announce: bool = True,
) -> Config | None:
    """The configuration, or None after printing every error in it to stderr.

    With ``announce`` the file read (or that none was) is said on stderr;
    ``serve`` logs it instead. The source is kept in ``args.config_source``.
    """
    env = os.environ
    source = find_config(args, env)
    args.config_source = source
    if announce:
        print(f"rtcore: {source.describe()}", file=sys.stderr)
        for name in source.ignored:
            print(f"rtcore: {name} is not read (only {source.path} is)", file=sys.stderr)
    try:
        return load_config(source.path, env, overrides)
    except ConfigError as exc:
        _print_config_errors(exc, source.path)
        return None


def config_warnings(config: Config) -> list[str]:
    """What a served configuration gets wrong without being invalid."""
    out = []
    if config.api.enabled and not config.api.insecure and not config.api.key:
        out.append(
            "api.key is empty: every server API request will get 401 (set api.key or api.insecure)"
        )
    if config.api.enabled and config.api.insecure:
        out.append("api.insecure is true: the server API accepts requests without a key")
    client = config.client
    if (
        not client.token.has_keys
        and not client.allow_anonymous_connect_without_token
        and not client.proxy.connect.enabled
    ):
        out.append(
            "client.token has no key, anonymous connections are off and there is no connect "
            "proxy: no client can connect (set client.token.hmac_secret_key)"
        )
    return out


# -- checkconfig ---------------------------------------------------------------------------


def cmd_checkconfig(args: argparse.Namespace) -> int:
    config = load(args, announce=False)
    if config is None:
        return EXIT_ERROR
    source: ConfigSource = args.config_source
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    shown = f"{source.path} ({source.how})" if source.path else "defaults and environment"
    print(f"configuration OK: {shown}")
    return EXIT_OK


# -- writing files ---------------------------------------------------------------------


def output_format(output: str, fmt: str | None) -> str | None:
    """The format to write: ``--format``, else the output file's extension
    (TOML for stdout); None after saying why neither works."""
    if fmt:
        wanted = format_of(f"x.{fmt}")
        if wanted is None:
            print(f"rtcore: unknown format {fmt!r}; use toml, yaml or json", file=sys.stderr)
            return None
        by_name = format_of(output) if output != "-" else None
        if by_name is not None and by_name != wanted:
            print(
                f"rtcore: --format {fmt} does not match the extension of {output}",
                file=sys.stderr,
            )
            return None
        return wanted
    if output == "-":
        return "toml"
    by_name = format_of(output)
    if by_name is None:
        print(
            f"rtcore: cannot tell the format of {output}: use a .toml, .yaml, .yml or .json "
            "file name (or --format)",
            file=sys.stderr,
        )
    return by_name


def write_output(text: str, output: str, force: bool, *, private: bool) -> bool:
    """Write ``text`` to ``output`` (``-``: stdout); False after saying why not."""
    if output == "-":
        sys.stdout.write(text)
        return True
    path = Path(output)
    if path.exists() and not force:
        print(f"rtcore: {path} already exists; use --force to overwrite it", file=sys.stderr)
        return False
    try:
        # A file holding secrets is readable by its owner only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        print(f"rtcore: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return False
    return True


# -- genconfig ---------------------------------------------------------------------------


def starter_document(hmac_secret: str | None = None, api_key: str | None = None) -> Document:
    """The starter configuration with its comments; fresh random secrets unless given."""
    hmac_secret = hmac_secret or secrets.token_urlsafe(32)
    api_key = api_key or secrets.token_urlsafe(32)
    data: dict[str, Any] = {
        "http": {"address": "127.0.0.1", "port": 8000},
        "client": {
            "allowed_origins": [],
            "reconnect_jitter": "5s",
            "token": {"hmac_secret_key": hmac_secret},
        },
        "api": {"key": api_key},
        "metrics": {"enabled": True},
        "log": {"level": "info", "format": "text"},
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "presence": True,
                "allow_presence_for_subscriber": True,
                "history_size": 100,
                "history_ttl": "5m",
                "force_recovery": True,
                "allow_history_for_subscriber": True,
            },
            "namespaces": [
                {
                    "name": "chat",
                    "presence": True,
                    "join_leave": True,
                    "history_size": 100,
                    "history_ttl": "5m",
                    "force_recovery": True,
                    "allow_subscribe_for_client": True,
                    "allow_presence_for_subscriber": True,
                    "allow_history_for_subscriber": True,
                }
            ],
        },
    }
    comments = {
        "": [
            "rtcore configuration, written by `rtcore genconfig`.",
            "",
            "Every key is listed in docs/config.md. Environment variables",
            "RTCORE_<SECTION>__<KEY> (for example RTCORE_HTTP__PORT=9000 or",
            "RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY=...) override this file, and",
            "command-line flags (rtcore serve --port 9000) override both.",
            "rtcore reads ./rtcore.toml (or .yaml, .yml, .json) by itself; name",
            "another file with -c. Check it with: rtcore checkconfig -c <this file>",
        ],
        "http": [
            "Interface and port for WebSocket clients and the server API",
            '("0.0.0.0" listens on every interface).',
        ],
        "client": ["Client connections."],
        "client.allowed_origins": [
            'Origins browsers may connect from: "*" for any, or patterns such as',
            '"https://*.example.com". Connections without an Origin header are accepted.',
        ],
        "client.reconnect_jitter": [
            "On shutdown, clients are disconnected (code 3001) spread over this window,",
            "so their reconnects arrive spread out too.",
        ],
        "client.token": [
            "Connection tokens are JWTs signed with this secret (HS256/HS384/HS512).",
            "Mint one with: rtcore gentoken -u <user id>",
        ],
        "api": [
            'Key of the server API: send it as "X-API-Key: <key>" or',
            '"Authorization: apikey <key>" with POST /api/<method>.',
        ],
        "metrics": ["Prometheus metrics at GET /metrics."],
        "log": ['debug, info, warning or error; "text" or "json" (one object per line).'],
        "channel": ["Channels and their namespaces."],
        "channel.without_namespace": [
            'Channels without a namespace ("news", "updates"): any client with a valid',
            "connection token may subscribe; the last 100 publications (5 minutes) are",
            "kept so that clients recover what they missed during a short disconnect.",
        ],
        "channel.namespaces[0]": [
            'Namespace "chat": channels named "chat:..." get these options (the',
            "examples of docs/api.md publish into chat:room). Add namespaces alike.",
        ],
    }
    examples: dict[str, list[tuple[str, Any, str]]] = {
        "http": [
            ("tls_cert", "/etc/rtcore/cert.pem", "TLS for wss:// and https://: PEM files,"),
            ("tls_key", "/etc/rtcore/key.pem", "reloaded on SIGHUP"),
        ],
        "api": [("port", 9000, "serve /api and /metrics on an internal port of their own")],
    }
    return Document(data, comments, examples)


def starter_config(
    hmac_secret: str | None = None, api_key: str | None = None, fmt: str = "toml"
) -> str:
    """The commented starter configuration as ``fmt`` text; fresh secrets unless given."""
    return render(starter_document(hmac_secret, api_key), fmt)


def cmd_genconfig(args: argparse.Namespace) -> int:
    output = args.output
    fmt = output_format(output, args.format)
    if fmt is None:
        return EXIT_USAGE
    if not write_output(starter_config(fmt=fmt), output, args.force, private=True):
        return EXIT_ERROR
    if output != "-":
        print(
            f"wrote {output} ({fmt.upper()}, with a new HMAC secret and API key; keep it private)",
            file=sys.stderr,
        )
    return EXIT_OK


# -- defaultconfig, defaultenv -------------------------------------------------------------


def cmd_defaultconfig(args: argparse.Namespace) -> int:
    output = args.output
    fmt = output_format(output, args.format)
    if fmt is None:
        return EXIT_USAGE
    doc = default_document(
        [
            "Every rtcore configuration key with its default (rtcore defaultconfig).",
            "A file needs only the keys it changes; docs/config.md describes each one.",
        ]
    )
    if not write_output(render(doc, fmt), output, args.force, private=False):
        return EXIT_ERROR
    if output != "-":
        print(f"wrote {output} ({fmt.upper()}, every key with its default)", file=sys.stderr)
    return EXIT_OK


def cmd_defaultenv(args: argparse.Namespace) -> int:
    print("# Every rtcore configuration key as its environment variable, with the default.")
    print("# Lists of strings are comma-separated; lists of tables are JSON.")
    for line in default_env():
        print(line)
    return EXIT_OK
