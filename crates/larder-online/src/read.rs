//! Building read results aligned with the requested keys, shared by every backend.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanBufferBuilder, RecordBatch, TimestampMicrosecondArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::SchemaRef;
use foldhash::fast::RandomState;

use crate::error::OnlineError;
use crate::store::{FoundRow, RowVisitor, read_schema};

/// The distinct keys of a read request, and for each requested position its distinct slot,
/// so a backend fetches every key once and fans the rows back out in request order.
#[derive(Debug)]
pub struct KeyIndex<'k> {
    unique: Vec<&'k [u8]>,
    slots: Vec<usize>,
    /// Only for more than [`KEY_SCAN_MAX`] keys; a scan of a few is cheaper than hashing.
    /// foldhash, seeded per process: a third of SipHash's cost on 30-byte keys, and keys
    /// chosen by a client cannot be aimed at one bucket without the seed.
    map: Option<HashMap<&'k [u8], usize, RandomState>>,
}

/// Most keys a [`KeyIndex`] finds by a linear scan.
const KEY_SCAN_MAX: usize = 8;

impl<'k> KeyIndex<'k> {
    pub fn new(keys: impl ExactSizeIterator<Item = &'k [u8]>) -> Self {
        let many = keys.len() > KEY_SCAN_MAX;
        let mut index = KeyIndex {
            unique: Vec::with_capacity(keys.len()),
            slots: Vec::with_capacity(keys.len()),
            map: many
                .then(|| HashMap::with_capacity_and_hasher(keys.len(), RandomState::default())),
        };
        for key in keys {
            let next = index.unique.len();
            let slot = match &mut index.map {
                Some(map) => *map.entry(key).or_insert(next),
                None => index.unique.iter().position(|k| *k == key).unwrap_or(next),
            };
            if slot == next {
                index.unique.push(key);
            }
            index.slots.push(slot);
        }
        index
    }

    /// The distinct keys, in order of first appearance.
    pub fn unique(&self) -> &[&'k [u8]] {
        &self.unique
    }

    /// The slot (index into [`unique`](Self::unique)) of `key`, if it was requested.
    pub fn slot(&self, key: &[u8]) -> Option<usize> {
        match &self.map {
            Some(map) => map.get(key).copied(),
            None => self.unique.iter().position(|k| *k == key),
        }
    }

    /// For each requested position, the slot of its key.
    pub fn slots(&self) -> &[usize] {
        &self.slots
    }
}

/// The requested feature names: each distinct name gets a slot, each output column reads
/// one slot (so a name may be requested twice).
#[derive(Debug)]
pub struct FeatureSlots<'f> {
    names: Vec<&'f str>,
    column_slot: Vec<usize>,
    /// Only for many features; a linear scan is faster for a few.
    map: Option<HashMap<&'f [u8], usize, RandomState>>,
}

const LINEAR_SCAN_MAX: usize = 12;

