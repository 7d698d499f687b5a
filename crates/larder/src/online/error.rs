//! What can be wrong with an online request: the caller must change it.

use larder_types::feast::{CoerceError, FormatError};

/// An online feature request that cannot be served as asked.
#[derive(Debug, thiserror::Error)]
pub enum OnlineRequestError {
    /// Entity columns of different lengths.
    #[error("entity column `{column}` has {rows} values, but column `{first}` has {expected}")]
    ColumnLength {
        column: String,
        rows: usize,
        first: String,
        expected: usize,
    },
    /// Entity rows that do not all name the same columns.
    #[error(
        "entity row {row} has the columns {}, but the first row has {}",
        backticked(.found),
        backticked(.expected)
    )]
    RowColumns {
        row: usize,
        found: Vec<String>,
        expected: Vec<String>,
    },
    #[error("entity column `{column}` is given twice")]
    DuplicateColumn { column: String },
    /// A requested view's join keys are not among the entity columns.
    #[error(
        "missing join key values for feature view `{view}`: {} (give them as entity columns)",
        backticked(.missing)
    )]
    MissingJoinKeys { view: String, missing: Vec<String> },
    /// An entity value that does not fit its entity's declared type.
    #[error("entity column `{column}`, row {row}: {source}")]
    InvalidEntityValue {
        column: String,
        row: usize,
        #[source]
        source: CoerceError,
    },
    /// The values cannot form an entity key (a join key typed as something keys cannot hold).
    #[error("cannot build the entity keys of feature view `{view}`: {source}")]
    EntityKey {
        view: String,
        #[source]
        source: FormatError,
    },
    /// A requested view is not served online (`online: false`).
    #[error("feature view `{view}` is not online (`online: false`), so it has no online values")]
    ViewNotOnline { view: String },
    /// A feature output name equals a join key column, which the response also holds.
    #[error(
        "output name `{name}` is both a join key column and a feature (set full_feature_names \
         to get `view__feature` names)"
    )]
    NameCollision { name: String },
}

fn backticked(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
