//! Loads and validates `feature_store.yaml` into a typed [`RepoConfig`].
//!
//! The file has Feast's name, keys and defaults (`feast-behaviour.md` section 1), so a
//! Feast repo's config loads unchanged as long as it uses backends Larder has.
//!
//! # Where the config comes from
//!
//! [`load`] takes the first of:
//!
//! 1. [`LoadOptions::yaml_file`] (`-f/--feature-store-yaml`), relative to the current
//!    directory as given;
//! 2. the environment variable `FEATURE_STORE_YAML_BASE64` when set and not empty: the
//!    whole file, base64-encoded (whitespace is ignored, padding optional);
//! 3. `<repo_dir>/feature_store.yaml`, where `repo_dir` is `-c/--chdir` or the current
//!    directory.
//!
//! A missing file is [`ConfigError::NotFound`], which tells the user to run
//! `larder init` or pass `-c`/`-f`. [`parse_str`] parses text directly (tests, tools).
//!
//! # Relative paths
//!
//! Paths in the config (a file registry's `path`, the sqlite online store's `path`) are
//! kept as written, and resolve against [`RepoConfig::repo_dir`] with
//! [`RepoConfig::resolve_path`]; URLs and absolute paths are left alone. This holds for
//! `FEATURE_STORE_YAML_BASE64` too, a deliberate difference from Feast, which writes the
//! decoded file to a temporary directory and resolves paths against that.
//!
//! # Environment variables
//!
//! The raw text goes through [`env::substitute`] before YAML parsing, as in Feast
//! (`os.path.expandvars`), with Larder's stricter rules: `${VAR}` and `$VAR` as in Feast,
//! defaults with `${VAR:-default}` and `${VAR:"default"}` (used when `VAR` is unset or
//! empty), `$$` for a literal `$`, and an **error** for an unset variable without a
//! default (Feast leaves it in the text). Full-line comments are not substituted. Every
//! problem is reported with its line, not only the first. See [`mod@env`] for the details.
//!
//! # Validation
//!
//! - Unknown keys inside a block (`online_store`, `registry`, `feature_server.metrics`,
//!   ...) are errors naming the key, the block and the valid keys, with the line.
//!   Unknown top-level keys are accepted, as Feast does, and reported in
//!   [`RepoConfig::warnings`].
//! - Backend types Larder does not have (`dynamodb`, `duckdb`, `remote` registry, ...)
//!   are errors listing the supported ones.
//! - `registry` may be omitted: it defaults to `data/registry.db` (Feast requires it).
//! - Every problem found is returned at once in [`ConfigError::Invalid`], in line order.
//!   Line numbers always match the file on disk (substitution never adds lines).
//!
//! Passwords and connection strings are held in [`Secret`] and [`ConnectionString`],
//! whose `Debug` output masks credentials.

pub mod env;
mod error;
mod load;
mod model;
mod node;
mod parse;
mod secret;
mod stores;

pub use error::{ConfigError, Issue, SubstitutionError, YAML_BASE64_VAR};
pub use load::{CONFIG_FILE_NAME, Env, LoadOptions, load, parse_str, process_env, read_source};
pub use model::{
    AuthConfig, CacheMode, EntityKeySerializationVersion, FeatureLoggingConfig,
    FeatureServerConfig, MaterializationConfig, MetricsConfig, ProjectName, ProjectNameError,
    Provider, RegistryConfig, RegistryType, RepoConfig,
};
pub use secret::{ConnectionString, Secret};
pub use stores::{
    BatchEngineConfig, EntitySelectMode, K8sEngineConfig, OfflineStoreConfig, OnlineStoreConfig,
    PostgresConnType, PostgresConnectionConfig, PostgresOfflineStoreConfig,
    PostgresOnlineStoreConfig, RedisOnlineStoreConfig, RedisType, RemoteOnlineStoreConfig,
    SqliteOnlineStoreConfig,
};
