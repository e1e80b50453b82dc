"""Durations in configuration values: seconds, or strings with a unit.

``25``, ``0.5``, ``"250ms"``, ``"25s"``, ``"10m"``, ``"1h"``, ``"30d"``.
"""

from __future__ import annotations

import re
from typing import Any

from rtcore.errors import ConfigError


_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, path: str = "value") -> float:
    """Seconds from a number or a string such as ``"25s"``; raises ConfigError."""
    if isinstance(value, bool):
        raise ConfigError(path, "expected a duration, got a boolean")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            # An integer past the float range is as infinite as an infinite float.
            seconds = float("inf")
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if not m:
            raise ConfigError(
                path, f"invalid duration {value!r} (use e.g. 500ms, 25s, 10m, 1h, 30d)"
            )
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ConfigError(path, f"expected a duration, got {type(value).__name__}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ConfigError(path, "duration must be a finite number")
    if seconds < 0:
        raise ConfigError(path, "duration must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration (``"25s"``, ``"30d"``, ``"250ms"``)."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count = seconds / size
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    ms = seconds * 1000
    if ms == int(ms):
        return f"{int(ms)}ms"
    return f"{seconds}s"
