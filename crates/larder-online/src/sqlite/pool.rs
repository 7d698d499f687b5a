//! A small pool of SQLite connections, each used by one blocking task at a time.
//!
//! SQLite calls block, so long work runs in `tokio::task::spawn_blocking`; short reads may
//! run on the calling thread (`read_here`). A semaphore
//! bounds the connections in use; idle ones wait in a `Vec` and are opened lazily up to
//! the pool size. A connection whose task panicked is dropped, not returned.
//!
//! Writes use one more connection of their own, without the memory map: pages a write
//! touches then go through SQLite's bounded page cache instead of being mapped into the
//! process, so a materialization's resident memory does not grow with the file (mapped
//! pages count as resident once touched). Reads keep the map, which saves a system call per
//! page.
//!
//! Short reads leave their read transaction open for the next read on the connection, for up
//! to `snapshot_reuse` and until this process writes to the file (see [`Pool::read_here`]);
//! a sweeper thread ends those left idle, so that none holds the WAL back for long.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::Semaphore;

use super::{STORE, SqliteConfig};
use crate::error::OnlineError;

/// Prepared statements kept per connection: a few per view (upsert, one select per IN-list
/// size, create).
const STATEMENT_CACHE: usize = 256;

/// How often the sweeper ends the read transactions left open on idle connections (see
/// [`Pool::read_here`]): a transaction holds the WAL back (a checkpoint cannot copy past the
/// oldest one's snapshot, nor the WAL start over while one is open), so none stays open
/// much longer than this once reads stop.
const SWEEP_PERIOD: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
}

#[derive(Debug)]
struct Shared {
    config: SqliteConfig,
    idle: Mutex<Vec<Pooled>>,
    /// The write connection, opened on first use.
    writer: Mutex<Option<Writer>>,
    /// Counts the writes through every store on this file in this process (see
    /// [`write_generation`]): a read transaction begun before the last one is not reused.
    generation: Arc<AtomicU64>,
    /// Wakes the sweeper when an idle connection holds a read transaction and it sleeps;
    /// `None` when transactions are not reused.
    sweep: Option<SyncSender<()>>,
    /// Whether the sweeper is awake (or woken) and will come round again.
    sweeping: AtomicBool,
}

/// A pooled read connection and the read transaction it may hold open.
#[derive(Debug)]
struct Pooled {
    conn: Connection,
    snapshot: Option<Snapshot>,
}

/// A read transaction left open for the next reads on its connection.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    /// When it began (SQLite takes the snapshot at the first read after this).
    began: Instant,
    /// The write generation read before it began.
    generation: u64,
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    /// Wakes the background checkpointer after a commit (when the config asks for one);
    /// dropping it ends the thread.
    checkpoint: Option<SyncSender<()>>,
}

/// Page cache of the write connection (SQLite's unit: negative = KiB): large enough for the
/// interior pages of a big table and a write batch's leaves.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

/// WAL pages after which the write connection's commits checkpoint (SQLite's default: 1000).
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 8192;

/// The same with a background checkpointer, for which the commit-time checkpoint is only the
/// backstop that lets the WAL start over (see [`run_checkpointer`]): each one stalls its
/// commit for two syncs, so it comes due eight times less often. 100-row pushes to a feature
/// server (`larder serve`, 100k keys, 4 KiB pages, runs alternated with 8192 on one machine):
/// c=1 732-788 against 615-649 pushes/s, c=8 916-941 against 682-724, p90 at c=1 1.4-1.6 ms
/// against 11-20 ms; reads beside them and bulk writes unchanged.
const BACKSTOP_AUTOCHECKPOINT_PAGES: i64 = 65536;

