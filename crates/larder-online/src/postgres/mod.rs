//! The Postgres online store, in Feast's layout, with newest-wins writes.
//!
//! Tables, columns and bytes are Feast's (see [`layout`](self::layout)), so a table Feast
//! wrote reads here and the reverse. Unlike Feast's unconditional upsert, a write never
//! replaces a stored feature row with an older event time: the check is part of the
//! `INSERT ... ON CONFLICT ... DO UPDATE ... WHERE` statement, decided under the row lock.
//!
//! Writes copy the batch's winning rows (binary COPY, one staged row per entity key) into a
//! temporary table and upsert from it in one statement, all in one transaction. Reads fetch
//! each view's rows with one `entity_key = ANY($1)` query; `read_many` and `read_rows` send
//! the views' queries together on one connection, where tokio-postgres pipelines them, and
//! `read_rows` hands the found rows to its visitor without building Arrow batches.

mod config;
mod layout;
mod pool;

use std::time::Duration;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use deadpool_postgres::Object;
use futures::SinkExt;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

pub use self::config::{ConnType, PostgresConfig, SslMode};
pub use self::layout::postgres_table_name;
use self::layout::{
    ADDED_COLUMNS, COLUMNS_SQL, COPY_SQL, CopyData, REQUIRED_COLUMNS, STAGING_SQL, StagedRow,
    Table, UnixMicros, encode_copy, quote_ident,
};
use self::pool::{PgPool, STORE, is_missing_table, is_transient, query_error};
use crate::batch::WriteRows;
use crate::error::OnlineError;
use crate::read::{FeatureSlots, KeyIndex, ReadBatchBuilder};
use crate::store::{OnlineCapabilities, OnlineStore, ReadRequest, RowVisitor, ViewTable};

/// Attempts of a write transaction that Postgres aborted as a deadlock or serialization
/// failure (two writers on the same keys in different orders).
const WRITE_ATTEMPTS: u32 = 4;

/// Most transactions one write batch runs at once.
const MAX_PARALLEL_WRITES: usize = 4;

/// Fewest keys worth a transaction of their own.
const MIN_KEYS_PER_WRITE: usize = 10_000;

/// The Postgres online store: Feast's `{project}_{view}` tables in `db_schema`, one row per
/// (entity key, feature), newest-wins writes. Share it as `Arc<dyn OnlineStore>`.
#[derive(Debug)]
pub struct PostgresOnlineStore {
    pool: PgPool,
    schema: String,
}

impl PostgresOnlineStore {
    /// Builds the store; connections open on first use, so an unreachable server shows in
    /// the first call (as [`OnlineError::Unavailable`] naming `host:port/database`).
    ///
    /// Errors: [`OnlineError::InvalidRequest`] when a TLS file cannot be read or parsed, or
    /// `verify-ca`/`verify-full` has no root certificate.
    pub fn new(config: &PostgresConfig) -> Result<Self, OnlineError> {
        Ok(PostgresOnlineStore {
            pool: PgPool::new(config)?,
            schema: config.db_schema.clone(),
        })
    }

    fn table(&self, table: &ViewTable) -> Table {
        Table::new(&self.schema, &table.project, &table.view)
    }

    fn error(&self, err: tokio_postgres::Error, table: &str) -> OnlineError {
        query_error(err, self.pool.endpoint(), table)
    }
}

