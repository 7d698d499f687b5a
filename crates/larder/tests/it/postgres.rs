//! A repo whose `online_store` is Postgres, end to end through `FeatureStore`: apply creates
//! Feast's tables, materialize writes them, `get_online_features` reads them, teardown
//! drops them. Runs when `LARDER_TEST_POSTGRES_URL` is set.

use std::path::Path;
use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Duration, TimeZone, Utc};
use larder::types::feast::value_to_json;
use larder::{
    ApplyOptions, EntityColumns, FeatureSelection, FeatureStore, FieldStatus, MaterializeOptions,
    OnlineFeaturesRequest, OpenOptions, Window,
};
use larder_online::PostgresConfig;
use larder_types::FeatureRef;
use serde_json::{Value as Json, json};

const URL_VAR: &str = "LARDER_TEST_POSTGRES_URL";

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap()
}

/// Three drivers; driver 2 has an older and a newer row, driver 3 a null rate.
fn write_source(path: &Path) {
    let hour = 3_600_000_000i64;
    let at = |h: i64| base().timestamp_micros() + h * hour;
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("city", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2, 2, 3])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![at(1), at(1), at(5), at(2)]).with_timezone("UTC"),
        ),
        Arc::new(Float32Array::from(vec![
            Some(0.5),
            Some(0.1),
            Some(0.25),
            None,
        ])),
        Arc::new(StringArray::from(vec!["Oslo", "Rome", "Lima", "Kyiv"])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn write_repo(dir: &Path, pg: &PostgresConfig, project: &str) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("feature_store.yaml"),
        format!(
            "project: {project}\nregistry: data/registry.db\nprovider: local\n\
             online_store:\n  type: postgres\n  host: {host}\n  port: {port}\n  \
             database: {database}\n  user: {user}\n  db_schema: {schema}\n  \
             conn_type: pool\n  min_conn: 1\n  max_conn: 4\n  sslmode: prefer\n",
            host = pg.host,
            port = pg.port,
            database = pg.database,
            user = pg.user,
            schema = pg.db_schema,
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("features.yaml"),
        "entities:\n  - {name: driver, join_keys: [driver_id], value_type: Int64}\n\
         data_sources:\n  - {name: stats, type: file, path: data/stats.parquet, \
         timestamp_field: event_timestamp}\n\
         feature_views:\n  - name: driver_stats\n    entities: [driver]\n    ttl: 30d\n\
         \x20   source: stats\n    schema:\n      - {name: conv_rate, dtype: Float32}\n\
         \x20     - {name: city, dtype: String}\n",
    )
    .unwrap();
    write_source(&dir.join("data/stats.parquet"));
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{URL_VAR} is set but Postgres does not answer: {e:?}"));
    tokio::spawn(connection);
    client
}

async fn table_rows(client: &tokio_postgres::Client, schema: &str, table: &str) -> Option<i64> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("\"{schema}\".\"{table}\"")],
        )
        .await
        .unwrap()
        .get(0);
    if !exists {
        return None;
    }
    let sql = format!("SELECT count(*) FROM \"{schema}\".\"{table}\"");
    Some(client.query_one(&sql, &[]).await.unwrap().get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_materialize_and_read_through_postgres() {
    let Ok(url) = std::env::var(URL_VAR) else {
        eprintln!("postgres facade test not run: {URL_VAR} is not set");
        return;
    };
    let client = raw(&url).await;
    let nanos = Utc::now().timestamp_subsec_nanos();
    let project = format!("e2e_{}_{nanos}", std::process::id());
    let mut pg = PostgresConfig::from_url(&url).unwrap();
    pg.db_schema = format!("larder_{project}");
    let dir = tempfile::tempdir().unwrap();
    write_repo(dir.path(), &pg, &project);
    let now = base() + Duration::days(2);
    let store = FeatureStore::open(&OpenOptions::new(dir.path()))
        .unwrap()
        .with_clock(Arc::new(move || now));

    let outcome = async {
        store.apply(&ApplyOptions::default()).await.unwrap();
        let table = format!("{project}_driver_stats");
        assert_eq!(
            table_rows(&client, &pg.db_schema, &table).await,
            Some(0),
            "apply creates the view's table"
        );

        let reports = store
            .materialize(
                Window::Range {
                    start: base(),
                    end: now,
                },
                MaterializeOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(reports[0].rows_written, 3);
        assert_eq!(
            table_rows(&client, &pg.db_schema, &table).await,
            Some(6),
            "one row per (driver, feature)"
        );

        let request = OnlineFeaturesRequest {
            features: FeatureSelection::Refs(
                ["driver_stats:conv_rate", "driver_stats:city"]
                    .iter()
                    .map(|r| r.parse::<FeatureRef>().unwrap())
                    .collect(),
            ),
            entities: EntityColumns::new(vec![(
                "driver_id".into(),
                vec![json!(2), json!(1), json!(3), json!(4)],
            )])
            .unwrap(),
            full_feature_names: false,
        };
        let response = store.get_online_features(request).await.unwrap();
        assert_eq!(
            response.feature_names().collect::<Vec<_>>(),
            ["driver_id", "conv_rate", "city"]
        );
        let values = |i: usize| -> Vec<Json> {
            response
                .column_at(i)
                .expect("column")
                .values
                .iter()
                .map(value_to_json)
                .collect()
        };
        assert_eq!(values(1), [json!(0.25), json!(0.5), Json::Null, Json::Null]);
        assert_eq!(
            values(2),
            [json!("Lima"), json!("Oslo"), json!("Kyiv"), Json::Null]
        );
        use FieldStatus::{NotFound, NullValue, Present};
        assert_eq!(
            response.column_at(1).expect("column").statuses,
            [Present, Present, NullValue, NotFound]
        );

        store.teardown().await.unwrap();
        assert_eq!(
            table_rows(&client, &pg.db_schema, &table).await,
            None,
            "teardown drops the table"
        );
    };
    // Drop the schema whether or not the checks passed.
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            pg.db_schema
        ))
        .await
        .unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
