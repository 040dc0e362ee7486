#!/usr/bin/env bash
# Profiles the first node of a server with perf while one scenario runs against it, and writes
# where that node's CPU went (kernel against user space, then the hottest symbols) to
# bench/results/profile-KIND-SCENARIO.txt (fanout-paced for a fan-out with --rate).
#   bench/profile.sh redis fanout --subscribers 1000 --messages 4000
#   bench/profile.sh ceiling fanout --subscribers 1000 --rate 50 --duration 5
#   bench/profile.sh redis churn --workers 20 --duration 5
#   KEEP=/tmp/churn.perf bench/profile.sh redis churn --workers 20 --duration 8   # and keep perf's data
# KIND is one of run.sh's servers; SCENARIO and its options are switchboard-bench's.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,9p "$0" >&2; exit 64; }
command -v perf >/dev/null || { echo "perf is needed: apt-get install -y linux-perf" >&2; exit 1; }
kind=$1 scenario=$2; shift 2
swift build -c release --product switchboard >/dev/null
swift build -c release --product switchboard-bench >/dev/null
SB=.build/release/switchboard
BENCH=.build/release/switchboard-bench
mkdir -p bench/results
name=$scenario; [[ $scenario = fanout && " $* " == *" --rate "* ]] && name=fanout-paced
OUT=bench/results/profile-$kind-$name.txt
DATA=$(mktemp /tmp/switchboard-perf.XXXXXX)
ulimit -n 20000 2>/dev/null || true
source bench/servers.sh
start_servers "$kind"

ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
perf record -g -p "$SERVER_PID" -o "$DATA" >/dev/null 2>&1 &
PERF_PID=$!
before=$(ticks)
result=$($BENCH "$scenario" --targets "$TARGETS" --label "$kind" --dialect "$DIALECT" "$@" | grep '^#')
after=$(ticks)
kill -INT "$PERF_PID"
wait "$PERF_PID" || true
stop_servers
# KEEP=FILE keeps perf's data, for `perf report -i FILE` by caller.
if [ -n "${KEEP:-}" ]; then cp "$DATA" "$KEEP"; fi

# (head closes the pipes early; that is not a failure.)
{
  echo "$ ${0##*/} $kind $scenario $*"
  echo "$result"
  awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "node CPU during the run: %.2f s (first node only)\n", t / hz }'
  echo
  echo "## CPU by binary"
  perf report -i "$DATA" --no-children --sort dso -g none 2>/dev/null | grep '%' | head -8
  echo
  echo "## Hottest symbols"
  perf report -i "$DATA" --no-children --sort sym -g none 2>/dev/null | grep '%' | head -40 | cut -c1-160
} > "$OUT" || true
rm -f "$DATA"
cat "$OUT"
