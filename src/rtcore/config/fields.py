"""What the sections of the model are made of.

Fields that carry their documentation (``doc`` metadata, from which
docs/config.md is generated) and mark durations; the walk that collects
every section's problems; :class:`ConfigErrors`, which carries several.
The underscored helpers are for the modules of this package only.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from dataclasses import field
from functools import partial
from typing import Any

from rtcore.errors import ConfigError


class ConfigErrors(ConfigError):
    """Several invalid values at once; ``errors`` lists each one.

    ``path`` and ``message`` are those of the first error, so code that
    handles a single :class:`ConfigError` keeps working.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        first = errors[0]
        super().__init__(first.path, first.message)
        self.errors = list(errors)
        self.args = ("\n".join(str(e) for e in self.errors),)

    def __str__(self) -> str:
        return str(self.args[0])


class LocatedConfigError(ConfigError):
    """An invalid value with the file and line it is on.

    ``path`` and ``message`` are those of a plain :class:`ConfigError`;
    ``file`` and ``line`` (1-based) say where, and the text reads
    ``file:line: path: message``.
    """

    def __init__(self, path: str, message: str, file: str, line: int) -> None:
        super().__init__(path, message)
        self.file = file
        self.line = line
        self.args = (f"{file}:{line}: {path}: {message}",)

    def __str__(self) -> str:
        return str(self.args[0])


# Marker in field metadata: the float field is a duration.
_DURATION = {"duration": True}


def _duration(default: float, doc: str) -> Any:
    return field(default=default, metadata={**_DURATION, "doc": doc})


def _f(default: Any, doc: str) -> Any:
    if isinstance(default, list | dict):
        # Each instance gets its own copy of a mutable default.
        return field(default_factory=partial(copy.copy, default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


def _err(path: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{path}.{key}" if path else key, message)


def _problems_tree(obj: Any, path: str) -> Iterator[ConfigError]:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        sub = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value):
            yield from _problems_tree(value, sub)
    problems = getattr(obj, "_problems", None)
    if problems is not None:
        yield from problems(path)
