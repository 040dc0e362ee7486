#!/usr/bin/env bash
# What the Redis side of the backplane carries with many rooms, on one Redis, a Redis Cluster of
# one master and one of three (no replicas), alternating, ROUNDS times: `switchboard-bench
# backplane` (two in-process nodes, ROOMS rooms, history on) against each, with the CPU every
# redis-server used while messages flowed. One JSON line per run, in
# bench/results/cluster-capacity.jsonl; the bench reads the redis-servers' CPU from /proc.
#   bench/cluster-capacity.sh                  # 3 rounds, 10000 rooms, 100000 messages
#   ROUNDS=1 MESSAGES=20000 bench/cluster-capacity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product switchboard-bench >/dev/null 2>&1
BENCH=.build/release/switchboard-bench
ROUNDS=${ROUNDS:-3} ROOMS=${ROOMS:-10000} MESSAGES=${MESSAGES:-100000}
OUT=bench/results/cluster-capacity.jsonl
PIDS=()
DIR=$(mktemp -d /tmp/sb-capacity.XXXXXX)
trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$DIR"' EXIT
declare -A PID_OF
start() { # start PORT [cluster]
  local extra=()
  if [ "${2:-}" = cluster ]; then extra=(--cluster-enabled yes --cluster-config-file "$DIR/n$1.conf"); fi
  redis-server --port "$1" --bind 127.0.0.1 --dir "$DIR" --save '' --appendonly no "${extra[@]}" >/dev/null 2>&1 & PIDS+=($!)
  PID_OF[$1]=$!
}
start 18430
start 18433 cluster
for port in 18440 18441 18442; do start $port cluster; done
sleep 0.5
redis-cli -p 18433 cluster addslotsrange 0 16383 >/dev/null
redis-cli --cluster create 127.0.0.1:18440 127.0.0.1:18441 127.0.0.1:18442 --cluster-yes >/dev/null
for port in 18433 18440; do
  for _ in $(seq 1 100); do redis-cli -p $port cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
done
run() { # run LABEL PORTS...
  local label=$1; shift
  local pids; pids=$(for port in "$@"; do echo "${PID_OF[$port]}"; done | paste -sd,)
  $BENCH backplane --redis "redis://127.0.0.1:$1" --rooms "$ROOMS" --messages "$MESSAGES" --label "$label" \
    --redis-pids "$pids" | head -1 | tee -a "$OUT"
}
for _ in $(seq 1 "$ROUNDS"); do
  run redis 18430
  run rcluster1 18433
  run rcluster3 18440 18441 18442
done
