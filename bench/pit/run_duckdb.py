#!/usr/bin/env python3
"""The DuckDB peer: one ASOF LEFT JOIN, Parquet to Parquet, in a fresh process.

  run_duckdb.py --data DIR [--out out_duckdb.parquet] [--threads 2] [--memory-limit 6GB]

Runs, in an in-memory database with `SET threads=2` (and `SET memory_limit` only when given):

  COPY (SELECT s.*, f.f0, ..., f.f9
        FROM read_parquet('spine.parquet') s
        ASOF LEFT JOIN read_parquet('features.parquet') f
          ON s.entity_id = f.entity_id AND s.event_timestamp >= f.event_timestamp)
  TO 'out_duckdb.parquet' (FORMAT parquet)

and prints one line `RESULT {json}`: query wall time (connect + settings excluded), output rows, the
effective settings and versions. DuckDB's ASOF join has no ttl and no created-timestamp tie-break: for
several feature rows with the same (entity_id, event_timestamp) it returns any one of them.
Spilling (if any) goes to DIR/duckdb_tmp.
"""
import argparse
import json
import os
import resource
import shutil
import sys
import time

import duckdb

N_FEATURES = 10


def sql(spine, features, out):
    cols = ", ".join(f"f.f{i}" for i in range(N_FEATURES))
    return (f"COPY (SELECT s.*, {cols} FROM read_parquet('{spine}') s "
            f"ASOF LEFT JOIN read_parquet('{features}') f "
            f"ON s.entity_id = f.entity_id AND s.event_timestamp >= f.event_timestamp) "
            f"TO '{out}' (FORMAT parquet)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with spine.parquet and features.parquet")
    ap.add_argument("--spine", help="default DATA/spine.parquet")
    ap.add_argument("--features", help="default DATA/features.parquet")
    ap.add_argument("--out", help="default DATA/out_duckdb.parquet")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-limit", help="e.g. 6GB; default: DuckDB's own (80%% of RAM)")
    a = ap.parse_args()
    spine = a.spine or os.path.join(a.data, "spine.parquet")
    features = a.features or os.path.join(a.data, "features.parquet")
    out = a.out or os.path.join(a.data, "out_duckdb.parquet")
    for p in (spine, features, out):
        if "'" in p:
            sys.exit(f"path with a quote not supported: {p}")
    tmp = os.path.join(a.data, "duckdb_tmp")
    if os.path.exists(out):
        os.remove(out)

    con = duckdb.connect(":memory:")
    con.execute(f"SET threads={int(a.threads)}")
    con.execute("SET enable_progress_bar=false")
    con.execute(f"SET temp_directory='{tmp}'")
    if a.memory_limit:
        con.execute(f"SET memory_limit='{a.memory_limit}'")
    settings = {k: con.execute(f"SELECT current_setting('{k}')").fetchone()[0]
                for k in ("threads", "memory_limit", "preserve_insertion_order", "temp_directory")}
    q = sql(spine, features, out)
    t = time.perf_counter()
    r = con.execute(q).fetchall()
    wall = time.perf_counter() - t
    rows = int(r[0][0]) if r and r[0] and r[0][0] is not None else None
    con.close()
    spilled = os.path.isdir(tmp) and any(os.scandir(tmp))
    shutil.rmtree(tmp, ignore_errors=True)
    print("RESULT " + json.dumps({
        "engine": "duckdb", "duckdb": duckdb.__version__, "wall_s": wall, "rows_out": rows,
        "out": out, "settings": settings, "memory_limit_set": a.memory_limit, "spill_dir_used": bool(spilled),
        "sql": q, "peak_rss_mb_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }), flush=True)


if __name__ == "__main__":
    main()
