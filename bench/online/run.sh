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
source "$(dirname "$0")/../peer.sh"
bench_main bench_online "$@"
