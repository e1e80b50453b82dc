"""The ``rtcore`` command (also ``python -m rtcore``).

Subcommands:

* ``serve``: run a node (WebSocket, server API, metrics) until SIGTERM/SIGINT;
* ``genconfig``: write a commented starter configuration with fresh secrets
  (TOML, YAML or JSON by the output's extension);
* ``checkconfig``: validate a configuration and print every error;
* ``defaultconfig`` / ``defaultenv``: every key with its default, as a file
  or as environment variables;
* ``gentoken`` / ``gensubtoken``: mint connection / subscription JWTs;
* ``checktoken``: verify a token against the configuration;
* ``config import``: convert a Centrifugo v6 configuration;
* ``version``.

This package holds the parser and ``main``; the commands live in
:mod:`~rtcore.server.cli.serve`, :mod:`~rtcore.server.cli.configs`
(finding and loading the configuration, ``checkconfig``, ``genconfig``,
``defaultconfig``, ``defaultenv``), :mod:`~rtcore.server.cli.tokens` and
:mod:`~rtcore.server.cli.convert`, the log formats in
:mod:`~rtcore.server.cli.logs`.

Configuration precedence: defaults < file (``-c``/``--config``, else
``RTCORE_CONFIG``, else ``./rtcore.toml``/``.yaml``/``.yml``/``.json``)
< ``RTCORE_<SECTION>__<KEY>`` environment variables < command-line flags.

Exit codes: 0 success; 1 invalid configuration or a runtime failure (the
message says which); 2 wrong command-line usage; 130 a second SIGTERM/SIGINT
during a graceful shutdown. See docs/cli.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rtcore._version import __version__
from rtcore.server.cli.configs import (
    cmd_checkconfig,
    cmd_defaultconfig,
    cmd_defaultenv,
    cmd_genconfig,
    starter_config,
)
from rtcore.server.cli.convert import cmd_config_import
from rtcore.server.cli.exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from rtcore.server.cli.logs import JsonFormatter, TextFormatter, configure_logging
from rtcore.server.cli.serve import cmd_serve, disconnect_spread
from rtcore.server.cli.tokens import (
    DEFAULT_TOKEN_TTL,
    cmd_checktoken,
    cmd_gensubtoken,
    cmd_gentoken,
    ttl_arg,
)


__all__ = [
    "main",
    "build_parser",
    "configure_logging",
    "JsonFormatter",
    "TextFormatter",
    "disconnect_spread",
    "starter_config",
]


# -- version ----------------------------------------------------------------------------------


def version_text() -> str:
    from rtcore import fanout, frames

    try:
        import uvloop

        loop = f"uvloop {getattr(uvloop, '__version__', 'unknown version')}"
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        loop = "asyncio (uvloop not installed)"
    py = sys.version.split()[0]
    return (
        f"rtcore {__version__}\n"
        f"frame core: {frames.IMPLEMENTATION}, fan-out: {fanout.IMPLEMENTATION}\n"
        f"Python {py} ({sys.implementation.name}), {loop}"
    )


def cmd_version(args: argparse.Namespace) -> int:
    print(version_text())
    return EXIT_OK


# -- argument parsing ----------------------------------------------------------------------


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be within 0..65535, got {port}")
    return port


def _workers(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of workers, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


_CONFIG_HELP = (
    "configuration file: .toml, .yaml/.yml or .json (default: $RTCORE_CONFIG, else "
    "./rtcore.toml, .yaml, .yml or .json when present)"
)
_TTL_HELP = "lifetime: seconds or a duration such as 1h, 7d (0: never expires; default: 7d)"


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE", help=_CONFIG_HELP)


def _output_args(p: argparse.ArgumentParser, default: str, what: str) -> None:
    p.add_argument(
        "-o",
        "--output",
        "-c",
        "--config",
        dest="output",
        metavar="FILE",
        default=default,
        help=f"file to write, its format by extension ('-': standard output; default: "
        f"{default}); -c/--config is the same, as in Centrifugo's {what}",
    )
    p.add_argument(
        "-f",
        "--format",
        choices=("toml", "yaml", "json"),
        help="format to write (default: by the file's extension; TOML on standard output)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtcore",
        description="Real-time messaging server speaking the Centrifuge client protocol v2.",
        epilog="Configuration: defaults < file (-c FILE, else $RTCORE_CONFIG, else "
        "./rtcore.toml, .yaml, .yml or .json) < RTCORE_<SECTION>__<KEY> environment "
        "variables < flags. See docs/cli.md and docs/config.md.",
    )
    parser.add_argument("--version", action="version", version=f"rtcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "serve", help="run the server", description="Run the server until SIGTERM/SIGINT."
    )
    _config_arg(p)
    p.add_argument("--host", help="interface to listen on (http.address)")
    p.add_argument("--port", type=_port, help="port to listen on (http.port)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="log.level")
    p.add_argument("--log-format", choices=("text", "json"), help="log.format")
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="worker processes sharing the port (SO_REUSEPORT); more than 1 needs the Redis engine",
    )
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "genconfig",
        help="write a starter configuration with fresh secrets",
        description="Write a commented starter configuration with a new HMAC secret and API "
        "key: TOML, YAML or JSON by the file's extension (JSON has no comments).",
    )
    _output_args(p, "rtcore.toml", "genconfig")
    p.set_defaults(func=cmd_genconfig)

    p = sub.add_parser(
        "checkconfig",
        help="validate a configuration",
        description="Validate the configuration (file + environment) and print every error "
        "with its key path and line.",
    )
    _config_arg(p)
    p.set_defaults(func=cmd_checkconfig)

    p = sub.add_parser(
        "defaultconfig",
        help="print every configuration key with its default",
        description="Write (by default: print) every configuration key with its default and "
        "description, as TOML, YAML or JSON.",
    )
    _output_args(p, "-", "defaultconfig")
    p.set_defaults(func=cmd_defaultconfig)

    p = sub.add_parser(
        "defaultenv",
        help="print every configuration key as an environment variable",
        description="Print every configuration key as its RTCORE_<SECTION>__<KEY> environment "
        "variable with the default value (quoted for a shell or an EnvironmentFile=).",
    )
    p.set_defaults(func=cmd_defaultenv)

    p = sub.add_parser(
        "gentoken",
        help="mint a connection token",
        description="Mint an HS256 connection JWT signed with client.token.hmac_secret_key.",
    )
    _config_arg(p)
    p.add_argument(
        "-u", "--user", required=True, help="user id (the 'sub' claim; '' for anonymous)"
    )
    p.add_argument("-t", "--ttl", type=ttl_arg, default=DEFAULT_TOKEN_TTL, help=_TTL_HELP)
    p.set_defaults(func=cmd_gentoken)

    p = sub.add_parser(
        "gensubtoken",
        help="mint a subscription token",
        description="Mint an HS256 subscription JWT (client.subscription_token, else "
        "client.token).",
    )
    _config_arg(p)
    p.add_argument("-u", "--user", required=True, help="user id (the 'sub' claim)")
    p.add_argument(
        "-s",
        "--channel",
        help="channel the token grants (required; -s as in Centrifugo; --channel is the "
        "earlier spelling, still accepted; -c now names the configuration)",
    )
    p.add_argument("-t", "--ttl", type=ttl_arg, default=DEFAULT_TOKEN_TTL, help=_TTL_HELP)
    p.set_defaults(func=cmd_gensubtoken)

    p = sub.add_parser(
        "checktoken",
        help="verify a token against the configuration",
        description="Verify a connection or subscription JWT exactly as the server would: "
        "print its claims, then VALID or the reason the server refuses it (exit code 1).",
    )
    _config_arg(p)
    p.add_argument("token", help="the JWT")
    p.add_argument(
        "--kind",
        choices=("connection", "subscription"),
        help="the kind of token (default: subscription when it has a channel claim)",
    )
    p.set_defaults(func=cmd_checktoken)

    p = sub.add_parser(
        "config",
        help="configuration tools (import)",
        description="Configuration tools.",
    )
    config_sub = p.add_subparsers(dest="config_command", metavar="COMMAND")
    q = config_sub.add_parser(
        "import",
        help="convert a Centrifugo v6 configuration",
        description="Convert a Centrifugo v6 configuration file (JSON, YAML or TOML) to "
        "rtcore's layout and list every key without an rtcore equivalent.",
    )
    q.add_argument("file", help="the Centrifugo configuration file")
    q.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default="-",
        help="file to write, its format by extension ('-': standard output, the default)",
    )
    q.add_argument(
        "-f",
        "--format",
        choices=("toml", "yaml", "json"),
        help="format to write (default: by the file's extension; TOML on standard output)",
    )
    q.add_argument("--force", action="store_true", help="overwrite an existing file")
    q.set_defaults(func=cmd_config_import)
    p.set_defaults(func=None, usage_of=p)

    p = sub.add_parser("version", help="print version and implementation details")
    p.set_defaults(func=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    # The worker supervisor re-runs the same command line.
    args.argv = raw
    if getattr(args, "func", None) is None:
        getattr(args, "usage_of", parser).print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``rtcore defaultenv | head``): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
