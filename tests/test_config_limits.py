"""Configuration text the standard parsers choke on: a ConfigError, never a crash.

Deep nesting (RecursionError in the parsers), integers past Python's int
digit limit (ValueError), integers past the float range (OverflowError), an
integer variable padded with a control character, and YAML aliases that
make a cycle or expand a few lines to a billion values. Each must be
refused with one ConfigError that names the file (with the line where the
parser knows it) or the variable and key. Found by fuzz/fuzz_config.py
(docs/fuzzing.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rtcore.config import ConfigErrors, config_from_mapping, load_config, read_config_file
from rtcore.config.reading import MAX_NESTING
from rtcore.errors import ConfigError


LIMIT = sys.get_int_max_str_digits()
BIG = "9" * (LIMIT + 700)
TOO_LONG = f"an integer of {LIMIT + 700} digits is longer than the limit of {LIMIT} digits"


def file_error(tmp_path: Path, name: str, text: str) -> ConfigError:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert not isinstance(info.value, ConfigErrors), str(info.value)
    assert info.value.path == str(path)
    return info.value


def env_error(name: str, value: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(None, {name: value})
    assert not isinstance(info.value, ConfigErrors), str(info.value)
    assert f"(set by environment variable {name})" in info.value.message
    return info.value


# -- integers past the digit limit ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "at"),
    [
        ("c.json", '{"http": {\n  "port": ' + BIG + "}}", "(line 2, column 11)"),
        ("c.json", "[" + BIG + "]", "(line 1, column 2)"),
        ("c.json", '{"a": -' + BIG + "}", "(line 1, column 7)"),
        ("c.toml", "[http]\nport = " + BIG + "\n", "(line 2, column 8)"),
        ("c.toml", "a = [1, 2_" + BIG + "]\n", "(line 1, column 9)"),
        ("c.yaml", "http:\n  port: " + BIG + "\n", "(line 2, column 9)"),
    ],
)
def test_long_integer_in_a_file(tmp_path: Path, name: str, text: str, at: str) -> None:
    fmt = name.rsplit(".", 1)[1].upper()
    digits = LIMIT + 700 + (1 if "2_" in text else 0)
    message = f"invalid {fmt}: an integer of {digits} digits is longer than the limit of {LIMIT} digits {at}"
    assert file_error(tmp_path, name, text).message == message


def test_long_integer_found_past_strings_comments_and_floats(tmp_path: Path) -> None:
    # What the locator skips: long digit runs that are not decimal integers.
    text = f'a = "{BIG}"\n# {BIG}\nb = 1.{BIG}\nc = 0x{BIG}\nd = {BIG}\n'
    error = file_error(tmp_path, "c.toml", text)
    assert error.message == f"invalid TOML: {TOO_LONG} (line 5, column 5)"


def test_long_float_and_hex_are_not_limited(tmp_path: Path) -> None:
    # Python's limit is on decimal integers only; these load (and are unknown keys).
    path = tmp_path / "c.toml"
    path.write_text(f"a = 1.{BIG}\nb = 0x{BIG}\n", encoding="utf-8")
    data = read_config_file(path)
    assert data["b"] == int(BIG, 16)


def test_long_integer_in_an_integer_variable() -> None:
    error = env_error("RTCORE_HTTP__PORT", BIG)
    assert error.path == "http.port"
    assert error.message.startswith(f"expected an integer, got one of {LIMIT + 700} digits")


def test_long_integer_in_a_json_variable() -> None:
    error = env_error("RTCORE_CHANNEL__NAMESPACES", '[{"name": "a", "history_size": ' + BIG + "}]")
    assert error.path == "channel.namespaces"
    assert error.message.startswith(
        f"expected a JSON array in the environment value ({TOO_LONG}: line 1 column 32 (char 31))"
    )


# -- integers past the float range ------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (
            {"client": {"connect_rate_limit": 10**400}},
            "client.connect_rate_limit",
            "expected a finite number, got an integer too large",
        ),
        (
            {"engine": {"presence_ttl": 10**400}},
            "engine.presence_ttl",
            "duration must be a finite number",
        ),
    ],
)
def test_integer_past_the_float_range(data: dict, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data)
    assert (info.value.path, info.value.message) == (path, message)


# -- nesting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("c.json", "[" * 100_000),
        ("c.json", '{"a": ' * 5000 + "1" + "}" * 5000),
        ("c.toml", "a = " + "[" * 5000),
        ("c.toml", "a = " + "{b = " * 5000),
        ("c.yaml", "[" * 10_000),
        ("c.yaml", "".join("  " * i + "-\n" for i in range(3000))),
    ],
)
def test_nesting_past_the_recursion_limit(tmp_path: Path, name: str, text: str) -> None:
    fmt = name.rsplit(".", 1)[1].upper()
    assert file_error(tmp_path, name, text).message == (
        f"invalid {fmt}: nested too deeply to parse "
        f"(at most {MAX_NESTING} levels of tables and lists)"
    )


@pytest.mark.parametrize(
    ("name", "text", "under"),
    [
        ("c.json", '{"http": ' + "[" * 40 + "]" * 40 + "}", "http[0][0]"),
        ("c.toml", "a = " + "{b = " * 40 + "1" + "}" * 40, "a.b.b"),
        (
            "c.yaml",
            "channel:\n  namespaces:\n" + "    " + "[" * 40 + "]" * 40,
            "channel.namespaces[0]",
        ),
    ],
)
def test_nesting_past_the_limit(tmp_path: Path, name: str, text: str, under: str) -> None:
    # Parsed, but deeper than the loader and the line finder go.
    assert file_error(tmp_path, name, text).message == (
        f"tables and lists nested more than {MAX_NESTING} levels deep (under {under})"
    )


def test_nesting_at_the_limit_loads(tmp_path: Path) -> None:
    depth = MAX_NESTING - 1  # the top-level table is the first level
    path = tmp_path / "c.json"
    path.write_text('{"x": ' + "[" * depth + "]" * depth + "}", encoding="utf-8")
    nested: list = []
    for _ in range(depth - 1):
        nested = [nested]
    assert read_config_file(path) == {"x": nested}


def test_nesting_in_a_json_variable() -> None:
    error = env_error("RTCORE_CHANNEL__NAMESPACES", "[" * 100_000)
    assert error.message.startswith(
        "expected a JSON array in the environment value (nested too deeply to parse: "
        f"at most {MAX_NESTING} levels of tables and lists)"
    )
    error = env_error("RTCORE_CHANNEL__NAMESPACES", "[" * 40 + "]" * 40)
    assert error.message.startswith(
        "expected a JSON array in the environment value "
        f"(tables and lists nested more than {MAX_NESTING} levels deep (under [0][0][0]))"
    )


# -- YAML aliases -----------------------------------------------------------------------


def test_yaml_alias_cycle(tmp_path: Path) -> None:
    error = file_error(tmp_path, "c.yaml", "channel:\n  namespaces: &a [*a]\n")
    assert error.message == (
        f"tables and lists nested more than {MAX_NESTING} levels deep (under channel.namespaces[0])"
    )


def test_yaml_aliases_that_expand_past_reason(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = "\n".join(lines) + "\n"
    allowance = 100_000 + 10 * len(text)
    error = file_error(tmp_path, "c.yaml", text)
    assert error.message == (
        f"expands to more than {allowance:,} values (YAML aliases repeat a value)"
    )


def test_yaml_merge_keys_still_load(tmp_path: Path) -> None:
    # The common use of aliases: shared namespace options.
    keys = "".join(f"\n  k{i}: {i}" for i in range(40))
    spaces = "".join(f"\n  - {{<<: *d, name: n{i}}}" for i in range(200))
    path = tmp_path / "c.yaml"
    path.write_text(f"defaults: &d{keys}\nnamespaces:{spaces}\n", encoding="utf-8")
    data = read_config_file(path)
    assert len(data["namespaces"]) == 200 and data["namespaces"][199]["k39"] == 39


# -- integer variables ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["\x1f9000", "9000\x1c", "\x1e9000\x1d"])
def test_integer_variable_padded_with_a_control_character(value: str) -> None:
    error = env_error("RTCORE_HTTP__PORT", value)
    assert (error.path, error.message) == (
        "http.port",
        f"expected an integer, got {value!r} (set by environment variable RTCORE_HTTP__PORT)",
    )


def test_integer_variable_padded_with_whitespace_still_loads() -> None:
    config = load_config(None, {"RTCORE_HTTP__PORT": " \t9001\r\n"})
    assert config.http.port == 9001
