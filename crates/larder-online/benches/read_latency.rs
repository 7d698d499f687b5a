//! Read latency of the SQLite online store: 100 random keys of one view with 10 features,
//! out of 100 000 stored keys, through the `OnlineStore` trait (spawn_blocking included).
//!
//! `cargo bench -p larder-online --bench read_latency` prints percentiles. Wall time on a
//! shared machine is noisy: compare runs side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, BinaryArray, RecordBatch, TimestampMicrosecondArray};
use larder_online::{OnlineStore, SqliteConfig, SqliteOnlineStore, ViewTable, write_schema};
use larder_types::feast::{EntityKey, KeyVersion, Value, serialize_entity_key};

const STORED: u64 = 100_000;
const FEATURES: usize = 10;
const KEYS_PER_READ: usize = 100;
const ITERATIONS: usize = 3_000;

fn key(id: u64) -> Vec<u8> {
    let key = EntityKey::new([("driver_id", Value::int64(id as i64))]);
    serialize_entity_key(&key, KeyVersion::V3).expect("key")
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SqliteOnlineStore::open(&SqliteConfig::new(dir.path().join("online.db"))).expect("open"),
    );
    let names: Vec<String> = (0..FEATURES).map(|f| format!("feature_{f}")).collect();
    let table = ViewTable::new("bench", "driver_stats", names.iter().cloned());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    let started = Instant::now();
    runtime.block_on(async {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        for chunk in (0..STORED).collect::<Vec<_>>().chunks(10_000) {
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(BinaryArray::from_iter_values(
                    chunk.iter().map(|&id| key(id)),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(chunk.iter().map(|&id| id as i64))
                        .with_timezone("UTC"),
                ),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![None; chunk.len()]).with_timezone("UTC"),
                ),
            ];
            for f in 0..FEATURES {
                let values = chunk.iter().map(|&id| {
                    if f % 2 == 0 {
                        Value::double(id as f64 * 0.5 + f as f64).to_bytes()
                    } else {
                        Value::int64(id as i64 * 7 + f as i64).to_bytes()
                    }
                });
                columns.push(Arc::new(BinaryArray::from_iter_values(values)));
            }
            let batch = RecordBatch::try_new(write_schema(&refs), columns).expect("batch");
            store.write_batch(&table, batch).await.expect("write");
        }
    });
    println!("wrote {STORED} keys in {:?}", started.elapsed());

    let features: Vec<&str> = names.iter().map(String::as_str).collect();
    measure(&runtime, &*store, &table, &features, "right after loading");
    // Move the pages still in the WAL into the database file, as SQLite's automatic
    // checkpoint eventually does, and measure the steady state.
    rusqlite::Connection::open(dir.path().join("online.db"))
        .and_then(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)"))
        .expect("checkpoint");
    measure(&runtime, &*store, &table, &features, "after a checkpoint");
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    store: &dyn OnlineStore,
    table: &ViewTable,
    features: &[&str],
    label: &str,
) {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 33) % STORED
    };
    let mut times = Vec::with_capacity(ITERATIONS);
    runtime.block_on(async {
        for iteration in 0..ITERATIONS + 200 {
            let keys: Vec<Vec<u8>> = (0..KEYS_PER_READ).map(|_| key(next())).collect();
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let start = Instant::now();
            let batch = store.read(table, &keys, features).await.expect("read");
            let took = start.elapsed();
            assert_eq!(batch.num_rows(), KEYS_PER_READ);
            if iteration >= 200 {
                times.push(took);
            }
        }
    });
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "{label}: read {KEYS_PER_READ} keys x {FEATURES} features: mean {mean:?}, p50 {:?}, p90 {:?}, p99 {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99)
    );
}
