//! The as-of operator against a brute-force oracle on random data: random keys, ties on
//! event time, nulls, ttl, tiny batches and several partitions.

use larder_offline::EntityInput;
use larder_spec::FeatureSelection;
use proptest::prelude::*;

use crate::harness::*;

#[derive(Clone, Debug)]
struct FeatureRow {
    key: i64,
    hour: i64,
    value: Option<f64>,
}

#[derive(Clone, Debug)]
struct EntityRow {
    key: i64,
    hour: Option<i64>,
}

fn feature_rows() -> impl Strategy<Value = Vec<FeatureRow>> {
    prop::collection::vec(
        (
            0i64..5,
            0i64..20,
            prop::option::weighted(0.9, -100.0f64..100.0),
        )
            .prop_map(|(key, hour, value)| FeatureRow { key, hour, value }),
        0..60,
    )
}

fn entity_rows() -> impl Strategy<Value = Vec<EntityRow>> {
    prop::collection::vec(
        (0i64..6, prop::option::weighted(0.95, 0i64..25))
            .prop_map(|(key, hour)| EntityRow { key, hour }),
        0..40,
    )
}

/// The rule, written the slow and obvious way. `created` of row i is its hour plus i
/// seconds, so (event, created) never ties.
fn oracle(features: &[FeatureRow], entities: &[EntityRow], ttl_hours: i64) -> Vec<Option<f64>> {
    entities
        .iter()
        .map(|e| {
            let hour = e.hour?;
            features
                .iter()
                .enumerate()
                .filter(|(_, f)| f.key == e.key && f.hour <= hour)
                .filter(|(_, f)| ttl_hours == 0 || f.hour >= hour - ttl_hours)
                .max_by_key(|(i, f)| (f.hour, *i))
                .and_then(|(_, f)| f.value)
        })
        .collect()
}

/// The feature rows as a source file's batch. `created` of row i is its hour plus i
/// seconds, so (event, created) never ties.
fn feature_batch(features: &[FeatureRow]) -> arrow::array::RecordBatch {
    let created = features
        .iter()
        .enumerate()
        .map(|(i, f)| Some(hours(f.hour) + i as i64 * 1_000_000));
    batch(vec![
        (
            "driver_id",
            ints(&features.iter().map(|f| f.key).collect::<Vec<_>>()),
        ),
        (
            "event_timestamp",
            ts_hours(&features.iter().map(|f| f.hour).collect::<Vec<_>>()),
        ),
        ("created", ts_array(created)),
        (
            "value",
            floats(&features.iter().map(|f| f.value).collect::<Vec<_>>()),
        ),
    ])
}

