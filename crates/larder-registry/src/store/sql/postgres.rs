//! The Postgres backend of the SQL registry: a small deadpool connection pool, commits in
//! transactions, the table created on first use under an advisory lock.

use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;

use super::config::PostgresUrl;
use super::{Backend, Commit, Role, Row, StoreError, tls};

/// Connections per store instance: registry traffic is a load every refresh and a commit
/// per apply or materialization.
const POOL_SIZE: usize = 4;
/// Waiting for a free connection, and making a new one (TCP, TLS, authentication).
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
const CREATE_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) struct PostgresBackend {
    pool: Pool,
    role: Role,
    location: String,
    /// `"schema"."table"` or `"table"`.
    table: String,
    schema: Option<String>,
    name: String,
    /// Set once the table is known to exist (primary only).
    ready: OnceCell<()>,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("location", &self.location)
            .field("role", &self.role)
            .finish()
    }
}

impl PostgresBackend {
    /// Builds the pool; connects on first use.
    pub(super) fn new(url: PostgresUrl, role: Role) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidLocation {
            location: url.location.clone(),
            reason,
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls::connector(url.ssl_mode, &url.root_certs).map_err(invalid)? {
            Some(tls) => Manager::from_config(url.config.clone(), tls, manager_config),
            None => Manager::from_config(url.config.clone(), tokio_postgres::NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT_TIMEOUT))
            .create_timeout(Some(CREATE_TIMEOUT))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|err| StoreError::Internal {
                location: url.location.clone(),
                message: format!("cannot build the connection pool: {err}"),
            })?;
        Ok(Self {
            pool,
            role,
            table: url.naming.qualified_table(),
            schema: url.naming.schema.clone(),
            name: url.naming.name.clone(),
            location: url.location,
            ready: OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let client = self.pool.get().await.map_err(|err| self.pool_error(err))?;
        if self.role == Role::Primary {
            self.ready
                .get_or_try_init(|| self.create_schema(&client))
                .await?;
        }
        Ok(client)
    }

    /// Creates the schema (if named) and the table unless the table exists. Processes doing
    /// this at once serialize on a transaction-scoped advisory lock, since `CREATE ... IF NOT
    /// EXISTS` alone races in Postgres (two creators can both fail on the catalog's unique
    /// index); a lost race that still shows up is retried.
    async fn create_schema(&self, client: &deadpool_postgres::Object) -> Result<(), StoreError> {
        let exists = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&self.table])
            .await
            .map_err(|err| self.db_error("look up the table of", err))?;
        if exists.get::<_, bool>(0) {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.create_schema_once(client).await {
                Err(err) if attempt < 3 && is_creation_race(&err) => {
                    tracing::debug!(location = %self.location, error = %err, "registry table creation raced; retrying");
                }
                result => {
                    return result.map_err(|err| self.db_error("create the table of", err));
                }
            }
        }
    }

    async fn create_schema_once(
        &self,
        client: &deadpool_postgres::Object,
    ) -> Result<(), tokio_postgres::Error> {
        let lock_key = format!("larder registry table {}", self.table);
        let mut sql = format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtext({}));",
            quote_literal(&lock_key)
        );
        if let Some(schema) = &self.schema {
            sql.push_str(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\";"));
        }
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {} (
                name TEXT PRIMARY KEY,
                generation BIGINT NOT NULL,
                blob BYTEA,
                updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );
             COMMIT;",
            self.table
        ));
        let result = client.batch_execute(&sql).await;
        if result.is_err() {
            // The connection may be inside the failed transaction; leave it clean for reuse.
            let _ = client.batch_execute("ROLLBACK").await;
        }
        result
    }

    async fn load_row(&self) -> Result<Option<Row>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT generation, blob FROM {} WHERE name = $1",
            self.table
        );
        match client.query_opt(&sql, &[&self.name]).await {
            Ok(row) => Ok(row.map(|row| Row {
                generation: row.get(0),
                blob: row.get::<_, Option<Vec<u8>>>(1).map(Bytes::from),
            })),
            Err(err)
                if self.role == Role::Replica
                    && matches!(
                        err.code(),
                        Some(&SqlState::UNDEFINED_TABLE | &SqlState::INVALID_SCHEMA_NAME)
                    ) =>
            {
                Ok(None)
            }
            Err(err) => Err(self.db_error("read", err)),
        }
    }

    async fn commit_row(&self, expected: Option<i64>, bytes: Bytes) -> Result<Commit, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|err| self.db_error("write", err))?;
        let table = &self.table;
        let bytes: &[u8] = &bytes;
        let written = match expected {
            None => {
                let sql = format!(
                    "INSERT INTO {table} AS r (name, generation, blob, updated_at)
                     VALUES ($1, 1, $2, now())
                     ON CONFLICT (name) DO UPDATE
                        SET generation = r.generation + 1, blob = EXCLUDED.blob,
                            updated_at = EXCLUDED.updated_at
                        WHERE r.blob IS NULL
                     RETURNING generation"
                );
                tx.query_opt(&sql, &[&self.name, &bytes]).await
            }
            Some(expected) => {
                let sql = format!(
                    "UPDATE {table} SET generation = generation + 1, blob = $2, updated_at = now()
                     WHERE name = $1 AND generation = $3 AND blob IS NOT NULL
                     RETURNING generation"
                );
                tx.query_opt(&sql, &[&self.name, &bytes, &expected]).await
            }
        }
        .map_err(|err| self.db_error("write", err))?;
        let outcome = match written {
            Some(row) => Commit::Done(row.get(0)),
            None => {
                let sql = format!("SELECT generation FROM {table} WHERE name = $1");
                let current = tx
                    .query_opt(&sql, &[&self.name])
                    .await
                    .map_err(|err| self.db_error("write", err))?
                    .map_or(0, |row| row.get::<_, i64>(0));
                Commit::Conflict { current }
            }
        };
        tx.commit()
            .await
            .map_err(|err| self.db_error("write", err))?;
        Ok(outcome)
    }

    async fn delete_row(&self) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|err| self.db_error("delete", err))?;
        let table = &self.table;
        tx.execute(
            &format!(
                "UPDATE {table} SET generation = generation + 1, blob = NULL, updated_at = now()
                 WHERE name = $1 AND blob IS NOT NULL"
            ),
            &[&self.name],
        )
        .await
        .map_err(|err| self.db_error("delete", err))?;
        let generation = tx
            .query_opt(
                &format!("SELECT generation FROM {table} WHERE name = $1"),
                &[&self.name],
            )
            .await
            .map_err(|err| self.db_error("delete", err))?
            .map_or(0, |row| row.get::<_, i64>(0));
        tx.commit()
            .await
            .map_err(|err| self.db_error("delete", err))?;
        Ok(generation)
    }

    fn pool_error(&self, err: PoolError) -> StoreError {
        match err {
            PoolError::Backend(err) => self.db_error("connect to", err),
            PoolError::Timeout(kind) => StoreError::Unavailable {
                location: self.location.clone(),
                retryable: true,
                source: format!("timed out connecting to the database ({kind:?})").into(),
            },
            PoolError::Closed | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
                StoreError::Internal {
                    location: self.location.clone(),
                    message: format!("connection pool failed: {err}"),
                }
            }
        }
    }

    /// A driver error as a store error; `operation` is a verb phrase ("read", "connect to").
    /// The location names user, host, port and database, never the password.
    fn db_error(&self, operation: &'static str, err: tokio_postgres::Error) -> StoreError {
        let location = self.location.clone();
        let Some(db) = err.as_db_error() else {
            // Network, TLS or protocol: the server could not be reached or went away.
            return StoreError::Unavailable {
                location,
                retryable: true,
                source: format!("cannot {operation} the database: {}", error_chain(&err)).into(),
            };
        };
        let code = db.code();
        let message = format!("{} (SQLSTATE {})", db.message(), code.code());
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || *code == SqlState::INSUFFICIENT_PRIVILEGE
        {
            StoreError::AccessDenied {
                location,
                source: message.into(),
            }
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            StoreError::InvalidLocation {
                location,
                reason: format!("cannot be used: {message}"),
            }
        } else if *code == SqlState::UNDEFINED_COLUMN {
            StoreError::Unavailable {
                location,
                retryable: false,
                source: format!(
                    "table {} exists but is not a Larder registry table ({message}); name \
                     another table with `?table=` or `?schema=`",
                    self.table
                )
                .into(),
            }
        } else {
            let retryable = *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::TOO_MANY_CONNECTIONS
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION;
            StoreError::Unavailable {
                location,
                retryable,
                source: format!("cannot {operation} the registry table: {message}").into(),
            }
        }
    }
}

/// The error and its sources ("error connecting to server: Connection refused (os error
/// 111)"), since the driver's top-level message alone is often just "db error".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Errors another process creating the same table or schema at the same moment can cause.
fn is_creation_race(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(
            &SqlState::UNIQUE_VIOLATION
                | &SqlState::DUPLICATE_TABLE
                | &SqlState::DUPLICATE_SCHEMA
                | &SqlState::DUPLICATE_OBJECT
        )
    )
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[async_trait::async_trait]
impl Backend for PostgresBackend {
    fn location(&self) -> &str {
        &self.location
    }

    async fn load(&self) -> Result<Option<Row>, StoreError> {
        self.load_row().await
    }

    async fn commit(&self, expected: Option<i64>, bytes: Bytes) -> Result<Commit, StoreError> {
        self.commit_row(expected, bytes).await
    }

    async fn delete(&self) -> Result<i64, StoreError> {
        self.delete_row().await
    }
}
