//! The as-of merge: for each left (entity) row, the last right (feature) row with the same key
//! and an event time at or before the entity's, within the ttl.
//!
//! Both inputs arrive sorted by (key, timestamp) — the right side also by created timestamp —
//! so one forward pass over both answers every row: the right cursor only moves forward, and
//! the last right row passed with a key equal to the left row's is its match. Only the
//! current right batch and the batches holding pending matches are kept in memory.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, new_null_array};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{DataFusionError, Result};

/// Column positions and parameters of one as-of join.
#[derive(Clone, Debug)]
pub struct AsOfSpec {
    pub left_keys: Vec<usize>,
    pub left_ts: usize,
    pub right_keys: Vec<usize>,
    pub right_ts: usize,
    /// Right columns copied to the output, after the left columns.
    pub right_outputs: Vec<usize>,
    /// Maximum age of a match in nanoseconds; `None` for unbounded.
    pub ttl_ns: Option<i64>,
}

/// A right batch with its keys in comparable row form and timestamps in nanoseconds.
pub struct RightBatch {
    columns: Vec<ArrayRef>,
    keys: Rows,
    ts: Vec<i64>,
}

impl RightBatch {
    fn len(&self) -> usize {
        self.ts.len()
    }
}

/// Nanoseconds since the epoch of a timestamp (any unit) or date column; nulls as `None`.
pub fn timestamps_ns(array: &dyn Array) -> Result<Vec<Option<i64>>> {
    use arrow::array::AsArray;
    use arrow::datatypes as t;
    let scaled = |values: Vec<Option<i64>>, factor: i64| -> Result<Vec<Option<i64>>> {
        values
            .into_iter()
            .map(|v| match v {
                None => Ok(None),
                Some(v) => v.checked_mul(factor).map(Some).ok_or_else(|| {
                    DataFusionError::Execution(format!(
                        "timestamp {v} is outside the range Larder joins on (years 1677 to 2262)"
                    ))
                }),
            })
            .collect()
    };
    match array.data_type() {
        DataType::Timestamp(unit, _) => {
            let (values, factor): (Vec<Option<i64>>, i64) = match unit {
                TimeUnit::Second => (
                    array
                        .as_primitive::<t::TimestampSecondType>()
                        .iter()
                        .collect(),
                    1_000_000_000,
                ),
                TimeUnit::Millisecond => (
                    array
                        .as_primitive::<t::TimestampMillisecondType>()
                        .iter()
                        .collect(),
                    1_000_000,
                ),
                TimeUnit::Microsecond => (
                    array
                        .as_primitive::<t::TimestampMicrosecondType>()
                        .iter()
                        .collect(),
                    1_000,
                ),
                TimeUnit::Nanosecond => (
                    array
                        .as_primitive::<t::TimestampNanosecondType>()
                        .iter()
                        .collect(),
                    1,
                ),
            };
            scaled(values, factor)
        }
        DataType::Date32 => scaled(
            array
                .as_primitive::<t::Date32Type>()
                .iter()
                .map(|v| v.map(i64::from))
                .collect(),
            86_400_000_000_000,
        ),
        DataType::Date64 => scaled(
            array.as_primitive::<t::Date64Type>().iter().collect(),
            1_000_000,
        ),
        other => Err(DataFusionError::Plan(format!(
            "expected a timestamp column, found {other}"
        ))),
    }
}

/// The incremental merge state of one partition.
pub struct AsOfMerger {
    spec: AsOfSpec,
    converter: RowConverter,
    output_schema: SchemaRef,
    /// Null arrays of length 1: the source of values for unmatched rows.
    nulls: Vec<ArrayRef>,
    current: Option<Arc<RightBatch>>,
    position: usize,
    /// The last right row passed: the match candidate for left rows with its key.
    candidate: Option<(Arc<RightBatch>, usize)>,
    right_done: bool,
}

/// What the merger needs to go on with the current left batch.
pub enum Step {
    /// Give the next right batch (or `None` when the right input is finished).
    NeedRight,
    /// The left batch is done: here is its output.
    Output(RecordBatch),
}

/// Where a left batch's merge stands; kept across `NeedRight` pauses.
pub struct LeftProgress {
    batch: RecordBatch,
    keys: Rows,
    ts: Vec<Option<i64>>,
    key_valid: Vec<bool>,
    next_row: usize,
    picks: Vec<Option<(Arc<RightBatch>, usize)>>,
}

impl AsOfMerger {
    pub fn new(
        spec: AsOfSpec,
        key_types: Vec<DataType>,
        right_output_types: Vec<DataType>,
        output_schema: SchemaRef,
    ) -> Result<Self> {
        let converter = RowConverter::new(key_types.into_iter().map(SortField::new).collect())?;
        let nulls = right_output_types
            .iter()
            .map(|dt| new_null_array(dt, 1))
            .collect();
        Ok(AsOfMerger {
            spec,
            converter,
            output_schema,
            nulls,
            current: None,
            position: 0,
            candidate: None,
            right_done: false,
        })
    }

