//! A fake Kubernetes API server for tests (cargo feature `fake-k8s`; never for production):
//! enough of the API for the engine (ConfigMaps, Indexed Jobs, pods and their logs), with a
//! job controller that runs each completion index through a [`Kubelet`], respecting the
//! Job's `parallelism` and `backoffLimit`.
//!
//! It checks the shape of what it is sent (an Indexed Job with completions, parallelism, a
//! command and the ConfigMap volume), answers 401 to a wrong bearer token, 403 to
//! resources it is told to forbid, and 404 for namespaces it does not have.

// Handlers return early with a ready answer; boxing it would buy nothing in a test server.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};

/// One pod to run: index `index` of a Job.
#[derive(Clone, Debug)]
pub struct PodRun {
    pub job: Value,
    pub index: u32,
    /// The container's command with `$(JOB_COMPLETION_INDEX)` expanded.
    pub command: Vec<String>,
    /// The mounted ConfigMap's files (key → content) and its mount path.
    pub config_files: BTreeMap<String, String>,
    pub mount_path: String,
    /// `JOB_COMPLETION_INDEX` and the container's plain `env` values.
    pub env: Vec<(String, String)>,
}

/// How a pod ended.
#[derive(Clone, Debug)]
pub struct PodResult {
    pub succeeded: bool,
    pub log: String,
}

/// Runs pods for the fake job controller.
pub trait Kubelet: Send + Sync + 'static {
    fn run(&self, pod: PodRun) -> BoxFuture<'static, PodResult>;
}

impl<F> Kubelet for F
where
    F: Fn(PodRun) -> BoxFuture<'static, PodResult> + Send + Sync + 'static,
{
    fn run(&self, pod: PodRun) -> BoxFuture<'static, PodResult> {
        self(pod)
    }
}

/// Settings of a [`FakeCluster`].
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// The bearer token every request must carry.
    pub token: String,
    pub namespaces: Vec<String>,
    /// Resources (`jobs`, `configmaps`, `pods`) whose every request gets 403.
    pub forbidden: Vec<String>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            token: "test-token".into(),
            namespaces: vec!["default".into()],
            forbidden: Vec::new(),
        }
    }
}

#[derive(Default)]
struct ClusterState {
    config_maps: BTreeMap<String, Value>,
    jobs: BTreeMap<String, Value>,
    pods: Vec<(Value, String)>,
    requests: Vec<String>,
    /// Most pods of one Job seen running at once, per Job.
    max_running: BTreeMap<String, usize>,
    running: BTreeMap<String, usize>,
    next_uid: u64,
}

struct Shared {
    options: FakeOptions,
    kubelet: Arc<dyn Kubelet>,
    state: Mutex<ClusterState>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake API server; stops when dropped.
pub struct FakeCluster {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

impl FakeCluster {
    /// Starts the server on `127.0.0.1:0` (call inside a tokio runtime).
    pub async fn start(kubelet: Arc<dyn Kubelet>, options: FakeOptions) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            options,
            kubelet,
            state: Mutex::new(ClusterState::default()),
        });
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{ns}/configmaps",
                post(create_config_map),
            )
            .route(
                "/api/v1/namespaces/{ns}/configmaps/{name}",
                get(get_config_map)
                    .patch(patch_config_map)
                    .delete(delete_config_map),
            )
            .route("/apis/batch/v1/namespaces/{ns}/jobs", post(create_job))
            .route("/apis/batch/v1/namespaces/{ns}/jobs/{name}", get(get_job))
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
            .route_layer(middleware::from_fn_with_state(shared.clone(), admit))
            .fallback(|uri: Uri| async move {
                status(StatusCode::NOT_FOUND, &format!("no route {uri}"))
            })
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(FakeCluster {
            addr,
            shared,
            _stop: stop,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server with `token`.
    pub fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n    namespace: default\nusers:\n- name: tester\n  user:\n    token: {token}\n",
            self.url()
        )
    }

    pub fn config_maps(&self) -> Vec<Value> {
        self.shared.state().config_maps.values().cloned().collect()
    }

    pub fn jobs(&self) -> Vec<Value> {
        self.shared.state().jobs.values().cloned().collect()
    }

    /// Every pod run so far with its log.
    pub fn pods(&self) -> Vec<(Value, String)> {
        self.shared.state().pods.clone()
    }

    /// `METHOD path` of every request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.state().requests.clone()
    }

    /// The most pods of `job` that ran at once.
    pub fn max_running(&self, job: &str) -> usize {
        self.shared
            .state()
            .max_running
            .get(job)
            .copied()
            .unwrap_or(0)
    }
}

fn status(code: StatusCode, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

/// Every routed request: recorded, then checked for auth, a forbidden resource and an
/// unknown namespace (from its path, `…/namespaces/{ns}/{resource}[/…]`) before its handler.
async fn admit(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (method, uri) = (request.method().clone(), request.uri().clone());
    shared.state().requests.push(format!("{method} {uri}"));
    let mut segments = uri
        .path()
        .split('/')
        .skip_while(|s| *s != "namespaces")
        .skip(1);
    let (namespace, resource) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
    match check(&shared, &method, request.headers(), namespace, resource) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused,
    }
}

