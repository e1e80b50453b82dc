"""Lua scripts of the Redis map store (:mod:`rtcore.backends.redis.maps`).

Each script touches the keys of one map channel, passed in ``KEYS`` in this
order: state hash, stream, meta hash (and an idempotency result key). A
channel without a meta hash (new, cleared, or lost by Redis) starts a new
epoch with an empty state and stream, so clients of the old one load the
state again instead of mixing two generations.

A state value is ``"\\1" msgpack(offset) PUB`` and a stream entry (field
``d``) is ``"\\1" PUB``, ``PUB`` being the publication body of
:mod:`rtcore.backends.redis.codec` with its key and ``removed`` flag.
"""

from __future__ import annotations

from rtcore.backends.redis.scripts import Script


__all__ = ["MAP_CLEAR", "MAP_READ_STATE", "MAP_READ_STREAM", "MAP_UPDATE"]


# KEYS[1] state, KEYS[2] stream, KEYS[3] meta (e epoch, s top offset).
# ARGV[1] the epoch to start with; ARGV[2] meta ttl (ms, 0: none)
_OPEN = r"""
local function open_map(new_epoch, meta_ttl)
  local epoch = redis.call('hget', KEYS[3], 'e')
  if not epoch then
    redis.call('del', KEYS[1], KEYS[2])
    epoch = new_epoch
    redis.call('hset', KEYS[3], 'e', epoch, 's', 0)
  end
  if tonumber(meta_ttl) > 0 then redis.call('pexpire', KEYS[3], meta_ttl) end
  return epoch, tonumber(redis.call('hget', KEYS[3], 's') or 0)
end
"""


# Set or remove a key, append the change, publish it.
#
# KEYS[4] idempotency result (optional)
# ARGV[1] new epoch   ARGV[2] meta ttl (ms)   ARGV[3] key   ARGV[4] PUB
# ARGV[5] "1": remove  ARGV[6] stream size    ARGV[7] stream ttl (ms)
# ARGV[8] "publish", "spublish" or ""          ARGV[9] pub/sub channel
# ARGV[10] idempotency result ttl (ms), with KEYS[4]
#
# Returns {offset, epoch, suppress reason ("" when applied)}.
MAP_UPDATE = Script(
    "map_update",
    _OPEN
    + r"""
if KEYS[4] then
  local cached = redis.call('get', KEYS[4])
  if cached then
    local offset, epoch = string.match(cached, '^(%d+):(.*)$')
    return {tonumber(offset), epoch, 'idempotency'}
  end
end
local epoch, top = open_map(ARGV[1], ARGV[2])
if ARGV[5] == '1' and redis.call('hexists', KEYS[1], ARGV[3]) == 0 then
  return {top, epoch, 'key_not_found'}
end
local offset = redis.call('hincrby', KEYS[3], 's', 1)
if ARGV[5] == '1' then
  redis.call('hdel', KEYS[1], ARGV[3])
else
  redis.call('hset', KEYS[1], ARGV[3], '\1' .. cmsgpack.pack(offset) .. ARGV[4])
end
redis.call('xadd', KEYS[2], 'MAXLEN', ARGV[6], offset, 'd', '\1' .. ARGV[4])
redis.call('pexpire', KEYS[2], ARGV[7])
if ARGV[8] ~= '' then
  -- The Redis broker's message format 1: [0, offset, epoch, publication, nil].
  redis.call(ARGV[8], ARGV[9], '\1\149\0' .. cmsgpack.pack(offset) .. cmsgpack.pack(epoch)
    .. ARGV[4] .. '\192')
end
if KEYS[4] then
  redis.call('set', KEYS[4], offset .. ':' .. epoch, 'PX', ARGV[10], 'NX')
end
return {offset, epoch, ''}
""",
)


# A page of the state.
#
# ARGV[1] new epoch   ARGV[2] meta ttl (ms)   ARGV[3] HSCAN cursor ("0": first page)
# ARGV[4] limit: 0 (position only), -1 (all) or N (HSCAN COUNT)   ARGV[5] one key, or ""
# ARGV[6] the epoch the reader expects ("" for any)
#
# Returns {top, epoch, next cursor ("" at the end), flat key/value list}.
MAP_READ_STATE = Script(
    "map_read_state",
    _OPEN
    + r"""
local epoch, top = open_map(ARGV[1], ARGV[2])
if ARGV[6] ~= '' and ARGV[6] ~= epoch then return {top, epoch, '', {}} end
if ARGV[5] ~= '' then
  local v = redis.call('hget', KEYS[1], ARGV[5])
  if v then return {top, epoch, '', {ARGV[5], v}} end
  return {top, epoch, '', {}}
end
local limit = tonumber(ARGV[4])
if limit == 0 then return {top, epoch, '', {}} end
if limit < 0 then return {top, epoch, '', redis.call('hgetall', KEYS[1])} end
local r = redis.call('hscan', KEYS[1], ARGV[3], 'COUNT', limit)
local cursor = r[1]
if cursor == '0' then cursor = '' end
return {top, epoch, cursor, r[2]}
""",
)


# Changes from the stream.
#
# ARGV[1] new epoch   ARGV[2] meta ttl (ms)   ARGV[3] limit: 0 (top only), -1 or N
# ARGV[4] "1": newest first   ARGV[5] first entry id ("-" / "+" for the end)
# ARGV[6] the epoch the reader expects ("" for any)
#
# Returns {top, epoch} or {top, epoch, entries}.
MAP_READ_STREAM = Script(
    "map_read_stream",
    _OPEN
    + r"""
local epoch, top = open_map(ARGV[1], ARGV[2])
local limit = tonumber(ARGV[3])
if limit == 0 or (ARGV[6] ~= '' and ARGV[6] ~= epoch) then return {top, epoch} end
local entries
if ARGV[4] == '1' then
  if limit > 0 then
    entries = redis.call('xrevrange', KEYS[2], ARGV[5], '-', 'COUNT', limit)
  else
    entries = redis.call('xrevrange', KEYS[2], ARGV[5], '-')
  end
else
  if limit > 0 then
    entries = redis.call('xrange', KEYS[2], ARGV[5], '+', 'COUNT', limit)
  else
    entries = redis.call('xrange', KEYS[2], ARGV[5], '+')
  end
end
return {top, epoch, entries}
""",
)


# Drop a channel's state, stream and meta.
MAP_CLEAR = Script(
    "map_clear",
    r"""
redis.call('del', KEYS[1], KEYS[2], KEYS[3])
return 1
""",
)