impl<'f> FeatureSlots<'f> {
    pub fn new(features: &[&'f str]) -> Self {
        let mut names: Vec<&'f str> = Vec::with_capacity(features.len());
        let mut column_slot = Vec::with_capacity(features.len());
        for feature in features {
            let slot = match names.iter().position(|n| n == feature) {
                Some(slot) => slot,
                None => {
                    names.push(feature);
                    names.len() - 1
                }
            };
            column_slot.push(slot);
        }
        let map = (names.len() > LINEAR_SCAN_MAX).then(|| {
            names
                .iter()
                .enumerate()
                .map(|(slot, n)| (n.as_bytes(), slot))
                .collect()
        });
        FeatureSlots {
            names,
            column_slot,
            map,
        }
    }

    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The distinct names, by slot.
    pub fn names(&self) -> &[&'f str] {
        &self.names
    }

    /// A row's values by slot, as the requested columns read them: the same slice when no
    /// name was requested twice (each column reads its own slot), else a copy in column
    /// order.
    pub fn by_column<'a, 'v>(
        &self,
        by_slot: &'a [Option<&'v [u8]>],
    ) -> Cow<'a, [Option<&'v [u8]>]> {
        if self.names.len() == self.column_slot.len() {
            return Cow::Borrowed(by_slot);
        }
        Cow::Owned(self.column_slot.iter().map(|&slot| by_slot[slot]).collect())
    }

    /// Hands a row of request `request` found at key position `key`, with its values by
    /// slot, to a [`read_rows`](crate::OnlineStore::read_rows) visitor as the request's
    /// columns; a key not found (`None`) is not visited.
    pub fn visit(
        &self,
        visit: &mut RowVisitor<'_>,
        request: usize,
        key: usize,
        found: Option<(i64, &[Option<&[u8]>])>,
    ) -> Result<(), OnlineError> {
        let Some((event_ts, by_slot)) = found else {
            return Ok(());
        };
        let values = self.by_column(by_slot);
        visit(
            request,
            key,
            FoundRow {
                event_ts,
                values: &values,
            },
        )
    }

    /// Like [`find`](Self::find), trying slot `*hint` first and leaving the next slot in
    /// it: stored rows list features in view order, usually the requested order too, so a
    /// scan of a row mostly hits on the first comparison.
    pub fn find_hinted(&self, name: &[u8], hint: &mut usize) -> Option<usize> {
        if self.names.get(*hint).is_some_and(|n| n.as_bytes() == name) {
            *hint += 1;
            return Some(*hint - 1);
        }
        let found = self.find(name)?;
        *hint = found + 1;
        Some(found)
    }

    /// The slot of feature `name`, if it was requested.
    pub fn find(&self, name: &[u8]) -> Option<usize> {
        match &self.map {
            Some(map) => map.get(name).copied(),
            None => self.names.iter().position(|n| n.as_bytes() == name),
        }
    }
}

/// Appends result rows in request order and builds the batch of
/// [`read_schema`]`(features)`.
///
/// Rows go into one row-major staging buffer; [`finish`](Self::finish) lays the cells out
/// column by column in one values buffer that every column's array shares, with one offsets
/// buffer and one validity bitmap sliced per column. A read of one key and 15 features
/// allocates about 20 times instead of about 80 with a `BinaryBuilder` per column, which
/// was most of a small read's cost.
#[derive(Debug)]
pub struct ReadBatchBuilder {
    schema: SchemaRef,
    /// Per row: the event time, `None` when the key was not found.
    event_ts: Vec<Option<i64>>,
    /// Per row, per distinct feature slot: the cell's bytes in `data`, `None` when missing.
    cells: Vec<Option<Range<usize>>>,
    data: Vec<u8>,
    slots: usize,
    column_slot: Vec<usize>,
}

impl ReadBatchBuilder {
    pub fn new(features: &FeatureSlots<'_>, requested: &[&str], rows: usize) -> Self {
        ReadBatchBuilder {
            schema: read_schema(requested),
            event_ts: Vec::with_capacity(rows),
            cells: Vec::with_capacity(rows * features.len()),
            data: Vec::with_capacity(rows * features.len() * 12),
            slots: features.len(),
            column_slot: features.column_slot.clone(),
        }
    }

    /// A key that was not found: null timestamp and values.
    pub fn push_missing(&mut self) {
        self.event_ts.push(None);
        self.cells.extend(std::iter::repeat_n(None, self.slots));
    }

    /// A found key: its event time (µs) and the value of each feature slot (`None` when
    /// the feature is missing from the row).
    pub fn push_found(&mut self, event_ts: i64, values: &[Option<&[u8]>]) {
        self.event_ts.push(Some(event_ts));
        for slot in 0..self.slots {
            let cell = values.get(slot).copied().flatten().map(|value| {
                let start = self.data.len();
                self.data.extend_from_slice(value);
                start..self.data.len()
            });
            self.cells.push(cell);
        }
    }

