//! Postgres data sources: a view's rows as a SQL select (columns found, renamed by
//! `field_mapping`, typed as declared), the schema of a table, and offline pushes into it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use larder_spec::{DataSource, Definitions, PostgresSource, ResolvedView, SourceKind};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use super::config::quote_ident;
use super::types::{ColumnType, Encoded, cast_for};
use super::{PostgresOfflineStore, STORE};
use crate::error::OfflineError;

/// A view's source rows as SQL: `SELECT` of `__k0..` (typed as the entities), `__ts`,
/// `__created` (both `timestamptz`, `__created` null without a created column), then
/// `__f0..` typed as declared.
pub(crate) struct ViewSource {
    pub select: String,
    pub key_types: Vec<ColumnType>,
    pub feature_types: Vec<ColumnType>,
}

/// The `FROM` item of a source: its table as written (it may name a schema), or its query
/// as a subquery.
pub(crate) fn from_item(source: &PostgresSource) -> String {
    match (&source.table, &source.query) {
        (Some(table), _) => table.clone(),
        (None, Some(query)) => format!("({})", trim_query(query)),
        (None, None) => "(SELECT 1)".into(),
    }
}

/// A query as a subquery needs no trailing `;`.
pub(crate) fn trim_query(query: &str) -> &str {
    query.trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// Where a source's rows are, for messages: its table, or its query.
pub(crate) fn location(source: &PostgresSource) -> String {
    match (&source.table, &source.query) {
        (Some(table), _) => table.clone(),
        (None, Some(query)) => {
            let one_line = query.split_whitespace().collect::<Vec<_>>().join(" ");
            if one_line.chars().count() > 80 {
                format!("{}...", one_line.chars().take(77).collect::<String>())
            } else {
                one_line
            }
        }
        (None, None) => String::new(),
    }
}

/// The postgres source `view` reads, or an error naming the view when it has another kind.
pub(crate) fn postgres_source<'a>(
    definitions: &'a Definitions,
    view: &ResolvedView,
) -> Result<(&'a DataSource, &'a PostgresSource), OfflineError> {
    let name = &view.view.batch_source;
    let source = definitions.data_sources.get(name).ok_or_else(|| {
        OfflineError::execution(datafusion::error::DataFusionError::Plan(format!(
            "data source `{name}` of feature view `{}` is not in the registry",
            view.view.name
        )))
    })?;
    match &source.kind {
        SourceKind::Postgres(pg) => Ok((source, pg)),
        other => Err(OfflineError::UnsupportedSource {
            source_name: name.to_string(),
            view: view.view.name.to_string(),
            store: STORE,
            kind: other.type_name(),
        }),
    }
}

/// The columns of `from` (name, type) without reading a row.
pub(crate) async fn columns_of(
    client: &tokio_postgres::Client,
    from: &str,
) -> Result<Vec<(String, Type)>, tokio_postgres::Error> {
    let statement = client
        .prepare(&format!("SELECT * FROM {from} AS \"__s\" LIMIT 0"))
        .await?;
    Ok(statement
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().clone()))
        .collect())
}

/// `CAST(expr AS ty)`, or `expr` when it has that type already.
fn cast(expr: String, from: &Type, to: ColumnType) -> String {
    if *from == to.pg_type() {
        expr
    } else {
        format!("CAST({expr} AS {})", to.sql())
    }
}

