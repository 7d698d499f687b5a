//! The in-memory point-in-time join: the fast path when every view is keyed by one integer
//! join key and the inputs fit the memory budget.
//!
//! Instead of sorting wide rows, it sorts narrow (key, time, reference) entries: both sides are
//! scattered into buckets by key hash (a few thousand feature rows each, on every core), each
//! bucket is sorted and merged on its own in cache, and the result is, per entity row, a
//! reference to the matching feature row. The buckets are taken in passes over ranges of
//! buckets, so the entries stay small beside the inputs; one scan lists each pass's rows (4
//! bytes a row), so that a pass builds its own entries without reading every row again
//! (10M x 10M, five passes: matching 857-927 ms -> 781-872 ms, peak RSS +50 MB). Entity rows
//! never move: the output is every entity batch, in input order, with the matched feature
//! values gathered next to it straight from the view's batches ([`super::gather`]).
//! Everything else (string or multi-column keys, inputs larger than the budget) takes the
//! spilling DataFusion path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, SendableRecordBatchStream,
};
use futures::TryStreamExt;

use crate::asof::timestamps_ns;

use super::gather::{Addressing, Columns, NONE, PackedRows, RowLayout, pack};

/// One view's side of the join, read into memory.
pub(crate) struct ViewInput {
    /// Batches of `__k0, __ts, [__created], __f0..`; only the key and times when the
    /// features are `packed`.
    pub batches: Vec<RecordBatch>,
    /// The features packed row by row, one block per batch ([`read_view`]).
    pub packed: Option<(RowLayout, Vec<PackedRows>)>,
    pub has_created: bool,
    pub feature_count: usize,
    /// Output names and types of the features.
    pub fields: Vec<Field>,
    /// The entity column holding this view's join key.
    pub left_key: usize,
    pub ttl_ns: Option<i64>,
}

/// Where a view's `count` features are in its batches as read (before any packing): after
/// the key, the event time and, when the view has one, the created time.
pub(crate) fn feature_columns(has_created: bool, count: usize) -> Vec<usize> {
    let first = 2 + usize::from(has_created);
    (first..first + count).collect()
}

/// Runs every partition of `plan` at once and returns the batches of each, in partition order.
pub(crate) async fn collect_partitions(
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
) -> Result<Vec<Vec<RecordBatch>>> {
    collect_partitions_with(plan, context, Ok).await
}

/// Reads a view's rows like [`collect_partitions`]; with a `layout`, packs its feature
/// columns as each batch arrives and keeps only the batch's other columns.
pub(crate) async fn read_view(
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    layout: Option<RowLayout>,
) -> Result<(Vec<RecordBatch>, Option<(RowLayout, Vec<PackedRows>)>)> {
    let Some(layout) = layout else {
        let batches = collect_partitions(plan, context).await?;
        return Ok((batches.into_iter().flatten().collect(), None));
    };
    let packer = layout.clone();
    let parts = collect_partitions_with(plan, context, move |batch| {
        Ok((packer.rest(&batch)?, pack(&batch, &packer)?))
    })
    .await?;
    let (batches, blocks) = parts.into_iter().flatten().unzip();
    Ok((batches, Some((layout, blocks))))
}

