"""Parsing configuration text (a TOML, YAML or JSON file, a JSON environment value).

The standard parsers fail in three ways that are not syntax errors, on text
an operator can write by mistake: nesting deep enough to exhaust Python's
recursion limit (``RecursionError``), an integer of more digits than
``sys.get_int_max_str_digits()`` (a ``ValueError``: Python refuses to convert
it, as a guard against int parsing that is quadratic in the digits), and,
in YAML, aliases that turn a short text into a huge or cyclic tree. Here
each becomes a :class:`~rtcore.errors.ConfigError` naming the file or
variable, and data nested deeper than :data:`MAX_NESTING` is refused, so
that nothing after parsing (building the model, finding a key's line,
``config_to_mapping``) recurses into it.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import sys
import tomllib
from typing import Any

from rtcore.errors import ConfigError


__all__ = ["MAX_NESTING", "parse_config_text", "parse_env_json", "yaml_safe_loader"]

#: Levels of tables and lists (the top-level table is the first). The
#: model's deepest table is at level 6 (client.proxy.connect.http.static_headers);
#: the parsers and the loader recurse once or more per level, within
#: Python's recursion limit.
MAX_NESTING = 32

# A YAML document may expand (through aliases) to this many values plus
# ten per character of its text; without aliases it has fewer values than
# characters, and merge keys ("<<: *defaults") stay far below.
_EXPANSION_ALLOWANCE = 100_000

# What a TOML or JSON text is made of, for finding the integer the parser
# refused: strings and comments are skipped, floats and hex/octal/binary
# integers (no digit limit) are whole tokens, and group 1 is a decimal one.
_NUMBER_TOKENS = re.compile(
    r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*'
    r"|0[xob][0-9A-Fa-f_]+"
    r"|[-+]?[0-9][0-9_]*(?:\.[0-9_]+|(?=[eE]))(?:[eE][-+]?[0-9_]+)?"
    r"|([-+]?[0-9][0-9_]*)"
)


def _digits(literal: str) -> int:
    return len(literal.lstrip("+-").replace("_", ""))


def _too_long(digits: int) -> str:
    limit = sys.get_int_max_str_digits()
    return f"an integer of {digits} digits is longer than the limit of {limit} digits"


def _long_integer(text: str) -> tuple[int, int] | None:
    """``(offset, digits)`` of the first decimal integer in ``text`` past the digit limit."""
    limit = sys.get_int_max_str_digits()
    for m in _NUMBER_TOKENS.finditer(text):
        if m.group(1) is not None and _digits(m.group(1)) > limit:
            return m.start(), _digits(m.group(1))
    return None


def _line_column(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - text.rfind("\n", 0, offset)
    return f"line {line}, column {column}"


def _json_loads(text: str) -> Any:
    """``json.loads``, with an integer past the digit limit as a ``JSONDecodeError`` at its place."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        # The C scanner converts every integer and refuses one past the limit.
        found = _long_integer(text)
        if found is None:
            raise
        raise json.JSONDecodeError(_too_long(found[1]), text, found[0]) from None


def yaml_safe_loader() -> Any:
    """PyYAML's safe loader, on libyaml's parser where PyYAML has it (its wheels do):
    the pure-Python scanner takes milliseconds for a page of YAML, libyaml a tenth of that."""
    yaml: Any = importlib.import_module("yaml")
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _yaml_loader() -> Any:
    """:func:`yaml_safe_loader`, reporting an integer past the digit limit at its place."""
    yaml: Any = importlib.import_module("yaml")

    class Loader(yaml_safe_loader()):  # type: ignore[misc]
        def construct_yaml_int(self, node: Any) -> int:
            try:
                return int(super().construct_yaml_int(node))
            except ValueError:
                raise yaml.constructor.ConstructorError(
                    None, None, _too_long(_digits(str(node.value))), node.start_mark
                ) from None

    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    return Loader


def _too_deep(where: str, fmt: str) -> ConfigError:
    return ConfigError(
        where,
        f"invalid {fmt.upper()}: nested too deeply to parse "
        f"(at most {MAX_NESTING} levels of tables and lists)",
    )


def _shape_error(data: Any, where: str, text: str) -> ConfigError | None:
    """Data nested deeper than :data:`MAX_NESTING`, or expanded (by YAML aliases) past reason.

    The walk is iterative and stops at the first excess; a cyclic YAML
    structure is one nested too deep.
    """
    allowance = _EXPANSION_ALLOWANCE + 10 * len(text)
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    values = 0
    while stack:
        node, level, path = stack.pop()
        values += 1
        if values > allowance:
            return ConfigError(
                where, f"expands to more than {allowance:,} values (YAML aliases repeat a value)"
            )
        if isinstance(node, dict):
            items: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            items = ((f"{path}[{i}]", v) for i, v in enumerate(node))
        else:
            continue
        if level > MAX_NESTING:
            return ConfigError(
                where,
                f"tables and lists nested more than {MAX_NESTING} levels deep (under {path})",
            )
        for sub, value in items:
            # Paths are spelled to the third level: enough to find the place.
            stack.append((value, level + 1, sub if level <= 3 else path))
    return None


def parse_config_text(text: str, fmt: str, where: str) -> Any:
    """The data of a configuration file's text (``fmt``: ``toml``, ``yaml`` or ``json``).

    Raises:
        ConfigError: named ``where``, for a syntax error (with its line),
            nesting deeper than :data:`MAX_NESTING`, an integer past
            Python's digit limit (with its line) or YAML aliases that
            expand the text past reason.
    """
    data: Any
    try:
        if fmt == "toml":
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(where, f"invalid TOML: {exc}") from None
            except ValueError as exc:
                # tomllib converts integers with int() and lets its refusal through.
                found = _long_integer(text)
                detail = str(exc) if found is None else _too_long(found[1])
                at = "" if found is None else f" ({_line_column(text, found[0])})"
                raise ConfigError(where, f"invalid TOML: {detail}{at}") from None
        elif fmt == "json":
            try:
                data = _json_loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    where, f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
                ) from None
        else:
            yaml: Any = importlib.import_module("yaml")
            try:
                data = yaml.load(text, Loader=_yaml_loader())
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                problem = getattr(exc, "problem", None) or str(exc)
                if problem == "exceeded maximum nesting depth":  # libyaml's own limit
                    raise _too_deep(where, fmt) from None
                at = (
                    f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
                )
                raise ConfigError(where, f"invalid YAML: {problem}{at}") from None
    except RecursionError:
        raise _too_deep(where, fmt) from None
    error = _shape_error(data, where, text)
    if error is not None:
        raise error
    return data


def parse_env_json(text: str, path: str, what: str) -> Any:
    """The JSON of an environment value for the key ``path`` (``what``: what it should be).

    Raises:
        ConfigError: for ``path``, for invalid JSON (with its place),
            nesting deeper than :data:`MAX_NESTING` or an integer past
            Python's digit limit.
    """
    try:
        data = _json_loads(text)
    except ValueError as exc:
        raise ConfigError(path, f"expected {what} in the environment value ({exc})") from None
    except RecursionError:
        raise ConfigError(
            path,
            f"expected {what} in the environment value (nested too deeply to parse: "
            f"at most {MAX_NESTING} levels of tables and lists)",
        ) from None
    error = _shape_error(data, path, text)
    if error is not None:
        raise ConfigError(path, f"expected {what} in the environment value ({error.message})")
    return data
