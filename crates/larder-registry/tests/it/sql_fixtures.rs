//! Fixtures for the SQL registry backends: a SQLite file in a temporary directory, and, when
//! `LARDER_TEST_POSTGRES_URL` is set, a Postgres schema of its own per test, dropped after it.

#[cfg(feature = "postgres")]
use std::path::Path;
use std::sync::Arc;

use larder_registry::store::{RegistryStore, open_sql_store};

/// Names the Postgres server the Postgres tests run against.
#[cfg(feature = "postgres")]
pub const POSTGRES_ENV: &str = "LARDER_TEST_POSTGRES_URL";

/// A SQLite registry in a directory that does not exist yet (the first use creates it).
pub fn sqlite_fixture() -> (
    tempfile::TempDir,
    impl Fn() -> Arc<dyn RegistryStore> + Send + Sync,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().to_path_buf();
    let open = move || {
        open_sql_store("sqlite:///data/registry.sqlite", None, &base).expect("open sqlite store")
    };
    (dir, open)
}

/// A SQLite registry read through a "replica" URL naming the same file.
pub fn sqlite_replica_fixture() -> (
    tempfile::TempDir,
    impl Fn() -> Arc<dyn RegistryStore> + Send + Sync,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().to_path_buf();
    let absolute = format!("sqlite:///{}", base.join("registry.sqlite").display());
    let open = move || {
        open_sql_store("sqlite:///registry.sqlite", Some(&absolute), &base)
            .expect("open sqlite store with replica")
    };
    (dir, open)
}

/// A unique schema on the test Postgres server, dropped (with everything in it) on drop.
#[cfg(feature = "postgres")]
pub struct PgSchema {
    base_url: String,
    pub schema: String,
}

#[cfg(feature = "postgres")]
impl PgSchema {
    /// None (after printing why) when `LARDER_TEST_POSTGRES_URL` is not set.
    pub fn new() -> Option<Self> {
        let Ok(base_url) = std::env::var(POSTGRES_ENV) else {
            println!("skipped: {POSTGRES_ENV} is not set, Postgres tests did not run");
            return None;
        };
        Some(Self {
            base_url,
            schema: format!("larder_test_{}", uuid::Uuid::new_v4().simple()),
        })
    }

    /// The server URL with `options` (`key=value&...`) and this schema added.
    pub fn url(&self, options: &str) -> String {
        let separator = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let mut url = format!("{}{separator}schema={}", self.base_url, self.schema);
        if !options.is_empty() {
            url.push('&');
            url.push_str(options);
        }
        url
    }

    /// The server URL as given in the environment.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }
}

#[cfg(feature = "postgres")]
impl Drop for PgSchema {
    fn drop(&mut self) {
        let url = self.base_url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        // Its own thread and runtime: drop runs inside the test's runtime.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|err| err.to_string())?;
                tokio::spawn(connection);
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(|err| err.to_string())
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("cannot drop test schema `{}`: {err}", self.schema),
            Err(_) => eprintln!("cleanup of test schema `{}` panicked", self.schema),
        }
    }
}

#[cfg(not(feature = "postgres"))]
type OpenFn = fn() -> Arc<dyn RegistryStore>;

/// Without the `postgres` feature there is no Postgres backend to test.
#[cfg(not(feature = "postgres"))]
pub fn postgres_fixture() -> Option<((), OpenFn)> {
    println!("skipped: Larder is built without the `postgres` feature");
    None
}

#[cfg(not(feature = "postgres"))]
pub fn postgres_replica_fixture() -> Option<((), OpenFn)> {
    postgres_fixture()
}

/// A Postgres registry in a fresh schema; None when the server is not configured.
#[cfg(feature = "postgres")]
pub fn postgres_fixture() -> Option<(PgSchema, impl Fn() -> Arc<dyn RegistryStore> + Send + Sync)> {
    let schema = PgSchema::new()?;
    let url = schema.url("");
    let open = move || open_sql_store(&url, None, Path::new("/unused")).expect("open postgres");
    Some((schema, open))
}

/// A Postgres registry read through a second URL to the same database as its "replica".
#[cfg(feature = "postgres")]
pub fn postgres_replica_fixture()
-> Option<(PgSchema, impl Fn() -> Arc<dyn RegistryStore> + Send + Sync)> {
    let schema = PgSchema::new()?;
    let url = schema.url("");
    let replica = schema.url("application_name=larder_replica");
    let open =
        move || open_sql_store(&url, Some(&replica), Path::new("/unused")).expect("open postgres");
    Some((schema, open))
}
