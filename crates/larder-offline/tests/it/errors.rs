//! A data scientist's usual mistakes get errors that say what is wrong.

use larder_offline::EntityInput;
use larder_spec::FeatureSelection;

use crate::backends::{backends, fixture_on, store_for};
use crate::harness::*;

const DEFS: &str = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: s, type: file, path: s.parquet, timestamp_field: event_timestamp}
feature_views:
  - {name: fv, entities: [driver], source: s, schema: [{name: value, dtype: Float64}]}
";

fn fx() -> Fixture {
    let data = batch(vec![
        ("driver_id", ints(&[1])),
        ("event_timestamp", ts_hours(&[0])),
        ("value", floats(&[Some(1.0)])),
    ]);
    fixture(DEFS, &[("s.parquet", data)])
}

/// The error of a retrieval of `fv:value` for `entities`, on every backend (the same
/// message is expected from each).
async fn errors_of(entities: EntityInput) -> Vec<String> {
    let data = batch(vec![
        ("driver_id", ints(&[1])),
        ("event_timestamp", ts_hours(&[0])),
        ("value", floats(&[Some(1.0)])),
    ]);
    let mut messages = Vec::new();
    for backend in backends() {
        let fx = fixture_on(&backend, DEFS, &[("s.parquet", data.clone())]).await;
        let store = store_for(&fx);
        let message = run_with(
            &fx,
            store.as_ref(),
            entities.clone(),
            FeatureSelection::Refs(vec!["fv:value".parse().unwrap()]),
            false,
        )
        .await
        .map(|_| format!("{}: no error", backend.name()))
        .unwrap_or_else(|e| e.to_string());
        messages.push(message);
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_row_mistakes() {
    let cases: Vec<(RecordBatch, &str)> = vec![
        (
            batch(vec![
                ("driver", ints(&[1])),
                ("event_timestamp", ts_hours(&[0])),
            ]),
            "the entity rows have no column `driver_id` (join key of feature view `fv`); their columns: driver, event_timestamp",
        ),
        (
            batch(vec![("driver_id", ints(&[1])), ("when", ints(&[0]))]),
            "the entity rows have no timestamp column: name one `event_timestamp` or give exactly one timestamp column (their columns: driver_id, when)",
        ),
        (
            batch(vec![
                ("driver_id", ints(&[1])),
                ("event_timestamp", strings(&["2025-01-01"])),
            ]),
            "entity column `event_timestamp` is Utf8, not a timestamp; give timestamps (or RFC 3339 text in CSV)",
        ),
        (
            batch(vec![
                ("driver_id", ints(&[1])),
                ("a", ts_hours(&[0])),
                ("b", ts_hours(&[0])),
            ]),
            "the entity rows have several timestamp columns (`a`, `b`) and none is named `event_timestamp`; rename the one to join on",
        ),
        (
            batch(vec![
                ("driver_id", floats(&[Some(1.0)])),
                ("event_timestamp", ts_hours(&[0])),
            ]),
            "entity column `driver_id` is Float64 and cannot be read as Int64 (the type of entity key `driver_id`)",
        ),
    ];
    for (entities, message) in cases {
        for got in errors_of(EntityInput::Batches(vec![entities])).await {
            assert_eq!(got, message);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_inputs() {
    for message in errors_of(EntityInput::File {
        path: "missing.parquet".into(),
        format: larder_spec::FileFormat::Parquet,
    })
    .await
    {
        assert!(
            message.starts_with("cannot read the entity rows from `missing.parquet`"),
            "{message}"
        );
    }
    // An unreadable source does not break queries that do not use it, and names itself
    // in those that do.
    let broken = DEFS.replace(
        "data_sources:\n",
        "data_sources:\n  - {name: gone, type: file, path: gone.parquet, timestamp_field: ts}\n",
    );
    let data = batch(vec![
        ("driver_id", ints(&[1])),
        ("event_timestamp", ts_hours(&[0])),
        ("value", floats(&[Some(1.0)])),
    ]);
    let fx2 = fixture_unchecked(&broken, &[("s.parquet", data)]);
    let store2 = store(&fx2, None, 2);
    let refs = || FeatureSelection::Refs(vec!["fv:value".parse().unwrap()]);
    let ok = run_with(
        &fx2,
        &store2,
        EntityInput::Sql("SELECT driver_id, event_timestamp FROM s".into()),
        refs(),
        false,
    )
    .await
    .expect("a query not using the broken source works");
    assert_eq!(ok.num_rows(), 1);
    let err = run_with(
        &fx2,
        &store2,
        EntityInput::Sql("SELECT * FROM gone".into()),
        refs(),
        false,
    )
    .await
    .expect_err("the broken source is not a table")
    .to_string();
    assert!(err.contains("gone"), "{err}");
    for message in errors_of(EntityInput::Sql("SELECT nope FROM s".into())).await {
        assert!(
            message.starts_with("the entity SQL query failed:"),
            "{message}"
        );
        assert!(message.contains("nope"), "{message}");
    }
    let start = chrono::DateTime::from_timestamp_micros(hours(5)).unwrap();
    let end = chrono::DateTime::from_timestamp_micros(hours(1)).unwrap();
    for message in errors_of(EntityInput::Range { start, end }).await {
        assert!(
            message.starts_with("a time range needs start <= end"),
            "{message}"
        );
    }
}

#[test]
fn unknown_features_and_views() {
    let fx = fx();
    let resolve = |r: &str| {
        larder_spec::resolve_features(
            &fx.defs,
            &FeatureSelection::Refs(vec![r.parse().unwrap()]),
            false,
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        resolve("fv:nope"),
        "feature view `fv` has no feature `nope` (its features: `value`)"
    );
    assert_eq!(
        resolve("other:value"),
        "feature view `other` not found in project `test` (requested as `other:value`)"
    );
}

use arrow::array::RecordBatch;
