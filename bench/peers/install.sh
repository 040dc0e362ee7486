#!/usr/bin/env bash
# Installs what the peer servers need, from Debian only, and builds the Centrifuge one.
#   bench/peers/install.sh        (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")"
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq redis-server curl \
  golang-go golang-github-centrifugal-centrifuge-dev golang-github-centrifugal-protocol-dev \
  golang-github-igm-sockjs-go-dev golang-github-mna-redisc-dev golang-github-fzambia-eagle-dev \
  python3 python3-socketio python3-redis python3-aiohttp \
  nodejs node-ws node-redis >/dev/null
# Centrifuge 0.15 and its dependencies are Debian source packages under /usr/share/gocode.
mkdir -p build
(cd centrifuge && GO111MODULE=off GOPATH="$PWD/../build/gopath:/usr/share/gocode" GOCACHE="$PWD/../build/gocache" \
  go build -o ../build/centrifuge-peer .)
echo "peers ready: bench/peers/build/centrifuge-peer, socketio/server.py, node-ws/server.js"
