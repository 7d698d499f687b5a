//! The embedded default online store: one SQLite file in WAL mode, in Larder's own layout.
//!
//! Several processes may share the file (`larder serve` reading while `larder materialize`
//! writes): WAL lets readers proceed during a write, and `busy_timeout` covers the short
//! moments SQLite needs exclusive access. Within one store, writes take an async lock so
//! they queue in order instead of polling SQLite's busy handler. The layout (one row per
//! entity key, all features packed in one blob) is described in [`layout`](self::layout).

mod config;
mod layout;
mod pool;

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};

pub use self::config::SqliteConfig;
pub use self::layout::sqlite_table_name;
use self::layout::{
    COLUMNS, MAX_KEYS_PER_SELECT, PayloadWriter, create_table_sql, entries, quote_ident,
    select_size, select_sql, upsert_sql,
};
use self::pool::Pool;
use crate::batch::WriteRows;
use crate::error::OnlineError;
use crate::read::{FeatureSlots, KeyIndex, ReadBatchBuilder, all_missing};
use crate::store::{OnlineCapabilities, OnlineStore, ReadRequest, ViewTable};

/// Most keys of a request (over all its views) read on the calling thread.
const INLINE_READ_KEYS: usize = 512;

/// Fewest keys of a request over several views for which one view is read on a blocking
/// thread while the others are read on the calling thread, when no other read is running
/// (see [`SqliteOnlineStore::read_split`]).
const SPLIT_READ_KEYS: usize = 48;

/// Counts a `read_many` in flight for its lifetime.
struct InFlight<'a> {
    counter: &'a AtomicUsize,
    /// No other read was in flight when this one started.
    alone: bool,
}

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        let before = counter.fetch_add(1, Ordering::Relaxed);
        InFlight {
            counter,
            alone: before == 0,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The store name in errors.
const STORE: &str = "sqlite";

/// The embedded default online store: one SQLite file in WAL mode.
///
/// Several processes may share the file (`larder serve` reads while `larder materialize`
/// writes). Each view is a table `{project}_{view}` (see [`sqlite_table_name`]) with one
/// row per entity key: `entity_key BLOB PRIMARY KEY, event_ts INTEGER (µs), created_ts
/// INTEGER, payload BLOB` (`WITHOUT ROWID`), the payload packing the row's features as
/// named entries (`u8 version 1`, then per feature `u16 name length · name · u32 value
/// length · serialized Value`), so rows survive view schema changes. Share it as
/// `Arc<dyn OnlineStore>`; blocking SQLite work runs on a small connection pool in
/// `spawn_blocking`.
#[derive(Debug)]
pub struct SqliteOnlineStore {
    pool: Pool,
    /// Serializes this store's writes (other processes are handled by `busy_timeout`).
    write_lock: tokio::sync::Mutex<()>,
    /// `read_many` calls running now: a read splits its views over two threads only when
    /// it is alone (see [`SqliteOnlineStore::read_split`]).
    reads_in_flight: AtomicUsize,
}

impl SqliteOnlineStore {
    /// Opens (creating if needed) the database at `config.path` and switches it to WAL.
    ///
    /// Blocks on file I/O briefly; call it at startup or from a blocking task. Errors:
    /// [`OnlineError::Io`] when the parent folder cannot be created,
    /// [`OnlineError::Unavailable`] when the file cannot be opened (retryable if another
    /// process holds it locked beyond `busy_timeout`), [`OnlineError::Corrupt`] when it is
    /// not an SQLite database.
    pub fn open(config: &SqliteConfig) -> Result<Self, OnlineError> {
        let path = &config.path;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| OnlineError::Io {
                store: STORE.to_owned(),
                source: format!("cannot create folder `{}`: {e}", parent.display()).into(),
            })?;
        }
        Ok(SqliteOnlineStore {
            pool: Pool::open(config)?,
            write_lock: tokio::sync::Mutex::new(()),
            reads_in_flight: AtomicUsize::new(0),
        })
    }

    /// Opens the database at `path` with the default settings.
    pub fn open_path(path: &Path) -> Result<Self, OnlineError> {
        Self::open(&SqliteConfig::new(path))
    }
}

impl SqliteOnlineStore {
    /// A mid-sized read over several views, when no other read is running: the view with the
    /// most keys on a pooled blocking thread, the others meanwhile on the calling thread (in
    /// one snapshot), so the request takes about its largest view's time instead of the sum,
    /// for the price of one hand-off (100 entities over two views through the Rust API: p50
    /// about 0.51 to 0.41 ms, `bench/online`). Under concurrent reads the cores are busy
    /// anyway and the hand-off is pure cost (the feature server's 100-entity requests at
    /// concurrency 8: 2100 to 1500 requests/s when every read split), so they stay on their
    /// thread. Each part reads its own snapshot; a materialization commits view by view, so
    /// views never shared one anyway.
    async fn read_split(
        &self,
        requests: &[ReadRequest<'_>],
    ) -> Result<Vec<RecordBatch>, OnlineError> {
        let largest = (0..requests.len())
            .max_by_key(|&i| requests[i].keys.len())
            .unwrap_or(0);
        let request = &requests[largest];
        let offloaded = OwnedRead::new(request.table, request.keys, request.features);
        let here: Vec<OwnedRead> = requests
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != largest)
            .map(|(_, r)| OwnedRead::new(r.table, r.keys, r.features))
            .collect();
        // `join` polls the blocking read first, which hands it to its thread, then runs the
        // others here before waiting for it.
        let (offloaded, here) = tokio::join!(
            self.pool.run(move |conn| read_view(conn, &offloaded)),
            self.pool.run_here(|conn| {
                let tx = conn
                    .transaction()
                    .map_err(|e| sqlite_error(e, "(read transaction)"))?;
                here.iter()
                    .map(|r| read_view(&tx, r))
                    .collect::<Result<Vec<_>, _>>()
            }),
        );
        let mut here = here?.into_iter();
        let mut offloaded = Some(offloaded?);
        let mut out = Vec::with_capacity(requests.len());
        for i in 0..requests.len() {
            if i == largest {
                out.extend(offloaded.take());
            } else {
                out.push(
                    here.next().ok_or_else(|| {
                        OnlineError::internal("a split read returned too few views")
                    })?,
                );
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl OnlineStore for SqliteOnlineStore {
    fn capabilities(&self) -> OnlineCapabilities {
        OnlineCapabilities {
            newest_wins: true,
            ttl_on_read: false,
            cross_process: true,
            max_keys_per_read: None,
        }
    }

    async fn write_batch(&self, table: &ViewTable, rows: RecordBatch) -> Result<u64, OnlineError> {
        let rows = WriteRows::new(table, &rows)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let writer =
            PayloadWriter::new(table.features.iter().map(String::as_str)).map_err(|name| {
                OnlineError::invalid(format!("feature name `{name}` is longer than 65535 bytes"))
            })?;
        let name = sqlite_table_name(&table.project, &table.view);
        let features = table.features.clone();
        let _write = self.write_lock.lock().await;
        let received = rows.len();
        let written = self
            .pool
            .run_write(move |conn| write_rows(conn, &name, &features, &writer, &rows))
            .await?;
        tracing::debug!(view = %table.view, rows = received, written, "sqlite online write");
        Ok(written)
    }

    async fn read(
        &self,
        table: &ViewTable,
        keys: &[&[u8]],
        features: &[&str],
    ) -> Result<RecordBatch, OnlineError> {
        if keys.is_empty() {
            return all_missing(features, 0);
        }
        let request = OwnedRead::new(table, keys, features);
        if keys.len() <= INLINE_READ_KEYS {
            return self.pool.run_here(|conn| read_view(conn, &request)).await;
        }
        self.pool.run(move |conn| read_view(conn, &request)).await
    }

    async fn read_many(
        &self,
        requests: &[ReadRequest<'_>],
    ) -> Result<Vec<RecordBatch>, OnlineError> {
        let keys: usize = requests.iter().map(|r| r.keys.len()).sum();
        let in_flight = InFlight::enter(&self.reads_in_flight);
        if requests.len() > 1
            && (SPLIT_READ_KEYS..=INLINE_READ_KEYS).contains(&keys)
            && in_flight.alone
        {
            return self.read_split(requests).await;
        }
        if keys <= INLINE_READ_KEYS {
            // A small read (well under a millisecond from pages the OS holds) runs on this
            // thread, all views in one snapshot: handing it to a blocking thread and back
            // costs more than the read (a 1-entity request: p50 0.09 to 0.02 ms; the feature
            // server: 15k to 22k requests/s).
            let owned: Vec<OwnedRead> = requests
                .iter()
                .map(|r| OwnedRead::new(r.table, r.keys, r.features))
                .collect();
            return self
                .pool
                .run_here(|conn| {
                    let tx = conn
                        .transaction()
                        .map_err(|e| sqlite_error(e, "(read transaction)"))?;
                    owned.iter().map(|r| read_view(&tx, r)).collect()
                })
                .await;
        }
        // A large one reads its views at once on blocking threads, each on its own pooled
        // connection: its latency is its slowest view's, not their sum. Each view reads one
        // snapshot; a materialization commits view by view, so views never shared one anyway.
        let reads = requests.iter().map(|r| {
            let request = OwnedRead::new(r.table, r.keys, r.features);
            self.pool.run(move |conn| read_view(conn, &request))
        });
        futures::future::try_join_all(reads).await
    }

    async fn update_infra(
        &self,
        keep: &[ViewTable],
        delete: &[ViewTable],
    ) -> Result<(), OnlineError> {
        let names = |tables: &[ViewTable]| -> Vec<String> {
            tables
                .iter()
                .map(|t| sqlite_table_name(&t.project, &t.view))
                .collect()
        };
        let (keep, delete) = (names(keep), names(delete));
        let _write = self.write_lock.lock().await;
        self.pool
            .run_write(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(|e| sqlite_error(e, "(schema update)"))?;
                for name in &delete {
                    drop_table(&tx, name)?;
                }
                for name in &keep {
                    tx.execute(&create_table_sql(&quote_ident(name)), [])
                        .map_err(|e| sqlite_error(e, name))?;
                    check_layout(&tx, name)?;
                }
                tx.commit().map_err(|e| sqlite_error(e, "(schema update)"))
            })
            .await?;
        Ok(())
    }

    async fn teardown(&self, tables: &[ViewTable]) -> Result<(), OnlineError> {
        let names: Vec<String> = tables
            .iter()
            .map(|t| sqlite_table_name(&t.project, &t.view))
            .collect();
        let _write = self.write_lock.lock().await;
        self.pool
            .run_write(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(|e| sqlite_error(e, "(teardown)"))?;
                for name in &names {
                    drop_table(&tx, name)?;
                }
                tx.commit().map_err(|e| sqlite_error(e, "(teardown)"))
            })
            .await
    }
}

/// One transaction per batch: create the table if needed, then one newest-wins upsert per
/// distinct key (the batch's own winner). Returns the rows SQLite changed.
fn write_rows(
    conn: &mut Connection,
    name: &str,
    features: &[String],
    writer: &PayloadWriter,
    rows: &WriteRows,
) -> Result<u64, OnlineError> {
    let err = |e| sqlite_error(e, name);
    let quoted = quote_ident(name);
    let mut winners = rows.newest_per_key();
    // In key order, consecutive upserts land on the same or the next B-tree page.
    winners.sort_unstable_by_key(|&row| rows.key(row));
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    tx.prepare_cached(&create_table_sql(&quoted))
        .and_then(|mut create| create.execute([]))
        .map_err(err)?;
    let mut written = 0u64;
    {
        let mut upsert = tx.prepare_cached(&upsert_sql(&quoted)).map_err(err)?;
        let mut payload = Vec::new();
        for row in winners {
            writer
                .write(&mut payload, |feature| rows.value(feature, row))
                .map_err(|feature| {
                    OnlineError::invalid(format!(
                        "a value of feature `{}` is larger than 4 GiB",
                        features[feature]
                    ))
                })?;
            let changed = upsert
                .execute((
                    rows.key(row),
                    rows.event_ts(row),
                    rows.created_ts(row),
                    payload.as_slice(),
                ))
                .map_err(err)?;
            written += changed as u64;
        }
    }
    tx.commit().map_err(err)?;
    Ok(written)
}

/// A read request copied so it can move to a blocking task: keys end to end in one buffer.
#[derive(Debug)]
struct OwnedRead {
    name: String,
    key_data: Vec<u8>,
    key_ends: Vec<usize>,
    features: Vec<String>,
}

impl OwnedRead {
    fn new(table: &ViewTable, keys: &[&[u8]], features: &[&str]) -> Self {
        let mut key_data = Vec::with_capacity(keys.iter().map(|k| k.len()).sum());
        let mut key_ends = Vec::with_capacity(keys.len());
        for key in keys {
            key_data.extend_from_slice(key);
            key_ends.push(key_data.len());
        }
        OwnedRead {
            name: sqlite_table_name(&table.project, &table.view),
            key_data,
            key_ends,
            features: features.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn keys(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.key_ends.iter().map(move |&end| {
            let key = &self.key_data[start..end];
            start = end;
            key
        })
    }
}

/// A stored row found by a read: its event time and where its payload sits in the shared
/// buffer (one copy out of SQLite for all rows, no allocation per row).
type Found = Option<(i64, Range<usize>)>;

fn read_view(conn: &Connection, request: &OwnedRead) -> Result<RecordBatch, OnlineError> {
    let features: Vec<&str> = request.features.iter().map(String::as_str).collect();
    let rows = request.key_ends.len();
    let index = KeyIndex::new(request.keys());
    let mut found: Vec<Found> = vec![None; index.unique().len()];
    let mut payloads = Vec::new();
    match fetch(conn, &request.name, &index, &mut found, &mut payloads) {
        Ok(()) => {}
        // Not materialized yet, or deleted: nothing is found.
        Err(e) if is_missing_table(&e) => return all_missing(&features, rows),
        Err(e) => return Err(sqlite_error(e, &request.name)),
    }

    let slots = FeatureSlots::new(&features);
    let mut builder = ReadBatchBuilder::new(&slots, &features, rows);
    let mut values: Vec<Option<&[u8]>> = vec![None; slots.len()];
    let corrupt = |e: layout::PayloadError| OnlineError::Corrupt {
        message: format!(
            "a row of table `{}` has a malformed payload: {e}",
            request.name
        ),
    };
    for &slot in index.slots() {
        let Some((event_ts, range)) = &found[slot] else {
            builder.push_missing();
            continue;
        };
        values.fill(None);
        let mut hint = 0;
        for entry in entries(&payloads[range.clone()]).map_err(corrupt)? {
            let (name, value) = entry.map_err(corrupt)?;
            if let Some(feature) = slots.find_hinted(name, &mut hint) {
                values[feature] = Some(value);
            }
        }
        builder.push_found(*event_ts, &values);
    }
    builder.finish()
}

/// Selects the distinct keys in chunks, recording each found row in `found` (by key slot).
fn fetch(
    conn: &Connection,
    name: &str,
    index: &KeyIndex<'_>,
    found: &mut [Found],
    payloads: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    let quoted = quote_ident(name);
    for chunk in index.unique().chunks(MAX_KEYS_PER_SELECT) {
        let size = select_size(chunk.len());
        let mut select = conn.prepare_cached(&select_sql(&quoted, size))?;
        let Some(&last) = chunk.last() else { continue };
        for i in 0..size {
            // Padding repeats the last key; SQLite's IN list is a set.
            select.raw_bind_parameter(i + 1, chunk.get(i).copied().unwrap_or(last))?;
        }
        let mut rows = select.raw_query();
        while let Some(row) = rows.next()? {
            let key = row.get_ref(0)?.as_blob()?;
            let event_ts = row.get_ref(1)?.as_i64()?;
            let payload = row.get_ref(2)?.as_blob()?;
            if let Some(slot) = index.slot(key) {
                let start = payloads.len();
                payloads.extend_from_slice(payload);
                found[slot] = Some((event_ts, start..payloads.len()));
            }
        }
    }
    Ok(())
}

fn drop_table(conn: &Connection, name: &str) -> Result<(), OnlineError> {
    conn.execute(&format!("DROP TABLE IF EXISTS {}", quote_ident(name)), [])
        .map(drop)
        .map_err(|e| sqlite_error(e, name))
}

/// Refuses a table that exists with other columns (Feast's layout, say).
fn check_layout(conn: &Connection, name: &str) -> Result<(), OnlineError> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
        .and_then(|mut stmt| {
            stmt.query_map([name], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| sqlite_error(e, name))?;
    if columns.iter().map(String::as_str).eq(COLUMNS) {
        return Ok(());
    }
    Err(OnlineError::IncompatibleTable {
        store: STORE.to_owned(),
        table: name.to_owned(),
        message: format!("it has the columns {}", columns.join(", ")),
    })
}

fn sqlite_message(err: &rusqlite::Error) -> Option<&str> {
    match err {
        rusqlite::Error::SqliteFailure(_, Some(message)) => Some(message),
        rusqlite::Error::SqlInputError { msg, .. } => Some(msg),
        _ => None,
    }
}

fn is_missing_table(err: &rusqlite::Error) -> bool {
    sqlite_message(err).is_some_and(|m| m.starts_with("no such table"))
}

/// Maps an SQLite error on table `name` to the variant saying who must act.
fn sqlite_error(err: rusqlite::Error, name: &str) -> OnlineError {
    let store = || STORE.to_owned();
    if let Some(message) = sqlite_message(&err) {
        let foreign = [
            "no such column",
            "has no column named",
            "ON CONFLICT clause does not match",
        ];
        if foreign.iter().any(|f| message.contains(f)) {
            return OnlineError::IncompatibleTable {
                store: store(),
                table: name.to_owned(),
                message: message.to_owned(),
            };
        }
    }
    match &err {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => {
            return OnlineError::Corrupt {
                message: format!("table `{name}` holds a value of the wrong type: {err}"),
            };
        }
        _ => {}
    }
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => OnlineError::Unavailable {
            store: store(),
            retryable: true,
            source: Box::new(err),
        },
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::FileLockingProtocolFailed,
        ) => OnlineError::Unavailable {
            store: store(),
            retryable: false,
            source: Box::new(err),
        },
        Some(ErrorCode::SystemIoFailure | ErrorCode::DiskFull | ErrorCode::OutOfMemory) => {
            OnlineError::Io {
                store: store(),
                source: Box::new(err),
            }
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => OnlineError::Corrupt {
            message: format!("table `{name}`: {err}"),
        },
        _ => OnlineError::internal(format!("SQLite failed on table `{name}`: {err}")),
    }
}
