//! Online features: the latest values of features for entity rows, read from the online
//! store at serving time (Feast's `get_online_features`, feast-behaviour.md §7).
//!
//! A request is compiled once into an [`OnlinePlan`] (registry lookups, names, types), then
//! each read is [`OnlineReader::read`]: coerce the entity values, build the entity keys,
//! one store round trip for all views, and per cell a value, a status and an event time.
//! [`FeatureStore::get_online_features`] does both for one request.

mod error;
mod plan;
mod read;
mod response;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use larder_registry::{ProjectState, Snapshot};
use larder_spec::{Definitions, FeatureSelection};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value as Json;

pub use error::OnlineRequestError;
pub use plan::OnlinePlan;
pub use read::OnlineReader;
pub use response::{DictOptions, FeatureVector, FieldStatus, OnlineResponse};

use crate::error::Error;
use crate::store::FeatureStore;

/// Entity rows given column by column, like the `entities` map of Feast's HTTP request:
/// `(column name, one JSON value per row)` in request order, all columns of one length.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntityColumns {
    columns: Vec<(String, Vec<Json>)>,
    rows: usize,
}

impl EntityColumns {
    /// Errors when two columns have different lengths or a name repeats.
    pub fn new(columns: Vec<(String, Vec<Json>)>) -> Result<Self, OnlineRequestError> {
        let rows = columns.first().map_or(0, |(_, values)| values.len());
        for (i, (name, values)) in columns.iter().enumerate() {
            if values.len() != rows {
                return Err(OnlineRequestError::ColumnLength {
                    column: name.clone(),
                    rows: values.len(),
                    first: columns[0].0.clone(),
                    expected: rows,
                });
            }
            if columns[..i].iter().any(|(other, _)| other == name) {
                return Err(OnlineRequestError::DuplicateColumn {
                    column: name.clone(),
                });
            }
        }
        Ok(EntityColumns { columns, rows })
    }

    /// From entity rows (`[{column: value}]`, as Feast's `entity_rows`); every row must
    /// name the same columns. Columns keep the order of the first row.
    pub fn from_rows(rows: Vec<Vec<(String, Json)>>) -> Result<Self, OnlineRequestError> {
        let Some(first) = rows.first() else {
            return Ok(EntityColumns::default());
        };
        let names: Vec<String> = first.iter().map(|(n, _)| n.clone()).collect();
        let mut columns: Vec<(String, Vec<Json>)> = names
            .iter()
            .map(|n| (n.clone(), Vec::with_capacity(rows.len())))
            .collect();
        for (r, row) in rows.into_iter().enumerate() {
            let same = row.len() == names.len()
                && row.iter().all(|(n, _)| names.contains(n))
                && names.iter().all(|n| row.iter().any(|(m, _)| m == n));
            if !same {
                return Err(OnlineRequestError::RowColumns {
                    row: r,
                    found: row.iter().map(|(n, _)| n.clone()).collect(),
                    expected: names,
                });
            }
            for (name, value) in row {
                if let Some((_, column)) = columns.iter_mut().find(|(n, _)| *n == name) {
                    column.push(value);
                }
            }
        }
        Self::new(columns)
    }

    pub fn num_rows(&self) -> usize {
        self.rows
    }

    pub fn columns(&self) -> &[(String, Vec<Json>)] {
        &self.columns
    }

    pub fn column(&self, name: &str) -> Option<&[Json]> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, values)| values.as_slice())
    }
}

/// A JSON object of columns, `{"driver_id": [1001, 1002]}`, in document order.
impl<'de> Deserialize<'de> for EntityColumns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ColumnsVisitor;
        impl<'de> Visitor<'de> for ColumnsVisitor {
            type Value = EntityColumns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of entity columns, each a list of values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EntityColumns, A::Error> {
                let mut columns = Vec::with_capacity(map.size_hint().unwrap_or(1));
                while let Some(entry) = map.next_entry::<String, Vec<Json>>()? {
                    columns.push(entry);
                }
                EntityColumns::new(columns).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_map(ColumnsVisitor)
    }
}

/// A `get_online_features` call.
#[derive(Clone, Debug)]
pub struct OnlineFeaturesRequest {
    pub features: FeatureSelection,
    pub entities: EntityColumns,
    /// Name outputs `{view or alias}__{feature}` instead of `feature`.
    pub full_feature_names: bool,
}

impl FeatureStore {
    /// The reader of the configured online store.
    ///
    /// Errors: [`Error::Unsupported`] when no online store is configured or its backend is
    /// not in this build.
    pub fn online_reader(&self) -> Result<OnlineReader, Error> {
        let Some(store) = self.online_store()? else {
            return Err(match &self.config().online_store {
                None => Error::Unsupported {
                    what: "reading online features without an `online_store`".into(),
                    hint: "configure `online_store` in feature_store.yaml".into(),
                },
                Some(other) => Error::Unsupported {
                    what: format!("`online_store: {{type: {}}}`", other.type_name()),
                    hint: "this build has the `sqlite`, `redis` and `postgres` online stores"
                        .into(),
                },
            });
        };
        Ok(OnlineReader::new(store, self.key_version()))
    }