/// Runs every partition of `plan` at once, maps each batch with `f` as it arrives, and
/// returns the results of each partition, in partition order.
async fn collect_partitions_with<T, F>(
    plan: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    f: F,
) -> Result<Vec<Vec<T>>>
where
    T: Send + 'static,
    F: Fn(RecordBatch) -> Result<T> + Clone + Send + 'static,
{
    let partitions = plan.output_partitioning().partition_count();
    let mut tasks = Vec::with_capacity(partitions);
    for partition in 0..partitions {
        let stream = plan.execute(partition, context.clone())?;
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            stream
                .and_then(move |batch| futures::future::ready(f(batch)))
                .try_collect::<Vec<T>>()
                .await
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

/// A batch's keys and event times (nanoseconds), by row. The common case (64-bit keys,
/// microsecond times, no nulls) reads the value buffers as they are.
enum KeyTimes<'a> {
    Plain {
        keys: &'a [i64],
        micros: &'a [i64],
    },
    Converted {
        keys: Vec<Option<i64>>,
        times: Vec<Option<i64>>,
    },
}

impl<'a> KeyTimes<'a> {
    fn of(keys: &'a dyn Array, times_array: &'a dyn Array) -> Result<Self> {
        if let (DataType::Int64, DataType::Timestamp(TimeUnit::Microsecond, _)) =
            (keys.data_type(), times_array.data_type())
            && keys.null_count() == 0
            && times_array.null_count() == 0
        {
            return Ok(KeyTimes::Plain {
                keys: keys.as_primitive::<Int64Type>().values(),
                micros: times_array
                    .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                    .values(),
            });
        }
        Ok(KeyTimes::Converted {
            keys: int_keys(keys)?,
            times: times(times_array)?,
        })
    }

    /// The key and time of `row`; `None` when either is missing.
    #[inline]
    fn at(&self, row: usize) -> Option<(i64, i64)> {
        match self {
            KeyTimes::Plain { keys, micros } => {
                let key = *keys.get(row)?;
                Some((key, micros.get(row)?.checked_mul(1000)?))
            }
            KeyTimes::Converted { keys, times } => Some(((*keys.get(row)?)?, (*times.get(row)?)?)),
        }
    }

    /// Calls `f(row, key, time_ns)` for every row with both a key and a time.
    fn each(&self, mut f: impl FnMut(usize, i64, i64)) {
        match self {
            KeyTimes::Plain { keys, micros } => {
                for (row, (&key, &us)) in keys.iter().zip(micros.iter()).enumerate() {
                    if let Some(ns) = us.checked_mul(1000) {
                        f(row, key, ns);
                    }
                }
            }
            KeyTimes::Converted { keys, times } => {
                for (row, (key, ts)) in keys.iter().zip(times).enumerate() {
                    if let (Some(key), Some(ts)) = (*key, *ts) {
                        f(row, key, ts);
                    }
                }
            }
        }
    }
}

/// Calls `visit(batch, start, rows)` for each batch of `batches` holding some of `positions`
/// (ascending row positions counted over all the batches from 0): `start` is the position of
/// the batch's first row and `rows` the part of `positions` in the batch (a position less
/// `start` is the row within the batch).
fn by_batch(
    batches: &[RecordBatch],
    positions: &[u32],
    mut visit: impl FnMut(usize, usize, &[u32]) -> Result<()>,
) -> Result<()> {
    let mut rest = positions;
    let mut start = 0usize;
    for (b, batch) in batches.iter().enumerate() {
        let end = start + batch.num_rows();
        let here = rest.partition_point(|&p| (p as usize) < end);
        if here > 0 {
            visit(b, start, &rest[..here])?;
            rest = &rest[here..];
        }
        if rest.is_empty() {
            break;
        }
        start = end;
    }
    Ok(())
}

/// How many bits of a key's hash pick its bucket: buckets of a few thousand feature rows, so
/// that each bucket's entries sort in cache instead of one sort over all rows.
fn bucket_bits(rows: usize, bucket_rows: usize) -> u32 {
    let buckets = rows / bucket_rows.max(1);
    (usize::BITS - buckets.leading_zeros()).min(16)
}

/// The bucket of a key (the top `bits` of its hash); keys of one bucket meet in one merge.
fn bucket_of(key: i64, bits: u32) -> usize {
    if bits == 0 {
        return 0;
    }
    ((key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

/// Most bytes of sort entries (both sides) scattered at once: the buckets are matched in
/// passes over ranges of buckets, so that their entries, fresh memory each, stay small
/// beside the inputs (560 MB in one pass for 10M x 10M rows).
pub(crate) const PASS_BYTES: usize = 128 << 20;

/// Rows per bucket the bucket count aims at.
const BUCKET_ROWS: usize = 4096;

/// Entity rows per block of [`Matches`] (as a power of two): 64k rows, 512 KB.
const MATCH_BLOCK_SHIFT: u32 = 16;

/// How a view is matched: [`PASS_BYTES`], [`BUCKET_ROWS`] and [`MATCH_BLOCK_SHIFT`],
/// smaller in tests.
#[derive(Clone, Copy, Debug)]
struct Tuning {
    pass_limit: usize,
    bucket_rows: usize,
    block_shift: u32,
    scan_limit: usize,
}

const TUNING: Tuning = Tuning {
    pass_limit: PASS_BYTES,
    bucket_rows: BUCKET_ROWS,
    block_shift: MATCH_BLOCK_SHIFT,
    scan_limit: SCAN_LIMIT,
};

/// Per entity row, the address of its matching feature row or [`NONE`], in blocks of
/// `1 << shift` rows. One array of 8 bytes per entity row (80 MB for 10M rows) was fresh
/// memory filled by one thread: 0.18 s of page faults on our VM while the other core
/// waited. The blocks are allocated and filled on every core (that gap: about 0.1 s shorter).
pub(crate) struct Matches {
    blocks: Vec<Vec<u64>>,
    shift: u32,
}

impl Matches {
    /// The matches of rows `start..start + len`: borrowed within a block, copied across.
    pub(crate) fn rows(&self, start: usize, len: usize) -> std::borrow::Cow<'_, [u64]> {
        let (block, at) = block_of(start, self.shift);
        match self.blocks.get(block).and_then(|b| b.get(at..at + len)) {
            Some(rows) => std::borrow::Cow::Borrowed(rows),
            None => std::borrow::Cow::Owned(
                (start..start + len)
                    .map(|row| {
                        let (block, at) = block_of(row, self.shift);
                        self.blocks
                            .get(block)
                            .and_then(|b| b.get(at))
                            .copied()
                            .unwrap_or(NONE)
                    })
                    .collect(),
            ),
        }
    }
}

/// The block of `1 << shift` rows that holds `row`, and its place there.
#[inline]
fn block_of(row: usize, shift: u32) -> (usize, usize) {
    (row >> shift, row & ((1 << shift) - 1))
}

/// [`Matches`] while the merge threads record them.
struct SharedMatches {
    blocks: Vec<Vec<AtomicU64>>,
    shift: u32,
}

impl SharedMatches {
    /// `rows` rows of [`NONE`], the blocks allocated and filled on `threads` threads.
    fn new(rows: usize, shift: u32, threads: usize) -> Result<Self> {
        let size = 1usize << shift;
        let count = rows.div_ceil(size);
        let per_thread = count.div_ceil(threads.max(1)).max(1);
        let shares: Vec<std::ops::Range<usize>> = (0..count)
            .step_by(per_thread)
            .map(|first| first..(first + per_thread).min(count))
            .collect();
        let parts = on_threads(&shares, |share| {
            Ok(share
                .clone()
                .map(|b| {
                    let len = size.min(rows - b * size);
                    (0..len).map(|_| AtomicU64::new(NONE)).collect::<Vec<_>>()
                })
                .collect::<Vec<_>>())
        })?;
        Ok(SharedMatches {
            blocks: parts.into_iter().flatten().collect(),
            shift,
        })
    }

    #[inline]
    fn store(&self, row: u64, reference: u64) {
        let (block, at) = block_of(row as usize, self.shift);
        if let Some(slot) = self.blocks.get(block).and_then(|b| b.get(at)) {
            slot.store(reference, Ordering::Relaxed);
        }
    }

    fn into_matches(self) -> Matches {
        Matches {
            blocks: self
                .blocks
                .into_iter()
                .map(|b| b.into_iter().map(AtomicU64::into_inner).collect())
                .collect(),
            shift: self.shift,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct RightEntry {
    key: i64,
    ts: i64,
    created: i64,
    /// The feature row's address (see [`Addressing`]).
    reference: u64,
}

#[derive(Clone, Copy, Default)]
struct LeftEntry {
    key: i64,
    ts: i64,
    row: u64,
}

/// One chunk's entries of the buckets `first..` grouped by bucket: bucket `first + b` is
/// `entries[offsets[b]..offsets[b + 1]]`.
struct Buckets<T> {
    entries: Vec<T>,
    offsets: Vec<usize>,
    first: usize,
}

/// One input chunk's side of the join: its entries, all of them or by row position.
/// Used generically, never as `dyn Side`: through a vtable (and a `dyn Iterator` over each
/// batch's positions) every row cost an indirect call, and matching 10M x 10M took
/// 1095-1320 ms instead of 831-1082 ms (alternated runs).
trait Side<T>: Sync {
    /// Calls `emit(position, key, entry)` for every row with a key and a time, in row order;
    /// `position` counts the chunk's rows from 0.
    fn each(&self, emit: impl FnMut(usize, i64, T)) -> Result<()>;

    /// Calls `emit(key, entry)` for the rows at `positions` (ascending) with a key and a
    /// time.
    fn at(&self, positions: &[u32], emit: impl FnMut(i64, T)) -> Result<()>;
}

impl<T: Copy + Default> Buckets<T> {
    /// How many of the chunk's entries fall in each bucket.
    fn count(bits: u32, side: &impl Side<T>) -> Result<Vec<usize>> {
        let mut counts = vec![0usize; 1 << bits];
        side.each(|_, key, _| counts[bucket_of(key, bits)] += 1)?;
        Ok(counts)
    }

    /// Per pass (`pass_of` maps a bucket to its pass), the positions of the chunk's rows
    /// whose entries fall in that pass's buckets, ascending: each pass then builds only its
    /// own entries instead of reading every row again to pick them out.
    fn positions(
        bits: u32,
        counts: &[usize],
        pass_of: &[usize],
        passes: usize,
        side: &impl Side<T>,
    ) -> Result<Vec<Vec<u32>>> {
        let mut sizes = vec![0usize; passes];
        for (b, &count) in counts.iter().enumerate() {
            sizes[pass_of[b]] += count;
        }
        let mut lists: Vec<Vec<u32>> = sizes.into_iter().map(Vec::with_capacity).collect();
        let mut too_many = false;
        side.each(|position, key, _| match u32::try_from(position) {
            Ok(p) => lists[pass_of[bucket_of(key, bits)]].push(p),
            Err(_) => too_many = true,
        })?;
        if too_many {
            return Err(DataFusionError::Internal(
                "in-memory join: an input chunk has more than 2^32 rows".into(),
            ));
        }
        Ok(lists)
    }

    /// The entries at `positions` (all in the buckets of `range`), each written straight
    /// into its bucket.
    fn scatter(
        bits: u32,
        counts: &[usize],
        range: std::ops::Range<usize>,
        side: &impl Side<T>,
        positions: &[u32],
    ) -> Result<Self> {
        let mut offsets = Vec::with_capacity(range.len() + 1);
        offsets.push(0usize);
        for b in range.clone() {
            offsets.push(offsets[offsets.len() - 1] + counts[b]);
        }
        let mut entries = vec![T::default(); offsets[offsets.len() - 1]];
        let mut next = offsets.clone();
        let mut misplaced = false;
        side.at(positions, |key, entry| {
            let slot = next
                .get_mut(bucket_of(key, bits).wrapping_sub(range.start))
                .filter(|at| **at < entries.len());
            match slot {
                Some(at) => {
                    entries[*at] = entry;
                    *at += 1;
                }
                None => misplaced = true,
            }
        })?;
        if misplaced {
            return Err(DataFusionError::Internal(
                "in-memory join: an entry fell outside its pass".into(),
            ));
        }
        Ok(Self {
            entries,
            offsets,
            first: range.start,
        })
    }

    fn bucket(&self, b: usize) -> &[T] {
        let b = b - self.first;
        &self.entries[self.offsets[b]..self.offsets[b + 1]]
    }
}

/// Splits `batches` into at most `parts` runs of whole batches with about as many rows each,
/// with the index of each run's first batch and the position of its first row.
fn chunks(batches: &[RecordBatch], parts: usize) -> Vec<Chunk<'_>> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let per_part = total.div_ceil(parts.max(1)).max(1);
    let mut out = Vec::with_capacity(parts);
    let (mut start, mut rows, mut offset, mut first_row) = (0usize, 0usize, 0u64, 0u64);
    for (i, batch) in batches.iter().enumerate() {
        rows += batch.num_rows();
        offset += batch.num_rows() as u64;
        if rows >= per_part || i + 1 == batches.len() {
            out.push((start, first_row, &batches[start..=i]));
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

/// Runs `work` on every item on its own scoped thread; the results in item order.
fn on_threads<I: Sync, T: Send>(
    items: &[I],
    work: impl Fn(&I) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .iter()
            .map(|item| {
                let work = &work;
                scope.spawn(move || work(item))
            })
            .collect();
        handles.into_iter().map(joined).collect()
    })
}

/// A batch's created times in nanoseconds, `i64::MIN` where there are none (they sort first).
enum Created<'a> {
    None,
    /// Microseconds without nulls, as stored.
    Micros(&'a [i64]),
    Converted(Vec<Option<i64>>),
}

impl<'a> Created<'a> {
    fn of(array: Option<&'a dyn Array>) -> Result<Self> {
        Ok(match array {
            None => Created::None,
            Some(array) => match array.data_type() {
                DataType::Timestamp(TimeUnit::Microsecond, _) if array.null_count() == 0 => {
                    Created::Micros(
                        array
                            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                            .values(),
                    )
                }
                _ => Created::Converted(times(array)?),
            },
        })
    }

    #[inline]
    fn at(&self, row: usize) -> i64 {
        match self {
            Created::None => i64::MIN,
            Created::Micros(micros) => micros
                .get(row)
                .and_then(|us| us.checked_mul(1000))
                .unwrap_or(i64::MIN),
            Created::Converted(times) => times.get(row).copied().flatten().unwrap_or(i64::MIN),
        }
    }
}

/// A run of whole batches: the index of its first batch, the position of its first row, and
/// the batches.
type Chunk<'a> = (usize, u64, &'a [RecordBatch]);

/// The feature side of one chunk.
struct RightSide<'a> {
    view: &'a ViewInput,
    addressing: Addressing,
    chunk: Chunk<'a>,
}

impl RightSide<'_> {
    fn entry(&self, i: usize, created: &Created<'_>, row: usize, key: i64, ts: i64) -> RightEntry {
        RightEntry {
            key,
            ts,
            created: created.at(row),
            reference: self.addressing.address(self.chunk.0 + i, row),
        }
    }

    fn columns(&self, i: usize) -> Result<(KeyTimes<'_>, Created<'_>)> {
        let batch = &self.chunk.2[i];
        let created = self.view.has_created.then(|| batch.column(2).as_ref());
        Ok((
            KeyTimes::of(batch.column(0).as_ref(), batch.column(1).as_ref())?,
            Created::of(created)?,
        ))
    }
}

impl Side<RightEntry> for RightSide<'_> {
    fn each(&self, mut emit: impl FnMut(usize, i64, RightEntry)) -> Result<()> {
        let mut start = 0;
        for (i, batch) in self.chunk.2.iter().enumerate() {
            let (rows, created) = self.columns(i)?;
            rows.each(|row, key, ts| emit(start + row, key, self.entry(i, &created, row, key, ts)));
            start += batch.num_rows();
        }
        Ok(())
    }

    fn at(&self, positions: &[u32], mut emit: impl FnMut(i64, RightEntry)) -> Result<()> {
        by_batch(self.chunk.2, positions, |i, start, rows| {
            let (key_times, created) = self.columns(i)?;
            for row in rows.iter().map(|&p| p as usize - start) {
                if let Some((key, ts)) = key_times.at(row) {
                    emit(key, self.entry(i, &created, row, key, ts));
                }
            }
            Ok(())
        })
    }
}

/// The entity side of one chunk: `left_key` and `left_ts` are its key and time columns.
struct LeftSide<'a> {
    left_key: usize,
    left_ts: usize,
    chunk: Chunk<'a>,
}

impl LeftSide<'_> {
    fn columns<'b>(&self, batch: &'b RecordBatch) -> Result<KeyTimes<'b>> {
        KeyTimes::of(
            batch.column(self.left_key).as_ref(),
            batch.column(self.left_ts).as_ref(),
        )
    }
}

