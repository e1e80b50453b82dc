"""The cycle collector's policy in a server process.

A server's heap is mostly long-lived objects (connections, sessions,
subscriptions), and CPython's full collections walk all of them again each
time the survivors of younger collections reach a quarter of the old
generation: filling a process with N connections walks its heap about five
times over (10-15% of the CPU of connection setup was measured there).
Closed connections are freed by reference counting (they form no cycles),
so what survives a full collection is worth freezing: the next full
collections walk only newer objects. With ``young`` (``gc.freeze_young``,
the default) what survives a collection of the middle generation is frozen
too: an object is then walked by two young collections and by no full one
(each full collection walked every connection made since the previous one:
connection setup costs 11% less without them). Freezing resets the count
that brings a full collection, so none comes on its own then: every
``threshold[2]`` middle collections stand for one.

A cycle among frozen objects would stay until the next rescan: every
``rescan_every`` full collections (or stand-ins), the frozen objects are
unfrozen, and the next full collection, which then comes on its own, walks
the whole heap again; nothing is frozen until it has.
"""

from __future__ import annotations

import gc
from typing import Any

from rtcore.config import GcConfig


__all__ = ["FreezeSurvivors", "install_gc_policy"]


class FreezeSurvivors:
    """A ``gc.callbacks`` entry: freeze after each full (and, with ``young``, each
    middle-generation) collection; rescan now and then."""

    def __init__(self, rescan_every: int, young: bool = False) -> None:
        self.rescan_every = rescan_every
        self.young = young
        self.full_collections = 0
        self.middle_collections = 0
        # Full collections, or with ``young`` their stand-ins (see __call__),
        # counted towards the next rescan.
        self.periods = 0
        # Unfrozen for a rescan that has not run yet: nothing is frozen meanwhile.
        self.rescan_pending = False

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop":
            return
        generation = info.get("generation")
        if generation == 2:
            self.full_collections += 1
            if self.rescan_pending:
                self.rescan_pending = False  # this one walked everything
                gc.freeze()
            elif self.young:
                gc.freeze()  # one asked for (gc.collect()): none comes on its own
            else:
                self._end_period()
        elif generation == 1 and self.young and not self.rescan_pending:
            self.middle_collections += 1
            # gc.freeze() resets the count that brings a full collection, so
            # none comes on its own while the young are frozen: every
            # threshold[2] middle collections stand for one.
            if self.middle_collections % max(1, gc.get_threshold()[2]) == 0:
                self._end_period()
            else:
                gc.freeze()

    def _end_period(self) -> None:
        self.periods += 1
        if self.rescan_every and self.periods % self.rescan_every == 0:
            # The next full collection (it comes on its own once nothing is
            # frozen for a while) walks everything.
            gc.unfreeze()
            self.rescan_pending = True
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
    policy = FreezeSurvivors(config.rescan_every, young=config.freeze_young)
    gc.callbacks.append(policy)
    return policy
