//! `AsOfJoinExec`: the point-in-time join as a DataFusion operator.
//!
//! Left = entity rows, right = feature rows of one view. Both inputs must be hash-partitioned
//! on the join keys with the same partition count and sorted within each partition by
//! (keys, timestamp) — the right side by (keys, timestamp, created) so that among rows with
//! equal event times the one created last comes last. [`plan_asof_join`] builds exactly
//! that (a `RepartitionExec` and a spilling `SortExec` per side) around the operator, which
//! then streams: memory use is one right batch plus the batches holding matches of the
//! current left batch, whatever the input sizes.

mod merge;

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, Partitioning, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use merge::{AsOfMerger, Step};
pub use merge::{AsOfSpec, timestamps_ns};

/// The point-in-time join of one view; see the module documentation.
#[derive(Debug)]
pub struct AsOfJoinExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    spec: AsOfSpec,
    /// Names of the right columns in the output.
    output_names: Vec<String>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

fn column(schema: &Schema, index: usize) -> Arc<dyn PhysicalExpr> {
    Arc::new(Column::new(schema.field(index).name(), index))
}

impl AsOfJoinExec {
    /// Joins already partitioned and sorted inputs (see [`plan_asof_join`] for the wrapper
    /// that makes them so).
    pub fn try_new(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        spec: AsOfSpec,
        output_names: Vec<String>,
    ) -> Result<Self> {
        let left_schema = left.schema();
        let right_schema = right.schema();
        if spec.left_keys.len() != spec.right_keys.len() || spec.left_keys.is_empty() {
            return Err(DataFusionError::Plan(
                "as-of join needs the same, non-zero number of keys on both sides".into(),
            ));
        }
        for (l, r) in spec.left_keys.iter().zip(&spec.right_keys) {
            let (lt, rt) = (
                left_schema.field(*l).data_type(),
                right_schema.field(*r).data_type(),
            );
            if lt != rt {
                return Err(DataFusionError::Plan(format!(
                    "as-of join keys `{}` ({lt}) and `{}` ({rt}) have different types",
                    left_schema.field(*l).name(),
                    right_schema.field(*r).name()
                )));
            }
        }
        if output_names.len() != spec.right_outputs.len() {
            return Err(DataFusionError::Plan(
                "as-of join needs one output name per right output column".into(),
            ));
        }
        let mut fields: Vec<Arc<Field>> = left_schema.fields().iter().cloned().collect();
        for (index, name) in spec.right_outputs.iter().zip(&output_names) {
            let dt = right_schema.field(*index).data_type().clone();
            fields.push(Arc::new(Field::new(name, dt, true)));
        }
        let schema = Arc::new(Schema::new(fields));
        let partitions = left.output_partitioning().partition_count();
        let key_exprs = spec.left_keys.iter().map(|&i| column(&schema, i)).collect();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::Hash(key_exprs, partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(AsOfJoinExec {
            left,
            right,
            spec,
            output_names,
            schema,
            properties: Arc::new(properties),
        })
    }

    fn ordering(
        schema: &Schema,
        keys: &[usize],
        ts: usize,
        created: Option<usize>,
    ) -> Result<LexOrdering> {
        let exprs = keys
            .iter()
            .chain(std::iter::once(&ts))
            .chain(created.iter())
            .map(|&i| {
                PhysicalSortExpr::new_default(column(schema, i))
                    .asc()
                    .nulls_first()
            });
        LexOrdering::new(exprs)
            .ok_or_else(|| DataFusionError::Internal("as-of sort without keys".into()))
    }
}

impl DisplayAs for AsOfJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "AsOfJoinExec: keys={:?}, ttl_ns={:?}, outputs={:?}",
            self.spec.left_keys, self.spec.ttl_ns, self.output_names
        )
    }
}

impl ExecutionPlan for AsOfJoinExec {
    fn name(&self) -> &str {
        "AsOfJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        let l = self.left.schema();
        let r = self.right.schema();
        vec![
            Distribution::KeyPartitioned(
                self.spec.left_keys.iter().map(|&i| column(&l, i)).collect(),
            ),
            Distribution::KeyPartitioned(
                self.spec
                    .right_keys
                    .iter()
                    .map(|&i| column(&r, i))
                    .collect(),
            ),
        ]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
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
        let [left, right]: [Arc<dyn ExecutionPlan>; 2] = children
            .try_into()
            .map_err(|_| DataFusionError::Internal("AsOfJoinExec has two children".into()))?;
        Ok(Arc::new(AsOfJoinExec::try_new(
            left,
            right,
            self.spec.clone(),
            self.output_names.clone(),
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
        let mut left = self.left.execute(partition, context.clone())?;
        let mut right = self.right.execute(partition, context)?;
        let right_schema = self.right.schema();
        let key_types: Vec<DataType> = self
            .spec
            .right_keys
            .iter()
            .map(|&i| right_schema.field(i).data_type().clone())
            .collect();
        let output_types = self
            .spec
            .right_outputs
            .iter()
            .map(|&i| right_schema.field(i).data_type().clone())
            .collect();
        let mut merger = AsOfMerger::new(
            self.spec.clone(),
            key_types,
            output_types,
            self.schema.clone(),
        )?;
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        builder.spawn(async move {
            while let Some(batch) = left.next().await {
                let mut progress = merger.start_left(batch?)?;
                let output = loop {
                    match merger.advance(&mut progress)? {
                        Step::Output(output) => break output,
                        Step::NeedRight => {
                            let next = right.next().await.transpose()?;
                            merger.push_right(next)?;
                        }
                    }
                };
                if output.num_rows() > 0 && tx.send(Ok(output)).await.is_err() {
                    // The consumer went away; stop quietly.
                    return Ok(());
                }
            }
            Ok(())
        });
        Ok(builder.build())
    }
}

/// One side of an as-of join before partitioning and sorting.
pub struct AsOfInput {
    pub plan: Arc<dyn ExecutionPlan>,
    pub keys: Vec<usize>,
    pub ts: usize,
    /// Right side only: the created timestamp that breaks event-time ties.
    pub created: Option<usize>,
}

/// Wraps both inputs in a hash repartition on the keys (`partitions` ways) and a spilling
/// sort by (keys, ts[, created]), then joins them with [`AsOfJoinExec`].
pub fn plan_asof_join(
    left: AsOfInput,
    right: AsOfInput,
    right_outputs: Vec<usize>,
    output_names: Vec<String>,
    ttl_ns: Option<i64>,
    partitions: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let prepare = |input: &AsOfInput| -> Result<Arc<dyn ExecutionPlan>> {
        let schema = input.plan.schema();
        let hash = input.keys.iter().map(|&i| column(&schema, i)).collect();
        let repartitioned: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
            input.plan.clone(),
            Partitioning::Hash(hash, partitions),
        )?);
        let ordering = AsOfJoinExec::ordering(&schema, &input.keys, input.ts, input.created)?;
        Ok(Arc::new(
            SortExec::new(ordering, repartitioned).with_preserve_partitioning(true),
        ))
    };
    let spec = AsOfSpec {
        left_keys: left.keys.clone(),
        left_ts: left.ts,
        right_keys: right.keys.clone(),
        right_ts: right.ts,
        right_outputs,
        ttl_ns,
    };
    Ok(Arc::new(AsOfJoinExec::try_new(
        prepare(&left)?,
        prepare(&right)?,
        spec,
        output_names,
    )?))
}
