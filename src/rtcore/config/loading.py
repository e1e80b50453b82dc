"""Building a :class:`~rtcore.config.model.Config`: from plain data, files, environment, flags.

:func:`config_from_mapping` builds one from plain data; :func:`load_config`
merges a TOML/YAML/JSON file, ``RTCORE_<SECTION>__<KEY>`` environment
variables and command-line overrides (later wins) and builds from that.
Every invalid value is collected; several come back as one
:class:`~rtcore.config.fields.ConfigErrors`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import ssl
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rtcore.config.durations import parse_duration
from rtcore.config.fields import ConfigErrors, LocatedConfigError, _problems_tree
from rtcore.config.hints import unknown_key_errors
from rtcore.config.model import HIDDEN_FIELDS, KEY_ALIASES, Config
from rtcore.config.positions import key_lines, line_of_path
from rtcore.config.reading import parse_config_text, parse_env_json
from rtcore.errors import ConfigError


#: Environment variables ``RTCORE_<SECTION>__<KEY>`` set configuration keys.
ENV_PREFIX = "RTCORE_"


# -- building from plain data -------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


class _EnvText(str):
    """A string from an environment variable: tables and lists may be given as JSON."""

    __slots__ = ()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


_BOOL_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}
_NUMBER_RE = re.compile(r"\s*-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?\s*")
# Only the whitespace int() strips: re's \s also matches \x1c-\x1f, which it refuses.
_INTEGER_RE = re.compile(r"\s*-?[0-9]+\s*", re.ASCII)


def _shown(value: Any) -> str:
    """A value in an error message, with its kind when that is what is wrong."""
    if isinstance(value, str) and not isinstance(value, _EnvText):
        return f"the string {value!r}"
    if isinstance(value, list | tuple | Mapping):
        return _kind(value)
    return repr(value)


def _quoted_error(path: str, expected: str, value: str, fix: str) -> ConfigError:
    """A string where a number or boolean belongs: say how to write it."""
    return ConfigError(
        path, f"expected {expected}, got the string {value!r} (write {fix} without quotes)"
    )


def _env_int(value: _EnvText, path: str) -> int:
    digits = len(value.strip().lstrip("-"))
    if digits > sys.get_int_max_str_digits():
        # int() refuses such a text (a guard against quadratic parsing).
        raise ConfigError(path, f"expected an integer, got one of {digits} digits (too large)")
    return int(value)


def _convert(
    value: Any, hint: Any, path: str, meta: Mapping[str, Any], errors: list[ConfigError]
) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, _EnvText):
            value = parse_env_json(value, path, "a JSON object")
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a table/object, got {_kind(value)}")
        return _build(hint, value, path, errors)  # type: ignore[arg-type]
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, _EnvText) and item is str:
            # Environment variables: comma-separated lists.
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, str) and item is str:
            items = ", ".join(json.dumps(v.strip()) for v in value.split(",") if v.strip())
            raise ConfigError(
                path, f"expected a list of strings, got the string {value!r} (write [{items}])"
            )
        if isinstance(value, _EnvText):
            value = parse_env_json(value, path, "a JSON array")
        if not isinstance(value, list | tuple):
            raise ConfigError(path, f"expected a list, got {_kind(value)}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(_convert(v, item, f"{path}[{i}]", {}, errors))
            except ConfigError as exc:
                errors.append(exc)
        return out
    if origin is dict:
        key_type, item = typing.get_args(hint)
        if isinstance(value, _EnvText):
            value = parse_env_json(value, path, "a JSON object")
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"expected a table/object, got {_kind(value)}")
        table = {}
        for k, v in value.items():
            if not isinstance(k, key_type):
                raise ConfigError(path, f"expected {key_type.__name__} keys, got {k!r}")
            try:
                table[k] = _convert(v, item, f"{path}.{k}", {}, errors)
            except ConfigError as exc:
                errors.append(exc)
        return table
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise ConfigError(path, "unsupported field type")  # pragma: no cover
        return _convert(value, args[0], path, meta, errors)
    if hint is bool:
        if isinstance(value, bool):
            return value
        word = value.strip().lower() if isinstance(value, str) else None
        if isinstance(value, _EnvText) and word in _BOOL_WORDS:
            return _BOOL_WORDS[word]
        if word in _BOOL_WORDS:
            raise _quoted_error(path, "true or false", value, str(_BOOL_WORDS[word]).lower())
        raise ConfigError(path, f"expected true or false, got {_shown(value)}")
    if hint is float:
        if meta.get("duration"):
            return parse_duration(value, path)
        if isinstance(value, str) and not isinstance(value, _EnvText):
            if _NUMBER_RE.fullmatch(value):
                raise _quoted_error(path, "a number", value, value.strip())
            raise ConfigError(path, f"expected a number, got {_shown(value)}")
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(path, f"expected a number, got {_shown(value)}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(path, f"expected a number, got {value!r}") from None
        except OverflowError:
            # An integer past the float range (about 309 digits).
            raise ConfigError(path, "expected a finite number, got an integer too large") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(path, f"expected a finite number, got {value!r}")
        return number
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INTEGER_RE.fullmatch(value):
            if isinstance(value, _EnvText):
                return _env_int(value, path)
            raise _quoted_error(path, "an integer", value, value.strip())
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(path, f"expected an integer, got {_shown(value)}")
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {_kind(value)}")
        return str(value)
    raise ConfigError(path, f"unsupported field type {hint!r}")  # pragma: no cover


def _build(cls: type, data: Mapping[str, Any], path: str, errors: list[ConfigError]) -> Any:
    """Build ``cls`` from ``data``; bad values go to ``errors`` and keep their defaults."""
    hints = _hints(cls)
    hidden = HIDDEN_FIELDS.get(cls, frozenset())
    aliases = KEY_ALIASES.get(cls, {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in hidden}
    kwargs: dict[str, Any] = {}
    if "section" in hidden:
        kwargs["section"] = path
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        name = aliases.get(key, key) if isinstance(key, str) else key
        if name != key and name in data:
            errors.append(ConfigError(sub, f"is another name of {name}; set only one of them"))
            continue
        f = fields.get(name) if isinstance(name, str) else None
        if f is None:
            errors.extend(unknown_key_errors(cls, str(key), value, sub))
            continue
        if value is None:
            continue
        try:
            kwargs[name] = _convert(value, hints[name], sub, f.metadata, errors)
        except ConfigError as exc:
            errors.append(exc)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # A section that validates itself on construction (TokenConfig).
        errors.append(exc)
        return cls(**{k: v for k, v in kwargs.items() if k == "section"})


def _parent(path: str) -> str:
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


def _cross_field_problems(config: Config, value_errors: list[ConfigError]) -> list[ConfigError]:
    """Cross-field problems, except in sections that already have a bad value or key.

    A section with an invalid value was built with that key's default, so
    its cross-field checks would report noise rather than the user's mistake.
    """
    # An unknown key is most often a misspelt one: the section's rules would
    # then complain about the key it was meant to be, a second, misleading error.
    tainted = {_parent(e.path) or e.path for e in value_errors}
    out = []
    for problem in _problems_tree(config, ""):
        section = _parent(problem.path) or problem.path
        if any(section == t or section.startswith((t + ".", t + "[")) for t in tainted):
            continue
        out.append(problem)
    return out


def _raise(errors: list[ConfigError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    raise ConfigErrors(errors)


def config_from_mapping(data: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from plain data.

    Raises:
        ConfigError: the invalid value (:class:`ConfigErrors` when several).
    """
    if not isinstance(data, Mapping):
        raise ConfigError("(root)", "configuration must be a table/object")
    errors: list[ConfigError] = []
    config: Config = _build(Config, data, "", errors)
    errors.extend(_cross_field_problems(config, errors))
    if errors:
        _raise(errors)
    return config


