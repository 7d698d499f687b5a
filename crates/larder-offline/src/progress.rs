//! Row counting for progress: batches pass through unchanged and their row counts are added
//! to a shared counter, so a long read can report progress while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::physical_plan::ExecutionPlan;

use crate::map::MapBatchesExec;

/// `input`, counting every row of every partition into `counter`.
pub fn count_rows(input: Arc<dyn ExecutionPlan>, counter: Arc<AtomicU64>) -> MapBatchesExec {
    let schema = input.schema();
    MapBatchesExec::new(
        "CountRows",
        input,
        schema,
        Arc::new(move |batch| {
            counter.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            Ok(batch)
        }),
    )
}
