//! The Kubernetes engine (`batch_engine: {type: k8s}`): each task (one view, one window)
//! runs as an Indexed Job of `shards` pods; pod `i` runs `larder materialize START END
//! --views VIEW --shard i/N`, the in-process engine restricted to the entity keys of shard
//! `i` (see [`Shard`](crate::Shard)), so the pods together write exactly what one
//! in-process run writes.
//!
//! Per task the engine creates a ConfigMap with the project's `feature_store.yaml` as
//! written (`${VAR}` references unresolved, so secrets come from the pods' environment),
//! mounted at `/etc/larder`, then the Job, then makes the Job the ConfigMap's owner. Finished
//! Jobs are deleted by Kubernetes a day later (`ttlSecondsAfterFinished`), their
//! ConfigMaps with them. With `synchronous: true` the engine polls the Job until it
//! completes or fails (a failure returns the failed pods' logs when
//! `print_pod_logs_on_failure`); with `synchronous: false` it returns once the Job is
//! submitted, with [`ViewReport::submitted`] set so the caller records nothing.
//!
//! The API is reached through a kubeconfig or the pod's service account ([`access`]), with
//! a small HTTP client ([`client`]). docs/materialization-kubernetes.md is the user guide.

pub mod access;
mod client;
mod error;
#[cfg(any(test, feature = "fake-k8s"))]
pub mod fake;
pub mod objects;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hyper::Method;
use larder_config::K8sEngineConfig;
use serde_json::Value;

pub use access::{ClusterAccess, discover};
pub use client::KubeClient;
pub use error::{K8sError, RBAC_NEEDED};

use self::client::Call;
use self::objects::{CONTAINER, JobPlan, object_name, owner_patch};
use crate::error::MaterializeError;
use crate::progress::{Phase, ViewProgress};
use crate::{MaterializationEngine, MaterializeTask, ViewReport};

/// The worker image when `image` is not set: Larder's image of this very version.
pub fn default_image() -> String {
    format!("ghcr.io/larder-dev/larder:{}", env!("CARGO_PKG_VERSION"))
}

/// Log lines kept per failed pod in an error.
const LOG_TAIL_LINES: u32 = 40;
/// Failed pods whose logs an error shows.
const LOGGED_PODS: usize = 3;
/// How long past `active_deadline_seconds` the engine waits for Kubernetes to report the
/// Job's end before giving up on it.
const DEADLINE_GRACE: Duration = Duration::from_secs(300);

/// How often a synchronous run polls its Job: from `first`, doubling up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct PollInterval {
    pub first: Duration,
    pub max: Duration,
}

impl Default for PollInterval {
    fn default() -> Self {
        PollInterval {
            first: Duration::from_millis(250),
            max: Duration::from_secs(5),
        }
    }
}

/// Materializes each task as a Kubernetes Indexed Job; see the module documentation.
#[derive(Debug)]
pub struct K8sEngine {
    config: K8sEngineConfig,
    client: KubeClient,
    feature_store_yaml: String,
    image: String,
    shards: u32,
    poll: PollInterval,
    worker_memory_limit: Option<usize>,
}

impl K8sEngine {
    /// `feature_store_yaml` is the config file's text as written, which the pods load.
    ///
    /// Errors: `shards` or `max_parallelism` of 0.
    pub fn new(
        config: K8sEngineConfig,
        feature_store_yaml: String,
        access: ClusterAccess,
    ) -> Result<K8sEngine, K8sError> {
        let invalid = |message: &str| K8sError::InvalidConfig(message.to_owned());
        if config.max_parallelism == 0 {
            return Err(invalid("`max_parallelism` must be at least 1"));
        }
        if config.shards == Some(0) {
            return Err(invalid("`shards` must be at least 1"));
        }
        let shards = config.shards.unwrap_or(config.max_parallelism);
        Ok(K8sEngine {
            image: config.image.clone().unwrap_or_else(default_image),
            client: KubeClient::new(access),
            feature_store_yaml,
            shards,
            config,
            poll: PollInterval::default(),
            worker_memory_limit: None,
        })
    }

