#!/usr/bin/env python3
"""Point-in-time join benchmark orchestrator: Larder vs a peer, same files, same invocation.

  bench_pit.py pit --spine-rows S --feature-rows F --entities K [--reps N] [--check|--no-check] [--peer-only]
                   [--memory-limit 6GB]
      Larder `get-historical-features` vs DuckDB `ASOF LEFT JOIN` (run_duckdb.py, 2 threads) on
      $PITDATA/s{S}_f{F}_k{K}/{spine,features}.parquet (gen_pit.py), Parquet to Parquet.
  bench_pit.py feast [--reps N] [--entity-rows 100000] [--check|--no-check] [--peer-only]
      Larder vs Feast 0.67's duckdb offline store on the Feast peer's data ($BENCHDATA, ../shared/bench/feast).

Every measurement is a fresh process under `/usr/bin/time -v` (wall clock, peak RSS, CPU time). Before each
one the harness waits (bounded) for a quiet machine; a run during which processes other than the measured one
used more than BENCH_FOREIGN_MAX (10%) of the machine is retried (at most 3 attempts, least disturbed kept).
All waiting and retrying shares one budget per invocation (BENCH_QUIET_BUDGET_S, default 300 s); after it is
spent the harness measures as is and flags the result as noisy. Peer and Larder runs alternate (rep 1: peer
first, rep 2: Larder first, ...); medians are reported. Results are merged into results.json and RESULTS.md
is re-rendered (report.py).
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_PY = sys.executable
PITDATA = Path(os.environ.get("PITDATA", os.path.expanduser("~/.cache/larder-bench/pit")))
LARDER_BIN = Path(os.environ.get("LARDER_BIN", os.path.expanduser("~/.cache/larder-ci/release/larder")))
FEAST_BENCH_DIR = Path(os.environ.get("FEAST_BENCH_DIR", "/work/shared/bench/feast"))
FEAST_VENV = Path(os.environ.get("FEAST_VENV", os.path.expanduser("~/.cache/larder-feast-bench/venv")))
BENCHDATA = Path(os.environ.get("BENCHDATA", os.path.expanduser("~/.cache/larder-feast-bench/data")))
N_FEATURES = 10
PIT_FEATURES = [f"f{i}" for i in range(N_FEATURES)]
RSS_TARGET_BYTES = 8 * 10**9  # "peak RSS <= 8 GB"

NCPU = os.cpu_count() or 1
FOREIGN_MAX = float(os.environ.get("BENCH_FOREIGN_MAX", "0.10"))
QUIET_MAX = float(os.environ.get("BENCH_QUIET_MAX", "0.10"))
QUIET_WAIT_S = float(os.environ.get("BENCH_QUIET_WAIT_S", "120"))
MAX_ATTEMPTS = int(os.environ.get("BENCH_MAX_ATTEMPTS", "3"))
QUIET_BUDGET_S = float(os.environ.get("BENCH_QUIET_BUDGET_S", "300"))
_budget_spent = [0.0]


class BenchError(Exception):
    pass


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- quiet machine
def cpu_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def top_foreign():
    """Short description of the busiest processes right now (for the log)."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"], capture_output=True,
                             text=True, timeout=5).stdout.splitlines()[:3]
        return ", ".join(" ".join(l.split()) for l in out)
    except Exception:
        return "?"


def wait_quiet():
    """Wait until other processes use <= QUIET_MAX of the machine, at most QUIET_WAIT_S and within the budget."""
    t0 = time.time()
    warned = False
    while True:
        b0 = cpu_busy_s()
        time.sleep(0.5)
        frac = max(0.0, cpu_busy_s() - b0) / (0.5 * NCPU)
        waited = time.time() - t0
        if frac <= QUIET_MAX or waited > QUIET_WAIT_S or _budget_spent[0] + waited > QUIET_BUDGET_S:
            if waited > 0.6:
                _budget_spent[0] += waited
            return waited, frac
        if not warned:
            log(f"  machine busy ({min(frac, 1.0):.0%} of {NCPU} CPUs: {top_foreign()}); waiting up to "
                f"{min(QUIET_WAIT_S, max(0.0, QUIET_BUDGET_S - _budget_spent[0])):.0f}s")
            warned = True


# ---------------------------------------------------------------- timed subprocess
_TIME_KEYS = {
    "Elapsed (wall clock) time (h:mm:ss or m:ss)": "wall",
    "Maximum resident set size (kbytes)": "max_rss_kb",
    "User time (seconds)": "user_s",
    "System time (seconds)": "sys_s",
    "Exit status": "exit_status",
    "Percent of CPU this job got": "cpu_pct",
}


