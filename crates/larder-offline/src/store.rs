//! The `OfflineStore` trait and the shape of a historical retrieval request.

use std::sync::Arc;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::physical_plan::SendableRecordBatchStream;
use larder_spec::{Definitions, FileFormat, ResolvedView};

use crate::error::OfflineError;

/// Where the entity rows (keys + event timestamps) of a retrieval come from.
#[derive(Clone, Debug)]
pub enum EntityInput {
    /// A Parquet or CSV file (or folder), path as given (relative to the repo folder).
    File { path: String, format: FileFormat },
    /// A SQL query over the repo's file data sources, each registered under its name.
    Sql(String),
    /// Rows given by the caller, in order.
    Batches(Vec<RecordBatch>),
    /// No entity rows: every feature row with an event time in `[start, end]` (Feast's
    /// non-entity mode). All requested views must have the same join keys.
    Range {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
}

/// A point-in-time retrieval: entity rows and the resolved views to join.
#[derive(Clone, Debug)]
pub struct HistoricalRequest {
    pub definitions: Arc<Definitions>,
    pub views: Vec<ResolvedView>,
    pub entities: EntityInput,
}

/// What a backend can do, declared up front.
#[derive(Clone, Copy, Debug, Default)]
pub struct OfflineCapabilities {
    /// Entity rows may be given as SQL.
    pub entity_sql: bool,
    /// Retrieval by time range without entity rows.
    pub range_retrieval: bool,
    /// Works on inputs larger than memory (spills).
    pub spills: bool,
}

/// A source of historical feature rows.
#[async_trait]
pub trait OfflineStore: Send + Sync + std::fmt::Debug {
    fn capabilities(&self) -> OfflineCapabilities;

    /// For every entity row, the requested features as of the row's event timestamp:
    /// per view, the latest feature row with the same join keys and
    /// `entity_ts - ttl <= event_ts <= entity_ts` (no lower bound when ttl is 0), ties on
    /// event time broken by the greatest created timestamp; no match gives nulls. Every
    /// entity row comes out exactly once, in input order (for `Range`: ordered by event
    /// time, then keys). Columns: the entity columns, then the features by output name.
    async fn get_historical_features(
        &self,
        request: HistoricalRequest,
    ) -> Result<SendableRecordBatchStream, OfflineError>;
}
