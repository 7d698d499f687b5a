//! The SDK's error: one enum over every layer, sorted by who must act.

use larder_config::ConfigError;
use larder_offline::OfflineError;
use larder_online::OnlineError;
use larder_registry::RegistryError;
use larder_registry::store::StoreError;
use larder_spec::{DefinitionErrors, ResolveError};

use crate::online::OnlineRequestError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `feature_store.yaml` is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The definition files have problems (all of them are listed).
    #[error(transparent)]
    Definitions(#[from] DefinitionErrors),
    /// The configuration asks for something this build cannot do.
    #[error("{what} is not supported by this build of Larder: {hint}")]
    Unsupported { what: String, hint: String },
    /// The requested features do not resolve against the registry.
    #[error(transparent)]
    Features(#[from] ResolveError),
    /// A push names a source that is not in the registry (Feast's
    /// `PushSourceNotFoundException`).
    #[error("push source `{source_name}` not found in project `{project}`")]
    PushSourceNotFound {
        source_name: String,
        project: String,
    },
    /// A feature view named by a write is not in the registry.
    #[error("feature view `{view}` not found in project `{project}`")]
    FeatureViewNotFound { view: String, project: String },
    /// Pushed rows (or rows written to a view) do not fit: missing or extra columns, values
    /// of the wrong type; `target` is the push source or view written to.
    #[error("cannot write to `{target}`: {message}")]
    InvalidPush { target: String, message: String },
    /// An online request is wrong: its entity columns, join keys or values.
    #[error(transparent)]
    OnlineRequest(#[from] OnlineRequestError),
    /// A registry read or write failed, or the registry lacks what was asked for.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Reading historical data failed (bad entity rows, unreadable sources, ...).
    #[error(transparent)]
    Offline(#[from] OfflineError),
    /// A materialization could not start or some of its views failed (each named).
    #[error("materialization: {0}")]
    Materialize(String),
    /// The online store failed (unreachable, incompatible tables, ...).
    #[error("online store: {0}")]
    Online(#[from] OnlineError),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Registry(RegistryError::Store(e))
    }
}
