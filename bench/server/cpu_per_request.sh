#!/usr/bin/env bash
# Requests/s and the server's CPU time per request for one `larder serve` build, for
# alternated before/after comparisons on one machine state (the full side-by-side with Feast
# is run.sh bench).
#
# Usage: cpu_per_request.sh LARDER_BIN [CONCURRENCY=8] [SECONDS=4]
#   REPO       feature repo to serve (default: the server bench's SQLite repo under $BENCHDATA;
#              bench/redis's larder_redis_repo for Redis), already applied and materialized
#   WRK_BODY   request body (default: the 1-entity body of the Feast peer's requests)
#   SERVE_ARGS extra `larder serve` flags (e.g. --workers 1)
# Starts the server on 127.0.0.1:6566, warms up for 1 s, then reads the server's (and a local
# redis-server's) utime+stime from /proc around one `wrk -t1` run with the Feast peer's
# wrk_post.lua, and wrk's own CPU time from /usr/bin/time. Set LARDER_LOG=warn, as the full
# benches do, so that request logging is not measured.
set -euo pipefail
BIN=$1; C=${2:-8}; D=${3:-4}
DATA=${BENCHDATA:-$HOME/.cache/larder-feast-bench/data}
FEAST_BENCH=${FEAST_BENCH_DIR:-/work/shared/bench/feast}
cd "${REPO:-$DATA/larder_server_repo}"
export WRK_BODY=${WRK_BODY:-$DATA/requests/body_online_1.json}
"$BIN" -c . serve --port 6566 ${SERVE_ARGS:-} > /dev/null 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:6566/health > /dev/null && break; sleep 0.1; done
URL=http://127.0.0.1:6566/get-online-features
wrk -t1 -c"$C" -d1s -s "$FEAST_BENCH/wrk_post.lua" "$URL" > /dev/null
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Redis, when one runs here (its CPU is part of each request on the Redis store).
RP=$(pgrep -x redis-server | head -1 || true)
t0=$(ticks $SP); r0=$([ -n "$RP" ] && ticks "$RP" || echo 0)
out=$( { /usr/bin/time -f "WRK_CPU %U %S" \
    wrk -t1 -c"$C" -d"${D}s" -s "$FEAST_BENCH/wrk_post.lua" "$URL"; } 2>&1)
t1=$(ticks $SP); r1=$([ -n "$RP" ] && ticks "$RP" || echo 0)
rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
reqs=$(echo "$out" | awk '/requests in/ {print $1}')
wrk_s=$(echo "$out" | awk '/WRK_CPU/ {print $2 + $3}')
hz=$(getconf CLK_TCK)
per() { echo "$1 * 1000000 / $reqs" | bc -l | cut -c1-5; }
echo "$(basename "$BIN") c=$C requests/s=$rps" \
  "server_cpu_us_per_request=$(per "($t1 - $t0) / $hz")" \
  "redis_cpu_us_per_request=$(per "($r1 - $r0) / $hz")" \
  "wrk_cpu_us_per_request=$(per "$wrk_s")"
