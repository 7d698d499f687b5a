//! Historical retrieval: the entity rows put where Postgres can join them (a temporary
//! table filled by binary COPY, the entity SQL run into one or inlined, or the range-mode
//! rows derived from the sources), then one point-in-time join query streamed back.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use tokio_postgres::types::Type;

use super::config::{EntitySelectMode, quote_ident};
use super::sources::{CopyError, ViewSource, copy_in, view_source};
use super::sql::{JoinView, point_in_time, range_entities};
use super::stream::{CopyOut, copy_out};
use super::types::ColumnType;
use super::{PostgresOfflineStore, describe};
use crate::entity_columns::{check_key_type, key_columns, range_keys, timestamp_column};
use crate::error::OfflineError;
use crate::store::{EntityInput, HistoricalRequest};

/// Temporary tables of this process get distinct names.
static TEMP_TABLES: AtomicU64 = AtomicU64::new(0);

/// One entity column: its name, Postgres type and Arrow reading (text for types Larder
/// does not map, which are then cast to text in the output).
struct EntityColumn {
    name: String,
    arrow: DataType,
    /// Read back as text: Larder does not map its Postgres type.
    as_text: bool,
}

/// Where the entity rows are, as SQL for the `"__e"` common table expression (entity
/// columns plus `__row`, without `__ets`), and what to drop afterwards.
struct Entities {
    select: String,
    columns: Vec<EntityColumn>,
    ts_column: String,
    cleanup: Option<String>,
}

pub(crate) async fn get_historical_features(
    store: &PostgresOfflineStore,
    request: HistoricalRequest,
) -> Result<SendableRecordBatchStream, OfflineError> {
    if request.views.is_empty() {
        return Err(OfflineError::execution(
            datafusion::error::DataFusionError::Plan("no feature views requested".into()),
        ));
    }
    // A bad range is refused before connecting.
    let range_columns = match &request.entities {
        EntityInput::Range { start, end } => Some(range_keys(&request.views, *start, *end)?),
        _ => None,
    };
    let client = store.connect().await?;
    let mut sources = Vec::with_capacity(request.views.len());
    for view in &request.views {
        sources.push(view_source(store, &client, &request.definitions, view).await?);
    }
    let entities = match &request.entities {
        EntityInput::Batches(batches) => {
            let schema = match batches.first() {
                Some(batch) => batch.schema(),
                None => {
                    return Err(OfflineError::EntityFile {
                        path: "the caller's batches".into(),
                        message: "no batches given (not even an empty one with a schema)".into(),
                    });
                }
            };
            let batches = batches.clone();
            upload(
                store,
                &client,
                &request,
                schema,
                "the caller's batches",
                async move { Ok(futures::stream::iter(batches.into_iter().map(Ok)).boxed()) },
            )
            .await?
        }
        EntityInput::File { path, format } => {
            let resolved = resolve(&store.config.repo_dir, path);
            let file_error = |message: String| OfflineError::EntityFile {
                path: path.clone(),
                message,
            };
            // One partition: the file is read in order.
            let ctx = SessionContext::new_with_config(
                SessionConfig::new()
                    .with_target_partitions(1)
                    .with_batch_size(store.config.batch_size.max(1)),
            );
            let frame = crate::file::sources::read_file(&ctx, &resolved, *format)
                .await
                .map_err(|e| file_error(e.to_string()))?;
            let schema: SchemaRef = std::sync::Arc::new(frame.schema().as_arrow().clone());
            upload(store, &client, &request, schema, path, async move {
                let stream = frame.execute_stream().await.map_err(|e| e.to_string())?;
                Ok(stream.map(|b| b.map_err(|e| e.to_string())).boxed())
            })
            .await?
        }
        EntityInput::Sql(query) => entity_sql(store, &client, query).await?,
        EntityInput::Range { start, end } => range(
            &request,
            &sources,
            range_columns.unwrap_or_default(),
            *start,
            *end,
        )?,
    };

    // The output: entity columns (time as UTC, keys typed as their entities), features.
    let key_types = key_columns(
        &request.views,
        &entities
            .columns
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>(),
    )?;
    let mut columns = Vec::with_capacity(entities.columns.len());
    for column in &entities.columns {
        let quoted = format!("\"__e\".{}", quote_ident(&column.name));
        let expr = if column.name == entities.ts_column {
            "\"__e\".\"__ets\"".to_string()
        } else if let Some((_, wanted)) = key_types.iter().find(|(c, _)| *c == column.name) {
            check_key_type(&column.name, &column.arrow, wanted)?;
            match ColumnType::of_arrow(wanted) {
                Some(ty) if column.arrow != *wanted || column.as_text => {
                    format!("CAST({quoted} AS {})", ty.sql())
                }
                _ => quoted,
            }
        } else if column.as_text {
            format!("CAST({quoted} AS text)")
        } else {
            quoted
        };
        columns.push((expr, column.name.clone()));
    }
    let views: Vec<JoinView<'_>> = request
        .views
        .iter()
        .zip(&sources)
        .map(|(view, source)| JoinView {
            source,
            entity_keys: view
                .join_key_columns
                .iter()
                .map(|(_, c)| c.clone())
                .collect(),
            ttl_micros: (!view.view.ttl.is_unbounded())
                .then(|| i64::try_from(view.view.ttl.0.as_micros()).unwrap_or(i64::MAX)),
            outputs: view.features.iter().map(|(_, name)| name.clone()).collect(),
        })
        .collect();
    let entity_cte = format!(
        "SELECT \"__b\".*, CAST(\"__b\".{} AS timestamptz) AS \"__ets\" FROM ({}) AS \"__b\"",
        quote_ident(&entities.ts_column),
        entities.select
    );
    let sql = point_in_time(&entity_cte, &columns, &views);
    tracing::debug!(sql, "postgres point-in-time join");
    let is_sql = matches!(request.entities, EntityInput::Sql(_));
    copy_out(
        store,
        client,
        CopyOut {
            sql,
            non_null: 0,
            rows: None,
            cleanup: entities.cleanup,
        },
        |e| match store.backend_error(e) {
            unavailable @ OfflineError::Unavailable { .. } => unavailable,
            _ if is_sql => OfflineError::EntitySql {
                message: describe(e),
            },
            other => other,
        },
    )
    .await
}

