//! The Redis store: the conformance suite on a standalone server (`LARDER_TEST_REDIS_URL`),
//! on a 3-node cluster and on a sentinel-managed primary (both started here from the
//! `redis-server` binary when `LARDER_TEST_REDIS_URL` is set), then Feast's exact bytes.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use larder_online::{
    OnlineError, OnlineStore, RedisConfig, RedisOnlineStore, RedisTopology, ViewTable, redis_key,
    ts_field,
};
use larder_types::feast::{Value, redis_field_hash};

use crate::conformance::{Fixture, cell, key, read, ts, value, view, write};

const URL_VAR: &str = "LARDER_TEST_REDIS_URL";

/// `host:port` of the standalone server CI names in `LARDER_TEST_REDIS_URL`.
fn standalone_address() -> (String, u16) {
    let url = std::env::var(URL_VAR).unwrap_or_else(|_| panic!("{URL_VAR} is not set"));
    let rest = url
        .strip_prefix("redis://")
        .unwrap_or_else(|| panic!("{URL_VAR} must be redis://host:port, found `{url}`"));
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = authority
        .rsplit_once(':')
        .map_or((authority, 6379), |(h, p)| {
            (h, p.parse().expect("a numeric port"))
        });
    (host.to_owned(), port)
}

/// Whether `LARDER_TEST_REDIS_URL` names a server; says once per case when it does not.
fn configured() -> bool {
    if std::env::var_os(URL_VAR).is_none() {
        eprintln!("not run: set {URL_VAR} to run the Redis cases");
        return false;
    }
    true
}

/// A connected store on `config` (a set URL whose server does not answer fails the case).
async fn connected(config: RedisConfig) -> Option<Fixture> {
    let store = RedisOnlineStore::new(config);
    store
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{URL_VAR} is set but Redis does not answer: {e}"));
    Some(Fixture {
        store: Arc::new(store),
        _guard: Box::new(()),
    })
}

pub async fn fixture() -> Option<Fixture> {
    if !configured() {
        return None;
    }
    let (host, port) = standalone_address();
    connected(RedisConfig::standalone(host, port)).await
}

online_store_conformance!(conformance, crate::redis::fixture);

// ----- servers started by the tests -----

/// A `redis-server` child that dies with this test process: it runs under a shell that
/// kills it once our end of its stdin closes (also when the test binary exits).
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn spawn(dir: &std::path::Path, args: &str) -> Server {
    let script = format!(
        "cd '{}' && {args} & pid=$!; read _; kill $pid",
        dir.display()
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (is it installed?)");
    Server { child }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up in 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("run redis-cli (is it installed?)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Cluster {
    ports: Vec<u16>,
    _servers: Vec<Server>,
    _dir: tempfile::TempDir,
}

/// One 3-primary cluster per test binary.
fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let servers = ports
            .iter()
            .map(|port| {
                spawn(
                    dir.path(),
                    &format!(
                        "redis-server --port {port} --bind 127.0.0.1 --cluster-enabled yes \
                         --cluster-config-file nodes-{port}.conf --save '' --appendonly no"
                    ),
                )
            })
            .collect();
        for &port in &ports {
            wait_for("a cluster node", || cli(port, &["PING"]).contains("PONG"));
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        cli(ports[0], &args);
        wait_for("the cluster", || {
            ports
                .iter()
                .all(|&p| cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        Cluster {
            ports,
            _servers: servers,
            _dir: dir,
        }
    })
}

pub async fn cluster_fixture() -> Option<Fixture> {
    if !configured() {
        return None;
    }
    let ports = &cluster().ports;
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    connected(RedisConfig::parse(RedisTopology::Cluster, &nodes.join(",")).expect("config")).await
}

online_store_conformance!(cluster_conformance, crate::redis::cluster_fixture);

struct Sentinel {
    sentinel_port: u16,
    _servers: Vec<Server>,
    _dir: tempfile::TempDir,
}

/// One primary watched by one sentinel (quorum 1) per test binary.
fn sentinel() -> &'static Sentinel {
    static SENTINEL: OnceLock<Sentinel> = OnceLock::new();
    SENTINEL.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let (primary, sentinel_port) = (free_port(), free_port());
        let primary_server = spawn(
            dir.path(),
            &format!("redis-server --port {primary} --bind 127.0.0.1 --save '' --appendonly no"),
        );
        wait_for("the primary", || cli(primary, &["PING"]).contains("PONG"));
        std::fs::write(
            dir.path().join("sentinel.conf"),
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor larder 127.0.0.1 {primary} 1\n"
            ),
        )
        .expect("write sentinel.conf");
        let sentinel_server = spawn(dir.path(), "redis-server sentinel.conf --sentinel");
        wait_for("the sentinel", || {
            cli(
                sentinel_port,
                &["SENTINEL", "get-master-addr-by-name", "larder"],
            )
            .contains(&primary.to_string())
        });
        Sentinel {
            sentinel_port,
            _servers: vec![primary_server, sentinel_server],
            _dir: dir,
        }
    })
}

