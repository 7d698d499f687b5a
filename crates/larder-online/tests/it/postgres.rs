//! The Postgres store: the conformance suite, then what only it has (Feast's stored layout,
//! rows Feast wrote, writers in separate stores, connection errors, timeouts).
//!
//! Runs when `LARDER_TEST_POSTGRES_URL` is set (e.g.
//! `postgresql://postgres@127.0.0.1:5432/test`); each fixture works in a schema of its own,
//! dropped at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use larder_online::{
    OnlineError, OnlineStore, PostgresConfig, PostgresOnlineStore, ViewTable, postgres_table_name,
};
use larder_types::feast::Value;

use crate::conformance::{Fixture, Row, batch, cell, key, read, ts, unique_project, value, write};

const URL_VAR: &str = "LARDER_TEST_POSTGRES_URL";

/// The test server's URL, or `None` (said once per test) when the variable is unset.
fn url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("postgres online store test not run: {URL_VAR} is not set");
            None
        }
    }
}

/// A raw connection for checking what the store wrote; panics when the server does not
/// answer (the URL was given, so it must).
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{URL_VAR} is set but Postgres does not answer: {e:?}"));
    tokio::spawn(connection);
    client
}

/// Drops its schema (and every table in it) when the test ends.
struct SchemaGuard {
    url: String,
    schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let client = raw(&url).await;
                let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                if let Err(e) = client.batch_execute(&sql).await {
                    eprintln!("cannot drop test schema `{schema}`: {e:?}");
                }
            });
        });
        let _ = done.join();
    }
}

/// A store in a fresh schema of the test server.
fn config_in_new_schema(url: &str) -> (PostgresConfig, SchemaGuard) {
    let mut config = PostgresConfig::from_url(url).expect("a valid test URL");
    config.db_schema = format!("larder_{}", unique_project());
    let guard = SchemaGuard {
        url: url.to_owned(),
        schema: config.db_schema.clone(),
    };
    (config, guard)
}

pub async fn fixture() -> Option<Fixture> {
    let url = url()?;
    // Fail loudly, here, when the server does not answer.
    drop(raw(&url).await);
    let (config, guard) = config_in_new_schema(&url);
    let store = PostgresOnlineStore::new(&config).expect("build the postgres store");
    Some(Fixture {
        store: Arc::new(store),
        _guard: Box::new(guard),
    })
}

online_store_conformance!(conformance, crate::postgres::fixture);

/// A store, its config and a raw connection, in a fresh schema.
struct Setup {
    store: PostgresOnlineStore,
    config: PostgresConfig,
    client: tokio_postgres::Client,
    _guard: SchemaGuard,
}

async fn setup() -> Option<Setup> {
    let url = url()?;
    let client = raw(&url).await;
    let (config, guard) = config_in_new_schema(&url);
    Some(Setup {
        store: PostgresOnlineStore::new(&config).expect("build the postgres store"),
        config,
        client,
        _guard: guard,
    })
}

impl Setup {
    fn view(&self, name: &str, features: &[&str]) -> ViewTable {
        ViewTable::new(unique_project(), name, features.iter().copied())
    }

    fn qualified(&self, table: &ViewTable) -> String {
        format!(
            "\"{}\".\"{}\"",
            self.config.db_schema,
            postgres_table_name(&table.project, &table.view)
        )
    }
}

fn i(v: i64) -> Option<Value> {
    Some(Value::int64(v))
}

fn s(v: &str) -> Option<Value> {
    Some(Value::string(v))
}

/// A row as stored: entity key, feature name, value, value_text, event time (µs).
type StoredRow = (Vec<u8>, String, Option<Vec<u8>>, Option<String>, i64);

const UNIX_2000_MICROS: i64 = 946_684_800_000_000;

