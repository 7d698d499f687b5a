//! The Kubernetes engine against the fake API server (scripted pods), kubeconfig
//! discovery and parsing, and the API error messages.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::FutureExt;
use larder_spec::{Definitions, FeatureView, Field as SpecField, Ttl};
use larder_types::{ScalarType, ValueType};
use serde_json::json;

use super::access::{Auth, from_kubeconfig_files, in_cluster, parse_server};
use super::fake::{FakeCluster, FakeOptions, PodResult, PodRun};
use super::*;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../larder-server/tests/fixtures"
);

fn view() -> FeatureView {
    let field = |name: &str, dtype: ValueType| SpecField {
        name: name.parse().unwrap(),
        dtype,
        description: String::new(),
        tags: Default::default(),
    };
    FeatureView {
        name: "driver_hourly_stats".parse().unwrap(),
        entities: vec!["driver".parse().unwrap()],
        ttl: Ttl(std::time::Duration::ZERO),
        source: "s".parse().unwrap(),
        batch_source: "s".parse().unwrap(),
        online: true,
        offline: false,
        entity_columns: vec![field("driver_id", ValueType::Scalar(ScalarType::Int64))],
        features: vec![field("rate", ValueType::Scalar(ScalarType::Float32))],
        description: String::new(),
        tags: Default::default(),
        owner: String::new(),
    }
}

fn task() -> MaterializeTask {
    let definitions: Definitions =
        serde_json::from_value(json!({"project": {"name": "demo"}})).unwrap();
    MaterializeTask {
        project: "demo".into(),
        definitions: Arc::new(definitions),
        view: view(),
        start: "2025-05-01T00:00:00Z".parse().unwrap(),
        end: "2025-06-01T00:00:00Z".parse().unwrap(),
    }
}

/// A kubelet whose pods print a worker's summary line; `fail` indexes always fail.
fn scripted(fail: &'static [u32]) -> Arc<dyn fake::Kubelet> {
    Arc::new(move |pod: PodRun| {
        async move {
            let shard = format!("{}/{}", pod.index, pod.command[9].rsplit('/').next().unwrap_or("?"));
            assert_eq!(pod.config_files["feature_store.yaml"], "project: demo\n");
            assert_eq!(pod.mount_path, "/etc/larder");
            if fail.contains(&pod.index) {
                PodResult {
                    succeeded: false,
                    log: format!("error: shard {shard}: the online store is unreachable"),
                }
            } else {
                PodResult {
                    succeeded: true,
                    log: format!(
                        "Materializing 1 feature views\ndriver_hourly_stats: 500 source rows read, {} entity keys written in 0.01s\nDone in 0.01s.",
                        10 + pod.index
                    ),
                }
            }
        }
        .boxed()
    })
}

fn engine(cluster: &FakeCluster, token: &str, config: K8sEngineConfig) -> K8sEngine {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, cluster.kubeconfig(token)).unwrap();
    let access = from_kubeconfig_files(&[path]).unwrap();
    K8sEngine::new(config, "project: demo\n".into(), access)
        .unwrap()
        .with_poll_interval(PollInterval {
            first: Duration::from_millis(10),
            max: Duration::from_millis(50),
        })
}

fn sync_config(shards: u32, max_parallelism: u32) -> K8sEngineConfig {
    K8sEngineConfig {
        synchronous: true,
        shards: Some(shards),
        max_parallelism,
        ..K8sEngineConfig::default()
    }
}

