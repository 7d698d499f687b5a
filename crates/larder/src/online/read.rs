//! The read step of an online request: entity values → keys → one store round trip →
//! values with statuses.

use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use larder_online::read::KeyIndex;
use larder_online::{FoundRow, OnlineError, OnlineStore, ReadRequest};
use larder_types::feast::{
    ByteRows, KeyVersion, Value, coerce_entity_value, serialize_key_values_into,
    serialize_single_key_into,
};

use larder_types::feast::DUMMY_JOIN_KEY;

use super::plan::{OnlinePlan, PlanView};
use super::response::Cells;
use super::{EntityColumns, FieldStatus, OnlineRequestError, OnlineResponse};
use crate::error::Error;

/// Reads compiled plans from one online store. Cheap to clone and share: it is the store
/// handle and the entity key format.
#[derive(Clone, Debug)]
pub struct OnlineReader {
    store: Arc<dyn OnlineStore>,
    key_version: KeyVersion,
    /// Whether a large request may be split over two threads (see [`Self::with_split_reads`]).
    split_reads: bool,
}

impl OnlineReader {
    pub fn new(store: Arc<dyn OnlineStore>, key_version: KeyVersion) -> Self {
        OnlineReader {
            store,
            key_version,
            split_reads: true,
        }
    }

    /// Whether a request of many keys may be read in two halves at once, when the store
    /// says it pays ([`OnlineStore::split_read_hint`]); on by default. The halves' values
    /// are allocated on one thread and freed on another, which makes the allocator's
    /// per-thread caches hold more memory: the feature server turns it off (its peak RSS
    /// under `bench/server`, with glibc's malloc: 106 MB without, 194 MB with).
    pub fn with_split_reads(mut self, split_reads: bool) -> Self {
        self.split_reads = split_reads;
        self
    }

    pub fn store(&self) -> &Arc<dyn OnlineStore> {
        &self.store
    }

    pub fn key_version(&self) -> KeyVersion {
        self.key_version
    }

    /// Reads the features of `plan` for every entity row, with statuses judged at `now`.
    ///
    /// Join key values are read as their entity's declared type (`"1001"` finds the `Int64`
    /// entity 1001, `5` the `String` entity `"5"`); columns no view needs are ignored.
    /// Duplicate rows are read once. All views go to the store in one
    /// [`read_many`](OnlineStore::read_many) call; a request without rows makes none.
    ///
    /// Statuses: `NOT_FOUND` (null value, timestamp 0) when the entity is absent or its row
    /// lacks the feature; `NULL_VALUE` (null value, the row's timestamp) when the stored
    /// value is null; `OUTSIDE_MAX_AGE` when the view's ttl is not zero and `now - event
    /// time > ttl` (the value is still returned); `PRESENT` otherwise.
    ///
    /// Errors: [`Error::OnlineRequest`] for missing join key columns (naming the view) or
    /// values that do not fit their entity's type; [`Error::Online`] when the store fails
    /// or holds bytes that are not a `feast.types.Value`.
    pub async fn read(
        &self,
        plan: &OnlinePlan,
        entities: &EntityColumns,
        now: DateTime<Utc>,
    ) -> Result<OnlineResponse, Error> {
        let rows = entities.num_rows();
        let sources = locate_key_columns(plan, entities)?;
        let mut coerced = Vec::with_capacity(plan.key_columns.len());
        for (key, &source) in plan.key_columns.iter().zip(&sources) {
            let (name, values) = &entities.columns()[source];
            let values = values
                .iter()
                .enumerate()
                .map(|(row, json)| {
                    coerce_entity_value(json, key.ty).map_err(|source| {
                        OnlineRequestError::InvalidEntityValue {
                            column: name.clone(),
                            row,
                            source,
                        }
                    })
                })
                .collect::<Result<Vec<Value>, _>>()?;
            coerced.push(values);
        }

        let echoed = echoed_keys(entities, &sources);
        let mut response = OnlineResponse::with_names(
            echoed
                .iter()
                .map(|&(column, _)| entities.columns()[column].0.clone())
                .collect(),
            plan.outputs.clone(),
            rows,
        );
        if rows == 0 {
            return Ok(response);
        }

        let keys = self.serialize_keys(plan, &coerced, rows)?;
        echo_join_keys(&echoed, coerced, response.cells_mut());
        let keys_total = rows * plan.views.len();
        let split = self.split_reads && rows >= 2 && keys_total >= SPLIT_READ_KEYS;
        if split && self.store.split_read_hint() {
            self.read_split(plan, keys, rows, now, response.cells_mut())
                .await?;
        } else {
            read_part(
                &*self.store,
                plan,
                &keys,
                rows,
                0..rows,
                now.timestamp_micros(),
                response.cells_mut(),
            )
            .await?;
        }
        Ok(response)
    }

