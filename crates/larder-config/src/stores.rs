//! Typed `online_store`, `offline_store` and `batch_engine` blocks.
//!
//! Each backend's settings are a plain struct with Feast's key names and defaults
//! (`feast-behaviour.md` 1.4-1.6). The block's `type` picks the struct; it is read by the
//! loader, so the structs themselves have no `type` field.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::secret::{ConnectionString, Secret};

/// The `online_store` block. `online_store: null` (or `none`) disables it, see
/// [`crate::RepoConfig::online_store`].
#[derive(Debug, Clone, PartialEq)]
pub enum OnlineStoreConfig {
    /// `type: sqlite`, the embedded default.
    Sqlite(SqliteOnlineStoreConfig),
    /// `type: redis`, Feast's Redis layout.
    Redis(RedisOnlineStoreConfig),
    /// `type: postgres`, Feast's Postgres layout.
    Postgres(PostgresOnlineStoreConfig),
    /// `type: remote`, a client of a feature server over HTTP.
    Remote(RemoteOnlineStoreConfig),
}

impl OnlineStoreConfig {
    /// Type names accepted in `online_store.type`.
    pub const TYPES: &'static [&'static str] = &["sqlite", "redis", "postgres", "remote"];

    /// The `type` as written in `feature_store.yaml`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Redis(_) => "redis",
            Self::Postgres(_) => "postgres",
            Self::Remote(_) => "remote",
        }
    }
}

impl Default for OnlineStoreConfig {
    fn default() -> Self {
        Self::Sqlite(SqliteOnlineStoreConfig::default())
    }
}

/// `online_store: {type: sqlite}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteOnlineStoreConfig {
    /// Database file, as written; resolve with [`crate::RepoConfig::resolve_path`].
    pub path: String,
    /// Bytes per page of a database created from now on (a power of two, 512 to 65536);
    /// the store's default (1024) when absent.
    pub page_size: Option<u32>,
}

impl Default for SqliteOnlineStoreConfig {
    fn default() -> Self {
        Self {
            path: "data/online.db".to_owned(),
            page_size: None,
        }
    }
}

/// `online_store: {type: redis}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisOnlineStoreConfig {
    pub redis_type: RedisType,
    /// `host:port[,host2:port2][,key=value...]`, e.g. `localhost:6379,password=x,ssl=true`.
    /// For a cluster every `host:port` is a startup node; for sentinel, a sentinel.
    pub connection_string: ConnectionString,
    /// `EXPIRE` set on each entity hash at every write; `None` keeps keys forever.
    pub key_ttl_seconds: Option<u64>,
    /// On apply, scan and delete the fields of removed feature views.
    pub full_scan_for_deletion: bool,
    /// Write without the newest-wins check (faster, may overwrite newer values).
    pub skip_dedup: bool,
    /// Master name when `redis_type: redis_sentinel`.
    pub sentinel_master: String,
}

