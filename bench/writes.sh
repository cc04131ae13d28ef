#!/usr/bin/env bash
# Replicated write throughput: self-routed Sets (64 in flight, 16-byte values)
# against local clusters of this project, one shape at a time:
#   3 nodes in memory with 3 copies; 3 nodes on disk with fsync (the defaults);
#   3 nodes on disk with --sync batched; 1 node on disk; 3 nodes on disk, 1 copy.
#
#   bench/writes.sh                 # 8 s per shape
#   DURATION=4 PORT=23000 bench/writes.sh
#   BIN=/other/build/crustyring bench/writes.sh   # another build, side by side
#   SHAPES="memory defaults" bench/writes.sh      # some shapes only
#   BENCH_ARGS="--connections per-worker" bench/writes.sh
#
# Each build's own `bench` loads it. Builds before 7e32c4b give each request in
# flight a connection of its own; later ones share one per node unless told
# otherwise: against an older BIN, pass BENCH_ARGS="--connections per-worker"
# to the newer one so that both load alike.
#
# Loopback only, ports PORT.. (below the ephemeral range by default); every
# process it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
PORT=${PORT:-23000}
SHAPES=${SHAPES:-"memory defaults batched one-node one-copy"}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=target/release/crustyring
fi
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
  echo "$label: $("$BIN" bench --node "http://127.0.0.1:$((PORT + 1))" --op set -c 64 -d "$DURATION" --value-bytes 16 ${BENCH_ARGS:-} 2>&1 | tail -n 1)"
  cleanup
  rm -f "$dir.log"
  pid=""
  dir=""
}

for shape in $SHAPES; do
  case $shape in
    memory) run "3 nodes, memory, 3 copies" 3 ;;
    defaults) run "3 nodes, disk, fsync, 3 copies (defaults)" 3 --data-dir DIR ;;
    batched) run "3 nodes, disk, --sync batched, 3 copies" 3 --data-dir DIR --sync batched ;;
    one-node) run "1 node, disk, fsync" 1 --data-dir DIR ;;
    one-copy) run "3 nodes, disk, fsync, 1 copy" 3 --data-dir DIR --replication-factor 1 ;;
    *) echo "unknown shape $shape (memory defaults batched one-node one-copy)" >&2; exit 2 ;;
  esac
done
