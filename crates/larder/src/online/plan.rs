//! A compiled online request: what a feature selection needs from the online store, resolved
//! once against a registry snapshot and reused for every request.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use larder_online::{PreparedRead, ViewTable};
use larder_spec::{Definitions, FeatureSelection, ResolvedView, resolve_features};
use larder_types::feast::FormatError;
use larder_types::{ScalarType, ValueType};

use super::OnlineRequestError;
use super::response::OutputNames;
use crate::error::Error;

/// A feature selection resolved against one registry snapshot: per view its online table,
/// the features to read, the join keys with their declared types, the output names and the
/// ttl.
///
/// Building a plan does every registry lookup of a request; [`OnlineReader::read`] then only
/// touches the entity values and the store. A server caches plans per snapshot and
/// selection. A plan is immutable and cheap to clone (its parts are shared).
///
/// [`OnlineReader::read`]: super::OnlineReader::read
#[derive(Clone, Debug)]
pub struct OnlinePlan {
    /// Distinct (request column, declared type) pairs the views need, in order of first use.
    pub(crate) key_columns: Arc<[KeyColumn]>,
    /// In order of first reference.
    pub(crate) views: Arc<[PlanView]>,
    /// The views' output names, in response order; every response of the plan shares them.
    pub(crate) outputs: Arc<OutputNames>,
}

/// An entity column a view's key is built from, and the type its values are read as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyColumn {
    pub column: String,
    pub ty: ScalarType,
}

/// One view of a plan.
#[derive(Clone, Debug)]
pub(crate) struct PlanView {
    pub table: ViewTable,
    /// Requested features as stored, in request order.
    pub features: Vec<String>,
    /// Output name of each requested feature.
    pub outputs: Vec<String>,
    /// The view's join keys (names inside the entity key), aligned with `key_columns`;
    /// empty for a view without entities.
    pub join_keys: Vec<String>,
    /// For each join key, its index in [`OnlinePlan::key_columns`].
    pub key_columns: Vec<usize>,
    /// Maximum age of a value in microseconds; 0 is unbounded.
    pub ttl_micros: i64,
    /// What the store worked out for reading `features` of `table`, on the plan's first
    /// read ([`OnlineStore::prepare_read`]); a cached plan spares every later request that
    /// work.
    ///
    /// [`OnlineStore::prepare_read`]: larder_online::OnlineStore::prepare_read
    pub prepared: OnceLock<Option<PreparedRead>>,
}

impl OnlinePlan {
    /// Resolves `selection` (feature references or a feature service) against `defs`.
    ///
    /// Errors: [`Error::Features`] for unknown views, features or services, on-demand
    /// views, and output names that collide between views; [`Error::OnlineRequest`] for a
    /// view that is not online or a feature named like a join key column.
    pub fn new(
        defs: &Definitions,
        selection: &FeatureSelection,
        full_feature_names: bool,
    ) -> Result<Self, Error> {
        let resolved = resolve_features(defs, selection, full_feature_names)?;
        let project = &defs.project.name;
        let mut key_columns: Vec<KeyColumn> = Vec::new();
        let mut views = Vec::with_capacity(resolved.len());
        for rv in resolved {
            views.push(plan_view(project, &rv, &mut key_columns)?);
        }
        let join_columns: HashSet<&str> = key_columns.iter().map(|k| k.column.as_str()).collect();
        if let Some(name) = views
            .iter()
            .flat_map(|v| &v.outputs)
            .find(|name| join_columns.contains(name.as_str()))
        {
            return Err(OnlineRequestError::NameCollision { name: name.clone() }.into());
        }
        let outputs = OutputNames::new(views.iter().flat_map(|v| v.outputs.clone()).collect());
        Ok(OnlinePlan {
            key_columns: key_columns.into(),
            views: views.into(),
            outputs: Arc::new(outputs),
        })
    }

    /// Output names of the requested features, in response order (the response starts with
    /// the request's join key columns, which this does not list).
    pub fn feature_names(&self) -> impl Iterator<Item = &str> {
        self.views
            .iter()
            .flat_map(|v| v.outputs.iter().map(String::as_str))
    }

    /// The entity columns a request must give (join keys, after a service's join key
    /// mapping), in order of first use.
    pub fn join_key_columns(&self) -> impl Iterator<Item = &str> {
        let mut seen = HashSet::new();
        self.key_columns
            .iter()
            .map(|k| k.column.as_str())
            .filter(move |c| seen.insert(*c))
    }
}

fn plan_view(
    project: &str,
    rv: &ResolvedView,
    key_columns: &mut Vec<KeyColumn>,
) -> Result<PlanView, Error> {
    let view = &rv.view;
    if !view.online {
        return Err(OnlineRequestError::ViewNotOnline {
            view: view.name.to_string(),
        }
        .into());
    }
    let mut join_keys = Vec::with_capacity(rv.join_key_columns.len());
    let mut indices = Vec::with_capacity(rv.join_key_columns.len());
    for (join_key, column) in &rv.join_key_columns {
        let declared = view
            .entity_columns
            .iter()
            .find(|f| f.name == *join_key)
            .map(|f| f.dtype);
        let ty = match declared {
            Some(ValueType::Scalar(ty)) if ty.is_entity_key_type() => ty,
            other => {
                let found = other.map_or("undeclared", |t| match t {
                    ValueType::Scalar(ty) => ty.name(),
                    ValueType::Array(_) => "Array",
                });
                return Err(OnlineRequestError::EntityKey {
                    view: view.name.to_string(),
                    source: FormatError::UnsupportedKeyValue {
                        join_key: join_key.to_string(),
                        found,
                    },
                }
                .into());
            }
        };
        let wanted = KeyColumn {
            column: column.clone(),
            ty,
        };
        let index = match key_columns.iter().position(|k| *k == wanted) {
            Some(index) => index,
            None => {
                key_columns.push(wanted);
                key_columns.len() - 1
            }
        };
        join_keys.push(join_key.to_string());
        indices.push(index);
    }
    let ttl_micros = i64::try_from(view.ttl.0.as_micros()).unwrap_or(i64::MAX);
    Ok(PlanView {
        table: ViewTable::new(
            project,
            view.name.as_str(),
            view.features.iter().map(|f| f.name.as_str()),
        ),
        features: rv
            .features
            .iter()
            .map(|(f, _)| f.name.to_string())
            .collect(),
        outputs: rv.features.iter().map(|(_, out)| out.clone()).collect(),
        join_keys,
        key_columns: indices,
        ttl_micros,
        prepared: OnceLock::new(),
    })
}
