"""Channel-to-shard routing for backends spread over several servers.

rtcore picks a channel's shard the way Centrifuge does, so a deployment can
mix both and so the mapping is stable and documented:

1. hash the channel name's UTF-8 bytes with 64-bit **FNV-1a**;
2. feed that hash to **jump consistent hash** (Lamping and Veach, 2014,
   "A Fast, Minimal Memory, Consistent Hash Algorithm") with the number of
   shards as the bucket count.

Jump hash needs no ring and no memory, spreads channels evenly, and moves only
the minimum share of channels when a shard is *appended*: going from ``n`` to
``n + 1`` shards moves about ``1 / (n + 1)`` of the channels, all of them to
the new shard. Removing or reordering shards other than the last one remaps
much more, so the shard list must be treated as append-only. (A channel that
moves to another shard starts a new history stream there, with a new epoch,
so clients notice through the normal recovery path rather than reading stale
data.)
"""

from __future__ import annotations

from functools import lru_cache


__all__ = ["fnv1a_64", "jump_hash", "shard_index"]


_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF
_JUMP_MULTIPLIER = 2862933555777941757


def fnv1a_64(data: bytes) -> int:
    """The 64-bit FNV-1a hash of ``data`` (as Go's ``hash/fnv.New64a``)."""
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & _MASK64
    return h


def jump_hash(key: int, num_buckets: int) -> int:
    """Jump consistent hash of the unsigned 64-bit ``key`` into ``[0, num_buckets)``.

    A transcription of the reference algorithm (and of Go's
    ``github.com/dgryski/go-jump``), with 64-bit wrap-around arithmetic.

    Raises:
        ValueError: ``num_buckets < 1``.
    """
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    b = -1
    j = 0
    key &= _MASK64
    while j < num_buckets:
        b = j
        key = (key * _JUMP_MULTIPLIER + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


@lru_cache(maxsize=65536)
def _cached_index(channel: str, num_shards: int) -> int:
    return jump_hash(fnv1a_64(channel.encode()), num_shards)


def shard_index(channel: str, num_shards: int) -> int:
    """The shard (``0 <= i < num_shards``) that owns ``channel``.

    Results are memoized (the most recent 65536 channels), since the node asks
    for the same channels over and over.
    """
    if num_shards == 1:
        return 0
    return _cached_index(channel, num_shards)
