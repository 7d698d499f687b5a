//! The validated object model: what a repo defines and what the registry stores.
//!
//! Every type here serializes to JSON as it is stored in the registry and shown by
//! `registry-dump` and `describe`; the plan diff compares these serialized forms field by field.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use larder_types::{FeatureRef, ObjectName, ScalarType, ValueType};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub type Tags = BTreeMap<String, String>;

/// The project block: name from `feature_store.yaml`, the rest from an optional `project:` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

/// An entity: the thing features describe, identified by one join key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub name: ObjectName,
    pub join_key: ObjectName,
    pub value_type: ScalarType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

/// A named, typed column: a feature, an entity column or a request field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Field {
    pub name: ObjectName,
    pub dtype: ValueType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

/// Where feature rows come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSource {
    pub name: ObjectName,
    #[serde(flatten)]
    pub kind: SourceKind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceKind {
    File(FileSource),
    Postgres(PostgresSource),
    Push(PushSource),
    Request(RequestSource),
}

impl SourceKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceKind::File(_) => "file",
            SourceKind::Postgres(_) => "postgres",
            SourceKind::Push(_) => "push",
            SourceKind::Request(_) => "request",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Parquet,
    Csv,
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
        })
    }
}

/// A Parquet or CSV file (or folder/glob of them), local or on an object store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileSource {
    /// As written in the definition: relative paths resolve against the repo folder.
    pub path: String,
    pub file_format: FileFormat,
    pub timestamp_field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_timestamp_column: Option<String>,
    /// Source column name → feature/entity name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_mapping: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_endpoint_override: Option<String>,
}

/// A Postgres table or query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostgresSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub timestamp_field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_timestamp_column: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_mapping: BTreeMap<String, String>,
}

/// Rows arrive through the push API; `batch_source` holds their history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushSource {
    pub batch_source: ObjectName,
}

/// Values supplied with each request, for on-demand views.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestSource {
    pub schema: Vec<Field>,
}

/// Maximum age of a feature value; zero means unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl(pub Duration);

impl Ttl {
    pub fn is_unbounded(self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            f.write_str("0s")
        } else {
            write!(f, "{}", humantime::format_duration(self.0))
        }
    }
}

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(Ttl)
            .map_err(serde::de::Error::custom)
    }
}

/// A feature view: features of some entities, read from one source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureView {
    pub name: ObjectName,
    /// Empty for an entity-less view.
    pub entities: Vec<ObjectName>,
    pub ttl: Ttl,
    /// The source as written: a batch source or a push source.
    pub source: ObjectName,
    /// The source holding history: `source` itself, or the push source's batch source.
    pub batch_source: ObjectName,
    pub online: bool,
    pub offline: bool,
    /// The join key columns, typed by their entities.
    pub entity_columns: Vec<Field>,
    pub features: Vec<Field>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

impl FeatureView {
    pub fn feature(&self, name: &str) -> Option<&Field> {
        self.features.iter().find(|f| f.name.as_str() == name)
    }

    pub fn join_keys(&self) -> impl Iterator<Item = &ObjectName> {
        self.entity_columns.iter().map(|f| &f.name)
    }
}

/// An output of an on-demand view: a SQL expression over its sources' columns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OdfvField {
    pub name: ObjectName,
    pub dtype: ValueType,
    pub expression: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// An on-demand feature view: features computed from other views and request data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnDemandFeatureView {
    pub name: ObjectName,
    /// Feature views and request sources, in the order written.
    pub sources: Vec<ObjectName>,
    pub features: Vec<OdfvField>,
    pub write_to_online_store: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

/// The features a service takes from one view, resolved at apply time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    pub feature_view: ObjectName,
    /// Name used in output columns and references instead of the view's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<ObjectName>,
    pub features: Vec<ObjectName>,
    /// Join key → request column carrying it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub join_key_map: BTreeMap<String, String>,
}

impl Projection {
    /// The name under which this projection's features are referenced and output.
    pub fn name_to_use(&self) -> &ObjectName {
        self.alias.as_ref().unwrap_or(&self.feature_view)
    }
}

/// A named, versionable set of features for one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureService {
    pub name: ObjectName,
    pub projections: Vec<Projection>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

impl FeatureService {
    /// The `view:feature` references of the service (views named by their alias when aliased).
    pub fn feature_refs(&self) -> Vec<FeatureRef> {
        self.projections
            .iter()
            .flat_map(|p| {
                p.features.iter().map(|f| FeatureRef {
                    view: p.name_to_use().clone(),
                    feature: f.clone(),
                })
            })
            .collect()
    }
}

