//! `LastPerKeyExec`: keeps the last row of every run of equal keys in a sorted input — the
//! deduplication step of materialization reads ("the latest row per entity key").
//!
//! Each input partition must hold all rows of its keys (hash-partitioned on them) and be
//! sorted by the keys, then ascending by whatever decides which row wins (event time, then
//! created time), so that the winner of each key is the last row of its run.
//! [`plan_last_per_key`] builds exactly that: a hash `RepartitionExec` and a spilling
//! `SortExec` per partition below the operator, with a [`PartialLatestExec`] in front that
//! drops, within a bounded memory share, the rows that already lost, so the sort sees few
//! rows per key.
//!
//! The operator streams. For each input batch it marks the rows whose key differs from the
//! next row's with arrow's `distinct` kernel, one vectorized comparison per key column, and
//! copies the marked rows into a [`BatchCoalescer`]. The batch's last row is held back (as a
//! one-row slice) until the next batch shows whether its run goes on. Memory is one input
//! batch plus one output batch of at most the session batch size, whatever the input size.
//! A null key is a key of its own (nulls compare equal); materialization reads drop such rows
//! before.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, BooleanBufferBuilder, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::cmp::distinct;
use arrow::compute::{BatchCoalescer, SortOptions};
use arrow::datatypes::Schema;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, Partitioning, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::rownum::only_child;
use crate::store::DerivedKey;

mod derive;
mod partial;

pub use derive::derive_key;
pub use partial::PartialLatestExec;

