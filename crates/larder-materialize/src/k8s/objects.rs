//! The Kubernetes objects one materialization task creates: a ConfigMap holding the
//! project's `feature_store.yaml` and an Indexed Job whose pods each run one shard.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use larder_config::K8sEngineConfig;
use serde_json::{Value, json};

/// Where the ConfigMap is mounted in the pods (`larder -c` points there).
pub const CONFIG_DIR: &str = "/etc/larder";
/// The ConfigMap's key, and so the file name under [`CONFIG_DIR`].
pub const CONFIG_KEY: &str = "feature_store.yaml";
/// Finished Jobs (and their ConfigMaps, which they own) are deleted by Kubernetes after a
/// day, leaving time to read their pods' logs.
pub const FINISHED_JOB_TTL_SECONDS: u64 = 86_400;
/// The worker container's name.
pub const CONTAINER: &str = "larder";

/// Labels Larder sets on everything it creates (user labels cannot override them).
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_PROJECT: &str = "larder.dev/project";
pub const LABEL_VIEW: &str = "larder.dev/view";
pub const LABEL_RUN: &str = "larder.dev/run-id";

/// What one task's Job runs.
#[derive(Clone, Debug)]
pub struct JobPlan<'a> {
    pub config: &'a K8sEngineConfig,
    /// Job and ConfigMap name.
    pub name: String,
    pub image: &'a str,
    pub project: &'a str,
    pub view: &'a str,
    pub run_id: &'a str,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub shards: u32,
    /// `--memory-limit` of each worker in bytes (the coordinating run's own limit: a pod
    /// materializes one view, so its whole budget goes to it); `None`: the worker's default.
    pub memory_limit: Option<usize>,
}

impl JobPlan<'_> {
    pub fn parallelism(&self) -> u32 {
        self.shards.min(self.config.max_parallelism.max(1))
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.config.labels.clone();
        for (key, value) in [
            (LABEL_NAME, "larder"),
            (LABEL_COMPONENT, "materialization"),
            (LABEL_PROJECT, self.project),
            (LABEL_VIEW, self.view),
            (LABEL_RUN, self.run_id),
        ] {
            labels.insert(key.to_owned(), label_value(value));
        }
        labels
    }

    /// The worker command: `larder -c /etc/larder materialize START END --views V --shard
    /// $(JOB_COMPLETION_INDEX)/N --no-progress [--memory-limit BYTES]` (Kubernetes expands
    /// `$(VAR)` from the container's environment, where the Job controller sets
    /// `JOB_COMPLETION_INDEX`).
    pub fn command(&self) -> Vec<String> {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let mut command: Vec<String> = vec![
            "larder".into(),
            "-c".into(),
            CONFIG_DIR.into(),
            "materialize".into(),
            time(self.start),
            time(self.end),
            "--views".into(),
            self.view.into(),
            "--shard".into(),
            format!("$(JOB_COMPLETION_INDEX)/{}", self.shards),
            "--no-progress".into(),
        ];
        if let Some(bytes) = self.memory_limit {
            command.extend(["--memory-limit".into(), bytes.to_string()]);
        }
        command
    }

    pub fn config_map(&self, feature_store_yaml: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.config.namespace,
                "labels": self.labels(),
                "annotations": self.config.annotations,
            },
            "data": { CONFIG_KEY: feature_store_yaml },
        })
    }

    pub fn job(&self) -> Value {
        let labels = self.labels();
        let mut container = json!({
            "name": CONTAINER,
            "image": self.image,
            "command": self.command(),
            "env": self.config.env,
            "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}],
        });
        if let Some(resources) = &self.config.resources {
            container["resources"] = resources.clone();
        }
        let mut pod_spec = json!({
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": [{"name": "config", "configMap": {"name": self.name}}],
        });
        if let Some(account) = &self.config.service_account_name {
            pod_spec["serviceAccountName"] = json!(account);
        }
        if !self.config.image_pull_secrets.is_empty() {
            pod_spec["imagePullSecrets"] = self
                .config
                .image_pull_secrets
                .iter()
                .map(|name| json!({"name": name}))
                .collect();
        }
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": self.name,
                "namespace": self.config.namespace,
                "labels": labels,
                "annotations": self.config.annotations,
            },
            "spec": {
                "completionMode": "Indexed",
                "completions": self.shards,
                "parallelism": self.parallelism(),
                "backoffLimit": self.config.retry_limit,
                "activeDeadlineSeconds": self.config.active_deadline_seconds,
                "ttlSecondsAfterFinished": FINISHED_JOB_TTL_SECONDS,
                "template": {
                    "metadata": {"labels": labels, "annotations": self.config.annotations},
                    "spec": pod_spec,
                },
            },
        })
    }
}

/// `larder-<view>-<run>`: a DNS label short enough for the pods' names and hostnames
/// (`<job>-<index>-<suffix>`).
pub fn object_name(view: &str, run_id: &str) -> String {
    let mut view: String = view
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    view.truncate(36);
    let view = view.trim_matches('-');
    let run: String = run_id.chars().take(8).collect();
    if view.is_empty() {
        format!("larder-{run}")
    } else {
        format!("larder-{view}-{run}")
    }
}

