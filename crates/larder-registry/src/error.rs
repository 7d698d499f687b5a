//! Errors of registry operations, sorted by who must act.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    // The user must act.
    #[error("project `{project}` is not in the registry (run `larder apply` first)")]
    ProjectNotFound { project: String },
    #[error("{kind} `{name}` not found in project `{project}`")]
    ObjectNotFound {
        kind: &'static str,
        name: String,
        project: String,
    },
    #[error(
        "registry at `{location}` is not a Larder registry (a Feast registry.db is a protobuf \
         file; point `registry` at a new path for Larder)"
    )]
    NotLarder { location: String },
    #[error(
        "registry at `{location}` has format {found}, newer than this Larder supports ({supported}); \
         upgrade Larder"
    )]
    NewerFormat {
        location: String,
        found: u64,
        supported: u32,
    },
    #[error(
        "registry at `{location}` kept changing during the update ({attempts} attempts lost a \
         race with other writers); try again"
    )]
    Contention { location: String, attempts: u32 },
    // The backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("registry at `{location}` is corrupt: {message}")]
    Corrupt { location: String, message: String },
    // A bug.
    #[error("internal error: {message}")]
    Internal { message: String },
}
