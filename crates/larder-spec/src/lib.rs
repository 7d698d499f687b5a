//! Feature repository definitions: YAML files parsed into a validated model, checked against
//! their source data, and diffed against what a registry holds (the plan).
//!
//! The flow is `discover` (which files are definitions) → `parse` (YAML with line numbers) →
//! `validate` (names, references, types, source schemas) → [`Definitions`]. All errors of a
//! repo are collected and returned together, each naming its file, line and object.

mod diff;
mod discover;
mod error;
mod expr;
mod model;
mod raw;
mod resolve;
mod source_schema;
mod validate;

pub use diff::{FieldChange, InfraAction, InfraChange, ObjectAction, ObjectChange, Plan, diff};
pub use discover::{DiscoverOptions, definition_files};
pub use error::{DefinitionError, DefinitionErrors};
pub use expr::expression_identifiers;
pub use model::{
    DataSource, Definitions, Entity, FeatureService, FeatureView, Field, FileFormat, FileSource,
    InfraObject, ObjectKind, OdfvField, OnDemandFeatureView, PostgresSource, ProjectSpec,
    Projection, PushSource, RequestSource, SourceKind, Tags, Ttl,
};
pub use resolve::{FeatureSelection, ResolveError, ResolvedView, resolve_features};
pub use source_schema::{SchemaError, read_file_schema};
pub use validate::{LoadOptions, load_definitions, parse_definitions};
