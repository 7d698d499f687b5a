//! The entity side of a retrieval: rows from a file, a SQL query, caller batches or a time
//! range, with their timestamp column found, join keys checked and typed.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::{count, max, min};
use datafusion::logical_expr::{Expr, cast};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionContext, ident, lit};
use larder_spec::SourceKind;

use super::FileOfflineStore;
use super::sources::{read_file, resolve_path};
use crate::asof::timestamps_ns;
use crate::entity_columns::{check_key_type, key_columns, range_keys, timestamp_column};
use crate::error::OfflineError;
use crate::store::{EntityInput, HistoricalRequest};

/// The entity rows, ready to be numbered and joined.
pub(crate) struct EntityPlan {
    pub plan: Arc<dyn ExecutionPlan>,
    pub ts_column: String,
    pub columns: Vec<String>,
    /// Earliest and latest entity timestamps (ns), to prune feature rows; None if no rows.
    pub time_range: Option<(i64, i64)>,
    /// How many entity rows there are.
    pub rows: usize,
}

/// Timestamps without a time zone are UTC.
pub(crate) fn utc_timestamp_expr(expr: Expr, dt: &DataType) -> Expr {
    match dt {
        DataType::Timestamp(unit, None) => {
            cast(expr, DataType::Timestamp(*unit, Some("UTC".into())))
        }
        _ => expr,
    }
}

async fn register_sources(
    store: &FileOfflineStore,
    ctx: &SessionContext,
    request: &HistoricalRequest,
) -> Result<(), OfflineError> {
    for source in request.definitions.data_sources.values() {
        let SourceKind::File(file) = &source.kind else {
            continue;
        };
        let path = resolve_path(store, &file.path);
        // A source that cannot be read is left out rather than failing every query: a query
        // that uses it then fails naming the missing table.
        match read_file(ctx, &path, file.file_format).await {
            Ok(df) => {
                ctx.register_table(source.name.as_str(), df.into_view())
                    .map_err(OfflineError::execution)?;
            }
            Err(e) => tracing::warn!(
                source = source.name.as_str(),
                path = file.path.as_str(),
                error = %e,
                "data source not available to entity SQL"
            ),
        }
    }
    Ok(())
}

async fn entity_frame(
    store: &FileOfflineStore,
    ctx: &SessionContext,
    request: &HistoricalRequest,
) -> Result<DataFrame, OfflineError> {
    match &request.entities {
        EntityInput::File { path, format } => {
            // One partition: the file is read in order.
            let ordered = store.session(1);
            let resolved = resolve_path(store, path);
            read_file(&ordered, &resolved, *format)
                .await
                .map_err(|e| OfflineError::EntityFile {
                    path: path.clone(),
                    message: e.to_string(),
                })
        }
        EntityInput::Sql(query) => {
            register_sources(store, ctx, request).await?;
            ctx.sql(query).await.map_err(|e| OfflineError::EntitySql {
                message: e.to_string(),
            })
        }
        EntityInput::Batches(batches) => {
            let ordered = store.session(1);
            ordered
                .read_batches(batches.iter().cloned())
                .map_err(OfflineError::execution)
        }
        EntityInput::Range { start, end } => range_frame(store, ctx, request, *start, *end).await,
    }
}

