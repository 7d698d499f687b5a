//! Push: rows that a stream job sends straight to the feature store (Feast's `push`,
//! feast-behaviour.md §9, DESIGN.md §3), and Feast's legacy `write_to_online_store`.
//!
//! A push names a push source. Online, the rows are written newest-wins to every online
//! feature view whose source is that push source; offline, they are appended to the push
//! source's batch source (a new file for a file source, never a rewrite). Every column is
//! converted and checked before anything is written, so a bad request writes nothing.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use larder_materialize::convert::WriteBatchEncoder;
use larder_offline::{LATEST_CREATED_TS, LATEST_EVENT_TS};
use larder_online::{ViewTable, timestamp_type};
use larder_spec::{DataSource, Definitions, FeatureView, SourceKind};
use larder_types::ValueType;

use crate::error::Error;

mod json;

use crate::online::EntityColumns;
use crate::store::FeatureStore;
pub use json::parse_timestamp;
use json::{json_array, json_array_as, parse_times};

/// Where pushed rows go (Feast's `PushMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PushMode {
    #[default]
    Online,
    Offline,
    OnlineAndOffline,
}

impl PushMode {
    pub fn online(self) -> bool {
        matches!(self, PushMode::Online | PushMode::OnlineAndOffline)
    }
    pub fn offline(self) -> bool {
        matches!(self, PushMode::Offline | PushMode::OnlineAndOffline)
    }
}

impl FromStr for PushMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "online" => Ok(PushMode::Online),
            "offline" => Ok(PushMode::Offline),
            "online_and_offline" => Ok(PushMode::OnlineAndOffline),
            other => Err(format!(
                "`to` is `{other}`; expected `online`, `offline` or `online_and_offline`"
            )),
        }
    }
}

/// What a push wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Rows written online, per feature view (each view gets every row).
    pub online: Vec<(String, u64)>,
    /// Rows appended offline and where they went.
    pub offline: Option<(u64, String)>,
    /// The latest event time pushed (µs since the epoch), when there were rows.
    pub max_event_micros: Option<i64>,
}

/// Rows to push: JSON columns (the `df` of Feast's HTTP bodies) or an Arrow record batch.
#[derive(Clone, Copy, Debug)]
pub enum PushRows<'a> {
    /// `{"driver_id": [1001], ...}`: values are converted as described at
    /// [`FeatureStore::push`].
    Json(&'a EntityColumns),
    /// Columns are cast to the declared (online) or stored (offline) types with Arrow's
    /// casts; a value that does not convert is an error, not a null.
    Arrow(&'a RecordBatch),
}

impl<'a> From<&'a EntityColumns> for PushRows<'a> {
    fn from(columns: &'a EntityColumns) -> Self {
        PushRows::Json(columns)
    }
}

impl<'a> From<&'a RecordBatch> for PushRows<'a> {
    fn from(batch: &'a RecordBatch) -> Self {
        PushRows::Arrow(batch)
    }
}

const STRICT: arrow::compute::CastOptions<'static> = arrow::compute::CastOptions {
    safe: false,
    format_options: arrow::util::display::FormatOptions::new(),
};

impl PushRows<'_> {
    pub fn num_rows(&self) -> usize {
        match self {
            PushRows::Json(c) => c.num_rows(),
            PushRows::Arrow(b) => b.num_rows(),
        }
    }

    fn names(&self) -> Vec<&str> {
        match self {
            PushRows::Json(c) => c.columns().iter().map(|(n, _)| n.as_str()).collect(),
            PushRows::Arrow(b) => b
                .schema_ref()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect(),
        }
    }

    fn has(&self, name: &str) -> bool {
        match self {
            PushRows::Json(c) => c.column(name).is_some(),
            PushRows::Arrow(b) => b.column_by_name(name).is_some(),
        }
    }

    /// Column `name` read as the Larder type `dtype`; `None` when there is no such column.
    fn typed(&self, name: &str, dtype: ValueType) -> Option<Result<ArrayRef, String>> {
        match self {
            PushRows::Json(c) => c.column(name).map(|values| json_array(values, dtype)),
            PushRows::Arrow(b) => b.column_by_name(name).map(|array| {
                arrow::compute::cast_with_options(array, &dtype.arrow_type(), &STRICT)
                    .map_err(|e| format!("cannot read it as {dtype}: {e}"))
            }),
        }
    }

    /// Column `name` converted to the stored Arrow type `dt`.
    fn as_type(&self, name: &str, dt: &DataType) -> Option<Result<ArrayRef, String>> {
        match self {
            PushRows::Json(c) => c.column(name).map(|values| json_array_as(values, dt)),
            PushRows::Arrow(b) => b.column_by_name(name).map(|array| {
                arrow::compute::cast_with_options(array, dt, &STRICT)
                    .map_err(|e| format!("cannot store it as {dt}: {e}"))
            }),
        }
    }

    /// Column `name` as times (µs since the epoch, UTC).
    fn times(&self, name: &str, target: &str) -> Option<Result<Vec<Option<i64>>, Error>> {
        match self {
            PushRows::Json(c) => c
                .column(name)
                .map(|values| parse_times(values, name, target)),
            PushRows::Arrow(b) => b.column_by_name(name).map(|array| {
                let cast = arrow::compute::cast_with_options(array, &timestamp_type(), &STRICT)
                    .map_err(|e| invalid(target, format!("column `{name}` is not a time: {e}")))?;
                let times = cast
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .ok_or_else(|| invalid(target, format!("column `{name}` is not a time")))?;
                Ok(times.iter().collect())
            }),
        }
    }
}