#[tokio::test]
async fn a_synchronous_run_creates_an_indexed_job_and_sums_the_shards() {
    let cluster = FakeCluster::start(scripted(&[]), FakeOptions::default())
        .await
        .unwrap();
    let engine = engine(&cluster, "test-token", sync_config(3, 2));
    let progress = ViewProgress::new("driver_hourly_stats");
    let report = engine
        .materialize(task(), progress.clone())
        .await
        .expect("materialized");
    assert_eq!(report.submitted, None);
    assert_eq!(report.rows_read, 500, "each shard reads the window");
    assert_eq!(report.rows_written, 10 + 11 + 12);
    assert_eq!(progress.phase(), Phase::Done);

    let jobs = cluster.jobs();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    let name = job["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("larder-driver-hourly-stats-"), "{name}");
    assert_eq!(job["spec"]["completions"], 3);
    assert_eq!(job["spec"]["parallelism"], 2);
    assert!(cluster.max_running(name) <= 2);
    let command = &job["spec"]["template"]["spec"]["containers"][0]["command"];
    assert_eq!(command[9], "$(JOB_COMPLETION_INDEX)/3");
    // The ConfigMap holds the config and is owned by the Job.
    let config_maps = cluster.config_maps();
    assert_eq!(config_maps.len(), 1);
    let owner = &config_maps[0]["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Job");
    assert_eq!(owner["uid"], job["metadata"]["uid"]);
    assert_eq!(cluster.pods().len(), 3);
}

#[tokio::test]
async fn a_failed_shard_fails_the_run_with_its_log() {
    let cluster = FakeCluster::start(scripted(&[1]), FakeOptions::default())
        .await
        .unwrap();
    let engine = engine(&cluster, "test-token", sync_config(3, 3));
    let progress = ViewProgress::new("driver_hourly_stats");
    let err = engine
        .materialize(task(), progress.clone())
        .await
        .expect_err("shard 1 fails")
        .to_string();
    assert!(
        err.starts_with(
            "feature view `driver_hourly_stats`: Kubernetes Job `larder-driver-hourly-stats-"
        ),
        "{err}"
    );
    assert!(err.contains("BackoffLimitExceeded"), "{err}");
    assert!(err.contains("(shard 1/3)"), "{err}");
    assert!(
        err.contains("error: shard 1/3: the online store is unreachable"),
        "{err}"
    );
    assert_eq!(progress.phase(), Phase::Failed);
    // retry_limit 2: the failing index ran three times.
    let failed = cluster
        .pods()
        .iter()
        .filter(|(p, _)| p["status"]["phase"] == "Failed")
        .count();
    assert_eq!(failed, 3);

    // Without print_pod_logs_on_failure, the error names the Job only.
    let quiet = K8sEngineConfig {
        print_pod_logs_on_failure: false,
        ..sync_config(3, 3)
    };
    let err = engine_with(&cluster, quiet)
        .materialize(task(), ViewProgress::new("driver_hourly_stats"))
        .await
        .expect_err("fails")
        .to_string();
    assert!(!err.contains("online store is unreachable"), "{err}");
}

fn engine_with(cluster: &FakeCluster, config: K8sEngineConfig) -> K8sEngine {
    engine(cluster, "test-token", config)
}

#[tokio::test]
async fn an_asynchronous_run_returns_once_submitted() {
    let cluster = FakeCluster::start(scripted(&[]), FakeOptions::default())
        .await
        .unwrap();
    let config = K8sEngineConfig {
        shards: Some(2),
        ..K8sEngineConfig::default()
    };
    assert!(!config.synchronous, "Feast's default");
    let report = engine_with(&cluster, config)
        .materialize(task(), ViewProgress::new("driver_hourly_stats"))
        .await
        .expect("submitted");
    let submitted = report.submitted.expect("only submitted");
    assert!(
        submitted.starts_with("Kubernetes Job `larder-driver-hourly-stats-"),
        "{submitted}"
    );
    assert!(
        submitted.ends_with("in namespace `default` (2 shards)"),
        "{submitted}"
    );
    // It never asked for the Job's status.
    assert!(
        cluster.requests().iter().all(|r| !r.starts_with("GET")),
        "{:?}",
        cluster.requests()
    );
}

#[tokio::test]
async fn api_errors_say_what_to_do() {
    let options = FakeOptions {
        forbidden: vec!["jobs".into()],
        ..FakeOptions::default()
    };
    let cluster = FakeCluster::start(scripted(&[]), options).await.unwrap();
    let run = |engine: K8sEngine| async move {
        engine
            .materialize(task(), ViewProgress::new("driver_hourly_stats"))
            .await
            .expect_err("fails")
            .to_string()
    };

    let err = run(engine(&cluster, "wrong", sync_config(1, 1))).await;
    assert!(err.contains("refused the credentials (401 Unauthorized) for create `configmaps` in namespace `default`"), "{err}");

    let err = run(engine(&cluster, "test-token", sync_config(1, 1))).await;
    assert!(
        err.contains("forbids create `jobs` in namespace `default` (403 Forbidden)"),
        "{err}"
    );
    assert!(
        err.contains("create and get on `jobs` (apiGroup `batch`)"),
        "{err}"
    );
    // The ConfigMap of the Job that could not be created was deleted again.
    assert!(cluster.config_maps().is_empty());

    let missing = K8sEngineConfig {
        namespace: "features".into(),
        ..sync_config(1, 1)
    };
    let err = run(engine(&cluster, "test-token", missing)).await;
    assert!(
        err.contains("namespace `features` does not exist in the cluster at http://127.0.0.1:"),
        "{err}"
    );

    // Nothing listens on port 1 (a port just released could be taken by a test running
    // beside this one: CI once saw this request answered by something else).
    let port = 1;
    let access = ClusterAccess {
        server: format!("http://127.0.0.1:{port}"),
        endpoint: parse_server(&format!("http://127.0.0.1:{port}")).unwrap(),
        tls: None,
        auth: Auth::None,
        source: "test".into(),
        namespace: None,
    };
    let engine = K8sEngine::new(sync_config(1, 1), String::new(), access).unwrap();
    let err = run(engine).await;
    assert!(err.contains(&format!("cannot reach the Kubernetes API at http://127.0.0.1:{port} for create `configmaps` in namespace `default`: cannot connect")), "{err}");
}

#[test]
fn zero_shards_or_parallelism_are_refused() {
    let access = ClusterAccess {
        server: "http://127.0.0.1:1".into(),
        endpoint: parse_server("http://127.0.0.1:1").unwrap(),
        tls: None,
        auth: Auth::None,
        source: "test".into(),
        namespace: None,
    };
    for (config, expected) in [
        (sync_config(0, 1), "`shards` must be at least 1"),
        (sync_config(1, 0), "`max_parallelism` must be at least 1"),
    ] {
        let err = K8sEngine::new(config, String::new(), access.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
    let default = K8sEngine::new(K8sEngineConfig::default(), String::new(), access).unwrap();
    assert_eq!(default.shards(), 10, "max_parallelism by default");
    assert!(default.image.starts_with("ghcr.io/larder-dev/larder:"));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn kubeconfigs_resolve_the_current_context() {
    let dir = tempfile::tempdir().unwrap();
    let ca = std::fs::read(format!("{FIXTURES}/ca.pem")).unwrap();
    let cert = std::fs::read(format!("{FIXTURES}/server.pem")).unwrap();
    let key = std::fs::read(format!("{FIXTURES}/server.key")).unwrap();
    std::fs::copy(format!("{FIXTURES}/ca.pem"), dir.path().join("ca.pem")).unwrap();
    write(dir.path(), "token", "file-token\n");
    let config = write(
        dir.path(),
        "config",
        &format!(
            "apiVersion: v1\nkind: Config\npreferences: {{}}\ncurrent-context: prod\nclusters:\n\
             - name: dev\n  cluster:\n    server: http://127.0.0.1:8001\n\
             - name: prod\n  cluster:\n    server: https://[::1]:6443/k8s/clusters/c-1/\n    certificate-authority: ca.pem\n    tls-server-name: api.internal\n\
             contexts:\n- name: dev\n  context: {{cluster: dev, user: dev}}\n\
             - name: prod\n  context: {{cluster: prod, user: admin, namespace: features}}\n\
             users:\n- name: dev\n  user: {{token: dev-token}}\n\
             - name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n    tokenFile: token\n",
            b64(&cert),
            b64(&key)
        ),
    );
    let access = from_kubeconfig_files(std::slice::from_ref(&config)).unwrap();
    assert_eq!(access.server, "https://[::1]:6443/k8s/clusters/c-1/");
    assert_eq!(access.endpoint.host, "::1");
    assert_eq!(access.endpoint.port, 6443);
    assert_eq!(access.endpoint.tls_name, "api.internal");
    assert_eq!(access.endpoint.base_path, "/k8s/clusters/c-1");
    assert!(access.tls.is_some());
    assert_eq!(access.namespace.as_deref(), Some("features"));
    assert_eq!(
        access.auth.header().unwrap().as_deref(),
        Some("Bearer file-token"),
        "a relative tokenFile resolves against the kubeconfig's folder, read at each call"
    );

    // An earlier file of a KUBECONFIG list wins: its current context and its entries.
    let first = write(
        dir.path(),
        "first",
        "current-context: dev\nusers:\n- name: dev\n  user: {token: override}\n",
    );
    let missing = dir.path().join("missing");
    let access = from_kubeconfig_files(&[missing, first, config.clone()]).unwrap();
    assert_eq!(access.server, "http://127.0.0.1:8001");
    assert!(access.tls.is_none());
    assert_eq!(
        access.auth.header().unwrap().as_deref(),
        Some("Bearer override")
    );

    // The CA given as data, no verification, basic auth.
    let other = write(
        dir.path(),
        "other",
        &format!(
            "current-context: c\nclusters:\n- name: a\n  cluster: {{server: 'https://k8s.example.com', certificate-authority-data: {}}}\n\
             - name: b\n  cluster: {{server: 'https://k8s.example.com', insecure-skip-tls-verify: true}}\n\
             contexts:\n- name: c\n  context: {{cluster: a, user: u}}\nusers:\n- name: u\n  user: {{username: ann, password: secret}}\n",
            b64(&ca)
        ),
    );
    let access = from_kubeconfig_files(&[other]).unwrap();
    assert_eq!(access.endpoint.port, 443);
    assert_eq!(
        access.auth.header().unwrap().as_deref(),
        Some("Basic YW5uOnNlY3JldA==")
    );
}

#[test]
fn unusable_kubeconfigs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("clusters: []\n", "no `current-context` is set"),
        (
            "current-context: x\n",
            "the current context `x` is not defined",
        ),
        (
            "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\n",
            "context `x` names cluster `c`, which is not defined",
        ),
        (
            "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'ftp://h'}\ncontexts:\n- name: x\n  context: {cluster: c}\n",
            "the cluster server `ftp://h` is not an http:// or https:// URL",
        ),
        (
            "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://h'}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user:\n    exec: {args: [eks, get-token]}\n",
            "user `u`: its `exec` block has no `command`",
        ),
        (
            "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://h', certificate-authority-data: '!!notbase64'}\ncontexts:\n- name: x\n  context: {cluster: c}\n",
            "the certificate-authority-data is not valid base64",
        ),
        (
            "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://h', certificate-authority: nope.pem}\ncontexts:\n- name: x\n  context: {cluster: c}\n",
            "cannot read the certificate-authority",
        ),
        (
            "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'https://h'}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {client-key-data: eA==}\n",
            "user `u` has a client certificate without a key, or a key without a certificate",
        ),
        ("current-context: [\n", "not a valid kubeconfig"),
    ];
    for (text, expected) in cases {
        let path = write(dir.path(), "config", text);
        let err = from_kubeconfig_files(std::slice::from_ref(&path))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{text}: {err}");
        assert!(
            err.starts_with(&format!("kubeconfig {}", path.display())),
            "{err}"
        );
    }
}

#[test]
fn discovery_prefers_kubeconfig_then_the_service_account_then_home() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write(
        dir.path(),
        "config",
        "current-context: x\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:1'}\ncontexts:\n- name: x\n  context: {cluster: c}\n",
    );
    let env = |vars: Vec<(&'static str, String)>| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    };
    let both = env(vec![
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("KUBERNETES_SERVICE_HOST", "10.0.0.1".into()),
    ]);
    assert_eq!(discover(&both).unwrap().server, "http://127.0.0.1:1");

    let err = discover(&env(vec![("HOME", dir.path().display().to_string())]))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("no Kubernetes cluster configured"), "{err}");
    assert!(err.contains(".kube/config"), "{err}");

    std::fs::create_dir(dir.path().join(".kube")).unwrap();
    std::fs::copy(&kubeconfig, dir.path().join(".kube/config")).unwrap();
    let home = env(vec![("HOME", dir.path().display().to_string())]);
    assert_eq!(discover(&home).unwrap().server, "http://127.0.0.1:1");

    // In a pod: the service account's files.
    let sa = dir.path().join("sa");
    std::fs::create_dir(&sa).unwrap();
    let err = in_cluster("10.0.0.1", "443", &sa).unwrap_err().to_string();
    assert!(
        err.contains("cannot read the service account's ca.crt"),
        "{err}"
    );
    std::fs::copy(format!("{FIXTURES}/ca.pem"), sa.join("ca.crt")).unwrap();
    let err = in_cluster("10.0.0.1", "443", &sa).unwrap_err().to_string();
    assert!(
        err.contains("the service account token is missing"),
        "{err}"
    );
    write(&sa, "token", "sa-token");
    write(&sa, "namespace", "features\n");
    let access = in_cluster("fd00::1", "6443", &sa).unwrap();
    assert_eq!(access.server, "https://[fd00::1]:6443");
    assert_eq!(access.namespace.as_deref(), Some("features"));
    assert_eq!(
        access.auth.header().unwrap().as_deref(),
        Some("Bearer sa-token")
    );
}

#[test]
fn job_conditions_and_worker_summaries_are_read() {
    assert_eq!(job_state(&json!({"status": {}})), None);
    assert_eq!(
        job_state(&json!({"status": {"conditions": [
            {"type": "SuccessCriteriaMet", "status": "True"},
        ]}})),
        None,
        "pods may still be stopping"
    );
    assert_eq!(
        job_state(&json!({"status": {"conditions": [
            {"type": "Complete", "status": "True"},
        ]}})),
        Some(Finished::Succeeded)
    );
    let Some(Finished::Failed(reason)) = job_state(&json!({"status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
         "message": "Job was active longer than specified deadline"},
    ]}})) else {
        panic!("failed")
    };
    assert_eq!(
        reason,
        "DeadlineExceeded: Job was active longer than specified deadline (`active_deadline_seconds` in `batch_engine`)"
    );
    let log = "Materializing 1 feature views\nother: 1 source rows read, 1 entity keys written in 0.01s\nv: 120 source rows read, 7 entity keys written in 0.02s\nDone in 0.02s.\n";
    assert_eq!(summary_counts(log, "v"), Some((120, 7)));
    assert_eq!(summary_counts(log, "w"), None);
}

