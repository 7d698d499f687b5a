#!/usr/bin/env python3
"""Redis online store benchmark: Larder vs Feast 0.67 on the same Redis, in one run.

Same data ($BENCHDATA from ../../../shared/bench/feast/gen_data.py), same request bodies, same
wrk runs as bench/server, with both tools on Redis 127.0.0.1:6379 (Feast in database 0 with
the peer's feature_store_redis.yaml, Larder in database 1, project larder_bench):

  * materialize both views (1,205,385 source rows -> 150,000 entity rows, 1.25M values) into
    Redis: `larder materialize` vs Feast's FeatureStore.materialize (bench_worker.py), wall and
    peak RSS, Redis emptied before every rep;
  * POST /get-online-features, 1 and 100 entities x 15 features, concurrency 1, 8, 64:
    `larder serve` vs `feast serve --workers 2`, both reading Redis; plus /push runs;
  * the raw Redis ceiling for the same keys: redis-benchmark HGETALL on copies of one real driver
    hash and one real customer hash (printable names: redis-benchmark cannot send the binary
    entity keys), pipelined like one request (-P 2n for n entities, 2 hashes per entity), at the
    same concurrency. Ceiling requests/s = 1 / (n / driver ops/s + n / customer ops/s).

Runs with the Feast venv's Python (imports the peer's bench_feast.py helpers and bench/server's
server wrappers). Writes results.json and RESULTS.md here.
"""
import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
FEAST_BENCH = Path(os.environ.get("FEAST_BENCH_DIR", "/work/shared/bench/feast"))
sys.path.insert(0, str(FEAST_BENCH))
sys.path.insert(0, str(HERE.parent / "online"))
sys.path.insert(0, str(HERE.parent / "server"))
import bench_feast as bf  # noqa: E402  (the peer's helpers; reads BENCHDATA / FEAST_VENV)
import bench_online as bo  # noqa: E402  (the Larder twin of the peer's repo)
import bench_server as bs  # noqa: E402  (server wrappers, wrk load, golden comparison)

LARDER = bs.LARDER
LARDER_DB = 1


def larder_redis_repo() -> Path:
    # The peer's views, push source and push-fed view, in a folder of its own (the server
    # benchmark's repo stays on SQLite).
    repo = bs.larder_server_repo("larder_redis_repo")
    text = (repo / "feature_store.yaml").read_text()
    text = text.replace("online_store:\n  type: sqlite\n  path: data/online_store.db\n",
                        f"online_store:\n  type: redis\n  connection_string: \"127.0.0.1:6379,db={LARDER_DB}\"\n")
    assert "type: redis" in text
    (repo / "feature_store.yaml").write_text(text)
    return repo


def redis_db(*args, db=LARDER_DB):
    return subprocess.run(["redis-cli", "-n", str(db), *map(str, args)], check=True,
                          capture_output=True, text=True).stdout.strip()


def reset_larder(repo: Path):
    redis_db("FLUSHDB")
    subprocess.run([LARDER, "-c", repo, "apply"], check=True, stdout=subprocess.DEVNULL)


def entity_counts():
    m = bf.manifest()
    drivers = m["driver_id_range"][1] - m["driver_id_range"][0] + 1
    customers = m["customer_id_range"][1] - m["customer_id_range"][0] + 1
    return drivers + customers, drivers * 10 + customers * 5


def materialize(repo: Path, reps: int, feast: bool):
    n_ent, n_vals = entity_counts()
    out = {"entity_rows": n_ent, "feature_values": n_vals}
    runs = []
    for i in range(reps):
        wall, rss, _ = bf.timed([LARDER, "-c", repo, "materialize", bo.MAT_START, bo.MAT_END, "--no-progress",
                                 "--views", "driver_stats", "customer_stats"],
                                "larder_materialize_redis", cwd=repo, prepare=lambda: reset_larder(repo))
        keys = int(redis_db("DBSIZE"))
        runs.append({"wall_s": wall, "peak_rss_mb": rss, "redis_keys": keys})
        bf.log(f"larder materialize redis rep{i}: {wall:.2f}s, peak {rss:.0f} MB, {keys} keys")
    out["larder"] = {"wall_s": bf.median([r["wall_s"] for r in runs]),
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "raw": runs}
    out["larder"]["entity_rows_per_s"] = n_ent / out["larder"]["wall_s"]
    if feast:
        runs = []
        for i in range(reps):
            wall, rss, res = bf.timed([bf.PY, FEAST_BENCH / "bench_worker.py", "materialize", bf.YAML["redis"].name],
                                      "feast_materialize_redis", prepare=lambda: bf.reset_online("redis"))
            runs.append({"wall_s": res["wall_s"], "process_wall_s": wall, "peak_rss_mb": rss,
                         "redis_keys": bf.online_counts("redis")["redis_keys"]})
            bf.log(f"feast materialize redis rep{i}: {res['wall_s']:.2f}s in-process ({wall:.2f}s process), "
                   f"peak {rss:.0f} MB")
        out["feast"] = {"wall_s": bf.median([r["wall_s"] for r in runs]),
                        "process_wall_s": bf.median([r["process_wall_s"] for r in runs]),
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "raw": runs}
        out["feast"]["entity_rows_per_s"] = n_ent / out["feast"]["wall_s"]
    return out


