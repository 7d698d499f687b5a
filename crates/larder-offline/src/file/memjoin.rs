//! The in-memory point-in-time join: the fast path when every view is keyed by one integer
//! join key and the inputs fit the memory budget.
//!
//! Instead of sorting wide rows, it sorts narrow (key, time, reference) entries: both sides are
//! scattered into buckets by key hash (a few thousand feature rows each, on every core), each
//! bucket is sorted and merged on its own in cache, and the result is, per entity row, a
//! reference to the matching feature row. Entity rows never move: the output is every entity
//! batch, in input order, with the matched feature values gathered next to it. Everything else (string or multi-column keys, inputs larger
//! than the budget) takes the spilling DataFusion path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// How many bits of a key's hash pick its bucket: buckets of a few thousand feature rows, so
/// that each bucket's entries sort in cache instead of one sort over all rows.
fn bucket_bits(rows: usize) -> u32 {
    let buckets = rows / 4096;
    (usize::BITS - buckets.leading_zeros()).min(16)
}

/// The bucket of a key (the top `bits` of its hash); keys of one bucket meet in one merge.
fn bucket_of(key: i64, bits: u32) -> usize {
    if bits == 0 {
        return 0;
    }
    ((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

#[derive(Clone, Copy, Default)]
struct RightEntry {
    key: i64,
    ts: i64,
    created: i64,
    reference: u64,
}

#[derive(Clone, Copy, Default)]
struct LeftEntry {
    key: i64,
    ts: i64,
    row: u64,
}

/// One chunk's entries grouped by bucket: bucket `b` is `entries[offsets[b]..offsets[b + 1]]`.
struct Buckets<T> {
    entries: Vec<T>,
    offsets: Vec<usize>,
}

impl<T: Copy + Default> Buckets<T> {
    /// Two passes over the chunk (`each` calls its argument once per entry, in the same order
    /// both times): count per bucket, then write every entry straight into its place.
    fn build(bits: u32, each: impl Fn(&mut dyn FnMut(i64, T)) -> Result<()>) -> Result<Self> {
        let mut offsets = vec![0usize; (1 << bits) + 1];
        each(&mut |key, _| offsets[bucket_of(key, bits) + 1] += 1)?;
        for b in 1..offsets.len() {
            offsets[b] += offsets[b - 1];
        }
        let mut entries = vec![T::default(); offsets[offsets.len() - 1]];
        let mut next = offsets.clone();
        each(&mut |key, entry| {
            let at = &mut next[bucket_of(key, bits)];
            entries[*at] = entry;
            *at += 1;
        })?;
        Ok(Self { entries, offsets })
    }

    fn bucket(&self, b: usize) -> &[T] {
        &self.entries[self.offsets[b]..self.offsets[b + 1]]
    }
}

/// Splits `batches` into at most `parts` runs of whole batches with about as many rows each,
/// with the position of each run's first row among all rows.
fn chunks(batches: &[RecordBatch], parts: usize) -> Vec<(u64, &[RecordBatch])> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let per_part = total.div_ceil(parts.max(1)).max(1);
    let mut out = Vec::with_capacity(parts);
    let (mut start, mut rows, mut offset, mut first_row) = (0usize, 0usize, 0u64, 0u64);
    for (i, batch) in batches.iter().enumerate() {
        rows += batch.num_rows();
        offset += batch.num_rows() as u64;
        if rows >= per_part || i + 1 == batches.len() {
            out.push((first_row, &batches[start..=i]));
            (start, rows, first_row) = (i + 1, 0, offset);
        }
    }
    out
}

/// A scoped thread's result; its panic as an error.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle
        .join()
        .map_err(|_| DataFusionError::Internal("a join thread panicked".into()))?
}

/// For every entity row, the position of its match among all rows of `view.batches`, or `NONE`.
///
/// Both sides are scattered into hash buckets of the join key (one chunk of input per
/// thread), then each thread sorts and merges its share of the buckets, a bucket at a time in
/// cache. Within a bucket, entries sort by (key, time[, created]), so the merge sees each
/// key's rows in time order.
fn match_view(
    left: &[RecordBatch],
    left_ts: usize,
    view: &ViewInput,
    threads: usize,
) -> Result<Vec<u64>> {
    let right_rows: usize = view.batches.iter().map(RecordBatch::num_rows).sum();
    let left_rows: usize = left.iter().map(RecordBatch::num_rows).sum();
    let bits = bucket_bits(right_rows.max(left_rows));
    let t0 = std::time::Instant::now();
    let right_chunks = chunks(&view.batches, threads);
    let left_chunks = chunks(left, threads);
    let (right, left) = std::thread::scope(|scope| {
        let right: Vec<_> = right_chunks
            .iter()
            .map(|&(first, batches)| {
                scope.spawn(move || {
                    Buckets::build(bits, |emit| {
                        let mut reference = first;
                        for batch in batches {
                            let keys = int_keys(batch.column(0).as_ref())?;
                            let ts = times(batch.column(1).as_ref())?;
                            let created = if view.has_created {
                                times(batch.column(2).as_ref())?
                            } else {
                                Vec::new()
                            };
                            for row in 0..batch.num_rows() {
                                if let (Some(key), Some(t)) = (keys[row], ts[row]) {
                                    let c = created.get(row).copied().flatten();
                                    emit(
                                        key,
                                        RightEntry {
                                            key,
                                            ts: t,
                                            created: c.unwrap_or(i64::MIN),
                                            reference: reference + row as u64,
                                        },
                                    );
                                }
                            }
                            reference += batch.num_rows() as u64;
                        }
                        Ok(())
                    })
                })
            })
            .collect();
        let left: Vec<_> = left_chunks
            .iter()
            .map(|&(first, batches)| {
                scope.spawn(move || {
                    Buckets::build(bits, |emit| {
                        let mut row = first;
                        for batch in batches {
                            let keys = int_keys(batch.column(view.left_key).as_ref())?;
                            let ts = times(batch.column(left_ts).as_ref())?;
                            for (key, t) in keys.into_iter().zip(ts) {
                                if let (Some(key), Some(ts)) = (key, t) {
                                    emit(key, LeftEntry { key, ts, row });
                                }
                                row += 1;
                            }
                        }
                        Ok(())
                    })
                })
            })
            .collect();
        let right: Result<Vec<Buckets<RightEntry>>> = right.into_iter().map(joined).collect();
        let left: Result<Vec<Buckets<LeftEntry>>> = left.into_iter().map(joined).collect();
        (right, left)
    });
    let (right, left) = (right?, left?);
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "in-memory join: bucketed"
    );
    let matches: Vec<AtomicU64> = (0..left_rows).map(|_| AtomicU64::new(NONE)).collect();
    let ttl = view.ttl_ns;
    let buckets = 1usize << bits;
    let per_thread = buckets.div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        for first in (0..buckets).step_by(per_thread) {
            let (right, left, matches) = (&right, &left, &matches);
            scope.spawn(move || {
                let (mut r, mut l) = (Vec::new(), Vec::new());
                for b in first..(first + per_thread).min(buckets) {
                    l.clear();
                    for part in left {
                        l.extend_from_slice(part.bucket(b));
                    }
                    if l.is_empty() {
                        continue;
                    }
                    r.clear();
                    for part in right {
                        r.extend_from_slice(part.bucket(b));
                    }
                    r.sort_unstable_by_key(|e: &RightEntry| (e.key, e.ts, e.created));
                    l.sort_unstable_by_key(|e: &LeftEntry| (e.key, e.ts));
                    let mut next = 0usize;
                    let mut candidate: Option<RightEntry> = None;
                    for e in &l {
                        while let Some(c) = r.get(next) {
                            if (c.key, c.ts) <= (e.key, e.ts) {
                                candidate = Some(*c);
                                next += 1;
                            } else {
                                break;
                            }
                        }
                        if let Some(c) = candidate
                            && c.key == e.key
                            && ttl.is_none_or(|ttl| c.ts >= e.ts.saturating_sub(ttl))
                        {
                            matches[e.row as usize].store(c.reference, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "in-memory join: merged"
    );
    Ok(matches.into_iter().map(AtomicU64::into_inner).collect())
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
        // Matches per view, computed one view at a time.
        let mut all_matches = Vec::with_capacity(views.len());
        let started = std::time::Instant::now();
        for view in &views {
            all_matches.push(match_view(&left, left_ts, view, parts)?);
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
