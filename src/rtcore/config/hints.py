"""What an unknown key was probably meant to be.

:func:`unknown_key_errors` turns an unknown key into errors that help: a
close spelling among the keys of its section ("did you mean"), the section
where a key of that name lives, or, for a key of a Centrifugo v6
configuration, its rtcore name (every Centrifugo key under it gets one).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from typing import Any

from rtcore.config.centrifugo import centrifugo_key_errors
from rtcore.config.keys import model_keys, section_keys
from rtcore.config.model import KEY_ALIASES
from rtcore.errors import ConfigError


__all__ = ["unknown_key_errors"]


@functools.cache
def _paths_by_name() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key in model_keys():
        out.setdefault(key.name, []).append(key.path)
    return out


def _names(cls: type) -> list[str]:
    names = [f.name for f in section_keys(cls)]
    return names + [a for a in KEY_ALIASES.get(cls, {}) if a not in names]


def unknown_key_errors(cls: type, key: str, value: Any, path: str) -> list[ConfigError]:
    """Errors for the unknown key ``key`` (at ``path``) of section ``cls``."""
    centrifugo = centrifugo_key_errors(path, value)
    if centrifugo is not None:
        return [ConfigError(p, message) for p, message in centrifugo]
    names = _names(cls) if dataclasses.is_dataclass(cls) else []
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return [ConfigError(path, f"unknown key; did you mean {close[0]!r}?")]
    elsewhere = _paths_by_name().get(key)
    if elsewhere:
        shown = " or ".join(p.replace("[]", "[...]") for p in elsewhere[:3])
        return [ConfigError(path, f"unknown key here; a key of this name is {shown}")]
    listed = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return [ConfigError(path, f"unknown key (the keys here: {listed})")]
