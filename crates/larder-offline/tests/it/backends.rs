//! The backends the shared offline cases run against: the file store always, Postgres when
//! `LARDER_TEST_POSTGRES_URL` is set. A Postgres fixture loads the same tables as the file
//! fixture (one table per file source, named after the source) into a schema of its own,
//! and reads its definitions with those sources turned into `postgres` table sources.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use larder_offline::{OfflineStore, PostgresOfflineConfig, PostgresOfflineStore};
use larder_spec::{DataSource, PostgresSource, SourceKind};

use crate::harness::{Fixture, fixture};

/// Where a shared case runs.
#[derive(Clone, Debug)]
pub enum Backend {
    File,
    Postgres(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::Postgres(_) => "postgres",
        }
    }
}

/// `LARDER_TEST_POSTGRES_URL`, or `None` after saying that the Postgres cases do not run.
pub fn postgres_url() -> Option<String> {
    match std::env::var("LARDER_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "LARDER_TEST_POSTGRES_URL is not set: the Postgres offline store cases did not run"
                );
            });
            None
        }
    }
}

/// The file store, plus Postgres when configured.
pub fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::File];
    if let Some(url) = postgres_url() {
        all.push(Backend::Postgres(url));
    }
    all
}

/// A schema of one test in the Postgres database, dropped with the fixture.
#[derive(Debug)]
pub struct PgSchema {
    pub url: String,
    pub name: String,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop may run inside a runtime: clean up from a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(client) = connect(&url).await {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A plain connection to the test database (fails loudly: the URL was given).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The store's settings for the database at `url`, reading tables in `schema`.
pub fn pg_config(url: &str, schema: &str, repo_dir: &std::path::Path) -> PostgresOfflineConfig {
    let parsed = tokio_postgres::Config::from_str(url).expect("a valid LARDER_TEST_POSTGRES_URL");
    let host = match parsed.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".into(),
    };
    PostgresOfflineConfig {
        host,
        port: parsed.get_ports().first().copied().unwrap_or(5432),
        database: parsed.get_dbname().unwrap_or("postgres").to_string(),
        db_schema: schema.to_string(),
        user: parsed.get_user().unwrap_or("postgres").to_string(),
        password: parsed
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        sslmode: Some("disable".into()),
        repo_dir: repo_dir.to_path_buf(),
        // Small batches: every result crosses batch boundaries.
        batch_size: 5,
        ..PostgresOfflineConfig::default()
    }
}

/// The SQL type a test column of Arrow type `dt` is stored as (naive timestamps as
/// `timestamp`, the rest as the store reads them back).
fn sql_type(dt: &DataType) -> String {
    match dt {
        DataType::Int16 => "int2".into(),
        DataType::Int32 => "int4".into(),
        DataType::Int64 => "int8".into(),
        DataType::Float32 => "float4".into(),
        DataType::Float64 => "float8".into(),
        DataType::Boolean => "bool".into(),
        DataType::Utf8 => "text".into(),
        DataType::Binary => "bytea".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Date32 => "date".into(),
        DataType::List(item) => format!("{}[]", sql_type(item.data_type())),
        other => panic!("no test table type for {other}"),
    }
}

/// The fixture of [`fixture`] on `backend`.
pub async fn fixture_on(backend: &Backend, yaml: &str, files: &[(&str, RecordBatch)]) -> Fixture {
    let mut fx = fixture(yaml, files);
    if let Backend::Postgres(url) = backend {
        to_postgres(&mut fx, url, files).await;
    }
    fx
}

/// Loads the file sources of `fx` into a new schema and points the definitions at it.
pub async fn to_postgres(fx: &mut Fixture, url: &str, files: &[(&str, RecordBatch)]) {
    let name = format!("larder_offline_{}", uuid::Uuid::new_v4().simple());
    let client = connect(url).await.unwrap_or_else(|e| {
        panic!("LARDER_TEST_POSTGRES_URL is set but {url} does not answer: {e}")
    });
    client
        .batch_execute(&format!("CREATE SCHEMA \"{name}\""))
        .await
        .expect("create schema");
    fx.pg = Some(PgSchema {
        url: url.to_string(),
        name: name.clone(),
    });
    let store = PostgresOfflineStore::new(pg_config(url, &name, fx.dir.path())).expect("store");
    let mut defs = (*fx.defs).clone();
    for source in defs.data_sources.values_mut() {
        let SourceKind::File(file) = &source.kind else {
            continue;
        };
        let table = source.name.to_string();
        let pg = PostgresSource {
            table: Some(table.clone()),
            query: None,
            timestamp_field: file.timestamp_field.clone(),
            created_timestamp_column: file.created_timestamp_column.clone(),
            field_mapping: file.field_mapping.clone(),
        };
        if let Some((_, data)) = files.iter().find(|(path, _)| *path == file.path) {
            let columns: Vec<String> = data
                .schema()
                .fields()
                .iter()
                .map(|f| format!("\"{}\" {}", f.name(), sql_type(f.data_type())))
                .collect();
            client
                .batch_execute(&format!(
                    "CREATE TABLE \"{name}\".\"{table}\" ({})",
                    columns.join(", ")
                ))
                .await
                .expect("create table");
            let target = DataSource {
                name: source.name.clone(),
                kind: SourceKind::Postgres(pg.clone()),
                description: String::new(),
                tags: Default::default(),
                owner: String::new(),
            };
            load(&store, &target, data).await;
        }
        source.kind = SourceKind::Postgres(pg);
    }
    fx.defs = Arc::new(defs);
}

/// Appends `data` to `source` through the store, cast to the table's types.
pub async fn load(store: &PostgresOfflineStore, source: &DataSource, data: &RecordBatch) {
    let schema = store.source_schema(source).await.expect("table schema");
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let column = data.column_by_name(f.name()).expect("column");
            arrow::compute::cast(column, f.data_type()).expect("cast to the table type")
        })
        .collect();
    let batch = RecordBatch::try_new(schema, columns).expect("batch");
    store.append(source, batch).await.expect("append");
}

/// The store of `fx`: the file store, or Postgres over the fixture's schema.
pub fn store_for(fx: &Fixture) -> Box<dyn OfflineStore> {
    match &fx.pg {
        None => Box::new(crate::harness::store(fx, None, 2)),
        Some(pg) => Box::new(
            PostgresOfflineStore::new(pg_config(&pg.url, &pg.name, fx.dir.path())).expect("store"),
        ),
    }
}
