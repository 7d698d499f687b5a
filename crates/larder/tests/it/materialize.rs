//! Materialization end to end through `FeatureStore`: random source data with duplicate
//! keys, event-time ties broken by created time, nulls; the online store must then hold
//! exactly the brute-force "latest row per key in the window", and the registry the window.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, Int64Array, Int64Builder, ListBuilder, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Duration, TimeZone, Utc};
use larder::types::ValueType;
use larder::types::feast::{EntityKey, KeyVersion, Value, serialize_entity_key, values_from_array};
use larder::{ApplyOptions, FeatureStore, MaterializeOptions, OpenOptions, Window};
use prost::Message;

/// Deterministic pseudo-random numbers (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap()
}

/// One source row, as the oracle sees it.
#[derive(Clone, Debug)]
struct Row {
    driver: Option<i64>,
    ts: i64,
    created: i64,
    values: Vec<Value>,
}

const FEATURES: [(&str, &str); 4] = [
    ("conv_rate", "Float32"),
    ("trips", "Int64"),
    ("city", "String"),
    ("recent", "Array(Int64)"),
];

fn feature_types() -> Vec<ValueType> {
    FEATURES.iter().map(|(_, t)| t.parse().unwrap()).collect()
}

/// Writes `rows` random source rows over `keys` drivers into `path`; returns the rows.
fn write_source(path: &Path, rows: usize, keys: u64, seed: u64) -> Vec<Row> {
    let mut rng = Rng(seed);
    let hour = 3_600_000_000i64;
    let mut driver = Vec::with_capacity(rows);
    let mut ts = Vec::with_capacity(rows);
    let mut created = Vec::with_capacity(rows);
    let mut conv = Vec::with_capacity(rows);
    let mut trips = Vec::with_capacity(rows);
    let mut city = Vec::with_capacity(rows);
    let mut recent = ListBuilder::new(Int64Builder::new());
    for i in 0..rows {
        // A few rows without a key: never materialized.
        driver.push((rng.below(200) != 0).then(|| 1000 + rng.below(keys) as i64));
        // Few distinct hours per key so event-time ties are common.
        ts.push(base().timestamp_micros() + (rng.below(10 * 24) as i64 / 6) * 6 * hour);
        created.push(base().timestamp_micros() + rng.below(1_000) as i64 * 1_000 + i as i64);
        conv.push((rng.below(10) != 0).then(|| rng.below(1000) as f32 / 1000.0));
        trips.push((rng.below(10) != 0).then(|| rng.below(50) as i64));
        city.push(["Oslo", "Rome", "Lima", ""][rng.below(4) as usize].to_string());
        if rng.below(5) == 0 {
            recent.append_null();
        } else {
            for _ in 0..rng.below(3) {
                recent.values().append_value(rng.below(9) as i64);
            }
            recent.append(true);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            "created",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("trips", DataType::Int64, true),
        Field::new("city", DataType::Utf8, false),
        Field::new_list("recent", Field::new_list_field(DataType::Int64, true), true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(driver.clone())),
        Arc::new(TimestampMicrosecondArray::from(ts.clone()).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(created.clone())),
        Arc::new(Float32Array::from(conv)),
        Arc::new(Int64Array::from(trips)),
        Arc::new(StringArray::from(city)),
        Arc::new(recent.finish()),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let types = feature_types();
    let values: Vec<Vec<Value>> = (0..FEATURES.len())
        .map(|i| values_from_array(batch.column(3 + i).as_ref(), types[i]).unwrap())
        .collect();
    (0..rows)
        .map(|r| Row {
            driver: driver[r],
            ts: ts[r],
            created: created[r],
            values: values.iter().map(|column| column[r].clone()).collect(),
        })
        .collect()
}

/// The oracle: per driver, the row with the greatest (event time, created time) in
/// `[start, end]`.
fn latest_per_key(rows: &[Row], start: i64, end: i64) -> HashMap<i64, Row> {
    let mut best: HashMap<i64, Row> = HashMap::new();
    for row in rows {
        let Some(driver) = row.driver else { continue };
        if row.ts < start || row.ts > end {
            continue;
        }
        let better = best
            .get(&driver)
            .is_none_or(|b| (row.ts, row.created) > (b.ts, b.created));
        if better {
            best.insert(driver, row.clone());
        }
    }
    best
}

fn write_repo(dir: &Path) {
    write_repo_with(
        dir,
        "mat",
        "online_store:\n  type: sqlite\n  path: data/online.db\n",
    );
}

/// The test repo for `project` with the given `online_store` block.
fn write_repo_with(dir: &Path, project: &str, online_store: &str) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("feature_store.yaml"),
        format!(
            "project: {project}\nregistry: data/registry.db\nprovider: local\n\
             {online_store}offline_store:\n  type: file\n"
        ),
    )
    .unwrap();
    let schema: String = FEATURES
        .iter()
        .map(|(name, dtype)| format!("      - {{name: {name}, dtype: \"{dtype}\"}}\n"))
        .collect();
    std::fs::write(
        dir.join("features.yaml"),
        format!(
            "entities:\n  - name: driver\n    join_keys: [driver_id]\n    value_type: Int64\n\
             data_sources:\n  - name: stats\n    type: file\n    path: data/stats.parquet\n\
             \x20   timestamp_field: event_timestamp\n    created_timestamp_column: created\n\
             feature_views:\n  - name: driver_stats\n    entities: [driver]\n    ttl: 2d\n\
             \x20   source: stats\n    schema:\n{schema}"
        ),
    )
    .unwrap();
}

