//! The in-process engine: offline latest rows, streamed through the encoder into the online
//! store in bounded batches.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use larder_offline::{LatestRequest, OfflineStore};
use larder_online::{OnlineStore, ViewTable};
use larder_spec::ResolvedView;
use larder_types::feast::KeyVersion;

use crate::convert::WriteBatchEncoder;
use crate::error::MaterializeError;
use crate::progress::{Phase, ViewProgress};
use crate::{MaterializationEngine, MaterializeTask, ViewReport};

/// How the in-process engine runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Memory one view's deduplication may use before it spills to disk (`None`: the
    /// offline store's own limit).
    pub memory_limit: Option<usize>,
    /// Most rows per online write (`None`: the offline store's batch size).
    pub write_batch_size: Option<usize>,
    /// Entity key format written (the config's `entity_key_serialization_version`).
    pub key_version: KeyVersion,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            memory_limit: Some(DEFAULT_MEMORY_LIMIT),
            write_batch_size: None,
            key_version: KeyVersion::V3,
        }
    }
}

/// Memory per view by default: enough to deduplicate ~1M narrow rows without spilling.
pub const DEFAULT_MEMORY_LIMIT: usize = 128 << 20;

/// Materializes in this process, streaming with bounded memory.
#[derive(Debug)]
pub struct InProcessEngine {
    offline: Arc<dyn OfflineStore>,
    online: Arc<dyn OnlineStore>,
    options: EngineOptions,
}

impl InProcessEngine {
    pub fn new(
        offline: Arc<dyn OfflineStore>,
        online: Arc<dyn OnlineStore>,
        options: EngineOptions,
    ) -> Self {
        InProcessEngine {
            offline,
            online,
            options,
        }
    }

    async fn run(
        &self,
        task: MaterializeTask,
        progress: &ViewProgress,
    ) -> Result<ViewReport, MaterializeError> {
        let view_name = task.view.name.to_string();
        let encoder = WriteBatchEncoder::new(&task.view, self.options.key_version)?;
        let table = ViewTable::new(
            task.project.clone(),
            view_name.clone(),
            encoder
                .feature_names()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        );
        let resolved = ResolvedView {
            name_to_use: task.view.name.clone(),
            join_key_columns: task
                .view
                .join_keys()
                .map(|k| (k.clone(), k.to_string()))
                .collect(),
            features: task
                .view
                .features
                .iter()
                .map(|f| (f.clone(), f.name.to_string()))
                .collect(),
            view: task.view,
        };
        let offline_error = |source| MaterializeError::Offline {
            view: view_name.clone(),
            source,
        };
        progress.set_phase(Phase::Reading);
        let latest = self
            .offline
            .pull_latest(LatestRequest {
                definitions: task.definitions,
                view: resolved,
                start: task.start,
                end: task.end,
                memory_limit: self.options.memory_limit,
            })
            .await
            .map_err(offline_error)?;
        progress.reading(latest.rows_read.clone(), latest.source_rows);
        let mut stream = latest.stream;
        let mut written = 0u64;
        while let Some(batch) = stream.next().await {
            let batch =
                batch.map_err(|e| offline_error(larder_offline::OfflineError::Execution(e)))?;
            if batch.num_rows() == 0 {
                continue;
            }
            progress.set_phase(Phase::Writing);
            let chunk = self.options.write_batch_size.unwrap_or(usize::MAX).max(1);
            let mut offset = 0;
            while offset < batch.num_rows() {
                let len = chunk.min(batch.num_rows() - offset);
                let rows = encoder.encode(&batch.slice(offset, len))?;
                // The store may skip rows older than what it holds (newest wins); they were
                // handled all the same, so every row counts as written.
                self.online
                    .write_batch(&table, rows)
                    .await
                    .map_err(|source| MaterializeError::Online {
                        view: view_name.clone(),
                        source,
                    })?;
                written += len as u64;
                progress.add_written(len as u64);
                offset += len;
            }
        }
        Ok(ViewReport {
            view: view_name,
            rows_read: progress.rows_read(),
            rows_written: written,
        })
    }
}

#[async_trait]
impl MaterializationEngine for InProcessEngine {
    async fn materialize(
        &self,
        task: MaterializeTask,
        progress: Arc<ViewProgress>,
    ) -> Result<ViewReport, MaterializeError> {
        let result = self.run(task, &progress).await;
        progress.set_phase(if result.is_ok() {
            Phase::Done
        } else {
            Phase::Failed
        });
        result
    }
}
