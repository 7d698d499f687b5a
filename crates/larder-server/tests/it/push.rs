//! `POST /push` and `POST /write-to-online-store`: newest-wins online writes read back over
//! HTTP, offline appends read back by `get_historical_features`, and the error cases.

use std::sync::Arc;

use arrow::array::{AsArray, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Float32Type, Schema, TimeUnit};
use futures::TryStreamExt;
use larder::{EntityInput, FeatureSelection, HistoricalFeaturesRequest};
use serde_json::json;

use crate::harness::{Repo, Running, column, conv_rate, error_body, options, t0};

async fn read_conv(server: &Running, driver: i64) -> serde_json::Value {
    let (status, body) = server
        .post(
            "/get-online-features",
            &json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [driver]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let response: serde_json::Value = serde_json::from_str(&body).unwrap();
    column(&response, "conv_rate").clone()
}

fn push_body(driver: i64, when: &str, conv: f64, to: &str) -> serde_json::Value {
    json!({
        "push_source_name": "driver_stats_push",
        "df": {
            "driver_id": [driver],
            "event_timestamp": [when],
            "created": [when],
            "conv_rate": [conv],
            "acc_rate": [0.25],
            "avg_daily_trips": [7],
        },
        "to": to,
    })
}

#[tokio::test]
async fn push_online_then_read_is_newest_wins() {
    let repo = Repo::new().await;
    let server = Running::start(repo.open(), options()).await;

    // Newer than the materialized row: it lands (Feast's space-separated form with offset).
    let newer = (t0() + chrono::Duration::hours(1))
        .format("%Y-%m-%d %H:%M:%S+00:00")
        .to_string();
    let (status, body) = server
        .post("/push", &push_body(1001, &newer, 0.75, "online"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "");
    let conv = read_conv(&server, 1001).await;
    assert_eq!(conv["values"], json!([0.75]));
    assert_eq!(
        conv["event_timestamps"],
        json!([(t0() + chrono::Duration::hours(1))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()])
    );

    // Older than what is stored: skipped.
    let older = (t0() - chrono::Duration::hours(5)).to_rfc3339();
    let (status, body) = server
        .post("/push", &push_body(1001, &older, 0.125, "online"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(read_conv(&server, 1001).await["values"], json!([0.75]));

    // A driver never materialized appears; `to` defaults to online.
    let mut body = push_body(4242, &newer, 0.5, "online");
    body.as_object_mut().unwrap().remove("to");
    let (status, text) = server.post("/push", &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        read_conv(&server, 4242).await["statuses"],
        json!(["PRESENT"])
    );

    // Pushed rows are counted per source.
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics
            .contains(r#"larder_push_rows_total{push_source="driver_stats_push",to="online"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "larder_feature_view_last_push_seconds{feature_view=\"driver_hourly_stats\"}"
        ),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn push_errors_name_the_source_or_column_and_write_nothing() {
    let repo = Repo::new().await;
    let server = Running::start(repo.open(), options()).await;
    let when = (t0() + chrono::Duration::hours(2)).to_rfc3339();

    let mut unknown = push_body(1001, &when, 0.9, "online");
    unknown["push_source_name"] = json!("no_such_push");
    let (status, body) = server.post("/push", &unknown).await;
    assert_eq!(status, 422, "{body}");
    let error = error_body(status, &body);
    assert_eq!(error["class"], "PushSourceNotFoundException");
    assert!(
        error["error"].as_str().unwrap().contains("`no_such_push`"),
        "{body}"
    );

    let mut not_push = push_body(1001, &when, 0.9, "online");
    not_push["push_source_name"] = json!("driver_stats_source");
    let (status, body) = server.post("/push", &not_push).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("not a push source")
    );

    let (status, body) = server
        .post("/push", &push_body(1001, &when, 0.9, "sideways"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("`sideways`")
    );

    let mut missing = push_body(1001, &when, 0.9, "online");
    missing["df"]
        .as_object_mut()
        .unwrap()
        .remove("avg_daily_trips");
    let (status, body) = server.post("/push", &missing).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("`avg_daily_trips`")
    );

    let mut bad_value = push_body(1001, &when, 0.9, "online");
    bad_value["df"]["avg_daily_trips"] = json!(["many"]);
    let (status, body) = server.post("/push", &bad_value).await;
    assert_eq!(status, 422, "{body}");
    let message = error_body(status, &body)["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("`avg_daily_trips`") && message.contains("many"),
        "{message}"
    );

    let mut bad_time = push_body(1001, &when, 0.9, "online");
    bad_time["df"]["event_timestamp"] = json!(["soon"]);
    let (status, body) = server.post("/push", &bad_time).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("`soon`")
    );

    // Offline needs exactly the source's columns.
    let mut extra = push_body(1001, &when, 0.9, "online_and_offline");
    extra["df"]["surprise"] = json!([1]);
    let (status, body) = server.post("/push", &extra).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("`surprise`")
    );

    // No rows: accepted, nothing written (no empty file offline).
    let mut empty = push_body(1001, &when, 0.9, "online_and_offline");
    for column in empty["df"].as_object_mut().unwrap().values_mut() {
        *column = json!([]);
    }
    let (status, body) = server.post("/push", &empty).await;
    assert_eq!(status, 200, "{body}");

    // None of these wrote anything: 1001 still has its materialized value.
    let conv = read_conv(&server, 1001).await;
    assert_eq!(conv["values"][0].as_f64().unwrap() as f32, conv_rate(1001));
    assert!(
        !repo
            .path()
            .join("data/driver_stats.parquet.pushed")
            .exists()
    );
    server.stop().await;
}

#[tokio::test]
async fn push_offline_appends_a_file_that_training_data_sees() {
    let repo = Repo::new().await;
    let server = Running::start(repo.open(), options()).await;
    let when = t0() + chrono::Duration::hours(3);

    let (status, body) = server
        .post(
            "/push",
            &push_body(1002, &when.to_rfc3339(), 0.625, "offline"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Offline only: the online value is unchanged.
    let conv = read_conv(&server, 1002).await;
    assert_eq!(conv["values"][0].as_f64().unwrap() as f32, conv_rate(1002));
    let pushed: Vec<_> = std::fs::read_dir(repo.path().join("data/driver_stats.parquet.pushed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert!(pushed[0].ends_with(".parquet"), "{pushed:?}");

    // Both at once: a second file, and the online value.
    let later = when + chrono::Duration::hours(1);
    let (status, body) = server
        .post(
            "/push",
            &push_body(1002, &later.to_rfc3339(), 0.875, "online_and_offline"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(read_conv(&server, 1002).await["values"], json!([0.875]));
    let files = std::fs::read_dir(repo.path().join("data/driver_stats.parquet.pushed")).unwrap();
    assert_eq!(files.count(), 2);
    server.stop().await;

    // Training data at `when + 30 min` sees the first pushed row, at `later` the second.
    let store = repo.open();
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let at = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
    let entities = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1002, 1002, 1002])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    at(t0()),
                    at(when + chrono::Duration::minutes(30)),
                    at(later),
                ])
                .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let stream = store
        .get_historical_features(HistoricalFeaturesRequest {
            entities: EntityInput::Batches(vec![entities]),
            features: FeatureSelection::Refs(vec![
                "driver_hourly_stats:conv_rate".parse().unwrap(),
            ]),
            full_feature_names: false,
        })
        .await
        .unwrap();
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let conv = batch.column_by_name("conv_rate").unwrap();
    let conv: &Float32Array = conv.as_primitive::<Float32Type>();
    assert_eq!(conv.len(), 3);
    assert_eq!(conv.value(0), conv_rate(1002));
    assert_eq!(conv.value(1), 0.625);
    assert_eq!(conv.value(2), 0.875);
    // The original file is untouched.
    assert!(repo.path().join("data/driver_stats.parquet").is_file());
}

#[tokio::test]
async fn write_to_online_store_takes_feast_remote_store_bodies() {
    let repo = Repo::new().await;
    let server = Running::start(repo.open(), options()).await;
    let when = (t0() + chrono::Duration::hours(1)).naive_utc();
    // What Feast's remote online store sends: naive ISO times under `event_timestamp`.
    let (status, body) = server
        .post(
            "/write-to-online-store",
            &json!({
                "feature_view_name": "driver_hourly_stats",
                "df": {
                    "driver_id": [1003, 1004],
                    "conv_rate": [0.5, null],
                    "acc_rate": [0.5, 0.5],
                    "avg_daily_trips": [1, 2],
                    "event_timestamp": [when.format("%Y-%m-%dT%H:%M:%S").to_string(), when.format("%Y-%m-%dT%H:%M:%S").to_string()],
                    "created": [null, null],
                },
                "allow_registry_cache": false,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "null");
    let (status, body) = server
        .post(
            "/get-online-features",
            &json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1003, 1004]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let response: serde_json::Value = serde_json::from_str(&body).unwrap();
    let conv = column(&response, "conv_rate");
    assert_eq!(conv["values"], json!([0.5, null]));
    assert_eq!(conv["statuses"], json!(["PRESENT", "NULL_VALUE"]));

    let (status, body) = server
        .post(
            "/write-to-online-store",
            &json!({"feature_view_name": "nope", "df": {"driver_id": [1]}}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        error_body(status, &body)["class"],
        "FeatureViewNotFoundException"
    );
    server.stop().await;
}

/// `conv_rate` of driver 1002 as training data sees it at each of `times`.
async fn historical_conv(repo: &Repo, times: &[chrono::DateTime<chrono::Utc>]) -> Vec<f32> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let entities = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1002; times.len()])),
            Arc::new(
                TimestampMicrosecondArray::from(
                    times
                        .iter()
                        .map(|t| t.timestamp_micros())
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let stream = repo
        .open()
        .get_historical_features(HistoricalFeaturesRequest {
            entities: EntityInput::Batches(vec![entities]),
            features: FeatureSelection::Refs(vec![
                "driver_hourly_stats:conv_rate".parse().unwrap(),
            ]),
            full_feature_names: false,
        })
        .await
        .unwrap();
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let conv = batch.column_by_name("conv_rate").unwrap();
    conv.as_primitive::<Float32Type>().values().to_vec()
}

#[tokio::test]
async fn push_offline_to_folder_and_glob_sources() {
    let repo = Repo::new().await;
    let stats = repo.path().join("data/stats");
    std::fs::create_dir_all(&stats).unwrap();
    std::fs::rename(
        repo.path().join("data/driver_stats.parquet"),
        stats.join("part-0.parquet"),
    )
    .unwrap();
    let use_path = |path: &str| {
        let features = crate::harness::FEATURES_YAML
            .replace("path: data/driver_stats.parquet", &format!("path: {path}"));
        std::fs::write(repo.path().join("features.yaml"), features).unwrap();
    };

    let first = t0() + chrono::Duration::hours(1);
    let second = t0() + chrono::Duration::hours(2);
    for (path, when, conv) in [
        ("data/stats", first, 0.25),
        ("data/stats/*.parquet", second, 0.375),
    ] {
        use_path(path);
        repo.open()
            .apply(&larder::ApplyOptions::default())
            .await
            .unwrap();
        let server = Running::start(repo.open(), options()).await;
        let (status, body) = server
            .post(
                "/push",
                &push_body(1002, &when.to_rfc3339(), conv, "offline"),
            )
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        server.stop().await;
    }
    let mut files: Vec<String> = std::fs::read_dir(&stats)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(files[0], "part-0.parquet");
    assert!(
        files[1..]
            .iter()
            .all(|f| f.starts_with("push-") && f.ends_with(".parquet"))
    );
    assert_eq!(
        historical_conv(&repo, &[t0(), first, second]).await,
        vec![conv_rate(1002), 0.25, 0.375]
    );

    // A glob the pushed files would not match: refused, naming it.
    use_path("data/stats/part-*.parquet");
    repo.open()
        .apply(&larder::ApplyOptions::default())
        .await
        .unwrap();
    let server = Running::start(repo.open(), options()).await;
    let (status, body) = server
        .post(
            "/push",
            &push_body(1002, &second.to_rfc3339(), 0.5, "offline"),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let message = error_body(status, &body)["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("data/stats/part-*.parquet"), "{message}");
    server.stop().await;
    assert_eq!(std::fs::read_dir(&stats).unwrap().count(), 3);
}

#[tokio::test]
async fn a_push_to_a_store_that_hangs_gets_503() {
    let repo = Repo::new().await;
    let controlled = repo.controlled_store();
    let store = repo.open().with_online_store(controlled.clone());
    let mut opts = options();
    opts.request_timeout = std::time::Duration::from_millis(300);
    let server = Running::start(store, opts).await;
    controlled
        .write_delay_ms
        .store(3_600_000, std::sync::atomic::Ordering::SeqCst);
    let when = (t0() + chrono::Duration::hours(1)).to_rfc3339();
    let started = std::time::Instant::now();
    let (status, body) = server
        .post("/push", &push_body(1001, &when, 0.5, "online"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        error_body(status, &body)["error"]
            .as_str()
            .unwrap()
            .contains("the push did not finish")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    server.stop().await;
}

/// The SDK entry point with an Arrow batch: columns are cast to the declared types online
/// (Int32 keys, text times) and to the stored types offline.
#[tokio::test]
async fn facade_push_takes_arrow_batches() {
    use arrow::array::{ArrayRef, Int32Array, StringArray};
    let repo = Repo::new().await;
    let store = repo.open();
    let defs = store.applied_definitions().await.unwrap();
    let when = (t0() + chrono::Duration::hours(1)).to_rfc3339();
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("driver_id", Arc::new(Int32Array::from(vec![1004]))),
        (
            "event_timestamp",
            Arc::new(StringArray::from(vec![when.as_str()])),
        ),
        ("created", Arc::new(StringArray::from(vec![when.as_str()]))),
        ("conv_rate", Arc::new(Float32Array::from(vec![0.125]))),
        ("acc_rate", Arc::new(Float32Array::from(vec![0.5]))),
        ("avg_daily_trips", Arc::new(Int64Array::from(vec![77]))),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let report = store
        .push(
            &defs,
            "driver_stats_push",
            &batch,
            larder::PushMode::OnlineAndOffline,
        )
        .await
        .unwrap();
    assert_eq!(report.online, vec![("driver_hourly_stats".to_string(), 1)]);
    let (rows, file) = report.offline.expect("an offline append");
    assert_eq!(rows, 1);
    assert!(file.contains("driver_stats.parquet.pushed"), "{file}");

    let response = store
        .get_online_features(larder::OnlineFeaturesRequest {
            features: FeatureSelection::Refs(vec![
                "driver_hourly_stats:avg_daily_trips".parse().unwrap(),
            ]),
            entities: larder::EntityColumns::new(vec![("driver_id".into(), vec![json!(1004)])])
                .unwrap(),
            full_feature_names: false,
        })
        .await
        .unwrap();
    let mut body = String::new();
    response.write_http_json(&mut body);
    assert!(body.contains(r#""values":[77]"#), "{body}");

    // A value Arrow cannot cast is an error naming the column, not a silent null.
    let bad = RecordBatch::try_from_iter(vec![
        (
            "driver_id",
            Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(StringArray::from(vec![when.as_str()])),
        ),
        ("conv_rate", Arc::new(Float32Array::from(vec![0.125]))),
        ("acc_rate", Arc::new(Float32Array::from(vec![0.5]))),
        ("avg_daily_trips", Arc::new(Int64Array::from(vec![77]))),
    ])
    .unwrap();
    let err = store
        .push(&defs, "driver_stats_push", &bad, larder::PushMode::Online)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`driver_id`"), "{err}");
}

#[tokio::test]
async fn materialization_reads_offline_pushed_files() {
    let repo = Repo::new().await;
    let server = Running::start(repo.open(), options()).await;
    let when = t0() + chrono::Duration::hours(3);
    let (status, body) = server
        .post(
            "/push",
            &push_body(1005, &when.to_rfc3339(), 0.0625, "offline"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let conv = read_conv(&server, 1005).await;
    assert_eq!(conv["values"][0].as_f64().unwrap() as f32, conv_rate(1005));

    let (status, body) = server
        .post(
            "/materialize",
            &json!({"start_ts": t0().to_rfc3339(), "end_ts": when.to_rfc3339()}),
        )
        .await;
    assert_eq!((status, body.as_str()), (200, "null"));
    assert_eq!(read_conv(&server, 1005).await["values"], json!([0.0625]));
    server.stop().await;
}