/// The kinds of registry objects, in apply order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Project,
    Entity,
    DataSource,
    FeatureView,
    OnDemandFeatureView,
    FeatureService,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 6] = [
        ObjectKind::Project,
        ObjectKind::Entity,
        ObjectKind::DataSource,
        ObjectKind::FeatureView,
        ObjectKind::OnDemandFeatureView,
        ObjectKind::FeatureService,
    ];

    /// Human name, as in messages and plans: `feature view`.
    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::Project => "project",
            ObjectKind::Entity => "entity",
            ObjectKind::DataSource => "data source",
            ObjectKind::FeatureView => "feature view",
            ObjectKind::OnDemandFeatureView => "on demand feature view",
            ObjectKind::FeatureService => "feature service",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A piece of online-store infrastructure that a view needs (a table, a key space).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InfraObject {
    /// What it is, e.g. `sqlite table`.
    pub kind: String,
    pub name: String,
}

/// Everything one project defines, keyed by name; the unit that `plan` compares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    pub project: ProjectSpec,
    #[serde(default)]
    pub entities: BTreeMap<ObjectName, Entity>,
    #[serde(default)]
    pub data_sources: BTreeMap<ObjectName, DataSource>,
    #[serde(default)]
    pub feature_views: BTreeMap<ObjectName, FeatureView>,
    #[serde(default)]
    pub on_demand_feature_views: BTreeMap<ObjectName, OnDemandFeatureView>,
    #[serde(default)]
    pub feature_services: BTreeMap<ObjectName, FeatureService>,
}

impl Definitions {
    pub fn empty(project: ProjectSpec) -> Self {
        Definitions {
            project,
            entities: BTreeMap::new(),
            data_sources: BTreeMap::new(),
            feature_views: BTreeMap::new(),
            on_demand_feature_views: BTreeMap::new(),
            feature_services: BTreeMap::new(),
        }
    }

    /// Names of every object of `kind` (the project itself for `Project`).
    pub fn names(&self, kind: ObjectKind) -> Vec<&str> {
        match kind {
            ObjectKind::Project => vec![self.project.name.as_str()],
            ObjectKind::Entity => self.entities.keys().map(|k| k.as_str()).collect(),
            ObjectKind::DataSource => self.data_sources.keys().map(|k| k.as_str()).collect(),
            ObjectKind::FeatureView => self.feature_views.keys().map(|k| k.as_str()).collect(),
            ObjectKind::OnDemandFeatureView => self
                .on_demand_feature_views
                .keys()
                .map(|k| k.as_str())
                .collect(),
            ObjectKind::FeatureService => {
                self.feature_services.keys().map(|k| k.as_str()).collect()
            }
        }
    }

    /// The JSON form of one object, as stored and diffed; None when absent.
    pub fn object_json(&self, kind: ObjectKind, name: &str) -> Option<serde_json::Value> {
        fn json<T: Serialize>(value: Option<&T>) -> Option<serde_json::Value> {
            value.and_then(|v| serde_json::to_value(v).ok())
        }
        match kind {
            ObjectKind::Project => (self.project.name == name)
                .then(|| serde_json::to_value(&self.project).ok())
                .flatten(),
            ObjectKind::Entity => json(self.entities.get(name)),
            ObjectKind::DataSource => json(self.data_sources.get(name)),
            ObjectKind::FeatureView => json(self.feature_views.get(name)),
            ObjectKind::OnDemandFeatureView => json(self.on_demand_feature_views.get(name)),
            ObjectKind::FeatureService => json(self.feature_services.get(name)),
        }
    }

    /// Online-store infrastructure this project needs: one table per online view (and per
    /// on-demand view written to the online store), named `{project}_{view}` as Feast does.
    /// `store_kind` is the online store's infra label (e.g. `sqlite table`); None when the
    /// store has no per-view infrastructure.
    pub fn infra_objects(&self, store_kind: Option<&str>) -> BTreeSet<InfraObject> {
        let Some(kind) = store_kind else {
            return BTreeSet::new();
        };
        let project = &self.project.name;
        let views = self
            .feature_views
            .values()
            .filter(|v| v.online)
            .map(|v| &v.name);
        let odfvs = self
            .on_demand_feature_views
            .values()
            .filter(|v| v.write_to_online_store)
            .map(|v| &v.name);
        views
            .chain(odfvs)
            .map(|name| InfraObject {
                kind: kind.to_string(),
                name: format!("{project}_{name}"),
            })
            .collect()
    }
}