pub async fn sentinel_fixture() -> Option<Fixture> {
    if !configured() {
        return None;
    }
    let port = sentinel().sentinel_port;
    let config = RedisConfig::parse(
        RedisTopology::Sentinel {
            master: "larder".into(),
        },
        &format!("127.0.0.1:{port}"),
    )
    .expect("config");
    connected(config).await
}

online_store_conformance!(sentinel_conformance, crate::redis::sentinel_fixture);

// ----- Feast's bytes -----

/// A plain client connection to the test server, to read and write bytes around the store.
async fn raw_connection() -> redis::aio::MultiplexedConnection {
    let (host, port) = standalone_address();
    redis::Client::open(format!("redis://{host}:{port}"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// The raw hash of `key` in `project`.
async fn hash(project: &str, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut conn = raw_connection().await;
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(redis_key(key, project))
        .query_async(&mut conn)
        .await
        .expect("HGETALL");
    pairs.sort();
    pairs
}

#[tokio::test]
async fn stores_feasts_layout() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = fixture.store;
    let t = view("driver_hourly_stats", &["conv_rate", "trips"]);
    let micros = 1_700_000_000_123_456;
    write(
        store.as_ref(),
        &t,
        &[(1001, micros, vec![Some(Value::double(0.5)), None])],
    )
    .await;
    let fields = hash(&t.project, &key(1001)).await;
    let conv = redis_field_hash("driver_hourly_stats", "conv_rate").to_vec();
    let ts_name = ts_field("driver_hourly_stats").into_bytes();
    // `trips` was not in the row: no field for it (Feast writes an empty Value there; both
    // read back as "no value").
    assert_eq!(fields.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(), {
        let mut want = vec![conv.clone(), ts_name.clone()];
        want.sort();
        want
    });
    let stored = |name: &[u8]| {
        fields
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.clone())
            .expect("field present")
    };
    assert_eq!(stored(&conv), Value::double(0.5).to_bytes());
    // google.protobuf.Timestamp{seconds: 1700000000, nanos: 123456000}
    assert_eq!(
        stored(&ts_name),
        larder_types::feast::ProtoTimestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_000
        }
        .to_bytes()
    );
    store.teardown(&[t]).await.expect("teardown");
}

