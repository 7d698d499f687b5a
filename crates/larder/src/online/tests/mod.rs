//! Online reads against a real SQLite store: statuses, ttl, names, key coercion, errors and
//! store round trips. The JSON forms are tested next to their writers in `response.rs`.

mod errors;
mod plans;
mod reads;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{ArrayRef, BinaryArray, RecordBatch, TimestampMicrosecondArray};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use larder_online::{
    OnlineCapabilities, OnlineError, OnlineStore, ReadRequest, SqliteOnlineStore, ViewTable,
    write_schema,
};
use larder_spec::{Definitions, FeatureSelection, LoadOptions, ResolveError, parse_definitions};
use larder_types::FeatureRef;
use larder_types::feast::{EntityKey, KeyVersion, Value, serialize_entity_key, value_to_json};
use serde_json::Value as Json;

use super::*;

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
  - {name: customer, join_keys: [customer_id], value_type: String}
data_sources:
  - {name: src, type: file, path: data/src.parquet, timestamp_field: event_timestamp}
  - name: req
    type: request
    schema: [{name: bonus, dtype: Float64}]
feature_views:
  - name: driver_stats
    entities: [driver]
    ttl: 1h
    source: src
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Int64}
      - {name: note, dtype: String}
  - name: customer_profile
    entities: [customer]
    source: src
    schema:
      - {name: balance, dtype: Float64}
      - {name: trips, dtype: Int64}
      - {name: driver_id, dtype: Int64}
  - name: pair_stats
    entities: [driver, customer]
    source: src
    schema: [{name: rides, dtype: Int64}]
  - name: global_stats
    source: src
    schema: [{name: total, dtype: Int64}]
  - name: archive
    entities: [driver]
    source: src
    online: false
    schema: [{name: old, dtype: Int64}]
on_demand_feature_views:
  - name: adjusted
    sources: [driver_stats, req]
    schema: [{name: conv_plus, dtype: Float64, expression: "conv_rate + bonus"}]
feature_services:
  - name: svc
    features:
      - {feature_view: driver_stats, alias: origin, features: [trips, conv_rate], join_key_map: {driver_id: origin_driver_id}}
      - customer_profile: [balance]
"#;

/// 2025-06-01T00:00:00Z in µs.
const T0: i64 = 1_748_736_000_000_000;
const HOUR: i64 = 3_600_000_000;

fn defs() -> Definitions {
    let options = LoadOptions {
        repo_dir: PathBuf::from("."),
        config_file: None,
        project: "test".into(),
        project_description: None,
        validate_sources: false,
    };
    parse_definitions(&[(PathBuf::from("defs.yaml"), DEFS.to_string())], &options)
        .unwrap_or_else(|e| panic!("invalid test definitions: {e}"))
}

fn at(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).expect("in range")
}

/// An OnlineStore decorator that counts calls and records the keys of each view read.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn OnlineStore>,
    reads: AtomicUsize,
    read_manys: AtomicUsize,
    keys_per_view: std::sync::Mutex<Vec<usize>>,
    /// Passes the inner store's `split_read_hint` on (otherwise: never split).
    split: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl OnlineStore for Counting {
    fn capabilities(&self) -> OnlineCapabilities {
        self.inner.capabilities()
    }
    async fn write_batch(&self, table: &ViewTable, rows: RecordBatch) -> Result<u64, OnlineError> {
        self.inner.write_batch(table, rows).await
    }
    async fn read(
        &self,
        table: &ViewTable,
        keys: &[&[u8]],
        features: &[&str],
    ) -> Result<RecordBatch, OnlineError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(table, keys, features).await
    }
    async fn read_many(
        &self,
        requests: &[ReadRequest<'_>],
    ) -> Result<Vec<RecordBatch>, OnlineError> {
        self.read_manys.fetch_add(1, Ordering::SeqCst);
        *self.keys_per_view.lock().expect("lock") = requests.iter().map(|r| r.keys.len()).collect();
        self.inner.read_many(requests).await
    }
    fn split_read_hint(&self) -> bool {
        self.split.load(Ordering::SeqCst) && self.inner.split_read_hint()
    }
    async fn update_infra(
        &self,
        keep: &[ViewTable],
        delete: &[ViewTable],
    ) -> Result<(), OnlineError> {
        self.inner.update_infra(keep, delete).await
    }
    async fn teardown(&self, tables: &[ViewTable]) -> Result<(), OnlineError> {
        self.inner.teardown(tables).await
    }
}

