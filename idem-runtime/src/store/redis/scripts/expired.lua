-- expired: the one rule of what the purge counts, the members of the expiry index due by
-- the server's clock (results whose TTL ran out, `ex <= now` as a claim sees them; dead
-- claims whose lease end plus TTL passed), which Redis deleted at that moment.
--
-- KEYS[1] the expiry index      ARGV[1] 'count' (say how many), or how many of them at most
--                                       to remove, the oldest first
--
-- Returns how many.
local due = redis.call('ZCOUNT', KEYS[1], '-inf', now)
if ARGV[1] == 'count' then return due end
local n = math.min(due, tonumber(ARGV[1]))
if n > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1) end
return n