#[async_trait]
impl OnlineStore for PostgresOnlineStore {
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
        if table.features.is_empty() {
            return Err(OnlineError::invalid(format!(
                "view `{}` has no features; the postgres online store keeps one row per feature",
                table.view
            )));
        }
        let target = self.table(table);
        let mut winners = rows.newest_per_key();
        // Every writer locks rows in key order, so two writers of overlapping keys queue
        // instead of deadlocking.
        winners.sort_unstable_by_key(|&row| rows.key(row));
        let features = table.features.len();
        let names: Vec<&str> = table.features.iter().map(String::as_str).collect();
        // A large batch is written as key ranges in parallel transactions, one connection
        // each: Postgres runs each statement on one core, and the ranges share no row.
        let parallel = self
            .pool
            .max_size()
            .min(MAX_PARALLEL_WRITES)
            .min(winners.len().div_ceil(MIN_KEYS_PER_WRITE))
            .max(1);
        let per_chunk = winners.len().div_ceil(parallel);
        let mut chunks = Vec::with_capacity(parallel);
        let rows = &rows;
        for part in winners.chunks(per_chunk) {
            let staged = part.iter().map(|&row| StagedRow {
                key: rows.key(row),
                event_ts: rows.event_ts(row),
                created_ts: rows.created_ts(row),
                values: (0..features).map(move |f| rows.value(f, row)),
            });
            chunks.push(encode_copy(staged, features).map_err(|e| {
                OnlineError::invalid(format!("cannot write view `{}`: {e}", table.view))
            })?);
        }
        let writes = chunks
            .iter()
            .map(|data| self.write_part(&target, &names, data));
        let written: u64 = futures::future::try_join_all(writes)
            .await?
            .into_iter()
            .sum();
        tracing::debug!(view = %table.view, rows = rows.len(), written, parallel, "postgres online write");
        Ok(written)
    }

    async fn read(
        &self,
        table: &ViewTable,
        keys: &[&[u8]],
        features: &[&str],
    ) -> Result<RecordBatch, OnlineError> {
        let request = ReadRequest {
            table,
            keys,
            features,
            prepared: None,
        };
        let mut out = self.read_many(&[request]).await?;
        out.pop()
            .ok_or_else(|| OnlineError::internal("a read returned no result"))
    }

    async fn read_many(
        &self,
        requests: &[ReadRequest<'_>],
    ) -> Result<Vec<RecordBatch>, OnlineError> {
        let mut batches = Vec::with_capacity(requests.len());
        self.query_views(requests, |r, rows, index, slots| {
            let request = &requests[r];
            let mut builder = ReadBatchBuilder::new(slots, request.features, request.keys.len());
            self.walk_view(request, rows, index, slots, |_, found| {
                match found {
                    Some((event, values)) => builder.push_found(event, values),
                    None => builder.push_missing(),
                }
                Ok(())
            })?;
            batches.push(builder.finish()?);
            Ok(())
        })
        .await?;
        Ok(batches)
    }

    async fn read_rows(
        &self,
        requests: &[ReadRequest<'_>],
        visit: &mut RowVisitor<'_>,
    ) -> Result<(), OnlineError> {
        self.query_views(requests, |r, rows, index, slots| {
            self.walk_view(&requests[r], rows, index, slots, |key, found| {
                slots.visit(visit, r, key, found)
            })
        })
        .await
    }

    async fn update_infra(
        &self,
        keep: &[ViewTable],
        delete: &[ViewTable],
    ) -> Result<(), OnlineError> {
        if keep.is_empty() && delete.is_empty() {
            return Ok(());
        }
        let keep: Vec<Table> = keep.iter().map(|t| self.table(t)).collect();
        let delete: Vec<Table> = delete.iter().map(|t| self.table(t)).collect();
        let mut conn = self.pool.get().await?;
        let work = async {
            if !delete.is_empty() {
                self.drop_tables(&mut conn, &delete).await?;
            }
            if !keep.is_empty() {
                self.create_tables(&conn, &keep).await?;
            }
            Ok(())
        };
        let outcome = tokio::time::timeout(self.pool.query_timeout(), work).await;
        self.pool.settle(conn, "a schema update", outcome)
    }

    async fn teardown(&self, tables: &[ViewTable]) -> Result<(), OnlineError> {
        if tables.is_empty() {
            return Ok(());
        }
        let tables: Vec<Table> = tables.iter().map(|t| self.table(t)).collect();
        let mut conn = self.pool.get().await?;
        let outcome = tokio::time::timeout(
            self.pool.query_timeout(),
            self.drop_tables(&mut conn, &tables),
        )
        .await;
        self.pool.settle(conn, "a teardown", outcome)
    }
}

impl PostgresOnlineStore {
    /// Writes one part of a batch in a transaction of its own; creates the table when it
    /// is missing and retries a transaction Postgres aborted as a deadlock.
    async fn write_part(
        &self,
        target: &Table,
        names: &[&str],
        data: &CopyData,
    ) -> Result<u64, OnlineError> {
        let mut conn = self.pool.get().await?;
        let work = async {
            let mut created = false;
            let mut attempt = 1;
            loop {
                match write_once(&mut conn, target, names, data).await {
                    Ok(written) => return Ok(written),
                    Err(e) if is_missing_table(&e) && !created => {
                        self.create_tables(&conn, std::slice::from_ref(target))
                            .await?;
                        created = true;
                    }
                    Err(e) if is_transient(&e) && attempt < WRITE_ATTEMPTS => {
                        tracing::debug!(table = %target.name, attempt, error = %e, "postgres write retried");
                        tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(write_error(self.error(e, &target.name))),
                }
            }
        };
        let outcome = tokio::time::timeout(self.pool.query_timeout(), work).await;
        self.pool.settle(conn, "a write", outcome)
    }

    /// One view's query: the stored rows of the distinct keys of `index`, for every feature
    /// of the view; `None` when the table does not exist (not created or materialized yet,
    /// or deleted: nothing is found).
    async fn query_view(
        &self,
        conn: &Object,
        request: &ReadRequest<'_>,
        index: &KeyIndex<'_>,
        slots: &FeatureSlots<'_>,
    ) -> Result<Option<Vec<Row>>, OnlineError> {
        if request.keys.is_empty() {
            return Ok(None);
        }
        let table = self.table(request.table);
        let keys: &[&[u8]] = index.unique();
        // The requested features, and the view's others: every write stores all features
        // of the view, so a key is found, and its event time known, whichever of them are
        // asked for (values of the others are not used).
        let mut names: Vec<&str> = slots.names().to_vec();
        for feature in &request.table.features {
            if !names.contains(&feature.as_str()) {
                names.push(feature);
            }
        }
        let result = match conn.prepare_cached(&table.select_sql()).await {
            Ok(statement) => conn.query(&statement, &[&keys, &names]).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(rows) => Ok(Some(rows)),
            Err(e) if is_missing_table(&e) => Ok(None),
            Err(e) => Err(self.error(e, &table.name)),
        }
    }

    /// Walks what [`query_view`](Self::query_view) found for `request`, calling
    /// `row(key position, found)` for each requested key in order: its event time and its
    /// values by slot of `slots`, `None` when not found.
    fn walk_view(
        &self,
        request: &ReadRequest<'_>,
        rows: Option<&[Row]>,
        index: &KeyIndex<'_>,
        slots: &FeatureSlots<'_>,
        mut row: impl FnMut(usize, Option<(i64, &[Option<&[u8]>])>) -> Result<(), OnlineError>,
    ) -> Result<(), OnlineError> {
        let Some(rows) = rows else {
            return (0..request.keys.len()).try_for_each(|key| row(key, None));
        };
        let table = self.table(request.table);
        // Per key slot, the newest event time among its rows; a key's values are those of
        // its rows at that time, so feature rows left from an older write (a feature the
        // view has since dropped) never mix into a newer row.
        let width = slots.len();
        let mut newest: Vec<Option<i64>> = vec![None; index.unique().len()];
        let mut parsed = Vec::with_capacity(rows.len());
        let corrupt = |e: tokio_postgres::Error| OnlineError::Corrupt {
            message: format!(
                "table `{}` at `{}` holds a value of the wrong type: {}",
                table.name,
                self.pool.endpoint(),
                pool::describe(&e)
            ),
        };
        for stored in rows {
            let key: &[u8] = stored.try_get(0).map_err(corrupt)?;
            let Some(slot) = index.slot(key) else {
                continue;
            };
            let name: &str = stored.try_get(1).map_err(corrupt)?;
            let value: Option<&[u8]> = stored.try_get(2).map_err(corrupt)?;
            let event: Option<UnixMicros> = stored.try_get(3).map_err(corrupt)?;
            let Some(UnixMicros(event)) = event else {
                return Err(OnlineError::Corrupt {
                    message: format!(
                        "table `{}` at `{}` has a row without `event_ts`",
                        table.name,
                        self.pool.endpoint()
                    ),
                });
            };
            let best = &mut newest[slot];
            if best.is_none_or(|b| event > b) {
                *best = Some(event);
            }
            parsed.push((slot, slots.find(name.as_bytes()), value, event));
        }
        let mut values: Vec<Option<&[u8]>> = vec![None; newest.len() * width];
        for (slot, feature, value, event) in parsed {
            if let Some(feature) = feature
                && newest[slot] == Some(event)
            {
                values[slot * width + feature] = value;
            }
        }
        for (key, &slot) in index.slots().iter().enumerate() {
            match newest[slot] {
                Some(event) => row(
                    key,
                    Some((event, &values[slot * width..(slot + 1) * width])),
                )?,
                None => row(key, None)?,
            }
        }
        Ok(())
    }

    /// Sends the queries of `requests` together on one connection (tokio-postgres
    /// pipelines them, so the views cost one round trip) and hands each view's rows to
    /// `walk` in request order.
    async fn query_views(
        &self,
        requests: &[ReadRequest<'_>],
        mut walk: impl FnMut(
            usize,
            Option<&[Row]>,
            &KeyIndex<'_>,
            &FeatureSlots<'_>,
        ) -> Result<(), OnlineError>,
    ) -> Result<(), OnlineError> {
        let indexes: Vec<KeyIndex<'_>> = requests
            .iter()
            .map(|r| KeyIndex::new(r.keys.iter().copied()))
            .collect();
        let slots: Vec<FeatureSlots<'_>> = requests
            .iter()
            .map(|r| FeatureSlots::new(r.features))
            .collect();
        let found: Vec<Option<Vec<Row>>> = if requests.iter().all(|r| r.keys.is_empty()) {
            requests.iter().map(|_| None).collect()
        } else {
            let conn = self.pool.get().await?;
            let queries = requests
                .iter()
                .zip(indexes.iter().zip(&slots))
                .map(|(r, (index, slots))| self.query_view(&conn, r, index, slots));
            let outcome = tokio::time::timeout(
                self.pool.query_timeout(),
                futures::future::try_join_all(queries),
            )
            .await;
            self.pool.settle(conn, "a read", outcome)?
        };
        for (r, rows) in found.iter().enumerate() {
            walk(r, rows.as_deref(), &indexes[r], &slots[r])?;
        }
        Ok(())
    }

    /// Creates the schema (when missing) and the tables with their indexes, each statement
    /// idempotent; a table that exists with columns Larder cannot use is refused before
    /// anything is added to it.
    async fn create_tables(&self, conn: &Object, tables: &[Table]) -> Result<(), OnlineError> {
        // CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the database even when
        // the schema exists: ask first.
        let schema_exists = conn
            .query_opt(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                &[&self.schema],
            )
            .await
            .map_err(|e| self.error(e, "(schema)"))?
            .is_some();
        if !schema_exists {
            let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&self.schema));
            retry_race(|| conn.batch_execute(&sql))
                .await
                .map_err(|e| self.error(e, "(schema)"))?;
        }
        for table in tables {
            let (create, index) = (table.create_sql(), table.index_sql());
            retry_race(|| conn.batch_execute(&create))
                .await
                .map_err(|e| self.error(e, &table.name))?;
            self.check_layout(conn, table).await?;
            retry_race(|| conn.batch_execute(&index))
                .await
                .map_err(|e| self.error(e, &table.name))?;
        }
        Ok(())
    }

    /// Refuses a table whose columns Larder cannot use; adds the nullable columns older
    /// Feast versions did not create.
    async fn check_layout(&self, conn: &Object, table: &Table) -> Result<(), OnlineError> {
        let rows = conn
            .query(COLUMNS_SQL, &[&table.qualified])
            .await
            .map_err(|e| self.error(e, &table.name))?;
        let columns: Vec<(String, String)> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| self.error(e, &table.name))?;
        let type_of = |name: &str| {
            columns
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.as_str())
        };
        for (name, expected) in REQUIRED_COLUMNS {
            let problem = match type_of(name) {
                Some(found) if found == expected => continue,
                Some(found) => format!("column `{name}` is {found}, expected {expected}"),
                None => format!("it has no column `{name}`"),
            };
            return Err(OnlineError::IncompatibleTable {
                store: STORE.to_owned(),
                table: table.name.clone(),
                message: problem,
            });
        }
        for (name, definition) in ADDED_COLUMNS {
            if type_of(name).is_none() {
                let sql = format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {name} {definition}",
                    table.qualified
                );
                conn.batch_execute(&sql)
                    .await
                    .map_err(|e| self.error(e, &table.name))?;
            }
        }
        Ok(())
    }

    /// Drops `tables` (with their indexes) in one transaction.
    async fn drop_tables(&self, conn: &mut Object, tables: &[Table]) -> Result<(), OnlineError> {
        let name = tables.first().map_or("", |t| t.name.as_str());
        let mut sql = String::new();
        for table in tables {
            sql.push_str(&table.drop_sql());
            sql.push(';');
        }
        let tx = conn.transaction().await.map_err(|e| self.error(e, name))?;
        tx.batch_execute(&sql)
            .await
            .map_err(|e| self.error(e, name))?;
        tx.commit().await.map_err(|e| self.error(e, name))
    }
}

