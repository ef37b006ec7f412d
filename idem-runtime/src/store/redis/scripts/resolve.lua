-- resolve: settles a saga that needs attention by hand, keeping the note.
--
-- KEYS[1] the saga log head     ARGV[1] the note
--
-- Returns 1 if it did, 0 if the saga did not need attention.
if redis.call('HGET', KEYS[1], 'status') ~= 'needs_attention' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'resolved', 'note', ARGV[1], 'updated', now)
return 1
