#!/usr/bin/env bash
# Durable PUT over HTTP, two builds side by side: a 3-node local cluster of each
# (`crustyring cluster --nodes 3`, on disk, the defaults: 3 copies, fsync), wrk
# with 64 connections to one node of each (two thirds of the keys are then
# forwarded to their owner), distinct keys (bench/wrk-put.lua), alternated
# rounds. Prints req/s and p99 per round.
#
#   bench/ab_put.sh OLD_BIN NEW_BIN            # e.g. /tmp/old/crustyring target/release/crustyring
#   ROUNDS=5 DURATION=10 PORT=37000 bench/ab_put.sh A B
#
# Needs wrk and curl. Loopback only; data in fresh temporary directories;
# every process it starts is stopped by PID.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 OLD_BIN NEW_BIN" >&2; exit 2; }
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
PORT=${PORT:-37000}
for tool in wrk curl; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }; done
lua="$(cd "$(dirname "$0")" && pwd)/wrk-put.lua"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
start() { # BIN PORT
  "$1" cluster --port "$2" --nodes 3 --data-dir "$work/$2" >"$work/$2.log" 2>&1 &
  pids+=("$!")
}
start "$1" "$PORT"
start "$2" $((PORT + 1000))
for p in $((PORT + 3)) $((PORT + 1003)); do
  for _ in $(seq 150); do curl -sf -o /dev/null "http://127.0.0.1:$p/readyz" && break; sleep 0.2; done
done
put() { # URL RUN
  wrk -c 64 -t 2 -d "${DURATION}s" --latency -s "$lua" "$1" -- crusty "$2" |
    awk '/Requests\/sec/ {r=$2} /^ +99%/ {p=$2} /Non-2xx/ {e=$NF} END {printf "%s req/s, p99 %s%s", r, p, (e ? ", non-2xx " e : "")}'
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  echo "round $r: old $(put "http://127.0.0.1:$((PORT + 1))" "a$r") | new $(put "http://127.0.0.1:$((PORT + 1001))" "b$r")"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
