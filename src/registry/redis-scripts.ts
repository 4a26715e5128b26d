/**
 * The Lua scripts of the Redis registry store. Every change is one script: it reads Redis's own
 * clock (TIME), changes the data, increments the revision and publishes the change event, all
 * atomically, so events leave in revision order and a replica can tell when it missed one.
 *
 * Data model (docs/decisions.md, "Registry on Redis"); `field` is `<service>/<id>`:
 *   KEYS[1] registry:spec    HASH  field → spec JSON (address, port, protocol, zone, version, weight, metadata)
 *   KEYS[2] registry:lease   HASH  field → lease JSON (state, ttlMs, expiresAt, lastHeartbeat, registeredAt, registeredVia)
 *   KEYS[3] registry:expiry  ZSET  field, score expiresAt (ms, Redis clock)
 *   KEYS[4] registry:count   HASH  service → number of instances
 *   KEYS[5] registry:rev     STRING revision, +1 per published event
 *   KEYS[6] registry:epoch   STRING random id of this data set (a flushed or restarted Redis gets a new one)
 * A lease whose score is at or before Redis's clock is expired whether or not anyone swept it:
 * every read and write treats it so. The hashes and the sorted set carry a key TTL that covers the
 * longest lease, so a registry whose gateways are all gone empties itself.
 */

export const REGISTRY_KEYS = [
  'registry:spec',
  'registry:lease',
  'registry:expiry',
  'registry:count',
  'registry:rev',
  'registry:epoch',
] as const;

export const REGISTRY_CHANNEL = 'registry:events';

/** Extra key TTL beyond the longest lease, so nothing vanishes early on a slow sweep. */
const KEY_GRACE_MS = 60_000;

const PRELUDE = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function epoch(candidate)
  local e = redis.call('GET', KEYS[6])
  if not e then
    redis.call('SET', KEYS[6], candidate)
    e = candidate
  end
  return e
end

local function lease_json(state, ttl, expires, beat, registered, via_json)
  return string.format('{"state":"%s","ttlMs":%d,"expiresAt":%d,"lastHeartbeat":%d,"registeredAt":%d,"registeredVia":%s}',
    state, ttl, expires, beat, registered, via_json)
end

local function publish(channel, ep, op, cause, field, spec, lease, at)
  local rev = redis.call('INCR', KEYS[5])
  local msg = '{"epoch":' .. cjson.encode(ep) .. ',"rev":' .. rev .. ',"op":"' .. op .. '","cause":"' .. cause ..
    '","at":' .. at .. ',"key":' .. cjson.encode(field) .. ',"spec":' .. (spec or 'null') .. ',"lease":' .. (lease or 'null') .. '}'
  redis.call('PUBLISH', channel, msg)
  return rev
end

local function remove(field)
  local spec = redis.call('HGET', KEYS[1], field)
  local lease = redis.call('HGET', KEYS[2], field)
  redis.call('HDEL', KEYS[1], field)
  redis.call('HDEL', KEYS[2], field)
  redis.call('ZREM', KEYS[3], field)
  local service = string.match(field, '^([^/]+)/')
  if service then
    local n = redis.call('HINCRBY', KEYS[4], service, -1)
    if n <= 0 then redis.call('HDEL', KEYS[4], service) end
  end
  return spec, lease
end

local function expire(field, channel, ep, at)
  local spec, lease = remove(field)
  return publish(channel, ep, 'del', 'expired', field, spec or 'null', lease or 'null', at)
end

-- The key TTL covers the longest lease (PTTL -1: no TTL yet), with at least half the grace left:
-- set to the lease plus the whole grace only when less is left, not at every renewal.
local function keep_keys(expires, now)
  local want = expires - now + ${KEY_GRACE_MS}
  for i = 1, 4 do
    local p = redis.call('PTTL', KEYS[i])
    if p == -1 or (p >= 0 and p < want - ${KEY_GRACE_MS / 2}) then redis.call('PEXPIRE', KEYS[i], want) end
  end
end

-- The lease of a live instance, or nil (an expired one is removed and its expiry published).
local function live_lease(field, channel, ep, at, now)
  local raw = redis.call('HGET', KEYS[2], field)
  if not raw then return nil end
  local score = tonumber(redis.call('ZSCORE', KEYS[3], field) or '0')
  if score <= now then
    expire(field, channel, ep, at)
    return nil
  end
  return raw
