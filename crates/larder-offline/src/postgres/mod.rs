//! The Postgres offline store: `postgres` data sources (a table or a query), with the
//! point-in-time join, the materialization read and offline pushes all pushed down to
//! Postgres as SQL. Results stream back through binary `COPY ... TO STDOUT`, decoded into
//! Arrow batches as they arrive.
//!
//! Every SQL text is built in `sql.rs` from quoted identifiers and literals Larder writes
//! itself; the only user text inlined is what the definitions and the caller give as SQL
//! (a source's `table`/`query`, an entity query), as Feast does.

mod config;
mod join;
mod latest;
mod sources;
mod sql;
mod stream;
mod types;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::physical_plan::SendableRecordBatchStream;
use deadpool_postgres::{Object, Pool, PoolError};
use larder_spec::DataSource;

pub use config::{EntitySelectMode, PostgresOfflineConfig};

use crate::error::OfflineError;
use crate::store::{
    AppendReport, HistoricalRequest, LatestRequest, LatestRows, OfflineCapabilities, OfflineStore,
};

/// Name of the store in messages.
const STORE: &str = "postgres";

/// Tables and queries in a Postgres database.
#[derive(Debug)]
pub struct PostgresOfflineStore {
    config: PostgresOfflineConfig,
    pool: Pool,
    tls: config::Tls,
}

impl std::fmt::Debug for config::Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            config::Tls::None => "no TLS",
            config::Tls::Rustls(_) => "rustls",
        })
    }
}

impl PostgresOfflineStore {
    /// Builds the store and its connection pool; no connection is made until first use.
    pub fn new(config: PostgresOfflineConfig) -> Result<Self, OfflineError> {
        let (pool, tls) = config.pool()?;
        Ok(PostgresOfflineStore { config, pool, tls })
    }

    pub fn config(&self) -> &PostgresOfflineConfig {
        &self.config
    }

    /// A pooled connection, or an error naming the server.
    pub(crate) async fn connect(&self) -> Result<Object, OfflineError> {
        self.pool
            .get()
            .await
            .map_err(|e| OfflineError::Unavailable {
                store: STORE,
                target: self.config.target(),
                message: match e {
                    PoolError::Backend(e) => describe(&e),
                    PoolError::Timeout(_) => format!(
                        "no connection within {:?} (is the server up and reachable?)",
                        self.config.connect_timeout
                    ),
                    other => other.to_string(),
                },
            })
    }

    /// A failed statement, naming the server.
    pub(crate) fn backend_error(&self, e: &tokio_postgres::Error) -> OfflineError {
        let (store, target, message) = (STORE, self.config.target(), describe(e));
        if e.is_closed() {
            // The connection broke: trying again later may work.
            OfflineError::Unavailable {
                store,
                target,
                message,
            }
        } else {
            OfflineError::Backend {
                store,
                target,
                message,
            }
        }
    }
}

/// A Postgres error as one line: the server's message with its detail and hint, or the
/// client's error and its causes.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}

#[async_trait]
impl OfflineStore for PostgresOfflineStore {
    fn capabilities(&self) -> OfflineCapabilities {
        OfflineCapabilities {
            entity_sql: true,
            range_retrieval: true,
            // Postgres sorts and joins on disk beyond `work_mem`; the client holds a few
            // batches at a time.
            spills: true,
            append: true,
        }
    }

    async fn get_historical_features(
        &self,
        request: HistoricalRequest,
    ) -> Result<SendableRecordBatchStream, OfflineError> {
        join::get_historical_features(self, request).await
    }

    async fn pull_latest(&self, request: LatestRequest) -> Result<LatestRows, OfflineError> {
        latest::pull_latest(self, request).await
    }

    /// The columns of a `table` source as Arrow types (see `types.rs` for the mapping).
    /// A `query` source cannot be appended to, so its schema is refused the same way.
    async fn source_schema(&self, source: &DataSource) -> Result<SchemaRef, OfflineError> {
        sources::source_schema(self, source).await
    }

    /// Copies `rows` into the source's table with one binary `COPY`: all rows land or,
    /// when the copy fails, none.
    async fn append(
        &self,
        source: &DataSource,
        rows: RecordBatch,
    ) -> Result<AppendReport, OfflineError> {
        sources::append(self, source, rows).await
    }
}
