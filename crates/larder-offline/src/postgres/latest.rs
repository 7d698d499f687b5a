//! Materialization reads from Postgres: the window and the latest-row-per-key deduplication
//! run in Postgres (`DISTINCT ON` the join keys, ordered by event then created time), and
//! only the winners stream back. A derived key is computed here, per batch, by the same
//! operator the file store uses, and the rows are sorted by it with a spilling sort.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion::prelude::SessionConfig;

use super::PostgresOfflineStore;
use super::sources::view_source;
use super::sql;
use super::stream::{CopyOut, copy_out};
use crate::error::OfflineError;
use crate::latest::derive_key;
use crate::store::{LatestRequest, LatestRows};

/// Memory of the sort by a derived key when neither the request nor the config set one.
const DEFAULT_SORT_MEMORY: usize = 256 << 20;

pub(crate) async fn pull_latest(
    store: &PostgresOfflineStore,
    request: LatestRequest,
) -> Result<LatestRows, OfflineError> {
    if request.start > request.end {
        return Err(OfflineError::BadRange {
            start: request.start.to_rfc3339(),
            end: request.end.to_rfc3339(),
        });
    }
    let view = &request.view;
    let client = store.connect().await?;
    let source = view_source(store, &client, &request.definitions, view).await?;
    let key_names: Vec<String> = view
        .view
        .entity_columns
        .iter()
        .take(view.join_key_columns.len())
        .map(|f| f.name.to_string())
        .collect();
    let feature_names: Vec<String> = view
        .features
        .iter()
        .map(|(f, _)| f.name.to_string())
        .collect();
    let sql = sql::latest(
        &source,
        &key_names,
        &feature_names,
        request.start,
        request.end,
    );
    tracing::debug!(
        view = view.view.name.as_str(),
        sql,
        "postgres materialization read"
    );
    let rows_read = Arc::new(AtomicU64::new(0));
    let (source_name, location) = {
        let (data_source, pg) = super::sources::postgres_source(&request.definitions, view)?;
        (data_source.name.to_string(), super::sources::location(pg))
    };
    let stream = copy_out(
        store,
        client,
        CopyOut {
            sql,
            // The keys and the event time are never null (filtered in the query).
            non_null: key_names.len() + 1,
            rows: Some(rows_read.clone()),
            cleanup: None,
        },
        |e| match store.backend_error(e) {
            unavailable @ OfflineError::Unavailable { .. } => unavailable,
            _ => OfflineError::SourceRead {
                source_name: source_name.clone(),
                path: location.clone(),
                message: super::describe(e),
            },
        },
    )
    .await?;
    let stream = match request.derived_key.clone() {
        None => stream,
        Some(derived) => {
            let limit = request
                .memory_limit
                .or(store.config.memory_limit)
                .unwrap_or(DEFAULT_SORT_MEMORY);
            sorted_by_derived_key(
                stream,
                key_names.len(),
                derived,
                limit,
                store.config.batch_size,
            )?
        }
    };
    Ok(LatestRows {
        stream,
        rows_read,
        // Postgres deduplicates: only the winners are read, and counted.
        source_rows: None,
    })
}

/// `stream` with the derived key of its first `key_count` columns appended, sorted by it
/// (spilling to disk beyond `limit` bytes).
fn sorted_by_derived_key(
    stream: SendableRecordBatchStream,
    key_count: usize,
    derived: crate::store::DerivedKey,
    limit: usize,
    batch_size: usize,
) -> Result<SendableRecordBatchStream, OfflineError> {
    let schema = stream.schema();
    let input: Arc<dyn ExecutionPlan> = Arc::new(
        StreamingTableExec::try_new(
            schema.clone(),
            vec![Arc::new(OneShot {
                schema,
                stream: Mutex::new(Some(stream)),
            })],
            None,
            Vec::<LexOrdering>::new(),
            false,
            None,
        )
        .map_err(OfflineError::execution)?,
    );
    let keyed: Arc<dyn ExecutionPlan> = Arc::new(
        derive_key(input, (0..key_count).collect(), derived).map_err(OfflineError::execution)?,
    );
    let schema = keyed.schema();
    let last = schema.fields().len() - 1;
    let ordering = LexOrdering::new([PhysicalSortExpr::new_default(Arc::new(Column::new(
        schema.field(last).name(),
        last,
    )))
    .asc()])
    .ok_or_else(|| {
        OfflineError::execution(datafusion::error::DataFusionError::Internal(
            "an empty sort ordering".into(),
        ))
    })?;
    let sorted: Arc<dyn ExecutionPlan> = Arc::new(SortExec::new(ordering, keyed));
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limit, 1.0)
        .build_arc()
        .map_err(OfflineError::execution)?;
    let task = TaskContext::default()
        .with_session_config(SessionConfig::new().with_batch_size(batch_size.max(1)))
        .with_runtime(runtime);
    execute_stream(sorted, Arc::new(task)).map_err(OfflineError::execution)
}

/// A stream handed to DataFusion as a one-partition table, once.
struct OneShot {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl fmt::Debug for OneShot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneShot").finish_non_exhaustive()
    }
}

impl PartitionStream for OneShot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().ok().and_then(|mut s| s.take());
        match taken {
            Some(stream) => stream,
            None => Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async {
                    Err(datafusion::error::DataFusionError::Internal(
                        "the postgres result stream was already read".into(),
                    ))
                }),
            )),
        }
    }
}
