//! A view's fixed-width features laid out row by row, so that gathering the matched feature
//! row of each entity row costs one cache miss, not one per feature.
//!
//! Entity rows come in any order, so the matched feature rows are scattered all over the
//! view's data; gathering ten columns one at a time touches ten cache lines per entity row,
//! this touches one (or two when a row straddles a line).

use arrow::array::{Array, ArrayData, ArrayRef, RecordBatch, make_array};
use arrow::buffer::{Buffer, NullBuffer};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};

/// Marks an entity row without a match.
pub(crate) const NONE: u64 = u64::MAX;

/// Whether a feature of this type can live in a [`RowStore`].
pub(crate) fn fits(data_type: &DataType) -> bool {
    data_type.is_primitive() && data_type.primitive_width().is_some()
}

struct Slot {
    offset: usize,
    width: usize,
    data_type: DataType,
}

/// Fixed-width feature values, one record of `stride` bytes per feature row.
pub(crate) struct RowStore {
    data: Vec<u8>,
    stride: usize,
    slots: Vec<Slot>,
    /// Where a record's validity bits start, when some value is null.
    validity: Option<usize>,
    rows: usize,
}

impl RowStore {
    /// Lays out `columns` (indices into every batch, holding values of `types`) of `batches`
    /// row by row. The types come from the caller, since there may be no batch to look at.
    pub(crate) fn build(
        batches: &[RecordBatch],
        columns: &[usize],
        types: &[DataType],
    ) -> Result<Self> {
        let mut slots = Vec::with_capacity(columns.len());
        let mut offset = 0usize;
        for data_type in types {
            let width = data_type.primitive_width().ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "row store needs fixed-width values, not {data_type}"
                ))
            })?;
            slots.push(Slot {
                offset,
                width,
                data_type: data_type.clone(),
            });
            offset += width;
        }
        let any_null = batches
            .iter()
            .any(|b| columns.iter().any(|&c| b.column(c).null_count() > 0));
        let validity = any_null.then_some(offset);
        let stride = offset
            + if any_null {
                columns.len().div_ceil(8)
            } else {
                0
            };
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut data = vec![0u8; rows * stride];
        // Fill on every core: each thread takes whole batches, whose records are disjoint.
        let mut pieces: Vec<(&RecordBatch, &mut [u8])> = Vec::with_capacity(batches.len());
        let mut rest = data.as_mut_slice();
        for batch in batches {
            let (piece, tail) = rest.split_at_mut(batch.num_rows() * stride);
            pieces.push((batch, piece));
            rest = tail;
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, pieces.len().max(1));
        let per_thread = pieces.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let mut groups = Vec::new();
            while !pieces.is_empty() {
                let take = per_thread.min(pieces.len());
                groups.push(pieces.drain(..take).collect::<Vec<_>>());
            }
            for group in groups {
                let slots = &slots;
                scope.spawn(move || {
                    for (batch, piece) in group {
                        fill(batch, columns, slots, stride, validity, piece);
                    }
                });
            }
        });
        Ok(Self {
            data,
            stride,
            slots,
            validity,
            rows,
        })
    }

    /// One array per feature: the values of record `matches[i]` at row `i` (null for
    /// [`NONE`]).
    pub(crate) fn gather(&self, matches: &[u64]) -> Result<Vec<ArrayRef>> {
        let len = matches.len();
        let mut values: Vec<Vec<u8>> = self
            .slots
            .iter()
            .map(|s| vec![0u8; len * s.width])
            .collect();
        let mut matched = arrow::array::BooleanBufferBuilder::new(len);
        // Per-feature validity, only when some stored value is null.
        let mut valid: Vec<arrow::array::BooleanBufferBuilder> = match self.validity {
            Some(_) => self
                .slots
                .iter()
                .map(|_| arrow::array::BooleanBufferBuilder::new(len))
                .collect(),
            None => Vec::new(),
        };
        for (i, &m) in matches.iter().enumerate() {
            // The records are scattered, each read a cache miss. Touching a block's records
            // in a tight loop first has their misses overlap (loads in flight at once)
            // instead of each stalling its row's copies.
            if i % TOUCH_BLOCK == 0 {
                let mut touched = 0u8;
                for &ahead in &matches[i..(i + TOUCH_BLOCK).min(len)] {
                    if let Some(&byte) = self.data.get((ahead as usize).wrapping_mul(self.stride)) {
                        touched ^= byte;
                    }
                }
                std::hint::black_box(touched);
            }
            if m == NONE || m as usize >= self.rows {
                matched.append(false);
                for v in &mut valid {
                    v.append(false);
                }
                continue;
            }
            matched.append(true);
            let start = m as usize * self.stride;
            let record = &self.data[start..start + self.stride];
            for (slot, out) in self.slots.iter().zip(values.iter_mut()) {
                copy_value(record, slot, out, i);
            }
            if let Some(at) = self.validity {
                for (f, v) in valid.iter_mut().enumerate() {
                    v.append(record[at + f / 8] & (1 << (f % 8)) != 0);
                }
            }
        }
        let shared = NullBuffer::new(matched.finish());
        let mut out = Vec::with_capacity(self.slots.len());
        for (f, (slot, bytes)) in self.slots.iter().zip(values).enumerate() {
            let nulls = match valid.get_mut(f) {
                Some(v) => NullBuffer::new(v.finish()),
                None => shared.clone(),
            };
            let data = ArrayData::builder(slot.data_type.clone())
                .len(len)
                .add_buffer(Buffer::from_vec(bytes))
                .nulls((nulls.null_count() > 0).then_some(nulls))
                .build()?;
            out.push(make_array(data));
        }
        Ok(out)
    }
}

