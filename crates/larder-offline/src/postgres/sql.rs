//! The SQL the store sends: the point-in-time join, the range-mode entity rows and the
//! latest-row-per-key read, built from quoted identifiers and typed literals.
//!
//! ## The point-in-time join
//!
//! Per view, entity rows and the view's source rows (pruned to `[min(entity_ts) - ttl,
//! max(entity_ts)]`, without null keys or times) are stacked in one relation and ordered
//! per join key by time, source rows before entity rows at the same time, source rows among
//! themselves by created time. A running count of source rows then gives every entity row
//! the number of the latest source row at or before it: its group. The group's first row
//! is that source row (or, for group 0, no source row at all), and `first_value` over the
//! group hands its values to every entity row in it. A value older than `entity_ts - ttl`
//! becomes null (the newest row is the answer; an older one never is). This is a sort per
//! view, whatever the indexes, instead of a lookup per entity row, and each entity row
//! comes out exactly once: the views' answers are joined back on the entity row number,
//! which also gives the output order.

use std::fmt::Write;

use chrono::{DateTime, SecondsFormat, Utc};

use super::config::quote_ident;
use super::sources::ViewSource;

/// A timestamp as a `timestamptz` literal.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    format!(
        "'{}'::timestamptz",
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

/// A duration in microseconds as an `interval` literal.
fn interval(micros: i64) -> String {
    format!("'{micros} microseconds'::interval")
}

/// One view of a point-in-time join.
pub(crate) struct JoinView<'a> {
    pub source: &'a ViewSource,
    /// The entity columns holding the view's join keys, in join key order.
    pub entity_keys: Vec<String>,
    /// The view's ttl in microseconds; `None` for no lower bound.
    pub ttl_micros: Option<i64>,
    /// Output names of the features, in `source` feature order.
    pub outputs: Vec<String>,
}

