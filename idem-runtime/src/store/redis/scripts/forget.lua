-- forget: lets go of a recorded result before its TTL runs out, if it was recorded under the
-- token (the one an operator read) and the key has no saga log, leaving a tombstone of its
-- token for a moment (see `tombstone` in record.lua).
--
-- KEYS[1] the record            ARGV[1] the token
-- KEYS[2] the saga log head
--
-- Returns 1 (forgotten) or 0 (anything else, or changed meanwhile).
local r = decode(redis.call('GET', KEYS[1]))
if not owns(r, ARGV[1], '') or r.st ~= 'c' then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
tombstone(KEYS[1], r)
return 1
