//! Errors of the Kubernetes engine, sorted by who must act: the user (no cluster configured,
//! a bad kubeconfig, missing rights or namespace, a failed job), then the cluster (API
//! unreachable or answering errors).

use std::path::PathBuf;

/// The rights the engine needs, for error messages (docs/materialization-kubernetes.md has
/// the Role).
pub const RBAC_NEEDED: &str = "create, get, patch and delete on `configmaps`; create and get on \
     `jobs` (apiGroup `batch`); list on `pods`; get on `pods/log`";

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// A `batch_engine` setting cannot work.
    #[error("`batch_engine`: {0}")]
    InvalidConfig(String),
    /// Neither the in-cluster service account nor a kubeconfig was found.
    #[error(
        "no Kubernetes cluster configured: not running in a pod (KUBERNETES_SERVICE_HOST is unset) and no kubeconfig at {tried}; set KUBECONFIG or run inside the cluster"
    )]
    NoCluster { tried: String },
    /// The kubeconfig (or the in-cluster service account files) cannot be used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    /// 401: the credentials were refused.
    #[error(
        "the Kubernetes API at {server} refused the credentials (401 Unauthorized) for {action}: {message}; check the token or client certificate of the kubeconfig's user (or the pod's service account token)"
    )]
    Unauthorized {
        server: String,
        action: String,
        message: String,
    },
    /// 403: the credentials lack a right.
    #[error(
        "the Kubernetes API forbids {action} (403 Forbidden): {message}; the engine's user or service account needs a Role in the namespace granting {RBAC_NEEDED}"
    )]
    Forbidden { action: String, message: String },
    #[error(
        "namespace `{namespace}` does not exist in the cluster at {server}; create it or set `batch_engine.namespace`"
    )]
    NamespaceNotFound { namespace: String, server: String },
    /// The Job ran and failed (a shard failed past `retry_limit`, or the deadline passed).
    #[error("Kubernetes Job `{job}` in namespace `{namespace}` failed: {reason}{logs}")]
    JobFailed {
        job: String,
        namespace: String,
        /// The Job's failure condition (reason and message).
        reason: String,
        /// The failed pods' logs, with a leading newline, when printed.
        logs: String,
    },
    /// The API server cannot be reached (connection refused, DNS, TLS, timeout).
    #[error("cannot reach the Kubernetes API at {server} for {action}: {message}")]
    Unreachable {
        server: String,
        action: String,
        message: String,
    },
    /// Any other error status from the API.
    #[error("the Kubernetes API answered {status} to {action}: {message}")]
    Api {
        status: u16,
        action: String,
        message: String,
    },
}

impl K8sError {
    /// Whether trying again later may succeed without the user changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, K8sError::Unreachable { .. })
            || matches!(self, K8sError::Api { status, .. } if *status >= 500 || *status == 429)
    }
}
