//! `FeatureStore::get_online_features` end to end: a repo applied to a registry, rows
//! written to its SQLite online store through `OnlineStore::write_batch`, read back.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, RecordBatch, TimestampMicrosecondArray};
use chrono::DateTime;
use larder::{
    ApplyOptions, EntityColumns, FeatureSelection, FeatureStore, FieldStatus,
    OnlineFeaturesRequest, OpenOptions,
};
use larder_online::{ViewTable, write_schema};
use larder_types::FeatureRef;
use larder_types::feast::{EntityKey, KeyVersion, Value, serialize_entity_key, value_to_json};
use serde_json::{Value as Json, json};

const FEATURES_YAML: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: stats_source, type: file, path: data/stats.parquet, timestamp_field: event_timestamp}
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 2h
    source: stats_source
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Int64}
      - {name: tags, dtype: Array(String)}
feature_services:
  - name: ranking
    features:
      - driver_stats: [trips, conv_rate]
"#;

/// 2025-06-01T12:00:00Z in µs.
const NOW: i64 = 1_748_779_200_000_000;
const HOUR: i64 = 3_600_000_000;

fn repo(dir: &Path, key_version: u32) {
    std::fs::write(
        dir.join("feature_store.yaml"),
        format!(
            "project: e2e\nregistry: data/registry.db\nprovider: local\nonline_store:\n  type: sqlite\n  path: data/online.db\nentity_key_serialization_version: {key_version}\n"
        ),
    )
    .expect("write config");
    std::fs::write(dir.join("features.yaml"), FEATURES_YAML).expect("write definitions");
}

fn key(id: i64, version: KeyVersion) -> Vec<u8> {
    serialize_entity_key(&EntityKey::new([("driver_id", Value::int64(id))]), version).expect("key")
}

/// The v3 repo in `dir`, applied, with [`write_rows`]' rows in its online store.
async fn applied_with_rows(dir: &Path) -> FeatureStore {
    repo(dir, 3);
    let store = open_applied(dir).await;
    write_rows(&store, KeyVersion::V3).await;
    store
}

async fn open_applied(dir: &Path) -> FeatureStore {
    let clock = Arc::new(|| DateTime::from_timestamp_micros(NOW).expect("now"));
    let store = FeatureStore::open(&OpenOptions::new(dir))
        .expect("open")
        .with_clock(clock);
    store
        .apply(&ApplyOptions {
            skip_source_validation: true,
        })
        .await
        .expect("apply");
    store
}

/// Driver id, event time (µs), serialized cells of `conv_rate`, `trips`, `tags`.
type DriverRow = (i64, i64, [Option<Vec<u8>>; 3]);

/// Writes three drivers: 1 fresh, 2 older than the ttl, 3 with a null and a missing feature.
async fn write_rows(store: &FeatureStore, version: KeyVersion) {
    let online = store.online_store().expect("online").expect("sqlite store");
    let table = ViewTable::new("e2e", "driver_stats", ["conv_rate", "trips", "tags"]);
    let rows: [DriverRow; 3] = [
        (
            1,
            NOW - HOUR,
            [
                Some(Value::float(0.5).to_bytes()),
                Some(Value::int64(12).to_bytes()),
                Some(Value::string_list(vec!["a".into(), "b".into()]).to_bytes()),
            ],
        ),
        (
            2,
            NOW - 3 * HOUR,
            [
                Some(Value::float(0.25).to_bytes()),
                Some(Value::int64(3).to_bytes()),
                None,
            ],
        ),
        (3, NOW - 1_500_000, [Some(Vec::new()), None, None]),
    ];
    let column = |f: usize| -> ArrayRef {
        Arc::new(BinaryArray::from_iter(
            rows.iter().map(|r| r.2[f].as_deref()),
        ))
    };
    let batch = RecordBatch::try_new(
        write_schema(&["conv_rate", "trips", "tags"]),
        vec![
            Arc::new(BinaryArray::from_iter_values(
                rows.iter().map(|r| key(r.0, version)),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                    .with_timezone("UTC"),
            ),
            Arc::new(TimestampMicrosecondArray::from(vec![None; 3]).with_timezone("UTC")),
            column(0),
            column(1),
            column(2),
        ],
    )
    .expect("batch");
    assert_eq!(online.write_batch(&table, batch).await.expect("write"), 3);
}

fn request(refs: &[&str], ids: Vec<Json>, full: bool) -> OnlineFeaturesRequest {
    OnlineFeaturesRequest {
        features: FeatureSelection::Refs(
            refs.iter()
                .map(|r| r.parse::<FeatureRef>().expect("ref"))
                .collect(),
        ),
        entities: EntityColumns::new(vec![("driver_id".into(), ids)]).expect("entities"),
        full_feature_names: full,
    }
}

#[tokio::test]
async fn applied_repo_reads_back_what_was_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = applied_with_rows(dir.path()).await;

    let response = store
        .get_online_features(request(
            &[
                "driver_stats:tags",
                "driver_stats:conv_rate",
                "driver_stats:trips",
            ],
            vec![json!(1), json!("2"), json!(3), json!(4), json!(1)],
            false,
        ))
        .await
        .expect("read");
    assert_eq!(
        response.feature_names().collect::<Vec<_>>(),
        ["driver_id", "tags", "conv_rate", "trips"]
    );
    let values = |i: usize| -> Vec<Json> {
        response
            .column_at(i)
            .expect("column")
            .values
            .iter()
            .map(value_to_json)
            .collect()
    };
    assert_eq!(
        values(0),
        [json!(1), json!(2), json!(3), json!(4), json!(1)]
    );
    assert_eq!(
        values(1),
        [
            json!(["a", "b"]),
            Json::Null,
            Json::Null,
            Json::Null,
            json!(["a", "b"])
        ]
    );
    assert_eq!(
        values(2),
        [json!(0.5), json!(0.25), Json::Null, Json::Null, json!(0.5)]
    );
    assert_eq!(
        values(3),
        [json!(12), json!(3), Json::Null, Json::Null, json!(12)]
    );
    use FieldStatus::{NotFound, NullValue, OutsideMaxAge, Present};
    assert_eq!(
        response.column_at(2).expect("column").statuses,
        [Present, OutsideMaxAge, NullValue, NotFound, Present]
    );
    assert_eq!(
        response.column_at(1).expect("column").statuses,
        [Present, NotFound, NotFound, NotFound, Present]
    );
    assert_eq!(
        response.column_at(2).expect("column").event_timestamps,
        [NOW - HOUR, NOW - 3 * HOUR, NOW - 1_500_000, 0, NOW - HOUR]
    );

    let mut body = String::new();
    response.write_http_json(&mut body);
    let body: Json = serde_json::from_str(&body).expect("json");
    assert_eq!(
        body["results"][2],
        json!({
            "values": [0.5, 0.25, null, null, 0.5],
            "statuses": ["PRESENT", "OUTSIDE_MAX_AGE", "NULL_VALUE", "NOT_FOUND", "PRESENT"],
            "event_timestamps": [
                "2025-06-01T11:00:00Z",
                "2025-06-01T09:00:00Z",
                "2025-06-01T11:59:58.500Z",
                "1970-01-01T00:00:00Z",
                "2025-06-01T11:00:00Z"
            ]
        })
    );

    // A feature service, with full names.
    let response = store
        .get_online_features(OnlineFeaturesRequest {
            features: FeatureSelection::Service("ranking".into()),
            entities: EntityColumns::new(vec![("driver_id".into(), vec![json!(1)])])
                .expect("entities"),
            full_feature_names: true,
        })
        .await
        .expect("read");
    assert_eq!(
        response.to_dict_json(true),
        r#"{"driver_id":[1],"driver_id__ts":[0],"driver_stats__trips":[12],"driver_stats__trips__ts":[1748775600],"driver_stats__conv_rate":[0.5],"driver_stats__conv_rate__ts":[1748775600]}"#
    );
}

