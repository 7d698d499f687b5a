//! Gathering a view's matched feature rows straight from the batches the view was read
//! into, without first copying them into one array or a row-major store.
//!
//! A feature row's address is `(batch << shift) | row`. Copying the view's values once more
//! (400 MB for `bench/pit`'s 10M rows of 10 floats) used to cost more than it saved: on a
//! VM, memory a process touches for the first time is expensive (the kernel zeroes it, the
//! host backs it), and that copy was the largest block of fresh memory of the whole join.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayData, ArrayRef, BooleanBufferBuilder, RecordBatch, make_array, new_null_array,
};
use arrow::buffer::{Buffer, NullBuffer};
use arrow::compute::interleave;
use arrow::datatypes::DataType;
use datafusion::common::Result;

/// Marks an entity row without a match.
pub(crate) const NONE: u64 = u64::MAX;

/// How a feature row's address splits into its batch and its row within the batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Addressing {
    shift: u32,
}

impl Addressing {
    /// Room for the row numbers of the largest of `batches`.
    pub(crate) fn of(batches: &[RecordBatch]) -> Self {
        let largest = batches.iter().map(RecordBatch::num_rows).max().unwrap_or(0);
        Addressing {
            shift: (usize::BITS - largest.leading_zeros()).max(1),
        }
    }

    pub(crate) fn address(self, batch: usize, row: usize) -> u64 {
        ((batch as u64) << self.shift) | row as u64
    }

    fn split(self, address: u64) -> (usize, usize) {
        (
            (address >> self.shift) as usize,
            (address & ((1u64 << self.shift) - 1)) as usize,
        )
    }
}

/// Some columns of every batch of a view, ready to be gathered by address.
pub(crate) struct Columns {
    /// Per column: its array in every batch, then a one-row null array (where unmatched
    /// entity rows point).
    sources: Vec<Vec<ArrayRef>>,
    /// Per column of a fixed width: the value bytes of every batch, and whether any is null.
    fixed: Vec<Option<(Vec<Buffer>, bool)>>,
    batches: usize,
    addressing: Addressing,
}

impl Columns {
    /// `columns` of `batches` (indices into every batch, holding values of `types`; the
    /// types come from the caller, since there may be no batch to look at).
    pub(crate) fn new(
        batches: &[RecordBatch],
        addressing: Addressing,
        columns: &[usize],
        types: &[DataType],
    ) -> Self {
        let sources = columns
            .iter()
            .zip(types)
            .map(|(&c, data_type)| {
                let mut arrays: Vec<ArrayRef> =
                    batches.iter().map(|b| Arc::clone(b.column(c))).collect();
                arrays.push(new_null_array(data_type, 1));
                arrays
            })
            .collect::<Vec<Vec<ArrayRef>>>();
        let fixed = sources
            .iter()
            .zip(types)
            .map(|(arrays, data_type)| {
                let width = data_type.primitive_width()?;
                if !data_type.is_primitive() {
                    return None;
                }
                let arrays = &arrays[..batches.len()];
                let values = arrays
                    .iter()
                    .map(|a| {
                        let data = a.to_data();
                        data.buffers()[0]
                            .slice_with_length(data.offset() * width, data.len() * width)
                    })
                    .collect();
                Some((values, arrays.iter().any(|a| a.null_count() > 0)))
            })
            .collect();
        Columns {
            sources,
            fixed,
            batches: batches.len(),
            addressing,
        }
    }

    /// One array per column: the value at address `matches[i]` at row `i` (null for
    /// [`NONE`] and for an address past the view's rows).
    pub(crate) fn gather(&self, matches: &[u64]) -> Result<Vec<ArrayRef>> {
        let unmatched = (self.batches, 0);
        let indices: Vec<(usize, usize)> = matches
            .iter()
            .map(|&m| {
                if m == NONE {
                    return unmatched;
                }
                let (batch, row) = self.addressing.split(m);
                match self.sources.first().and_then(|s| s.get(batch)) {
                    Some(array) if batch < self.batches && row < array.len() => (batch, row),
                    _ => unmatched,
                }
            })
            .collect();
        let mut matched: Option<NullBuffer> = None;
        self.sources
            .iter()
            .zip(&self.fixed)
            .map(|(arrays, fixed)| {
                let data_type = arrays[self.batches].data_type();
                match (fixed, data_type.primitive_width()) {
                    (Some((values, any_null)), Some(width)) => {
                        let matched = matched.get_or_insert_with(|| {
                            let mut bits = BooleanBufferBuilder::new(indices.len());
                            for &(batch, _) in &indices {
                                bits.append(batch < self.batches);
                            }
                            NullBuffer::new(bits.finish())
                        });
                        let nulls = if *any_null {
                            let mut bits = BooleanBufferBuilder::new(indices.len());
                            for &(batch, row) in &indices {
                                bits.append(arrays.get(batch).is_some_and(|a| a.is_valid(row)));
                            }
                            NullBuffer::new(bits.finish())
                        } else {
                            matched.clone()
                        };
                        gather_fixed(values, width, data_type, &indices, nulls)
                    }
                    _ => {
                        let arrays: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
                        Ok(interleave(&arrays, &indices)?)
                    }
                }
            })
            .collect()
    }
}

