//! Materialization: which views, over which windows, run by the configured engine, with
//! each view's window recorded in the registry only once its data is written.

use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use larder_config::{BatchEngineConfig, OnlineStoreConfig, RegistryType};
use larder_materialize::{
    EngineOptions, InProcessEngine, K8sEngine, MaterializationEngine, MaterializeError,
    MaterializeTask, Shard, ViewProgress, ViewReport,
};
use larder_spec::{Definitions, FeatureView, SourceKind};
use tokio::sync::Semaphore;

use crate::error::Error;
use crate::store::FeatureStore;

/// How far back `materialize-incremental` starts for a never-materialized view with ttl 0
/// (Feast: 52 weeks).
const UNBOUNDED_TTL_LOOKBACK_DAYS: i64 = 52 * 7;

/// The window to materialize.
#[derive(Clone, Copy, Debug)]
pub enum Window {
    /// `materialize START END`: the same window for every view (both ends inclusive).
    Range {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// `materialize-incremental END`: each view from where its last run ended (else
    /// `now - ttl`, or 52 weeks back for ttl 0) to `end`.
    Incremental { end: DateTime<Utc> },
}

/// Options of a materialization run.
#[derive(Clone, Debug, Default)]
pub struct MaterializeOptions {
    /// Views to materialize; `None`: every online view.
    pub views: Option<Vec<String>>,
    /// Memory the whole run may use for deduplication before spilling (split between the
    /// views that run at once); `None`: 64 MiB.
    pub memory_limit: Option<usize>,
    /// Views materialized at once (`None`: the number of cores).
    pub parallelism: Option<usize>,
    /// Worker mode (`larder materialize --shard i/N`, what the Kubernetes engine's pods
    /// run): only this shard's entity keys are written, in this process whatever
    /// `batch_engine` says, and nothing is recorded in the registry (the run that started
    /// the workers records the window once they all succeeded).
    pub shard: Option<Shard>,
}

/// Set to `1` or `true` to let `batch_engine: k8s` run with local state (a local registry
/// file, the SQLite online store, local source files): only for single-node clusters whose
/// pods mount the same paths, and for tests.
pub const K8S_ALLOW_LOCAL_VAR: &str = "LARDER_K8S_ALLOW_LOCAL";

/// One view of a planned run.
#[derive(Clone, Debug)]
pub struct PlannedView {
    pub view: FeatureView,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub progress: Arc<ViewProgress>,
}

/// A run ready to start: the views and their windows, resolved against the registry.
#[derive(Debug)]
pub struct MaterializationPlan {
    pub project: String,
    pub definitions: Arc<Definitions>,
    pub views: Vec<PlannedView>,
    /// Incremental runs only: views whose window would start at or after its end (already
    /// materialized up to there, or `now - ttl` is later than the end), with that start.
    /// They are skipped, and nothing is recorded for them.
    pub up_to_date: Vec<(String, DateTime<Utc>)>,
    options: MaterializeOptions,
}

/// What a run did, per view in plan order.
#[derive(Debug)]
pub struct MaterializationReport {
    pub views: Vec<(PlannedView, Result<ViewReport, MaterializeError>)>,
}

impl MaterializationReport {
    /// The failures, each naming its view.
    pub fn failures(&self) -> impl Iterator<Item = &MaterializeError> {
        self.views.iter().filter_map(|(_, r)| r.as_ref().err())
    }
}

/// Measured on the Feast peer's data (bench/online): peak RSS 164 MB at 1.2M source rows and
/// 266 MB at 12M (96 MiB gave 167 and 290 to 344 MB from run to run, 256 MiB 214 and
/// 437 MB); deduplication spills past it.
const DEFAULT_RUN_MEMORY: usize = 64 << 20;

/// The default run memory when all sources together hold at most [`SMALL_RUN_ROWS`] rows
/// (known from file metadata): enough that their deduplication neither spills much nor
/// sorts in one partition. The Feast peer's data (1.2M rows): 0.92-0.98 s and 188 MB peak
/// RSS against 1.03-1.38 s and 154 MB with [`DEFAULT_RUN_MEMORY`] (256 MiB then). With
/// writes to Redis cheap (`RESTORE`), the sorts' spilling at 256 MiB showed (debug log:
/// four spills half a second in, before the first write): into Redis 0.89-1.08 s (median
/// 0.91) at 1 GiB against 1.07-1.22 s (median 1.13) at 256 MiB, 238-241 MB against
/// 203-213 MB peak RSS; into SQLite 0.79-0.91 s against 0.96-0.98 s, 226-244 MB against
/// 212-224 MB (alternating runs, 2026-11-28).
const SMALL_RUN_MEMORY: usize = 1 << 30;

/// Most source rows a run materializes with [`SMALL_RUN_MEMORY`] by default; larger runs
/// spill anyway, and do so with less memory held.
const SMALL_RUN_ROWS: u64 = 2_000_000;

impl FeatureStore {
    /// Resolves which views a run materializes and over which windows, from the registry.
    ///
    /// Errors: an unknown view, a view with `online: false`, a window with start after end,
    /// no online store configured.
    pub async fn plan_materialization(
        &self,
        window: Window,
        options: MaterializeOptions,
    ) -> Result<MaterializationPlan, Error> {
        if self.online_store()?.is_none() {
            return Err(self.no_online_store());
        }
        // The windows start where earlier runs ended: read them where runs record them, not
        // from a replica that may not have the last run yet.
        let (snapshot, project) = self.project_state_from(true).await?;
        let Some(state) = snapshot.project(&project) else {
            return Err(Error::Registry(
                larder_registry::RegistryError::ProjectNotFound { project },
            ));
        };
        let definitions = Arc::new(state.definitions());
        let views: Vec<FeatureView> = match &options.views {
            None => definitions
                .feature_views
                .values()
                .filter(|v| v.online)
                .cloned()
                .collect(),
            Some(names) => names
                .iter()
                .map(|name| {
                    let view = definitions.feature_views.get(name.as_str()).ok_or_else(|| {
                        Error::Materialize(format!(
                            "feature view `{name}` is not in project `{project}` (its views: {})",
                            list(definitions.feature_views.keys())
                        ))
                    })?;
                    if !view.online {
                        return Err(Error::Materialize(format!(
                            "feature view `{name}` has `online: false`; set it to true to materialize it"
                        )));
                    }
                    Ok(view.clone())
                })
                .collect::<Result<_, _>>()?,
        };
        let now = self.now();
        let mut planned = Vec::with_capacity(views.len());
        let mut up_to_date = Vec::new();
        for view in views {
            let (start, end) = match window {
                Window::Range { start, end } => (start, end),
                Window::Incremental { end } => {
                    let start = match state.most_recent_end(view.name.as_str()) {
                        Some(last_end) => last_end,
                        None if view.ttl.is_unbounded() => {
                            now - ChronoDuration::days(UNBOUNDED_TTL_LOOKBACK_DAYS)
                        }
                        None => {
                            now - ChronoDuration::from_std(view.ttl.0)
                                .unwrap_or(ChronoDuration::MAX)
                        }
                    };
                    if start >= end {
                        up_to_date.push((view.name.to_string(), start));
                        continue;
                    }
                    (start, end)
                }
            };
            if start > end {
                return Err(Error::Materialize(format!(
                    "feature view `{}`: the window starts at {} after its end {}",
                    view.name,
                    start.to_rfc3339(),
                    end.to_rfc3339()
                )));
            }
            planned.push(PlannedView {
                progress: ViewProgress::new(view.name.to_string()),
                view,
                start,
                end,
            });
        }
        Ok(MaterializationPlan {
            project,
            definitions,
            views: planned,
            up_to_date,
            options,
        })
    }

