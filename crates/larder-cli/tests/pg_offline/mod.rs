//! The `larder` binary against a Postgres offline store: training data from a file, from
//! SQL and from a time range, materialization, and an offline push through `larder serve`.
//! Runs when `LARDER_TEST_POSTGRES_URL` is set.

use std::io::BufRead;
use std::process::Command;
use std::str::FromStr;

use super::{http, ok};

/// Runs `sql` against the test database (panics loudly: the URL was given).
fn execute(url: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("LARDER_TEST_POSTGRES_URL is set but {url} does not answer: {e}")
            });
        tokio::spawn(connection);
        client.batch_execute(sql).await.expect("setup SQL");
    });
}

/// Drops the test's schema, also when an assertion failed.
struct Schema {
    url: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        execute(
            &self.url,
            &format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name),
        );
    }
}

#[test]
fn historical_materialize_and_push_against_postgres() {
    let Ok(url) = std::env::var("LARDER_TEST_POSTGRES_URL") else {
        eprintln!("LARDER_TEST_POSTGRES_URL is not set: the CLI Postgres offline test did not run");
        return;
    };
    let schema = Schema {
        url: url.clone(),
        name: format!("larder_cli_{}", uuid::Uuid::new_v4().simple()),
    };
    execute(
        &url,
        &format!(
            "CREATE SCHEMA \"{s}\";
             CREATE TABLE \"{s}\".driver_stats (driver_id int8, event_timestamp timestamptz,
               created timestamptz, trips int8);
             INSERT INTO \"{s}\".driver_stats VALUES
               (1, '2025-03-01T01:00:00Z', '2025-03-01T01:00:00Z', 10),
               (2, '2025-03-01T02:00:00Z', '2025-03-01T02:00:00Z', 20),
               (1, '2025-03-01T04:00:00Z', '2025-03-01T04:00:00Z', 40);",
            s = schema.name
        ),
    );
    let parsed = tokio_postgres::Config::from_str(&url).expect("URL");
    let host = match parsed.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".into(),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path();
    std::fs::write(
        repo.join("feature_store.yaml"),
        format!(
            "project: pgcli\nregistry: data/registry.db\nprovider: local\n\
             online_store: {{type: sqlite, path: data/online.db}}\n\
             offline_store:\n  type: postgres\n  host: {host}\n  port: {port}\n  database: {db}\n  \
             db_schema: {schema}\n  user: {user}\n  sslmode: disable\n",
            port = parsed.get_ports().first().copied().unwrap_or(5432),
            db = parsed.get_dbname().unwrap_or("postgres"),
            schema = schema.name,
            user = parsed.get_user().unwrap_or("postgres"),
        ),
    )
    .expect("config");
    std::fs::write(
        repo.join("features.yaml"),
        "
entities:
  - {name: driver, join_keys: [driver_id], value_type: Int64}
data_sources:
  - {name: stats, type: postgres, table: driver_stats, timestamp_field: event_timestamp, created_timestamp_column: created}
  - {name: stats_push, type: push, batch_source: stats}
feature_views:
  - {name: trips, entities: [driver], ttl: 1d, source: stats_push, schema: [{name: trips, dtype: Int64}]}
",
    )
    .expect("definitions");
    std::fs::write(
        repo.join("spine.csv"),
        "driver_id,event_timestamp\n1,2025-03-01T03:00:00Z\n2,2025-03-01T03:00:00Z\n1,2025-03-01T05:00:00Z\n",
    )
    .expect("spine");
    ok(repo, &["apply"]);

    ok(
        repo,
        &[
            "get-historical-features",
            "--entities",
            "spine.csv",
            "-F",
            "trips:trips",
            "-o",
            "out.csv",
        ],
    );
    let csv = std::fs::read_to_string(repo.join("out.csv")).expect("output");
    let trips: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap_or(""))
        .collect();
    assert_eq!(trips, ["10", "20", "40"], "{csv}");

    let from_sql = ok(
        repo,
        &[
            "get-historical-features",
            "--entity-sql",
            "SELECT driver_id, event_timestamp FROM driver_stats ORDER BY event_timestamp DESC",
            "-F",
            "trips:trips",
        ],
    );
    assert!(from_sql.contains("(3 rows)"), "{from_sql}");
    let range = ok(
        repo,
        &[
            "get-historical-features",
            "--start",
            "2025-03-01T02:00:00Z",
            "--end",
            "2025-03-01T04:00:00Z",
            "-F",
            "trips:trips",
        ],
    );
    assert!(range.contains("(2 rows)"), "{range}");

    let materialized = ok(
        repo,
        &[
            "materialize",
            "2025-03-01T00:00:00Z",
            "2025-03-02T00:00:00Z",
            "--no-progress",
        ],
    );
    assert!(
        materialized.contains("2 entity keys written"),
        "{materialized}"
    );

    let child = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["serve", "--port", "0"])
        .current_dir(repo)
        .env_remove("LARDER_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start larder serve");
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the announced address");
    let addr = line
        .trim()
        .rsplit("://")
        .next()
        .expect("an address")
        .to_string();
    let response = http(
        &addr,
        "POST",
        "/push",
        r#"{"push_source_name": "stats_push", "to": "offline", "df": {"driver_id": [2], "event_timestamp": ["2025-03-01T06:00:00Z"], "created": ["2025-03-01T06:00:00Z"], "trips": [60]}}"#,
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    drop(child);

    let after_push = ok(
        repo,
        &[
            "get-historical-features",
            "--entity-sql",
            "SELECT 2 AS driver_id, '2025-03-01T07:00:00Z'::timestamptz AS event_timestamp",
            "-F",
            "trips:trips",
        ],
    );
    assert!(after_push.contains("| 60 "), "{after_push}");
}