/// Rows whose records [`RowStore::gather`] touches together before copying them.
const TOUCH_BLOCK: usize = 16;

#[inline(always)]
fn copy_value(record: &[u8], slot: &Slot, out: &mut [u8], row: usize) {
    let (from, to) = (slot.offset, row * slot.width);
    match slot.width {
        4 => out[to..to + 4].copy_from_slice(&record[from..from + 4]),
        8 => out[to..to + 8].copy_from_slice(&record[from..from + 8]),
        w => out[to..to + w].copy_from_slice(&record[from..from + w]),
    }
}

/// Writes `batch`'s values of `columns` into its records in `piece`.
fn fill(
    batch: &RecordBatch,
    columns: &[usize],
    slots: &[Slot],
    stride: usize,
    validity: Option<usize>,
    piece: &mut [u8],
) {
    for (f, (&c, slot)) in columns.iter().zip(slots).enumerate() {
        let array: &ArrayRef = batch.column(c);
        let data = array.to_data();
        let width = slot.width;
        let bytes = &data.buffers()[0].as_slice()[data.offset() * width..];
        // A copy of a constant width is a move; of a variable width, a call to memcpy.
        match width {
            4 => fill_slot(bytes, piece, stride, slot.offset, 4),
            8 => fill_slot(bytes, piece, stride, slot.offset, 8),
            w => fill_slot(bytes, piece, stride, slot.offset, w),
        }
        if let Some(at) = validity {
            let bit = 1u8 << (f % 8);
            match array.nulls() {
                Some(nulls) => {
                    for (row, record) in piece.chunks_exact_mut(stride).enumerate() {
                        if nulls.is_valid(row) {
                            record[at + f / 8] |= bit;
                        }
                    }
                }
                None => {
                    for record in piece.chunks_exact_mut(stride) {
                        record[at + f / 8] |= bit;
                    }
                }
            }
        }
    }
}

/// Copies one feature's values, `width` bytes each, into their slot at `offset` of every
/// record. Inlined, so each call with a constant width copies with moves.
#[inline(always)]
fn fill_slot(bytes: &[u8], piece: &mut [u8], stride: usize, offset: usize, width: usize) {
    for (record, value) in piece
        .chunks_exact_mut(stride)
        .zip(bytes.chunks_exact(width))
    {
        record[offset..offset + width].copy_from_slice(value);
    }
}

