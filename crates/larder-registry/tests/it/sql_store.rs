//! Tests of what only the SQL registry backends do: schema creation on first use (also by
//! racing processes), read replicas that lag, URL and connection errors.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder_registry::store::{Generation, RegistryStore, StoreError, open_sql_store};
use larder_registry::{Registry, RegistryError};
use larder_spec::{Definitions, LoadOptions, parse_definitions};

#[cfg(feature = "postgres")]
use crate::sql_fixtures::PgSchema;

type Open<'a> = &'a (dyn Fn() -> Arc<dyn RegistryStore> + Send + Sync);

/// Runs a case against SQLite always and against Postgres when it is configured.
macro_rules! sql_cases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (_dir, open) = crate::sql_fixtures::sqlite_fixture();
                    super::$case(&open).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some((_schema, open)) = crate::sql_fixtures::postgres_fixture() else {
                        return;
                    };
                    super::$case(&open).await;
                }
            )*
        }
    };
}

sql_cases!(
    concurrent_first_use_creates_one_table_and_one_winner,
    delete_keeps_generations_increasing,
    foreign_generation_is_an_internal_error,
);

/// Fresh instances (as fresh processes) all start on a database without the table: each
/// creates it if needed, none fails, exactly one creating commit wins.
async fn concurrent_first_use_creates_one_table_and_one_winner(open: Open<'_>) {
    const STARTERS: usize = 6;
    let barrier = Arc::new(tokio::sync::Barrier::new(STARTERS));
    let starters: Vec<_> = (0..STARTERS)
        .map(|i| {
            let (store, barrier) = (open(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let loaded = store.load().await.map(|blob| blob.is_none());
                let committed = store
                    .commit(None, Bytes::from(format!("starter {i}")))
                    .await;
                (loaded, committed)
            })
        })
        .collect();
    let mut winners = 0;
    for starter in starters {
        let (loaded, committed) = starter.await.expect("starter task");
        loaded.expect("first load");
        match committed {
            Ok(_) => winners += 1,
            Err(err) if err.is_conflict() => {}
            Err(err) => panic!("first commit failed: {err}"),
        }
    }
    assert_eq!(winners, 1);
    assert!(open().load().await.expect("load").is_some());
}

/// A deleted registry keeps its row (NULL blob) so a generation is never issued twice: a
/// writer holding a generation from before the delete conflicts even after re-creation.
async fn delete_keeps_generations_increasing(open: Open<'_>) {
    let store = open();
    let g1 = store
        .commit(None, Bytes::from_static(b"one"))
        .await
        .expect("create");
    store.delete().await.expect("delete");
    let g2 = store
        .commit(None, Bytes::from_static(b"two"))
        .await
        .expect("re-create");
    assert_ne!(g1, g2);
    let err = open()
        .commit(Some(&g1), Bytes::from_static(b"stale"))
        .await
        .expect_err("stale generation from before the delete");
    assert!(err.is_conflict(), "{err}");
    let generation = |g: &Generation| g.0.parse::<i64>().expect("numeric generation");
    assert!(generation(&g2) > generation(&g1) + 1, "{g1} then {g2}");
}

async fn foreign_generation_is_an_internal_error(open: Open<'_>) {
    let store = open();
    store
        .commit(None, Bytes::from_static(b"one"))
        .await
        .expect("create");
    let foreign = Generation("fnv1a128-d228cb696f1a8caf78912b704e4a8964-1".to_string());
    let err = store
        .commit(Some(&foreign), Bytes::from_static(b"two"))
        .await
        .expect_err("foreign generation");
    assert!(matches!(err, StoreError::Internal { .. }), "{err:?}");
    assert!(
        err.to_string().contains("not issued by a SQL registry"),
        "{err}"
    );
}

// --- Read replicas ---------------------------------------------------------------------------

/// Two SQLite files: the primary, and a "replica" frozen at generation 1 of the same row,
/// as a replica that stopped replicating would be.
struct StaleReplica {
    dir: tempfile::TempDir,
}

impl StaleReplica {
    fn primary_url(&self) -> String {
        format!("sqlite:///{}", self.dir.path().join("primary.db").display())
    }

