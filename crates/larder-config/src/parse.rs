//! Turns the parsed YAML tree into a validated [`RepoConfig`], collecting every problem.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{ConfigError, Issue};
use crate::model::{
    AuthConfig, CacheMode, EntityKeySerializationVersion, FeatureServerConfig,
    MaterializationConfig, ProjectName, Provider, RegistryConfig, RegistryType, RepoConfig,
};
use crate::node::{Entry, Kind, Node, Pos, read, read_block};
use crate::secret::ConnectionString;
use crate::stores::{
    BatchEngineConfig, K8sEngineConfig, OfflineStoreConfig, OnlineStoreConfig,
    PostgresConnectionConfig, PostgresOfflineStoreConfig, PostgresOnlineStoreConfig,
    RedisOnlineStoreConfig, RemoteOnlineStoreConfig, SqliteOnlineStoreConfig,
};

/// A block type without settings (`batch_engine: local`, `offline_store: file`,
/// `auth: no_auth`); reading it only rejects unknown keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoOptions {}

/// The registry mapping as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    path: String,
    #[serde(default = "default_cache_ttl")]
    cache_ttl_seconds: u64,
    #[serde(default)]
    cache_mode: CacheMode,
    #[serde(default)]
    read_path: Option<String>,
}

fn default_cache_ttl() -> u64 {
    600
}

type Checked<T> = Result<T, Vec<Issue>>;

/// Builds the config from the document root. `source_name` prefixes messages.
pub(crate) fn build(
    root: &Node,
    source_name: &str,
    repo_dir: &Path,
) -> Result<RepoConfig, ConfigError> {
    let mut issues = Vec::new();
    let mut warnings = Vec::new();
    let entries: &[Entry] = match &root.kind {
        Kind::Map(entries) => entries,
        Kind::Null => &[],
        _ => {
            let issue = Issue::new(format!(
                "expected a mapping of settings at the top level, found {}",
                root.describe()
            ))
            .at(root.pos.line, root.pos.column);
            return Err(invalid(source_name, vec![issue]));
        }
    };

    let mut config = Settings::default();
    let mut project: Option<(String, Pos)> = None;
    let mut engine_key: Option<&str> = None;
    // A broken `online_store` leaves the sqlite default in place; the project name
    // check must not then complain about sqlite.
    let mut online_ok = true;

    for entry in entries {
        let key = entry.key.as_str();
        let value = &entry.value;
        let result: Checked<()> = match key {
            "project" => read::<String>(value, key).map(|p| project = Some((p, value.pos))),
            "project_description" => read(value, key).map(|v| config.project_description = v),
            "provider" => read(value, key).map(|v| config.provider = v),
            "registry" => registry(value).map(|v| config.registry = v),
            "online_store" => {
                let online = online_store(value);
                online_ok = online.is_ok();
                online.map(|v| config.online_store = v)
            }
            "offline_store" => offline_store(value).map(|v| config.offline_store = v),
            "batch_engine" | "batch_engine_config" => {
                if let Some(first) = engine_key {
                    Err(vec![
                        Issue::new(format!(
                            "`{key}` repeats `{first}` (they are the same setting); keep one"
                        ))
                        .at(entry.key_pos.line, entry.key_pos.column)
                        .key(key),
                    ])
                } else {
                    engine_key = Some(key);
                    batch_engine(value, key).map(|v| config.batch_engine = v)
                }
            }
            "entity_key_serialization_version" => {
                serialization_version(value).map(|(version, warning)| {
                    config.entity_key_serialization_version = version;
                    warnings.extend(warning.map(|w| (value.pos.line, w)));
                })
            }
            "feature_server" => feature_server(value).map(|v| config.feature_server = v),
            "materialization" => materialization(value).map(|v| config.materialization = v),
            "coerce_tz_aware" => read(value, key).map(|v| config.coerce_tz_aware = v),
            "auth" => auth(value).map(|v| config.auth = v),
            _ => {
                warnings.push((entry.key_pos.line, format!("unknown key `{key}` ignored")));
                Ok(())
            }
        };
        if let Err(found) = result {
            issues.extend(found);
        }
    }

    let project = match project {
        None => {
            issues.push(Issue::new("missing required key `project`").key("project"));
            None
        }
        Some((name, pos)) => match check_project(&name, config.online_store.as_ref(), online_ok) {
            Ok(name) => Some(name),
            Err(message) => {
                issues.push(issue_at(pos, "project", message));
                None
            }
        },
    };
    let Some(project) = project.filter(|_| issues.is_empty()) else {
        issues.sort_by_key(|issue| issue.line.unwrap_or(0));
        return Err(invalid(source_name, issues));
    };
    let warnings = warnings
        .into_iter()
        .map(|(line, message)| match line {
            0 => format!("{source_name}: {message}"),
            line => format!("{source_name}:{line}: {message}"),
        })
        .collect();
    Ok(RepoConfig {
        project,
        project_description: config.project_description,
        provider: config.provider,
        registry: config.registry,
        online_store: config.online_store,
        offline_store: config.offline_store,
        batch_engine: config.batch_engine,
        entity_key_serialization_version: config.entity_key_serialization_version,
        feature_server: config.feature_server,
        materialization: config.materialization,
        coerce_tz_aware: config.coerce_tz_aware,
        auth: config.auth,
        warnings,
        repo_dir: repo_dir.to_path_buf(),
        config_source: source_name.to_owned(),
    })
}

