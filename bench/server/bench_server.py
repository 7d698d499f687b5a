#!/usr/bin/env python3
"""Feature server benchmark: `larder serve` vs `feast serve` (Feast 0.67), in one run.

Same data ($BENCHDATA from ../../../shared/bench/feast/gen_data.py), same request bodies
($BENCHDATA/requests/body_online_{1,100}.json), same wrk runs (the peer's wrk_post.lua and
wrk_push.lua, `wrk -t1`), both servers on the embedded SQLite online store, client and server
on the same 2 cores:

  * POST /get-online-features, 1 and 100 entities x 15 features, concurrency 1, 8, 64;
  * POST /push of 1- and 100-row bodies (push source driver_stats_push_source, to=online);
  * server RSS after start-up (idle), peak while loaded, and idle again after the runs;
  * a golden check: both servers' answers to the 100-entity body, value by value.

Runs with the Feast venv's Python (imports the peer's bench_feast.py helpers: quiet-machine
gate, wrk wrapper, request files). Writes results.json and RESULTS.md here.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
FEAST_BENCH = Path(os.environ.get("FEAST_BENCH_DIR", "/work/shared/bench/feast"))
sys.path.insert(0, str(FEAST_BENCH))
sys.path.insert(0, str(HERE.parent / "online"))
import bench_feast as bf  # noqa: E402  (the peer's helpers; reads BENCHDATA / FEAST_VENV)
import bench_online as bo  # noqa: E402  (the Larder twin of the peer's repo)

RELEASE = Path(os.environ.get("LARDER_RELEASE_DIR", os.path.expanduser("~/.cache/larder-release/release")))
LARDER = RELEASE / "larder"
URL = f"http://{bf.HTTP_HOST}:{bf.HTTP_PORT}"

PUSH_YAML = """\
  - {name: driver_stats_push_source, type: push, batch_source: driver_stats_source}
feature_views:
  - name: driver_stats_fresh
    entities: [driver]
    ttl: 2d
    source: driver_stats_push_source
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: acc_rate, dtype: Float32}
      - {name: avg_daily_trips, dtype: Int64}