/// The columns of the batch source a push or online write reads its times from.
struct TimeColumns<'a> {
    timestamp: &'a str,
    created: Option<&'a str>,
    /// Source column → feature/entity name.
    field_mapping: Option<&'a BTreeMap<String, String>>,
}

fn time_columns(source: &DataSource) -> Option<TimeColumns<'_>> {
    match &source.kind {
        SourceKind::File(f) => Some(TimeColumns {
            timestamp: &f.timestamp_field,
            created: f.created_timestamp_column.as_deref(),
            field_mapping: Some(&f.field_mapping),
        }),
        SourceKind::Postgres(p) => Some(TimeColumns {
            timestamp: &p.timestamp_field,
            created: p.created_timestamp_column.as_deref(),
            field_mapping: Some(&p.field_mapping),
        }),
        SourceKind::Push(_) | SourceKind::Request(_) => None,
    }
}

fn invalid(source_name: &str, message: impl Into<String>) -> Error {
    Error::InvalidPush {
        target: source_name.to_string(),
        message: message.into(),
    }
}

impl FeatureStore {
    /// Pushes rows (JSON columns such as the `df` of Feast's `/push` body, or an Arrow record
    /// batch; see [`PushRows`]) to the push source `source_name`, resolved against `defs` (a server
    /// passes its registry snapshot; [`FeatureStore::applied_definitions`] otherwise).
    ///
    /// Online: the columns must hold the join keys and features of every online view fed by
    /// the source, and the batch source's timestamp field (names as in the batch source,
    /// before `field_mapping`); other columns are ignored, as Feast does. Offline: the
    /// column set must equal the batch source's columns exactly. Values are read as the
    /// declared types (offline: as the stored types); times as RFC 3339 or
    /// `YYYY-MM-DD HH:MM:SS[.f][+HH:MM]` strings (no offset: UTC) or numbers of seconds.
    ///
    /// Errors: [`Error::PushSourceNotFound`] for an unknown source; [`Error::InvalidPush`]
    /// for a source that is not a push source or feeds no view, missing or extra columns,
    /// and values that do not fit; store errors.
    pub async fn push(
        &self,
        defs: &Definitions,
        source_name: &str,
        rows: impl Into<PushRows<'_>>,
        to: PushMode,
    ) -> Result<PushReport, Error> {
        let columns = rows.into();
        let Some(source) = defs.data_sources.get(source_name) else {
            return Err(Error::PushSourceNotFound {
                source_name: source_name.to_string(),
                project: defs.project.name.clone(),
            });
        };
        let SourceKind::Push(push) = &source.kind else {
            return Err(invalid(
                source_name,
                format!(
                    "data source `{source_name}` is a {} source, not a push source",
                    source.kind.type_name()
                ),
            ));
        };
        let views: Vec<&FeatureView> = defs
            .feature_views
            .values()
            .filter(|v| v.source.as_str() == source_name)
            .collect();
        if views.is_empty() {
            return Err(invalid(
                source_name,
                format!("push source `{source_name}` feeds no feature view"),
            ));
        }
        let batch_source = defs
            .data_sources
            .get(push.batch_source.as_str())
            .ok_or_else(|| {
                invalid(
                    source_name,
                    format!(
                        "batch source `{}` of push source `{source_name}` is not in the registry",
                        push.batch_source
                    ),
                )
            })?;
        let times = time_columns(batch_source).ok_or_else(|| {
            invalid(
                source_name,
                format!(
                    "batch source `{}` is a {} source and has no timestamp field",
                    batch_source.name,
                    batch_source.kind.type_name()
                ),
            )
        })?;

        // Convert everything before writing anything.
        let mut online = Vec::new();
        let mut max_event_micros = None;
        if to.online() {
            for view in views.iter().filter(|v| v.online) {
                let (table, batch, max_ts) =
                    self.online_batch(view, &columns, &times, source_name)?;
                max_event_micros = max_event_micros.max(max_ts);
                online.push((table, batch));
            }
        }
        let offline = if to.offline() {
            let store = self.offline_store()?;
            let schema = store.source_schema(batch_source).await?;
            let batch = offline_batch(&schema, &columns, source_name, batch_source.name.as_str())?;
            if let Some(micros) = columns.times(times.timestamp, source_name) {
                let micros = micros?;
                max_event_micros = max_event_micros.max(micros.iter().flatten().copied().max());
            }
            Some((store, batch))
        } else {
            None
        };

        let mut report = PushReport {
            max_event_micros,
            ..PushReport::default()
        };
        if columns.num_rows() == 0 {
            // Checked, and nothing to write: no empty file offline.
            return Ok(report);
        }
        if !online.is_empty() {
            let store = self.writable_online_store()?;
            for (table, batch) in online {
                let rows = batch.num_rows() as u64;
                store.write_batch(&table, batch).await?;
                report.online.push((table.view, rows));
            }
        }
        if let Some((store, batch)) = offline {
            let appended = store.append(batch_source, batch).await?;
            report.offline = Some((appended.rows, appended.location));
        }
        Ok(report)
    }

