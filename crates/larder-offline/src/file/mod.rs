//! The file offline store: Parquet and CSV sources read through DataFusion, with the
//! point-in-time join done by [`crate::asof::AsOfJoinExec`].

mod append;
mod entities;
mod gather;
mod latest;
mod memjoin;
pub(crate) mod sources;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, SendableRecordBatchStream, execute_stream,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use larder_spec::DataSource;

use crate::asof::{AsOfInput, plan_asof_join};
use crate::error::OfflineError;
use crate::reorder::ReorderExec;
use crate::rownum::{ROW_COLUMN, RowNumberExec};
use crate::store::{
    AppendReport, HistoricalRequest, LatestRequest, LatestRows, OfflineCapabilities, OfflineStore,
};

/// How the file offline store runs queries.
#[derive(Clone, Debug)]
pub struct FileStoreOptions {
    /// Relative source and entity paths resolve against this folder.
    pub repo_dir: PathBuf,
    /// Memory the query may use before sorts spill to disk; `None` for half of this
    /// machine's memory.
    pub memory_limit: Option<usize>,
    /// Where spill files go; the system temp folder when `None`.
    pub spill_dir: Option<PathBuf>,
    /// Most disk space spill files may take; DataFusion's default (100 GiB) when `None`.
    pub max_spill_bytes: Option<u64>,
    /// Parallel partitions (default: the number of cores).
    pub partitions: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Allow the in-memory join for integer-keyed views that fit the memory budget; when
    /// false every join takes the spilling sort-merge path.
    pub in_memory_join: bool,
}

impl FileStoreOptions {
    pub fn new(repo_dir: impl Into<PathBuf>) -> Self {
        FileStoreOptions {
            repo_dir: repo_dir.into(),
            memory_limit: None,
            spill_dir: None,
            max_spill_bytes: None,
            partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            batch_size: 8192,
            in_memory_join: true,
        }
    }
}

/// Parquet/CSV files on local disk or object storage.
#[derive(Debug)]
pub struct FileOfflineStore {
    options: FileStoreOptions,
    runtime: Arc<RuntimeEnv>,
}

impl FileOfflineStore {
    pub fn new(options: FileStoreOptions) -> Result<Self, OfflineError> {
        let runtime = build_runtime(&options, memory_limit(&options))?;
        Ok(FileOfflineStore { options, runtime })
    }

    pub fn options(&self) -> &FileStoreOptions {
        &self.options
    }

    /// Whether `rows` rows of `schema` can be held in memory to reorder them (half the
    /// memory limit at most; always without a limit).
    fn fits_in_memory(&self, schema: &arrow::datatypes::Schema, rows: usize) -> bool {
        let limit = memory_limit(&self.options);
        let width: usize = schema
            .fields()
            .iter()
            .map(|f| f.data_type().primitive_width().unwrap_or(32) + 1)
            .sum::<usize>()
            + std::mem::size_of::<u64>();
        rows.saturating_mul(width) <= limit / 2
    }

    /// Partitions for plans whose every partition runs `sorts` spilling sorts: each sort
    /// merges its spilled runs at the end, and concurrent merges compete for the pool, so
    /// below [`MIN_SORT_MEMORY`] per sort one partition sorts with all of it (a 16 MB limit
    /// split four ways failed about one run in ten).
    pub(crate) fn sort_partitions(&self, limit: usize, sorts: usize) -> usize {
        let partitions = self.options.partitions.max(1);
        if limit / (partitions * sorts.max(1)) < MIN_SORT_MEMORY {
            1
        } else {
            partitions
        }
    }

    /// A session on the shared runtime (memory pool, spill files).
    pub(crate) fn session(&self, partitions: usize) -> SessionContext {
        self.session_on(
            self.runtime.clone(),
            memory_limit(&self.options),
            partitions,
        )
    }

