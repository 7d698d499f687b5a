#!/usr/bin/env bash
# Point-in-time join benchmark: Larder vs DuckDB ASOF LEFT JOIN, and Larder vs Feast's duckdb offline store.
#
# Usage: ./run.sh {setup|gen|bench|feast|report} [args]
#   setup            venv at $LARDER_BENCH_VENV with requirements.txt (duckdb, pyarrow, numpy); Debian `time`
#   gen   [S F K]    seeded Parquet data into $PITDATA/s{S}_f{F}_k{K}/ (default 10000000 10000000 1000000)
#   bench [S F K] [bench_pit.py options]   time Larder and DuckDB on that data (generates it if missing),
#                    update results.json and RESULTS.md.  Options: --reps N, --check/--no-check,
#                    --peer-only (DuckDB only, e.g. before the larder binary exists), --memory-limit 6GB
#   feast [options]  the Feast-shaped case: Feast 0.67 duckdb offline store vs Larder, 100k entity rows
#   report           re-render RESULTS.md from results.json
#
# Environment: LARDER_BIN (default ~/.cache/larder-ci/release/larder), PITDATA (default ~/.cache/larder-bench/pit),
#   LARDER_BENCH_VENV (default ~/.cache/larder-bench/venv), FEAST_VENV / BENCHDATA (the Feast peer's venv and data,
#   defaults as in ../shared/bench/feast), FEAST_BENCH_DIR (default /work/shared/bench/feast),
#   BENCH_NICE=-10 (run at that niceness on a shared machine; needs root), BENCH_QUIET_BUDGET_S (default 300).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export LARDER_BENCH_VENV="${LARDER_BENCH_VENV:-$HOME/.cache/larder-bench/venv}"
export PITDATA="${PITDATA:-$HOME/.cache/larder-bench/pit}"
export LARDER_BIN="${LARDER_BIN:-$HOME/.cache/larder-ci/release/larder}"
export PYTHONDONTWRITEBYTECODE=1
PY="$LARDER_BENCH_VENV/bin/python"
RUNPY=("$PY")
if [ -n "${BENCH_NICE:-}" ]; then RUNPY=(nice -n "$BENCH_NICE" "$PY"); fi

need_venv() {
  [ -x "$PY" ] && "$PY" -c 'import duckdb, pyarrow, numpy' 2>/dev/null || {
    echo "no benchmark venv at $LARDER_BENCH_VENV: run '$0 setup' first" >&2; exit 1; }
}

setup() {
  [ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time; }
  [ -x "$PY" ] || python3 -m venv "$LARDER_BENCH_VENV"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -r "$HERE/requirements.txt"
  "$PY" -c 'import duckdb, pyarrow, numpy, sys; print("duckdb", duckdb.__version__, "pyarrow", pyarrow.__version__, "numpy", numpy.__version__, "python", sys.version.split()[0])'
}

sizes() {  # S F K from positional args (defaults: the 10M x 10M, 1M entities target case)
  S="${1:-10000000}"; F="${2:-10000000}"; K="${3:-1000000}"
}

gen() {
  sizes "$@"
  local dir="$PITDATA/s${S}_f${F}_k${K}"
  mkdir -p "$dir"
  "$PY" "$HERE/gen_pit.py" --spine-rows "$S" --feature-rows "$F" --entities "$K" --out "$dir"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  setup) setup ;;
  gen)
    need_venv
    args=(); while [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; do args+=("$1"); shift; done
    gen "${args[@]}" ;;
  bench)
    need_venv
    args=(); while [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; do args+=("$1"); shift; done
    sizes "${args[@]}"
    [ -f "$PITDATA/s${S}_f${F}_k${K}/manifest.json" ] || gen "$S" "$F" "$K"
    "${RUNPY[@]}" "$HERE/bench_pit.py" pit --spine-rows "$S" --feature-rows "$F" --entities "$K" "$@" ;;
  feast)
    need_venv
    "${RUNPY[@]}" "$HERE/bench_pit.py" feast "$@" ;;
  report)
    need_venv
    "$PY" "$HERE/report.py" ;;
  *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
