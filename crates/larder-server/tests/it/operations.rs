//! Health, readiness, metrics, materialization over HTTP, registry refresh under load, and
//! graceful drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use larder::ApplyOptions;
use serde_json::json;

use crate::harness::{FEATURES_YAML, Repo, Running, column, error_body, options, t0};

#[tokio::test]
async fn health_ready_and_metrics() {
    let repo = Repo::new().await;
    let server = Running::start(repo.open(), options()).await;
    let (status, body) = server.get("/health").await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, body) = server.get("/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"status":"ready"}"#);

    let request =
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}});
    assert_eq!(server.post("/get-online-features", &request).await.0, 200);
    let bad = json!({"features": ["nope:x"], "entities": {"driver_id": [1001]}});
    assert_eq!(server.post("/get-online-features", &bad).await.0, 404);

    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for wanted in [
        r#"larder_http_requests_total{endpoint="/get-online-features",status="200"} 1"#,
        r#"larder_http_requests_total{endpoint="/get-online-features",status="404"} 1"#,
        r#"larder_http_request_duration_seconds_bucket{endpoint="/get-online-features",status="200",le="+Inf"} 1"#,
        "larder_registry_age_seconds ",
        "larder_registry_version ",
        "larder_registry_refresh_failures_total 0",
        r#"larder_feature_view_materialized_until_seconds{feature_view="driver_hourly_stats"} "#,
    ] {
        assert!(text.contains(wanted), "no `{wanted}` in:\n{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn materialize_sync_and_async_with_conflicts() {
    let repo = Repo::new().await;
    let controlled = repo.controlled_store();
    let store = repo.open().with_online_store(controlled.clone());
    let server = Running::start(store, options()).await;
    let window = json!({
        "start_ts": (t0() - chrono::Duration::days(2)).naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string(),
        "end_ts": t0().to_rfc3339(),
        "feature_views": ["driver_hourly_stats"],
    });

    let (status, body) = server.post("/materialize", &window).await;
    assert_eq!((status, body.as_str()), (200, "null"));
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"larder_materialized_rows_total{feature_view="driver_hourly_stats"} 5"#),
        "{metrics}"
    );

    // Errors: unknown view, reversed window, a missing time, a bad time.
    let (status, body) = server
        .post(
            "/materialize",
            &json!({"start_ts": "2025-01-01", "end_ts": "2025-01-02", "feature_views": ["nope"]}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        error_body(status, &body)["class"],
        "FeatureViewNotFoundException"
    );
    let (status, body) = server
        .post(
            "/materialize",
            &json!({"start_ts": "2025-01-02", "end_ts": "2025-01-01"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("before")
    );
    let (status, body) = server.post("/materialize-incremental", &json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("`end_ts`")
    );
    let (status, body) = server
        .post("/materialize-incremental", &json!({"end_ts": "tomorrow"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("`tomorrow`")
    );

    // Async: 202, and a second run of the same view while the first writes is 409.
    controlled.write_delay_ms.store(1_500, Ordering::SeqCst);
    let incremental = json!({"end_ts": (t0() + chrono::Duration::hours(1)).to_rfc3339(), "feature_views": ["driver_hourly_stats"]});
    let (status, body) = server
        .post("/materialize-incremental?async=true", &incremental)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"status": "accepted", "feature_views": ["driver_hourly_stats"]})
    );
    let (status, body) = server
        .post("/materialize-incremental?async=true", &incremental)
        .await;
    assert_eq!(status, 409, "{body}");
    let conflict = error_body(status, &body);
    assert!(
        conflict["error"]
            .as_str()
            .unwrap()
            .contains("MATERIALIZING"),
        "{body}"
    );
    assert_eq!(conflict["feature_views"], json!(["driver_hourly_stats"]));
    let (status, body) = server.post("/materialize", &window).await;
    assert_eq!(status, 409, "{body}");

    // Once the background run ends, the view can be materialized again.
    controlled.write_delay_ms.store(0, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = server.post("/materialize", &window).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 409, "{body}");
        assert!(Instant::now() < deadline, "the background run did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = server.post("/materialize?async=maybe", &window).await;
    assert_eq!(status, 422, "{body}");
    server.stop().await;
}

/// The background refresh reads a SQL registry (SQLite, through a "replica" URL naming the
/// same file) and picks up an apply made by another store.
#[tokio::test]
async fn a_new_apply_to_a_sql_registry_is_served() {
    let repo = Repo::with_registry(
        "registry:\n  registry_type: sql\n  path: sqlite:///data/registry.sqlite\n  read_path: sqlite:///{repo}/data/registry.sqlite\n",
    )
    .await;
    assert!(repo.path().join("data/registry.sqlite").is_file());
    let server = Running::start(repo.open(), options()).await;
    let new_request = json!({"feature_service": "driver_rates", "entities": {"driver_id": [1001]}});
    let (status, body) = server.post("/get-online-features", &new_request).await;
    assert_eq!(status, 404, "{body}");
    let features = format!(
        "{FEATURES_YAML}  - name: driver_rates\n    features:\n      - driver_hourly_stats: [conv_rate, acc_rate]\n"
    );
    std::fs::write(repo.path().join("features.yaml"), features).unwrap();
    repo.open().apply(&ApplyOptions::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.post("/get-online-features", &new_request).await;
        if status == 200 {
            let response: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(column(&response, "acc_rate")["values"], json!([0.5]));
            break;
        }
        assert_eq!(status, 404, "{body}");
        assert!(
            Instant::now() < deadline,
            "the new service was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_new_apply_is_served_while_requests_are_in_flight() {
    let repo = Repo::new().await;
    let server = Arc::new(Running::start(repo.open(), options()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));

    // Readers of the old selection, for the whole test (bounded by `stop` and a count).
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (server, stop, served) = (server.clone(), stop.clone(), served.clone());
        readers.push(tokio::spawn(async move {
            let request = json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001, 1002]}});
            let mut failures = Vec::new();
            for _ in 0..5_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (status, body) = server.post("/get-online-features", &request).await;
                if status != 200 {
                    failures.push(format!("{status} {body}"));
                }
                served.fetch_add(1, Ordering::SeqCst);
            }
            failures
        }));
    }

    let new_request = json!({"feature_service": "driver_rates", "entities": {"driver_id": [1001]}});
    let (status, body) = server.post("/get-online-features", &new_request).await;
    assert_eq!(status, 404, "{body}");
    let version_before = server.state.snapshot.load().version;

    // Apply a new feature service from another process's point of view.
    let features = format!(
        "{FEATURES_YAML}  - name: driver_rates\n    features:\n      - driver_hourly_stats: [conv_rate, acc_rate]\n"
    );
    std::fs::write(repo.path().join("features.yaml"), features).unwrap();
    repo.open().apply(&ApplyOptions::default()).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = server.post("/get-online-features", &new_request).await;
        if status == 200 {
            break body;
        }
        assert_eq!(status, 404, "{body}");
        assert!(
            Instant::now() < deadline,
            "the new service was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let response: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(column(&response, "acc_rate")["values"], json!([0.5]));
    assert!(server.state.snapshot.load().version > version_before);

    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        let failures = reader.await.unwrap();
        assert!(
            failures.is_empty(),
            "requests failed during the refresh: {failures:?}"
        );
    }
    assert!(served.load(Ordering::SeqCst) > 0);

    // A broken registry keeps the last good snapshot, and counts the failure.
    let registry = repo.path().join("data/registry.db");
    let good = std::fs::read(&registry).unwrap();
    std::fs::write(&registry, b"not a registry").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = server.get("/metrics").await;
        if !metrics.contains("larder_registry_refresh_failures_total 0") {
            assert!(
                metrics.contains("larder_registry_refresh_failures_total"),
                "{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no refresh failure counted within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = server.post("/get-online-features", &new_request).await;
    assert_eq!(status, 200, "{body}");
    std::fs::write(&registry, good).unwrap();

    let server =
        Arc::try_unwrap(server).unwrap_or_else(|_| panic!("readers still hold the server"));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_fails_readiness_refuses_new_connections_and_drains() {
    let repo = Repo::new().await;
    let controlled = repo.controlled_store();
    let store = repo.open().with_online_store(controlled.clone());
    let mut opts = options();
    opts.shutdown_delay = Duration::from_millis(600);
    let server = Running::start(store, opts).await;

    controlled.read_delay_ms.store(2_000, Ordering::SeqCst);
    let slow = {
        let client = server.client.clone();
        let url = format!("{}/get-online-features", server.url);
        tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // During the delay: still serving, but not ready.
    let fresh = reqwest::Client::new();
    let ready = fresh
        .get(format!("{}/ready", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert_eq!(ready.text().await.unwrap(), r#"{"status":"draining"}"#);

    // After the delay: the listener is closed.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let refused = reqwest::Client::new()
        .get(format!("{}/health", server.url))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    let err = refused.expect_err("a new connection after the delay must be refused");
    assert!(err.is_connect(), "{err:?}");

    // The slow request started before shutdown completes.
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the in-flight request finishes")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    tokio::time::timeout(Duration::from_secs(10), server.handle)
        .await
        .expect("the server stops after draining")
        .unwrap()
        .unwrap();
}
