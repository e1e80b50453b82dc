"""The ``PresenceManager`` seam: which clients are in a channel right now.

Presence is kept per channel as a map from client id to
:class:`~rtcore.protocol.types.ClientInfo`. It is a *lease*: each entry expires
``ttl`` seconds after it was last added, unless it is added again. The lease
is what cleans up after a node that dies without removing its clients.

So the node must refresh. For every subscription with presence on, the node
calls :meth:`PresenceManager.add` once at subscribe time and then again every
``presence_update_interval`` (Centrifuge: 25 s, Centrifugo: 27 s). That
interval must be well below the manager's ``ttl`` (default 60 s). The
refreshes of all the clients that are due in one tick of the node's timer
wheel go out as one :meth:`PresenceManager.add_many` call (one Redis
pipeline), not one call per client. On unsubscribe or disconnect the node
calls :meth:`PresenceManager.remove` at once, so a clean leave does not wait
for the lease to run out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rtcore.protocol.types import ClientInfo, PresenceStats


__all__ = ["DEFAULT_PRESENCE_TTL", "PresenceEntry", "PresenceManager", "add_many"]

#: One presence entry to add: ``(channel, client id, info)``.
PresenceEntry = tuple[str, str, ClientInfo]


#: Default presence lease in seconds, as in Centrifuge and Centrifugo.
DEFAULT_PRESENCE_TTL: float = 60.0


class PresenceManager(Protocol):
    """Channel presence with per-entry expiry.

    The lease length ``ttl`` is part of the manager's configuration, not of
    each call. Invariants:

    * An entry is visible from the moment :meth:`add` returns until
      :meth:`remove` is called for it, or until ``ttl`` seconds after its
      latest ``add``, whichever is first. Backends may round the ``ttl``
      (Redis works in seconds) but never end a lease early.
    * :meth:`presence` and :meth:`stats` describe the same set of live
      entries. Expired entries never show in either, even before the backend
      has reclaimed their storage.
    * A client id is bound to one user for its whole lifetime. The user given
      to :meth:`remove` must be that user. (Backends that keep per-user
      counters rely on it.)
    * Channels are independent. A channel with no live entries costs no
      storage once the backend has cleaned it up.
    * Returned ``ClientInfo`` objects may be shared with the store; treat
      them as read-only.
    """

    async def add(self, channel: str, client_id: str, info: ClientInfo) -> None:
        """Insert or replace ``client_id``'s entry and restart its lease.

        Upsert: adding a present client replaces its info and keeps a single
        entry.
        """
        ...

    async def add_many(self, entries: Sequence[PresenceEntry]) -> None:
        """:meth:`add` every ``(channel, client_id, info)`` entry: the batched refresh.

        The entries may span many channels and go out together (a backend
        with a network round trip sends them as one batch). A failure is
        raised; the other entries may or may not have been applied (a later
        refresh applies them). This default adds them one by one.
        """
        for channel, client_id, info in entries:
            await self.add(channel, client_id, info)

    async def remove(self, channel: str, client_id: str, user_id: str) -> None:
        """Remove ``client_id``'s entry. Removing an absent entry does nothing."""
        ...

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        """The live entries: client id to info. An empty dict for an empty channel.

        The dict is a fresh one owned by the caller.
        """
        ...

    async def stats(self, channel: str) -> PresenceStats:
        """Count the live entries and their distinct users.

        ``num_users`` counts distinct ``ClientInfo.user`` values. Anonymous
        clients (user ``""``) together count as one user, as in Centrifuge.
        """
        ...


async def add_many(manager: PresenceManager, entries: Sequence[PresenceEntry]) -> None:
    """``manager.add_many(entries)``, or one :meth:`~PresenceManager.add` each for a
    manager written before the method existed."""
    batch = getattr(manager, "add_many", None)
    if batch is not None:
        await batch(entries)
        return
    for channel, client_id, info in entries:
        await manager.add(channel, client_id, info)
