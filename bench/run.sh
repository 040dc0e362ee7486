#!/usr/bin/env bash
# Runs every scenario against the ceiling server, Switchboard (embedded, Redis, mesh; on request:
# RabbitMQ and NATS, SERVERS="redis rabbitmq nats", after apt-get install rabbitmq-server
# nats-server; a Redis Cluster of 1 or 3 masters, rcluster1 and rcluster3; two nodes through a
# hub, hub; and the scenario
# `rooms`, 10k rooms, SCENARIOS=rooms; the reconnect storm, SERVERS="redis3 mesh3" SCENARIOS=storm; 2000 joins in one
# room against 2000 rooms, SCENARIOS=joinstorm)
# and the peers
# (Centrifuge, python-socketio, Node ws, each two nodes over Redis), one after the other on this
# machine, and writes one JSON line per result to bench/results/latest.jsonl.
#   bench/peers/install.sh       # once: the peers, from Debian
#   bench/run.sh                 # everything (about 20 minutes after the release build)
#   SCENARIOS="fanout" SERVERS="ceiling redis centrifuge" bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product switchboard >/dev/null
swift build -c release --product switchboard-bench >/dev/null
# SB may name another switchboard binary (an earlier build, for a before/after in one run).
SB=${SB:-.build/release/switchboard}
BENCH=.build/release/switchboard-bench
OUT=${OUT:-bench/results/latest.jsonl}
mkdir -p bench/results
: > "$OUT"
SCENARIOS=${SCENARIOS:-"fanout paced unicast churn idle"}
ulimit -n 20000 2>/dev/null || true
source bench/servers.sh

run() { # label scenario args...
  local label=$1 scenario=$2; shift 2
  local name=$scenario; [[ $scenario = fanout && " $* " == *" --rate "* ]] && name=fanout-paced
  $BENCH "$scenario" --targets "$TARGETS" --label "$label" --dialect "$DIALECT" "$@" | tee -a /dev/stderr | grep '^{' >> "$OUT" || echo "{\"scenario\":\"$name\",\"server\":\"$label\",\"failed\":true}" >> "$OUT"
}

for kind in ${SERVERS:-ceiling embedded redis mesh centrifuge socketio node-ws}; do
  start_servers $kind
  for scenario in $SCENARIOS; do
    # STOMP kinds measure fan-out and unicast (issue 16), next to the same server's JSON.
    [[ $kind == *-stomp ]] && [[ $scenario != fanout && $scenario != unicast ]] && continue
    case $scenario in
      fanout) run $kind fanout --subscribers 1000 --messages 2000
              if [ $DIALECT = switchboard ] && [ $kind != node-ws ]; then
                run $kind fanout --subscribers 1000 --messages 2000 --batch
                sed -i '$ s/"server":"'$kind'"/"server":"'$kind'-batch"/' "$OUT"
              fi;;
      paced) run $kind fanout --subscribers 1000 --rate 50 --duration 10;;
      unicast) [ $kind = ceiling ] || run $kind unicast --pairs 100 --rate 1000 --duration 10;;
      churn) [ $kind = ceiling ] || run $kind churn --workers 20 --duration 10;;
      rooms) [ $kind = ceiling ] || run $kind rooms --rooms 10000 --publishers 20 --messages 100000;;
      joinstorm) [ $kind = ceiling ] || { run $kind joinstorm --clients 2000; run $kind joinstorm --clients 2000 --spread; };;
      # Kills (STORM_SIGNAL=TERM: drains) the third node: last in SCENARIOS, on redis3 or mesh3.
      storm) [[ $kind == *3 ]] && run $kind storm --clients 15000 --server-pids "$NODE_PIDS" --signal "${STORM_SIGNAL:-KILL}";;
      idle) [ $kind = ceiling ] || [ $kind = mesh ] || run $kind idle --connections 19000 --server-pid "$SERVER_PID" --rest 30 || true;;
    esac
  done
  stop_servers
done
echo "results in $OUT"
