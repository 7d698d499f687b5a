//! Registry logic over any [`RegistryStore`]: cached reads, plan, apply and materialization
//! records, every write a compare-and-swap retried against the newest version.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use larder_spec::{Definitions, InfraObject, Plan, diff};
use tokio::sync::Mutex;

use crate::error::RegistryError;
use crate::state::{FORMAT, Interval, ProjectState, RegistryState, merge_interval};
use crate::store::{Generation, RegistryStore};

/// How many times a write is retried after losing a compare-and-swap race.
const MAX_ATTEMPTS: u32 = 8;

/// The current time; injectable so tests control cache expiry and timestamps.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// One loaded version of the registry.
#[derive(Debug)]
pub struct Snapshot {
    pub state: RegistryState,
    pub generation: Option<Generation>,
    pub loaded_at: DateTime<Utc>,
}

impl Snapshot {
    pub fn project(&self, name: &str) -> Option<&ProjectState> {
        self.state.projects.get(name)
    }
}

/// Which version a load may return.
#[derive(Clone, Copy, Debug)]
enum Read {
    /// Whatever the store serves reads from (a replica may lag).
    Any,
    /// The newest committed version.
    Latest,
}

/// What an `apply` did.
#[derive(Debug)]
pub struct ApplyOutcome {
    /// The changes made (empty when the registry already matched).
    pub plan: Plan,
    /// Registry version after the apply.
    pub version: u64,
    /// Compare-and-swap attempts it took (1 without contention).
    pub attempts: u32,
}

/// A registry: a store plus a read cache of `cache_ttl` (zero caches forever, as in Feast).
pub struct Registry {
    store: Arc<dyn RegistryStore>,
    cache_ttl: Duration,
    clock: Clock,
    cache: Mutex<Option<Arc<Snapshot>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("location", &self.store.location())
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

impl Registry {
    pub fn new(store: Arc<dyn RegistryStore>, cache_ttl: Duration) -> Self {
        Self::with_clock(store, cache_ttl, Arc::new(Utc::now))
    }

    pub fn with_clock(store: Arc<dyn RegistryStore>, cache_ttl: Duration, clock: Clock) -> Self {
        Registry {
            store,
            cache_ttl,
            clock,
            cache: Mutex::new(None),
        }
    }

    pub fn location(&self) -> &str {
        self.store.location()
    }

    fn decode(&self, bytes: &[u8]) -> Result<RegistryState, RegistryError> {
        let location = self.store.location().to_string();
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|_| RegistryError::NotLarder {
                location: location.clone(),
            })?;
        let format = value.get("format").and_then(serde_json::Value::as_u64);
        match format {
            None => Err(RegistryError::NotLarder { location }),
            Some(f) if f > u64::from(FORMAT) => Err(RegistryError::NewerFormat {
                location,
                found: f,
                supported: FORMAT,
            }),
            Some(_) => serde_json::from_value(value).map_err(|e| RegistryError::Corrupt {
                location,
                message: e.to_string(),
            }),
        }
    }

    /// Reads the registry from its store, bypassing and refreshing the cache.
    ///
    /// Reads what serving processes read: a store with a read replica answers from the
    /// replica (see [`RegistryStore::load`]).
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, RegistryError> {
        self.refresh_from(Read::Any).await
    }

    /// Like [`refresh`](Self::refresh), but always the newest committed version (a store with
    /// a read replica reads its primary): for decisions that feed a write, such as a plan or
    /// the windows of a materialization run.
    pub async fn refresh_latest(&self) -> Result<Arc<Snapshot>, RegistryError> {
        self.refresh_from(Read::Latest).await
    }

    async fn refresh_from(&self, read: Read) -> Result<Arc<Snapshot>, RegistryError> {
        let snapshot = Arc::new(self.load_fresh(read).await?);
        *self.cache.lock().await = Some(snapshot.clone());
        Ok(snapshot)
    }

    async fn load_fresh(&self, read: Read) -> Result<Snapshot, RegistryError> {
        let loaded_at = (self.clock)();
        let blob = match read {
            Read::Any => self.store.load().await?,
            Read::Latest => self.store.load_latest().await?,
        };
        match blob {
            None => Ok(Snapshot {
                state: RegistryState::default(),
                generation: None,
                loaded_at,
            }),
            Some(blob) => Ok(Snapshot {
                state: self.decode(&blob.bytes)?,
                generation: Some(blob.generation),
                loaded_at,
            }),
        }
    }

    /// The registry as cached, reloaded when older than the cache ttl.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, RegistryError> {
        let mut cache = self.cache.lock().await;
        if let Some(snapshot) = cache.as_ref() {
            let age = ((self.clock)() - snapshot.loaded_at)
                .to_std()
                .unwrap_or(Duration::ZERO);
            if self.cache_ttl.is_zero() || age < self.cache_ttl {
                return Ok(snapshot.clone());
            }
        }
        let snapshot = Arc::new(self.load_fresh(Read::Any).await?);
        *cache = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// What `apply` would change, against the registry as it is now (never cached).
    pub async fn plan(
        &self,
        desired: &Definitions,
        desired_infra: &BTreeSet<InfraObject>,
    ) -> Result<Plan, RegistryError> {
        let snapshot = self.refresh_latest().await?;
        Ok(plan_against(&snapshot.state, desired, desired_infra))
    }

