//! The Larder registry: storage with compare-and-swap commits and the apply logic on top.
//!
//! [`store`] holds the serialized registry (local file, object store); [`Registry`] reads it
//! through a ttl cache and changes it with compare-and-swap commits retried against the newest
//! version, so concurrent `apply` and `materialize` runs never lose each other's updates.

mod error;
mod registry;
mod state;
pub mod store;

pub use error::RegistryError;
pub use registry::{ApplyOutcome, Clock, Registry, Snapshot, plan_against};
pub use state::{FORMAT, Interval, ProjectState, RegistryState, Stored, merge_interval};