/// The select of `view`'s source rows (see [`ViewSource`]).
pub(crate) async fn view_source(
    store: &PostgresOfflineStore,
    client: &tokio_postgres::Client,
    definitions: &Definitions,
    view: &ResolvedView,
) -> Result<ViewSource, OfflineError> {
    let (source, pg) = postgres_source(definitions, view)?;
    let read_error = |message: String| OfflineError::SourceRead {
        source_name: source.name.to_string(),
        path: location(pg),
        message,
    };
    let from = from_item(pg);
    let columns = columns_of(client, &from)
        .await
        .map_err(|e| match store.backend_error(&e) {
            unavailable @ OfflineError::Unavailable { .. } => unavailable,
            _ => read_error(super::describe(&e)),
        })?;
    let types: HashMap<&str, &Type> = columns.iter().map(|(n, t)| (n.as_str(), t)).collect();
    // Feature/entity name → source column.
    let source_column: HashMap<&str, &str> = pg
        .field_mapping
        .iter()
        .map(|(src, name)| (name.as_str(), src.as_str()))
        .collect();
    let available = || {
        columns
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lookup = |name: &str| -> Result<(String, &Type), OfflineError> {
        let column = source_column.get(name).copied().unwrap_or(name);
        let ty = types.get(column).ok_or_else(|| {
            read_error(format!(
                "no column `{column}` (needed for `{name}`); its columns: {}",
                available()
            ))
        })?;
        Ok((format!("\"__s\".{}", quote_ident(column)), ty))
    };
    let timestamp = |name: &str| -> Result<String, OfflineError> {
        // The timestamp fields name source columns; a mapped name works as well.
        let (expr, ty) = match types.get(name) {
            Some(ty) => (format!("\"__s\".{}", quote_ident(name)), *ty),
            None => lookup(name)?,
        };
        if !matches!(*ty, Type::TIMESTAMPTZ | Type::TIMESTAMP | Type::DATE) {
            return Err(read_error(format!(
                "column `{name}` is {ty}, not a timestamp (timestamptz, timestamp or date)"
            )));
        }
        Ok(cast(
            expr,
            ty,
            ColumnType::of_value_type(larder_types::ValueType::Scalar(
                larder_types::ScalarType::UnixTimestamp,
            )),
        ))
    };
    let mut exprs = Vec::new();
    let mut key_types = Vec::new();
    for (j, ((key, _), entity_column)) in view
        .join_key_columns
        .iter()
        .zip(&view.view.entity_columns)
        .enumerate()
    {
        let (expr, ty) = lookup(key.as_str())?;
        let wanted = ColumnType::of_value_type(entity_column.dtype);
        exprs.push(format!("{} AS \"__k{j}\"", cast(expr, ty, wanted)));
        key_types.push(wanted);
    }
    exprs.push(format!("{} AS \"__ts\"", timestamp(&pg.timestamp_field)?));
    match &pg.created_timestamp_column {
        Some(created) => exprs.push(format!("{} AS \"__created\"", timestamp(created)?)),
        None => exprs.push("NULL::timestamptz AS \"__created\"".into()),
    }
    let mut feature_types = Vec::new();
    for (i, (field, _)) in view.features.iter().enumerate() {
        let (expr, ty) = lookup(field.name.as_str())?;
        let wanted = ColumnType::of_value_type(field.dtype);
        exprs.push(format!("{} AS \"__f{i}\"", cast(expr, ty, wanted)));
        feature_types.push(wanted);
    }
    Ok(ViewSource {
        select: format!("SELECT {} FROM {from} AS \"__s\"", exprs.join(", ")),
        key_types,
        feature_types,
    })
}

/// The table a push may append to, or why there is none.
fn appendable(source: &DataSource) -> Result<&PostgresSource, OfflineError> {
    let refuse = |reason: String| OfflineError::UnsupportedAppend {
        source_name: source.name.to_string(),
        reason,
    };
    match &source.kind {
        SourceKind::Postgres(pg) if pg.table.is_some() => Ok(pg),
        SourceKind::Postgres(_) => Err(refuse(
            "it is defined by a `query`; only a postgres source with a `table` can be appended to"
                .into(),
        )),
        other => Err(refuse(format!(
            "it is a {} source; the postgres offline store appends to postgres tables",
            other.type_name()
        ))),
    }
}

/// A table's columns with the store's reading of their types; an error names a column
/// whose type the store does not map.
async fn table_columns(
    store: &PostgresOfflineStore,
    client: &tokio_postgres::Client,
    source: &DataSource,
    pg: &PostgresSource,
) -> Result<Vec<(String, Type, ColumnType)>, OfflineError> {
    let read_error = |message: String| OfflineError::SourceRead {
        source_name: source.name.to_string(),
        path: location(pg),
        message,
    };
    let columns =
        columns_of(client, &from_item(pg))
            .await
            .map_err(|e| match store.backend_error(&e) {
                unavailable @ OfflineError::Unavailable { .. } => unavailable,
                _ => read_error(super::describe(&e)),
            })?;
    columns
        .into_iter()
        .map(|(name, ty)| match ColumnType::of(&ty) {
            Some(column) => Ok((name, ty, column)),
            None => Err(read_error(format!(
                "column `{name}` has type {ty}, which Larder cannot read or write (use \
                 int2/int4/int8, float4/float8, bool, text, bytea, timestamptz, timestamp, \
                 date or arrays of them)"
            ))),
        })
        .collect()
}

pub(crate) async fn source_schema(
    store: &PostgresOfflineStore,
    source: &DataSource,
) -> Result<SchemaRef, OfflineError> {
    let pg = appendable(source)?;
    let client = store.connect().await?;
    let columns = table_columns(store, &client, source, pg).await?;
    Ok(Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, _, ty)| Field::new(name, ty.arrow(), true))
            .collect::<Vec<_>>(),
    )))
}