/// Bytes of WAL file kept when the WAL starts over (SQLite's `journal_size_limit`): a file
/// grown past it by a large transaction is cut back to it. At least twice the WAL at the
/// commit-time checkpoint ([`wal_keep_bytes`]), so that pushes never cut it: a 64 MiB limit
/// (below the backstop's 256 MiB with 4 KiB pages), cut at every start-over, raised their
/// p99 at c=1 from about 30 ms to about 75 ms.
const WAL_KEEP_BYTES: i64 = 512 << 20;

/// The `journal_size_limit` of a writer that checkpoints at `autocheckpoint_pages` pages of
/// `page_size` bytes: [`WAL_KEEP_BYTES`], or twice that WAL when larger pages make it bigger.
fn wal_keep_bytes(autocheckpoint_pages: i64, page_size: i64) -> i64 {
    WAL_KEEP_BYTES.max(2 * autocheckpoint_pages * page_size)
}

/// How long the background checkpointer waits after a commit before checkpointing: the
/// commits within it share one checkpoint (one sync of the database file). A pass stalls the
/// writer for a time that grows with the pages it copies: under 100-row pushes, 1 s gave the
/// same pushes/s with p90 at 27-56 ms; 25 ms cut p99 at c=1 to 13-16 ms (from 23-36 ms) for
/// four times the syncs and slightly fewer pushes/s at c=8.
const CHECKPOINT_DELAY: Duration = Duration::from_millis(100);

impl Pool {
    /// Opens the first connection now (so a bad path fails here), the rest on demand.
    pub(crate) fn open(config: &SqliteConfig) -> Result<Self, OnlineError> {
        let size = config.pool_size.max(1);
        let first = open_connection(config, true)?;
        let mut idle = Vec::with_capacity(size);
        idle.push(Pooled {
            conn: first,
            snapshot: None,
        });
        let reuse = !config.snapshot_reuse.is_zero();
        let (sweep, woken) = if reuse {
            let (wake, woken) = std::sync::mpsc::sync_channel(1);
            (Some(wake), Some(woken))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            config: config.clone(),
            idle: Mutex::new(idle),
            writer: Mutex::new(None),
            generation: write_generation(&config.path),
            sweep,
            sweeping: AtomicBool::new(false),
        });
        if let Some(woken) = woken {
            let weak = Arc::downgrade(&shared);
            let period = SWEEP_PERIOD.max(config.snapshot_reuse);
            std::thread::Builder::new()
                .name("larder-sqlite-sweep".to_owned())
                .spawn(move || run_sweeper(&weak, &woken, period))
                .map_err(|e| OnlineError::internal(format!("cannot start a thread: {e}")))?;
        }
        Ok(Pool {
            shared,
            permits: Arc::new(Semaphore::new(size)),
        })
    }

    /// Runs `work` on a pooled connection in a blocking task.
    pub(crate) async fn run<R, F>(&self, work: F) -> Result<R, OnlineError>
    where
        F: FnOnce(&mut Connection) -> Result<R, OnlineError> + Send + 'static,
        R: Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| OnlineError::internal("the SQLite connection pool is closed"))?;
        let shared = Arc::clone(&self.shared);
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut pooled = shared.take()?;
            if pooled.snapshot.is_some() {
                pooled = shared.end_snapshot(pooled)?;
            }
            let out = work(&mut pooled.conn);
            shared.give_back(pooled);
            out
        });
        task.await
            .map_err(|e| OnlineError::internal(format!("an SQLite task failed: {e}")))?
    }
}

