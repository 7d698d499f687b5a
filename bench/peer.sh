# Shared by the run.sh of each benchmark folder: the Feast peer's environment and the
# build / bench / report commands. Source it, then call `bench_main MODULE "$@"` where
# MODULE.py (in the calling folder) has a main() and a report(results) function.
#
# Environment: LARDER_TARGET_DIR (default ~/.cache/larder-release), FEAST_VENV / BENCHDATA (the
#   Feast peer's venv and data, defaults as in /work/shared/bench/feast), FEAST_BENCH_DIR
#   (default /work/shared/bench/feast), BENCH_NICE=-10 (runs the benchmark at that niceness;
#   needs root).
set -euo pipefail
BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LARDER_TARGET_DIR="${LARDER_TARGET_DIR:-$HOME/.cache/larder-release}"
export LARDER_RELEASE_DIR="$LARDER_TARGET_DIR/release"
export FEAST_BENCH_DIR="${FEAST_BENCH_DIR:-/work/shared/bench/feast}"
export FEAST_VENV="${FEAST_VENV:-$HOME/.cache/larder-feast-bench/venv}"
export BENCHDATA="${BENCHDATA:-$HOME/.cache/larder-feast-bench/data}"
export PYTHONDONTWRITEBYTECODE=1
PY="$FEAST_VENV/bin/python"

# bench_main MODULE {build|bench|report} [MODULE.py options]
bench_main() {
  local here module cmd
  here="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
  module="$1"; shift
  cmd="${1:-bench}"; shift || true
  local runpy=("$PY")
  if [ -n "${BENCH_NICE:-}" ]; then runpy=(nice -n "$BENCH_NICE" "$PY"); fi
  case "$cmd" in
    build) (cd "$BENCH_ROOT" && CARGO_TARGET_DIR="$LARDER_TARGET_DIR" cargo build --release --workspace --bins --examples) ;;
    bench)
      [ -x "$PY" ] || "$FEAST_BENCH_DIR/run.sh" setup
      [ -f "$BENCHDATA/driver_stats.parquet" ] || "$FEAST_BENCH_DIR/run.sh" gen
      "${runpy[@]}" "$here/$module.py" "$@" ;;
    report) "$PY" -c "import sys, json; sys.argv=['x']; sys.path.insert(0, '$here'); import $module as b; b.report(json.load(open('$here/results.json')))" ;;
    *) echo "usage: $0 {build|bench|report}" >&2; exit 2 ;;
  esac
}
