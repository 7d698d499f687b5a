//! Feature value types: Feast's type names, their `ValueType` enum numbers and Arrow mapping.

use std::fmt;
use std::str::FromStr;

use arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A scalar feature type, named as in Feast's `feast.types`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScalarType {
    Bytes,
    String,
    Int32,
    Int64,
    Float64,
    Float32,
    Bool,
    UnixTimestamp,
}

impl ScalarType {
    pub const ALL: [ScalarType; 8] = [
        ScalarType::Int32,
        ScalarType::Int64,
        ScalarType::Float32,
        ScalarType::Float64,
        ScalarType::String,
        ScalarType::Bytes,
        ScalarType::Bool,
        ScalarType::UnixTimestamp,
    ];

    /// The name used in definition files and by Feast (`Float32`, `UnixTimestamp`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ScalarType::Bytes => "Bytes",
            ScalarType::String => "String",
            ScalarType::Int32 => "Int32",
            ScalarType::Int64 => "Int64",
            ScalarType::Float64 => "Float64",
            ScalarType::Float32 => "Float32",
            ScalarType::Bool => "Bool",
            ScalarType::UnixTimestamp => "UnixTimestamp",
        }
    }

    /// Feast's `ValueType.Enum` number of the scalar (it appears in the entity key byte format).
    pub fn feast_enum(self) -> i32 {
        match self {
            ScalarType::Bytes => 1,
            ScalarType::String => 2,
            ScalarType::Int32 => 3,
            ScalarType::Int64 => 4,
            ScalarType::Float64 => 5,
            ScalarType::Float32 => 6,
            ScalarType::Bool => 7,
            ScalarType::UnixTimestamp => 8,
        }
    }

    fn from_name(name: &str) -> Option<ScalarType> {
        ScalarType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The Arrow type Larder produces for this scalar.
    pub fn arrow_type(self) -> DataType {
        match self {
            ScalarType::Bytes => DataType::Binary,
            ScalarType::String => DataType::Utf8,
            ScalarType::Int32 => DataType::Int32,
            ScalarType::Int64 => DataType::Int64,
            ScalarType::Float64 => DataType::Float64,
            ScalarType::Float32 => DataType::Float32,
            ScalarType::Bool => DataType::Boolean,
            ScalarType::UnixTimestamp => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
        }
    }

    /// Whether a source column of Arrow type `dt` can be read as this scalar without loss of meaning.
    pub fn accepts_arrow(self, dt: &DataType) -> bool {
        use DataType as D;
        if let D::Dictionary(_, value) = dt {
            return self.accepts_arrow(value);
        }
        match self {
            ScalarType::Bytes => matches!(
                dt,
                D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_)
            ),
            ScalarType::String => matches!(dt, D::Utf8 | D::LargeUtf8 | D::Utf8View),
            ScalarType::Int32 => matches!(dt, D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16),
            ScalarType::Int64 => matches!(
                dt,
                D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32
            ),
            ScalarType::Float32 => matches!(dt, D::Float16 | D::Float32),
            ScalarType::Float64 => matches!(dt, D::Float16 | D::Float32 | D::Float64),
            ScalarType::Bool => matches!(dt, D::Boolean),
            ScalarType::UnixTimestamp => {
                matches!(dt, D::Timestamp(_, _) | D::Date32 | D::Date64 | D::Int64)
            }
        }
    }

    /// Whether values of this type can be entity join keys (Feast's key encoding covers only these).
    pub fn is_entity_key_type(self) -> bool {
        matches!(
            self,
            ScalarType::String
                | ScalarType::Bytes
                | ScalarType::Int32
                | ScalarType::Int64
                | ScalarType::UnixTimestamp
        )
    }
}

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for ScalarType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ScalarType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ScalarType::from_name(&text)
            .ok_or_else(|| serde::de::Error::custom(UnknownType { name: text.clone() }))
    }
}

/// The type of a feature or entity column: a scalar or an `Array(scalar)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueType {
    Scalar(ScalarType),
    Array(ScalarType),
}

/// A type name that is not one of Larder's value types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown type `{name}` (expected one of {expected})", expected = ValueType::names_hint())]
pub struct UnknownType {
    pub name: String,
}

impl ValueType {
    /// Feast's `ValueType.Enum` number (`*_LIST` types are the scalar number plus 10).
    pub fn feast_enum(self) -> i32 {
        match self {
            ValueType::Scalar(s) => s.feast_enum(),
            ValueType::Array(s) => s.feast_enum() + 10,
        }
    }