    pub fn finish(self) -> Result<RecordBatch, OnlineError> {
        let ReadBatchBuilder {
            schema,
            event_ts,
            cells,
            data,
            slots,
            column_slot,
        } = self;
        let rows = event_ts.len();
        let columns = column_slot.len();
        let cell = |row: usize, column: usize| &cells[row * slots + column_slot[column]];
        // Columns share values buffers while their bytes fit i32 offsets (one buffer unless
        // a read returns gigabytes); a single column past that cannot be an Arrow `Binary`.
        let mut sizes = Vec::with_capacity(columns);
        for column in 0..columns {
            let size: usize = (0..rows)
                .filter_map(|row| cell(row, column).as_ref().map(Range::len))
                .sum();
            if size > MAX_BINARY_BYTES {
                return Err(OnlineError::internal(format!(
                    "feature `{}` reads {size} bytes for {rows} keys, more than an Arrow binary \
                     column holds (2 GiB): read fewer keys at once",
                    schema.field(column + 1).name()
                )));
            }
            sizes.push(size);
        }

        let mut offsets: Vec<i32> = Vec::with_capacity(columns * (rows + 1));
        let mut validity = BooleanBufferBuilder::new(columns * rows);
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns + 1);
        let ts = TimestampMicrosecondArray::from(event_ts).with_timezone("UTC");
        arrays.push(Arc::new(ts));
        // The shared values buffers, and the one each column's cells go to.
        let mut buffers: Vec<Vec<u8>> = Vec::new();
        let mut buffer_of = Vec::with_capacity(columns);
        let mut buffer_bytes = usize::MAX;
        for (column, &size) in sizes.iter().enumerate() {
            if buffer_bytes.saturating_add(size) > MAX_BINARY_BYTES {
                let rest: usize = sizes[column..].iter().sum();
                buffers.push(Vec::with_capacity(rest.min(MAX_BINARY_BYTES)));
                buffer_bytes = 0;
            }
            buffer_bytes += size;
            let at = buffers.len() - 1;
            buffer_of.push(at);
            let values = &mut buffers[at];
            offsets.push(offset(values.len()));
            for row in 0..rows {
                match cell(row, column) {
                    Some(range) => {
                        values.extend_from_slice(&data[range.clone()]);
                        validity.append(true);
                    }
                    None => validity.append(false),
                }
                offsets.push(offset(values.len()));
            }
        }
        let offsets = ScalarBuffer::from(offsets);
        let validity = validity.finish();
        let buffers: Vec<Buffer> = buffers.into_iter().map(Buffer::from).collect();
        for (column, &at) in buffer_of.iter().enumerate() {
            // `OffsetBuffer::new` checks the offsets ascend from zero or more,
            // `BinaryArray::try_new` that they stay within the values.
            let column_offsets = OffsetBuffer::new(offsets.slice(column * (rows + 1), rows + 1));
            let nulls = NullBuffer::new(validity.slice(column * rows, rows));
            let nulls = (nulls.null_count() > 0).then_some(nulls);
            let array = BinaryArray::try_new(column_offsets, buffers[at].clone(), nulls)
                .map_err(|e| OnlineError::internal(format!("cannot build a read column: {e}")))?;
            arrays.push(Arc::new(array));
        }
        RecordBatch::try_new_with_options(
            schema,
            arrays,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| OnlineError::internal(format!("cannot build the read result: {e}")))
    }
}

/// Most value bytes one read column (an Arrow `Binary` array, i32 offsets) can hold.
const MAX_BINARY_BYTES: usize = i32::MAX as usize;

