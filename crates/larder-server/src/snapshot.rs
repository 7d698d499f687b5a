//! The registry snapshot the server answers from, and its background refresh.
//!
//! Requests read the current [`Snapshot`] through an `ArcSwap` (no lock, no registry I/O)
//! and find their compiled [`OnlinePlan`] in the snapshot's cache, so feature references
//! are resolved once per snapshot and selection. The refresh task reloads the registry
//! every `registry_ttl`; a new registry version gets a new snapshot (with an empty plan
//! cache) swapped in atomically, an unchanged version keeps the current one (and its
//! plans), and a failed read keeps serving the last good snapshot.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use larder::spec::Definitions;
use larder::types::FeatureRef;
use larder::{FeatureSelection, FeatureStore, OnlinePlan};

use crate::error::ApiError;

/// Plans kept per snapshot at most; beyond this, plans are compiled per request (so a
/// client sending ever new feature lists cannot grow memory without bound).
const MAX_CACHED_PLANS: usize = 1024;

/// One registry version of this project, as the server uses it.
#[derive(Debug)]
pub struct Snapshot {
    pub definitions: Arc<Definitions>,
    /// The registry's version number.
    pub version: u64,
    /// When this version was loaded.
    pub loaded_at: DateTime<Utc>,
    /// Per online view, the end of its most recent materialization.
    pub materialized_until: Vec<(String, DateTime<Utc>)>,
    plans: RwLock<PlanCache>,
}

/// What a request selects: a feature service, or else a list of feature references.
#[derive(Clone, Copy, Debug)]
pub struct PlanQuery<'q, S> {
    pub service: Option<&'q str>,
    pub features: &'q [S],
    pub full_feature_names: bool,
}

/// An owned [`PlanQuery`], as the cache keeps it.
#[derive(Clone, Debug)]
struct PlanKey {
    service: Option<String>,
    features: Vec<String>,
    full_feature_names: bool,
}

impl PlanKey {
    fn matches<S: AsRef<str>>(&self, query: &PlanQuery<'_, S>) -> bool {
        self.service.as_deref() == query.service
            && self.full_feature_names == query.full_feature_names
            && self.features.len() == query.features.len()
            && self
                .features
                .iter()
                .zip(query.features)
                .all(|(a, b)| a == b.as_ref())
    }
}

/// The compiled plans of a snapshot by the hash of their query, looked up with the
/// request's borrowed names (no copy of them per request). foldhash: the query is hashed on
/// every request (15 feature names: SipHash took 2% of a one-entity request).
#[derive(Clone, Debug, Default)]
struct PlanCache {
    hasher: foldhash::fast::RandomState,
    by_hash: HashMap<u64, Vec<(PlanKey, Arc<OnlinePlan>)>, foldhash::fast::RandomState>,
    len: usize,
}

impl PlanCache {
    fn hash<S: AsRef<str>>(&self, query: &PlanQuery<'_, S>) -> u64 {
        let mut h = self.hasher.build_hasher();
        query.service.hash(&mut h);
        query.full_feature_names.hash(&mut h);
        query.features.len().hash(&mut h);
        for feature in query.features {
            feature.as_ref().hash(&mut h);
        }
        h.finish()
    }

    fn get<S: AsRef<str>>(&self, hash: u64, query: &PlanQuery<'_, S>) -> Option<Arc<OnlinePlan>> {
        let bucket = self.by_hash.get(&hash)?;
        bucket
            .iter()
            .find(|(key, _)| key.matches(query))
            .map(|(_, plan)| plan.clone())
    }

    fn insert<S: AsRef<str>>(
        &mut self,
        hash: u64,
        query: &PlanQuery<'_, S>,
        plan: Arc<OnlinePlan>,
    ) {
        if self.len >= MAX_CACHED_PLANS || self.get(hash, query).is_some() {
            return;
        }
        let key = PlanKey {
            service: query.service.map(str::to_owned),
            features: query
                .features
                .iter()
                .map(|f| f.as_ref().to_owned())
                .collect(),
            full_feature_names: query.full_feature_names,
        };
        self.by_hash.entry(hash).or_default().push((key, plan));
        self.len += 1;
    }
}

