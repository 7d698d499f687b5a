#!/usr/bin/env bash
# Feature server benchmark: `larder serve` vs `feast serve` (Feast 0.67) under wrk, same data and bodies.
#
# Usage: ./run.sh {build|bench|report} [bench_server.py options]
#   build   release build of `larder` into $LARDER_TARGET_DIR
#   bench   sets up the Feast peer (venv, data) if missing, then runs bench_server.py:
#           --reps N (1), --wrk-duration S (5), --concurrency 1 8 64, --feast-workers N (2), --no-feast
#   report  re-render RESULTS.md from results.json
#
# Environment: LARDER_TARGET_DIR (default ~/.cache/larder-release), FEAST_VENV / BENCHDATA (the Feast
#   peer's venv and data), FEAST_BENCH_DIR (default /work/shared/bench/feast). Needs wrk and psutil (the
#   peer's `run.sh setup` installs both).
source "$(dirname "$0")/../peer.sh"
bench_main bench_server "$@"
