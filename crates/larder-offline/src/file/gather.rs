//! Gathering a view's matched feature rows from the batches the view was read into.
//!
//! A feature row's address is `(batch << shift) | row`. Two sources:
//! - **packed rows** ([`pack`], [`Columns::packed`]): when a view has several features, all
//!   of fixed width (the common case: numbers, times), each batch's features are packed row
//!   by row while the view is read, and the batch keeps only its key and time columns.
//!   Gathering a matched row then reads one or two cache lines instead of one per feature
//!   (10M random rows of 10 floats: 0.5 s less). Packing one batch at a time, while it is
//!   still in cache, costs about 1 % of the join, and the batch's freed columns make room
//!   for the next batch's, so the packed copy needs no more fresh memory than the columns;
//! - **the columns as read** ([`Columns::new`]), for everything else: fixed-width values by
//!   constant-width copies, other types through Arrow's `interleave`.
//!
//! A second copy of the view's values next to the batches (a row store built after reading)
//! cost more than it saved: on a VM, memory a process touches for the first time is
//! expensive (the kernel zeroes it, the host backs it), and that copy was the largest block
//! of fresh memory of the whole join.

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
    types: Vec<DataType>,
    /// Rows of every batch.
    lens: Vec<usize>,
    sources: Vec<Source>,
    addressing: Addressing,
    /// Packed rows whose values all have one width: gathered a row at a time.
    rows: Option<UniformRows>,
}

/// Packed rows of columns of one width `width` at `offsets` in rows of `stride` bytes.
struct UniformRows {
    values: Vec<Buffer>,
    width: usize,
    stride: usize,
    offsets: Vec<usize>,
}

impl UniformRows {
    /// Per column, the values at `indices` (zeros past the batches). Each matched row is
    /// read once for all its columns, after its chunk was read ahead ([`Self::touch`]):
    /// 10M random rows of 10 floats, the whole join 3.1 s -> 2.8 s.
    fn gather(&self, indices: &[(usize, usize)]) -> Vec<Vec<u8>> {
        match self.width {
            4 => self.gather_width::<4>(indices),
            8 => self.gather_width::<8>(indices),
            2 => self.gather_width::<2>(indices),
            _ => self.gather_width::<1>(indices),
        }
    }

    #[inline(always)]
    fn gather_width<const W: usize>(&self, indices: &[(usize, usize)]) -> Vec<Vec<u8>> {
        let mut outs: Vec<Vec<u8>> = self
            .offsets
            .iter()
            .map(|_| vec![0u8; indices.len() * W])
            .collect();
        for (chunk, rows) in indices.chunks(TOUCH_AHEAD).enumerate() {
            self.touch(rows);
            for (j, &(batch, row)) in rows.iter().enumerate() {
                let i = chunk * TOUCH_AHEAD + j;
                let start = row * self.stride;
                let Some(from) = self
                    .values
                    .get(batch)
                    .and_then(|b| b.as_slice().get(start..start + self.stride))
                else {
                    continue;
                };
                for (out, &offset) in outs.iter_mut().zip(&self.offsets) {
                    out[i * W..(i + 1) * W].copy_from_slice(&from[offset..offset + W]);
                }
            }
        }
        outs
    }

    /// Reads the first and last byte of each of `rows`, in a loop short enough that the core
    /// has all their misses to memory in flight at once; the copy that follows then finds
    /// them in cache.
    fn touch(&self, rows: &[(usize, usize)]) {
        let mut sum = 0u8;
        for &(batch, row) in rows {
            let start = row * self.stride;
            if let Some(from) = self.values.get(batch)
                && let Some(bytes) = from.as_slice().get(start..start + self.stride)
                && let (Some(first), Some(last)) = (bytes.first(), bytes.last())
            {
                sum ^= first ^ last;
            }
        }
        std::hint::black_box(sum);
    }
}

/// Matched rows read ahead of their copy ([`UniformRows::touch`]). The rows are scattered
/// over the whole view, so each is a miss to memory, and a core overlaps only the misses
/// within its window of instructions: a copy of ten columns fits a few rows in it, the
/// bare reads many more. 64 rather than 32 (10M x 10M, 8 alternated runs each): the
/// whole join 2.49-3.19 s -> 2.44-2.85 s, the output phase a median 50 ms shorter.
const TOUCH_AHEAD: usize = 64;

