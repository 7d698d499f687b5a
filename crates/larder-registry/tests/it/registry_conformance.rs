//! The registry conformance suite: apply, plan, delete, isolation and concurrency semantics,
//! run against every registry backend.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use larder_registry::store::{RegistryStore, open_store};
use larder_registry::{Clock, Interval, Registry, RegistryError};
use larder_spec::{Definitions, LoadOptions, ObjectAction, ObjectKind, parse_definitions};

use crate::sql_fixtures;

type Open<'a> = &'a (dyn Fn() -> Arc<dyn RegistryStore> + Send + Sync);

macro_rules! registry_conformance_suite {
    ($backend:ident, $setup:expr) => {
        mod $backend {
            use super::*;
            registry_conformance_suite!(@cases $setup;
                empty_registry_has_no_projects,
                apply_round_trips_every_object,
                second_apply_changes_nothing,
                apply_deletes_removed_objects_and_their_history,
                projects_are_isolated,
                timestamps_track_creation_and_change,
                concurrent_applies_lose_no_update,
                concurrent_materialization_records_lose_no_interval,
                cache_serves_until_ttl_expires,
            );
        }
    };
    (@cases $setup:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((_guard, open)) = $setup else {
                    return;
                };
                super::$case(&open).await;
            }
        )*
    };
}

registry_conformance_suite!(local_file, Some(local_fixture()));
registry_conformance_suite!(memory, Some(memory_fixture()));
registry_conformance_suite!(sqlite, Some(sql_fixtures::sqlite_fixture()));
registry_conformance_suite!(
    sqlite_with_replica,
    Some(sql_fixtures::sqlite_replica_fixture())
);
registry_conformance_suite!(postgres, sql_fixtures::postgres_fixture());
registry_conformance_suite!(
    postgres_with_replica,
    sql_fixtures::postgres_replica_fixture()
);

fn local_fixture() -> (
    tempfile::TempDir,
    impl Fn() -> Arc<dyn RegistryStore> + Send + Sync,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().to_path_buf();
    let open = move || open_store("data/registry.db", &base).expect("open local store");
    (dir, open)
}

fn memory_fixture() -> ((), impl Fn() -> Arc<dyn RegistryStore> + Send + Sync) {
    let url = format!("memory://{}/registry.json", uuid::Uuid::new_v4().simple());
    let open = move || open_store(&url, Path::new("/unused")).expect("open memory store");
    ((), open)
}

const DEFS: &str = r#"
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: stats, type: file, path: data/stats.parquet, timestamp_field: ts}
feature_views:
  - name: hourly
    entities: [driver]
    source: stats
    ttl: 1d
    schema: [{name: conv_rate, dtype: Float32}, {name: trips, dtype: Int64}]
  - name: daily
    entities: [driver]
    source: stats
    schema: [{name: rating, dtype: Float64}]
feature_services:
  - name: model_v1
    features: [{hourly: "*"}, {daily: [rating]}]
"#;

fn defs(project: &str, text: &str) -> Definitions {
    let options = LoadOptions {
        repo_dir: PathBuf::from("/unused"),
        config_file: None,
        project: project.to_string(),
        project_description: None,
        validate_sources: false,
    };
    parse_definitions(&[(PathBuf::from("f.yaml"), text.to_string())], &options)
        .expect("valid definitions")
}

fn infra(d: &Definitions) -> BTreeSet<larder_spec::InfraObject> {
    d.infra_objects(Some("sqlite table"))
}

fn registry(open: Open<'_>) -> Registry {
    Registry::new(open(), Duration::from_secs(600))
}

fn t(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, hour, 0, 0)
        .single()
        .expect("valid time")
}

/// A clock the test moves by hand.
fn manual_clock(start: DateTime<Utc>) -> (Arc<Mutex<DateTime<Utc>>>, Clock) {
    let now = Arc::new(Mutex::new(start));
    let handle = now.clone();
    let clock: Clock = Arc::new(move || *handle.lock().expect("clock lock"));
    (now, clock)
}

async fn empty_registry_has_no_projects(open: Open<'_>) {
    let snapshot = registry(open).snapshot().await.expect("snapshot");
    assert!(snapshot.state.projects.is_empty());
    assert_eq!(snapshot.state.version, 0);
    assert!(snapshot.generation.is_none());
}

