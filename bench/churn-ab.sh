#!/usr/bin/env bash
# A before/after of the servers' CPU per churn cycle that holds up on a noisy machine: two
# switchboard binaries run `churn-cost.sh KIND SECS` in turn, ROUNDS pairs, the order swapped
# every other pair, and the medians of both nodes' CPU per cycle are printed. On this VM the
# rate and the CPU per cycle of one binary move by 2x within minutes, so single runs mislead.
#   bench/churn-ab.sh /tmp/old-switchboard .build/release/switchboard mesh
#   ROUNDS=4 SECS=5 bench/churn-ab.sh A B redis
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 3 ] || { sed -n 2,7p "$0" >&2; exit 64; }
before=$1 after=$2 kind=$3 rounds=${ROUNDS:-8} seconds=${SECS:-10}
# One run: prints "cycles/s total-node-ms" (every switchboard process's CPU per cycle, summed).
one() {
  local out
  out=$(SB=$1 bench/churn-cost.sh "$kind" "$seconds" 2>&1)
  printf '%s %s\n' "$(grep -o '"cycles_per_s":[0-9.]*' <<<"$out" | cut -d: -f2)" \
    "$(grep 'CPU per cycle' <<<"$out" | grep -v -e '^redis-server' -e '^load generator' | awk '{ sum += $3 } END { print sum }')"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
results=$(mktemp)
for round in $(seq 1 "$rounds"); do
  order="before after"; [ $((round % 2)) = 0 ] && order="after before"
  for which in $order; do
    binary=$before; [ "$which" = after ] && binary=$after
    read -r rate cpu <<<"$(one "$binary")"
    echo "round $round $which: $rate cycles/s, $cpu ms node CPU per cycle" | tee -a "$results"
  done
done
for which in before after; do
  echo "$which: median $(grep " $which:" "$results" | awk '{ print $6 }' | median) ms node CPU per cycle, median $(grep " $which:" "$results" | awk '{ print $4 }' | median) cycles/s"
done
rm -f "$results"