    /// Prepares a left batch for merging.
    pub fn start_left(&self, batch: RecordBatch) -> Result<LeftProgress> {
        let key_columns: Vec<ArrayRef> = self
            .spec
            .left_keys
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let keys = self.converter.convert_columns(&key_columns)?;
        let n = batch.num_rows();
        let key_valid = (0..n)
            .map(|row| key_columns.iter().all(|c| c.is_valid(row)))
            .collect();
        let ts = timestamps_ns(batch.column(self.spec.left_ts).as_ref())?;
        Ok(LeftProgress {
            batch,
            keys,
            ts,
            key_valid,
            next_row: 0,
            picks: Vec::with_capacity(n),
        })
    }

    /// Feeds the next right batch (or the end of the right input).
    pub fn push_right(&mut self, batch: Option<RecordBatch>) -> Result<()> {
        let Some(batch) = batch else {
            self.right_done = true;
            return Ok(());
        };
        let key_columns: Vec<ArrayRef> = self
            .spec
            .right_keys
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let keys = self.converter.convert_columns(&key_columns)?;
        let ts = timestamps_ns(batch.column(self.spec.right_ts).as_ref())?
            .into_iter()
            // Rows without an event time never match; the plan filters them out before.
            .map(|v| v.unwrap_or(i64::MAX))
            .collect();
        let columns = self
            .spec
            .right_outputs
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        self.current = Some(Arc::new(RightBatch { columns, keys, ts }));
        self.position = 0;
        Ok(())
    }

    /// Advances the merge of `left` as far as the right rows at hand allow.
    pub fn advance(&mut self, left: &mut LeftProgress) -> Result<Step> {
        let n = left.batch.num_rows();
        while left.next_row < n {
            let row = left.next_row;
            let (Some(t), true) = (left.ts[row], left.key_valid[row]) else {
                left.picks.push(None);
                left.next_row += 1;
                continue;
            };
            let key = left.keys.row(row);
            // Move the right cursor past every row ordered at or before (key, t).
            loop {
                let Some(current) = &self.current else {
                    if self.right_done {
                        break;
                    }
                    return Ok(Step::NeedRight);
                };
                if self.position >= current.len() {
                    if self.right_done {
                        break;
                    }
                    self.current = None;
                    return Ok(Step::NeedRight);
                }
                let right_key = current.keys.row(self.position);
                let ordered_before = match right_key.cmp(&key) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Equal => current.ts[self.position] <= t,
                    std::cmp::Ordering::Greater => false,
                };
                if !ordered_before {
                    break;
                }
                self.candidate = Some((current.clone(), self.position));
                self.position += 1;
            }
            let pick = match &self.candidate {
                Some((batch, i)) if batch.keys.row(*i) == key => {
                    let fresh = match self.spec.ttl_ns {
                        Some(ttl) => batch.ts[*i] >= t.saturating_sub(ttl),
                        None => true,
                    };
                    fresh.then(|| (batch.clone(), *i))
                }
                _ => None,
            };
            left.picks.push(pick);
            left.next_row += 1;
        }
        Ok(Step::Output(self.finish_left(left)?))
    }

    fn finish_left(&self, left: &mut LeftProgress) -> Result<RecordBatch> {
        // Source 0 is the null row; then each distinct right batch referenced, in order.
        let mut sources: Vec<Arc<RightBatch>> = Vec::new();
        let mut indices: Vec<(usize, usize)> = Vec::with_capacity(left.picks.len());
        for pick in left.picks.drain(..) {
            match pick {
                None => indices.push((0, 0)),
                Some((batch, row)) => {
                    let position = match sources.iter().rposition(|s| Arc::ptr_eq(s, &batch)) {
                        Some(p) => p,
                        None => {
                            sources.push(batch);
                            sources.len() - 1
                        }
                    };
                    indices.push((position + 1, row));
                }
            }
        }
        let mut columns: Vec<ArrayRef> = left.batch.columns().to_vec();
        for (c, null) in self.nulls.iter().enumerate() {
            let mut arrays: Vec<&dyn Array> = Vec::with_capacity(sources.len() + 1);
            arrays.push(null.as_ref());
            arrays.extend(sources.iter().map(|s| s.columns[c].as_ref()));
            columns.push(interleave(&arrays, &indices)?);
        }
        RecordBatch::try_new(self.output_schema.clone(), columns)
            .map_err(|e: ArrowError| DataFusionError::ArrowError(Box::new(e), None))
    }
}
