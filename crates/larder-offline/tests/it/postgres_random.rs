//! The Postgres and file offline stores on the same random data give the same answers,
//! column for column (runs when `LARDER_TEST_POSTGRES_URL` is set).

use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use larder_offline::EntityInput;
use larder_spec::FeatureSelection;

use crate::backends::{Backend, fixture_on, postgres_url, store_for};
use crate::harness::*;

/// Deterministic pseudo-random numbers (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_the_file_store_on_random_data() {
    use arrow::array::{ArrayRef, Int64Builder, ListBuilder, StringArray};
    let Some(url) = postgres_url() else { return };
    let yaml = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
  - {name: customer, join_keys: [customer_id], value_type: String}
data_sources:
  - {name: drivers, type: file, path: drivers.parquet, timestamp_field: ts, created_timestamp_column: created}
  - {name: customers, type: file, path: customers.parquet, timestamp_field: event_timestamp}
feature_views:
  - name: driver_stats
    entities: [driver]
    source: drivers
    ttl: 5h
    schema: [{name: rate, dtype: Float64}, {name: recent, dtype: Array(Int64)}]
  - name: customer_stats
    entities: [customer]
    source: customers
    schema: [{name: tier, dtype: String}, {name: orders, dtype: Int64}]
";
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let n = 3_000usize;
    let mut recent = ListBuilder::new(Int64Builder::new());
    for _ in 0..n {
        if rng.below(6) == 0 {
            recent.append_null();
        } else {
            for _ in 0..rng.below(3) {
                recent.values().append_value(rng.below(100) as i64);
            }
            recent.append(true);
        }
    }
    // Created times are distinct where present, and at most one row per (driver, time)
    // has none (which loses to any created time), so no two rows tie.
    let driver_ids: Vec<i64> = (0..n).map(|_| rng.below(40) as i64).collect();
    let driver_hours: Vec<i64> = (0..n).map(|_| rng.below(48) as i64).collect();
    let mut without_created = std::collections::HashSet::new();
    let created: Vec<Option<i64>> = (0..n)
        .map(|i| {
            let none =
                rng.below(8) == 0 && without_created.insert((driver_ids[i], driver_hours[i]));
            (!none).then(|| hours(rng.below(60) as i64) + i as i64)
        })
        .collect();
    let drivers = batch(vec![
        ("driver_id", ints(&driver_ids)),
        ("ts", ts_hours(&driver_hours)),
        ("created", ts_array(created)),
        (
            "rate",
            floats(
                &(0..n)
                    .map(|_| (rng.below(10) != 0).then(|| rng.below(1000) as f64 / 8.0))
                    .collect::<Vec<_>>(),
            ),
        ),
        ("recent", Arc::new(recent.finish()) as ArrayRef),
    ]);
    let names = ["ann", "bo", "cy", "di", "ed", "flo", "gus"];
    // Without a created column, two rows of a customer must not share a time.
    let cells: Vec<(usize, i64)> = (0..7)
        .flat_map(|c| (0..48).map(move |h| (c, h)))
        .filter(|_| rng.below(3) != 0)
        .collect();
    let customers = batch(vec![
        (
            "customer_id",
            Arc::new(StringArray::from_iter_values(
                cells.iter().map(|(c, _)| names[*c]),
            )) as ArrayRef,
        ),
        (
            "event_timestamp",
            ts_hours(&cells.iter().map(|(_, h)| *h).collect::<Vec<_>>()),
        ),
        (
            "tier",
            Arc::new(StringArray::from_iter((0..cells.len()).map(|_| {
                (rng.below(5) != 0).then(|| names[rng.below(7) as usize])
            }))) as ArrayRef,
        ),
        (
            "orders",
            ints(
                &(0..cells.len())
                    .map(|_| rng.below(500) as i64)
                    .collect::<Vec<_>>(),
            ),
        ),
    ]);
    let m = 2_000usize;
    let entities = batch(vec![
        (
            "driver_id",
            ints(&(0..m).map(|_| rng.below(45) as i64).collect::<Vec<_>>()),
        ),
        (
            "customer_id",
            Arc::new(StringArray::from_iter_values(
                (0..m).map(|_| names[rng.below(7) as usize]),
            )) as ArrayRef,
        ),
        (
            "event_timestamp",
            ts_array((0..m).map(|_| (rng.below(50) != 0).then(|| hours(rng.below(52) as i64)))),
        ),
        ("label", ints(&(0..m).map(|i| i as i64).collect::<Vec<_>>())),
    ]);
    let files = [
        ("drivers.parquet", drivers),
        ("customers.parquet", customers),
    ];
    let file = fixture_on(&Backend::File, yaml, &files).await;
    let pg = fixture_on(&Backend::Postgres(url), yaml, &files).await;
    let refs = || {
        FeatureSelection::Refs(
            [
                "driver_stats:rate",
                "driver_stats:recent",
                "customer_stats:tier",
                "customer_stats:orders",
            ]
            .iter()
            .map(|r| r.parse().expect("ref"))
            .collect(),
        )
    };
    let file_store = store_for(&file);
    let pg_store = store_for(&pg);
    let rows = || EntityInput::Batches(vec![entities.clone()]);
    let from_file = run_with(&file, file_store.as_ref(), rows(), refs(), true)
        .await
        .expect("file store");
    let from_pg = run_with(&pg, pg_store.as_ref(), rows(), refs(), true)
        .await
        .expect("postgres store");
    assert_eq!(from_file.num_rows(), m);
    // Same names and types (nullability may differ: Postgres cannot tell a column has no nulls).
    let fields = |b: &RecordBatch| -> Vec<(String, DataType)> {
        b.schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect()
    };
    assert_eq!(fields(&from_pg), fields(&from_file));
    for (i, field) in from_file.schema().fields().iter().enumerate() {
        assert_eq!(
            from_pg.column(i).as_ref(),
            from_file.column(i).as_ref(),
            "column `{}`",
            field.name()
        );
    }
    let matched = from_file
        .column_by_name("driver_stats__rate")
        .expect("rate");
    assert!(
        matched.null_count() < m / 2,
        "the data must match often: {} nulls",
        matched.null_count()
    );

    // Materialization reads agree as well, row for row once sorted by key.
    for view in ["driver_stats", "customer_stats"] {
        let window = (hours(10), hours(30));
        let a = pull(&file, file_store.as_ref(), view, window, None)
            .await
            .expect("file read")
            .batch;
        let b = pull(&pg, pg_store.as_ref(), view, window, None)
            .await
            .expect("postgres read")
            .batch;
        let sorted = |batch: &RecordBatch| -> RecordBatch {
            let order = arrow::compute::sort_to_indices(batch.column(0), None, None).expect("sort");
            arrow::compute::take_record_batch(batch, &order).expect("take")
        };
        assert_eq!(fields(&a), fields(&b), "{view}");
        assert_eq!(a.num_rows(), b.num_rows(), "{view}");
        let (a, b) = (sorted(&a), sorted(&b));
        for i in 0..a.num_columns() {
            assert_eq!(
                a.column(i).as_ref(),
                b.column(i).as_ref(),
                "{view}: column {i}"
            );
        }
    }
}