#[tokio::test]
async fn stored_layout_is_feasts() {
    let Some(setup) = setup().await else { return };
    let t = setup.view("driver_stats", &["conv", "city"]);
    let at = UNIX_2000_MICROS + 1_234_567;
    write(
        &setup.store,
        &t,
        &[
            (7, at, vec![i(10), s("Oslo")]),
            (8, at + 1, vec![i(11), None]),
        ],
    )
    .await;

    let columns: Vec<(String, String)> = setup
        .client
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[
                &setup.config.db_schema,
                &postgres_table_name(&t.project, &t.view),
            ],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [
        ("entity_key", "bytea"),
        ("feature_name", "text"),
        ("value", "bytea"),
        ("value_text", "text"),
        ("vector_value", "bytea"),
        ("event_ts", "timestamp with time zone"),
        ("created_ts", "timestamp with time zone"),
    ];
    let columns: Vec<(&str, &str)> = columns
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    assert_eq!(columns, expected);

    let index: i64 = setup
        .client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname = $2",
            &[
                &setup.config.db_schema,
                &format!("{}_ek", postgres_table_name(&t.project, &t.view)),
            ],
        )
        .await
        .expect("index")
        .get(0);
    assert_eq!(index, 1, "Feast's index on entity_key exists");

    // One row per (entity key, feature); the times as instants, µs exact.
    let rows = setup
        .client
        .query(
            &format!(
                "SELECT entity_key, feature_name, value, value_text, \
                 (extract(epoch FROM event_ts) * 1000000)::bigint, created_ts \
                 FROM {} ORDER BY entity_key, feature_name",
                setup.qualified(&t)
            ),
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(rows.len(), 4);
    let got: Vec<StoredRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let expected = vec![
        (
            key(7),
            "city".to_owned(),
            Some(Value::string("Oslo").to_bytes()),
            Some("Oslo".to_owned()),
            at,
        ),
        (
            key(7),
            "conv".to_owned(),
            Some(Value::int64(10).to_bytes()),
            None,
            at,
        ),
        // A null cell is a row without a value: the feature is missing, the key written.
        (key(8), "city".to_owned(), None, None, at + 1),
        (
            key(8),
            "conv".to_owned(),
            Some(Value::int64(11).to_bytes()),
            None,
            at + 1,
        ),
    ];
    assert_eq!(got, expected);
    assert!(
        rows.iter()
            .all(|r| r.get::<_, Option<std::time::SystemTime>>(5).is_none()),
        "no created time was given"
    );
}

/// Rows written the way Feast's `PostgreSQLOnlineStore` writes them read back here.
#[tokio::test]
async fn reads_rows_feast_wrote() {
    let Some(setup) = setup().await else { return };
    let t = setup.view("feast_view", &["trips", "rate"]);
    setup
        .store
        .update_infra(std::slice::from_ref(&t), &[])
        .await
        .expect("create");
    // Feast writes naive UTC datetimes into TIMESTAMPTZ, read in the session's time zone.
    setup
        .client
        .batch_execute("SET TIME ZONE 'UTC'")
        .await
        .expect("time zone");
    let insert = format!(
        "INSERT INTO {} (entity_key, feature_name, value, value_text, vector_value, event_ts, \
         created_ts) VALUES \
         ($1, 'trips', $2, NULL, NULL, '2021-04-12 10:59:42', '2021-04-12 11:00:00'), \
         ($1, 'rate', $3, NULL, NULL, '2021-04-12 10:59:42', '2021-04-12 11:00:00')",
        setup.qualified(&t)
    );
    setup
        .client
        .execute(
            &insert,
            &[
                &key(42),
                &Value::int64(5).to_bytes(),
                &Value::float(0.5).to_bytes(),
            ],
        )
        .await
        .expect("insert like Feast");
    let got = read(&setup.store, &t, &[42, 43], &["rate", "trips"]).await;
    assert_eq!(ts(&got, 0), Some(1_618_225_182_000_000));
    assert_eq!(value(&got, 0, 0), Some(Value::float(0.5)));
    assert_eq!(value(&got, 1, 0), i(5));
    assert_eq!(ts(&got, 1), None);
}

