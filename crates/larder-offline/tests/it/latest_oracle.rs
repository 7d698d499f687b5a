//! `pull_latest` against a brute-force oracle on random data: random keys (one or two
//! columns), ties on event and created time, null keys, times and created times, random
//! windows, tiny batches and several partitions.

use std::collections::BTreeMap;

use arrow::array::{ArrayRef, AsArray, Int64Array, StringArray};
use arrow::datatypes::Int64Type;
use larder_offline::{LATEST_CREATED_TS, LATEST_EVENT_TS};
use proptest::prelude::*;

use crate::harness::*;

#[derive(Clone, Debug)]
struct SourceRow {
    key: Option<i64>,
    /// Second key column, used when the view has two join keys.
    region: Option<&'static str>,
    hour: Option<i64>,
    created: Option<i64>,
}

fn source_rows() -> impl Strategy<Value = Vec<SourceRow>> {
    prop::collection::vec(
        (
            prop::option::weighted(0.9, 0i64..6),
            prop::option::weighted(0.95, prop::sample::select(vec!["n", "s", "east"])),
            prop::option::weighted(0.9, 0i64..12),
            prop::option::weighted(0.8, 0i64..4),
        )
            .prop_map(|(key, region, hour, created)| SourceRow {
                key,
                region,
                hour,
                created,
            }),
        0..80,
    )
}

type Key = (i64, Option<String>);
/// (event hour, created hour): greater wins.
type Rank = (i64, Option<i64>);

/// Per key, the rows that may win: those in the window with the greatest event time, and
/// among them (with a created column) the greatest created time, a null losing to any time.
fn oracle(
    rows: &[SourceRow],
    two_keys: bool,
    has_created: bool,
    (start, end): (i64, i64),
) -> BTreeMap<Key, Vec<usize>> {
    let mut best: BTreeMap<Key, (Rank, Vec<usize>)> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let (Some(key), Some(hour)) = (row.key, row.hour) else {
            continue;
        };
        if two_keys && row.region.is_none() {
            continue;
        }
        if hour < start || hour > end {
            continue;
        }
        let key = (key, row.region.filter(|_| two_keys).map(str::to_string));
        let rank = (hour, if has_created { row.created } else { None });
        let entry = best.entry(key).or_insert((rank, Vec::new()));
        if rank > entry.0 {
            *entry = (rank, vec![i]);
        } else if rank == entry.0 {
            entry.1.push(i);
        }
    }
    best.into_iter().map(|(k, (_, rows))| (k, rows)).collect()
}

const DERIVED: &str = "__derived";

/// An injective key encoding whose byte order differs from the keys' order (the first key's
/// bytes swapped), as Feast's little-endian entity keys are.
fn derive_one(key: i64, region: Option<&str>) -> Vec<u8> {
    let mut out = (key as u64).swap_bytes().to_be_bytes().to_vec();
    if let Some(region) = region {
        out.extend_from_slice(region.as_bytes());
    }
    out
}

