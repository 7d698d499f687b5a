//! The SQLite backend of the SQL registry: one connection per store instance, used from
//! blocking threads; commits in `BEGIN IMMEDIATE` transactions, so concurrent writers (other
//! instances, other processes) queue on SQLite's write lock instead of deadlocking.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::config::SqliteUrl;
use super::{Backend, Commit, Role, Row, StoreError};

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// `updated_at` as an ISO 8601 UTC text.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

#[derive(Debug)]
pub(super) struct SqliteBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    url: SqliteUrl,
    role: Role,
    table: String,
    /// Opened (and the table created) on first use; dropped after an error so that the
    /// next call starts from a fresh connection.
    conn: Mutex<Option<Connection>>,
}

impl SqliteBackend {
    pub(super) fn new(url: SqliteUrl, role: Role) -> Self {
        let table = url.naming.qualified_table();
        Self {
            inner: Arc::new(Inner {
                url,
                role,
                table,
                conn: Mutex::new(None),
            }),
        }
    }

    /// Runs `work` on a blocking thread with this backend's connection.
    async fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&Inner, &mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run_blocking(move |inner| inner.with_connection(operation, work))
            .await
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        let location = inner.url.location.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|err| StoreError::Internal {
                location,
                message: format!("blocking SQLite task failed: {err}"),
            })?
    }
}

impl Inner {
    fn is_open(&self) -> bool {
        self.conn.lock().map_or_else(
            |poisoned| poisoned.into_inner().is_some(),
            |conn| conn.is_some(),
        )
    }

    fn with_connection<T>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&Inner, &mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|poisoned| {
            // A panic mid-operation leaves no open transaction behind (rusqlite rolls back
            // on drop), so the connection is still usable.
            poisoned.into_inner()
        });
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(StoreError::Internal {
                location: self.url.location.clone(),
                message: "SQLite connection missing after opening".to_string(),
            });
        };
        match work(self, conn) {
            Ok(value) => Ok(value),
            Err(err) => {
                *guard = None;
                Err(self.error(operation, err))
            }
        }
    }

    /// Opens the database; the primary creates the parent directory, the file and the table.
    fn open(&self) -> Result<Connection, StoreError> {
        let path = &self.url.path;
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if self.role == Role::Primary {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                    location: self.url.location.clone(),
                    operation: "create the parent directory of",
                    source,
                })?;
            }
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags).map_err(|e| self.error("open", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.error("open", e))?;
        if self.role == Role::Primary {
            self.create_schema(&conn)
                .map_err(|e| self.error("create the table of", e))?;
        }
        Ok(conn)
    }

    /// WAL (readers never wait for a writer) and the table, idempotently. Two processes
    /// doing this at once queue on the write lock; the second finds the table there.
    fn create_schema(&self, conn: &Connection) -> rusqlite::Result<()> {
        retry_busy(|| {
            conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
                row.get::<_, String>(0)
            })
            .map(drop)
        })?;
        retry_busy(|| {
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    name TEXT NOT NULL PRIMARY KEY,
                    generation INTEGER NOT NULL,
                    blob BLOB,
                    updated_at TEXT NOT NULL
                )",
                self.table
            ))
        })
    }

    fn load(&self, conn: &mut Connection) -> rusqlite::Result<Option<Row>> {
        let sql = format!(
            "SELECT generation, blob FROM {} WHERE name = ?1",
            self.table
        );
        let result = conn
            .query_row(&sql, [&self.url.naming.name], |row| {
                Ok(Row {
                    generation: row.get(0)?,
                    blob: row.get::<_, Option<Vec<u8>>>(1)?.map(Bytes::from),
                })
            })
            .optional();
        match result {
            Err(err) if self.role == Role::Replica && is_missing_table(&err) => Ok(None),
            other => other,
        }
    }

    fn commit(
        &self,
        conn: &mut Connection,
        expected: Option<i64>,
        bytes: &[u8],
    ) -> rusqlite::Result<Commit> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let name = &self.url.naming.name;
        let table = &self.table;
        let written: Option<i64> = match expected {
            None => tx
                .query_row(
                    &format!(
                        "INSERT INTO {table} (name, generation, blob, updated_at)
                         VALUES (?1, 1, ?2, {NOW})
                         ON CONFLICT (name) DO UPDATE
                            SET generation = generation + 1, blob = excluded.blob,
                                updated_at = excluded.updated_at
                            WHERE blob IS NULL
                         RETURNING generation"
                    ),
                    rusqlite::params![name, bytes],
                    |row| row.get(0),
                )
                .optional()?,
            Some(expected) => tx
                .query_row(
                    &format!(
                        "UPDATE {table} SET generation = generation + 1, blob = ?2,
                            updated_at = {NOW}
                         WHERE name = ?1 AND generation = ?3 AND blob IS NOT NULL
                         RETURNING generation"
                    ),
                    rusqlite::params![name, bytes, expected],
                    |row| row.get(0),
                )
                .optional()?,
        };
        let outcome = match written {
            Some(generation) => Commit::Done(generation),
            None => Commit::Conflict {
                current: current_generation(&tx, table, name)?,
            },
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn delete(&self, conn: &mut Connection) -> rusqlite::Result<i64> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let table = &self.table;
        let name = &self.url.naming.name;
        tx.execute(
            &format!(
                "UPDATE {table} SET generation = generation + 1, blob = NULL, updated_at = {NOW}
                 WHERE name = ?1 AND blob IS NOT NULL"
            ),
            [name],
        )?;
        let generation = current_generation(&tx, table, name)?;
        tx.commit()?;
        Ok(generation)
    }

    /// A rusqlite error as a store error naming the database.
    fn error(&self, operation: &'static str, err: rusqlite::Error) -> StoreError {
        let location = self.url.location.clone();
        let code = err.sqlite_error_code();
        match code {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable {
                location,
                retryable: true,
                source: Box::new(err),
            },
            Some(
                ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull,
            ) => StoreError::Io {
                location,
                operation,
                source: io::Error::other(with_path_hint(err, &self.url.path, self.role)),
            },
            _ if err.to_string().starts_with("no such column") => StoreError::Unavailable {
                location,
                retryable: false,
                source: format!(
                    "table {} exists but is not a Larder registry table ({err}); name another \
                     table with `?table=`",
                    self.table
                )
                .into(),
            },
            _ => StoreError::Unavailable {
                location,
                retryable: false,
                source: Box::new(err),
            },
        }
    }
}