impl Side<LeftEntry> for LeftSide<'_> {
    fn each(&self, mut emit: impl FnMut(usize, i64, LeftEntry)) -> Result<()> {
        let mut start = 0;
        for batch in self.chunk.2 {
            let first = self.chunk.1 + start as u64;
            self.columns(batch)?.each(|row, key, ts| {
                let entry = LeftEntry {
                    key,
                    ts,
                    row: first + row as u64,
                };
                emit(start + row, key, entry)
            });
            start += batch.num_rows();
        }
        Ok(())
    }

    fn at(&self, positions: &[u32], mut emit: impl FnMut(i64, LeftEntry)) -> Result<()> {
        by_batch(self.chunk.2, positions, |i, start, rows| {
            let key_times = self.columns(&self.chunk.2[i])?;
            let first = self.chunk.1 + start as u64;
            for row in rows.iter().map(|&p| p as usize - start) {
                if let Some((key, ts)) = key_times.at(row) {
                    let entry = LeftEntry {
                        key,
                        ts,
                        row: first + row as u64,
                    };
                    emit(key, entry);
                }
            }
            Ok(())
        })
    }
}

/// For every entity row, the address of its matching feature row in `view.batches`, or
/// `NONE`.
///
/// Both sides' entries are scattered into hash buckets of the join key (one chunk of input
/// per thread), then each thread sorts and merges its share of the buckets, a bucket at a
/// time in cache. Within a bucket, entries sort by (key, time[, created]), so the merge sees
/// each key's rows in time order. The buckets are taken in passes over ranges of buckets
/// of at most `tuning.pass_limit` bytes of entries (a bucket is never split).
fn match_view(
    left: &[RecordBatch],
    left_ts: usize,
    view: &ViewInput,
    addressing: Addressing,
    threads: usize,
    tuning: Tuning,
) -> Result<Matches> {
    let right_rows: usize = view.batches.iter().map(RecordBatch::num_rows).sum();
    let left_rows: usize = left.iter().map(RecordBatch::num_rows).sum();
    let bits = bucket_bits(right_rows.max(left_rows), tuning.bucket_rows);
    let buckets = 1usize << bits;
    let t0 = std::time::Instant::now();
    let right_sides: Vec<RightSide<'_>> = chunks(&view.batches, threads)
        .into_iter()
        .map(|chunk| RightSide {
            view,
            addressing,
            chunk,
        })
        .collect();
    let left_sides: Vec<LeftSide<'_>> = chunks(left, threads)
        .into_iter()
        .map(|chunk| LeftSide {
            left_key: view.left_key,
            left_ts,
            chunk,
        })
        .collect();
    let right_counts = on_threads(&right_sides, |side| Buckets::count(bits, side))?;
    let left_counts = on_threads(&left_sides, |side| Buckets::count(bits, side))?;
    // Bucket ranges of about `tuning.pass_limit` bytes of entries each.
    let bytes = |b: usize| {
        right_counts.iter().map(|c| c[b]).sum::<usize>() * size_of::<RightEntry>()
            + left_counts.iter().map(|c| c[b]).sum::<usize>() * size_of::<LeftEntry>()
    };
    let mut passes = Vec::new();
    let mut pass_of = vec![0usize; buckets];
    let (mut start, mut pass_bytes) = (0usize, 0usize);
    for (b, pass) in pass_of.iter_mut().enumerate() {
        pass_bytes += bytes(b);
        *pass = passes.len();
        if pass_bytes >= tuning.pass_limit || b + 1 == buckets {
            passes.push(start..b + 1);
            (start, pass_bytes) = (b + 1, 0);
        }
    }
    // Per chunk and pass, the rows whose entries the pass takes.
    let right_pairs: Vec<_> = right_sides.iter().zip(&right_counts).collect();
    let left_pairs: Vec<_> = left_sides.iter().zip(&left_counts).collect();
    let right_positions = on_threads(&right_pairs, |(side, counts)| {
        Buckets::positions(bits, counts, &pass_of, passes.len(), *side)
    })?;
    let left_positions = on_threads(&left_pairs, |(side, counts)| {
        Buckets::positions(bits, counts, &pass_of, passes.len(), *side)
    })?;
    let matches = SharedMatches::new(left_rows, tuning.block_shift, threads)?;
    let ttl = view.ttl_ns;
    for (pass, range) in passes.iter().enumerate() {
        let right_parts: Vec<_> = right_sides
            .iter()
            .zip(&right_counts)
            .zip(&right_positions)
            .collect();
        let left_parts: Vec<_> = left_sides
            .iter()
            .zip(&left_counts)
            .zip(&left_positions)
            .collect();
        let right = on_threads(&right_parts, |((side, counts), positions)| {
            Buckets::scatter(bits, counts, range.clone(), *side, &positions[pass])
        })?;
        let left = on_threads(&left_parts, |((side, counts), positions)| {
            Buckets::scatter(bits, counts, range.clone(), *side, &positions[pass])
        })?;
        let per_thread = range.len().div_ceil(threads.max(1)).max(1);
        let shares: Vec<_> = range
            .clone()
            .step_by(per_thread)
            .map(|first| first..(first + per_thread).min(range.end))
            .collect();
        on_threads(&shares, |share| {
            let groups = (&right[..], &left[..]);
            merge_buckets(
                share.clone(),
                bits,
                groups,
                ttl,
                tuning.scan_limit,
                &matches,
            );
            Ok(())
        })?;
    }
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        passes = passes.len(),
        "in-memory join: matched a view"
    );
    Ok(matches.into_matches())
}

