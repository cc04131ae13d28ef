#!/usr/bin/env bash
# A join under read load: fills one node with KEYS keys (RF 1, in memory), runs
# 16 readers through it, starts a second node that takes about half the keys,
# and prints how long the joiner took to serve and the readers' latency
# (p50, p99, max) across the join.
#
#   bench/join.sh                      # 2,000,000 keys: about 1,000,000 move
#   KEYS=200000 PORT=55000 bench/join.sh
#   JOIN=0 bench/join.sh               # the same readers with no join: the control
#
# Loopback only; every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-2000000}
PORT=${PORT:-54000}
READ_SECS=${READ_SECS:-14}
JOIN=${JOIN:-1}
cargo build --release --quiet
BIN=target/release
WORK=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
node="http://127.0.0.1:$((PORT + 1))"

"$BIN/crustyring" cluster --port "$PORT" --nodes 1 --replication-factor 1 >"$WORK/cluster.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do "$BIN/crustyring" ring --node "$node" >/dev/null 2>&1 && break; sleep 0.2; done

echo "filling $KEYS keys of 100 bytes..."
# The Get bench writes every key once before it reads.
"$BIN/crustyring" bench --node "$node" --via-nodes --op get --keys "$KEYS" -c 64 -d 0.1 --value-bytes 100 >/dev/null

# A connection per reader, as the figures in docs/performance.md were taken.
"$BIN/crustyring" bench --node "$node" --via-nodes --op get --keys "$KEYS" -c 16 -d "$READ_SECS" \
  --connections per-worker >"$WORK/readers.log" 2>&1 &
readers=$!
pids+=("$readers")
sleep 3
if [ "$JOIN" = 1 ]; then
  start=$(date +%s%N)
  "$BIN/dht" $((PORT + 2)) --registry "http://127.0.0.1:$PORT" --memory --replication-factor 1 >"$WORK/joiner.log" 2>"$WORK/joiner.err" &
  pids+=($!)
  for _ in $(seq 1200); do grep -q listening "$WORK/joiner.log" && break; sleep 0.05; done
  end=$(date +%s%N)
  echo "joiner serving $(( (end - start) / 1000000 )) ms after its process started"
fi
wait "$readers" || true
echo "readers (16 in flight, through the old owner; join: $JOIN):"
tail -1 "$WORK/readers.log"
"$BIN/crustyring" ring --node "$node"