    /// Feast's legacy `write_to_online_store`: rows of one feature view (its join keys,
    /// features and event times, as columns) written newest-wins to the online store.
    /// The event time is read from the batch source's timestamp field, else from
    /// `event_timestamp`; the created time from its created column, else `created` (both
    /// names Feast's remote online store sends). Returns the rows written.
    ///
    /// Errors: [`Error::FeatureViewNotFound`]; [`Error::InvalidPush`] for missing columns
    /// and values that do not fit; store errors.
    pub async fn write_to_online_store(
        &self,
        defs: &Definitions,
        view_name: &str,
        rows: impl Into<PushRows<'_>>,
    ) -> Result<u64, Error> {
        let columns = rows.into();
        let view = defs
            .feature_views
            .get(view_name)
            .ok_or_else(|| Error::FeatureViewNotFound {
                view: view_name.to_string(),
                project: defs.project.name.clone(),
            })?;
        let source = defs.data_sources.get(view.batch_source.as_str());
        let declared = source.and_then(time_columns);
        let timestamp = declared
            .as_ref()
            .map(|t| t.timestamp)
            .filter(|t| columns.has(t))
            .unwrap_or("event_timestamp");
        let created = declared
            .as_ref()
            .and_then(|t| t.created)
            .filter(|c| columns.has(c))
            .or_else(|| columns.has("created").then_some("created"));
        let times = TimeColumns {
            timestamp,
            created,
            field_mapping: declared.as_ref().and_then(|t| t.field_mapping),
        };
        let (table, batch, _) = self.online_batch(view, &columns, &times, view_name)?;
        let rows = batch.num_rows() as u64;
        self.writable_online_store()?
            .write_batch(&table, batch)
            .await?;
        Ok(rows)
    }

    fn writable_online_store(&self) -> Result<Arc<dyn larder_online::OnlineStore>, Error> {
        self.online_store()?.ok_or_else(|| Error::Unsupported {
            what: "writing online features without an online store this build can write".into(),
            hint: "configure `online_store` with type `sqlite`, `redis` or `postgres` in \
                   feature_store.yaml"
                .into(),
        })
    }

