//! Materialization reads work under a memory limit far below their input size, by spilling
//! the deduplicating sort to disk.

use larder_offline::{FileOfflineStore, FileStoreOptions};

use crate::harness::*;

const ROWS: i64 = 300_000;
const KEYS: i64 = 50_000;

/// Row `i` has key `i % KEYS`, value `i` and this event hour, different for every row of
/// a key (so each key has one right answer).
fn hour_of(i: i64) -> i64 {
    (i * 7 + 13 * (i / KEYS)) % 1_000
}

fn spill_store(
    fx: &Fixture,
    memory_limit: Option<usize>,
    max_spill_bytes: Option<u64>,
) -> FileOfflineStore {
    let mut options = FileStoreOptions::new(fx.dir.path());
    options.memory_limit = memory_limit;
    options.max_spill_bytes = max_spill_bytes;
    options.batch_size = 1024;
    options.partitions = 2;
    FileOfflineStore::new(options).expect("store")
}

/// (key, value) pairs in key order.
fn pairs(latest: &Latest) -> Vec<(Option<i64>, Option<f64>)> {
    let keys = column_i64(&latest.batch, "driver_id");
    let values = column_f64(&latest.batch, "value");
    let mut pairs: Vec<_> = keys.into_iter().zip(values).collect();
    pairs.sort_by_key(|p| p.0);
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spills_under_a_small_memory_limit_and_gives_the_same_answer() {
    let data = batch(vec![
        (
            "driver_id",
            ints(&(0..ROWS).map(|i| i % KEYS).collect::<Vec<_>>()),
        ),
        (
            "event_timestamp",
            ts_hours(&(0..ROWS).map(hour_of).collect::<Vec<_>>()),
        ),
        (
            "value",
            floats(&(0..ROWS).map(|i| Some(i as f64)).collect::<Vec<_>>()),
        ),
        (
            "padding",
            strings(&vec![
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
                ROWS as usize
            ]),
        ),
    ]);
    let defs = "entities:\n  - {name: driver, join_keys: [driver_id], value_type: Int64}\n\
                data_sources:\n  - {name: s, type: file, path: s.parquet, timestamp_field: event_timestamp}\n\
                feature_views:\n  - {name: fv, entities: [driver], source: s, schema: [{name: value, dtype: Float64}, {name: padding, dtype: String}]}\n";
    let fx = fixture(defs, &[("s.parquet", data)]);
    let window = (hours(100), hours(900));
    // The input is ~40 MB in memory; the read's own limit is 4 MB.
    const LIMIT: usize = 4 << 20;

    let unlimited = pull(&fx, &spill_store(&fx, None, None), "fv", window, None)
        .await
        .expect("unlimited read");
    let limited = pull(
        &fx,
        &spill_store(&fx, None, None),
        "fv",
        window,
        Some(LIMIT),
    )
    .await
    .expect("read under a 4 MB limit");
    let in_window = (0..ROWS)
        .filter(|&i| (100..=900).contains(&hour_of(i)))
        .count() as u64;
    assert_eq!(limited.rows_read, in_window);
    assert_eq!(unlimited.rows_read, in_window);
    let (a, b) = (pairs(&limited), pairs(&unlimited));
    assert_eq!(a.len(), b.len());
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert_eq!(
        differing, 0,
        "rows differing between the limited and unlimited runs"
    );

    // Against the rule: key k's rows are i = k + KEYS * m.
    let mut expected_rows = 0;
    for key in 0..KEYS {
        let latest = (0..ROWS / KEYS)
            .map(|m| key + KEYS * m)
            .filter(|&i| (100..=900).contains(&hour_of(i)))
            .max_by_key(|&i| hour_of(i));
        if let Some(i) = latest {
            expected_rows += 1;
            if key % 997 == 0 {
                let position = a
                    .binary_search_by_key(&Some(key), |p| p.0)
                    .unwrap_or_else(|_| panic!("key {key} missing"));
                assert_eq!(a[position].1, Some(i as f64), "key {key}");
            }
        }
    }
    assert_eq!(a.len(), expected_rows);
    assert!(expected_rows > 40_000, "the data must hit most keys");

    // Proof that the limited read spilled: with 1 KiB of spill space it fails, whether the
    // limit is the read's own or the store's.
    let no_disk = spill_store(&fx, None, Some(1024));
    let err = pull(&fx, &no_disk, "fv", window, Some(LIMIT))
        .await
        .expect_err("spilling is impossible without spill space");
    assert!(err.to_string().contains("1024"), "{err}");
    let no_disk = spill_store(&fx, Some(LIMIT), Some(1024));
    let err = pull(&fx, &no_disk, "fv", window, None)
        .await
        .expect_err("the store's limit applies without the read's own");
    assert!(err.to_string().contains("1024"), "{err}");
}
