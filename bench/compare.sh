#!/usr/bin/env bash
# Side-by-side throughput on loopback, in one run: the original Crusty Ring (built
# from ../shared/reference/crustyring-seed), this project, and a 3-member etcd.
# Prints one markdown table at the end.
#
# Usage (from anywhere; run as root, or with the tools below already installed):
#   bench/compare.sh [-n "1 4 8"] [-d SECONDS] [-c IN_FLIGHT] [-p BASE_PORT]
#                    [--connections per-node|per-worker]
#                    [-s "original ours-mem ours-disk http"] [--skip-install] [--skip-build]
#   NODES="1 8" DURATION=5 bench/compare.sh        # a quick subset
#
# Flags beat environment variables beat defaults:
#   -n, NODES        ring sizes for the gRPC rows              (default "1 4 8")
#   -d, DURATION     seconds per load run                      (default 10)
#   -c, CONCURRENCY  requests in flight, gRPC rows             (default 64)
#   --connections, CONNECTIONS  how the gRPC client's requests in flight hold
#                    their connections: per-node (one per node, shared: one
#                    application with a channel per node) or per-worker (one per
#                    request in flight and node: as many separate clients, each
#                    paying its own system calls; the figures before commit
#                    7e32c4b were taken so)                    (default per-node)
#   -p, BASE_PORT    first port this script uses               (default 52000)
#   -s, SYSTEMS      which rows: original ours-mem ours-disk http (default: all)
#   KEYS (10000), VALUE_BYTES (16), WRK_CONNECTIONS (64), WRK_THREADS (2),
#   SEED_SRC (../shared/reference/crustyring-seed next to the repo),
#   SEED_BUILD_DIR (/tmp/crustyring-seed-build: the original is built there, never
#   in the repo), NETNS (1: measure in a private network namespace, see below),
#   KEEP_WORK (1: keep the temp dir with every log and raw output).
#
# Rows (gRPC load: `crustyring bench`, closed loop; HTTP load: wrk --latency):
#   original   the original, N nodes, in memory; Get and Set sent to its nodes in
#              turn (--via-nodes), its ring forwards one neighbour at a time.
#   ours-mem   this project, N `dht` processes, --memory --replication-factor 1;
#              Get and Set via the nodes (--via-nodes) and self-routed (default).
#   ours-disk  this project with the defaults (redb on disk, RF 3, fsync before
#              acknowledging), N `dht` processes; Get and Set, self-routed.
#   http       durable PUT of distinct 16-byte values, wrk 64 connections, 2 threads:
#              etcd 3 members (Debian's etcd-server, v3 JSON gateway) through the
#              leader and through a follower, vs ours 3 nodes with the defaults.
#              All of a wrk's connections go to one node: one wrk gives exact
#              percentiles (those of several cannot be merged), and ours forwards
#              the same 2/3 of the keys whichever node they enter by.
#
# The original's registry listens on port 50000, fixed in its code, and its nodes
# bind 0.0.0.0. So that it clashes with nothing (a dev cluster on 50000, other
# engineers' tests) and listens on nothing but loopback, the measuring phase runs
# in a private network namespace (`unshare --net`, root) whose only interface is
# lo. With NETNS=0 it runs in the host's namespace and needs port 50000 free.
# Every process is started here, its PID recorded, and only those are killed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT="$REPO/bench/$(basename "${BASH_SOURCE[0]}")"

