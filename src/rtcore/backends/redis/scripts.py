"""Lua scripts of the Redis backends (see docs/redis.md for the key layout).

Every script touches the keys of exactly one channel, which it receives in
``KEYS`` (they share a hash tag under Redis Cluster), so each one runs on the
channel's shard or slot and is atomic there. Time-based values come from the
server's ``TIME``, so nodes with skewed clocks agree on presence expiry. Any
script that writes after calling ``TIME`` first switches to effects
replication, which Redis 5 and 6 need (Redis 7 always does it).

Binary formats are described in :mod:`rtcore.backends.redis.codec`: ``ARGV`` carries
the msgpack body of a publication (without the format byte). The scripts add
the format byte ``\\1`` when they store an entry, and they splice the body,
the new offset and the epoch into a pub/sub message without decoding
anything.
"""

from __future__ import annotations

import hashlib


__all__ = [
    "HISTORY_READ",
    "PRESENCE_ADD",
    "PRESENCE_ADD_MANY",
    "PRESENCE_GET",
    "PRESENCE_REMOVE",
    "PRESENCE_STATS",
    "PUBLISH_HISTORY",
    "PUBLISH_IDEMPOTENT",
    "Script",
]


class Script:
    """A script's source and its SHA1, for ``EVALSHA`` with an ``EVAL`` fallback."""

    __slots__ = ("name", "source", "sha")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:12]})"


# Shared by the history scripts: the stream's epoch, started anew when the
# stream has none or, with lineage on, when it was last written under another
# replication id than the current master's. Replication is asynchronous: a
# promoted replica may lack the last writes the old master acknowledged, and
# would then hand their offsets out again under the same epoch. A new epoch
# makes clients see "not recovered" instead (docs/redis.md, "Sentinel").
#
# KEYS[1] stream, KEYS[2] meta hash (e epoch, s top offset, r replication id)
_LINEAGE_PRELUDE = r"""
local function current_lineage(wanted)
  if wanted ~= '1' then return '' end
  -- INFO is not deterministic: replicate effects (always so on Redis 7).
  if redis.replicate_commands then redis.replicate_commands() end
  return string.match(redis.call('info', 'replication'), 'master_replid:(%w+)') or ''
end

local function open_stream(lineage, new_epoch)
  local meta = redis.call('hmget', KEYS[2], 'e', 'r')
  local epoch = meta[1]
  if epoch and (lineage == '' or meta[2] == lineage) then return epoch end
  -- A new incarnation: data of a lost one must not be served under it.
  redis.call('del', KEYS[2], KEYS[1])
  redis.call('hset', KEYS[2], 'e', new_epoch)
  if lineage ~= '' then redis.call('hset', KEYS[2], 'r', lineage) end
  return new_epoch
end
"""


# Append a publication to the channel's stream and, when asked, publish it.
#
# KEYS[1] stream, KEYS[2] meta hash, KEYS[3] idempotency result (optional)
# ARGV[1] publication body (msgpack, no format byte)
# ARGV[2] history size          ARGV[3] data ttl (ms)
# ARGV[4] meta ttl (ms)         ARGV[5] epoch to use if the stream has none
# ARGV[6] "publish", "spublish" or "" (store only)
# ARGV[7] pub/sub channel       ARGV[8] "1": send the previous publication too
# ARGV[9] "1": bind the stream to the master's replication id (Sentinel)
# ARGV[10] idempotency result ttl (ms), with KEYS[3]
#
# Returns {offset, epoch, ""} for a new publication, or {0, "", cached} with
# the cached "<offset>:<epoch>" of the first publish under the same key.
PUBLISH_HISTORY = Script(
    "publish_history",
    _LINEAGE_PRELUDE
    + r"""
local lineage = current_lineage(ARGV[9])
if KEYS[3] then
  local cached = redis.call('get', KEYS[3])
  if cached then return {0, '', cached} end
end
local epoch = open_stream(lineage, ARGV[5])
local offset = redis.call('hincrby', KEYS[2], 's', 1)
redis.call('pexpire', KEYS[2], ARGV[4])
local prev = '\192'
if ARGV[8] == '1' then
  local last = redis.call('xrevrange', KEYS[1], '+', '-', 'COUNT', 1)
  if last[1] then
    local d = last[1][2][2]
    -- Only a body in the current format can be spliced into the message.
    if string.byte(d, 1) == 1 then prev = string.sub(d, 2) end
  end
end
redis.call('xadd', KEYS[1], 'MAXLEN', ARGV[2], offset, 'd', '\1' .. ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[3])
if ARGV[6] ~= '' then
  -- Message format 1: [0, offset, epoch, publication, previous or nil].
  redis.call(ARGV[6], ARGV[7], '\1\149\0' .. cmsgpack.pack(offset) .. cmsgpack.pack(epoch)
    .. ARGV[1] .. prev)
end
if KEYS[3] then
  redis.call('set', KEYS[3], offset .. ':' .. epoch, 'PX', ARGV[10], 'NX')
end
return {offset, epoch, ''}
""",
)