/// Where one column's values are.
enum Source {
    /// Fixed-width values: in every batch's buffer, where `at` says, and per batch the
    /// validity when any value is null.
    Fixed {
        at: Strided,
        values: Vec<Buffer>,
        nulls: Option<Vec<Option<NullBuffer>>>,
    },
    /// Other types: the column's array in every batch, then a one-row null array (where
    /// unmatched entity rows point).
    Arrays(Vec<ArrayRef>),
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
            .map(|(&c, data_type)| match fixed_width(data_type) {
                Some(width) => {
                    let values = batches
                        .iter()
                        .map(|b| {
                            let data = b.column(c).to_data();
                            data.buffers()[0]
                                .slice_with_length(data.offset() * width, data.len() * width)
                        })
                        .collect();
                    let nulls = batches
                        .iter()
                        .any(|b| b.column(c).null_count() > 0)
                        .then(|| {
                            batches
                                .iter()
                                .map(|b| b.column(c).nulls().cloned())
                                .collect()
                        });
                    Source::Fixed {
                        at: Strided {
                            width,
                            stride: width,
                            offset: 0,
                        },
                        values,
                        nulls,
                    }
                }
                None => {
                    let mut arrays: Vec<ArrayRef> =
                        batches.iter().map(|b| Arc::clone(b.column(c))).collect();
                    arrays.push(new_null_array(data_type, 1));
                    Source::Arrays(arrays)
                }
            })
            .collect();
        Columns {
            types: types.to_vec(),
            lens: batches.iter().map(RecordBatch::num_rows).collect(),
            sources,
            addressing,
            rows: None,
        }
    }

    /// The columns of `layout` packed row by row ([`pack`]), one block per batch.
    pub(crate) fn packed(
        blocks: Vec<PackedRows>,
        layout: &RowLayout,
        addressing: Addressing,
    ) -> Self {
        let lens = blocks.iter().map(|b| b.rows).collect();
        let widths: Vec<Option<usize>> = layout.types.iter().map(fixed_width).collect();
        let rows = match widths.first() {
            Some(&Some(width))
                if matches!(width, 1 | 2 | 4 | 8) && widths.iter().all(|w| *w == Some(width)) =>
            {
                Some(UniformRows {
                    values: blocks.iter().map(|b| b.values.clone()).collect(),
                    width,
                    stride: layout.row_width,
                    offsets: layout.offsets.clone(),
                })
            }
            _ => None,
        };
        let sources = layout
            .offsets
            .iter()
            .zip(&layout.types)
            .enumerate()
            .map(|(c, (&offset, data_type))| Source::Fixed {
                at: Strided {
                    width: fixed_width(data_type).unwrap_or(0),
                    stride: layout.row_width,
                    offset,
                },
                values: blocks.iter().map(|b| b.values.clone()).collect(),
                nulls: blocks
                    .iter()
                    .any(|b| b.nulls[c].is_some())
                    .then(|| blocks.iter().map(|b| b.nulls[c].clone()).collect()),
            })
            .collect();
        Columns {
            types: layout.types.clone(),
            lens,
            sources,
            addressing,
            rows,
        }
    }

    /// One array per column: the value at address `matches[i]` at row `i` (null for
    /// [`NONE`] and for an address past the view's rows).
    pub(crate) fn gather(&self, matches: &[u64]) -> Result<Vec<ArrayRef>> {
        let batches = self.lens.len();
        let unmatched = (batches, 0);
        let indices: Vec<(usize, usize)> = matches
            .iter()
            .map(|&m| {
                if m == NONE {
                    return unmatched;
                }
                let (batch, row) = self.addressing.split(m);
                match self.lens.get(batch) {
                    Some(&len) if row < len => (batch, row),
                    _ => unmatched,
                }
            })
            .collect();
        let mut matched: Option<NullBuffer> = None;
        let mut gathered = self.rows.as_ref().map(|rows| rows.gather(&indices));
        self.sources
            .iter()
            .zip(&self.types)
            .enumerate()
            .map(|(c, (source, data_type))| match source {
                Source::Fixed { at, values, nulls } => {
                    let matched = matched.get_or_insert_with(|| {
                        let mut bits = BooleanBufferBuilder::new(indices.len());
                        for &(batch, _) in &indices {
                            bits.append(batch < batches);
                        }
                        NullBuffer::new(bits.finish())
                    });
                    let valid = match nulls {
                        Some(nulls) => {
                            let mut bits = BooleanBufferBuilder::new(indices.len());
                            for &(batch, row) in &indices {
                                bits.append(
                                    batch < batches
                                        && nulls[batch].as_ref().is_none_or(|n| n.is_valid(row)),
                                );
                            }
                            NullBuffer::new(bits.finish())
                        }
                        None => matched.clone(),
                    };
                    let out = match gathered.as_mut().and_then(|g| g.get_mut(c)) {
                        Some(out) => std::mem::take(out),
                        None => gather_fixed(values, *at, &indices),
                    };
                    fixed_array(data_type, indices.len(), out, valid)
                }
                Source::Arrays(arrays) => {
                    let arrays: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
                    Ok(interleave(&arrays, &indices)?)
                }
            })
            .collect()
    }
}