impl Snapshot {
    /// Loads this project's current registry content.
    pub async fn load(store: &FeatureStore) -> Result<Self, larder::Error> {
        let (snapshot, project) = store.project_state().await?;
        let state = snapshot.project(&project).ok_or_else(|| {
            larder::Error::Registry(larder::registry::RegistryError::ProjectNotFound {
                project: project.clone(),
            })
        })?;
        let definitions = Arc::new(state.definitions());
        let materialized_until = definitions
            .feature_views
            .values()
            .filter(|v| v.online)
            .filter_map(|v| {
                state
                    .most_recent_end(v.name.as_str())
                    .map(|end| (v.name.to_string(), end))
            })
            .collect();
        Ok(Snapshot {
            definitions,
            version: snapshot.state.version,
            loaded_at: Utc::now(),
            materialized_until,
            plans: RwLock::new(PlanCache::default()),
        })
    }

    /// The compiled plan of `query`, from the cache or resolved now (and cached).
    ///
    /// Errors: unknown views, features and services (404), malformed references (422).
    pub fn plan<S: AsRef<str>>(
        &self,
        query: &PlanQuery<'_, S>,
    ) -> Result<Arc<OnlinePlan>, ApiError> {
        let hash = match self.plans.read() {
            Ok(plans) => {
                let hash = plans.hash(query);
                if let Some(plan) = plans.get(hash, query) {
                    return Ok(plan);
                }
                Some(hash)
            }
            Err(_) => None,
        };
        let selection = match query.service {
            Some(name) => FeatureSelection::Service(name.to_owned()),
            None => {
                let refs = query
                    .features
                    .iter()
                    .map(|f| {
                        let f = f.as_ref();
                        f.parse::<FeatureRef>().map_err(|e| {
                            ApiError::unprocessable(format!("feature reference `{f}`: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                FeatureSelection::Refs(refs)
            }
        };
        let plan = Arc::new(OnlinePlan::new(
            &self.definitions,
            &selection,
            query.full_feature_names,
        )?);
        if let Some(hash) = hash
            && let Ok(mut plans) = self.plans.write()
        {
            plans.insert(hash, query, plan.clone());
        }
        Ok(plan)
    }

    /// Plans cached so far.
    pub fn cached_plans(&self) -> usize {
        self.plans.read().map(|p| p.len).unwrap_or(0)
    }
}

/// Reloads the registry every `ttl` until `stop` is cancelled; swaps in a new snapshot when
/// the registry version changed. Never blocks requests: they keep reading the old snapshot
/// until the swap.
pub async fn refresh_loop(
    state: Arc<crate::state::AppState>,
    ttl: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut interval = tokio::time::interval(ttl);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        refresh_once(&state, ttl).await;
        state.metrics.upkeep();
    }
}

/// One refresh: reload, compare versions, swap or keep. Failures are logged and counted.
pub async fn refresh_once(state: &crate::state::AppState, ttl: Duration) {
    // A registry on an object store may hang; never longer than a few refresh periods.
    let limit = (ttl * 3).max(Duration::from_secs(10));
    let loaded = match tokio::time::timeout(limit, Snapshot::load(&state.store)).await {
        Ok(loaded) => loaded,
        Err(_) => Err(larder::Error::Registry(
            larder::registry::RegistryError::Internal {
                message: format!("the registry read did not finish within {limit:?}"),
            },
        )),
    };
    match loaded {
        Ok(fresh) => {
            state.metrics.registry_refreshed();
            let current = state.snapshot.load();
            if fresh.version != current.version {
                tracing::info!(
                    old_version = current.version,
                    new_version = fresh.version,
                    "registry changed; serving the new version"
                );
                state.snapshot.store(Arc::new(fresh));
            } else if fresh.materialized_until != current.materialized_until {
                // Same definitions; keep the plans, update what metrics report.
                let next = Snapshot {
                    definitions: current.definitions.clone(),
                    version: current.version,
                    loaded_at: fresh.loaded_at,
                    materialized_until: fresh.materialized_until,
                    plans: RwLock::new(current.plans.read().map(|p| p.clone()).unwrap_or_default()),
                };
                state.snapshot.store(Arc::new(next));
            }
        }
        Err(err) => {
            state.metrics.registry_refresh_failed();
            tracing::warn!(error = %err, "registry refresh failed; serving the last good snapshot");
        }
    }
}
