//! The registry's content: every applied object with its timestamps, per project, plus
//! materialization history and the online infrastructure recorded at apply.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use larder_spec::{
    DataSource, Definitions, Entity, FeatureService, FeatureView, InfraObject, OnDemandFeatureView,
    ProjectSpec,
};
use larder_types::ObjectName;
use serde::{Deserialize, Serialize};

/// The serialized format written by this version of Larder.
pub const FORMAT: u32 = 1;

/// The whole registry: all projects of one registry location.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistryState {
    /// Larder's registry format; readers refuse a newer one.
    pub format: u32,
    /// Incremented by every commit.
    pub version: u64,
    pub last_updated: Option<DateTime<Utc>>,
    #[serde(default)]
    pub projects: BTreeMap<String, ProjectState>,
}

impl Default for RegistryState {
    fn default() -> Self {
        RegistryState {
            format: FORMAT,
            version: 0,
            last_updated: None,
            projects: BTreeMap::new(),
        }
    }
}

/// An applied object and when it was first applied and last changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored<T> {
    pub spec: T,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

/// A materialized time window, inclusive at both ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Everything the registry holds for one project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectState {
    pub project: Stored<ProjectSpec>,
    #[serde(default)]
    pub entities: BTreeMap<ObjectName, Stored<Entity>>,
    #[serde(default)]
    pub data_sources: BTreeMap<ObjectName, Stored<DataSource>>,
    #[serde(default)]
    pub feature_views: BTreeMap<ObjectName, Stored<FeatureView>>,
    #[serde(default)]
    pub on_demand_feature_views: BTreeMap<ObjectName, Stored<OnDemandFeatureView>>,
    #[serde(default)]
    pub feature_services: BTreeMap<ObjectName, Stored<FeatureService>>,
    /// Materialized windows per feature view, merged: overlapping or touching windows are
    /// one entry, so the registry does not grow with every scheduled run.
    #[serde(default)]
    pub materializations: BTreeMap<ObjectName, Vec<Interval>>,
    /// Online-store infrastructure created for this project.
    #[serde(default)]
    pub infra: BTreeSet<InfraObject>,
}

fn specs<T: Clone>(map: &BTreeMap<ObjectName, Stored<T>>) -> BTreeMap<ObjectName, T> {
    map.iter()
        .map(|(k, v)| (k.clone(), v.spec.clone()))
        .collect()
}

/// Keeps timestamps of unchanged objects, stamps changed and new ones with `now`.
fn restamp<T: Clone + PartialEq>(
    old: &BTreeMap<ObjectName, Stored<T>>,
    desired: &BTreeMap<ObjectName, T>,
    now: DateTime<Utc>,
) -> BTreeMap<ObjectName, Stored<T>> {
    desired
        .iter()
        .map(|(name, spec)| {
            let stored = match old.get(name) {
                Some(prev) if prev.spec == *spec => prev.clone(),
                Some(prev) => Stored {
                    spec: spec.clone(),
                    created: prev.created,
                    updated: now,
                },
                None => Stored {
                    spec: spec.clone(),
                    created: now,
                    updated: now,
                },
            };
            (name.clone(), stored)
        })
        .collect()
}

impl ProjectState {
    /// The applied objects as a definition set, to diff against a repo.
    pub fn definitions(&self) -> Definitions {
        Definitions {
            project: self.project.spec.clone(),
            entities: specs(&self.entities),
            data_sources: specs(&self.data_sources),
            feature_views: specs(&self.feature_views),
            on_demand_feature_views: specs(&self.on_demand_feature_views),
            feature_services: specs(&self.feature_services),
        }
    }

