-- forget: deletes a recorded result before its TTL runs out, if it was recorded under the
-- token (the one an operator read) and the key has no saga log. Needs no clock.
--
-- KEYS[1] the record hash       ARGV[1] the token
-- KEYS[2] the saga log head
--
-- Returns 1 (deleted) or 0 (anything else, or changed meanwhile).
local r = redis.call('HMGET', KEYS[1], 'st', 'tk')
if r[1] ~= 'completed' or r[2] ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('DEL', KEYS[1])
return 1