    fn replica_url(&self) -> String {
        format!("sqlite:///{}", self.dir.path().join("replica.db").display())
    }

    fn open(&self) -> Arc<dyn RegistryStore> {
        open_sql_store(
            &self.primary_url(),
            Some(&self.replica_url()),
            Path::new("/"),
        )
        .expect("open with replica")
    }

    fn open_primary(&self) -> Arc<dyn RegistryStore> {
        open_sql_store(&self.primary_url(), None, Path::new("/")).expect("open primary")
    }

    fn open_replica_as_primary(&self) -> Arc<dyn RegistryStore> {
        open_sql_store(&self.replica_url(), None, Path::new("/")).expect("open replica file")
    }
}

fn stale_replica() -> StaleReplica {
    StaleReplica {
        dir: tempfile::tempdir().expect("temp dir"),
    }
}

#[tokio::test]
async fn a_stale_replica_never_hides_what_this_process_saw() {
    let setup = stale_replica();
    setup
        .open_replica_as_primary()
        .commit(None, Bytes::from_static(b"v1"))
        .await
        .expect("replica v1");
    let primary = setup.open_primary();
    let mut generation = None;
    for blob in ["v1", "v2", "v3"] {
        generation = Some(
            primary
                .commit(generation.as_ref(), Bytes::from(blob))
                .await
                .expect("primary commit"),
        );
    }
    let store = setup.open();
    // A fresh reader gets the replica's version: replicas lag, that is their nature.
    let first = store.load().await.expect("load").expect("blob");
    assert_eq!(first.bytes, Bytes::from_static(b"v1"));
    // The writer's view is the primary's.
    let latest = store
        .load_latest()
        .await
        .expect("load latest")
        .expect("blob");
    assert_eq!(latest.bytes, Bytes::from_static(b"v3"));
    assert_eq!(Some(latest.generation.clone()), generation);
    // Having seen v3, this instance never goes back to v1.
    let again = store.load().await.expect("load").expect("blob");
    assert_eq!(again.bytes, Bytes::from_static(b"v3"));
}

#[tokio::test]
async fn naive_read_modify_write_through_a_stale_replica_converges() {
    let setup = stale_replica();
    setup
        .open_replica_as_primary()
        .commit(None, Bytes::from_static(b"count=0"))
        .await
        .expect("replica");
    let primary = setup.open_primary();
    let g = primary
        .commit(None, Bytes::from_static(b"count=0"))
        .await
        .expect("create");
    primary
        .commit(Some(&g), Bytes::from_static(b"count=1"))
        .await
        .expect("update");
    // load → commit → (conflict) → load → commit, with plain `load`: the conflict teaches the
    // store the primary's generation, so the second load reads the primary.
    let store = setup.open();
    let mut conflicts = 0;
    loop {
        let blob = store.load().await.expect("load").expect("blob");
        let count: u64 = std::str::from_utf8(&blob.bytes)
            .ok()
            .and_then(|t| t.strip_prefix("count="))
            .and_then(|n| n.parse().ok())
            .expect("counter");
        match store
            .commit(
                Some(&blob.generation),
                Bytes::from(format!("count={}", count + 1)),
            )
            .await
        {
            Ok(_) => break,
            Err(err) if err.is_conflict() && conflicts < 3 => conflicts += 1,
            Err(err) => panic!("no progress after {conflicts} conflicts: {err}"),
        }
    }
    assert_eq!(conflicts, 1);
    let latest = setup
        .open_primary()
        .load()
        .await
        .expect("load")
        .expect("blob");
    assert_eq!(latest.bytes, Bytes::from_static(b"count=2"));
}

const DEFS_V1: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: stats, type: file, path: data/stats.parquet, timestamp_field: ts}
feature_views:
  - name: hourly
    entities: [driver]
    source: stats
    schema: [{name: conv_rate, dtype: Float32}]
"#;

fn defs(text: &str) -> Definitions {
    let options = LoadOptions {
        repo_dir: "/unused".into(),
        config_file: None,
        project: "p".to_string(),
        project_description: None,
        validate_sources: false,
    };
    parse_definitions(&[("f.yaml".into(), text.to_string())], &options).expect("definitions")
}