impl Pool {
    /// Runs `work` on the write connection in a blocking task (one write at a time).
    pub(crate) async fn run_write<R, F>(&self, work: F) -> Result<R, OnlineError>
    where
        F: FnOnce(&mut Connection) -> Result<R, OnlineError> + Send + 'static,
        R: Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let task = tokio::task::spawn_blocking(move || {
            let mut slot = shared.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let writer = match slot.as_mut() {
                Some(writer) => writer,
                None => slot.insert(open_writer(&shared)?),
            };
            // The transactions idle connections keep open end here: a checkpoint (this
            // write's commit may run one) copies no frame past an open snapshot, nor can
            // the WAL start over while one reads it.
            shared.sweep(true);
            let out = work(&mut writer.conn);
            // Before the write is reported done: a read after it must not reuse an older
            // snapshot. Failed writes count too (one may have committed part).
            shared.generation.fetch_add(1, Ordering::SeqCst);
            if out.is_ok()
                && let Some(wake) = &writer.checkpoint
            {
                // Full: a checkpoint is already due.
                let _ = wake.try_send(());
            }
            out
        });
        task.await
            .map_err(|e| OnlineError::internal(format!("an SQLite task failed: {e}")))?
    }
}

impl Pool {
    /// Runs `work` inside a read transaction on a pooled connection, on the calling thread
    /// (for reads short enough to block an async worker for: it skips two thread
    /// hand-offs).
    ///
    /// The transaction stays open when `work` succeeds, and the next read on the
    /// connection reuses it if it began less than `snapshot_reuse` ago and no write
    /// through this process has happened since. Beginning one takes SQLite's shared locks
    /// on the WAL index and the file (system calls, and a mutex the threads of a feature
    /// server contend for); a 1-entity read is only a few times that.
    pub(crate) async fn read_here<R>(
        &self,
        work: impl FnOnce(&Connection) -> Result<R, OnlineError>,
    ) -> Result<R, OnlineError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| OnlineError::internal("the SQLite connection pool is closed"))?;
        let shared = &self.shared;
        let mut pooled = shared.take()?;
        let generation = shared.generation.load(Ordering::SeqCst);
        let now = Instant::now();
        // (A transaction SQLite ended on an error leaves autocommit on.)
        let reusable = pooled.snapshot.is_some_and(|snapshot| {
            snapshot.generation == generation
                && !pooled.conn.is_autocommit()
                && now.duration_since(snapshot.began) < shared.config.snapshot_reuse
        });
        if !reusable {
            if pooled.snapshot.is_some() {
                pooled = shared.end_snapshot(pooled)?;
            }
            if let Err(e) = run_cached(&pooled.conn, "BEGIN") {
                shared.give_back(pooled);
                return Err(e);
            }
            pooled.snapshot = Some(Snapshot {
                began: now,
                generation,
            });
        }
        let out = work(&pooled.conn);
        if out.is_err() || shared.config.snapshot_reuse.is_zero() {
            match shared.end_snapshot(pooled) {
                Ok(pooled) => shared.give_back(pooled),
                Err(e) => {
                    out?;
                    return Err(e);
                }
            }
        } else {
            shared.give_back(pooled);
        }
        out
    }
}

impl Shared {
    /// An idle connection, or a new one.
    fn take(&self) -> Result<Pooled, OnlineError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(pooled) => Ok(pooled),
            None => Ok(Pooled {
                conn: open_connection(&self.config, false)?,
                snapshot: None,
            }),
        }
    }

    fn give_back(&self, pooled: Pooled) {
        let open = pooled.snapshot.is_some();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(pooled);
        if open
            && let Some(wake) = &self.sweep
            && !self.sweeping.swap(true, Ordering::SeqCst)
        {
            let _ = wake.try_send(());
        }
    }

    /// Ends the read transaction `pooled` holds; a connection that cannot end it is
    /// dropped and the error returned.
    fn end_snapshot(&self, mut pooled: Pooled) -> Result<Pooled, OnlineError> {
        pooled.snapshot = None;
        end_read(&pooled.conn)?;
        Ok(pooled)
    }

    /// Ends the idle connections' read transactions that can no longer be reused (older
    /// than `snapshot_reuse` or begun before a write), or all of them with `all`; a
    /// connection that cannot end its transaction is dropped. Returns how many stay open.
    fn sweep(&self, all: bool) -> usize {
        let now = Instant::now();
        let reuse = self.config.snapshot_reuse;
        let generation = self.generation.load(Ordering::SeqCst);
        let mut open = 0;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain_mut(|pooled| {
            let Some(snapshot) = pooled.snapshot else {
                return true;
            };
            if !all
                && snapshot.generation == generation
                && now.duration_since(snapshot.began) < reuse
            {
                open += 1;
                return true;
            }
            pooled.snapshot = None;
            match end_read(&pooled.conn) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping an SQLite connection");
                    false
                }
            }
        });
        open
    }
}