/// Everything in [`RepoConfig`] that comes from the file, with its defaults.
struct Settings {
    project_description: Option<String>,
    provider: Provider,
    registry: RegistryConfig,
    online_store: Option<OnlineStoreConfig>,
    offline_store: OfflineStoreConfig,
    batch_engine: BatchEngineConfig,
    entity_key_serialization_version: EntityKeySerializationVersion,
    feature_server: FeatureServerConfig,
    materialization: MaterializationConfig,
    coerce_tz_aware: bool,
    auth: AuthConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            project_description: None,
            provider: Provider::default(),
            registry: RegistryConfig::default(),
            online_store: Some(OnlineStoreConfig::default()),
            offline_store: OfflineStoreConfig::default(),
            batch_engine: BatchEngineConfig::default(),
            entity_key_serialization_version: EntityKeySerializationVersion::default(),
            feature_server: FeatureServerConfig::default(),
            materialization: MaterializationConfig::default(),
            coerce_tz_aware: true,
            auth: AuthConfig::default(),
        }
    }
}

fn invalid(source_name: &str, issues: Vec<Issue>) -> ConfigError {
    ConfigError::Invalid {
        source_name: source_name.to_owned(),
        issues,
    }
}

fn check_project(
    name: &str,
    online: Option<&OnlineStoreConfig>,
    online_known: bool,
) -> Result<ProjectName, String> {
    let project: ProjectName = name.parse().map_err(|e| format!("{e}"))?;
    if online_known && name.contains('-') && matches!(online, Some(OnlineStoreConfig::Sqlite(_))) {
        return Err(format!(
            "project name `{name}` contains `-`, which the sqlite online store cannot use in table names; use `_` instead"
        ));
    }
    Ok(project)
}

/// A block written as a bare type name, or as a mapping with an optional type key.
struct Block<'a> {
    node: &'a Node,
    /// The type as written, `None` when not given.
    kind: Option<&'a str>,
    /// Where the type was written (the block itself when it was not).
    kind_pos: Pos,
    /// Bare string form (`online_store: redis`) or null: no settings to read.
    bare: bool,
}

