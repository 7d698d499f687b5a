//! Encoding a whole Arrow column straight to serialized `feast.types.Value` bytes, without building `Value`s (feast-behaviour.md §2.3).
//!
//! This is the materialization hot path: one pass per column, every row appended to one
//! shared buffer ([`ByteRows`]), no allocation per row. The bytes equal prost's encoding of
//! the `Value` that [`values_from_array`](super::values_from_array) builds for the row.

use arrow::array::{Array, BinaryArray};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};

use super::FormatError;
use super::column::{Column, ListVisitor, Scalar, with_column};
use crate::ValueType;

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// A sequence of byte strings stored end to end in one buffer, one per row.
///
/// Reuse one across batches with [`clear`](ByteRows::clear) to keep its capacity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByteRows {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl ByteRows {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        ByteRows {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(rows),
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// Row `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let row = &self.data[start..end];
            start = end;
            row
        })
    }

    /// Copies every row into its own `Vec`.
    pub fn to_vecs(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }

    /// The rows as a non-null Arrow `Binary` array, without copying the bytes. `None` when
    /// the bytes exceed the 2 GiB an `i32`-offset array can address.
    pub fn into_binary_array(self) -> Option<BinaryArray> {
        if i32::try_from(self.data.len()).is_err() {
            return None;
        }
        let mut offsets = Vec::with_capacity(self.ends.len() + 1);
        offsets.push(0i32);
        // Every end is <= data.len(), which fits an i32 (checked above).
        offsets.extend(self.ends.iter().map(|&end| end as i32));
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        Some(BinaryArray::new(offsets, Buffer::from_vec(self.data), None))
    }

    /// Appends one row written by `write` into the shared buffer.
    pub fn push_with<R>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let out = write(&mut self.data);
        self.ends.push(self.data.len());
        out
    }

    /// Drops rows from `len` on (used to undo a partly written batch).
    pub(crate) fn truncate(&mut self, len: usize) {
        if len < self.ends.len() {
            let end = if len == 0 { 0 } else { self.ends[len - 1] };
            self.data.truncate(end);
            self.ends.truncate(len);
        }
    }

    fn reserve(&mut self, rows: usize, bytes: usize) {
        self.data.reserve(bytes);
        self.ends.reserve(rows);
    }
}

/// Appends one serialized `Value` per row of `array` (read as `dtype`) to `out`.
///
/// Null rows, and NaN in scalar float columns, are written as null (zero bytes). A null item
/// inside a list is an error, as in Feast. On error `out` is left as it was.
pub fn encode_column(
    array: &dyn Array,
    dtype: ValueType,
    out: &mut ByteRows,
) -> Result<(), FormatError> {
    let start = out.len();
    let result = with_column(array, dtype, |column| {
        let rows = array.len();
        out.reserve(rows, rows * 10);
        match column {
            Column::Scalar(scalars) => {
                for i in 0..rows {
                    out.push_with(|buf| {
                        if !scalars.is_null(i) {
                            let v = scalars.get(i);
                            if !v.is_nan() {
                                encode_scalar(v, buf);
                            }
                        }
                    });
                }
            }
            Column::List {
                nulls,
                ranges,
                items,
            } => {
                let tag = dtype.feast_enum() as u32;
                for row in 0..rows {
                    let ok = out.push_with(|buf| {
                        if nulls.is_some_and(|n| n.is_null(row)) {
                            return true;
                        }
                        items
                            .visit_list(ranges.get(row), ListEncoder { tag, buf })
                            .is_some()
                    });
                    if !ok {
                        return Err(FormatError::NullListElement {
                            expected: dtype,
                            row,
                        });
                    }
                }
            }
        }
        Ok(())
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Writes the `Value` message holding one scalar.
pub(crate) fn encode_scalar(v: Scalar<'_>, buf: &mut Vec<u8>) {
    match v {
        Scalar::Bytes(b) => put_len_delimited(1, b, buf),
        Scalar::Str(s) => put_len_delimited(2, s.as_bytes(), buf),
        Scalar::Int32(x) => {
            put_key(3, VARINT, buf);
            // int32 is sign-extended to 64 bits on the wire (negative values take 10 bytes).
            put_varint(i64::from(x) as u64, buf);
        }
        Scalar::Int64(x) => {
            put_key(4, VARINT, buf);
            put_varint(x as u64, buf);
        }
        Scalar::Float64(x) => {
            put_key(5, FIXED64, buf);
            buf.extend_from_slice(&x.to_le_bytes());
        }
        Scalar::Float32(x) => {
            put_key(6, FIXED32, buf);
            buf.extend_from_slice(&x.to_le_bytes());
        }
        Scalar::Bool(x) => {
            put_key(7, VARINT, buf);
            buf.push(u8::from(x));
        }
        Scalar::Seconds(x) => {
            put_key(8, VARINT, buf);
            put_varint(x as u64, buf);
        }
    }
}

/// Writes `Value { <tag>: XxxList { repeated val = 1 } }` for one row's items.
struct ListEncoder<'b> {
    tag: u32,
    buf: &'b mut Vec<u8>,
}

impl ListEncoder<'_> {
    /// A packed repeated field (omitted entirely when empty, as protobuf does).
    fn packed(self, payload: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let inner = if payload == 0 {
            0
        } else {
            1 + varint_len(payload as u64) + payload
        };
        put_key(self.tag, LEN, self.buf);
        put_varint(inner as u64, self.buf);
        if payload > 0 {
            put_key(1, LEN, self.buf);
            put_varint(payload as u64, self.buf);
            write(self.buf);
        }
    }
}

impl<'a> ListVisitor<'a> for ListEncoder<'_> {
    type Output = ();

    fn bytes(self, items: impl Iterator<Item = &'a [u8]> + Clone) {
        let inner: usize = items
            .clone()
            .map(|b| 1 + varint_len(b.len() as u64) + b.len())
            .sum();
        put_key(self.tag, LEN, self.buf);
        put_varint(inner as u64, self.buf);
        self.buf.reserve(inner);
        for b in items {
            put_len_delimited(1, b, self.buf);
        }
    }

    fn varints(self, items: impl Iterator<Item = u64> + Clone) {
        let payload = items.clone().map(varint_len).sum();
        self.packed(payload, |buf| items.for_each(|x| put_varint(x, buf)));
    }

    fn fixed32(self, items: &[f32]) {
        self.packed(items.len() * 4, |buf| {
            items
                .iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
        });
    }

    fn fixed64(self, items: &[f64]) {
        self.packed(items.len() * 8, |buf| {
            items
                .iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
        });
    }
}

