//! The typed repo configuration and its top-level settings.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::ConnectionString;
use crate::stores::{BatchEngineConfig, OfflineStoreConfig, OnlineStoreConfig};

/// A validated `feature_store.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoConfig {
    pub project: ProjectName,
    pub project_description: Option<String>,
    pub provider: Provider,
    pub registry: RegistryConfig,
    /// `None` when disabled with `online_store: null` (or `none`).
    pub online_store: Option<OnlineStoreConfig>,
    pub offline_store: OfflineStoreConfig,
    pub batch_engine: BatchEngineConfig,
    pub entity_key_serialization_version: EntityKeySerializationVersion,
    /// Defaults when the key is absent.
    pub feature_server: FeatureServerConfig,
    pub materialization: MaterializationConfig,
    /// Make entity dataframe timestamps timezone-aware (UTC).
    pub coerce_tz_aware: bool,
    pub auth: AuthConfig,
    /// Non-fatal findings (unknown top-level keys, deprecated values), each
    /// `<source>:<line>: <message>`, for the caller to log.
    pub warnings: Vec<String>,
    /// Directory relative paths in the config resolve against.
    pub repo_dir: PathBuf,
    /// Where the config came from: the file path as given, or `FEATURE_STORE_YAML_BASE64`.
    pub config_source: String,
}

impl RepoConfig {
    /// Resolves a path from the config against [`RepoConfig::repo_dir`].
    ///
    /// URLs (`s3://`, `gs://`, `memory://`, `postgresql://`, `sqlite:`, anything starting
    /// with `scheme:` where the scheme is at least two characters, so `C:\` stays a path)
    /// and absolute paths are returned unchanged.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        resolve_against(&self.repo_dir, path)
    }
}

pub(crate) fn resolve_against(repo_dir: &Path, path: &str) -> PathBuf {
    if has_url_scheme(path) || Path::new(path).is_absolute() {
        PathBuf::from(path)
    } else {
        repo_dir.join(path)
    }
}

/// `scheme:` per RFC 3986, two characters or more.
pub(crate) fn has_url_scheme(text: &str) -> bool {
    let Some(colon) = text.find(':') else {
        return false;
    };
    let scheme = &text[..colon];
    scheme.len() >= 2
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// A project name: `[A-Za-z0-9_-]+`, not starting with `_` or `-`.
///
/// Hyphens are further refused when the online store is sqlite (they end up in table
/// names); the loader checks that, since it depends on the rest of the config.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProjectName(String);

impl ProjectName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ProjectName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a [`ProjectName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectNameError {
    #[error("project name must not be empty")]
    Empty,
    #[error("project name `{name}` contains `{found}`; use only letters, digits, `_` and `-`")]
    InvalidChar { name: String, found: char },
    #[error("project name `{name}` must not start with `{found}`")]
    InvalidStart { name: String, found: char },
}

impl FromStr for ProjectName {
    type Err = ProjectNameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let Some(first) = name.chars().next() else {
            return Err(ProjectNameError::Empty);
        };
        if let Some(found) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
        {
            return Err(ProjectNameError::InvalidChar {
                name: name.to_owned(),
                found,
            });
        }
        if matches!(first, '_' | '-') {
            return Err(ProjectNameError::InvalidStart {
                name: name.to_owned(),
                found: first,
            });
        }
        Ok(Self(name.to_owned()))
    }
}

/// `provider`. Feast maps all of these to the same passthrough provider; Larder only
/// records the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    #[default]
    Local,
    Gcp,
    Aws,
    Azure,
}

/// `registry`: a path (string form) or a mapping.
///
/// When `registry` is absent Larder uses `data/registry.db` (Feast refuses a config
/// without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    pub registry_type: RegistryType,
    /// For `file`: a path (resolve with [`RepoConfig::resolve_path`]) or an object store
    /// URL (`s3://`, `gs://`, ...). For `sql`: a `sqlite:` or `postgresql://` URL.
    pub path: ConnectionString,
    /// Seconds a loaded registry is trusted; 0 caches it forever. See [`Self::cache_ttl`].
    pub cache_ttl_seconds: u64,
    pub cache_mode: CacheMode,
    /// `sql` only: URL of a read replica.
    pub read_path: Option<ConnectionString>,
}

impl RegistryConfig {
    pub const DEFAULT_PATH: &'static str = "data/registry.db";

    /// The cache lifetime; `None` means cache forever (`cache_ttl_seconds: 0`).
    pub fn cache_ttl(&self) -> Option<Duration> {
        (self.cache_ttl_seconds > 0).then(|| Duration::from_secs(self.cache_ttl_seconds))
    }

    /// A file registry at `path` with default settings.
    pub fn file(path: impl Into<String>) -> Self {
        Self {
            registry_type: RegistryType::File,
            path: ConnectionString::new(path),
            cache_ttl_seconds: 600,
            cache_mode: CacheMode::Sync,
            read_path: None,
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self::file(Self::DEFAULT_PATH)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryType {
    #[default]
    File,
    Sql,
}

impl RegistryType {
    pub const NAMES: &'static [&'static str] = &["file", "sql"];
}

/// When the registry cache is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Lazily, on the first access after the ttl expired (and right after `apply`).
    #[default]
    Sync,
    /// By a background task every ttl.
    Thread,
}

/// `entity_key_serialization_version`: 3 (default) or 2 (deprecated, still readable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EntityKeySerializationVersion {
    V2,
    #[default]
    V3,
}

impl EntityKeySerializationVersion {
    pub fn as_u32(self) -> u32 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }
}

/// `feature_server` (`type: local`, the only type Larder has).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureServerConfig {
    pub enabled: bool,
    pub transformation_service_endpoint: String,
    pub metrics: MetricsConfig,
    pub feature_logging: FeatureLoggingConfig,
    pub offline_push_batching_enabled: bool,
    pub offline_push_batching_batch_size: Option<u64>,
    pub offline_push_batching_batch_interval_seconds: Option<u64>,
}

impl Default for FeatureServerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            transformation_service_endpoint: "localhost:6569".to_owned(),
            metrics: MetricsConfig::default(),
            feature_logging: FeatureLoggingConfig::default(),
            offline_push_batching_enabled: false,
            offline_push_batching_batch_size: None,
            offline_push_batching_batch_interval_seconds: None,
        }
    }
}

/// `feature_server.metrics`: which metric families are exported when `enabled`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub resource: bool,
    pub request: bool,
    pub online_features: bool,
    pub push: bool,
    pub materialization: bool,
    pub freshness: bool,
    pub offline_features: bool,
    pub audit_logging: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            resource: true,
            request: true,
            online_features: true,
            push: true,
            materialization: true,
            freshness: true,
            offline_features: true,
            audit_logging: false,
        }
    }
}

/// `feature_server.feature_logging`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureLoggingConfig {
    pub enabled: bool,
    pub flush_interval_secs: u64,
    pub write_to_disk_interval_secs: u64,
    pub queue_capacity: u64,
    pub emit_timeout_micro_secs: u64,
}

impl Default for FeatureLoggingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            flush_interval_secs: 600,
            write_to_disk_interval_secs: 30,
            queue_capacity: 100_000,
            emit_timeout_micro_secs: 10_000,
        }
    }
}

/// `materialization`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaterializationConfig {
    /// Materialize only the latest row per entity key, skipping the window scan.
    pub pull_latest_features: bool,
    /// Rows per online write; `None` lets the store choose. Never 0.
    pub online_write_batch_size: Option<u64>,
}

/// `auth`. Only `no_auth` is supported so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthConfig {
    #[default]
    NoAuth,
}