    /// Makes the registry hold exactly `desired` for its project (objects not in it are
    /// deleted). Idempotent: a second apply changes nothing and does not write.
    pub async fn apply(
        &self,
        desired: &Definitions,
        desired_infra: &BTreeSet<InfraObject>,
    ) -> Result<ApplyOutcome, RegistryError> {
        let project = desired.project.name.clone();
        let mut plan_made = None;
        let (version, attempts) = self
            .update(|state, now| {
                let plan = plan_against(state, desired, desired_infra);
                if plan.is_empty() {
                    plan_made = Some(plan);
                    return Ok(false);
                }
                let next = ProjectState::applied(
                    state.projects.get(&project),
                    desired,
                    desired_infra.clone(),
                    now,
                );
                state.projects.insert(project.clone(), next);
                plan_made = Some(plan);
                Ok(true)
            })
            .await?;
        let plan = plan_made.ok_or_else(|| RegistryError::Internal {
            message: "apply finished without a plan".into(),
        })?;
        Ok(ApplyOutcome {
            plan,
            version,
            attempts,
        })
    }

    /// Records that `view` of `project` was materialized over `[start, end]`, merged into its
    /// history. Call only after the view's data is written.
    pub async fn record_materialization(
        &self,
        project: &str,
        view: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<(), RegistryError> {
        self.update(|state, _| {
            let Some(p) = state.projects.get_mut(project) else {
                return Err(RegistryError::ProjectNotFound {
                    project: project.to_string(),
                });
            };
            let Some((name, _)) = p.feature_views.get_key_value(view) else {
                return Err(RegistryError::ObjectNotFound {
                    kind: "feature view",
                    name: view.to_string(),
                    project: project.to_string(),
                });
            };
            let name = name.clone();
            merge_interval(
                p.materializations.entry(name).or_default(),
                Interval { start, end },
            );
            Ok(true)
        })
        .await?;
        Ok(())
    }

    /// Removes `project` and everything in it; returns what was removed (None if absent).
    pub async fn delete_project(
        &self,
        project: &str,
    ) -> Result<Option<ProjectState>, RegistryError> {
        let mut removed = None;
        self.update(|state, _| {
            removed = state.projects.remove(project);
            Ok(removed.is_some())
        })
        .await?;
        Ok(removed)
    }

    /// Load → change → compare-and-swap commit, retried on conflict against the new version.
    /// `change` returns whether it changed anything (nothing is written otherwise).
    /// Loads read the newest version ([`RegistryStore::load_latest`]): a lagging read
    /// replica would make every commit conflict.
    /// Returns the resulting version and the attempts made.
    async fn update<F>(&self, mut change: F) -> Result<(u64, u32), RegistryError>
    where
        F: FnMut(&mut RegistryState, DateTime<Utc>) -> Result<bool, RegistryError>,
    {
        for attempt in 1..=MAX_ATTEMPTS {
            let snapshot = self.load_fresh(Read::Latest).await?;
            let mut state = snapshot.state;
            let now = (self.clock)();
            if !change(&mut state, now)? {
                let version = state.version;
                *self.cache.lock().await = Some(Arc::new(Snapshot {
                    state,
                    generation: snapshot.generation,
                    loaded_at: now,
                }));
                return Ok((version, attempt));
            }
            state.version += 1;
            state.last_updated = Some(now);
            state.format = FORMAT;
            let bytes = serde_json::to_vec(&state).map_err(|e| RegistryError::Internal {
                message: format!("cannot serialize the registry: {e}"),
            })?;
            match self
                .store
                .commit(snapshot.generation.as_ref(), Bytes::from(bytes))
                .await
            {
                Ok(generation) => {
                    let version = state.version;
                    *self.cache.lock().await = Some(Arc::new(Snapshot {
                        state,
                        generation: Some(generation),
                        loaded_at: now,
                    }));
                    return Ok((version, attempt));
                }
                Err(e) if e.is_conflict() => {
                    tracing::debug!(
                        attempt,
                        location = self.location(),
                        "registry commit conflict, retrying"
                    );
                    // Spread competing writers apart a little before retrying.
                    let jitter = u64::from(attempt) * 5 + u64::from(rand_u8() % 20);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::Contention {
            location: self.location().to_string(),
            attempts: MAX_ATTEMPTS,
        })
    }
}

/// The plan for `desired` against a registry state.
pub fn plan_against(
    state: &RegistryState,
    desired: &Definitions,
    desired_infra: &BTreeSet<InfraObject>,
) -> Plan {
    let current = state.projects.get(&desired.project.name);
    let current_defs = current.map(ProjectState::definitions);
    let empty = BTreeSet::new();
    let current_infra = current.map(|p| &p.infra).unwrap_or(&empty);
    diff(current_defs.as_ref(), desired, current_infra, desired_infra)
}

/// A little entropy for retry jitter without a random-number dependency.
fn rand_u8() -> u8 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (nanos >> 8)) as u8
}
