//! Materialization reads (`pull_latest`): the latest row per entity key in a window, as
//! small data tables, plus the schema, progress and error contract.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray,
};
use arrow::datatypes::{DataType, TimeUnit};
use larder_offline::{LATEST_CREATED_TS, LATEST_EVENT_TS, OfflineStore};

use crate::backends::{Backend, backends, fixture_on, store_for};
use crate::harness::*;

/// A source row: (driver_id, event hour, created hour (event hour when `None`), value).
type Row = (Option<i64>, Option<i64>, Option<i64>, Option<f64>);

/// An output row: (driver_id, event hour, created hour, value).
type Out = (i64, i64, i64, Option<f64>);

struct Case {
    name: &'static str,
    features: &'static [Row],
    /// Inclusive window, in hours.
    window: (i64, i64),
    /// In key order.
    expected: &'static [Out],
}

const CASES: &[Case] = &[
    Case {
        name: "the window is inclusive at both ends",
        features: &[
            (Some(1), Some(2), None, Some(1.0)),
            (Some(2), Some(5), None, Some(2.0)),
            (Some(3), Some(8), None, Some(3.0)),
            (Some(4), Some(1), None, Some(4.0)),
            (Some(5), Some(9), None, Some(5.0)),
        ],
        window: (2, 8),
        expected: &[
            (1, 2, 2, Some(1.0)),
            (2, 5, 5, Some(2.0)),
            (3, 8, 8, Some(3.0)),
        ],
    },
    Case {
        name: "the latest row in the window, not the latest overall",
        features: &[
            (Some(1), Some(3), None, Some(1.0)),
            (Some(1), Some(6), None, Some(2.0)),
            (Some(1), Some(10), None, Some(3.0)),
            (Some(1), Some(-1), None, Some(4.0)),
        ],
        window: (0, 8),
        expected: &[(1, 6, 6, Some(2.0))],
    },
    Case {
        name: "same event time: the greatest created time wins",
        features: &[
            (Some(1), Some(5), Some(6), Some(1.0)),
            (Some(1), Some(5), Some(9), Some(2.0)),
            (Some(1), Some(5), Some(7), Some(3.0)),
            (Some(1), Some(4), Some(20), Some(4.0)),
        ],
        window: (0, 10),
        expected: &[(1, 5, 9, Some(2.0))],
    },
    Case {
        name: "a later event with an older created time beats an earlier event created later",
        features: &[
            (Some(1), Some(4), Some(20), Some(1.0)),
            (Some(1), Some(5), Some(6), Some(2.0)),
        ],
        window: (0, 10),
        expected: &[(1, 5, 6, Some(2.0))],
    },
    Case {
        name: "rows with a null key or a null event time are skipped",
        features: &[
            (None, Some(5), None, Some(9.0)),
            (Some(1), None, Some(7), Some(8.0)),
            (Some(1), Some(3), None, Some(1.0)),
            (None, Some(6), None, Some(7.0)),
        ],
        window: (0, 10),
        expected: &[(1, 3, 3, Some(1.0))],
    },
    Case {
        name: "a null feature value is returned as null (the row is still the latest)",
        features: &[
            (Some(1), Some(1), None, Some(1.0)),
            (Some(1), Some(2), None, None),
        ],
        window: (0, 10),
        expected: &[(1, 2, 2, None)],
    },
    Case {
        name: "keys do not leak into each other",
        features: &[
            (Some(3), Some(1), None, Some(31.0)),
            (Some(1), Some(9), None, Some(19.0)),
            (Some(2), Some(4), None, Some(24.0)),
            (Some(1), Some(2), None, Some(12.0)),
            (Some(3), Some(7), None, Some(37.0)),
            (Some(2), Some(3), None, Some(23.0)),
        ],
        window: (0, 10),
        expected: &[
            (1, 9, 9, Some(19.0)),
            (2, 4, 4, Some(24.0)),
            (3, 7, 7, Some(37.0)),
        ],
    },
    Case {
        name: "a window holding no rows gives nothing",
        features: &[
            (Some(1), Some(1), None, Some(1.0)),
            (Some(1), Some(10), None, Some(2.0)),
        ],
        window: (2, 9),
        expected: &[],
    },
    Case {
        name: "a window of one instant",
        features: &[
            (Some(1), Some(4), None, Some(1.0)),
            (Some(1), Some(5), None, Some(2.0)),
            (Some(2), Some(5), None, Some(3.0)),
            (Some(2), Some(6), None, Some(4.0)),
        ],
        window: (5, 5),
        expected: &[(1, 5, 5, Some(2.0)), (2, 5, 5, Some(3.0))],
    },
];

