-- record: the record's format (see `record.rs`), read and written in the server. Put in
-- front of the scripts that touch a record by `scripts.rs`.
--
--   <status>|<token>|<claim id>|<lease end>|<ttl>|<created>|<fingerprint>|<outcome>|<action length>|<action><result>
-- The fields before the action, each ended by '|': `decode` captures them, `holds_in_progress`
-- only checks that they are there (the same pattern without its captures, which cost).
local FIELDS = '^(%a)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)|(%x+)|([%-%a]+)|(%d+)|()'
local SHAPE = '^%a|%d+|%d+|%d+|%d+|%d+|%x+|[%-%a]+|%d+|'
local function decode(value)
  if not value then return nil end
  local st, tk, id, le, tl, ca, fp, oc, alen, at = string.match(value, FIELDS)
  if not st then error({err = 'corrupt idem record'}) end
  alen = tonumber(alen)
  return {st = st, tk = tk, id = id, le = tonumber(le), tl = tonumber(tl), ca = ca, fp = fp, oc = oc,
    action = string.sub(value, at, at + alen - 1), result = string.sub(value, at + alen)}
end
local function encode(r)
  return r.st .. '|' .. r.tk .. '|' .. r.id .. '|' .. string.format('%d', r.le) .. '|' ..
    string.format('%d', r.tl) .. '|' .. r.ca .. '|' .. r.fp .. '|' .. r.oc .. '|' ..
    #r.action .. '|' .. r.action .. r.result
end
-- The shortest a record's key lives, ms: longer than a store handle uses a block of tokens
-- (`tokens.rs`), so that a key claimed again after its record went draws its token from the
-- counter, larger than the record's, not from an older block. A record whose lease and TTL,
-- or whose result's TTL, are shorter keeps them in its lease end field, and is as good as gone
-- once they ran out (`Stored::is_gone`). `FRESH_BLOCK_TTL` in `tokens.rs` is the same.
local SHORTEST_MS = 1500
-- Whether the owner of `token` with claim id `id` holds the record `r`: its token, and its
-- claim id unless `id` is '' (an operator's write, by the token read from the record).
local function owns(r, token, id)
  return r and r.tk == token and (id == '' or r.id == id)
end
-- `owns(decode(value), token, id) and st == 'p'`, read from the encoded record without
-- decoding it: its status, token and claim id lead it (`encode`), each ended by '|'; a
-- record with that lead but not the record's shape is an error, as `decode` makes it. For
-- the writes that change nothing in the record: decoding costs the server more than the
-- commands of a saga log's write together (BENCHMARKS.md).
local function holds_in_progress(value, token, id)
  local lead = 'p|' .. token .. '|'
  if id ~= '' then lead = lead .. id .. '|' end
  if not value or string.sub(value, 1, #lead) ~= lead then return false end
  if not string.find(value, SHAPE) then error({err = 'corrupt idem record'}) end
  return true
end
-- A saga owner's own list of step writes (`step_log.rs` names it, `<key>:log:<token>:<claim
-- id>`, and passes it in `KEYS`): a step's write by the owner that holds the record in
-- progress is one native `RPUSHX` to it, which writes only to a list that exists. The list
-- is made by the owner's first write through write_saga.lua, which checks the claim, and
-- every script that takes the record from that owner in progress closes it (`close_log`):
-- from then on, that owner's `RPUSHX` finds no list and writes nothing. Only a record that
-- lasts (no expiry: a saga's claim) can have one, as only write_saga.lua makes one, after it
-- made the record last.
--
-- Moves the owner's list `list` onto the end of the saga's closed log `closed` (`<key>:log`,
-- the step writes of the owners before), where readers find it in the same order: a `RENAME`
-- when there is none yet (the saga's first owner), else its entries appended. The entries
-- are not read here: a reader applies them (`decode.rs`).
local function close_log(closed, list)
  if redis.call('EXISTS', list) == 0 then return end
  if redis.call('EXISTS', closed) == 0 then
    redis.call('RENAME', list, closed)
    return
  end
  local entries = redis.call('LRANGE', list, 0, -1)
  -- In slices: `unpack` is bounded by Lua's stack (about 8,000 values), a long saga is not.
  for s = 1, #entries, 1000 do
    redis.call('RPUSH', closed, unpack(entries, s, math.min(s + 999, #entries)))
  end
  redis.call('DEL', list)
end
-- Whether the owner of record `r` (read with expiry `pttl`) may have a list of step writes
-- that is not the one named by `token` and `id`: then a script that must close that list, or
-- read it, answers {'owner', <token>, <claim id>} instead, and the store runs it again with
-- that owner's list in its `KEYS` (a cluster moves and routes only declared keys).
local function other_owner(r, pttl, token, id)
  return r.st == 'p' and pttl == -1 and (r.tk ~= token or r.id ~= id)
end
-- Leaves a tombstone of a record's token: the next claim draws a new token from the counter
-- (larger than this one), as a fresh claim right after the record went could not.
local function tombstone(key, r)
  r.st, r.le, r.oc, r.result = 'z', 0, '-', ''
  redis.call('SET', key, encode(r), 'PX', SHORTEST_MS)
end
