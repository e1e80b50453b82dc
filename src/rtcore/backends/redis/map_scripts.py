"""Lua scripts of the Redis map store (:mod:`rtcore.backends.redis.maps`).

Each script touches the keys of one map channel, passed in ``KEYS`` in this
order: state hash, stream, meta hash, expiry zset (and an idempotency result
key). A channel without a meta hash (new, cleared, or lost by Redis) starts a
new epoch with an empty state and stream, so clients of the old one load the
state again instead of mixing two generations.

A state value is ``"\\1" msgpack(offset) PUB`` and a stream entry (field
``d``) is ``"\\1" PUB``, ``PUB`` being the publication body of
:mod:`rtcore.backends.redis.codec` with its key and ``removed`` flag.

Every script first removes the keys whose TTL ran out (server ``TIME``), each
as a removal change: appended to the stream (when the mode has one) and
published, as if removed by a client.

``ARGV[1..6]`` are the same for every script: the epoch to start with, meta
TTL (ms, 0: none), stream size (0: no stream), stream TTL (ms), the publish
command (``publish``/``spublish``) and the broker's pub/sub channel.
"""

from __future__ import annotations

from rtcore.backends.redis.scripts import Script


__all__ = ["MAP_CLEAR", "MAP_READ_STATE", "MAP_READ_STREAM", "MAP_UPDATE"]


_PRELUDE = r"""
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function open_map()
  local epoch = redis.call('hget', KEYS[3], 'e')
  if not epoch then
    redis.call('del', KEYS[1], KEYS[2], KEYS[4])
    epoch = ARGV[1]
    redis.call('hset', KEYS[3], 'e', epoch, 's', 0)
  end
  if tonumber(ARGV[2]) > 0 then redis.call('pexpire', KEYS[3], ARGV[2]) end
  return epoch, tonumber(redis.call('hget', KEYS[3], 's') or 0)
end

-- The PUB body of a stored state value ("\1" msgpack(offset) PUB), or nil.
local function body_of(value)
  if not value then return nil end
  local b = string.byte(value, 2)
  local n = 1
  if b == 204 then n = 2 elseif b == 205 then n = 3 elseif b == 206 then n = 5
  elseif b == 207 then n = 9 end
  return string.sub(value, 2 + n)
end

-- Append a change (its PUB body) to the stream and publish it, with the key's
-- previous value (the base of a delta) when given; returns its offset.
local function emit(epoch, body, prev)
  local offset = 0
  if tonumber(ARGV[3]) > 0 then
    offset = redis.call('hincrby', KEYS[3], 's', 1)
    redis.call('xadd', KEYS[2], 'MAXLEN', ARGV[3], offset, 'd', '\1' .. body)
    redis.call('pexpire', KEYS[2], ARGV[4])
  end
  if ARGV[5] ~= '' then
    -- The Redis broker's message format 1: [0, offset, epoch, publication, nil].
    redis.call(ARGV[5], ARGV[6], '\1\149\0' .. cmsgpack.pack(offset) .. cmsgpack.pack(epoch)
      .. body .. (prev or '\192'))
  end
  return offset
end

-- Remove the expired keys, each as a removal change (at most 1000 a call: the
-- next call, or the node's sweep a second later, goes on).
local function purge(epoch)
  local due = redis.call('zrangebyscore', KEYS[4], '-inf', now, 'LIMIT', 0, 1000)
  for _, key in ipairs(due) do
    redis.call('hdel', KEYS[1], key)
    -- PUB of a removal: [data "", info nil, tags nil, time, channel "", delta false, key, true]
    emit(epoch, '\152\196\0\192\192' .. cmsgpack.pack(now) .. '\160\194' .. cmsgpack.pack(key)
      .. '\195')
  end
  if #due > 0 then redis.call('zrem', KEYS[4], unpack(due)) end
end
"""


