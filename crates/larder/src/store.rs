//! `FeatureStore`: a repo's config and registry, and the operations on them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use larder_config::{
    EntityKeySerializationVersion, OnlineStoreConfig, PostgresConnType, PostgresOnlineStoreConfig,
    RegistryType, RepoConfig,
};
use larder_offline::OfflineStore;
use larder_online::{
    ConnType, OnlineStore, PostgresConfig, PostgresOnlineStore, RedisConfig, RedisOnlineStore,
    RedisTopology, SqliteConfig, SqliteOnlineStore, SslMode, ViewTable,
};
use larder_registry::store::{open_sql_store, open_store};
use larder_registry::{ApplyOutcome, Clock, ProjectState, Registry, Snapshot};
use larder_spec::{Definitions, InfraAction, InfraObject, LoadOptions, Plan, load_definitions};
use larder_types::feast::KeyVersion;

use crate::error::Error;

/// Where the repo is and which config to read (the CLI's `-c` and `-f`).
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub repo_dir: PathBuf,
    pub yaml_file: Option<PathBuf>,
    /// Memory offline queries may use before spilling to disk (None: unlimited).
    pub offline_memory_limit: Option<usize>,
    /// The process is a long-running server writing small batches (`larder serve`): the
    /// SQLite online store then checkpoints its WAL on a background thread instead of in
    /// the request whose commit fills it.
    pub long_running: bool,
}

impl OpenOptions {
    pub fn new(repo_dir: impl Into<PathBuf>) -> Self {
        OpenOptions {
            repo_dir: repo_dir.into(),
            yaml_file: None,
            offline_memory_limit: None,
            long_running: false,
        }
    }
}

/// Options of `plan` and `apply`.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Do not read file sources to check their columns (`--skip-source-validation`).
    pub skip_source_validation: bool,
}

/// What `teardown` removed.
#[derive(Debug)]
pub struct TeardownReport {
    pub project: String,
    /// The project's registry content, None when it was not in the registry.
    pub removed: Option<ProjectState>,
}

/// A feature repository opened for use: its config, and its registry built once.
pub struct FeatureStore {
    config: RepoConfig,
    registry: Registry,
    offline_memory_limit: Option<usize>,
    long_running: bool,
    /// Built on first use: plan/apply never need it.
    offline: OnceLock<Arc<dyn OfflineStore>>,
    /// Built on first use; None when the configured store has no backend in this build yet.
    online: OnceLock<Option<Arc<dyn OnlineStore>>>,
    /// The current time: ttl checks and incremental windows; injectable for tests.
    clock: Clock,
    /// Plans `get_online_features` compiled against the current registry snapshot.
    pub(crate) online_plans: crate::online::PlanCache,
}

impl std::fmt::Debug for FeatureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureStore")
            .field("project", &self.config.project.as_str())
            .field("registry", &self.registry)
            .finish()
    }
}

impl FeatureStore {
    /// Loads `feature_store.yaml` (with the process environment for `${VAR}`) and opens the
    /// registry it names.
    pub fn open(options: &OpenOptions) -> Result<Self, Error> {
        let load = larder_config::LoadOptions {
            repo_dir: options.repo_dir.clone(),
            yaml_file: options.yaml_file.clone(),
        };
        let config = larder_config::load(&load, &larder_config::process_env)?;
        let mut store = Self::from_config(config)?;
        store.offline_memory_limit = options.offline_memory_limit;
        store.long_running = options.long_running;
        Ok(store)
    }

    /// Opens the registry named by an already loaded config.
    pub fn from_config(config: RepoConfig) -> Result<Self, Error> {
        let registry_config = &config.registry;
        let store = match registry_config.registry_type {
            RegistryType::File => open_store(registry_config.path.expose(), &config.repo_dir)?,
            RegistryType::Sql => open_sql_store(
                registry_config.path.expose(),
                registry_config.read_path.as_ref().map(|url| url.expose()),
                &config.repo_dir,
            )?,
        };
        // Feast: 0 caches forever; Registry uses a zero duration for that.
        let ttl = registry_config.cache_ttl().unwrap_or(Duration::ZERO);
        Ok(FeatureStore {
            registry: Registry::new(store, ttl),
            config,
            offline_memory_limit: None,
            long_running: false,
            offline: OnceLock::new(),
            online: OnceLock::new(),
            clock: Arc::new(chrono::Utc::now),
            online_plans: Default::default(),
        })
    }

    /// Replaces the clock (`Utc::now` by default) used for ttl checks and incremental
    /// materialization windows.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `store` as the online store instead of the one the config names (tests inject
    /// slow or failing stores this way; embedders can share one store between repos).
    pub fn with_online_store(self, store: Arc<dyn OnlineStore>) -> Self {
        let _ = self.online.set(Some(store));
        self
    }

