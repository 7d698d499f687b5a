//! The in-process engine: offline latest rows, streamed through the encoder into the online
//! store in bounded batches.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use futures::StreamExt;
use larder_offline::{LatestRequest, OfflineStore};
use larder_online::{OnlineStore, ViewTable};
use larder_spec::ResolvedView;
use larder_types::feast::KeyVersion;

use crate::convert::WriteBatchEncoder;
use crate::error::MaterializeError;
use crate::progress::{Phase, ViewProgress};
use crate::shard::Shard;
use crate::{MaterializationEngine, MaterializeTask, ViewReport};

/// How the in-process engine runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Memory one view's deduplication may use before it spills to disk (`None`: the
    /// offline store's own limit).
    pub memory_limit: Option<usize>,
    /// Rows per online write (`None`: [`DEFAULT_WRITE_BATCH_SIZE`]): the offline store's
    /// batches are gathered up to it, so each write is one large transaction (fewer, larger
    /// commits write each touched page of the store once instead of once per small batch).
    pub write_batch_size: Option<usize>,
    /// Entity key format written (the config's `entity_key_serialization_version`).
    pub key_version: KeyVersion,
    /// Write only this shard's entity keys (`larder materialize --shard i/N`, a worker of
    /// the Kubernetes engine). The offline store drops the other keys' rows before it
    /// deduplicates (see [`Shard`]).
    pub shard: Option<Shard>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            memory_limit: Some(DEFAULT_MEMORY_LIMIT),
            write_batch_size: None,
            key_version: KeyVersion::V3,
            shard: None,
        }
    }
}

/// Rows per online write by default: about 15 MB of encoded rows for a view of ten
/// features.
pub const DEFAULT_WRITE_BATCH_SIZE: usize = 50_000;