/// Bits of a key's hash, below the bucket's, that split a bucket into groups of a few
/// entries: a bucket's entries are grouped by them (a counting sort, two passes in cache)
/// and only each small group is sorted by (key, time), instead of a comparison sort of the
/// whole bucket. The same key falls in the same group on both sides.
const GROUP_BITS: u32 = 9;
const GROUPS: usize = 1 << GROUP_BITS;

/// The group of a key within its bucket (the `GROUP_BITS` of its hash after the bucket's
/// `bits`).
#[inline]
fn group_of(key: i64, bits: u32) -> usize {
    let hash = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((hash << bits) >> (64 - GROUP_BITS)) as usize
}

/// A bucket's entries from every part, grouped: group `g` is `entries[starts[g]..starts[g +
/// 1]]`, in no particular order within.
struct Grouped<T> {
    entries: Vec<T>,
    starts: Vec<usize>,
}

impl<T: Copy + Default> Grouped<T> {
    fn new() -> Self {
        Grouped {
            entries: Vec::new(),
            starts: vec![0; GROUPS + 1],
        }
    }

    /// Refills with bucket `b` of `parts`, copying each entry straight to its group.
    fn fill(&mut self, parts: &[Buckets<T>], b: usize, bits: u32, key: impl Fn(&T) -> i64) {
        let mut counts = [0usize; GROUPS];
        let mut total = 0;
        for part in parts {
            let entries = part.bucket(b);
            total += entries.len();
            for e in entries {
                counts[group_of(key(e), bits)] += 1;
            }
        }
        let mut start = 0;
        for (slot, count) in self.starts.iter_mut().zip(counts) {
            *slot = start;
            start += count;
        }
        self.starts[GROUPS] = start;
        self.entries.clear();
        self.entries.resize(total, T::default());
        let mut next: [usize; GROUPS] = [0; GROUPS];
        next.copy_from_slice(&self.starts[..GROUPS]);
        for part in parts {
            for e in part.bucket(b) {
                let at = &mut next[group_of(key(e), bits)];
                self.entries[*at] = *e;
                *at += 1;
            }
        }
    }