fn put_key(tag: u32, wire_type: u32, buf: &mut Vec<u8>) {
    put_varint(u64::from(tag << 3 | wire_type), buf);
}

fn put_len_delimited(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    put_key(tag, LEN, buf);
    put_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

fn put_varint(mut x: u64, buf: &mut Vec<u8>) {
    while x >= 0x80 {
        buf.push((x as u8) | 0x80);
        x >>= 7;
    }
    buf.push(x as u8);
}

fn varint_len(x: u64) -> usize {
    // One byte per started group of 7 significant bits (at least one byte).
    (64 - (x | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_rows_become_a_binary_array() {
        let mut rows = ByteRows::new();
        for row in [&b"ab"[..], b"", b"cde"] {
            rows.push_with(|out| out.extend_from_slice(row));
        }
        let array = rows.into_binary_array().expect("small");
        assert_eq!(array.len(), 3);
        assert_eq!(array.null_count(), 0);
        assert_eq!(
            array.iter().collect::<Vec<_>>(),
            vec![Some(&b"ab"[..]), Some(b""), Some(b"cde")]
        );
        assert_eq!(
            ByteRows::new().into_binary_array().map(|a| a.len()),
            Some(0)
        );
    }

    #[test]
    fn varints() {
        for (x, bytes) in [
            (0u64, vec![0x00]),
            (1, vec![0x01]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (u64::MAX, [vec![0xff; 9], vec![0x01]].concat()),
        ] {
            let mut buf = Vec::new();
            put_varint(x, &mut buf);
            assert_eq!(buf, bytes, "{x}");
            assert_eq!(varint_len(x), bytes.len(), "{x}");
        }
    }

    #[test]
    fn byte_rows() {
        let mut rows = ByteRows::new();
        rows.push_with(|b| b.extend_from_slice(b"ab"));
        rows.push_with(|_| ());
        rows.push_with(|b| b.push(7));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows.get(0), Some(&b"ab"[..]));
        assert_eq!(rows.get(1), Some(&b""[..]));
        assert_eq!(rows.get(3), None);
        assert_eq!(rows.to_vecs(), vec![b"ab".to_vec(), vec![], vec![7]]);
        rows.truncate(1);
        assert_eq!(rows.iter().collect::<Vec<_>>(), vec![&b"ab"[..]]);
        rows.clear();
        assert!(rows.is_empty());
    }
}
