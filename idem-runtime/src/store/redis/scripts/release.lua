-- release: deletes the record if the token still owns it (in progress or parked for
-- review). Needs no clock.
--
-- KEYS[1] the record hash       ARGV[1] the token
--
-- Returns 1 (held) or 0 (lost).
local r = redis.call('HMGET', KEYS[1], 'st', 'tk')
if r[2] ~= ARGV[1] or (r[1] ~= 'in_progress' and r[1] ~= 'needs_review') then return 0 end
redis.call('DEL', KEYS[1])
return 1
