//! A repo whose offline store is Postgres, end to end through `FeatureStore`: training data
//! from entity SQL and from uploaded rows, materialization into the SQLite online store,
//! and an offline push into the source table. Runs when `LARDER_TEST_POSTGRES_URL` is set.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Float32Type, Int64Type};
use chrono::{DateTime, TimeZone, Utc};
use futures::TryStreamExt;
use larder::{
    ApplyOptions, EntityColumns, EntityInput, FeatureSelection, FeatureStore,
    HistoricalFeaturesRequest, MaterializeOptions, OnlineFeaturesRequest, OpenOptions, PushMode,
    Window,
};
use larder_types::feast::value_to_json;
use serde_json::json;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, hour, 0, 0).unwrap()
}

/// Drops the test's schema, also when an assertion failed.
struct Schema {
    url: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

async fn historical(store: &FeatureStore, entities: EntityInput) -> RecordBatch {
    let stream = store
        .get_historical_features(HistoricalFeaturesRequest {
            entities,
            features: FeatureSelection::Refs(vec![
                "driver_hourly:conv_rate".parse().unwrap(),
                "driver_hourly:trips".parse().unwrap(),
            ]),
            full_feature_names: false,
        })
        .await
        .expect("historical retrieval");
    let schema = stream.schema();
    let batches: Vec<RecordBatch> = stream.try_collect().await.expect("rows");
    concat_batches(&schema, &batches).expect("concat")
}

fn f32s(batch: &RecordBatch, name: &str) -> Vec<Option<f32>> {
    batch
        .column_by_name(name)
        .expect("column")
        .as_primitive::<Float32Type>()
        .iter()
        .collect()
}

fn i64s(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    batch
        .column_by_name(name)
        .expect("column")
        .as_primitive::<Int64Type>()
        .iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_offline_store_serves_training_data_materialization_and_pushes() {
    let Ok(url) = std::env::var("LARDER_TEST_POSTGRES_URL") else {
        eprintln!(
            "LARDER_TEST_POSTGRES_URL is not set: the Postgres offline store test did not run"
        );
        return;
    };
    let schema = Schema {
        url: url.clone(),
        name: format!("larder_e2e_{}", uuid::Uuid::new_v4().simple()),
    };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("LARDER_TEST_POSTGRES_URL is set but {url} does not answer: {e}")
        });
    tokio::spawn(connection);
    // `trips` is int4 in the table and Int64 in the view; `created` is naive (UTC).
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{s}\";
             CREATE TABLE \"{s}\".driver_stats (driver_id int8, event_timestamp timestamptz,
               created timestamp, conv_rate float4, trips int4);
             INSERT INTO \"{s}\".driver_stats VALUES
               (1, '2025-03-01T01:00:00Z', '2025-03-01 01:00:00', 0.1, 10),
               (1, '2025-03-01T05:00:00Z', '2025-03-01 05:00:00', 0.5, 50),
               (1, '2025-03-01T05:00:00Z', '2025-03-01 06:00:00', 0.6, 60),
               (2, '2025-03-01T02:00:00Z', '2025-03-01 02:00:00', 0.2, 20);",
            s = schema.name
        ))
        .await
        .expect("source table");

    let parsed = tokio_postgres::Config::from_str(&url).expect("URL");
    let host = match parsed.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".into(),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        format!(
            "project: pg\nregistry: data/registry.db\nprovider: local\n\
             online_store: {{type: sqlite, path: data/online.db}}\n\
             offline_store:\n  type: postgres\n  host: {host}\n  port: {port}\n  database: {db}\n  \
             db_schema: {schema}\n  user: {user}\n  sslmode: disable\n  entity_select_mode: embed_query\n",
            port = parsed.get_ports().first().copied().unwrap_or(5432),
            db = parsed.get_dbname().unwrap_or("postgres"),
            schema = schema.name,
            user = parsed.get_user().unwrap_or("postgres"),
        ),
    )
    .expect("config");
    std::fs::write(
        dir.path().join("features.yaml"),
        "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: stats, type: postgres, table: driver_stats, timestamp_field: event_timestamp, created_timestamp_column: created}
  - {name: stats_push, type: push, batch_source: stats}
feature_views:
  - name: driver_hourly
    entities: [driver]
    ttl: 1d
    source: stats_push
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: trips, dtype: Int64}
",
    )
    .expect("definitions");
    let now = at(12);
    let store = FeatureStore::open(&OpenOptions::new(dir.path()))
        .expect("open")
        .with_clock(Arc::new(move || now));
    store.apply(&ApplyOptions::default()).await.expect("apply");

    // Entity rows as SQL (embedded), in their own order, one before any row.
    let out = historical(
        &store,
        EntityInput::Sql(
            "SELECT * FROM (VALUES (2, '2025-03-01T03:00:00Z'::timestamptz), \
             (1, '2025-03-01T05:00:00Z'), (1, '2025-03-01T00:30:00Z')) AS t(driver_id, event_timestamp)"
                .into(),
        ),
    )
    .await;
    assert_eq!(i64s(&out, "driver_id"), [Some(2), Some(1), Some(1)]);
    assert_eq!(f32s(&out, "conv_rate"), [Some(0.2), Some(0.6), None]);
    assert_eq!(i64s(&out, "trips"), [Some(20), Some(60), None]);

    // Materialization: the latest row per driver in the window into the online store.
    let reports = store
        .materialize(
            Window::Range {
                start: at(0),
                end: at(10),
            },
            MaterializeOptions::default(),
        )
        .await
        .expect("materialize");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].rows_written, 2);
    let online = |ids: Vec<serde_json::Value>| OnlineFeaturesRequest {
        features: FeatureSelection::Refs(vec!["driver_hourly:trips".parse().unwrap()]),
        entities: EntityColumns::new(vec![("driver_id".into(), ids)]).expect("entities"),
        full_feature_names: false,
    };
    let response = store
        .get_online_features(online(vec![json!(1), json!(2)]))
        .await
        .expect("online read");
    let trips: Vec<_> = response
        .column_at(1)
        .expect("column")
        .values
        .iter()
        .map(value_to_json)
        .collect();
    assert_eq!(trips, [json!(60), json!(20)]);

    // An offline push lands in the table and is seen by the next retrieval.
    let (snapshot, project) = store.project_state().await.expect("registry");
    let defs = snapshot.project(&project).expect("project").definitions();
    let rows = EntityColumns::new(vec![
        ("driver_id".into(), vec![json!(2)]),
        (
            "event_timestamp".into(),
            vec![json!("2025-03-01T08:00:00Z")],
        ),
        ("created".into(), vec![json!("2025-03-01 08:00:00")]),
        ("conv_rate".into(), vec![json!(0.8)]),
        ("trips".into(), vec![json!(80)]),
    ])
    .expect("rows");
    let report = store
        .push(&defs, "stats_push", &rows, PushMode::Offline)
        .await
        .expect("offline push");
    assert_eq!(
        report.offline,
        Some((1, "postgres table `driver_stats`".into()))
    );
    let spine = arrow::array::RecordBatch::try_from_iter([
        (
            "driver_id",
            Arc::new(arrow::array::Int64Array::from(vec![2, 2])) as arrow::array::ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(
                arrow::array::TimestampMicrosecondArray::from(vec![
                    at(7).timestamp_micros(),
                    at(9).timestamp_micros(),
                ])
                .with_timezone("UTC"),
            ),
        ),
    ])
    .expect("spine");
    let out = historical(&store, EntityInput::Batches(vec![spine])).await;
    assert_eq!(i64s(&out, "trips"), [Some(20), Some(80)]);
    drop(schema);
}
