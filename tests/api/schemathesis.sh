#!/usr/bin/env bash
# The property run against the served API description: schemathesis generates
# requests for every operation in /openapi.json (valid and invalid ones, from
# a fixed seed) against a local 3-node cluster, and fails on any server error
# (5xx) or an answer the document does not describe. Run by .ci/run after the
# tests; bad input must get a clear 4xx, never a 5xx. The stateful phase is
# left out: schemathesis 4.32's state machine stops with its own error ("no
# progress can be made") on this API's links.
#
#   tests/api/schemathesis.sh              # builds target/debug/crustyring if missing
#   CRUSTY_BIN=target/release/crustyring EXAMPLES=100 tests/api/schemathesis.sh
#
# Installs schemathesis (pinned) once into ~/.cache/crustyring-schemathesis.
# Loopback only; the cluster it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${CRUSTY_ST_VENV:-$HOME/.cache/crustyring-schemathesis}
EXAMPLES=${EXAMPLES:-5}
if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==4.32.5"
fi
BIN=${CRUSTY_BIN:-target/debug/crustyring}
[ -x "$BIN" ] || cargo build -q --locked --bin crustyring
log=$(mktemp)
"$BIN" cluster --port 0 --nodes 3 >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 300); do
  grep -q "Ctrl-C stops the cluster" "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
node=$(awk '$1 == "node" { print $2; exit }' "$log")
[ -n "$node" ] || { echo "no node address in:"; cat "$log"; exit 1; }
echo "schemathesis against $node ($EXAMPLES examples per operation)"
timeout 900 "$VENV/bin/schemathesis" run "$node/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$EXAMPLES" --seed 1 --workers 1 --request-timeout 3 --no-shrink \
  --phases examples,coverage,fuzzing
