//! The in-memory point-in-time join: the fast path when every view is keyed by one integer
//! join key and the inputs fit the memory budget.
//!
//! Instead of sorting wide rows, it sorts narrow (key, time, reference) entries: each side is
//! split by key hash into one part per core, each part sorted and merged on its own thread,
//! and the result is, per entity row, a reference to the matching feature row. Entity rows
//! never move: the output is every entity batch, in input order, with the matched feature
//! values gathered next to it. Everything else (string or multi-column keys, inputs larger
//! than the budget) takes the spilling DataFusion path.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt64Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, SendableRecordBatchStream,
};
use futures::TryStreamExt;

use crate::asof::timestamps_ns;

use super::rowstore::{self, NONE, RowStore};

/// One view's side of the join, read into memory.
pub(crate) struct ViewInput {
    /// Batches of `__k0, __ts, [__created], __f0..`.
    pub batches: Vec<RecordBatch>,
    pub has_created: bool,
    pub feature_count: usize,
    /// Output names and types of the features.
    pub fields: Vec<Field>,
    /// The entity column holding this view's join key.
    pub left_key: usize,
    pub ttl_ns: Option<i64>,
}

/// Runs every partition of `plan` at once and returns the batches of each, in partition order.
pub(crate) async fn collect_partitions(
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) -> Result<Vec<Vec<RecordBatch>>> {
    let partitions = plan.output_partitioning().partition_count();
    let mut tasks = Vec::with_capacity(partitions);
    for partition in 0..partitions {
        let stream = plan.execute(partition, context.clone())?;
        tasks.push(tokio::spawn(async move {
            stream.try_collect::<Vec<RecordBatch>>().await
        }));
    }
    let mut out = Vec::with_capacity(partitions);
    for task in tasks {
        out.push(
            task.await
                .map_err(|e| DataFusionError::External(Box::new(e)))??,
        );
    }
    Ok(out)
}

/// Integer key values, widened to i64 (None where null).
fn int_keys(array: &dyn Array) -> Result<Vec<Option<i64>>> {
    match array.data_type() {
        DataType::Int64 => Ok(array.as_primitive::<Int64Type>().iter().collect()),
        DataType::Int32 => Ok(array
            .as_primitive::<Int32Type>()
            .iter()
            .map(|v| v.map(i64::from))
            .collect()),
        other => Err(DataFusionError::Internal(format!(
            "in-memory join needs integer keys, found {other}"
        ))),
    }
}

/// Event times in nanoseconds, without the per-row Option for the common microsecond case.
fn times(array: &dyn Array) -> Result<Vec<Option<i64>>> {
    if let DataType::Timestamp(TimeUnit::Microsecond, _) = array.data_type() {
        let typed = array.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        return Ok(typed
            .iter()
            .map(|v| v.and_then(|us| us.checked_mul(1000)))
            .collect());
    }
    timestamps_ns(array)
}

/// Which part (thread) a key belongs to.
fn part_of(key: i64, parts: usize) -> usize {
    let mixed = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) as usize) % parts
}

#[derive(Clone, Copy)]
struct RightEntry {
    key: i64,
    ts: i64,
    created: i64,
    reference: u64,
}

#[derive(Clone, Copy)]
struct LeftEntry {
    key: i64,
    ts: i64,
    row: u64,
}

