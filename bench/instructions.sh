#!/usr/bin/env bash
# Instructions per HTTP GET, two builds side by side, counted by callgrind:
# repeatable whatever else the machine is doing (req/s on this shared box
# varies by +-10% from run to run, more than many changes cost). Each build
# runs a one-node local cluster (in memory) under valgrind; after a warm-up,
# the counters are zeroed, N keep-alive GETs of one key are sent from one
# client, and the counts are dumped. Prints instructions per request for each
# build, then the functions whose own (exclusive) count per request changed
# most.
#
#   bench/instructions.sh OLD_BIN NEW_BIN          # e.g. /tmp/old/crustyring target/release/crustyring
#   N=5000 PORT=32000 bench/instructions.sh A B
#
# Needs valgrind (callgrind_control, callgrind_annotate), python3 and curl.
# Loopback only; every process it starts is stopped by PID.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 OLD_BIN NEW_BIN" >&2; exit 2; }
N=${N:-2000}
PORT=${PORT:-32000}
for tool in valgrind callgrind_control callgrind_annotate python3 curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
out=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT
gets() { # PORT COUNT: keep-alive GETs of /keys/k, each checked
  python3 - "$1" "$2" <<'EOF'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    c.request("GET", "/keys/k?raw=true")
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
EOF
}
measure() { # SIDE BIN PORT
  valgrind --tool=callgrind --callgrind-out-file="$out/$1.%p" "$2" cluster --port "$3" --nodes 1 \
    >"$out/$1.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  local node="http://127.0.0.1:$(($3 + 1))"
  for _ in $(seq 600); do curl -sf -o /dev/null "$node/readyz" && break; sleep 0.2; done
  curl -sf -X PUT "$node/keys/k" -d 0123456789abcdef >/dev/null
  gets $(($3 + 1)) 200
  callgrind_control -z "$pid" >/dev/null
  gets $(($3 + 1)) "$N"
  callgrind_control -d "$pid" >/dev/null
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  callgrind_annotate --inclusive=no --threshold=100 "$out/$1".*.1 2>/dev/null |
    sed -nE 's/^ *([0-9,]+) \( *[0-9.]+%\)  (.*)$/\1\t\2/p' | tr -d ',' >"$out/$1.txt"
}
measure A "$1" "$PORT"
measure B "$2" $((PORT + 100))
python3 - "$out/A.txt" "$out/B.txt" "$N" <<'EOF'
import sys
def load(path):
    d = {}
    for line in open(path):
        n, name = line.rstrip("\n").split("\t", 1)
        name = name.strip().rsplit(" [", 1)[0]
        d[name] = d.get(name, 0) + int(n)
    return d
a, b, n = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
ta, tb = a.get("PROGRAM TOTALS", 0) / n, b.get("PROGRAM TOTALS", 0) / n
print(f"instructions per GET: A {ta:.0f}, B {tb:.0f} ({(tb / ta - 1) * 100:+.1f}%), {n} requests")
# callgrind_annotate also lists the thread roots with the whole count; leave
# out anything that holds (nearly) everything.
own = [k for k in set(a) | set(b) if a.get(k, 0) / n < 0.9 * ta and b.get(k, 0) / n < 0.9 * tb]
rows = sorted(own, key=lambda k: -abs(b.get(k, 0) - a.get(k, 0)))[:15]
print(f"{'B-A':>7} {'A':>7} {'B':>7}  function (own instructions per GET)")
for k in rows:
    print(f"{(b.get(k, 0) - a.get(k, 0)) / n:7.0f} {a.get(k, 0) / n:7.0f} {b.get(k, 0) / n:7.0f}  {k[:100]}")
EOF
