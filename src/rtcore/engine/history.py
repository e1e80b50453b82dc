"""The ``HistoryStore`` seam: a per-channel publication stream with offset and epoch.

A channel with history owns one *stream*. It has two parts with separate
lifetimes:

* **meta**: the stream's ``epoch`` and its *top offset* (the offset of the last
  publication ever added). Meta is what recovery trusts. It lives for
  ``meta_ttl`` seconds after the last add or read.
* **data**: the newest ``size`` publications. They expire together,
  ``ttl`` seconds after the last add.

Offsets count publications: the first publication of an epoch has offset 1
and every later one the previous offset plus 1, with no gaps and no reuse.
Trimming, data expiry and :meth:`HistoryStore.remove` drop publications but
never move the top offset back. The epoch is a random string that names one
incarnation of the stream. When meta is lost (it expired, the process
restarted, the storage evicted it) the stream starts over with a *new* epoch
and offsets start at 1 again. An offset is meaningful only together with its
epoch, which is why every position is a :class:`~rtcore.protocol.types.StreamPosition`.

Recovery (PROTOCOL.md §4.3) depends on this:

* if a client's saved epoch differs from the top epoch, its position refers to
  a stream that no longer exists, so recovery must fail rather than hand out
  publications from the new stream;
* otherwise the publications after the saved offset are exactly the ones the
  client missed, provided the first one returned has offset ``saved + 1``
  (nothing trimmed or expired) and the last one has the top offset (nothing
  cut by a limit).

The store only stores. Delivering publications to subscribers, and keeping
append and delivery in the same order, is the :class:`~rtcore.engine.broker.Broker`'s
job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rtcore.protocol.types import Publication, StreamPosition


__all__ = [
    "checked_read_args",
    "DEFAULT_META_TTL",
    "ZERO_POSITION",
    "HistoryOptions",
    "HistoryResult",
    "HistoryStore",
]


#: Default lifetime of stream meta (epoch and top offset): 30 days, as in Centrifugo.
DEFAULT_META_TTL: float = 30 * 24 * 3600.0

#: The position reported for a publication that went to no history stream.
ZERO_POSITION = StreamPosition(0, "")


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    """How a channel keeps history. Build one per namespace and reuse it.

    The fields are checked once, at construction.

    Raises:
        ValueError: ``size < 1``, ``ttl <= 0`` or ``meta_ttl < ttl``.
    """

    # Maximum number of publications kept; older ones are trimmed on add.
    size: int
    # Seconds of inactivity (no add) after which the stream's publications expire.
    ttl: float
    # Seconds after the last add or read after which epoch and top offset are
    # forgotten, so the stream starts over with a new epoch. It must be at least
    # ``ttl``: meta never dies before the data it describes.
    meta_ttl: float = DEFAULT_META_TTL

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"history size must be >= 1, got {self.size}")
        if not self.ttl > 0:
            raise ValueError(f"history ttl must be > 0 seconds, got {self.ttl}")
        if not self.meta_ttl >= self.ttl:
            raise ValueError(f"history meta_ttl ({self.meta_ttl}) must be >= ttl ({self.ttl})")


@dataclass(slots=True)
class HistoryResult:
    """The answer to :meth:`HistoryStore.get`; a plain value owned by the caller."""

    # Publications matching the query, in the requested order.
    publications: list[Publication]
    # The stream's current top: offset of its last publication and its epoch.
    position: StreamPosition


class HistoryStore(Protocol):
    """A per-channel publication stream with offsets and epochs.

    The module docstring describes the stream model. Implementations must
    also respect these points:

    * **Atomic adds.** Concurrent :meth:`add` calls on one channel, from any
      number of tasks or nodes, get distinct consecutive offsets.
    * **Shared publications.** :meth:`add` keeps the given object or a copy of
      it, and :meth:`get` may return the very objects it keeps. Callers must
      treat a publication as read-only once it has been added.
    * **Reads create meta.** Reading the position of a channel with no meta
      (never used, or lost) creates meta with a new epoch and offset 0, and the
      next add continues in that epoch. A subscriber that saw ``(0, epoch)``
      before the first publication can therefore recover it. Every read
      refreshes the meta lifetime; no read refreshes the data lifetime.
    * **Time.** TTLs are measured on the implementation's clock. A TTL ``T``
      started at ``t`` never runs out before ``t + T``. A backend that rounds
      expiry times (Redis key TTLs may be whole seconds) may let it run out
      that much later, and must document by how much.
    * **Errors.** Invalid arguments raise :class:`ValueError`. Storage
      failures raise whatever the backend documents. A method that raised
      changed nothing it was meant to change.
    """

    async def add(self, channel: str, pub: Publication, opts: HistoryOptions) -> StreamPosition:
        """Append ``pub`` to the channel's stream.

        Creates meta (with a new epoch) if the channel has none. Assigns the
        next offset, stores it in ``pub.offset`` and returns the new top. Trims
        the data to the newest ``opts.size`` publications (``size`` may differ
        from the previous add's, in which case the stream is trimmed to the
        new one). Restarts the data lifetime (``opts.ttl``) and the meta
        lifetime (``opts.meta_ttl``).

        Returns:
            ``StreamPosition(offset=pub.offset, epoch=<stream epoch>)``.
        """
        ...

    async def get(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int = 0,
        reverse: bool = False,
        meta_ttl: float | None = None,
    ) -> HistoryResult:
        """Read publications and the current top of the channel's stream.

        ``result.position`` is always the current top, even when the data has
        been trimmed, expired or removed. For a channel without meta it is
        ``(0, <new epoch>)`` (see "Reads create meta").

        Which publications come back:

        * ``limit == 0``: none. This is the cheap "where is the top" query.
        * ``limit == -1``: every match. ``limit > 0``: at most ``limit``
          matches, the ones nearest the starting point (below).
        * ``since is None``: every retained publication matches. Forward order
          (``reverse=False``) starts at the oldest and goes oldest to newest;
          reverse order starts at the newest and goes newest to oldest. So
          ``limit=1, reverse=True`` is "the last publication".
        * ``since`` given, forward: the publications with offset
          ``> since.offset``, oldest first. ``since.offset`` at or past the top
          yields none. If the publications just after ``since.offset`` are no
          longer retained, the result starts at the oldest retained one, and
          the caller sees a gap at the first offset.
        * ``since`` given, ``reverse=True``: the publications with offset
          ``< since.offset``, newest first. This pages backwards from
          ``since``.
        * ``since.epoch`` must equal the stream's epoch, or be ``""`` which
          matches any epoch. On a mismatch no publications come back (offsets
          of another incarnation mean nothing here), and ``result.position``
          shows the current epoch so the caller can see why.

        Args:
            channel: the channel.
            since: the position to read from (exclusive), or ``None``.
            limit: ``0`` (position only), ``-1`` (no limit) or a positive cap.
            reverse: newest first, as described above.
            meta_ttl: the meta lifetime this read sets; ``None`` means the
                store's configured default.

        Raises:
            ValueError: ``limit < -1``; ``since.offset < 0``; ``reverse`` with
                ``since.offset == 0`` (nothing lies below offset 1).
        """
        ...

    async def position(self, channel: str, *, meta_ttl: float | None = None) -> StreamPosition:
        """The channel's current top; the same as ``(await get(channel)).position``."""
        ...

    async def remove(self, channel: str) -> None:
        """Drop the channel's publications but keep its meta.

        Epoch and top offset survive, so the next add gets ``top + 1`` and
        positions clients hold stay comparable. Removing a channel with no
        stream does nothing and creates no meta.
        """
        ...


def checked_read_args(
    since: StreamPosition | None,
    limit: int,
    reverse: bool,
    meta_ttl: float | None,
    default_meta_ttl: float,
) -> float:
    """Check the arguments of a history read as every store must; return the meta TTL to use."""
    if limit < -1:
        raise ValueError(f"limit must be -1, 0 or positive, got {limit}")
    if since is not None:
        if since.offset < 0:
            raise ValueError(f"since.offset must be >= 0, got {since.offset}")
        if reverse and since.offset == 0:
            raise ValueError("reverse history since offset 0 is empty by definition")
    if meta_ttl is None:
        return default_meta_ttl
    if not meta_ttl > 0:
        raise ValueError(f"meta_ttl must be > 0 seconds, got {meta_ttl}")
    return meta_ttl