/// The `width`-byte values of `values` (one buffer per batch) at `indices`; rows whose
/// batch is past the buffers are zero (and null in `nulls`).
fn gather_fixed(
    values: &[Buffer],
    width: usize,
    data_type: &DataType,
    indices: &[(usize, usize)],
    nulls: NullBuffer,
) -> Result<ArrayRef> {
    let mut out = vec![0u8; indices.len() * width];
    // A copy of a constant width is a move; of a variable width, a call to memcpy.
    match width {
        4 => copy_values::<4>(values, indices, &mut out),
        8 => copy_values::<8>(values, indices, &mut out),
        2 => copy_values::<2>(values, indices, &mut out),
        1 => copy_values::<1>(values, indices, &mut out),
        _ => {
            for (i, &(batch, row)) in indices.iter().enumerate() {
                if let Some(from) = values.get(batch) {
                    out[i * width..(i + 1) * width]
                        .copy_from_slice(&from.as_slice()[row * width..(row + 1) * width]);
                }
            }
        }
    }
    let data = ArrayData::builder(data_type.clone())
        .len(indices.len())
        .add_buffer(Buffer::from_vec(out))
        .nulls((nulls.null_count() > 0).then_some(nulls))
        .build()?;
    Ok(make_array(data))
}

/// Copies the `W`-byte value at each of `indices` into `out`; past the batches, zeros.
#[inline(always)]
fn copy_values<const W: usize>(values: &[Buffer], indices: &[(usize, usize)], out: &mut [u8]) {
    for (slot, &(batch, row)) in out.chunks_exact_mut(W).zip(indices) {
        if let Some(from) = values.get(batch)
            && let Some(value) = from.as_slice().get(row * W..row * W + W)
        {
            slot.copy_from_slice(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, Int64Array, StringArray, UInt64Array};
    use arrow::compute::{concat, take};
    use arrow::datatypes::{Field, Schema};

    fn batch(ids: Vec<Option<i64>>, f: Vec<Option<f32>>, s: Vec<Option<&str>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("f", DataType::Float32, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Float32Array::from(f)),
                Arc::new(StringArray::from(s)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn gathers_what_take_gathers_over_the_concatenated_batches() {
        let batches = vec![
            batch(
                vec![Some(1), None, Some(3)],
                vec![Some(0.5), Some(1.5), None],
                vec![Some("a"), None, Some("c")],
            ),
            // A slice, so values and validity start at an offset.
            batch(
                vec![Some(9), Some(4), Some(5), None],
                vec![Some(9.0), None, Some(2.5), Some(-1.0)],
                vec![Some("x"), Some("d"), Some("e"), Some("f")],
            )
            .slice(1, 3),
            batch(vec![Some(7)], vec![Some(7.5)], vec![Some("g")]),
        ];
        let addressing = Addressing::of(&batches);
        // Positions among all rows, and the same rows by address.
        let starts = [0usize, 3, 6];
        let positions = [5usize, 0, 2, 2, 1, 4, 3, 6];
        let address = |p: usize| {
            let b = starts.iter().rposition(|&s| s <= p).unwrap();
            addressing.address(b, p - starts[b])
        };
        let mut matches: Vec<u64> = positions.iter().map(|&p| address(p)).collect();
        matches.insert(1, NONE);
        matches.push(NONE);
        // An address past the rows of a batch, and past the last batch: no match.
        matches.push(addressing.address(2, 1));
        matches.push(addressing.address(3, 0));
        let columns = [0, 1, 2];
        let schema = batches[0].schema();
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let got = Columns::new(&batches, addressing, &columns, &types)
            .gather(&matches)
            .unwrap();
        let mut want_positions: Vec<Option<u64>> =
            positions.iter().map(|&p| Some(p as u64)).collect();
        want_positions.insert(1, None);
        want_positions.extend([None, None, None]);
        let want_positions = UInt64Array::from(want_positions);
        for (c, got) in columns.iter().zip(&got) {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(*c).as_ref()).collect();
            let all = concat(&parts).unwrap();
            let want = take(all.as_ref(), &want_positions, None).unwrap();
            assert_eq!(got.to_data(), want.to_data(), "column {c}");
        }
    }

    #[test]
    fn a_view_without_rows_gathers_nulls() {
        let columns = Columns::new(
            &[],
            Addressing::of(&[]),
            &[3, 4],
            &[DataType::Float32, DataType::Utf8],
        );
        let got = columns.gather(&[NONE, NONE, 7]).unwrap();
        assert_eq!(got[0].data_type(), &DataType::Float32);
        assert_eq!(got[1].data_type(), &DataType::Utf8);
        assert!(got.iter().all(|a| a.len() == 3 && a.null_count() == 3));
    }
}
