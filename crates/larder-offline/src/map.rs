//! `MapBatchesExec`: one input, each batch turned into one output batch by a function, in
//! every partition; the operator shape behind row counting for progress
//! ([`crate::progress::count_rows`]) and the derived key of materialization reads
//! ([`crate::latest::derive_key`]).

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::rownum::only_child;

/// The per-batch function of a [`MapBatchesExec`].
pub type MapFn = dyn Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync;

/// Maps every batch of every partition with `map`. With the input's schema, the input's
/// properties (partitioning, orderings) hold; with another schema (columns appended
/// after the input's), the partitioning holds and no ordering is claimed.
pub struct MapBatchesExec {
    label: String,
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    map: Arc<MapFn>,
}

impl MapBatchesExec {
    /// `label` names the operator in plans; `schema` is the schema of `map`'s batches.
    pub fn new(
        label: impl Into<String>,
        input: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
        map: Arc<MapFn>,
    ) -> Self {
        let properties = if schema == input.schema() {
            input.properties().clone()
        } else {
            Arc::new(PlanProperties::new(
                EquivalenceProperties::new(schema.clone()),
                input.output_partitioning().clone(),
                input.pipeline_behavior(),
                input.boundedness(),
            ))
        };
        MapBatchesExec {
            label: label.into(),
            input,
            schema,
            properties,
            map,
        }
    }
}

impl fmt::Debug for MapBatchesExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapBatchesExec")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl DisplayAs for MapBatchesExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.label)
    }
}

impl ExecutionPlan for MapBatchesExec {
    fn name(&self) -> &str {
        "MapBatchesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
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
        let child = only_child(children, "MapBatchesExec")?;
        Ok(Arc::new(MapBatchesExec::new(
            self.label.clone(),
            child,
            self.schema.clone(),
            self.map.clone(),
        )))
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
        let input = self.input.execute(partition, context)?;
        let map = self.map.clone();
        let mapped = input.map(move |batch| map(batch?));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            mapped,
        )))
    }
}
