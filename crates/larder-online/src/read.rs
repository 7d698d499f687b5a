//! Building read results aligned with the requested keys, shared by every backend.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryBuilder, RecordBatch, TimestampMicrosecondBuilder};
use arrow::datatypes::SchemaRef;

use crate::error::OnlineError;
use crate::store::read_schema;

/// The distinct keys of a read request, and for each requested position its distinct slot,
/// so a backend fetches every key once and fans the rows back out in request order.
#[derive(Debug)]
pub struct KeyIndex<'k> {
    unique: Vec<&'k [u8]>,
    slots: Vec<usize>,
    map: HashMap<&'k [u8], usize>,
}

impl<'k> KeyIndex<'k> {
    pub fn new(keys: impl ExactSizeIterator<Item = &'k [u8]>) -> Self {
        let mut index = KeyIndex {
            unique: Vec::with_capacity(keys.len()),
            slots: Vec::with_capacity(keys.len()),
            map: HashMap::with_capacity(keys.len()),
        };
        for key in keys {
            let next = index.unique.len();
            let slot = *index.map.entry(key).or_insert(next);
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
        self.map.get(key).copied()
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
    map: Option<HashMap<&'f [u8], usize>>,
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
#[derive(Debug)]
pub struct ReadBatchBuilder {
    schema: SchemaRef,
    event_ts: TimestampMicrosecondBuilder,
    columns: Vec<BinaryBuilder>,
    column_slot: Vec<usize>,
}

impl ReadBatchBuilder {
    pub fn new(features: &FeatureSlots<'_>, requested: &[&str], rows: usize) -> Self {
        ReadBatchBuilder {
            schema: read_schema(requested),
            event_ts: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            columns: (0..requested.len())
                .map(|_| BinaryBuilder::with_capacity(rows, rows * 16))
                .collect(),
            column_slot: features.column_slot.clone(),
        }
    }

    /// A key that was not found: null timestamp and values.
    pub fn push_missing(&mut self) {
        self.event_ts.append_null();
        for column in &mut self.columns {
            column.append_null();
        }
    }

    /// A found key: its event time (µs) and the value of each feature slot (`None` when
    /// the feature is missing from the row).
    pub fn push_found(&mut self, event_ts: i64, values: &[Option<&[u8]>]) {
        self.event_ts.append_value(event_ts);
        for (column, &slot) in self.columns.iter_mut().zip(&self.column_slot) {
            column.append_option(values[slot]);
        }
    }

    pub fn finish(mut self) -> Result<RecordBatch, OnlineError> {
        let event_ts = self.event_ts.finish();
        let rows = event_ts.len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len() + 1);
        arrays.push(Arc::new(event_ts));
        arrays.extend(
            self.columns
                .iter_mut()
                .map(|c| Arc::new(c.finish()) as ArrayRef),
        );
        RecordBatch::try_new_with_options(
            self.schema,
            arrays,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| OnlineError::internal(format!("cannot build the read result: {e}")))
    }
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
