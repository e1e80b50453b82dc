"""The line of every key in a configuration file, for error messages.

:func:`key_lines` maps key paths, spelled as errors spell them
(``channel.namespaces[1].history_ttl``), to 1-based line numbers. The text
has already been parsed without error: YAML positions come from the
parser's node tree; TOML and JSON, whose standard parsers give none, are
scanned here. A scan that meets something unexpected stops and keeps what
it found: a missing line only makes a message less precise.
"""

from __future__ import annotations

import bisect
import importlib
import json
import re
import tomllib
from typing import Any

from rtcore.config.reading import yaml_safe_loader


__all__ = ["key_lines", "line_of_path"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_SCALAR = re.compile(r"[^,\]}\s#]+(?:[ T][0-9][^,\]}\s#]*)?")
_JSON_SCALAR = re.compile(r"-?[0-9][0-9eE.+-]*|true|false|null|-?Infinity|NaN")


def key_lines(text: str, fmt: str) -> dict[str, int]:
    """``{key path: line}`` for a ``"toml"``, ``"yaml"`` or ``"json"`` text."""
    if fmt == "yaml":
        return _yaml_lines(text)
    found: _TomlScanner | _JsonScanner
    if fmt == "toml":
        found = _TomlScanner(text)
    elif fmt == "json":
        found = _JsonScanner(text)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    try:
        found.run()
    except (IndexError, ValueError, KeyError, tomllib.TOMLDecodeError):
        pass  # keep the lines found so far
    return found.lines


def line_of_path(path: str, lines: dict[str, int]) -> int | None:
    """The line of ``path``, else of its nearest enclosing key, else None."""
    while path:
        line = lines.get(path)
        if line is not None:
            return line
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lines: dict[str, int] = {}
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(self, i: int) -> int:
        return bisect.bisect_right(self._starts, i)

    def mark(self, path: str, i: int) -> None:
        self.lines.setdefault(path, self.line(i))


class _TomlScanner(_Scanner):
    """Tables, arrays of tables, dotted keys, inline tables and arrays."""

    def skip(self, i: int, newlines: bool) -> int:
        text = self.text
        while i < len(text):
            c = text[i]
            if c in " \t\r" or (newlines and c == "\n"):
                i += 1
            elif c == "#":
                end = text.find("\n", i)
                i = len(text) if end < 0 else end
            else:
                break
        return i

    def string_end(self, i: int) -> int:
        text = self.text
        quote = text[i]
        if text.startswith(quote * 3, i):
            end = text.index(quote * 3, i + 3)
            while text.startswith(quote, end + 3):  # up to two quotes may end the content
                end += 1
            return end + 3
        j = i + 1
        while text[j] != quote:
            j += 2 if quote == '"' and text[j] == "\\" else 1
        return j + 1

    def key(self, i: int) -> tuple[list[str], int]:
        parts = []
        text = self.text
        while True:
            i = self.skip(i, False)
            if text[i] in "\"'":
                end = self.string_end(i)
                parts.append(str(tomllib.loads(f"k = {text[i:end]}")["k"]))
                i = end
            else:
                m = _BARE_KEY.match(text, i)
                if m is None:
                    raise ValueError("not a key")
                parts.append(m.group())
                i = m.end()
            i = self.skip(i, False)
            if i < len(text) and text[i] == ".":
                i += 1
                continue
            return parts, i

    def value(self, i: int, path: str) -> int:
        text = self.text
        c = text[i]
        if c in "\"'":
            return self.string_end(i)
        if c == "[":
            i, index = i + 1, 0
            while True:
                i = self.skip(i, True)
                if text[i] == "]":
                    return i + 1
                item = f"{path}[{index}]"
                self.mark(item, i)
                i = self.skip(self.value(i, item), True)
                if text[i] == ",":
                    i, index = i + 1, index + 1
        if c == "{":
            i += 1
            while True:
                i = self.skip(i, False)
                if text[i] == "}":
                    return i + 1
                i = self.pair(i, path)
                i = self.skip(i, False)
                if text[i] == ",":
                    i += 1
        m = _TOML_SCALAR.match(text, i)
        if m is None:
            raise ValueError("not a TOML value")
        return m.end()

    def pair(self, i: int, table: str) -> int:
        """``key = value`` at ``i`` inside ``table``; returns the index after the value."""
        start = i
        parts, i = self.key(i)
        path = table
        for part in parts:
            path = f"{path}.{part}" if path else part
            self.mark(path, start)
        i = self.skip(i, False)
        if self.text[i] != "=":
            raise ValueError("no '='")
        return self.value(self.skip(i + 1, False), path)

    def run(self) -> None:
        text = self.text
        table = ""
        arrays: dict[str, int] = {}  # resolved path of an array of tables -> its length
        i = self.skip(0, True)
        while i < len(text):
            if text[i] == "[":
                double = text.startswith("[[", i)
                parts, j = self.key(i + (2 if double else 1))
                path = ""
                for n, part in enumerate(parts):
                    path = f"{path}.{part}" if path else part
                    last = n == len(parts) - 1
                    if path in arrays and not (double and last):
                        path = f"{path}[{arrays[path] - 1}]"
                    self.mark(path, i)
                self.mark(path, i)
                if double:
                    index = arrays.get(path, 0)
                    arrays[path] = index + 1
                    path = f"{path}[{index}]"
                    self.mark(path, i)
                table = path
                i = j + (2 if double else 1)
            else:
                i = self.pair(i, table)
            i = self.skip(i, True)


class _JsonScanner(_Scanner):
    def skip(self, i: int) -> int:
        text = self.text
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def value(self, i: int, path: str) -> int:
        text = self.text
        c = text[i]
        if c == '"':
            return int(json.decoder.scanstring(text, i + 1)[1])  # type: ignore[attr-defined]
        if c == "{":
            i = self.skip(i + 1)
            while text[i] != "}":
                key, end = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
                sub = f"{path}.{key}" if path else key
                self.mark(sub, i)
                i = self.skip(end)
                i = self.skip(self.value(self.skip(i + 1), sub))  # past ':'
                if text[i] == ",":
                    i = self.skip(i + 1)
            return i + 1
        if c == "[":
            i, index = self.skip(i + 1), 0
            while text[i] != "]":
                item = f"{path}[{index}]"
                self.mark(item, i)
                i = self.skip(self.value(i, item))
                if text[i] == ",":
                    i, index = self.skip(i + 1), index + 1
            return i + 1
        m = _JSON_SCALAR.match(text, i)
        if m is None:
            raise ValueError("not a JSON value")
        return m.end()

    def run(self) -> None:
        self.value(self.skip(0), "")


def _yaml_lines(text: str) -> dict[str, int]:
    yaml: Any = importlib.import_module("yaml")
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml_safe_loader())
    except yaml.YAMLError:
        return lines

    def walk(node: Any, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                sub = f"{path}.{key.value}" if path else str(key.value)
                lines.setdefault(sub, key.start_mark.line + 1)
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                sub = f"{path}[{index}]"
                lines.setdefault(sub, item.start_mark.line + 1)
                walk(item, sub)

    if root is not None:
        walk(root, "")
    return lines
