//! Errors of a materialization run, naming the view.

use larder_offline::OfflineError;
use larder_online::OnlineError;
use larder_types::feast::FormatError;

use crate::k8s::K8sError;

#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    #[error("feature view `{view}`: reading the offline store failed: {source}")]
    Offline {
        view: String,
        #[source]
        source: OfflineError,
    },
    #[error("feature view `{view}`: writing the online store failed: {source}")]
    Online {
        view: String,
        #[source]
        source: OnlineError,
    },
    #[error("feature view `{view}`: cannot encode {what}: {source}")]
    Encode {
        view: String,
        what: String,
        #[source]
        source: FormatError,
    },
    #[error("feature view `{view}`: {message}")]
    Invalid { view: String, message: String },
    #[error("feature view `{view}`: {source}")]
    Kubernetes {
        view: String,
        /// Boxed: its failed pods' logs would make every `Result` of this type large.
        #[source]
        source: Box<K8sError>,
    },
}

impl MaterializeError {
    /// The view the error is about.
    pub fn view(&self) -> &str {
        match self {
            MaterializeError::Offline { view, .. }
            | MaterializeError::Online { view, .. }
            | MaterializeError::Encode { view, .. }
            | MaterializeError::Invalid { view, .. }
            | MaterializeError::Kubernetes { view, .. } => view,
        }
    }
}
