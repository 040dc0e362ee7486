#!/usr/bin/env bash
# Redis memory per history stream: one node on a private redis-server; ROOMS rooms each get
# MESSAGES messages of 64 bytes through the HTTP API; then Redis's used_memory grows by how
# much, and MEMORY USAGE of one stream's two keys (its hash and its list).
#   bench/history-memory.sh                     # 1000 rooms x 100 messages (the default history size)
#   ROOMS=100 MESSAGES=10 bench/history-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product switchboard >/dev/null
SB=.build/release/switchboard
ROOMS=${ROOMS:-1000} MESSAGES=${MESSAGES:-100}
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT
redis-server --port 18419 --save '' --appendonly no >/dev/null 2>&1 & PIDS+=($!)
sleep 0.5
$SB serve --node-id mem --port 18418 --redis redis://127.0.0.1:18419 --log-level error >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18418/readyz >/dev/null && break; sleep 0.1; done
before=$(redis-cli -p 18419 info memory | awk -F: '/^used_memory:/ {print $2+0}')
python3 - "$ROOMS" "$MESSAGES" <<'PY'
import http.client, json, sys
rooms, messages = int(sys.argv[1]), int(sys.argv[2])
connection = http.client.HTTPConnection("127.0.0.1", 18418)
payload = "x" * 62  # a 64-byte JSON string
for n in range(messages):
    for room in range(rooms):
        connection.request("POST", "/api/publish", json.dumps({"room": f"room-{room}", "data": payload}))
        reply = connection.getresponse(); reply.read()
        assert reply.status == 200, reply.status
PY
after=$(redis-cli -p 18419 info memory | awk -F: '/^used_memory:/ {print $2+0}')
list=$(redis-cli -p 18419 memory usage 'sb:{r:room-0}:h')
hash=$(redis-cli -p 18419 memory usage 'sb:{r:room-0}:s')
echo "{\"scenario\":\"history-memory\",\"rooms\":$ROOMS,\"messages_per_room\":$MESSAGES,\"used_memory_growth_per_stream\":$(( (after - before) / ROOMS )),\"list_bytes\":$list,\"hash_bytes\":$hash}"
