//! What only the Postgres offline store does: entity SQL in both `entity_select_mode`s,
//! offline pushes into tables, the Postgres → Arrow type mapping, and the errors of an
//! unreachable server or a wrong login. Runs when `LARDER_TEST_POSTGRES_URL` is set.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use larder_offline::{EntityInput, EntitySelectMode, OfflineError, PostgresOfflineStore};
use larder_spec::{DataSource, FeatureSelection, SourceKind};

use crate::backends::{Backend, connect, fixture_on, pg_config, postgres_url, store_for};
use crate::harness::*;

const DEFS: &str = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: stats, type: file, path: stats.parquet, timestamp_field: event_timestamp, created_timestamp_column: created}
feature_views:
  - {name: fv, entities: [driver], source: stats, ttl: 0, schema: [{name: value, dtype: Float64}]}
";

fn stats() -> RecordBatch {
    batch(vec![
        ("driver_id", ints(&[1, 2, 1, 2])),
        ("event_timestamp", ts_hours(&[0, 0, 5, 9])),
        ("created", ts_hours(&[0, 0, 5, 9])),
        (
            "value",
            floats(&[Some(1.0), Some(2.0), Some(3.0), Some(4.0)]),
        ),
    ])
}

async fn pg_fixture(url: &str) -> Fixture {
    fixture_on(
        &Backend::Postgres(url.to_string()),
        DEFS,
        &[("stats.parquet", stats())],
    )
    .await
}

fn pg_store(fx: &Fixture, mode: EntitySelectMode) -> PostgresOfflineStore {
    let pg = fx.pg.as_ref().expect("a postgres fixture");
    let mut config = pg_config(&pg.url, &pg.name, fx.dir.path());
    config.entity_select_mode = mode;
    PostgresOfflineStore::new(config).expect("store")
}

