#!/usr/bin/env bash
# What one churn cycle (connect, join, close; `switchboard-bench churn`) costs the servers, in
# measures steadier than cycles per second on a noisy machine: each server process's CPU per
# cycle (from /proc), split into user and system time; the load generator's CPU per cycle (it
# shares the cores); and for the Redis kinds Redis's commands per cycle (INFO commandstats, its
# scripts' own calls included). With ALLOCS=1 instead: allocations per cycle on one node under
# heaptrack (apt-get install -y heaptrack), embedded or over Redis.
#   bench/churn-cost.sh redis            # 10 s, 20 workers
#   bench/churn-cost.sh centrifuge 5
#   SB=/tmp/old-switchboard bench/churn-cost.sh redis    # an earlier build, for a before/after
#   ALLOCS=1 bench/churn-cost.sh embedded 5
#   ALLOCS=1 bench/churn-cost.sh redis 5
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-redis} seconds=${2:-10}
swift build -c release --product switchboard >/dev/null
swift build -c release --product switchboard-bench >/dev/null
SB=${SB:-.build/release/switchboard}
BENCH=.build/release/switchboard-bench
ulimit -n 20000 2>/dev/null || true
source bench/servers.sh
cycles_of() { sed 's/.*"cycles":\([0-9]*\).*/\1/' <<<"$1"; }

if [ "${ALLOCS:-}" = 1 ]; then
  # One node under heaptrack: embedded alone, or (KIND redis) the first of two over a private
  # redis-server, whose second node only receives the presence events.
  command -v heaptrack >/dev/null || { echo "heaptrack is needed: apt-get install -y heaptrack" >&2; exit 1; }
  data=$(mktemp -d /tmp/switchboard-heaptrack.XXXXXX)
  extra=() targets=ws://127.0.0.1:18401/ws,ws://127.0.0.1:18401/ws others=()
  if [ "$kind" = redis ]; then
    redis-server --port 18409 --save '' --appendonly no >/dev/null 2>&1 & others+=($!)
    for _ in $(seq 1 50); do redis-cli -p 18409 ping >/dev/null 2>&1 && break; sleep 0.1; done
    extra=(--node-id r1 --redis redis://127.0.0.1:18409)
    "$SB" serve --node-id r2 --port 18402 --redis redis://127.0.0.1:18409 --log-level error >/dev/null 2>&1 & others+=($!)
    wait_ready 18402
    targets=ws://127.0.0.1:18401/ws,ws://127.0.0.1:18402/ws
  elif [ "$kind" != embedded ]; then
    echo "ALLOCS=1 measures embedded or redis" >&2; exit 64
  fi
  heaptrack -o "$data/trace" "$SB" serve --port 18401 "${extra[@]}" --log-level error >/dev/null 2>&1 &
  wrapper=$!
  wait_ready 18401
  node=$(pgrep -f "^$SB serve --port 18401" | head -1)
  out=$($BENCH churn --targets "$targets" --label "$kind" --workers 20 --duration "$seconds" | grep '^{')
  kill "$node"; wait "$wrapper" 2>/dev/null || true
  for pid in "${others[@]}"; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
  calls=$(heaptrack_print -f "$data"/trace*.zst 2>/dev/null | grep '^calls to allocation functions' | tail -1 | sed 's/.*: \([0-9]*\).*/\1/')
  rm -rf "$data"
  echo "$kind: cycles $(cycles_of "$out"), allocations per cycle on the first node (startup included) $((calls / $(cycles_of "$out")))"
  exit 0
fi

start_servers "$kind"
[[ $kind == redis* || $DIALECT == centrifuge || $kind == socketio || $kind == node-ws ]] && redis-cli -p 18409 config resetstat >/dev/null
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }  # user, system
declare -A before
for pid in "${PIDS[@]}"; do before[$pid]=$(ticks "$pid"); done
# `times` in the same subshell gives the load generator's own CPU (its waited-for children, the
# generator and a grep).
generator=$(mktemp)
out=$({
  $BENCH churn --targets "$TARGETS" --label "$kind" --dialect "$DIALECT" --workers 20 --duration "$seconds" | grep '^{'
  times >"$generator"
})
echo "$out"
cycles=$(cycles_of "$out")
# The second line of `times` is the children's user and system time, as 0m1.234s.
read -r gen_user gen_system < <(sed -n 2p "$generator" | sed 's/\([0-9]*\)m\([0-9.]*\)s/\1 \2/g' | awk '{ print $1 * 60 + $2, $3 * 60 + $4 }')
rm -f "$generator"
echo "load generator: $(awk -v u="$gen_user" -v s="$gen_system" -v c="$cycles" \
  'BEGIN { printf "%.3f ms CPU per cycle (user %.3f, system %.3f)", (u + s) * 1000 / c, u * 1000 / c, s * 1000 / c }')"
for pid in "${PIDS[@]}"; do
  kill -0 "$pid" 2>/dev/null || continue
  read -r user system <<<"$(ticks "$pid")"
  read -r user0 system0 <<<"${before[$pid]}"
  echo "$(cat /proc/$pid/comm) ($pid): $(awk -v u=$((user - user0)) -v s=$((system - system0)) -v c="$cycles" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.3f ms CPU per cycle (user %.3f, system %.3f)", (u + s) * 1000 / hz / c, u * 1000 / hz / c, s * 1000 / hz / c }')"
done
if redis-cli -p 18409 ping >/dev/null 2>&1; then
  calls=$(redis-cli -p 18409 info commandstats | grep -o 'calls=[0-9]*' | cut -d= -f2 | paste -sd+ | bc)
  echo "redis: $(awk -v n="$calls" -v c="$cycles" 'BEGIN { printf "%.1f", n / c }') commands per cycle"
fi
stop_servers