def config_to_mapping(config: Any) -> dict[str, Any]:
    """The configuration as plain data (for ``checkconfig``/debug output)."""
    return dataclasses.asdict(config)


# -- loading: file < environment < command line --------------------------------


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a ``.toml``, ``.yaml``/``.yml`` or ``.json`` configuration file.

    Raises:
        ConfigError: named after the file, for a missing file, an unknown
            extension, a syntax error (with its line) or a top level that is
            not a table.
    """
    return _read_config(path)[0]


def _read_config(path: str | Path) -> tuple[dict[str, Any], str, str]:
    """``(data, text, format)`` of a configuration file (see :func:`read_config_file`)."""
    p = Path(path)
    where = str(path)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(
            where, "unknown configuration format; use a .toml, .yaml, .yml or .json file"
        )
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(where, "no such file") from None
    except IsADirectoryError:
        raise ConfigError(where, "is a directory, not a configuration file") from None
    except OSError as exc:
        raise ConfigError(where, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(where, f"not UTF-8 text (byte {exc.start})") from None
    fmt = "yaml" if suffix in (".yaml", ".yml") else suffix[1:]
    data = parse_config_text(text, fmt, where)
    if data is None and fmt == "yaml":
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(where, f"the top level must be a table/object, got {_kind(data)}")
    return data, text, fmt


def _locate(
    errors: list[ConfigError], sources: Mapping[str, str], file: str, text: str, fmt: str
) -> list[ConfigError]:
    """The errors about values from the file, with the file's line of their key."""
    lines = key_lines(text, fmt)
    out: list[ConfigError] = []
    for error in errors:
        line = None if _source_of(error.path, sources) else line_of_path(error.path, lines)
        if line is None or isinstance(error, LocatedConfigError):
            out.append(error)
        else:
            out.append(LocatedConfigError(error.path, error.message, file, line))
    return out