    /// This project's applied definitions, from the cached registry snapshot (refreshed
    /// once when the cache does not know the project yet).
    pub async fn applied_definitions(&self) -> Result<Arc<Definitions>, Error> {
        let snapshot = self.snapshot_with_project().await?;
        Ok(Arc::new(self.project_in(&snapshot)?.definitions()))
    }

    /// The cached registry snapshot, refreshed once when it does not know the project yet
    /// (an error when the refreshed one does not either).
    async fn snapshot_with_project(&self) -> Result<Arc<Snapshot>, Error> {
        let snapshot = self.snapshot().await?;
        if snapshot.project(self.project()).is_some() {
            return Ok(snapshot);
        }
        Ok(self.project_state().await?.0)
    }

    /// This project's state in `snapshot`.
    fn project_in<'s>(&self, snapshot: &'s Snapshot) -> Result<&'s ProjectState, Error> {
        snapshot.project(self.project()).ok_or_else(|| {
            Error::Registry(larder_registry::RegistryError::ProjectNotFound {
                project: self.project().to_string(),
            })
        })
    }

    /// The latest feature values for entity rows, from the online store, as applied in the
    /// registry. Statuses are judged at [`FeatureStore::now`]. See [`OnlineReader::read`]
    /// for the semantics. The request's [`OnlinePlan`] is compiled once per registry
    /// snapshot and selection ([`online_plan`](Self::online_plan)).
    pub async fn get_online_features(
        &self,
        request: OnlineFeaturesRequest,
    ) -> Result<OnlineResponse, Error> {
        let reader = self.online_reader()?;
        let plan = self
            .online_plan(&request.features, request.full_feature_names)
            .await?;
        reader.read(&plan, &request.entities, self.now()).await
    }

    /// The plan of `selection` against the current registry snapshot: compiled on first use,
    /// then taken from this store's cache until the snapshot changes (a registry refresh
    /// that finds a new version). Errors as [`OnlinePlan::new`], or when the project was
    /// never applied.
    pub async fn online_plan(
        &self,
        selection: &FeatureSelection,
        full_feature_names: bool,
    ) -> Result<OnlinePlan, Error> {
        let snapshot = self.snapshot_with_project().await?;
        if let Some(plan) = self
            .online_plans
            .get(&snapshot, selection, full_feature_names)
        {
            return Ok(plan);
        }
        let defs = self.project_in(&snapshot)?.definitions();
        let plan = OnlinePlan::new(&defs, selection, full_feature_names)?;
        self.online_plans.insert(
            &snapshot,
            selection.clone(),
            full_feature_names,
            plan.clone(),
        );
        Ok(plan)
    }
}

/// Plans cached per selection for one registry snapshot; a new snapshot empties it.
#[derive(Debug, Default)]
pub(crate) struct PlanCache {
    inner: Mutex<CachedPlans>,
}

#[derive(Debug, Default)]
struct CachedPlans {
    /// The snapshot the plans were compiled against (held, so that it is compared by
    /// identity and never mistaken for a later one at the same address).
    snapshot: Option<Arc<Snapshot>>,
    /// By `full_feature_names` (`false`, `true`), then by selection.
    plans: [HashMap<FeatureSelection, OnlinePlan>; 2],
}

impl CachedPlans {
    fn holds(&self, snapshot: &Arc<Snapshot>) -> bool {
        self.snapshot
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, snapshot))
    }
}

/// Selections cached per snapshot; beyond, the cache starts over.
const MAX_CACHED_PLANS: usize = 256;

impl PlanCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CachedPlans> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(
        &self,
        snapshot: &Arc<Snapshot>,
        selection: &FeatureSelection,
        full_feature_names: bool,
    ) -> Option<OnlinePlan> {
        let cached = self.lock();
        if !cached.holds(snapshot) {
            return None;
        }
        cached.plans[usize::from(full_feature_names)]
            .get(selection)
            .cloned()
    }

    fn insert(
        &self,
        snapshot: &Arc<Snapshot>,
        selection: FeatureSelection,
        full_feature_names: bool,
        plan: OnlinePlan,
    ) {
        let mut cached = self.lock();
        let count: usize = cached.plans.iter().map(HashMap::len).sum();
        if !cached.holds(snapshot) || count >= MAX_CACHED_PLANS {
            cached.plans.iter_mut().for_each(HashMap::clear);
            cached.snapshot = Some(snapshot.clone());
        }
        cached.plans[usize::from(full_feature_names)].insert(selection, plan);
    }
}

#[cfg(test)]
mod tests;