/// A write older than the stored row, for a view that has gained a feature since, leaves
/// no trace (Feast's per-feature rows would otherwise mix an old value into the new row).
#[tokio::test]
async fn an_older_write_with_a_new_feature_leaves_nothing() {
    let Some(setup) = setup().await else { return };
    let before = setup.view("v", &["a", "b"]);
    let after = ViewTable::new(before.project.clone(), "v", ["a", "b", "c"]);
    write(&setup.store, &before, &[(1, 100, vec![i(1), i(2)])]).await;
    assert_eq!(
        write(&setup.store, &after, &[(1, 50, vec![i(9), i(9), i(9)])]).await,
        0
    );
    let got = read(&setup.store, &after, &[1], &["a", "b", "c"]).await;
    assert_eq!(
        (ts(&got, 0), value(&got, 0, 0), cell(&got, 2, 0)),
        (Some(100), i(1), None)
    );
    let left: i64 = setup
        .client
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE feature_name = 'c'",
                setup.qualified(&after)
            ),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "the losing row's new feature was removed");

    // A newer write lands all three.
    assert_eq!(
        write(&setup.store, &after, &[(1, 200, vec![i(3), i(4), i(5)])]).await,
        1
    );
    let got = read(&setup.store, &after, &[1], &["c"]).await;
    assert_eq!((ts(&got, 0), value(&got, 0, 0)), (Some(200), i(5)));
}

/// After a view drops a feature, its old rows stay in the table but never mix into a newer
/// row.
#[tokio::test]
async fn rows_of_a_dropped_feature_do_not_mix_in() {
    let Some(setup) = setup().await else { return };
    let before = setup.view("v", &["a", "c"]);
    let after = ViewTable::new(before.project.clone(), "v", ["a"]);
    write(&setup.store, &before, &[(1, 100, vec![i(1), i(3)])]).await;
    write(&setup.store, &after, &[(1, 200, vec![i(2)])]).await;
    let got = read(&setup.store, &before, &[1], &["a", "c"]).await;
    assert_eq!(
        (ts(&got, 0), value(&got, 0, 0), cell(&got, 1, 0)),
        (Some(200), i(2), None)
    );
    // Asked alone, the old feature is still missing, and the key found at its newest time.
    let got = read(&setup.store, &before, &[1, 2], &["c"]).await;
    assert_eq!(
        (ts(&got, 0), cell(&got, 0, 0), ts(&got, 1)),
        (Some(200), None, None)
    );
}

const ROUNDS: i64 = 40;
const KEYS: i64 = 300;

/// Round `r` writes every key with event time `at` and two features that must agree.
fn round_rows(at: i64) -> Vec<Row> {
    (0..KEYS)
        .map(|id| (id, at, vec![i(at), s(&format!("{id}@{at}"))]))
        .collect()
}

/// Writers in separate stores (like separate processes), half of them going back in
/// time, while a reader checks that no key goes back and no row is torn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_in_separate_stores_keep_the_newest() {
    let Some(setup) = setup().await else { return };
    let t = setup.view("shared", &["n", "s"]);
    setup
        .store
        .update_infra(std::slice::from_ref(&t), &[])
        .await
        .expect("create");
    const WRITERS: i64 = 4;
    let done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = PostgresOnlineStore::new(&setup.config).expect("store");
        let t = t.clone();
        writers.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let step = if writer % 2 == 1 {
                    ROUNDS - 1 - round
                } else {
                    round
                };
                write(&store, &t, &round_rows(step * WRITERS + writer)).await;
            }
        }));
    }
    let reader = {
        let (store, t, done) = (
            PostgresOnlineStore::new(&setup.config).expect("store"),
            t.clone(),
            Arc::clone(&done),
        );
        tokio::spawn(async move {
            let ids: Vec<i64> = (0..KEYS).collect();
            let mut last = vec![-1; KEYS as usize];
            let mut reads = 0;
            while !done.load(Ordering::SeqCst) {
                let got = read(&store, &t, &ids, &["n", "s"]).await;
                reads += 1;
                for id in 0..KEYS {
                    let row = id as usize;
                    let Some(at) = ts(&got, row) else { continue };
                    assert!(
                        at >= last[row],
                        "key {id} went back from {} to {at}",
                        last[row]
                    );
                    last[row] = at;
                    assert_eq!(value(&got, 0, row), i(at), "torn row");
                    assert_eq!(value(&got, 1, row), s(&format!("{id}@{at}")), "torn row");
                }
            }
            reads
        })
    };
    for writer in writers {
        writer.await.expect("writer");
    }
    done.store(true, Ordering::SeqCst);
    assert!(reader.await.expect("reader") > 0);
    let newest = (ROUNDS - 1) * WRITERS + WRITERS - 1;
    let ids: Vec<i64> = (0..KEYS).collect();
    let got = read(&setup.store, &t, &ids, &["n", "s"]).await;
    for id in 0..KEYS {
        let row = id as usize;
        assert_eq!(ts(&got, row), Some(newest));
        assert_eq!(value(&got, 1, row), s(&format!("{id}@{newest}")));
    }
}

