//! Errors of offline reads, sorted by who must act.

use datafusion::error::DataFusionError;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    // The user must act: the request or the entity rows are wrong.
    #[error(
        "the entity rows have no column `{column}` (join key of feature view `{view}`); their columns: {available}"
    )]
    MissingJoinKey {
        column: String,
        view: String,
        available: String,
    },
    #[error(
        "the entity rows have no timestamp column: name one `event_timestamp` or give exactly \
         one timestamp column (their columns: {available})"
    )]
    NoTimestampColumn { available: String },
    #[error(
        "the entity rows have several timestamp columns ({columns}) and none is named \
         `event_timestamp`; rename the one to join on"
    )]
    AmbiguousTimestamp { columns: String },
    #[error(
        "entity column `{column}` is {found}, not a timestamp; give timestamps (or RFC 3339 text in CSV)"
    )]
    NotATimestamp { column: String, found: String },
    #[error(
        "entity column `{column}` is {found} and cannot be read as {expected} (the type of entity key `{column}`)"
    )]
    KeyTypeMismatch {
        column: String,
        found: String,
        expected: String,
    },
    #[error("cannot read the entity rows from `{path}`: {message}")]
    EntityFile { path: String, message: String },
    #[error("the entity SQL query failed: {message}")]
    EntitySql { message: String },
    #[error("a time range needs start <= end (got {start} .. {end})")]
    BadRange { start: String, end: String },
    #[error(
        "retrieval without entity rows needs views with the same join keys; `{first}` has \
         [{first_keys}] but `{other}` has [{other_keys}]"
    )]
    RangeKeysDiffer {
        first: String,
        first_keys: String,
        other: String,
        other_keys: String,
    },
    #[error("entity-less feature view `{view}` cannot be joined yet; give it an entity")]
    EntityLessView { view: String },
    #[error(
        "data source `{source_name}` of feature view `{view}` cannot be read by the {store} offline store (it is a {kind} source)"
    )]
    UnsupportedSource {
        source_name: String,
        view: String,
        store: &'static str,
        kind: &'static str,
    },
    #[error("cannot append rows to data source `{source_name}`: {reason}")]
    UnsupportedAppend { source_name: String, reason: String },
    // A backend failed.
    #[error("appending rows to data source `{source_name}` at `{path}` failed: {message}")]
    AppendFailed {
        source_name: String,
        path: String,
        message: String,
    },
    #[error("cannot read data source `{source_name}` at `{path}`: {message}")]
    SourceRead {
        source_name: String,
        path: String,
        message: String,
    },
    #[error("cannot connect to the {store} offline store at `{target}`: {message}")]
    Unavailable {
        store: &'static str,
        /// Where the server is (`host:port/database`), never with a password.
        target: String,
        message: String,
    },
    #[error("the {store} offline store at `{target}` failed: {message}")]
    Backend {
        store: &'static str,
        target: String,
        message: String,
    },
    #[error("query failed: {0}")]
    Execution(#[from] DataFusionError),
}

impl OfflineError {
    pub(crate) fn execution(e: impl Into<DataFusionError>) -> Self {
        OfflineError::Execution(e.into())
    }
}
