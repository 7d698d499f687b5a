//! `batch_engine: k8s` end to end: `larder materialize` against a fake Kubernetes API
//! server (`larder_materialize::k8s::fake`) whose kubelet runs every shard's container
//! command as a real `larder` process, with the ConfigMap's `feature_store.yaml` written to
//! a temporary folder standing in for `/etc/larder`. Also the worker mode itself
//! (`--shard i/N`): its validation, and that the shards partition the keys exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use larder_materialize::k8s::fake::{FakeCluster, FakeOptions, Kubelet, PodResult, PodRun};

use super::{END_TIME, demo_repo, larder, ok, online_rows, succeeded, text};

const START: &str = "2025-05-20T00:00:00Z";
const END: &str = "2025-05-28T00:00:00Z";

/// The fake kubelet: runs the pod's command with the built binary. `fail_index` gets a
/// bad `LARDER_MATERIALIZE_MEMORY_LIMIT`, so its `larder` process fails for real.
struct ProcessKubelet {
    fail_index: Option<u32>,
}

impl Kubelet for ProcessKubelet {
    fn run(&self, pod: PodRun) -> futures::future::BoxFuture<'static, PodResult> {
        let fail = self.fail_index == Some(pod.index);
        async move {
            let mount = tempfile::tempdir().expect("pod dir");
            for (name, content) in &pod.config_files {
                std::fs::write(mount.path().join(name), content).expect("write config");
            }
            assert_eq!(pod.command[0], "larder", "{:?}", pod.command);
            let args: Vec<String> = pod.command[1..]
                .iter()
                .map(|arg| {
                    if *arg == pod.mount_path {
                        mount.path().display().to_string()
                    } else {
                        arg.clone()
                    }
                })
                .collect();
            let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_larder"));
            command
                .args(&args)
                .current_dir(mount.path())
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(pod.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            if fail {
                command.env("LARDER_MATERIALIZE_MEMORY_LIMIT", "lots");
            }
            match command.output().await {
                Ok(out) => PodResult {
                    succeeded: out.status.success(),
                    log: format!("{}{}", text(&out.stdout), text(&out.stderr)),
                },
                Err(e) => PodResult {
                    succeeded: false,
                    log: format!("cannot start larder: {e}"),
                },
            }
        }
        .boxed()
    }
}

/// A fake cluster on its own runtime (the test thread blocks on `larder` processes).
struct Cluster {
    fake: FakeCluster,
    _runtime: tokio::runtime::Runtime,
    kubeconfig: tempfile::TempDir,
}

