//! The point-in-time cases Feast's own tests check, as small data tables.

use larder_offline::EntityInput;
use larder_spec::FeatureSelection;

use crate::backends::{Backend, backends, fixture_on, store_for};
use crate::harness::*;

/// A feature row: (driver_id, event hour, created hour, value).
type Row = (i64, i64, Option<i64>, Option<f64>);

struct Case {
    name: &'static str,
    ttl: &'static str,
    features: &'static [Row],
    /// Entity rows: (driver_id, hour).
    entities: &'static [(i64, i64)],
    expected: &'static [Option<f64>],
}

const CASES: &[Case] = &[
    Case {
        name: "latest row at or before the entity time",
        ttl: "0",
        features: &[
            (1, 0, None, Some(1.0)),
            (1, 5, None, Some(2.0)),
            (1, 10, None, Some(3.0)),
        ],
        entities: &[(1, 4), (1, 5), (1, 9), (1, 100), (1, -1)],
        expected: &[Some(1.0), Some(2.0), Some(2.0), Some(3.0), None],
    },
    Case {
        name: "ttl window is inclusive at both ends",
        ttl: "2h",
        features: &[(1, 10, None, Some(1.0))],
        entities: &[(1, 10), (1, 11), (1, 12), (1, 13), (1, 9)],
        expected: &[Some(1.0), Some(1.0), Some(1.0), None, None],
    },
    Case {
        name: "ttl 0 looks back without bound",
        ttl: "0",
        features: &[(1, -10_000, None, Some(7.0))],
        entities: &[(1, 10_000)],
        expected: &[Some(7.0)],
    },
    Case {
        name: "the newest row past the ttl gives null, not an older row",
        ttl: "3h",
        features: &[(1, 0, None, Some(1.0)), (1, 4, None, Some(2.0))],
        entities: &[(1, 5), (1, 8), (1, 3)],
        expected: &[Some(2.0), None, Some(1.0)],
    },
    Case {
        name: "same event time: the greatest created time wins",
        ttl: "0",
        features: &[
            (1, 5, Some(6), Some(1.0)),
            (1, 5, Some(9), Some(2.0)),
            (1, 5, Some(7), Some(3.0)),
        ],
        entities: &[(1, 5), (1, 6)],
        expected: &[Some(2.0), Some(2.0)],
    },
    Case {
        name: "a later event with an older created time beats an earlier event created later",
        ttl: "0",
        features: &[(1, 4, Some(20), Some(1.0)), (1, 5, Some(6), Some(2.0))],
        entities: &[(1, 5), (1, 4)],
        expected: &[Some(2.0), Some(1.0)],
    },
    Case {
        name: "duplicate entity rows each come out once, in input order",
        ttl: "0",
        features: &[(1, 0, None, Some(1.0)), (2, 0, None, Some(2.0))],
        entities: &[(2, 1), (1, 1), (2, 1), (2, 1), (1, 1)],
        expected: &[Some(2.0), Some(1.0), Some(2.0), Some(2.0), Some(1.0)],
    },
    Case {
        name: "unknown keys get nulls and keep their row",
        ttl: "0",
        features: &[(1, 0, None, Some(1.0))],
        entities: &[(99, 1), (1, 1), (98, 1)],
        expected: &[None, Some(1.0), None],
    },
    Case {
        name: "a null feature value is returned as null (the row still matches)",
        ttl: "0",
        features: &[(1, 0, None, Some(1.0)), (1, 1, None, None)],
        entities: &[(1, 2), (1, 0)],
        expected: &[None, Some(1.0)],
    },
    Case {
        name: "keys do not leak into each other",
        ttl: "0",
        features: &[
            (1, 0, None, Some(1.0)),
            (2, 5, None, Some(2.0)),
            (3, 9, None, Some(3.0)),
        ],
        entities: &[(2, 4), (3, 8), (1, 100), (2, 5)],
        expected: &[None, None, Some(1.0), Some(2.0)],
    },
];