def ceiling(concurrency, requests=200_000):
    """redis-benchmark HGETALL on copies of one driver and one customer hash of Larder's data."""
    import redis as redis_py

    r = redis_py.Redis(host="127.0.0.1", port=6379, db=LARDER_DB)
    names = {}
    for key in r.scan_iter(count=1000):
        fields = r.hlen(key)
        kind = "driver" if fields > 8 else "customer"
        if kind not in names:
            names[kind] = f"ceiling:{kind}"
            r.copy(key, names[kind], replace=True)
        if len(names) == 2:
            break
    out = {"hash_fields": {k: r.hlen(v) for k, v in names.items()}}
    for n in (1, 100):
        for c in concurrency:
            ops = {}
            for kind, name in names.items():
                p = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", "6379", "--dbnum", str(LARDER_DB),
                                    "-c", str(c), "-n", str(requests), "-P", str(2 * n), "--csv",
                                    "HGETALL", name], check=True, capture_output=True, text=True)
                last = [line for line in p.stdout.splitlines() if line.startswith('"HGETALL')][-1]
                ops[kind] = float(last.split(",")[1].strip('"'))
            rps = 1.0 / (n / ops["driver"] + n / ops["customer"])
            out[f"n{n}_c{c}"] = {"ops_per_s": ops, "requests_per_s": rps}
            bf.log(f"redis ceiling n={n} c={c}: {rps:.0f} requests/s ({ops})")
    for name in names.values():
        r.delete(name)
    return out