/// Ends idle read transactions every `period` while any is open, until the pool is dropped
/// (which drops the sender).
fn run_sweeper(shared: &Weak<Shared>, woken: &Receiver<()>, period: Duration) {
    while woken.recv().is_ok() {
        loop {
            if let Err(RecvTimeoutError::Disconnected) = woken.recv_timeout(period) {
                return;
            }
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.sweep(false) > 0 {
                continue;
            }
            shared.sweeping.store(false, Ordering::SeqCst);
            // A transaction given back since the sweep woke nobody (`sweeping` was still
            // set): look again, and go on unless a later one has woken us already.
            if shared.sweep(false) == 0 || shared.sweeping.swap(true, Ordering::SeqCst) {
                break;
            }
        }
    }
}

/// Runs one cached statement that returns no rows (`BEGIN`, `COMMIT`: rusqlite's
/// `transaction()` parses both on every call).
pub(crate) fn run_cached(conn: &Connection, sql: &str) -> Result<(), OnlineError> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(drop)
        .map_err(|e| super::sqlite_error(e, "(read transaction)"))
}

/// Ends a read transaction (it holds no changes: `COMMIT` ends it whatever its reads did,
/// `ROLLBACK` if that fails).
pub(crate) fn end_read(conn: &Connection) -> Result<(), OnlineError> {
    match run_cached(conn, "COMMIT") {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            if conn.is_autocommit() { Ok(()) } else { Err(e) }
        }
    }
}

/// The write counter shared by the stores of this process open on the file at `path`, so
/// that a read through one sees a write through another.
fn write_generation(path: &Path) -> Arc<AtomicU64> {
    static BY_FILE: Mutex<Vec<(PathBuf, Weak<AtomicU64>)>> = Mutex::new(Vec::new());
    let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut all = BY_FILE.lock().unwrap_or_else(PoisonError::into_inner);
    all.retain(|(_, counter)| counter.strong_count() > 0);
    if let Some(counter) = all
        .iter()
        .find(|(known, _)| *known == file)
        .and_then(|(_, counter)| counter.upgrade())
    {
        return counter;
    }
    let counter = Arc::new(AtomicU64::new(0));
    all.push((file, Arc::downgrade(&counter)));
    counter
}

