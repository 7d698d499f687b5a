//! Types shared by every Larder crate: feature value types, names and feature references.

mod names;
mod value_type;

pub use names::{FeatureRef, InvalidName, ObjectName, ParseFeatureRefError};
pub use value_type::{ScalarType, UnknownType, ValueType};
