-- complete: records the outcome if the token still owns the record (in progress or parked
-- for review), or holds it if it completed it already.
--
-- KEYS[1] the record hash       ARGV[1] the token
-- KEYS[2] the saga log head     ARGV[2] the outcome's kind, 'ok' or 'err'
-- KEYS[3] the saga log steps    ARGV[3] the outcome's bytes
--                               ARGV[4] the TTL, ms
--
-- Redis expires the record, and the saga log with it, when its TTL runs out. Returns 1
-- (held) or 0 (lost).
local r = redis.call('HMGET', KEYS[1], 'st', 'tk')
if r[2] ~= ARGV[1] then return 0 end
if r[1] == 'completed' then return 1 end
if r[1] ~= 'in_progress' and r[1] ~= 'needs_review' then return 0 end
local ex = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'st', 'completed', 'oc', ARGV[2], 'rs', ARGV[3], 'ex', ex)
redis.call('PEXPIREAT', KEYS[1], ex)
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIREAT', KEYS[2], ex)
  redis.call('PEXPIREAT', KEYS[3], ex)
end
return 1