    /// The online write batch of `view` from pushed rows, with the latest event time.
    fn online_batch(
        &self,
        view: &FeatureView,
        columns: &PushRows<'_>,
        times: &TimeColumns<'_>,
        target: &str,
    ) -> Result<(ViewTable, RecordBatch, Option<i64>), Error> {
        let source_column = |name: &str| -> String {
            times
                .field_mapping
                .and_then(|m| m.iter().find(|(_, to)| to.as_str() == name))
                .map_or_else(|| name.to_string(), |(from, _)| from.clone())
        };
        let rows = columns.num_rows();
        let mut fields = Vec::with_capacity(view.entity_columns.len() + view.features.len() + 2);
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(fields.capacity());
        let mut typed = |field: &larder_spec::Field, role: &str| -> Result<(), Error> {
            let column = source_column(field.name.as_str());
            let array = columns
                .typed(&column, field.dtype)
                .ok_or_else(|| {
                    invalid(
                        target,
                        format!(
                            "no column `{column}` ({role} of feature view `{}`); the columns are {}",
                            view.name,
                            names(columns)
                        ),
                    )
                })?
                .map_err(|e| invalid(target, format!("column `{column}`: {e}")))?;
            fields.push(Field::new(
                field.name.as_str(),
                array.data_type().clone(),
                true,
            ));
            arrays.push(array);
            Ok(())
        };
        for key in &view.entity_columns {
            typed(key, "join key")?;
        }
        let event = columns.times(times.timestamp, target).ok_or_else(|| {
            invalid(
                target,
                format!(
                    "no column `{}` (the event timestamp of feature view `{}`); the columns are {}",
                    times.timestamp,
                    view.name,
                    names(columns)
                ),
            )
        })??;
        if let Some(row) = event.iter().position(Option::is_none) {
            return Err(invalid(
                target,
                format!("column `{}` is null at row {row}", times.timestamp),
            ));
        }
        let max_ts = event.iter().flatten().copied().max();
        let created = match times.created.and_then(|c| columns.times(c, target)) {
            Some(created) => created?,
            None => vec![None; rows],
        };
        fields.push(Field::new(LATEST_EVENT_TS, timestamp_type(), false));
        arrays.push(Arc::new(
            TimestampMicrosecondArray::from(event).with_timezone("UTC"),
        ));
        fields.push(Field::new(LATEST_CREATED_TS, timestamp_type(), true));
        arrays.push(Arc::new(
            TimestampMicrosecondArray::from(created).with_timezone("UTC"),
        ));
        let mut typed = |field: &larder_spec::Field| -> Result<(), Error> {
            let column = source_column(field.name.as_str());
            let array = columns
                .typed(&column, field.dtype)
                .ok_or_else(|| {
                    invalid(
                        target,
                        format!(
                            "no column `{column}` (feature of feature view `{}`); the columns are {}",
                            view.name,
                            names(columns)
                        ),
                    )
                })?
                .map_err(|e| invalid(target, format!("column `{column}`: {e}")))?;
            fields.push(Field::new(
                field.name.as_str(),
                array.data_type().clone(),
                true,
            ));
            arrays.push(array);
            Ok(())
        };
        for feature in &view.features {
            typed(feature)?;
        }
        let latest = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| invalid(target, format!("cannot assemble the rows: {e}")))?;
        let encoder = WriteBatchEncoder::new(view, self.key_version())
            .map_err(|e| invalid(target, e.to_string()))?;
        let batch = encoder
            .encode(&latest)
            .map_err(|e| invalid(target, e.to_string()))?;
        let table = ViewTable::new(
            self.project(),
            view.name.as_str(),
            view.features.iter().map(|f| f.name.as_str()),
        );
        Ok((table, batch, max_ts))
    }
}

fn names(columns: &PushRows<'_>) -> String {
    let names: Vec<String> = columns.names().iter().map(|n| format!("`{n}`")).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The offline batch: exactly the stored columns, in stored order, with stored types.
fn offline_batch(
    schema: &Schema,
    columns: &PushRows<'_>,
    target: &str,
    batch_source: &str,
) -> Result<RecordBatch, Error> {
    let missing: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| !columns.has(f.name()))
        .map(|f| format!("`{}`", f.name()))
        .collect();
    let extra: Vec<String> = columns
        .names()
        .into_iter()
        .filter(|n| schema.field_with_name(n).is_err())
        .map(|n| format!("`{n}`"))
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("missing {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            parts.push(format!("not in the source {}", extra.join(", ")));
        }
        return Err(invalid(
            target,
            format!(
                "an offline push needs exactly the columns of batch source `{batch_source}`: {}",
                parts.join("; ")
            ),
        ));
    }
    let mut arrays = Vec::with_capacity(schema.fields().len());
    let mut fields = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let array = columns
            .as_type(field.name(), field.data_type())
            .ok_or_else(|| invalid(target, format!("no column `{}`", field.name())))?
            .map_err(|e| invalid(target, format!("column `{}`: {e}", field.name())))?;
        if !field.is_nullable() && array.null_count() > 0 {
            return Err(invalid(
                target,
                format!(
                    "column `{}` holds nulls, which batch source `{batch_source}` does not allow",
                    field.name()
                ),
            ));
        }
        fields.push(field.as_ref().clone());
        arrays.push(array);
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(columns.num_rows())),
    )
    .map_err(|e| invalid(target, format!("cannot assemble the rows: {e}")))
}