NODES=${NODES:-"1 4 8"}
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-64}
CONNECTIONS=${CONNECTIONS:-per-node}
BASE_PORT=${BASE_PORT:-52000}
SYSTEMS=${SYSTEMS:-"original ours-mem ours-disk http"}
KEYS=${KEYS:-10000}
VALUE_BYTES=${VALUE_BYTES:-16}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
SEED_SRC=${SEED_SRC:-"$REPO/../shared/reference/crustyring-seed"}
SEED_BUILD_DIR=${SEED_BUILD_DIR:-/tmp/crustyring-seed-build}
NETNS=${NETNS:-1}
KEEP_WORK=${KEEP_WORK:-0}
SKIP_INSTALL=${SKIP_INSTALL:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
ORIGINAL_REGISTRY_PORT=50000 # hard-coded in the original

usage() { sed -n '2,/^set -euo/p' "$SCRIPT" | sed '$d; s/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
    -n | --nodes) NODES=$2; shift 2 ;;
    -d | --duration) DURATION=$2; shift 2 ;;
    -c | --concurrency) CONCURRENCY=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    -p | --base-port) BASE_PORT=$2; shift 2 ;;
    -s | --systems) SYSTEMS=$2; shift 2 ;;
    --skip-install) SKIP_INSTALL=1; shift ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
case $CONNECTIONS in
per-node | per-worker) ;;
*) die "--connections (CONNECTIONS) must be per-node or per-worker, not '$CONNECTIONS'" ;;
esac
wants() { [[ " $SYSTEMS " == *" $1 "* ]]; }

SEED_DIR="$SEED_BUILD_DIR/crustyring-seed"
ORIG_BIN="$SEED_DIR/target/release"
OURS_BIN="$REPO/target/release"