"""


def larder_server_repo(name: str = "larder_server_repo") -> Path:
    """The Feast peer's repo in Larder's YAML, push source and push-fed view included, in
    $BENCHDATA/<name> (on the SQLite online store; other benchmarks rewrite their own copy)."""
    repo = bf.BENCHDATA / name
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: larder_bench\nregistry: data/registry.json\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: data/online_store.db\noffline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n")
    features = bo.FEATURES_YAML.format(data=bf.BENCHDATA).replace("feature_views:\n", PUSH_YAML, 1)
    (repo / "features.yaml").write_text(features)
    return repo


def wait_healthy(proc, what, timeout=90):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if urllib.request.urlopen(f"{URL}/health", timeout=2).status == 200:
                return time.time() - t0
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited rc={proc.returncode}")
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not become healthy in {timeout} s")


def tree_rss_mb(pid):
    import psutil

    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root] + root.children(recursive=True)) / 2**20
    except Exception:
        return None


def tree_hwm_mb(pid):
    """Sum of the peak RSS (VmHWM) of a process and its descendants: the exact peak of a single
    process (Larder), an upper bound of the tree's simultaneous peak for several (Feast's
    gunicorn workers)."""
    import psutil

    total = 0
    try:
        root = psutil.Process(pid)
        for p in [root] + root.children(recursive=True):
            with open(f"/proc/{p.pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except Exception:
        return None
    return total / 1024


class PeakRss:
    """Peak RSS of a process tree over the block, from the kernel's high-water marks read once at
    the end: no sampling thread competing with the client and the server for the 2 cores (a
    50 ms sampler added about 1 ms to the p99 of the fastest runs)."""

    def __init__(self, pid):
        self.pid, self.peak = pid, 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.peak = tree_hwm_mb(self.pid) or 0.0


class LarderServer:
    def __init__(self, repo: Path):
        self.repo = repo
        self.args = [str(LARDER), "-c", str(repo), "serve", "--host", bf.HTTP_HOST, "--port", str(bf.HTTP_PORT),
                     "--registry-ttl-sec", "60"]

    def __enter__(self):
        bf.LOGS.mkdir(parents=True, exist_ok=True)
        self.logf = open(bf.LOGS / "larder_serve.log", "w")
        self.p = subprocess.Popen(self.args, cwd=self.repo, stdout=self.logf, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, LARDER_LOG="warn"), start_new_session=True)
        bf.LONG_LIVED.add(self.p.pid)
        self.startup_s = wait_healthy(self.p, "larder serve")
        bf.log(f"larder serve pid {self.p.pid} healthy after {self.startup_s:.2f}s")
        return self

    def rss_mb(self):
        return tree_rss_mb(self.p.pid)

    def __exit__(self, *exc):
        self.p.terminate()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.exit_code = self.p.returncode
        self.logf.close()
        bf.LONG_LIVED.discard(self.p.pid)
        bf.log(f"larder serve stopped, exit code {self.exit_code}")


def feast_server(workers: int):
    srv = bf.Server(workers)
    srv.args = [bf.YAML["sqlite"] if a == bf.YAML["redis"] else a for a in srv.args]
    return srv


def load(server, args, reps, push_offset):
    """The wrk runs against one running server."""
    out = {"idle_rss_mb": server.rss_mb()}
    bf.wrk("wrk_post.lua", "/get-online-features", 8, 2, {"WRK_BODY": str(bf.REQ / "body_online_1.json")},
           "warmup", measure=False)
    with PeakRss(server.p.pid) as peak:
        for n in (1, 100):
            for c in args.concurrency:
                runs = [bf.wrk("wrk_post.lua", "/get-online-features", c, args.wrk_duration,
                               {"WRK_BODY": str(bf.REQ / f"body_online_{n}.json")}, f"{args.label}_n{n}_c{c}")
                        for _ in range(reps)]
                s = bf.wrk_summary(runs)
                bf.log(f"{args.label} n={n} c={c}: {s['rps']:.0f} req/s p50 {s['lat_p50_us'] / 1000:.2f} ms "
                       f"p99 {s['lat_p99_us'] / 1000:.2f} ms errors {s['errors']}")
                out[f"n{n}_c{c}"] = dict(s, entities=n, concurrency=c, raw=runs)
        for rows in (1, 100):
            for c in args.concurrency:
                def push_env(rows=rows):
                    push_offset[0] += 10_000_000  # every run's rows are newer than what is stored
                    return {"PUSH_ROWS": str(rows), "PUSH_OFFSET": str(push_offset[0])}

                runs = [bf.wrk("wrk_push.lua", "/push", c, args.wrk_duration, push_env, f"{args.label}_push_r{rows}_c{c}")
                        for _ in range(reps)]
                s = bf.wrk_summary(runs)
                s["rows_per_s"] = s["rps"] * rows
                bf.log(f"{args.label} push rows={rows} c={c}: {s['rps']:.0f} req/s ({s['rows_per_s']:.0f} rows/s) "
                       f"p99 {s['lat_p99_us'] / 1000:.2f} ms errors {s['errors']}")
                out[f"push_r{rows}_c{c}"] = dict(s, rows=rows, concurrency=c, raw=runs)
    out["peak_rss_mb"] = peak.peak
    time.sleep(2)
    out["idle_after_rss_mb"] = server.rss_mb()
    st, body = bf.post("/get-online-features", (bf.REQ / "body_online_100.json").read_bytes())
    out["golden_status"] = st
    out["golden"] = json.loads(body)
    return out


def by_feature(resp):
    names = resp["metadata"]["feature_names"]
    return {name: r for name, r in zip(names, resp["results"])}


def compare(larder, feast):
    """Values of every feature and entity row, Larder vs Feast (floats to 1e-6 relative)."""
    a, b = by_feature(larder), by_feature(feast)
    mismatches = []
    if set(a) != set(b):
        mismatches.append(f"feature names differ: {sorted(set(a) ^ set(b))}")
    for name in sorted(set(a) & set(b)):
        for i, (x, y) in enumerate(zip(a[name]["values"], b[name]["values"])):
            same = x == y or (isinstance(x, float) and isinstance(y, (int, float)) and y is not None
                              and abs(x - y) <= 1e-6 * max(1.0, abs(y)))
            if not same:
                mismatches.append(f"{name}[{i}]: larder {x!r} feast {y!r}")
    return mismatches


def report(R):
    L, F = R.get("larder", {}), R.get("feast", {})
    lines = [
        "# Feature server: `larder serve` vs `feast serve` (Feast 0.67)",
        "",
        f"Generated by `bench_server.py` on {R['when']} ({R['env']}). Both servers on the embedded SQLite online",
        f"store over the same materialized data; wrk -t1, {R['args']['wrk_duration']} s per run, median of "
        f"{R['args']['reps']} run(s); client and server share the 2 cores. Feast: `feast serve --workers "
        f"{R['args']['feast_workers']}` (gunicorn + uvicorn).",
        "",
        "| request | concurrency | Larder req/s | Larder p50 / p99 (ms) | Feast req/s | Feast p50 / p99 (ms) | ratio (req/s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in (1, 100):
        for c in R["args"]["concurrency"]:
            k = f"n{n}_c{c}"
            if k not in L:
                continue
            l, f = L[k], F.get(k)
            fr = f"{f['rps']:.0f} | {f['lat_p50_us'] / 1000:.2f} / {f['lat_p99_us'] / 1000:.2f}" if f else "— | —"
            ratio = f"{l['rps'] / f['rps']:.1f}x" if f and f["rps"] else "—"
            lines.append(f"| get-online-features, {n} entit{'y' if n == 1 else 'ies'} x 15 | {c} | {l['rps']:.0f} | "
                         f"{l['lat_p50_us'] / 1000:.2f} / {l['lat_p99_us'] / 1000:.2f} | {fr} | {ratio} |")
    for rows in (1, 100):
        for c in R["args"]["concurrency"]:
            k = f"push_r{rows}_c{c}"
            if k not in L:
                continue
            l, f = L[k], F.get(k)
            fr = f"{f['rows_per_s']:.0f} rows/s | {f['lat_p50_us'] / 1000:.2f} / {f['lat_p99_us'] / 1000:.2f}" if f else "— | —"
            ratio = f"{l['rows_per_s'] / f['rows_per_s']:.1f}x" if f and f["rows_per_s"] else "—"
            lines.append(f"| push, {rows}-row bodies | {c} | {l['rows_per_s']:.0f} rows/s | "
                         f"{l['lat_p50_us'] / 1000:.2f} / {l['lat_p99_us'] / 1000:.2f} | {fr} | {ratio} |")
    lines += ["", "| server RSS (MB) | Larder | Feast |", "| --- | --- | --- |"]
    for key, label in (("idle_rss_mb", "idle after start-up"), ("peak_rss_mb", "peak (VmHWM; Feast: summed over its processes)"),
                       ("idle_after_rss_mb", "idle after the runs")):
        fv = F.get(key)
        lines.append(f"| {label} | {L.get(key, 0):.0f} | {f'{fv:.0f}' if fv else '—'} |")
    errors = sum(v.get("errors", 0) for v in L.values() if isinstance(v, dict))
    lines += [
        "",
        f"Larder errors over all runs: {errors:.0f}. Golden check (the 100-entity body, every value of both "
        f"answers): {R.get('golden', 'not run')}.",
        "",
        "Targets (issue 5): >= 20x Feast's requests/s at every concurrency; p99 at c=1 <= 1 ms for 1 entity;",
        "server RSS <= 64 MB idle and <= 150 MB under load; push of 100-row bodies >= 20x Feast's rows/s.",
        "",
        "Contention: every wrk run waits for a quiet machine (the peer's gate) and records the CPU share other",
        "processes took (`raw[]._contention` in results.json).",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--wrk-duration", type=int, default=5)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--feast-workers", type=int, default=2)
    ap.add_argument("--no-feast", action="store_true")
    args = ap.parse_args()
    bf.ARGS = argparse.Namespace(wrk_duration=args.wrk_duration, concurrency=args.concurrency)
    if not (bf.REQ / "body_online_100.json").exists():
        bf.write_requests()
    R = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "env": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}", "args": vars(args)}
    results = HERE / "results.json"

    repo = larder_server_repo()
    shutil.rmtree(repo / "data", ignore_errors=True)
    subprocess.run([LARDER, "-c", repo, "apply"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([LARDER, "-c", repo, "materialize", bo.MAT_START, bo.MAT_END, "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)
    push_offset = [0]
    with LarderServer(repo) as srv:
        args.label = "larder"
        R["larder"] = load(srv, args, args.reps, push_offset)
        R["larder"]["startup_s"] = srv.startup_s
    R["larder"]["exit_code_on_sigterm"] = srv.exit_code
    if not args.no_feast:
        bf.ensure_materialized("sqlite")
        with feast_server(args.feast_workers) as srv:
            args.label = "feast"
            R["feast"] = load(srv, args, args.reps, push_offset)
            R["feast"]["startup_s"] = srv.startup_s
        mismatches = compare(R["larder"]["golden"], R["feast"]["golden"])
        R["golden"] = "identical values" if not mismatches else f"{len(mismatches)} mismatches: {mismatches[:5]}"
    del args.label
    R["args"] = vars(args)
    results.write_text(json.dumps(R, indent=1, default=str))
    report(R)
    bf.log(f"wrote {results} and RESULTS.md")


if __name__ == "__main__":
    main()