    /// [`read`](Self::read) of the rows' second half on a blocking thread while this one
    /// reads the first half, then the halves put end to end: for a store whose reads are
    /// CPU work in this process (SQLite), both cores share the seeks and the decoding. 100
    /// entities over two views through the Rust API (`bench/online`, three runs each way
    /// on one machine): p50 0.53-0.61 ms on one thread, 0.40-0.50 ms split. Both halves go
    /// through the whole read (store round trip, decoding, statuses), all views of a half
    /// in one `read_many`; each half reads its own snapshot.
    async fn read_split(
        &self,
        plan: &OnlinePlan,
        keys: ByteRows,
        rows: usize,
        now: DateTime<Utc>,
        out: &mut Cells,
    ) -> Result<(), Error> {
        let now = now.timestamp_micros();
        let mid = rows / 2;
        let features = plan.outputs.len();
        let keys = Arc::new(keys);
        let other = {
            let (store, plan, keys) = (self.store.clone(), plan.clone(), keys.clone());
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let mut tail = Cells::with_capacity(features * (rows - mid));
                runtime
                    .block_on(read_part(
                        &*store,
                        &plan,
                        &keys,
                        rows,
                        mid..rows,
                        now,
                        &mut tail,
                    ))
                    .map(|()| tail)
            })
        };
        let mut head = Cells::with_capacity(features * mid);
        let head_read = read_part(&*self.store, plan, &keys, rows, 0..mid, now, &mut head).await;
        let tail = other
            .await
            .map_err(|e| internal(format!("the second half of a split read failed: {e}")))?;
        head_read?;
        let mut tail = tail?;
        if head.len() != features * mid || tail.len() != features * (rows - mid) {
            return Err(internal(format!(
                "the halves of a split read have {} and {} cells, expected {} and {}",
                head.len(),
                tail.len(),
                features * mid,
                features * (rows - mid)
            )));
        }
        // Each column's first half, then its second.
        for c in 0..features {
            head.move_column(c, mid, out);
            tail.move_column(c, rows - mid, out);
        }
        Ok(())
    }

    /// The entity key of every row for every view, view after view (`rows` keys each).
    fn serialize_keys(
        &self,
        plan: &OnlinePlan,
        coerced: &[Vec<Value>],
        rows: usize,
    ) -> Result<ByteRows, Error> {
        let mut keys =
            ByteRows::with_capacity(rows * plan.views.len(), rows * plan.views.len() * 32);
        let mut dummy = Vec::new();
        for view in plan.views.iter() {
            let key_error = |source| OnlineRequestError::EntityKey {
                view: view.table.view.clone(),
                source,
            };
            if view.join_keys.is_empty() {
                // Feast keys every row of an entity-less view as `{__dummy_id: ""}`.
                if dummy.is_empty() {
                    serialize_single_key_into(
                        DUMMY_JOIN_KEY,
                        &Value::string(""),
                        self.key_version,
                        &mut dummy,
                    )
                    .map_err(key_error)?;
                }
                for _ in 0..rows {
                    keys.push_with(|buf| buf.extend_from_slice(&dummy));
                }
                continue;
            }
            // The values were coerced to their entity's type: their keys are serialized as
            // they are, with no Arrow array in between.
            let columns: Vec<&[Value]> = view
                .key_columns
                .iter()
                .map(|&k| coerced[k].as_slice())
                .collect();
            let names: Vec<&str> = view.join_keys.iter().map(String::as_str).collect();
            serialize_key_values_into(&names, &columns, self.key_version, &mut keys)
                .map_err(key_error)?;
        }
        Ok(keys)
    }
}

