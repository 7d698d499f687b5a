//! The feature side of a retrieval: a view's batch source read with only the needed
//! columns, renamed by `field_mapping`, typed as declared and pruned to the time window.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, cast};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext, ident};
use larder_spec::{Definitions, FileFormat, FileSource, ResolvedView, SourceKind};

use super::FileOfflineStore;
use super::entities::{ts_literal, utc_timestamp_expr};
use crate::error::OfflineError;

/// A view's feature rows: `__k0..`, `__ts`, [`__created`], then `__f0..` per feature.
pub(crate) struct SourcePlan {
    pub plan: Arc<dyn ExecutionPlan>,
    pub has_created: bool,
}

/// A path from a definition, relative to the repo folder unless absolute or a URL.
pub(crate) fn resolve_path(store: &FileOfflineStore, path: &str) -> String {
    if path.contains("://") || std::path::Path::new(path).is_absolute() {
        path.to_string()
    } else {
        store
            .options
            .repo_dir
            .join(path)
            .to_string_lossy()
            .into_owned()
    }
}

pub(crate) async fn read_file(
    ctx: &SessionContext,
    path: &str,
    format: FileFormat,
) -> Result<DataFrame, DataFusionError> {
    let is_dir = std::path::Path::new(path).is_dir();
    match format {
        FileFormat::Parquet => {
            let mut options = ParquetReadOptions::default();
            if !is_dir && !path.ends_with(".parquet") {
                options = options.file_extension("");
            }
            // A single-file source keeps the files of offline pushes in a folder beside it.
            let pushed = super::append::pushed_dir(path);
            if !is_dir && !path.contains("://") && pushed.is_dir() {
                let paths = vec![path.to_string(), pushed.to_string_lossy().into_owned()];
                return ctx.read_parquet(paths, options).await;
            }
            ctx.read_parquet(path, options).await
        }
        FileFormat::Csv => {
            let mut options = CsvReadOptions::new();
            if !is_dir && !path.ends_with(".csv") {
                options = options.file_extension("");
            }
            ctx.read_csv(path, options).await
        }
    }
}

/// The file source `view` reads, or an error naming the view when it has another kind.
pub(crate) fn file_source<'a>(
    definitions: &'a Definitions,
    view: &ResolvedView,
) -> Result<&'a FileSource, OfflineError> {
    let name = &view.view.batch_source;
    let source = definitions.data_sources.get(name).ok_or_else(|| {
        OfflineError::execution(DataFusionError::Plan(format!(
            "data source `{name}` of feature view `{}` is not in the registry",
            view.view.name
        )))
    })?;
    match &source.kind {
        SourceKind::File(file) => Ok(file),
        other => Err(OfflineError::UnsupportedSource {
            source_name: name.to_string(),
            view: view.view.name.to_string(),
            store: "file",
            kind: other.type_name(),
        }),
    }
}

/// The source rows of `view` as `__k0..`, `__ts`, [`__created`], `__f0..`, with rows
/// outside `[lo - ttl, hi]` dropped when `bounds` is given (`exact_window`: `[lo, hi]`).
pub(crate) async fn source_rows(
    store: &FileOfflineStore,
    ctx: &SessionContext,
    definitions: &Definitions,
    view: &ResolvedView,
    bounds: Option<(i64, i64)>,
    exact_window: bool,
) -> Result<DataFrame, OfflineError> {
    let file = file_source(definitions, view)?;
    let source_name = view.view.batch_source.to_string();
    let read_error = |e: DataFusionError| OfflineError::SourceRead {
        source_name: source_name.clone(),
        path: file.path.clone(),
        message: e.to_string(),
    };
    let df = read_file(ctx, &resolve_path(store, &file.path), file.file_format)
        .await
        .map_err(read_error)?;
    let schema = df.schema().clone();
    // Feature/entity name → source column.
    let source_column: HashMap<&str, &str> = file
        .field_mapping
        .iter()
        .map(|(src, name)| (name.as_str(), src.as_str()))
        .collect();
    let lookup = |name: &str| -> Result<(String, arrow::datatypes::DataType), OfflineError> {
        let column = source_column.get(name).copied().unwrap_or(name);
        let field = schema
            .field_with_unqualified_name(column)
            .map_err(|_| OfflineError::SourceRead {
                source_name: source_name.clone(),
                path: file.path.clone(),
                message: format!(
                    "no column `{column}` (needed for `{name}`); run `larder plan` to check the definitions against the data"
                ),
            })?;
        Ok((column.to_string(), field.data_type().clone()))
    };
    let mut exprs: Vec<Expr> = Vec::new();
    for (j, ((key, _), entity_column)) in view
        .join_key_columns
        .iter()
        .zip(&view.view.entity_columns)
        .enumerate()
    {
        let (column, dt) = lookup(key.as_str())?;
        let wanted = entity_column.dtype.arrow_type();
        let expr = if dt == wanted {
            ident(column)
        } else {
            cast(ident(column), wanted)
        };
        exprs.push(expr.alias(format!("__k{j}")));
    }
    let timestamp = |name: &str| -> Result<Expr, OfflineError> {
        // The timestamp fields name source columns; a mapped name works as well.
        let (column, dt) = match schema.field_with_unqualified_name(name) {
            Ok(f) => (name.to_string(), f.data_type().clone()),
            Err(_) => lookup(name)?,
        };
        Ok(utc_timestamp_expr(ident(column), &dt))
    };
    exprs.push(timestamp(&file.timestamp_field)?.alias("__ts"));
    if let Some(created) = &file.created_timestamp_column {
        exprs.push(timestamp(created)?.alias("__created"));
    }
    for (i, (field, _)) in view.features.iter().enumerate() {
        let (column, dt) = lookup(field.name.as_str())?;
        let wanted = field.dtype.arrow_type();
        let expr = if dt == wanted {
            ident(column)
        } else {
            cast(ident(column), wanted)
        };
        exprs.push(expr.alias(format!("__f{i}")));
    }
    let mut df = df.select(exprs).map_err(OfflineError::execution)?;
    let mut predicate = ident("__ts").is_not_null();
    if let Some((lo, hi)) = bounds {
        predicate = predicate.and(ident("__ts").lt_eq(ts_literal(hi)));
        let ttl = view.view.ttl;
        let lower = if exact_window {
            Some(lo)
        } else if ttl.is_unbounded() {
            None
        } else {
            Some(lo.saturating_sub(i64::try_from(ttl.0.as_nanos()).unwrap_or(i64::MAX)))
        };
        if let Some(lower) = lower {
            predicate = predicate.and(ident("__ts").gt_eq(ts_literal(lower)));
        }
    }
    df = df.filter(predicate).map_err(OfflineError::execution)?;
    Ok(df)
}

pub(crate) async fn plan_view_source(
    store: &FileOfflineStore,
    ctx: &SessionContext,
    definitions: &Definitions,
    view: &ResolvedView,
    time_range: &Option<(i64, i64)>,
) -> Result<SourcePlan, OfflineError> {
    let file = file_source(definitions, view)?;
    // Without entity rows nothing can match: keep the plan, read no rows.
    let bounds = time_range.or(Some((i64::MAX, i64::MIN)));
    let df = source_rows(store, ctx, definitions, view, bounds, false).await?;
    let plan = df
        .create_physical_plan()
        .await
        .map_err(|e| OfflineError::SourceRead {
            source_name: view.view.batch_source.to_string(),
            path: file.path.clone(),
            message: e.to_string(),
        })?;
    Ok(SourcePlan {
        plan,
        has_created: file.created_timestamp_column.is_some(),
    })
}
