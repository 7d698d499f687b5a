//! Validated object names and `view:feature` references.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest accepted object name; names end up in table names and Redis hash fields.
const MAX_NAME_LEN: usize = 128;

/// The name of an entity, data source, view, feature, field or service.
///
/// Names start with a letter, digit or `_` and continue with letters, digits, `_`, `-` or `.`,
/// at most 128 characters. That keeps them usable in `view:feature` references, in
/// `view__feature` output names and in online store table names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ObjectName(String);

/// Why a string is not a valid [`ObjectName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("name is empty")]
    Empty,
    #[error("name `{name}` is longer than {MAX_NAME_LEN} characters")]
    TooLong { name: String },
    #[error(
        "name `{name}` has the character `{ch}`; use letters, digits, `_`, `-` or `.` (not first)"
    )]
    BadChar { name: String, ch: char },
}

impl ObjectName {
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        if name.is_empty() {
            return Err(InvalidName::Empty);
        }
        if name.chars().count() > MAX_NAME_LEN {
            return Err(InvalidName::TooLong { name });
        }
        for (i, ch) in name.chars().enumerate() {
            let ok = ch.is_ascii_alphanumeric() || ch == '_' || (i > 0 && (ch == '-' || ch == '.'));
            if !ok {
                return Err(InvalidName::BadChar { name, ch });
            }
        }
        Ok(ObjectName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for ObjectName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for ObjectName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectName::new(s)
    }
}

impl<'de> Deserialize<'de> for ObjectName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ObjectName::new(text).map_err(serde::de::Error::custom)
    }
}

/// A `view:feature` reference, as used by feature lists and services.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeatureRef {
    pub view: ObjectName,
    pub feature: ObjectName,
}

/// A string that is not a `view:feature` reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("feature reference `{text}` is not of the form `view:feature`{detail}")]
pub struct ParseFeatureRefError {
    pub text: String,
    detail: String,
}

impl FeatureRef {
    /// The output column name: `feature`, or `view__feature` with full feature names.
    pub fn output_name(&self, full_feature_names: bool) -> String {
        if full_feature_names {
            format!("{}__{}", self.view, self.feature)
        } else {
            self.feature.to_string()
        }
    }
}

impl fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.view, self.feature)
    }
}

impl FromStr for FeatureRef {
    type Err = ParseFeatureRefError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |detail: String| ParseFeatureRefError {
            text: text.to_string(),
            detail,
        };
        let (view, feature) = text.split_once(':').ok_or_else(|| fail(String::new()))?;
        let view = ObjectName::new(view).map_err(|e| fail(format!(": view {e}")))?;
        let feature = ObjectName::new(feature).map_err(|e| fail(format!(": feature {e}")))?;
        Ok(FeatureRef { view, feature })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "driver",
            "driver_stats_v2",
            "_dummy",
            "a-b",
            "a.b",
            "9lives",
        ] {
            assert!(ObjectName::new(ok).is_ok(), "{ok}");
        }
        let cases = [
            ("", "name is empty"),
            (
                "a b",
                "name `a b` has the character ` `; use letters, digits, `_`, `-` or `.` (not first)",
            ),
            (
                "-a",
                "name `-a` has the character `-`; use letters, digits, `_`, `-` or `.` (not first)",
            ),
            (
                "v:f",
                "name `v:f` has the character `:`; use letters, digits, `_`, `-` or `.` (not first)",
            ),
        ];
        for (input, message) in cases {
            assert_eq!(ObjectName::new(input).unwrap_err().to_string(), message);
        }
        assert!(ObjectName::new("x".repeat(129)).is_err());
    }

    #[test]
    fn feature_refs() {
        let r: FeatureRef = "driver_hourly_stats:conv_rate".parse().unwrap();
        assert_eq!(r.view.as_str(), "driver_hourly_stats");
        assert_eq!(r.feature.as_str(), "conv_rate");
        assert_eq!(r.to_string(), "driver_hourly_stats:conv_rate");
        assert_eq!(r.output_name(true), "driver_hourly_stats__conv_rate");
        assert_eq!(r.output_name(false), "conv_rate");
        assert_eq!(
            "conv_rate".parse::<FeatureRef>().unwrap_err().to_string(),
            "feature reference `conv_rate` is not of the form `view:feature`"
        );
        assert_eq!(
            ":x".parse::<FeatureRef>().unwrap_err().to_string(),
            "feature reference `:x` is not of the form `view:feature`: view name is empty"
        );
    }
}
