#!/usr/bin/env python3
"""Redis interop between Larder and Feast 0.67: each reads what the other wrote.

Uses the Feast peer's data and definitions (/work/shared/bench/feast: 100k drivers x 10
features, 50k customers x 5 features) and a Larder repo with the same definitions in YAML
(the one bench/online uses), both pointing at the same Redis database and project:

  1. FLUSHDB; Feast materializes (FeatureStore.materialize); Feast's SDK and
     `larder get-online-features` read the same sample of entity rows -> must be equal;
  2. FLUSHDB; `larder materialize` writes; Feast's SDK and Larder read the sample again ->
     both must equal what Feast read in step 1 (same values written by either tool).

The sample has 2,000 entity rows (known and unknown ids; driver and customer keys in each row).
Values are compared exactly for ints/strings and to float32 precision for floats. Exits 1 with
the mismatches listed otherwise. Run through feast_interop.sh.
"""
import argparse
import json
import math
import os
import random
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
FEAST_BENCH = Path(os.environ.get("FEAST_BENCH_DIR", "/work/shared/bench/feast"))
sys.path.insert(0, str(HERE.parent / "online"))
from bench_online import FEATURES_YAML, MAT_END, MAT_START  # noqa: E402  (the Larder twin repo)

PROJECT = "feast_bench"
SERVICE = "driver_customer_v1"


def feast_repo(work: Path, redis: str) -> Path:
    repo = work / "feast_repo"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "definitions.py").write_text((FEAST_BENCH / "feature_repo" / "definitions.py").read_text())
    (repo / "feature_store.yaml").write_text(
        f"project: {PROJECT}\nregistry: {work}/feast_registry.db\nprovider: local\n"
        f"online_store:\n  type: redis\n  connection_string: \"{redis}\"\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n")
    return repo


def larder_repo(work: Path, redis: str, data: Path) -> Path:
    repo = work / "larder_repo"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        f"project: {PROJECT}\nregistry: {work}/larder_registry.json\nprovider: local\n"
        f"online_store:\n  type: redis\n  connection_string: \"{redis}\"\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n")
    (repo / "features.yaml").write_text(FEATURES_YAML.format(data=data))
    return repo


def sample_rows(n: int):
    rng = random.Random(7)
    # The peer's ids: drivers 1000..100999, customers 1..50000; a few unknown ids of each.
    return [{"driver_id": rng.choice([rng.randint(1000, 100999), rng.randint(200000, 200100)]),
             "customer_id": rng.choice([rng.randint(1, 50000), rng.randint(900000, 900100)])}
            for _ in range(n)]


def feast_read(store, rows):
    svc = store.get_feature_service(SERVICE)
    return store.get_online_features(features=svc, entity_rows=rows).to_dict()


def larder_read(larder: str, repo: Path, rows):
    args = [larder, "-c", str(repo), "get-online-features", "--feature-service", SERVICE]
    for r in rows:
        args += ["-e", f"driver_id={r['driver_id']},customer_id={r['customer_id']}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def compare(label: str, want: dict, got: dict, problems: list):
    if set(want) != set(got):
        problems.append(f"{label}: columns differ: {sorted(set(want) ^ set(got))}")
        return
    for col in want:
        if len(want[col]) != len(got[col]):
            problems.append(f"{label}: column {col}: {len(want[col])} vs {len(got[col])} rows")
            continue
        bad = [i for i, (x, y) in enumerate(zip(want[col], got[col])) if not same(x, y)]
        if bad:
            i = bad[0]
            problems.append(f"{label}: column {col}: {len(bad)} rows differ, first row {i}: "
                            f"{want[col][i]!r} vs {got[col][i]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--larder", required=True)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--redis", default="127.0.0.1:6379,db=9")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "BENCHDATA", os.path.expanduser("~/.cache/larder-feast-bench/data"))))
    ap.add_argument("--rows", type=int, default=2000)
    a = ap.parse_args()
    os.environ["BENCHDATA"] = str(a.data)

    import redis as redis_py
    from feast import FeatureStore

    host, port = a.redis.split(",")[0].rsplit(":", 1)
    db = int(dict(kv.split("=") for kv in a.redis.split(",")[1:]).get("db", 0))
    r = redis_py.Redis(host=host, port=int(port), db=db)

    frepo, lrepo = feast_repo(a.work, a.redis), larder_repo(a.work, a.redis, a.data)
    fs = FeatureStore(repo_path=str(frepo))
    import importlib.util
    spec = importlib.util.spec_from_file_location("definitions", frepo / "definitions.py")
    defs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(defs)
    objects = [v for v in vars(defs).values()
               if type(v).__name__ in ("Entity", "FeatureView", "FeatureService", "FileSource", "PushSource")]
    fs.apply(objects)
    subprocess.run([a.larder, "-c", str(lrepo), "apply"], check=True, stdout=subprocess.DEVNULL)
    rows = sample_rows(a.rows)
    problems = []
    start = datetime.fromisoformat(MAT_START.replace("Z", "+00:00"))
    end = datetime.fromisoformat(MAT_END.replace("Z", "+00:00"))

    r.flushdb()
    fs.materialize(start, end)
    feast_keys = r.dbsize()
    f1 = feast_read(fs, rows)
    l1 = larder_read(a.larder, lrepo, rows)
    compare("Larder reading Feast's writes vs Feast", f1, l1, problems)

    r.flushdb()
    subprocess.run([a.larder, "-c", str(lrepo), "materialize", MAT_START, MAT_END, "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    larder_keys = r.dbsize()
    f2 = feast_read(fs, rows)
    l2 = larder_read(a.larder, lrepo, rows)
    compare("Feast reading Larder's writes vs Feast reading its own", f1, f2, problems)
    compare("Larder reading its writes vs Feast reading its own", f1, l2, problems)
    if feast_keys != larder_keys:
        problems.append(f"Feast wrote {feast_keys} Redis keys, Larder {larder_keys}")

    found = sum(v is not None for v in f1["conv_rate"])
    print(json.dumps({"rows": len(rows), "rows_with_driver_values": found,
                      "redis_keys_feast": feast_keys, "redis_keys_larder": larder_keys,
                      "problems": problems}, indent=1))
    r.flushdb()
    if problems or found == 0:
        sys.exit(1)
    print("OK: Feast and Larder read the same values from each other's Redis writes", file=sys.stderr)


if __name__ == "__main__":
    main()