/// Fewest keys (entity rows × views) a read splits over two threads, when the store says
/// splitting pays ([`OnlineStore::split_read_hint`]).
const SPLIT_READ_KEYS: usize = 48;

/// Reads the entity rows `part` of `keys` (the keys of `rows` rows, view after view) and
/// appends each requested feature's column (`part.len()` cells) to `out`, in response order.
async fn read_part(
    store: &dyn OnlineStore,
    plan: &OnlinePlan,
    keys: &ByteRows,
    rows: usize,
    part: Range<usize>,
    now: i64,
    out: &mut Cells,
) -> Result<(), Error> {
    let indexes: Vec<KeyIndex<'_>> = (0..plan.views.len())
        .map(|v| {
            KeyIndex::new(
                (v * rows + part.start..v * rows + part.end)
                    .map(|i| keys.get(i).unwrap_or_default()),
            )
        })
        .collect();
    let features: Vec<Vec<&str>> = plan
        .views
        .iter()
        .map(|v| v.features.iter().map(String::as_str).collect())
        .collect();
    let requests: Vec<ReadRequest<'_>> = plan
        .views
        .iter()
        .zip(&indexes)
        .zip(&features)
        .map(|((view, index), features)| ReadRequest {
            table: &view.table,
            keys: index.unique(),
            features,
            prepared: view
                .prepared
                .get_or_init(|| store.prepare_read(&view.table, features))
                .as_ref(),
        })
        .collect();
    // Per view, per distinct key, per feature: the cell, row-major; a key the store does
    // not visit stays not found.
    let mut cells: Vec<Vec<Cell>> = plan
        .views
        .iter()
        .zip(&indexes)
        .map(|(view, index)| vec![Cell::not_found(); index.unique().len() * view.features.len()])
        .collect();
    let mut visit = |r: usize, key: usize, row: FoundRow<'_>| -> Result<(), OnlineError> {
        let (Some(view), Some(out)) = (plan.views.get(r), cells.get_mut(r)) else {
            return Err(OnlineError::Internal {
                message: format!("a read of {} views visited view {r}", plan.views.len()),
            });
        };
        let n = view.features.len();
        let out = out.get_mut(key * n..(key + 1) * n);
        let Some(out) = out.filter(|_| row.values.len() == n) else {
            return Err(OnlineError::Internal {
                message: format!(
                    "the read of view `{}` visited key {key} with {} values, expected {n}",
                    view.table.view,
                    row.values.len()
                ),
            });
        };
        for ((cell, bytes), feature) in out.iter_mut().zip(row.values).zip(&view.features) {
            *cell = Cell::stored(view, feature, row.event_ts, *bytes, now)?;
        }
        Ok(())
    };
    store.read_rows(&requests, &mut visit).await?;
    for ((view, index), cells) in plan.views.iter().zip(&indexes).zip(cells) {
        assemble_view(view, index, cells, out);
    }
    Ok(())
}

/// The join key columns a response echoes first: each entity column that is a join key, in
/// request order, with the plan key column its values are read as (the first one read from
/// it: a column that two views type differently is echoed as the first view reads it).
fn echoed_keys(entities: &EntityColumns, sources: &[usize]) -> Vec<(usize, usize)> {
    (0..entities.columns().len())
        .filter_map(|column| {
            let key = sources.iter().position(|&s| s == column)?;
            Some((column, key))
        })
        .collect()
}