/// For every entity row, the position of its match among all rows of `view.batches`, or `NONE`.
fn match_view(
    left_keys: &[Option<i64>],
    left_ts: &[Option<i64>],
    view: &ViewInput,
    parts: usize,
) -> Result<Vec<u64>> {
    // Build both sides' entries at once, one thread each.
    let build_right = || -> Result<Vec<Vec<RightEntry>>> {
        let mut right_parts: Vec<Vec<RightEntry>> = vec![Vec::new(); parts];
        let mut offset = 0u64;
        for batch in &view.batches {
            let keys = int_keys(batch.column(0).as_ref())?;
            let ts = times(batch.column(1).as_ref())?;
            let created = if view.has_created {
                times(batch.column(2).as_ref())?
            } else {
                Vec::new()
            };
            for row in 0..batch.num_rows() {
                let (Some(key), Some(t)) = (keys[row], ts[row]) else {
                    continue;
                };
                let c = created.get(row).copied().flatten().unwrap_or(i64::MIN);
                right_parts[part_of(key, parts)].push(RightEntry {
                    key,
                    ts: t,
                    created: c,
                    reference: offset + row as u64,
                });
            }
            offset += batch.num_rows() as u64;
        }
        Ok(right_parts)
    };
    let build_left = || -> Vec<Vec<LeftEntry>> {
        let mut left_parts: Vec<Vec<LeftEntry>> = vec![Vec::new(); parts];
        for (row, (key, ts)) in left_keys.iter().zip(left_ts).enumerate() {
            if let (Some(key), Some(ts)) = (key, ts) {
                left_parts[part_of(*key, parts)].push(LeftEntry {
                    key: *key,
                    ts: *ts,
                    row: row as u64,
                });
            }
        }
        left_parts
    };
    let (right_parts, left_parts) = std::thread::scope(|scope| {
        let left = scope.spawn(build_left);
        let right = build_right();
        (right, left.join())
    });
    let right_parts = right_parts?;
    let left_parts =
        left_parts.map_err(|_| DataFusionError::Internal("a join thread panicked".into()))?;
    let ttl = view.ttl_ns;
    let found: Vec<Vec<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = right_parts
            .into_iter()
            .zip(left_parts)
            .map(|(mut right, mut left)| {
                scope.spawn(move || {
                    right.sort_unstable_by_key(|e| (e.key, e.ts, e.created));
                    left.sort_unstable_by_key(|e| (e.key, e.ts));
                    let mut out = Vec::with_capacity(left.len());
                    let mut next = 0usize;
                    let mut candidate: Option<RightEntry> = None;
                    for e in &left {
                        while let Some(r) = right.get(next) {
                            if (r.key, r.ts) <= (e.key, e.ts) {
                                candidate = Some(*r);
                                next += 1;
                            } else {
                                break;
                            }
                        }
                        if let Some(c) = candidate
                            && c.key == e.key
                            && ttl.is_none_or(|ttl| c.ts >= e.ts.saturating_sub(ttl))
                        {
                            out.push((e.row, c.reference));
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut matches = vec![NONE; left_keys.len()];
    for (row, reference) in found.into_iter().flatten() {
        matches[row as usize] = reference;
    }
    Ok(matches)
}

/// How one view's features are gathered into the output.
struct ViewValues {
    /// The fixed-width features, row by row, and their positions among the view's features.
    rows: Option<(RowStore, Vec<usize>)>,
    /// Every other feature as one array over all of the view's rows, with its position.
    arrays: Vec<(usize, ArrayRef)>,
    feature_count: usize,
}

impl ViewValues {
    fn build(view: &ViewInput) -> Result<Self> {
        let first_feature = 2 + usize::from(view.has_created);
        let (fixed, other): (Vec<usize>, Vec<usize>) =
            (0..view.feature_count).partition(|&f| rowstore::fits(view.fields[f].data_type()));
        let rows = if fixed.is_empty() {
            None
        } else {
            let columns: Vec<usize> = fixed.iter().map(|f| first_feature + f).collect();
            let types: Vec<DataType> = fixed
                .iter()
                .map(|&f| view.fields[f].data_type().clone())
                .collect();
            Some((RowStore::build(&view.batches, &columns, &types)?, fixed))
        };
        let arrays = other
            .into_iter()
            .map(|f| {
                rowstore::concat_column(
                    &view.batches,
                    first_feature + f,
                    view.fields[f].data_type(),
                )
                .map(|a| (f, a))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            rows,
            arrays,
            feature_count: view.feature_count,
        })
    }

    /// The feature columns for entity rows whose matches are `matches`, in view order.
    fn gather(&self, matches: &[u64]) -> Result<Vec<ArrayRef>> {
        let mut out: Vec<Option<ArrayRef>> = vec![None; self.feature_count];
        if let Some((store, positions)) = &self.rows {
            for (array, &f) in store.gather(matches)?.into_iter().zip(positions) {
                out[f] = Some(array);
            }
        }
        if !self.arrays.is_empty() {
            let positions: UInt64Array =
                matches.iter().map(|&m| (m != NONE).then_some(m)).collect();
            for (f, array) in &self.arrays {
                out[*f] = Some(take(array.as_ref(), &positions, None)?);
            }
        }
        out.into_iter()
            .map(|a| {
                a.ok_or_else(|| DataFusionError::Internal("a feature was not gathered".into()))
            })
            .collect()
    }
}

/// Joins `left` (entity batches in order) with every view and streams the result in order.
pub(crate) fn join(
    left: Vec<RecordBatch>,
    left_schema: SchemaRef,
    left_ts: usize,
    views: Vec<ViewInput>,
    batch_size: usize,
) -> Result<SendableRecordBatchStream> {
    let mut fields: Vec<Arc<Field>> = left_schema.fields().iter().cloned().collect();
    for view in &views {
        fields.extend(view.fields.iter().cloned().map(Arc::new));
    }
    let schema = Arc::new(Schema::new(fields));
    let mut builder = RecordBatchReceiverStreamBuilder::new(schema.clone(), 16);
    let tx = builder.tx();
    builder.spawn_blocking(move || {
        let parts = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(1);
        let mut left_ts_all: Vec<Option<i64>> = Vec::new();
        for batch in &left {
            left_ts_all.extend(times(batch.column(left_ts).as_ref())?);
        }
        // Matches per view, computed one view at a time.
        let mut all_matches = Vec::with_capacity(views.len());
        let started = std::time::Instant::now();
        for view in &views {
            let mut keys: Vec<Option<i64>> = Vec::with_capacity(left_ts_all.len());
            for batch in &left {
                keys.extend(int_keys(batch.column(view.left_key).as_ref())?);
            }
            all_matches.push(match_view(&keys, &left_ts_all, view, parts)?);
        }
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "in-memory join: matched"
        );
        // Fixed-width features are gathered row-wise from a row store, the others with
        // `take` from one array over all of the view's rows.
        let values: Vec<ViewValues> = views.iter().map(ViewValues::build).collect::<Result<_>>()?;
        drop(views);
        // Output batches in entity order: `batch_size` rows each, built two at a time.
        let mut chunks: Vec<(usize, RecordBatch)> = Vec::new();
        let mut offset = 0usize;
        for batch in &left {
            for start in (0..batch.num_rows()).step_by(batch_size.max(1)) {
                let len = batch_size.min(batch.num_rows() - start);
                chunks.push((offset + start, batch.slice(start, len)));
            }
            offset += batch.num_rows();
        }
        drop(left);
        let build = |(row, part): &(usize, RecordBatch)| -> Result<RecordBatch> {
            let mut columns = part.columns().to_vec();
            for (v, matches) in all_matches.iter().enumerate() {
                columns.extend(values[v].gather(&matches[*row..*row + part.num_rows()])?);
            }
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        };
        for pair in chunks.chunks(2) {
            let (first, second) = std::thread::scope(|scope| {
                let other = pair.get(1).map(|c| scope.spawn(|| build(c)));
                let first = build(&pair[0]);
                (first, other.map(|h| h.join()))
            });
            if tx.blocking_send(first).is_err() {
                return Ok(());
            }
            let Some(second) = second else {
                continue;
            };
            let second = second
                .map_err(|_| DataFusionError::Internal("an output thread panicked".into()))?;
            if tx.blocking_send(second).is_err() {
                return Ok(());
            }
        }
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "in-memory join: output done"
        );
        Ok(())
    });
    Ok(builder.build())
}