/// One write transaction: stage the rows, upsert newest-wins, drop what a partly losing
/// row inserted. Returns the number of keys written.
async fn write_once(
    conn: &mut Object,
    table: &Table,
    names: &[&str],
    data: &CopyData,
) -> Result<u64, tokio_postgres::Error> {
    let tx = conn.transaction().await?;
    tx.batch_execute(STAGING_SQL).await?;
    let sink = tx.copy_in::<_, bytes::Bytes>(COPY_SQL).await?;
    futures::pin_mut!(sink);
    for chunk in &data.chunks {
        sink.send(chunk.clone()).await?;
    }
    sink.as_mut().finish().await?;
    let upsert = tx.prepare_cached(&table.upsert_sql()).await?;
    let count = names.len() as i64;
    let row = tx.query_one(&upsert, &[&names, &count]).await?;
    let written: i64 = row.try_get(0)?;
    let partial: Option<Vec<&[u8]>> = row.try_get(1)?;
    if let Some(partial) = partial.filter(|p| !p.is_empty()) {
        let cleanup = tx.prepare_cached(&table.cleanup_sql()).await?;
        tx.execute(&cleanup, &[&partial]).await?;
    }
    tx.commit().await?;
    Ok(u64::try_from(written).unwrap_or(0))
}

/// Runs an idempotent `CREATE ... IF NOT EXISTS` again when a concurrent creator of the
/// same object won the race: Postgres then reports a unique violation in its catalog, or
/// that the table's row type or the table already exists.
async fn retry_race<F, Fut>(statement: F) -> Result<(), tokio_postgres::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    match statement().await {
        Err(e)
            if e.code().is_some_and(|c| {
                *c == SqlState::UNIQUE_VIOLATION
                    || *c == SqlState::DUPLICATE_OBJECT
                    || *c == SqlState::DUPLICATE_TABLE
            }) =>
        {
            statement().await
        }
        other => other,
    }
}

/// Data errors of a write are the caller's (a value Postgres refuses), not stored data's.
fn write_error(err: OnlineError) -> OnlineError {
    match err {
        OnlineError::Corrupt { message } => OnlineError::InvalidRequest { message },
        other => other,
    }
}