/// Appends the echoed join key columns' cells: the values as read (coerced), `PRESENT` at
/// the epoch.
fn echo_join_keys(echoed: &[(usize, usize)], coerced: Vec<Vec<Value>>, out: &mut Cells) {
    let mut coerced: Vec<Option<Vec<Value>>> = coerced.into_iter().map(Some).collect();
    for &(_, key) in echoed {
        let values = coerced[key].take().unwrap_or_default();
        let rows = values.len();
        out.values.extend(values);
        out.statuses
            .extend(std::iter::repeat_n(FieldStatus::Present, rows));
        out.event_timestamps.extend(std::iter::repeat_n(0, rows));
    }
}

/// For each plan key column, the index of the entity column holding it; an error naming
/// the first view whose join keys are not all given.
fn locate_key_columns(plan: &OnlinePlan, entities: &EntityColumns) -> Result<Vec<usize>, Error> {
    let found: Vec<Option<usize>> = plan
        .key_columns
        .iter()
        .map(|k| entities.columns().iter().position(|(n, _)| *n == k.column))
        .collect();
    for view in plan.views.iter() {
        let missing: Vec<String> = view
            .key_columns
            .iter()
            .filter(|&&k| found[k].is_none())
            .map(|&k| plan.key_columns[k].column.clone())
            .collect();
        if !missing.is_empty() {
            return Err(OnlineRequestError::MissingJoinKeys {
                view: view.table.view.clone(),
                missing,
            }
            .into());
        }
    }
    found
        .into_iter()
        .zip(plan.key_columns.iter())
        .map(|(f, k)| {
            f.ok_or_else(|| internal(format!("join key column `{}` of no view", k.column)))
        })
        .collect()
}

/// One read cell: the value, its status and its event time.
#[derive(Clone, Debug)]
struct Cell {
    value: Value,
    status: FieldStatus,
    event_ts: i64,
}

impl Cell {
    fn not_found() -> Self {
        Cell {
            value: Value::default(),
            status: FieldStatus::NotFound,
            event_ts: 0,
        }
    }

    /// The cell of a stored row's `bytes` for `feature` (`None`: missing from the row).
    fn stored(
        view: &PlanView,
        feature: &str,
        event_ts: i64,
        bytes: Option<&[u8]>,
        now: i64,
    ) -> Result<Self, OnlineError> {
        let Some(bytes) = bytes else {
            return Ok(Cell::not_found());
        };
        let null = Cell {
            value: Value::default(),
            status: FieldStatus::NullValue,
            event_ts,
        };
        if bytes.is_empty() {
            return Ok(null);
        }
        let value = Value::from_bytes(bytes).map_err(|e| OnlineError::Corrupt {
            message: format!(
                "feature `{}:{feature}` holds bytes that are not a feast.types.Value: {e}",
                view.table.view
            ),
        })?;
        if value.is_null() {
            return Ok(null);
        }
        let outside = view.ttl_micros > 0 && now.saturating_sub(event_ts) > view.ttl_micros;
        let status = if outside {
            FieldStatus::OutsideMaxAge
        } else {
            FieldStatus::Present
        };
        Ok(Cell {
            value,
            status,
            event_ts,
        })
    }
}

/// Appends one column per requested feature of `view`, fanning the cells read (row-major,
/// one row per distinct key) back out to the entity rows.
fn assemble_view(view: &PlanView, index: &KeyIndex<'_>, mut cells: Vec<Cell>, out: &mut Cells) {
    let n = view.features.len();
    let slots = index.slots();
    // The last entity row reading each distinct key: it takes the value, earlier ones
    // (duplicate rows) copy it.
    let mut last = vec![0; index.unique().len()];
    for (row, &slot) in slots.iter().enumerate() {
        last[slot] = row;
    }
    for f in 0..view.outputs.len() {
        for (row, &slot) in slots.iter().enumerate() {
            let cell = &mut cells[slot * n + f];
            let value = if last[slot] == row {
                std::mem::take(&mut cell.value)
            } else {
                cell.value.clone()
            };
            out.push(value, cell.status, cell.event_ts);
        }
    }
}

fn internal(message: String) -> Error {
    Error::Online(OnlineError::Internal { message })
}