    /// Gives every worker pod `--memory-limit BYTES` (the run's `--memory-limit`: a pod
    /// materializes one view, so the whole budget is its own).
    pub fn with_worker_memory_limit(mut self, bytes: Option<usize>) -> K8sEngine {
        self.worker_memory_limit = bytes;
        self
    }

    pub fn with_poll_interval(mut self, poll: PollInterval) -> K8sEngine {
        self.poll = poll;
        self
    }

    /// Shards (pods) per task.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    fn namespace(&self) -> &str {
        &self.config.namespace
    }

    fn path(&self, resource: &str) -> String {
        let ns = self.namespace();
        match resource {
            "jobs" => format!("/apis/batch/v1/namespaces/{ns}/jobs"),
            other => format!("/api/v1/namespaces/{ns}/{other}"),
        }
    }

    fn action(&self, verb: &str, resource: &str) -> String {
        format!("{verb} `{resource}` in namespace `{}`", self.namespace())
    }

    async fn create(&self, resource: &str, object: &Value) -> Result<Value, K8sError> {
        let action = self.action("create", resource);
        let result = self
            .client
            .json(Call {
                method: Method::POST,
                path: self.path(resource),
                body: Some(("application/json", object.to_string().into_bytes())),
                action: &action,
            })
            .await;
        match result {
            // Creating in a namespace answers 404 only when the namespace is missing.
            Err(K8sError::Api { status: 404, .. }) => Err(K8sError::NamespaceNotFound {
                namespace: self.namespace().to_owned(),
                server: self.client.access().server.clone(),
            }),
            other => other,
        }
    }

    async fn run(
        &self,
        task: &MaterializeTask,
        progress: &ViewProgress,
    ) -> Result<ViewReport, K8sError> {
        let view = task.view.name.as_str();
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let plan = JobPlan {
            config: &self.config,
            name: object_name(view, &run_id),
            image: &self.image,
            project: &task.project,
            view,
            run_id: &run_id,
            start: task.start,
            end: task.end,
            shards: self.shards,
            memory_limit: self.worker_memory_limit,
        };
        let name = plan.name.clone();
        let namespace = self.namespace().to_owned();
        self.create("configmaps", &plan.config_map(&self.feature_store_yaml))
            .await?;
        let job = match self.create("jobs", &plan.job()).await {
            Ok(job) => job,
            Err(e) => {
                self.delete_config_map(&name).await;
                return Err(e);
            }
        };
        match job.pointer("/metadata/uid").and_then(Value::as_str) {
            Some(uid) => self.own_config_map(&name, uid).await,
            None => {
                tracing::warn!(job = %name, "the created Job has no uid; its ConfigMap is not deleted with it")
            }
        }
        tracing::info!(
            view,
            job = %name,
            namespace = %namespace,
            shards = plan.shards,
            parallelism = plan.parallelism(),
            image = %self.image,
            "submitted the materialization Job"
        );
        if !self.config.synchronous {
            tracing::warn!(
                view,
                job = %name,
                namespace = %namespace,
                "`synchronous: false`: not waiting for the Job; the window is not recorded in the registry (set `synchronous: true` to record it when the Job succeeds)"
            );
            return Ok(ViewReport {
                view: view.to_owned(),
                rows_read: 0,
                rows_written: 0,
                submitted: Some(format!(
                    "Kubernetes Job `{name}` in namespace `{namespace}` ({} shards)",
                    plan.shards
                )),
            });
        }
        progress.set_phase(Phase::Reading);
        match self.wait(&name).await? {
            Finished::Succeeded => {
                let (rows_read, rows_written) = self.counts(&name, view).await;
                progress.add_written(rows_written);
                Ok(ViewReport {
                    view: view.to_owned(),
                    rows_read,
                    rows_written,
                    submitted: None,
                })
            }
            Finished::Failed(reason) => {
                let logs = if self.config.print_pod_logs_on_failure {
                    self.failed_pod_logs(&name).await
                } else {
                    String::new()
                };
                Err(K8sError::JobFailed {
                    job: name,
                    namespace,
                    reason,
                    logs,
                })
            }
        }
    }

    async fn own_config_map(&self, name: &str, job_uid: &str) {
        let action = self.action("patch", "configmaps");
        let patched = self
            .client
            .send(Call {
                method: Method::PATCH,
                path: format!("{}/{name}", self.path("configmaps")),
                body: Some((
                    "application/merge-patch+json",
                    owner_patch(name, job_uid).to_string().into_bytes(),
                )),
                action: &action,
            })
            .await;
        if let Err(error) = patched {
            tracing::warn!(config_map = name, error = %error, "cannot make the Job own its ConfigMap; delete the ConfigMap by hand when the Job is gone");
        }
    }

    async fn delete_config_map(&self, name: &str) {
        let action = self.action("delete", "configmaps");
        let deleted = self
            .client
            .send(Call {
                method: Method::DELETE,
                path: format!("{}/{name}", self.path("configmaps")),
                body: None,
                action: &action,
            })
            .await;
        if let Err(error) = deleted {
            tracing::warn!(config_map = name, error = %error, "cannot delete the ConfigMap of a Job that was not created");
        }
    }

    /// Polls the Job until Kubernetes reports it complete or failed.
    async fn wait(&self, name: &str) -> Result<Finished, K8sError> {
        let action = self.action("get", "jobs");
        let give_up = Instant::now()
            + Duration::from_secs(self.config.active_deadline_seconds)
            + DEADLINE_GRACE;
        let mut delay = self.poll.first;
        loop {
            let job = self
                .client
                .json(Call {
                    method: Method::GET,
                    path: format!("{}/{name}", self.path("jobs")),
                    body: None,
                    action: &action,
                })
                .await;
            match job {
                Ok(job) => {
                    if let Some(finished) = job_state(&job) {
                        return Ok(finished);
                    }
                }
                // A blip of the API server is not the Job's failure: keep polling.
                Err(e) if e.is_retryable() => {
                    tracing::warn!(job = name, error = %e, "polling the Job failed; retrying");
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= give_up {
                return Ok(Finished::Failed(format!(
                    "Kubernetes did not report the Job finished within `active_deadline_seconds` ({}s) and {}s more",
                    self.config.active_deadline_seconds,
                    DEADLINE_GRACE.as_secs()
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.poll.max);
        }
    }

    /// The Job's pods (by the `job-name` label the Job controller sets).
    async fn pods(&self, job: &str) -> Result<Vec<Value>, K8sError> {
        let action = self.action("list", "pods");
        let list = self
            .client
            .json(Call {
                method: Method::GET,
                path: format!("{}?labelSelector=job-name%3D{job}", self.path("pods")),
                body: None,
                action: &action,
            })
            .await?;
        Ok(list
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    async fn log(&self, pod: &str, tail: Option<u32>) -> Result<String, K8sError> {
        let action = self.action("get", "pods/log");
        let tail = tail.map_or(String::new(), |n| format!("&tailLines={n}"));
        let body = self
            .client
            .send(Call {
                method: Method::GET,
                path: format!(
                    "{}/{pod}/log?container={CONTAINER}{tail}",
                    self.path("pods")
                ),
                body: None,
                action: &action,
            })
            .await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Rows read and keys written, from the succeeded pods' summary lines (each shard reads
    /// the whole window, so rows read is the largest; keys written add up). Unknown counts
    /// are 0: they are informative only.
    async fn counts(&self, job: &str, view: &str) -> (u64, u64) {
        let pods = match self.pods(job).await {
            Ok(pods) => pods,
            Err(error) => {
                tracing::warn!(job, error = %error, "cannot list the Job's pods for its counts");
                return (0, 0);
            }
        };
        let (mut read, mut written) = (0u64, 0u64);
        for pod in pods.iter().filter(|p| pod_phase(p) == "Succeeded") {
            let name = pod_name(pod);
            match self.log(name, Some(20)).await {
                Ok(log) => {
                    if let Some((r, w)) = summary_counts(&log, view) {
                        read = read.max(r);
                        written += w;
                    }
                }
                Err(error) => tracing::warn!(pod = name, error = %error, "cannot read a pod's log"),
            }
        }
        (read, written)
    }

    /// The last lines of the failed pods' logs, one section per pod.
    async fn failed_pod_logs(&self, job: &str) -> String {
        let pods = match self.pods(job).await {
            Ok(pods) => pods,
            Err(error) => return format!("\n(cannot list the Job's pods: {error})"),
        };
        let failed: Vec<&Value> = pods.iter().filter(|p| pod_phase(p) == "Failed").collect();
        if failed.is_empty() {
            return "\n(no failed pod left to show logs of)".into();
        }
        let mut out = String::new();
        for pod in failed.iter().take(LOGGED_PODS) {
            let name = pod_name(pod);
            let index = pod
                .pointer("/metadata/annotations/batch.kubernetes.io~1job-completion-index")
                .and_then(Value::as_str)
                .unwrap_or("?");
            out.push_str(&format!(
                "\n--- pod `{name}` (shard {index}/{}), last {LOG_TAIL_LINES} log lines ---\n",
                self.shards
            ));
            match self.log(name, Some(LOG_TAIL_LINES)).await {
                Ok(log) => out.push_str(log.trim_end()),
                Err(error) => out.push_str(&format!("(cannot read its log: {error})")),
            }
        }
        if failed.len() > LOGGED_PODS {
            out.push_str(&format!(
                "\n({} more failed pods; `kubectl logs -n {} -l job-name={job}`)",
                failed.len() - LOGGED_PODS,
                self.namespace()
            ));
        }
        out
    }
}

#[async_trait]
impl MaterializationEngine for K8sEngine {
    async fn materialize(
        &self,
        task: MaterializeTask,
        progress: Arc<ViewProgress>,
    ) -> Result<ViewReport, MaterializeError> {
        let result = self.run(&task, &progress).await;
        progress.set_phase(match &result {
            Ok(report) if report.submitted.is_none() => Phase::Done,
            Ok(_) => Phase::Queued,
            Err(_) => Phase::Failed,
        });
        result.map_err(|source| MaterializeError::Kubernetes {
            view: task.view.name.to_string(),
            source: Box::new(source),
        })
    }
}

/// How a Job ended.
#[derive(Debug, PartialEq, Eq)]
enum Finished {
    Succeeded,
    /// The failure condition's reason and message.
    Failed(String),
}

/// How the Job ended, from its `Complete` / `Failed` conditions (the final ones; newer
/// Kubernetes versions add `SuccessCriteriaMet` / `FailureTarget` while pods still stop);
/// `None` while it runs.
fn job_state(job: &Value) -> Option<Finished> {
    let conditions = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for condition in &conditions {
        if condition.get("status").and_then(Value::as_str) != Some("True") {
            continue;
        }
        match condition.get("type").and_then(Value::as_str) {
            Some("Complete") => return Some(Finished::Succeeded),
            Some("Failed") => {
                let field = |k: &str| condition.get(k).and_then(Value::as_str).unwrap_or("");
                let reason = match (field("reason"), field("message")) {
                    ("DeadlineExceeded", message) => format!(
                        "DeadlineExceeded: {message} (`active_deadline_seconds` in `batch_engine`)"
                    ),
                    ("BackoffLimitExceeded", message) => format!(
                        "BackoffLimitExceeded: {message} (pods failed more than `retry_limit` times)"
                    ),
                    ("", "") => "failed".into(),
                    (reason, "") => reason.to_owned(),
                    (reason, message) => format!("{reason}: {message}"),
                };
                return Some(Finished::Failed(reason));
            }
            _ => {}
        }
    }
    None
}

fn pod_phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn pod_name(pod: &Value) -> &str {
    pod.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `(rows read, keys written)` from a worker's summary line, `VIEW: R source rows read, W
/// entity keys written in Ts`.
fn summary_counts(log: &str, view: &str) -> Option<(u64, u64)> {
    let prefix = format!("{view}: ");
    log.lines().rev().find_map(|line| {
        let rest = line.strip_prefix(&prefix)?;
        let (read, rest) = rest.split_once(" source rows read, ")?;
        let (written, _) = rest.split_once(" entity keys written")?;
        Some((read.trim().parse().ok()?, written.trim().parse().ok()?))
    })
}

#[cfg(test)]
mod tests;