    /// The Arrow type Larder produces for this value type.
    pub fn arrow_type(self) -> DataType {
        match self {
            ValueType::Scalar(s) => s.arrow_type(),
            ValueType::Array(s) => DataType::new_list(s.arrow_type(), true),
        }
    }

    /// Whether a source column of Arrow type `dt` can be read as this type.
    pub fn accepts_arrow(self, dt: &DataType) -> bool {
        match (self, dt) {
            (ValueType::Scalar(s), dt) => s.accepts_arrow(dt),
            (
                ValueType::Array(s),
                DataType::List(f)
                | DataType::LargeList(f)
                | DataType::ListView(f)
                | DataType::LargeListView(f)
                | DataType::FixedSizeList(f, _),
            ) => s.accepts_arrow(f.data_type()),
            (ValueType::Array(_), _) => false,
        }
    }

    /// The scalar type, when this is not an array.
    pub fn scalar(self) -> Option<ScalarType> {
        match self {
            ValueType::Scalar(s) => Some(s),
            ValueType::Array(_) => None,
        }
    }

    fn names_hint() -> String {
        let scalars: Vec<&str> = ScalarType::ALL.iter().map(|s| s.name()).collect();
        format!("{} or Array(T) of those", scalars.join(", "))
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Scalar(s) => f.write_str(s.name()),
            ValueType::Array(s) => write!(f, "Array({})", s.name()),
        }
    }
}

impl FromStr for ValueType {
    type Err = UnknownType;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let unknown = || UnknownType {
            name: text.to_string(),
        };
        if let Some(inner) = trimmed
            .strip_prefix("Array(")
            .and_then(|rest| rest.strip_suffix(')'))
        {
            return ScalarType::from_name(inner.trim())
                .map(ValueType::Array)
                .ok_or_else(unknown);
        }
        ScalarType::from_name(trimmed)
            .map(ValueType::Scalar)
            .ok_or_else(unknown)
    }
}

impl Serialize for ValueType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ValueType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_type() {
        for s in ScalarType::ALL {
            for t in [ValueType::Scalar(s), ValueType::Array(s)] {
                let printed = t.to_string();
                assert_eq!(printed.parse::<ValueType>(), Ok(t), "{printed}");
            }
        }
        assert_eq!(
            "Array( Float32 )".parse::<ValueType>(),
            Ok(ValueType::Array(ScalarType::Float32))
        );
    }

    #[test]
    fn rejects_unknown_types_with_a_hint() {
        let err = "Flaot32".parse::<ValueType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown type `Flaot32` (expected one of Int32, Int64, Float32, Float64, String, \
             Bytes, Bool, UnixTimestamp or Array(T) of those)"
        );
        assert!("Array(Array(Int32))".parse::<ValueType>().is_err());
        assert!("Array(Int32".parse::<ValueType>().is_err());
    }

    #[test]
    fn feast_enum_numbers() {
        let cases = [
            ("Bytes", 1),
            ("String", 2),
            ("Int32", 3),
            ("Int64", 4),
            ("Float64", 5),
            ("Float32", 6),
            ("Bool", 7),
            ("UnixTimestamp", 8),
            ("Array(Bytes)", 11),
            ("Array(Float32)", 16),
            ("Array(UnixTimestamp)", 18),
        ];
        for (name, number) in cases {
            let t: ValueType = name.parse().unwrap();
            assert_eq!(t.feast_enum(), number, "{name}");
        }
    }

    #[test]
    fn arrow_compatibility() {
        use DataType as D;
        let f32 = ValueType::Scalar(ScalarType::Float32);
        let i64 = ValueType::Scalar(ScalarType::Int64);
        let ts = ValueType::Scalar(ScalarType::UnixTimestamp);
        let list = ValueType::Array(ScalarType::Float32);
        assert!(f32.accepts_arrow(&D::Float32));
        assert!(!f32.accepts_arrow(&D::Float64));
        assert!(i64.accepts_arrow(&D::Int32));
        assert!(!i64.accepts_arrow(&D::UInt64));
        assert!(!i64.accepts_arrow(&D::Utf8));
        assert!(ts.accepts_arrow(&D::Timestamp(TimeUnit::Nanosecond, None)));
        assert!(list.accepts_arrow(&D::new_list(D::Float32, true)));
        assert!(!list.accepts_arrow(&D::Float32));
        let dict = D::Dictionary(Box::new(D::Int32), Box::new(D::Utf8));
        assert!(ValueType::Scalar(ScalarType::String).accepts_arrow(&dict));
    }

    #[test]
    fn serde_round_trip_as_names() {
        let t = ValueType::Array(ScalarType::Int64);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"Array(Int64)\"");
        assert_eq!(serde_json::from_str::<ValueType>(&json).unwrap(), t);
    }
}
