#!/usr/bin/env python3
"""Online path benchmark: Larder vs Feast 0.67 on the Feast peer's data, in one run.

Measures, side by side on $BENCHDATA (../../../shared/bench/feast/gen_data.py):
  * materialize both views (1,005,163 + 200,222 rows) into the embedded SQLite online store:
    `larder materialize` vs Feast's `FeatureStore.materialize` (bench_worker.py), wall and peak RSS;
  * Larder's peak RSS at 10x the data (gen_data.py --n-drivers 1000000, into $BENCHDATA_10X);
  * get_online_features for 1 and 100 entities x 15 features through each SDK (Larder: the Rust
    API via the `online_latency` example; Feast: bench_worker.py `online`), same request files.

Runs with the Feast venv's Python (it imports the peer's bench_feast.py helpers: quiet-machine
gate, /usr/bin/time wrapper, request generator). Writes results.json and RESULTS.md here.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
FEAST_BENCH = Path(os.environ.get("FEAST_BENCH_DIR", "/work/shared/bench/feast"))
sys.path.insert(0, str(FEAST_BENCH))
import bench_feast as bf  # noqa: E402  (the peer's helpers; reads BENCHDATA / FEAST_VENV)

RELEASE = Path(os.environ.get("LARDER_RELEASE_DIR", os.path.expanduser("~/.cache/larder-release/release")))
LARDER = RELEASE / "larder"
LATENCY = RELEASE / "examples" / "online_latency"
BENCHDATA = bf.BENCHDATA
BENCHDATA_10X = Path(os.environ.get("BENCHDATA_10X", os.path.expanduser("~/.cache/larder-feast-bench/data10x")))
MAT_START, MAT_END = "2025-05-01T00:00:00Z", "2025-06-02T00:00:00Z"

FEATURES_YAML = """\
entities:
  - {{name: driver, join_keys: [driver_id], value_type: Int64}}
  - {{name: customer, join_keys: [customer_id], value_type: Int64}}
data_sources:
  - name: driver_stats_source
    type: file
    path: {data}/driver_stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
  - name: customer_stats_source
    type: file
    path: {data}/customer_stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 2d
    source: driver_stats_source
    schema:
      - {{name: conv_rate, dtype: Float32}}
      - {{name: acc_rate, dtype: Float32}}
      - {{name: avg_daily_trips, dtype: Int64}}
      - {{name: rating, dtype: Float64}}
      - {{name: trips_today, dtype: Int32}}
      - {{name: earnings_today, dtype: Float64}}
      - {{name: cancel_rate, dtype: Float32}}
      - {{name: vehicle_type, dtype: String}}
      - {{name: city, dtype: String}}
      - {{name: lifetime_trips, dtype: Int64}}
  - name: customer_stats
    entities: [customer]
    ttl: 2d
    source: customer_stats_source
    schema:
      - {{name: current_balance, dtype: Float32}}
      - {{name: avg_passenger_count, dtype: Float32}}
      - {{name: lifetime_trip_count, dtype: Int64}}
      - {{name: customer_segment, dtype: String}}
      - {{name: loyalty_score, dtype: Float64}}
feature_services:
  - name: driver_customer_v1
    features:
      - driver_stats: "*"
      - customer_stats: "*"
"""


def larder_repo(data: Path) -> Path:
    """The Larder twin of the peer's feature_repo over `data`: same views, types and ttl."""
    repo = data / "larder_repo"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: larder_bench\nregistry: data/registry.json\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: data/online_store.db\noffline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n")
    (repo / "features.yaml").write_text(FEATURES_YAML.format(data=data))
    return repo


def reset_larder(repo: Path):
    shutil.rmtree(repo / "data", ignore_errors=True)
    subprocess.run([LARDER, "-c", repo, "apply"], check=True, stdout=subprocess.DEVNULL)


def online_rows(repo: Path) -> dict:
    import sqlite3

    con = sqlite3.connect(repo / "data" / "online_store.db")
    out = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
           for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    return out