/// The point-in-time join of `views` onto the entity rows of `entities`, a `SELECT` whose
/// rows have the entity columns plus `__row` (the output order) and `__ets` (the entity
/// time as `timestamptz`). The output columns are `columns` (SQL expressions over the
/// entity rows `"__e"`, with their names) then every view's features by output name.
pub(crate) fn point_in_time(
    entities: &str,
    columns: &[(String, String)],
    views: &[JoinView<'_>],
) -> String {
    let mut sql = format!("WITH \"__e\" AS ({entities})");
    for (v, view) in views.iter().enumerate() {
        let _ = write!(sql, ", \"__v{v}\" AS ({})", view_join(view));
    }
    let mut select: Vec<String> = columns
        .iter()
        .map(|(expr, name)| format!("{expr} AS {}", quote_ident(name)))
        .collect();
    for (v, view) in views.iter().enumerate() {
        for (i, name) in view.outputs.iter().enumerate() {
            select.push(format!("\"__v{v}\".\"__f{i}\" AS {}", quote_ident(name)));
        }
    }
    let _ = write!(sql, " SELECT {} FROM \"__e\"", select.join(", "));
    for v in 0..views.len() {
        let _ = write!(
            sql,
            " LEFT JOIN \"__v{v}\" ON \"__v{v}\".\"__row\" = \"__e\".\"__row\""
        );
    }
    sql.push_str(" ORDER BY \"__e\".\"__row\"");
    sql
}

/// `"__row"` and the features of one view for every entity row with a time (see the
/// module documentation).
fn view_join(view: &JoinView<'_>) -> String {
    let keys: Vec<String> = (0..view.entity_keys.len())
        .map(|j| format!("\"__k{j}\""))
        .collect();
    let keys = keys.join(", ");
    let features = view.source.feature_types.len();
    let feature_columns: Vec<String> = (0..features).map(|i| format!("\"__f{i}\"")).collect();

    // Source rows in the entity rows' time span.
    let mut source_filter: Vec<String> = (0..view.entity_keys.len())
        .map(|j| format!("\"__k{j}\" IS NOT NULL"))
        .collect();
    source_filter.push("\"__ts\" IS NOT NULL".into());
    source_filter.push("\"__ts\" <= (SELECT max(\"__ets\") FROM \"__e\")".into());
    if let Some(ttl) = view.ttl_micros {
        source_filter.push(format!(
            "\"__ts\" >= (SELECT min(\"__ets\") FROM \"__e\") - {}",
            interval(ttl)
        ));
    }
    let mut source_side = vec![keys.clone()];
    source_side.push("\"__ts\", 0 AS \"__kind\", \"__created\", NULL::int8 AS \"__row\", \"__ts\" AS \"__fts\", NULL::timestamptz AS \"__ets\"".into());
    source_side.extend(feature_columns.iter().cloned());

    let mut entity_side: Vec<String> = view
        .entity_keys
        .iter()
        .zip(&view.source.key_types)
        .enumerate()
        .map(|(j, (column, ty))| {
            format!(
                "CAST(\"__e\".{} AS {}) AS \"__k{j}\"",
                quote_ident(column),
                ty.sql()
            )
        })
        .collect();
    entity_side.push("\"__e\".\"__ets\" AS \"__ts\", 1, NULL::timestamptz, \"__e\".\"__row\", NULL::timestamptz, \"__e\".\"__ets\"".into());
    entity_side.extend(
        view.source
            .feature_types
            .iter()
            .map(|ty| format!("NULL::{}", ty.sql())),
    );

    let stacked = format!(
        "SELECT {} FROM ({}) AS \"__src\" WHERE {} UNION ALL SELECT {} FROM \"__e\" WHERE \"__e\".\"__ets\" IS NOT NULL",
        source_side.join(", "),
        view.source.select,
        source_filter.join(" AND "),
        entity_side.join(", "),
    );
    let grouped = format!(
        "SELECT *, count(\"__fts\") OVER (PARTITION BY {keys} ORDER BY \"__ts\", \"__kind\", \"__created\" NULLS FIRST ROWS UNBOUNDED PRECEDING) AS \"__grp\" FROM ({stacked}) AS \"__u\""
    );
    let mut carried = vec![
        "\"__kind\"".to_string(),
        "\"__row\"".into(),
        "\"__ets\"".into(),
        "first_value(\"__fts\") OVER \"__w\" AS \"__fts\"".into(),
    ];
    carried.extend(
        feature_columns
            .iter()
            .map(|f| format!("first_value({f}) OVER \"__w\" AS {f}")),
    );
    let window = format!(
        "SELECT {} FROM ({grouped}) AS \"__g\" WINDOW \"__w\" AS (PARTITION BY {keys}, \"__grp\" ORDER BY \"__kind\")",
        carried.join(", ")
    );
    let mut answer = vec!["\"__row\"".to_string()];
    for f in &feature_columns {
        answer.push(match view.ttl_micros {
            Some(ttl) => format!(
                "CASE WHEN \"__fts\" >= \"__ets\" - {} THEN {f} END AS {f}",
                interval(ttl)
            ),
            None => f.clone(),
        });
    }
    format!(
        "SELECT {} FROM ({window}) AS \"__x\" WHERE \"__kind\" = 1",
        answer.join(", ")
    )
}

/// Feast's non-entity mode: the distinct (keys, event time) of every view's rows with an
/// event time in `[start, end]`, numbered by time then keys. Columns: `key_names`, then
/// `event_timestamp` and `__row`.
pub(crate) fn range_entities(
    sources: &[&ViewSource],
    key_names: &[String],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> String {
    let keys: Vec<String> = key_names.iter().map(|k| quote_ident(k)).collect();
    let selects: Vec<String> = sources
        .iter()
        .map(|source| {
            let mut columns: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(j, k)| format!("\"__k{j}\" AS {k}"))
                .collect();
            columns.push("\"__ts\" AS \"event_timestamp\"".into());
            format!(
                "SELECT {} FROM ({}) AS \"__src\" WHERE \"__ts\" IS NOT NULL AND \"__ts\" >= {} AND \"__ts\" <= {}",
                columns.join(", "),
                source.select,
                timestamp(start),
                timestamp(end)
            )
        })
        .collect();
    let mut order = vec!["\"event_timestamp\"".to_string()];
    order.extend(keys.iter().map(|k| format!("{k} NULLS FIRST")));
    format!(
        "SELECT \"__d\".*, row_number() OVER (ORDER BY {}) AS \"__row\" FROM ({}) AS \"__d\"",
        order.join(", "),
        selects.join(" UNION ")
    )
}

/// Per join key tuple, the latest source row with an event time in `[start, end]` (ties to
/// the greatest created time); for a view without keys, the one latest row. Columns: the
/// keys named `key_names`, `__event_ts`, `__created_ts`, then the features named
/// `feature_names`.
pub(crate) fn latest(
    source: &ViewSource,
    key_names: &[String],
    feature_names: &[String],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> String {
    let keys: Vec<String> = (0..key_names.len())
        .map(|j| format!("\"__k{j}\""))
        .collect();
    let mut filter: Vec<String> = keys.iter().map(|k| format!("{k} IS NOT NULL")).collect();
    filter.push(format!(
        "\"__ts\" IS NOT NULL AND \"__ts\" >= {} AND \"__ts\" <= {}",
        timestamp(start),
        timestamp(end)
    ));
    let mut order = keys.clone();
    order.push("\"__ts\" DESC".into());
    order.push("\"__created\" DESC NULLS LAST".into());
    let inner = if keys.is_empty() {
        format!(
            "SELECT * FROM ({}) AS \"__s\" WHERE {} ORDER BY {} LIMIT 1",
            source.select,
            filter.join(" AND "),
            order.join(", ")
        )
    } else {
        format!(
            "SELECT DISTINCT ON ({}) * FROM ({}) AS \"__s\" WHERE {} ORDER BY {}",
            keys.join(", "),
            source.select,
            filter.join(" AND "),
            order.join(", ")
        )
    };
    let mut columns: Vec<String> = keys
        .iter()
        .zip(key_names)
        .map(|(k, name)| format!("{k} AS {}", quote_ident(name)))
        .collect();
    columns.push(format!(
        "\"__ts\" AS {}, \"__created\" AS {}",
        quote_ident(crate::store::LATEST_EVENT_TS),
        quote_ident(crate::store::LATEST_CREATED_TS)
    ));
    columns.extend(
        feature_names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("\"__f{i}\" AS {}", quote_ident(name))),
    );
    format!("SELECT {} FROM ({inner}) AS \"__d\"", columns.join(", "))
}
