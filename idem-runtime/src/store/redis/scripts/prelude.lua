-- The clock of every script that needs one: the server's (`TIME`), read once, as `now` in
-- milliseconds since the epoch. The callers' clocks never matter. Put in front of a script
-- by `scripts.rs`; a script using `now` has no clock of its own.
local now
do
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
