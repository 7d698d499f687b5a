//! `ReorderExec`: puts joined rows back in entity-row order by scattering on their row number.
//!
//! Row numbers are a dense `0..n`, so the order can be restored without sorting: remember where
//! each row landed, then gather rows by position. That is one pass instead of a sort of the
//! whole (wide) output, at the price of holding the output in memory, which the operator
//! reserves from the memory pool. The planner uses it when the output fits its memory budget
//! and falls back to a spilling sort otherwise.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::interleave;
use arrow::datatypes::{Schema, SchemaRef, UInt64Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::rownum::only_child;

#[derive(Debug)]
pub struct ReorderExec {
    input: Arc<dyn ExecutionPlan>,
    row_column: usize,
    rows: usize,
    batch_size: usize,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl ReorderExec {
    /// `input` carries row numbers `0..rows` (each exactly once) in column `row_column`.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        row_column: usize,
        rows: usize,
        batch_size: usize,
    ) -> Result<Self> {
        let input_schema = input.schema();
        let fields: Vec<_> = input_schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != row_column)
            .map(|(_, f)| f.clone())
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(ReorderExec {
            input,
            row_column,
            rows,
            batch_size: batch_size.max(1),
            schema,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for ReorderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ReorderExec: rows={}", self.rows)
    }
}

impl ExecutionPlan for ReorderExec {
    fn name(&self) -> &str {
        "ReorderExec"
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
        let child = only_child(children, "ReorderExec")?;
        Ok(Arc::new(ReorderExec::try_new(
            child,
            self.row_column,
            self.rows,
            self.batch_size,
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

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "ReorderExec has one partition, asked for {partition}"
            )));
        }
        let input: Arc<dyn ExecutionPlan> =
            if self.input.output_partitioning().partition_count() == 1 {
                self.input.clone()
            } else {
                Arc::new(CoalescePartitionsExec::new(self.input.clone()))
            };
        let mut stream = input.execute(0, context.clone())?;
        let reservation = MemoryConsumer::new("ReorderExec").register(context.memory_pool());
        let (row_column, rows, batch_size, schema) = (
            self.row_column,
            self.rows,
            self.batch_size,
            self.schema.clone(),
        );
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        builder.spawn(async move {
            const UNSET: u64 = u64::MAX;
            // Where each row landed: batch index in the high half, row in the low half.
            let mut positions: Vec<u64> = vec![UNSET; rows];
            reservation.try_grow(rows * std::mem::size_of::<u64>())?;
            let mut batches: Vec<Vec<ArrayRef>> = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                reservation.try_grow(batch.get_array_memory_size())?;
                let numbers = batch.column(row_column).as_primitive::<UInt64Type>();
                let b = batches.len() as u64;
                for (i, number) in numbers.values().iter().enumerate() {
                    let slot = positions.get_mut(*number as usize).ok_or_else(|| {
                        DataFusionError::Internal(format!("row number {number} outside 0..{rows}"))
                    })?;
                    *slot = (b << 32) | i as u64;
                }
                let mut columns = batch.columns().to_vec();
                columns.remove(row_column);
                batches.push(columns);
            }
            if positions.contains(&UNSET) {
                return Err(DataFusionError::Internal(
                    "a joined row went missing before reordering".into(),
                ));
            }
            let column_count = schema.fields().len();
            let mut indices: Vec<(usize, usize)> = Vec::with_capacity(batch_size);
            for chunk in positions.chunks(batch_size) {
                indices.clear();
                indices.extend(
                    chunk
                        .iter()
                        .map(|p| ((p >> 32) as usize, (p & 0xffff_ffff) as usize)),
                );
                let mut columns = Vec::with_capacity(column_count);
                for c in 0..column_count {
                    let arrays: Vec<&dyn Array> = batches.iter().map(|b| b[c].as_ref()).collect();
                    columns.push(interleave(&arrays, &indices)?);
                }
                let out = RecordBatch::try_new(schema.clone(), columns)?;
                if tx.send(Ok(out)).await.is_err() {
                    return Ok(());
                }
            }
            Ok(())
        });
        Ok(builder.build())
    }
}