impl<'a> Block<'a> {
    fn parse(node: &'a Node, path: &str, tag: &str) -> Checked<Self> {
        match &node.kind {
            Kind::Null => Ok(Self {
                node,
                kind: None,
                kind_pos: node.pos,
                bare: true,
            }),
            Kind::Str(kind) => Ok(Self {
                node,
                kind: Some(kind),
                kind_pos: node.pos,
                bare: true,
            }),
            Kind::Map(_) => match node.get(tag) {
                None => Ok(Self {
                    node,
                    kind: None,
                    kind_pos: node.pos,
                    bare: false,
                }),
                Some(Entry {
                    value:
                        Node {
                            kind: Kind::Str(kind),
                            pos,
                            ..
                        },
                    ..
                }) => Ok(Self {
                    node,
                    kind: Some(kind),
                    kind_pos: *pos,
                    bare: false,
                }),
                Some(entry) => Err(vec![issue_at(
                    entry.value.pos,
                    format!("{path}.{tag}"),
                    format!(
                        "invalid `{path}.{tag}`: expected a type name, found {}",
                        entry.value.describe()
                    ),
                )]),
            },
            _ => Err(vec![issue_at(
                node.pos,
                path,
                format!(
                    "invalid `{path}`: expected a type name or a mapping, found {}",
                    node.describe()
                ),
            )]),
        }
    }

    /// Reads the block's settings into `T` (defaults for the bare form).
    fn settings<T: DeserializeOwned + Default>(
        &self,
        path: &str,
        kind: &'a str,
        skip: &'a [&'a str],
    ) -> Checked<T> {
        if self.bare {
            Ok(T::default())
        } else {
            read_block(self.node, path, Some(kind), skip)
        }
    }

    /// Rejects any key but the type key.
    fn no_settings(&self, path: &str, kind: &'a str, tag: &'a [&'a str]) -> Checked<()> {
        if !self.bare {
            read_block::<NoOptions>(self.node, path, Some(kind), tag)?;
        }
        Ok(())
    }

    /// Reads one extra key of the block (beside a struct read with `skip`).
    fn field<T: DeserializeOwned + Default>(&self, path: &str, key: &str) -> Checked<T> {
        match self.node.get(key) {
            Some(entry) if !self.bare => read(&entry.value, &format!("{path}.{key}")),
            _ => Ok(T::default()),
        }
    }

    fn unsupported(&self, path: &str, what: &str, kind: &str, supported: &[&str]) -> Vec<Issue> {
        vec![issue_at(
            self.kind_pos,
            format!("{path}.type"),
            format!(
                "{what} type `{kind}` is not supported by Larder (supported: {})",
                supported.join(", ")
            ),
        )]
    }
}

fn issue_at(pos: Pos, key: impl Into<String>, message: impl Into<String>) -> Issue {
    Issue::new(message).at(pos.line, pos.column).key(key)
}

/// Runs two checks and keeps the problems of both.
fn both<A, B>(a: Checked<A>, b: Checked<B>) -> Checked<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (Err(mut x), Err(y)) => {
            x.extend(y);
            Err(x)
        }
        (Err(x), _) | (_, Err(x)) => Err(x),
    }
}

const TYPE: &[&str] = &["type"];

fn online_store(node: &Node) -> Checked<Option<OnlineStoreConfig>> {
    const PATH: &str = "online_store";
    let block = Block::parse(node, PATH, "type")?;
    if matches!(node.kind, Kind::Null) {
        return Ok(None);
    }
    let kind = block.kind.unwrap_or("sqlite");
    if block.bare && (kind.eq_ignore_ascii_case("null") || kind.eq_ignore_ascii_case("none")) {
        return Ok(None);
    }
    let config = match kind {
        "sqlite" => {
            let sqlite = block.settings::<SqliteOnlineStoreConfig>(PATH, kind, TYPE)?;
            check_page_size(&block, PATH, sqlite.page_size)?;
            OnlineStoreConfig::Sqlite(sqlite)
        }
        "redis" => {
            OnlineStoreConfig::Redis(block.settings::<RedisOnlineStoreConfig>(PATH, kind, TYPE)?)
        }
        "postgres" => {
            let (connection, conn_type) = both(
                block.settings::<PostgresConnectionConfig>(PATH, kind, &["type", "conn_type"]),
                block.field(PATH, "conn_type"),
            )?;
            check_pool(&block, PATH, &connection)?;
            OnlineStoreConfig::Postgres(PostgresOnlineStoreConfig {
                connection,
                conn_type,
            })
        }
        "remote" => {
            OnlineStoreConfig::Remote(block.settings::<RemoteOnlineStoreConfig>(PATH, kind, TYPE)?)
        }
        other => {
            return Err(block.unsupported(PATH, "online store", other, OnlineStoreConfig::TYPES));
        }
    };
    Ok(Some(config))
}

