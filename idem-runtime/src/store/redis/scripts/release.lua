-- release: deletes the record, and its entry in the expiry index, if the token still owns
-- it (in progress or parked for review). Needs no clock.
--
-- KEYS[1] the record hash       ARGV[1] the token
-- KEYS[2] the expiry index      ARGV[2] the key (its member in the expiry index)
--
-- Returns 1 (held) or 0 (lost).
local r = redis.call('HMGET', KEYS[1], 'st', 'tk')
if r[2] ~= ARGV[1] or (r[1] ~= 'in_progress' and r[1] ~= 'needs_review') then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