def parse_time_v(text):
    """Parse GNU time -v output: wall_s, peak_rss_mb, user_s, sys_s, exit_status, cpu_pct."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if ": " not in line:
            continue
        k, v = line.rsplit(": ", 1)
        key = _TIME_KEYS.get(k.strip())
        if not key:
            continue
        if key == "wall":
            parts = [float(p) for p in v.strip().split(":")]
            s = 0.0
            for p in parts:
                s = s * 60 + p
            out["wall_s"] = s
        elif key == "max_rss_kb":
            out["peak_rss_mb"] = int(v) / 1024.0
            out["peak_rss_bytes"] = int(v) * 1024
        elif key == "cpu_pct":
            out["cpu_pct"] = float(v.strip().rstrip("%") or 0)
        elif key == "exit_status":
            out["exit_status"] = int(v)
        else:
            out[key] = float(v)
    if "wall_s" not in out or "peak_rss_mb" not in out:
        raise BenchError(f"could not parse /usr/bin/time -v output:\n{text[-2000:]}")
    return out


def run_timed_once(cmd, name, logdir, cwd=None, env=None, timeout=7200):
    logdir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = ["/usr/bin/time", "-v", "-o", tf.name] + [str(c) for c in cmd]
        b0 = cpu_busy_s()
        p = subprocess.run(full, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        busy = cpu_busy_s() - b0
        tv = tf.read()
    logf = logdir / f"{time.strftime('%Y%m%d-%H%M%S')}_{name}.log"
    logf.write_text("$ " + " ".join(full) + "\n" + p.stdout + "\n--- /usr/bin/time -v\n" + tv)
    if p.returncode != 0:
        raise BenchError(f"{name} failed (exit {p.returncode}): {' '.join(str(c) for c in cmd)}\n"
                         f"log: {logf}\n{p.stdout[-3000:]}")
    r = parse_time_v(tv)
    own = r["user_s"] + r["sys_s"]
    r["foreign_cpu_frac"] = round(max(0.0, busy - own) / (max(r["wall_s"], 1e-3) * NCPU), 3)
    r["log"] = str(logf)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            r["inner"] = json.loads(line[7:])
    return r


def run_timed(cmd, name, logdir, measure=True, prepare=None, **kw):
    """Quiet-gated, retried measurement; returns the least disturbed attempt."""
    best = None
    for attempt in range(1, (MAX_ATTEMPTS if measure else 1) + 1):
        if prepare:
            prepare()
        waited, pre = wait_quiet() if measure else (0.0, None)
        r = run_timed_once(cmd, name, logdir, **kw)
        r.update(attempt=attempt, waited_s=round(waited, 1))
        if best is None or r["foreign_cpu_frac"] < best["foreign_cpu_frac"]:
            best = r
        if not measure or r["foreign_cpu_frac"] <= FOREIGN_MAX:
            break
        if attempt == MAX_ATTEMPTS or _budget_spent[0] + r["wall_s"] > QUIET_BUDGET_S:
            log(f"  {name}: {r['foreign_cpu_frac']:.0%} of the machine used by other processes during the run; "
                f"kept and flagged noisy")
            break
        _budget_spent[0] += r["wall_s"]
        log(f"  {name}: {r['foreign_cpu_frac']:.0%} of the machine used by other processes during the run -> retry")
    best["noisy"] = measure and best["foreign_cpu_frac"] > FOREIGN_MAX
    return best


def warm_page_cache(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


# ---------------------------------------------------------------- larder
def larder_preflight():
    """Fail early, with a clear message, if the larder binary or its get-historical-features command is missing."""
    if not LARDER_BIN.exists():
        raise BenchError(f"larder binary not found at {LARDER_BIN} (set LARDER_BIN, or build it: "
                         f"cargo build --release -p larder-cli, target dir ~/.cache/larder-ci). "
                         f"Use --peer-only to time only the peer.")
    if not os.access(LARDER_BIN, os.X_OK):
        raise BenchError(f"{LARDER_BIN} is not executable")
    p = subprocess.run([str(LARDER_BIN), "get-historical-features", "--help"], capture_output=True, text=True)
    if p.returncode != 0:
        raise BenchError(f"{LARDER_BIN} has no working `get-historical-features` command yet "
                         f"(`larder get-historical-features --help` exited {p.returncode}):\n{(p.stderr or p.stdout)[-1500:]}\n"
                         f"Use --peer-only to time only the peer.")
    return larder_version()


def larder_version():
    if not LARDER_BIN.exists():
        return None
    try:
        p = subprocess.run([str(LARDER_BIN), "--version"], capture_output=True, text=True, timeout=10)
        return p.stdout.strip() or None
    except Exception:
        return None


def larder_apply(repo, logdir):
    r = subprocess.run([str(LARDER_BIN), "-c", str(repo), "apply"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    logdir.mkdir(parents=True, exist_ok=True)
    (logdir / "larder_apply.log").write_text(r.stdout)
    if r.returncode != 0:
        raise BenchError(f"`larder -c {repo} apply` failed (exit {r.returncode}):\n{r.stdout[-3000:]}")


def yq(s):
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(str(s))


def write_pit_repo(data):
    repo = data / "repo"
    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: pit_bench\nregistry: data/registry.db\nonline_store: null\noffline_store: {type: file}\n")
    schema = "\n".join(f"      - {{name: {f}, dtype: Float32}}" for f in PIT_FEATURES)
    (repo / "features.yaml").write_text(f"""entities:
  - {{name: entity, join_keys: [entity_id], value_type: Int64}}
