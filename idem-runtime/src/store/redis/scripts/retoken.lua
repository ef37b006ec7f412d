-- retoken: gives a claim made by the native `SET … NX` a new token drawn from the counter,
-- when its answer came back later than a block of tokens may be used (see `claim.rs`), if
-- the record still holds the old token and is in progress. The body has not run yet, so no
-- one downstream has seen the old token. Its owner has written no saga step either (the
-- claim's answer has not reached it); an operator's write by the old token alone could have
-- made a list of step writes under it, which is closed here like any owner's (`close_log` in
-- record.lua) rather than left to take that token's writes.
--
-- KEYS[1] the record            ARGV[1] the old token
-- KEYS[2] the saga's closed log ARGV[2] the new token
-- KEYS[3] the list of step      ARGV[3] the claim id
--         writes of the old token and the claim id
--
-- Returns 1 (held, now under the new token) or 0 (lost).
local r = decode(redis.call('GET', KEYS[1]))
if not owns(r, ARGV[1], ARGV[3]) or r.st ~= 'p' then return 0 end
close_log(KEYS[2], KEYS[3])
r.tk = ARGV[2]
redis.call('SET', KEYS[1], encode(r), 'KEEPTTL')
return 1
