#!/usr/bin/env bash
# Feast SDK compatibility check of `larder serve` (not part of `cargo test`: it needs Feast).
#
# Usage: bench/server/feast_compat.sh
#   1. builds `larder` (debug, through `cargo test --workspace --no-run`) unless LARDER_BIN is set;
#   2. makes a demo repo (`larder init`, apply, materialize the last 7 days) and starts
#      `larder serve` on a free port;
#   3. runs feast_compat.py with Feast's Python SDK (online_store: {type: remote}) against it:
#      online reads by references, with full names, by feature service, a Feast push and a
#      Feast write_to_online_store; every value must equal `larder get-online-features`;
#   4. stops the server with SIGTERM and checks it exits 0.
#
# Environment: LARDER_BIN (a built `larder`), CARGO_TARGET_DIR (default ~/.cache/larder-ci),
#   FEAST_VENV (default ~/.cache/larder-feast-bench/venv; created with feast==$FEAST_VERSION,
#   default 0.67.0, when missing), KEEP=1 keeps the temp folder.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FEAST_VENV="${FEAST_VENV:-$HOME/.cache/larder-feast-bench/venv}"
FEAST_VERSION="${FEAST_VERSION:-0.67.0}"
PY="$FEAST_VENV/bin/python"
export PYTHONDONTWRITEBYTECODE=1

if [ ! -x "$PY" ]; then
  echo "creating the Feast venv at $FEAST_VENV (feast==$FEAST_VERSION)" >&2
  python3 -m venv "$FEAST_VENV"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "feast==$FEAST_VERSION"
fi

if [ -z "${LARDER_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/larder-ci}"
  (cd "$ROOT" && cargo test --workspace --no-run >&2)
  LARDER_BIN="$CARGO_TARGET_DIR/debug/larder"
fi
"$LARDER_BIN" serve --help >/dev/null

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -TERM "$SERVER_PID" || true; fi
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

"$LARDER_BIN" -c "$WORK" init demo >/dev/null
REPO="$WORK/demo"
"$LARDER_BIN" -c "$REPO" apply >/dev/null
END="$(date -u +%Y-%m-%dT%H:%M:%S)"
START="$(date -u -d '8 days ago' +%Y-%m-%dT%H:%M:%S)"
"$LARDER_BIN" -c "$REPO" materialize "$START" "$END" --no-progress >/dev/null 2>&1

"$LARDER_BIN" -c "$REPO" serve --port 0 >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER_PID=$!
for _ in $(seq 1 100); do
  grep -q '^Serving' "$WORK/serve.out" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.err" >&2; exit 1; }
  sleep 0.1
done
URL="$(sed -n 's/^Serving project `demo` on //p' "$WORK/serve.out")"
[ -n "$URL" ] || { echo "larder serve did not start" >&2; cat "$WORK/serve.err" >&2; exit 1; }
echo "larder serve at $URL" >&2

"$PY" "$HERE/feast_compat.py" --url "$URL" --larder "$LARDER_BIN" --larder-repo "$REPO" \
  --feast-repo "$WORK/feast_repo"

kill -TERM "$SERVER_PID"
STATUS=0; wait "$SERVER_PID" || STATUS=$?
SERVER_PID=""
if [ "$STATUS" -ne 0 ]; then echo "larder serve exited with $STATUS on SIGTERM" >&2; exit 1; fi
echo "OK: larder serve exited 0 on SIGTERM" >&2