def larder_materialize(repo: Path, reps: int, label: str):
    runs = []
    for i in range(reps):
        wall, rss, _ = bf.timed([LARDER, "-c", repo, "materialize", MAT_START, MAT_END, "--no-progress"],
                                f"larder_{label}", cwd=repo, prepare=lambda: reset_larder(repo))
        runs.append({"wall_s": wall, "peak_rss_mb": rss, "rows": online_rows(repo)})
        bf.log(f"larder materialize {label} rep{i}: {wall:.2f}s, peak {rss:.0f} MB, {runs[-1]['rows']}")
    return {"wall_s": bf.median([r["wall_s"] for r in runs]),
            "peak_rss_mb": bf.median([r["peak_rss_mb"] for r in runs]), "raw": runs}


def feast_materialize(reps: int):
    runs = []
    for i in range(reps):
        wall, rss, res = bf.timed([bf.PY, FEAST_BENCH / "bench_worker.py", "materialize", "feature_store.yaml"],
                                  "feast_materialize_sqlite", prepare=lambda: bf.reset_online("sqlite"))
        runs.append({"wall_s": res["wall_s"], "process_wall_s": wall, "peak_rss_mb": rss,
                     "rows": bf.online_counts("sqlite")})
        bf.log(f"feast materialize rep{i}: {res['wall_s']:.2f}s in-process ({wall:.2f}s process), peak {rss:.0f} MB")
    return {"wall_s": bf.median([r["wall_s"] for r in runs]),
            "process_wall_s": bf.median([r["process_wall_s"] for r in runs]),
            "peak_rss_mb": bf.median([r["peak_rss_mb"] for r in runs]), "raw": runs}


