//! Registry blob in one row of a SQL table (SQLite, or Postgres behind the `postgres`
//! feature), with compare-and-swap commits inside transactions and an optional read replica.
//!
//! The table (`larder_registry` unless the URL says `table=`) holds one row per registry:
//! `name` (primary key), `generation` (a counter bumped by every commit and delete), `blob`
//! (the serialized registry; NULL once deleted) and `updated_at`. A commit is one
//! transaction: `UPDATE ... WHERE name = ? AND generation = <expected>` (or an insert that
//! only succeeds when no live row exists); when it changes no row, another writer won and
//! the commit is a [`StoreError::Conflict`]. Deleting keeps the row with a NULL blob and a
//! bumped generation, so generations never repeat and a writer holding an old one always
//! conflicts.
//!
//! With a replica (`read_path`), [`RegistryStore::load`] reads the replica but never returns
//! a version older than one this instance committed or saw on the primary (it then reads
//! the primary), and falls back to the primary when the replica fails or lacks the
//! registry. [`RegistryStore::load_latest`], used before every commit, reads the primary.

mod config;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;
#[cfg(feature = "postgres")]
mod tls;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;

use super::{Generation, RegistryStore, StoreError, StoredBlob};
use config::SqlUrl;

/// The registry row as one database holds it.
#[derive(Debug)]
struct Row {
    generation: i64,
    /// None once the registry was deleted.
    blob: Option<Bytes>,
}

/// What a compare-and-swap commit did.
#[derive(Debug)]
enum Commit {
    /// Written; the row's new generation.
    Done(i64),
    /// Another writer got there first; the row's current generation (0: no row).
    Conflict { current: i64 },
}

/// Whether a database connection may create the table and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Creates the schema on first use; takes commits.
    Primary,
    /// Only reads; a missing table reads as no registry.
    Replica,
}

/// One database holding registry rows.
#[async_trait::async_trait]
trait Backend: Send + Sync + std::fmt::Debug {
    fn location(&self) -> &str;

    /// The row, None when there is none (or, for a replica, no table yet).
    async fn load(&self) -> Result<Option<Row>, StoreError>;

    /// Writes `bytes` if the row's generation is `expected` (None: if there is no row or
    /// its blob is NULL), in one transaction.
    async fn commit(&self, expected: Option<i64>, bytes: Bytes) -> Result<Commit, StoreError>;

    /// Sets the blob to NULL and bumps the generation (nothing when there is no live blob);
    /// returns the row's generation afterwards (0: no row).
    async fn delete(&self) -> Result<i64, StoreError>;
}

/// A registry in a SQL database: SQLite always, Postgres with the `postgres` feature.
///
/// Open with [`open_sql_store`]. Opening does no I/O: the table is created on first use,
/// a Postgres connection is made on first use (and pooled).
#[derive(Debug)]
pub struct SqlRegistryStore {
    primary: Box<dyn Backend>,
    replica: Option<Box<dyn Backend>>,
    /// The highest generation this instance committed or read from the primary: a replica
    /// answer older than this is stale for this instance and is not returned.
    seen: AtomicI64,
}

/// Opens the SQL registry at `path` (`registry.path`), reading through the replica at
/// `read_path` when given. Relative SQLite paths (and `sslrootcert` files) are resolved
/// against `base_dir`, the directory of `feature_store.yaml`.
///
/// Errors with [`StoreError::InvalidLocation`] for a URL that is not one of the forms in
/// the module docs, or a Postgres URL when Larder is built without the `postgres` feature.
pub fn open_sql_store(
    path: &str,
    read_path: Option<&str>,
    base_dir: &Path,
) -> Result<Arc<dyn RegistryStore>, StoreError> {
    Ok(Arc::new(SqlRegistryStore::open(path, read_path, base_dir)?))
}

