"""Configuration files written by rtcore: TOML, YAML or JSON, with comments.

A :class:`Document` is plain configuration data plus the comments to show
with it; :func:`render` spells it in any of the three formats (comments
where the format has them, so JSON has none). ``rtcore genconfig``,
``rtcore defaultconfig`` and ``rtcore config import`` write with it, and
:func:`default_document` / :func:`default_env` describe every key of the
model with its default.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtcore.config.durations import format_duration
from rtcore.config.keys import model_keys
from rtcore.config.loading import env_var_name


__all__ = [
    "Document",
    "FORMATS",
    "format_of",
    "render",
    "default_document",
    "default_env",
]

#: Formats by file extension.
FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(slots=True)
class Document:
    """Configuration data and its comments.

    ``comments`` maps a key path (``"http.port"``, ``"channel.namespaces[0]"``;
    ``""`` for the top of the file) to the comment lines shown before it.
    ``examples`` maps a table path to ``(key, value, comment)`` entries shown
    commented out at the end of that table. A ``None`` value is shown as a
    comment saying the key is not set.
    """

    data: dict[str, Any]
    comments: dict[str, list[str]] = field(default_factory=dict)
    examples: dict[str, list[tuple[str, Any, str]]] = field(default_factory=dict)


def format_of(path: str | Path) -> str | None:
    """``"toml"``, ``"yaml"`` or ``"json"`` by extension; None for anything else."""
    return FORMATS.get(Path(path).suffix.lower())


def render(doc: Document, fmt: str) -> str:
    """The document as ``"toml"``, ``"yaml"`` or ``"json"`` text."""
    if fmt == "json":
        return json.dumps(_without_none(doc.data), indent=2, ensure_ascii=False) + "\n"
    if fmt == "toml":
        return _Toml(doc).render()
    if fmt == "yaml":
        return _Yaml(doc).render()
    raise ValueError(f"unknown format {fmt!r} (toml, yaml or json)")


def _without_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_table(v) for v in value)


def _comment_lines(lines: list[str], indent: str = "") -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in lines]


def _quoted(text: str) -> str:
    """A double-quoted string both TOML and YAML read back exactly."""
    out = json.dumps(text, ensure_ascii=False)
    return re.sub(r"[\x7f-\x9f\u2028\u2029]", lambda m: f"\\u{ord(m.group()):04x}", out)


class _Toml:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.out: list[str] = _comment_lines(doc.comments.get("", []))

    def key(self, name: str) -> str:
        return name if _BARE.match(name) else _quoted(name)

    def value(self, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, str):
            return _quoted(value)
        if isinstance(value, list):
            return "[" + ", ".join(self.value(v) for v in value) + "]"
        if isinstance(value, Mapping):
            inner = ", ".join(f"{self.key(str(k))} = {self.value(v)}" for k, v in value.items())
            return "{" + inner + "}" if inner else "{}"
        raise TypeError(f"cannot write {type(value).__name__} to TOML")

    def render(self) -> str:
        self.table("", self.doc.data, None, "")
        return "\n".join(self.out).strip("\n") + "\n"

    def blank(self) -> None:
        if self.out and self.out[-1] != "":
            self.out.append("")

    def table(self, path: str, table: Mapping[str, Any], header: str | None, dotted: str) -> None:
        """Write ``table`` (at ``path``, named ``dotted`` in headers) after ``header``."""
        plain = [(k, v) for k, v in table.items() if not _is_table(v) and not _is_table_list(v)]
        examples = self.doc.examples.get(path, [])
        comments = self.doc.comments.get(path, []) if path else []
        if header is not None and (plain or examples or comments):
            self.blank()
            self.out.extend(_comment_lines(comments))
            self.out.append(header)
        for name, value in plain:
            sub = f"{path}.{name}" if path else name
            self.out.extend(_comment_lines(self.doc.comments.get(sub, [])))
            if value is None:
                self.out.append(f"# {self.key(name)} is not set")
            else:
                self.out.append(f"{self.key(name)} = {self.value(value)}")
        for name, value, note in examples:
            line = f"# {self.key(name)} = {self.value(value)}"
            self.out.append(f"{line}   # {note}" if note else line)
        for name, value in table.items():
            sub = f"{path}.{name}" if path else name
            name_in_header = f"{dotted}.{self.key(name)}" if dotted else self.key(name)
            if _is_table(value):
                self.table(sub, value, f"[{name_in_header}]", name_in_header)
            elif _is_table_list(value):
                if self.doc.comments.get(sub):
                    self.blank()
                    self.out.extend(_comment_lines(self.doc.comments[sub]))
                for index, item in enumerate(value):
                    item_path = f"{sub}[{index}]"
                    self.blank()
                    self.out.extend(_comment_lines(self.doc.comments.get(item_path, [])))
                    self.out.append(f"[[{name_in_header}]]")
                    self.table(item_path, item, None, name_in_header)


class _Yaml:
    def __init__(self, doc: Document) -> None:
        self.doc = doc

    def key(self, name: str) -> str:
        return name if _BARE.match(name) else _quoted(name)

    def scalar(self, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, str):
            return _quoted(value)
        if isinstance(value, list):
            return "[" + ", ".join(self.scalar(v) for v in value) + "]"
        if isinstance(value, Mapping):
            inner = ", ".join(f"{self.key(str(k))}: {self.scalar(v)}" for k, v in value.items())
            return "{" + inner + "}"
        raise TypeError(f"cannot write {type(value).__name__} to YAML")

    def render(self) -> str:
        lines = _comment_lines(self.doc.comments.get("", []))
        if lines:
            lines.append("")
        body = self.mapping("", self.doc.data, 0)
        return "\n".join([*lines, *body]).strip("\n") + "\n"

    def mapping(self, path: str, table: Mapping[str, Any], indent: int) -> list[str]:
        pad = " " * indent
        out: list[str] = []
        for name, value in table.items():
            sub = f"{path}.{name}" if path else name
            comments = self.doc.comments.get(sub, [])
            if indent == 0 and out and (comments or _is_table(value)):
                out.append("")
            out.extend(_comment_lines(comments, pad))
            if value is None:
                out.append(f"{pad}# {self.key(name)} is not set")
            elif _is_table(value) and not _without_none(value):
                # Only unset keys: an empty table, with the keys as comments.
                out.append(f"{pad}{self.key(name)}: {{}}")
                out.extend(f"{pad}  # {self.key(str(k))} is not set" for k in value)
            elif _is_table(value):
                out.append(f"{pad}{self.key(name)}:")
                out.extend(self.mapping(sub, value, indent + 2))
            elif _is_table_list(value):
                out.append(f"{pad}{self.key(name)}:")
                for index, item in enumerate(value):
                    item_path = f"{sub}[{index}]"
                    out.extend(_comment_lines(self.doc.comments.get(item_path, []), pad + "  "))
                    lines = self.mapping(item_path, item, indent + 4)
                    first = next(
                        i for i, line in enumerate(lines) if not line.lstrip().startswith("#")
                    )
                    lines[first] = f"{pad}  - {lines[first][indent + 4 :]}"
                    out.extend(lines)
            else:
                out.append(f"{pad}{self.key(name)}: {self.scalar(value)}")
        for name, value, note in self.doc.examples.get(path, []):
            line = f"{pad}# {self.key(name)}: {self.scalar(value)}"
            out.append(f"{line}   # {note}" if note else line)
        return out


# -- every key with its default ---------------------------------------------------------


def _plain(value: Any, duration: bool) -> Any:
    if duration and isinstance(value, int | float):
        return format_duration(float(value))
    return value


def default_document(header: list[str] | None = None) -> Document:
    """Every key of the model with its default, each with its description."""
    doc = Document(data={})
    if header:
        doc.comments[""] = list(header)
    tables: dict[str, dict[str, Any]] = {"": doc.data}
    for key in model_keys():
        if "[]" in key.path:
            continue  # keys of list elements: the list itself is shown (empty)
        parent, _, name = key.path.rpartition(".")
        target = tables.get(parent)
        if target is None:
            continue  # inside an unset optional section
        if key.doc:
            doc.comments[key.path] = [key.doc]
        if key.kind == "section":
            if key.optional and key.default is None:
                target[name] = None
                doc.comments[key.path] = [f"{key.doc} Not set by default."]
                continue
            tables[key.path] = target[name] = {}
        elif key.kind == "list":
            target[name] = []
        else:
            target[name] = _plain(key.default, key.duration)
    return doc


def _env_value(value: Any, duration: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if duration and isinstance(value, int | float):
        return format_duration(float(value))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def default_env() -> list[str]:
    """``NAME=value`` lines: every key's environment variable with its default.

    Keys of optional sections that are unset by default, and keys without a
    value, come as comments. Values are quoted for a POSIX shell (and for
    systemd's ``EnvironmentFile=``) where needed.
    """
    lines = []
    unset: set[str] = set()
    for key in model_keys():
        if "[]" in key.path:
            continue
        parent = key.path.rpartition(".")[0]
        if parent in unset:
            unset.add(key.path)
            if key.kind == "value":
                lines.append(f"# {env_var_name(key.path)}=   (not set: {parent} is unset)")
            continue
        if key.kind == "section":
            if key.optional and key.default is None:
                unset.add(key.path)
            continue
        if key.kind == "list":
            lines.append(f"{env_var_name(key.path)}={shlex.quote('[]')}")
            continue
        if key.default is None:
            lines.append(f"# {env_var_name(key.path)}=   (not set)")
            continue
        text = _env_value(key.default, key.duration)
        shown = (
            text if text and re.fullmatch(r"[A-Za-z0-9_.:/,@%+=-]+", text) else shlex.quote(text)
        )
        lines.append(f"{env_var_name(key.path)}={shown}")
    return lines
