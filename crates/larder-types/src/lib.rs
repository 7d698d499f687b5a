//! Types shared by every Larder crate: feature value types, names and feature references.

pub mod feast;
mod names;
mod value_type;

pub use names::{FeatureRef, InvalidName, ObjectName, ParseFeatureRefError};
pub use value_type::{ScalarType, UnknownType, ValueType};