#[tokio::test]
async fn reads_what_feast_wrote_and_keeps_its_newer_rows() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = fixture.store;
    let t = view("feast_written", &["f"]);
    // A hash as Feast's Python SDK writes it.
    let mut conn = raw_connection().await;
    let newer = 2_000_000_000_000_000i64;
    let _: () = redis::cmd("HSET")
        .arg(redis_key(&key(5), &t.project))
        .arg(&redis_field_hash("feast_written", "f")[..])
        .arg(Value::int64(42).to_bytes())
        .arg(ts_field("feast_written"))
        .arg(larder_types::feast::ProtoTimestamp::from_micros(newer).to_bytes())
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let got = read(store.as_ref(), &t, &[5], &["f"]).await;
    assert_eq!(ts(&got, 0), Some(newer));
    assert_eq!(value(&got, 0, 0), Some(Value::int64(42)));
    // An older row from Larder does not overwrite Feast's newer one.
    let written = write(
        store.as_ref(),
        &t,
        &[(5, newer - 1, vec![Some(Value::int64(1))])],
    )
    .await;
    assert_eq!(written, 0);
    let got = read(store.as_ref(), &t, &[5], &["f"]).await;
    assert_eq!(value(&got, 0, 0), Some(Value::int64(42)));
    store.teardown(&[t]).await.expect("teardown");
}

#[tokio::test]
async fn pre_1970_event_times_compare_correctly() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = fixture.store;
    let t = view("old", &["f"]);
    write(
        store.as_ref(),
        &t,
        &[(9, -1_000_000, vec![Some(Value::int64(1))])],
    )
    .await;
    // Older (more negative) loses; newer (still negative) wins.
    assert_eq!(
        write(
            store.as_ref(),
            &t,
            &[(9, -2_000_000, vec![Some(Value::int64(2))])]
        )
        .await,
        0
    );
    assert_eq!(
        write(
            store.as_ref(),
            &t,
            &[(9, -500_000, vec![Some(Value::int64(3))])]
        )
        .await,
        1
    );
    let got = read(store.as_ref(), &t, &[9], &["f"]).await;
    assert_eq!(ts(&got, 0), Some(-500_000));
    assert_eq!(value(&got, 0, 0), Some(Value::int64(3)));
    store.teardown(&[t]).await.expect("teardown");
}

#[tokio::test]
async fn deleting_a_view_keeps_other_views_and_projects() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = fixture.store;
    let a = view("a", &["x"]);
    let b = larder_online::ViewTable::new(a.project.clone(), "b", ["y"]);
    // Another project whose name ends like this one's.
    let other = larder_online::ViewTable::new(format!("pre{}", a.project), "a", ["x"]);
    for t in [&a, &other] {
        write(store.as_ref(), t, &[(1, 10, vec![Some(Value::int64(1))])]).await;
    }
    write(store.as_ref(), &b, &[(1, 10, vec![Some(Value::int64(2))])]).await;
    store
        .update_infra(std::slice::from_ref(&b), std::slice::from_ref(&a))
        .await
        .expect("drop view a");
    assert_eq!(ts(&read(store.as_ref(), &a, &[1], &["x"]).await, 0), None);
    assert_eq!(
        value(&read(store.as_ref(), &b, &[1], &["y"]).await, 0, 0),
        Some(Value::int64(2))
    );
    assert_eq!(
        value(&read(store.as_ref(), &other, &[1], &["x"]).await, 0, 0),
        Some(Value::int64(1))
    );
    store.teardown(&[b, other]).await.expect("teardown");
    assert!(hash(&a.project, &key(1)).await.is_empty());
}

