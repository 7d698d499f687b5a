//! Where the config comes from: `-f`, `FEATURE_STORE_YAML_BASE64`, the repo dir; and
//! real-world files (Feast's `feast init` output and the benchmark configs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use larder_config::{
    ConfigError, LoadOptions, OfflineStoreConfig, OnlineStoreConfig, RedisOnlineStoreConfig,
    RegistryConfig, RepoConfig, SqliteOnlineStoreConfig, load,
};

use crate::{parse, test_env};

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn load_with(opts: &LoadOptions, vars: &HashMap<String, String>) -> Result<RepoConfig, String> {
    let env = |k: &str| vars.get(k).cloned();
    load(opts, &env).map_err(|e| e.to_string())
}

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    /// A repo dir holding `feature_store.yaml` (when given) and `other.yaml`.
    fn new(feature_store_yaml: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        if let Some(text) = feature_store_yaml {
            write(&dir.path().join("feature_store.yaml"), text);
        }
        write(&dir.path().join("other.yaml"), "project: from_f\n");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Which source a case loads from, and what it should produce.
struct Case {
    name: &'static str,
    repo_file: Option<&'static str>,
    use_f: bool,
    base64: Option<String>,
    /// `Ok(project)` or `Err(message)` where `{repo}` stands for the repo dir.
    want: Result<&'static str, &'static str>,
    /// Expected `config_source`, `{repo}` standing for the repo dir.
    source: &'static str,
}

#[test]
fn source_precedence() {
    let cases = vec![
        Case {
            name: "repo file",
            repo_file: Some("project: from_repo\n"),
            use_f: false,
            base64: None,
            want: Ok("from_repo"),
            source: "{repo}/feature_store.yaml",
        },
        Case {
            name: "-f beats base64 and repo file",
            repo_file: Some("project: from_repo\n"),
            use_f: true,
            base64: Some(b64("project: from_base64\n")),
            want: Ok("from_f"),
            source: "{repo}/other.yaml",
        },
        Case {
            name: "base64 beats repo file",
            repo_file: Some("project: from_repo\n"),
            use_f: false,
            base64: Some(b64("project: from_base64\n")),
            want: Ok("from_base64"),
            source: "FEATURE_STORE_YAML_BASE64",
        },
        Case {
            name: "base64 wrapped over lines, without padding",
            repo_file: None,
            use_f: false,
            base64: Some({
                let encoded = b64("project: wrapped_b64\n");
                let trimmed = encoded.trim_end_matches('=');
                format!("{}\n{}\n", &trimmed[..8], &trimmed[8..])
            }),
            want: Ok("wrapped_b64"),
            source: "FEATURE_STORE_YAML_BASE64",
        },
        Case {
            name: "empty base64 is ignored",
            repo_file: Some("project: from_repo\n"),
            use_f: false,
            base64: Some(String::new()),
            want: Ok("from_repo"),
            source: "{repo}/feature_store.yaml",
        },
        Case {
            name: "bad base64",
            repo_file: Some("project: from_repo\n"),
            use_f: false,
            base64: Some("not base64!".to_owned()),
            want: Err(
                "`FEATURE_STORE_YAML_BASE64` is not valid base64 (invalid character `!` at position 9)",
            ),
            source: "",
        },
        Case {
            name: "base64 of non-UTF-8 bytes",
            repo_file: None,
            use_f: false,
            base64: Some(base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe])),
            want: Err("FEATURE_STORE_YAML_BASE64: the config is not valid UTF-8 text"),
            source: "",
        },
        Case {
            name: "base64 config errors name the variable",
            repo_file: None,
            use_f: false,
            base64: Some(b64("project: p\nregistry: $NOPE\n")),
            want: Err(
                "FEATURE_STORE_YAML_BASE64:2: environment variable `NOPE` is not set (give a default with `${NOPE:-value}` or set it)",
            ),
            source: "",
        },
        Case {
            name: "missing file",
            repo_file: None,
            use_f: false,
            base64: None,
            want: Err(
                "`{repo}/feature_store.yaml` not found (run `larder init` to create a feature repo, or pass `-c <repo dir>` or `-f <config file>`)",
            ),
            source: "",
        },
    ];
    for case in cases {
        let repo = Repo::new(case.repo_file);
        let repo_dir = repo.path().display().to_string();
        let mut opts = LoadOptions::new(repo.path());
        if case.use_f {
            opts = opts.with_yaml_file(repo.path().join("other.yaml"));
        }
        let mut vars = test_env();
        if let Some(encoded) = &case.base64 {
            vars.insert("FEATURE_STORE_YAML_BASE64".to_owned(), encoded.clone());
        }
        let got = load_with(&opts, &vars);
        match (&got, case.want) {
            (Ok(config), Ok(project)) => {
                assert_eq!(config.project.as_str(), project, "case: {}", case.name);
                assert_eq!(
                    config.config_source,
                    case.source.replace("{repo}", &repo_dir),
                    "case: {}",
                    case.name
                );
                assert_eq!(config.repo_dir, repo.path(), "case: {}", case.name);
            }
            (Err(err), Err(message)) => {
                assert_eq!(
                    *err,
                    message.replace("{repo}", &repo_dir),
                    "case: {}",
                    case.name
                );
            }
            _ => panic!("case {}: got {got:?}, want {:?}", case.name, case.want),
        }
    }
}

