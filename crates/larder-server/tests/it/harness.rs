//! A materialized repo in a temp folder and a server on `127.0.0.1:0` over it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use larder::online_store::{
    OnlineCapabilities, OnlineError, OnlineStore, ReadRequest, SqliteConfig, SqliteOnlineStore,
    ViewTable,
};
use larder::{ApplyOptions, FeatureStore, MaterializeOptions, OpenOptions, Window};
use larder_server::{Server, ServerOptions};
use tokio_util::sync::CancellationToken;

pub const FEATURE_STORE_YAML: &str = "\
project: demo
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online_store.db
offline_store:
  type: file
entity_key_serialization_version: 3
";

pub const FEATURES_YAML: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - name: driver_stats_source
    type: file
    path: data/driver_stats.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
  - {name: driver_stats_push, type: push, batch_source: driver_stats_source}
feature_views:
  - name: driver_hourly_stats
    entities: [driver]
    source: driver_stats_push
    schema:
      - {name: conv_rate, dtype: Float32}
      - {name: acc_rate, dtype: Float32}
      - {name: avg_daily_trips, dtype: Int64}
feature_services:
  - name: driver_activity
    features:
      - driver_hourly_stats: [conv_rate, avg_daily_trips]
"#;

/// Drivers with data: 1001..=1005.
pub const DRIVERS: std::ops::RangeInclusive<i64> = 1001..=1005;

/// The hour of the latest rows.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
}

/// The latest conv_rate of a driver (written at `t0`); an hour earlier it was half of it.
pub fn conv_rate(driver: i64) -> f32 {
    (driver - 1000) as f32 / 10.0
}

pub fn trips(driver: i64) -> i64 {
    (driver - 1000) * 100
}

/// Two rows per driver: `t0 - 1h` and `t0`.
fn write_source(path: &Path) {
    let mut ids = Vec::new();
    let mut ts = Vec::new();
    let mut conv = Vec::new();
    let mut acc = Vec::new();
    let mut trip = Vec::new();
    for driver in DRIVERS {
        for (hour, factor) in [(-1i64, 0.5f32), (0, 1.0)] {
            ids.push(driver);
            ts.push(t0().timestamp_micros() + hour * 3_600_000_000);
            conv.push(conv_rate(driver) * factor);
            acc.push(0.5f32);
            trip.push(trips(driver) + hour);
        }
    }
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type.clone(), false),
        Field::new("created", ts_type, true),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("acc_rate", DataType::Float32, true),
        Field::new("avg_daily_trips", DataType::Int64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(TimestampMicrosecondArray::from(ts.clone()).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(Float32Array::from(conv)),
        Arc::new(Float32Array::from(acc)),
        Arc::new(Int64Array::from(trip)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// A demo repo, applied and materialized over `[t0 - 1d, t0]`.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub async fn new() -> Self {
        Self::with_registry("registry: data/registry.db\n").await
    }

    /// A repo whose `feature_store.yaml` has `registry` (a whole YAML block, `{repo}`
    /// standing for the repo folder) instead of the file registry.
    pub async fn with_registry(registry: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let registry = registry.replace("{repo}", &dir.path().display().to_string());
        let yaml = FEATURE_STORE_YAML.replace("registry: data/registry.db\n", &registry);
        std::fs::write(dir.path().join("feature_store.yaml"), yaml).unwrap();
        std::fs::write(dir.path().join("features.yaml"), FEATURES_YAML).unwrap();
        write_source(&dir.path().join("data/driver_stats.parquet"));
        let repo = Repo { dir };
        let store = repo.open();
        store.apply(&ApplyOptions::default()).await.unwrap();
        store
            .materialize(
                Window::Range {
                    start: t0() - chrono::Duration::days(1),
                    end: t0(),
                },
                MaterializeOptions::default(),
            )
            .await
            .unwrap();
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn open(&self) -> FeatureStore {
        FeatureStore::open(&OpenOptions::new(self.path())).unwrap()
    }

    pub fn online_db(&self) -> PathBuf {
        self.path().join("data/online_store.db")
    }

    /// The SQLite store of this repo wrapped to be slow or failing on demand.
    pub fn controlled_store(&self) -> Arc<Controlled> {
        let inner = SqliteOnlineStore::open(&SqliteConfig::new(self.online_db())).unwrap();
        Arc::new(Controlled {
            inner: Arc::new(inner),
            read_delay_ms: AtomicU64::new(0),
            write_delay_ms: AtomicU64::new(0),
            fail_reads: Default::default(),
        })
    }
}

/// An online store that can be told to be slow or down.
#[derive(Debug)]
pub struct Controlled {
    inner: Arc<dyn OnlineStore>,
    pub read_delay_ms: AtomicU64,
    pub write_delay_ms: AtomicU64,
    pub fail_reads: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl OnlineStore for Controlled {
    fn capabilities(&self) -> OnlineCapabilities {
        self.inner.capabilities()
    }
    async fn write_batch(&self, table: &ViewTable, rows: RecordBatch) -> Result<u64, OnlineError> {
        let delay = self.write_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        self.inner.write_batch(table, rows).await
    }
    async fn read(
        &self,
        table: &ViewTable,
        keys: &[&[u8]],
        features: &[&str],
    ) -> Result<RecordBatch, OnlineError> {
        self.inner.read(table, keys, features).await
    }
    async fn read_many(
        &self,
        requests: &[ReadRequest<'_>],
    ) -> Result<Vec<RecordBatch>, OnlineError> {
        let delay = self.read_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(OnlineError::Unavailable {
                store: "test".into(),
                retryable: true,
                source: "connection refused".into(),
            });
        }
        self.inner.read_many(requests).await
    }
    async fn update_infra(
        &self,
        keep: &[ViewTable],
        delete: &[ViewTable],
    ) -> Result<(), OnlineError> {
        self.inner.update_infra(keep, delete).await
    }
    async fn teardown(&self, tables: &[ViewTable]) -> Result<(), OnlineError> {
        self.inner.teardown(tables).await
    }
}

/// A running server.
pub struct Running {
    pub url: String,
    pub client: reqwest::Client,
    pub state: Arc<larder_server::AppState>,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub async fn start(store: FeatureStore, options: ServerOptions) -> Self {
        let server = Server::new(store, options).await.unwrap();
        let state = server.state().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let handle =
            tokio::spawn(server.serve(listener, None, async move { signal.cancelled().await }));
        Running {
            url,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            state,
            shutdown,
            handle,
        }
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> (u16, String) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("the server stops within 20 s")
            .unwrap()
            .unwrap();
    }
}

/// Options for tests: fast refresh, short timeouts.
pub fn options() -> ServerOptions {
    ServerOptions {
        registry_ttl: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
        max_body_bytes: 64 << 10,
        shutdown_delay: Duration::ZERO,
        drain_timeout: Duration::from_secs(10),
        // Requests run on worker threads as in production, two of them.
        workers: 2,
    }
}

/// The parsed error body of a non-2xx answer, checking its shape.
pub fn error_body(status: u16, body: &str) -> serde_json::Value {
    let json: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body}"));
    assert_eq!(json["status_code"], status, "{body}");
    assert!(
        json["error"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    assert!(json["class"].as_str().is_some(), "{body}");
    json
}

/// Column `name` of a `/get-online-features` response.
pub fn column<'a>(response: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let names = response["metadata"]["feature_names"].as_array().unwrap();
    let index = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no column `{name}` in {names:?}"));
    &response["results"][index]
}