/// `len` as an Arrow offset; [`ReadBatchBuilder::finish`] keeps every buffer within
/// [`MAX_BINARY_BYTES`].
fn offset(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// The result of a read in which no key is found.
pub fn all_missing(requested: &[&str], rows: usize) -> Result<RecordBatch, OnlineError> {
    let slots = FeatureSlots::new(requested);
    let mut builder = ReadBatchBuilder::new(&slots, requested, rows);
    for _ in 0..rows {
        builder.push_missing();
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};

    use super::*;

    #[test]
    fn key_index_keeps_duplicates_aligned() {
        let keys: [&[u8]; 4] = [b"b", b"a", b"b", b"c"];
        let index = KeyIndex::new(keys.iter().copied());
        assert_eq!(index.unique(), &[&b"b"[..], b"a", b"c"]);
        assert_eq!(index.slots(), &[0, 1, 0, 2]);
        assert_eq!(index.slot(b"c"), Some(2));
        assert_eq!(index.slot(b"d"), None);
    }

    /// Past [`KEY_SCAN_MAX`] keys the index hashes: the same answers as the scan.
    #[test]
    fn key_index_hashes_many_keys_like_it_scans_few() {
        let names: Vec<Vec<u8>> = (0..40u8).map(|i| vec![b'k', i % 13]).collect();
        for count in [KEY_SCAN_MAX, KEY_SCAN_MAX + 1, 40] {
            let keys: Vec<&[u8]> = names[..count].iter().map(Vec::as_slice).collect();
            let index = KeyIndex::new(keys.iter().copied());
            assert_eq!(index.map.is_some(), count > KEY_SCAN_MAX);
            assert_eq!(index.unique().len(), count.min(13));
            for (position, key) in keys.iter().enumerate() {
                let slot = index.slots()[position];
                assert_eq!(index.unique()[slot], *key);
                assert_eq!(index.slot(key), Some(slot));
                // The first appearance owns the slot.
                assert_eq!(keys.iter().position(|k| k == key), Some(slot));
            }
            assert_eq!(index.slot(b"absent"), None);
        }
    }

    #[test]
    fn read_batches_share_buffers_and_keep_every_cell() {
        // Three features, `b` requested twice; rows: found with a missing and an empty
        // (null-valued) cell, not found, found with every cell.
        let requested = ["a", "b", "c", "b"];
        let slots = FeatureSlots::new(&requested);
        let mut builder = ReadBatchBuilder::new(&slots, &requested, 3);
        builder.push_found(10, &[Some(b"a1"), None, Some(b"")]);
        builder.push_missing();
        builder.push_found(30, &[Some(b"a3"), Some(b"bb3"), Some(b"c3")]);
        let batch = builder.finish().unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.schema(), read_schema(&requested));
        let ts = batch
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(ts.iter().collect::<Vec<_>>(), [Some(10), None, Some(30)]);
        let column = |i: usize| -> Vec<Option<Vec<u8>>> {
            batch
                .column(i)
                .as_binary::<i32>()
                .iter()
                .map(|v| v.map(<[u8]>::to_vec))
                .collect()
        };
        assert_eq!(
            column(1),
            [Some(b"a1".to_vec()), None, Some(b"a3".to_vec())]
        );
        assert_eq!(column(2), [None, None, Some(b"bb3".to_vec())]);
        assert_eq!(column(3), [Some(Vec::new()), None, Some(b"c3".to_vec())]);
        assert_eq!(column(4), column(2));
        // One values buffer behind every column.
        let values: Vec<*const u8> = (1..=4)
            .map(|i| batch.column(i).as_binary::<i32>().values().as_ptr())
            .collect();
        assert!(values.iter().all(|&p| p == values[0]), "{values:?}");

        let empty = ReadBatchBuilder::new(&slots, &requested, 0)
            .finish()
            .unwrap();
        assert_eq!((empty.num_rows(), empty.num_columns()), (0, 5));
    }

    #[test]
    fn feature_slots_with_many_and_repeated_names() {
        let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
        let mut requested: Vec<&str> = names.iter().map(String::as_str).collect();
        requested.push("f3");
        let slots = FeatureSlots::new(&requested);
        assert_eq!(slots.len(), 20);
        assert_eq!(slots.find(b"f19"), Some(19));
        assert_eq!(slots.find(b"g"), None);
        let mut hint = 4;
        assert_eq!(slots.find_hinted(b"f4", &mut hint), Some(4));
        assert_eq!(slots.find_hinted(b"f2", &mut hint), Some(2));
        assert_eq!((slots.find_hinted(b"x", &mut hint), hint), (None, 3));

        let mut builder = ReadBatchBuilder::new(&slots, &requested, 2);
        let values: Vec<Option<&[u8]>> = (0..20).map(|i| (i == 3).then_some(&b"x"[..])).collect();
        builder.push_found(7, &values);
        builder.push_missing();
        let batch = builder.finish().unwrap();
        assert_eq!(batch.num_columns(), 22);
        assert_eq!(batch.column(4).as_binary::<i32>().value(0), b"x");
        assert_eq!(batch.column(21).as_binary::<i32>().value(0), b"x");
        assert!(batch.column(0).is_null(1));
    }
}
