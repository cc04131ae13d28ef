#!/usr/bin/env bash
# Where a durable replicated PUT's CPU goes, for one or two builds side by side:
# a registry and 3 `dht` processes with the defaults (redb on disk, RF 3, fsync
# before acknowledging), wrk PUTs of distinct keys to the first node (64
# connections, 16-byte values), and each process thread's CPU over the run,
# summed by thread name (from /proc/PID/task/*/stat), in % of one core.
# Alternating rounds, so that a noisy machine hurts both builds alike.
#
#   bench/put_cpu.sh target/release                      # one build (its bin dir)
#   bench/put_cpu.sh /tmp/old/target/release target/release
#   ROUNDS=3 DURATION=10 PORT=46100 bench/put_cpu.sh A B
#
# Needs wrk (Debian: apt-get install wrk). Loopback only; every process it
# starts is stopped by PID.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BIN_DIR [BIN_DIR]" >&2; exit 2; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
PORT=${PORT:-46100}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
pids=()
work=""
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$work" ] && rm -rf "$work"
  return 0
}
trap cleanup EXIT

cpu() { # thread CPU ticks of every started process, "name ticks" per thread
  for pid in "${pids[@]}"; do
    for task in /proc/"$pid"/task/*; do
      printf '%s %s\n' "$(tr ' ' _ <"$task/comm")" "$(awk '{print $14 + $15}' "$task/stat")"
    done
  done
}

round() { # BIN_DIR
  local bin=$1 i port
  work=$(mktemp -d)
  pids=()
  "$bin/registry" --port "$PORT" >"$work/registry.out" 2>&1 &
  pids+=($!)
  for i in $(seq 50); do grep -q listening "$work/registry.out" && break; sleep 0.1; done
  for i in 1 2 3; do
    port=$((PORT + i))
    "$bin/dht" "$port" --registry "http://127.0.0.1:$PORT" --data-dir "$work/node-$port" \
      >"$work/node-$port.out" 2>&1 &
    pids+=($!)
  done
  for i in $(seq 150); do
    [ "$("$bin/crustyring" ring --node "http://127.0.0.1:$((PORT + 1))" 2>/dev/null \
      | grep -c ' serving ')" = 3 ] && break
    sleep 0.2
  done
  # Until every routing table holds every member, forwards take a hop more.
  sleep 2
  cpu >"$work/before"
  wrk --latency -c 64 -t 2 -d "${DURATION}s" -s "$REPO/bench/wrk-put.lua" \
    "http://127.0.0.1:$((PORT + 1))" -- crusty "$RANDOM$RANDOM" 16 >"$work/wrk.txt"
  cpu >"$work/after"
  printf '%s: %s req/s, p99 %s\n' "$bin" "$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")" \
    "$(awk '/^ +99%/ {print $2}' "$work/wrk.txt")"
  # Ticks are 1/100 s: per thread name, (after - before) / DURATION is % of a core.
  awk -v d="$DURATION" 'NR == FNR { before[$1] += $2; next } { after[$1] += $2 }
    END { for (n in after) { c = (after[n] - before[n]) / d; if (c >= 0.5) printf "  %-24s %5.1f%%\n", n, c } }' \
    "$work/before" "$work/after" | sort -k2 -rn
  cleanup
  work=""
}

for _ in $(seq "$ROUNDS"); do
  for bin in "$@"; do round "$bin"; done
done
