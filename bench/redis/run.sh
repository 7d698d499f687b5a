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
source "$(dirname "$0")/../peer.sh"
bench_main bench_redis "$@"
