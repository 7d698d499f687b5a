#!/usr/bin/env python3
"""Render RESULTS.md from results.json (both next to this file). bench_pit.py calls it after every case;
`./run.sh report` re-renders by hand."""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RSS_TARGET_BYTES = 8 * 10**9


def n(x):
    """10000000 -> 10M, 200000 -> 200k, 1500000 -> 1.5M; anything else with thousands separators."""
    for div, suf in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if x >= div and x % (div // 10) == 0:
            return f"{x / div:g}{suf}"
    return f"{x:,}"


def f2(x, d=2):
    return "n/a" if x is None else f"{x:.{d}f}"


def mb(x):
    return "n/a" if x is None else f"{x:,.0f} MB"


def target(case):
    """(target text, met: True/False/None)"""
    L = case.get("larder")
    if case["kind"] == "pit":
        S, F, K = case["spine_rows"], case["feature_rows"], case["entities"]
        if (S, F, K) == (10_000_000, 10_000_000, 1_000_000):
            r = ratio(case)
            return "Larder time ≤ 0.5 × DuckDB's", (None if r is None else r <= 0.5)
        if (S, F, K) == (50_000_000, 50_000_000, 5_000_000):
            if L is None:
                return "completes, Larder peak RSS ≤ 8 GB", (False if case.get("error") and "Larder" in case["error"] else None)
            return "completes, Larder peak RSS ≤ 8 GB", L["max_peak_rss_mb"] * 2**20 <= RSS_TARGET_BYTES
    return "— (reported)", None


def peer_inner(case):
    p = case.get(case["peer"] if case["peer"] != "feast_duckdb" else "feast")
    return p


def ratio(case):
    L, P = case.get("larder"), peer_inner(case)
    if not L or not P or not P.get("inner_wall_s"):
        return None
    return L["wall_s"] / P["inner_wall_s"]


def ratio_outer(case):
    L, P = case.get("larder"), peer_inner(case)
    if not L or not P:
        return None
    return L["wall_s"] / P["wall_s"]


def sizes(case):
    if case["kind"] == "pit":
        return f"spine {n(case['spine_rows'])} × features {n(case['feature_rows'])}, {n(case['entities'])} entities"
    d = case["feast_data"]
    return (f"entity_df {n(case['entity_rows'])} rows; driver_stats {d['driver_stats.parquet']:,} + "
            f"customer_stats {d['customer_stats.parquet']:,} rows, 2 views, 15 features, ttl 2d")


def case_name(case):
    return "PIT, 10 float features" if case["kind"] == "pit" else "Feast-shaped (feature service driver_customer_v1)"


def peer_name(case):
    return "DuckDB ASOF LEFT JOIN" if case["kind"] == "pit" else "Feast 0.67 duckdb offline store"


def order_key(item):
    k, c = item
    if c["kind"] == "pit":
        return (0, c["spine_rows"], c["feature_rows"], c["entities"])
    return (1, c["entity_rows"], 0, 0)


def write_report(R, path):
    cases = sorted(R.get("cases", {}).items(), key=order_key)
    rows = []
    for key, c in cases:
        L, P = c.get("larder"), peer_inner(c)
        tgt, met = target(c)
        lt = (f"{f2(L['wall_s'])} s / {mb(L['max_peak_rss_mb'])}" if L else
              ("failed" if c.get("error") else "not run"))
        pt = (f"{f2(P['inner_wall_s'])} s ({f2(P['wall_s'])} s process) / {mb(P['max_peak_rss_mb'])}" if P else "not run")
        r = ratio(c)
        noisy = (L and L["noisy"]) or (P and P["noisy"])
        met_s = {True: "yes", False: "**no**", None: "n/a"}[met]
        if noisy:
            met_s += " (noisy)"
        rows.append(f"| {case_name(c)} | {sizes(c)} | {lt} | {peer_name(c)}: {pt} | "
                    f"{f2(r) if r is not None else 'n/a'} | {tgt} | {met_s} |")

    envs = [c["environment"] for _, c in cases if c.get("environment")]
    env = envs[-1] if envs else {}
    feast_pk = next((c["environment"].get("feast_venv_packages") for _, c in cases
                     if c.get("environment", {}).get("feast_venv_packages")), None)
    draft = any(not c.get("larder") for _, c in cases)

    details = []
    for key, c in cases:
        L, P = c.get("larder"), peer_inner(c)
        d = [f"### `{key}`", ""]
        d.append(f"- run {c.get('started_at')} → {c.get('finished_at')}, {c['reps']} rep(s) per engine, median reported "
                 f"(peak RSS: the largest of the reps); larder binary: `{c['environment'].get('larder') or 'not available'}` "
                 f"({c['environment'].get('larder_bin_mtime', 'n/a')}); niceness {c['environment'].get('niceness')}; "
                 f"load average at start {', '.join(f'{x:.2f}' for x in c['environment'].get('loadavg_at_start', []))}")
        if c["kind"] == "pit":
            m = c["manifest"]
            d.append(f"- data: `{c['data_dir']}` (gen_pit.py seed {m['params']['seed']}; features.parquet "
                     f"{m['files']['features.parquet']['bytes'] / 2**20:,.0f} MiB, {m['files']['features.parquet']['dup_key_rows_planted']:,} "
                     f"duplicate-key rows; spine.parquet {m['files']['spine.parquet']['bytes'] / 2**20:,.0f} MiB, "
                     f"{m['files']['spine.parquet']['unknown_entity_rows']:,} unknown-entity rows; sha256 "
                     f"features {m['files']['features.parquet']['sha256'][:16]}…, spine {m['files']['spine.parquet']['sha256'][:16]}…)")
            if c.get("duckdb_settings"):
                s = c["duckdb_settings"]
                d.append(f"- DuckDB settings: threads={s['threads']}, memory_limit={s['memory_limit']} "
                         f"({'set by the harness' if c['duckdb']['raw'][0]['inner'].get('memory_limit_set') else 'DuckDB default, not set'}), "
                         f"preserve_insertion_order={s['preserve_insertion_order']}; spilled to disk: "
                         f"{any(r['inner'].get('spill_dir_used') for r in c['duckdb']['raw'])}; output rows {c.get('rows_out_duckdb'):,}")
                d.append(f"- DuckDB SQL: `{c['duckdb_sql']}`")
        else:
            d.append(f"- data: `{c['benchdata']}` (../shared/bench/feast gen_data.py, seed 42), entity_df `{c['entity_df']}`; "
                     f"Feast output rows {c.get('rows_out_feast')}, Feast process RSS before the call "
                     f"{mb(c.get('feast_rss_before_call_mb'))}")
            d.append(f"- Feast: `{c['peer_cmd']}` — times `FeatureStore.get_historical_features(entity_df, "
                     f"features=feature_service).to_df()` inside the process (registry loaded and entity_df read before timing)")
        d.append(f"- Larder{'' if c.get('larder_run', True) else ' (not run: --peer-only)'}: `{c.get('larder_cmd')}`")
        if L:
            d.append(f"- Larder: wall {', '.join(f2(r['wall_s']) for r in L['raw'])} s; peak RSS "
                     f"{', '.join(mb(r['peak_rss_mb']) for r in L['raw'])}; CPU {f2(L['cpu_s'])} s; foreign CPU max "
                     f"{L['foreign_cpu_frac_max']:.0%}{' (noisy)' if L['noisy'] else ''}")
        if P:
            d.append(f"- {peer_name(c)}: in-process {', '.join(f2(r.get('inner', {}).get('wall_s')) for r in P['raw'])} s; "
                     f"process {', '.join(f2(r['wall_s']) for r in P['raw'])} s; peak RSS "
                     f"{', '.join(mb(r['peak_rss_mb']) for r in P['raw'])}; CPU {f2(P['cpu_s'])} s; foreign CPU max "
                     f"{P['foreign_cpu_frac_max']:.0%}{' (noisy)' if P['noisy'] else ''}")
        for name, E in (("Larder", L), (peer_name(c), P)):
            if E and all("after" in r for r in E["raw"]):
                d.append(f"- {name} per rep (kernel time; engine run just before): " + ", ".join(
                    f"sys {f2(r['sys_s'])} s after {r['after'] or 'nothing'}" for r in E["raw"]))
        ro = ratio_outer(c)
        if ro is not None:
            d.append(f"- ratio Larder process / peer process (both incl. start-up): {f2(ro)}")
        if c.get("check"):
            d.append("- correctness check: " + ("**passed**" if c["check"].get("ok") else "**FAILED**"))
            d.append("```json\n" + json.dumps({k: v for k, v in c["check"].items() if k != "larder_schema"}, indent=1) + "\n```")
        if c.get("error"):
            d.append("- error:\n```\n" + c["error"][-2500:] + "\n```")
        details.append("\n".join(d))

    md = f"""# Point-in-time join benchmark: Larder vs DuckDB and Feast

Generated by `bench/pit/report.py` from `results.json` (updated {R.get('updated_at')}). How to run and what each
number means: `README.md` in this folder.
{'''
**Draft:** at least one case has no Larder measurement yet (the `get-historical-features` command or its
release binary did not exist when it ran, `--peer-only`). Re-run `./run.sh bench` / `./run.sh feast` once
`$LARDER_BIN` exists; that replaces these rows.
''' if draft else ''}
Machine: {env.get('nproc')} CPUs ({env.get('cpu_model')}), {env.get('mem_gib')} GiB RAM, kernel {env.get('kernel')},
Python {env.get('python')}; duckdb {env.get('duckdb')}, pyarrow {env.get('pyarrow')}, numpy {env.get('numpy')};
larder `{env.get('larder') or 'not available'}`{'; Feast venv: ' + ', '.join(f'{k} {v}' for k, v in feast_pk.items()) if feast_pk else ''}.

| case | sizes | Larder: time / peak RSS | peer: time / peak RSS | ratio (Larder / peer) | target | met? |
| --- | --- | --- | --- | --- | --- | --- |
""" + "\n".join(rows) + """

- **Larder time**: wall clock of the whole `larder ... get-historical-features` process (start-up, reading both
  Parquet inputs, the join, writing the output Parquet), median of the reps. **Peer time**: the peer's own
  timer around the query only (DuckDB: the `COPY (... ASOF LEFT JOIN ...) TO` statement; Feast:
  `get_historical_features(...).to_df()`), so interpreter start-up and imports count against Larder only;
  the process wall time is given in brackets. **Ratio** = Larder time / peer query time (< 1: Larder faster).
- **Peak RSS**: "Maximum resident set size" from `/usr/bin/time -v` of that process (largest over the reps).
- **noisy**: some run had more than 10% of the machine's CPU used by other processes even after waiting/retrying
  (see `quiet` and `foreign_cpu_frac` in results.json); such numbers are less reliable.
- DuckDB's `ASOF LEFT JOIN` is the closest SQL equivalent of the point-in-time join but has **no ttl** and **no
  `created`-timestamp tie-break** (for several feature rows with the same (entity_id, event_timestamp) it returns
  any one). Larder's PIT view has no ttl (0 = unbounded), so the two compute the same thing except for that
  tie-break. The Feast case compares identical semantics (ttl 2 d, created tie-break) on Feast's data.

## Details per case

""" + "\n\n".join(details) + "\n"
    notes = HERE / "RESULTS_NOTES.md"
    if notes.exists():
        md += "\n" + notes.read_text()
    Path(path).write_text(md)


def main():
    p = HERE / "results.json"
    if not p.exists():
        sys.exit(f"{p} missing: run ./run.sh bench first")
    write_report(json.loads(p.read_text()), HERE / "RESULTS.md")
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