    fn group(&mut self, g: usize) -> &mut [T] {
        &mut self.entries[self.starts[g]..self.starts[g + 1]]
    }
}

/// Sorts and merges the buckets of `share`, recording each entity row's match.
fn merge_buckets(
    share: std::ops::Range<usize>,
    bits: u32,
    (right, left): (&[Buckets<RightEntry>], &[Buckets<LeftEntry>]),
    ttl: Option<i64>,
    scan_limit: usize,
    matches: &SharedMatches,
) {
    let (mut r, mut l) = (Grouped::new(), Grouped::new());
    for b in share {
        if left.iter().all(|part| part.bucket(b).is_empty()) {
            continue;
        }
        l.fill(left, b, bits, |e| e.key);
        r.fill(right, b, bits, |e| e.key);
        for g in 0..GROUPS {
            let l = l.group(g);
            if l.is_empty() {
                continue;
            }
            let r = r.group(g);
            if r.len() * l.len() <= scan_limit {
                scan_group(r, l, ttl, matches);
                continue;
            }
            r.sort_unstable_by_key(|e: &RightEntry| (e.key, e.ts, e.created));
            l.sort_unstable_by_key(|e: &LeftEntry| (e.key, e.ts));
            merge_group(r, l, ttl, matches);
        }
    }
}