end

-- drain: ARGV field, viaJson, channel, epochCandidate, at. The lease is nil when there is none.
local function lease_change()
  local field, channel, at = ARGV[1], ARGV[3], ARGV[5]
  local now = now_ms()
  local ep = epoch(ARGV[4])
  return field, channel, at, now, ep, live_lease(field, channel, ep, at, now)
end
`;

/**
 * register: ARGV field, service, specJson, state, ttlMs, viaJson, maxServices, maxPerService,
 * channel, epochCandidate, at. Returns {outcome, lease, rev, epoch} or {'err', reason}.
 */
export const REGISTER_SCRIPT = `${PRELUDE}
local field, service, spec, state, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local channel, at = ARGV[9], ARGV[11]
local now = now_ms()
local ep = epoch(ARGV[10])
local old_raw = live_lease(field, channel, ep, at, now)
local registered = now
local outcome, cause
if old_raw then
  local old = cjson.decode(old_raw)
  registered = old.registeredAt
  if redis.call('HGET', KEYS[1], field) == spec and old.state == state then
    outcome, cause = 'renewed', 'renewed'
  else
    outcome = 'updated'
    if state == 'draining' and old.state ~= 'draining' then cause = 'drained' else cause = 'updated' end
  end
else
  local n = tonumber(redis.call('HGET', KEYS[4], service) or '0')
  if n == 0 and redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[7]) then return {'err', 'too_many_services'} end
  if n >= tonumber(ARGV[8]) then return {'err', 'too_many_instances'} end
  redis.call('HINCRBY', KEYS[4], service, 1)
  outcome, cause = 'created', 'registered'
