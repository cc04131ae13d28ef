#!/usr/bin/env bash
# HTTP GET on one node against a bare axum server answering from a hash map
# (examples/bare_kv.rs), side by side: wrk, 64 connections, 2 threads, one key
# read as raw bytes. Prints both and the ratio.
#
#   bench/http_get.sh               # 10 s each
#   DURATION=5 PORT=24000 bench/http_get.sh
#
# Needs wrk (Debian: apt-get install wrk). Loopback only; every process it
# starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
PORT=${PORT:-24000}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet --bin crustyring --example bare_kv
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
wait_up() { # URL
  for _ in $(seq 150); do curl -sf -o /dev/null "$1" && return 0; sleep 0.2; done
  echo "$1 did not come up" >&2
  return 1
}
measure() { # LABEL URL
  local out
  out=$(wrk -c 64 -t 2 -d "${DURATION}s" --latency "$2")
  local rps p99
  rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
  p99=$(awk '/^ +99%/ { print $2 }' <<<"$out")
  echo "$1: $rps req/s, p99 $p99" >&2
  echo "$rps"
}

target/release/crustyring cluster --port "$PORT" --nodes 1 >/dev/null 2>&1 &
pids+=("$!")
node="http://127.0.0.1:$((PORT + 1))"
wait_up "$node/readyz"
curl -sf -X PUT "$node/keys/k" -d 0123456789abcdef >/dev/null

target/release/examples/bare_kv $((PORT + 50)) >/dev/null 2>&1 &
pids+=("$!")
bare="http://127.0.0.1:$((PORT + 50))"
for _ in $(seq 150); do curl -s -o /dev/null -X PUT "$bare/keys/k" -d 0123456789abcdef && break; sleep 0.2; done

ours=$(measure "crustyring, one node, GET /keys/k?raw=true" "$node/keys/k?raw=true")
bare_rps=$(measure "bare axum + hash map, GET /keys/k" "$bare/keys/k")
awk -v o="$ours" -v b="$bare_rps" 'BEGIN { printf "ratio crustyring / bare: %.2f\n", o / b }'