data_sources:
  - name: pit_source
    type: file
    path: {yq((data / 'features.parquet').resolve())}
    timestamp_field: event_timestamp
    created_timestamp_column: created
feature_views:
  - name: pit_view
    entities: [entity]
    source: pit_source
    schema:
{schema}
""")
    return repo


# ---------------------------------------------------------------- environment
def environment(feast=False):
    import duckdb
    import numpy
    import pyarrow

    env = {"nproc": NCPU, "kernel": platform.release(), "python": platform.python_version(),
           "duckdb": duckdb.__version__, "pyarrow": pyarrow.__version__, "numpy": numpy.__version__,
           "larder": larder_version(), "larder_bin": str(LARDER_BIN),
           "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
           "niceness": os.nice(0), "loadavg_at_start": os.getloadavg()}
    try:
        env["cpu_model"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except StopIteration:
        env["cpu_model"] = platform.processor()
    if LARDER_BIN.exists():
        st = LARDER_BIN.stat()
        env["larder_bin_mtime"] = datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="seconds")
    if feast:
        fpy = FEAST_VENV / "bin" / "python"
        if fpy.exists():
            p = subprocess.run([str(fpy), "-c", "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) "
                                "for p in ['feast', 'duckdb', 'ibis-framework', 'pandas', 'pyarrow']}))"],
                               capture_output=True, text=True)
            if p.returncode == 0:
                env["feast_venv_packages"] = json.loads(p.stdout.strip().splitlines()[-1])
    return env


# ---------------------------------------------------------------- correctness checks
def _feature_exprs(con, table, feats, view=None):
    """Select list mapping Larder's feature columns (plain `f` or `view__f`) to `f`."""
    cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
    out = []
    for f in feats:
        if f in cols:
            out.append(f'"{f}"')
        elif view and f"{view}__{f}" in cols:
            out.append(f'"{view}__{f}" AS "{f}"')
        else:
            raise BenchError(f"Larder output has no column {f!r} (nor {view}__{f}); columns: {cols}")
    return cols, out