/// `get_online_features` keeps each selection's plan for the registry snapshot it was
/// compiled against: a re-apply that changes the view is served with the new definitions.
#[tokio::test]
async fn a_reapplied_view_is_read_with_its_new_definition() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = applied_with_rows(dir.path()).await;
    let trips = || request(&["driver_stats:trips"], vec![json!(1)], false);
    for _ in 0..2 {
        let response = store.get_online_features(trips()).await.expect("read");
        let column = response.column("trips").expect("trips");
        assert_eq!(column.statuses, [FieldStatus::Present]);
    }
    // Driver 1's row is an hour old: outside a 30-minute ttl.
    std::fs::write(
        dir.path().join("features.yaml"),
        FEATURES_YAML.replace("ttl: 2h", "ttl: 30m"),
    )
    .expect("write definitions");
    store
        .apply(&ApplyOptions {
            skip_source_validation: true,
        })
        .await
        .expect("re-apply");
    let response = store.get_online_features(trips()).await.expect("read");
    let column = response.column("trips").expect("trips");
    assert_eq!(column.statuses, [FieldStatus::OutsideMaxAge]);
    assert_eq!(value_to_json(&column.values[0]), json!(12));
}

#[tokio::test]
async fn key_version_2_and_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    repo(dir.path(), 2);
    let store = open_applied(dir.path()).await;
    write_rows(&store, KeyVersion::V2).await;
    let response = store
        .get_online_features(request(&["driver_stats:trips"], vec![json!(1)], false))
        .await
        .expect("read");
    assert_eq!(
        value_to_json(&response.column_at(1).expect("column").values[0]),
        json!(12)
    );

    let err = store
        .get_online_features(request(&["driver_stats:speed"], vec![json!(1)], false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has no feature `speed`"), "{err}");
    let err = store
        .get_online_features(OnlineFeaturesRequest {
            features: FeatureSelection::Service("ranking".into()),
            entities: EntityColumns::new(vec![("driver".into(), vec![json!(1)])])
                .expect("entities"),
            full_feature_names: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing join key values for feature view `driver_stats`: `driver_id` (give them as entity columns)"
    );
}

#[tokio::test]
async fn a_repo_without_an_online_store_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    repo(dir.path(), 3);
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        "project: e2e\nregistry: data/registry.db\nonline_store:\n  type: remote\n",
    )
    .expect("write config");
    let store = FeatureStore::open(&OpenOptions::new(dir.path())).expect("open");
    let err = store
        .get_online_features(request(&["driver_stats:trips"], vec![json!(1)], false))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`online_store: {type: remote}` is not supported by this build of Larder: this build has the `sqlite`, `redis` and `postgres` online stores"
    );
}