/// SQLite's "unable to open database file" says neither which file nor why; for a replica
/// the usual reason is that the file does not exist (replicas never create it).
fn with_path_hint(err: rusqlite::Error, path: &Path, role: Role) -> String {
    if err.sqlite_error_code() == Some(ErrorCode::CannotOpen) {
        let why = if role == Role::Replica && !path.exists() {
            "the file does not exist (a replica is never created)"
        } else {
            "check the path and its permissions"
        };
        format!("{err}: `{}`: {why}", path.display())
    } else {
        err.to_string()
    }
}

fn current_generation(conn: &Connection, table: &str, name: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row(
            &format!("SELECT generation FROM {table} WHERE name = ?1"),
            [name],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

fn is_missing_table(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(_, Some(message)) if message.starts_with("no such table"))
}

/// Repeats `work` while SQLite reports a lock the busy handler did not wait out (changing
/// the journal mode can fail that way while another connection does the same).
fn retry_busy<T>(mut work: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let mut attempt = 0;
    loop {
        match work() {
            Err(err)
                if attempt < 100
                    && matches!(
                        err.sqlite_error_code(),
                        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    ) =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    fn location(&self) -> &str {
        &self.inner.url.location
    }

    async fn load(&self) -> Result<Option<Row>, StoreError> {
        self.run_blocking(|inner| {
            // Reading creates nothing: a `plan` on a fresh repo leaves no database file
            // behind. The first commit creates it.
            if inner.role == Role::Primary && !inner.is_open() && !inner.url.path.exists() {
                return Ok(None);
            }
            inner.with_connection("read", |inner, conn| inner.load(conn))
        })
        .await
    }

    async fn commit(&self, expected: Option<i64>, bytes: Bytes) -> Result<Commit, StoreError> {
        self.run("write", move |inner, conn| {
            inner.commit(conn, expected, &bytes)
        })
        .await
    }

    async fn delete(&self) -> Result<i64, StoreError> {
        self.run("delete", |inner, conn| inner.delete(conn)).await
    }
}