/// Reads every key of `keys` from the online store: driver → (event µs, values).
async fn online_content(
    store: &FeatureStore,
    keys: impl Iterator<Item = i64>,
) -> HashMap<i64, (i64, Vec<Value>)> {
    let online = store.online_store().unwrap().expect("an online store");
    let drivers: Vec<i64> = keys.collect();
    let serialized: Vec<Vec<u8>> = drivers
        .iter()
        .map(|d| {
            serialize_entity_key(
                &EntityKey::new([("driver_id", Value::int64(*d))]),
                KeyVersion::V3,
            )
            .unwrap()
        })
        .collect();
    let refs: Vec<&[u8]> = serialized.iter().map(Vec::as_slice).collect();
    let names: Vec<&str> = FEATURES.iter().map(|(n, _)| *n).collect();
    let table = larder_online::ViewTable::new(store.project(), "driver_stats", names.clone());
    let batch = online.read(&table, &refs, &names).await.unwrap();
    let ts = batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    let mut out = HashMap::new();
    for (i, driver) in drivers.iter().enumerate() {
        if ts.is_null(i) {
            continue;
        }
        let values = (0..names.len())
            .map(|f| {
                let column = batch
                    .column(1 + f)
                    .as_any()
                    .downcast_ref::<arrow::array::BinaryArray>()
                    .unwrap();
                assert!(column.is_valid(i), "driver {driver} feature {f} missing");
                Value::decode(column.value(i)).unwrap()
            })
            .collect();
        out.insert(*driver, (ts.value(i), values));
    }
    out
}

fn assert_matches(actual: &HashMap<i64, (i64, Vec<Value>)>, expected: &HashMap<i64, Row>) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "number of keys in the online store"
    );
    for (driver, row) in expected {
        let (ts, values) = actual
            .get(driver)
            .unwrap_or_else(|| panic!("driver {driver} not materialized"));
        assert_eq!(*ts, row.ts, "event time of driver {driver}");
        assert_eq!(values, &row.values, "values of driver {driver}");
    }
}

fn open(dir: &Path, now: DateTime<Utc>) -> FeatureStore {
    FeatureStore::open(&OpenOptions::new(dir))
        .unwrap()
        .with_clock(Arc::new(move || now))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialize_writes_the_latest_row_per_key_and_records_the_window() {
    let dir = tempfile::tempdir().unwrap();
    write_repo(dir.path());
    materialize_windows(dir.path()).await;
}

/// The same runs into Redis (`LARDER_TEST_REDIS_URL`, set by `.ci/run`), then teardown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialize_into_redis() {
    let Ok(url) = std::env::var("LARDER_TEST_REDIS_URL") else {
        eprintln!("not run: set LARDER_TEST_REDIS_URL to run this case");
        return;
    };
    let address = url.trim_start_matches("redis://").trim_end_matches('/');
    let project = format!(
        "mat_{}_{}",
        std::process::id(),
        Utc::now().timestamp_micros()
    );
    let dir = tempfile::tempdir().unwrap();
    write_repo_with(
        dir.path(),
        &project,
        &format!("online_store:\n  type: redis\n  connection_string: \"{address}\"\n"),
    );
    let store = materialize_windows(dir.path()).await;
    store.teardown().await.expect("teardown");
    assert!(
        online_content(&store, 1000..3000).await.is_empty(),
        "teardown leaves no key of the project"
    );
}

