//! Rules about entity rows that every offline store applies the same way: which column is
//! the event timestamp, which columns hold each view's join keys and how their types may be
//! read as the entities' types.

use arrow::datatypes::{DataType, Schema};
use larder_spec::ResolvedView;

use crate::error::OfflineError;

/// Whether `dt` can be joined on as an event time.
pub(crate) fn is_timestamp(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    )
}

/// The column timestamps are joined on: `event_timestamp`, else the only timestamp column.
pub(crate) fn timestamp_column(schema: &Schema) -> Result<String, OfflineError> {
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    if let Some(field) = schema
        .fields()
        .iter()
        .find(|f| f.name() == "event_timestamp")
    {
        if !is_timestamp(field.data_type()) {
            return Err(OfflineError::NotATimestamp {
                column: field.name().clone(),
                found: field.data_type().to_string(),
            });
        }
        return Ok(field.name().clone());
    }
    let candidates: Vec<&String> = schema
        .fields()
        .iter()
        .filter(|f| is_timestamp(f.data_type()))
        .map(|f| f.name())
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(OfflineError::NoTimestampColumn {
            available: names.join(", "),
        }),
        many => Err(OfflineError::AmbiguousTimestamp {
            columns: many
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The entity columns holding join keys, each with the type its entity declares, in first
/// use order; errors for a view without entities or a key column the rows lack.
pub(crate) fn key_columns(
    views: &[ResolvedView],
    columns: &[String],
) -> Result<Vec<(String, DataType)>, OfflineError> {
    let mut key_types: Vec<(String, DataType)> = Vec::new();
    for view in views {
        if view.join_key_columns.is_empty() {
            return Err(OfflineError::EntityLessView {
                view: view.view.name.to_string(),
            });
        }
        for ((_, column), field) in view.join_key_columns.iter().zip(&view.view.entity_columns) {
            if !columns.contains(column) {
                return Err(OfflineError::MissingJoinKey {
                    column: column.clone(),
                    view: view.view.name.to_string(),
                    available: columns.join(", "),
                });
            }
            if !key_types.iter().any(|(c, _)| c == column) {
                key_types.push((column.clone(), field.dtype.arrow_type()));
            }
        }
    }
    Ok(key_types)
}

/// Checks that entity column `column` of type `found` can be read as key type `wanted`.
pub(crate) fn check_key_type(
    column: &str,
    found: &DataType,
    wanted: &DataType,
) -> Result<(), OfflineError> {
    if found == wanted || castable(found, wanted) {
        Ok(())
    } else {
        Err(OfflineError::KeyTypeMismatch {
            column: column.to_string(),
            found: found.to_string(),
            expected: wanted.to_string(),
        })
    }
}

/// Whether entity values of type `from` can be read as key type `to` (numbers to numbers,
/// text to text, timestamps to timestamps).
pub(crate) fn castable(from: &DataType, to: &DataType) -> bool {
    let numeric = |d: &DataType| d.is_integer();
    let text =
        |d: &DataType| matches!(d, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    let binary = |d: &DataType| {
        matches!(
            d,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView
        )
    };
    (numeric(from) && numeric(to))
        || (text(from) && text(to))
        || (binary(from) && binary(to))
        || (numeric(from) && text(to))
        || (matches!(from, DataType::Timestamp(_, _)) && matches!(to, DataType::Timestamp(_, _)))
}

/// Checks a non-entity (range) retrieval: `start <= end`, and every view has the same join
/// key columns, which are returned (the entity columns of the rows the range yields).
pub(crate) fn range_keys(
    views: &[ResolvedView],
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<String>, OfflineError> {
    if start > end {
        return Err(OfflineError::BadRange {
            start: start.to_rfc3339(),
            end: end.to_rfc3339(),
        });
    }
    let Some(first) = views.first() else {
        return Err(OfflineError::execution(
            datafusion::error::DataFusionError::Plan("no feature views requested".into()),
        ));
    };
    let key_names = |v: &ResolvedView| -> Vec<String> {
        v.join_key_columns.iter().map(|(_, c)| c.clone()).collect()
    };
    let first_keys = key_names(first);
    for view in views {
        let keys = key_names(view);
        if keys != first_keys {
            return Err(OfflineError::RangeKeysDiffer {
                first: first.view.name.to_string(),
                first_keys: first_keys.join(", "),
                other: view.view.name.to_string(),
                other_keys: keys.join(", "),
            });
        }
    }
    Ok(first_keys)
}