def check_pit(data, larder_out, duckdb_out):
    """Compare Larder's output with DuckDB's (and with an exact reference), see the README."""
    import duckdb
    import pyarrow.parquet as pq

    con = duckdb.connect(":memory:")
    con.execute("SET threads=2")
    con.execute("SET TimeZone='UTC'")  # a tz-naive Larder timestamp column is read as UTC
    sp, fe = data / "spine.parquet", data / "features.parquet"
    con.execute(f"CREATE VIEW spine AS SELECT * FROM read_parquet('{sp}')")
    con.execute(f"CREATE VIEW features AS SELECT * FROM read_parquet('{fe}')")
    con.execute(f"CREATE VIEW lraw AS SELECT * FROM read_parquet('{larder_out}')")
    con.execute(f"CREATE VIEW draw AS SELECT * FROM read_parquet('{duckdb_out}')")
    lcols, fx = _feature_exprs(con, "lraw", PIT_FEATURES, "pit_view")
    fl = ", ".join(PIT_FEATURES)
    con.execute(f"CREATE TEMP TABLE l AS SELECT entity_id::BIGINT AS entity_id, "
                f"event_timestamp::TIMESTAMPTZ AS event_timestamp, {', '.join(fx)} FROM lraw")
    con.execute(f"CREATE TEMP TABLE d AS SELECT entity_id, event_timestamp::TIMESTAMPTZ AS event_timestamp, {fl} FROM draw")
    res = {"larder_columns": lcols,
           "larder_schema": str(pq.read_schema(larder_out)).splitlines(),
           "spine_rows": con.execute("SELECT count(*) FROM spine").fetchone()[0],
           "larder_rows": con.execute("SELECT count(*) FROM l").fetchone()[0],
           "duckdb_rows": con.execute("SELECT count(*) FROM d").fetchone()[0]}

    # row order: Larder promises the spine's order (DuckDB does not)
    con.execute("CREATE TEMP TABLE so AS SELECT row_number() OVER () AS i, entity_id, event_timestamp::TIMESTAMPTZ AS ts FROM spine")
    con.execute("CREATE TEMP TABLE lo AS SELECT row_number() OVER () AS i, entity_id, event_timestamp AS ts FROM l")
    res["larder_rows_out_of_spine_order"] = con.execute(
        "SELECT count(*) FROM so FULL JOIN lo USING (i) WHERE so.entity_id IS DISTINCT FROM lo.entity_id "
        "OR so.ts IS DISTINCT FROM lo.ts").fetchone()[0]

    # spine keys whose as-of feature key (entity_id, event_timestamp) occurs more than once in features:
    # there the created tie-break decides; DuckDB picks any of the rows
    con.execute("CREATE TEMP TABLE dupkeys AS SELECT entity_id, event_timestamp FROM features GROUP BY ALL HAVING count(*) > 1")
    con.execute("CREATE TEMP TABLE matched AS SELECT s.entity_id, s.event_timestamp, k.event_timestamp AS fts "
                "FROM (SELECT DISTINCT entity_id, event_timestamp FROM spine) s ASOF LEFT JOIN "
                "(SELECT DISTINCT entity_id, event_timestamp FROM features) k "
                "ON s.entity_id = k.entity_id AND s.event_timestamp >= k.event_timestamp")
    con.execute("CREATE TEMP TABLE amb AS SELECT m.entity_id, m.event_timestamp::TIMESTAMPTZ AS event_timestamp "
                "FROM matched m SEMI JOIN dupkeys k ON m.entity_id = k.entity_id AND m.fts = k.event_timestamp")
    res["duplicate_feature_keys"] = con.execute("SELECT count(*) FROM dupkeys").fetchone()[0]
    res["spine_rows_on_duplicate_keys"] = con.execute(
        "SELECT count(*) FROM spine s SEMI JOIN amb a ON s.entity_id = a.entity_id "
        "AND s.event_timestamp::TIMESTAMPTZ = a.event_timestamp").fetchone()[0]

    def diff(a, b, where=""):
        q = lambda x, y: f"SELECT count(*) FROM (SELECT * FROM {x} {where} EXCEPT ALL SELECT * FROM {y} {where})"
        return con.execute(q(a, b)).fetchone()[0], con.execute(q(b, a)).fetchone()[0]

    excl = "WHERE NOT EXISTS (SELECT 1 FROM amb WHERE amb.entity_id = {t}.entity_id AND amb.event_timestamp = {t}.event_timestamp)"
    con.execute(f"CREATE TEMP VIEW l_x AS SELECT * FROM l {excl.format(t='l')}")
    con.execute(f"CREATE TEMP VIEW d_x AS SELECT * FROM d {excl.format(t='d')}")
    res["compared_rows_larder_vs_duckdb"] = con.execute("SELECT count(*) FROM l_x").fetchone()[0]
    a, b = diff("l_x", "d_x")
    res["larder_vs_duckdb"] = {"rows_only_in_larder": a, "rows_only_in_duckdb": b}

    # exact reference with Feast's semantics (ttl unbounded): as-of join against features deduplicated to the
    # greatest `created` per (entity_id, event_timestamp); keys whose greatest created is itself tied are excluded
    con.execute("CREATE TEMP TABLE fdedup AS SELECT * FROM features QUALIFY row_number() OVER "
                "(PARTITION BY entity_id, event_timestamp ORDER BY created DESC) = 1")
    con.execute("CREATE TEMP TABLE createdties AS SELECT entity_id, event_timestamp FROM features "
                "GROUP BY entity_id, event_timestamp, created HAVING count(*) > 1")
    con.execute(f"CREATE TEMP TABLE ref AS SELECT s.entity_id, s.event_timestamp::TIMESTAMPTZ AS event_timestamp, "
                f"{', '.join('f.' + c for c in PIT_FEATURES)}, f.event_timestamp AS fts FROM spine s "
                f"ASOF LEFT JOIN fdedup f ON s.entity_id = f.entity_id AND s.event_timestamp >= f.event_timestamp")
    con.execute("CREATE TEMP TABLE amb2 AS SELECT DISTINCT r.entity_id, r.event_timestamp FROM ref r "
                "SEMI JOIN createdties c ON r.entity_id = c.entity_id AND r.fts = c.event_timestamp")
    res["spine_keys_on_tied_created"] = con.execute("SELECT count(*) FROM amb2").fetchone()[0]
    ex2 = "WHERE NOT EXISTS (SELECT 1 FROM amb2 WHERE amb2.entity_id = {t}.entity_id AND amb2.event_timestamp = {t}.event_timestamp)"
    con.execute(f"CREATE TEMP VIEW r_y AS SELECT entity_id, event_timestamp, {fl} FROM ref {ex2.format(t='ref')}")
    con.execute(f"CREATE TEMP VIEW l_y AS SELECT * FROM l {ex2.format(t='l')}")
    con.execute(f"CREATE TEMP VIEW d_y AS SELECT * FROM d {ex2.format(t='d')}")
    a, b = diff("l_y", "r_y")
    res["larder_vs_reference"] = {"rows_only_in_larder": a, "rows_only_in_reference": b}
    a, b = diff("d_y", "r_y")
    res["duckdb_vs_reference"] = {"rows_only_in_duckdb": a, "rows_only_in_reference": b}
    res["ok"] = (res["larder_rows"] == res["spine_rows"] and res["larder_rows_out_of_spine_order"] == 0
                 and res["larder_vs_duckdb"] == {"rows_only_in_larder": 0, "rows_only_in_duckdb": 0}
                 and res["larder_vs_reference"] == {"rows_only_in_larder": 0, "rows_only_in_reference": 0})
    con.close()
    return res


