#!/usr/bin/env bash
# Runs one node of a peer server in the foreground (exec, so its PID is the server's):
#   bench/peers/start.sh centrifuge|socketio|node-ws PORT REDIS_HOST:REDIS_PORT
# Run bench/peers/install.sh once first.
set -euo pipefail
cd "$(dirname "$0")"
peer=$1 port=$2 redis=$3
case $peer in
  centrifuge) exec build/centrifuge-peer -port "$port" -redis "$redis";;
  # Debian's Python, where python3-socketio is installed, whatever python3 comes first in PATH.
  socketio) exec /usr/bin/python3 socketio/server.py --port "$port" --redis "redis://$redis";;
  node-ws) NODE_PATH=/usr/share/nodejs exec node node-ws/server.js --port="$port" --redis="redis://$redis";;
  *) echo "unknown peer $peer (centrifuge, socketio, node-ws)" >&2; exit 64;;
esac