/// Bytes per value of a type whose values are fixed-width bytes (not bits).
fn fixed_width(data_type: &DataType) -> Option<usize> {
    data_type
        .primitive_width()
        .filter(|_| data_type.is_primitive())
}

/// How a view's feature columns are packed row by row: each row's values side by side, so
/// that gathering a matched row reads one or two cache lines instead of one per column.
#[derive(Clone, Debug)]
pub(crate) struct RowLayout {
    /// Feature columns of the view's batches, in order.
    columns: Vec<usize>,
    types: Vec<DataType>,
    /// Where each column's value starts in a row.
    offsets: Vec<usize>,
    row_width: usize,
}

impl RowLayout {
    /// A layout for `columns` of `types`, when packing pays: at least two columns, all of
    /// fixed-width values.
    pub(crate) fn of(columns: &[usize], types: &[DataType]) -> Option<Self> {
        if columns.len() < 2 || columns.len() != types.len() {
            return None;
        }
        let mut offsets = Vec::with_capacity(types.len());
        let mut row_width = 0;
        for data_type in types {
            offsets.push(row_width);
            row_width += fixed_width(data_type)?;
        }
        Some(RowLayout {
            columns: columns.to_vec(),
            types: types.to_vec(),
            offsets,
            row_width,
        })
    }

    /// The batch's columns that are not packed (every other one, in order).
    pub(crate) fn rest(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|c| !self.columns.contains(c))
            .collect();
        Ok(batch.project(&keep)?)
    }
}

/// One batch's packed feature rows.
pub(crate) struct PackedRows {
    values: Buffer,
    rows: usize,
    /// Per column its validity, `None` when it has no nulls.
    nulls: Vec<Option<NullBuffer>>,
}

impl PackedRows {
    /// Bytes of the packed values.
    pub(crate) fn bytes(&self) -> usize {
        self.values.len()
    }
}

/// Packs the layout's columns of `batch` row by row. Done while the view is read, one batch
/// at a time: the batch is still in cache, and its columns, freed right after, make room
/// for the next batch's, so that the packed copy takes no more fresh memory than the
/// columns it replaces.
pub(crate) fn pack(batch: &RecordBatch, layout: &RowLayout) -> Result<PackedRows> {
    let rows = batch.num_rows();
    let mut out = vec![0u8; rows * layout.row_width];
    let mut nulls = Vec::with_capacity(layout.columns.len());
    for ((&c, &offset), data_type) in layout
        .columns
        .iter()
        .zip(&layout.offsets)
        .zip(&layout.types)
    {
        let column = batch.column(c);
        if column.data_type() != data_type {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "column {c} holds {}, expected {data_type}",
                column.data_type()
            )));
        }
        let width = fixed_width(data_type).unwrap_or(0);
        let data = column.to_data();
        let from =
            &data.buffers()[0].as_slice()[data.offset() * width..(data.offset() + rows) * width];
        let to = Strided {
            width,
            stride: layout.row_width,
            offset,
        };
        match width {
            4 => spread::<4>(from, to, &mut out),
            8 => spread::<8>(from, to, &mut out),
            _ => {
                for (r, value) in from.chunks_exact(width).enumerate() {
                    let at = r * to.stride + to.offset;
                    out[at..at + width].copy_from_slice(value);
                }
            }
        }
        nulls.push(column.nulls().filter(|n| n.null_count() > 0).cloned());
    }
    Ok(PackedRows {
        values: Buffer::from_vec(out),
        rows,
        nulls,
    })
}

