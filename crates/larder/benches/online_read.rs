//! Latency of an online read through the Rust API: 100 entity rows × 15 features from two
//! views (10 + 5) on the SQLite store, plan compiled once (as the feature server does),
//! plus the HTTP JSON body. Target (issue): p99 ≤ 0.5 ms for the read.
//!
//! `cargo bench -p larder --bench online_read` prints percentiles. Wall time on a shared
//! machine is noisy: compare runs side by side.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BinaryArray, RecordBatch, TimestampMicrosecondArray};
use chrono::Utc;
use larder::{EntityColumns, FeatureSelection, OnlinePlan, OnlineReader};
use larder_online::{OnlineStore, ReadRequest, SqliteOnlineStore, ViewTable, write_schema};
use larder_spec::{LoadOptions, parse_definitions};
use larder_types::feast::{EntityKey, KeyVersion, Value, serialize_entity_key};
use serde_json::{Value as Json, json};

const DRIVERS: i64 = 100_000;
const CUSTOMERS: i64 = 50_000;
const ROWS: usize = 100;
const ITERATIONS: usize = 3_000;
const WARMUP: usize = 300;

fn definitions() -> larder_spec::Definitions {
    let mut yaml = String::from(
        "entities:\n  - {name: driver, join_keys: [driver_id], value_type: Int64}\n  - {name: customer, join_keys: [customer_id], value_type: Int64}\ndata_sources:\n  - {name: src, type: file, path: data/src.parquet, timestamp_field: event_timestamp}\nfeature_views:\n",
    );
    for (view, entity, count) in [
        ("driver_stats", "driver", 10),
        ("customer_stats", "customer", 5),
    ] {
        yaml.push_str(&format!(
            "  - name: {view}\n    entities: [{entity}]\n    ttl: 1d\n    source: src\n    schema:\n"
        ));
        for f in 0..count {
            let dtype = if f % 2 == 0 { "Float64" } else { "Int64" };
            yaml.push_str(&format!("      - {{name: {view}_f{f}, dtype: {dtype}}}\n"));
        }
    }
    let options = LoadOptions {
        repo_dir: PathBuf::from("."),
        config_file: None,
        project: "bench".into(),
        project_description: None,
        validate_sources: false,
    };
    parse_definitions(&[(PathBuf::from("defs.yaml"), yaml)], &options).expect("definitions")
}