/// The values of one feature when the row store does not apply, as one array.
pub(crate) fn concat_column(
    batches: &[RecordBatch],
    column: usize,
    data_type: &DataType,
) -> Result<ArrayRef> {
    let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(column).as_ref()).collect();
    Ok(match parts.as_slice() {
        [] => arrow::array::new_null_array(data_type, 0),
        _ => arrow::compute::concat(&parts)?,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use arrow::array::{Float32Array, Int64Array, TimestampMicrosecondArray, UInt64Array};
    use arrow::compute::take;
    use arrow::datatypes::{Field, Schema};

    fn batch(ids: Vec<Option<i64>>, f: Vec<Option<f32>>, t: Vec<Option<i64>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("f", DataType::Float32, true),
            Field::new(
                "t",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Float32Array::from(f)),
                Arc::new(TimestampMicrosecondArray::from(t).with_timezone("UTC")),
            ],
        )
        .unwrap()
    }

    /// What `take` over the concatenated columns gives: the reference the store must equal.
    fn expected(batches: &[RecordBatch], columns: &[usize], matches: &[u64]) -> Vec<ArrayRef> {
        let positions: UInt64Array = matches.iter().map(|&m| (m != NONE).then_some(m)).collect();
        columns
            .iter()
            .map(|&c| {
                let all =
                    concat_column(batches, c, batches[0].schema().field(c).data_type()).unwrap();
                take(all.as_ref(), &positions, None).unwrap()
            })
            .collect()
    }

    #[test]
    fn gathers_what_take_gathers() {
        let with_nulls = vec![
            batch(
                vec![Some(1), None, Some(3)],
                vec![Some(0.5), Some(1.5), None],
                vec![Some(10), Some(-20), Some(30)],
            ),
            // A slice, so values and validity start at an offset.
            batch(
                vec![Some(9), Some(4), Some(5), None],
                vec![Some(9.0), None, Some(2.5), Some(-1.0)],
                vec![None, Some(40), Some(50), Some(60)],
            )
            .slice(1, 3),
        ];
        let without_nulls = vec![
            batch(
                vec![Some(7), Some(8)],
                vec![Some(1.0), Some(2.0)],
                vec![Some(1), Some(2)],
            ),
            batch(vec![Some(9)], vec![Some(3.0)], vec![Some(3)]),
        ];
        for (batches, matches) in [
            (with_nulls, vec![5, NONE, 0, 2, 2, 1, 4, 3, NONE]),
            (without_nulls, vec![2, 0, NONE, 1, 1]),
        ] {
            let columns = [0, 1, 2];
            let schema = batches[0].schema();
            let types: Vec<DataType> = schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            let store = RowStore::build(&batches, &columns, &types).unwrap();
            let got = store.gather(&matches).unwrap();
            let want = expected(&batches, &columns, &matches);
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.to_data(), w.to_data(), "matches {matches:?}");
            }
            // Every entity row unmatched: all nulls, right length.
            let none = store.gather(&[NONE, NONE]).unwrap();
            assert!(none.iter().all(|a| a.len() == 2 && a.null_count() == 2));
        }
    }

    #[test]
    fn a_view_without_rows_gathers_nulls() {
        let store = RowStore::build(&[], &[3, 4], &[DataType::Float32, DataType::Int64]).unwrap();
        let got = store.gather(&[NONE, NONE, NONE]).unwrap();
        assert_eq!(got[0].data_type(), &DataType::Float32);
        assert_eq!(got[1].data_type(), &DataType::Int64);
        assert!(got.iter().all(|a| a.len() == 3 && a.null_count() == 3));
    }

    #[test]
    fn strings_and_booleans_do_not_fit() {
        assert!(fits(&DataType::Float64));
        assert!(fits(&DataType::Int32));
        assert!(!fits(&DataType::Utf8));
        assert!(!fits(&DataType::Boolean));
        assert!(!fits(&DataType::List(Arc::new(Field::new(
            "item",
            DataType::Int64,
            true
        )))));
    }
}