/// Where a column's values sit in a buffer: `width` bytes at `row * stride + offset`.
#[derive(Clone, Copy)]
struct Strided {
    width: usize,
    stride: usize,
    offset: usize,
}

/// Copies consecutive `W`-byte values of `from` to their places in the rows of `out`.
#[inline(always)]
fn spread<const W: usize>(from: &[u8], to: Strided, out: &mut [u8]) {
    for (r, value) in from.chunks_exact(W).enumerate() {
        let at = r * to.stride + to.offset;
        out[at..at + W].copy_from_slice(value);
    }
}

/// The values of `values` (one buffer per batch, laid out as `layout` says) at `indices`;
/// rows whose batch is past the buffers are zero.
fn gather_fixed(values: &[Buffer], layout: Strided, indices: &[(usize, usize)]) -> Vec<u8> {
    let width = layout.width;
    let mut out = vec![0u8; indices.len() * width];
    // A copy of a constant width is a move; of a variable width, a call to memcpy.
    match width {
        4 => copy_values::<4>(values, layout, indices, &mut out),
        8 => copy_values::<8>(values, layout, indices, &mut out),
        2 => copy_values::<2>(values, layout, indices, &mut out),
        1 => copy_values::<1>(values, layout, indices, &mut out),
        _ => {
            for (i, &(batch, row)) in indices.iter().enumerate() {
                let at = row * layout.stride + layout.offset;
                if let Some(value) = values
                    .get(batch)
                    .and_then(|from| from.as_slice().get(at..at + width))
                {
                    out[i * width..(i + 1) * width].copy_from_slice(value);
                }
            }
        }
    }
    out
}

/// An array of `len` values of `data_type` from their bytes, null where `nulls` says.
fn fixed_array(
    data_type: &DataType,
    len: usize,
    values: Vec<u8>,
    nulls: NullBuffer,
) -> Result<ArrayRef> {
    let data = ArrayData::builder(data_type.clone())
        .len(len)
        .add_buffer(Buffer::from_vec(values))
        .nulls((nulls.null_count() > 0).then_some(nulls))
        .build()?;
    Ok(make_array(data))
}