#[tokio::test]
async fn apply_through_a_stale_replica_commits_at_the_first_attempt() {
    let setup = stale_replica();
    let v1 = defs(DEFS_V1);
    let v2 = defs(&DEFS_V1.replace("conv_rate", "acc_rate"));
    let v3 = defs(&format!(
        "{DEFS_V1}  - name: daily\n    entities: [driver]\n    source: stats\n    schema: [{{name: trips, dtype: Int64}}]\n"
    ));
    let ttl = Duration::from_secs(600);
    // The replica stopped at v1; the primary went on to v2.
    Registry::new(setup.open_replica_as_primary(), ttl)
        .apply(&v1, &Default::default())
        .await
        .expect("replica v1");
    let primary = Registry::new(setup.open_primary(), ttl);
    primary.apply(&v1, &Default::default()).await.expect("v1");
    primary.apply(&v2, &Default::default()).await.expect("v2");

    let registry = Registry::new(setup.open(), ttl);
    // Plans are made against the primary, not the replica.
    let plan = registry.plan(&v2, &Default::default()).await.expect("plan");
    assert!(plan.is_empty(), "{plan}");
    let outcome = registry
        .apply(&v3, &Default::default())
        .await
        .expect("apply");
    assert_eq!(outcome.attempts, 1);
    assert_eq!(outcome.version, 3);
    // Serving reads after the apply see it, though the replica never will.
    let snapshot = registry.refresh().await.expect("refresh");
    assert_eq!(snapshot.state.version, 3);
    let fresh_reader = Registry::new(setup.open(), ttl);
    let stale = fresh_reader.refresh().await.expect("refresh");
    assert_eq!(stale.state.version, 1, "the replica is expected to lag");
    let latest = fresh_reader.refresh_latest().await.expect("refresh latest");
    assert_eq!(latest.state.version, 3);
}

#[tokio::test]
async fn an_unreadable_replica_falls_back_to_the_primary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = format!(
        "sqlite:///{}",
        dir.path().join("no/such/replica.db").display()
    );
    let store = open_sql_store("sqlite:///primary.db", Some(&missing), dir.path()).expect("open");
    let generation = store
        .commit(None, Bytes::from_static(b"v1"))
        .await
        .expect("commit");
    let fresh = open_sql_store("sqlite:///primary.db", Some(&missing), dir.path()).expect("open");
    let loaded = fresh.load().await.expect("load").expect("blob");
    assert_eq!(loaded.generation, generation);
    // The replica is only read, never created.
    assert!(!dir.path().join("no").exists());
}

// --- SQLite specifics ------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_creates_missing_parent_directories() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_sql_store("sqlite:///a/b/c/registry.db", None, dir.path()).expect("open");
    assert_eq!(
        store.location(),
        format!(
            "sqlite:///{}",
            dir.path().join("a/b/c/registry.db").display()
        )
    );
    store
        .commit(None, Bytes::from_static(b"{}"))
        .await
        .expect("commit");
    assert!(dir.path().join("a/b/c/registry.db").is_file());
}

#[tokio::test]
async fn sqlite_parent_that_is_a_file_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("data"), b"x").expect("write");
    let store = open_sql_store("sqlite:///data/registry.db", None, dir.path()).expect("open");
    let err = store
        .commit(None, Bytes::from_static(b"{}"))
        .await
        .expect_err("must fail");
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    let message = err.to_string();
    let expected = format!(
        "cannot create the parent directory of registry at `sqlite:///{}`",
        dir.path().join("data/registry.db").display()
    );
    assert!(message.starts_with(&expected), "{message}");
}

