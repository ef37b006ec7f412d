-- claim: the claim rule of `store::rules`, in the server.
--
-- KEYS[1] the record hash       ARGV[1] the fingerprint (32 bytes)
-- KEYS[2] the token counter     ARGV[2] the action
-- KEYS[3] the saga log head     ARGV[3] the lease, ms
--                               ARGV[4] 'takeover' or 'review' (a stale claim's fate)
--                               ARGV[5] the action's TTL, ms
--
-- A claim expires (natively) at the end of its lease plus the action's TTL, unless the key
-- has a saga log. Returns {'acquired', token, resumed}, {'completed', fingerprint, kind,
-- bytes, ms left of its TTL or -1}, {'in_progress', fingerprint, token, lease_remaining_ms}
-- or {'review', fingerprint}.
local lease, ttl = tonumber(ARGV[3]), tonumber(ARGV[5])
local r = redis.call('HMGET', KEYS[1], 'st', 'tk', 'fp', 'oc', 'rs', 'ex')
local st, ex = r[1], tonumber(r[6])
local expired = ex ~= nil and ex <= now
local function acquire(resumed)
  local token = redis.call('INCR', KEYS[2])
  if resumed then
    redis.call('HSET', KEYS[1], 'tk', token, 'ex', now + lease, 'tl', ttl)
  else
    if st then redis.call('DEL', KEYS[1]) end
    redis.call('HSET', KEYS[1], 'st', 'in_progress', 'tk', token, 'fp', ARGV[1],
      'ac', ARGV[2], 'ca', now, 'ex', now + lease, 'tl', ttl)
  end
  if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('PERSIST', KEYS[1])
  else
    redis.call('PEXPIREAT', KEYS[1], now + lease + ttl)
  end
  return {'acquired', token, resumed and 1 or 0}
end
if not st then return acquire(false) end
if st == 'completed' then
  if expired then return acquire(false) end
  return {'completed', r[3], r[4], r[5], ex and ex - now or -1}
end
if st == 'needs_review' then return {'review', r[3]} end
if not expired then return {'in_progress', r[3], tonumber(r[2]), ex - now} end
if r[3] ~= ARGV[1] then return {'in_progress', r[3], tonumber(r[2]), 0} end
if ARGV[4] == 'takeover' then return acquire(true) end
redis.call('HSET', KEYS[1], 'st', 'needs_review')
redis.call('HDEL', KEYS[1], 'ex')
redis.call('PERSIST', KEYS[1])
return {'review', r[3]}
