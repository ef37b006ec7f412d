-- complete_in_place: records a result over a claim made by the native `SET` and unchanged
-- since (no saga log, no new token, no takeover): one comparison of the whole record instead
-- of decoding it, what `SET … IFEQ` does natively on Valkey, for Redis 7. The new record is
-- made by the caller (`Stored::completed`); the claim id is in both.
--
-- KEYS[1] the record            ARGV[1] the record as the claim wrote it
--                               ARGV[2] the record with its result
--                               ARGV[3] the TTL, ms (at least SHORTEST_MS)
--
-- Returns 1 (recorded) or 0 (the record is not that claim: `complete.lua` decides).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