# Publish a message without history under an idempotency key.
#
# KEYS[1] idempotency result
# ARGV[1] message   ARGV[2] "publish", "spublish" or "" (record the key only)
# ARGV[3] pub/sub channel
# ARGV[4] idempotency result ttl (ms)
#
# Returns nil when it published, or the cached "<offset>:<epoch>".
PUBLISH_IDEMPOTENT = Script(
    "publish_idempotent",
    r"""
local cached = redis.call('get', KEYS[1])
if cached then return cached end
if ARGV[2] ~= '' then redis.call(ARGV[2], ARGV[3], ARGV[1]) end
redis.call('set', KEYS[1], '0:', 'PX', ARGV[4], 'NX')
return false
""",
)


# Read the stream's top and, optionally, publications.
#
# KEYS[1] stream, KEYS[2] meta hash
# ARGV[1] epoch to use if the stream has none   ARGV[2] meta ttl (ms)
# ARGV[3] limit: 0 (top only), -1 (all) or N    ARGV[4] "1": newest first
# ARGV[5] first entry id to read ("-" / "+" for the end of the stream)
# ARGV[6] epoch the reader expects ("" for any)
# ARGV[7] "1": bind the stream to the master's replication id (Sentinel)
#
# Returns {top, epoch} or {top, epoch, entries}.
HISTORY_READ = Script(
    "history_read",
    _LINEAGE_PRELUDE
    + r"""
local lineage = current_lineage(ARGV[7])
local epoch = open_stream(lineage, ARGV[1])
local top = redis.call('hget', KEYS[2], 's') or 0
redis.call('pexpire', KEYS[2], ARGV[2])
local limit = tonumber(ARGV[3])
if limit == 0 or (ARGV[6] ~= '' and ARGV[6] ~= epoch) then
  return {top, epoch}
end
local entries
if ARGV[4] == '1' then
  if limit > 0 then
    entries = redis.call('xrevrange', KEYS[1], ARGV[5], '-', 'COUNT', limit)
  else
    entries = redis.call('xrevrange', KEYS[1], ARGV[5], '-')
  end
else
  if limit > 0 then
    entries = redis.call('xrange', KEYS[1], ARGV[5], '+', 'COUNT', limit)
  else
    entries = redis.call('xrange', KEYS[1], ARGV[5], '+')
  end
end
return {top, epoch, entries}
""",
)