fn unavailable(err: &OnlineError) -> bool {
    matches!(err, OnlineError::Unavailable { .. })
}

/// Wrong credentials, a missing database and a closed port: clear errors naming the
/// server, never the password.
#[tokio::test]
async fn connection_errors_name_the_server_not_the_password() {
    let Some(url) = url() else { return };
    let base = PostgresConfig::from_url(&url).expect("url");
    let t = ViewTable::new(unique_project(), "v", ["f"]);
    let k = key(1);
    let password = "hunter2-not-shown";

    let mut bad_user = base.clone();
    bad_user.user = format!("no_such_role_{}", unique_project());
    bad_user.password = Some(password.to_owned());
    let mut bad_db = base.clone();
    bad_db.database = format!("no_such_db_{}", unique_project());
    bad_db.password = Some(password.to_owned());
    let mut closed = base.clone();
    closed.host = "127.0.0.1".to_owned();
    closed.port = 1;
    closed.password = Some(password.to_owned());

    for (config, retryable, says) in [
        (bad_user, false, "does not exist"),
        (bad_db, false, "does not exist"),
        (closed, true, "cannot connect"),
    ] {
        let store = PostgresOnlineStore::new(&config).expect("store");
        assert!(!format!("{store:?}").contains(password));
        let err = store
            .read(&t, &[&k], &["f"])
            .await
            .expect_err("cannot connect");
        let text = err.to_string();
        assert!(unavailable(&err), "{err:?}");
        assert_eq!(err.is_retryable(), retryable, "{text}");
        assert!(text.contains(&config.endpoint()), "{text}");
        assert!(text.contains(says), "{text}");
        assert!(!text.contains(password) && !format!("{err:?}").contains(password));
        let err = store
            .write_batch(&t, batch(&t, &[(1, 1, vec![i(1)])]))
            .await
            .expect_err("cannot connect");
        assert!(err.to_string().contains(&config.endpoint()), "{err}");
    }
}

/// A server that accepts TCP but never answers fails within the connect timeout.
#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accept and hold connections without a word.
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let mut config = PostgresConfig::new("127.0.0.1", "db");
    config.port = port;
    config.sslmode = larder_online::SslMode::Disable;
    config.connect_timeout = Duration::from_millis(300);
    config.query_timeout = Duration::from_millis(600);
    let store = PostgresOnlineStore::new(&config).expect("store");
    let t = ViewTable::new("p", "v", ["f"]);
    let k = key(1);
    let started = Instant::now();
    let err = store.read(&t, &[&k], &["f"]).await.expect_err("no answer");
    assert!(started.elapsed() < Duration::from_secs(5), "did not hang");
    assert!(unavailable(&err) && err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains(&config.endpoint()), "{err}");
    held.abort();
}