#[test]
fn servers_parse() {
    let e = parse_server("https://10.0.0.1").unwrap();
    assert_eq!(
        (e.https, e.host.as_str(), e.port, e.base_path.as_str()),
        (true, "10.0.0.1", 443, "")
    );
    let e = parse_server("http://localhost:8001/").unwrap();
    assert_eq!((e.https, e.port, e.base_path.as_str()), (false, 8001, ""));
    assert!(parse_server("https://:443").is_err());
    assert!(
        parse_server("https://h:x")
            .unwrap_err()
            .contains("bad port `x`")
    );
    assert!(
        parse_server("https://[::1")
            .unwrap_err()
            .contains("unclosed")
    );
}

/// An HTTPS server with the test certificate (for `localhost`/`127.0.0.1`, signed by the
/// fixtures' CA) answering `{"ok": true}` to any request.
async fn tls_server() -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = std::fs::read(format!("{FIXTURES}/server.pem")).unwrap();
    let key = std::fs::read(format!("{FIXTURES}/server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<_, _>>()
            .unwrap(),
        PrivateKeyDer::from_pem_slice(&key).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(hyper::body::Bytes::from_static(
                            b"{\"ok\":true}",
                        )),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_servers_are_verified_against_the_configured_authority() {
    let port = tls_server().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(format!("{FIXTURES}/ca.pem"), dir.path().join("ca.pem")).unwrap();
    let get = |cluster: String| {
        let path = write(
            dir.path(),
            "config",
            &format!(
                "current-context: c\nclusters:\n- name: k\n  cluster: {{{cluster}}}\ncontexts:\n- name: c\n  context: {{cluster: k}}\n"
            ),
        );
        let client = KubeClient::new(from_kubeconfig_files(&[path]).unwrap());
        async move {
            client
                .json(client::Call {
                    method: Method::GET,
                    path: "/version".into(),
                    body: None,
                    action: "get the version",
                })
                .await
        }
    };
    let server = format!("server: 'https://localhost:{port}'");
    let ok = get(format!("{server}, certificate-authority: ca.pem"))
        .await
        .expect("verified against the CA");
    assert_eq!(ok, json!({"ok": true}));
    let ok = get(format!("{server}, insecure-skip-tls-verify: true"))
        .await
        .expect("not verified");
    assert_eq!(ok, json!({"ok": true}));
    let err = get(server.clone())
        .await
        .expect_err("the test CA is not a system root")
        .to_string();
    assert!(
        err.contains(&format!("cannot reach the Kubernetes API at https://localhost:{port} for get the version: TLS handshake failed")),
        "{err}"
    );
    let err = get(format!(
        "{server}, certificate-authority: ca.pem, tls-server-name: other.example"
    ))
    .await
    .expect_err("the certificate does not name other.example")
    .to_string();
    assert!(err.contains("TLS handshake failed"), "{err}");
}

#[cfg(unix)]
#[test]
fn exec_plugins_give_tokens_cached_until_they_expire() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // Prints an ExecCredential; its expiry comes from the plugin's `env`.
    let script = write(
        dir.path(),
        "plugin.sh",
        &format!(
            "#!/bin/sh\necho run >> {}\ncase \"$KUBERNETES_EXEC_INFO\" in *ExecCredential*) ;; *) exit 3 ;; esac\n[ \"$1\" = fail ] && {{ echo 'token expired, log in again' >&2; exit 1; }}\nprintf '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"%s\",\"expirationTimestamp\":\"%s\"}}}}' \"$1\" \"$EXPIRY\"\n",
            runs.display()
        ),
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let access = |token: &str, expiry: &str| {
        let path = write(
            dir.path(),
            "config",
            &format!(
                "current-context: x\nclusters:\n- name: c\n  cluster: {{server: 'http://127.0.0.1:1'}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./plugin.sh\n      args: [{token}]\n      env: [{{name: EXPIRY, value: '{expiry}'}}]\n"
            ),
        );
        from_kubeconfig_files(&[path]).unwrap()
    };
    let count = || std::fs::read_to_string(&runs).map_or(0, |r| r.lines().count());

    let fresh = access("fresh", "2999-01-01T00:00:00Z");
    assert_eq!(
        fresh.auth.header().unwrap().as_deref(),
        Some("Bearer fresh")
    );
    assert_eq!(
        fresh.auth.header().unwrap().as_deref(),
        Some("Bearer fresh")
    );
    assert_eq!(count(), 1, "cached until it expires");

    let stale = access("stale", "2000-01-01T00:00:00Z");
    stale.auth.header().unwrap();
    stale.auth.header().unwrap();
    assert_eq!(count(), 3, "an expired token is renewed");

    let err = access("fail", "2999-01-01T00:00:00Z")
        .auth
        .header()
        .unwrap_err();
    assert!(
        err.contains("plugin.sh` failed (exit status: 1): token expired, log in again"),
        "{err}"
    );
}
