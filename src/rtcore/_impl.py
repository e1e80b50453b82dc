"""Which implementation of the accelerated modules is in use.

``RTCORE_NO_EXTENSIONS`` is read once, at import time: when it is set to a
true value (``1``, ``yes``, ``true``, ``on``) every facade (``rtcore.frames``,
``rtcore.fanout``) uses its pure-Python twin even when the compiled module is
importable. ``RTCORE_REQUIRE_EXTENSIONS`` makes a missing compiled module an
import error instead of a silent fallback (used by CI and the canary test).
"""

import importlib
import os
from types import ModuleType


__all__ = ["NO_EXTENSIONS", "REQUIRE_EXTENSIONS", "select"]


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "yes", "true", "on"}


NO_EXTENSIONS: bool = _flag("RTCORE_NO_EXTENSIONS")
REQUIRE_EXTENSIONS: bool = _flag("RTCORE_REQUIRE_EXTENSIONS") and not NO_EXTENSIONS


def select(stem: str) -> tuple[ModuleType, str]:
    """Import ``rtcore._<stem>`` (compiled) or its twin ``rtcore._<stem>_py``.

    Returns the module and ``"cython"`` or ``"python"``.
    """
    if not NO_EXTENSIONS:
        try:
            return importlib.import_module(f"rtcore._{stem}"), "cython"
        except ImportError:
            if REQUIRE_EXTENSIONS:
                raise
    return importlib.import_module(f"rtcore._{stem}_py"), "python"