/// Online writes of one view running at once.
const WRITES_IN_FLIGHT: usize = 2;

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
        let encoder = WriteBatchEncoder::new(&task.view, self.options.key_version)?
            .with_write_order(self.online.write_order());
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
        let mut derived_key = encoder.derived_key();
        let prefix = encoder.key_prefix();
        derived_key.keep = self.options.shard.map(|shard| shard.key_filter(prefix));
        progress.set_phase(Phase::Reading);
        let latest = self
            .offline
            .pull_latest(LatestRequest {
                definitions: task.definitions,
                view: resolved,
                start: task.start,
                end: task.end,
                memory_limit: self.options.memory_limit,
                derived_key: Some(derived_key),
            })
            .await
            .map_err(offline_error)?;
        progress.reading(latest.rows_read.clone(), latest.source_rows);
        let mut stream = latest.stream;
        let target = self
            .options
            .write_batch_size
            .unwrap_or(DEFAULT_WRITE_BATCH_SIZE)
            .max(1);
        let mut pending = Pending::default();
        // Writes run in their own tasks while the next batch is read and encoded, so the
        // store's work overlaps Larder's instead of following it; at most
        // `WRITES_IN_FLIGHT`, which bounds the memory held by written batches.
        let mut in_flight: VecDeque<InFlightWrite> = VecDeque::new();
        let outcome = async {
            let mut written = 0u64;
            loop {
                let next = stream.next().await;
                let flush_all = next.is_none();
                if let Some(batch) = next {
                    let batch = batch
                        .map_err(|e| offline_error(larder_offline::OfflineError::Execution(e)))?;
                    if batch.num_rows() > 0 {
                        progress.set_phase(Phase::Writing);
                        pending.push(encoder.encode(&batch)?);
                    }
                }
                // Full writes as soon as there are enough rows; the rest at the end.
                while pending.rows >= target || (flush_all && pending.rows > 0) {
                    let rows = pending
                        .take(target)
                        .map_err(|e| MaterializeError::Invalid {
                            view: view_name.clone(),
                            message: format!("cannot assemble a write batch: {e}"),
                        })?;
                    if in_flight.len() >= WRITES_IN_FLIGHT
                        && let Some(oldest) = in_flight.pop_front()
                    {
                        written += oldest.finish(&view_name, progress).await?;
                    }
                    in_flight.push_back(InFlightWrite::start(&self.online, &table, rows));
                }
                if flush_all {
                    break;
                }
            }
            while let Some(write) = in_flight.pop_front() {
                written += write.finish(&view_name, progress).await?;
            }
            Ok(written)
        }
        .await;
        let written = match outcome {
            Ok(written) => written,
            Err(e) => {
                settle(in_flight).await;
                return Err(e);
            }
        };
        Ok(ViewReport {
            view: view_name,
            rows_read: progress.rows_read(),
            rows_written: written,
            submitted: None,
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

/// A write to the online store running in its own task.
struct InFlightWrite {
    rows: u64,
    task: tokio::task::JoinHandle<Result<u64, larder_online::OnlineError>>,
}

impl InFlightWrite {
    fn start(online: &Arc<dyn OnlineStore>, table: &ViewTable, rows: RecordBatch) -> Self {
        let online = Arc::clone(online);
        let table = table.clone();
        InFlightWrite {
            rows: rows.num_rows() as u64,
            task: tokio::spawn(async move { online.write_batch(&table, rows).await }),
        }
    }

    /// Waits for the write; returns its rows. The store may skip rows older than what it
    /// holds (newest wins); they were handled all the same, so every row counts as written.
    async fn finish(self, view: &str, progress: &ViewProgress) -> Result<u64, MaterializeError> {
        let outcome = self.task.await.map_err(|e| MaterializeError::Invalid {
            view: view.to_owned(),
            message: format!("the online write task failed: {e}"),
        })?;
        outcome.map_err(|source| MaterializeError::Online {
            view: view.to_owned(),
            source,
        })?;
        progress.add_written(self.rows);
        Ok(self.rows)
    }
}

/// Waits for a write still running when the view fails for another reason (its own
/// outcome no longer matters), so that nothing writes to the store after the run returned.
async fn settle(writes: VecDeque<InFlightWrite>) {
    for write in writes {
        let _ = write.task.await;
    }
}

/// Encoded write batches waiting to be written, in order.
#[derive(Default)]
struct Pending {
    batches: std::collections::VecDeque<RecordBatch>,
    rows: usize,
}

impl Pending {
    fn push(&mut self, batch: RecordBatch) {
        self.rows += batch.num_rows();
        self.batches.push_back(batch);
    }

    /// The first `max` rows (or all, when fewer) as one batch.
    fn take(&mut self, max: usize) -> Result<RecordBatch, arrow::error::ArrowError> {
        let mut parts = Vec::new();
        let mut taken = 0;
        while taken < max {
            let Some(batch) = self.batches.pop_front() else {
                break;
            };
            let want = max - taken;
            if batch.num_rows() > want {
                self.batches
                    .push_front(batch.slice(want, batch.num_rows() - want));
                parts.push(batch.slice(0, want));
                taken += want;
            } else {
                taken += batch.num_rows();
                parts.push(batch);
            }
        }
        self.rows -= taken;
        match parts.len() {
            1 => Ok(parts.pop().expect("one part")),
            _ => {
                let schema = parts.first().map(RecordBatch::schema).ok_or_else(|| {
                    arrow::error::ArrowError::InvalidArgumentError("no rows".into())
                })?;
                arrow::compute::concat_batches(&schema, &parts)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn batch(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))])
            .expect("batch")
    }

    fn values(batch: &RecordBatch) -> Vec<i64> {
        batch
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn pending_batches_are_gathered_and_split_in_order() {
        let mut pending = Pending::default();
        pending.push(batch(0..3));
        pending.push(batch(3..8));
        pending.push(batch(8..9));
        assert_eq!(pending.rows, 9);
        assert_eq!(values(&pending.take(4).unwrap()), vec![0, 1, 2, 3]);
        assert_eq!(pending.rows, 5);
        assert_eq!(values(&pending.take(4).unwrap()), vec![4, 5, 6, 7]);
        assert_eq!(values(&pending.take(4).unwrap()), vec![8]);
        assert_eq!(pending.rows, 0);
        assert!(pending.take(4).is_err(), "nothing left to take");
    }
}
