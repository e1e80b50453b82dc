"""Implementations of the engine seams.

The seams are :class:`~rtcore.broker.Broker`,
:class:`~rtcore.history.HistoryStore` and
:class:`~rtcore.presence.PresenceManager`. Each backend module implements
them for one storage:

* :mod:`rtcore.backends.memory`: process memory, the default. It serves a
  single node.

Backends with optional dependencies are imported from their own module and
never from here, so importing :mod:`rtcore.backends` needs nothing extra.
"""

from .memory import MemoryBroker, MemoryHistoryStore, MemoryPresenceManager


__all__ = ["MemoryBroker", "MemoryHistoryStore", "MemoryPresenceManager"]
