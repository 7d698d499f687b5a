//! Resolving a feature request (`view:feature` references or a feature service) into the
//! views to read, the features of each and their output column names.

use std::collections::{BTreeMap, HashMap};

use larder_types::{FeatureRef, ObjectName};

use crate::model::{Definitions, FeatureView, Field};

/// What a caller asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FeatureSelection {
    /// `view:feature` references, in output order.
    Refs(Vec<FeatureRef>),
    /// All features of a feature service, in the service's order.
    Service(String),
}

/// One view to read for a request.
#[derive(Clone, Debug)]
pub struct ResolvedView {
    pub view: FeatureView,
    /// The alias from a service projection, else the view's name: prefixes full feature names.
    pub name_to_use: ObjectName,
    /// Join key of the view → request column holding it (identity unless a projection maps it).
    pub join_key_columns: Vec<(ObjectName, String)>,
    /// Requested features with their output column names.
    pub features: Vec<(Field, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("feature service `{name}` not found in project `{project}`")]
    ServiceNotFound { name: String, project: String },
    #[error("feature view `{view}` not found in project `{project}` (requested as `{reference}`)")]
    ViewNotFound {
        view: String,
        reference: String,
        project: String,
    },
    #[error("feature view `{view}` has no feature `{feature}` (its features: {available})")]
    FeatureNotFound {
        view: String,
        feature: String,
        available: String,
    },
    #[error(
        "on-demand feature view `{view}` cannot be read here yet: on-demand features are computed \
         at read time by a later release"
    )]
    OnDemandNotSupported { view: String },
    #[error("feature names collide: {names} (set full_feature_names to get `view__feature` names)")]
    NameCollision { names: String },
    #[error("no features requested")]
    Empty,
}

/// A projection being resolved: (view, name to use, features, join key map).
type Wanted = (
    ObjectName,
    ObjectName,
    Vec<ObjectName>,
    BTreeMap<String, String>,
);

/// Resolves `selection` against `defs`. Views come out in order of first reference;
/// features within a view in request order. Output names are checked for collisions.
pub fn resolve_features(
    defs: &Definitions,
    selection: &FeatureSelection,
    full_feature_names: bool,
) -> Result<Vec<ResolvedView>, ResolveError> {
    let project = &defs.project.name;
    // One entry per projection: (view name, alias, features, join key map).
    let mut wanted: Vec<Wanted> = Vec::new();
    match selection {
        FeatureSelection::Service(name) => {
            let service = defs.feature_services.get(name.as_str()).ok_or_else(|| {
                ResolveError::ServiceNotFound {
                    name: name.clone(),
                    project: project.clone(),
                }
            })?;
            for p in &service.projections {
                wanted.push((
                    p.feature_view.clone(),
                    p.name_to_use().clone(),
                    p.features.clone(),
                    p.join_key_map.clone(),
                ));
            }
        }
        FeatureSelection::Refs(refs) => {
            for r in refs {
                match wanted.iter_mut().find(|w| w.0 == r.view) {
                    Some(entry) => {
                        if !entry.2.contains(&r.feature) {
                            entry.2.push(r.feature.clone());
                        }
                    }
                    None => wanted.push((
                        r.view.clone(),
                        r.view.clone(),
                        vec![r.feature.clone()],
                        BTreeMap::new(),
                    )),
                }
            }
        }
    }
    if wanted.is_empty() {
        return Err(ResolveError::Empty);
    }
    let mut resolved = Vec::with_capacity(wanted.len());
    for (view_name, alias, features, join_key_map) in wanted {
        let Some(view) = defs.feature_views.get(view_name.as_str()) else {
            if defs
                .on_demand_feature_views
                .contains_key(view_name.as_str())
            {
                return Err(ResolveError::OnDemandNotSupported {
                    view: view_name.to_string(),
                });
            }
            return Err(ResolveError::ViewNotFound {
                view: view_name.to_string(),
                reference: format!(
                    "{view_name}:{}",
                    features.first().map(|f| f.as_str()).unwrap_or("")
                ),
                project: project.clone(),
            });
        };
        let mut fields = Vec::with_capacity(features.len());
        for feature in &features {
            let Some(field) = view.feature(feature.as_str()) else {
                let available: Vec<String> = view
                    .features
                    .iter()
                    .map(|f| format!("`{}`", f.name))
                    .collect();
                return Err(ResolveError::FeatureNotFound {
                    view: view_name.to_string(),
                    feature: feature.to_string(),
                    available: available.join(", "),
                });
            };
            let output = FeatureRef {
                view: alias.clone(),
                feature: feature.clone(),
            }
            .output_name(full_feature_names);
            fields.push((field.clone(), output));
        }
        let join_key_columns = view
            .join_keys()
            .map(|k| {
                let column = join_key_map
                    .get(k.as_str())
                    .cloned()
                    .unwrap_or_else(|| k.to_string());
                (k.clone(), column)
            })
            .collect();
        resolved.push(ResolvedView {
            view: view.clone(),
            name_to_use: alias,
            join_key_columns,
            features: fields,
        });
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, name) in resolved.iter().flat_map(|v| v.features.iter()) {
        *seen.entry(name.as_str()).or_default() += 1;
    }
    let mut collisions: Vec<&str> = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(name, _)| name)
        .collect();
    if !collisions.is_empty() {
        collisions.sort_unstable();
        let names: Vec<String> = collisions.iter().map(|n| format!("`{n}`")).collect();
        return Err(ResolveError::NameCollision {
            names: names.join(", "),
        });
    }
    Ok(resolved)
}
