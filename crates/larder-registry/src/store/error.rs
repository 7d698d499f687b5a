//! The error type of registry stores, sorted by who must act on it.

/// Boxed error from a backend client, kept as the `source` of [`StoreError::Unavailable`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong while reading or writing a registry blob.
///
/// `location` is always the store's [`location`](super::RegistryStore::location): a path or a
/// URL, never credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // The user must act.
    /// The registry path cannot be used: bad URL, unsupported scheme, a scheme whose cargo
    /// feature is off, or a store that cannot do compare-and-swap writes.
    /// `reason` continues the sentence: "needs Larder built with the `aws` feature".
    #[error("registry path `{location}` {reason}")]
    InvalidLocation { location: String, reason: String },

    /// Another writer committed since the caller loaded the blob; nothing was written.
    /// Load again, re-apply the change and retry the commit.
    #[error("registry at `{location}` was changed by another writer")]
    Conflict { location: String },

    /// The backend refused the credentials or their permissions.
    #[error("access to registry at `{location}` was denied: {source}")]
    AccessDenied {
        location: String,
        #[source]
        source: BoxError,
    },

    /// A local file system operation failed (permissions, disk full, a parent that is a file).
    #[error("cannot {operation} registry at `{location}`: {source}")]
    Io {
        location: String,
        /// What was being done, as a verb phrase: "read", "write", "lock", "delete".
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },

    // A backend must act.
    /// The backend could not be reached or failed (network, service error). Clients such as
    /// object_store have already retried transient failures by the time this is returned.
    #[error("registry at `{location}` is unavailable: {source}")]
    Unavailable {
        location: String,
        /// Whether the same call may succeed later without any change by the user.
        retryable: bool,
        #[source]
        source: BoxError,
    },

    // A bug must be fixed.
    /// A broken invariant: a generation from another store, a backend answer without a version.
    #[error("internal error in registry store at `{location}`: {message}")]
    Internal { location: String, message: String },
}

impl StoreError {
    /// True for [`StoreError::Conflict`]: reload, redo the change and commit again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// True when repeating the same call unchanged may succeed later (a backend outage).
    /// A [`StoreError::Conflict`] is not retryable in this sense: the caller must reload first.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { retryable, .. } => *retryable,
            Self::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            Self::InvalidLocation { .. }
            | Self::Conflict { .. }
            | Self::AccessDenied { .. }
            | Self::Internal { .. } => false,
        }
    }

    /// The store location the error is about.
    pub fn location(&self) -> &str {
        match self {
            Self::InvalidLocation { location, .. }
            | Self::Conflict { location }
            | Self::AccessDenied { location, .. }
            | Self::Io { location, .. }
            | Self::Unavailable { location, .. }
            | Self::Internal { location, .. } => location,
        }
    }
}