/// Opens and configures one connection, retried while another process holds the file
/// until `busy_timeout`: some of SQLite's lock waits while opening (switching a file to WAL,
/// reading a WAL file another process is still initialising) answer `SQLITE_BUSY` at once
/// instead of calling the busy handler. Two `larder apply`s sharing an online store hit this.
fn open_connection(config: &SqliteConfig, first: bool) -> Result<Connection, OnlineError> {
    let deadline = std::time::Instant::now() + config.busy_timeout;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match try_open_connection(config, first) {
            Err(OnlineError::Unavailable {
                retryable: true, ..
            }) if std::time::Instant::now() + pause < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// One attempt of [`open_connection`]. `first` also switches the file to WAL (a persistent
/// property of the file, so the later connections need not).
fn try_open_connection(config: &SqliteConfig, first: bool) -> Result<Connection, OnlineError> {
    let path = &config.path;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    // Set first: switching to WAL itself may have to wait for another process.
    conn.busy_timeout(config.busy_timeout)
        .map_err(|e| open_error(path, e))?;
    if first {
        set_page_size(&conn, config)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| open_error(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Some file systems (network mounts) cannot share WAL's memory-mapped index;
            // SQLite then keeps the rollback journal: correct, but readers wait for writers.
            tracing::warn!(
                path = %path.display(),
                journal_mode = %mode,
                "the SQLite online store could not switch to WAL; reads will block during writes"
            );
        }
    }
    // WAL + NORMAL: a commit is durable once the WAL is synced at checkpoint; a crash
    // loses at most the last transactions, never corrupts or tears a row.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| open_error(path, e))?;
    // Reads through the memory map skip a copy and a system call per page: about 30 % off
    // a 100-key read (benches/read_latency.rs).
    conn.pragma_update(
        None,
        "mmap_size",
        i64::try_from(config.mmap_size).unwrap_or(i64::MAX),
    )
    .map_err(|e| open_error(path, e))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Gives a database not created yet the configured page size ([`SqliteConfig::DEFAULT_PAGE_SIZE`]
/// when none is); warns when an existing one has another configured size (a WAL database's
/// page size cannot change). A file created with another size keeps it silently when the
/// config names none.
fn set_page_size(conn: &Connection, config: &SqliteConfig) -> Result<(), OnlineError> {
    let path = &config.path;
    let wanted = config.page_size.unwrap_or(SqliteConfig::DEFAULT_PAGE_SIZE);
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .map_err(|e| open_error(path, e))?;
    if pages == 0 {
        conn.pragma_update(None, "page_size", wanted)
            .map_err(|e| open_error(path, e))?;
        return Ok(());
    }
    let Some(configured) = config.page_size else {
        return Ok(());
    };
    let current: u32 = conn
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .map_err(|e| open_error(path, e))?;
    if current != configured {
        tracing::warn!(
            path = %path.display(),
            page_size = current,
            configured,
            "the SQLite online store keeps the page size it was created with; \
             delete the file and materialize again to use the configured one"
        );
    }
    Ok(())
}

/// The write connection and, when the config asks for it, its background checkpointer.
fn open_writer(shared: &Arc<Shared>) -> Result<Writer, OnlineError> {
    let config = &shared.config;
    let conn = open_write_connection(config)?;
    let checkpoint = if config.background_checkpoint {
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        let checkpointer = open_connection(config, false)?;
        checkpointer
            .pragma_update(None, "mmap_size", 0)
            .map_err(|e| open_error(&config.path, e))?;
        let path = config.path.clone();
        let readers = Arc::downgrade(shared);
        std::thread::Builder::new()
            .name("larder-sqlite-checkpoint".to_owned())
            .spawn(move || run_checkpointer(&checkpointer, &woken, &path, &readers))
            .map_err(|e| OnlineError::internal(format!("cannot start the checkpointer: {e}")))?;
        Some(wake)
    } else {
        None
    };
    Ok(Writer { conn, checkpoint })
}

/// Checkpoints the WAL `CHECKPOINT_DELAY` after each wake-up until the writer is dropped.
///
/// `PASSIVE` never blocks the writer or the readers: it copies the frames no reader still
/// needs, and once all are copied the writer's next commit starts the WAL over, so the
/// commit-time checkpoint (at `BACKSTOP_AUTOCHECKPOINT_PAGES`) does not come due. That takes
/// a moment with all frames copied before the next commit: under writes back to back (100-row
/// pushes at full rate) the WAL keeps growing and the commit-time checkpoint still runs.
///
/// The read transactions idle connections keep open end first: one begun before the
/// checkpoint's last frame stops the copy there (one reading the database file alone, any
/// copy).
fn run_checkpointer(conn: &Connection, woken: &Receiver<()>, path: &Path, readers: &Weak<Shared>) {
    while woken.recv().is_ok() {
        std::thread::sleep(CHECKPOINT_DELAY);
        let last = matches!(woken.try_recv(), Err(TryRecvError::Disconnected));
        if let Some(readers) = readers.upgrade() {
            readers.sweep(true);
        }
        let outcome = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match outcome {
            Ok((frames, copied)) => {
                tracing::trace!(path = %path.display(), frames, copied, "sqlite wal checkpoint");
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "background wal checkpoint failed");
            }
        }
        if last {
            return;
        }
    }
}

/// The write connection: no memory map, a larger page cache.
fn open_write_connection(config: &SqliteConfig) -> Result<Connection, OnlineError> {
    let conn = open_connection(config, false)?;
    let path = &config.path;
    conn.pragma_update(None, "mmap_size", 0)
        .map_err(|e| open_error(path, e))?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
        .map_err(|e| open_error(path, e))?;
    // Each checkpoint ends in an fsync of the database; letting the WAL reach 32 MB before
    // one coalesces repeated writes of a page and cuts the fsyncs eightfold (a feature
    // server taking 100-row pushes after 1-row ones: 420 to 640 pushes/s). With a background
    // checkpointer the commit-time one is only the backstop.
    let pages = if config.background_checkpoint {
        BACKSTOP_AUTOCHECKPOINT_PAGES
    } else {
        WRITER_AUTOCHECKPOINT_PAGES
    };
    conn.pragma_update(None, "wal_autocheckpoint", pages)
        .map_err(|e| open_error(path, e))?;
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .map_err(|e| open_error(path, e))?;
    conn.pragma_update(None, "journal_size_limit", wal_keep_bytes(pages, page_size))
        .map_err(|e| open_error(path, e))?;
    Ok(conn)
}

fn open_error(path: &Path, err: rusqlite::Error) -> OnlineError {
    let retryable = matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    );
    match err.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => OnlineError::Corrupt {
            message: format!("`{}` is not an SQLite database: {err}", path.display()),
        },
        _ => OnlineError::Unavailable {
            store: STORE.to_owned(),
            retryable,
            source: format!("cannot open `{}`: {err}", path.display()).into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The write connection's commit-time checkpoint: SQLite's size with no background
    /// checkpointer, the rarer backstop with one; both cut a grown WAL file back, but never
    /// one that only reached the checkpoint (whatever the page size).
    #[tokio::test]
    async fn writer_checkpoints_at_the_backstop_only_with_a_background_checkpointer() {
        for (background, pages, page_size, keep) in [
            (false, WRITER_AUTOCHECKPOINT_PAGES, None, WAL_KEEP_BYTES),
            (true, BACKSTOP_AUTOCHECKPOINT_PAGES, None, WAL_KEEP_BYTES),
            (
                true,
                BACKSTOP_AUTOCHECKPOINT_PAGES,
                Some(4096),
                WAL_KEEP_BYTES,
            ),
            (true, BACKSTOP_AUTOCHECKPOINT_PAGES, Some(16384), 2 << 30),
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            let config = SqliteConfig {
                background_checkpoint: background,
                page_size,
                ..SqliteConfig::new(dir.path().join("online.db"))
            };
            let pool = Pool::open(&config).expect("open");
            let (autocheckpoint, limit) = pool
                .run_write(|conn| {
                    let get = |name: &str| {
                        conn.pragma_query_value(None, name, |row| row.get::<_, i64>(0))
                            .map_err(|e| OnlineError::internal(e.to_string()))
                    };
                    Ok((get("wal_autocheckpoint")?, get("journal_size_limit")?))
                })
                .await
                .expect("read the writer's settings");
            let case = format!("background_checkpoint: {background}, page_size: {page_size:?}");
            assert_eq!(autocheckpoint, pages, "{case}");
            assert_eq!(limit, keep, "{case}");
            // The WAL at the checkpoint: a header and `pages` frames (24-byte header + page).
            let page = i64::from(page_size.unwrap_or(SqliteConfig::DEFAULT_PAGE_SIZE));
            assert!(limit > 32 + pages * (24 + page), "{case}");
        }
    }
}