fn definitions(ttl: &str) -> String {
    format!(
        "entities:\n  - {{name: driver, join_keys: [driver_id], value_type: Int64}}\n\
         data_sources:\n  - {{name: stats, type: file, path: stats.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}}\n\
         feature_views:\n  - name: fv\n    entities: [driver]\n    source: stats\n    ttl: {ttl}\n    schema: [{{name: value, dtype: Float64}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feast_point_in_time_cases() {
    let mut failures = Vec::new();
    for backend in backends() {
        feast_cases_on(&backend, &mut failures).await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

async fn feast_cases_on(backend: &Backend, failures: &mut Vec<String>) {
    for case in CASES {
        let created: Vec<Option<i64>> = case
            .features
            .iter()
            .map(|r| Some(hours(r.2.unwrap_or(r.1))))
            .collect();
        let data = batch(vec![
            (
                "driver_id",
                ints(&case.features.iter().map(|r| r.0).collect::<Vec<_>>()),
            ),
            (
                "event_timestamp",
                ts_hours(&case.features.iter().map(|r| r.1).collect::<Vec<_>>()),
            ),
            ("created", ts_array(created)),
            (
                "value",
                floats(&case.features.iter().map(|r| r.3).collect::<Vec<_>>()),
            ),
        ]);
        let fx = fixture_on(backend, &definitions(case.ttl), &[("stats.parquet", data)]).await;
        let entities = batch(vec![
            (
                "driver_id",
                ints(&case.entities.iter().map(|e| e.0).collect::<Vec<_>>()),
            ),
            (
                "event_timestamp",
                ts_hours(&case.entities.iter().map(|e| e.1).collect::<Vec<_>>()),
            ),
        ]);
        let out = match run(&fx, entities, &["fv:value"]).await {
            Ok(out) => out,
            Err(e) => {
                failures.push(format!("{} ({}): {e}", case.name, backend.name()));
                continue;
            }
        };
        let got = column_f64(&out, "value");
        let keys = column_i64(&out, "driver_id");
        let want_keys: Vec<Option<i64>> = case.entities.iter().map(|e| Some(e.0)).collect();
        if got != case.expected || keys != want_keys {
            failures.push(format!(
                "{} ({}): got {got:?} for keys {keys:?}, want {:?}",
                case.name,
                backend.name(),
                case.expected
            ));
        }
    }
}

const TWO_VIEWS: &str = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
  - {name: customer, join_keys: [customer_id], value_type: String}
data_sources:
  - name: driver_src
    type: file
    path: drivers/part-0.parquet
    timestamp_field: ts
    field_mapping: {id: driver_id}
  - {name: customer_src, type: file, path: customers.parquet, timestamp_field: event_timestamp}
feature_views:
  - name: driver_stats
    entities: [driver]
    source: driver_src
    ttl: 1d
    schema: [{name: rating, dtype: Float64}, {name: trips, dtype: Int64}]
  - name: customer_stats
    entities: [customer]
    source: customer_src
    schema: [{name: rating, dtype: Float64}]
feature_services:
  - name: by_alias
    features:
      - {feature_view: driver_stats, alias: origin, features: [rating], join_key_map: {driver_id: origin_id}}
      - {feature_view: driver_stats, alias: destination, features: [rating], join_key_map: {driver_id: destination_id}}
";

async fn two_view_fixture(backend: &Backend) -> Fixture {
    // The join key column is `id` in the file, mapped to `driver_id`.
    let drivers = batch(vec![
        ("id", ints(&[1, 2, 1])),
        ("ts", ts_hours(&[0, 0, 10])),
        ("rating", floats(&[Some(4.0), Some(3.0), Some(4.5)])),
        ("trips", ints(&[10, 20, 11])),
    ]);
    let customers = batch(vec![
        ("customer_id", strings(&["a", "b"])),
        ("event_timestamp", ts_hours(&[1, 1])),
        ("rating", floats(&[Some(1.5), Some(2.5)])),
    ]);
    fixture_on(
        backend,
        TWO_VIEWS,
        &[
            ("drivers/part-0.parquet", drivers),
            ("customers.parquet", customers),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_views_with_different_keys_and_field_mapping() {
    for backend in backends() {
        let fx = two_view_fixture(&backend).await;
        let entities = batch(vec![
            ("driver_id", ints(&[1, 2, 1, 3])),
            ("customer_id", strings(&["b", "a", "zz", "a"])),
            ("event_timestamp", ts_hours(&[5, 30, 12, 2])),
            ("label", ints(&[1, 0, 1, 0])),
        ]);
        let store = store_for(&fx);
        let refs = [
            "driver_stats:rating",
            "driver_stats:trips",
            "customer_stats:rating",
        ];
        let out = run_with(
            &fx,
            store.as_ref(),
            EntityInput::Batches(vec![entities]),
            FeatureSelection::Refs(refs.iter().map(|r| r.parse().unwrap()).collect()),
            true,
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
        assert_eq!(
            names(&out),
            [
                "driver_id",
                "customer_id",
                "event_timestamp",
                "label",
                "driver_stats__rating",
                "driver_stats__trips",
                "customer_stats__rating"
            ]
        );
        // Driver 2 at hour 30 is past the 1d ttl of its hour-0 row.
        assert_eq!(
            column_f64(&out, "driver_stats__rating"),
            [Some(4.0), None, Some(4.5), None]
        );
        assert_eq!(
            column_i64(&out, "driver_stats__trips"),
            [Some(10), None, Some(11), None]
        );
        assert_eq!(
            column_f64(&out, "customer_stats__rating"),
            [Some(2.5), Some(1.5), None, Some(1.5)]
        );
        assert_eq!(
            column_i64(&out, "label"),
            [Some(1), Some(0), Some(1), Some(0)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_feature_names_need_full_names() {
    let fx = two_view_fixture(&Backend::File).await;
    let refs: Vec<_> = ["driver_stats:rating", "customer_stats:rating"]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
    let err =
        larder_spec::resolve_features(&fx.defs, &FeatureSelection::Refs(refs), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "feature names collide: `rating` (set full_feature_names to get `view__feature` names)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_service_with_aliases_and_join_key_maps() {
    for backend in backends() {
        let fx = two_view_fixture(&backend).await;
        let entities = batch(vec![
            ("origin_id", ints(&[1, 2])),
            ("destination_id", ints(&[2, 1])),
            ("event_timestamp", ts_hours(&[11, 11])),
        ]);
        let store = store_for(&fx);
        let out = run_with(
            &fx,
            store.as_ref(),
            EntityInput::Batches(vec![entities]),
            FeatureSelection::Service("by_alias".into()),
            true,
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
        assert_eq!(
            names(&out),
            [
                "origin_id",
                "destination_id",
                "event_timestamp",
                "origin__rating",
                "destination__rating"
            ]
        );
        assert_eq!(column_f64(&out, "origin__rating"), [Some(4.5), Some(3.0)]);
        assert_eq!(
            column_f64(&out, "destination__rating"),
            [Some(3.0), Some(4.5)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_rows_from_parquet_csv_and_sql() {
    for backend in backends() {
        let fx = two_view_fixture(&backend).await;
        let spine = batch(vec![
            ("driver_id", ints(&[2, 1, 1])),
            ("event_timestamp", ts_hours(&[1, 1, 11])),
        ]);
        write_parquet(&fx.dir.path().join("spine.parquet"), &spine);
        std::fs::write(
        fx.dir.path().join("spine.csv"),
        "driver_id,event_timestamp\n2,2025-01-01T01:00:00Z\n1,2025-01-01T01:00:00\n1,2025-01-01T11:00:00Z\n",
    )
    .unwrap();
        let store = store_for(&fx);
        let refs = || FeatureSelection::Refs(vec!["driver_stats:rating".parse().unwrap()]);
        let expected = [Some(3.0), Some(4.0), Some(4.5)];
        for (path, format) in [
            ("spine.parquet", larder_spec::FileFormat::Parquet),
            ("spine.csv", larder_spec::FileFormat::Csv),
        ] {
            let out = run_with(
                &fx,
                store.as_ref(),
                EntityInput::File {
                    path: path.into(),
                    format,
                },
                refs(),
                false,
            )
            .await
            .unwrap_or_else(|e| panic!("{} {path}: {e}", backend.name()));
            assert_eq!(column_f64(&out, "rating"), expected, "{path}");
        }
        // SQL over the registered sources: every driver row as an entity row.
        let out = run_with(
            &fx,
            store.as_ref(),
            EntityInput::Sql(
                "SELECT id AS driver_id, ts AS event_timestamp FROM driver_src ORDER BY ts, id"
                    .into(),
            ),
            refs(),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
        assert_eq!(column_i64(&out, "driver_id"), [Some(1), Some(2), Some(1)]);
        assert_eq!(
            column_f64(&out, "rating"),
            [Some(4.0), Some(3.0), Some(4.5)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_range_without_entity_rows() {
    for backend in backends() {
        let fx = two_view_fixture(&backend).await;
        let store = store_for(&fx);
        let start = chrono::DateTime::from_timestamp_micros(hours(0)).unwrap();
        let end = chrono::DateTime::from_timestamp_micros(hours(10)).unwrap();
        let out = run_with(
            &fx,
            store.as_ref(),
            EntityInput::Range { start, end },
            FeatureSelection::Refs(vec!["driver_stats:rating".parse().unwrap()]),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
        // Every driver row in [0h, 10h] inclusive, newest included, ordered by time then key.
        assert_eq!(column_i64(&out, "driver_id"), [Some(1), Some(2), Some(1)]);
        assert_eq!(
            column_f64(&out, "rating"),
            [Some(4.0), Some(3.0), Some(4.5)]
        );
        // Views keyed differently have no common rows to range over.
        let err = run_with(
            &fx,
            store.as_ref(),
            EntityInput::Range { start, end },
            FeatureSelection::Refs(vec![
                "driver_stats:rating".parse().unwrap(),
                "customer_stats:rating".parse().unwrap(),
            ]),
            true,
        )
        .await
        .expect_err("different join keys");
        assert_eq!(
            err.to_string(),
            "retrieval without entity rows needs views with the same join keys; `driver_stats` has [driver_id] but `customer_stats` has [customer_id]",
            "{}",
            backend.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_key_matches_nothing() {
    let nullable = |v: &[Option<i64>]| -> arrow::array::ArrayRef {
        std::sync::Arc::new(arrow::array::Int64Array::from(v.to_vec()))
    };
    for backend in backends() {
        let data = batch(vec![
            ("driver_id", nullable(&[None, Some(1)])),
            ("event_timestamp", ts_hours(&[0, 0])),
            ("created", ts_hours(&[0, 0])),
            ("value", floats(&[Some(1.0), Some(2.0)])),
        ]);
        let fx = fixture_on(&backend, &definitions("0"), &[("stats.parquet", data)]).await;
        let entities = batch(vec![
            ("driver_id", nullable(&[None, Some(1), None])),
            ("event_timestamp", ts_hours(&[1, 1, 2])),
        ]);
        let out = run(&fx, entities, &["fv:value"])
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
        assert_eq!(
            column_f64(&out, "value"),
            [None, Some(2.0), None],
            "{}",
            backend.name()
        );
        assert_eq!(
            column_i64(&out, "driver_id"),
            [None, Some(1), None],
            "{}",
            backend.name()
        );
    }
}