fn check_page_size(block: &Block<'_>, path: &str, page_size: Option<u32>) -> Checked<()> {
    match page_size {
        Some(size) if !size.is_power_of_two() || !(512..=65536).contains(&size) => {
            let pos = block
                .node
                .get("page_size")
                .map_or(block.node.pos, |e| e.key_pos);
            Err(vec![issue_at(
                pos,
                format!("{path}.page_size"),
                format!(
                    "`{path}.page_size` is {size}; SQLite pages are a power of two from 512 to \
                     65536 bytes (1024 by default)"
                ),
            )])
        }
        _ => Ok(()),
    }
}

fn check_pool(block: &Block<'_>, path: &str, connection: &PostgresConnectionConfig) -> Checked<()> {
    if connection.min_conn > connection.max_conn {
        let pos = block
            .node
            .get("min_conn")
            .map_or(block.node.pos, |e| e.key_pos);
        return Err(vec![issue_at(
            pos,
            format!("{path}.min_conn"),
            format!(
                "`{path}.min_conn` ({}) must not be greater than `max_conn` ({})",
                connection.min_conn, connection.max_conn
            ),
        )]);
    }
    Ok(())
}

fn offline_store(node: &Node) -> Checked<OfflineStoreConfig> {
    const PATH: &str = "offline_store";
    let block = Block::parse(node, PATH, "type")?;
    match block.kind.unwrap_or("file") {
        kind @ ("file" | "dask") => {
            block.no_settings(PATH, kind, TYPE)?;
            Ok(OfflineStoreConfig::File)
        }
        kind @ "postgres" => {
            let (connection, entity_select_mode) = both(
                block.settings::<PostgresConnectionConfig>(
                    PATH,
                    kind,
                    &["type", "entity_select_mode"],
                ),
                block.field(PATH, "entity_select_mode"),
            )?;
            check_pool(&block, PATH, &connection)?;
            Ok(OfflineStoreConfig::Postgres(PostgresOfflineStoreConfig {
                connection,
                entity_select_mode,
            }))
        }
        other => Err(block.unsupported(PATH, "offline store", other, OfflineStoreConfig::TYPES)),
    }
}

fn batch_engine(node: &Node, path: &str) -> Checked<BatchEngineConfig> {
    let block = Block::parse(node, path, "type")?;
    match block.kind.unwrap_or("local") {
        kind @ "local" => {
            block.no_settings(path, kind, TYPE)?;
            Ok(BatchEngineConfig::Local)
        }
        kind @ "k8s" => Ok(BatchEngineConfig::K8s(
            block.settings::<K8sEngineConfig>(path, kind, TYPE)?,
        )),
        other => Err(block.unsupported(path, "batch engine", other, BatchEngineConfig::TYPES)),
    }
}

