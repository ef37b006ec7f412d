-- release: lets go of the record if the token still owns it (in progress or parked for
-- review), leaving a tombstone of its token for a moment (see `tombstone` in record.lua).
--
-- KEYS[1] the record            ARGV[1] the token
-- KEYS[2] the saga's closed log ARGV[2] the claim id (read from the record for an
-- KEYS[3] the owner's list of     operator's write: KEYS[3] is named by it)
--         step writes
--
-- The owner's list of step writes, if any, is closed first (`close_log`).
--
-- Returns 1 (held) or 0 (lost).
local r = decode(redis.call('GET', KEYS[1]))
if not owns(r, ARGV[1], ARGV[2]) or (r.st ~= 'p' and r.st ~= 'r') then return 0 end
if r.st == 'p' then close_log(KEYS[2], KEYS[3]) end
tombstone(KEYS[1], r)
return 1
