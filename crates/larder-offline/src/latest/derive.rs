//! `DeriveKeyExec`: appends a column computed from the join key columns of each batch (the
//! [`DerivedKey`](crate::DerivedKey) of a materialization read).

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
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
use crate::store::DerivedKey;

/// Passes every batch through with one more column, last: `derived.derive` of the columns
/// `keys`. Partitioning is kept (columns keep their indexes); orderings are not claimed.
#[derive(Debug)]
pub struct DeriveKeyExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<usize>,
    derived: DerivedKey,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DeriveKeyExec {
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<usize>,
        derived: DerivedKey,
    ) -> Result<Self> {
        let input_schema = input.schema();
        if let Some(&bad) = keys.iter().find(|&&k| k >= input_schema.fields().len()) {
            return Err(DataFusionError::Plan(format!(
                "DeriveKeyExec: key column {bad} is out of range"
            )));
        }
        if input_schema.field_with_name(&derived.name).is_ok() {
            return Err(DataFusionError::Plan(format!(
                "DeriveKeyExec: the input already has a column `{}`",
                derived.name
            )));
        }
        let mut fields: Vec<Arc<Field>> = input_schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(
            &derived.name,
            derived.data_type.clone(),
            false,
        )));
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Ok(DeriveKeyExec {
            input,
            keys,
            derived,
            schema,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for DeriveKeyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "DeriveKeyExec: {} from columns {:?}",
            self.derived.name, self.keys
        )
    }
}

impl ExecutionPlan for DeriveKeyExec {
    fn name(&self) -> &str {
        "DeriveKeyExec"
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
        let child = only_child(children, "DeriveKeyExec")?;
        Ok(Arc::new(DeriveKeyExec::try_new(
            child,
            self.keys.clone(),
            self.derived.clone(),
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
        let input = self.input.execute(partition, context)?;
        let (keys, derived, schema) =
            (self.keys.clone(), self.derived.clone(), self.schema.clone());
        let out_schema = schema.clone();
        let mapped = input.map(move |batch| {
            let batch = batch?;
            let key_columns: Vec<_> = keys.iter().map(|&k| batch.column(k).clone()).collect();
            let column = (derived.derive)(&key_columns).map_err(|message| {
                DataFusionError::Execution(format!(
                    "cannot compute the key column `{}`: {message}",
                    derived.name
                ))
            })?;
            if column.len() != batch.num_rows() || column.null_count() > 0 {
                return Err(DataFusionError::Internal(format!(
                    "the key column `{}` has {} values ({} null) for {} rows",
                    derived.name,
                    column.len(),
                    column.null_count(),
                    batch.num_rows()
                )));
            }
            let mut columns = batch.columns().to_vec();
            columns.push(column);
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, mapped)))
    }
}