/// Writes `batches` into `table` (a quoted name) with one binary COPY, in the columns
/// `columns` (name, Postgres type, the store's type), each taken from the batch column of
/// that name. Returns the rows written.
pub(crate) async fn copy_in(
    client: &tokio_postgres::Client,
    table: &str,
    columns: &[(String, Type, ColumnType)],
    batches: impl IntoIterator<Item = RecordBatch>,
) -> Result<u64, CopyError> {
    let names: Vec<String> = columns.iter().map(|(n, _, _)| quote_ident(n)).collect();
    let sink = client
        .copy_in::<_, bytes::Bytes>(&format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            names.join(", ")
        ))
        .await
        .map_err(CopyError::Postgres)?;
    let types: Vec<Type> = columns.iter().map(|(_, t, _)| t.clone()).collect();
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for batch in batches {
        let mut cast = Vec::with_capacity(columns.len());
        for (name, _, ty) in columns {
            let array = batch
                .column_by_name(name)
                .ok_or_else(|| CopyError::Data(format!("the rows have no column `{name}`")))?;
            cast.push(
                cast_for(array, *ty)
                    .map_err(|message| CopyError::Data(format!("column `{name}`: {message}")))?,
            );
        }
        let encoded: Vec<Encoded<'_>> = cast
            .iter()
            .zip(columns)
            .map(|(array, (_, _, ty))| Encoded::new(array, *ty))
            .collect();
        let mut row: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            Vec::with_capacity(columns.len());
        for i in 0..batch.num_rows() {
            row.clear();
            row.extend(encoded.iter().map(|c| c.value(i)));
            writer
                .as_mut()
                .write(&row)
                .await
                .map_err(CopyError::Postgres)?;
        }
    }
    writer.finish().await.map_err(CopyError::Postgres)
}

/// Why a [`copy_in`] failed: the rows, or Postgres.
pub(crate) enum CopyError {
    Data(String),
    Postgres(tokio_postgres::Error),
}

pub(crate) async fn append(
    store: &PostgresOfflineStore,
    source: &DataSource,
    rows: RecordBatch,
) -> Result<crate::store::AppendReport, OfflineError> {
    let pg = appendable(source)?;
    let table = pg.table.clone().unwrap_or_default();
    let client = store.connect().await?;
    let columns = table_columns(store, &client, source, pg).await?;
    let failed = |message: String| OfflineError::AppendFailed {
        source_name: source.name.to_string(),
        path: format!("{table} at {}", store.config.target()),
        message,
    };
    let stored: Vec<&str> = columns.iter().map(|(n, _, _)| n.as_str()).collect();
    let given: Vec<String> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    if given.len() != stored.len() || stored.iter().any(|c| !given.iter().any(|g| g == c)) {
        return Err(OfflineError::UnsupportedAppend {
            source_name: source.name.to_string(),
            reason: format!(
                "the rows have columns [{}] but table `{table}` has [{}]",
                given.join(", "),
                stored.join(", ")
            ),
        });
    }
    let count = rows.num_rows() as u64;
    if count == 0 {
        return Ok(crate::store::AppendReport {
            rows: 0,
            location: format!("postgres table `{table}`"),
        });
    }
    let written = copy_in(&client, &table, &columns, [rows])
        .await
        .map_err(|e| match e {
            CopyError::Data(message) => failed(message),
            CopyError::Postgres(e) => match store.backend_error(&e) {
                unavailable @ OfflineError::Unavailable { .. } => unavailable,
                _ => failed(super::describe(&e)),
            },
        })?;
    tracing::debug!(
        source = source.name.as_str(),
        table,
        rows = written,
        "rows appended"
    );
    Ok(crate::store::AppendReport {
        rows: written,
        location: format!("postgres table `{table}`"),
    })
}
