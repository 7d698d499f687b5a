//! Errors of online reads and writes, sorted by who must act.

/// A backend's own error, kept as the `source` of [`OnlineError`] variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    // The caller must act: the request is wrong.
    /// A write batch whose schema does not match the contract of
    /// [`OnlineStore::write_batch`](crate::OnlineStore::write_batch); the message names the
    /// column.
    #[error("invalid online request: {message}")]
    InvalidRequest { message: String },

    // The user must act: the store holds something Larder did not write.
    /// A table of the expected name exists with another layout (for example one written by
    /// Feast's own SQLite store at the same path). Larder neither reads nor drops it.
    #[error(
        "online table `{table}` in the {store} online store does not have Larder's layout \
         ({message}); point `online_store` at another location or drop the table"
    )]
    IncompatibleTable {
        store: String,
        table: String,
        message: String,
    },

    // A backend failed.
    /// The store cannot be reached or opened, or is busy beyond its timeout. `retryable`
    /// says whether the same call may succeed later unchanged (a lock held by another
    /// process, a restarting server) or not (a path that cannot be opened).
    #[error("the {store} online store is unavailable: {source}")]
    Unavailable {
        store: String,
        retryable: bool,
        #[source]
        source: BoxError,
    },
    /// Reading or writing the store's storage failed (disk full, I/O error).
    #[error("I/O error in the {store} online store: {source}")]
    Io {
        store: String,
        #[source]
        source: BoxError,
    },
    /// Stored bytes are not what Larder writes.
    #[error("the online store holds malformed data: {message}")]
    Corrupt { message: String },

    // A bug in Larder.
    #[error("internal error in the online store: {message}")]
    Internal { message: String },
}

impl OnlineError {
    /// Whether retrying the same call unchanged may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            OnlineError::Unavailable { retryable, .. } => *retryable,
            OnlineError::InvalidRequest { .. }
            | OnlineError::IncompatibleTable { .. }
            | OnlineError::Io { .. }
            | OnlineError::Corrupt { .. }
            | OnlineError::Internal { .. } => false,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        OnlineError::InvalidRequest {
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        OnlineError::Internal {
            message: message.into(),
        }
    }
}