/// The derived key; with `parity`, a key filter keeping the keys `key % 2 == parity` (a
/// shard of a distributed materialization).
fn derived_key(two_keys: bool, parity: Option<i64>) -> larder_offline::DerivedKey {
    larder_offline::DerivedKey {
        name: DERIVED.into(),
        data_type: arrow::datatypes::DataType::Binary,
        derive: std::sync::Arc::new(move |columns: &[ArrayRef]| {
            let keys = columns[0].as_primitive::<Int64Type>();
            let regions = two_keys.then(|| columns[1].as_string::<i32>());
            let values: Vec<Vec<u8>> = (0..keys.len())
                .map(|i| derive_one(keys.value(i), regions.map(|r| r.value(i))))
                .collect();
            Ok(
                std::sync::Arc::new(arrow::array::BinaryArray::from_iter_values(values))
                    as ArrayRef,
            )
        }),
        keep: parity.map(|parity| {
            std::sync::Arc::new(move |column: &ArrayRef| {
                // The first byte of a derived key is its key's lowest byte.
                Ok(column
                    .as_binary::<i32>()
                    .iter()
                    .map(|k| k.map(|k| i64::from(k[0]) % 2 == parity))
                    .collect())
            }) as std::sync::Arc<larder_offline::KeepKeyFn>
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn matches_the_oracle(
        rows in source_rows(),
        two_keys in any::<bool>(),
        has_created in any::<bool>(),
        start in 0i64..12,
        length in 0i64..12,
        partitions in 1usize..4,
        batch_size in 1usize..9,
        derived in any::<bool>(),
        parity in prop::option::of(0i64..2),
    ) {
        let parity = parity.filter(|_| derived);
        let window = (start, start + length);
        let row_ids: Vec<i64> = (0..rows.len() as i64).collect();
        let mut columns: Vec<(&str, ArrayRef)> = vec![
            ("driver_id", std::sync::Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.key)))),
            ("region", std::sync::Arc::new(StringArray::from_iter(rows.iter().map(|r| r.region)))),
            ("event_timestamp", ts_array(rows.iter().map(|r| r.hour.map(hours)))),
            ("row_id", ints(&row_ids)),
        ];
        if has_created {
            columns.push(("created", ts_array(rows.iter().map(|r| r.created.map(hours)))));
        }
        let data = batch(columns);
        let entities = if two_keys { "[driver, region]" } else { "[driver]" };
        let created = if has_created { ", created_timestamp_column: created" } else { "" };
        let yaml = format!(
            "entities:\n  - {{name: driver, join_keys: [driver_id], value_type: Int64}}\n  \
             - {{name: region, join_keys: [region], value_type: String}}\n\
             data_sources:\n  - {{name: s, type: file, path: s.parquet, timestamp_field: event_timestamp{created}}}\n\
             feature_views:\n  - {{name: fv, entities: {entities}, source: s, schema: [{{name: row_id, dtype: Int64}}]}}\n"
        );
        let fx = fixture(&yaml, &[("s.parquet", data.clone())]);
        let mut options = larder_offline::FileStoreOptions::new(fx.dir.path());
        options.partitions = partitions;
        options.batch_size = batch_size;
        let store = larder_offline::FileOfflineStore::new(options).expect("store");
        let runtime = two_thread_runtime();
        let out = runtime
            .block_on(pull_derived(
                &fx,
                &store,
                "fv",
                (hours(window.0), hours(window.1)),
                None,
                derived.then(|| derived_key(two_keys, parity)),
            ))
            .expect("read");
        let mut expected = oracle(&rows, two_keys, has_created, window);
        expected.retain(|(key, _), _| parity.is_none_or(|p| key.rem_euclid(2) == p));
        let mut outputs = vec![out.batch];
        if let Some(url) = crate::backends::postgres_url() {
            let out = runtime.block_on(async {
                let backend = crate::backends::Backend::Postgres(url);
                let fx = crate::backends::fixture_on(&backend, &yaml, &[("s.parquet", data.clone())]).await;
                let store = crate::backends::store_for(&fx);
                pull_derived(
                    &fx,
                    store.as_ref(),
                    "fv",
                    (hours(window.0), hours(window.1)),
                    None,
                    derived.then(|| derived_key(two_keys, parity)),
                )
                .await
            }).expect("postgres read");
            outputs.push(out.batch);
        }
        for out in &outputs {
        let keys = column_i64(out, "driver_id");
        let regions: Option<Vec<Option<&str>>> = two_keys.then(|| {
            out.column_by_name("region").expect("region").as_string::<i32>().iter().collect()
        });
        let picked = out.column_by_name("row_id").expect("row_id").as_primitive::<Int64Type>();
        let events = column_us(out, LATEST_EVENT_TS);
        let created_out = column_us(out, LATEST_CREATED_TS);
        let mut got: BTreeMap<Key, usize> = BTreeMap::new();
        for i in 0..out.num_rows() {
            let key = (
                keys[i].expect("non-null key"),
                regions.as_ref().map(|r| r[i].expect("non-null region").to_string()),
            );
            let row = usize::try_from(picked.value(i)).expect("row id");
            prop_assert!(got.insert(key.clone(), row).is_none(), "key {:?} came out twice", key);
            let source = &rows[row];
            prop_assert_eq!(events[i], source.hour.map(hours), "event time of row {}", row);
            let want_created = if has_created { source.created.map(hours) } else { None };
            prop_assert_eq!(created_out[i], want_created, "created time of row {}", row);
        }
        if derived {
            // The derived column is the function of each row's keys, and the rows come
            // sorted by it.
            let column = out.column_by_name(DERIVED).expect("derived column");
            let values: Vec<&[u8]> = column.as_binary::<i32>().iter().map(|v| v.expect("non-null")).collect();
            for i in 0..out.num_rows() {
                let region = regions.as_ref().and_then(|r| r[i]);
                prop_assert_eq!(values[i], &derive_one(keys[i].expect("key"), region)[..], "row {}", i);
            }
            prop_assert!(values.windows(2).all(|w| w[0] < w[1]), "not sorted: {:?}", values);
        } else {
            prop_assert!(out.column_by_name(DERIVED).is_none());
        }
        prop_assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "keys"
        );
        for (key, row) in &got {
            prop_assert!(
                expected[key].contains(row),
                "key {:?}: row {} is not among the latest {:?}", key, row, expected[key]
            );
        }
    }
    }
}
