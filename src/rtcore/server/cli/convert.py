"""``rtcore config import``: a Centrifugo v6 configuration file in rtcore's layout.

Every key with an rtcore equivalent is converted (renamed, Go durations
respelled, negated switches turned around); every key without one is listed
with the reason. The result is written in the format of the output's
extension and then loaded, so what cannot work yet is said at once.
"""

from __future__ import annotations

import argparse
import sys

from rtcore.config import ConfigErrors, config_from_mapping, read_config_file
from rtcore.config.centrifugo import import_centrifugo
from rtcore.config.documents import Document, render
from rtcore.errors import ConfigError
from rtcore.server.cli.configs import output_format, write_output
from rtcore.server.cli.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_USAGE


__all__ = ["cmd_config_import"]


def cmd_config_import(args: argparse.Namespace) -> int:
    fmt = output_format(args.output, args.format)
    if fmt is None:
        return EXIT_USAGE
    try:
        data = read_config_file(args.file)
    except ConfigError as exc:
        print(f"rtcore: {exc}", file=sys.stderr)
        return EXIT_ERROR
    result = import_centrifugo(data)
    header = [
        f"rtcore configuration converted from the Centrifugo configuration {args.file}",
        "by `rtcore config import`; docs/centrifugo.md maps every key.",
    ]
    if result.dropped:
        header += ["", "Not converted (no rtcore equivalent):"]
        header += [f"  {path}: {why}" for path, why in result.dropped]
    text = render(Document(result.data, {"": header}), fmt)
    if not write_output(text, args.output, args.force, private=True):
        return EXIT_ERROR
    converted = len(result.renamed)
    where = "standard output" if args.output == "-" else args.output
    print(f"rtcore: wrote {where} ({fmt.upper()}); {converted} key(s) renamed", file=sys.stderr)
    if result.dropped:
        print(
            f"rtcore: {len(result.dropped)} key(s) without an rtcore equivalent:", file=sys.stderr
        )
        for path, why in result.dropped:
            print(f"  {path}: {why}", file=sys.stderr)
    try:
        config_from_mapping(result.data)
    except ConfigError as exc:
        errors = exc.errors if isinstance(exc, ConfigErrors) else [exc]
        print("rtcore: the converted configuration does not load yet:", file=sys.stderr)
        for error in errors:
            print(f"  {error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK
