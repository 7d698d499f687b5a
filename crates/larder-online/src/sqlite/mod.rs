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
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior};

pub use self::config::SqliteConfig;
pub use self::layout::key_slot as sqlite_key_slot;
pub use self::layout::sqlite_table_name;
use self::layout::{
    COLUMNS, MAX_KEYS_PER_SELECT, PayloadWriter, TableSql, V1_COLUMNS, create_table_sql, entries,
    key_slot, occupant_sql, quote_ident, upsert_sql,
};
use self::pool::{Pool, end_read, run_cached};
use crate::batch::WriteRows;
use crate::error::OnlineError;
use crate::read::{FeatureSlots, ReadBatchBuilder, all_missing};
use crate::store::{
    OnlineCapabilities, OnlineStore, ReadRequest, RowVisitor, ViewTable, WriteOrderFn,
    visit_batches,
};

/// Most keys of a request (over all its views) read on the calling thread.
const INLINE_READ_KEYS: usize = 512;

/// Counts a `read_many` in flight for its lifetime.
struct InFlight<'a> {
    counter: &'a AtomicUsize,
}

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight { counter }
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
/// row per entity key: `slot INTEGER PRIMARY KEY` (the key's hash, see [`sqlite_key_slot`]),
/// `entity_key BLOB, event_ts INTEGER (µs), created_ts INTEGER, payload BLOB`, the payload
/// packing the row's features as
/// named entries (`u8 version 1`, then per feature `u16 name length · name · u32 value
/// length · serialized Value`), so rows survive view schema changes. Share it as
/// `Arc<dyn OnlineStore>`; blocking SQLite work runs on a small connection pool in
/// `spawn_blocking`.
#[derive(Debug)]
pub struct SqliteOnlineStore {
    pool: Pool,
    /// Serializes this store's writes (other processes are handled by `busy_timeout`).
    write_lock: tokio::sync::Mutex<()>,
    /// `read_many` calls running now: the facade splits a large read over two threads
    /// only when none is (see [`OnlineStore::split_read_hint`]).
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
        if keys.len() <= INLINE_READ_KEYS {
            return self
                .pool
                .read_here(|conn| {
                    let sql = TableSql::of(&table.project, &table.view);
                    read_view(conn, &sql, keys, features)
                })
                .await;
        }
        let request = OwnedRead::new(table, keys, features);
        self.pool.run(move |conn| request.read(conn)).await
    }

    async fn read_many(
        &self,
        requests: &[ReadRequest<'_>],
    ) -> Result<Vec<RecordBatch>, OnlineError> {
        let keys: usize = requests.iter().map(|r| r.keys.len()).sum();
        let _in_flight = InFlight::enter(&self.reads_in_flight);
        if keys <= INLINE_READ_KEYS {
            // A small read (well under a millisecond from pages the OS holds) runs on this
            // thread, all views in one snapshot: handing it to a blocking thread and back
            // costs more than the read (a 1-entity request: p50 0.09 to 0.02 ms; the feature
            // server: 15k to 22k requests/s).
            return self
                .pool
                .read_here(|conn| {
                    let read = |r: &ReadRequest<'_>| {
                        let sql = TableSql::of(&r.table.project, &r.table.view);
                        read_view(conn, &sql, r.keys, r.features)
                    };
                    requests.iter().map(read).collect()
                })
                .await;
        }
        // A large one reads its views at once on blocking threads, each on its own pooled
        // connection: its latency is its slowest view's, not their sum. Each view reads one
        // snapshot; a materialization commits view by view, so views never shared one anyway.
        let reads = requests.iter().map(|r| {
            let request = OwnedRead::new(r.table, r.keys, r.features);
            self.pool.run(move |conn| request.read(conn))
        });
        futures::future::try_join_all(reads).await
    }

    async fn read_rows(
        &self,
        requests: &[ReadRequest<'_>],
        visit: &mut RowVisitor<'_>,
    ) -> Result<(), OnlineError> {
        let keys: usize = requests.iter().map(|r| r.keys.len()).sum();
        if keys > INLINE_READ_KEYS {
            // Read on blocking threads, as `read_many` does, and walked from its batches.
            let batches = self.read_many(requests).await?;
            return visit_batches(requests, &batches, visit);
        }
        let _in_flight = InFlight::enter(&self.reads_in_flight);
        self.pool
            .read_here(|conn| {
                for (r, request) in requests.iter().enumerate() {
                    let sql = TableSql::of(&request.table.project, &request.table.view);
                    let slots = FeatureSlots::new(request.features);
                    walk_view(conn, &sql, request.keys, &slots, |key, found| {
                        slots.visit(visit, r, key, found)
                    })?;
                }
                Ok(())
            })
            .await
    }

    /// Reads are CPU work in this process: splitting pays when no other read runs.
    fn split_read_hint(&self) -> bool {
        self.reads_in_flight.load(Ordering::Relaxed) == 0
    }

    /// Slot order: rows sorted by it are appended to neighbouring pages of the table.
    fn write_order(&self) -> Option<WriteOrderFn> {
        Some(slot_order)
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
                    let columns = table_columns(&tx, name).map_err(|e| sqlite_error(e, name))?;
                    if columns.iter().map(String::as_str).eq(V1_COLUMNS) {
                        migrate_v1(&tx, name)?;
                    }
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
    let mut winners: Vec<(i64, usize)> = rows
        .newest_per_key()
        .into_iter()
        .map(|row| (key_slot(rows.key(row)), row))
        .collect();
    // In slot order, consecutive upserts land on the same or the next B-tree page.
    winners.sort_unstable();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    tx.prepare_cached(&create_table_sql(&quoted))
        .and_then(|mut create| create.execute([]))
        .map_err(err)?;
    let mut upsert = SlotUpsert::new(&tx, &quoted).map_err(|e| table_error(&tx, e, name))?;
    let mut written = 0u64;
    let mut payload = Vec::new();
    for (slot, row) in winners {
        writer
            .write(&mut payload, |feature| rows.value(feature, row))
            .map_err(|feature| {
                OnlineError::invalid(format!(
                    "a value of feature `{}` is larger than 4 GiB",
                    features[feature]
                ))
            })?;
        let row = StoredRow {
            key: rows.key(row),
            event_ts: rows.event_ts(row),
            created_ts: rows.created_ts(row),
            payload: &payload,
        };
        let put = upsert.put(slot, &row, name);
        written += u64::from(put.map_err(|e| explain_layout(&tx, e, name))?);
    }
    drop(upsert);
    tx.commit().map_err(err)?;
    Ok(written)
}

/// The key's home slot as 8 bytes that sort like the slot (big-endian, sign bit flipped).
fn slot_order(key: &[u8]) -> [u8; 8] {
    let slot = u64::from_ne_bytes(key_slot(key).to_ne_bytes());
    (slot ^ (1 << 63)).to_be_bytes()
}

/// One row as stored: the serialized entity key, event and created time (µs), payload.
struct StoredRow<'a> {
    key: &'a [u8],
    event_ts: i64,
    created_ts: Option<i64>,
    payload: &'a [u8],
}

/// The newest-wins upsert of rows at their slots, probing past slots held by other keys.
struct SlotUpsert<'c> {
    upsert: rusqlite::CachedStatement<'c>,
    occupant: rusqlite::CachedStatement<'c>,
}

impl<'c> SlotUpsert<'c> {
    fn new(conn: &'c Connection, quoted: &str) -> rusqlite::Result<Self> {
        Ok(SlotUpsert {
            upsert: conn.prepare_cached(&upsert_sql(quoted))?,
            occupant: conn.prepare_cached(&occupant_sql(quoted))?,
        })
    }

    /// Writes `row` unless its key holds a newer event time; whether it was written. `home`
    /// is `key_slot(row.key)`. From the home slot on, the first slot that is free or holds
    /// this key is the key's (no row is ever deleted alone, so no gap hides a later one).
    fn put(&mut self, home: i64, row: &StoredRow<'_>, name: &str) -> Result<bool, OnlineError> {
        let err = |e| sqlite_error(e, name);
        let mut slot = home;
        loop {
            let changed = self
                .upsert
                .execute((slot, row.key, row.event_ts, row.created_ts, row.payload))
                .map_err(err)?;
            if changed > 0 {
                return Ok(true);
            }
            // Not written: the key holds a newer row here, or another key holds the slot.
            let occupant: Option<Vec<u8>> = self
                .occupant
                .query_row([slot], |r| r.get(0))
                .optional()
                .map_err(err)?;
            match occupant {
                Some(key) if key == row.key => return Ok(false),
                Some(_) => slot = slot.wrapping_add(1),
                None => {
                    return Err(OnlineError::internal(format!(
                        "the upsert into table `{name}` at free slot {slot} changed no row"
                    )));
                }
            }
        }
    }
}

/// A read request copied so it can move to a blocking task: keys end to end in one buffer.
#[derive(Debug)]
struct OwnedRead {
    project: String,
    view: String,
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
            project: table.project.clone(),
            view: table.view.clone(),
            key_data,
            key_ends,
            features: features.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn read(&self, conn: &Connection) -> Result<RecordBatch, OnlineError> {
        let keys: Vec<&[u8]> = self.keys().collect();
        let features: Vec<&str> = self.features.iter().map(String::as_str).collect();
        read_table(conn, &self.project, &self.view, &keys, &features)
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

/// Runs `reads` in one read transaction, so they see one snapshot (a view's read may take
/// several statements: chunks of keys, probing rounds).
fn in_read_transaction<R>(
    conn: &Connection,
    reads: impl FnOnce() -> Result<R, OnlineError>,
) -> Result<R, OnlineError> {
    run_cached(conn, "BEGIN")?;
    let out = reads();
    let ended = end_read(conn);
    let out = out?;
    ended.map(|()| out)
}

/// One view's read on its own, in a read transaction.
fn read_table(
    conn: &Connection,
    project: &str,
    view: &str,
    keys: &[&[u8]],
    features: &[&str],
) -> Result<RecordBatch, OnlineError> {
    let sql = TableSql::of(project, view);
    in_read_transaction(conn, || read_view(conn, &sql, keys, features))
}

fn read_view(
    conn: &Connection,
    sql: &TableSql,
    keys: &[&[u8]],
    features: &[&str],
) -> Result<RecordBatch, OnlineError> {
    let slots = FeatureSlots::new(features);
    let mut builder = ReadBatchBuilder::new(&slots, features, keys.len());
    walk_view(conn, sql, keys, &slots, |_, found| {
        match found {
            Some((event_ts, values)) => builder.push_found(event_ts, values),
            None => builder.push_missing(),
        }
        Ok(())
    })?;
    builder.finish()
}

/// Reads `keys` from the table of `sql` and calls `row(key position, found)` for each key
/// in order: its event time and its values by slot of `slots`, `None` when not found.
fn walk_view(
    conn: &Connection,
    sql: &TableSql,
    keys: &[&[u8]],
    slots: &FeatureSlots<'_>,
    mut row: impl FnMut(usize, Option<(i64, &[Option<&[u8]>])>) -> Result<(), OnlineError>,
) -> Result<(), OnlineError> {
    // Not deduplicated: the reader sends distinct keys, and a repeated key only looks at
    // the same slot twice (its payload is copied twice).
    let mut found: Vec<Found> = vec![None; keys.len()];
    let mut payloads = Vec::new();
    let name = sql.name.as_str();
    match fetch(conn, sql, keys, &mut found, &mut payloads) {
        Ok(()) => {}
        // Not materialized yet, or deleted: nothing is found.
        Err(e) if is_missing_table(&e) => {
            return (0..keys.len()).try_for_each(|key| row(key, None));
        }
        Err(e) => return Err(table_error(conn, e, name)),
    }
    let mut values: Vec<Option<&[u8]>> = vec![None; slots.len()];
    let corrupt = |e: layout::PayloadError| OnlineError::Corrupt {
        message: format!("a row of table `{name}` has a malformed payload: {e}"),
    };
    for (key, stored) in found.iter().enumerate() {
        let Some((event_ts, range)) = stored else {
            row(key, None)?;
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
        row(key, Some((*event_ts, &values)))?;
    }
    Ok(())
}

/// Selects `keys` in chunks of slots, recording each found row in `found` (by position in
/// `keys`). A key whose home slot holds another key is looked up again at the next slot,
/// round after round, until its own row or an empty slot turns up.
fn fetch(
    conn: &Connection,
    sql: &TableSql,
    keys: &[&[u8]],
    found: &mut [Found],
    payloads: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    // (slot to look at, key index), sorted by slot; the same slot may appear twice.
    let mut pending: Vec<(i64, usize)> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| (key_slot(key), i))
        .collect();
    let mut slots: Vec<i64> = Vec::with_capacity(pending.len());
    // Per pending entry: whether its slot holds a row.
    let mut occupied: Vec<bool> = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        pending.sort_unstable();
        slots.clear();
        slots.extend(pending.iter().map(|&(slot, _)| slot));
        slots.dedup();
        occupied.clear();
        occupied.resize(pending.len(), false);
        for chunk in slots.chunks(MAX_KEYS_PER_SELECT) {
            let (size, select_sql) = sql.select(chunk.len());
            let mut select = conn.prepare_cached(&select_sql)?;
            let Some(&last) = chunk.last() else { continue };
            for i in 0..size {
                // Padding repeats the last slot; SQLite's IN list is a set.
                select.raw_bind_parameter(i + 1, chunk.get(i).copied().unwrap_or(last))?;
            }
            let mut rows = select.raw_query();
            while let Some(row) = rows.next()? {
                let slot = row.get_ref(0)?.as_i64()?;
                let key = row.get_ref(1)?.as_blob()?;
                let start = pending.partition_point(|&(s, _)| s < slot);
                for (at, &(s, k)) in pending.iter().enumerate().skip(start) {
                    if s != slot {
                        break;
                    }
                    occupied[at] = true;
                    if keys[k] == key {
                        let event_ts = row.get_ref(2)?.as_i64()?;
                        let payload = row.get_ref(3)?.as_blob()?;
                        let begin = payloads.len();
                        payloads.extend_from_slice(payload);
                        found[k] = Some((event_ts, begin..payloads.len()));
                    }
                }
            }
        }
        // An empty slot ends a key's search (absent); another key's row sends it on.
        let mut at = 0;
        pending.retain_mut(|(slot, k)| {
            let go_on = occupied[at] && found[*k].is_none();
            at += 1;
            *slot = slot.wrapping_add(1);
            go_on
        });
    }
    Ok(())
}

fn drop_table(conn: &Connection, name: &str) -> Result<(), OnlineError> {
    conn.execute(&format!("DROP TABLE IF EXISTS {}", quote_ident(name)), [])
        .map(drop)
        .map_err(|e| sqlite_error(e, name))
}

/// The column names of table `name`, in order (none when it does not exist).
fn table_columns(conn: &Connection, name: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
        .and_then(|mut stmt| {
            stmt.query_map([name], |row| row.get(0))?
                .collect::<Result<_, _>>()
        })
}

/// The `IncompatibleTable` message of a table in the layout before version 2.
const V1_LAYOUT: &str = "it has the layout of an earlier Larder, keyed by the entity key itself; \
                         `larder apply` migrates it";

/// Refuses a table that exists with other columns (Feast's layout, say).
fn check_layout(conn: &Connection, name: &str) -> Result<(), OnlineError> {
    let columns = table_columns(conn, name).map_err(|e| sqlite_error(e, name))?;
    if columns.iter().map(String::as_str).eq(COLUMNS) {
        return Ok(());
    }
    Err(OnlineError::IncompatibleTable {
        store: STORE.to_owned(),
        table: name.to_owned(),
        message: format!("it has the columns {}", columns.join(", ")),
    })
}

/// [`sqlite_error`] for a statement on table `name`, saying so when the table is in the
/// layout before version 2.
fn table_error(conn: &Connection, err: rusqlite::Error, name: &str) -> OnlineError {
    explain_layout(conn, sqlite_error(err, name), name)
}

/// `err`, or when it is an `IncompatibleTable` of a table in the layout before version 2,
/// the error saying that `apply` migrates it.
fn explain_layout(conn: &Connection, err: OnlineError, name: &str) -> OnlineError {
    match err {
        OnlineError::IncompatibleTable { store, table, .. }
            if table_columns(conn, name)
                .is_ok_and(|c| c.iter().map(String::as_str).eq(V1_COLUMNS)) =>
        {
            OnlineError::IncompatibleTable {
                store,
                table,
                message: V1_LAYOUT.to_owned(),
            }
        }
        other => other,
    }
}

/// Rewrites table `name` from the layout before version 2 into the current one, inside the
/// caller's transaction (a failure rolls back to the old table, untouched).
fn migrate_v1(conn: &Connection, name: &str) -> Result<(), OnlineError> {
    let err = |e| sqlite_error(e, name);
    let quoted = quote_ident(name);
    let old = quote_ident(&format!("{name}__larder_v1"));
    conn.execute_batch(&format!(
        "ALTER TABLE {quoted} RENAME TO {old}; {}",
        create_table_sql(&quoted)
    ))
    .map_err(err)?;
    let mut rows = 0u64;
    {
        let mut upsert = SlotUpsert::new(conn, &quoted).map_err(err)?;
        let mut read = conn
            .prepare(&format!(
                "SELECT entity_key, event_ts, created_ts, payload FROM {old}"
            ))
            .map_err(err)?;
        let mut stored = read.query([]).map_err(err)?;
        while let Some(r) = stored.next().map_err(err)? {
            let blob = |i| -> rusqlite::Result<&[u8]> { Ok(r.get_ref(i)?.as_blob()?) };
            let row = StoredRow {
                key: blob(0).map_err(err)?,
                event_ts: r.get(1).map_err(err)?,
                created_ts: r.get(2).map_err(err)?,
                payload: blob(3).map_err(err)?,
            };
            upsert.put(key_slot(row.key), &row, name)?;
            rows += 1;
        }
    }
    conn.execute_batch(&format!("DROP TABLE {old}"))
        .map_err(err)?;
    tracing::info!(
        table = name,
        rows,
        "migrated an SQLite online table to layout version 2"
    );
    Ok(())
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