    /// A session on `runtime`, whose memory pool holds `limit` bytes.
    pub(crate) fn session_on(
        &self,
        runtime: Arc<RuntimeEnv>,
        limit: usize,
        partitions: usize,
    ) -> SessionContext {
        let mut config = SessionConfig::new()
            .with_target_partitions(partitions.max(1))
            .with_batch_size(self.options.batch_size);
        // Keep each file in one scan partition so entity rows keep their order.
        config.options_mut().optimizer.repartition_file_scans = partitions > 1;
        // Every sort holds this much back for merging its spilled runs; the default
        // (10 MB) alone would not fit a small limit shared by several sorts, and much less
        // (limit / 32 was tried) lets concurrent merges exhaust a small pool.
        config.options_mut().execution.sort_spill_reservation_bytes =
            (limit / 8).clamp(64 << 10, 10 << 20);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        SessionContext::new_with_state(state)
    }

    /// A runtime like the store's (same spill folder and spill space) with its own memory
    /// pool of `limit` bytes.
    pub(crate) fn runtime_with_limit(&self, limit: usize) -> Result<Arc<RuntimeEnv>, OfflineError> {
        build_runtime(&self.options, limit)
    }
}

/// Least memory per spilling sort before plans sort in fewer partitions.
pub(crate) const MIN_SORT_MEMORY: usize = 16 << 20;

/// The memory limit of the store: the configured one, else half of this machine's memory.
fn memory_limit(options: &FileStoreOptions) -> usize {
    options.memory_limit.unwrap_or_else(|| system_memory() / 2)
}

/// A runtime with the store's spill settings and a memory pool of `limit` bytes.
fn build_runtime(
    options: &FileStoreOptions,
    limit: usize,
) -> Result<Arc<RuntimeEnv>, OfflineError> {
    let mut disk = DiskManagerBuilder::default();
    if let Some(dir) = &options.spill_dir {
        disk = disk.with_mode(DiskManagerMode::Directories(vec![dir.clone()]));
    }
    if let Some(max) = options.max_spill_bytes {
        disk = disk.with_max_temp_directory_size(max);
    }
    RuntimeEnvBuilder::new()
        .with_disk_manager_builder(disk)
        // Several sorts run at once (both sides of each join, in every partition): a fair
        // pool gives each its share instead of letting the first take it all.
        .with_memory_pool(Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(limit),
            NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN),
        )))
        // Merging spilled runs holds one batch per run; merge in rounds of few runs.
        .with_max_spill_merge_fan_in(8)
        .build_arc()
        .map_err(OfflineError::execution)
}

fn column(
    plan: &Arc<dyn ExecutionPlan>,
    name: &str,
) -> Result<(usize, Arc<dyn PhysicalExpr>), OfflineError> {
    let index = plan.schema().index_of(name).map_err(|e| {
        OfflineError::execution(datafusion::error::DataFusionError::ArrowError(
            Box::new(e),
            None,
        ))
    })?;
    Ok((index, Arc::new(Column::new(name, index))))
}

#[async_trait]
impl OfflineStore for FileOfflineStore {
    fn capabilities(&self) -> OfflineCapabilities {
        OfflineCapabilities {
            entity_sql: true,
            range_retrieval: true,
            spills: true,
            append: true,
        }
    }

    async fn source_schema(&self, source: &DataSource) -> Result<SchemaRef, OfflineError> {
        append::source_schema(self, source).await
    }

    async fn source_rows(&self, source: &DataSource) -> Option<u64> {
        latest::source_file_rows(self, source).await
    }

    async fn append(
        &self,
        source: &DataSource,
        rows: RecordBatch,
    ) -> Result<AppendReport, OfflineError> {
        append::append(self, source, rows).await
    }

    async fn pull_latest(&self, request: LatestRequest) -> Result<LatestRows, OfflineError> {
        latest::pull_latest(self, request).await
    }