# ---------------------------------------------------------------- 1. prepare
# (in the host's namespace: installing and building need the package registries)
if [[ -z ${CR_BENCH_MEASURING:-} ]]; then
    if [[ $SKIP_INSTALL != 1 ]]; then
        missing=()
        command -v protoc >/dev/null || missing+=(protobuf-compiler)
        if wants http; then
            command -v etcd >/dev/null || missing+=(etcd-server)
            command -v wrk >/dev/null || missing+=(wrk)
        fi
        if ((${#missing[@]})); then
            log "installing ${missing[*]}"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        fi
    fi
    if [[ $SKIP_BUILD != 1 ]]; then
        if wants original; then
            [[ -f $SEED_SRC/Cargo.toml ]] || die "no original at $SEED_SRC (set SEED_SRC)"
            case $(realpath -m "$SEED_BUILD_DIR")/ in
            "$REPO"/*) die "SEED_BUILD_DIR must be outside the repo" ;;
            esac
            # A fresh copy only when the source changed, so cargo can reuse its target.
            if ! diff -rq --exclude=target "$SEED_SRC" "$SEED_DIR" >/dev/null 2>&1; then
                log "copying the original to $SEED_DIR"
                rm -rf "$SEED_DIR"
                mkdir -p "$SEED_BUILD_DIR"
                cp -r "$SEED_SRC" "$SEED_DIR"
                chmod -R u+w "$SEED_DIR"
            fi
            log "building the original (cargo build --release --locked --bin registry --bin dht)"
            # (its own warnings go to the log, not to the screen)
            (cd "$SEED_DIR" && cargo build --release --locked --bin registry --bin dht) \
                >"$SEED_BUILD_DIR/build.log" 2>&1 ||
                { tail -n 30 "$SEED_BUILD_DIR/build.log"; die "building the original failed"; }
        fi
        log "building this project (cargo build --release)"
        (cd "$REPO" && cargo build --release)
    fi
    if [[ $NETNS == 1 ]]; then
        [[ $(id -u) == 0 ]] || die "NETNS=1 needs root for unshare --net (or set NETNS=0)"
        log "measuring in a private network namespace (loopback only)"
        exec unshare --net -- env CR_BENCH_MEASURING=1 NODES="$NODES" DURATION="$DURATION" \
            CONCURRENCY="$CONCURRENCY" CONNECTIONS="$CONNECTIONS" BASE_PORT="$BASE_PORT" SYSTEMS="$SYSTEMS" \
            bash "$SCRIPT"
    fi
    export CR_BENCH_MEASURING=1
fi

# ---------------------------------------------------------------- 2. measure
if [[ $NETNS == 1 ]]; then
    ip link set lo up
    # Outgoing connections take ephemeral ports; one holding a port a server is
    # about to bind makes that server fail. This namespace's own range stays
    # below 50000 (the original's registry) and BASE_PORT.
    sysctl -qw net.ipv4.ip_local_port_range="32768 49999"
fi
wants original && { [[ -x $ORIG_BIN/dht ]] || die "the original is not built ($ORIG_BIN/dht)"; }
[[ -x $OURS_BIN/crustyring ]] || die "this project is not built ($OURS_BIN/crustyring)"
if wants http; then
    command -v etcd >/dev/null || die "etcd not installed (apt-get install etcd-server)"
    command -v wrk >/dev/null || die "wrk not installed (apt-get install wrk)"
fi

WORK=$(mktemp -d /tmp/crusty-compare.XXXXXX)
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
PIDS=()
declare -A NAMES # PID -> log name

stop_all() { # kills the processes this script started, and only those
    local pid
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    NAMES=()
}
cleanup() {
    stop_all
    if [[ $KEEP_WORK == 1 ]]; then log "logs and raw output kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
need_free() {
    local p
    for p in "$@"; do port_free "$p" || die "port $p is in use (choose another -p BASE_PORT)"; done
}
# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s; gives up
# at once when a process started here has exited. Giving up exits the script,
# or with WAIT_SOFT=1 logs and returns 1.
wait_for() {
    local secs=$1 what=$2 deadline pid
    shift 2
    deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null ||
                give_up "${NAMES[$pid]} exited while waiting for $what: $(tail -n 3 "$WORK/${NAMES[$pid]}.err" | tr '\n' ' ')" ||
                return 1
        done
        ((SECONDS < deadline)) || give_up "timed out waiting for $what" || return 1
        sleep 0.1
    done
}
give_up() { if [[ ${WAIT_SOFT:-0} == 1 ]]; then log "$1"; return 1; else die "$1"; fi; }
listening() { ! port_free "$1"; }
start() { # start LOGNAME COMMAND...: runs it in the background and records its PID
    local name=$1
    shift
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    NAMES[$!]=$name
}
urls() { # urls FIRST_PORT N: http://127.0.0.1:P,... for N ports
    local i list=()
    for ((i = 0; i < $2; i++)); do list+=("http://127.0.0.1:$(($1 + i))"); done
    (IFS=,; echo "${list[*]}")
}

# ---- load runs: each bounded in time, its figures appended to $RESULTS as
# system nodes client op ops p50 p99 errors forwards
BENCH_LIMIT=$((DURATION + 120)) # the Get warm-up writes KEYS keys first
grpc_run() { # grpc_run SYSTEM NODES CLIENT OP URLS [--via-nodes]
    local system=$1 nodes=$2 client=$3 op=$4 urls=$5
    shift 5
    local out="$WORK/bench-$system-$nodes-${client// /-}-$op.txt"
    log "$system, $nodes node(s), $op, $client: $CONCURRENCY in flight ($CONNECTIONS connections) for ${DURATION} s"
    if ! timeout -k 5 "$BENCH_LIMIT" "$OURS_BIN/crustyring" bench --node "$urls" "$@" \
        --op "$op" -c "$CONCURRENCY" --connections "$CONNECTIONS" -d "$DURATION" --keys "$KEYS" \
        --value-bytes "$VALUE_BYTES" >"$out" 2>&1; then
        log "  failed: $(tail -n 3 "$out" | tr '\n' ' ')"
        printf '%s\t%s\t%s\t%s\tfailed\t-\t-\t-\t-\n' "$system" "$nodes" "$client" "$op" >>"$RESULTS"
        return 0
    fi
    # "7826 ops/s, p50 7.161 ms, p99 22.263 ms, max 40.1 ms, 16079 ok, 0 errors in 2.1 s, forwards/request 0.667"
    local line
    line=$(grep -E '^[0-9.]+ ops/s' "$out" | tail -n 1)
    log "  $line"
    sed -E 's#^([0-9.]+) ops/s, p50 ([0-9.]+) ms, p99 ([0-9.]+) ms,( max [0-9.]+ ms,)? [0-9]+ ok, ([0-9]+) errors in [0-9.]+ s(, forwards/request (.*))?$#\1\t\2\t\3\t\5\t\7#' \
        <<<"$line" | awk -F'\t' -v s="$system" -v n="$nodes" -v c="$client" -v o="$op" \
        'BEGIN { OFS = "\t" } { f = ($5 == "" || $5 == "not reported") ? "-" : $5
          print s, n, c, o, $1, $2, $3, $4, f }' >>"$RESULTS"
}
wrk_run() { # wrk_run SYSTEM CLIENT URL MODE
    local system=$1 client=$2 url=$3 mode=$4
    local out="$WORK/wrk-$system-${client// /-}.txt"
    log "$system, 3 nodes, durable PUT over HTTP, $client: wrk -c $WRK_CONNECTIONS -t $WRK_THREADS -d ${DURATION}s"
    if ! timeout -k 5 $((DURATION + 30)) wrk --latency --timeout 10s -c "$WRK_CONNECTIONS" \
        -t "$WRK_THREADS" -d "${DURATION}s" -s "$REPO/bench/wrk-put.lua" "$url" \
        -- "$mode" "$RANDOM$RANDOM" "$VALUE_BYTES" >"$out" 2>&1; then
        log "  failed: $(tail -n 3 "$out" | tr '\n' ' ')"
        printf '%s\t3\t%s\tPUT\tfailed\t-\t-\t-\t-\n' "$system" "$client" >>"$RESULTS"
        return 0
    fi
    log "  $(grep Requests/sec "$out")"
    awk -v s="$system" -v c="$client" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0;
                         if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v }
        /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
        /Requests\/sec:/ { rps = $2 }
        /Socket errors:/ { gsub(",", ""); errs += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { errs += $5 }
        END { printf "%s\t3\t%s\tPUT\t%.0f\t%.3f\t%.3f\t%d\t-\n", s, c, rps, p50, p99, errs }
    ' "$out" >>"$RESULTS"
}

# ---- the systems
start_original() { # N: registry on 50000, nodes on BASE_PORT+1.., one at a time
    local attempt
    for attempt in 1 2 3; do
        start_original_once "$1" && return 0
        log "the original's ring of $1 did not come together (attempt $attempt); starting it again"
        stop_all
    done
    die "the original's ring of $1 did not come together in 3 attempts"
}
start_original_once() { # N; returns 1 when the ring does not answer as it should
    local n=$1 i port
    need_free "$ORIGINAL_REGISTRY_PORT"
    for ((i = 1; i <= n; i++)); do need_free $((BASE_PORT + i)); done
    # No RUST_LOG: at info the original logs every query.
    start orig-registry env -u RUST_LOG REGISTRY_HOSTNAME=127.0.0.1 "$ORIG_BIN/registry"
    WAIT_SOFT=1 wait_for 30 "the original's registry" listening "$ORIGINAL_REGISTRY_PORT" || return 1
    for ((i = 1; i <= n; i++)); do
        port=$((BASE_PORT + i))
        start "orig-node-$port" env -u RUST_LOG REGISTRY_HOSTNAME=127.0.0.1 \
            NODE_HOSTNAME=127.0.0.1 "$ORIG_BIN/dht" "$port"
        WAIT_SOFT=1 wait_for 30 "the original's node on $port" listening "$port" || return 1
        # It serves before its join (neighbour links, key transfer) has finished,
        # and simultaneous joins are not safe: its README starts nodes ~1 s apart.
        # Then a key written through the first node must read back through the new
        # node and the first (after its arc moved, if it did) before the next joins.
        sleep 1
        if ((i == 1)); then
            WAIT_SOFT=1 wait_for 10 "a write through the original's first node" timeout 3 \
                "$OURS_BIN/crustyring" put compare-probe ok --node "http://127.0.0.1:$port" || return 1
        fi
        WAIT_SOFT=1 wait_for 10 "a read through the original's node $port" \
            probe_reads "http://127.0.0.1:$port" || return 1
        WAIT_SOFT=1 wait_for 10 "a read through the original's first node" \
            probe_reads "http://127.0.0.1:$((BASE_PORT + 1))" || return 1
    done
    # Finally through every node.
    for ((port = BASE_PORT + 1; port <= BASE_PORT + n; port++)); do
        WAIT_SOFT=1 wait_for 10 "a read through the original's node $port" \
            probe_reads "http://127.0.0.1:$port" || return 1
    done
}
probe_reads() { [[ $(timeout 3 "$OURS_BIN/crustyring" get compare-probe --node "$1" 2>&1) == ok ]]; }
start_ours() { # N REGISTRY_PORT DHT_ARGS...: registry and N dht processes, all at
    # once; "{port}" in DHT_ARGS becomes each node's port.
    local n=$1 reg=$2 i port
    shift 2
    need_free "$reg"
    for ((i = 1; i <= n; i++)); do need_free $((reg + i)); done
    start "ours-registry-$reg" "$OURS_BIN/registry" --port "$reg"
    wait_for 30 "our registry on $reg" grep -q listening "$WORK/ours-registry-$reg.out"
    for ((i = 1; i <= n; i++)); do
        port=$((reg + i))
        start "ours-node-$port" "$OURS_BIN/dht" "$port" --registry "http://127.0.0.1:$reg" \
            "${@//\{port\}/$port}"
    done
    for ((i = 1; i <= n; i++)); do
        port=$((reg + i))
        wait_for 60 "our node on $port" grep -q listening "$WORK/ours-node-$port.out"
    done
    # Every node serving, in one closed ring, as seen from the first.
    wait_for 60 "our ring of $n" ring_serving "http://127.0.0.1:$((reg + 1))" "$n"
    # Each node relearns its routing table every --table-refresh-ms (1 s); until
    # every table holds every member, forwards take an extra hop. Two refreshes.
    sleep 2
}
ring_serving() { # URL N: the ring walk from URL shows N serving nodes
    [[ $("$OURS_BIN/crustyring" ring --node "$1" 2>/dev/null | grep -c ' serving ') == "$2" ]]
}
etcd_healthy() { curl -sf "http://127.0.0.1:$1/health" | grep -q '"health":"true"'; }
etcd_is_leader() { # PORT: the member behind this client port leads
    local status
    status=$(curl -sf -X POST -d '{}' "http://127.0.0.1:$1/v3/maintenance/status")
    [[ $(sed -E 's/.*"member_id":"([0-9]+)".*/\1/' <<<"$status") == \
        $(sed -E 's/.*"leader":"([0-9]+)".*/\1/' <<<"$status") ]]
}
start_etcd() { # 3 members: client ports ETCD_BASE+1..3, peer ports ETCD_BASE+11..13
    local i cluster=""
    for i in 1 2 3; do
        need_free $((ETCD_BASE + i)) $((ETCD_BASE + 10 + i))
        cluster+="${cluster:+,}m$i=http://127.0.0.1:$((ETCD_BASE + 10 + i))"
    done
    for i in 1 2 3; do
        start "etcd-m$i" etcd --name "m$i" --data-dir "$WORK/etcd-m$i" \
            --listen-client-urls "http://127.0.0.1:$((ETCD_BASE + i))" \
            --advertise-client-urls "http://127.0.0.1:$((ETCD_BASE + i))" \
            --listen-peer-urls "http://127.0.0.1:$((ETCD_BASE + 10 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_BASE + 10 + i))" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token crusty-compare --log-level warn
    done
    for i in 1 2 3; do wait_for 60 "etcd member m$i" etcd_healthy $((ETCD_BASE + i)); done
}

ETCD_BASE=$((BASE_PORT + 300))
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

for n in $NODES; do
    if wants original; then
        log "== the original, $n node(s)"
        start_original "$n"
        urls_o=$(urls $((BASE_PORT + 1)) "$n")
        grpc_run original "$n" "via nodes" set "$urls_o" --via-nodes
        grpc_run original "$n" "via nodes" get "$urls_o" --via-nodes
        stop_all
    fi
    if wants ours-mem; then
        log "== ours, $n node(s), in memory, RF 1"
        start_ours "$n" $((BASE_PORT + 100)) --memory --replication-factor 1
        urls_m=$(urls $((BASE_PORT + 101)) "$n")
        grpc_run ours-mem "$n" "via nodes" set "$urls_m" --via-nodes
        grpc_run ours-mem "$n" "via nodes" get "$urls_m" --via-nodes
        grpc_run ours-mem "$n" "self-routed" set "$urls_m"
        grpc_run ours-mem "$n" "self-routed" get "$urls_m"
        stop_all
    fi
    if wants ours-disk; then
        log "== ours, $n node(s), the defaults (disk, RF 3, fsync)"
        start_ours "$n" $((BASE_PORT + 200)) --data-dir "$WORK/disk-$n/node-{port}"
        urls_d=$(urls $((BASE_PORT + 201)) "$n")
        grpc_run ours-disk "$n" "self-routed" set "$urls_d"
        grpc_run ours-disk "$n" "self-routed" get "$urls_d"
        stop_all
    fi
done

if wants http; then
    log "== etcd, 3 members"
    start_etcd
    leader="" follower=""
    for i in 1 2 3; do
        if etcd_is_leader $((ETCD_BASE + i)); then leader=${leader:-$((ETCD_BASE + i))}
        else follower=${follower:-$((ETCD_BASE + i))}; fi
    done
    [[ -n $leader && -n $follower ]] || die "no etcd leader elected"
    wrk_run etcd "to the leader" "http://127.0.0.1:$leader" etcd
    wrk_run etcd "to a follower" "http://127.0.0.1:$follower" etcd
    stop_all
    log "== ours, 3 nodes, the defaults, over HTTP"
    start_ours 3 $((BASE_PORT + 400)) --data-dir "$WORK/http-disk/node-{port}"
    wrk_run ours-disk "to one node" "http://127.0.0.1:$((BASE_PORT + 401))" crusty
    stop_all
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"

# ---------------------------------------------------------------- 3. the table
echo
echo "Crusty Ring side by side, $(date -u +'%Y-%m-%d %H:%M UTC'), $(nproc) cores," \
    "load average $LOAD_BEFORE before, $LOAD_AFTER after; measuring took ${SECONDS} s"
echo "gRPC: crustyring bench, $CONCURRENCY in flight, $CONNECTIONS connections, ${DURATION} s, $KEYS keys, ${VALUE_BYTES}-byte values;" \
    "HTTP: wrk -c $WRK_CONNECTIONS -t $WRK_THREADS -d ${DURATION}s --latency, distinct keys, ${VALUE_BYTES}-byte values."
echo "ratio: ops/s over the original's at the same nodes and op (gRPC rows), over etcd's through its leader (HTTP rows)."
echo
awk -F'\t' '
    { row[NR] = $0; if ($1 == "original") orig[$2 "/" $4] = $5
      if ($1 == "etcd" && $3 == "to the leader") etcd = $5 }
    END {
        print "| system | nodes | client | op | ops/s | p50 ms | p99 ms | errors | forwards/request | ratio |"
        print "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        for (i = 1; i <= NR; i++) {
            split(row[i], f, "\t")
            base = (f[4] == "PUT") ? etcd : orig[f[2] "/" f[4]]
            ratio = "-"
            if (f[1] != "original" && f[1] != "etcd" && base > 0 && f[5] ~ /^[0-9.]+$/)
                ratio = sprintf("%.2f", f[5] / base)
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], ratio
        }
    }' "$RESULTS"