/// `value` as a valid label value: at most 63 of `[A-Za-z0-9._-]`, starting and ending
/// alphanumeric.
fn label_value(value: &str) -> String {
    let mut out: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(63);
    out.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// The ConfigMap patch that makes the Job its owner, so Kubernetes deletes it with the Job.
pub fn owner_patch(job_name: &str, job_uid: &str) -> Value {
    json!({
        "metadata": {
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job_name,
                "uid": job_uid,
            }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(config: &K8sEngineConfig) -> JobPlan<'_> {
        JobPlan {
            config,
            name: object_name("driver_hourly_stats", "0123456789abcdef"),
            image: "ghcr.io/larder-dev/larder:0.1.0",
            project: "demo",
            view: "driver_hourly_stats",
            run_id: "0123456789abcdef",
            start: "2025-05-01T00:00:00Z".parse().unwrap(),
            end: "2025-06-01T12:30:00.5Z".parse().unwrap(),
            shards: 12,
            memory_limit: None,
        }
    }

    #[test]
    fn the_job_is_indexed_with_one_completion_per_shard() {
        let mut config = K8sEngineConfig {
            service_account_name: Some("larder".into()),
            image_pull_secrets: vec!["regcred".into()],
            resources: Some(json!({"limits": {"memory": "1Gi"}})),
            env: vec![
                json!({"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}}),
            ],
            ..K8sEngineConfig::default()
        };
        config.labels.insert("team".into(), "drivers".into());
        config
            .labels
            .insert(LABEL_VIEW.into(), "not-this-one".into());
        config.annotations.insert("owner".into(), "ml".into());
        let plan = plan(&config);
        let job = plan.job();
        assert_eq!(plan.name, "larder-driver-hourly-stats-01234567");
        let spec = &job["spec"];
        assert_eq!(spec["completionMode"], "Indexed");
        assert_eq!(spec["completions"], 12);
        assert_eq!(spec["parallelism"], 10, "max_parallelism caps it");
        assert_eq!(spec["backoffLimit"], 2);
        assert_eq!(spec["activeDeadlineSeconds"], 86_400);
        assert_eq!(spec["ttlSecondsAfterFinished"], FINISHED_JOB_TTL_SECONDS);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["serviceAccountName"], "larder");
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
        assert_eq!(pod["volumes"][0]["configMap"]["name"], plan.name);
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "ghcr.io/larder-dev/larder:0.1.0");
        assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
        assert_eq!(container["env"][0]["name"], "REDIS_PASSWORD");
        assert_eq!(container["volumeMounts"][0]["mountPath"], CONFIG_DIR);
        assert_eq!(
            container["command"],
            json!([
                "larder",
                "-c",
                "/etc/larder",
                "materialize",
                "2025-05-01T00:00:00Z",
                "2025-06-01T12:30:00.500Z",
                "--views",
                "driver_hourly_stats",
                "--shard",
                "$(JOB_COMPLETION_INDEX)/12",
                "--no-progress"
            ])
        );
        for labels in [
            &job["metadata"]["labels"],
            &spec["template"]["metadata"]["labels"],
        ] {
            assert_eq!(labels["team"], "drivers");
            assert_eq!(labels[LABEL_VIEW], "driver_hourly_stats");
            assert_eq!(labels[LABEL_PROJECT], "demo");
            assert_eq!(labels[LABEL_RUN], "0123456789abcdef");
        }
        assert_eq!(job["metadata"]["annotations"]["owner"], "ml");
        let config_map = plan.config_map("project: demo\n");
        assert_eq!(config_map["data"][CONFIG_KEY], "project: demo\n");
        assert_eq!(
            config_map["metadata"]["labels"][LABEL_RUN],
            "0123456789abcdef"
        );
    }

    #[test]
    fn the_run_memory_limit_is_passed_to_every_worker() {
        let config = K8sEngineConfig::default();
        let limited = JobPlan {
            memory_limit: Some(512 << 20),
            ..plan(&config)
        };
        let command = limited.job()["spec"]["template"]["spec"]["containers"][0]["command"].clone();
        let args: Vec<&str> = command
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[args.len() - 2..], ["--memory-limit", "536870912"]);
        assert!(
            !plan(&config)
                .command()
                .iter()
                .any(|a| a == "--memory-limit"),
            "no flag without a limit"
        );
    }

    #[test]
    fn names_and_labels_are_valid_for_kubernetes() {
        assert_eq!(object_name("A__b", "ffffffffffff"), "larder-a--b-ffffffff");
        assert_eq!(object_name("___", "12345678"), "larder-12345678");
        let long = object_name(&"v".repeat(100), "12345678");
        assert!(long.len() <= 52, "{long}");
        assert_eq!(label_value("_view.x_"), "view.x");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
        assert_eq!(label_value("a b"), "a_b");
    }
}