/// Materializes two windows, then an older one again, checking the store against a
/// brute-force "latest row per key" each time.
async fn materialize_windows(dir: &Path) -> FeatureStore {
    let project = {
        let probe = FeatureStore::open(&OpenOptions::new(dir)).unwrap();
        probe.project().to_owned()
    };
    let rows = write_source(&dir.join("data/stats.parquet"), 20_000, 2_000, 7);
    let now = base() + Duration::days(12);
    let store = open(dir, now);
    store.apply(&ApplyOptions::default()).await.unwrap();

    // A first window over the first four days, then the rest.
    let (start, mid, end) = (
        base(),
        base() + Duration::days(4),
        base() + Duration::days(11),
    );
    let options = || MaterializeOptions {
        memory_limit: Some(4 << 20),
        ..MaterializeOptions::default()
    };
    let reports = store
        .materialize(Window::Range { start, end: mid }, options())
        .await
        .unwrap();
    let expected = latest_per_key(&rows, start.timestamp_micros(), mid.timestamp_micros());
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].rows_written, expected.len() as u64);
    let all_keys = || 1000..1000 + 2_000;
    assert_matches(&online_content(&store, all_keys()).await, &expected);

    let (snapshot, _) = store.project_state().await.unwrap();
    let state = snapshot.project(&project).unwrap();
    assert_eq!(state.most_recent_end("driver_stats"), Some(mid));

    // Incremental: starts where the last run ended, and newest wins over what is stored.
    let reports = store
        .materialize(Window::Incremental { end }, options())
        .await
        .unwrap();
    assert_eq!(reports.len(), 1);
    let expected = latest_per_key(&rows, start.timestamp_micros(), end.timestamp_micros());
    assert_matches(&online_content(&store, all_keys()).await, &expected);
    let (snapshot, _) = store.project_state().await.unwrap();
    let intervals = &snapshot.project(&project).unwrap().materializations["driver_stats"];
    assert_eq!(intervals.len(), 1, "touching windows merge: {intervals:?}");
    assert_eq!((intervals[0].start, intervals[0].end), (start, end));

    // An older window afterwards never overwrites newer stored rows.
    store
        .materialize(Window::Range { start, end: mid }, options())
        .await
        .unwrap();
    assert_matches(&online_content(&store, all_keys()).await, &expected);
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_without_history_starts_at_now_minus_ttl() {
    let dir = tempfile::tempdir().unwrap();
    write_repo(dir.path());
    let rows = write_source(&dir.path().join("data/stats.parquet"), 5_000, 500, 11);
    let now = base() + Duration::days(6);
    let store = open(dir.path(), now);
    store.apply(&ApplyOptions::default()).await.unwrap();
    let plan = store
        .plan_materialization(
            Window::Incremental { end: now },
            MaterializeOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(plan.views.len(), 1);
    // ttl is 2 days.
    assert_eq!(plan.views[0].start, now - Duration::days(2));
    let report = store.run_materialization(plan).await.unwrap();
    assert!(report.failures().next().is_none());
    let expected = latest_per_key(
        &rows,
        (now - Duration::days(2)).timestamp_micros(),
        now.timestamp_micros(),
    );
    assert_matches(&online_content(&store, 1000..1500).await, &expected);
}

#[tokio::test]
async fn bad_requests_fail_before_writing_anything() {
    let dir = tempfile::tempdir().unwrap();
    write_repo(dir.path());
    write_source(&dir.path().join("data/stats.parquet"), 100, 10, 3);
    let store = open(dir.path(), base());
    store.apply(&ApplyOptions::default()).await.unwrap();

    let unknown = MaterializeOptions {
        views: Some(vec!["nope".into()]),
        ..MaterializeOptions::default()
    };
    let err = store
        .materialize(
            Window::Range {
                start: base(),
                end: base(),
            },
            unknown,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`nope`") && err.contains("driver_stats"),
        "{err}"
    );

    let err = store
        .materialize(
            Window::Range {
                start: base() + Duration::days(1),
                end: base(),
            },
            MaterializeOptions::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("after its end"), "{err}");

    // A source that vanished: the view fails, nothing is recorded.
    std::fs::remove_file(dir.path().join("data/stats.parquet")).unwrap();
    let err = store
        .materialize(
            Window::Range {
                start: base(),
                end: base() + Duration::days(1),
            },
            MaterializeOptions::default(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("driver_stats"), "{err}");
    let (snapshot, _) = store.project_state().await.unwrap();
    assert_eq!(
        snapshot
            .project("mat")
            .unwrap()
            .most_recent_end("driver_stats"),
        None
    );
}
