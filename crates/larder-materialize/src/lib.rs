//! Materialization: loading the latest feature values of a time window from the offline
//! store into the online store.
//!
//! A [`MaterializationEngine`] runs one [`MaterializeTask`] (one view, one window). The
//! [`InProcessEngine`] streams: the offline store deduplicates to the latest row per entity
//! key with bounded memory (spilling beyond its limit), each batch is encoded in Feast's
//! formats ([`convert`]) and written newest-wins to the online store. It never touches the
//! registry: the caller records the window only after [`MaterializationEngine::materialize`]
//! returns `Ok`, so a failed or interrupted run leaves the registry as it was, and
//! rerunning it is safe (newest-wins writes are idempotent).
//!
//! The [`K8sEngine`] (`batch_engine: {type: k8s}`) runs each task as a Kubernetes Indexed
//! Job whose pods each run `larder materialize --shard i/N`: the in-process engine
//! restricted to one [`Shard`] of the entity keys (see [`k8s`]).

pub mod convert;
mod engine;
mod error;
pub mod k8s;
mod progress;
mod shard;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use larder_spec::{Definitions, FeatureView};

pub use engine::{EngineOptions, InProcessEngine};
pub use error::MaterializeError;
pub use k8s::{K8sEngine, K8sError};
pub use progress::{Phase, ViewProgress};
pub use shard::{Shard, ShardError};

/// One view to materialize over one window.
#[derive(Clone, Debug)]
pub struct MaterializeTask {
    pub project: String,
    /// The registry's definitions the view belongs to (its sources, entities).
    pub definitions: Arc<Definitions>,
    pub view: FeatureView,
    /// First event time written (inclusive).
    pub start: DateTime<Utc>,
    /// Last event time written (inclusive).
    pub end: DateTime<Utc>,
}

/// What a finished task did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewReport {
    pub view: String,
    /// Source rows in the window.
    pub rows_read: u64,
    /// Entity keys written (one row per key).
    pub rows_written: u64,
    /// Set when the engine only submitted the work and returned before it was done (the
    /// Kubernetes engine with `synchronous: false`), naming what it submitted. The window
    /// must then not be recorded: the data may never be written.
    pub submitted: Option<String>,
}

/// Runs materialization tasks. Engines never write the registry: the caller records a
/// task's window when `materialize` returns `Ok` with [`ViewReport::submitted`] unset.
#[async_trait]
pub trait MaterializationEngine: Send + Sync + std::fmt::Debug {
    /// Writes, per entity key of `task.view`, the latest row in the task's window to the
    /// online store; `progress` is updated as it goes. Safe to rerun after a failure.
    async fn materialize(
        &self,
        task: MaterializeTask,
        progress: Arc<ViewProgress>,
    ) -> Result<ViewReport, MaterializeError>;
}
