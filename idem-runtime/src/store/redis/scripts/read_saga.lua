-- read_saga: a saga's log as one read: its head, its steps hash (written by an idem of layout
-- 2), its closed log (the step writes of its owners before) and the list of step writes of
-- the owner holding its record in progress (see `close_log` in record.lua), which a reader
-- applies over the hash in that order.
--
-- KEYS[1] the record            ARGV[1], ARGV[2] the token and claim id of the owner whose
-- KEYS[2] the saga log head       list KEYS[5] is (0 and 0 at first)
-- KEYS[3] the saga log steps
-- KEYS[4] the saga's closed log
-- KEYS[5] a list of step writes
--
-- Returns {'log', head fields and values, steps fields and values, closed entries, owner's
-- entries}, or {'owner', token, claim id} if KEYS[5] is not the list of the record's owner
-- and that owner may have one (`other_owner`): the store reads again with that list.
local value = redis.call('GET', KEYS[1])
local entries = {}
if value then
  local r = decode(value)
  if other_owner(r, redis.call('PTTL', KEYS[1]), ARGV[1], ARGV[2]) then
    return {'owner', tonumber(r.tk), r.id}
  end
  -- Only a record in progress has an owner's list: every other status was set by a script
  -- that closed it.
  if r.st == 'p' then entries = redis.call('LRANGE', KEYS[5], 0, -1) end
end
return {'log', redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
  redis.call('LRANGE', KEYS[4], 0, -1), entries}