/// A path from the command line, relative to the repo folder unless absolute or a URL.
fn resolve(repo_dir: &Path, path: &str) -> String {
    if path.contains("://") || Path::new(path).is_absolute() {
        path.to_string()
    } else {
        repo_dir.join(path).to_string_lossy().into_owned()
    }
}

fn new_temp_table() -> String {
    format!(
        "larder_entities_{}_{}",
        std::process::id(),
        TEMP_TABLES.fetch_add(1, Ordering::Relaxed)
    )
}

type BatchStream = futures::stream::BoxStream<'static, Result<RecordBatch, String>>;

/// Uploads entity rows of `schema` into a new temporary table, numbered in order.
async fn upload(
    store: &PostgresOfflineStore,
    client: &tokio_postgres::Client,
    request: &HistoricalRequest,
    schema: SchemaRef,
    origin: &str,
    batches: impl std::future::Future<Output = Result<BatchStream, String>>,
) -> Result<Entities, OfflineError> {
    let entity_error = |message: String| OfflineError::EntityFile {
        path: origin.to_string(),
        message,
    };
    // Checked before anything is uploaded.
    let ts_column = timestamp_column(&schema)?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    for (column, wanted) in key_columns(&request.views, &names)? {
        let field = schema
            .field_with_name(&column)
            .map_err(|e| entity_error(e.to_string()))?;
        check_key_type(&column, field.data_type(), &wanted)?;
    }
    let mut table_columns: Vec<(String, Type, ColumnType)> = Vec::new();
    let mut columns = Vec::new();
    for field in schema.fields() {
        let Some(ty) = ColumnType::of_arrow(field.data_type()) else {
            return Err(entity_error(format!(
                "column `{}` is {}, which cannot be uploaded to Postgres",
                field.name(),
                field.data_type()
            )));
        };
        table_columns.push((field.name().clone(), ty.pg_type(), ty));
        columns.push(EntityColumn {
            name: field.name().clone(),
            arrow: ty.arrow(),
            as_text: false,
        });
    }
    let row_type = ColumnType::of_arrow(&DataType::Int64).ok_or_else(|| {
        OfflineError::execution(datafusion::error::DataFusionError::Internal(
            "no postgres type for row numbers".into(),
        ))
    })?;
    table_columns.push(("__row".into(), Type::INT8, row_type));

    let table = quote_ident(&new_temp_table());
    let definition: Vec<String> = table_columns
        .iter()
        .map(|(name, _, ty)| format!("{} {}", quote_ident(name), ty.sql()))
        .collect();
    client
        .batch_execute(&format!(
            "CREATE TEMPORARY TABLE {table} ({})",
            definition.join(", ")
        ))
        .await
        .map_err(|e| store.backend_error(&e))?;
    let mut stream = batches.await.map_err(&entity_error)?;
    let mut next_row = 0i64;
    let mut numbered = Vec::new();
    let mut total = 0u64;
    // Uploaded in bounded chunks: a large entity file is never held whole.
    loop {
        let item = stream.next().await;
        let done = item.is_none();
        if let Some(batch) = item {
            let batch = batch.map_err(&entity_error)?;
            let rows = batch.num_rows() as i64;
            let row_numbers: ArrayRef =
                std::sync::Arc::new(Int64Array::from_iter_values(next_row..next_row + rows));
            next_row += rows;
            let mut fields: Vec<_> = batch.schema().fields().iter().cloned().collect();
            fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(
                "__row",
                DataType::Int64,
                false,
            )));
            let mut arrays = batch.columns().to_vec();
            arrays.push(row_numbers);
            let batch = RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), arrays)
                .map_err(|e| entity_error(e.to_string()))?;
            numbered.push(batch);
        }
        let buffered: usize = numbered.iter().map(RecordBatch::num_rows).sum();
        if (done && !numbered.is_empty()) || buffered >= 65_536 {
            total += copy_in(client, &table, &table_columns, numbered.drain(..))
                .await
                .map_err(|e| match e {
                    CopyError::Data(message) => entity_error(message),
                    CopyError::Postgres(e) => store.backend_error(&e),
                })?;
        }
        if done {
            break;
        }
    }
    client
        .batch_execute(&format!("ANALYZE {table}"))
        .await
        .map_err(|e| store.backend_error(&e))?;
    tracing::debug!(rows = total, table, "entity rows uploaded");
    Ok(Entities {
        select: format!("SELECT * FROM {table}"),
        columns,
        ts_column,
        cleanup: Some(format!("DROP TABLE IF EXISTS {table}")),
    })
}

