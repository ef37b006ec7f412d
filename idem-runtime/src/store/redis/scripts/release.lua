-- release: lets go of the record if the token still owns it (in progress or parked for
-- review), leaving a tombstone of its token for a moment (see `tombstone` in record.lua).
--
-- KEYS[1] the record            ARGV[1] the token
--
-- Returns 1 (held) or 0 (lost).
local r = decode(redis.call('GET', KEYS[1]))
if not r or r.tk ~= ARGV[1] or (r.st ~= 'p' and r.st ~= 'r') then return 0 end
tombstone(KEYS[1], r)
return 1
