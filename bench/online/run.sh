#!/usr/bin/env bash
# Online path benchmark: Larder vs Feast 0.67 (materialize into SQLite, SDK online reads).
#
# Usage: ./run.sh {build|bench|report} [bench_online.py options]
#   build   release build of `larder` and the `online_latency` example into $LARDER_TARGET_DIR
#   bench   sets up the Feast peer (venv, data) if missing, then runs bench_online.py:
#           --reps N (3), --calls N (1000), --sections materialize 10x online, --no-feast
#   report  re-render RESULTS.md from results.json
#
# Environment: LARDER_TARGET_DIR (default ~/.cache/larder-release), FEAST_VENV / BENCHDATA (the Feast
#   peer's venv and data, defaults as in ../shared/bench/feast), BENCHDATA_10X (10x data, generated on
#   first use), FEAST_BENCH_DIR (default /work/shared/bench/feast), BENCH_NICE=-10 (needs root).
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
RUNPY=("$PY")
if [ -n "${BENCH_NICE:-}" ]; then RUNPY=(nice -n "$BENCH_NICE" "$PY"); fi

build() {
  (cd "$ROOT" && CARGO_TARGET_DIR="$LARDER_TARGET_DIR" cargo build --release --workspace --bins --examples)
}

peer() {
  [ -x "$PY" ] || "$FEAST_BENCH_DIR/run.sh" setup
  [ -f "$BENCHDATA/driver_stats.parquet" ] || "$FEAST_BENCH_DIR/run.sh" gen
}

cmd="${1:-bench}"; shift || true
case "$cmd" in
  build) build ;;
  bench) peer; "${RUNPY[@]}" "$HERE/bench_online.py" "$@" ;;
  report) "$PY" -c "import sys; sys.argv=['x']; sys.path.insert(0, '$HERE'); import bench_online as b, json; b.report(json.load(open('$HERE/results.json')))" ;;
  *) echo "usage: $0 {build|bench|report}" >&2; exit 2 ;;
esac
