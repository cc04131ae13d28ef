#!/usr/bin/env bash
# Two builds of crustyring side by side on one node each (in memory), measured
# in alternating rounds so that a noisy machine hurts both alike: HTTP GET of
# one key with wrk (64 connections), then gRPC Get and Set with the project's
# bench (64 in flight). For a change's cost: build the old commit into another
# directory and pass both binaries.
#
#   bench/ab.sh OLD_BIN NEW_BIN          # e.g. /tmp/old/crustyring target/release/crustyring
#   ROUNDS=3 DURATION=5 PORT=24100 NODES=1 bench/ab.sh A B   # NODES: ring size (one process each)
#
# With NODES > 1, the HTTP GETs read a key owned by another node than the one
# they enter by (one forward), on both sides.
#
# Needs wrk (Debian: apt-get install wrk) and curl. Loopback only; every process
# it starts is stopped by PID.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 OLD_BIN NEW_BIN" >&2; exit 2; }
A=$1
B=$2
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
PORT=${PORT:-24100}
NODES=${NODES:-1}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
# The key each side's HTTP GETs read. Node IDs come from addresses, so the two
# rings (on different ports) place a given key differently: each side reads a
# key that its entry node does not own (one forward), so both do the same work.
declare -A key
start() { # SIDE BIN PORT
  "$2" cluster --port "$3" --nodes "$NODES" >/dev/null 2>&1 &
  pids+=("$!")
  local node="http://127.0.0.1:$(($3 + 1))" last="http://127.0.0.1:$(($3 + NODES))"
  for _ in $(seq 300); do curl -sf -o /dev/null "$last/readyz" && break; sleep 0.2; done
  local k=k0
  if [ "$NODES" -gt 1 ]; then
    for i in $(seq 0 99); do
      curl -sf "$node/ring/owner/k$i" | grep -q "\"owner\":{[^}]*\"addr\":\"$node\"" || { k=k$i; break; }
    done
  fi
  key[$1]=$k
  curl -sf -X PUT "$node/keys/$k" -d 0123456789abcdef >/dev/null
}
start A "$A" "$PORT"
start B "$B" $((PORT + 100))
for r in $(seq "$ROUNDS"); do
  for side in A B; do
    port=$PORT
    [ "$side" = B ] && port=$((PORT + 100))
    node="http://127.0.0.1:$((port + 1))"
    http=$(wrk -c 64 -t 2 -d "${DURATION}s" "$node/keys/${key[$side]}?raw=true" | awk '/Requests\/sec/ { print $2 }')
    get=$("$B" bench --node "$node" --op get -c 64 -d "$DURATION" 2>&1 | awk '/ops\/s/ { print $1; exit }')
    set=$("$B" bench --node "$node" --op set -c 64 -d "$DURATION" 2>&1 | awk '/ops\/s/ { print $1; exit }')
    echo "round $r $side: HTTP GET $http req/s, gRPC Get $get ops/s, gRPC Set $set ops/s"
  done
done