fn check(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    namespace: &str,
    resource: &str,
) -> Result<(), Response> {
    let expected = format!("Bearer {}", shared.options.token);
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if given != expected {
        return Err(status(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    if shared.options.forbidden.iter().any(|r| r == resource) {
        return Err(status(
            StatusCode::FORBIDDEN,
            &format!(
                "{resource} is forbidden: User \"tester\" cannot {} resource \"{resource}\" in the namespace \"{namespace}\"",
                method.as_str().to_lowercase()
            ),
        ));
    }
    if !shared.options.namespaces.iter().any(|n| n == namespace) {
        return Err(status(
            StatusCode::NOT_FOUND,
            &format!("namespaces \"{namespace}\" not found"),
        ));
    }
    Ok(())
}

fn parse(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body)
        .map_err(|e| status(StatusCode::BAD_REQUEST, &format!("not JSON: {e}")))
}

fn name_of(object: &Value) -> String {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

async fn create_config_map(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut object = match parse(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if object["kind"] != "ConfigMap" || !object["data"].is_object() {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a ConfigMap with data",
        );
    }
    let name = name_of(&object);
    let mut state = shared.state();
    if state.config_maps.contains_key(&name) {
        return status(StatusCode::CONFLICT, "already exists");
    }
    state.next_uid += 1;
    object["metadata"]["uid"] = json!(format!("cm-uid-{}", state.next_uid));
    state.config_maps.insert(name, object.clone());
    (StatusCode::CREATED, axum::Json(object)).into_response()
}

async fn get_config_map(
    State(shared): State<Arc<Shared>>,
    Path((_, name)): Path<(String, String)>,
) -> Response {
    match shared.state().config_maps.get(&name) {
        Some(cm) => axum::Json(cm.clone()).into_response(),
        None => status(StatusCode::NOT_FOUND, "configmap not found"),
    }
}

async fn patch_config_map(
    State(shared): State<Arc<Shared>>,
    Path((_, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/merge-patch+json")
    {
        return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "want a merge patch");
    }
    let patch = match parse(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut state = shared.state();
    let Some(cm) = state.config_maps.get_mut(&name) else {
        return status(StatusCode::NOT_FOUND, "configmap not found");
    };
    if let Some(owners) = patch.pointer("/metadata/ownerReferences") {
        cm["metadata"]["ownerReferences"] = owners.clone();
    }
    axum::Json(cm.clone()).into_response()
}

async fn delete_config_map(
    State(shared): State<Arc<Shared>>,
    Path((_, name)): Path<(String, String)>,
) -> Response {
    match shared.state().config_maps.remove(&name) {
        Some(_) => status(StatusCode::OK, "deleted"),
        None => status(StatusCode::NOT_FOUND, "configmap not found"),
    }
}

/// What the job controller needs from a Job, checked.
struct JobShape {
    completions: u32,
    parallelism: u32,
    backoff_limit: u32,
    command: Vec<String>,
    env: Vec<(String, String)>,
    config_map: String,
    mount_path: String,
}

fn job_shape(job: &Value) -> Result<JobShape, String> {
    let spec = &job["spec"];
    if job["apiVersion"] != "batch/v1" || job["kind"] != "Job" {
        return Err("not a batch/v1 Job".into());
    }
    if spec["completionMode"] != "Indexed" {
        return Err("spec.completionMode is not Indexed".into());
    }
    let number = |key: &str| -> Result<u32, String> {
        spec[key]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("spec.{key} is not a number"))
    };
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    let command: Vec<String> = container["command"]
        .as_array()
        .ok_or("the container has no command")?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or("a command word is not a string")
        })
        .collect::<Result<_, _>>()?;
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.first())
        .ok_or("no volume")?;
    let config_map = volume
        .pointer("/configMap/name")
        .and_then(Value::as_str)
        .ok_or("the volume is not a ConfigMap")?
        .to_owned();
    let mount_path = container
        .pointer("/volumeMounts/0/mountPath")
        .and_then(Value::as_str)
        .ok_or("no volume mount")?
        .to_owned();
    let env = super::access::name_value_pairs(&container["env"]);
    Ok(JobShape {
        completions: number("completions")?,
        parallelism: number("parallelism")?,
        backoff_limit: number("backoffLimit")?,
        command,
        env,
        config_map,
        mount_path,
    })
}

async fn create_job(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut job = match parse(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let shape = match job_shape(&job) {
        Ok(shape) => shape,
        Err(message) => return status(StatusCode::UNPROCESSABLE_ENTITY, &message),
    };
    let name = name_of(&job);
    {
        let mut state = shared.state();
        if state.jobs.contains_key(&name) {
            return status(StatusCode::CONFLICT, "already exists");
        }
        state.next_uid += 1;
        job["metadata"]["uid"] = json!(format!("job-uid-{}", state.next_uid));
        job["status"] = json!({});
        state.jobs.insert(name.clone(), job.clone());
    }
    tokio::spawn(run_job(shared.clone(), name, job.clone(), shape));
    (StatusCode::CREATED, axum::Json(job)).into_response()
}

/// The job controller: every index once, retried while the failures stay within
/// `backoffLimit`, at most `parallelism` at a time.
async fn run_job(shared: Arc<Shared>, name: String, job: Value, shape: JobShape) {
    let permits = Arc::new(Semaphore::new(shape.parallelism.max(1) as usize));
    let failures = Arc::new(Mutex::new(0u32));
    let shape = Arc::new(shape);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..shape.completions {
        let (shared, name, job, shape) = (shared.clone(), name.clone(), job.clone(), shape.clone());
        let (permits, failures) = (permits.clone(), failures.clone());
        tasks.spawn(async move {
            loop {
                let Ok(_permit) = permits.acquire().await else {
                    return false;
                };
                if *failures.lock().unwrap_or_else(|e| e.into_inner()) > shape.backoff_limit {
                    return false;
                }
                let files = shared
                    .state()
                    .config_maps
                    .get(&shape.config_map)
                    .and_then(|cm| cm["data"].as_object().cloned())
                    .map(|data| {
                        data.into_iter()
                            .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut env = vec![("JOB_COMPLETION_INDEX".to_owned(), index.to_string())];
                env.extend(shape.env.iter().cloned());
                let run = PodRun {
                    job: job.clone(),
                    index,
                    command: shape
                        .command
                        .iter()
                        .map(|w| w.replace("$(JOB_COMPLETION_INDEX)", &index.to_string()))
                        .collect(),
                    config_files: files,
                    mount_path: shape.mount_path.clone(),
                    env,
                };
                {
                    let mut state = shared.state();
                    let running = state.running.entry(name.clone()).or_default();
                    *running += 1;
                    let now = *running;
                    let max = state.max_running.entry(name.clone()).or_default();
                    *max = (*max).max(now);
                }
                let result = shared.kubelet.run(run).await;
                let mut state = shared.state();
                if let Some(running) = state.running.get_mut(&name) {
                    *running -= 1;
                }
                let attempt = state.pods.len();
                let pod = json!({
                    "metadata": {
                        "name": format!("{name}-{index}-{attempt}"),
                        "labels": {"job-name": name, "batch.kubernetes.io/job-name": name},
                        "annotations": {"batch.kubernetes.io/job-completion-index": index.to_string()},
                    },
                    "status": {"phase": if result.succeeded { "Succeeded" } else { "Failed" }},
                });
                state.pods.push((pod, result.log));
                if result.succeeded {
                    return true;
                }
                *failures.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            }
        });
    }
    let mut succeeded = 0;
    while let Some(done) = tasks.join_next().await {
        if matches!(done, Ok(true)) {
            succeeded += 1;
        }
    }
    let failed = *failures.lock().unwrap_or_else(|e| e.into_inner());
    let condition = if succeeded == shape.completions {
        json!({"type": "Complete", "status": "True"})
    } else {
        json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
               "message": "Job has reached the specified backoff limit"})
    };
    if let Some(job) = shared.state().jobs.get_mut(&name) {
        job["status"] =
            json!({"succeeded": succeeded, "failed": failed, "conditions": [condition]});
    }
}

async fn get_job(
    State(shared): State<Arc<Shared>>,
    Path((_, name)): Path<(String, String)>,
) -> Response {
    match shared.state().jobs.get(&name) {
        Some(job) => axum::Json(job.clone()).into_response(),
        None => status(StatusCode::NOT_FOUND, "job not found"),
    }
}

async fn list_pods(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    let Some(("job-name", job)) = selector.split_once('=') else {
        return status(StatusCode::BAD_REQUEST, "want labelSelector=job-name=JOB");
    };
    let items: Vec<Value> = shared
        .state()
        .pods
        .iter()
        .filter(|(pod, _)| pod.pointer("/metadata/labels/job-name") == Some(&json!(job)))
        .map(|(pod, _)| pod.clone())
        .collect();
    axum::Json(json!({"kind": "PodList", "items": items})).into_response()
}

async fn pod_log(
    State(shared): State<Arc<Shared>>,
    Path((_, name)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let state = shared.state();
    let Some((_, log)) = state
        .pods
        .iter()
        .find(|(pod, _)| pod.pointer("/metadata/name") == Some(&json!(name)))
    else {
        return status(StatusCode::NOT_FOUND, "pod not found");
    };
    let lines: Vec<&str> = log.lines().collect();
    let tail = query
        .get("tailLines")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(lines.len());
    let start = lines.len().saturating_sub(tail);
    (StatusCode::OK, lines[start..].join("\n")).into_response()
}