    /// The state after applying `desired` on top of `previous` (None for a new project).
    /// Objects missing from `desired` are removed, with their materialization history.
    pub fn applied(
        previous: Option<&ProjectState>,
        desired: &Definitions,
        infra: BTreeSet<InfraObject>,
        now: DateTime<Utc>,
    ) -> ProjectState {
        let empty = ProjectState::new(desired.project.clone(), now);
        let old = previous.unwrap_or(&empty);
        let project = if old.project.spec == desired.project {
            old.project.clone()
        } else {
            Stored {
                spec: desired.project.clone(),
                created: old.project.created,
                updated: now,
            }
        };
        let materializations = old
            .materializations
            .iter()
            .filter(|(view, _)| desired.feature_views.contains_key(*view))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ProjectState {
            project,
            entities: restamp(&old.entities, &desired.entities, now),
            data_sources: restamp(&old.data_sources, &desired.data_sources, now),
            feature_views: restamp(&old.feature_views, &desired.feature_views, now),
            on_demand_feature_views: restamp(
                &old.on_demand_feature_views,
                &desired.on_demand_feature_views,
                now,
            ),
            feature_services: restamp(&old.feature_services, &desired.feature_services, now),
            materializations,
            infra,
        }
    }

    fn new(spec: ProjectSpec, now: DateTime<Utc>) -> ProjectState {
        ProjectState {
            project: Stored {
                spec,
                created: now,
                updated: now,
            },
            entities: BTreeMap::new(),
            data_sources: BTreeMap::new(),
            feature_views: BTreeMap::new(),
            on_demand_feature_views: BTreeMap::new(),
            feature_services: BTreeMap::new(),
            materializations: BTreeMap::new(),
            infra: BTreeSet::new(),
        }
    }

    /// The end of the latest materialized window of `view`, where incremental runs resume.
    pub fn most_recent_end(&self, view: &str) -> Option<DateTime<Utc>> {
        self.materializations
            .get(view)
            .and_then(|intervals| intervals.iter().map(|i| i.end).max())
    }
}

/// Adds `[start, end]` to `intervals`, merging every overlapping or touching window, so the
/// list stays sorted, disjoint and as short as the history allows.
pub fn merge_interval(intervals: &mut Vec<Interval>, added: Interval) {
    intervals.push(added);
    intervals.sort();
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for interval in intervals.drain(..) {
        match merged.last_mut() {
            Some(last) if interval.start <= last.end => {
                last.end = last.end.max(interval.end);
            }
            _ => merged.push(interval),
        }
    }
    *intervals = merged;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, hour, 0, 0)
            .single()
            .unwrap()
    }

    fn iv(a: u32, b: u32) -> Interval {
        Interval {
            start: t(a),
            end: t(b),
        }
    }

    #[test]
    fn intervals_merge_as_data() {
        type Hours = &'static [(u32, u32)];
        let cases: &[(Hours, (u32, u32), Hours)] = &[
            (&[], (1, 2), &[(1, 2)]),
            (&[(1, 2)], (2, 3), &[(1, 3)]),
            (&[(1, 2)], (3, 4), &[(1, 2), (3, 4)]),
            (&[(1, 2), (3, 4)], (2, 3), &[(1, 4)]),
            (&[(5, 6)], (1, 2), &[(1, 2), (5, 6)]),
            (&[(1, 10)], (2, 3), &[(1, 10)]),
            (&[(2, 3)], (1, 10), &[(1, 10)]),
        ];
        for (before, added, after) in cases {
            let mut list: Vec<Interval> = before.iter().map(|&(a, b)| iv(a, b)).collect();
            merge_interval(&mut list, iv(added.0, added.1));
            let want: Vec<Interval> = after.iter().map(|&(a, b)| iv(a, b)).collect();
            assert_eq!(list, want, "{before:?} + {added:?}");
        }
    }

    #[test]
    fn hourly_incremental_runs_stay_one_interval() {
        let mut list = Vec::new();
        for h in 0..23 {
            merge_interval(&mut list, iv(h, h + 1));
        }
        assert_eq!(list, vec![iv(0, 23)]);
    }
}
