//! Storage of the serialized registry blob, with compare-and-swap commits so that concurrent
//! writers never lose an update.
//!
//! The registry is one blob per location. A writer loads it, changes it and commits with the
//! generation it loaded; if another writer committed in between, the commit fails with
//! [`StoreError::Conflict`] and the writer starts over from a fresh load.
//!
//! Backends: [`LocalFileStore`] (a file plus a sidecar lock file), [`ObjectStoreRegistry`]
//! (object_store conditional puts: memory, S3, GCS) and [`SqlRegistryStore`] (one row of a
//! SQLite or Postgres table, optionally read through a replica), opened with
//! [`open_sql_store`].

mod error;
mod local;
mod location;
mod object;
mod sql;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub use error::{BoxError, StoreError};
pub use local::LocalFileStore;
pub use location::{RegistryLocation, SUPPORTED_SCHEMES};
pub use object::ObjectStoreRegistry;
pub use sql::{SqlRegistryStore, open_sql_store};

/// Opaque token naming one stored version of the registry blob (an ETag, object version,
/// content hash...).
///
/// Only compare generations issued by the same location. Whether committing bytes identical
/// to the current blob yields a new generation depends on the backend (see
/// [`RegistryStore::commit`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Generation(pub String);

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One version of the registry blob and the generation that names it.
#[derive(Clone, Debug)]
pub struct StoredBlob {
    pub bytes: Bytes,
    pub generation: Generation,
}

/// Where the serialized registry lives, with compare-and-swap writes.
///
/// Every method is safe to call concurrently, from one or many processes, through any number
/// of store instances opened on the same location.
#[async_trait::async_trait]
pub trait RegistryStore: Send + Sync + std::fmt::Debug {
    /// Where the registry lives, for messages (path or URL; never credentials).
    fn location(&self) -> &str;

    /// The current blob, or `None` when no registry has been written yet (or it was deleted).
    ///
    /// Never returns a partially written blob: the bytes and generation are those of one
    /// complete commit. The returned generation is the one to pass to [`commit`](Self::commit).
    ///
    /// A store that reads from a replica may return an older complete version than the
    /// newest (the replica lags), though never one older than what this instance has
    /// itself committed or seen; read-modify-write callers use
    /// [`load_latest`](Self::load_latest) instead.
    async fn load(&self) -> Result<Option<StoredBlob>, StoreError>;

    /// Like [`load`](Self::load), but always the newest committed version, read where
    /// commits are checked (a replicated store reads its primary). Writers load with this
    /// before a commit, so a lagging replica cannot make every commit conflict.
    ///
    /// The default is [`load`](Self::load), right for stores without replicas.
    async fn load_latest(&self) -> Result<Option<StoredBlob>, StoreError> {
        self.load().await
    }

    /// Stores `bytes` only if the current generation is still `expected` (`None`: only if no
    /// blob exists). Returns the new generation, equal to what a following
    /// [`load`](Self::load) returns as long as nobody else commits.
    ///
    /// Errors with [`StoreError::Conflict`] if another writer committed first (or deleted the
    /// blob); nothing is written then. A failed or interrupted commit never leaves a partial
    /// blob behind: readers see either the old blob or the new one.
    ///
    /// Committing bytes identical to the current blob succeeds. Content-addressed backends
    /// (local files, S3 ETags) then return the same generation as before; version-counting
    /// backends (memory, GCS, SQL) return a new one. Either way no update is lost: a commit
    /// succeeds only against content the writer has seen.
    ///
    /// If this returns an error other than `Conflict`, or the future is dropped, the commit
    /// may or may not have taken effect (the request may have reached the backend): load
    /// again before deciding what to do. A retried commit whose first attempt did land gets
    /// a `Conflict`.
    async fn commit(
        &self,
        expected: Option<&Generation>,
        bytes: Bytes,
    ) -> Result<Generation, StoreError>;

    /// Deletes the blob (teardown). `Ok` when it does not exist. Unconditional: it does not
    /// check a generation, and a writer holding an old generation then gets a `Conflict`.
    async fn delete(&self) -> Result<(), StoreError>;
}

/// Opens the registry at `path`, as written in `registry.path`.
///
/// - no scheme, or `file://`: a [`LocalFileStore`]; relative paths are resolved against
///   `base_dir` (the directory of `feature_store.yaml`);
/// - `memory://name/key`: an in-process [`ObjectStoreRegistry`], shared by every open of the
///   same `name` in this process (for tests);
/// - `s3://bucket/key` (cargo feature `aws`) and `gs://bucket/key` (feature `gcp`): object
///   storage, credentials and region from the environment (`AWS_*`, `GOOGLE_*`).
///
/// Anything else is a [`StoreError::InvalidLocation`] naming the supported schemes. Does no
/// I/O: a missing file or bucket shows up on the first load or commit.
pub fn open_store(path: &str, base_dir: &Path) -> Result<Arc<dyn RegistryStore>, StoreError> {
    match RegistryLocation::parse(path, base_dir)? {
        RegistryLocation::Local(file) => Ok(Arc::new(LocalFileStore::new(file)?)),
        location => Ok(Arc::new(ObjectStoreRegistry::open(path.trim(), &location)?)),
    }
}