impl Default for RedisOnlineStoreConfig {
    fn default() -> Self {
        Self {
            redis_type: RedisType::Redis,
            connection_string: ConnectionString::new("localhost:6379"),
            key_ttl_seconds: None,
            full_scan_for_deletion: true,
            skip_dedup: false,
            sentinel_master: "mymaster".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisType {
    #[default]
    Redis,
    RedisCluster,
    RedisSentinel,
}

/// Connection settings shared by the Postgres online and offline stores (Feast's
/// `PostgreSQLConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConnectionConfig {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub db_schema: String,
    pub user: String,
    pub password: Option<Secret>,
    /// libpq `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`);
    /// `None` leaves the client default.
    pub sslmode: Option<String>,
    pub sslkey_path: Option<String>,
    pub sslcert_path: Option<String>,
    pub sslrootcert_path: Option<String>,
    pub min_conn: u32,
    pub max_conn: u32,
    pub keepalives_idle: Option<u64>,
}

impl Default for PostgresConnectionConfig {
    fn default() -> Self {
        Self {
            host: "localhost".to_owned(),
            port: 5432,
            database: "postgres".to_owned(),
            db_schema: "public".to_owned(),
            user: "postgres".to_owned(),
            password: None,
            sslmode: None,
            sslkey_path: None,
            sslcert_path: None,
            sslrootcert_path: None,
            min_conn: 1,
            max_conn: 10,
            keepalives_idle: None,
        }
    }
}

/// `online_store: {type: postgres}`: the connection keys plus `conn_type`, all in one
/// flat block as in Feast.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostgresOnlineStoreConfig {
    pub connection: PostgresConnectionConfig,
    pub conn_type: PostgresConnType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostgresConnType {
    Singleton,
    #[default]
    Pool,
}

/// `online_store: {type: remote}`: reads and writes go to a feature server over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteOnlineStoreConfig {
    /// Base URL of the feature server.
    pub path: String,
    /// CA certificate (PEM file) to trust for `https`.
    pub cert: Option<String>,
    pub connection_pool_size: u32,
    pub connection_idle_timeout: u64,
    pub connection_retries: u32,
}

impl Default for RemoteOnlineStoreConfig {
    fn default() -> Self {
        Self {
            path: "http://localhost:6566".to_owned(),
            cert: None,
            connection_pool_size: 50,
            connection_idle_timeout: 300,
            connection_retries: 3,
        }
    }
}

/// The `offline_store` block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
// Built once per process: boxing the big variant would save nothing worth the clumsier
// matching and construction it costs every user.
#[allow(clippy::large_enum_variant)]
pub enum OfflineStoreConfig {
    /// `type: file` (or Feast's `dask`, read as an alias): Parquet/CSV files.
    #[default]
    File,
    /// `type: postgres`.
    Postgres(PostgresOfflineStoreConfig),
}

impl OfflineStoreConfig {
    /// Type names accepted in `offline_store.type` (`dask` is read as `file`).
    pub const TYPES: &'static [&'static str] = &["file", "postgres"];

    pub fn type_name(&self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// `offline_store: {type: postgres}`: the connection keys plus `entity_select_mode`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostgresOfflineStoreConfig {
    pub connection: PostgresConnectionConfig,
    pub entity_select_mode: EntitySelectMode,
}

/// How the entity dataframe reaches Postgres for a point-in-time join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntitySelectMode {
    /// Upload the entity rows into a temporary table.
    #[default]
    TempTable,
    /// Inline the entity rows (or the entity SQL) into the query.
    EmbedQuery,
}

/// The `batch_engine` block (also accepted as `batch_engine_config`).
#[derive(Debug, Clone, PartialEq, Default)]
// Built once per process: boxing the big variant would save nothing worth the clumsier
// matching and construction it costs every user.
#[allow(clippy::large_enum_variant)]
pub enum BatchEngineConfig {
    /// `type: local`: materialize in-process.
    #[default]
    Local,
    /// `type: k8s`: fan out as a Kubernetes Indexed Job.
    K8s(K8sEngineConfig),
}

impl BatchEngineConfig {
    /// Type names accepted in `batch_engine.type`.
    pub const TYPES: &'static [&'static str] = &["local", "k8s"];

    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::K8s(_) => "k8s",
        }
    }
}

/// `batch_engine: {type: k8s}`: Feast's keys, run with Larder's image.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K8sEngineConfig {
    pub namespace: String,
    /// Worker image; `None` means the Larder image matching this build.
    pub image: Option<String>,
    /// Kubernetes `EnvVar` objects, passed through as JSON.
    pub env: Vec<serde_json::Value>,
    pub image_pull_secrets: Vec<String>,
    /// Kubernetes `ResourceRequirements`, passed through as JSON.
    pub resources: Option<serde_json::Value>,
    pub service_account_name: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Pods running at once.
    pub max_parallelism: u32,
    /// Wait for the job to finish.
    pub synchronous: bool,
    /// Pod retries (`backoffLimit`).
    pub retry_limit: u32,
    pub mini_batch_size: u64,
    pub active_deadline_seconds: u64,
    pub job_batch_size: u32,
    pub print_pod_logs_on_failure: bool,
    /// Number of shards (`larder materialize --shard i/N`); `None` lets Larder choose.
    pub shards: Option<u32>,
}

impl Default for K8sEngineConfig {
    fn default() -> Self {
        Self {
            namespace: "default".to_owned(),
            image: None,
            env: Vec::new(),
            image_pull_secrets: Vec::new(),
            resources: None,
            service_account_name: None,
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            max_parallelism: 10,
            synchronous: false,
            retry_limit: 2,
            mini_batch_size: 1000,
            active_deadline_seconds: 86_400,
            job_batch_size: 100,
            print_pod_logs_on_failure: true,
            shards: None,
        }
    }
}