def report(R):
    m, L, F, C = R.get("materialize", {}), R.get("larder", {}), R.get("feast", {}), R.get("ceiling", {})
    lines = [
        "# Redis online store: Larder vs Feast 0.67",
        "",
        f"Generated by `bench_redis.py` on {R['when']} ({R['env']}). Both tools on Redis 127.0.0.1:6379 "
        f"(Feast: database 0, Larder: database {LARDER_DB}); wrk -t1, {R['args']['wrk_duration']} s per run, median of "
        f"{R['args']['reps']} run(s); client, server and Redis share the 2 cores. Feast: `feast serve --workers "
        f"{R['args']['feast_workers']}`.",
        "",
    ]
    if m:
        ml, mf = m["larder"], m.get("feast")
        lines += [
            f"## Materialize ({m['entity_rows']:,} entity rows, {m['feature_values']:,} values, Redis emptied first)",
            "",
            "| | wall (s) | entity rows/s | peak RSS (MB) |",
            "| --- | --- | --- | --- |",
            f"| Larder (`larder materialize`, whole process) | {ml['wall_s']:.2f} | {ml['entity_rows_per_s']:,.0f} | "
            f"{ml['peak_rss_mb']:.0f} |",
        ]
        if mf:
            lines.append(f"| Feast (`FeatureStore.materialize`, in-process; process {mf['process_wall_s']:.2f} s) | "
                         f"{mf['wall_s']:.2f} | {mf['entity_rows_per_s']:,.0f} | {mf['peak_rss_mb']:.0f} |")
            lines += ["", f"Ratio (entity rows/s): **{ml['entity_rows_per_s'] / mf['entity_rows_per_s']:.1f}x**. "
                      "Targets (issue 6): >= 20x, Larder peak RSS <= 300 MB."]
        lines.append("")
    lines += [
        "## /get-online-features from Redis",
        "",
        "| entities x 15 | c | Larder req/s | p50 / p99 (ms) | Feast req/s | p50 / p99 (ms) | Larder / Feast | Redis ceiling req/s | Larder / ceiling |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in (1, 100):
        for c in R["args"]["concurrency"]:
            k = f"n{n}_c{c}"
            if k not in L:
                continue
            l, f, ce = L[k], F.get(k), C.get(k)
            fr = f"{f['rps']:.0f} | {f['lat_p50_us'] / 1000:.2f} / {f['lat_p99_us'] / 1000:.2f}" if f else "— | —"
            ratio = f"{l['rps'] / f['rps']:.1f}x" if f and f["rps"] else "—"
            cr = f"{ce['requests_per_s']:.0f} | {l['rps'] / ce['requests_per_s']:.0%}" if ce else "— | —"
            lines.append(f"| {n} | {c} | {l['rps']:.0f} | {l['lat_p50_us'] / 1000:.2f} / {l['lat_p99_us'] / 1000:.2f} | "
                         f"{fr} | {ratio} | {cr} |")
    lines += ["", "| push, to=online | c | Larder rows/s | Feast rows/s | ratio |", "| --- | --- | --- | --- | --- |"]
    for rows in (1, 100):
        for c in R["args"]["concurrency"]:
            k = f"push_r{rows}_c{c}"
            if k in L:
                f = F.get(k)
                lines.append(f"| {rows}-row bodies | {c} | {L[k]['rows_per_s']:.0f} | "
                             f"{f['rows_per_s']:.0f} | {L[k]['rows_per_s'] / f['rows_per_s']:.1f}x |" if f else
                             f"| {rows}-row bodies | {c} | {L[k]['rows_per_s']:.0f} | — | — |")
    lines += [
        "",
        f"Server RSS (MB): Larder idle {L.get('idle_rss_mb') or 0:.0f}, peak {L.get('peak_rss_mb') or 0:.0f}; "
        f"Feast idle {F.get('idle_rss_mb') or 0:.0f}, peak {F.get('peak_rss_mb') or 0:.0f}. "
        f"Golden check (100-entity body, every value): {R.get('golden', 'not run')}.",
        "",
        "Targets (issue 6): >= 20x Feast's requests/s at c=8 and c=64 for 1 and 100 entities, and >= 50% of the",
        "raw Redis ceiling for the same keys. The ceiling is Redis alone answering the same commands (HGETALL",
        "of the same hashes, pipelined per request) with nothing else on the machine's request path: no HTTP,",
        "no JSON, no feature server.",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--wrk-duration", type=int, default=5)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--feast-workers", type=int, default=2)
    ap.add_argument("--no-feast", action="store_true")
    ap.add_argument("--skip", nargs="*", default=[], choices=["materialize", "serve", "ceiling"])
    args = ap.parse_args()
    bf.ARGS = argparse.Namespace(wrk_duration=args.wrk_duration, concurrency=args.concurrency)
    if not (bf.REQ / "body_online_100.json").exists():
        bf.write_requests()
    R = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "env": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}", "args": vars(args)}
    # Redis is part of the system under test in every run here (both tools' reads and writes
    # are its work), so its CPU counts as the run's own, as in the peer's own benchmark:
    # otherwise the quiet-machine gate sees a busy Redis as foreign load, retries, and keeps
    # the attempt in which Redis did the least, that is the slowest one.
    redis = bf.Redis()
    redis.start()
    try:
        run(args, R)
    finally:
        redis.stop()


def run(args, R):
    repo = larder_redis_repo()
    if "materialize" not in args.skip:
        R["materialize"] = materialize(repo, args.reps, not args.no_feast)
    reset_larder(repo)
    subprocess.run([LARDER, "-c", repo, "materialize", bo.MAT_START, bo.MAT_END, "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)
    if "ceiling" not in args.skip:
        R["ceiling"] = ceiling([c for c in args.concurrency if c > 1])
    if "serve" not in args.skip:
        push_offset = [0]
        with bs.LarderServer(repo) as srv:
            args.label = "larder"
            R["larder"] = bs.load(srv, args, args.reps, push_offset)
        R["larder"]["exit_code_on_sigterm"] = srv.exit_code
        if not args.no_feast:
            bf.ensure_materialized("redis")
            with bf.Server(args.feast_workers) as srv:
                args.label = "feast"
                R["feast"] = bs.load(srv, args, args.reps, push_offset)
            mismatches = bs.compare(R["larder"]["golden"], R["feast"]["golden"])
            R["golden"] = "identical values" if not mismatches else f"{len(mismatches)} mismatches: {mismatches[:5]}"
        args.__dict__.pop("label", None)
    R["args"] = vars(args)
    (HERE / "results.json").write_text(json.dumps(R, indent=1, default=str))
    report(R)
    bf.log(f"wrote {HERE / 'results.json'} and RESULTS.md")


if __name__ == "__main__":
    main()
