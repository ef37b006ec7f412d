-- retoken: gives a claim made by the native `SET … NX` a new token drawn from the counter,
-- when its answer came back later than a block of tokens may be used (see `claim.rs`), if
-- the record still holds the old token and is in progress. The body has not run yet, so no
-- one downstream has seen the old token, and the old token has no list of step writes to
-- close (see `close_log` in record.lua): the claim's answer has not reached its owner.
--
-- KEYS[1] the record            ARGV[1] the old token
--                               ARGV[2] the new token
--                               ARGV[3] the claim id
--
-- Returns 1 (held, now under the new token) or 0 (lost).
local r = decode(redis.call('GET', KEYS[1]))
if not owns(r, ARGV[1], ARGV[3]) or r.st ~= 'p' then return 0 end
r.tk = ARGV[2]
redis.call('SET', KEYS[1], encode(r), 'KEEPTTL')
return 1