    async fn get_historical_features(
        &self,
        request: HistoricalRequest,
    ) -> Result<SendableRecordBatchStream, OfflineError> {
        let ctx = self.session(self.options.partitions);
        let started = std::time::Instant::now();
        let entities = entities::plan_entities(self, &ctx, &request).await?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            rows = entities.rows,
            "entity rows planned"
        );
        if let Some(stream) = self.try_in_memory(&ctx, &request, &entities).await? {
            return Ok(stream);
        }
        let mut plan: Arc<dyn ExecutionPlan> = entities.plan.clone();
        if plan.output_partitioning().partition_count() != 1 {
            plan = Arc::new(CoalescePartitionsExec::new(plan));
        }
        plan = Arc::new(RowNumberExec::try_new(plan).map_err(OfflineError::execution)?);

        for view in &request.views {
            let source = sources::plan_view_source(
                self,
                &ctx,
                &request.definitions,
                view,
                &entities.time_range,
            )
            .await?;
            let schema = plan.schema();
            let left_keys = view
                .join_key_columns
                .iter()
                .map(|(_, column)| key_index(&schema, column, view, &entities))
                .collect::<Result<Vec<_>, _>>()?;
            let (left_ts, _) = column(&plan, &entities.ts_column)?;
            let key_count = view.join_key_columns.len();
            let right = AsOfInput {
                plan: source.plan,
                keys: (0..key_count).collect(),
                ts: key_count,
                created: source.has_created.then_some(key_count + 1),
            };
            let first_feature = key_count + 1 + usize::from(source.has_created);
            let outputs: Vec<usize> =
                (first_feature..first_feature + view.features.len()).collect();
            let names = view.features.iter().map(|(_, name)| name.clone()).collect();
            let ttl_ns = (!view.view.ttl.is_unbounded())
                .then(|| i64::try_from(view.view.ttl.0.as_nanos()).unwrap_or(i64::MAX));
            plan = plan_asof_join(
                AsOfInput {
                    plan,
                    keys: left_keys,
                    ts: left_ts,
                    created: None,
                },
                right,
                outputs,
                names,
                ttl_ns,
                self.sort_partitions(memory_limit(&self.options), 2),
            )
            .map_err(OfflineError::execution)?;
        }

        // Restore the entity row order, then drop the row number: by scattering on the row
        // number when the output fits the memory budget, else by a spilling sort.
        let (row_index, row_expr) = column(&plan, ROW_COLUMN)?;
        let output: Arc<dyn ExecutionPlan> = if self.fits_in_memory(&plan.schema(), entities.rows) {
            Arc::new(
                ReorderExec::try_new(plan, row_index, entities.rows, self.options.batch_size)
                    .map_err(OfflineError::execution)?,
            )
        } else {
            let ordering = LexOrdering::new([PhysicalSortExpr::new_default(row_expr).asc()])
                .ok_or_else(|| {
                    OfflineError::execution(datafusion::error::DataFusionError::Internal(
                        "empty ordering".into(),
                    ))
                })?;
            let sorted: Arc<dyn ExecutionPlan> =
                Arc::new(SortExec::new(ordering.clone(), plan).with_preserve_partitioning(true));
            let merged: Arc<dyn ExecutionPlan> =
                Arc::new(SortPreservingMergeExec::new(ordering, sorted));
            let schema = merged.schema();
            let projection: Vec<(Arc<dyn PhysicalExpr>, String)> = schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != row_index)
                .map(|(i, f)| {
                    (
                        Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>,
                        f.name().clone(),
                    )
                })
                .collect();
            Arc::new(ProjectionExec::try_new(projection, merged).map_err(OfflineError::execution)?)
        };
        tracing::debug!(plan = %datafusion::physical_plan::displayable(output.as_ref()).indent(true), "historical retrieval plan");
        execute_stream(output, ctx.task_ctx()).map_err(OfflineError::execution)
    }
}