/// Groups with at most this many (feature row, entity row) pairs are matched by comparing
/// every pair ([`scan_group`]) instead of sorting both sides: a group holds about five
/// entries a side, and sorting them cost more than the comparisons.
const SCAN_LIMIT: usize = 64;

/// Records the match of each entity row of `l` among the feature rows of `r`, in any order:
/// the feature row of the same key with the greatest (time, created) among those in the
/// entity row's window.
fn scan_group(r: &[RightEntry], l: &[LeftEntry], ttl: Option<i64>, matches: &SharedMatches) {
    for e in l {
        let lower = ttl.map_or(i64::MIN, |ttl| e.ts.saturating_sub(ttl));
        let mut best: Option<&RightEntry> = None;
        for c in r {
            if c.key == e.key
                && c.ts <= e.ts
                && c.ts >= lower
                && best.is_none_or(|b| (c.ts, c.created) > (b.ts, b.created))
            {
                best = Some(c);
            }
        }
        if let Some(best) = best {
            matches.store(e.row, best.reference);
        }
    }
}

/// Records the match of each entity row of `l` among the feature rows of `r`, both sorted
/// (by key, time, and for `r` created time).
fn merge_group(r: &[RightEntry], l: &[LeftEntry], ttl: Option<i64>, matches: &SharedMatches) {
    let mut next = 0usize;
    let mut candidate: Option<RightEntry> = None;
    for e in l {
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
            matches.store(e.row, c.reference);
        }
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
    let mut views = views;
    builder.spawn_blocking(move || {
        let parts = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(1);
        // Matches per view, computed one view at a time; the features are gathered from
        // the batches they were read into.
        let mut all_matches = Vec::with_capacity(views.len());
        let mut values = Vec::with_capacity(views.len());
        let started = std::time::Instant::now();
        for view in &mut views {
            let addressing = Addressing::of(&view.batches);
            all_matches.push(match_view(&left, left_ts, view, addressing, parts, TUNING)?);
            values.push(match view.packed.take() {
                Some((layout, blocks)) => Columns::packed(blocks, &layout, addressing),
                None => {
                    let columns = feature_columns(view.has_created, view.feature_count);
                    let types: Vec<DataType> =
                        view.fields.iter().map(|f| f.data_type().clone()).collect();
                    Columns::new(&view.batches, addressing, &columns, &types)
                }
            });
        }
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "in-memory join: matched"
        );
        // The key and time columns are dropped here; the features live on in `values`.
        drop(views);
        // Output batches in entity order: `batch_size` rows each, built on every core.
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
                columns.extend(values[v].gather(&matches.rows(*row, part.num_rows()))?);
            }
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        };
        // Each thread builds every `parts`-th batch and runs ahead of the consumer by up to
        // `AHEAD` batches, so no thread waits for another's batch to finish; the batches are
        // taken round-robin, which is entity order.
        const AHEAD: usize = 4;
        std::thread::scope(|scope| -> Result<()> {
            let mut receivers = Vec::with_capacity(parts);
            let mut threads = Vec::with_capacity(parts);
            for first in 0..parts {
                let (sender, receiver) = std::sync::mpsc::sync_channel(AHEAD);
                receivers.push(receiver);
                let (chunks, build) = (&chunks, &build);
                threads.push(scope.spawn(move || {
                    for chunk in chunks.iter().skip(first).step_by(parts) {
                        // The consumer stopped: so does this thread.
                        if sender.send(build(chunk)).is_err() {
                            break;
                        }
                    }
                    Ok(())
                }));
            }
            for i in 0..chunks.len() {
                // A thread that panicked dropped its sender; its join below says so.
                let Ok(batch) = receivers[i % parts].recv() else {
                    break;
                };
                let failed = batch.is_err();
                if tx.blocking_send(batch).is_err() || failed {
                    break;
                }
            }
            // Dropping the receivers ends the threads still building; each is joined, so
            // that a panic is an error (the first one) rather than a panic of this task.
            drop(receivers);
            let mut result = Ok(());
            for thread in threads {
                let joined = joined(thread);
                if result.is_ok() {
                    result = joined;
                }
            }
            result
        })?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "in-memory join: output done"
        );
        Ok(())
    });
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, TimestampMicrosecondArray};
    use proptest::prelude::*;

    fn ts_type() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    }

    fn int64s(values: impl Iterator<Item = i64>) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(values))
    }

    fn micros(values: impl Iterator<Item = i64>) -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from_iter_values(values).with_timezone("UTC"))
    }

    /// Feature rows `(key, ts, created)` in batches of `batch_rows`, with `f0 = row number`
    /// and `f1 = -row number` (null on every third row).
    fn view(rows: &[(i64, i64, i64)], batch_rows: usize, ttl_ns: Option<i64>) -> ViewInput {
        let schema = Arc::new(Schema::new(vec![
            Field::new("__k0", DataType::Int64, true),
            Field::new("__ts", ts_type(), true),
            Field::new("__created", ts_type(), true),
            Field::new("__f0", DataType::Float64, true),
            Field::new("__f1", DataType::Int32, true),
        ]));
        let batches = rows
            .chunks(batch_rows.max(1))
            .enumerate()
            .map(|(c, chunk)| {
                let first = c * batch_rows.max(1);
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        int64s(chunk.iter().map(|r| r.0)),
                        micros(chunk.iter().map(|r| r.1)),
                        micros(chunk.iter().map(|r| r.2)),
                        Arc::new(Float64Array::from_iter_values(
                            (first..first + chunk.len()).map(|i| i as f64),
                        )),
                        Arc::new(Int32Array::from_iter(
                            (first..first + chunk.len())
                                .map(|i| (i % 3 != 0).then_some(-(i as i32))),
                        )),
                    ],
                )
                .unwrap()
            })
            .collect();
        ViewInput {
            batches,
            packed: None,
            has_created: true,
            feature_count: 2,
            fields: vec![
                Field::new("f0", DataType::Float64, true),
                Field::new("f1", DataType::Int32, true),
            ],
            left_key: 0,
            ttl_ns,
        }
    }

    fn entities(rows: &[(i64, i64)], batch_rows: usize) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", ts_type(), true),
        ]));
        rows.chunks(batch_rows.max(1))
            .map(|chunk| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        int64s(chunk.iter().map(|r| r.0)),
                        micros(chunk.iter().map(|r| r.1)),
                    ],
                )
                .unwrap()
            })
            .collect()
    }

    /// The row number of each entity row's match by the definition: greatest (event time,
    /// created) among the key's rows with `ts - ttl <= event <= ts`.
    fn oracle(
        features: &[(i64, i64, i64)],
        rows: &[(i64, i64)],
        ttl_us: Option<i64>,
    ) -> Vec<Option<usize>> {
        rows.iter()
            .map(|&(key, ts)| {
                features
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| {
                        f.0 == key && f.1 <= ts && ttl_us.is_none_or(|ttl| f.1 >= ts - ttl)
                    })
                    .max_by_key(|(_, f)| (f.1, f.2))
                    .map(|(i, _)| i)
            })
            .collect()
    }

    /// Picking rows by position gives the entries a scan gives, for keys and times
    /// that need converting (32-bit keys, nanoseconds, nulls), across batch boundaries.
    #[test]
    fn rows_by_position_are_the_rows_a_scan_emits() {
        use arrow::array::TimestampNanosecondArray;
        let batch = |keys: Vec<Option<i32>>, times: Vec<Option<i64>>| {
            let schema = Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int32, true),
                Field::new("t", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            ]));
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int32Array::from(keys)) as ArrayRef,
                    Arc::new(TimestampNanosecondArray::from(times)),
                ],
            )
            .unwrap()
        };
        let batches = vec![
            batch(vec![Some(1), None, Some(3)], vec![Some(10), Some(20), None]),
            batch(vec![], vec![]),
            batch(vec![Some(4), Some(5)], vec![Some(40), Some(50)]),
        ];
        let side = LeftSide {
            left_key: 0,
            left_ts: 1,
            chunk: (0, 100, &batches),
        };
        let mut scanned = Vec::new();
        side.each(|position, key, e| scanned.push((position, key, e.ts, e.row)))
            .unwrap();
        assert_eq!(
            scanned,
            vec![(0, 1, 10, 100), (3, 4, 40, 103), (4, 5, 50, 104)]
        );
        // Every position, the ones without a key or time too: only the scanned rows come
        // back.
        let mut picked = Vec::new();
        side.at(&[0, 1, 2, 3, 4], |key, e| picked.push((key, e.ts, e.row)))
            .unwrap();
        let want: Vec<_> = scanned.iter().map(|&(_, k, t, r)| (k, t, r)).collect();
        assert_eq!(picked, want);
        let mut picked = Vec::new();
        side.at(&[4], |key, e| picked.push((key, e.ts, e.row)))
            .unwrap();
        assert_eq!(picked, vec![(5, 50, 104)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// One pass or many (a pass limit of one entry), one thread or two, any batch sizes:
        /// every entity row's gathered feature row is the oracle's.
        #[test]
        fn passes_and_batches_do_not_change_the_matches(
            features in prop::collection::vec((0i64..40, 0i64..50, 0i64..3), 0..300),
            rows in prop::collection::vec((0i64..45, 0i64..60), 1..200),
            feature_batch in 1usize..70,
            entity_batch in 1usize..70,
            ttl_us in prop::option::of(0i64..20),
        ) {
            // Distinct (key, event, created) rows, so the oracle's answer is unique.
            let mut features = features;
            features.sort_unstable();
            features.dedup();
            let features: Vec<_> = features.into_iter().rev().collect();
            let view = view(&features, feature_batch, ttl_us.map(|t| t * 1000));
            let left = entities(&rows, entity_batch);
            let addressing = Addressing::of(&view.batches);
            let want = oracle(&features, &rows, ttl_us);
            let types = [DataType::Float64, DataType::Int32];
            let columns = Columns::new(&view.batches, addressing, &[3, 4], &types);
            // The same features packed row by row, matched on the batches' other columns.
            let layout = RowLayout::of(&[3, 4], &types).unwrap();
            let blocks = view.batches.iter().map(|b| pack(b, &layout).unwrap()).collect();
            let packed = Columns::packed(blocks, &layout, addressing);
            let rest = ViewInput {
                batches: view.batches.iter().map(|b| layout.rest(b).unwrap()).collect(),
                ..view
            };
            prop_assert!(rest.batches.iter().all(|b| b.num_columns() == 3));
            for (threads, pass_limit, bucket_rows, block_shift, scan_limit) in [
                (1, usize::MAX, 4096, MATCH_BLOCK_SHIFT, SCAN_LIMIT),
                (1, usize::MAX, 4096, MATCH_BLOCK_SHIFT, 0),
                (2, usize::MAX, 4, 3, usize::MAX),
                (2, 1, 4, 0, 0),
                (1, 100, 2, 5, SCAN_LIMIT),
                (2, 1, 1, MATCH_BLOCK_SHIFT, 4),
            ] {
                let tuning = Tuning { pass_limit, bucket_rows, block_shift, scan_limit };
                let matches = match_view(&left, 1, &rest, addressing, threads, tuning).unwrap();
                // Whole, and in pieces that start and end inside blocks.
                let whole = matches.rows(0, rows.len());
                let pieces: Vec<u64> = (0..rows.len())
                    .step_by(7)
                    .flat_map(|start| {
                        matches.rows(start, 7.min(rows.len() - start)).into_owned()
                    })
                    .collect();
                prop_assert_eq!(&pieces[..], &whole[..]);
                for (source, columns) in [("columns", &columns), ("packed", &packed)] {
                    let got = columns.gather(&whole).unwrap();
                    let rows = got[0].as_primitive::<arrow::datatypes::Float64Type>();
                    let negated = got[1].as_primitive::<arrow::datatypes::Int32Type>();
                    for (i, want) in want.iter().enumerate() {
                        let got = rows.is_valid(i).then(|| rows.value(i) as usize);
                        prop_assert_eq!(
                            got,
                            *want,
                            "entity row {} from {} with {} threads, {:?}",
                            i,
                            source,
                            threads,
                            tuning
                        );
                        let want_negated = want.filter(|r| r % 3 != 0).map(|r| -(r as i32));
                        prop_assert_eq!(
                            negated.is_valid(i).then(|| negated.value(i)),
                            want_negated,
                            "entity row {} from {}",
                            i,
                            source
                        );
                    }
                }
            }
        }
    }
}
