#!/usr/bin/env bash
# Redis online store benchmark: Larder vs Feast 0.67 on Redis (materialize, serve, raw Redis ceiling).
#
# Usage: ./run.sh {build|bench|report} [bench_redis.py options]
#   build   release build of `larder` into $LARDER_TARGET_DIR
#   bench   sets up the Feast peer (venv, data) if missing, then runs bench_redis.py:
#           --reps N (1), --wrk-duration S (5), --concurrency 1 8 64, --feast-workers N (2), --no-feast, --skip materialize|serve|ceiling
#   report  re-render RESULTS.md from results.json
#
# Environment: LARDER_TARGET_DIR (default ~/.cache/larder-release), FEAST_VENV / BENCHDATA (the Feast
#   peer's venv and data), FEAST_BENCH_DIR (default /work/shared/bench/feast). Needs wrk and psutil (the
#   peer's `run.sh setup` installs both).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export LARDER_TARGET_DIR="${LARDER_TARGET_DIR:-$HOME/.cache/larder-release}"
export LARDER_RELEASE_DIR="$LARDER_TARGET_DIR/release"
export FEAST_BENCH_DIR="${FEAST_BENCH_DIR:-/work/shared/bench/feast}"
export FEAST_VENV="${FEAST_VENV:-$HOME/.cache/larder-feast-bench/venv}"
export BENCHDATA="${BENCHDATA:-$HOME/.cache/larder-feast-bench/data}"
export PYTHONDONTWRITEBYTECODE=1
PY="$FEAST_VENV/bin/python"

cmd="${1:-bench}"; shift || true
case "$cmd" in
  build) (cd "$ROOT" && CARGO_TARGET_DIR="$LARDER_TARGET_DIR" cargo build --release --workspace --bins --examples) ;;
  bench)
    [ -x "$PY" ] || "$FEAST_BENCH_DIR/run.sh" setup
    [ -f "$BENCHDATA/driver_stats.parquet" ] || "$FEAST_BENCH_DIR/run.sh" gen
    "$PY" "$HERE/bench_redis.py" "$@" ;;
  report) "$PY" -c "import sys, json; sys.argv=['x']; sys.path.insert(0, '$HERE'); import bench_redis as b; b.report(json.load(open('$HERE/results.json')))" ;;
  *) echo "usage: $0 {build|bench|report}" >&2; exit 2 ;;
esac