/// A statement that waits on a lock longer than the query timeout fails instead of hanging.
#[tokio::test]
async fn a_blocked_query_times_out() {
    let Some(mut setup) = setup().await else {
        return;
    };
    let t = setup.view("v", &["f"]);
    write(&setup.store, &t, &[(1, 1, vec![i(1)])]).await;
    setup.config.query_timeout = Duration::from_millis(500);
    let store = PostgresOnlineStore::new(&setup.config).expect("store");
    let lock = format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        setup.qualified(&t)
    );
    let tx = setup.client.transaction().await.expect("begin");
    tx.batch_execute(&lock).await.expect("lock");
    let started = Instant::now();
    let k = key(1);
    let err = store
        .read(&t, &[&k], &["f"])
        .await
        .expect_err("blocked by the lock");
    assert!(started.elapsed() < Duration::from_secs(5), "did not hang");
    assert!(unavailable(&err) && err.is_retryable(), "{err:?}");
    tx.rollback().await.expect("unlock");
    let got = read(&store, &t, &[1], &["f"]).await;
    assert_eq!(value(&got, 0, 0), i(1), "the store works again");
}

/// A table of the view's name with other columns is refused, never dropped or altered.
#[tokio::test]
async fn a_foreign_table_is_refused() {
    let Some(setup) = setup().await else { return };
    let t = setup.view("v", &["f"]);
    setup
        .client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"; CREATE TABLE {} (id INT PRIMARY KEY, payload BYTEA)",
            setup.config.db_schema,
            setup.qualified(&t)
        ))
        .await
        .expect("foreign table");
    let name = postgres_table_name(&t.project, &t.view);
    let incompatible = |err: OnlineError| match err {
        OnlineError::IncompatibleTable { table, .. } => assert_eq!(table, name),
        other => panic!("expected IncompatibleTable, got {other:?}"),
    };
    incompatible(
        setup
            .store
            .update_infra(std::slice::from_ref(&t), &[])
            .await
            .expect_err("keep"),
    );
    incompatible(
        setup
            .store
            .write_batch(&t, batch(&t, &[(1, 1, vec![i(1)])]))
            .await
            .expect_err("write"),
    );
    let k = key(1);
    incompatible(setup.store.read(&t, &[&k], &["f"]).await.expect_err("read"));
}

/// Write rate of a materialization-sized batch: 100k keys x 10 features, first into an
/// empty table, then again with newer rows over them. Run with
/// `cargo test -p larder-online --test it postgres::bulk_write_rate -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement; prints rows/s"]
async fn bulk_write_rate() {
    let Some(setup) = setup().await else { return };
    const N: i64 = 100_000;
    let names: Vec<String> = (0..10).map(|f| format!("feature_{f}")).collect();
    let t = ViewTable::new(unique_project(), "bulk", names.iter().cloned());
    let rows = |at: i64| -> Vec<Row> {
        (0..N)
            .map(|id| {
                let values = (0..10)
                    .map(|f| Some(Value::double((id * f) as f64)))
                    .collect();
                (id, at, values)
            })
            .collect()
    };
    setup
        .store
        .update_infra(std::slice::from_ref(&t), &[])
        .await
        .expect("create");
    for (pass, at) in [("insert", 1), ("update", 2)] {
        let batch = batch(&t, &rows(at));
        let started = Instant::now();
        let written = setup.store.write_batch(&t, batch).await.expect("write");
        let elapsed = started.elapsed();
        assert_eq!(written, N as u64);
        println!(
            "{pass}: {N} keys x 10 features in {:.2} s = {:.0} entity rows/s ({:.0} feature rows/s)",
            elapsed.as_secs_f64(),
            N as f64 / elapsed.as_secs_f64(),
            N as f64 * 10.0 / elapsed.as_secs_f64()
        );
    }
    let got = read(&setup.store, &t, &[N - 1], &["feature_3"]).await;
    assert_eq!(value(&got, 0, 0), Some(Value::double(((N - 1) * 3) as f64)));

    // Read latency from the same table: 1 and 100 keys, all 10 features.
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for keys_per_read in [1, 100] {
        let mut latencies = Vec::new();
        for round in 0..500i64 {
            let ids: Vec<i64> = (0..keys_per_read)
                .map(|k| (round * 7919 + k * 104_729) % N)
                .collect();
            let started = Instant::now();
            let got = read(&setup.store, &t, &ids, &names).await;
            latencies.push(started.elapsed());
            assert_eq!(ts(&got, 0), Some(2));
        }
        latencies.sort();
        println!(
            "read {keys_per_read} keys x 10 features: p50 {:?}, p99 {:?}",
            latencies[latencies.len() / 2],
            latencies[latencies.len() * 99 / 100]
        );
    }
}