/// Copies the `W`-byte value at each of `indices` into `out`; past the batches, zeros.
#[inline(always)]
fn copy_values<const W: usize>(
    values: &[Buffer],
    layout: Strided,
    indices: &[(usize, usize)],
    out: &mut [u8],
) {
    for (slot, &(batch, row)) in out.chunks_exact_mut(W).zip(indices) {
        let at = row * layout.stride + layout.offset;
        if let Some(from) = values.get(batch)
            && let Some(value) = from.as_slice().get(at..at + W)
        {
            slot.copy_from_slice(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Float32Array, Float64Array, Int16Array, Int64Array, StringArray, UInt64Array,
    };
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
    fn packed_rows_gather_what_the_columns_gather() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("a", DataType::Float32, true),
            Field::new("b", DataType::Int16, true),
            Field::new("c", DataType::Float64, true),
        ]));
        let make = |first: i64, rows: i64| {
            let r = first..first + rows;
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(r.clone())),
                    Arc::new(Float32Array::from_iter(
                        r.clone().map(|i| (i % 4 != 1).then_some(i as f32 + 0.5)),
                    )),
                    Arc::new(Int16Array::from_iter_values(r.clone().map(|i| -(i as i16)))),
                    Arc::new(Float64Array::from_iter(
                        r.map(|i| (i % 5 != 2).then_some(i as f64 * 2.0)),
                    )),
                ],
            )
            .unwrap()
        };
        // A slice, so values and validity start at an offset.
        let batches = vec![make(0, 7), make(100, 9).slice(2, 6), make(200, 1)];
        let columns = [1, 2, 3];
        let types = [DataType::Float32, DataType::Int16, DataType::Float64];
        let layout = RowLayout::of(&columns, &types).unwrap();
        assert_eq!(layout.row_width, 4 + 2 + 8);
        let rest: Vec<RecordBatch> = batches.iter().map(|b| layout.rest(b).unwrap()).collect();
        assert!(rest.iter().all(|b| b.num_columns() == 1));
        let addressing = Addressing::of(&batches);
        let blocks = batches.iter().map(|b| pack(b, &layout).unwrap()).collect();
        let packed = Columns::packed(blocks, &layout, addressing);
        let plain = Columns::new(&batches, addressing, &columns, &types);
        let mut matches: Vec<u64> = (0..7)
            .rev()
            .map(|r| addressing.address(0, r))
            .chain((0..6).map(|r| addressing.address(1, r)))
            .collect();
        matches.extend([
            NONE,
            addressing.address(2, 0),
            addressing.address(1, 6),
            addressing.address(3, 0),
            addressing.address(0, 3),
        ]);
        let want = plain.gather(&matches).unwrap();
        let got = packed.gather(&matches).unwrap();
        for (c, (got, want)) in got.iter().zip(&want).enumerate() {
            assert_eq!(got.to_data(), want.to_data(), "column {c}");
        }
        // Unmatched rows and rows past a batch are null; nulls of the inputs stay null.
        assert_eq!(got[0].null_count(), 3 + 3);
    }

    /// Columns of one width are gathered a row at a time, in chunks read ahead: more
    /// matches than a chunk, in random order, with unmatched rows and rows past a batch.
    #[test]
    fn rows_of_one_width_gather_what_the_columns_gather() {
        for data_type in [DataType::Float32, DataType::Int64] {
            let schema = Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, true),
                Field::new("a", data_type.clone(), true),
                Field::new("b", data_type.clone(), true),
            ]));
            let column = |values: Vec<Option<i64>>| -> ArrayRef {
                let array = Int64Array::from(values);
                arrow::compute::cast(&array, &data_type).unwrap()
            };
            let make = |first: i64, rows: i64| {
                let r = first..first + rows;
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from_iter_values(r.clone())),
                        column(r.clone().map(|i| (i % 7 != 3).then_some(i * 3)).collect()),
                        column(r.map(|i| Some(-i)).collect()),
                    ],
                )
                .unwrap()
            };
            let batches = vec![make(0, 50), make(1000, 80).slice(5, 70), make(5000, 3)];
            let columns = [1, 2];
            let types = [data_type.clone(), data_type.clone()];
            let layout = RowLayout::of(&columns, &types).unwrap();
            let addressing = Addressing::of(&batches);
            let blocks = batches.iter().map(|b| pack(b, &layout).unwrap()).collect();
            let packed = Columns::packed(blocks, &layout, addressing);
            assert!(
                packed.rows.is_some(),
                "{data_type}: one width, gathered by rows"
            );
            let plain = Columns::new(&batches, addressing, &columns, &types);
            // Every row of every batch in a scrambled order, twice, with misses in between.
            let mut matches = Vec::new();
            for round in 0..2u64 {
                for (b, batch) in batches.iter().enumerate() {
                    for r in 0..batch.num_rows() {
                        let r = (r * 37 + round as usize) % batch.num_rows();
                        matches.push(addressing.address(b, r));
                        if r.is_multiple_of(11) {
                            matches.push(NONE);
                            matches.push(addressing.address(3, r));
                            matches.push(addressing.address(b, batch.num_rows() + r));
                        }
                    }
                }
            }
            assert!(matches.len() > 4 * TOUCH_AHEAD);
            let want = plain.gather(&matches).unwrap();
            let got = packed.gather(&matches).unwrap();
            assert_eq!(got.len(), 2);
            for (c, (got, want)) in got.iter().zip(&want).enumerate() {
                assert_eq!(got.to_data(), want.to_data(), "{data_type}, column {c}");
                assert_eq!(got.len(), matches.len());
            }
            // Column `b` has no nulls: it is null exactly at the misses.
            let misses = matches
                .iter()
                .filter(|&&m| {
                    let (b, r) = addressing.split(m);
                    m == NONE || batches.get(b).is_none_or(|batch| r >= batch.num_rows())
                })
                .count();
            assert!(misses > 0);
            assert_eq!(got[1].null_count(), misses, "{data_type}");
            assert!(
                got[0].null_count() > misses,
                "{data_type}: and `a`'s own nulls"
            );
        }
    }

    #[test]
    fn only_several_fixed_width_columns_are_packed() {
        assert!(RowLayout::of(&[1], &[DataType::Float32]).is_none());
        assert!(RowLayout::of(&[1, 2], &[DataType::Float32, DataType::Utf8]).is_none());
        assert!(RowLayout::of(&[1, 2], &[DataType::Float32, DataType::Boolean]).is_none());
        assert!(RowLayout::of(&[1, 2], &[DataType::Float32, DataType::Int64]).is_some());
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
