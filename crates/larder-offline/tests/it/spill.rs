//! The join works under a memory limit far below its input size, by spilling sorts to disk.

use larder_offline::EntityInput;
use larder_spec::FeatureSelection;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spills_under_a_small_memory_limit_and_gives_the_same_answer() {
    const FEATURE_ROWS: i64 = 300_000;
    const ENTITY_ROWS: i64 = 200_000;
    // Every (key, time) pair is unique, so each entity row has one right answer.
    let keys: Vec<i64> = (0..FEATURE_ROWS).map(|i| i % 5_000).collect();
    let event_hours: Vec<i64> = (0..FEATURE_ROWS).map(|i| i / 300).collect();
    let values: Vec<Option<f64>> = (0..FEATURE_ROWS).map(|i| Some(i as f64)).collect();
    let data = batch(vec![
        ("driver_id", ints(&keys)),
        ("event_timestamp", ts_hours(&event_hours)),
        ("value", floats(&values)),
        (
            "padding",
            strings(&vec![
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
                FEATURE_ROWS as usize
            ]),
        ),
    ]);
    let defs = "entities:\n  - {name: driver, join_keys: [driver_id], value_type: Int64}\n\
                data_sources:\n  - {name: s, type: file, path: s.parquet, timestamp_field: event_timestamp}\n\
                feature_views:\n  - {name: fv, entities: [driver], source: s, ttl: 100h, schema: [{name: value, dtype: Float64}, {name: padding, dtype: String}]}\n";
    let fx = fixture(defs, &[("s.parquet", data)]);
    let spine = batch(vec![
        (
            "driver_id",
            ints(
                &(0..ENTITY_ROWS)
                    .map(|i| (i * 104_729) % 5_100)
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "event_timestamp",
            ts_hours(
                &(0..ENTITY_ROWS)
                    .map(|i| (i * 13) % 1_100)
                    .collect::<Vec<_>>(),
            ),
        ),
    ]);
    let selection = || {
        FeatureSelection::Refs(vec![
            "fv:value".parse().unwrap(),
            "fv:padding".parse().unwrap(),
        ])
    };
    // Inputs are ~40 MB in memory; the limit is 16 MB.
    let unlimited = run_with(
        &fx,
        &store(&fx, None, 2),
        EntityInput::Batches(vec![spine.clone()]),
        selection(),
        false,
    )
    .await
    .expect("unlimited run");
    let spine_again = spine.clone();
    let limited = run_with(
        &fx,
        &store(&fx, Some(16 << 20), 2),
        EntityInput::Batches(vec![spine]),
        selection(),
        false,
    )
    .await
    .expect("run under a 16 MB limit");
    assert_eq!(limited.num_rows() as i64, ENTITY_ROWS);
    // Proof that the limited run spilled: with 1 KiB of spill space it fails.
    let mut options = larder_offline::FileStoreOptions::new(fx.dir.path());
    options.memory_limit = Some(16 << 20);
    options.batch_size = 1024;
    options.partitions = 2;
    options.max_spill_bytes = Some(1024);
    let no_disk = larder_offline::FileOfflineStore::new(options).expect("store");
    let err = run_with(
        &fx,
        &no_disk,
        EntityInput::Batches(vec![spine_again]),
        selection(),
        false,
    )
    .await
    .expect_err("spilling is impossible without a spill folder");
    assert!(err.to_string().contains("1024"), "{err}");
    let (a, b) = (
        column_f64(&limited, "value"),
        column_f64(&unlimited, "value"),
    );
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert_eq!(
        differing, 0,
        "rows differing between the limited and unlimited runs"
    );
    // Spot-check against the rule: key k has rows at hours i/300 for i ≡ k (mod 5000).
    let keys = column_i64(&limited, "driver_id");
    for row in (0..ENTITY_ROWS as usize).step_by(997) {
        let key = keys[row].unwrap();
        let hour = (row as i64 * 13) % 1_100;
        let expected = (0..FEATURE_ROWS)
            .filter(|i| i % 5_000 == key && i / 300 <= hour && i / 300 >= hour - 100)
            .max_by_key(|i| i / 300)
            .map(|i| i as f64);
        assert_eq!(a[row], expected, "row {row}");
    }
    let matched = column_f64(&limited, "value")
        .iter()
        .filter(|v| v.is_some())
        .count();
    assert!(
        matched > 10_000,
        "the data must produce matches, got {matched}"
    );
}
