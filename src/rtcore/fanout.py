"""Facade over the fan-out core: ``rtcore._fanout`` (compiled) or ``rtcore._fanout_py``.

See ``_fanout_py`` for the contract. ``IMPLEMENTATION`` is ``"cython"`` or ``"python"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtcore import _impl


__all__ = [
    "IMPLEMENTATION",
    "ACTION_INSUFFICIENT_STATE",
    "ACTION_INAPPROPRIATE_PROTOCOL",
    "Sink",
    "Writer",
    "Flusher",
    "Subscriber",
    "WebSocketSink",
    "broadcast",
]

if TYPE_CHECKING:
    from rtcore._fanout_py import *  # noqa: F403

    IMPLEMENTATION: str
else:
    _mod, IMPLEMENTATION = _impl.select("fanout")
    globals().update({name: getattr(_mod, name) for name in __all__ if name != "IMPLEMENTATION"})
