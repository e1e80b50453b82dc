"""Presence in process memory: :class:`MemoryPresenceManager` (one node).

Every lease has the same length, so a channel's entries expire in the order
they were last added; expiry is swept as the other memory stores do
(:mod:`rtcore.engine.memory_expiry`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rtcore.engine.memory_expiry import INF, ExpiryQueue, check_sweep_args
from rtcore.engine.presence import DEFAULT_PRESENCE_TTL, PresenceEntry
from rtcore.protocol.types import ClientInfo, PresenceStats


if TYPE_CHECKING:
    from rtcore.engine.presence import PresenceManager


__all__ = ["MemoryPresenceManager"]

Clock = Callable[[], float]


class _Presence:
    __slots__ = ("clients", "expires", "users", "scheduled")

    def __init__(self) -> None:
        # client id -> info, ordered by expiry: every add moves the client to
        # the end, and all leases have the same length.
        self.clients: OrderedDict[str, ClientInfo] = OrderedDict()
        # client id -> expire at. Apart from ``clients`` so that a refresh with
        # the same info allocates nothing: an idle server's refreshes would
        # otherwise promote a new tuple per client into the oldest GC generation.
        self.expires: dict[str, float] = {}
        # user id -> number of that user's live clients.
        self.users: dict[str, int] = {}
        # Deadline of this channel's live heap entry (inf: none).
        self.scheduled = INF


class MemoryPresenceManager:
    """:class:`~rtcore.engine.presence.PresenceManager` in process memory.

    ``add`` and ``remove`` are O(1); ``stats`` is O(1) plus expired entries;
    ``presence`` is O(clients in the channel). Every lease has length ``ttl``,
    so a channel's entries expire in the order they were last added. That
    makes expiry O(expired) with no per-entry timers.

    Args:
        ttl: presence lease in seconds.
        clock: monotonic seconds (it must never go backwards).
        sweep_interval, sweep_batch: as in
            :class:`~rtcore.engine.memory.MemoryHistoryStore`.
    """

    def __init__(
        self,
        ttl: float = DEFAULT_PRESENCE_TTL,
        *,
        clock: Clock = time.monotonic,
        sweep_interval: float = 1.0,
        sweep_batch: int = 1000,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"presence ttl must be > 0 seconds, got {ttl}")
        check_sweep_args(sweep_interval, sweep_batch)
        self._ttl = ttl
        self._clock = clock
        self._channels: dict[str, _Presence] = {}
        self._expiry: ExpiryQueue[str] = ExpiryQueue(sweep_interval, sweep_batch)

    @property
    def ttl(self) -> float:
        """The presence lease in seconds."""
        return self._ttl

    @property
    def channel_count(self) -> int:
        """Channels currently holding presence state."""
        return len(self._channels)

    async def add(self, channel: str, client_id: str, info: ClientInfo) -> None:
        now = self._clock()
        if now >= self._expiry.next_sweep:
            self._expiry.sweep(now, self._on_due)
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Presence()
        else:
            self._purge(state, now)
        clients = state.clients
        users = state.users
        old = clients.get(client_id)
        state.expires[client_id] = now + self._ttl
        if old is None:
            clients[client_id] = info
            users[info.user] = users.get(info.user, 0) + 1
        else:
            if old is not info:
                clients[client_id] = info
            clients.move_to_end(client_id)
            if old.user != info.user:
                self._forget_user(users, old.user)
                users[info.user] = users.get(info.user, 0) + 1
        self._schedule(channel, state)

    async def add_many(self, entries: Sequence[PresenceEntry]) -> None:
        """``add`` each ``(channel, client_id, info)``: the node's batched refresh."""
        for channel, client_id, info in entries:
            await self.add(channel, client_id, info)

    async def remove(self, channel: str, client_id: str, user_id: str) -> None:
        # The stored entry knows its user; ``user_id`` matters to backends that
        # keep per-user counters without reading the entry.
        state = self._channels.get(channel)
        if state is None:
            return
        info = state.clients.pop(client_id, None)
        if info is not None:
            del state.expires[client_id]
            self._forget_user(state.users, info.user)
            if not state.clients:
                del self._channels[channel]

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        state = self._current(channel)
        if state is None:
            return {}
        return dict(state.clients)

    async def stats(self, channel: str) -> PresenceStats:
        state = self._current(channel)
        if state is None:
            return PresenceStats()
        return PresenceStats(len(state.clients), len(state.users))

    # -- expiry ---------------------------------------------------------------

    def _current(self, channel: str) -> _Presence | None:
        now = self._clock()
        if now >= self._expiry.next_sweep:
            self._expiry.sweep(now, self._on_due)
        state = self._channels.get(channel)
        if state is None:
            return None
        self._purge(state, now)
        if not state.clients:
            del self._channels[channel]
            return None
        return state

    def _purge(self, state: _Presence, now: float) -> None:
        clients = state.clients
        expires = state.expires
        while clients:
            client_id = next(iter(clients))
            if expires[client_id] > now:
                return
            info = clients.pop(client_id)
            del expires[client_id]
            self._forget_user(state.users, info.user)

    @staticmethod
    def _forget_user(users: dict[str, int], user: str) -> None:
        count = users[user] - 1
        if count:
            users[user] = count
        else:
            del users[user]

    def _schedule(self, channel: str, state: _Presence) -> None:
        deadline = state.expires[next(iter(state.clients))]
        if deadline < state.scheduled:
            state.scheduled = deadline
            self._expiry.push(deadline, channel)

    def _on_due(self, deadline: float, channel: str, now: float) -> None:
        state = self._channels.get(channel)
        if state is None or state.scheduled != deadline:
            return  # stale entry
        state.scheduled = INF
        self._purge(state, now)
        if state.clients:
            self._schedule(channel, state)
        else:
            del self._channels[channel]


if TYPE_CHECKING:
    _presence: type[PresenceManager] = MemoryPresenceManager
