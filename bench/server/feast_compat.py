"""Feast SDK compatibility check of `larder serve`.

Run by feast_compat.sh, which starts `larder serve` on a demo repo and passes its URL. A
Feast repo with the same definitions (in Python) and `online_store: {type: remote}` pointing
at that URL is applied to Feast's own registry; Feast's SDK then reads, pushes and writes
through the server. Every value Feast gets must equal what `larder get-online-features`
answers for the same request. Exits non-zero with a list of mismatches otherwise.
"""

import argparse
import json
import math
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import requests
from feast import FeatureStore
from feast.data_source import PushMode

FEATURE_STORE_YAML = """\
project: demo
registry: data/registry.db
provider: local
online_store:
  type: remote
  path: {url}
offline_store:
  type: file
entity_key_serialization_version: 3
"""

# The Larder demo repo's definitions (crates/larder-cli/src/init/templates.rs) in Feast's
# Python form, over the same Parquet files. The on-demand view is left out: Larder does not
# compute on-demand features online yet.
DEFINITIONS = """\
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Float32, Int64

driver = Entity(name="driver", join_keys=["driver_id"])
customer = Entity(name="customer", join_keys=["customer_id"])

driver_stats_source = FileSource(
    name="driver_stats_source",
    path="{larder_repo}/data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
driver_stats_push = PushSource(name="driver_stats_push", batch_source=driver_stats_source)
customer_profile_source = FileSource(
    name="customer_profile_source",
    path="{larder_repo}/data/customer_profile.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
        Field(name="avg_daily_trips", dtype=Int64),
    ],
    source=driver_stats_push,
    online=True,
)
customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(days=7),
    schema=[
        Field(name="current_balance", dtype=Float32),
        Field(name="avg_passenger_count", dtype=Float32),
        Field(name="lifetime_trip_count", dtype=Int64),
    ],
    source=customer_profile_source,
    online=True,
)

driver_activity_v1 = FeatureService(
    name="driver_activity_v1",
    features=[driver_hourly_stats[["conv_rate", "avg_daily_trips"]], customer_profile],
)
"""

DRIVER_FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
]
CUSTOMER_FEATURES = [
    "customer_profile:current_balance",
    "customer_profile:avg_passenger_count",
    "customer_profile:lifetime_trip_count",
]


def larder_dict(args, rows, features=None, service=None, full_names=False):
    """What `larder get-online-features` answers (Feast's to_dict form)."""
    cmd = [args.larder, "-c", args.larder_repo, "get-online-features"]
    for row in rows:
        cmd += ["-e", ",".join(f"{k}={json.dumps(v)}" for k, v in row.items())]
    if service:
        cmd += ["--feature-service", service]
    else:
        cmd += ["--features", ",".join(features)]
    if full_names:
        cmd.append("--full-feature-names")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is None and b is None
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