    /// Runs a planned materialization: views in parallel (bounded), each view's window
    /// recorded in the registry right after its data is written. A failed view does not stop
    /// the others; its window is not recorded. Nothing is recorded in worker mode
    /// ([`MaterializeOptions::shard`]), nor for a view the engine only submitted
    /// ([`ViewReport::submitted`], the Kubernetes engine with `synchronous: false`). Returns
    /// per-view results.
    pub async fn run_materialization(
        &self,
        plan: MaterializationPlan,
    ) -> Result<MaterializationReport, Error> {
        let parallelism = plan
            .options
            .parallelism
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .clamp(1, plan.views.len().max(1));
        let total_memory = match plan.options.memory_limit {
            Some(limit) => limit,
            None => self.default_run_memory(&plan).await,
        };
        let shard = plan.options.shard;
        let engine = self.materialization_engine(total_memory / parallelism, &plan)?;
        let permits = Arc::new(Semaphore::new(parallelism));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, planned) in plan.views.iter().enumerate() {
            let task = MaterializeTask {
                project: plan.project.clone(),
                definitions: plan.definitions.clone(),
                view: planned.view.clone(),
                start: planned.start,
                end: planned.end,
            };
            let engine = engine.clone();
            let permits = permits.clone();
            let progress = planned.progress.clone();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                (index, engine.materialize(task, progress).await)
            });
        }
        let mut results: Vec<Option<Result<ViewReport, MaterializeError>>> =
            plan.views.iter().map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            let (index, result) = joined
                .map_err(|e| Error::Materialize(format!("a materialization task failed: {e}")))?;
            let view = &plan.views[index];
            match &result {
                Ok(ViewReport {
                    submitted: Some(submitted),
                    ..
                }) => tracing::warn!(
                    view = view.view.name.as_str(),
                    submitted = submitted.as_str(),
                    "submitted, not waited for: the window is not recorded"
                ),
                Ok(_) if shard.is_some() => tracing::info!(
                    view = view.view.name.as_str(),
                    shard = %shard.map(|s| s.to_string()).unwrap_or_default(),
                    "shard materialized (the coordinating run records the window)"
                ),
                Ok(_) => {
                    self.registry()
                        .record_materialization(
                            &plan.project,
                            view.view.name.as_str(),
                            view.start,
                            view.end,
                        )
                        .await?;
                    tracing::info!(
                        view = view.view.name.as_str(),
                        start = %view.start,
                        end = %view.end,
                        "materialized"
                    );
                }
                Err(_) => {}
            }
            results[index] = Some(result);
        }
        let views = plan
            .views
            .into_iter()
            .zip(results)
            .map(|(view, result)| {
                let result = result.unwrap_or_else(|| {
                    Err(MaterializeError::Invalid {
                        view: view.view.name.to_string(),
                        message: "the task did not finish".into(),
                    })
                });
                (view, result)
            })
            .collect();
        Ok(MaterializationReport { views })
    }

    /// Plans and runs a materialization; fails when any view failed (the others are written
    /// and recorded all the same).
    pub async fn materialize(
        &self,
        window: Window,
        options: MaterializeOptions,
    ) -> Result<Vec<ViewReport>, Error> {
        let plan = self.plan_materialization(window, options).await?;
        let report = self.run_materialization(plan).await?;
        let failures: Vec<String> = report.failures().map(ToString::to_string).collect();
        if !failures.is_empty() {
            return Err(Error::Materialize(failures.join("; ")));
        }
        Ok(report
            .views
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .collect())
    }

    fn no_online_store(&self) -> Error {
        Error::Materialize(format!(
            "project `{}` has no online store this build can write (`online_store` in feature_store.yaml)",
            self.project()
        ))
    }

    /// The engine named by `batch_engine`, writing to the configured online store; a
    /// shard (worker mode) always runs in this process.
    /// The run's deduplication memory when none is given: [`SMALL_RUN_MEMORY`] when the
    /// offline store can count the views' source rows and they are at most
    /// [`SMALL_RUN_ROWS`], else [`DEFAULT_RUN_MEMORY`].
    async fn default_run_memory(&self, plan: &MaterializationPlan) -> usize {
        let Ok(offline) = self.offline_store() else {
            return DEFAULT_RUN_MEMORY;
        };
        let mut rows = 0u64;
        for planned in &plan.views {
            let source = plan
                .definitions
                .data_sources
                .get(&planned.view.batch_source);
            let counted = match source {
                Some(source) => offline.source_rows(source).await,
                None => None,
            };
            match counted {
                Some(n) => rows = rows.saturating_add(n),
                None => return DEFAULT_RUN_MEMORY,
            }
        }
        if rows <= SMALL_RUN_ROWS {
            tracing::debug!(
                rows,
                "small sources: materializing with the larger default memory"
            );
            SMALL_RUN_MEMORY
        } else {
            DEFAULT_RUN_MEMORY
        }
    }

    fn materialization_engine(
        &self,
        memory_limit: usize,
        plan: &MaterializationPlan,
    ) -> Result<Arc<dyn MaterializationEngine>, Error> {
        let shard = plan.options.shard;
        if let (BatchEngineConfig::K8s(k8s), None) = (&self.config().batch_engine, shard) {
            self.check_reachable_from_pods(plan)?;
            let env = larder_config::process_env;
            let yaml = larder_config::read_source(self.config(), &env)?;
            let engine = larder_materialize::k8s::discover(&env)
                .and_then(|access| K8sEngine::new(k8s.clone(), yaml, access))
                .map(|engine| engine.with_worker_memory_limit(plan.options.memory_limit))
                .map_err(|e| Error::Materialize(format!("`batch_engine: k8s`: {e}")))?;
            return Ok(Arc::new(engine));
        }
        let online = self.online_store()?.ok_or_else(|| self.no_online_store())?;
        let key_version = self.key_version();
        let write_batch_size = self
            .config()
            .materialization
            .online_write_batch_size
            .and_then(|n| usize::try_from(n).ok());
        Ok(Arc::new(InProcessEngine::new(
            self.offline_store()?,
            online,
            EngineOptions {
                memory_limit: Some(memory_limit),
                write_batch_size,
                key_version,
                shard,
            },
        )))
    }

    /// Refuses a `batch_engine: k8s` run whose pods could not reach the project's state:
    /// a local registry, the SQLite online store, local source files (unless
    /// [`K8S_ALLOW_LOCAL_VAR`] is set).
    fn check_reachable_from_pods(&self, plan: &MaterializationPlan) -> Result<(), Error> {
        let allowed = std::env::var(K8S_ALLOW_LOCAL_VAR)
            .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
        let config = self.config();
        let mut local = Vec::new();
        let registry = config.registry.path.expose();
        match config.registry.registry_type {
            RegistryType::File if !is_remote(registry) => {
                local.push(format!("the registry is a local file (`{registry}`)"));
            }
            RegistryType::Sql if registry.starts_with("sqlite:") => {
                local.push("the registry is a local SQLite database".to_owned());
            }
            _ => {}
        }
        if let Some(OnlineStoreConfig::Sqlite(_)) = &config.online_store {
            local.push("the online store is `sqlite`, a local file".to_owned());
        }
        for view in &plan.views {
            let source = plan.definitions.data_sources.get(&view.view.batch_source);
            if let Some(SourceKind::File(file)) = source.map(|s| &s.kind)
                && !is_remote(&file.path)
            {
                local.push(format!(
                    "feature view `{}` reads the local file `{}`",
                    view.view.name, file.path
                ));
            }
        }
        if local.is_empty() {
            return Ok(());
        }
        if allowed {
            tracing::warn!(
                local = local.join("; "),
                "{K8S_ALLOW_LOCAL_VAR} is set: the pods must see the same paths"
            );
            return Ok(());
        }
        Err(Error::Materialize(format!(
            "`batch_engine: k8s` runs in pods, which cannot reach this project's local state: {}; use an object store (s3://, gs://) or a database for it (set {K8S_ALLOW_LOCAL_VAR}=1 only for a single-node cluster whose pods mount the same paths, or tests)",
            local.join("; ")
        )))
    }
}

/// Whether a path is reachable from another machine: an object store or HTTP URL (not a
/// local path, `file://` or `memory://`).
fn is_remote(path: &str) -> bool {
    path.split_once("://").is_some_and(|(scheme, _)| {
        !matches!(scheme.to_ascii_lowercase().as_str(), "file" | "memory")
    })
}

fn list<'a>(names: impl Iterator<Item = &'a larder_types::ObjectName>) -> String {
    let names: Vec<&str> = names.map(|n| n.as_str()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