const DEFS: &str = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: stats, type: file, path: stats.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}
feature_views:
  - {name: fv, entities: [driver], source: stats, ttl: 2h, schema: [{name: value, dtype: Float64}]}
";

fn nullable_ints(values: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from_iter(values))
}

/// Output rows in key order, times in hours.
fn rows_of(batch: &RecordBatch) -> Vec<Out> {
    let keys = column_i64(batch, "driver_id");
    let events = column_us(batch, LATEST_EVENT_TS);
    let created = column_us(batch, LATEST_CREATED_TS);
    let values = column_f64(batch, "value");
    let hour = |us: Option<i64>| (us.expect("a time") - BASE_US) / HOUR_US;
    let mut rows: Vec<Out> = (0..batch.num_rows())
        .map(|i| {
            (
                keys[i].expect("a key"),
                hour(events[i]),
                hour(created[i]),
                values[i],
            )
        })
        .collect();
    rows.sort_by_key(|r| r.0);
    rows
}

fn window_us((start, end): (i64, i64)) -> (i64, i64) {
    (hours(start), hours(end))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_row_cases() {
    let mut failures = Vec::new();
    for case in CASES {
        let data = batch(vec![
            (
                "driver_id",
                nullable_ints(case.features.iter().map(|r| r.0)),
            ),
            (
                "event_timestamp",
                ts_array(case.features.iter().map(|r| r.1.map(hours))),
            ),
            (
                "created",
                ts_array(case.features.iter().map(|r| r.2.or(r.1).map(hours))),
            ),
            (
                "value",
                floats(&case.features.iter().map(|r| r.3).collect::<Vec<_>>()),
            ),
        ]);
        if let Some(url) = crate::backends::postgres_url() {
            let fx = fixture_on(
                &Backend::Postgres(url),
                DEFS,
                &[("stats.parquet", data.clone())],
            )
            .await;
            let store = store_for(&fx);
            match pull(&fx, store.as_ref(), "fv", window_us(case.window), None).await {
                Ok(out) if rows_of(&out.batch) == case.expected => {}
                Ok(out) => failures.push(format!(
                    "{} (postgres): got {:?}, want {:?}",
                    case.name,
                    rows_of(&out.batch),
                    case.expected
                )),
                Err(e) => failures.push(format!("{} (postgres): {e}", case.name)),
            }
        }
        let fx = fixture(DEFS, &[("stats.parquet", data)]);
        // Batches of one row put every run across batch boundaries.
        for (partitions, batch_size) in [(2, 1024), (1, 1), (3, 2)] {
            let mut options = larder_offline::FileStoreOptions::new(fx.dir.path());
            options.partitions = partitions;
            options.batch_size = batch_size;
            let store = larder_offline::FileOfflineStore::new(options).expect("store");
            let out = pull(&fx, &store, "fv", window_us(case.window), None)
                .await
                .expect(case.name);
            let got = rows_of(&out.batch);
            if got != case.expected {
                failures.push(format!(
                    "{} ({partitions} partitions, batches of {batch_size}): got {got:?}, want {:?}",
                    case.name, case.expected
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_schema_without_a_created_column_and_for_an_empty_window() {
    let defs = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: stats, type: file, path: stats.parquet, timestamp_field: event_timestamp}
feature_views:
  - {name: fv, entities: [driver], source: stats, schema: [{name: value, dtype: Float64}, {name: label, dtype: String}]}
";
    let data = batch(vec![
        ("driver_id", ints(&[1, 2, 1])),
        ("event_timestamp", ts_hours(&[1, 2, 3])),
        ("value", floats(&[Some(1.0), Some(2.0), Some(3.0)])),
        ("label", strings(&["a", "b", "c"])),
        ("unused", strings(&["x", "y", "z"])),
    ]);
    for backend in backends() {
        let fx = fixture_on(&backend, defs, &[("stats.parquet", data.clone())]).await;
        let store = store_for(&fx);
        let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let expected_schema = [
            ("driver_id", DataType::Int64, false),
            (LATEST_EVENT_TS, timestamp.clone(), false),
            (LATEST_CREATED_TS, timestamp, true),
            ("value", DataType::Float64, true),
            ("label", DataType::Utf8, true),
        ];
        let schema_of = |batch: &RecordBatch| -> Vec<(String, DataType, bool)> {
            batch
                .schema()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
                .collect()
        };
        let expected_schema: Vec<(String, DataType, bool)> = expected_schema
            .into_iter()
            .map(|(n, t, nullable)| (n.to_string(), t, nullable))
            .collect();

        let out = pull(&fx, store.as_ref(), "fv", window_us((0, 10)), None)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
        assert_eq!(schema_of(&out.batch), expected_schema);
        let mut rows: Vec<(Option<i64>, Option<i64>, Option<f64>)> = (0..out.batch.num_rows())
            .map(|i| {
                (
                    column_i64(&out.batch, "driver_id")[i],
                    column_us(&out.batch, LATEST_EVENT_TS)[i],
                    column_f64(&out.batch, "value")[i],
                )
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        assert_eq!(
            rows,
            [
                (Some(1), Some(hours(3)), Some(3.0)),
                (Some(2), Some(hours(2)), Some(2.0))
            ]
        );
        assert_eq!(
            column_us(&out.batch, LATEST_CREATED_TS),
            [None, None],
            "no created column: all null"
        );

        let empty = pull(&fx, store.as_ref(), "fv", window_us((4, 10)), None)
            .await
            .expect("read of an empty window");
        assert_eq!(empty.batch.num_rows(), 0);
        assert_eq!(schema_of(&empty.batch), expected_schema);
        assert_eq!(empty.rows_read, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_join_keys_field_mapping_and_declared_types() {
    let defs = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
  - {name: customer, join_keys: [customer_id], value_type: String}
data_sources:
  - name: trips
    type: file
    path: trips.parquet
    timestamp_field: ts
    field_mapping: {id: driver_id, r: rating}
feature_views:
  - name: pair
    entities: [driver, customer]
    source: trips
    schema: [{name: rating, dtype: Float64}, {name: trips, dtype: Int64}]
";
    // The key `id` is Int32 in the file and comes out as the entity's Int64.
    let data = batch(vec![
        (
            "id",
            Arc::new(Int32Array::from(vec![1, 1, 1, 2, 2, 1])) as ArrayRef,
        ),
        ("customer_id", strings(&["a", "b", "a", "a", "b", "b"])),
        ("ts", ts_hours(&[1, 2, 3, 1, 9, 1])),
        (
            "r",
            floats(&[
                Some(1.0),
                Some(2.0),
                Some(3.0),
                Some(4.0),
                Some(5.0),
                Some(6.0),
            ]),
        ),
        ("trips", ints(&[10, 20, 30, 40, 50, 60])),
    ]);
    for backend in backends() {
        let fx = fixture_on(&backend, defs, &[("trips.parquet", data.clone())]).await;
        let store = store_for(&fx);
        let out = pull(&fx, store.as_ref(), "pair", window_us((0, 5)), None)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
        assert_eq!(
            names(&out.batch),
            [
                "driver_id",
                "customer_id",
                LATEST_EVENT_TS,
                LATEST_CREATED_TS,
                "rating",
                "trips"
            ]
        );
        let customers = out
            .batch
            .column_by_name("customer_id")
            .expect("customer_id");
        let customers = arrow::array::AsArray::as_string::<i32>(customers);
        let mut rows: Vec<(i64, String, f64, i64)> = (0..out.batch.num_rows())
            .map(|i| {
                (
                    column_i64(&out.batch, "driver_id")[i].expect("key"),
                    customers.value(i).to_string(),
                    column_f64(&out.batch, "rating")[i].expect("rating"),
                    column_i64(&out.batch, "trips")[i].expect("trips"),
                )
            })
            .collect();
        rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        // (2, "b") has its only row at hour 9, outside the window.
        assert_eq!(
            rows,
            [
                (1, "a".to_string(), 3.0, 30),
                (1, "b".to_string(), 2.0, 20),
                (2, "a".to_string(), 4.0, 40),
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_of_any_unit_and_naive_timestamps_read_as_utc() {
    let defs = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: stats, type: file, path: stats.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}
feature_views:
  - {name: fv, entities: [driver], source: stats, schema: [{name: value, dtype: Float64}]}
";
    let seconds = |h: i64| hours(h) / 1_000_000;
    // Event times naive (UTC) seconds; created times in milliseconds at +02:00, whose
    // instants do not depend on the zone.
    let variants: Vec<(&str, ArrayRef, ArrayRef)> = vec![
        (
            "naive seconds, milliseconds at +02:00",
            Arc::new(TimestampSecondArray::from(vec![
                seconds(2),
                seconds(5),
                seconds(5),
                seconds(6),
            ])),
            Arc::new(
                TimestampMillisecondArray::from(vec![
                    seconds(2) * 1000,
                    seconds(9) * 1000,
                    seconds(7) * 1000,
                    seconds(6) * 1000,
                ])
                .with_timezone("+02:00"),
            ),
        ),
        (
            "naive nanoseconds, naive nanoseconds",
            Arc::new(TimestampNanosecondArray::from(vec![
                hours(2) * 1000,
                hours(5) * 1000,
                hours(5) * 1000,
                hours(6) * 1000,
            ])),
            Arc::new(TimestampNanosecondArray::from(vec![
                hours(2) * 1000,
                hours(9) * 1000,
                hours(7) * 1000,
                hours(6) * 1000,
            ])),
        ),
    ];
    for backend in backends() {
        for (name, events, created) in variants.clone() {
            let data = batch(vec![
                ("driver_id", ints(&[1, 1, 1, 2])),
                ("event_timestamp", events),
                ("created", created),
                (
                    "value",
                    floats(&[Some(1.0), Some(2.0), Some(3.0), Some(4.0)]),
                ),
            ]);
            let fx = fixture_on(&backend, defs, &[("stats.parquet", data.clone())]).await;
            let store = store_for(&fx);
            // The window ends at 05:00Z exactly: the naive 05:00 rows are in, 06:00 is out.
            let out = pull(&fx, store.as_ref(), "fv", window_us((0, 5)), None)
                .await
                .expect(name);
            assert_eq!(
                rows_of(&out.batch),
                [(1, 5, 9, Some(2.0))],
                "{name} ({}): times read as UTC, ties broken by created time",
                backend.name()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_without_entities_gives_its_latest_row() {
    let defs = "
data_sources:
  - {name: stats, type: file, path: stats.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}
feature_views:
  - {name: global, source: stats, schema: [{name: value, dtype: Float64}]}
";
    let data = batch(vec![
        ("event_timestamp", ts_hours(&[1, 4, 4, 2, 8])),
        ("created", ts_hours(&[1, 5, 6, 9, 8])),
        (
            "value",
            floats(&[Some(1.0), Some(2.0), Some(3.0), Some(4.0), Some(5.0)]),
        ),
    ]);
    for (backend, partitions) in backends().into_iter().flat_map(|b| {
        let runs = if matches!(b, Backend::File) {
            vec![1, 2]
        } else {
            vec![1]
        };
        runs.into_iter().map(move |p| (b.clone(), p))
    }) {
        let fx = fixture_on(&backend, defs, &[("stats.parquet", data.clone())]).await;
        let store: Box<dyn larder_offline::OfflineStore> = match backend {
            Backend::File => Box::new(store(&fx, None, partitions)),
            Backend::Postgres(_) => store_for(&fx),
        };
        let out = pull(&fx, store.as_ref(), "global", window_us((0, 6)), None)
            .await
            .expect("read");
        assert_eq!(
            names(&out.batch),
            [LATEST_EVENT_TS, LATEST_CREATED_TS, "value"]
        );
        assert_eq!(column_f64(&out.batch, "value"), [Some(3.0)]);
        assert_eq!(column_us(&out.batch, LATEST_CREATED_TS), [Some(hours(6))]);
        let none = pull(&fx, store.as_ref(), "global", window_us((9, 10)), None)
            .await
            .expect("read");
        assert_eq!(none.batch.num_rows(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_counts_and_csv_sources() {
    let defs = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: pq, type: file, path: stats.parquet, timestamp_field: event_timestamp}
  - {name: text, type: file, path: stats.csv, timestamp_field: event_timestamp}
feature_views:
  - {name: from_parquet, entities: [driver], source: pq, schema: [{name: value, dtype: Float64}]}
  - {name: from_csv, entities: [driver], source: text, schema: [{name: value, dtype: Float64}]}
";
    let n = 5_000i64;
    let data = batch(vec![
        (
            "driver_id",
            ints(&(0..n).map(|i| i % 70).collect::<Vec<_>>()),
        ),
        (
            "event_timestamp",
            ts_hours(&(0..n).map(|i| i % 100).collect::<Vec<_>>()),
        ),
        (
            "value",
            floats(&(0..n).map(|i| Some(i as f64)).collect::<Vec<_>>()),
        ),
    ]);
    let csv = "driver_id,event_timestamp,value\n\
               1,2025-01-01T01:00:00Z,1.5\n\
               1,2025-01-01T03:00:00,2.5\n\
               2,2025-01-01T02:00:00Z,3.5\n\
               1,2025-01-01T09:00:00Z,4.5\n";
    let fx = fixture_unchecked(defs, &[("stats.parquet", data)]);
    std::fs::write(fx.dir.path().join("stats.csv"), csv).expect("write csv");
    let store = store(&fx, None, 2);

    let out = pull(&fx, &store, "from_parquet", window_us((10, 19)), None)
        .await
        .expect("parquet");
    assert_eq!(out.source_rows, Some(n as u64), "rows from the footers");
    assert_eq!(out.rows_read, 500, "rows in the window");
    assert_eq!(out.batch.num_rows(), 70);

    let out = pull(&fx, &store, "from_csv", window_us((0, 3)), None)
        .await
        .expect("csv");
    assert_eq!(out.source_rows, None);
    assert_eq!(out.rows_read, 3);
    assert_eq!(
        rows_of_without_created(&out.batch),
        [(1, hours(3), Some(2.5)), (2, hours(2), Some(3.5))],
        "naive CSV times read as UTC"
    );
}

fn rows_of_without_created(batch: &RecordBatch) -> Vec<(i64, i64, Option<f64>)> {
    let keys = column_i64(batch, "driver_id");
    let events = column_us(batch, LATEST_EVENT_TS);
    let values = column_f64(batch, "value");
    let mut rows: Vec<_> = (0..batch.num_rows())
        .map(|i| (keys[i].expect("key"), events[i].expect("time"), values[i]))
        .collect();
    rows.sort_by_key(|r| r.0);
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_is_wrong() {
    let defs = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: s, type: file, path: s.parquet, timestamp_field: event_timestamp}
  - {name: pg, type: postgres, table: stats, timestamp_field: event_timestamp}
  - {name: gone, type: file, path: gone.parquet, timestamp_field: event_timestamp}
feature_views:
  - {name: fv, entities: [driver], source: s, schema: [{name: value, dtype: Float64}]}
  - {name: wrong, entities: [driver], source: s, schema: [{name: nope, dtype: Float64}]}
  - {name: in_pg, entities: [driver], source: pg, schema: [{name: value, dtype: Float64}]}
  - {name: missing, entities: [driver], source: gone, schema: [{name: value, dtype: Float64}]}
";
    let data = batch(vec![
        ("driver_id", ints(&[1])),
        ("event_timestamp", ts_hours(&[0])),
        ("value", floats(&[Some(1.0)])),
    ]);
    let fx = fixture_unchecked(defs, &[("s.parquet", data)]);
    let store = store(&fx, None, 2);
    let error = |view: &'static str, window: (i64, i64)| {
        let (fx, store) = (&fx, &store);
        async move {
            match pull(fx, store, view, window_us(window), None).await {
                Ok(_) => panic!("reading `{view}` should fail"),
                Err(e) => e,
            }
        }
    };

    let err = error("fv", (5, 1)).await;
    assert!(
        matches!(err, larder_offline::OfflineError::BadRange { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "a time range needs start <= end (got 2025-01-01T05:00:00+00:00 .. 2025-01-01T01:00:00+00:00)"
    );
    assert_eq!(
        error("in_pg", (0, 1)).await.to_string(),
        "data source `pg` of feature view `in_pg` cannot be read by the file offline store (it is a postgres source)"
    );
    assert_eq!(
        error("wrong", (0, 1)).await.to_string(),
        "cannot read data source `s` at `s.parquet`: no column `nope` (needed for `nope`); run `larder plan` to check the definitions against the data"
    );
    let message = error("missing", (0, 1)).await.to_string();
    assert!(
        message.starts_with("cannot read data source `gone` at `gone.parquet`:"),
        "{message}"
    );
}

/// A Parquet source's row count comes from its footers (what materialization sizes its
/// default memory by); a CSV source's is not known without reading it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_rows_come_from_parquet_footers() {
    let data = batch(vec![
        ("driver_id", ints(&(0..2500).collect::<Vec<_>>())),
        ("event_timestamp", ts_hours(&vec![1; 2500])),
    ]);
    let yaml = r#"
data_sources:
  - {name: src, type: file, path: data/src.parquet, timestamp_field: event_timestamp}
  - {name: csv, type: file, path: data/src.csv, file_format: csv, timestamp_field: event_timestamp}
"#;
    let fx = fixture_unchecked(yaml, &[("data/src.parquet", data)]);
    let store = store(&fx, None, 2);
    let source = |name: &str| {
        fx.defs
            .data_sources
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, s)| s)
            .expect("source")
    };
    assert_eq!(store.source_rows(source("src")).await, Some(2500));
    assert_eq!(store.source_rows(source("csv")).await, None);
}
