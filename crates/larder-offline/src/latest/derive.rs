//! The derived key of a materialization read: a column computed from the join key columns of
//! each batch (the [`DerivedKey`](crate::DerivedKey)), appended last.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;

use crate::map::MapBatchesExec;
use crate::store::DerivedKey;

/// `input` with one more column, last: `derived.derive` of the columns `keys`, checked to
/// have one non-null value per row; rows whose key `derived.keep` rejects are dropped.
pub fn derive_key(
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<usize>,
    derived: DerivedKey,
) -> Result<MapBatchesExec> {
    let input_schema = input.schema();
    if let Some(&bad) = keys.iter().find(|&&k| k >= input_schema.fields().len()) {
        return Err(DataFusionError::Plan(format!(
            "derived key: key column {bad} is out of range"
        )));
    }
    if input_schema.field_with_name(&derived.name).is_ok() {
        return Err(DataFusionError::Plan(format!(
            "derived key: the input already has a column `{}`",
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
    let label = format!("DeriveKey: {} from columns {keys:?}", derived.name);
    let out_schema = schema.clone();
    Ok(MapBatchesExec::new(
        label,
        input,
        schema,
        Arc::new(move |batch: RecordBatch| {
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
            let arrow_error = |e| DataFusionError::ArrowError(Box::new(e), None);
            let keep = match &derived.keep {
                Some(keep) => Some(keep(&column).map_err(|message| {
                    DataFusionError::Execution(format!(
                        "cannot filter by the key column `{}`: {message}",
                        derived.name
                    ))
                })?),
                None => None,
            };
            let mut columns = batch.columns().to_vec();
            columns.push(column);
            let keyed = RecordBatch::try_new(out_schema.clone(), columns).map_err(arrow_error)?;
            match keep {
                Some(keep) if keep.len() != keyed.num_rows() => {
                    Err(DataFusionError::Internal(format!(
                        "the key filter of `{}` gave {} values for {} rows",
                        derived.name,
                        keep.len(),
                        keyed.num_rows()
                    )))
                }
                Some(keep) => filter_record_batch(&keyed, &keep).map_err(arrow_error),
                None => Ok(keyed),
            }
        }),
    ))
}
