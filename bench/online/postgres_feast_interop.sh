#!/usr/bin/env bash
# Feast interop check of the Postgres online store (not part of `cargo test`: it needs Feast).
#
# Usage: LARDER_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test \
#          bench/online/postgres_feast_interop.sh
#   1. builds `larder` (debug, through `cargo test --workspace --no-run`) unless LARDER_BIN is set;
#   2. makes a demo repo (`larder init`) whose online store is Postgres in a fresh schema,
#      applies it and materializes the last 7 days with Larder;
#   3. applies the same feature view with Feast (Python definitions, same project and schema)
#      and reads two drivers with Feast's SDK: the values must equal `larder get-online-features`;
#   4. writes two rows with Feast's `write_to_online_store` and reads them with Larder;
#   5. drops the schema.
#
# Environment: LARDER_BIN, CARGO_TARGET_DIR (default ~/.cache/larder-ci), FEAST_VENV
#   (default ~/.cache/larder-feast-bench/venv, with feast==0.67.0), PSYCOPG_PATH (a folder
#   holding psycopg[binary,pool] when the venv lacks it, default ~/.cache/larder-feast-bench/psycopg;
#   filled with `pip install --target` when missing), KEEP=1 keeps the temp folder.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
URL="${LARDER_TEST_POSTGRES_URL:?set LARDER_TEST_POSTGRES_URL, e.g. postgresql://postgres@127.0.0.1:5432/test}"
FEAST_VENV="${FEAST_VENV:-$HOME/.cache/larder-feast-bench/venv}"
PSYCOPG_PATH="${PSYCOPG_PATH:-$HOME/.cache/larder-feast-bench/psycopg}"
PY="$FEAST_VENV/bin/python"
export PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$PSYCOPG_PATH${PYTHONPATH:+:$PYTHONPATH}"

[ -x "$PY" ] || { echo "no Feast venv at $FEAST_VENV (see bench/server/feast_compat.sh)" >&2; exit 1; }
if ! "$PY" -c "import psycopg, psycopg_pool" 2>/dev/null; then
  echo "installing psycopg[binary,pool] into $PSYCOPG_PATH" >&2
  "$PY" -m pip install -q --target "$PSYCOPG_PATH" "psycopg[binary,pool]>=3.2.5"
fi

if [ -z "${LARDER_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/larder-ci}"
  (cd "$ROOT" && cargo test --workspace --no-run >&2)
  LARDER_BIN="$CARGO_TARGET_DIR/debug/larder"
fi

# host, port, database, user of the URL (postgresql://user[:pw]@host[:port]/db).
read -r PGHOST_ PGPORT_ PGDB_ PGUSER_ < <("$PY" - "$URL" <<'EOF'
import sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
print(u.hostname or "localhost", u.port or 5432, u.path.lstrip("/") or "postgres", u.username or "postgres")
EOF
)
export PGPASSWORD_="$("$PY" -c "import sys, urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).password or '')" "$URL")"
SCHEMA="larder_interop_$$_$(date +%s)"
WORK="$(mktemp -d)"
cleanup() {
  "$PY" -c "import psycopg, sys; psycopg.connect(sys.argv[1], autocommit=True).execute('DROP SCHEMA IF EXISTS \"%s\" CASCADE' % sys.argv[2])" "$URL" "$SCHEMA" || true
  [ "${KEEP:-0}" = 1 ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

online_block="online_store:
  type: postgres
  host: $PGHOST_
  port: $PGPORT_
  database: $PGDB_
  db_schema: $SCHEMA
  user: $PGUSER_
  password: \"\${PGPASSWORD_}\"
  sslmode: disable"

cd "$WORK"
"$LARDER_BIN" init demo >/dev/null
cd demo
"$PY" - "$online_block" <<'EOF'
import re, sys
text = open("feature_store.yaml").read()
text = re.sub(r"online_store:\n(  .*\n)+", sys.argv[1] + "\n", text)
open("feature_store.yaml", "w").write(text)
EOF
"$LARDER_BIN" apply >/dev/null
END="$(date -u +%Y-%m-%dT%H:00:00)"
START="$(date -u -d '7 days ago' +%Y-%m-%dT%H:00:00)"
"$LARDER_BIN" materialize "$START" "$END" --no-progress >&2

mkdir -p "$WORK/feast_repo/data"
cat > "$WORK/feast_repo/feature_store.yaml" <<EOF
project: demo
registry: data/registry.db
provider: local
$online_block
offline_store:
  type: file
entity_key_serialization_version: 3
EOF
cat > "$WORK/feast_repo/defs.py" <<EOF
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64
driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
source = FileSource(name="driver_stats_source", path="$WORK/demo/data/driver_stats.parquet",
                    timestamp_field="event_timestamp", created_timestamp_column="created")
driver_hourly_stats = FeatureView(
    name="driver_hourly_stats", entities=[driver], ttl=timedelta(days=1), source=source, online=True,
    schema=[Field(name="conv_rate", dtype=Float32), Field(name="acc_rate", dtype=Float32),
            Field(name="avg_daily_trips", dtype=Int64)])
EOF
(cd "$WORK/feast_repo" && "$FEAST_VENV/bin/feast" apply >/dev/null 2>&1)

larder_read() {
  "$LARDER_BIN" get-online-features -e driver_id=$1 -e driver_id=$2 \
    -F driver_hourly_stats:conv_rate -F driver_hourly_stats:avg_daily_trips
}
"$PY" - "$WORK/feast_repo" "$(larder_read 1001 1005)" "$WORK/demo" "$LARDER_BIN" <<'EOF'
import json, subprocess, sys
from datetime import datetime, timezone
import pandas as pd
from feast import FeatureStore
repo, larder_json, larder_repo, larder = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
fs = FeatureStore(repo_path=repo)
refs = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"]
feast = fs.get_online_features(features=refs, entity_rows=[{"driver_id": 1001}, {"driver_id": 1005}]).to_dict()
for name in ("conv_rate", "avg_daily_trips"):
    assert feast[name] == larder_json[name], (name, feast[name], larder_json[name])
    assert all(v is not None for v in feast[name]), (name, feast[name])
print("Feast reads what Larder wrote:", {k: feast[k] for k in ("driver_id", "conv_rate", "avg_daily_trips")})

now = datetime.now(timezone.utc)
fs.write_to_online_store("driver_hourly_stats", pd.DataFrame({
    "driver_id": [1001, 4242], "event_timestamp": [now, now], "created": [now, now],
    "conv_rate": [0.125, 0.5], "acc_rate": [0.75, 0.25], "avg_daily_trips": [77, 88]}))
out = subprocess.run([larder, "get-online-features", "-e", "driver_id=1001", "-e", "driver_id=4242",
                      "-F", "driver_hourly_stats:conv_rate", "-F", "driver_hourly_stats:avg_daily_trips"],
                     cwd=larder_repo, check=True, capture_output=True, text=True)
got = json.loads(out.stdout)
assert got["conv_rate"] == [0.125, 0.5] and got["avg_daily_trips"] == [77, 88], got
print("Larder reads what Feast wrote:", got)
EOF
echo "ok: Feast and Larder share the Postgres online tables"
