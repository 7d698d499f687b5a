//! Larder, a feature store: the Rust SDK.
//!
//! [`FeatureStore`] opens a feature repository (its `feature_store.yaml`), builds the backends
//! it names once, and offers the operations of the `larder` CLI as methods: `plan`, `apply`,
//! `teardown`, reads of what the registry holds, training data (`get_historical_features`)
//! and online features (`get_online_features`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), larder::Error> {
//! let store = larder::FeatureStore::open(&larder::OpenOptions::new("my_repo"))?;
//! let outcome = store.apply(&larder::ApplyOptions::default()).await?;
//! println!("{}", outcome.plan);
//! # Ok(()) }
//! ```

mod error;
mod materialize;
mod online;
mod push;
mod retrieval;
mod store;

pub use error::Error;
pub use materialize::{
    K8S_ALLOW_LOCAL_VAR, MaterializationPlan, MaterializationReport, MaterializeOptions,
    PlannedView, Window,
};
pub use online::{
    DictOptions, EntityColumns, FeatureVector, FieldStatus, OnlineFeaturesRequest, OnlinePlan,
    OnlineReader, OnlineRequestError, OnlineResponse,
};
pub use push::{PushMode, PushReport, PushRows, parse_timestamp};
pub use retrieval::HistoricalFeaturesRequest;
pub use store::{ApplyOptions, FeatureStore, OpenOptions, TeardownReport};

pub use larder_offline::EntityInput;
pub use larder_spec::FeatureSelection;

pub use larder_config as config;
pub use larder_materialize as materialize_engine;
pub use larder_offline as offline;
pub use larder_online as online_store;
pub use larder_registry as registry;
pub use larder_spec as spec;
pub use larder_types as types;