/// Entity rows from SQL, run into a temporary table or inlined (`entity_select_mode`).
async fn entity_sql(
    store: &PostgresOfflineStore,
    client: &tokio_postgres::Client,
    query: &str,
) -> Result<Entities, OfflineError> {
    let sql_error = |e: &tokio_postgres::Error| match store.backend_error(e) {
        unavailable @ OfflineError::Unavailable { .. } => unavailable,
        _ => OfflineError::EntitySql {
            message: describe(e),
        },
    };
    let numbered = format!(
        "SELECT \"__q\".*, row_number() OVER () AS \"__row\" FROM ({}) AS \"__q\"",
        super::sources::trim_query(query)
    );
    let (select, cleanup, described) = match store.config.entity_select_mode {
        EntitySelectMode::TempTable => {
            let table = quote_ident(&new_temp_table());
            client
                .batch_execute(&format!("CREATE TEMPORARY TABLE {table} AS {numbered}"))
                .await
                .map_err(|e| sql_error(&e))?;
            client
                .batch_execute(&format!("ANALYZE {table}"))
                .await
                .map_err(|e| sql_error(&e))?;
            (
                format!("SELECT * FROM {table}"),
                Some(format!("DROP TABLE IF EXISTS {table}")),
                format!("SELECT * FROM {table}"),
            )
        }
        EntitySelectMode::EmbedQuery => (numbered.clone(), None, numbered),
    };
    let columns = super::sources::columns_of(client, &format!("({described})"))
        .await
        .map_err(|e| sql_error(&e))?;
    let columns: Vec<EntityColumn> = columns
        .into_iter()
        .filter(|(name, _)| name != "__row")
        .map(|(name, ty)| match ColumnType::of(&ty) {
            Some(ty) => EntityColumn {
                name,
                arrow: ty.arrow(),
                as_text: false,
            },
            None => EntityColumn {
                name,
                arrow: DataType::Utf8,
                as_text: true,
            },
        })
        .collect();
    let schema = Schema::new(
        columns
            .iter()
            .map(|c| arrow::datatypes::Field::new(&c.name, c.arrow.clone(), true))
            .collect::<Vec<_>>(),
    );
    let ts_column = timestamp_column(&schema)?;
    Ok(Entities {
        select,
        columns,
        ts_column,
        cleanup,
    })
}

/// Feast's non-entity mode: every (keys, time) of the views' rows in `[start, end]`, the
/// keys in the entity columns `first_keys` (the same for every view, see `range_keys`).
fn range(
    request: &HistoricalRequest,
    sources: &[ViewSource],
    first_keys: Vec<String>,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Result<Entities, OfflineError> {
    let first = &request.views[0];
    if first_keys.is_empty() {
        return Err(OfflineError::EntityLessView {
            view: first.view.name.to_string(),
        });
    }
    let mut columns: Vec<EntityColumn> = first_keys
        .iter()
        .zip(&sources[0].key_types)
        .map(|(name, ty)| EntityColumn {
            name: name.clone(),
            arrow: ty.arrow(),
            as_text: false,
        })
        .collect();
    columns.push(EntityColumn {
        name: "event_timestamp".into(),
        arrow: DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
        as_text: false,
    });
    let sources: Vec<&ViewSource> = sources.iter().collect();
    let select = range_entities(&sources, &first_keys, start, end);
    Ok(Entities {
        select,
        columns,
        ts_column: "event_timestamp".into(),
        cleanup: None,
    })
}