impl FileOfflineStore {
    /// The in-memory join (see `memjoin`), when every view has one integer join key and the
    /// inputs fit half the memory limit (or half the machine's memory without a limit).
    async fn try_in_memory(
        &self,
        ctx: &SessionContext,
        request: &HistoricalRequest,
        entities: &entities::EntityPlan,
    ) -> Result<Option<SendableRecordBatchStream>, OfflineError> {
        use larder_types::{ScalarType, ValueType};
        let integer_keys = request.views.iter().all(|v| {
            v.view.entity_columns.len() == 1
                && matches!(
                    v.view.entity_columns[0].dtype,
                    ValueType::Scalar(ScalarType::Int64 | ScalarType::Int32)
                )
        });
        if !self.options.in_memory_join || !integer_keys || request.views.is_empty() {
            return Ok(None);
        }
        let budget = memory_limit(&self.options) / 2;
        // The entity batches and one 8-byte match per entity row and view.
        let entity_width = row_width(&entities.plan.schema()) + 8 * request.views.len();
        let mut needed = entities.rows.saturating_mul(entity_width);
        // The sort entries (24 bytes per entity row, 32 per feature row), of which one pass
        // holds at most `memjoin::PASS_BYTES`.
        let mut entries = entities.rows.saturating_mul(24);
        let mut positions = 0usize;
        let mut sources = Vec::with_capacity(request.views.len());
        // The views are scanned in more partitions than there are cores, so that the
        // scheduler can even out the cores' share of the reading near its end. With one
        // per core (and the entity file in one more), one core read alone for the last
        // 0.2 s. 10M x 10M, alternated runs: reading 820-891 ms -> 735-886 ms.
        let scan = self.session(
            self.options
                .partitions
                .saturating_mul(SCAN_PARTITIONS_PER_CORE),
        );
        for view in &request.views {
            let source = sources::plan_view_source(
                self,
                &scan,
                &request.definitions,
                view,
                &entities.time_range,
            )
            .await?;
            // The time-window filter only saves memory here: the merge never picks a row
            // outside an entity row's window anyway, and filtering copies every batch. Row
            // groups outside the window are still skipped by the scan's pruning predicate.
            let source = sources::SourcePlan {
                plan: without_filters(source.plan),
                has_created: source.has_created,
            };
            let rows = StatisticsContext::new()
                .compute(source.plan.as_ref(), &StatisticsArgs::new())
                .ok()
                .and_then(|s| s.num_rows.get_value().copied());
            let Some(rows) = rows else {
                return Ok(None);
            };
            needed = needed.saturating_add(rows.saturating_mul(row_width(&source.plan.schema())));
            entries = entries.saturating_add(rows.saturating_mul(32));
            // Each pass's row positions, 4 bytes a row of both sides, held while matching.
            positions = positions.max(rows.saturating_add(entities.rows).saturating_mul(4));
            sources.push(source);
        }
        let needed = needed
            .saturating_add(entries.min(memjoin::PASS_BYTES))
            .saturating_add(positions);
        if needed > budget {
            tracing::debug!(needed, budget, "point-in-time join takes the spilling path");
            return Ok(None);
        }
        let task = ctx.task_ctx();
        let started = std::time::Instant::now();
        // Entity rows and every view's rows are read at the same time.
        let left_task = tokio::spawn(memjoin::collect_partitions(
            entities.plan.clone(),
            task.clone(),
        ));
        // Views of several fixed-width features are packed row by row as they are read.
        let view_tasks: Vec<_> = sources
            .iter()
            .zip(&request.views)
            .map(|(s, view)| {
                let columns = memjoin::feature_columns(s.has_created, view.features.len());
                let schema = s.plan.schema();
                let types: Vec<_> = columns
                    .iter()
                    .map(|&c| schema.field(c).data_type().clone())
                    .collect();
                let layout = gather::RowLayout::of(&columns, &types);
                tokio::spawn(memjoin::read_view(s.plan.clone(), task.clone(), layout))
            })
            .collect();
        let joined = |e: tokio::task::JoinError| {
            OfflineError::execution(datafusion::error::DataFusionError::External(Box::new(e)))
        };
        let left: Vec<_> = left_task
            .await
            .map_err(joined)?
            .map_err(|e| entities::read_error(request, e))?
            .into_iter()
            .flatten()
            .collect();
        let left_schema = entities.plan.schema();
        let left_ts = left_schema.index_of(&entities.ts_column).map_err(|e| {
            OfflineError::execution(datafusion::error::DataFusionError::ArrowError(
                Box::new(e),
                None,
            ))
        })?;
        let mut inputs = Vec::with_capacity(sources.len());
        for ((view, source), view_task) in request.views.iter().zip(sources).zip(view_tasks) {
            let left_key = key_index(&left_schema, &view.join_key_columns[0].1, view, entities)?;
            let schema = source.plan.schema();
            let fields = view
                .features
                .iter()
                .zip(memjoin::feature_columns(
                    source.has_created,
                    view.features.len(),
                ))
                .map(|((_, name), c)| {
                    arrow::datatypes::Field::new(name, schema.field(c).data_type().clone(), true)
                })
                .collect();
            let (batches, packed) =
                view_task
                    .await
                    .map_err(joined)?
                    .map_err(|e| OfflineError::SourceRead {
                        source_name: view.view.batch_source.to_string(),
                        path: String::new(),
                        message: e.to_string(),
                    })?;
            inputs.push(memjoin::ViewInput {
                batches,
                packed,
                has_created: source.has_created,
                feature_count: view.features.len(),
                fields,
                left_key,
                ttl_ns: (!view.view.ttl.is_unbounded())
                    .then(|| i64::try_from(view.view.ttl.0.as_nanos()).unwrap_or(i64::MAX)),
            });
        }
        let bytes = |batches: &[RecordBatch]| {
            batches
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum::<usize>()
        };
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            entity_bytes = bytes(&left),
            view_bytes = inputs
                .iter()
                .map(|v| {
                    let packed = v.packed.as_ref().map_or(0, |(_, blocks)| {
                        blocks.iter().map(gather::PackedRows::bytes).sum::<usize>()
                    });
                    bytes(&v.batches) + packed
                })
                .sum::<usize>(),
            "in-memory join: inputs read"
        );
        memjoin::join(left, left_schema, left_ts, inputs, self.options.batch_size)
            .map(Some)
            .map_err(OfflineError::execution)
    }
}