# Shared by the presence scripts: server time, the user of a stored entry,
# and the removal of expired entries.
#
# KEYS[1] data hash (client -> entry), KEYS[2] expiry zset (client -> expire
# at, unix ms), KEYS[3] users hash (user -> number of live clients).
#
# An entry is "\1" followed by the msgpack array [user, client, conn_info,
# chan_info]; user_of() reads the first element (a msgpack str) without a
# msgpack decoder, since Redis' cmsgpack cannot decode bin values.
_PRESENCE_PRELUDE = r"""
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function user_of(v)
  local b = string.byte(v, 3)
  if b >= 160 and b <= 191 then
    return string.sub(v, 4, 3 + b - 160)
  elseif b == 217 then
    local n = string.byte(v, 4)
    return string.sub(v, 5, 4 + n)
  elseif b == 218 then
    local n = string.byte(v, 4) * 256 + string.byte(v, 5)
    return string.sub(v, 6, 5 + n)
  end
  local n = ((string.byte(v, 4) * 256 + string.byte(v, 5)) * 256
    + string.byte(v, 6)) * 256 + string.byte(v, 7)
  return string.sub(v, 8, 7 + n)
end

-- A channel's keys: data (client -> entry), expire (client -> lease end),
-- users (user -> live clients). KEYS[1..3] for the one-channel scripts.
local function forget_user(users, user)
  if redis.call('hincrby', users, user, -1) <= 0 then
    redis.call('hdel', users, user)
  end
end

local function purge(data, expire, users)
  local expired = redis.call('zrangebyscore', expire, '-inf', now)
  if #expired == 0 then return end
  for _, client in ipairs(expired) do
    local v = redis.call('hget', data, client)
    if v then
      forget_user(users, user_of(v))
      redis.call('hdel', data, client)
    end
  end
  redis.call('zremrangebyscore', expire, '-inf', now)
end

-- An entry and its lease, without the keys' own expiry (see add).
local function put(data, expire, users, client, entry, lease, user)
  local old = redis.call('hget', data, client)
  if not old then
    redis.call('hincrby', users, user, 1)
    redis.call('hset', data, client, entry)
  elseif old ~= entry then
    local old_user = user_of(old)
    if old_user ~= user then
      forget_user(users, old_user)
      redis.call('hincrby', users, user, 1)
    end
    redis.call('hset', data, client, entry)
  end
  redis.call('zadd', expire, now + tonumber(lease), client)
end

local function expire_keys(data, expire, users, lease)
  redis.call('pexpire', data, lease)
  redis.call('pexpire', expire, lease)
  redis.call('pexpire', users, lease)
end

local function add(data, expire, users, client, entry, lease, user)
  put(data, expire, users, client, entry, lease, user)
  expire_keys(data, expire, users, lease)
end
"""


# ARGV[1] client id, ARGV[2] entry, ARGV[3] lease (ms), ARGV[4] user
PRESENCE_ADD = Script(
    "presence_add",
    _PRESENCE_PRELUDE
    + r"""
purge(KEYS[1], KEYS[2], KEYS[3])
add(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
""",
)


# Many adds in one call (a node's batched refresh, on one shard): KEYS are
# three per entry (data, expire, users of its channel), ARGV[1] the lease
# (ms), then per entry: client id, entry, user. Per channel, not per entry:
# the purge of expired entries and the keys' expiry; an unchanged entry is
# not rewritten (its lease is). Returns the number of entries added.
PRESENCE_ADD_MANY = Script(
    "presence_add_many",
    _PRESENCE_PRELUDE
    + r"""
local lease = ARGV[1]
local channels = {}
local n = #KEYS / 3
for i = 0, n - 1 do
  local data, expire, users = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  if not channels[data] then
    purge(data, expire, users)
    channels[data] = {expire, users}
  end
  put(data, expire, users, ARGV[3 * i + 2], ARGV[3 * i + 3], lease, ARGV[3 * i + 4])
end
for data, keys in pairs(channels) do
  expire_keys(data, keys[1], keys[2], lease)
end
return n
""",
)


# ARGV[1] client id
PRESENCE_REMOVE = Script(
    "presence_remove",
    _PRESENCE_PRELUDE
    + r"""
local old = redis.call('hget', KEYS[1], ARGV[1])
if old then
  redis.call('hdel', KEYS[1], ARGV[1])
  redis.call('zrem', KEYS[2], ARGV[1])
  forget_user(KEYS[3], user_of(old))
end
return 1
""",
)


# Returns the flat HGETALL of the live entries.
PRESENCE_GET = Script(
    "presence_get",
    _PRESENCE_PRELUDE
    + r"""
purge(KEYS[1], KEYS[2], KEYS[3])
return redis.call('hgetall', KEYS[1])
""",
)


# Returns {clients, users}.
PRESENCE_STATS = Script(
    "presence_stats",
    _PRESENCE_PRELUDE
    + r"""
purge(KEYS[1], KEYS[2], KEYS[3])
return {redis.call('hlen', KEYS[1]), redis.call('hlen', KEYS[3])}
""",
)
