//! `PartialLatestExec`: a hash pre-deduplication in front of the sort of
//! [`super::LastPerKeyExec`], as DataFusion's partial aggregation is in front of its final one.
//!
//! Per input partition, a hash table keeps for each key the greatest row seen so far (by the
//! order columns, ascending, nulls first), as a reference into the input batches that still
//! hold a winner. Batches without winners are dropped as soon as they have none. Memory is
//! reserved from the pool, at most half of it over all partitions; when the reservation
//! cannot grow, the winners are gathered into compact batches, and when even those do not
//! fit, they are sent downstream and the table starts over. Downstream, the sort and
//! [`super::LastPerKeyExec`] pick the winner among the partial winners, so flushing early
//! costs only speed, never correctness. When keys repeat (a feature log holds many rows per
//! key), the sort so sees about one row per key and input partition instead of every row.
//!
//! A single integer key is hashed as such; other keys go through the row format.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{cast, interleave};
use arrow::datatypes::{DataType, Int64Type};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, HashMap, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::rownum::only_child;

/// Keeps the greatest row per key of each input partition within its memory share; see the
/// module documentation.
#[derive(Debug)]
pub struct PartialLatestExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<usize>,
    /// Columns ranking the rows of a key (timestamps, dates or integers), most significant
    /// first; the greatest wins.
    order: Vec<usize>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl PartialLatestExec {
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<usize>,
        order: Vec<usize>,
    ) -> Result<Self> {
        let schema = input.schema();
        if keys.is_empty() || order.is_empty() {
            return Err(DataFusionError::Plan(
                "PartialLatestExec needs keys and an order".into(),
            ));
        }
        for &i in keys.iter().chain(&order) {
            if i >= schema.fields().len() {
                return Err(DataFusionError::Plan(format!(
                    "PartialLatestExec: column {i} is out of range"
                )));
            }
        }
        for &i in &order {
            let dt = schema.field(i).data_type();
            if !ranks_as_integer(dt) {
                return Err(DataFusionError::Plan(format!(
                    "PartialLatestExec cannot rank rows by `{}` ({dt})",
                    schema.field(i).name()
                )));
            }
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Both,
            Boundedness::Bounded,
        );
        Ok(PartialLatestExec {
            input,
            keys,
            order,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

/// Whether values of `dt` order as their integer representation.
pub(crate) fn ranks_as_integer(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    ) || dt.is_integer()
}

impl DisplayAs for PartialLatestExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "PartialLatestExec: keys={:?}, order={:?}",
            self.keys, self.order
        )
    }
}