class Checker:
    def __init__(self):
        self.failures = []
        self.checked = 0

    def compare(self, what, feast, larder):
        if set(feast) != set(larder):
            self.failures.append(f"{what}: columns differ: Feast {sorted(feast)}, Larder {sorted(larder)}")
            return
        for name in larder:
            f, l = list(feast[name]), list(larder[name])
            if len(f) != len(l) or not all(same(x, y) for x, y in zip(f, l)):
                self.failures.append(f"{what}: `{name}`: Feast {f}, Larder {l}")
            self.checked += len(l)

    def expect(self, what, condition, detail=""):
        if not condition:
            self.failures.append(f"{what}: {detail}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--larder", required=True)
    parser.add_argument("--larder-repo", required=True)
    parser.add_argument("--feast-repo", required=True)
    args = parser.parse_args()

    repo = Path(args.feast_repo)
    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(FEATURE_STORE_YAML.format(url=args.url))
    (repo / "definitions.py").write_text(DEFINITIONS.format(larder_repo=args.larder_repo))
    feast_cli = Path(sys.executable).parent / "feast"
    subprocess.run([str(feast_cli), "apply"], cwd=repo, check=True, capture_output=True)
    store = FeatureStore(repo_path=str(repo))
    check = Checker()

    drivers = [{"driver_id": d} for d in (1001, 1002, 1050, 1100, 9999)]
    check.compare(
        "driver features",
        store.get_online_features(features=DRIVER_FEATURES, entity_rows=drivers).to_dict(),
        larder_dict(args, drivers, features=DRIVER_FEATURES),
    )

    pairs = [
        {"driver_id": 1001, "customer_id": 5001},
        {"driver_id": 1077, "customer_id": 5050},
        {"driver_id": 9999, "customer_id": 5002},
        {"driver_id": 1003, "customer_id": 9999},
    ]
    both = DRIVER_FEATURES + CUSTOMER_FEATURES
    check.compare(
        "two views, full feature names",
        store.get_online_features(
            features=both, entity_rows=pairs, full_feature_names=True
        ).to_dict(),
        larder_dict(args, pairs, features=both, full_names=True),
    )

    service = store.get_feature_service("driver_activity_v1")
    check.compare(
        "feature service",
        store.get_online_features(features=service, entity_rows=pairs).to_dict(),
        larder_dict(args, pairs, service="driver_activity_v1"),
    )

    # Feast's push with a remote online store posts to /write-to-online-store.
    now = datetime.now(timezone.utc).replace(microsecond=0)
    pushed = pd.DataFrame(
        {
            "driver_id": [1001, 1002],
            "event_timestamp": [now, now],
            "created": [now, now],
            "conv_rate": [0.125, 0.25],
            "acc_rate": [0.5, 0.75],
            "avg_daily_trips": [4242, 4343],
        }
    )
    store.push("driver_stats_push", pushed, to=PushMode.ONLINE)
    rows = [{"driver_id": 1001}, {"driver_id": 1002}]
    after_push = store.get_online_features(features=DRIVER_FEATURES, entity_rows=rows).to_dict()
    check.compare("after a Feast push", after_push, larder_dict(args, rows, features=DRIVER_FEATURES))
    check.expect(
        "after a Feast push",
        after_push.get("avg_daily_trips") == [4242, 4343],
        f"pushed avg_daily_trips not read back: {after_push}",
    )

    # And Feast's write_to_online_store, a second later (newest wins).
    later = now + timedelta(seconds=1)
    written = pushed.assign(event_timestamp=[later, later], created=[later, later], avg_daily_trips=[7, 8])
    store.write_to_online_store("driver_hourly_stats", written)
    after_write = store.get_online_features(features=DRIVER_FEATURES, entity_rows=rows).to_dict()
    check.compare("after write_to_online_store", after_write, larder_dict(args, rows, features=DRIVER_FEATURES))
    check.expect(
        "after write_to_online_store",
        after_write.get("avg_daily_trips") == [7, 8],
        f"written avg_daily_trips not read back: {after_write}",
    )

    # Feast's HTTP push body, as a stream job posts it (not through the SDK).
    stamp = (later + timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S+00:00")
    body = {
        "push_source_name": "driver_stats_push",
        "to": "online",
        "df": {
            "driver_id": [1003],
            "event_timestamp": [stamp],
            "created": [stamp],
            "conv_rate": [0.0625],
            "acc_rate": [0.5],
            "avg_daily_trips": [99],
        },
    }
    response = requests.post(f"{args.url}/push", json=body, timeout=30)
    check.expect("HTTP push", response.status_code == 200, f"{response.status_code} {response.text}")
    rows = [{"driver_id": 1003}]
    after_http = store.get_online_features(features=DRIVER_FEATURES, entity_rows=rows).to_dict()
    check.compare("after an HTTP push", after_http, larder_dict(args, rows, features=DRIVER_FEATURES))
    check.expect("after an HTTP push", after_http.get("avg_daily_trips") == [99], f"{after_http}")
    body["push_source_name"] = "no_such_push"
    response = requests.post(f"{args.url}/push", json=body, timeout=30)
    check.expect(
        "push to an unknown source",
        response.status_code == 422 and "no_such_push" in response.text,
        f"{response.status_code} {response.text}",
    )

    if check.failures:
        print(f"FAIL: {len(check.failures)} mismatches between Feast's SDK and Larder:")
        for failure in check.failures:
            print("  " + textwrap.shorten(failure, 400))
        sys.exit(1)
    print(f"OK: Feast's SDK through `larder serve` matched Larder on {check.checked} values")


if __name__ == "__main__":
    main()