impl SqlRegistryStore {
    /// See [`open_sql_store`].
    pub fn open(path: &str, read_path: Option<&str>, base_dir: &Path) -> Result<Self, StoreError> {
        let primary_url = SqlUrl::parse(path, base_dir)?;
        let replica = read_path
            .map(|url| {
                let url = SqlUrl::parse(url, base_dir)?.read_same_row_as(&primary_url)?;
                backend(url, Role::Replica)
            })
            .transpose()?;
        let primary = backend(primary_url, Role::Primary)?;
        Ok(Self {
            primary,
            replica,
            seen: AtomicI64::new(0),
        })
    }

    /// Where reads go when they may go to the replica (its location), if one is configured.
    pub fn replica_location(&self) -> Option<&str> {
        self.replica.as_deref().map(Backend::location)
    }

    fn saw(&self, generation: i64) {
        self.seen.fetch_max(generation, Ordering::AcqRel);
    }

    async fn load_primary(&self) -> Result<Option<StoredBlob>, StoreError> {
        let row = self.primary.load().await?;
        if let Some(row) = &row {
            self.saw(row.generation);
        }
        Ok(row.and_then(stored_blob))
    }

    fn parse_generation(&self, generation: &Generation) -> Result<i64, StoreError> {
        generation
            .0
            .parse::<i64>()
            .ok()
            .filter(|g| *g > 0)
            .ok_or_else(|| StoreError::Internal {
                location: self.location().to_string(),
                message: format!("generation `{generation}` was not issued by a SQL registry"),
            })
    }
}

fn stored_blob(row: Row) -> Option<StoredBlob> {
    let generation = Generation(row.generation.to_string());
    row.blob.map(|bytes| StoredBlob { bytes, generation })
}

fn backend(url: SqlUrl, role: Role) -> Result<Box<dyn Backend>, StoreError> {
    match url {
        SqlUrl::Sqlite(url) => Ok(Box::new(sqlite::SqliteBackend::new(url, role))),
        #[cfg(feature = "postgres")]
        SqlUrl::Postgres(url) => Ok(Box::new(postgres::PostgresBackend::new(*url, role)?)),
    }
}

#[async_trait::async_trait]
impl RegistryStore for SqlRegistryStore {
    fn location(&self) -> &str {
        self.primary.location()
    }

    async fn load(&self) -> Result<Option<StoredBlob>, StoreError> {
        let Some(replica) = &self.replica else {
            return self.load_primary().await;
        };
        match replica.load().await {
            Ok(Some(row)) if row.generation >= self.seen.load(Ordering::Acquire) => {
                self.saw(row.generation);
                return Ok(stored_blob(row));
            }
            Ok(Some(row)) => tracing::debug!(
                replica = replica.location(),
                replica_generation = row.generation,
                seen = self.seen.load(Ordering::Acquire),
                "registry replica is behind what this process saw; reading the primary"
            ),
            Ok(None) => tracing::debug!(
                replica = replica.location(),
                "registry replica holds no registry; reading the primary"
            ),
            Err(error) => tracing::warn!(
                replica = replica.location(),
                error = %error,
                "cannot read the registry replica; reading the primary"
            ),
        }
        self.load_primary().await
    }

    async fn load_latest(&self) -> Result<Option<StoredBlob>, StoreError> {
        self.load_primary().await
    }

    async fn commit(
        &self,
        expected: Option<&Generation>,
        bytes: Bytes,
    ) -> Result<Generation, StoreError> {
        let expected = expected.map(|g| self.parse_generation(g)).transpose()?;
        match self.primary.commit(expected, bytes).await? {
            Commit::Done(generation) => {
                self.saw(generation);
                Ok(Generation(generation.to_string()))
            }
            Commit::Conflict { current } => {
                // Loads from now on must not return anything older than the winner.
                self.saw(current);
                Err(StoreError::Conflict {
                    location: self.location().to_string(),
                })
            }
        }
    }

    async fn delete(&self) -> Result<(), StoreError> {
        let generation = self.primary.delete().await?;
        self.saw(generation);
        Ok(())
    }
}
