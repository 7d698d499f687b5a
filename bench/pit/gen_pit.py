#!/usr/bin/env python3
"""Deterministic data for the point-in-time (PIT) join benchmark.

Writes into --out:
  features.parquet  F rows: entity_id int64 in [1, K], event_timestamp, created (timestamp[us, tz=UTC]),
                    f0..f9 float32
  spine.parquet     S rows: entity_id int64, event_timestamp timestamp[us, tz=UTC]
  manifest.json     parameters, row counts, duplicate counts, sha256 of both files

Same parameters + same pyarrow/numpy versions => byte-identical files. Every chunk of CHUNK rows is
drawn from its own numpy PCG64 stream, SeedSequence([seed, table, chunk index]), and written as one
Parquet row group (snappy), so memory stays at a few hundred MB whatever S and F are.

Data shape (timestamps are whole seconds):
  * features: event timestamps uniform over [END - 30 days, END), END = 2025-06-01T00:00:00Z; the file is
    ordered by time like an append-only feature log (chunk c covers its share of the window and is sorted
    by (event_timestamp, entity_id, created)); created = event_timestamp + U[0, 3600) s.
    DUP_FRAC (0.5%) of the rows re-issue an existing (entity_id, event_timestamp) of the same chunk with a
    later created (+U[1, 600) s) and new feature values: the created tie-break decides which one wins.
  * spine: entity ids uniform in [1, K] except ~5% unknown ids (>= UNKNOWN_BASE = 10^12), timestamps
    uniform over [END - 30 days, END + 1 day), in random order; ~0.1% of the rows are exact copies of
    another row of the same chunk.
"""
import argparse
import hashlib
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

END = np.datetime64("2025-06-01T00:00:00", "s")
DAYS = 30
START = END - np.timedelta64(DAYS, "D")
SPINE_END = END + np.timedelta64(1, "D")
CHUNK = 1_000_000
DUP_FRAC = 0.005
UNKNOWN_FRAC = 0.05
SPINE_DUP_FRAC = 0.001
UNKNOWN_BASE = 10**12
N_FEATURES = 10
TS_TYPE = pa.timestamp("us", tz="UTC")
FEATURE_TABLE, SPINE_TABLE = 1, 2

FEATURE_SCHEMA = pa.schema(
    [("entity_id", pa.int64()), ("event_timestamp", TS_TYPE), ("created", TS_TYPE)]
    + [(f"f{i}", pa.float32()) for i in range(N_FEATURES)]
)
SPINE_SCHEMA = pa.schema([("entity_id", pa.int64()), ("event_timestamp", TS_TYPE)])


def _epoch(dt64) -> int:
    return int(dt64.astype("datetime64[s]").astype("int64"))


def _ts(seconds: np.ndarray) -> pa.Array:
    return pa.array(seconds.astype(np.int64) * 1_000_000, type=pa.int64()).cast(TS_TYPE)


def _rng(seed, table, chunk):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, table, chunk])))


def chunk_bounds(n):
    return [(r0, min(n, r0 + CHUNK)) for r0 in range(0, n, CHUNK)]


def feature_chunk(seed, c, r0, r1, n_total, k):
    """Rows [r0, r1) of the feature table; time window proportional to the chunk's share of rows."""
    rng = _rng(seed, FEATURE_TABLE, c)
    m = r1 - r0
    start_s, span = _epoch(START), _epoch(END) - _epoch(START)
    lo, hi = start_s + span * r0 // n_total, start_s + span * r1 // n_total
    n_dup = int(round(m * DUP_FRAC))
    base = m - n_dup
    ids = rng.integers(1, k + 1, size=base, dtype=np.int64)
    ev = rng.integers(lo, max(hi, lo + 1), size=base, dtype=np.int64)
    cr = ev + rng.integers(0, 3600, size=base, dtype=np.int64)
    dup_idx = np.sort(rng.choice(base, size=n_dup, replace=False)) if n_dup else np.zeros(0, np.int64)
    ids = np.concatenate([ids, ids[dup_idx]])
    ev = np.concatenate([ev, ev[dup_idx]])
    cr = np.concatenate([cr, cr[dup_idx] + rng.integers(1, 600, size=n_dup, dtype=np.int64)])
    feats = rng.random((N_FEATURES, m), dtype=np.float32)
    order = np.lexsort((cr, ids, ev))
    cols = [pa.array(ids[order]), _ts(ev[order]), _ts(cr[order])]
    cols += [pa.array(feats[i][order], pa.float32()) for i in range(N_FEATURES)]
    return pa.Table.from_arrays(cols, schema=FEATURE_SCHEMA), n_dup


