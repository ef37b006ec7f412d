-- heartbeat: extends the lease if the token still owns the record, in progress: the key's
-- expiry (the lease end plus the action's TTL), and the lease end the record holds, if it
-- holds one (a claim made by the script; a saga's claim, whose key never expires).
--
-- KEYS[1] the record            ARGV[1] the token
--                               ARGV[2] the lease, ms
--                               ARGV[3] the claim id ('' if this handle did not claim it)
--
-- Returns 1 (held) or 0 (lost).
local r = decode(redis.call('GET', KEYS[1]))
if not owns(r, ARGV[1], ARGV[3]) or r.st ~= 'p' then return 0 end
local lease = tonumber(ARGV[2])
if r.le > 0 then
  r.le = now + lease
  if redis.call('PTTL', KEYS[1]) == -1 then
    redis.call('SET', KEYS[1], encode(r))
  else
    redis.call('SET', KEYS[1], encode(r), 'PX', math.max(lease + r.tl, SHORTEST_MS))
  end
else
  redis.call('PEXPIRE', KEYS[1], math.max(lease + r.tl, 1))
end
return 1
