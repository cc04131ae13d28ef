#!/usr/bin/env bash
# Replicated write throughput: self-routed Sets (64 in flight, 16-byte values)
# against local clusters of this project, one shape at a time:
#   3 nodes in memory with 3 copies; 3 nodes on disk with fsync (the defaults);
#   3 nodes on disk with --sync batched; 1 node on disk; 3 nodes on disk, 1 copy.
#
#   bench/writes.sh                 # 8 s per shape
#   DURATION=4 PORT=23000 bench/writes.sh
#
# Loopback only, ports PORT.. (below the ephemeral range by default); every
# process it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
PORT=${PORT:-23000}
cargo build --release --quiet
BIN=target/release/crustyring
pid=""
dir=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [ -n "$dir" ] && rm -rf "$dir"
  return 0
}
trap cleanup EXIT

run() { # LABEL NODES [cluster flags; DIR is replaced by a fresh data dir]
  local label=$1 nodes=$2
  shift 2
  dir=$(mktemp -d)
  local args=()
  for a in "$@"; do args+=("${a//DIR/$dir}"); done
  "$BIN" cluster --port "$PORT" --nodes "$nodes" "${args[@]}" >"$dir.log" 2>&1 &
  pid=$!
  for _ in $(seq 150); do
    "$BIN" ring --node "http://127.0.0.1:$((PORT + nodes))" >/dev/null 2>&1 && break
    sleep 0.2
  done
  sleep 2 # two routing-table refreshes
  echo "$label: $("$BIN" bench --node "http://127.0.0.1:$((PORT + 1))" --op set -c 64 -d "$DURATION" --value-bytes 16 2>&1 | tail -n 1)"
  cleanup
  rm -f "$dir.log"
  pid=""
  dir=""
}

run "3 nodes, memory, 3 copies" 3
run "3 nodes, disk, fsync, 3 copies (defaults)" 3 --data-dir DIR
run "3 nodes, disk, --sync batched, 3 copies" 3 --data-dir DIR --sync batched
run "1 node, disk, fsync" 1 --data-dir DIR
run "3 nodes, disk, fsync, 1 copy" 3 --data-dir DIR --replication-factor 1