#[tokio::test]
async fn key_ttl_expires_hashes() {
    if !configured() {
        return;
    }
    let (host, port) = standalone_address();
    let mut config = RedisConfig::standalone(host, port);
    config.key_ttl = Some(Duration::from_secs(100));
    let store = RedisOnlineStore::new(config);
    let t = view("ttl", &["f"]);
    write(&store, &t, &[(1, 10, vec![Some(Value::int64(1))])]).await;
    let mut conn = raw_connection().await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(redis_key(&key(1), &t.project))
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!((1..=100).contains(&ttl), "ttl {ttl}");
    store.teardown(&[t]).await.expect("teardown");
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error() {
    let port = free_port();
    let mut config = RedisConfig::parse(
        RedisTopology::Standalone,
        &format!("127.0.0.1:{port},password=hunter2"),
    )
    .expect("config");
    config.connect_timeout = Duration::from_secs(2);
    let message = failed_read(config, port, "nothing listens there").await;
    assert!(!message.contains("hunter2"), "{message}");
}

/// The message of a one-key read on `config` that must fail as `Unavailable`, naming the
/// server at `127.0.0.1:{port}`.
async fn failed_read(config: RedisConfig, port: u16, why: &str) -> String {
    let err = RedisOnlineStore::new(config)
        .read(&view("v", &["f"]), &[key(1).as_slice()], &["f"])
        .await
        .expect_err(why);
    let message = err.to_string();
    assert!(matches!(err, OnlineError::Unavailable { .. }), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    message
}

#[tokio::test]
async fn wrong_password_is_a_clear_error() {
    if !configured() {
        return;
    }
    let (host, port) = standalone_address();
    let config = RedisConfig::parse(
        RedisTopology::Standalone,
        &format!("{host}:{port},password=not-the-password"),
    )
    .expect("config");
    let err = RedisOnlineStore::new(config)
        .connect()
        .await
        .expect_err("the test server has no password");
    let message = err.to_string();
    assert!(message.contains(&format!("{host}:{port}")), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
}

/// A standalone server of this test's own (on a free port), for cases that must disturb
/// it; None (the case does not run) when `LARDER_TEST_REDIS_URL` is unset.
struct OwnServer {
    port: u16,
    _server: Server,
    _dir: tempfile::TempDir,
}

fn own_server() -> Option<OwnServer> {
    if !configured() {
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let server = spawn(
        dir.path(),
        &format!("redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no"),
    );
    wait_for("the test's redis-server", || {
        cli(port, &["PING"]).contains("PONG")
    });
    Some(OwnServer {
        port,
        _server: server,
        _dir: dir,
    })
}

/// A store on a `redis-server` of the test's own, holding key 1 of view `v` (`f` = 7).
async fn own_store_with_one_row() -> Option<(OwnServer, RedisOnlineStore, ViewTable)> {
    let own = own_server()?;
    let store = RedisOnlineStore::new(RedisConfig::standalone("127.0.0.1", own.port));
    let t = view("v", &["f"]);
    write(&store, &t, &[(1, 5, vec![Some(Value::int64(7))])]).await;
    Some((own, store, t))
}

/// A number of the server's `INFO` (`field` of `section`), read with `redis-cli` (whose
/// own connection it counts).
fn info_number(port: u16, section: &str, field: &str) -> u64 {
    cli(port, &["INFO", section])
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
}

/// Reads reuse their thread's connection; when the server has closed it meanwhile (its
/// `timeout`, a restart, `CLIENT KILL`), the next read reconnects instead of failing.
#[tokio::test]
async fn reads_survive_the_server_closing_idle_connections() {
    let Some((own, store, t)) = own_store_with_one_row().await else {
        return;
    };
    let port = own.port;
    for round in 0..3 {
        let got = read(&store, &t, &[1, 2], &["f"]).await;
        assert_eq!(value(&got, 0, 0), Some(Value::int64(7)), "round {round}");
        assert_eq!(ts(&got, 1), None, "round {round}");
        let killed = cli(port, &["CLIENT", "KILL", "TYPE", "normal"]);
        assert!(
            killed.trim().parse::<u32>().is_ok_and(|n| n >= 1),
            "round {round}: {killed}"
        );
    }
}

/// Each reading thread has its own read connection (the feature server's workers each run
/// their own runtime, which drives the sockets it opened): a read on another thread opens
/// its own, which closes when that thread's runtime shuts down, and the first thread keeps
/// reusing its one.
#[test]
fn read_connections_stay_with_the_thread_that_opened_them() {
    let Some(own) = own_server() else {
        return;
    };
    let port = own.port;
    let store = Arc::new(RedisOnlineStore::new(RedisConfig::standalone(
        "127.0.0.1",
        port,
    )));
    let t = view("v", &["f"]);
    let here = current_thread_runtime();
    here.block_on(write(
        store.as_ref(),
        &t,
        &[(1, 5, vec![Some(Value::int64(7))])],
    ));
    let check = |got: &arrow::array::RecordBatch, who: &str| {
        assert_eq!(value(got, 0, 0), Some(Value::int64(7)), "{who}");
    };
    // Writes go over the shared multiplexed connection; count connections from here on.
    let opened = || info_number(port, "stats", "total_connections_received");
    let clients = || info_number(port, "clients", "connected_clients");
    let (opened_before, clients_before) = (opened(), clients());
    check(
        &here.block_on(read(store.as_ref(), &t, &[1], &["f"])),
        "first thread",
    );
    let other = {
        let (store, t) = (store.clone(), t.clone());
        std::thread::spawn(move || {
            current_thread_runtime().block_on(read(store.as_ref(), &t, &[1], &["f"]))
        })
        .join()
        .unwrap()
    };
    check(&other, "second thread");
    check(
        &here.block_on(read(store.as_ref(), &t, &[1], &["f"])),
        "first thread again",
    );
    // One connection per reading thread, and redis-cli's for the client count and this one.
    assert_eq!(opened(), opened_before + 2 + 2);
    // The second thread's closed with its runtime (redis-cli's own counts in both).
    wait_for("the second thread's connection to close", || {
        clients() == clients_before + 1
    });
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A thread whose runtime shut down, with the connection it drove, reads again on its next
/// runtime (over a new connection).
#[test]
fn a_thread_reads_again_on_a_new_runtime() {
    let Some(own) = own_server() else {
        return;
    };
    let store = RedisOnlineStore::new(RedisConfig::standalone("127.0.0.1", own.port));
    let t = view("v", &["f"]);
    current_thread_runtime().block_on(write(&store, &t, &[(1, 5, vec![Some(Value::int64(7))])]));
    for round in 0..3 {
        let runtime = current_thread_runtime();
        let got = runtime.block_on(read(&store, &t, &[1], &["f"]));
        assert_eq!(value(&got, 0, 0), Some(Value::int64(7)), "round {round}");
    }
}

/// A runtime shut down before the task of a connection it opened ever ran (a read queued,
/// then abandoned) leaves no connection without a task: the thread's next read, on a new
/// runtime, is answered at once instead of waiting out `socket_timeout`.
#[test]
fn a_connection_whose_task_never_ran_is_not_reused() {
    let Some(own) = own_server() else {
        return;
    };
    let mut config = RedisConfig::standalone("127.0.0.1", own.port);
    config.response_timeout = Duration::from_secs(30);
    let store = RedisOnlineStore::new(config);
    let t = view("v", &["f"]);
    current_thread_runtime().block_on(write(&store, &t, &[(1, 5, vec![Some(Value::int64(7))])]));
    let key = key(1);
    let keys = [key.as_slice()];
    current_thread_runtime().block_on(async {
        let mut abandoned = std::pin::pin!(store.read(&t, &keys, &["f"]));
        // Queues the command and spawns the connection's task, which never runs.
        assert!(futures::poll!(abandoned.as_mut()).is_pending());
    });
    let started = Instant::now();
    let got = current_thread_runtime().block_on(read(&store, &t, &[1], &["f"]));
    assert_eq!(value(&got, 0, 0), Some(Value::int64(7)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the read took {:?}",
        started.elapsed()
    );
}

/// Concurrent reads on one thread share its one connection, pipelined: a burst of 64 opens
/// one, and the next burst none.
#[tokio::test]
async fn concurrent_reads_on_a_thread_share_one_connection() {
    let Some((own, store, t)) = own_store_with_one_row().await else {
        return;
    };
    let port = own.port;
    let opened = || info_number(port, "stats", "total_connections_received");
    let burst = || {
        futures::future::join_all((0..64i64).map(|i| {
            let (store, t) = (&store, &t);
            async move { (i, read(store, t, &[1, i + 2, 1], &["f"]).await) }
        }))
    };
    let before = opened();
    for (i, got) in burst().await {
        assert_eq!(value(&got, 0, 0), Some(Value::int64(7)), "read {i}");
        assert_eq!(ts(&got, 1), None, "read {i}");
        assert_eq!(value(&got, 0, 2), Some(Value::int64(7)), "read {i}");
    }
    // redis-cli's own connection for the first count is the one more.
    assert_eq!(opened(), before + 2, "the first burst");
    for (i, got) in burst().await {
        assert_eq!(value(&got, 0, 0), Some(Value::int64(7)), "read {i}");
    }
    assert_eq!(opened(), before + 3, "the second burst");
}

/// A read that gets no answer within `socket_timeout` fails saying so, and drops its
/// connection: the next read, once the server answers again, goes over a new one.
#[tokio::test]
async fn a_read_without_an_answer_in_time_fails_and_the_next_reconnects() {
    let Some(own) = own_server() else {
        return;
    };
    let port = own.port;
    let mut config = RedisConfig::standalone("127.0.0.1", port);
    config.response_timeout = Duration::from_millis(300);
    let store = RedisOnlineStore::new(config);
    let t = view("v", &["f"]);
    write(&store, &t, &[(1, 5, vec![Some(Value::int64(7))])]).await;
    assert_eq!(
        value(&read(&store, &t, &[1], &["f"]).await, 0, 0),
        Some(Value::int64(7))
    );
    let opened = || info_number(port, "stats", "total_connections_received");
    let before = opened();
    // The server answers no client for 1 s from now.
    let paused = Instant::now();
    assert_eq!(cli(port, &["CLIENT", "PAUSE", "1000", "ALL"]).trim(), "OK");
    let err = store
        .read(&t, &[key(1).as_slice()], &["f"])
        .await
        .expect_err("a read while the server is paused");
    let message = err.to_string();
    assert!(message.contains("no answer within 300ms"), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(paused.elapsed())).await;
    assert_eq!(
        value(&read(&store, &t, &[1], &["f"]).await, 0, 0),
        Some(Value::int64(7))
    );
    // The pausing redis-cli, the first count's, and the new connection.
    assert_eq!(opened(), before + 3);
}

/// Reads and writes both go to `db=N`: what one writes the other finds, and database 0
/// stays empty.
#[tokio::test]
async fn reads_and_writes_use_the_configured_database() {
    let Some(own) = own_server() else {
        return;
    };
    let port = own.port;
    let config = RedisConfig::parse(RedisTopology::Standalone, &format!("127.0.0.1:{port},db=3"))
        .expect("config");
    let store = RedisOnlineStore::new(config);
    let t = view("v", &["f"]);
    write(&store, &t, &[(1, 5, vec![Some(Value::int64(7))])]).await;
    let got = read(&store, &t, &[1], &["f"]).await;
    assert_eq!(value(&got, 0, 0), Some(Value::int64(7)));
    assert_eq!(cli(port, &["-n", "3", "DBSIZE"]).trim(), "1");
    assert_eq!(cli(port, &["-n", "0", "DBSIZE"]).trim(), "0");
}

/// A read with a wrong password fails naming the server, never the password.
#[tokio::test]
async fn wrong_password_fails_reads_clearly() {
    let Some(own) = own_server() else {
        return;
    };
    let port = own.port;
    cli(port, &["CONFIG", "SET", "requirepass", "right-password"]);
    let config = RedisConfig::parse(
        RedisTopology::Standalone,
        &format!("127.0.0.1:{port},password=not-the-password"),
    )
    .expect("config");
    let message = failed_read(config, port, "wrong password").await;
    assert!(message.contains("WRONGPASS"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
    assert!(!message.contains("right-password"), "{message}");
}

/// A read that wants most of a view's features fetches the whole hash (`HGETALL`): fields
/// of another view on the same entity are skipped, a feature never written reads null and a
/// repeated name gets the value each time; a narrower read (`HMGET`) agrees.
#[tokio::test]
async fn whole_hash_reads_pick_the_views_own_fields() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = fixture.store;
    let a = view("a", &["x", "y", "w"]);
    let b = larder_online::ViewTable::new(a.project.clone(), "b", ["x", "y"]);
    let int = |v| Some(Value::int64(v));
    write(store.as_ref(), &a, &[(1, 10, vec![int(1), int(2), None])]).await;
    write(store.as_ref(), &b, &[(1, 20, vec![int(3), int(4)])]).await;

    let got = read(store.as_ref(), &a, &[1, 2], &["y", "x", "w", "y"]).await;
    assert_eq!(
        (
            ts(&got, 0),
            value(&got, 0, 0),
            value(&got, 1, 0),
            cell(&got, 2, 0),
            value(&got, 3, 0)
        ),
        (Some(10), int(2), int(1), None, int(2))
    );
    assert_eq!(ts(&got, 1), None);
    let narrow = read(store.as_ref(), &a, &[1], &["y"]).await;
    assert_eq!((ts(&narrow, 0), value(&narrow, 0, 0)), (Some(10), int(2)));
    let got = read(store.as_ref(), &b, &[1], &["x", "y"]).await;
    assert_eq!(
        (ts(&got, 0), value(&got, 0, 0), value(&got, 1, 0)),
        (Some(20), int(3), int(4))
    );
    store.teardown(&[a, b]).await.expect("teardown");
}

/// One number of `cmdstat_{command}` in `INFO commandstats` (0 before the first call).
fn command_stat(port: u16, command: &str, stat: &str) -> u64 {
    cli(port, &["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
        .and_then(|stats| {
            stats
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix(&format!("{stat}=")))
                .map(|n| n.parse().expect("a number"))
        })
        .unwrap_or(0)
}

/// In a large write (a materialization's), keys that do not exist yet are created by
/// `RESTORE` with the very hash Redis builds from `HSET` (compared as `DUMP` bytes), under
/// `sanitize-dump-payload yes` (Redis checks every listpack entry); a hash too big for a
/// listpack and keys that exist go through the script, which keeps newest-wins; a small
/// write (a push) does not try `RESTORE`.
#[tokio::test]
async fn new_keys_are_restored_as_the_hash_redis_builds() {
    let Some(own) = own_server() else {
        return;
    };
    let port = own.port;
    for (name, value) in [("sanitize-dump-payload", "yes"), ("rdbcompression", "no")] {
        assert_eq!(cli(port, &["CONFIG", "SET", name, value]).trim(), "OK");
    }
    let store = RedisOnlineStore::new(RedisConfig::standalone("127.0.0.1", port));
    let t = view("v", &["a", "b", "c"]);
    let long = "x".repeat(80);
    let rows: Vec<_> = (1..=ROWS)
        .map(|id| {
            let c = match id {
                7 => Some(Value::string(&long)),
                _ if id % 3 == 0 => None,
                _ => Some(Value::string("s".repeat(id as usize % 50))),
            };
            (
                id,
                1_700_000_000_000_000 + id,
                vec![
                    Some(Value::int64(id * 1000)),
                    Some(Value::double(id as f64)),
                    c,
                ],
            )
        })
        .collect();
    assert_eq!(write(&store, &t, &rows).await, ROWS as u64);
    assert_eq!(
        command_stat(port, "restore", "calls"),
        ROWS as u64 - 1,
        "row 7 is too big"
    );
    assert_eq!(command_stat(port, "restore", "failed_calls"), 0);

    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    for id in (1..=ROWS).filter(|&id| id != 7) {
        let restored = redis_key(&key(id), &t.project);
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&restored)
            .query_async(&mut conn)
            .await
            .expect("HGETALL");
        let mut hset = redis::cmd("HSET");
        hset.arg(b"copy");
        for (f, v) in &pairs {
            hset.arg(f).arg(v);
        }
        let (_, _, ours, redis_own): (u64, u64, Vec<u8>, Vec<u8>) = redis::pipe()
            .cmd("DEL")
            .arg("copy")
            .add_command(hset)
            .cmd("DUMP")
            .arg(&restored)
            .cmd("DUMP")
            .arg("copy")
            .query_async(&mut conn)
            .await
            .expect("DUMP");
        assert_eq!(ours, redis_own, "key {id}");
    }
    let got = read(&store, &t, &[1, 3, 7], &["a", "b", "c"]).await;
    assert_eq!(value(&got, 0, 0), Some(Value::int64(1000)));
    assert_eq!(value(&got, 2, 1), None, "row 3 had no c");
    assert_eq!(value(&got, 2, 2), Some(Value::string(&long)));
    assert_eq!(ts(&got, 1), Some(1_700_000_000_000_003));

    // Existing keys in a large write: refused by RESTORE, written by the script, older rows
    // skipped; a new key among them is still created.
    let restores = command_stat(port, "restore", "calls");
    let evals = command_stat(port, "evalsha", "calls");
    let again: Vec<_> = (1..=ROWS + 1)
        .map(|id| {
            let at = if id == 2 { 5 } else { 1_800_000_000_000_000 };
            (id, at, vec![Some(Value::int64(-id)), None, None])
        })
        .collect();
    assert_eq!(write(&store, &t, &again).await, ROWS as u64);
    assert!(command_stat(port, "evalsha", "calls") > evals);
    let got = read(&store, &t, &[1, 2, ROWS + 1], &["a", "c"]).await;
    assert_eq!(value(&got, 0, 0), Some(Value::int64(-1)));
    assert_eq!(cell(&got, 1, 0), None, "the newer row had no c");
    assert_eq!(
        value(&got, 0, 1),
        Some(Value::int64(2000)),
        "older row skipped"
    );
    assert_eq!(value(&got, 0, 2), Some(Value::int64(-ROWS - 1)));

    // A small write does not try RESTORE, even for a new key.
    let restores_now = command_stat(port, "restore", "calls");
    assert!(restores_now > restores);
    write(&store, &t, &[(ROWS + 2, 5, vec![None, None, None])]).await;
    assert_eq!(command_stat(port, "restore", "calls"), restores_now);
    let got = read(&store, &t, &[ROWS + 2], &["a"]).await;
    assert_eq!(ts(&got, 0), Some(5));
}

/// Rows in the `RESTORE` tests: enough to be a large write.
const ROWS: i64 = 1100;

/// A server that refuses `RESTORE` (here an ACL without it) still gets every row, through
/// the script, and is not sent `RESTORE` again.
#[tokio::test]
async fn a_server_refusing_restore_gets_every_row_through_the_script() {
    let Some(own) = own_server() else {
        return;
    };
    let port = own.port;
    let acl = [
        "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-restore",
    ];
    assert_eq!(cli(port, &acl).trim(), "OK");
    let config = RedisConfig::parse(
        RedisTopology::Standalone,
        &format!("127.0.0.1:{port},username=app,password=pw"),
    )
    .expect("config");
    let store = RedisOnlineStore::new(config);
    let t = view("v", &["f"]);
    let rows: Vec<_> = (1..=ROWS)
        .map(|id| (id, 5, vec![Some(Value::int64(id))]))
        .collect();
    assert_eq!(write(&store, &t, &rows).await, ROWS as u64);
    let refused = command_stat(port, "restore", "rejected_calls");
    assert!(refused > 0, "the store tried RESTORE first");
    let more: Vec<_> = (ROWS + 1..=2 * ROWS)
        .map(|id| (id, 5, vec![Some(Value::int64(id))]))
        .collect();
    assert_eq!(write(&store, &t, &more).await, ROWS as u64);
    assert_eq!(command_stat(port, "restore", "rejected_calls"), refused);
    let got = read(&store, &t, &[1, 2 * ROWS], &["f"]).await;
    assert_eq!(value(&got, 0, 0), Some(Value::int64(1)));
    assert_eq!(value(&got, 0, 1), Some(Value::int64(2 * ROWS)));
}