async fn load(store: &dyn OnlineStore, view: &str, join_key: &str, keys: i64, features: usize) {
    let names: Vec<String> = (0..features).map(|f| format!("{view}_f{f}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let table = ViewTable::new("bench", view, names.iter().cloned());
    let now = Utc::now().timestamp_micros();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(10_000) {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from_iter_values(chunk.iter().map(|&id| {
                serialize_entity_key(
                    &EntityKey::new([(join_key, Value::int64(id))]),
                    KeyVersion::V3,
                )
                .expect("key")
            }))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(chunk.iter().map(|&id| now - id))
                    .with_timezone("UTC"),
            ),
            Arc::new(TimestampMicrosecondArray::from(vec![None; chunk.len()]).with_timezone("UTC")),
        ];
        for f in 0..features {
            columns.push(Arc::new(BinaryArray::from_iter_values(chunk.iter().map(
                |&id| {
                    if f % 2 == 0 {
                        Value::double(id as f64 * 0.5 + f as f64).to_bytes()
                    } else {
                        Value::int64(id * 7 + f as i64).to_bytes()
                    }
                },
            ))));
        }
        let batch = RecordBatch::try_new(write_schema(&refs), columns).expect("batch");
        store.write_batch(&table, batch).await.expect("write");
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn OnlineStore> =
        Arc::new(SqliteOnlineStore::open_path(&dir.path().join("online.db")).expect("open"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        load(&*store, "driver_stats", "driver_id", DRIVERS, 10).await;
        load(&*store, "customer_stats", "customer_id", CUSTOMERS, 5).await;
    });

    let defs = definitions();
    let mut refs = Vec::new();
    for (view, count) in [("driver_stats", 10), ("customer_stats", 5)] {
        for f in 0..count {
            refs.push(format!("{view}:{view}_f{f}").parse().expect("ref"));
        }
    }
    let plan = OnlinePlan::new(&defs, &FeatureSelection::Refs(refs), false).expect("plan");
    let reader = OnlineReader::new(store, KeyVersion::V3);

    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |n: i64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        ((state >> 33) as i64) % n
    };
    let tables = [
        ViewTable::new(
            "bench",
            "driver_stats",
            (0..10).map(|f| format!("driver_stats_f{f}")),
        ),
        ViewTable::new(
            "bench",
            "customer_stats",
            (0..5).map(|f| format!("customer_stats_f{f}")),
        ),
    ];
    let features: Vec<Vec<&str>> = tables
        .iter()
        .map(|t| t.features.iter().map(String::as_str).collect())
        .collect();
    let mut reads = Vec::with_capacity(ITERATIONS);
    let mut store_reads = Vec::with_capacity(ITERATIONS);
    let mut bodies = Vec::with_capacity(ITERATIONS);
    let mut body = String::new();
    runtime.block_on(async {
        for iteration in 0..ITERATIONS + WARMUP {
            // The store alone, keys serialized beforehand (other random keys, so neither
            // read warms the other's pages): the floor under the full read.
            let driver_ids: Vec<i64> = (0..ROWS).map(|_| next(DRIVERS)).collect();
            let customer_ids: Vec<i64> = (0..ROWS).map(|_| next(CUSTOMERS)).collect();
            let key_bytes: Vec<Vec<Vec<u8>>> =
                [("driver_id", &driver_ids), ("customer_id", &customer_ids)]
                    .iter()
                    .map(|(name, ids)| {
                        ids.iter()
                            .map(|&id| {
                                serialize_entity_key(
                                    &EntityKey::new([(*name, Value::int64(id))]),
                                    KeyVersion::V3,
                                )
                                .expect("key")
                            })
                            .collect()
                    })
                    .collect();
            let keys: Vec<Vec<&[u8]>> = key_bytes
                .iter()
                .map(|k| k.iter().map(Vec::as_slice).collect())
                .collect();
            let requests: Vec<ReadRequest<'_>> = (0..2)
                .map(|v| ReadRequest {
                    table: &tables[v],
                    keys: &keys[v],
                    features: &features[v],
                    prepared: None,
                })
                .collect();
            let start = Instant::now();
            reader
                .store()
                .read_many(&requests)
                .await
                .expect("read_many");
            let store_read = start.elapsed();

            let driver_ids: Vec<i64> = (0..ROWS).map(|_| next(DRIVERS)).collect();
            let customer_ids: Vec<i64> = (0..ROWS).map(|_| next(CUSTOMERS)).collect();
            let drivers: Vec<Json> = driver_ids.iter().map(|&id| json!(id)).collect();
            let customers: Vec<Json> = customer_ids.iter().map(|&id| json!(id)).collect();
            let entities = EntityColumns::new(vec![
                ("driver_id".into(), drivers),
                ("customer_id".into(), customers),
            ])
            .expect("entities");
            let start = Instant::now();
            let response = reader
                .read(&plan, &entities, Utc::now())
                .await
                .expect("read");
            let read = start.elapsed();
            body.clear();
            let start = Instant::now();
            response.write_http_json(&mut body);
            let json = start.elapsed();
            assert_eq!(response.num_columns(), 17);
            if iteration >= WARMUP {
                reads.push(read);
                store_reads.push(store_read);
                bodies.push(json);
            }
        }
    });
    report(&format!("read {ROWS} rows x 15 features (2 views)"), reads);
    report("  of which the store alone (read_many)", store_reads);
    report(&format!("HTTP JSON body ({} bytes)", body.len()), bodies);
}

fn report(label: &str, mut times: Vec<Duration>) {
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "{label}: mean {mean:?}, p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
}