/// The last row of each key run of a sorted input; see the module documentation.
#[derive(Debug)]
pub struct LastPerKeyExec {
    input: Arc<dyn ExecutionPlan>,
    /// Key columns; none: the whole (single-partition) input is one run.
    keys: Vec<usize>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

fn column(schema: &Schema, index: usize) -> Arc<dyn PhysicalExpr> {
    Arc::new(Column::new(schema.field(index).name(), index))
}

impl LastPerKeyExec {
    /// Deduplicates an input already partitioned and sorted as the module documentation
    /// says (see [`plan_last_per_key`] for the wrapper that makes it so).
    pub fn try_new(input: Arc<dyn ExecutionPlan>, keys: Vec<usize>) -> Result<Self> {
        let schema = input.schema();
        if let Some(&bad) = keys.iter().find(|&&k| k >= schema.fields().len()) {
            return Err(DataFusionError::Plan(format!(
                "LastPerKeyExec: key column {bad} is out of range"
            )));
        }
        if keys.is_empty() && input.output_partitioning().partition_count() != 1 {
            return Err(DataFusionError::Internal(
                "LastPerKeyExec without keys needs a single input partition".into(),
            ));
        }
        // The output is a subset of each partition in input order: the partitioning and
        // orderings of the input still hold.
        let properties = PlanProperties::new(
            input.equivalence_properties().clone(),
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(LastPerKeyExec {
            input,
            keys,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for LastPerKeyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LastPerKeyExec: keys={:?}", self.keys)
    }
}

impl ExecutionPlan for LastPerKeyExec {
    fn name(&self) -> &str {
        "LastPerKeyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        if self.keys.is_empty() {
            return vec![Distribution::SinglePartition];
        }
        let schema = self.input.schema();
        vec![Distribution::KeyPartitioned(
            self.keys.iter().map(|&i| column(&schema, i)).collect(),
        )]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
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
        let child = only_child(children, "LastPerKeyExec")?;
        Ok(Arc::new(LastPerKeyExec::try_new(child, self.keys.clone())?))
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
        let batch_size = context.session_config().batch_size().max(1);
        let input = self.input.execute(partition, context)?;
        let state = LastPerKey {
            input,
            keys: self.keys.clone(),
            pending: None,
            coalescer: BatchCoalescer::new(schema.clone(), batch_size),
            finished: false,
            metrics: BaselineMetrics::new(&self.metrics, partition),
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            let next = state.next().await?;
            Some((next, state))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The state of one partition's stream.
struct LastPerKey {
    input: SendableRecordBatchStream,
    keys: Vec<usize>,
    /// The last row seen (a one-row slice): the last of its run unless the next batch
    /// starts with the same key.
    pending: Option<RecordBatch>,
    coalescer: BatchCoalescer,
    finished: bool,
    metrics: BaselineMetrics,
}

impl LastPerKey {
    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.coalescer.next_completed_batch() {
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
                None => self.finish(),
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
        if let Some(pending) = self.pending.take() {
            let ended = self
                .keys
                .iter()
                .map(|&k| key_changes(pending.column(k), &batch.column(k).slice(0, 1)))
                .try_fold(false, |any, changed| changed.map(|c| any || c.value(0)))?;
            if ended {
                self.coalescer.push_batch(pending)?;
            }
        }
        // Bit i: row i ends its run (its key differs from row i + 1's). The batch's last
        // row waits for the next batch.
        let mut last = BooleanBufferBuilder::new(n);
        let mut any = false;
        if n > 1 {
            let mut ends: Option<BooleanBuffer> = None;
            for &k in &self.keys {
                let keys = batch.column(k);
                let changes = key_changes(&keys.slice(0, n - 1), &keys.slice(1, n - 1))?;
                ends = Some(match ends {
                    None => changes,
                    Some(acc) => &acc | &changes,
                });
            }
            match ends {
                Some(ends) => {
                    any = ends.count_set_bits() > 0;
                    last.append_buffer(&ends);
                }
                None => last.append_n(n - 1, false),
            }
        }
        last.append(false);
        self.pending = Some(batch.slice(n - 1, 1));
        if any {
            let filter = BooleanArray::new(last.finish(), None);
            self.coalescer.push_batch_with_filter(batch, &filter)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.finished = true;
        if let Some(pending) = self.pending.take() {
            self.coalescer.push_batch(pending)?;
        }
        self.coalescer.finish_buffered_batch()?;
        Ok(())
    }
}

/// Whether `a[i]` and `b[i]` differ, for every `i` (null equals null).
fn key_changes(a: &ArrayRef, b: &ArrayRef) -> Result<BooleanBuffer> {
    if a.data_type().is_nested() {
        // `distinct` compares flat values only; nested keys go through the comparator.
        let compare =
            arrow::array::make_comparator(a.as_ref(), b.as_ref(), SortOptions::default())?;
        return Ok((0..a.len()).map(|i| compare(i, i).is_ne()).collect());
    }
    let changed = distinct(a, b)?;
    Ok(changed.values().clone())
}

/// Puts `input` in the shape [`LastPerKeyExec`] needs and deduplicates it: a
/// [`PartialLatestExec`] (when the `order` columns are timestamps, dates or integers), a
/// hash repartition on `keys` into `partitions` partitions, a spilling sort by (keys,
/// `order`) in each, then the operator. Within a key, the row greatest by the `order`
/// columns (ascending, nulls first: a null loses to any value) comes out. Without keys, the
/// single greatest row comes out, found by a top-1 sort instead of a full one.
pub fn plan_last_per_key(
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<usize>,
    order: &[usize],
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan_last_per_derived_key(input, keys, order, partitions, None)
}

/// As [`plan_last_per_key`], keyed by a [`DerivedKey`] of the `keys` when one is given: the
/// hash pre-deduplication still runs on the keys themselves (cheaper to hash; the derived
/// key is injective, so the groups are the same), then [`derive_key`] appends the derived
/// column (last) to the fewer rows left, and the repartition, sort and final deduplication
/// run on it, so each output partition comes sorted by it.
pub fn plan_last_per_derived_key(
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<usize>,
    order: &[usize],
    partitions: usize,
    derived: Option<DerivedKey>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = input.schema();
    let sort = |schema: &Schema, columns: &mut dyn Iterator<Item = usize>, descending: bool| {
        let exprs = columns.map(|i| {
            let expr = PhysicalSortExpr::new_default(column(schema, i));
            if descending {
                expr.desc().nulls_last()
            } else {
                expr.asc().nulls_first()
            }
        });
        LexOrdering::new(exprs)
            .ok_or_else(|| DataFusionError::Internal("deduplication without an order".into()))
    };
    if keys.is_empty() {
        let single: Arc<dyn ExecutionPlan> = if input.output_partitioning().partition_count() > 1 {
            Arc::new(CoalescePartitionsExec::new(input))
        } else {
            input
        };
        let ordering = sort(&schema, &mut order.iter().copied(), true)?;
        let top: Arc<dyn ExecutionPlan> =
            Arc::new(SortExec::new(ordering, single).with_fetch(Some(1)));
        let last: Arc<dyn ExecutionPlan> = Arc::new(LastPerKeyExec::try_new(top, keys)?);
        return match derived {
            Some(derived) => Ok(Arc::new(derive_key(last, vec![], derived)?)),
            None => Ok(last),
        };
    }
    let input: Arc<dyn ExecutionPlan> = if order
        .iter()
        .all(|&i| partial::ranks_as_integer(schema.field(i).data_type()))
    {
        Arc::new(PartialLatestExec::try_new(
            input,
            keys.clone(),
            order.to_vec(),
        )?)
    } else {
        input
    };
    let (input, keys) = match derived {
        Some(derived) => {
            let appended = derive_key(input, keys, derived)?;
            let index = appended.schema().fields().len() - 1;
            (Arc::new(appended) as Arc<dyn ExecutionPlan>, vec![index])
        }
        None => (input, keys),
    };
    let schema = input.schema();
    let hash = keys.iter().map(|&i| column(&schema, i)).collect();
    let repartitioned: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
        input,
        Partitioning::Hash(hash, partitions.max(1)),
    )?);
    let ordering = sort(&schema, &mut keys.iter().chain(order).copied(), false)?;
    let sorted: Arc<dyn ExecutionPlan> =
        Arc::new(SortExec::new(ordering, repartitioned).with_preserve_partitioning(true));
    Ok(Arc::new(LastPerKeyExec::try_new(sorted, keys)?))
}
