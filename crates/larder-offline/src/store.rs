//! The `OfflineStore` trait and the shape of a historical retrieval request.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::physical_plan::SendableRecordBatchStream;
use larder_spec::{DataSource, Definitions, FileFormat, ResolvedView};

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

/// Name of the event timestamp column of [`LatestRows`].
pub const LATEST_EVENT_TS: &str = "__event_ts";
/// Name of the created timestamp column of [`LatestRows`].
pub const LATEST_CREATED_TS: &str = "__created_ts";

/// A materialization read: the latest row per entity key of one view in a time window.
#[derive(Clone, Debug)]
pub struct LatestRequest {
    pub definitions: Arc<Definitions>,
    /// The view with every feature to read (output name = feature name) and its join keys.
    pub view: ResolvedView,
    /// First event time read (inclusive).
    pub start: DateTime<Utc>,
    /// Last event time read (inclusive, as Feast's `BETWEEN`).
    pub end: DateTime<Utc>,
    /// Memory this read may use before it spills to disk; `None`: the store's own limit.
    pub memory_limit: Option<usize>,
    /// A column derived from the join keys to key the rows by, added to the output
    /// (materialization asks for the online store's serialized entity key).
    pub derived_key: Option<DerivedKey>,
}

/// Computes one column from the join key columns of a batch (in the view's join key order,
/// typed as its entity columns).
pub type DeriveKeyFn = dyn Fn(&[ArrayRef]) -> Result<ArrayRef, String> + Send + Sync + 'static;

/// Decides from a batch's derived key column which rows to keep (`true`), one value per row.
pub type KeepKeyFn = dyn Fn(&ArrayRef) -> Result<BooleanArray, String> + Send + Sync + 'static;

/// A key column derived from the join keys: it must be injective (distinct join key tuples
/// give distinct values) and never null. [`LatestRows`] then carries it as the last column,
/// named `name`, and a store that can sorts its output by it, ascending: written in that
/// order, the online store's index grows in order instead of at random places, which is what
/// keeps a large materialization's writes cheap.
#[derive(Clone)]
pub struct DerivedKey {
    pub name: String,
    pub data_type: DataType,
    pub derive: Arc<DeriveKeyFn>,
    /// When set, only the rows whose key it keeps are read on: they are dropped as soon as
    /// the key is computed, before any sort, so a shard of a distributed materialization
    /// (`larder materialize --shard i/N`) deduplicates its own keys only. As the key is a
    /// function of the join keys, all rows of a key are kept or dropped together.
    pub keep: Option<Arc<KeepKeyFn>>,
}

impl std::fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerivedKey")
            .field("name", &self.name)
            .field("data_type", &self.data_type)
            .field("keep", &self.keep.is_some())
            .finish_non_exhaustive()
    }
}

/// The answer to a [`LatestRequest`].
pub struct LatestRows {
    /// Columns: the view's join keys (named and typed as the view's entity columns), then
    /// [`LATEST_EVENT_TS`] (`Timestamp(Microsecond, "UTC")`, non-null), then
    /// [`LATEST_CREATED_TS`] (same type, null when the source has no created column), then
    /// the features by name, typed as declared, then the [`DerivedKey`] when asked for
    /// (ascending by it where the store can). Exactly one row per distinct join-key tuple
    /// among the source rows with `start <= event_ts <= end`: the one with the greatest
    /// event time, ties to the greatest created time. Rows with a null join key or event
    /// time are skipped. A view without join keys yields at most one row. Row order is
    /// otherwise unspecified.
    pub stream: SendableRecordBatchStream,
    /// Source rows read so far (after the time filter), for progress reports.
    pub rows_read: Arc<AtomicU64>,
    /// Rows the source holds (before the time filter), when cheap to know (Parquet
    /// metadata); an upper bound of what `rows_read` reaches.
    pub source_rows: Option<u64>,
}

impl std::fmt::Debug for LatestRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatestRows")
            .field("rows_read", &self.rows_read)
            .field("source_rows", &self.source_rows)
            .finish_non_exhaustive()
    }
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
    /// Rows can be appended to data sources ([`OfflineStore::append`], offline push).
    pub append: bool,
}

/// What an [`OfflineStore::append`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendReport {
    pub rows: u64,
    /// Where the rows went (a new file, a table), for logs and messages.
    pub location: String,
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

    /// The rows materialization writes: per entity key, the latest row in the window (see
    /// [`LatestRows`]). Streams with bounded memory: only the needed columns and the
    /// window are read, and deduplication spills to disk beyond the memory limit.
    async fn pull_latest(&self, request: LatestRequest) -> Result<LatestRows, OfflineError>;

    /// The schema of `source`'s rows as stored (column names as in the source, before any
    /// `field_mapping`).
    ///
    /// Errors: [`OfflineError::UnsupportedAppend`] when this store cannot tell;
    /// [`OfflineError::SourceRead`] when the source cannot be read.
    async fn source_schema(&self, source: &DataSource) -> Result<SchemaRef, OfflineError> {
        Err(OfflineError::UnsupportedAppend {
            source_name: source.name.to_string(),
            reason: "this offline store cannot read source schemas".into(),
        })
    }

    /// The number of rows `source` holds, when this store can tell from metadata alone
    /// (Parquet footers) without reading the data; `None` otherwise. Used to size defaults.
    async fn source_rows(&self, _source: &DataSource) -> Option<u64> {
        None
    }

    /// Appends `rows` to `source` (an offline push). `rows` has exactly the source's columns
    /// with the types of [`source_schema`](OfflineStore::source_schema). Existing data is
    /// never rewritten or lost: a file source gets a new file, written under a temporary
    /// name and renamed into place, so readers see all of it or none. Not idempotent: the
    /// same rows appended twice are stored twice.
    ///
    /// Errors: [`OfflineError::UnsupportedAppend`] for a source this store cannot append
    /// to (naming why); [`OfflineError::AppendFailed`] when writing fails.
    async fn append(
        &self,
        source: &DataSource,
        rows: RecordBatch,
    ) -> Result<AppendReport, OfflineError> {
        let _ = rows;
        Err(OfflineError::UnsupportedAppend {
            source_name: source.name.to_string(),
            reason: "this offline store cannot append rows".into(),
        })
    }
}
