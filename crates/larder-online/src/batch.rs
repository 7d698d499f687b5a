//! Validation and in-batch deduplication of write batches, shared by every backend.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use arrow::array::{Array, AsArray, BinaryArray, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};

use crate::error::OnlineError;
use crate::store::{CREATED_TS, ENTITY_KEY, EVENT_TS, ViewTable};

/// A write batch checked against the contract of
/// [`OnlineStore::write_batch`](crate::OnlineStore::write_batch), its columns typed.
///
/// Holds cheap clones of the batch's arrays, so it can move to a blocking task.
#[derive(Clone, Debug)]
pub struct WriteRows {
    keys: BinaryArray,
    event_ts: TimestampMicrosecondArray,
    created_ts: Option<TimestampMicrosecondArray>,
    /// In the order of `ViewTable::features`.
    features: Vec<BinaryArray>,
}

impl WriteRows {
    /// Checks `batch` against `table` (see the trait's contract for what is accepted).
    pub fn new(table: &ViewTable, batch: &RecordBatch) -> Result<Self, OnlineError> {
        let view = &table.view;
        let schema = batch.schema();
        for (i, name) in table.features.iter().enumerate() {
            if [ENTITY_KEY, EVENT_TS, CREATED_TS].contains(&name.as_str()) {
                return Err(OnlineError::invalid(format!(
                    "feature `{name}` of view `{view}` has the name of a reserved column"
                )));
            }
            if table.features[..i].contains(name) {
                return Err(OnlineError::invalid(format!(
                    "feature `{name}` appears twice in view `{view}`"
                )));
            }
        }
        for field in schema.fields() {
            let name = field.name().as_str();
            let known = [ENTITY_KEY, EVENT_TS, CREATED_TS].contains(&name)
                || table.features.iter().any(|f| f == name);
            if !known {
                return Err(OnlineError::invalid(format!(
                    "the write batch has a column `{name}`, which is not a feature of view `{view}`"
                )));
            }
        }
        let column = |name: &str| {
            let mut found = schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name() == name);
            match (found.next(), found.next()) {
                (Some((i, _)), None) => Ok(Some(batch.column(i))),
                (None, _) => Ok(None),
                (Some(_), Some(_)) => Err(OnlineError::invalid(format!(
                    "the write batch has several columns named `{name}`"
                ))),
            }
        };
        let required = |name: &str| {
            column(name)?.ok_or_else(|| {
                OnlineError::invalid(format!("the write batch has no column `{name}`"))
            })
        };

        let keys = required(ENTITY_KEY)?;
        let keys = binary(ENTITY_KEY, keys)?;
        if let Some(row) = first_null(&keys) {
            return Err(OnlineError::invalid(format!(
                "column `{ENTITY_KEY}` is null at row {row}"
            )));
        }
        let event_ts = timestamp(EVENT_TS, required(EVENT_TS)?)?;
        if let Some(row) = first_null(&event_ts) {
            return Err(OnlineError::invalid(format!(
                "column `{EVENT_TS}` is null at row {row}"
            )));
        }
        let created_ts = column(CREATED_TS)?
            .map(|c| timestamp(CREATED_TS, c))
            .transpose()?;
        let features = table
            .features
            .iter()
            .map(|name| binary(name, required(name)?))
            .collect::<Result<_, _>>()?;
        Ok(WriteRows {
            keys,
            event_ts,
            created_ts,
            features,
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The serialized entity key of `row`.
    pub fn key(&self, row: usize) -> &[u8] {
        self.keys.value(row)
    }

    /// The event time of `row`, microseconds since the Unix epoch.
    pub fn event_ts(&self, row: usize) -> i64 {
        self.event_ts.value(row)
    }

    /// The created time of `row`, microseconds since the Unix epoch.
    pub fn created_ts(&self, row: usize) -> Option<i64> {
        let created = self.created_ts.as_ref()?;
        created.is_valid(row).then(|| created.value(row))
    }

    /// The value bytes of feature `feature` (index into `ViewTable::features`) at `row`;
    /// `None` when the cell is null.
    pub fn value(&self, feature: usize, row: usize) -> Option<&[u8]> {
        let column = &self.features[feature];
        column.is_valid(row).then(|| column.value(row))
    }

    /// The rows that win within this batch: for each distinct key, the row with the greatest
    /// event time, on ties the last such row. Row indexes in order of each key's first
    /// appearance.
    pub fn newest_per_key(&self) -> Vec<usize> {
        let mut winners: Vec<usize> = Vec::with_capacity(self.len());
        let mut slot_of: HashMap<&[u8], usize> = HashMap::with_capacity(self.len());
        for row in 0..self.len() {
            match slot_of.entry(self.key(row)) {
                Entry::Vacant(e) => {
                    e.insert(winners.len());
                    winners.push(row);
                }
                Entry::Occupied(e) => {
                    let best = &mut winners[*e.get()];
                    if self.event_ts(row) >= self.event_ts(*best) {
                        *best = row;
                    }
                }
            }
        }
        winners
    }
}

fn first_null(array: &dyn Array) -> Option<usize> {
    if array.null_count() == 0 {
        return None;
    }
    (0..array.len()).find(|&i| array.is_null(i))
}

fn binary(name: &str, column: &dyn Array) -> Result<BinaryArray, OnlineError> {
    match column.data_type() {
        DataType::Binary => Ok(column.as_binary::<i32>().clone()),
        other => Err(OnlineError::invalid(format!(
            "column `{name}` is {other}, expected Binary"
        ))),
    }
}

fn timestamp(name: &str, column: &dyn Array) -> Result<TimestampMicrosecondArray, OnlineError> {
    match column.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Ok(column.as_primitive::<TimestampMicrosecondType>().clone())
        }
        other => Err(OnlineError::invalid(format!(
            "column `{name}` is {other}, expected Timestamp(Microsecond, \"UTC\")"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};

    use super::*;
    use crate::store::write_schema;

    fn batch(keys: &[&[u8]], ts: &[i64]) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from(keys.to_vec())),
            Arc::new(TimestampMicrosecondArray::from(ts.to_vec()).with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from(vec![None; keys.len()]).with_timezone("UTC")),
            Arc::new(BinaryArray::from(vec![Some(&b"v"[..]); keys.len()])),
        ];
        RecordBatch::try_new(write_schema(&["f"]), columns).unwrap()
    }

    fn table() -> ViewTable {
        ViewTable::new("p", "v", ["f"])
    }

    #[test]
    fn newest_per_key_prefers_later_rows_on_ties() {
        let rows = WriteRows::new(
            &table(),
            &batch(&[b"a", b"b", b"a", b"a", b"b"], &[5, 1, 7, 7, 0]),
        )
        .unwrap();
        assert_eq!(rows.newest_per_key(), vec![3, 1]);
    }

    #[test]
    fn rejects_mistyped_and_unexpected_columns() {
        let good = batch(&[b"a"], &[1]);
        let mistyped = RecordBatch::try_from_iter([
            ("entity_key", good.column(0).clone()),
            ("event_ts", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("f", good.column(3).clone()),
        ])
        .unwrap();
        let err = WriteRows::new(&table(), &mistyped).unwrap_err();
        assert!(err.to_string().contains("`event_ts` is Int64"), "{err}");

        let extra = RecordBatch::try_from_iter([
            ("entity_key", good.column(0).clone()),
            ("event_ts", good.column(1).clone()),
            ("f", good.column(3).clone()),
            ("g", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ])
        .unwrap();
        let err = WriteRows::new(&table(), &extra).unwrap_err();
        assert!(err.to_string().contains("`g`"), "{err}");
    }
}
