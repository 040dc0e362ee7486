# Starting and stopping the servers under test; sourced by run.sh and profile.sh, which set SB
# (the switchboard binary) and BENCH (switchboard-bench) first.
PIDS=()
TMPDIRS=()
cleanup() { for pid in "${PIDS[@]:-}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_ready() { for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0; sleep 0.1; done; echo "port $1 not ready" >&2; return 1; }

# start_servers KIND: two nodes on 18401/18402 (the ceiling is one process on 18400). A KIND
# ending in -h0 is Switchboard with history off (--history-size 0), for comparison; one ending in
# -stomp is the same Switchboard with STOMP clients on /stomp. SB_ARGS adds options to every
# Switchboard node (e.g. SB_ARGS="--presence-events-limit 1000").
start_servers() {
  DIALECT=switchboard
  local kind=$1 history="" stomp=""
  if [[ $kind == *-stomp ]]; then kind=${kind%-stomp}; stomp=1; fi
  if [[ $kind == *-h0 ]]; then kind=${kind%-h0}; history="--history-size 0"; fi
  case "$kind" in
    ceiling) $BENCH ceiling --port 18400 >/dev/null 2>&1 & PIDS+=($!); sleep 1; TARGETS=ws://127.0.0.1:18400/ws,ws://127.0.0.1:18400/ws; SERVER_PID=$!;;
    embedded) $SB cluster --nodes 2 --base-port 18401 --log-level error ${SB_ARGS:-} $history >/dev/null 2>&1 & PIDS+=($!); SERVER_PID=$!
              wait_ready 18401; wait_ready 18402; TARGETS=ws://127.0.0.1:18401/ws,ws://127.0.0.1:18402/ws;;
    redis) redis-server --port 18409 --save '' --appendonly no >/dev/null 2>&1 & PIDS+=($!); sleep 0.5
           for i in 1 2; do $SB serve --node-id r$i --port 1840$i --redis redis://127.0.0.1:18409 --log-level error ${SB_ARGS:-} $history >/dev/null 2>&1 & PIDS+=($!); done
           SERVER_PID=${PIDS[-2]}; wait_ready 18401; wait_ready 18402; TARGETS=ws://127.0.0.1:18401/ws,ws://127.0.0.1:18402/ws;;
    centrifuge|socketio|node-ws)
          redis-server --port 18409 --save '' --appendonly no >/dev/null 2>&1 & PIDS+=($!); sleep 0.5
          for i in 1 2; do bench/peers/start.sh "$kind" 1840$i 127.0.0.1:18409 >/dev/null 2>&1 & PIDS+=($!); done
          SERVER_PID=${PIDS[-2]}; wait_ready 18401; wait_ready 18402
          case $kind in
            centrifuge) DIALECT=centrifuge; path=/ws;;
            socketio) DIALECT=socketio; path=/socket.io/;;
            node-ws) DIALECT=switchboard; path=/ws;;  # it speaks Switchboard's protocol
          esac
          TARGETS=ws://127.0.0.1:18401$path,ws://127.0.0.1:18402$path;;
    rcluster1|rcluster3)
           # A Redis Cluster of 1 or 3 masters (no replicas: sharding alone), on 18420.., in a scratch folder.
           local masters=${kind#rcluster} dir; dir=$(mktemp -d /tmp/sb-bench-cluster.XXXXXX); TMPDIRS+=("$dir")
           for i in $(seq 0 $((masters - 1))); do
             redis-server --port $((18420 + i)) --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "$dir/n$i.conf" \
               --dir "$dir" --save '' --appendonly no >/dev/null 2>&1 & PIDS+=($!)
           done
           sleep 0.5
           if [ "$masters" = 1 ]; then redis-cli -p 18420 cluster addslotsrange 0 16383 >/dev/null
           else redis-cli --cluster create $(for i in $(seq 0 $((masters - 1))); do echo 127.0.0.1:$((18420 + i)); done) --cluster-yes >/dev/null; fi
           for _ in $(seq 1 100); do redis-cli -p 18420 cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
           for i in 1 2; do $SB serve --node-id c$i --port 1840$i --redis redis://127.0.0.1:18420 --log-level error ${SB_ARGS:-} $history >/dev/null 2>&1 & PIDS+=($!); done
           SERVER_PID=${PIDS[-2]}; wait_ready 18401; wait_ready 18402; TARGETS=ws://127.0.0.1:18401/ws,ws://127.0.0.1:18402/ws;;
    rabbitmq) start_rabbitmq
           for i in 1 2; do $SB serve --node-id q$i --port 1840$i --rabbitmq amqp://guest:guest@127.0.0.1:18410 --log-level error ${SB_ARGS:-} --history-size 0 >/dev/null 2>&1 & PIDS+=($!); done
           SERVER_PID=${PIDS[-2]}; wait_ready 18401; wait_ready 18402; TARGETS=ws://127.0.0.1:18401/ws,ws://127.0.0.1:18402/ws;;
    nats) nats-server -a 127.0.0.1 -p 18413 >/dev/null 2>&1 & PIDS+=($!); sleep 0.3
          for i in 1 2; do $SB serve --node-id s$i --port 1840$i --nats nats://127.0.0.1:18413 --log-level error ${SB_ARGS:-} --history-size 0 >/dev/null 2>&1 & PIDS+=($!); done
          SERVER_PID=${PIDS[-2]}; wait_ready 18401; wait_ready 18402; TARGETS=ws://127.0.0.1:18401/ws,ws://127.0.0.1:18402/ws;;
    redis3|mesh3)
          # Three nodes (18401-18403), for the reconnect storm; NODE_PIDS lists them in order. A
          # heartbeat of 5 s: a killed node leaves presence within 15 s (the default, 25 s, gives 75).
          local backplane
          if [ "$kind" = redis3 ]; then
            redis-server --port 18409 --save '' --appendonly no >/dev/null 2>&1 & PIDS+=($!); sleep 0.5
            backplane="--redis redis://127.0.0.1:18409"
          else
            backplane="--peers 127.0.0.1:18401,127.0.0.1:18402,127.0.0.1:18403 --cluster-secret bench"
          fi
          NODE_PIDS=""
          for i in 1 2 3; do
            $SB serve --node-id s$i --port 1840$i $backplane --heartbeat 5 --log-level error ${SB_ARGS:-} $history >/dev/null 2>&1 & PIDS+=($!)
            NODE_PIDS=${NODE_PIDS:+$NODE_PIDS,}$!
          done
          SERVER_PID=${PIDS[-3]}; for i in 1 2 3; do wait_ready 1840$i; done
          TARGETS=ws://127.0.0.1:18401/ws,ws://127.0.0.1:18402/ws,ws://127.0.0.1:18403/ws;;
    centrifuge3)
          redis-server --port 18409 --save '' --appendonly no >/dev/null 2>&1 & PIDS+=($!); sleep 0.5
          NODE_PIDS=""
          for i in 1 2 3; do
            bench/peers/start.sh centrifuge 1840$i 127.0.0.1:18409 >/dev/null 2>&1 & PIDS+=($!)
            NODE_PIDS=${NODE_PIDS:+$NODE_PIDS,}$!
          done
          SERVER_PID=${PIDS[-3]}; for i in 1 2 3; do wait_ready 1840$i; done; DIALECT=centrifuge
          TARGETS=ws://127.0.0.1:18401/ws,ws://127.0.0.1:18402/ws,ws://127.0.0.1:18403/ws;;
    mesh) for i in 1 2; do $SB serve --node-id m$i --port 1840$i --peers 127.0.0.1:18401,127.0.0.1:18402 --cluster-secret bench --log-level error ${SB_ARGS:-} >/dev/null 2>&1 & PIDS+=($!); done
          SERVER_PID=${PIDS[-2]}; wait_ready 18401; wait_ready 18402; TARGETS=ws://127.0.0.1:18401/ws,ws://127.0.0.1:18402/ws;;
    hub)  # Two nodes relayed through a hub on 18408.
          $SB hub --port 18408 --cluster-secret bench --log-level error >/dev/null 2>&1 & PIDS+=($!)
          for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18408/healthz >/dev/null && break; sleep 0.1; done
          for i in 1 2; do $SB serve --node-id h$i --port 1840$i --hub ws://127.0.0.1:18408 --cluster-secret bench --log-level error ${SB_ARGS:-} >/dev/null 2>&1 & PIDS+=($!); done
          SERVER_PID=${PIDS[-2]}; wait_ready 18401; wait_ready 18402; TARGETS=ws://127.0.0.1:18401/ws,ws://127.0.0.1:18402/ws;;
  esac
  if [ -n "$stomp" ]; then DIALECT=stomp; TARGETS=${TARGETS//\/ws/\/stomp}; fi
}
# A private rabbitmq-server on 18410 (distribution 18411, its own epmd on 18412), in a fresh
# folder; Debian's wrapper runs it as the rabbitmq user. Its Erlang VM's PID joins PIDS.
start_rabbitmq() {
  local dir; dir=$(mktemp -d /tmp/sb-bench-rabbitmq.XXXXXX); TMPDIRS+=("$dir")
  mkdir -p "$dir/log"; echo '[].' > "$dir/enabled_plugins"
  [ "$(id -u)" = 0 ] && chown -R rabbitmq:rabbitmq "$dir"
  epmd -port 18412 -address 127.0.0.1 >/dev/null 2>&1 & PIDS+=($!)
  env RABBITMQ_NODENAME=sbbench@localhost RABBITMQ_NODE_PORT=18410 RABBITMQ_DIST_PORT=18411 RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    ERL_EPMD_PORT=18412 ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_PID_FILE="$dir/pid" HOME="$dir" \
    rabbitmq-server >/dev/null 2>&1 & PIDS+=($!)
  for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/18410) 2>/dev/null && break; sleep 0.1; done
  PIDS+=("$(cat "$dir/pid")")
}
# Waits for each process to exit, so that the next server finds its ports free.
stop_servers() {
  cleanup; for pid in "${PIDS[@]:-}"; do wait "$pid" 2>/dev/null || true; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done; PIDS=()
  for dir in "${TMPDIRS[@]:-}"; do [ -n "$dir" ] && rm -rf "$dir"; done; TMPDIRS=()
}