def env_var_name(path: str) -> str:
    """The environment variable of a key path: ``client.token.hmac_secret_key`` ->
    ``RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY``."""
    return ENV_PREFIX + "__".join(part.upper() for part in path.split("."))


def _set_path(target: dict[str, Any], parts: list[str], value: Any) -> None:
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            # A deeper key replaces a scalar set for its parent: the later source wins.
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, Mapping):
            base[key] = {}
            _merge(base[key], value)
        else:
            base[key] = value


def _env_mapping(
    env: Mapping[str, str], sources: dict[str, str]
) -> tuple[dict[str, Any], list[ConfigError]]:
    out: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        if "__" not in rest:
            # RTCORE_NO_EXTENSIONS and friends are switches, not configuration keys.
            continue
        parts = [p.lower() for p in rest.split("__")]
        if any(not p for p in parts):
            errors.append(
                ConfigError(name, "malformed variable name (use RTCORE_<SECTION>__<KEY>)")
            )
            continue
        path = ".".join(parts)
        sources[path] = f"environment variable {name}"
        _set_path(out, parts, _EnvText(env[name]))
    return out, errors


def _overrides_mapping(
    overrides: Mapping[str, Any], sources: dict[str, str]
) -> tuple[dict[str, Any], list[ConfigError]]:
    out: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for key, leaf in _leaves(overrides, ""):
        parts = key.split(".")
        if any(not p for p in parts):
            errors.append(ConfigError(key, "malformed key path"))
            continue
        sources[key] = "the command line"
        _set_path(out, parts, leaf)
    return out, errors


def _leaves(value: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for k, v in value.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            yield from _leaves(v, path)
        else:
            yield path, v


def _source_of(path: str, sources: Mapping[str, str]) -> str:
    """The environment variable or flag that set ``path`` (or a key in or above it), or ""."""
    best = ""
    for key in sources:
        inside = path == key or path.startswith(key + ".") or path.startswith(key + "[")
        if (inside and len(key) > len(best)) or (not best and key.startswith(path + ".")):
            best = key
    return sources[best] if best else ""


def _annotate(error: ConfigError, sources: Mapping[str, str]) -> ConfigError:
    source = _source_of(error.path, sources)
    if not source:
        return error
    return ConfigError(error.path, f"{error.message} (set by {source})")


def _check_files(config: Config) -> Iterator[ConfigError]:
    http = config.http
    if http.tls_cert and http.tls_key:
        for key in ("tls_cert", "tls_key"):
            file = getattr(http, key)
            if not os.path.isfile(file):
                yield ConfigError(f"http.{key}", f"no such file: {file}")
                return
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(http.tls_cert, http.tls_key)
        except (ssl.SSLError, OSError) as exc:
            yield ConfigError(
                "http.tls_cert", f"cannot load the certificate chain and key: {exc.strerror or exc}"
            )


def load_config(
    path: str | Path | None,
    env: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load the configuration: defaults < file < environment < ``overrides``.

    Args:
        path: a ``.toml``/``.yaml``/``.yml``/``.json`` file, or None for none.
        env: environment variables (pass ``os.environ``); only
            ``RTCORE_<SECTION>__<KEY>`` names (with ``__`` between levels)
            are configuration keys, e.g. ``RTCORE_HTTP__PORT=9000`` or
            ``RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY=...``. Lists of strings
            are comma-separated; tables and lists of tables are JSON.
        overrides: highest-precedence values (the command line), keyed by
            dotted path (``{"http.port": 9000}``) or nested.

    Returns:
        The validated configuration. TLS files, when configured, are checked
        to exist and to load.

    Raises:
        ConfigError: one invalid value, or :class:`ConfigErrors` with every
            invalid value; each names its key path and where the value came
            from: the file's line (a :class:`LocatedConfigError`), the
            environment variable or the command line.
    """
    data: dict[str, Any] = {}
    text = fmt = ""
    if path is not None:
        data, text, fmt = _read_config(path)
    sources: dict[str, str] = {}
    env_data, errors = _env_mapping(env, sources)
    _merge(data, env_data)
    if overrides:
        cli_data, cli_errors = _overrides_mapping(overrides, sources)
        errors.extend(cli_errors)
        _merge(data, cli_data)
    config: Config = _build(Config, data, "", errors)
    errors.extend(_cross_field_problems(config, errors))
    if not errors:
        errors.extend(_check_files(config))
    if errors:
        if path is not None:
            errors = _locate(errors, sources, str(path), text, fmt)
        _raise([_annotate(e, sources) for e in errors])
    return config
