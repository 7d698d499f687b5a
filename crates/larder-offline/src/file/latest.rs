//! Materialization reads from files: the latest row per entity key of one view in a time
//! window, streamed with bounded memory (see [`crate::latest`] for the deduplication).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use datafusion::common::ScalarValue;
use datafusion::common::stats::Precision;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::expressions::{Column, Literal, cast};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, SendableRecordBatchStream, execute_stream,
};
use datafusion::prelude::{SessionContext, ident};
use futures::StreamExt;
use larder_spec::FileFormat;

use super::FileOfflineStore;
use super::sources::{file_source, read_file, resolve_path, source_rows};
use crate::error::OfflineError;
use crate::latest::plan_last_per_derived_key;
use crate::progress::count_rows;
use crate::store::{LATEST_CREATED_TS, LATEST_EVENT_TS, LatestRequest, LatestRows};

/// The type of both timestamp columns of [`LatestRows`].
fn output_timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Nanoseconds since the epoch, saturating outside the years 1677 to 2262.
fn saturating_ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

pub(crate) async fn pull_latest(
    store: &FileOfflineStore,
    request: LatestRequest,
) -> Result<LatestRows, OfflineError> {
    if request.start > request.end {
        return Err(OfflineError::BadRange {
            start: request.start.to_rfc3339(),
            end: request.end.to_rfc3339(),
        });
    }
    let partitions = store.options.partitions.max(1);
    let ctx = match request.memory_limit {
        Some(limit) => store.session_on(store.runtime_with_limit(limit)?, limit, partitions),
        None => store.session(partitions),
    };
    let view = &request.view;
    let definitions = &request.definitions;
    let file = file_source(definitions, view)?;
    let read_error = |e: DataFusionError| OfflineError::SourceRead {
        source_name: view.view.batch_source.to_string(),
        path: file.path.clone(),
        message: e.to_string(),
    };

    let window = (saturating_ns(request.start), saturating_ns(request.end));
    let mut rows = source_rows(store, &ctx, definitions, view, Some(window), true).await?;
    let key_count = view.join_key_columns.len();
    // Rows with a null key belong to no entity: dropped before they are sorted.
    if let Some(keys_present) = (0..key_count)
        .map(|j| ident(format!("__k{j}")).is_not_null())
        .reduce(Expr::and)
    {
        rows = rows.filter(keys_present).map_err(OfflineError::execution)?;
    }
    let scan = rows.create_physical_plan().await.map_err(read_error)?;
    let rows_read = Arc::new(AtomicU64::new(0));
    let counted: Arc<dyn ExecutionPlan> = Arc::new(count_rows(scan, rows_read.clone()));

    // Columns of `source_rows`: keys, `__ts`, [`__created`], features.
    let has_created = file.created_timestamp_column.is_some();
    let ts = key_count;
    let created = has_created.then_some(key_count + 1);
    let first_feature = key_count + 1 + usize::from(has_created);
    let order: Vec<usize> = std::iter::once(ts).chain(created).collect();
    let derived = request.derived_key.clone();
    // Each sorting partition merges its spilled runs at the end, and concurrent merges
    // compete for the pool: under a small limit, one partition sorts with all of it.
    let sort_partitions = match request.memory_limit {
        Some(limit) => store.sort_partitions(limit, 2),
        None => partitions,
    };
    let latest = plan_last_per_derived_key(
        counted,
        (0..key_count).collect(),
        &order,
        sort_partitions,
        derived.clone(),
    )
    .map_err(OfflineError::execution)?;

    let schema = latest.schema();
    let col =
        |i: usize| -> Arc<dyn PhysicalExpr> { Arc::new(Column::new(schema.field(i).name(), i)) };
    let as_output_ts = |i: usize| cast(col(i), &schema, output_timestamp());
    let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = Vec::new();
    for (j, entity_column) in view.view.entity_columns.iter().take(key_count).enumerate() {
        exprs.push((col(j), entity_column.name.to_string()));
    }
    exprs.push((
        as_output_ts(ts).map_err(OfflineError::execution)?,
        LATEST_EVENT_TS.into(),
    ));
    let created_expr = match created {
        Some(c) => as_output_ts(c).map_err(OfflineError::execution)?,
        None => Arc::new(Literal::new(ScalarValue::TimestampMicrosecond(
            None,
            Some("UTC".into()),
        ))),
    };
    exprs.push((created_expr, LATEST_CREATED_TS.into()));
    for (i, (field, _)) in view.features.iter().enumerate() {
        exprs.push((col(first_feature + i), field.name.to_string()));
    }
    if let Some(derived) = &derived {
        // Last column of the deduplicated rows.
        exprs.push((col(schema.fields().len() - 1), derived.name.clone()));
    }
    let projected: Arc<dyn ExecutionPlan> =
        Arc::new(ProjectionExec::try_new(exprs, latest).map_err(OfflineError::execution)?);
    let output: Arc<dyn ExecutionPlan> = match &derived {
        _ if projected.output_partitioning().partition_count() <= 1 => projected,
        // Each partition is sorted by the derived key: merged, the whole stream is.
        Some(_) => {
            let schema = projected.schema();
            let last = schema.fields().len() - 1;
            let ordering = LexOrdering::new([PhysicalSortExpr::new_default(Arc::new(
                Column::new(schema.field(last).name(), last),
            ))
            .asc()
            .nulls_first()])
            .ok_or_else(|| {
                OfflineError::execution(DataFusionError::Internal("an empty merge ordering".into()))
            })?;
            Arc::new(SortPreservingMergeExec::new(ordering, projected))
        }
        None => Arc::new(CoalescePartitionsExec::new(projected)),
    };
    tracing::debug!(
        view = view.view.name.as_str(),
        plan = %datafusion::physical_plan::displayable(output.as_ref()).indent(true),
        "materialization read plan"
    );
    let stream = execute_stream(output, ctx.task_ctx()).map_err(OfflineError::execution)?;
    let stream = with_contract_schema(stream, key_count);

    let source_rows = match file.file_format {
        FileFormat::Parquet => parquet_rows(&ctx, &resolve_path(store, &file.path)).await,
        FileFormat::Csv => None,
    };
    Ok(LatestRows {
        stream,
        rows_read,
        source_rows,
    })
}