#[test]
fn empty_repo_dir_means_the_current_directory() {
    let vars = test_env();
    let env = |k: &str| vars.get(k).cloned();
    let cwd = std::env::current_dir().unwrap_or_else(|e| panic!("cwd: {e}"));
    // The crate directory has no feature_store.yaml.
    match load(&LoadOptions::default(), &env) {
        Err(ConfigError::NotFound { path }) => assert_eq!(path, cwd.join("feature_store.yaml")),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn missing_f_file_is_not_found() {
    let repo = Repo::new(Some("project: p\n"));
    let missing = repo.path().join("nope.yaml");
    let opts = LoadOptions::new(repo.path()).with_yaml_file(&missing);
    let vars = test_env();
    let env = |k: &str| vars.get(k).cloned();
    match load(&opts, &env) {
        Err(ConfigError::NotFound { path }) => assert_eq!(path, missing),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn relative_paths_resolve_against_repo_dir_even_for_base64() {
    let repo = Repo::new(None);
    let yaml =
        "project: p\nregistry: data/registry.db\nonline_store: {type: sqlite, path: online.db}\n";
    let mut vars = test_env();
    vars.insert("FEATURE_STORE_YAML_BASE64".to_owned(), b64(yaml));
    let config = load_with(&LoadOptions::new(repo.path()), &vars).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.resolve_path(config.registry.path.expose()),
        repo.path().join("data/registry.db")
    );
    let cases: &[(&str, PathBuf)] = &[
        ("online.db", repo.path().join("online.db")),
        ("/abs/online.db", PathBuf::from("/abs/online.db")),
        (
            "s3://bucket/registry.db",
            PathBuf::from("s3://bucket/registry.db"),
        ),
        ("gs://bucket/r.pb", PathBuf::from("gs://bucket/r.pb")),
        ("memory://", PathBuf::from("memory://")),
        ("postgresql://db/reg", PathBuf::from("postgresql://db/reg")),
        (
            "sqlite:///tmp/reg.db",
            PathBuf::from("sqlite:///tmp/reg.db"),
        ),
        ("C:data", repo.path().join("C:data")),
    ];
    for (path, want) in cases {
        assert_eq!(&config.resolve_path(path), want, "path: {path}");
    }
}

/// `feast init`'s default file (feast-behaviour.md 1.9).
const FEAST_INIT: &str = "\
project: my_project
registry: data/registry.db
provider: local
online_store: {type: sqlite, path: data/online_store.db}
entity_key_serialization_version: 3
auth: {type: no_auth}
";

/// Copies of `bench/feast/feature_repo/*.yaml`, the configs Feast is benchmarked with.
const BENCH_SQLITE: &str = "\
# sqlite online store + file (dask) offline store. Paths come from $BENCHDATA.
project: feast_bench
registry: ${BENCHDATA}/registry_sqlite.db
provider: local
online_store:
    type: sqlite
    path: ${BENCHDATA}/online_store.db
offline_store:
    type: file
entity_key_serialization_version: 3
auth:
    type: no_auth
";

const BENCH_REDIS: &str = "\
# redis online store (127.0.0.1:6379) + file (dask) offline store.
project: feast_bench
registry: ${BENCHDATA}/registry_redis.db
provider: local
online_store:
    type: redis
    connection_string: \"127.0.0.1:6379\"
offline_store:
    type: file
entity_key_serialization_version: 3
auth:
    type: no_auth
";

const BENCH_DUCKDB: &str = "\
# sqlite online store + duckdb (ibis) offline store.
project: feast_bench
registry: ${BENCHDATA}/registry_duckdb.db
provider: local
online_store:
    type: sqlite
    path: ${BENCHDATA}/online_store_duckdb.db
offline_store:
    type: duckdb
entity_key_serialization_version: 3
auth:
    type: no_auth
";

#[test]
fn real_world_files() {
    let config = parse(FEAST_INIT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.project.as_str(), "my_project");
    assert_eq!(config.registry, RegistryConfig::file("data/registry.db"));
    assert_eq!(
        config.online_store,
        Some(OnlineStoreConfig::Sqlite(SqliteOnlineStoreConfig {
            path: "data/online_store.db".to_owned(),
            page_size: None,
        }))
    );
    assert!(config.warnings.is_empty());

    let config = parse(BENCH_SQLITE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.project.as_str(), "feast_bench");
    assert_eq!(
        config.registry.path.expose(),
        "/bench/data/registry_sqlite.db"
    );
    assert_eq!(
        config.online_store,
        Some(OnlineStoreConfig::Sqlite(SqliteOnlineStoreConfig {
            path: "/bench/data/online_store.db".to_owned(),
            page_size: None,
        }))
    );
    assert_eq!(config.offline_store, OfflineStoreConfig::File);

    let config = parse(BENCH_REDIS).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.online_store,
        Some(OnlineStoreConfig::Redis(RedisOnlineStoreConfig {
            connection_string: larder_config::ConnectionString::new("127.0.0.1:6379"),
            ..RedisOnlineStoreConfig::default()
        }))
    );

    assert_eq!(
        parse(BENCH_DUCKDB).map(|c| c.project),
        Err(
            "feature_store.yaml:9: offline store type `duckdb` is not supported by Larder (supported: file, postgres)"
                .to_owned()
        )
    );
}

#[test]
fn bench_copies_match_the_originals_when_present() {
    // The copies above keep this test independent of files outside the repo; when the
    // originals are around, make sure the copies have not drifted.
    let dir = Path::new("/work/shared/bench/feast/feature_repo");
    for (name, copy) in [
        ("feature_store.yaml", BENCH_SQLITE),
        ("feature_store_redis.yaml", BENCH_REDIS),
        ("feature_store_duckdb.yaml", BENCH_DUCKDB),
    ] {
        if let Ok(original) = std::fs::read_to_string(dir.join(name)) {
            assert_eq!(original, copy, "{name} drifted");
        }
    }
}

#[test]
fn the_source_text_is_read_again_unsubstituted() {
    let yaml = "project: p\nonline_store:\n  type: redis\n  connection_string: ${REDIS_URL:-localhost:6379}\n";
    let repo = Repo::new(Some(yaml));
    let vars = test_env();
    let env = |k: &str| vars.get(k).cloned();
    let config = load(&LoadOptions::new(repo.path()), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        larder_config::read_source(&config, &env).unwrap_or_else(|e| panic!("{e}")),
        yaml,
        "`${{VAR}}` references stay for the reader's own environment"
    );
    let mut vars = test_env();
    vars.insert("FEATURE_STORE_YAML_BASE64".to_owned(), b64(yaml));
    let env = |k: &str| vars.get(k).cloned();
    let config = load(&LoadOptions::new(repo.path()), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.config_source, "FEATURE_STORE_YAML_BASE64");
    assert_eq!(
        larder_config::read_source(&config, &env).unwrap_or_else(|e| panic!("{e}")),
        yaml
    );
}
