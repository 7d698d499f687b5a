//! `POST /get-online-features`: values, statuses and names as Feast answers them, and every
//! error case with its status and JSON body.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Repo, Running, column, conv_rate, error_body, options, t0, trips};

#[tokio::test]
async fn features_by_reference_and_by_service() {
    let repo = Repo::new().await;
    let server = Running::start(repo.open(), options()).await;

    let (status, body) = server
        .post(
            "/get-online-features",
            &json!({
                "features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
                "entities": {"driver_id": [1001, "1003", 9999]},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let response: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        response["metadata"]["feature_names"],
        json!(["driver_id", "conv_rate", "avg_daily_trips"])
    );
    // The join key is echoed as read (the string "1003" as the Int64 entity 1003).
    assert_eq!(
        column(&response, "driver_id")["values"],
        json!([1001, 1003, 9999])
    );
    let conv = column(&response, "conv_rate");
    assert_eq!(conv["values"][0].as_f64().unwrap() as f32, conv_rate(1001));
    assert_eq!(conv["values"][1].as_f64().unwrap() as f32, conv_rate(1003));
    assert_eq!(conv["values"][2], json!(null));
    assert_eq!(conv["statuses"], json!(["PRESENT", "PRESENT", "NOT_FOUND"]));
    let t0 = t0().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!(
        conv["event_timestamps"],
        json!([t0, t0, "1970-01-01T00:00:00Z"])
    );
    assert_eq!(
        column(&response, "avg_daily_trips")["values"],
        json!([trips(1001), trips(1003), null])
    );

    // A feature service, with full feature names; the service wins over a feature list.
    let (status, body) = server
        .post(
            "/get-online-features",
            &json!({
                "feature_service": "driver_activity",
                "features": ["no_such_view:x"],
                "entities": {"driver_id": [1002]},
                "full_feature_names": true,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let response: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        response["metadata"]["feature_names"],
        json!([
            "driver_id",
            "driver_hourly_stats__conv_rate",
            "driver_hourly_stats__avg_daily_trips"
        ])
    );
    assert_eq!(
        column(&response, "driver_hourly_stats__avg_daily_trips")["values"],
        json!([trips(1002)])
    );

    // Each selection was resolved once; repeating one reuses the snapshot's plan.
    assert_eq!(server.state.snapshot.load().cached_plans(), 2);
    let (status, _) = server
        .post(
            "/get-online-features",
            &json!({"feature_service": "driver_activity", "entities": {"driver_id": [1001]}, "full_feature_names": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.state.snapshot.load().cached_plans(), 2);
    // Names are looked up as read: one written with a JSON escape (`\u005f` is `_`) is the
    // same name, and finds the same plan.
    let (status, body) = server
        .post_raw(
            "/get-online-features",
            concat!(
                r#"{"features": ["driver_hourly_stats:conv\u005frate", "#,
                r#""driver_hourly_stats:avg_daily_trips"], "entities": {"driver_id": [1001]}}"#
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let response: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        response["metadata"]["feature_names"],
        json!(["driver_id", "conv_rate", "avg_daily_trips"])
    );
    assert_eq!(server.state.snapshot.load().cached_plans(), 2);
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_get_4xx_with_a_json_body_naming_the_problem() {
    let repo = Repo::new().await;
    let server = Running::start(repo.open(), options()).await;

    let cases: Vec<(&str, serde_json::Value, u16, &str, &str)> = vec![
        (
            "unknown view",
            json!({"features": ["nope:conv_rate"], "entities": {"driver_id": [1]}}),
            404,
            "FeatureViewNotFoundException",
            "`nope`",
        ),
        (
            "unknown feature",
            json!({"features": ["driver_hourly_stats:nope"], "entities": {"driver_id": [1]}}),
            404,
            "FeatureNameNotFoundException",
            "`nope`",
        ),
        (
            "unknown service",
            json!({"feature_service": "nope", "entities": {"driver_id": [1]}}),
            404,
            "FeatureServiceNotFoundException",
            "`nope`",
        ),
        (
            "missing join key",
            json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"customer_id": [1]}}),
            422,
            "ValueError",
            "`driver_id`",
        ),
        (
            "value of the wrong type",
            json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": ["abc"]}}),
            422,
            "ValueError",
            "value `\"abc\"` cannot be read as `Int64`",
        ),
        (
            "columns of different lengths",
            json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1, 2], "x": [1]}}),
            422,
            "RequestValidationError",
            "`x`",
        ),
        (
            "entities not an object",
            json!({"features": ["driver_hourly_stats:conv_rate"], "entities": [1001]}),
            422,
            "RequestValidationError",
            "entity columns",
        ),
        (
            "no entities",
            json!({"features": ["driver_hourly_stats:conv_rate"]}),
            422,
            "RequestValidationError",
            "`entities`",
        ),
        (
            "malformed reference",
            json!({"features": ["conv_rate"], "entities": {"driver_id": [1]}}),
            422,
            "RequestValidationError",
            "`conv_rate`",
        ),
        (
            "no features",
            json!({"features": [], "entities": {"driver_id": [1]}}),
            422,
            "RequestValidationError",
            "no features",
        ),
    ];
    for (case, request, want_status, want_class, want_text) in cases {
        let (status, body) = server.post("/get-online-features", &request).await;
        assert_eq!(status, want_status, "{case}: {body}");
        let error = error_body(status, &body);
        assert_eq!(error["class"], want_class, "{case}: {body}");
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(want_text), "{case}: {message}");
    }

    let (status, body) = server
        .post_raw("/get-online-features", "{\"features\": [")
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("EOF"),
        "{body}"
    );

    let (status, body) = server.post_raw("/get-online-features", "").await;
    assert_eq!(status, 422, "{body}");
    error_body(status, &body);

    // Larger than the 64 KiB limit of the test options.
    let big: Vec<i64> = (0..20_000).collect();
    let (status, body) = server
        .post(
            "/get-online-features",
            &json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": big}}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    error_body(status, &body);

    let (status, body) = server.get("/no-such-endpoint").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("/no-such-endpoint")
    );

    let (status, body) = server.get("/get-online-features").await;
    assert_eq!(status, 405, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("GET")
    );

    // The server is still healthy after all of that.
    assert_eq!(server.get("/health").await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_store_that_hangs_or_fails_gets_503_not_a_hang() {
    let repo = Repo::new().await;
    let controlled = repo.controlled_store();
    let store = repo.open().with_online_store(controlled.clone());
    let mut opts = options();
    opts.request_timeout = Duration::from_millis(300);
    let server = Running::start(store, opts).await;
    let request =
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}});

    controlled.read_delay_ms.store(3_600_000, Ordering::SeqCst);
    let started = Instant::now();
    let (status, body) = server.post("/get-online-features", &request).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("did not finish")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    controlled.read_delay_ms.store(0, Ordering::SeqCst);
    controlled.fail_reads.store(true, Ordering::SeqCst);
    let (status, body) = server.post("/get-online-features", &request).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("connection refused")
    );

    controlled.fail_reads.store(false, Ordering::SeqCst);
    let (status, body) = server.post("/get-online-features", &request).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}
