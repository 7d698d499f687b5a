//! `feature_store.yaml` parsing: defaults, every block form, and exact error messages.

use std::collections::BTreeMap;

use larder_config::{
    AuthConfig, BatchEngineConfig, CacheMode, ConnectionString, EntityKeySerializationVersion,
    EntitySelectMode, FeatureServerConfig, K8sEngineConfig, MaterializationConfig,
    OfflineStoreConfig, OnlineStoreConfig, PostgresConnType, PostgresConnectionConfig,
    PostgresOfflineStoreConfig, PostgresOnlineStoreConfig, Provider, RedisOnlineStoreConfig,
    RedisType, RegistryConfig, RegistryType, RemoteOnlineStoreConfig, Secret,
    SqliteOnlineStoreConfig,
};

use crate::parse;

/// What a case expects: one part of the parsed config, or the exact error text.
#[derive(Debug)]
enum Want {
    Registry(RegistryConfig),
    Online(Option<OnlineStoreConfig>),
    Offline(OfflineStoreConfig),
    Engine(BatchEngineConfig),
    FeatureServer(FeatureServerConfig),
    Materialization(MaterializationConfig),
    Version(EntityKeySerializationVersion),
    Provider(Provider),
    Project(&'static str),
    Warnings(&'static [&'static str]),
    Error(&'static str),
}

fn check(yaml: &str, want: &Want) {
    let got = parse(yaml);
    let config = match (&got, want) {
        (Err(err), Want::Error(expected)) => {
            assert_eq!(err, expected, "yaml:\n{yaml}");
            return;
        }
        (Ok(config), Want::Error(expected)) => {
            panic!("yaml:\n{yaml}\nparsed to {config:#?}\nexpected error {expected}")
        }
        (Err(err), _) => panic!("yaml:\n{yaml}\nfailed: {err}\nexpected {want:?}"),
        (Ok(config), _) => config,
    };
    match want {
        Want::Registry(r) => assert_eq!(&config.registry, r, "yaml:\n{yaml}"),
        Want::Online(o) => assert_eq!(&config.online_store, o, "yaml:\n{yaml}"),
        Want::Offline(o) => assert_eq!(&config.offline_store, o, "yaml:\n{yaml}"),
        Want::Engine(e) => assert_eq!(&config.batch_engine, e, "yaml:\n{yaml}"),
        Want::FeatureServer(f) => assert_eq!(&config.feature_server, f, "yaml:\n{yaml}"),
        Want::Materialization(m) => assert_eq!(&config.materialization, m, "yaml:\n{yaml}"),
        Want::Version(v) => assert_eq!(&config.entity_key_serialization_version, v),
        Want::Provider(p) => assert_eq!(&config.provider, p, "yaml:\n{yaml}"),
        Want::Project(p) => assert_eq!(config.project.as_str(), *p, "yaml:\n{yaml}"),
        Want::Warnings(w) => assert_eq!(&config.warnings, w, "yaml:\n{yaml}"),
        Want::Error(_) => unreachable!("handled above"),
    }
}

fn run(cases: &[(&str, Want)]) {
    for (yaml, want) in cases {
        check(yaml, want);
    }
}

fn registry(
    registry_type: RegistryType,
    path: &str,
    ttl: u64,
    cache_mode: CacheMode,
    read_path: Option<&str>,
) -> RegistryConfig {
    RegistryConfig {
        registry_type,
        path: ConnectionString::new(path),
        cache_ttl_seconds: ttl,
        cache_mode,
        read_path: read_path.map(ConnectionString::new),
    }
}

fn sqlite(path: &str) -> Option<OnlineStoreConfig> {
    Some(OnlineStoreConfig::Sqlite(SqliteOnlineStoreConfig {
        path: path.to_owned(),
        page_size: None,
    }))
}

#[test]
fn sqlite_page_size_is_read() {
    let config = parse("project: p\nonline_store:\n  path: x.db\n  page_size: 1024\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.online_store,
        Some(OnlineStoreConfig::Sqlite(SqliteOnlineStoreConfig {
            path: "x.db".to_owned(),
            page_size: Some(1024),
        }))
    );
}

#[test]
fn minimal_file_gets_every_default() {
    let config = parse("project: p\n");
    let config = match config {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(config.project.as_str(), "p");
    assert_eq!(config.project_description, None);
    assert_eq!(config.provider, Provider::Local);
    assert_eq!(
        config.registry,
        registry(
            RegistryType::File,
            "data/registry.db",
            600,
            CacheMode::Sync,
            None
        )
    );
    assert_eq!(
        config.registry.cache_ttl(),
        Some(std::time::Duration::from_secs(600))
    );
    assert_eq!(config.online_store, sqlite("data/online.db"));
    assert_eq!(config.offline_store, OfflineStoreConfig::File);
    assert_eq!(config.batch_engine, BatchEngineConfig::Local);
    assert_eq!(
        config.entity_key_serialization_version,
        EntityKeySerializationVersion::V3
    );
    assert_eq!(config.feature_server, FeatureServerConfig::default());
    assert!(!config.feature_server.enabled);
    assert_eq!(
        config.feature_server.transformation_service_endpoint,
        "localhost:6569"
    );
    assert!(config.feature_server.metrics.online_features);
    assert!(!config.feature_server.metrics.audit_logging);
    assert_eq!(
        config.feature_server.feature_logging.queue_capacity,
        100_000
    );
    assert_eq!(config.materialization, MaterializationConfig::default());
    assert!(config.coerce_tz_aware);
    assert_eq!(config.auth, AuthConfig::NoAuth);
    assert!(config.warnings.is_empty());
    assert_eq!(config.config_source, "feature_store.yaml");
    assert_eq!(config.repo_dir, std::path::Path::new("/repo"));
    assert_eq!(
        config.resolve_path(config.registry.path.expose()),
        std::path::Path::new("/repo/data/registry.db")
    );
}

#[test]
fn registry_forms() {
    use CacheMode::{Sync, Thread};
    use RegistryType::{File, Sql};
    run(&[
        (
            "project: p\nregistry: gs://bucket/registry.pb",
            Want::Registry(registry(File, "gs://bucket/registry.pb", 600, Sync, None)),
        ),
        (
            "project: p\nregistry: {path: reg.db}",
            Want::Registry(registry(File, "reg.db", 600, Sync, None)),
        ),
        (
            "project: p\nregistry:\n  registry_type: file\n  path: s3://b/r.db\n  cache_ttl_seconds: 0\n  cache_mode: thread",
            Want::Registry(registry(File, "s3://b/r.db", 0, Thread, None)),
        ),
        (
            "project: p\nregistry:\n  registry_type: sql\n  path: postgresql://u:${PG_PASSWORD}@db/reg\n  read_path: postgres://u@replica/reg",
            Want::Registry(registry(
                Sql,
                "postgresql://u:s3cret@db/reg",
                600,
                Sync,
                Some("postgres://u@replica/reg"),
            )),
        ),
        (
            "project: p\nregistry: {registry_type: sql, path: \"sqlite:///data/registry.db\"}",
            Want::Registry(registry(Sql, "sqlite:///data/registry.db", 600, Sync, None)),
        ),
        (
            "project: p\nregistry: {registry_type: sql, path: \"postgresql+psycopg://db/reg\"}",
            Want::Registry(registry(
                Sql,
                "postgresql+psycopg://db/reg",
                600,
                Sync,
                None,
            )),
        ),
        (
            "project: p\nregistry:\n  registry_type: remote\n  path: localhost:6570",
            Want::Error(
                "feature_store.yaml:3: registry type `remote` is not supported by Larder (supported: file, sql)",
            ),
        ),
        (
            "project: p\nregistry:\n  registry_type: snowflake.registry\n  path: x",
            Want::Error(
                "feature_store.yaml:3: registry type `snowflake.registry` is not supported by Larder (supported: file, sql)",
            ),
        ),
        (
            "project: p\nregistry:\n  registry_type: sql\n  path: mysql://u:pw@db/reg",
            Want::Error(
                "feature_store.yaml:4: `registry.path` must be a `sqlite:` or `postgresql://` URL for `registry_type: sql`, found `mysql://u:***@db/reg`",
            ),
        ),
        (
            "project: p\nregistry:\n  path: data/registry.db\n  read_path: postgresql://replica/reg",
            Want::Error(
                "feature_store.yaml:4: `registry.read_path` is only valid with `registry_type: sql`",
            ),
        ),
        (
            "project: p\nregistry:\n  cache_ttl_seconds: 60",
            Want::Error("feature_store.yaml:3: invalid `registry`: missing required key `path`"),
        ),
        (
            "project: p\nregistry:\n  path: r.db\n  cache_ttl_seconds: -1",
            Want::Error(
                "feature_store.yaml:4: invalid `registry.cache_ttl_seconds`: expected u64, found integer `-1`",
            ),
        ),
        (
            "project: p\nregistry:\n  path: r.db\n  registry_store_type: S3RegistryStore",
            Want::Error(
                "feature_store.yaml:4: unknown key `registry_store_type` in `registry` (valid keys for type `file`: `registry_type`, `path`, `cache_ttl_seconds`, `cache_mode`, `read_path`)",
            ),
        ),
        (
            "project: p\nregistry: \"\"",
            Want::Error("feature_store.yaml:2: `registry` must not be empty"),
        ),
        (
            "project: p\nregistry: [a]",
            Want::Error(
                "feature_store.yaml:2: invalid `registry`: expected a path or a mapping, found a list",
            ),
        ),
    ]);
}

fn redis() -> RedisOnlineStoreConfig {
    RedisOnlineStoreConfig::default()
}

#[test]
fn online_store_types() {
    run(&[
        (
            "project: p\nonline_store: sqlite",
            Want::Online(sqlite("data/online.db")),
        ),
        (
            "project: p\nonline_store: {}",
            Want::Online(sqlite("data/online.db")),
        ),
        (
            "project: p\nonline_store: {type: sqlite, path: /abs/online.db}",
            Want::Online(sqlite("/abs/online.db")),
        ),
        ("project: p\nonline_store: \"null\"", Want::Online(None)),
        ("project: p\nonline_store: None", Want::Online(None)),
        ("project: p\nonline_store:", Want::Online(None)),
        (
            "project: p\nonline_store: redis",
            Want::Online(Some(OnlineStoreConfig::Redis(redis()))),
        ),
        (
            "project: p\nonline_store:\n  type: redis\n  redis_type: redis_cluster\n  connection_string: \"${REDIS_HOST}:6379,password=pw\"\n  key_ttl_seconds: 3600\n  full_scan_for_deletion: false\n  skip_dedup: true",
            Want::Online(Some(OnlineStoreConfig::Redis(RedisOnlineStoreConfig {
                redis_type: RedisType::RedisCluster,
                connection_string: ConnectionString::new("redis.internal:6379,password=pw"),
                key_ttl_seconds: Some(3600),
                full_scan_for_deletion: false,
                skip_dedup: true,
                ..redis()
            }))),
        ),
        (
            "project: p\nonline_store: {type: redis, redis_type: redis_sentinel, sentinel_master: m}",
            Want::Online(Some(OnlineStoreConfig::Redis(RedisOnlineStoreConfig {
                redis_type: RedisType::RedisSentinel,
                sentinel_master: "m".to_owned(),
                ..redis()
            }))),
        ),
        (
            "project: p\nonline_store: {type: postgres}",
            Want::Online(Some(OnlineStoreConfig::Postgres(
                PostgresOnlineStoreConfig::default(),
            ))),
        ),
        (
            "project: p\nonline_store:\n  type: postgres\n  host: db\n  port: \"6543\"\n  database: feast\n  db_schema: online\n  user: u\n  password: ${PG_PASSWORD}\n  sslmode: verify-full\n  sslrootcert_path: /ca.pem\n  min_conn: 2\n  max_conn: 20\n  conn_type: singleton\n  keepalives_idle: 30",
            Want::Online(Some(OnlineStoreConfig::Postgres(
                PostgresOnlineStoreConfig {
                    connection: PostgresConnectionConfig {
                        host: "db".to_owned(),
                        port: 6543,
                        database: "feast".to_owned(),
                        db_schema: "online".to_owned(),
                        user: "u".to_owned(),
                        password: Some(Secret::new("s3cret")),
                        sslmode: Some("verify-full".to_owned()),
                        sslrootcert_path: Some("/ca.pem".to_owned()),
                        min_conn: 2,
                        max_conn: 20,
                        keepalives_idle: Some(30),
                        ..PostgresConnectionConfig::default()
                    },
                    conn_type: PostgresConnType::Singleton,
                },
            ))),
        ),
        (
            "project: p\nonline_store: {type: remote, path: \"https://fs:6566\", cert: /ca.pem, connection_retries: 5}",
            Want::Online(Some(OnlineStoreConfig::Remote(RemoteOnlineStoreConfig {
                path: "https://fs:6566".to_owned(),
                cert: Some("/ca.pem".to_owned()),
                connection_retries: 5,
                ..RemoteOnlineStoreConfig::default()
            }))),
        ),
        (
            "project: p\nonline_store:\n  type: redis\n  conection_string: localhost:6379",
            Want::Error(
                "feature_store.yaml:4: unknown key `conection_string` in `online_store` (valid keys for type `redis`: `type`, `redis_type`, `connection_string`, `key_ttl_seconds`, `full_scan_for_deletion`, `skip_dedup`, `sentinel_master`)",
            ),
        ),
        (
            "project: p\nonline_store:\n  path: x.db\n  vector_enabled: true\n  similarity: cosine",
            Want::Error(
                "feature_store.yaml:4: unknown key `vector_enabled` in `online_store` (valid keys for type `sqlite`: `type`, `path`, `page_size`)\nfeature_store.yaml:5: unknown key `similarity` in `online_store` (valid keys for type `sqlite`: `type`, `path`, `page_size`)",
            ),
        ),
        (
            "project: p\nonline_store:\n  type: postgres\n  conn_type: pooled\n  hots: db",
            Want::Error(
                "feature_store.yaml:4: invalid `online_store.conn_type`: unknown value `pooled` (expected one of `singleton`, `pool`)\nfeature_store.yaml:5: unknown key `hots` in `online_store` (valid keys for type `postgres`: `type`, `conn_type`, `host`, `port`, `database`, `db_schema`, `user`, `password`, `sslmode`, `sslkey_path`, `sslcert_path`, `sslrootcert_path`, `min_conn`, `max_conn`, `keepalives_idle`)",
            ),
        ),
        (
            "project: p\nonline_store:\n  path: x.db\n  page_size: 1000",
            Want::Error(
                "feature_store.yaml:4: `online_store.page_size` is 1000; SQLite pages are a power of two from 512 to 65536 bytes (1024 by default)",
            ),
        ),
        (
            "project: p\nonline_store:\n  type: postgres\n  min_conn: 5\n  max_conn: 2",
            Want::Error(
                "feature_store.yaml:4: `online_store.min_conn` (5) must not be greater than `max_conn` (2)",
            ),
        ),
        (
            "project: p\nonline_store:\n  type: postgres\n  port: abc",
            Want::Error(
                "feature_store.yaml:4: invalid `online_store.port`: expected u16, found string \"abc\"",
            ),
        ),
        (
            "project: p\nonline_store:\n  type: dynamodb\n  region: us-east-1",
            Want::Error(
                "feature_store.yaml:3: online store type `dynamodb` is not supported by Larder (supported: sqlite, redis, postgres, remote)",
            ),
        ),
        (
            "project: p\nonline_store: bigtable",
            Want::Error(
                "feature_store.yaml:2: online store type `bigtable` is not supported by Larder (supported: sqlite, redis, postgres, remote)",
            ),
        ),
        (
            "project: p\nonline_store: {type: 5}",
            Want::Error(
                "feature_store.yaml:2: invalid `online_store.type`: expected a type name, found an integer `5`",
            ),
        ),
        (
            "project: p\nonline_store: 5",
            Want::Error(
                "feature_store.yaml:2: invalid `online_store`: expected a type name or a mapping, found an integer `5`",
            ),
        ),
    ]);
}

fn pg_offline(connection: PostgresConnectionConfig, mode: EntitySelectMode) -> OfflineStoreConfig {
    OfflineStoreConfig::Postgres(PostgresOfflineStoreConfig {
        connection,
        entity_select_mode: mode,
    })
}

#[test]
fn offline_store_types() {
    run(&[
        (
            "project: p\noffline_store: file",
            Want::Offline(OfflineStoreConfig::File),
        ),
        (
            "project: p\noffline_store: {type: dask}",
            Want::Offline(OfflineStoreConfig::File),
        ),
        (
            "project: p\noffline_store: {type: postgres}",
            Want::Offline(pg_offline(
                PostgresConnectionConfig::default(),
                EntitySelectMode::TempTable,
            )),
        ),
        (
            "project: p\noffline_store:\n  type: postgres\n  host: warehouse\n  password: pw\n  entity_select_mode: embed_query",
            Want::Offline(pg_offline(
                PostgresConnectionConfig {
                    host: "warehouse".to_owned(),
                    password: Some(Secret::new("pw")),
                    ..PostgresConnectionConfig::default()
                },
                EntitySelectMode::EmbedQuery,
            )),
        ),
        (
            "project: p\noffline_store:\n  type: duckdb\n  staging_location: s3://x",
            Want::Error(
                "feature_store.yaml:3: offline store type `duckdb` is not supported by Larder (supported: file, postgres)",
            ),
        ),
        (
            "project: p\noffline_store:\n  type: file\n  path: x",
            Want::Error(
                "feature_store.yaml:4: unknown key `path` in `offline_store` (valid keys for type `file`: `type`)",
            ),
        ),
        (
            "project: p\noffline_store:\n  type: postgres\n  conn_type: pool",
            Want::Error(
                "feature_store.yaml:4: unknown key `conn_type` in `offline_store` (valid keys for type `postgres`: `type`, `entity_select_mode`, `host`, `port`, `database`, `db_schema`, `user`, `password`, `sslmode`, `sslkey_path`, `sslcert_path`, `sslrootcert_path`, `min_conn`, `max_conn`, `keepalives_idle`)",
            ),
        ),
    ]);
}

#[test]
fn batch_engine_types() {
    run(&[
        (
            "project: p\nbatch_engine: local",
            Want::Engine(BatchEngineConfig::Local),
        ),
        (
            "project: p\nbatch_engine_config: {type: local}",
            Want::Engine(BatchEngineConfig::Local),
        ),
        (
            "project: p\nbatch_engine: k8s",
            Want::Engine(BatchEngineConfig::K8s(K8sEngineConfig::default())),
        ),
        (
            "project: p\nbatch_engine:\n  type: k8s\n  namespace: features\n  image: ghcr.io/larder/larder:1\n  env:\n    - {name: AWS_REGION, value: eu-west-1}\n  image_pull_secrets: [regcred]\n  resources: {limits: {memory: 2Gi}}\n  service_account_name: larder\n  annotations: {a: b}\n  labels: {team: ml}\n  max_parallelism: 4\n  synchronous: true\n  retry_limit: 0\n  mini_batch_size: 500\n  active_deadline_seconds: 600\n  job_batch_size: 10\n  print_pod_logs_on_failure: false\n  shards: 8",
            Want::Engine(BatchEngineConfig::K8s(K8sEngineConfig {
                namespace: "features".to_owned(),
                image: Some("ghcr.io/larder/larder:1".to_owned()),
                env: vec![serde_json::json!({"name": "AWS_REGION", "value": "eu-west-1"})],
                image_pull_secrets: vec!["regcred".to_owned()],
                resources: Some(serde_json::json!({"limits": {"memory": "2Gi"}})),
                service_account_name: Some("larder".to_owned()),
                annotations: BTreeMap::from([("a".to_owned(), "b".to_owned())]),
                labels: BTreeMap::from([("team".to_owned(), "ml".to_owned())]),
                max_parallelism: 4,
                synchronous: true,
                retry_limit: 0,
                mini_batch_size: 500,
                active_deadline_seconds: 600,
                job_batch_size: 10,
                print_pod_logs_on_failure: false,
                shards: Some(8),
            })),
        ),
        (
            "project: p\nbatch_engine:\n  type: k8s\n  namespce: x",
            Want::Error(
                "feature_store.yaml:4: unknown key `namespce` in `batch_engine` (valid keys for type `k8s`: `type`, `namespace`, `image`, `env`, `image_pull_secrets`, `resources`, `service_account_name`, `annotations`, `labels`, `max_parallelism`, `synchronous`, `retry_limit`, `mini_batch_size`, `active_deadline_seconds`, `job_batch_size`, `print_pod_logs_on_failure`, `shards`)",
            ),
        ),
        (
            "project: p\nbatch_engine:\n  type: local\n  backend: polars",
            Want::Error(
                "feature_store.yaml:4: unknown key `backend` in `batch_engine` (valid keys for type `local`: `type`)",
            ),
        ),
        (
            "project: p\nbatch_engine: spark.engine",
            Want::Error(
                "feature_store.yaml:2: batch engine type `spark.engine` is not supported by Larder (supported: local, k8s)",
            ),
        ),
        (
            "project: p\nbatch_engine: local\nbatch_engine_config: k8s",
            Want::Error(
                "feature_store.yaml:3: `batch_engine_config` repeats `batch_engine` (they are the same setting); keep one",
            ),
        ),
    ]);
}

#[test]
fn other_top_level_settings() {
    run(&[
        (
            "project: p\nfeature_server:\n  enabled: true\n  metrics: {enabled: true, push: false}\n  feature_logging: {enabled: true, queue_capacity: 10}\n  offline_push_batching_enabled: true\n  offline_push_batching_batch_size: 100\n  offline_push_batching_batch_interval_seconds: 5",
            Want::FeatureServer({
                let mut f = FeatureServerConfig {
                    enabled: true,
                    offline_push_batching_enabled: true,
                    offline_push_batching_batch_size: Some(100),
                    offline_push_batching_batch_interval_seconds: Some(5),
                    ..FeatureServerConfig::default()
                };
                f.metrics.enabled = true;
                f.metrics.push = false;
                f.feature_logging.enabled = true;
                f.feature_logging.queue_capacity = 10;
                f
            }),
        ),
        (
            "project: p\nfeature_server: {type: local}",
            Want::FeatureServer(FeatureServerConfig::default()),
        ),
        (
            "project: p\nfeature_server:\n  type: mcp\n  mcp_enabled: true",
            Want::Error(
                "feature_store.yaml:3: feature server type `mcp` is not supported by Larder (supported: local)",
            ),
        ),
        (
            "project: p\nfeature_server:\n  metrics:\n    enabled: true\n    latency: true",
            Want::Error(
                "feature_store.yaml:5: unknown key `latency` in `feature_server.metrics` (valid keys: `enabled`, `resource`, `request`, `online_features`, `push`, `materialization`, `freshness`, `offline_features`, `audit_logging`)",
            ),
        ),
        (
            "project: p\nmaterialization: {pull_latest_features: true, online_write_batch_size: 500}",
            Want::Materialization(MaterializationConfig {
                pull_latest_features: true,
                online_write_batch_size: Some(500),
            }),
        ),
        (
            "project: p\nmaterialization:\n  online_write_batch_size: 0",
            Want::Error(
                "feature_store.yaml:3: `materialization.online_write_batch_size` must be greater than 0",
            ),
        ),
        (
            "project: p\nentity_key_serialization_version: 2",
            Want::Version(EntityKeySerializationVersion::V2),
        ),
        (
            "project: p\nentity_key_serialization_version: 2",
            Want::Warnings(&[
                "feature_store.yaml:2: `entity_key_serialization_version: 2` is deprecated; use 3 for new repos (Larder still reads version 2 keys)",
            ]),
        ),
        (
            "project: p\nentity_key_serialization_version: 1",
            Want::Error(
                "feature_store.yaml:2: `entity_key_serialization_version` must be 2 or 3, found 1",
            ),
        ),
        ("project: p\nprovider: gcp", Want::Provider(Provider::Gcp)),
        (
            "project: p\nprovider: unity_catalog",
            Want::Error(
                "feature_store.yaml:2: invalid `provider`: unknown value `unity_catalog` (expected one of `local`, `gcp`, `aws`, `azure`)",
            ),
        ),
        (
            "project: p\nauth:\n  type: oidc\n  client_id: x",
            Want::Error(
                "feature_store.yaml:3: auth type `oidc` is not supported yet (supported: no_auth)",
            ),
        ),
        (
            "project: p\nauth: {type: no_auth, user_token: x}",
            Want::Error(
                "feature_store.yaml:2: unknown key `user_token` in `auth` (valid keys for type `no_auth`: `type`)",
            ),
        ),
        (
            "project: p\nflags:\n  alpha: true\nopenlineage: {}\n",
            Want::Warnings(&[
                "feature_store.yaml:2: unknown key `flags` ignored",
                "feature_store.yaml:4: unknown key `openlineage` ignored",
            ]),
        ),
    ]);
}

#[test]
fn project_names() {
    run(&[
        ("project: driver_ranking", Want::Project("driver_ranking")),
        ("project: Proj2", Want::Project("Proj2")),
        (
            "project: my-proj\nonline_store: redis",
            Want::Project("my-proj"),
        ),
        (
            "project: my-proj\nonline_store: none",
            Want::Project("my-proj"),
        ),
        (
            "project: my-proj",
            Want::Error(
                "feature_store.yaml:1: project name `my-proj` contains `-`, which the sqlite online store cannot use in table names; use `_` instead",
            ),
        ),
        (
            "project: my-proj\nonline_store: {type: redis, bogus: 1}",
            Want::Error(
                "feature_store.yaml:2: unknown key `bogus` in `online_store` (valid keys for type `redis`: `type`, `redis_type`, `connection_string`, `key_ttl_seconds`, `full_scan_for_deletion`, `skip_dedup`, `sentinel_master`)",
            ),
        ),
        (
            "project: _private\nonline_store: redis",
            Want::Error("feature_store.yaml:1: project name `_private` must not start with `_`"),
        ),
        (
            "project: -x\nonline_store: redis",
            Want::Error("feature_store.yaml:1: project name `-x` must not start with `-`"),
        ),
        (
            "project: my.proj",
            Want::Error(
                "feature_store.yaml:1: project name `my.proj` contains `.`; use only letters, digits, `_` and `-`",
            ),
        ),
        (
            "project: \"\"",
            Want::Error("feature_store.yaml:1: project name must not be empty"),
        ),
        (
            "registry: r.db",
            Want::Error("feature_store.yaml: missing required key `project`"),
        ),
        (
            "",
            Want::Error("feature_store.yaml: missing required key `project`"),
        ),
        (
            "- project: p",
            Want::Error(
                "feature_store.yaml:1: expected a mapping of settings at the top level, found a list",
            ),
        ),
    ]);
}

#[test]
fn yaml_and_substitution_errors() {
    run(&[
        (
            "project: p\nonline_store:\n  type: redis\n   path: x\n",
            Want::Error("feature_store.yaml:4:8: mapping values are not allowed in this context"),
        ),
        (
            "project: p\nproject: q\n",
            Want::Error(
                "feature_store.yaml:2:1: duplicate mapping key `project` is not allowed here",
            ),
        ),
        (
            "project: p\n# registry: ${OLD}\nonline_store:\n  type: redis\n  connection_string: ${REDIS_URL}\nregistry: $REG/registry.db\n",
            Want::Error(
                "feature_store.yaml:5: environment variable `REDIS_URL` is not set (give a default with `${REDIS_URL:-value}` or set it)\nfeature_store.yaml:6: environment variable `REG` is not set (give a default with `${REG:-value}` or set it)",
            ),
        ),
        (
            "project: p\n\n\nonline_store:\n  type: redis\n  connection_string: ${REDIS_HOST}:6379\n  bogus: 1\n",
            Want::Error(
                "feature_store.yaml:7: unknown key `bogus` in `online_store` (valid keys for type `redis`: `type`, `redis_type`, `connection_string`, `key_ttl_seconds`, `full_scan_for_deletion`, `skip_dedup`, `sentinel_master`)",
            ),
        ),
        (
            "project: p\nonline_store:\n  connection_string: ${MISSING:-localhost:6379}\n  type: ${STORE_TYPE:-redis}\n",
            Want::Online(Some(OnlineStoreConfig::Redis(redis()))),
        ),
    ]);
}

#[test]
fn every_problem_is_reported_in_line_order() {
    let yaml = "\
online_store:
  type: redis
  bogus: 1
offline_store: duckdb
entity_key_serialization_version: 4
project: -p
";
    let expected = "\
feature_store.yaml:3: unknown key `bogus` in `online_store` (valid keys for type `redis`: `type`, `redis_type`, `connection_string`, `key_ttl_seconds`, `full_scan_for_deletion`, `skip_dedup`, `sentinel_master`)
feature_store.yaml:4: offline store type `duckdb` is not supported by Larder (supported: file, postgres)
feature_store.yaml:5: `entity_key_serialization_version` must be 2 or 3, found 4
feature_store.yaml:6: project name `-p` must not start with `-`";
    check(yaml, &Want::Error(expected));
}

#[test]
fn debug_output_hides_secrets() {
    let yaml = "\
project: p
registry:
  registry_type: sql
  path: postgresql://u:${PG_PASSWORD}@db/reg
online_store:
  type: postgres
  password: ${PG_PASSWORD}
offline_store:
  type: postgres
  password: ${PG_PASSWORD}
";
    let config = parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("postgresql://u:***@db/reg"), "{debug}");
    assert_eq!(
        config.registry.path.expose(),
        "postgresql://u:s3cret@db/reg"
    );

    let redis = parse(
        "project: p\nonline_store: {type: redis, connection_string: \"r:6379,password=s3cret\"}",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let debug = format!("{redis:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("r:6379,password=***"), "{debug}");
}
