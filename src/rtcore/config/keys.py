"""Every key of the configuration model, walked once.

:func:`model_keys` lists the keys of :class:`~rtcore.config.model.Config`
with their type, default and description. Paths spell list elements ``[]``
(``channel.namespaces[].name``). The loader's hints, ``rtcore defaultenv``,
``rtcore defaultconfig`` and the Centrifugo key table are built on it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from rtcore.config.model import FIELD_DOCS, HIDDEN_FIELDS, Config


__all__ = ["ModelKey", "model_keys", "model_key", "section_keys", "unwrap_optional", "generic_path"]

_INDEX = re.compile(r"\[[0-9]+\]")


@dataclass(frozen=True, slots=True)
class ModelKey:
    """One key of the model.

    ``kind`` is ``"value"`` (a scalar, a list of scalars or a string table),
    ``"section"`` (a table of keys) or ``"list"`` (a list of tables, whose
    keys are listed under ``path + "[]"``).
    """

    path: str
    kind: str
    hint: Any
    owner: type
    name: str
    duration: bool
    optional: bool
    doc: str
    default: Any


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``(inner type, optional)`` for ``X | None``."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None  # pragma: no cover - every configuration field has a default


def section_keys(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of a section that are configuration keys."""
    hidden = HIDDEN_FIELDS.get(cls, frozenset())
    return [f for f in dataclasses.fields(cls) if f.init and f.name not in hidden]


def _walk(cls: type, prefix: str, out: list[ModelKey]) -> None:
    hints = typing.get_type_hints(cls)
    for f in section_keys(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        inner, optional = unwrap_optional(hints[f.name])
        doc = f.metadata.get("doc") or FIELD_DOCS.get(cls, {}).get(f.name, "")
        item = typing.get_args(inner)[0] if typing.get_origin(inner) is list else None
        if dataclasses.is_dataclass(inner):
            kind = "section"
        elif item is not None and dataclasses.is_dataclass(item):
            kind = "list"
        else:
            kind = "value"
        out.append(
            ModelKey(
                path=path,
                kind=kind,
                hint=inner,
                owner=cls,
                name=f.name,
                duration=bool(f.metadata.get("duration")),
                optional=optional,
                doc=str(doc),
                default=_default(f),
            )
        )
        if kind == "section":
            _walk(inner, path, out)
        elif kind == "list":
            _walk(item, path + "[]", out)  # type: ignore[arg-type]


@functools.cache
def model_keys() -> tuple[ModelKey, ...]:
    """Every key of :class:`Config`, sections before their keys, in model order."""
    out: list[ModelKey] = []
    _walk(Config, "", out)
    return tuple(out)


@functools.cache
def _by_path() -> dict[str, ModelKey]:
    return {key.path: key for key in model_keys()}


def model_key(path: str) -> ModelKey | None:
    """The key at ``path`` (list elements as ``[]`` or ``[n]``), or None."""
    return _by_path().get(_INDEX.sub("[]", path))


def generic_path(path: str) -> str:
    """``path`` with list indexes spelled ``[]``: ``channel.namespaces[2].name`` ->
    ``channel.namespaces[].name``."""
    return _INDEX.sub("[]", path)
