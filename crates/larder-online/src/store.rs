//! The `OnlineStore` trait, the table a view occupies, and the Arrow shapes that cross it.

use std::cell::RefCell;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use async_trait::async_trait;

use crate::error::OnlineError;
use crate::kept::find_or_keep;

/// Name of the serialized entity key column of a write batch.
pub const ENTITY_KEY: &str = "entity_key";
/// Name of the event timestamp column of write batches and read results.
pub const EVENT_TS: &str = "event_ts";
/// Name of the (optional) created timestamp column of a write batch.
pub const CREATED_TS: &str = "created_ts";

/// One view's table/key space in the online store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ViewTable {
    pub project: String,
    /// The view name as stored (Feast's `name_vN` when online versioning is on).
    pub view: String,
    /// Feature names in schema order: the feature columns a write batch must have.
    pub features: Vec<String>,
}

impl ViewTable {
    pub fn new(
        project: impl Into<String>,
        view: impl Into<String>,
        features: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        ViewTable {
            project: project.into(),
            view: view.into(),
            features: features.into_iter().map(Into::into).collect(),
        }
    }
}

/// What a backend can do, declared up front.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnlineCapabilities {
    /// Writes are newest-wins per entity key (see [`OnlineStore::write_batch`]).
    pub newest_wins: bool,
    /// The store itself hides rows older than the view's ttl. The facade applies the ttl
    /// either way; this only says whether stale rows also leave the store.
    pub ttl_on_read: bool,
    /// Several processes (a server and a materialization) may use the store at once.
    pub cross_process: bool,
    /// Most keys one [`OnlineStore::read`] accepts; `None` = no limit (backends chunk
    /// internally).
    pub max_keys_per_read: Option<usize>,
}

/// One view's part of [`OnlineStore::read_many`].
#[derive(Clone, Copy, Debug)]
pub struct ReadRequest<'a> {
    pub table: &'a ViewTable,
    pub keys: &'a [&'a [u8]],
    pub features: &'a [&'a str],
    /// What [`OnlineStore::prepare_read`] returned for this table and these features, when
    /// the caller kept it; `None` otherwise (the store then works it out for this read).
    pub prepared: Option<&'a PreparedRead>,
}

/// What a store works out once for reading some features of one view (field names,
/// statement text), for the caller to keep with its plan and hand back with every read of
/// the same table and features ([`ReadRequest::prepared`]). Opaque to the caller; a store
/// checks that what it gets back is its own and matches the request, and ignores it if not.
pub type PreparedRead = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// Where the latest feature values of every entity key live, read at serving time.
///
/// Backends are built once and shared as `Arc<dyn OnlineStore>`; every method may be
/// called concurrently. Data crosses as Arrow record batches; feature values are serialized
/// `feast.types.Value` bytes, entity keys are Feast-serialized entity keys.
#[async_trait]
pub trait OnlineStore: Send + Sync + std::fmt::Debug {
    /// What this backend can do. Constant for the life of the store.
    fn capabilities(&self) -> OnlineCapabilities;

    /// Writes the rows of one view; returns how many rows were written (not skipped).
    ///
    /// `rows` has, looked up by name: `entity_key` (`Binary`, non-null: the Feast-serialized
    /// entity key), `event_ts` (`Timestamp(Microsecond, _)`, non-null; the time zone
    /// annotation is ignored since Arrow stores UTC instants), optionally `created_ts`
    /// (`Timestamp(Microsecond, _)`, nullable), and one `Binary` column per name in
    /// `table.features`, named like the feature. No other column is allowed.
    ///
    /// A feature cell is the serialized `feast.types.Value`. A non-null cell is stored as
    /// given, so an empty cell (the encoded null `Value`) reads back as an empty, non-null
    /// cell: the feature was written, with a null value. A null cell means the feature is
    /// missing from the row and reads back as null.
    ///
    /// Newest wins per entity key: a row whose `event_ts` is older than the stored one never
    /// overwrites it; an equal `event_ts` overwrites (a correction for the same event time
    /// lands). Within one batch the same key may appear several times: the newest row wins,
    /// on equal `event_ts` the later row in the batch. A row that wins replaces the whole
    /// stored row of its key: features are written together, a feature null in the new row
    /// is missing afterwards.
    ///
    /// A batch need not be atomic, but a crash never leaves a torn row (some features from
    /// one write, some from another). Writing to a view whose table does not exist yet
    /// creates it. An empty batch writes nothing and returns 0.
    ///
    /// Errors: [`OnlineError::InvalidRequest`] naming the column for a missing, mistyped or
    /// unexpected column, a null `entity_key` or `event_ts`, or a feature named twice or
    /// like one of the reserved columns; backend errors otherwise.
    async fn write_batch(&self, table: &ViewTable, rows: RecordBatch) -> Result<u64, OnlineError>;

