-- claim: the claim rule of `store::rules`, in the server, for the claims that change a
-- record (a dead owner taken over or parked for review, an expired result, a dead claim past
-- its TTL or a released key claimed afresh) and for the claims of actions whose TTL is too
-- short for a token from a block. A claim of a key with no record is one native
-- `SET … NX GET` in `claim.rs`, which comes here when it finds a record it must change.
--
-- KEYS[1] the record            ARGV[1] the fingerprint (64 hex digits)
-- KEYS[2] the saga log head     ARGV[2] the action
-- KEYS[3] the saga's closed log ARGV[3] the lease, ms
-- KEYS[4] the list of step      ARGV[4] 'takeover' or 'review' (a stale claim's fate)
--         writes of the owner   ARGV[5] the action's TTL, ms
--                               ARGV[6] the new token (drawn from the counter)
--                               ARGV[7] the claim id (random, the claimer's)
--                               ARGV[8], ARGV[9] the token and claim id of the owner
--                                 KEYS[4] is the list of (0 and 0 at first)
--
-- A claim made here keeps its lease end in the record, and its key expires at the lease end
-- plus the action's TTL (at least SHORTEST_MS), unless the key has a saga log. A record taken
-- from an owner in progress (a takeover, a parking for review, a dead claim claimed afresh)
-- has that owner's list of step writes closed first (`close_log` in record.lua); if KEYS[4]
-- is not that list, the answer is {'owner', token, claim id} (`other_owner`). Returns
-- {'acquired', token, resumed}, {'completed', fingerprint, kind, bytes, ms left of its TTL},
-- {'in_progress', fingerprint, token, lease_remaining_ms} or {'review', fingerprint}.
local lease, ttl = tonumber(ARGV[3]), tonumber(ARGV[5])
local r = decode(redis.call('GET', KEYS[1]))
local pttl = redis.call('PTTL', KEYS[1])
-- The lease end (in progress) or the result's end (completed), server ms.
local function ends(rec)
  if rec.le > 0 then return rec.le end
  if pttl < 0 then return now end
  if rec.st == 'p' then return now + pttl - rec.tl end
  return now + pttl
end
local function acquire(resumed)
  if r and r.st == 'p' then close_log(KEYS[3], KEYS[4]) end
  local rec = r
  if not resumed then
    rec = {st = 'p', ca = string.format('%d', now), fp = ARGV[1], oc = '-', action = ARGV[2],
      result = ''}
  end
  rec.tk, rec.id, rec.tl, rec.le = ARGV[6], ARGV[7], ttl, now + lease
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('SET', KEYS[1], encode(rec))
  else
    redis.call('SET', KEYS[1], encode(rec), 'PX', math.max(lease + ttl, SHORTEST_MS))
  end
  return {'acquired', tonumber(ARGV[6]), resumed and 1 or 0}
end
if not r or r.st == 'z' then return acquire(false) end
-- This very claim, made by an earlier send whose answer was lost (the client sent it again):
-- its own token back. No heartbeat has moved its lease yet (its owner has no answer), so a
-- fresh claim still has its lease end one lease after its creation (or none: made by the
-- native `SET`); a takeover kept the creation time of the claim it took over.
if r.st == 'p' and r.id == ARGV[7] then
  local fresh = r.le == 0 or r.le - lease == tonumber(r.ca)
  return {'acquired', tonumber(r.tk), fresh and 0 or 1}
end
if r.st == 'r' then return {'review', r.fp} end
local ex = ends(r)
if r.st == 'c' then
  if ex <= now then return acquire(false) end
  return {'completed', r.fp, r.oc, r.result, ex - now}
end
if ex > now then return {'in_progress', r.fp, tonumber(r.tk), ex - now} end
-- A dead claim past its TTL (not a saga's, which never expires) is as good as gone.
if pttl >= 0 and ex + r.tl <= now then return acquire(false) end
if r.fp ~= ARGV[1] then return {'in_progress', r.fp, tonumber(r.tk), 0} end
-- The record changes hands below: its owner's list is closed with it.
if other_owner(r, pttl, ARGV[8], ARGV[9]) then return {'owner', tonumber(r.tk), r.id} end
if ARGV[4] == 'takeover' then return acquire(true) end
close_log(KEYS[3], KEYS[4])
r.st, r.le = 'r', 0
redis.call('SET', KEYS[1], encode(r))
return {'review', r.fp}