async fn apply_round_trips_every_object(open: Open<'_>) {
    let desired = defs("p", DEFS);
    let outcome = registry(open)
        .apply(&desired, &infra(&desired))
        .await
        .expect("apply");
    assert_eq!(outcome.version, 1);
    assert_eq!(outcome.plan.counts(), (1 + 1 + 1 + 2 + 1 + 2, 0, 0));
    // A separate reader (another process) sees exactly what was applied.
    let snapshot = registry(open).snapshot().await.expect("snapshot");
    let project = snapshot.project("p").expect("project p");
    assert_eq!(project.definitions(), desired);
    assert_eq!(project.infra, infra(&desired));
    assert_eq!(snapshot.state.version, 1);
}

async fn second_apply_changes_nothing(open: Open<'_>) {
    let desired = defs("p", DEFS);
    registry(open)
        .apply(&desired, &infra(&desired))
        .await
        .expect("first apply");
    let second = registry(open)
        .apply(&desired, &infra(&desired))
        .await
        .expect("second apply");
    assert!(second.plan.is_empty(), "{}", second.plan);
    assert_eq!(second.version, 1, "an empty apply must not write");
    let plan = registry(open)
        .plan(&desired, &infra(&desired))
        .await
        .expect("plan");
    assert!(plan.is_empty());
}

async fn apply_deletes_removed_objects_and_their_history(open: Open<'_>) {
    let r = registry(open);
    let desired = defs("p", DEFS);
    r.apply(&desired, &infra(&desired)).await.expect("apply");
    r.record_materialization("p", "daily", t(0), t(1))
        .await
        .expect("record");
    r.record_materialization("p", "hourly", t(0), t(1))
        .await
        .expect("record");
    let smaller = DEFS
        .replace("  - name: daily\n    entities: [driver]\n    source: stats\n    schema: [{name: rating, dtype: Float64}]\n", "")
        .replace(", {daily: [rating]}", "");
    let smaller = defs("p", &smaller);
    let outcome = r
        .apply(&smaller, &infra(&smaller))
        .await
        .expect("apply smaller");
    let deleted: Vec<(ObjectKind, &str)> = outcome
        .plan
        .objects
        .iter()
        .filter(|c| c.action == ObjectAction::Delete)
        .map(|c| (c.kind, c.name.as_str()))
        .collect();
    assert_eq!(deleted, [(ObjectKind::FeatureView, "daily")]);
    assert_eq!(
        outcome.plan.infra.len(),
        1,
        "the dropped view's table goes too"
    );
    let snapshot = registry(open).snapshot().await.expect("snapshot");
    let project = snapshot.project("p").expect("project");
    assert!(!project.feature_views.contains_key("daily"));
    assert!(!project.materializations.contains_key("daily"));
    assert_eq!(
        project.materializations["hourly"],
        [Interval {
            start: t(0),
            end: t(1)
        }]
    );
    assert_eq!(project.definitions(), smaller);
}

async fn projects_are_isolated(open: Open<'_>) {
    let r = registry(open);
    let a = defs("a", DEFS);
    let b = defs("b", DEFS);
    r.apply(&a, &infra(&a)).await.expect("apply a");
    r.apply(&b, &infra(&b)).await.expect("apply b");
    // Emptying project a leaves b untouched.
    let empty_a = defs("a", "");
    let outcome = r.apply(&empty_a, &BTreeSet::new()).await.expect("empty a");
    assert_eq!(outcome.plan.counts().2, 5 + 2, "{}", outcome.plan);
    let snapshot = registry(open).snapshot().await.expect("snapshot");
    assert_eq!(snapshot.project("b").expect("b").definitions(), b);
    assert!(snapshot.project("a").expect("a").feature_views.is_empty());
    let removed = r.delete_project("a").await.expect("delete a");
    assert!(removed.is_some());
    assert!(r.delete_project("a").await.expect("delete again").is_none());
    let snapshot = registry(open).snapshot().await.expect("snapshot");
    assert!(snapshot.project("a").is_none());
    assert!(snapshot.project("b").is_some());
    match r.record_materialization("a", "hourly", t(0), t(1)).await {
        Err(RegistryError::ProjectNotFound { project }) => assert_eq!(project, "a"),
        other => panic!("expected project not found, got {other:?}"),
    }
    match r.record_materialization("b", "nope", t(0), t(1)).await {
        Err(e @ RegistryError::ObjectNotFound { .. }) => {
            assert_eq!(
                e.to_string(),
                "feature view `nope` not found in project `b`"
            )
        }
        other => panic!("expected view not found, got {other:?}"),
    }
}