/// A row to store: entity key, event time (µs), one cell per view feature (`None` missing,
/// `Some(bytes)` stored as given).
type StoredRow = (Vec<u8>, i64, Vec<Option<Vec<u8>>>);

/// Features requested, entity columns, expected error message.
type ErrorCase<'a> = (Vec<&'a str>, Vec<(&'a str, Vec<Json>)>, &'a str);

struct Fixture {
    _dir: tempfile::TempDir,
    defs: Definitions,
    store: Arc<Counting>,
    reader: OnlineReader,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = SqliteOnlineStore::open_path(&dir.path().join("online.db")).expect("open");
        let store = Arc::new(Counting {
            inner: Arc::new(sqlite),
            reads: AtomicUsize::new(0),
            read_manys: AtomicUsize::new(0),
            keys_per_view: std::sync::Mutex::new(Vec::new()),
            split: std::sync::atomic::AtomicBool::new(false),
        });
        let reader = OnlineReader::new(store.clone(), KeyVersion::V3);
        Fixture {
            _dir: dir,
            defs: defs(),
            store,
            reader,
        }
    }

    fn table(&self, view: &str) -> ViewTable {
        let v = &self.defs.feature_views[view];
        ViewTable::new("test", view, v.features.iter().map(|f| f.name.as_str()))
    }

    /// Writes rows of `view`.
    async fn write(&self, view: &str, rows: Vec<StoredRow>) {
        let table = self.table(view);
        let names: Vec<&str> = table.features.iter().map(String::as_str).collect();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| &r.0))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                    .with_timezone("UTC"),
            ),
            Arc::new(TimestampMicrosecondArray::from(vec![None; rows.len()]).with_timezone("UTC")),
        ];
        for f in 0..names.len() {
            columns.push(Arc::new(BinaryArray::from_iter(
                rows.iter().map(|r| r.2[f].as_deref()),
            )));
        }
        let batch = RecordBatch::try_new(write_schema(&names), columns).expect("batch");
        self.store.write_batch(&table, batch).await.expect("write");
    }

    fn plan(&self, refs: &[&str], full_names: bool) -> Result<OnlinePlan, Error> {
        OnlinePlan::new(&self.defs, &selection(refs), full_names)
    }

    async fn read(
        &self,
        refs: &[&str],
        full_names: bool,
        entities: Vec<(&str, Vec<Json>)>,
        now: i64,
    ) -> Result<OnlineResponse, Error> {
        let plan = self.plan(refs, full_names)?;
        self.reader.read(&plan, &columns(entities), at(now)).await
    }

    fn read_manys(&self) -> usize {
        self.store.read_manys.load(Ordering::SeqCst) + self.store.reads.load(Ordering::SeqCst)
    }
}

fn selection(refs: &[&str]) -> FeatureSelection {
    FeatureSelection::Refs(
        refs.iter()
            .map(|r| r.parse::<FeatureRef>().expect("feature ref"))
            .collect(),
    )
}

fn columns(entities: Vec<(&str, Vec<Json>)>) -> EntityColumns {
    EntityColumns::new(
        entities
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
    )
    .expect("entity columns")
}

fn driver_key(id: i64) -> Vec<u8> {
    serialize_entity_key(
        &EntityKey::new([("driver_id", Value::int64(id))]),
        KeyVersion::V3,
    )
    .expect("key")
}

fn customer_key(id: &str) -> Vec<u8> {
    serialize_entity_key(
        &EntityKey::new([("customer_id", Value::string(id))]),
        KeyVersion::V3,
    )
    .expect("key")
}

fn cell(value: Value) -> Option<Vec<u8>> {
    Some(value.to_bytes())
}

/// One expected cell: JSON value, status, event time (µs).
type Expected = (Json, FieldStatus, i64);

#[track_caller]
fn check(response: &OnlineResponse, expected: &[(&str, Vec<Expected>)]) {
    let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    assert_eq!(response.feature_names().collect::<Vec<_>>(), names);
    for ((name, cells), vector) in expected.iter().zip(response.columns()) {
        let actual: Vec<Expected> = vector
            .values
            .iter()
            .zip(vector.statuses)
            .zip(vector.event_timestamps)
            .map(|((v, s), t)| (value_to_json(v), *s, *t))
            .collect();
        assert_eq!(&actual, cells, "column `{name}`");
    }
}