def latency(repo: Path, n: int, calls: int, reps: int, feast: bool):
    requests = bf.REQ / f"sdk_requests_{n}.jsonl"
    out = {}
    runs = []
    for _ in range(reps):
        _, rss, res = bf.timed([LATENCY, repo, requests, "--calls", str(calls)], f"larder_online_{n}", cwd=repo)
        res["peak_rss_mb"] = rss
        runs.append(res)
    out["larder"] = {k: bf.median([r[k] for r in runs]) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")}
    out["larder"]["raw"] = runs
    bf.log(f"larder online n={n}: p50 {out['larder']['p50_ms']:.3f} ms p99 {out['larder']['p99_ms']:.3f} ms")
    if feast:
        runs = []
        for _ in range(reps):
            _, _, res = bf.timed([bf.PY, FEAST_BENCH / "bench_worker.py", "online", "feature_store.yaml",
                                  requests, "--calls", str(calls)], f"feast_online_{n}")
            runs.append(res)
        out["feast"] = {k: bf.median([r[k] for r in runs]) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")}
        out["feast"]["raw"] = runs
        bf.log(f"feast online n={n}: p50 {out['feast']['p50_ms']:.3f} ms p99 {out['feast']['p99_ms']:.3f} ms")
    return out


def report(R: dict):
    m, lat = R.get("materialize", {}), R.get("online", {})
    lines = [
        "# Online path: Larder vs Feast 0.67",
        "",
        f"Generated by `bench_online.py` on {R['when']} ({R['env']}). Same data ($BENCHDATA from the Feast peer's",
        "`gen_data.py`, seed 42), same run, medians of the reps; process wall times under `/usr/bin/time`.",
        "",
        "| metric | Larder | Feast 0.67 | ratio |",
        "| --- | --- | --- | --- |",
    ]
    if "larder" in m and "feast" in m:
        lw, fw = m["larder"]["wall_s"], m["feast"]["wall_s"]
        lines.append(f"| materialize 1,205,385 rows -> SQLite, wall (s) | {lw:.2f} (whole process) | "
                     f"{fw:.2f} (in-process call; {m['feast']['process_wall_s']:.2f} whole process) | "
                     f"{fw / lw:.1f}x faster |")
        lines.append(f"| materialize, peak RSS (MB) | {m['larder']['peak_rss_mb']:.0f} | "
                     f"{m['feast']['peak_rss_mb']:.0f} | {m['feast']['peak_rss_mb'] / m['larder']['peak_rss_mb']:.1f}x less |")
    if "larder_10x" in m:
        lines.append(f"| materialize at 10x the data ({m['larder_10x'].get('source_rows', '?')} rows), "
                     f"wall (s) / peak RSS (MB) | {m['larder_10x']['wall_s']:.2f} / "
                     f"{m['larder_10x']['peak_rss_mb']:.0f} | not run | |")
    for n in (1, 100):
        o = lat.get(str(n))
        if not o:
            continue
        f = o.get("feast")
        lines.append(f"| get_online_features {n} entities x 15 features, p50 / p99 (ms) | "
                     f"{o['larder']['p50_ms']:.3f} / {o['larder']['p99_ms']:.3f} | "
                     + (f"{f['p50_ms']:.3f} / {f['p99_ms']:.3f} | p50 {f['p50_ms'] / o['larder']['p50_ms']:.1f}x, "
                           f"p99 {f['p99_ms'] / o['larder']['p99_ms']:.1f}x (Feast / Larder) |"
                        if f else "not run | |"))
    lines += [
        "",
        "Setup: Larder `larder materialize 2025-05-01T00:00:00Z 2025-06-02T00:00:00Z` in a fresh process after",
        "`larder apply` on an empty store; Feast `FeatureStore.materialize(2025-05-01, 2025-06-02)` (bench_worker.py)",
        "on an emptied SQLite store. Online reads: Larder's Rust API (`get_online_features` with a plan built once,",
        "`crates/larder/examples/online_latency.rs`), Feast's Python SDK (`.to_dict()`), each call a different",
        "entity set from `$BENCHDATA/requests/sdk_requests_{1,100}.jsonl` (100 warm-up calls, then the measured ones).",
        "",
        "Contention: the run records, per measurement, the CPU share other processes used (`raw[]._contention`",
        "in results.json, from the peer's quiet-machine gate); compare only runs with little of it.",
        "",
        "Targets (issue 4): materialize >= 20x faster than Feast with peak RSS <= 300 MB, and the same peak at 10x",
        "the data; 100 entities x 15 features p99 <= 0.5 ms.",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--sections", nargs="+", default=["materialize", "10x", "online"],
                    choices=["materialize", "10x", "online"])
    ap.add_argument("--no-feast", action="store_true", help="Larder only")
    args = ap.parse_args()
    needed = [LARDER] + ([LATENCY] if "online" in args.sections else [])
    for binary in needed:
        if not binary.exists():
            sys.exit(f"missing {binary}: run ./run.sh build first")
    results_file = HERE / "results.json"
    R = json.loads(results_file.read_text()) if results_file.exists() else {}
    R["when"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    R["env"] = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    repo = larder_repo(BENCHDATA)
    t0 = time.time()
    if "materialize" in args.sections:
        R.setdefault("materialize", {})["larder"] = larder_materialize(repo, args.reps, "1x")
        if not args.no_feast:
            R["materialize"]["feast"] = feast_materialize(args.reps)
    if "10x" in args.sections:
        if not (BENCHDATA_10X / "driver_stats.parquet").exists():
            bf.log(f"generating 10x data into {BENCHDATA_10X}")
            subprocess.run([bf.PY, FEAST_BENCH / "gen_data.py", "--out", BENCHDATA_10X, "--n-drivers", "1000000",
                            "--n-customers", "500000", "--entity-rows", "1000"], check=True)
        big = larder_materialize(larder_repo(BENCHDATA_10X), 1, "10x")
        manifest = json.loads((BENCHDATA_10X / "gen_manifest.json").read_text())
        big["source_rows"] = sum(f["rows"] for name, f in manifest["files"].items()
                                 if name in ("driver_stats.parquet", "customer_stats.parquet"))
        R.setdefault("materialize", {})["larder_10x"] = big
    if "online" in args.sections:
        if not (bf.REQ / "sdk_requests_100.jsonl").exists():
            bf.write_requests()
        # Both stores hold the full materialization before reads are timed.
        reset_larder(repo)
        subprocess.run([LARDER, "-c", repo, "materialize", MAT_START, MAT_END, "--no-progress"], check=True,
                       stdout=subprocess.DEVNULL)
        if not args.no_feast:
            bf.ensure_materialized("sqlite")
        R["online"] = {str(n): latency(repo, n, args.calls, args.reps, not args.no_feast) for n in (1, 100)}
    R["total_s"] = round(time.time() - t0, 1)
    results_file.write_text(json.dumps(R, indent=1, default=str))
    report(R)
    print((HERE / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