    /// Reads the newest stored row of each of `keys` (serialized entity keys, duplicates
    /// allowed) in one round trip.
    ///
    /// The result is aligned with `keys`: same length, same order, a duplicate key gives
    /// the same row again. Columns (see [`read_schema`]): `event_ts`
    /// (`Timestamp(Microsecond, "UTC")`, null when the key is not found), then one
    /// nullable `Binary` column per entry of `features`, in that order, named like it (a
    /// name may repeat): the stored `feast.types.Value` bytes, null when the key is not
    /// found or the feature was missing from its row (never written, written as a null
    /// cell, or not part of the view when the row was written).
    ///
    /// A view whose table does not exist (not materialized yet, or deleted) reads as all
    /// keys not found, not as an error. No ttl is applied unless
    /// [`OnlineCapabilities::ttl_on_read`] says so.
    ///
    /// Errors: [`OnlineError::Corrupt`] when stored bytes cannot be decoded; backend errors.
    async fn read(
        &self,
        table: &ViewTable,
        keys: &[&[u8]],
        features: &[&str],
    ) -> Result<RecordBatch, OnlineError>;

    /// Reads several views, one result per request in the same order, each as
    /// [`read`](OnlineStore::read) would return it. Backends override this to use one
    /// round trip (and, where they can, one consistent snapshot) for all views; the
    /// default reads the views one after the other.
    async fn read_many(
        &self,
        requests: &[ReadRequest<'_>],
    ) -> Result<Vec<RecordBatch>, OnlineError> {
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            out.push(
                self.read(request.table, request.keys, request.features)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Reads like [`read_many`](OnlineStore::read_many), handing each stored row to `visit`
    /// instead of building record batches: `visit(request, key, row)` for every key found,
    /// `key` being its position in that request's `keys`, `row.values` the stored bytes of
    /// each of the request's `features` in that order (`None` as a null cell of `read`).
    /// Keys not found are not visited. A visitor error ends the read and is returned.
    ///
    /// The online serving path reads this way: it decodes values straight from the store's
    /// reply. The default reads the batches of `read_many` and walks them; backends whose
    /// replies can be walked in place override it.
    async fn read_rows(
        &self,
        requests: &[ReadRequest<'_>],
        visit: &mut RowVisitor<'_>,
    ) -> Result<(), OnlineError> {
        let batches = self.read_many(requests).await?;
        visit_batches(requests, &batches, visit)
    }

    /// Whether a read of many keys is worth splitting over two threads right now: the store
    /// reads in this process (CPU work, no network round trip to save) and no other read
    /// is running (under concurrent reads the cores are busy anyway and the hand-off is pure
    /// cost). The default: never.
    fn split_read_hint(&self) -> bool {
        false
    }

    /// Works out, once, what reads of `features` of `table` need, for the caller to hand
    /// back in [`ReadRequest::prepared`] (a feature server keeps it with its cached plan).
    /// The default: nothing to prepare.
    fn prepare_read(&self, table: &ViewTable, features: &[&str]) -> Option<PreparedRead> {
        let _ = (table, features);
        None
    }

    /// The order this store's index keeps keys in, when it is not the serialized keys' own
    /// byte order: a function giving each key an 8-byte prefix that sorts, as bytes, in
    /// the store's order. Materialization sorts its rows by prefix, then key, so the
    /// writes of a batch land on neighbouring pages instead of all over the index. `None`
    /// (the default): the keys' own order serves.
    fn write_order(&self) -> Option<WriteOrderFn> {
        None
    }

    /// Creates the tables of `keep` and drops those of `delete` (with all their rows).
    /// Idempotent: keeping an existing table leaves its rows, deleting a missing one is a
    /// no-op; a table in both lists ends up existing and empty. Errors: [`OnlineError::IncompatibleTable`] when a table to keep exists with
    /// another layout; backend errors.
    async fn update_infra(
        &self,
        keep: &[ViewTable],
        delete: &[ViewTable],
    ) -> Result<(), OnlineError>;

    /// Removes everything stored for these views (project teardown). Idempotent.
    async fn teardown(&self, tables: &[ViewTable]) -> Result<(), OnlineError>;
}

/// See [`OnlineStore::write_order`].
pub type WriteOrderFn = fn(&[u8]) -> [u8; 8];

/// A stored row handed to a [`OnlineStore::read_rows`] visitor.
#[derive(Clone, Copy, Debug)]
pub struct FoundRow<'a> {
    /// The row's event time, µs since the epoch.
    pub event_ts: i64,
    /// Per requested feature, in request order: the stored `feast.types.Value` bytes, `None`
    /// when the feature is missing from the row.
    pub values: &'a [Option<&'a [u8]>],
}

/// The visitor of [`OnlineStore::read_rows`]: `(request, key position, row)`.
pub type RowVisitor<'v> =
    dyn FnMut(usize, usize, FoundRow<'_>) -> Result<(), OnlineError> + Send + 'v;

/// Hands the found rows of `batches` (one per request, as [`OnlineStore::read_many`]
/// returns them) to `visit`.
pub fn visit_batches(
    requests: &[ReadRequest<'_>],
    batches: &[RecordBatch],
    visit: &mut RowVisitor<'_>,
) -> Result<(), OnlineError> {
    if batches.len() != requests.len() {
        return Err(OnlineError::internal(format!(
            "{} views read returned {} results",
            requests.len(),
            batches.len()
        )));
    }
    let mut values: Vec<Option<&[u8]>> = Vec::new();
    for (r, (request, batch)) in requests.iter().zip(batches).enumerate() {
        let shape_error = || {
            OnlineError::internal(format!(
                "the read of view `{}` returned {} rows and {} columns, expected {} and {}",
                request.table.view,
                batch.num_rows(),
                batch.num_columns(),
                request.keys.len(),
                request.features.len() + 1
            ))
        };
        if batch.num_rows() != request.keys.len()
            || batch.num_columns() != request.features.len() + 1
        {
            return Err(shape_error());
        }
        let event_ts = batch
            .column(0)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(shape_error)?;
        let columns = batch.columns()[1..]
            .iter()
            .map(|c| c.as_binary_opt::<i32>().ok_or_else(shape_error))
            .collect::<Result<Vec<_>, _>>()?;
        for key in 0..batch.num_rows() {
            if event_ts.is_null(key) {
                continue;
            }
            values.clear();
            values.extend(
                columns
                    .iter()
                    .map(|c| c.is_valid(key).then(|| c.value(key))),
            );
            let row = FoundRow {
                event_ts: event_ts.value(key),
                values: &values,
            };
            visit(r, key, row)?;
        }
    }
    Ok(())
}

/// The schema of a write batch for `features` (with the optional `created_ts` column).
pub fn write_schema(features: &[&str]) -> SchemaRef {
    let mut fields = Vec::with_capacity(features.len() + 3);
    fields.push(Field::new(ENTITY_KEY, DataType::Binary, false));
    fields.push(Field::new(EVENT_TS, timestamp_type(), false));
    fields.push(Field::new(CREATED_TS, timestamp_type(), true));
    fields.extend(
        features
            .iter()
            .map(|name| Field::new(*name, DataType::Binary, true)),
    );
    Arc::new(Schema::new(fields))
}

/// The schema of a read result for `features`.
///
/// Remembered per thread for the last [`READ_SCHEMAS_KEPT`] feature lists: a server asks
/// for the same few lists request after request, and building one costs an allocation per
/// field.
pub fn read_schema(features: &[&str]) -> SchemaRef {
    thread_local! {
        static KEPT: RefCell<Vec<SchemaRef>> = const { RefCell::new(Vec::new()) };
    }
    let matches = |schema: &SchemaRef| {
        let fields = schema.fields();
        fields.len() == features.len() + 1
            && fields
                .iter()
                .skip(1)
                .zip(features)
                .all(|(field, name)| field.name() == name)
    };
    KEPT.with_borrow_mut(|kept| {
        find_or_keep(kept, READ_SCHEMAS_KEPT, matches, || {
            let mut fields = Vec::with_capacity(features.len() + 1);
            fields.push(Field::new(EVENT_TS, timestamp_type(), true));
            fields.extend(
                features
                    .iter()
                    .map(|name| Field::new(*name, DataType::Binary, true)),
            );
            Arc::new(Schema::new(fields))
        })
    })
}

/// How many read schemas [`read_schema`] keeps per thread.
const READ_SCHEMAS_KEPT: usize = 16;

/// `Timestamp(Microsecond, "UTC")`, the type of `event_ts` and `created_ts`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}
