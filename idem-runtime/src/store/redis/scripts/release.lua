-- release: lets go of the record if the token still owns it (in progress or parked for
-- review), leaving a tombstone of its token for a moment (see `tombstone` in record.lua).
--
-- KEYS[1] the record            ARGV[1] the token
--                               ARGV[2] the claim id ('' for an operator's write)
--
-- Returns 1 (held) or 0 (lost).
local r = decode(redis.call('GET', KEYS[1]))
if not owns(r, ARGV[1], ARGV[2]) or (r.st ~= 'p' and r.st ~= 'r') then return 0 end
tombstone(KEYS[1], r)
return 1
