"""The cycle collector's policy in a server process.

A server's heap is mostly long-lived objects (connections, sessions,
subscriptions), and CPython's full collections walk all of them again each
time the survivors of younger collections reach a quarter of the old
generation: filling a process with N connections walks its heap about five
times over (10-15% of the CPU of connection setup was measured there).
Closed connections are freed by reference counting (they form no cycles),
so what survives a full collection is worth freezing: the next full
collections walk only newer objects. A cycle among frozen objects would stay
until the next rescan: every ``rescan_every`` full collections, the frozen
objects are unfrozen first, and that collection walks the whole heap again.
"""

from __future__ import annotations

import gc
from typing import Any

from rtcore.config import GcConfig


__all__ = ["FreezeSurvivors", "install_gc_policy"]


class FreezeSurvivors:
    """A ``gc.callbacks`` entry: freeze after each full collection, rescan now and then."""

    def __init__(self, rescan_every: int) -> None:
        self.rescan_every = rescan_every
        self.full_collections = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        self.full_collections += 1
        if self.rescan_every and self.full_collections % self.rescan_every == 0:
            gc.unfreeze()  # the next full collection walks everything
        else:
            gc.freeze()

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
        gc.unfreeze()


def install_gc_policy(config: GcConfig) -> FreezeSurvivors | None:
    """Install the policy ``config`` asks for in this process (None: the default GC)."""
    if not config.freeze:
        return None
    policy = FreezeSurvivors(config.rescan_every)
    gc.callbacks.append(policy)
    return policy