async fn timestamps_track_creation_and_change(open: Open<'_>) {
    let (now, clock) = manual_clock(t(0));
    let r = Registry::with_clock(open(), Duration::from_secs(600), clock);
    let desired = defs("p", DEFS);
    r.apply(&desired, &infra(&desired)).await.expect("apply");
    *now.lock().expect("clock") = t(5);
    let changed = defs("p", &DEFS.replace("ttl: 1d", "ttl: 2d"));
    let outcome = r
        .apply(&changed, &infra(&changed))
        .await
        .expect("apply change");
    assert_eq!(outcome.plan.counts(), (0, 1, 0));
    let snapshot = r.refresh().await.expect("refresh");
    let project = snapshot.project("p").expect("project");
    let hourly = &project.feature_views["hourly"];
    assert_eq!((hourly.created, hourly.updated), (t(0), t(5)));
    let daily = &project.feature_views["daily"];
    assert_eq!((daily.created, daily.updated), (t(0), t(0)));
    assert_eq!(snapshot.state.last_updated, Some(t(5)));
}

async fn concurrent_applies_lose_no_update(open: Open<'_>) {
    // Eight writers, each through its own store instance (as separate processes), apply
    // eight different projects at once: every project must end up in the registry.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = open();
        tasks.push(tokio::spawn(async move {
            let r = Registry::new(store, Duration::from_secs(600));
            let d = defs(&format!("p{i}"), DEFS);
            r.apply(&d, &infra(&d)).await.map(|o| o.attempts)
        }));
    }
    let mut attempts = 0;
    for task in tasks {
        let result = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("apply finished in time")
            .expect("task");
        attempts += result.expect("apply succeeded");
    }
    let snapshot = registry(open).snapshot().await.expect("snapshot");
    assert_eq!(snapshot.state.projects.len(), 8);
    assert_eq!(snapshot.state.version, 8, "one commit per apply");
    assert!(attempts >= 8);
}

async fn concurrent_materialization_records_lose_no_interval(open: Open<'_>) {
    let desired = defs("p", DEFS);
    registry(open)
        .apply(&desired, &infra(&desired))
        .await
        .expect("apply");
    let mut tasks = Vec::new();
    for hour in 0..6u32 {
        let store = open();
        tasks.push(tokio::spawn(async move {
            let r = Registry::new(store, Duration::from_secs(600));
            // Disjoint windows, so merging cannot hide a lost one.
            r.record_materialization("p", "hourly", t(hour * 3), t(hour * 3 + 1))
                .await
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("finished in time")
            .expect("task")
            .expect("record");
    }
    let snapshot = registry(open).snapshot().await.expect("snapshot");
    let intervals = &snapshot.project("p").expect("p").materializations["hourly"];
    let expected: Vec<Interval> = (0..6u32)
        .map(|h| Interval {
            start: t(h * 3),
            end: t(h * 3 + 1),
        })
        .collect();
    assert_eq!(intervals, &expected);
}

async fn cache_serves_until_ttl_expires(open: Open<'_>) {
    let (now, clock) = manual_clock(t(0));
    let reader = Registry::with_clock(open(), Duration::from_secs(60), clock);
    assert!(
        reader
            .snapshot()
            .await
            .expect("snapshot")
            .state
            .projects
            .is_empty()
    );
    let desired = defs("p", DEFS);
    registry(open)
        .apply(&desired, &infra(&desired))
        .await
        .expect("apply elsewhere");
    *now.lock().expect("clock") = t(0) + chrono::Duration::seconds(59);
    assert!(
        reader
            .snapshot()
            .await
            .expect("cached")
            .state
            .projects
            .is_empty(),
        "served from cache within the ttl"
    );
    *now.lock().expect("clock") = t(0) + chrono::Duration::seconds(61);
    assert!(
        reader
            .snapshot()
            .await
            .expect("reloaded")
            .project("p")
            .is_some()
    );
}

#[tokio::test]
async fn a_non_larder_file_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    // What a Feast registry.db looks like to us: protobuf bytes.
    std::fs::write(
        dir.path().join("registry.db"),
        [0x0a, 0x03, 0x66, 0x6f, 0x6f],
    )
    .expect("write");
    let store = open_store("registry.db", dir.path()).expect("open");
    let err = Registry::new(store, Duration::ZERO)
        .snapshot()
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotLarder { .. }), "{err}");
    assert!(
        err.to_string().contains("is not a Larder registry"),
        "{err}"
    );
}

#[tokio::test]
async fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("registry.db"),
        br#"{"format": 99, "version": 3, "last_updated": null, "projects": {}}"#,
    )
    .expect("write");
    let store = open_store("registry.db", dir.path()).expect("open");
    let err = Registry::new(store, Duration::ZERO)
        .snapshot()
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::NewerFormat { found: 99, .. }),
        "{err}"
    );
}
