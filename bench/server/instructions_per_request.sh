#!/usr/bin/env bash
# Instructions per request for one `larder serve` build, counted by callgrind: the same count
# for the same build and requests whatever else the machine is doing, so a change too small
# to see in requests/s on a noisy machine still shows (cpu_per_request.sh measures time).
#
# Usage: instructions_per_request.sh LARDER_BIN [REQUESTS=2000] [CONCURRENCY=8]
#   REPO       feature repo to serve (default: the server bench's SQLite repo under $BENCHDATA;
#              bench/redis's larder_redis_repo for Redis), already applied and materialized
#   BODY       request body (default: the 1-entity body of the Feast peer's requests)
#   SERVE_ARGS extra `larder serve` flags (default --workers 2)
#   KEEP       a file to copy the measured dump to, for callgrind_annotate
# Starts the server under `valgrind --tool=callgrind` with instrumentation off, sends 200
# warm-up requests, turns instrumentation on, sends REQUESTS requests from CONCURRENCY
# keep-alive connections, dumps, and prints the server's instructions (Ir) per request. Only
# the server is counted, not Redis or the client. Every response must be 200, or it fails.
set -euo pipefail
BIN=$(realpath "$1"); N=${2:-2000}; C=${3:-8}
DATA=${BENCHDATA:-$HOME/.cache/larder-feast-bench/data}
BODY=${BODY:-$DATA/requests/body_online_1.json}
PORT=6567
OUT=$(mktemp -d)
cd "${REPO:-$DATA/larder_server_repo}"
LARDER_LOG=${LARDER_LOG:-warn} valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$OUT/callgrind.out" \
  "$BIN" -c . serve --host 127.0.0.1 --port $PORT ${SERVE_ARGS:---workers 2} \
  > "$OUT/serve.log" 2>&1 &
VP=$!
trap 'kill $VP 2>/dev/null || true; rm -rf "$OUT"' EXIT
for _ in $(seq 600); do curl -sf http://127.0.0.1:$PORT/health > /dev/null && break; sleep 0.1; done
post() {
  python3 - "$PORT" "$BODY" "$1" "$C" <<'EOF'
import http.client, sys, threading
port, total, conns = int(sys.argv[1]), int(sys.argv[3]), int(sys.argv[4])
body = open(sys.argv[2], "rb").read()
failures = []
def worker(count):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(count):
        conn.request("POST", "/get-online-features", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            failures.append(response.status)
threads = [threading.Thread(target=worker, args=(total // conns + (i < total % conns),))
           for i in range(conns)]
for t in threads: t.start()
for t in threads: t.join()
if failures:
    sys.exit(f"{len(failures)} responses were not 200 (first: {failures[0]})")
EOF
}
post 200
callgrind_control -i on $VP > /dev/null 2>&1
post "$N"
callgrind_control -d $VP > /dev/null 2>&1
kill -TERM $VP; wait $VP 2>/dev/null || true
# The dump taken while instrumentation was on holds the measured requests; the final dump at
# exit holds only the shutdown.
measured=$(for f in "$OUT"/callgrind.out*; do
             echo "$(awk '/^summary:/ {print $2}' "$f") $f"
           done | sort -n | tail -1)
ir=${measured%% *}
if [ -n "${KEEP:-}" ]; then cp "${measured#* }" "$KEEP"; fi
echo "$(basename "$BIN") requests=$N c=$C server_instructions_per_request=$((ir / N))"
