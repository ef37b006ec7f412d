-- write_saga: one write to a saga's log, if the token still owns the saga's record (in
-- progress). The first one makes the record last (no expiry, its lease end kept in the
-- record): recovery needs the claim of a saga whose owner died.
--
-- KEYS[1] the record            ARGV[1] the token
-- KEYS[2] the saga log head     ARGV[2] the saga's id
-- KEYS[3] the bucket's index    ARGV[3] the key (its member in the sagas index)
--         of running sagas      ARGV[4] the claim id (read from the record when this
-- KEYS[4] the owner's list of     handle did not make the claim: KEYS[4] is named by it)
--         step writes           ARGV[5] 'status', <status>, <has_error 0|1>, <error>
--                                       or 'step', <index>, <field>, <value>, …
--
-- A step's write goes to the owner's own list (`close_log` in record.lua), which this script
-- makes: the owner's later step writes are one native `RPUSHX` there (`step_log.rs`), which
-- come here only when the list is not there. A status write makes the list too, so that the
-- steps after it never come here.
--
-- Returns 1 (held) or 0 (lost).
local value = redis.call('GET', KEYS[1])
if not holds_in_progress(value, ARGV[1], ARGV[4]) then
  decode(value) -- a corrupt record is an error, not a lost claim
  return 0
end
if ARGV[5] == 'step' and (#ARGV - 6) % 2 ~= 0 then
  error({err = 'a step write with a field and no value'})
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl ~= -1 then
  local r = decode(value)
  if r.le == 0 then r.le = now + math.max(pttl, 0) - r.tl end
  redis.call('SET', KEYS[1], encode(r))
end
local list = KEYS[4]
-- Each hash is written with one HSET of all its fields: every `redis.call` costs the server
-- 0.3-0.6 us over its command's own time, more than a field it writes (BENCHMARKS.md).
local fresh = redis.call('EXISTS', KEYS[2]) == 0
local head = {}
if fresh then
  head[#head + 1] = 'id'
  head[#head + 1] = ARGV[2]
end
-- The status after this write, when this write decides it.
local status
if ARGV[5] == 'status' then
  status = ARGV[6]
  if ARGV[7] == '1' then
    head[#head + 1] = 'error'
    head[#head + 1] = ARGV[8]
  else
    redis.call('HDEL', KEYS[2], 'error')
  end
  if redis.call('EXISTS', list) == 0 then redis.call('RPUSH', list, '+') end
elseif fresh then
  status = 'running'
end
-- The head's time is its last status write (the order of listings): a step's write, here
-- an owner's first, dates only its own entry.
if status then
  head[#head + 1] = 'status'
  head[#head + 1] = status
  head[#head + 1] = 'updated'
  head[#head + 1] = now
end
if #head > 0 then redis.call('HSET', KEYS[2], unpack(head)) end
if ARGV[5] ~= 'status' then
  local group = {ARGV[6] .. ':' .. ((#ARGV - 6) / 2) .. ':' .. now}
  for i = 7, #ARGV do group[#group + 1] = ARGV[i] end
  redis.call('RPUSH', list, unpack(group))
end
-- The index follows the status: the write that sets a status puts the saga in it or takes
-- it out; a step's write leaves both as they are (an index lost out of band, to a server
-- that evicts keys or a hand's DEL, is made whole by the saga's next status write).
if status == 'running' or status == 'compensating' then
  redis.call('ZADD', KEYS[3], 0, ARGV[3])
elseif status then
  redis.call('ZREM', KEYS[3], ARGV[3])
end
return 1
