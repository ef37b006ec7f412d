#!/usr/bin/env bash
# What a saga log write's Lua script costs Redis, part by part, beside the raw commands a
# log write could be: the server's time per call from `INFO commandstats`, on a scratch
# `redis-server` of its own, one client (`redis-benchmark -c 1`), the keys and arguments of
# a step's write as `RedisStore::write_saga` sends them.
#
#   bash benches/redis_script_cost.sh [REV]
#
# With REV (a commit), `write_saga.lua` as it was at REV runs too, alternating with the
# working tree's, so that the two are measured under the same load. Rows:
#
#   return 1 (no arguments)       the cost of running a script at all
#   return 1 (a step's arguments) ... with the keys and arguments of a step's write
#   prelude and record.lua        ... defining the clock and the record's functions
#   ... and decoding the record   ... with the record read and decoded (`decode`)
#   write_saga.lua                the whole write through the script, as in the working tree
#                                 (or at REV): since layout 3 only an owner's first step write
#   HSET of a step's fields       a raw write of the same fields, no fence
#   RPUSHX of a step's entry      the same as `RedisStore::write_saga` appends it to the
#                                 owner's list: a step's write since layout 3, fenced by the
#                                 list's being there (`step_log.rs`)
#
# Figures move by a third between runs on a shared VM: read the rows against each other.

set -euo pipefail
cd "$(dirname "$0")/.."
scripts=idem-runtime/src/store/redis/scripts
rev=${1:-}
requests=${REQUESTS:-100000}
rounds=${ROUNDS:-3}

folder=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$folder" \
  --daemonize yes --logfile "$folder/log" >/dev/null
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$folder"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

cli() { redis-cli -p "$port" "$@"; }
key=2b7c9f0d2b7c9f0d2b7c9f0d2b7c9f0d2b7c9f0d2b7c9f0d2b7c9f0d2b7c9f0d
# A saga's record in progress under token 5, claim id 1, made to last (no expiry), and its
# log's head: the state of every step write after the saga's first.
cli SET record "p|5|1|99|60000|1700000000000|abcd|-|4|saga" >/dev/null
cli HSET head id order-17 status running >/dev/null
cli RPUSH log:5:1 + >/dev/null
step=(name charge_card key "$key" irreversible 0 args '["order-17",1999]' state done
  output '{"message_id":"ch-order-17","amount_cents":1999}')
# The script's keys and arguments since layout 3 (the owner's list of step writes the last
# key, no steps hash), and before it (for a REV from before).
write_args=(4 record head index log:5:1 5 order-17 "$key" 1 step 1 "${step[@]}")
old_write_args=(4 record head steps index 5 order-17 "$key" 1 step 1 "${step[@]}")

# Runs `redis-benchmark` on the command and prints the server's µs per call of `stat`.
measure() {
  local label=$1 stat=$2
  shift 2
  cli CONFIG RESETSTAT >/dev/null
  redis-benchmark -p "$port" -n "$requests" -c 1 -q "$@" >/dev/null 2>&1
  local per_call
  per_call=$(cli INFO commandstats | tr -d '\r' | grep "^cmdstat_$stat:" |
    sed 's/.*usec_per_call=\([0-9.]*\).*/\1/')
  printf '%-34s %8s µs\n' "$label" "$per_call"
}
# Loads a script and measures it with `write_args`, or with the arguments after its source.
script() {
  local label=$1 source=$2
  shift 2
  local sha
  sha=$(cli SCRIPT LOAD "$source")
  if [ $# -eq 0 ]; then set -- "${write_args[@]}"; fi
  measure "$label" evalsha EVALSHA "$sha" "$@"
}

with_record="$(cat "$scripts/prelude.lua" "$scripts/record.lua")"
# The script must take these keys and arguments as a held step write (1), or its row would
# time an error or a refusal.
written=$(cli EVAL "$with_record
$(cat "$scripts/write_saga.lua")" "${write_args[@]}")
if [ "$written" != 1 ]; then
  echo "write_saga.lua answered '$written' to the bench's step write, not 1" >&2
  exit 1
fi
for round in $(seq "$rounds"); do
  echo "round $round"
  script "return 1 (no arguments)" "return 1" 0
  script "return 1 (a step's arguments)" "return 1"
  script "prelude and record.lua" "$with_record
return 1"
  script "... and decoding the record" "$with_record
local r = decode(redis.call('GET', KEYS[1])) return 1"
  if [ -n "$rev" ]; then
    at_rev=("${write_args[@]}")
    if ! git show "$rev:$scripts/write_saga.lua" | grep -q "the owner's list of"; then
      at_rev=("${old_write_args[@]}")
    fi
    script "write_saga.lua at $rev" \
      "$(git show "$rev:$scripts/prelude.lua" "$rev:$scripts/record.lua" "$rev:$scripts/write_saga.lua")" \
      "${at_rev[@]}"
  fi
  script "write_saga.lua" "$with_record
$(cat "$scripts/write_saga.lua")"
  steps=()
  for ((i = 0; i < ${#step[@]}; i += 2)); do steps+=("1:${step[i]}" "${step[i + 1]}"); done
  measure "HSET of a step's fields" hset HSET steps "${steps[@]}"
  measure "RPUSHX of a step's entry" rpushx RPUSHX log:5:1 "1:$((${#step[@]} / 2)):1700000000000" "${step[@]}"
  cli LTRIM log:5:1 0 0 >/dev/null
done