fn registry(node: &Node) -> Checked<RegistryConfig> {
    const PATH: &str = "registry";
    if let Kind::Str(path) = &node.kind {
        if path.trim().is_empty() {
            return Err(vec![issue_at(
                node.pos,
                PATH,
                "`registry` must not be empty",
            )]);
        }
        return Ok(RegistryConfig::file(path.clone()));
    }
    if !matches!(node.kind, Kind::Map(_)) {
        return Err(vec![issue_at(
            node.pos,
            PATH,
            format!(
                "invalid `registry`: expected a path or a mapping, found {}",
                node.describe()
            ),
        )]);
    }
    let block = Block::parse(node, PATH, "registry_type")?;
    let kind = block.kind.unwrap_or("file");
    let registry_type = match kind {
        "file" => RegistryType::File,
        "sql" => RegistryType::Sql,
        other => {
            let mut issues = block.unsupported(PATH, "registry", other, RegistryType::NAMES);
            for issue in &mut issues {
                issue.key = Some("registry.registry_type".to_owned());
            }
            return Err(issues);
        }
    };
    let raw: RawRegistry = read_block(node, PATH, Some(kind), &["registry_type"])?;
    let mut issues = Vec::new();
    let pos_of = |key: &str| node.get(key).map_or(node.pos, |e| e.value.pos);
    match registry_type {
        RegistryType::File => {
            if raw.read_path.is_some() {
                let pos = node.get("read_path").map_or(node.pos, |e| e.key_pos);
                issues.push(issue_at(
                    pos,
                    "registry.read_path",
                    "`registry.read_path` is only valid with `registry_type: sql`",
                ));
            }
        }
        RegistryType::Sql => {
            for (key, url) in [
                ("path", Some(&raw.path)),
                ("read_path", raw.read_path.as_ref()),
            ] {
                if let Some(url) = url.filter(|url| !is_sql_url(url)) {
                    issues.push(issue_at(
                        pos_of(key),
                        format!("registry.{key}"),
                        format!(
                            "`registry.{key}` must be a `sqlite:` or `postgresql://` URL for `registry_type: sql`, found `{}`",
                            ConnectionString::new(url.as_str()).masked()
                        ),
                    ));
                }
            }
        }
    }
    if raw.path.trim().is_empty() {
        issues.push(issue_at(
            pos_of("path"),
            "registry.path",
            "`registry.path` must not be empty",
        ));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(RegistryConfig {
        registry_type,
        path: ConnectionString::new(raw.path),
        cache_ttl_seconds: raw.cache_ttl_seconds,
        cache_mode: raw.cache_mode,
        read_path: raw.read_path.map(ConnectionString::new),
    })
}

/// `sqlite:`, `postgresql://`, `postgres://`, or SQLAlchemy's `postgresql+driver://`.
fn is_sql_url(url: &str) -> bool {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    url.starts_with("sqlite:")
        || ((scheme == "postgresql" || scheme == "postgres" || scheme.starts_with("postgresql+"))
            && url[scheme.len()..].starts_with("://"))
}

fn serialization_version(node: &Node) -> Checked<(EntityKeySerializationVersion, Option<String>)> {
    const KEY: &str = "entity_key_serialization_version";
    match read::<i64>(node, KEY)? {
        3 => Ok((EntityKeySerializationVersion::V3, None)),
        2 => Ok((
            EntityKeySerializationVersion::V2,
            Some(format!(
                "`{KEY}: 2` is deprecated; use 3 for new repos (Larder still reads version 2 keys)"
            )),
        )),
        other => Err(vec![issue_at(
            node.pos,
            KEY,
            format!("`{KEY}` must be 2 or 3, found {other}"),
        )]),
    }
}

fn feature_server(node: &Node) -> Checked<FeatureServerConfig> {
    const PATH: &str = "feature_server";
    let block = Block::parse(node, PATH, "type")?;
    match block.kind.unwrap_or("local") {
        kind @ "local" => block.settings(PATH, kind, TYPE),
        other => Err(block.unsupported(PATH, "feature server", other, &["local"])),
    }
}

fn materialization(node: &Node) -> Checked<MaterializationConfig> {
    const PATH: &str = "materialization";
    let config: MaterializationConfig = read(node, PATH)?;
    if config.online_write_batch_size == Some(0) {
        let pos = node
            .get("online_write_batch_size")
            .map_or(node.pos, |e| e.value.pos);
        return Err(vec![issue_at(
            pos,
            "materialization.online_write_batch_size",
            "`materialization.online_write_batch_size` must be greater than 0",
        )]);
    }
    Ok(config)
}

fn auth(node: &Node) -> Checked<AuthConfig> {
    const PATH: &str = "auth";
    let block = Block::parse(node, PATH, "type")?;
    match block.kind.unwrap_or("no_auth") {
        kind @ "no_auth" => {
            block.no_settings(PATH, kind, TYPE)?;
            Ok(AuthConfig::NoAuth)
        }
        other => Err(vec![issue_at(
            block.kind_pos,
            "auth.type",
            format!("auth type `{other}` is not supported yet (supported: no_auth)"),
        )]),
    }
}