#[tokio::test]
async fn registries_sharing_a_database_are_separate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let open = |query: &str| {
        open_sql_store(&format!("sqlite:///shared.db{query}"), None, dir.path()).expect("open")
    };
    let (default, staging, other_table) = (open(""), open("?name=staging"), open("?table=reg_b"));
    default
        .commit(None, Bytes::from_static(b"default"))
        .await
        .expect("commit");
    assert!(staging.load().await.expect("load").is_none());
    assert!(other_table.load().await.expect("load").is_none());
    staging
        .commit(None, Bytes::from_static(b"staging"))
        .await
        .expect("commit");
    other_table
        .commit(None, Bytes::from_static(b"other"))
        .await
        .expect("commit");
    let bytes = |store: Arc<dyn RegistryStore>| async move {
        store.load().await.expect("load").expect("blob").bytes
    };
    assert_eq!(bytes(open("")).await, Bytes::from_static(b"default"));
    assert_eq!(
        bytes(open("?name=staging")).await,
        Bytes::from_static(b"staging")
    );
    assert_eq!(
        bytes(open("?table=reg_b")).await,
        Bytes::from_static(b"other")
    );
}

#[tokio::test]
async fn not_a_larder_registry_table_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = rusqlite::Connection::open(dir.path().join("r.db")).expect("open");
    conn.execute_batch("CREATE TABLE larder_registry (something TEXT)")
        .expect("create");
    drop(conn);
    let store = open_sql_store("sqlite:///r.db", None, dir.path()).expect("open");
    let err = store.load().await.expect_err("wrong table");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("r.db") && message.contains("is not a Larder registry table"),
        "{message}"
    );
}

const CHILD_ENV: &str = "LARDER_TEST_SQL_REGISTRY_CHILD_DB";
const CHILD_INCREMENTS: u64 = 15;

/// Two OS processes start at once on a SQLite registry that does not exist yet (both create
/// the file and table) and increment one counter: no error, no lost update.
#[test]
fn separate_processes_share_a_sqlite_registry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:///{}", dir.path().join("new/registry.db").display());
    crate::store_conformance::run_child_tests(
        "sql_store::sqlite_child_process_increments",
        CHILD_ENV,
        std::ffi::OsStr::new(&url),
        2,
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let blob = runtime
        .block_on(
            open_sql_store(&url, None, Path::new("/"))
                .expect("open")
                .load(),
        )
        .expect("load")
        .expect("counter");
    assert_eq!(
        crate::store_conformance::parse_counter(&blob.bytes),
        2 * CHILD_INCREMENTS
    );
}

/// Run only by `separate_processes_share_a_sqlite_registry`, in a child process.
#[test]
#[ignore = "child process of separate_processes_share_a_sqlite_registry"]
fn sqlite_child_process_increments() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = open_sql_store(&url, None, Path::new("/")).expect("open");
        for _ in 0..CHILD_INCREMENTS {
            crate::store_conformance::increment(&*store).await;
        }
    });
}

// --- URL and connection errors ---------------------------------------------------------------

