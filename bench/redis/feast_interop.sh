#!/usr/bin/env bash
# Redis interop check: Larder and Feast 0.67 each read what the other wrote (see feast_interop.py).
# Not part of `cargo test` (it needs Feast and the peer's data).
#
# Usage: bench/redis/feast_interop.sh
# Environment: LARDER_BIN (default: the debug build, made by `cargo test --workspace --no-run`),
#   FEAST_VENV (default ~/.cache/larder-feast-bench/venv, made by /work/shared/bench/feast/run.sh setup),
#   BENCHDATA (default ~/.cache/larder-feast-bench/data, made by run.sh gen),
#   REDIS (default "127.0.0.1:6379,db=9": a database this check may FLUSHDB), KEEP=1 keeps the temp folder.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FEAST_VENV="${FEAST_VENV:-$HOME/.cache/larder-feast-bench/venv}"
PY="$FEAST_VENV/bin/python"
[ -x "$PY" ] || { echo "no Feast venv at $FEAST_VENV: run /work/shared/bench/feast/run.sh setup" >&2; exit 1; }
export BENCHDATA="${BENCHDATA:-$HOME/.cache/larder-feast-bench/data}"
[ -f "$BENCHDATA/driver_stats.parquet" ] || { echo "no data in $BENCHDATA: run /work/shared/bench/feast/run.sh gen" >&2; exit 1; }
if [ -z "${LARDER_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/larder-ci}"
  (cd "$ROOT" && cargo test --workspace --no-run >&2)
  LARDER_BIN="$CARGO_TARGET_DIR/debug/larder"
fi
WORK="$(mktemp -d)"
trap 'if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi' EXIT
export PYTHONDONTWRITEBYTECODE=1
"$PY" "$HERE/feast_interop.py" --larder "$LARDER_BIN" --work "$WORK" --redis "${REDIS:-127.0.0.1:6379,db=9}"