impl Cluster {
    fn start(fail_index: Option<u32>) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let fake = runtime
            .block_on(FakeCluster::start(
                Arc::new(ProcessKubelet { fail_index }),
                FakeOptions::default(),
            ))
            .expect("fake API server");
        let kubeconfig = tempfile::tempdir().expect("kubeconfig dir");
        std::fs::write(
            kubeconfig.path().join("good"),
            fake.kubeconfig("test-token"),
        )
        .expect("kubeconfig");
        std::fs::write(kubeconfig.path().join("bad"), fake.kubeconfig("stolen"))
            .expect("kubeconfig");
        Cluster {
            fake,
            _runtime: runtime,
            kubeconfig,
        }
    }

    fn kubeconfig(&self, which: &str) -> PathBuf {
        self.kubeconfig.path().join(which)
    }

    /// Waits for every Job to finish (asynchronous runs leave them running).
    fn wait_for_jobs(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self
            .fake
            .jobs()
            .iter()
            .any(|job| job["status"]["conditions"].as_array().is_none())
        {
            assert!(Instant::now() < deadline, "the Jobs did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The demo repo with every path absolute (the pods load the config from another folder)
/// and the online store's folder taken from `${ONLINE_DIR}`, which the pods get from the
/// Job's `env`; `batch_engine` as given.
fn k8s_repo(batch_engine: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, repo) = demo_repo();
    let data = repo.join("data");
    let config = std::fs::read_to_string(repo.join("feature_store.yaml"))
        .expect("config")
        .replace(
            "registry: data/registry.db",
            &format!("registry: {}/registry.db", data.display()),
        )
        .replace(
            "path: data/online_store.db",
            "path: ${ONLINE_DIR}/online_store.db",
        );
    let config = format!(
        "{config}batch_engine:\n{batch_engine}  env:\n    - {{name: ONLINE_DIR, value: '{}'}}\n",
        data.display()
    );
    std::fs::write(repo.join("feature_store.yaml"), config).expect("write config");
    let features = std::fs::read_to_string(repo.join("features.yaml"))
        .expect("features")
        .replace("path: data/", &format!("path: {}/", data.display()));
    std::fs::write(repo.join("features.yaml"), features).expect("write features");
    run_ok(&repo, &["apply"], &[]);
    (dir, repo)
}

fn run(repo: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let online_dir = repo.join("data").display().to_string();
    Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(args)
        .current_dir(repo)
        .env_remove("FEATURE_STORE_YAML_BASE64")
        .env_remove("FEAST_FS_YAML_FILE_PATH")
        .env_remove("LARDER_LOG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("LARDER_K8S_ALLOW_LOCAL")
        .env_remove("KUBECONFIG")
        .env("ONLINE_DIR", online_dir)
        .envs(env.iter().copied())
        .output()
        .expect("run larder")
}

#[track_caller]
fn run_ok(repo: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    succeeded(args, run(repo, args, env))
}

fn materializations(repo: &Path) -> serde_json::Value {
    let dump: serde_json::Value =
        serde_json::from_str(&run_ok(repo, &["registry-dump"], &[])).expect("json");
    dump["project"]["materializations"].clone()
}

fn nothing_recorded(repo: &Path) -> bool {
    let recorded = materializations(repo);
    recorded.is_null() || recorded.as_object().is_some_and(|o| o.is_empty())
}

/// The online rows an in-process run writes for the same window.
fn in_process_rows() -> Vec<super::OnlineRow> {
    let (_dir, repo) = demo_repo();
    ok(&repo, &["apply"]);
    ok(&repo, &["materialize", START, END]);
    online_rows(&repo.join("data/online_store.db"))
}

const SYNC_ENGINE: &str =
    "  type: k8s\n  synchronous: true\n  shards: 3\n  max_parallelism: 2\n  retry_limit: 0\n";

#[test]
fn a_k8s_run_writes_what_an_in_process_run_writes_and_records_the_window() {
    let cluster = Cluster::start(None);
    let (_dir, repo) = k8s_repo(SYNC_ENGINE);
    let kubeconfig = cluster.kubeconfig("good").display().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str())];

    // Local state cannot be reached from pods: refused before anything is created.
    let out = run(&repo, &["materialize", START, END], &env);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for expected in [
        "`batch_engine: k8s` runs in pods, which cannot reach this project's local state",
        "the registry is a local file",
        "the online store is `sqlite`, a local file",
        "feature view `driver_hourly_stats` reads the local file",
        "LARDER_K8S_ALLOW_LOCAL=1",
    ] {
        assert!(err.contains(expected), "{expected}: {err}");
    }
    assert!(cluster.fake.requests().is_empty());

    let env = [
        ("KUBECONFIG", kubeconfig.as_str()),
        ("LARDER_K8S_ALLOW_LOCAL", "1"),
    ];
    let out = run_ok(&repo, &["materialize", START, END], &env);
    assert!(
        out.contains("into the sqlite online store with Kubernetes Jobs."),
        "{out}"
    );
    assert!(
        out.contains(" source rows read, 100 entity keys written"),
        "{out}"
    );
    assert_eq!(
        online_rows(&repo.join("data/online_store.db")),
        in_process_rows(),
        "the shards together write exactly what one in-process run writes"
    );
    let recorded = materializations(&repo);
    for view in ["driver_hourly_stats", "customer_profile"] {
        assert_eq!(
            recorded[view],
            serde_json::json!([{"start": START, "end": END}]),
            "{recorded}"
        );
    }

    // One Job per view, three shards, at most two at once, each with the config as written.
    let jobs = cluster.fake.jobs();
    assert_eq!(jobs.len(), 2);
    let config = std::fs::read_to_string(repo.join("feature_store.yaml")).expect("config");
    assert!(config.contains("${ONLINE_DIR}"));
    for job in &jobs {
        let name = job["metadata"]["name"].as_str().expect("name");
        assert_eq!(job["spec"]["completions"], 3, "{job}");
        assert_eq!(job["spec"]["parallelism"], 2, "{job}");
        assert_eq!(job["spec"]["backoffLimit"], 0, "{job}");
        assert!(cluster.fake.max_running(name) <= 2);
        assert_eq!(job["metadata"]["labels"]["larder.dev/project"], "demo");
        let view = job["metadata"]["labels"]["larder.dev/view"]
            .as_str()
            .expect("view");
        let command = &job["spec"]["template"]["spec"]["containers"][0]["command"];
        assert_eq!(
            command,
            &serde_json::json!([
                "larder",
                "-c",
                "/etc/larder",
                "materialize",
                START,
                END,
                "--views",
                view,
                "--shard",
                "$(JOB_COMPLETION_INDEX)/3",
                "--no-progress"
            ])
        );
    }
    let config_maps = cluster.fake.config_maps();
    assert_eq!(config_maps.len(), 2);
    for config_map in &config_maps {
        assert_eq!(config_map["data"]["feature_store.yaml"], config.as_str());
        assert_eq!(config_map["metadata"]["ownerReferences"][0]["kind"], "Job");
    }
    let pods = cluster.fake.pods();
    assert_eq!(pods.len(), 6);
    for (pod, log) in &pods {
        assert_eq!(pod["status"]["phase"], "Succeeded", "{log}");
        assert!(log.contains("(shard "), "{log}");
        assert!(log.contains("The window is not recorded"), "{log}");
    }
}

#[test]
fn a_failing_shard_fails_the_run_with_its_log_and_records_nothing() {
    let cluster = Cluster::start(Some(1));
    let (_dir, repo) = k8s_repo(SYNC_ENGINE);
    let kubeconfig = cluster.kubeconfig("good").display().to_string();
    let env = [
        ("KUBECONFIG", kubeconfig.as_str()),
        ("LARDER_K8S_ALLOW_LOCAL", "1"),
    ];
    let out = run(
        &repo,
        &["materialize", START, END, "-v", "driver_hourly_stats"],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    for expected in [
        "error: feature view `driver_hourly_stats`: Kubernetes Job `larder-driver-hourly-stats-",
        "in namespace `default` failed: BackoffLimitExceeded",
        "(shard 1/3), last 40 log lines ---",
        "lots",
        "1 of 1 feature views failed; their windows were not recorded",
    ] {
        assert!(err.contains(expected), "{expected}: {err}");
    }
    assert!(nothing_recorded(&repo), "{}", materializations(&repo));
}

#[test]
fn an_asynchronous_run_submits_and_records_nothing() {
    let cluster = Cluster::start(None);
    let (_dir, repo) = k8s_repo("  type: k8s\n  shards: 2\n");
    let kubeconfig = cluster.kubeconfig("good").display().to_string();
    let env = [
        ("KUBECONFIG", kubeconfig.as_str()),
        ("LARDER_K8S_ALLOW_LOCAL", "1"),
    ];
    let out = run_ok(
        &repo,
        &["materialize", START, END, "-v", "driver_hourly_stats"],
        &env,
    );
    assert!(
        out.contains(
            "driver_hourly_stats: submitted as Kubernetes Job `larder-driver-hourly-stats-"
        ),
        "{out}"
    );
    assert!(
        out.contains("their windows are not recorded in the registry"),
        "{out}"
    );
    assert!(nothing_recorded(&repo), "{}", materializations(&repo));
    cluster.wait_for_jobs();
    // The pods wrote all the same; only the record is missing.
    assert_eq!(
        online_rows(&repo.join("data/online_store.db"))
            .iter()
            .filter(|r| r.0 == "demo_driver_hourly_stats")
            .count(),
        100
    );
}

#[test]
fn api_access_errors_are_clear() {
    let cluster = Cluster::start(None);
    let (_dir, repo) = k8s_repo(SYNC_ENGINE);
    // A run that fails with exit code 1 under `env`: its stderr.
    let fails = |env: &[(&str, &str)]| -> String {
        let mut env = env.to_vec();
        env.push(("LARDER_K8S_ALLOW_LOCAL", "1"));
        let out = run(&repo, &["materialize", START, END], &env);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let bad = cluster.kubeconfig("bad").display().to_string();
    let err = fails(&[("KUBECONFIG", bad.as_str())]);
    assert!(
        err.contains("refused the credentials (401 Unauthorized) for create `configmaps` in namespace `default`"),
        "{err}"
    );
    assert!(nothing_recorded(&repo), "{}", materializations(&repo));

    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let closed = cluster.kubeconfig.path().join("closed");
    std::fs::write(
        &closed,
        format!(
            "current-context: c\nclusters:\n- name: k\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\ncontexts:\n- name: c\n  context: {{cluster: k}}\n"
        ),
    )
    .expect("kubeconfig");
    let err = fails(&[("KUBECONFIG", closed.display().to_string().as_str())]);
    assert!(
        err.contains(&format!(
            "cannot reach the Kubernetes API at http://127.0.0.1:{port}"
        )),
        "{err}"
    );

    // No cluster configured at all.
    let home = tempfile::tempdir().expect("home");
    let err = fails(&[("HOME", home.path().display().to_string().as_str())]);
    assert!(err.contains("no Kubernetes cluster configured"), "{err}");
}

#[test]
fn shards_validate_and_partition_the_keys_exactly() {
    let (_dir, repo) = demo_repo();
    ok(&repo, &["apply"]);
    for (shard, expected) in [
        (
            "3/3",
            "shard `3/3`: the index must be below the count (0 to 2)",
        ),
        ("0/0", "shard `0/0`: the shard count must be at least 1"),
        ("1", "`1` is not a shard; write INDEX/COUNT"),
        ("$(JOB_COMPLETION_INDEX)/3", "is not a shard"),
    ] {
        let out = larder(&repo, &["materialize", START, END, "--shard", shard]);
        assert_eq!(out.status.code(), Some(64), "{shard}");
        assert!(
            text(&out.stderr).contains(expected),
            "{shard}: {}",
            text(&out.stderr)
        );
    }
    let out = larder(
        &repo,
        &["materialize-incremental", END_TIME, "--shard", "0/2"],
    );
    assert_eq!(out.status.code(), Some(64), "only `materialize` has shards");

    let db = repo.join("data/online_store.db");
    let mut sizes = Vec::new();
    for shard in ["0/3", "1/3", "2/3"] {
        let out = ok(&repo, &["materialize", START, END, "--shard", shard]);
        assert!(
            out.contains(&format!("(shard {shard}: its entity keys only)")),
            "{out}"
        );
        sizes.push(online_rows(&db).len());
    }
    assert!(
        sizes[0] > 0 && sizes[0] < sizes[1] && sizes[1] < sizes[2],
        "each shard adds its own keys: {sizes:?}"
    );
    assert_eq!(
        online_rows(&db),
        in_process_rows(),
        "the union is the whole"
    );
    assert!(nothing_recorded(&repo), "shards record nothing");
}