impl ExecutionPlan for PartialLatestExec {
    fn name(&self) -> &str {
        "PartialLatestExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let child = only_child(children, "PartialLatestExec")?;
        Ok(Arc::new(PartialLatestExec::try_new(
            child,
            self.keys.clone(),
            self.order.clone(),
        )?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.input.schema();
        let index = match self.keys.as_slice() {
            [key] if integer_key(schema.field(*key).data_type()) => Index::Integer {
                slots: HashMap::default(),
                null: None,
            },
            _ => {
                let fields = self
                    .keys
                    .iter()
                    .map(|&i| SortField::new(schema.field(i).data_type().clone()))
                    .collect();
                let converter = RowConverter::new(fields)?;
                Index::Rows {
                    keys: converter.empty_rows(0, 0),
                    converter,
                    heads: HashMap::default(),
                    next: Vec::new(),
                }
            }
        };
        // Not registered as spillable: a fair-spill pool would hold it to an equal share with
        // the sorts downstream, which hold nothing until it flushes. It gives memory back by
        // itself, and takes at most half the pool over all partitions, leaving the rest to
        // the sorts.
        let pool = &context.runtime_env().memory_pool;
        let reservation =
            MemoryConsumer::new(format!("PartialLatestExec[{partition}]")).register(pool);
        let cap = match pool.memory_limit() {
            MemoryLimit::Finite(limit) => {
                limit / (2 * self.input.output_partitioning().partition_count().max(1))
            }
            MemoryLimit::Infinite | MemoryLimit::Unknown => usize::MAX,
        };
        let batch_size = context.session_config().batch_size().max(1);
        let input = self.input.execute(partition, context)?;
        let table = Table {
            index,
            ranks: Vec::new(),
            at: Vec::new(),
        };
        let state = PartialLatest {
            input,
            key_columns: self.keys.clone(),
            order: self.order.clone(),
            table,
            retained: Vec::new(),
            retained_bytes: 0,
            retained_rows: 0,
            output: VecDeque::new(),
            slots: Vec::new(),
            finished: false,
            batch_size,
            reservation,
            cap,
            metrics: BaselineMetrics::new(&self.metrics, partition),
            flushes: MetricBuilder::new(&self.metrics).counter("flushes", partition),
            compactions: MetricBuilder::new(&self.metrics).counter("compactions", partition),
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            let next = state.next().await?;
            Some((next, state))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// End of a collision chain; in `Table::at`, a slot not won yet.
const NONE: u32 = u32::MAX;

/// Whether a single key column of type `dt` can be held as `i64` without collisions.
fn integer_key(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

/// Key → slot.
enum Index {
    /// One integer key column: its values straight in the map.
    Integer {
        slots: HashMap<i64, u32>,
        null: Option<u32>,
    },
    /// Any keys: in the row format, hashed, with collision chains.
    Rows {
        converter: RowConverter,
        /// Key of each slot.
        keys: Rows,
        /// Hash of a key → first slot of its chain.
        heads: HashMap<u64, u32>,
        /// Next slot with the same hash.
        next: Vec<u32>,
    },
}

impl Index {
    /// The slot of each row's key, new keys getting the next free slots from `len` on;
    /// returns the slot count after.
    fn assign(&mut self, keys: &[ArrayRef], mut len: u32, slots: &mut Vec<u32>) -> Result<u32> {
        slots.clear();
        match self {
            Index::Integer { slots: map, null } => {
                let values = cast(&keys[0], &DataType::Int64)?;
                let values = values.as_primitive::<Int64Type>();
                for i in 0..values.len() {
                    let slot = if values.is_valid(i) {
                        *map.entry(values.value(i)).or_insert_with(|| {
                            len += 1;
                            len - 1
                        })
                    } else {
                        *null.get_or_insert_with(|| {
                            len += 1;
                            len - 1
                        })
                    };
                    slots.push(slot);
                }
            }
            Index::Rows {
                converter,
                keys: stored,
                heads,
                next,
            } => {
                let rows = converter.convert_columns(keys)?;
                let hasher = heads.hasher().clone();
                for row in rows.iter() {
                    let hash = std::hash::BuildHasher::hash_one(&hasher, row.as_ref());
                    let head = heads.get(&hash).copied().unwrap_or(NONE);
                    let mut slot = head;
                    while slot != NONE && stored.row(slot as usize) != row {
                        slot = next[slot as usize];
                    }
                    if slot == NONE {
                        slot = len;
                        len += 1;
                        stored.push(row);
                        next.push(head);
                        heads.insert(hash, slot);
                    }
                    slots.push(slot);
                }
            }
        }
        Ok(len)
    }

    fn clear(&mut self) {
        match self {
            Index::Integer { slots, null } => {
                slots.clear();
                *null = None;
            }
            Index::Rows {
                keys, heads, next, ..
            } => {
                keys.clear();
                heads.clear();
                next.clear();
            }
        }
    }

    /// Bytes held, roughly.
    fn size(&self) -> usize {
        match self {
            Index::Integer { slots, .. } => {
                slots.capacity() * (std::mem::size_of::<(i64, u32)>() + 1)
            }
            Index::Rows {
                keys, heads, next, ..
            } => {
                keys.size()
                    + heads.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
                    + next.capacity() * std::mem::size_of::<u32>()
            }
        }
    }
}

/// The winner of each key seen since the last flush.
struct Table {
    index: Index,
    /// Rank of each slot's winner: `order.len()` values per slot, `None` lowest.
    ranks: Vec<Option<i64>>,
    /// Where each slot's winner is: (retained batch, row); `NONE` before it has one.
    at: Vec<(u32, u32)>,
}

impl Table {
    fn len(&self) -> usize {
        self.at.len()
    }

    fn clear(&mut self) {
        self.index.clear();
        self.ranks.clear();
        self.at.clear();
    }

    /// Bytes held, roughly.
    fn size(&self) -> usize {
        self.index.size()
            + self.ranks.capacity() * std::mem::size_of::<Option<i64>>()
            + self.at.capacity() * std::mem::size_of::<(u32, u32)>()
    }
}

/// A retained input batch and how many slots point into it.
struct Retained {
    batch: Option<RecordBatch>,
    live: u32,
    bytes: usize,
}

/// The state of one partition's stream.
struct PartialLatest {
    input: SendableRecordBatchStream,
    key_columns: Vec<usize>,
    order: Vec<usize>,
    table: Table,
    retained: Vec<Retained>,
    retained_bytes: usize,
    /// Rows of the retained batches, winners or not.
    retained_rows: usize,
    /// Batches ready to go downstream.
    output: VecDeque<RecordBatch>,
    /// The slot of each row of the current batch (kept to reuse its allocation).
    slots: Vec<u32>,
    finished: bool,
    batch_size: usize,
    reservation: MemoryReservation,
    /// Most bytes this partition may reserve.
    cap: usize,
    metrics: BaselineMetrics,
    flushes: Count,
    compactions: Count,
}

impl PartialLatest {
    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.output.pop_front() {
                self.metrics.record_output(batch.num_rows());
                return Some(Ok(batch));
            }
            if self.finished {
                self.metrics.done();
                return None;
            }
            let step = match self.input.next().await {
                Some(Ok(batch)) => {
                    let elapsed = self.metrics.elapsed_compute().clone();
                    let _timer = elapsed.timer();
                    self.push(batch)
                }
                Some(Err(e)) => Err(e),
                None => {
                    self.finished = true;
                    self.flush()
                }
            };
            if let Err(e) = step {
                self.finished = true;
                return Some(Err(e));
            }
        }
    }

    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        if self.retained.len() >= NONE as usize - 1 || self.table.len() + n >= NONE as usize {
            self.flush()?;
        }
        let key_columns: Vec<ArrayRef> = self
            .key_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let ranks = self
            .order
            .iter()
            .map(|&i| cast(batch.column(i), &DataType::Int64))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let ranks: Vec<&arrow::array::Int64Array> = ranks
            .iter()
            .map(|r| r.as_primitive::<Int64Type>())
            .collect();
        let width = ranks.len();
        let current = self.retained.len() as u32;
        self.retained.push(Retained {
            batch: None,
            live: 0,
            bytes: 0,
        });
        let mut slots = std::mem::take(&mut self.slots);
        let before = self.table.len() as u32;
        let after = self.table.index.assign(&key_columns, before, &mut slots)?;
        self.table.at.resize(after as usize, (NONE, 0));
        self.table.ranks.resize(after as usize * width, None);
        let mut rank = vec![None; width];
        for (i, &slot) in slots.iter().enumerate() {
            for (r, column) in rank.iter_mut().zip(&ranks) {
                *r = column.is_valid(i).then(|| column.value(i));
            }
            let slot = slot as usize;
            let stored = &mut self.table.ranks[slot * width..(slot + 1) * width];
            let (old, _) = self.table.at[slot];
            if old != NONE && rank.as_slice() <= &*stored {
                continue;
            }
            stored.copy_from_slice(&rank);
            self.table.at[slot] = (current, i as u32);
            self.retained[current as usize].live += 1;
            if old == NONE {
                continue;
            }
            let old = &mut self.retained[old as usize];
            old.live -= 1;
            if old.live == 0
                && let Some(batch) = old.batch.take()
            {
                // Every row of that batch lost: let it go.
                self.retained_bytes -= old.bytes;
                self.retained_rows -= batch.num_rows();
            }
        }
        self.slots = slots;
        if self.retained[current as usize].live > 0 {
            let bytes = batch.get_array_memory_size();
            let entry = &mut self.retained[current as usize];
            entry.batch = Some(batch);
            entry.bytes = bytes;
            self.retained_bytes += bytes;
            self.retained_rows += n;
        }
        if self.reserve().is_err() {
            // Compacting pays when most retained rows have lost; otherwise flush at once.
            if self.table.len() * 2 <= self.retained_rows {
                self.compact()?;
            }
            if self.reserve().is_err() {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Reserves what the table and the retained batches hold; an error when over the cap
    /// or the pool is full.
    fn reserve(&mut self) -> Result<()> {
        let bytes = self.retained_bytes
            + self.retained.capacity() * std::mem::size_of::<Retained>()
            + self.table.size();
        if bytes > self.cap {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "PartialLatestExec: {bytes} bytes over its share of {}",
                self.cap
            )));
        }
        self.reservation.try_resize(bytes)
    }

    /// The winners, in slot order, in batches of the session batch size.
    fn gather(&self) -> Result<Vec<RecordBatch>> {
        let mut position = vec![0usize; self.retained.len()];
        let mut sources: Vec<&RecordBatch> = Vec::new();
        for (i, retained) in self.retained.iter().enumerate() {
            if let Some(batch) = &retained.batch {
                position[i] = sources.len();
                sources.push(batch);
            }
        }
        let Some(first) = sources.first() else {
            return Ok(Vec::new());
        };
        let schema = first.schema();
        let mut out = Vec::with_capacity(self.table.len().div_ceil(self.batch_size));
        for chunk in self.table.at.chunks(self.batch_size) {
            let indices: Vec<(usize, usize)> = chunk
                .iter()
                .map(|&(b, r)| (position[b as usize], r as usize))
                .collect();
            let columns = (0..schema.fields().len())
                .map(|c| {
                    let arrays: Vec<&dyn Array> =
                        sources.iter().map(|s| s.column(c).as_ref()).collect();
                    interleave(&arrays, &indices)
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            out.push(RecordBatch::try_new(schema.clone(), columns)?);
        }
        Ok(out)
    }

    /// Replaces the retained batches by compact copies of the winners.
    fn compact(&mut self) -> Result<()> {
        self.compactions.add(1);
        let compacted = self.gather()?;
        self.retained.clear();
        self.retained_bytes = 0;
        self.retained_rows = 0;
        let mut slot = 0usize;
        for (b, batch) in compacted.into_iter().enumerate() {
            let rows = batch.num_rows();
            for (r, at) in self.table.at[slot..slot + rows].iter_mut().enumerate() {
                *at = (b as u32, r as u32);
            }
            slot += rows;
            let bytes = batch.get_array_memory_size();
            self.retained_bytes += bytes;
            self.retained_rows += rows;
            self.retained.push(Retained {
                batch: Some(batch),
                live: rows as u32,
                bytes,
            });
        }
        Ok(())
    }

    /// Sends the winners downstream and starts over.
    fn flush(&mut self) -> Result<()> {
        let batches = self.gather()?;
        if !self.finished && !batches.is_empty() {
            self.flushes.add(1);
        }
        self.output.extend(batches);
        self.table.clear();
        self.retained.clear();
        self.retained_bytes = 0;
        self.retained_rows = 0;
        self.reservation.free();
        Ok(())
    }
}