/// Feast's non-entity mode: the distinct (keys, event time) of every requested view's rows
/// in `[start, end]`, ordered by time then keys.
async fn range_frame(
    store: &FileOfflineStore,
    ctx: &SessionContext,
    request: &HistoricalRequest,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Result<DataFrame, OfflineError> {
    let first_keys = range_keys(&request.views, start, end)?;
    let to_ns = |t: chrono::DateTime<chrono::Utc>| t.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let bounds = Some((to_ns(start), to_ns(end)));
    let mut union: Option<DataFrame> = None;
    for view in &request.views {
        let keys = &first_keys;
        let rows =
            super::sources::source_rows(store, ctx, &request.definitions, view, bounds, true)
                .await?;
        let mut exprs: Vec<Expr> = (0..keys.len())
            .map(|j| ident(format!("__k{j}")).alias(keys[j].as_str()))
            .collect();
        exprs.push(ident("__ts").alias("event_timestamp"));
        let rows = rows.select(exprs).map_err(OfflineError::execution)?;
        union = Some(match union {
            None => rows,
            Some(u) => u.union(rows).map_err(OfflineError::execution)?,
        });
    }
    let Some(union) = union else {
        return Err(OfflineError::execution(
            datafusion::error::DataFusionError::Plan("no feature views requested".into()),
        ));
    };
    let mut order = vec![ident("event_timestamp").sort(true, true)];
    order.extend(
        first_keys
            .iter()
            .map(|k| ident(k.as_str()).sort(true, true)),
    );
    union
        .distinct()
        .and_then(|d| d.sort(order))
        .map_err(OfflineError::execution)
}

pub(crate) async fn plan_entities(
    store: &FileOfflineStore,
    ctx: &SessionContext,
    request: &HistoricalRequest,
) -> Result<EntityPlan, OfflineError> {
    let df = entity_frame(store, ctx, request).await?;
    let ts_column = timestamp_column(df.schema().as_arrow())?;
    let schema = df.schema().clone();
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();

    // The type each join key column must have: its entity's.
    let key_types = key_columns(&request.views, &columns)?;

    let mut exprs = Vec::with_capacity(columns.len());
    for field in schema.fields() {
        let name = field.name();
        let expr = ident(name.as_str());
        let expr = if *name == ts_column {
            utc_timestamp_expr(expr, field.data_type())
        } else if let Some((_, wanted)) = key_types.iter().find(|(c, _)| c == name) {
            check_key_type(name, field.data_type(), wanted)?;
            if field.data_type() == wanted {
                expr
            } else {
                cast(expr, wanted.clone())
            }
        } else {
            expr
        };
        exprs.push(expr.alias(name.as_str()));
    }
    let df = df.select(exprs).map_err(OfflineError::execution)?;
    let plan = df
        .clone()
        .create_physical_plan()
        .await
        .map_err(|e| match &request.entities {
            EntityInput::Sql(_) => OfflineError::EntitySql {
                message: e.to_string(),
            },
            _ => OfflineError::execution(e),
        })?;
    // The row count and time range from the file's statistics when they are exact (a
    // Parquet file's footer), else by a scan of the time column.
    let (time_range, rows) = match exact_range(&plan, &ts_column) {
        Some(known) => known,
        None => scan_range(request, df, &ts_column).await?,
    };
    Ok(EntityPlan {
        plan,
        ts_column,
        columns,
        time_range,
        rows,
    })
}

/// The row count and the earliest and latest time (ns) of `plan`'s `ts_column`, when its
/// statistics know them exactly.
fn exact_range(
    plan: &Arc<dyn ExecutionPlan>,
    ts_column: &str,
) -> Option<(Option<(i64, i64)>, usize)> {
    use datafusion::common::stats::Precision;
    use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
    let stats = StatisticsContext::new()
        .compute(plan.as_ref(), &StatisticsArgs::new())
        .ok()?;
    let Precision::Exact(rows) = stats.num_rows else {
        return None;
    };
    if rows == 0 {
        return Some((None, 0));
    }
    let index = plan.schema().index_of(ts_column).ok()?;
    let column = stats.column_statistics.get(index)?;
    let ns = |bound: &Precision<ScalarValue>| {
        let Precision::Exact(value) = bound else {
            return None;
        };
        let array = value.to_array().ok()?;
        timestamps_ns(array.as_ref())
            .ok()?
            .first()
            .copied()
            .flatten()
    };
    match (ns(&column.min_value), ns(&column.max_value)) {
        (Some(lo), Some(hi)) => Some((Some((lo, hi)), rows)),
        // Every time null: no range.
        _ if column.null_count == Precision::Exact(rows) => Some((None, rows)),
        _ => None,
    }
}

/// The row count and time range of `df` by a scan of its time column.
async fn scan_range(
    request: &HistoricalRequest,
    df: DataFrame,
    ts_column: &str,
) -> Result<(Option<(i64, i64)>, usize), OfflineError> {
    let range = df
        .aggregate(
            vec![],
            vec![
                min(ident(ts_column)).alias("lo"),
                max(ident(ts_column)).alias("hi"),
                count(lit(1)).alias("n"),
            ],
        )
        .map_err(OfflineError::execution)?
        .collect()
        .await
        .map_err(|e| read_error(request, e))?;
    Ok(match range.first() {
        Some(batch) if batch.num_rows() == 1 => {
            let lo = timestamps_ns(batch.column(0).as_ref()).map_err(OfflineError::execution)?;
            let hi = timestamps_ns(batch.column(1).as_ref()).map_err(OfflineError::execution)?;
            let n = batch
                .column(2)
                .as_primitive_opt::<arrow::datatypes::Int64Type>()
                .map(|a| a.value(0))
                .unwrap_or(0);
            (lo[0].zip(hi[0]), usize::try_from(n).unwrap_or(0))
        }
        _ => (None, 0),
    })
}

/// An error reading the entity rows: an entity-file error naming the file when they come
/// from one.
pub(crate) fn read_error(
    request: &HistoricalRequest,
    e: datafusion::error::DataFusionError,
) -> OfflineError {
    match &request.entities {
        EntityInput::File { path, .. } => OfflineError::EntityFile {
            path: path.clone(),
            message: e.to_string(),
        },
        _ => OfflineError::execution(e),
    }
}

/// A timestamp literal comparable with any timestamp column.
pub(crate) fn ts_literal(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}