/// The entity rows as a spine batch.
fn spine_batch(entities: &[EntityRow]) -> arrow::array::RecordBatch {
    batch(vec![
        (
            "driver_id",
            ints(&entities.iter().map(|e| e.key).collect::<Vec<_>>()),
        ),
        (
            "event_timestamp",
            ts_array(entities.iter().map(|e| e.hour.map(hours))),
        ),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn matches_the_oracle(
        features in feature_rows(),
        entities in entity_rows(),
        ttl_hours in prop_oneof![Just(0i64), 1i64..8],
        partitions in 1usize..4,
        batch_size in 1usize..9,
        in_memory_join in any::<bool>(),
    ) {
        let data = feature_batch(&features);
        let ttl = if ttl_hours == 0 { "0".to_string() } else { format!("{ttl_hours}h") };
        let yaml = format!(
            "entities:\n  - {{name: driver, join_keys: [driver_id], value_type: Int64}}\n\
             data_sources:\n  - {{name: s, type: file, path: s.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}}\n\
             feature_views:\n  - {{name: fv, entities: [driver], source: s, ttl: {ttl}, schema: [{{name: value, dtype: Float64}}]}}\n"
        );
        let fx = fixture(&yaml, &[("s.parquet", data.clone())]);
        let spine = spine_batch(&entities);
        let mut options = larder_offline::FileStoreOptions::new(fx.dir.path());
        options.partitions = partitions;
        options.batch_size = batch_size;
        options.in_memory_join = in_memory_join;
        let store = larder_offline::FileOfflineStore::new(options).expect("store");
        let runtime = two_thread_runtime();
        let out = runtime.block_on(run_with(
            &fx,
            &store,
            EntityInput::Batches(vec![spine.clone()]),
            FeatureSelection::Refs(vec!["fv:value".parse().expect("ref")]),
            false,
        )).expect("retrieval");
        let mut outputs = vec![("file", out)];
        if let Some(url) = crate::backends::postgres_url() {
            let out = runtime.block_on(async {
                let backend = crate::backends::Backend::Postgres(url);
                let fx = crate::backends::fixture_on(&backend, &yaml, &[("s.parquet", data.clone())]).await;
                let store = crate::backends::store_for(&fx);
                run_with(
                    &fx,
                    store.as_ref(),
                    EntityInput::Batches(vec![spine.clone()]),
                    FeatureSelection::Refs(vec!["fv:value".parse().expect("ref")]),
                    false,
                )
                .await
            }).expect("postgres retrieval");
            outputs.push(("postgres", out));
        }
        for (backend, out) in outputs {
            prop_assert_eq!(out.num_rows(), entities.len(), "{}", backend);
            let keys: Vec<Option<i64>> = entities.iter().map(|e| Some(e.key)).collect();
            prop_assert_eq!(column_i64(&out, "driver_id"), keys, "{}: entity order kept", backend);
            prop_assert_eq!(column_f64(&out, "value"), oracle(&features, &entities, ttl_hours), "{}", backend);
        }
    }
}

/// Enough rows that the in-memory join spreads keys over many hash buckets and both sides
/// over several input chunks (a few thousand rows per bucket), checked against the rule.
#[test]
fn many_buckets_match_the_oracle() {
    use std::collections::HashMap;
    let (keys, feature_count, entity_count) = (3_000i64, 40_000usize, 30_000usize);
    // A small deterministic generator (xorshift), so the test needs no seed handling.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let features: Vec<FeatureRow> = (0..feature_count)
        .map(|_| FeatureRow {
            key: next(keys as u64) as i64,
            hour: next(200) as i64,
            value: (next(20) != 0).then(|| next(10_000) as f64),
        })
        .collect();
    let entities: Vec<EntityRow> = (0..entity_count)
        .map(|_| EntityRow {
            // Some keys with no feature rows at all.
            key: next(keys as u64 + 300) as i64,
            hour: (next(50) != 0).then(|| next(210) as i64),
        })
        .collect();
    let ttl_hours = 24;
    // The rule, per key: the latest row at or before the entity row within the ttl, the
    // later row (larger created) on an event-time tie.
    let mut by_key: HashMap<i64, Vec<(usize, &FeatureRow)>> = HashMap::new();
    for (i, f) in features.iter().enumerate() {
        by_key.entry(f.key).or_default().push((i, f));
    }
    let want: Vec<Option<f64>> = entities
        .iter()
        .map(|e| {
            let hour = e.hour?;
            by_key
                .get(&e.key)?
                .iter()
                .filter(|(_, f)| f.hour <= hour && f.hour >= hour - ttl_hours)
                .max_by_key(|(i, f)| (f.hour, *i))
                .and_then(|(_, f)| f.value)
        })
        .collect();
    let data = feature_batch(&features);
    let yaml = "entities:\n  - {name: driver, join_keys: [driver_id], value_type: Int64}\n\
         data_sources:\n  - {name: s, type: file, path: s.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}\n\
         feature_views:\n  - {name: fv, entities: [driver], source: s, ttl: 24h, schema: [{name: value, dtype: Float64}]}\n";
    let fx = fixture(yaml, &[("s.parquet", data)]);
    let spine = spine_batch(&entities);
    let mut options = larder_offline::FileStoreOptions::new(fx.dir.path());
    options.batch_size = 1000;
    options.partitions = 3;
    let store = larder_offline::FileOfflineStore::new(options).expect("store");
    let runtime = two_thread_runtime();
    let out = runtime
        .block_on(run_with(
            &fx,
            &store,
            EntityInput::Batches(vec![spine]),
            FeatureSelection::Refs(vec!["fv:value".parse().expect("ref")]),
            false,
        ))
        .expect("retrieval");
    assert_eq!(out.num_rows(), entity_count);
    let keys: Vec<Option<i64>> = entities.iter().map(|e| Some(e.key)).collect();
    assert_eq!(column_i64(&out, "driver_id"), keys, "entity order kept");
    let got = column_f64(&out, "value");
    let wrong = got.iter().zip(&want).filter(|(g, w)| g != w).count();
    assert_eq!(
        wrong, 0,
        "{wrong} of {entity_count} rows differ from the rule"
    );
    assert!(
        want.iter().filter(|v| v.is_some()).count() > entity_count / 2,
        "most rows match, so the check has teeth"
    );
}
