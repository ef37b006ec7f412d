-- heartbeat: extends the lease if the token still owns the record, in progress, and with it
-- the moment the claim expires natively: the lease end plus the TTL the claim recorded,
-- unless the key has a saga log or the claim recorded no TTL (an older idem made it).
--
-- KEYS[1] the record hash       ARGV[1] the token
-- KEYS[2] the saga log head     ARGV[2] the lease, ms
--
-- Returns 1 (held) or 0 (lost).
local r = redis.call('HMGET', KEYS[1], 'st', 'tk', 'tl')
if r[2] ~= ARGV[1] or r[1] ~= 'in_progress' then return 0 end
local ex = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'ex', ex)
if r[3] and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('PEXPIREAT', KEYS[1], ex + tonumber(r[3]))
end
return 1
