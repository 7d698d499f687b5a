//! Offline stores: where historical feature rows live, and the point-in-time join over them.
//!
//! [`OfflineStore`] is the trait every backend implements; data crosses it as Arrow record
//! batch streams. [`FileOfflineStore`] reads Parquet and CSV files (local paths or object
//! store URLs) through DataFusion, and joins with [`asof::AsOfJoinExec`], a sort-merge as-of
//! operator that runs inside DataFusion's partitioned, spilling execution. Materialization
//! reads deduplicate to the latest row per key with [`latest::LastPerKeyExec`] in the same way.
//! `PostgresOfflineStore` (cargo feature `postgres`, on by default) pushes the same joins
//! and reads down to Postgres as SQL.

pub mod asof;
mod entity_columns;
mod error;
mod file;
pub mod latest;
pub mod map;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod progress;
pub mod reorder;
pub mod rownum;
mod store;

pub use error::OfflineError;
pub use file::{FileOfflineStore, FileStoreOptions};
#[cfg(feature = "postgres")]
pub use postgres::{EntitySelectMode, PostgresOfflineConfig, PostgresOfflineStore};
pub use store::{
    AppendReport, DeriveKeyFn, DerivedKey, EntityInput, HistoricalRequest, KeepKeyFn,
    LATEST_CREATED_TS, LATEST_EVENT_TS, LatestRequest, LatestRows, OfflineCapabilities,
    OfflineStore,
};

/// The stream type retrievals return (DataFusion's, re-exported so callers need not depend on it).
pub use datafusion::physical_plan::SendableRecordBatchStream;
