//! Settings of the SQLite online store.
//!
//! Not a serde type: `online_store: {type: sqlite, path}` is parsed and validated by
//! `larder-config`, and the facade builds this from it (resolving `path` against the repo).
//! `page_size` comes from the YAML; the pool, timeout and memory map have no YAML keys yet,
//! their defaults suit a feature server and a materialization sharing one file.

use std::path::PathBuf;
use std::time::Duration;

/// How to open a [`SqliteOnlineStore`](super::SqliteOnlineStore).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The database file; created (with its parent folders) if missing.
    pub path: PathBuf,
    /// Most connections open at once (reads run in parallel, one per connection; writes of
    /// one store are serialized). 0 is read as 1.
    pub pool_size: usize,
    /// How long a statement waits for a lock held by another connection or process (a
    /// writer committing, a checkpoint) before failing with a retryable
    /// [`OnlineError::Unavailable`](crate::OnlineError::Unavailable).
    pub busy_timeout: Duration,
    /// Bytes of the file each connection reads through a memory map (SQLite's
    /// `mmap_size`); 0 reads with system calls only. Safe with several processes; turn it
    /// off on file systems where mapped files misbehave (network mounts).
    pub mmap_size: u64,
    /// Checkpoint the WAL on a background thread with its own connection instead of in the
    /// commit that fills it. For a long-running writer of small batches (a feature server
    /// taking pushes): a checkpoint copies and syncs up to 32 MB, which otherwise stalls the
    /// one request whose commit triggers it for tens of milliseconds. The commit-time
    /// checkpoint stays as a backstop, at 65536 WAL pages instead of 8192 (64 MiB with the
    /// default 1 KiB pages): writes back to back leave the WAL no moment to start over, and
    /// then it still comes due. A WAL file grown past 512 MiB (or twice the WAL at that checkpoint,
    /// with pages over 4 KiB) is cut back to it when it starts over.
    pub background_checkpoint: bool,
    /// Bytes per database page of a database this store creates (a power of two from 512
    /// to 65536; [`Self::DEFAULT_PAGE_SIZE`] when `None`). A write copies every page it
    /// touches into the WAL, and a row pushed under a random key touches a page of its own,
    /// so small pages make such writes cheaper: 100-row pushes to a feature server, 1024-byte
    /// pages, 20-30% more rows/s than SQLite's usual 4096 in alternated runs, with reads of 1
    /// and 100 entities as fast. A row wider than about 990 bytes (some 40 features)
    /// continues on overflow pages, which it reads and writes whole: no more bytes than with
    /// 4096. An existing database keeps the page size it was created with.
    pub page_size: Option<u32>,
    /// How long a read transaction stays open for the reads after it (0: every read takes
    /// its own). Starting one takes a shared lock in the WAL index and on the file, two or
    /// four system calls that two threads contend for; a reused one skips them. A read sees
    /// every write made before it through any store on this file in this process (a write
    /// ends the transactions it would outdate); a write from another process shows up at
    /// most this long after it commits.
    pub snapshot_reuse: Duration,
}

impl SqliteConfig {
    pub const DEFAULT_POOL_SIZE: usize = 4;
    pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_MMAP_SIZE: u64 = 256 << 20;
    /// Page size of a database created without one configured (see [`Self::page_size`]).
    pub const DEFAULT_PAGE_SIZE: u32 = 1024;
    /// See [`Self::snapshot_reuse`].
    pub const DEFAULT_SNAPSHOT_REUSE: Duration = Duration::from_millis(1);

    /// The defaults for a database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            pool_size: Self::DEFAULT_POOL_SIZE,
            busy_timeout: Self::DEFAULT_BUSY_TIMEOUT,
            mmap_size: Self::DEFAULT_MMAP_SIZE,
            background_checkpoint: false,
            page_size: None,
            snapshot_reuse: Self::DEFAULT_SNAPSHOT_REUSE,
        }
    }
}