fn value_refs() -> FeatureSelection {
    FeatureSelection::Refs(vec!["fv:value".parse().expect("ref")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_sql_as_a_temp_table_or_embedded() {
    let Some(url) = postgres_url() else { return };
    let fx = pg_fixture(&url).await;
    // Entity rows from the source itself, shifted by an hour, in a given order with a
    // duplicate; an extra column and a numeric column (read back as text) ride along.
    let query = "SELECT driver_id, event_timestamp + interval '1 hour' AS event_timestamp, \
                 'x' || driver_id AS label, 1.5::numeric AS weight \
                 FROM stats UNION ALL SELECT 2, '2025-01-01T03:00:00Z', 'dup', 2.5 \
                 ORDER BY 2, 1";
    for mode in [EntitySelectMode::TempTable, EntitySelectMode::EmbedQuery] {
        let store = pg_store(&fx, mode);
        let out = run_with(
            &fx,
            &store,
            EntityInput::Sql(query.into()),
            value_refs(),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(
            names(&out),
            ["driver_id", "event_timestamp", "label", "weight", "value"],
            "{mode:?}"
        );
        assert_eq!(
            column_i64(&out, "driver_id"),
            [Some(1), Some(2), Some(2), Some(1), Some(2)],
            "{mode:?}"
        );
        assert_eq!(
            column_us(&out, "event_timestamp"),
            [1, 1, 3, 6, 10].map(|h| Some(hours(h))),
            "{mode:?}"
        );
        assert_eq!(
            column_f64(&out, "value"),
            [Some(1.0), Some(2.0), Some(2.0), Some(3.0), Some(4.0)],
            "{mode:?}"
        );
        let weight = out.column_by_name("weight").expect("weight");
        assert_eq!(weight.data_type(), &DataType::Utf8, "numeric read as text");
        assert_eq!(weight.as_string::<i32>().value(2), "2.5");

        let err = run_with(
            &fx,
            &store,
            EntityInput::Sql("SELECT nope FROM stats".into()),
            value_refs(),
            false,
        )
        .await
        .expect_err("a bad query");
        assert!(
            matches!(&err, OfflineError::EntitySql { message } if message.contains("nope")),
            "{mode:?}: {err}"
        );
        let err = run_with(
            &fx,
            &store,
            EntityInput::Sql("SELECT event_timestamp FROM stats".into()),
            value_refs(),
            false,
        )
        .await
        .expect_err("no key column");
        assert_eq!(
            err.to_string(),
            "the entity rows have no column `driver_id` (join key of feature view `fv`); their columns: event_timestamp"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_push_appends_to_the_table_and_refuses_a_query_source() {
    let Some(url) = postgres_url() else { return };
    let fx = pg_fixture(&url).await;
    let store = store_for(&fx);
    let source = fx.defs.data_sources.get("stats").expect("source").clone();
    let schema = store.source_schema(&source).await.expect("schema");
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    assert_eq!(
        schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone()))
            .collect::<Vec<_>>(),
        [
            ("driver_id", DataType::Int64),
            ("event_timestamp", utc.clone()),
            ("created", utc),
            ("value", DataType::Float64)
        ]
    );
    let pushed = RecordBatch::try_new(
        schema,
        vec![
            ints(&[1]),
            ts_hours(&[7]),
            ts_hours(&[7]),
            floats(&[Some(9.5)]),
        ],
    )
    .expect("batch");
    let report = store.append(&source, pushed).await.expect("append");
    assert_eq!(report.rows, 1);
    assert_eq!(report.location, "postgres table `stats`");
    let entities = batch(vec![
        ("driver_id", ints(&[1, 1])),
        ("event_timestamp", ts_hours(&[6, 8])),
    ]);
    let out = run_with(
        &fx,
        store.as_ref(),
        EntityInput::Batches(vec![entities]),
        value_refs(),
        false,
    )
    .await
    .expect("retrieval");
    assert_eq!(column_f64(&out, "value"), [Some(3.0), Some(9.5)]);

    let mut query_source = source.clone();
    query_source.kind = SourceKind::Postgres(larder_spec::PostgresSource {
        table: None,
        query: Some("SELECT * FROM stats".into()),
        timestamp_field: "event_timestamp".into(),
        created_timestamp_column: None,
        field_mapping: Default::default(),
    });
    let refused = |e: OfflineError| e.to_string();
    assert_eq!(
        refused(
            store
                .source_schema(&query_source)
                .await
                .expect_err("a query source")
        ),
        "cannot append rows to data source `stats`: it is defined by a `query`; only a postgres source with a `table` can be appended to"
    );
    let rows = batch(vec![("driver_id", ints(&[1]))]);
    assert!(matches!(
        store.append(&query_source, rows.clone()).await,
        Err(OfflineError::UnsupportedAppend { .. })
    ));
    let err = store
        .append(&source, rows)
        .await
        .expect_err("wrong columns");
    assert_eq!(
        err.to_string(),
        "cannot append rows to data source `stats`: the rows have columns [driver_id] but table `stats` has [driver_id, event_timestamp, created, value]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_types_read_as_declared_arrow_types() {
    let Some(url) = postgres_url() else { return };
    let yaml = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: typed, type: postgres, table: typed, timestamp_field: ts}
feature_views:
  - name: fv
    entities: [driver]
    source: typed
    schema:
      - {name: small, dtype: Int32}
      - {name: big, dtype: Int64}
      - {name: f4, dtype: Float32}
      - {name: num, dtype: Float64}
      - {name: flag, dtype: Bool}
      - {name: label, dtype: String}
      - {name: raw, dtype: Bytes}
      - {name: at, dtype: UnixTimestamp}
      - {name: day, dtype: UnixTimestamp}
      - {name: floats, dtype: Array(Float32)}
      - {name: words, dtype: Array(String)}
      - {name: counts, dtype: Array(Int64)}
";
    let mut fx = fixture_unchecked(yaml, &[]);
    let schema = format!("larder_offline_{}", uuid::Uuid::new_v4().simple());
    let client = connect(&url).await.expect("connect");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\";
             CREATE TABLE \"{schema}\".typed (driver_id int4, ts timestamp, small int2, big int8,
               f4 float4, num numeric, flag bool, label varchar(10), raw bytea, at timestamptz,
               day date, floats float4[], words text[], counts int8[]);
             INSERT INTO \"{schema}\".typed VALUES
               (1, '2025-01-01 02:00:00', 7, 9000000000, 1.5, 2.25, true, 'abc', '\\x0102',
                '2025-01-01T01:00:00+02:00', '2025-01-02', '{{1.5,NULL}}', '{{a,b}}', '{{}}'),
               (2, '2025-01-01 03:00:00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                NULL, NULL, NULL);"
        ))
        .await
        .expect("typed table");
    fx.pg = Some(crate::backends::PgSchema {
        url: url.clone(),
        name: schema,
    });
    let store = store_for(&fx);
    let out = pull(&fx, store.as_ref(), "fv", (hours(0), hours(5)), None)
        .await
        .expect("read")
        .batch;
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let types: Vec<(String, DataType)> = out
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let expected_types = [
        ("driver_id", DataType::Int64),
        ("__event_ts", utc.clone()),
        ("__created_ts", utc.clone()),
        ("small", DataType::Int32),
        ("big", DataType::Int64),
        ("f4", DataType::Float32),
        ("num", DataType::Float64),
        ("flag", DataType::Boolean),
        ("label", DataType::Utf8),
        ("raw", DataType::Binary),
        ("at", utc.clone()),
        ("day", utc),
        ("floats", DataType::new_list(DataType::Float32, true)),
        ("words", DataType::new_list(DataType::Utf8, true)),
        ("counts", DataType::new_list(DataType::Int64, true)),
    ];
    assert_eq!(
        types,
        expected_types
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect::<Vec<_>>()
    );
    // Row of driver 1 (rows come in key order from DISTINCT ON, but do not rely on it).
    let keys = column_i64(&out, "driver_id");
    let i = keys.iter().position(|k| *k == Some(1)).expect("driver 1");
    let j = keys.iter().position(|k| *k == Some(2)).expect("driver 2");
    let col = |name: &str| out.column_by_name(name).expect("column").clone();
    assert_eq!(
        column_us(&out, "__event_ts")[i],
        Some(hours(2)),
        "naive = UTC"
    );
    assert_eq!(col("small").as_primitive::<Int32Type>().value(i), 7);
    assert_eq!(
        col("big").as_primitive::<Int64Type>().value(i),
        9_000_000_000
    );
    assert_eq!(col("f4").as_primitive::<Float32Type>().value(i), 1.5);
    assert_eq!(col("num").as_primitive::<Float64Type>().value(i), 2.25);
    assert!(col("flag").as_boolean().value(i));
    assert_eq!(col("label").as_string::<i32>().value(i), "abc");
    assert_eq!(col("raw").as_binary::<i32>().value(i), [1u8, 2]);
    assert_eq!(
        col("at")
            .as_primitive::<TimestampMicrosecondType>()
            .value(i),
        hours(-1),
        "01:00+02:00 is 23:00Z the day before"
    );
    assert_eq!(
        col("day")
            .as_primitive::<TimestampMicrosecondType>()
            .value(i),
        hours(24),
        "a date is midnight UTC"
    );
    let floats = col("floats");
    let floats = floats.as_list::<i32>().value(i);
    let floats = floats.as_primitive::<Float32Type>();
    assert_eq!(floats.iter().collect::<Vec<_>>(), [Some(1.5), None]);
    let words = col("words");
    let words = words.as_list::<i32>().value(i);
    assert_eq!(
        words.as_string::<i32>().iter().collect::<Vec<_>>(),
        [Some("a"), Some("b")]
    );
    assert_eq!(col("counts").as_list::<i32>().value(i).len(), 0);
    for name in [
        "small", "big", "f4", "num", "flag", "label", "raw", "at", "day", "floats", "words",
        "counts",
    ] {
        assert!(col(name).is_null(j), "`{name}` of driver 2 is null");
    }

    // A numeric column can be read as a feature but not appended to.
    let source: DataSource = fx.defs.data_sources.get("typed").expect("source").clone();
    let err = store.source_schema(&source).await.expect_err("numeric");
    assert!(
        err.to_string().contains("column `num` has type numeric"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_and_wrong_login_name_the_server_not_the_password() {
    let Some(url) = postgres_url() else { return };
    let fx = pg_fixture(&url).await;
    let pg = fx.pg.as_ref().expect("postgres fixture");
    let entities = || {
        EntityInput::Batches(vec![batch(vec![
            ("driver_id", ints(&[1])),
            ("event_timestamp", ts_hours(&[1])),
        ])])
    };

    let mut closed_port = pg_config(&pg.url, &pg.name, fx.dir.path());
    closed_port.host = "127.0.0.1".into();
    closed_port.port = 1;
    closed_port.password = Some("s3cret-pw".into());
    closed_port.connect_timeout = std::time::Duration::from_secs(3);
    let store = PostgresOfflineStore::new(closed_port.clone()).expect("store");
    let err = run_with(&fx, &store, entities(), value_refs(), false)
        .await
        .expect_err("nothing listens on port 1");
    let message = err.to_string();
    assert!(matches!(err, OfflineError::Unavailable { .. }), "{message}");
    assert!(
        message.starts_with(&format!(
            "cannot connect to the postgres offline store at `127.0.0.1:1/{}`:",
            closed_port.database
        )),
        "{message}"
    );
    assert!(!message.contains("s3cret-pw"), "{message}");
    assert!(!format!("{closed_port:?}").contains("s3cret-pw"));

    let mut wrong_user = pg_config(&pg.url, &pg.name, fx.dir.path());
    wrong_user.user = format!("larder_nobody_{}", uuid::Uuid::new_v4().simple());
    wrong_user.password = Some("s3cret-pw".into());
    let store = PostgresOfflineStore::new(wrong_user.clone()).expect("store");
    let err = pull(&fx, &store, "fv", (hours(0), hours(1)), None)
        .await
        .expect_err("no such role");
    let message = err.to_string();
    assert!(matches!(err, OfflineError::Unavailable { .. }), "{message}");
    assert!(message.contains(&wrong_user.target()), "{message}");
    assert!(message.contains(&wrong_user.user), "{message}");
    assert!(!message.contains("s3cret-pw"), "{message}");

    let mut wrong_db = pg_config(&pg.url, &pg.name, fx.dir.path());
    wrong_db.database = format!("larder_no_db_{}", uuid::Uuid::new_v4().simple());
    let store = PostgresOfflineStore::new(wrong_db.clone()).expect("store");
    let err = pull(&fx, &store, "fv", (hours(0), hours(1)), None)
        .await
        .expect_err("no such database");
    assert!(err.to_string().contains(&wrong_db.database), "{err}");

    // TLS (rustls): `require` encrypts without checking the certificate, as libpq does;
    // `verify-full` against a CA that did not sign the server's certificate refuses it.
    let mut tls = pg_config(&pg.url, &pg.name, fx.dir.path());
    tls.sslmode = Some("require".into());
    let store = PostgresOfflineStore::new(tls.clone()).expect("store");
    let over_tls = EntityInput::Sql(
        "SELECT 1 AS driver_id, now() AS event_timestamp, \
         (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS tls"
            .into(),
    );
    match run_with(&fx, &store, over_tls, value_refs(), false).await {
        Ok(out) => {
            let tls = out.column_by_name("tls").expect("tls column");
            assert!(tls.as_boolean().value(0), "the session is encrypted");
        }
        // A server without TLS says so, naming itself.
        Err(e) => assert!(
            e.to_string().contains(&tls.target()) && e.to_string().contains("TLS"),
            "{e}"
        ),
    }
    let ca = fx.dir.path().join("other-ca.pem");
    std::fs::write(&ca, OTHER_CA).expect("write CA");
    tls.sslmode = Some("verify-full".into());
    tls.sslrootcert_path = Some(ca.to_string_lossy().into_owned());
    let store = PostgresOfflineStore::new(tls.clone()).expect("store");
    let err = pull(&fx, &store, "fv", (hours(0), hours(9)), None)
        .await
        .expect_err("a certificate the CA did not sign");
    assert!(matches!(err, OfflineError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");

    let mut bad_tls = pg_config(&pg.url, &pg.name, fx.dir.path());
    bad_tls.sslmode = Some("verify-full".into());
    let err = PostgresOfflineStore::new(bad_tls).expect_err("no root certificate");
    assert!(err.to_string().contains("`sslrootcert_path`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sources_and_missing_tables_are_named() {
    let Some(url) = postgres_url() else { return };
    let fx = pg_fixture(&url).await;
    let pg = fx.pg.as_ref().expect("postgres fixture");
    let yaml = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: files, type: file, path: stats.parquet, timestamp_field: event_timestamp}
  - {name: gone, type: postgres, table: no_such_table, timestamp_field: event_timestamp}
  - {name: stats, type: postgres, table: stats, timestamp_field: event_timestamp}
feature_views:
  - {name: from_files, entities: [driver], source: files, schema: [{name: value, dtype: Float64}]}
  - {name: missing, entities: [driver], source: gone, schema: [{name: value, dtype: Float64}]}
  - {name: wrong, entities: [driver], source: stats, schema: [{name: nope, dtype: Float64}]}
";
    let other = fixture_unchecked(yaml, &[]);
    let store =
        PostgresOfflineStore::new(pg_config(&pg.url, &pg.name, fx.dir.path())).expect("store");
    let error = |view: &'static str| {
        let (other, store) = (&other, &store);
        async move {
            match pull(other, store, view, (hours(0), hours(1)), None).await {
                Ok(_) => panic!("reading `{view}` should fail"),
                Err(e) => e.to_string(),
            }
        }
    };
    assert_eq!(
        error("from_files").await,
        "data source `files` of feature view `from_files` cannot be read by the postgres offline store (it is a file source)"
    );
    let message = error("missing").await;
    assert!(
        message.starts_with("cannot read data source `gone` at `no_such_table`:")
            && message.contains("does not exist"),
        "{message}"
    );
    assert_eq!(
        error("wrong").await,
        "cannot read data source `stats` at `stats`: no column `nope` (needed for `nope`); its columns: driver_id, event_timestamp, created, value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_source_reads_like_a_table() {
    let Some(url) = postgres_url() else { return };
    let fx = pg_fixture(&url).await;
    let pg = fx.pg.as_ref().expect("postgres fixture");
    // The stats table seen through a query (trailing `;` and all), its key renamed back
    // by `field_mapping`.
    let yaml = "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - name: q
    type: postgres
    query: \"SELECT driver_id AS id, event_timestamp, created, value * 10 AS value FROM stats;\"
    timestamp_field: event_timestamp
    created_timestamp_column: created
    field_mapping: {id: driver_id}
feature_views:
  - {name: fv, entities: [driver], source: q, ttl: 0, schema: [{name: value, dtype: Float64}]}
";
    let other = fixture_unchecked(yaml, &[]);
    let store =
        PostgresOfflineStore::new(pg_config(&pg.url, &pg.name, fx.dir.path())).expect("store");
    let entities = batch(vec![
        ("driver_id", ints(&[2, 1, 1])),
        ("event_timestamp", ts_hours(&[1, 4, 6])),
    ]);
    let out = run_with(
        &other,
        &store,
        EntityInput::Batches(vec![entities]),
        value_refs(),
        false,
    )
    .await
    .expect("retrieval");
    assert_eq!(
        column_f64(&out, "value"),
        [Some(20.0), Some(10.0), Some(30.0)]
    );
    let latest = pull(&other, &store, "fv", (hours(0), hours(8)), None)
        .await
        .expect("latest");
    let mut rows: Vec<_> = column_i64(&latest.batch, "driver_id")
        .into_iter()
        .zip(column_f64(&latest.batch, "value"))
        .collect();
    rows.sort_by_key(|r| r.0);
    assert_eq!(rows, [(Some(1), Some(30.0)), (Some(2), Some(20.0))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_dropped_half_read_leaves_the_store_usable() {
    use futures::StreamExt;
    use larder_offline::OfflineStore;
    let Some(url) = postgres_url() else { return };
    let fx = pg_fixture(&url).await;
    let pg = fx.pg.as_ref().expect("postgres fixture");
    let mut config = pg_config(&pg.url, &pg.name, fx.dir.path());
    config.max_conn = 1;
    config.batch_size = 2;
    let store = PostgresOfflineStore::new(config).expect("store");
    let many = || {
        let ids: Vec<i64> = (0..2000).map(|i| i % 3).collect();
        let hours_: Vec<i64> = (0..2000).map(|i| i % 10).collect();
        EntityInput::Batches(vec![batch(vec![
            ("driver_id", ints(&ids)),
            ("event_timestamp", ts_hours(&hours_)),
        ])])
    };
    for _ in 0..3 {
        let views = larder_spec::resolve_features(&fx.defs, &value_refs(), false).expect("views");
        let mut stream = store
            .get_historical_features(larder_offline::HistoricalRequest {
                definitions: fx.defs.clone(),
                views,
                entities: many(),
            })
            .await
            .expect("retrieval");
        let first = stream.next().await.expect("a batch").expect("rows");
        assert_eq!(first.num_rows(), 2);
        drop(stream);
    }
    // The one pooled connection was replaced, not handed back mid-COPY.
    let out = run_with(&fx, &store, many(), value_refs(), false)
        .await
        .expect("a full read after abandoned ones");
    assert_eq!(out.num_rows(), 2000);

    // A slow query abandoned before its first row is cancelled in Postgres.
    let marker = format!("larder_cancel_{}", uuid::Uuid::new_v4().simple());
    let mut embed = pg_config(&pg.url, &pg.name, fx.dir.path());
    embed.entity_select_mode = EntitySelectMode::EmbedQuery;
    let store = PostgresOfflineStore::new(embed).expect("store");
    let views = larder_spec::resolve_features(&fx.defs, &value_refs(), false).expect("views");
    let stream = store
        .get_historical_features(larder_offline::HistoricalRequest {
            definitions: fx.defs.clone(),
            views,
            entities: EntityInput::Sql(format!(
                "SELECT 1 AS driver_id, now() AS event_timestamp, '{marker}' AS marker FROM pg_sleep(60)"
            )),
        })
        .await
        .expect("retrieval");
    let client = connect(&url).await.expect("connect");
    // Sessions that ran the query: `active` ones still run it.
    let sessions = |active: bool| {
        let (client, marker) = (&client, &marker);
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' \
                     AND pid <> pg_backend_pid() AND ($2 = false OR state = 'active')",
                    &[marker, &active],
                )
                .await
                .expect("pg_stat_activity")
                .get::<_, i64>(0)
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sessions(true).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow query never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(stream);
    // Without a cancel request the session would sleep on for a minute.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sessions(false).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned query still runs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A CA certificate that signed nothing the test server uses (generated once with
/// `openssl req -x509 -newkey ec`; its key was thrown away).
const OTHER_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBrzCCAVWgAwIBAgIUPJb01SyZDEEoVAeQlZeBZ79cmdAwCgYIKoZIzj0EAwIw
LDEqMCgGA1UEAwwhbGFyZGVyIHRlc3QgQ0EgKG5vdCB0aGUgc2VydmVyJ3MpMCAX
DTI2MTEyNjE0MDAyOVoYDzIxMjYxMTAyMTQwMDI5WjAsMSowKAYDVQQDDCFsYXJk
ZXIgdGVzdCBDQSAobm90IHRoZSBzZXJ2ZXIncykwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATqEuxu6GTdq8bdBXzHPIzNuLQ2gyiCL/U8QcNaqE9LcRb8xZ2AYOmD
L7h0gDeCqboObvgHsRLSO25x5UOzb7/fo1MwUTAdBgNVHQ4EFgQUv1K1Z4vOZXXu
hRPSyjRjGcUlPewwHwYDVR0jBBgwFoAUv1K1Z4vOZXXuhRPSyjRjGcUlPewwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAiRhAmpeLgRAxMdVv91Wu
lHuKDgxbiSIMmZQDmxGiE8YCIH6tj+TEYOyR+dTwWvRIrPAxAKlCCqn7dLx+NRYZ
6rYM
-----END CERTIFICATE-----\n";
