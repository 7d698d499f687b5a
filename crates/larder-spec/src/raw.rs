//! The YAML shape of definition files, as written, with source lines kept for error messages.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

pub type S<T> = Spanned<T>;

pub fn line<T>(spanned: &S<T>) -> u64 {
    spanned.referenced.line()
}

/// One definition file. Any other top-level key is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub project: Option<S<RawProject>>,
    pub entities: Option<Vec<S<RawEntity>>>,
    pub data_sources: Option<Vec<S<RawDataSource>>>,
    pub feature_views: Option<Vec<S<RawFeatureView>>>,
    pub on_demand_feature_views: Option<Vec<S<RawOnDemandFeatureView>>>,
    pub feature_services: Option<Vec<S<RawFeatureService>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProject {
    pub name: Option<S<String>>,
    pub description: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub owner: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntity {
    pub name: S<String>,
    pub join_keys: Option<S<Vec<S<String>>>>,
    pub value_type: Option<S<String>>,
    pub description: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub owner: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    pub name: S<String>,
    pub dtype: S<String>,
    pub description: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    /// Only for on-demand views.
    pub expression: Option<S<String>>,
}

/// Every key any source type may have; which ones are allowed depends on `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDataSource {
    pub name: S<String>,
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub path: Option<S<String>>,
    pub file_format: Option<S<String>>,
    pub s3_endpoint_override: Option<S<String>>,
    pub table: Option<S<String>>,
    pub query: Option<S<String>>,
    pub timestamp_field: Option<S<String>>,
    pub created_timestamp_column: Option<S<String>>,
    pub field_mapping: Option<S<BTreeMap<String, String>>>,
    pub batch_source: Option<S<String>>,
    pub schema: Option<S<Vec<S<RawField>>>>,
    pub description: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub owner: Option<String>,
}

impl RawDataSource {
    /// The keys that were given, with their lines, for "not allowed for this type" checks.
    pub fn given_keys(&self) -> Vec<(&'static str, u64)> {
        let mut keys = Vec::new();
        let mut add = |name: &'static str, l: Option<u64>| {
            if let Some(l) = l {
                keys.push((name, l));
            }
        };
        add("path", self.path.as_ref().map(line));
        add("file_format", self.file_format.as_ref().map(line));
        add(
            "s3_endpoint_override",
            self.s3_endpoint_override.as_ref().map(line),
        );
        add("table", self.table.as_ref().map(line));
        add("query", self.query.as_ref().map(line));
        add("timestamp_field", self.timestamp_field.as_ref().map(line));
        add(
            "created_timestamp_column",
            self.created_timestamp_column.as_ref().map(line),
        );
        add("field_mapping", self.field_mapping.as_ref().map(line));
        add("batch_source", self.batch_source.as_ref().map(line));
        add("schema", self.schema.as_ref().map(line));
        keys
    }
}

/// A ttl: a duration string (`1d`, `2h 30m`, `86400s`) or a number of seconds.
#[derive(Debug)]
pub enum RawDuration {
    Text(String),
    Seconds(u64),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `1d`, `12h` or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Seconds(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                u64::try_from(v)
                    .map(RawDuration::Seconds)
                    .map_err(|_| E::custom("a ttl cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatureView {
    pub name: S<String>,
    pub entities: Option<S<Vec<S<String>>>>,
    pub ttl: Option<S<RawDuration>>,
    pub source: Option<S<String>>,
    pub online: Option<bool>,
    pub offline: Option<bool>,
    pub schema: Option<S<Vec<S<RawField>>>>,
    pub description: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub owner: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnDemandFeatureView {
    pub name: S<String>,
    pub sources: Option<S<Vec<S<String>>>>,
    pub schema: Option<S<Vec<S<RawField>>>>,
    pub write_to_online_store: Option<bool>,
    pub description: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub owner: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatureService {
    pub name: S<String>,
    pub features: Option<S<Vec<S<RawProjection>>>>,
    pub description: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub owner: Option<String>,
}

/// Which features of a view: `"*"` or a list of names.
#[derive(Debug)]
pub enum Selection {
    All,
    Some(Vec<String>),
    /// Neither: reported with the service's other errors instead of aborting the file.
    Invalid(String),
}

impl<'de> Deserialize<'de> for Selection {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Selection;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"*\" or a list of feature names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Selection, E> {
                if v == "*" {
                    Ok(Selection::All)
                } else {
                    Ok(Selection::Invalid(v.to_string()))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Selection, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(Selection::Some(names))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// One entry of a service's `features`: `- view: [a, b]`, `- view: "*"`, or the long form
/// `- {feature_view: view, alias: name, features: [...], join_key_map: {key: column}}`.
#[derive(Debug)]
pub struct RawProjection {
    pub feature_view: S<String>,
    pub alias: Option<S<String>>,
    pub features: Selection,
    pub join_key_map: BTreeMap<String, String>,
}

const LONG_FORM_KEYS: [&str; 4] = ["feature_view", "alias", "features", "join_key_map"];

impl<'de> Deserialize<'de> for RawProjection {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawProjection;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`view: [features]`, `view: \"*\"` or a mapping with `feature_view`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawProjection, A::Error> {
                let mut feature_view = None;
                let mut alias = None;
                let mut features = None;
                let mut join_key_map = None;
                let mut short: Vec<(S<String>, Selection)> = Vec::new();
                while let Some(key) = map.next_key::<S<String>>()? {
                    match key.value.as_str() {
                        "feature_view" => feature_view = Some(map.next_value::<S<String>>()?),
                        "alias" => alias = Some(map.next_value::<S<String>>()?),
                        "features" => features = Some(map.next_value::<Selection>()?),
                        "join_key_map" => {
                            join_key_map = Some(map.next_value::<BTreeMap<String, String>>()?)
                        }
                        _ => {
                            let selection = map.next_value::<Selection>()?;
                            short.push((key, selection));
                        }
                    }
                }
                match feature_view {
                    Some(feature_view) => {
                        if let Some((key, _)) = short.first() {
                            return Err(de::Error::custom(format!(
                                "unknown key `{}` in a projection (expected one of {})",
                                key.value,
                                LONG_FORM_KEYS.join(", ")
                            )));
                        }
                        Ok(RawProjection {
                            feature_view,
                            alias,
                            features: features.unwrap_or(Selection::All),
                            join_key_map: join_key_map.unwrap_or_default(),
                        })
                    }
                    None => {
                        if alias.is_some() || features.is_some() || join_key_map.is_some() {
                            return Err(de::Error::custom(
                                "a projection with `alias`, `features` or `join_key_map` \
                                 needs `feature_view`",
                            ));
                        }
                        if short.len() != 1 {
                            return Err(de::Error::custom(format!(
                                "a projection names exactly one view (`view: [features]`), \
                                 found {}",
                                short.len()
                            )));
                        }
                        let Some((view, selection)) = short.pop() else {
                            return Err(de::Error::custom("empty projection"));
                        };
                        Ok(RawProjection {
                            feature_view: view,
                            alias: None,
                            features: selection,
                            join_key_map: BTreeMap::new(),
                        })
                    }
                }
            }
        }
        deserializer.deserialize_map(V)
    }
}