/// Scan partitions per partition of the store's options when the in-memory join reads a
/// view ([`FileOfflineStore::try_in_memory`]).
const SCAN_PARTITIONS_PER_CORE: usize = 2;

/// `plan` without its row filters (those that keep their input's columns as they are).
fn without_filters(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::filter::FilterExec;
    let stripped = plan.clone().transform_down(|node| {
        Ok(match node.downcast_ref::<FilterExec>() {
            Some(filter) if filter.projection().is_none() => {
                Transformed::yes(filter.input().clone())
            }
            _ => Transformed::no(node),
        })
    });
    stripped.map(|t| t.data).unwrap_or(plan)
}

/// Where the entity rows hold `column`, the join key of `view`.
fn key_index(
    schema: &arrow::datatypes::Schema,
    column: &str,
    view: &larder_spec::ResolvedView,
    entities: &entities::EntityPlan,
) -> Result<usize, OfflineError> {
    schema
        .index_of(column)
        .map_err(|_| OfflineError::MissingJoinKey {
            column: column.to_string(),
            view: view.view.name.to_string(),
            available: entities.columns.join(", "),
        })
}

/// Bytes per row of `schema`, counting 32 for variable-width values.
fn row_width(schema: &arrow::datatypes::Schema) -> usize {
    schema
        .fields()
        .iter()
        .map(|f| f.data_type().primitive_width().unwrap_or(32) + 1)
        .sum()
}

/// Total memory of this machine (Linux `/proc/meminfo`), 8 GiB when unknown.
fn system_memory() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(8 << 30)
}