def check_feast(entity_df, larder_out, feast_out, views):
    """Multiset comparison of Larder's and Feast's outputs (all rows: both apply ttl and the created tie-break).
    Numeric features are compared as DOUBLE (Feast's pandas output turns nullable ints into float64)."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone='UTC'")
    con.execute(f"CREATE VIEW lraw AS SELECT * FROM read_parquet('{larder_out}')")
    con.execute(f"CREATE VIEW fraw AS SELECT * FROM read_parquet('{feast_out}')")
    con.execute(f"CREATE VIEW ent AS SELECT * FROM read_parquet('{entity_df}')")
    keys = ["driver_id", "customer_id", "event_timestamp"]
    ftypes = {r[0]: r[1] for r in con.execute("DESCRIBE fraw").fetchall()}
    lcols = [r[0] for r in con.execute("DESCRIBE lraw").fetchall()]
    feats = [c for c in ftypes if c not in keys]

    def expr(table_cols, f, is_larder):
        name = f
        if is_larder and f not in table_cols:
            cand = [f"{v}__{f}" for v in views if f"{v}__{f}" in table_cols]
            if not cand:
                raise BenchError(f"Larder output has no column {f!r}; columns: {table_cols}")
            name = cand[0]
        t = ftypes[f].upper()
        cast = "VARCHAR" if t in ("VARCHAR", "STRING") else "DOUBLE"
        return f'"{name}"::{cast} AS "{f}"'

    sel = lambda tbl, cols, is_l: ("SELECT driver_id::BIGINT AS driver_id, customer_id::BIGINT AS customer_id, "
                                   "event_timestamp::TIMESTAMPTZ AS event_timestamp, "
                                   + ", ".join(expr(cols, f, is_l) for f in feats) + f" FROM {tbl}")
    con.execute(f"CREATE TEMP TABLE l AS {sel('lraw', lcols, True)}")
    con.execute(f"CREATE TEMP TABLE f AS {sel('fraw', list(ftypes), False)}")
    q = lambda x, y: con.execute(f"SELECT count(*) FROM (SELECT * FROM {x} EXCEPT ALL SELECT * FROM {y})").fetchone()[0]
    con.execute("CREATE TEMP TABLE so AS SELECT row_number() OVER () AS i, driver_id, customer_id, event_timestamp::TIMESTAMPTZ AS ts FROM ent")
    con.execute("CREATE TEMP TABLE lo AS SELECT row_number() OVER () AS i, driver_id, customer_id, event_timestamp AS ts FROM l")
    res = {"larder_columns": lcols, "features_compared": feats,
           "entity_rows": con.execute("SELECT count(*) FROM ent").fetchone()[0],
           "larder_rows": con.execute("SELECT count(*) FROM l").fetchone()[0],
           "feast_rows": con.execute("SELECT count(*) FROM f").fetchone()[0],
           "larder_rows_out_of_entity_df_order": con.execute(
               "SELECT count(*) FROM so FULL JOIN lo USING (i) WHERE so.driver_id IS DISTINCT FROM lo.driver_id OR "
               "so.customer_id IS DISTINCT FROM lo.customer_id OR so.ts IS DISTINCT FROM lo.ts").fetchone()[0],
           "rows_only_in_larder": q("l", "f"), "rows_only_in_feast": q("f", "l")}
    per_feature = {}
    if res["rows_only_in_larder"] or res["rows_only_in_feast"]:
        # which features differ (rows joined on the keys; keys unique after dropping exact-duplicate entity rows)
        for c in feats:
            per_feature[c] = con.execute(
                f"SELECT count(*) FROM (SELECT DISTINCT * FROM l) a JOIN (SELECT DISTINCT * FROM f) b "
                f"USING (driver_id, customer_id, event_timestamp) WHERE a.\"{c}\" IS DISTINCT FROM b.\"{c}\"").fetchone()[0]
    res["mismatching_rows_per_feature"] = per_feature
    res["ok"] = (res["larder_rows"] == res["entity_rows"] and res["rows_only_in_larder"] == 0
                 and res["rows_only_in_feast"] == 0 and res["larder_rows_out_of_entity_df_order"] == 0)
    con.close()
    return res


# ---------------------------------------------------------------- results file
def save_case(key, case):
    import report

    path = HERE / "results.json"
    R = json.loads(path.read_text()) if path.exists() else {}
    R.setdefault("cases", {})[key] = case
    R["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path.write_text(json.dumps(R, indent=2, default=str) + "\n")
    report.write_report(R, HERE / "RESULTS.md")
    log(f"wrote {path} and {HERE / 'RESULTS.md'}")


def summarize(runs):
    if not runs:
        return None
    inner = [r.get("inner", {}).get("wall_s") for r in runs]
    return {"wall_s": median([r["wall_s"] for r in runs]),
            "inner_wall_s": median(inner),
            "peak_rss_mb": median([r["peak_rss_mb"] for r in runs]),
            "max_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "cpu_s": median([r["user_s"] + r["sys_s"] for r in runs]),
            "noisy": any(r["noisy"] for r in runs),
            "foreign_cpu_frac_max": max(r["foreign_cpu_frac"] for r in runs),
            "raw": runs}


def interleave(reps, peer, larder):
    """rep 1: peer then Larder; rep 2: Larder then peer; ... Either may be None (skipped)."""
    for i in range(reps):
        order = [peer, larder] if i % 2 == 0 else [larder, peer]
        for fn in order:
            if fn:
                fn(i)


# ---------------------------------------------------------------- the PIT case
def cmd_pit(a):
    S, F, K = a.spine_rows, a.feature_rows, a.entities
    data = PITDATA / f"s{S}_f{F}_k{K}"
    manifest_p = data / "manifest.json"
    if not manifest_p.exists():
        raise BenchError(f"{manifest_p} missing: run `./run.sh gen {S} {F} {K}` first")
    manifest = json.loads(manifest_p.read_text())
    big = max(S, F) > 20_000_000
    reps = a.reps or (1 if big else 3)
    check = a.check if a.check is not None else max(S, F) <= 2_000_000
    logdir = data / "logs"
    key = f"pit_s{S}_f{F}_k{K}"
    env = environment()
    larder_ok = not a.peer_only
    if larder_ok:
        env["larder"] = larder_preflight()
    log(f"{key}: data {data}, reps {reps}, check {check}, larder {'skipped (--peer-only)' if a.peer_only else LARDER_BIN}")
    spine, feats = data / "spine.parquet", data / "features.parquet"
    out_d, out_l = data / "out_duckdb.parquet", data / "out_larder.parquet"
    repo = write_pit_repo(data)  # written in --peer-only mode too, for reference
    larder_cmd = [LARDER_BIN, "-c", repo, "get-historical-features", "--entities", spine,
                  "--features", *[f"pit_view:{f}" for f in PIT_FEATURES], "--output", out_l]
    if larder_ok:
        larder_apply(repo, logdir)
    duck_cmd = [VENV_PY, HERE / "run_duckdb.py", "--data", data, "--threads", "2"]
    if a.memory_limit:
        duck_cmd += ["--memory-limit", a.memory_limit]
    warm_page_cache([spine, feats])

    runs = {"duckdb": [], "larder": []}
    # Which engine ran just before each rep: on a VM that hands freed memory back to the host,
    # the next process pays again to touch it (kernel time), so the order shows in sys_s.
    previous = [None]

    def rm(p):
        return lambda: p.unlink(missing_ok=True)

    def peer(i):
        r = run_timed(duck_cmd, "duckdb", logdir, prepare=rm(out_d), cwd=data)
        r["after"], previous[0] = previous[0], "duckdb"
        runs["duckdb"].append(r)
        log(f"  rep {i + 1} duckdb: {r['wall_s']:.2f}s process, {r['inner']['wall_s']:.2f}s query, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB, rows {r['inner']['rows_out']}, sys {r['sys_s']:.2f}s, "
            f"after {r['after']}, foreign CPU {r['foreign_cpu_frac']:.0%}")

    def larder(i):
        try:
            r = run_timed(larder_cmd, "larder", logdir, prepare=rm(out_l), cwd=data)
        except BenchError as e:
            raise BenchError(f"Larder's get-historical-features failed; the DuckDB runs so far are in results.json.\n{e}")
        r["after"], previous[0] = previous[0], "larder"
        runs["larder"].append(r)
        log(f"  rep {i + 1} larder: {r['wall_s']:.2f}s process, peak RSS {r['peak_rss_mb']:.0f} MB, "
            f"sys {r['sys_s']:.2f}s, after {r['after']}, foreign CPU {r['foreign_cpu_frac']:.0%}")

    case = {"kind": "pit", "spine_rows": S, "feature_rows": F, "entities": K, "data_dir": str(data),
            "manifest": manifest, "reps": reps, "environment": env,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "larder_cmd": " ".join(str(c) for c in larder_cmd), "larder_run": larder_ok,
            "peer_cmd": " ".join(str(c) for c in duck_cmd), "peer": "duckdb",
            "quiet": {"foreign_max": FOREIGN_MAX, "quiet_wait_s": QUIET_WAIT_S, "budget_s": QUIET_BUDGET_S,
                      "max_attempts": MAX_ATTEMPTS}}
    err = None
    try:
        interleave(reps, peer, larder if larder_ok else None)
    except BenchError as e:
        err = str(e)
    finally:
        case["duckdb"] = summarize(runs["duckdb"])
        case["larder"] = summarize(runs["larder"])
        if case["duckdb"]:
            case["duckdb_settings"] = runs["duckdb"][0]["inner"]["settings"]
            case["duckdb_sql"] = runs["duckdb"][0]["inner"]["sql"]
            case["rows_out_duckdb"] = runs["duckdb"][0]["inner"]["rows_out"]
        case["error"] = err
        case["quiet"]["budget_spent_s"] = round(_budget_spent[0], 1)
    if err is None and check and case["larder"] and case["duckdb"]:
        log("checking Larder's output against DuckDB's and against the exact reference ...")
        try:
            case["check"] = check_pit(data, out_l, out_d)
        except BenchError as e:
            case["check"] = {"ok": False, "error": str(e)}
        log("check: " + json.dumps({k: v for k, v in case["check"].items() if k not in ("larder_schema", "larder_columns")}))
    case["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    save_case(key, case)
    if err:
        raise BenchError(err)


# ---------------------------------------------------------------- the Feast-shaped case
def larder_feast_repo(root):
    repo = root / "repo"
    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: feast_bench\nregistry: data/registry.db\nonline_store: null\noffline_store: {type: file}\n")
    (repo / "features.yaml").write_text(f"""# YAML translation of ../shared/bench/feast/feature_repo/definitions.py (the views read by