/// `stream` with the keys and the event time declared non-null, as the contract states
/// (the plan filtered the nulls out; each batch is checked).
fn with_contract_schema(
    stream: SendableRecordBatchStream,
    key_count: usize,
) -> SendableRecordBatchStream {
    let fields: Vec<Field> = stream
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let non_null = i <= key_count;
            f.as_ref().clone().with_nullable(!non_null)
        })
        .collect();
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let relabelled = {
        let schema = schema.clone();
        stream.map(move |batch| {
            let batch = batch?;
            RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
                .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
        })
    };
    Box::pin(RecordBatchStreamAdapter::new(schema, relabelled))
}

/// Rows of the Parquet files at `path` from their footers, when every file has the count.
/// The rows of a Parquet file source, from its footers; `None` for other sources or when
/// they cannot be read.
pub(crate) async fn source_file_rows(
    store: &FileOfflineStore,
    source: &larder_spec::DataSource,
) -> Option<u64> {
    let file = super::append::file_source(source).ok()?;
    match file.file_format {
        FileFormat::Parquet => {
            parquet_rows(&store.session(1), &resolve_path(store, &file.path)).await
        }
        FileFormat::Csv => None,
    }
}

async fn parquet_rows(ctx: &SessionContext, path: &str) -> Option<u64> {
    let counted = async {
        let plan = read_file(ctx, path, FileFormat::Parquet)
            .await?
            .create_physical_plan()
            .await?;
        StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new())
    };
    match counted.await {
        Ok(stats) => match stats.num_rows {
            Precision::Exact(n) => u64::try_from(n).ok(),
            _ => None,
        },
        Err(e) => {
            tracing::debug!(path, error = %e, "row count of the source not known");
            None
        }
    }
}
