-- write_saga: one write to a saga's log, if the token still owns the saga's record (in
-- progress). The first one makes the record last (no expiry, its lease end kept in the
-- record): recovery needs the claim of a saga whose owner died.
--
-- KEYS[1] the record            ARGV[1] the token
-- KEYS[2] the saga log head     ARGV[2] the saga's id
-- KEYS[3] the saga log steps    ARGV[3] the key (its member in the sagas index)
-- KEYS[4] the bucket's index    ARGV[4] the claim id ('' if this handle did not claim it)
--         of running sagas      ARGV[5..] 'status', <status>, <has_error 0|1>, <error>
--                                      or 'step', <index>, <field>, <value>, …
--
-- Returns 1 (held) or 0 (lost).
local r = decode(redis.call('GET', KEYS[1]))
if not owns(r, ARGV[1], ARGV[4]) or r.st ~= 'p' then return 0 end
local pttl = redis.call('PTTL', KEYS[1])
if pttl ~= -1 then
  if r.le == 0 then r.le = now + math.max(pttl, 0) - r.tl end
  redis.call('SET', KEYS[1], encode(r))
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'id', ARGV[2], 'status', 'running')
end
redis.call('HSET', KEYS[2], 'updated', now)
if ARGV[5] == 'status' then
  redis.call('HSET', KEYS[2], 'status', ARGV[6])
  if ARGV[7] == '1' then redis.call('HSET', KEYS[2], 'error', ARGV[8])
  else redis.call('HDEL', KEYS[2], 'error') end
else
  local index = ARGV[6]
  redis.call('HDEL', KEYS[3], index .. ':output', index .. ':error')
  for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[3], index .. ':' .. ARGV[i], ARGV[i + 1]) end
end
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'running' or status == 'compensating' then
  redis.call('ZADD', KEYS[4], 0, ARGV[3])
else
  redis.call('ZREM', KEYS[4], ARGV[3])
end
return 1