# Set or remove a key, append the change, publish it.
#
# KEYS[5] idempotency result (optional)
# ARGV[7] key   ARGV[8] PUB   ARGV[9] "1": remove   ARGV[10] key ttl (ms, 0: none)
# ARGV[11] key mode ("", "if_new", "if_exists")   ARGV[12] "1": refresh the TTL when suppressed
# ARGV[13] idempotency result ttl (ms), with KEYS[5]
#
# Returns {offset, epoch, suppress reason ("" when applied)}.
MAP_UPDATE = Script(
    "map_update",
    _PRELUDE
    + r"""
if KEYS[5] then
  local cached = redis.call('get', KEYS[5])
  if cached then
    local offset, epoch = string.match(cached, '^(%d+):(.*)$')
    return {tonumber(offset), epoch, 'idempotency'}
  end
end
local epoch = open_map()
purge(epoch)
local top = tonumber(redis.call('hget', KEYS[3], 's') or 0)
local exists = redis.call('hexists', KEYS[1], ARGV[7]) == 1
local ttl = tonumber(ARGV[10])
if (ARGV[9] == '1' or ARGV[11] == 'if_exists') and not exists then
  return {top, epoch, 'key_not_found'}
end
if ARGV[11] == 'if_new' and exists then
  if ARGV[12] == '1' and ttl > 0 then redis.call('zadd', KEYS[4], now + ttl, ARGV[7]) end
  return {top, epoch, 'key_exists'}
end
local prev = nil
if ARGV[9] ~= '1' then prev = body_of(redis.call('hget', KEYS[1], ARGV[7])) end
local offset = emit(epoch, ARGV[8], prev)
if ARGV[9] == '1' then
  redis.call('hdel', KEYS[1], ARGV[7])
  redis.call('zrem', KEYS[4], ARGV[7])
else
  redis.call('hset', KEYS[1], ARGV[7], '\1' .. cmsgpack.pack(offset) .. ARGV[8])
  if ttl > 0 then redis.call('zadd', KEYS[4], now + ttl, ARGV[7]) end
end
if KEYS[5] then
  redis.call('set', KEYS[5], offset .. ':' .. epoch, 'PX', ARGV[13], 'NX')
end
return {offset, epoch, ''}
""",
)


# A page of the state.
#
# ARGV[7] HSCAN cursor ("0": first page)   ARGV[8] limit: 0 (position only), -1 (all)
# or N (HSCAN COUNT)   ARGV[9] one key, or ""   ARGV[10] the epoch expected ("" for any)
#
# Returns {top, epoch, next cursor ("" at the end), flat key/value list}.
MAP_READ_STATE = Script(
    "map_read_state",
    _PRELUDE
    + r"""
local epoch = open_map()
purge(epoch)
local top = tonumber(redis.call('hget', KEYS[3], 's') or 0)
if ARGV[10] ~= '' and ARGV[10] ~= epoch then return {top, epoch, '', {}} end
if ARGV[9] ~= '' then
  local v = redis.call('hget', KEYS[1], ARGV[9])
  if v then return {top, epoch, '', {ARGV[9], v}} end
  return {top, epoch, '', {}}
end
local limit = tonumber(ARGV[8])
if limit == 0 then return {top, epoch, '', {}} end
if limit < 0 then return {top, epoch, '', redis.call('hgetall', KEYS[1])} end
local r = redis.call('hscan', KEYS[1], ARGV[7], 'COUNT', limit)
local cursor = r[1]
if cursor == '0' then cursor = '' end
return {top, epoch, cursor, r[2]}
""",
)


# Changes from the stream.
#
# ARGV[7] limit: 0 (top only), -1 or N   ARGV[8] "1": newest first
# ARGV[9] first entry id ("-" / "+" for the end)   ARGV[10] the epoch expected ("" for any)
#
# Returns {top, epoch} or {top, epoch, entries}.
MAP_READ_STREAM = Script(
    "map_read_stream",
    _PRELUDE
    + r"""
local epoch = open_map()
purge(epoch)
local top = tonumber(redis.call('hget', KEYS[3], 's') or 0)
local limit = tonumber(ARGV[7])
if limit == 0 or (ARGV[10] ~= '' and ARGV[10] ~= epoch) then return {top, epoch} end
local entries
if ARGV[8] == '1' then
  if limit > 0 then
    entries = redis.call('xrevrange', KEYS[2], ARGV[9], '-', 'COUNT', limit)
  else
    entries = redis.call('xrevrange', KEYS[2], ARGV[9], '-')
  end
else
  if limit > 0 then
    entries = redis.call('xrange', KEYS[2], ARGV[9], '+', 'COUNT', limit)
  else
    entries = redis.call('xrange', KEYS[2], ARGV[9], '+')
  end
end
return {top, epoch, entries}
""",
)


# Drop a channel's state, stream, meta and expiries.
MAP_CLEAR = Script(
    "map_clear",
    r"""
redis.call('del', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
""",
)