# get-historical-features; the push source / driver_stats_fresh view are not needed here).
entities:
  - {{name: driver, join_keys: [driver_id], value_type: Int64}}
  - {{name: customer, join_keys: [customer_id], value_type: Int64}}
data_sources:
  - name: driver_stats_source
    type: file
    path: {yq(BENCHDATA.resolve() / 'driver_stats.parquet')}
    timestamp_field: event_timestamp
    created_timestamp_column: created
  - name: customer_stats_source
    type: file
    path: {yq(BENCHDATA.resolve() / 'customer_stats.parquet')}
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
    tags: {{team: driver_performance}}
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
    tags: {{team: customer}}
feature_services:
  - name: driver_customer_v1
    features:
      - driver_stats: "*"
      - customer_stats: "*"
""")
    return repo


def cmd_feast(a):
    root = PITDATA / "feast_case"
    logdir = root / "logs"
    fpy = FEAST_VENV / "bin" / "python"
    feast_cli = FEAST_VENV / "bin" / "feast"
    fenv = dict(os.environ, BENCHDATA=str(BENCHDATA), FEAST_VENV=str(FEAST_VENV), PYTHONDONTWRITEBYTECODE="1")
    if not fpy.exists():
        log(f"no Feast venv at {FEAST_VENV}: running {FEAST_BENCH_DIR}/run.sh setup")
        subprocess.run(["bash", str(FEAST_BENCH_DIR / "run.sh"), "setup"], env=fenv, check=True)
    if not (BENCHDATA / "gen_manifest.json").exists():
        log(f"no Feast peer data in {BENCHDATA}: running {FEAST_BENCH_DIR}/run.sh gen")
        subprocess.run(["bash", str(FEAST_BENCH_DIR / "run.sh"), "gen"], env=fenv, check=True)
    entity_df = BENCHDATA / f"entity_df_{a.entity_rows}.parquet"
    if not entity_df.exists():
        raise BenchError(f"{entity_df} missing (the Feast peer's gen writes entity_df_10000/100000)")
    env = environment(feast=True)
    larder_ok = not a.peer_only
    if larder_ok:
        env["larder"] = larder_preflight()
    check = a.check if a.check is not None else True
    reps = a.reps or 3

    # the Feast harness is read-only: work on a copy of its worker and feature repo
    peer = root / "feast_peer"
    shutil.rmtree(peer, ignore_errors=True)
    peer.mkdir(parents=True)
    shutil.copy2(FEAST_BENCH_DIR / "bench_worker.py", peer / "bench_worker.py")
    shutil.copytree(FEAST_BENCH_DIR / "feature_repo", peer / "feature_repo")
    if not (BENCHDATA / "registry_duckdb.db").exists():
        log("feast apply (duckdb config, untimed)")
        p = subprocess.run([str(feast_cli), "-c", str(peer / "feature_repo"), "-f",
                            str(peer / "feature_repo" / "feature_store_duckdb.yaml"), "apply"],
                           env=fenv, cwd=peer / "feature_repo", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            raise BenchError(f"feast apply failed:\n{p.stdout[-3000:]}")

    out_f, out_l = root / "out_feast.parquet", root / "out_larder.parquet"
    repo = larder_feast_repo(root)
    larder_cmd = [LARDER_BIN, "-c", repo, "get-historical-features", "--entities", entity_df,
                  "--feature-service", "driver_customer_v1", "--output", out_l]
    if larder_ok:
        larder_apply(repo, logdir)
    warm_page_cache([BENCHDATA / "driver_stats.parquet", BENCHDATA / "customer_stats.parquet", entity_df])
    runs = {"feast": [], "larder": []}

    def feast_run(i):
        cmd = [fpy, peer / "bench_worker.py", "hist", "feature_store_duckdb.yaml", entity_df]
        if not runs["feast"]:
            cmd += ["--save", out_f]  # canonical sort + write happen after the timed call
        r = run_timed(cmd, "feast_duckdb", logdir, cwd=peer / "feature_repo", env=fenv)
        runs["feast"].append(r)
        log(f"  rep {i + 1} feast duckdb: {r['inner']['wall_s']:.2f}s get_historical_features().to_df(), "
            f"{r['wall_s']:.2f}s process, peak RSS {r['peak_rss_mb']:.0f} MB, rows {r['inner']['rows_out']}, "
            f"foreign CPU {r['foreign_cpu_frac']:.0%}")

    def larder_run(i):
        try:
            r = run_timed(larder_cmd, "larder", logdir, prepare=lambda: out_l.unlink(missing_ok=True), cwd=root)
        except BenchError as e:
            raise BenchError(f"Larder's get-historical-features failed; the Feast runs so far are in results.json.\n{e}")
        runs["larder"].append(r)
        log(f"  rep {i + 1} larder: {r['wall_s']:.2f}s process, peak RSS {r['peak_rss_mb']:.0f} MB, "
            f"foreign CPU {r['foreign_cpu_frac']:.0%}")

    key = f"feast_{a.entity_rows // 1000}k"
    fm = json.loads((BENCHDATA / "gen_manifest.json").read_text())
    case = {"kind": "feast", "entity_rows": a.entity_rows, "entity_df": str(entity_df), "benchdata": str(BENCHDATA),
            "feast_data": {n: fm["files"][n]["rows"] for n in ("driver_stats.parquet", "customer_stats.parquet")},
            "feast_manifest_sha256": {n: v["sha256"] for n, v in fm["files"].items()},
            "reps": reps, "environment": env, "peer": "feast_duckdb",
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "larder_cmd": " ".join(str(c) for c in larder_cmd), "larder_run": larder_ok,
            "peer_cmd": f"{fpy} bench_worker.py hist feature_store_duckdb.yaml {entity_df} (copy of {FEAST_BENCH_DIR})",
            "quiet": {"foreign_max": FOREIGN_MAX, "quiet_wait_s": QUIET_WAIT_S, "budget_s": QUIET_BUDGET_S,
                      "max_attempts": MAX_ATTEMPTS}}
    err = None
    try:
        interleave(reps, feast_run, larder_run if larder_ok else None)
    except BenchError as e:
        err = str(e)
    finally:
        case["feast"] = summarize(runs["feast"])
        case["larder"] = summarize(runs["larder"])
        if runs["feast"]:
            case["rows_out_feast"] = runs["feast"][0]["inner"]["rows_out"]
            case["feast_rss_before_call_mb"] = median([r["inner"]["rss_before_mb"] for r in runs["feast"]])
        case["error"] = err
        case["quiet"]["budget_spent_s"] = round(_budget_spent[0], 1)
    if err is None and check and case["larder"] and case["feast"]:
        log("checking Larder's output against Feast's ...")
        try:
            case["check"] = check_feast(entity_df, out_l, out_f, ["driver_stats", "customer_stats"])
        except BenchError as e:
            case["check"] = {"ok": False, "error": str(e)}
        log("check: " + json.dumps({k: v for k, v in case["check"].items() if k != "larder_columns"}))
    case["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    save_case(key, case)
    if err:
        raise BenchError(err)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="case", required=True)
    for name in ("pit", "feast"):
        p = sub.add_parser(name)
        p.add_argument("--reps", type=int, help="repetitions per engine (default 3; 1 above 20M rows)")
        p.add_argument("--check", dest="check", action="store_true", default=None,
                       help="compare outputs (default: on for the feast case and for pit sizes <= 2M rows)")
        p.add_argument("--no-check", dest="check", action="store_false")
        p.add_argument("--peer-only", action="store_true", help="time only the peer (no larder binary needed)")
        if name == "pit":
            p.add_argument("--spine-rows", type=int, required=True)
            p.add_argument("--feature-rows", type=int, required=True)
            p.add_argument("--entities", type=int, required=True)
            p.add_argument("--memory-limit", help="DuckDB memory_limit (default: DuckDB's own, 80%% of RAM)")
        else:
            p.add_argument("--entity-rows", type=int, default=100_000)
    a = ap.parse_args()
    if not Path("/usr/bin/time").exists():
        sys.exit("/usr/bin/time missing: run ./run.sh setup (installs Debian's `time`)")
    sys.path.insert(0, str(HERE))
    try:
        (cmd_pit if a.case == "pit" else cmd_feast)(a)
    except BenchError as e:
        print(f"\nERROR: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