#[test]
fn bad_urls_are_invalid_locations() {
    let cases = [
        ("mysql://u:pw@db/reg", "unsupported scheme `mysql`"),
        ("sqlite:registry.db", "three slashes"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:///r.db?table=Bad-Name", "invalid `table=Bad-Name`"),
    ];
    for (url, expected) in cases {
        match open_sql_store(url, None, Path::new("/repo")) {
            Ok(store) => panic!("`{url}` opened as {store:?}"),
            Err(err) => {
                assert!(matches!(err, StoreError::InvalidLocation { .. }), "{err:?}");
                let message = err.to_string();
                assert!(message.contains(expected), "{url}: {message}");
                assert!(!message.contains(":pw@"), "{message}");
            }
        }
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn unreachable_postgres_names_host_port_and_database_not_the_password() {
    // Port 1: nothing listens there, the connection is refused at once.
    let store = open_sql_store(
        "postgresql://larder:hunter2@127.0.0.1:1/features?connect_timeout=5",
        None,
        Path::new("/"),
    )
    .expect("opening does no I/O");
    let err = tokio::time::timeout(Duration::from_secs(60), store.load())
        .await
        .expect("fails in time")
        .expect_err("nothing listens on port 1");
    assert!(
        matches!(
            err,
            StoreError::Unavailable {
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with("registry at `postgresql://larder@127.0.0.1:1/features` is unavailable: cannot connect to the database: "),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!format!("{err:?}").contains("hunter2"));
}

/// The server URL with `user:password@` in place of what the environment gave.
#[cfg(feature = "postgres")]
fn with_credentials(base: &str, user: &str, password: &str) -> String {
    let mut url = url::Url::parse(base).expect("LARDER_TEST_POSTGRES_URL is a URL");
    url.set_username(user).expect("set user");
    url.set_password(Some(password)).expect("set password");
    url.to_string()
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn wrong_postgres_credentials_are_access_denied() {
    let Some(schema) = PgSchema::new() else {
        return;
    };
    let user = format!("no_such_user_{}", uuid::Uuid::new_v4().simple());
    let url = with_credentials(&schema.url(""), &user, "hunter2");
    let store = open_sql_store(&url, None, Path::new("/")).expect("open");
    let err = store.load().await.expect_err("unknown user");
    assert!(matches!(err, StoreError::AccessDenied { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("postgresql://{user}@")),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn missing_postgres_database_is_named() {
    let Some(schema) = PgSchema::new() else {
        return;
    };
    let mut url = url::Url::parse(&schema.url("")).expect("url");
    url.set_path("no_such_database_for_larder");
    let store = open_sql_store(url.as_str(), None, Path::new("/")).expect("open");
    let err = store.load().await.expect_err("no database");
    assert!(matches!(err, StoreError::InvalidLocation { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("/no_such_database_for_larder"),
        "{message}"
    );
    assert!(message.contains("does not exist"), "{message}");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_over_tls_when_required() {
    let Some(schema) = PgSchema::new() else {
        return;
    };
    let url = schema.url("sslmode=require");
    let store = open_sql_store(&url, None, Path::new("/")).expect("open");
    let result = store.commit(None, Bytes::from_static(b"tls")).await;
    if server_has_tls(&schema).await {
        let generation = result.expect("commit over TLS");
        let loaded = store.load().await.expect("load").expect("blob");
        assert_eq!(loaded.generation, generation);
    } else {
        // The refusal must say why, not hang or fall back to plain text.
        let message = result.expect_err("server without TLS").to_string();
        assert!(message.to_lowercase().contains("tls"), "{message}");
    }
}

#[cfg(feature = "postgres")]
async fn server_has_tls(schema: &PgSchema) -> bool {
    let (client, connection) = tokio_postgres::connect(schema.base_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let row = client.query_one("SHOW ssl", &[]).await.expect("show ssl");
    row.get::<_, String>(0) == "on"
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_verify_full_rejects_an_untrusted_certificate() {
    let Some(schema) = PgSchema::new() else {
        return;
    };
    if !server_has_tls(&schema).await {
        println!("skipped: the test Postgres server has no TLS");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // A root that signed nothing on the server: verification must fail.
    std::fs::write(dir.path().join("ca.pem"), UNRELATED_ROOT).expect("write ca");
    let url = schema.url("sslmode=verify-full&sslrootcert=ca.pem");
    let store = open_sql_store(&url, None, dir.path()).expect("open");
    let err = store.load().await.expect_err("untrusted certificate");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("certificate"), "{message}");
}

#[test]
fn verify_full_without_a_root_file_is_explained() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = open_sql_store(
        "postgresql://u@db/reg?sslmode=verify-full&sslrootcert=missing.pem",
        None,
        dir.path(),
    )
    .expect_err("no root file");
    let message = err.to_string();
    assert!(
        message.contains("cannot read the root certificate file")
            && message.contains("missing.pem"),
        "{message}"
    );
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn schema_and_table_options_place_the_registry() {
    let Some(schema) = PgSchema::new() else {
        return;
    };
    let a = open_sql_store(&schema.url("table=reg_a"), None, Path::new("/")).expect("open");
    let b = open_sql_store(&schema.url("table=reg_a&name=b"), None, Path::new("/")).expect("open");
    a.commit(None, Bytes::from_static(b"a")).await.expect("a");
    assert!(b.load().await.expect("load b").is_none());
    b.commit(None, Bytes::from_static(b"b")).await.expect("b");
    // Both rows live in `<schema>.reg_a`.
    let (client, connection) = tokio_postgres::connect(schema.base_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let rows = client
        .query(
            &format!(
                "SELECT name, blob FROM \"{}\".reg_a ORDER BY name",
                schema.schema
            ),
            &[],
        )
        .await
        .expect("query");
    let rows: Vec<(String, Vec<u8>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        rows,
        [
            ("b".to_string(), b"b".to_vec()),
            ("default".to_string(), b"a".to_vec())
        ]
    );
}

/// The registry error for a store whose every commit conflicts is `Contention`; a stale
/// replica must never produce it.
#[tokio::test]
async fn registry_error_for_contention_is_not_reached_through_a_replica() {
    let setup = stale_replica();
    let registry = Registry::new(setup.open(), Duration::from_secs(600));
    Registry::new(setup.open_replica_as_primary(), Duration::from_secs(600))
        .apply(&defs(DEFS_V1), &Default::default())
        .await
        .expect("replica");
    for round in 0..3 {
        let text = DEFS_V1.replace("conv_rate", &format!("rate_{round}"));
        match registry.apply(&defs(&text), &Default::default()).await {
            Ok(outcome) => assert_eq!(outcome.attempts, 1),
            Err(RegistryError::Contention { .. }) => panic!("stale replica caused contention"),
            Err(err) => panic!("apply failed: {err}"),
        }
    }
}

#[cfg(feature = "postgres")]
/// A self-signed CA certificate made for these tests with `openssl req -x509` (key thrown
/// away): it signed nothing any server presents.
const UNRELATED_ROOT: &str = "-----BEGIN CERTIFICATE-----
MIIBnDCCAUOgAwIBAgIUdqFSfmfOhOYyqRicgJiZDcLSskIwCgYIKoZIzj0EAwIw
IzEhMB8GA1UEAwwYbGFyZGVyLXRlc3QtdW5yZWxhdGVkLWNhMCAXDTI2MTEyNjEz
MTg1OFoYDzIxMjYxMTAyMTMxODU4WjAjMSEwHwYDVQQDDBhsYXJkZXItdGVzdC11
bnJlbGF0ZWQtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARQvXok45cKfHHF
0SusY1dWcIgJY42/ywJ7XPEWOQnT3BK2IT4xTrNRJor4NBQCCpYknMK1vF73levP
ouv2fGqJo1MwUTAdBgNVHQ4EFgQU4aXvcWjQb54G7TrTS2LtZvou/qYwHwYDVR0j
BBgwFoAU4aXvcWjQb54G7TrTS2LtZvou/qYwDwYDVR0TAQH/BAUwAwEB/zAKBggq
hkjOPQQDAgNHADBEAiB6nuzOhkiyQHpPqH7DvQLZoYv617hnCHFkA0BYkoxfbgIg
BCCRpUt0MCP6XDFiGxfz2Ul35LgqvroOEYCWICO30g4=
-----END CERTIFICATE-----
";

/// `verify-ca` trusts the server's own certificate as root whatever host name it holds;
/// `verify-full` also checks the name. Runs where the test server's certificate file is
/// readable (a server on this machine).
#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_verify_ca_checks_the_chain_but_not_the_host_name() {
    let Some(schema) = PgSchema::new() else {
        return;
    };
    if !server_has_tls(&schema).await {
        println!("skipped: the test Postgres server has no TLS");
        return;
    }
    let (client, connection) = tokio_postgres::connect(schema.base_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let cert_file: String = client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .expect("show ssl_cert_file")
        .get(0);
    let Ok(cert) = std::fs::read(&cert_file) else {
        println!("skipped: the server certificate `{cert_file}` is not readable here");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("server.pem"), cert).expect("write");
    let open = |mode: &str| {
        let url = schema.url(&format!("sslmode={mode}&sslrootcert=server.pem"));
        open_sql_store(&url, None, dir.path()).expect("open")
    };
    open("verify-ca")
        .commit(None, Bytes::from_static(b"verified"))
        .await
        .expect("verify-ca accepts the server's certificate");
    match open("verify-full").load().await {
        Ok(blob) => assert!(blob.is_some()),
        Err(err) => {
            let message = err.to_string();
            assert!(message.contains("not valid for name"), "{message}");
        }
    }
}