    /// The current time by this store's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.clock)()
    }

    /// The entity key format of this repo (`entity_key_serialization_version`).
    pub fn key_version(&self) -> KeyVersion {
        match self.config.entity_key_serialization_version {
            EntityKeySerializationVersion::V2 => KeyVersion::V2,
            EntityKeySerializationVersion::V3 => KeyVersion::V3,
        }
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn project(&self) -> &str {
        self.config.project.as_str()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The offline store named by the config, built once.
    pub fn offline_store(&self) -> Result<Arc<dyn OfflineStore>, Error> {
        if let Some(store) = self.offline.get() {
            return Ok(store.clone());
        }
        let built = Self::build_offline_store(&self.config, self.offline_memory_limit)?;
        Ok(self.offline.get_or_init(|| built).clone())
    }

    /// Reads and validates the repo's definition files (all errors at once).
    pub fn load_definitions(&self, options: &ApplyOptions) -> Result<Definitions, Error> {
        let config_file = self
            .config
            .config_source
            .ne(larder_config::YAML_BASE64_VAR)
            .then(|| PathBuf::from(&self.config.config_source));
        let load = LoadOptions {
            repo_dir: self.config.repo_dir.clone(),
            config_file,
            project: self.project().to_string(),
            project_description: self.config.project_description.clone(),
            validate_sources: !options.skip_source_validation,
        };
        Ok(load_definitions(&load)?)
    }

    /// The configured online store, built once; `None` when the online store is disabled or
    /// its backend is not in this build yet. Building a Redis or Postgres store does not
    /// connect: an unreachable server shows in the first read or write.
    pub fn online_store(&self) -> Result<Option<Arc<dyn OnlineStore>>, Error> {
        if let Some(store) = self.online.get() {
            return Ok(store.clone());
        }
        let built: Option<Arc<dyn OnlineStore>> = match self.config.online_store.as_ref() {
            Some(OnlineStoreConfig::Sqlite(sqlite)) => {
                let path = self.config.resolve_path(&sqlite.path);
                let config = SqliteConfig {
                    background_checkpoint: self.long_running,
                    page_size: sqlite.page_size,
                    ..SqliteConfig::new(path)
                };
                Some(Arc::new(SqliteOnlineStore::open(&config)?))
            }
            Some(OnlineStoreConfig::Redis(redis)) => {
                Some(Arc::new(RedisOnlineStore::new(redis_config(redis)?)))
            }
            Some(OnlineStoreConfig::Postgres(postgres)) => Some(Arc::new(
                PostgresOnlineStore::new(&self.postgres_online_config(postgres)?)?,
            )),
            _ => None,
        };
        Ok(self.online.get_or_init(|| built).clone())
    }

    /// `online_store: {type: postgres}` as the store's own settings (TLS files resolved
    /// against the repo, like every path of the config).
    fn postgres_online_config(
        &self,
        postgres: &PostgresOnlineStoreConfig,
    ) -> Result<PostgresConfig, Error> {
        let c = &postgres.connection;
        let path = |p: &Option<String>| p.as_deref().map(|p| self.config.resolve_path(p));
        let mut config = PostgresConfig::new(&c.host, &c.database);
        config.port = c.port;
        config.db_schema = c.db_schema.clone();
        config.user = c.user.clone();
        config.password = c.password.as_ref().map(|p| p.expose().to_owned());
        config.sslmode = match &c.sslmode {
            Some(mode) => mode.parse::<SslMode>()?,
            None => SslMode::Prefer,
        };
        config.sslrootcert_path = path(&c.sslrootcert_path);
        config.sslcert_path = path(&c.sslcert_path);
        config.sslkey_path = path(&c.sslkey_path);
        config.conn_type = match postgres.conn_type {
            PostgresConnType::Singleton => ConnType::Singleton,
            PostgresConnType::Pool => ConnType::Pool,
        };
        config.min_conn = c.min_conn;
        config.max_conn = c.max_conn;
        config.keepalives_idle = c.keepalives_idle.map(Duration::from_secs);
        Ok(config)
    }

    /// The online tables of `defs`' online views.
    fn online_tables(defs: &Definitions) -> Vec<ViewTable> {
        defs.feature_views
            .values()
            .filter(|v| v.online)
            .map(|v| {
                ViewTable::new(
                    defs.project.name.clone(),
                    v.name.to_string(),
                    v.features
                        .iter()
                        .map(|f| f.name.to_string())
                        .collect::<Vec<String>>(),
                )
            })
            .collect()
    }

    /// The infrastructure label of the configured online store, for per-view tables.
    pub fn online_infra_kind(&self) -> Option<&'static str> {
        match self.config.online_store.as_ref()? {
            OnlineStoreConfig::Sqlite(_) => Some("sqlite table"),
            OnlineStoreConfig::Postgres(_) => Some("postgres table"),
            // Redis keeps all views of an entity in one hash; a remote store is someone else's.
            OnlineStoreConfig::Redis(_) | OnlineStoreConfig::Remote(_) => None,
        }
    }

    fn desired_infra(&self, defs: &Definitions) -> BTreeSet<InfraObject> {
        defs.infra_objects(self.online_infra_kind())
    }

    /// What `apply` would change.
    pub async fn plan(&self, options: &ApplyOptions) -> Result<Plan, Error> {
        let defs = self.load_definitions(options)?;
        Ok(self
            .registry
            .plan(&defs, &self.desired_infra(&defs))
            .await?)
    }

    /// Applies the repo's definitions: the registry then holds exactly them for this project,
    /// and the online store has a table for every online view.
    ///
    /// Tables of new views are created before the registry commit (idempotently), so the
    /// registry never names a table that does not exist; tables of removed views are dropped
    /// after it, so a failed commit drops nothing.
    pub async fn apply(&self, options: &ApplyOptions) -> Result<ApplyOutcome, Error> {
        let defs = self.load_definitions(options)?;
        let infra = self.desired_infra(&defs);
        let online = self.online_store()?;
        if let Some(online) = &online {
            online
                .update_infra(&Self::online_tables(&defs), &[])
                .await?;
        }
        let outcome = self.registry.apply(&defs, &infra).await?;
        // The committed plan says which tables went away (against the version it won on).
        if let Some(online) = &online {
            let prefix = format!("{}_", self.project());
            let dropped: Vec<ViewTable> = outcome
                .plan
                .infra
                .iter()
                .filter(|c| c.action == InfraAction::Delete)
                .filter_map(|c| c.object.name.strip_prefix(&prefix))
                .map(|view| ViewTable::new(self.project(), view, Vec::<String>::new()))
                .collect();
            if !dropped.is_empty() {
                online.update_infra(&[], &dropped).await?;
            }
        }
        tracing::info!(
            project = self.project(),
            version = outcome.version,
            attempts = outcome.attempts,
            "applied"
        );
        Ok(outcome)
    }

    /// Drops this project's online tables, then removes it from the registry (in that order,
    /// so a failed teardown can be rerun: the registry still names what to drop).
    pub async fn teardown(&self) -> Result<TeardownReport, Error> {
        let current = self.registry.refresh().await?;
        if let (Some(online), Some(state)) = (self.online_store()?, current.project(self.project()))
        {
            online
                .teardown(&Self::online_tables(&state.definitions()))
                .await?;
        }
        let removed = self.registry.delete_project(self.project()).await?;
        Ok(TeardownReport {
            project: self.project().to_string(),
            removed,
        })
    }

    /// The registry as cached (reloaded after `cache_ttl_seconds`).
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, Error> {
        Ok(self.registry.snapshot().await?)
    }

    /// This project's registry content; an error if it was never applied.
    ///
    /// Read as serving processes read it: from the read replica of a SQL registry that has
    /// one (which may lag behind the primary).
    pub async fn project_state(&self) -> Result<(Arc<Snapshot>, String), Error> {
        self.project_state_from(false).await
    }

    /// [`project_state`](Self::project_state) from the newest registry version (the primary
    /// of a SQL registry with a read replica) when `latest`.
    pub(crate) async fn project_state_from(
        &self,
        latest: bool,
    ) -> Result<(Arc<Snapshot>, String), Error> {
        let snapshot = if latest {
            self.registry.refresh_latest().await?
        } else {
            self.registry.refresh().await?
        };
        if snapshot.project(self.project()).is_none() {
            return Err(Error::Registry(
                larder_registry::RegistryError::ProjectNotFound {
                    project: self.project().to_string(),
                },
            ));
        }
        Ok((snapshot, self.project().to_string()))
    }
}

/// The Redis store's settings from the `online_store` block (Feast's keys).
fn redis_config(block: &larder_config::RedisOnlineStoreConfig) -> Result<RedisConfig, Error> {
    let topology = match block.redis_type {
        larder_config::RedisType::Redis => RedisTopology::Standalone,
        larder_config::RedisType::RedisCluster => RedisTopology::Cluster,
        larder_config::RedisType::RedisSentinel => RedisTopology::Sentinel {
            master: block.sentinel_master.clone(),
        },
    };
    let mut config = RedisConfig::parse(topology, block.connection_string.expose())?;
    config.key_ttl = block
        .key_ttl_seconds
        .filter(|&s| s > 0)
        .map(Duration::from_secs);
    config.full_scan_for_deletion = block.full_scan_for_deletion;
    config.skip_dedup = block.skip_dedup;
    Ok(config)
}