def spine_chunk(seed, c, r0, r1, k):
    rng = _rng(seed, SPINE_TABLE, c)
    m = r1 - r0
    ids = rng.integers(1, k + 1, size=m, dtype=np.int64)
    ts = rng.integers(_epoch(START), _epoch(SPINE_END), size=m, dtype=np.int64)
    unk = rng.random(m) < UNKNOWN_FRAC
    ids[unk] = UNKNOWN_BASE + rng.integers(0, 10**9, size=int(unk.sum()), dtype=np.int64)
    dup = np.flatnonzero(rng.random(m) < SPINE_DUP_FRAC)
    src = rng.integers(0, m, size=dup.size)
    ids[dup], ts[dup] = ids[src], ts[src]
    return pa.Table.from_arrays([pa.array(ids), _ts(ts)], schema=SPINE_SCHEMA), int(unk.sum()), int(dup.size)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spine-rows", "-S", type=int, required=True)
    ap.add_argument("--feature-rows", "-F", type=int, required=True)
    ap.add_argument("--entities", "-K", type=int, required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if min(a.spine_rows, a.feature_rows, a.entities) < 1:
        ap.error("S, F and K must be positive")
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    files = {}

    # write to temporary names, rename at the end: a killed run never leaves a plausible-looking file
    p = os.path.join(a.out, "features.parquet")
    n_dup = 0
    with pq.ParquetWriter(p + ".tmp", FEATURE_SCHEMA, compression="snappy") as w:
        for c, (r0, r1) in enumerate(chunk_bounds(a.feature_rows)):
            t, d = feature_chunk(a.seed, c, r0, r1, a.feature_rows, a.entities)
            w.write_table(t, row_group_size=CHUNK)
            n_dup += d
    os.replace(p + ".tmp", p)
    files["features.parquet"] = {"rows": a.feature_rows, "dup_key_rows_planted": n_dup}

    p = os.path.join(a.out, "spine.parquet")
    n_unk = n_sdup = 0
    with pq.ParquetWriter(p + ".tmp", SPINE_SCHEMA, compression="snappy") as w:
        for c, (r0, r1) in enumerate(chunk_bounds(a.spine_rows)):
            t, u, d = spine_chunk(a.seed, c, r0, r1, a.entities)
            w.write_table(t, row_group_size=CHUNK)
            n_unk += u
            n_sdup += d
    os.replace(p + ".tmp", p)
    files["spine.parquet"] = {"rows": a.spine_rows, "unknown_entity_rows": n_unk, "exact_duplicate_rows_planted": n_sdup}
    gen_s = time.time() - t0

    for name in files:
        path = os.path.join(a.out, name)
        files[name]["bytes"] = os.path.getsize(path)
        files[name]["sha256"] = sha256(path)
    manifest = {
        "params": {"spine_rows": a.spine_rows, "feature_rows": a.feature_rows, "entities": a.entities, "seed": a.seed,
                   "chunk_rows": CHUNK, "dup_frac": DUP_FRAC, "unknown_frac": UNKNOWN_FRAC,
                   "spine_dup_frac": SPINE_DUP_FRAC, "n_features": N_FEATURES},
        "feature_window": [str(START) + "Z", str(END) + "Z"],
        "spine_window": [str(START) + "Z", str(SPINE_END) + "Z"],
        "unknown_entity_id_base": UNKNOWN_BASE,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "files": files,
        "gen_seconds": round(gen_s, 2),
        "total_seconds": round(time.time() - t0, 2),
    }
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