/// The sslmodes against the test server's own certificate (read through `ssl_cert_file`,
/// so this needs the server on this machine with `ssl = on`): `require` encrypts without
/// checking, `verify-ca` checks the chain only, `verify-full` the name too.
#[tokio::test]
async fn ssl_modes_check_what_they_promise() {
    let Some(setup) = setup().await else { return };
    let ssl: String = setup
        .client
        .query_one("SHOW ssl", &[])
        .await
        .expect("ssl")
        .get(0);
    let cert_file: String = setup
        .client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .expect("cert file")
        .get(0);
    let cert = std::path::PathBuf::from(&cert_file);
    if ssl != "on"
        || !cert.is_file()
        || !["localhost", "127.0.0.1"].contains(&setup.config.host.as_str())
    {
        eprintln!("postgres TLS test not run: the server has no TLS certificate readable here");
        return;
    }
    let t = setup.view("v", &["f"]);
    write(&setup.store, &t, &[(1, 1, vec![i(1)])]).await;
    let k = key(1);
    let application = format!("larder_tls_{}", unique_project());
    let with = |mode: larder_online::SslMode, host: &str, root: Option<&std::path::Path>| {
        let mut config = setup.config.clone();
        config.application_name = application.clone();
        config.sslmode = mode;
        config.host = host.to_owned();
        config.sslrootcert_path = root.map(std::path::Path::to_path_buf);
        config
    };
    use larder_online::SslMode::{Require, VerifyCa, VerifyFull};

    // The connections are encrypted.
    let store = PostgresOnlineStore::new(&with(Require, "127.0.0.1", None)).expect("store");
    let got = store.read(&t, &[&k], &["f"]).await.expect("require");
    assert_eq!(value(&got, 0, 0), i(1));
    let encrypted: bool = setup
        .client
        .query_one(
            "SELECT coalesce(bool_and(s.ssl), false) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&application],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(encrypted, "larder's connections use TLS");

    for (config, works) in [
        (with(VerifyCa, "127.0.0.1", Some(&cert)), true),
        (with(VerifyFull, "localhost", Some(&cert)), true),
        // The certificate names `localhost`, not the address.
        (with(VerifyFull, "127.0.0.1", Some(&cert)), false),
    ] {
        let store = PostgresOnlineStore::new(&config).expect("store");
        let result = store.read(&t, &[&k], &["f"]).await;
        match (result, works) {
            (Ok(got), true) => assert_eq!(value(&got, 0, 0), i(1)),
            (Err(err), false) => {
                assert!(unavailable(&err), "{err:?}");
                let text = err.to_string();
                assert!(
                    text.contains(&config.endpoint()) && text.contains("TLS"),
                    "{text}"
                );
            }
            (Ok(_), false) => panic!("{:?} to {} should fail", config.sslmode, config.host),
            (Err(err), true) => panic!("{:?} to {}: {err}", config.sslmode, config.host),
        }
    }

    // Verification without a root certificate is refused up front, naming the key.
    let missing = std::env::temp_dir().join(format!("{}-no-root.crt", unique_project()));
    let err = PostgresOnlineStore::new(&with(VerifyFull, "localhost", Some(&missing)))
        .expect_err("no root file");
    assert!(err.to_string().contains("no-root.crt"), "{err}");
    // A client certificate needs its key; a key file must hold a key.
    let mut config = with(Require, "localhost", None);
    config.sslcert_path = Some(cert.clone());
    let err = PostgresOnlineStore::new(&config).expect_err("no key");
    assert!(err.to_string().contains("`sslkey_path`"), "{err}");
    config.sslkey_path = Some(cert.clone());
    let err = PostgresOnlineStore::new(&config).expect_err("a certificate is no key");
    assert!(err.to_string().contains(&cert_file), "{err}");
}
