-- complete: records the outcome if the token still owns the record (in progress or parked
-- for review), or holds it if it completed it already.
--
-- KEYS[1] the record            ARGV[1] the token
-- KEYS[2] the saga log head     ARGV[2] the outcome's kind, 'ok' or 'err'
-- KEYS[3] the saga log steps    ARGV[3] the outcome's bytes
-- KEYS[4] the saga's closed log
-- KEYS[5] the owner's list of step writes (`step_log.rs`)
--                               ARGV[4] the TTL, ms
--                               ARGV[5] the claim id (read from the record for an
--                                 operator's write: KEYS[5] is named by it)
--
-- The owner's list of step writes, if any, is closed first (`close_log` in record.lua).
-- Redis expires the record, and the saga log with it, when its TTL runs out (a TTL shorter
-- than SHORTEST_MS is kept in the record, whose key lives SHORTEST_MS). Returns 1 (held) or
-- 0 (lost).
local r = decode(redis.call('GET', KEYS[1]))
if not owns(r, ARGV[1], ARGV[5]) then return 0 end
if r.st == 'c' then return 1 end
if r.st ~= 'p' and r.st ~= 'r' then return 0 end
local ttl = math.max(tonumber(ARGV[4]), 1)
-- Read before the record changes: a claim parked for review has lost its lease end.
local saga = r.le > 0 or r.st == 'r'
-- Only in progress: parking a claim for review closed its owner's list.
if r.st == 'p' then close_log(KEYS[4], KEYS[5]) end
r.st, r.oc, r.result = 'c', ARGV[2], ARGV[3]
if ttl < SHORTEST_MS then r.le = now + ttl else r.le = 0 end
redis.call('SET', KEYS[1], encode(r), 'PX', math.max(ttl, SHORTEST_MS))
-- Only a claim that holds its lease end (`write_saga` makes a saga's claim so) or one parked
-- for review can have a saga log: a claim made by the native `SET` is checked no further.
if saga and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return 1