end
local expires = now + ttl
local lease = lease_json(state, ttl, expires, now, registered, ARGV[6])
redis.call('HSET', KEYS[1], field, spec)
redis.call('HSET', KEYS[2], field, lease)
redis.call('ZADD', KEYS[3], expires, field)
keep_keys(expires, now)
local op = 'set'
if outcome == 'renewed' then op = 'renew' end
local rev = publish(channel, ep, op, cause, field, spec, lease, at)
return {outcome, lease, rev, ep}
`;

/**
 * renew: ARGV viaJson, channel, epochCandidate, at, fields (the fields renewed, separated by single
 * spaces: names and ids never hold one). Renews each live lease for its own TTL; returns one
 * string, `epoch now expiresAt1 expiresAt2 ...`, 0 for a field with no live lease. Only the times:
 * the replica's view has the rest (it reads the record itself when it lacks the instance). One
 * argument and one string rather than one per renewal: ioredis writes each argument and decodes
 * each reply element on its own, about 6,000 instructions a renewal in a batch of ten, where
 * splitting one string on either side is a few hundred. Several renewals share one script (the
 * store gathers them for a moment), so a fleet's heartbeats cost Redis and the gateway one round
 * trip per batch, not one each. A renewal moves lease times only, which no watcher follows: it
 * publishes nothing here. The renewing replica announces its renewals in batches
 * (RENEWALS_SCRIPT), one event at most a second after the first.
 */
export const RENEW_SCRIPT = `${PRELUDE}
local via, channel, at = ARGV[1], ARGV[2], ARGV[4]
local now = now_ms()
local ep = epoch(ARGV[3])
local out = {ep, string.format('%d', now)}
local latest = 0
for field in string.gmatch(ARGV[5], '[^ ]+') do
  local raw = live_lease(field, channel, ep, at, now)
  if raw then
    local old = cjson.decode(raw)
    local expires = now + old.ttlMs
    local lease = lease_json(old.state, old.ttlMs, expires, now, old.registeredAt, via)
    redis.call('HSET', KEYS[2], field, lease)
    redis.call('ZADD', KEYS[3], expires, field)
    if expires > latest then latest = expires end
    out[#out + 1] = string.format('%d', expires)
  else
    out[#out + 1] = '0'
  end
end
if latest > 0 then keep_keys(latest, now) end
return table.concat(out, ' ')
`;

/**
 * renewals: ARGV channel, epochCandidate, at, originJson, fields (separated by single spaces, as
 * for renew). The leases of those fields that are live now, published as one `renewals` event
 * (one revision) so other replicas' views show the new expiries; fields gone meanwhile are left
 * out. The event starts with its
 * origin, the announcing replica, which knows these leases and reads no further than the revision
 * (RENEWALS_PREFIX). Returns the revision, or 0 when none was live.
 */
export const RENEWALS_SCRIPT = `${PRELUDE}
local channel, at, origin = ARGV[1], ARGV[3], ARGV[4]
local now = now_ms()
local parts = {}
for field in string.gmatch(ARGV[5], '[^ ]+') do
  local score = tonumber(redis.call('ZSCORE', KEYS[3], field) or '0')
  local lease = redis.call('HGET', KEYS[2], field)
  if lease and score > now then parts[#parts + 1] = cjson.encode(field) .. ':' .. lease end
end
if #parts == 0 then return 0 end
local ep = epoch(ARGV[2])
local rev = redis.call('INCR', KEYS[5])
redis.call('PUBLISH', channel, '{"origin":' .. origin .. ',"epoch":' .. cjson.encode(ep) .. ',"rev":' .. rev ..
  ',"op":"renewals","cause":"renewed","at":' .. at .. ',"key":"","spec":null,"lease":null,"leases":{' ..
  table.concat(parts, ',') .. '}}')
return rev
`;

/** How a `renewals` event announced by the replica `origin` begins: then `<epoch>","rev":<rev>,`. */
export function renewalsPrefix(origin: string): string {
  return `{"origin":${JSON.stringify(origin)},"epoch":"`;
}

/** drain: ARGV field, viaJson, channel, epochCandidate, at. Returns {lease, spec, rev, epoch} or nil. */
export const DRAIN_SCRIPT = `${PRELUDE}
local field, channel, at, _, ep, raw = lease_change()
if not raw then return nil end
local spec = redis.call('HGET', KEYS[1], field)
local old = cjson.decode(raw)
if old.state == 'draining' then return {raw, spec, 0, ep} end
local lease = lease_json('draining', old.ttlMs, old.expiresAt, old.lastHeartbeat, old.registeredAt, ARGV[2])
redis.call('HSET', KEYS[2], field, lease)
local rev = publish(channel, ep, 'set', 'drained', field, spec, lease, at)
return {lease, spec, rev, ep}
`;

/** deregister: ARGV field, channel, epochCandidate, at. Returns {lease, spec, rev, epoch} or nil. */
export const DEREGISTER_SCRIPT = `${PRELUDE}
local field, channel, at = ARGV[1], ARGV[2], ARGV[4]
local now = now_ms()
local ep = epoch(ARGV[3])
if not live_lease(field, channel, ep, at, now) then return nil end
local spec, lease = remove(field)
local rev = publish(channel, ep, 'del', 'deregistered', field, spec, lease, at)
return {lease, spec, rev, ep}
`;

/**
 * sweep: ARGV channel, epochCandidate, at, limit. Returns {now, next, field1, field2, ...}: Redis's
 * clock, the earliest lease end left (0 when no lease is held; the replica sweeps again then, not
 * sooner) and the fields it expired.
 */
export const SWEEP_SCRIPT = `${PRELUDE}
local channel, at = ARGV[1], ARGV[3]
local now = now_ms()
local fields = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
if #fields > 0 then
  local ep = epoch(ARGV[2])
  for _, field in ipairs(fields) do expire(field, channel, ep, at) end
end
local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local out = {now, tonumber(first[2] or '0')}
for _, field in ipairs(fields) do out[#out + 1] = field end
return out
`;

/**
 * snapshot: ARGV epochCandidate. Returns {epoch, rev, field1, spec1, lease1, field2, ...} for every
 * live lease, read atomically with the revision it corresponds to.
 */
export const SNAPSHOT_SCRIPT = `${PRELUDE}
local now = now_ms()
local ep = epoch(ARGV[1])
local out = {ep, redis.call('GET', KEYS[5]) or '0'}
local fields = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf')
for _, field in ipairs(fields) do
  local spec = redis.call('HGET', KEYS[1], field)
  local lease = redis.call('HGET', KEYS[2], field)
  if spec and lease then
    out[#out + 1] = field
    out[#out + 1] = spec
    out[#out + 1] = lease
  end
end
return out
`;
