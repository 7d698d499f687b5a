//! The SQLite store: the conformance suite, then what only a file-backed store has (sharing
//! one file between processes, persistence, locks, foreign tables, corrupt rows).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use larder_online::{
    OnlineError, OnlineStore, SqliteConfig, SqliteOnlineStore, ViewTable, sqlite_key_slot,
    sqlite_table_name,
};
use larder_types::feast::Value;

use crate::conformance::{Fixture, Row, cell, key, read, ts, value, view, write};

pub async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteOnlineStore::open(&SqliteConfig::new(dir.path().join("online.db")))
        .expect("open sqlite store");
    Fixture {
        store: Arc::new(store),
        _guard: Box::new(dir),
    }
}

online_store_conformance!(conformance, crate::sqlite::fixture);

fn open(path: &Path) -> SqliteOnlineStore {
    SqliteOnlineStore::open(&SqliteConfig::new(path)).expect("open sqlite store")
}

/// A store on a new file in a temporary folder (kept while the `TempDir` lives), the
/// file's path, one view of the store and the view's table name.
fn file_store(
    view_name: &str,
    features: &[&str],
) -> (
    tempfile::TempDir,
    PathBuf,
    SqliteOnlineStore,
    ViewTable,
    String,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("online.db");
    let store = open(&path);
    let t = view(view_name, features);
    let name = sqlite_table_name(&t.project, &t.view);
    (dir, path, store, t, name)
}

#[tokio::test]
async fn persists_across_reopen_and_creates_folders() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data/nested/online.db");
    let t = view("v", &["f"]);
    {
        let store = open(&path);
        write(&store, &t, &[(1, 5, vec![Some(Value::int64(7))])]).await;
    }
    let store = open(&path);
    let got = read(&store, &t, &[1], &["f"]).await;
    assert_eq!(
        (ts(&got, 0), value(&got, 0, 0)),
        (Some(5), Some(Value::int64(7)))
    );
}

/// Round `r` writes every key with event time `r` and two features that must agree with it.
fn round_rows(round: i64, keys: i64) -> Vec<Row> {
    (0..keys)
        .map(|id| {
            let v = Some(Value::int64(round));
            (
                id,
                round,
                vec![v, Some(Value::string(format!("{id}@{round}")))],
            )
        })
        .collect()
}

/// Reads all keys until `done`, checking that every read succeeds, no key goes back in time
/// and no row is torn. Returns the number of reads.
async fn check_reads(
    store: &dyn OnlineStore,
    t: &ViewTable,
    keys: i64,
    mut done: impl FnMut() -> bool,
) -> usize {
    let ids: Vec<i64> = (0..keys).collect();
    let mut last = vec![-1; keys as usize];
    let mut reads = 0;
    while !done() {
        let got = read(store, t, &ids, &["n", "s"]).await;
        reads += 1;
        for id in 0..keys {
            let row = id as usize;
            let Some(at) = ts(&got, row) else { continue };
            assert!(
                at >= last[row],
                "key {id} went back from {} to {at}",
                last[row]
            );
            last[row] = at;
            assert_eq!(value(&got, 0, row), Some(Value::int64(at)), "torn row");
            assert_eq!(
                value(&got, 1, row),
                Some(Value::string(format!("{id}@{at}")))
            );
        }
    }
    reads
}

async fn assert_final_round(store: &dyn OnlineStore, t: &ViewTable, keys: i64, round: i64) {
    let ids: Vec<i64> = (0..keys).collect();
    let got = read(store, t, &ids, &["n", "s"]).await;
    for row in 0..keys as usize {
        assert_eq!(
            ts(&got, row),
            Some(round),
            "the last round of the writer landed"
        );
    }
}

const ROUNDS: i64 = 150;
const KEYS: i64 = 200;

/// Two stores on one file, each on its own thread and runtime (like `larder serve` next to
/// `larder materialize`): the reader never fails or blocks for long while the writer works.
#[test]
fn reader_and_writer_stores_share_one_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("online.db");
    let t = view("shared", &["n", "s"]);
    let done = Arc::new(AtomicBool::new(false));
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };

    let writer = {
        let (path, t, done) = (path.clone(), t.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let store = open(&path);
            runtime().block_on(async {
                for round in 0..ROUNDS {
                    write(&store, &t, &round_rows(round, KEYS)).await;
                }
            });
            done.store(true, Ordering::SeqCst);
        })
    };
    let reader = {
        let (path, t, done) = (path.clone(), t.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let store = open(&path);
            runtime().block_on(check_reads(&store, &t, KEYS, || {
                done.load(Ordering::SeqCst)
            }))
        })
    };

    let deadline = Instant::now() + Duration::from_secs(120);
    while !(writer.is_finished() && reader.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "reader and writer did not finish in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.join().expect("writer thread");
    let reads = reader.join().expect("reader thread");
    assert!(reads > 0);
    let store = open(&path);
    runtime().block_on(assert_final_round(&store, &t, KEYS, ROUNDS - 1));
}

const CHILD_DB: &str = "LARDER_ONLINE_TEST_WRITER_DB";
const CHILD_PROJECT: &str = "LARDER_ONLINE_TEST_WRITER_PROJECT";

/// The writer half of `reader_and_writer_processes`, run as a child process.
#[tokio::test]
#[ignore = "run as a child process by reader_and_writer_processes"]
async fn writer_process() {
    let (Ok(path), Ok(project)) = (std::env::var(CHILD_DB), std::env::var(CHILD_PROJECT)) else {
        return;
    };
    let store = open(Path::new(&path));
    let t = ViewTable::new(project, "shared", ["n", "s"]);
    for round in 0..ROUNDS {
        write(&store, &t, &round_rows(round, KEYS)).await;
    }
}

/// The real deployment shape: another process materializes into the file being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_and_writer_processes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("online.db");
    let store = open(&path);
    let t = view("shared", &["n", "s"]);
    store
        .update_infra(std::slice::from_ref(&t), &[])
        .await
        .expect("create table");

    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "sqlite::writer_process",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &path)
        .env(CHILD_PROJECT, &t.project)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the writer process");

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut status = None;
    let reads = check_reads(&store, &t, KEYS, || {
        status = child.try_wait().expect("child status");
        if status.is_none() && Instant::now() > deadline {
            let _ = child.kill();
            panic!("the writer process did not finish in time");
        }
        status.is_some()
    })
    .await;
    let status = status.expect("the child exited");
    assert!(status.success(), "writer process failed: {status}");
    assert!(reads > 0);
    assert_final_round(&store, &t, KEYS, ROUNDS - 1).await;
}

/// The page size of the database file at `path`, read with a connection of its own.
fn page_size(path: &Path) -> u32 {
    rusqlite::Connection::open(path)
        .expect("raw connection")
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .expect("page size")
}

/// `page_size` applies to a database the store creates; an existing one keeps its own and
/// still serves reads and writes.
#[tokio::test]
async fn page_size_applies_to_new_databases_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("online.db");
    let t = view("v", &["f", "g"]);
    {
        let store = SqliteOnlineStore::open(&SqliteConfig {
            page_size: Some(1024),
            ..SqliteConfig::new(&path)
        })
        .expect("open");
        let rows: Vec<Row> = (1..=200)
            .map(|k| {
                (
                    k,
                    1,
                    vec![Some(Value::int64(k)), Some(Value::string("x".repeat(300)))],
                )
            })
            .collect();
        write(&store, &t, &rows).await;
    }
    assert_eq!(page_size(&path), 1024);
    let store = SqliteOnlineStore::open(&SqliteConfig {
        page_size: Some(8192),
        ..SqliteConfig::new(&path)
    })
    .expect("reopen with another page size");
    write(&store, &t, &[(7, 2, vec![Some(Value::int64(70)), None])]).await;
    let got = read(&store, &t, &[7, 200], &["f", "g"]).await;
    assert_eq!(value(&got, 0, 0), Some(Value::int64(70)));
    assert_eq!(value(&got, 0, 1), Some(Value::int64(200)));
    assert_eq!(value(&got, 1, 1), Some(Value::string("x".repeat(300))));
    assert_eq!(
        page_size(&path),
        1024,
        "an existing database keeps its page size"
    );
}

/// Without a configured page size a new database gets the store's default (1 KiB pages:
/// cheaper pushes); an existing one, say from an earlier Larder with SQLite's 4096, keeps
/// its own and serves as before.
#[tokio::test]
async fn new_databases_get_the_default_page_size_and_old_ones_keep_theirs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let t = view("v", &["f", "g"]);
    let rows: Vec<Row> = (1..=50)
        .map(|k| {
            (
                k,
                1,
                vec![Some(Value::int64(k)), Some(Value::string("y".repeat(2000)))],
            )
        })
        .collect();
    let fresh = dir.path().join("fresh.db");
    {
        let store = SqliteOnlineStore::open(&SqliteConfig::new(&fresh)).expect("open");
        write(&store, &t, &rows).await;
        // Rows wider than a page continue on overflow pages and read back whole.
        let got = read(&store, &t, &[3, 50], &["f", "g"]).await;
        assert_eq!(value(&got, 1, 0), Some(Value::string("y".repeat(2000))));
        assert_eq!(value(&got, 0, 1), Some(Value::int64(50)));
    }
    assert_eq!(page_size(&fresh), SqliteConfig::DEFAULT_PAGE_SIZE);
    assert_eq!(SqliteConfig::DEFAULT_PAGE_SIZE, 1024);

    let old = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&old).expect("raw connection");
        conn.pragma_update(None, "page_size", 4096)
            .expect("page size");
        conn.execute_batch("CREATE TABLE earlier (x INTEGER)")
            .expect("a table");
    }
    let store = SqliteOnlineStore::open(&SqliteConfig::new(&old)).expect("open an old file");
    write(&store, &t, &rows).await;
    let got = read(&store, &t, &[50], &["g"]).await;
    assert_eq!(value(&got, 0, 0), Some(Value::string("y".repeat(2000))));
    assert_eq!(
        page_size(&old),
        4096,
        "an existing database keeps its page size"
    );
}

/// A write lock held elsewhere beyond `busy_timeout` fails the write as retryable, while
/// reads go on (WAL).
#[tokio::test]
async fn held_write_lock_blocks_writes_not_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("online.db");
    let config = SqliteConfig {
        busy_timeout: Duration::from_millis(100),
        ..SqliteConfig::new(&path)
    };
    let store = SqliteOnlineStore::open(&config).expect("open");
    let t = view("v", &["f"]);
    write(&store, &t, &[(1, 1, vec![Some(Value::int64(1))])]).await;

    let other = rusqlite::Connection::open(&path).expect("raw connection");
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");

    let got = read(&store, &t, &[1], &["f"]).await;
    assert_eq!(value(&got, 0, 0), Some(Value::int64(1)), "reads proceed");
    let batch = crate::conformance::batch(&t, &[(1, 2, vec![None])]);
    let err = store
        .write_batch(&t, batch.clone())
        .await
        .expect_err("lock held");
    assert!(
        matches!(
            err,
            OnlineError::Unavailable {
                retryable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());

    other.execute_batch("COMMIT").expect("release");
    assert_eq!(
        store
            .write_batch(&t, batch)
            .await
            .expect("write after release"),
        1
    );
}

/// A table of Feast's own SQLite layout at the same name is refused, never dropped.
#[tokio::test]
async fn feast_layout_table_is_refused() {
    let (_dir, path, store, t, name) = file_store("driver_stats", &["f"]);
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    raw.execute_batch(&format!(
        "CREATE TABLE \"{name}\" (entity_key BLOB, feature_name TEXT, value BLOB, \
         event_ts timestamp, created_ts timestamp, PRIMARY KEY(entity_key, feature_name))"
    ))
    .expect("feast table");

    let incompatible = |err: OnlineError| match err {
        OnlineError::IncompatibleTable { table, .. } => assert_eq!(table, name),
        other => panic!("expected IncompatibleTable, got {other:?}"),
    };
    incompatible(
        store
            .update_infra(std::slice::from_ref(&t), &[])
            .await
            .expect_err("keep"),
    );
    let batch = crate::conformance::batch(&t, &[(1, 1, vec![None])]);
    incompatible(store.write_batch(&t, batch).await.expect_err("write"));
    let k = key(1);
    incompatible(store.read(&t, &[&k], &["f"]).await.expect_err("read"));
}

/// The home slots of keys are fixed by the file format: these must never change.
#[test]
fn key_slots_are_stable() {
    // The layout's multiply-rotate word hash then fmix64, as a signed integer (computed
    // independently in Python).
    assert_eq!(sqlite_key_slot(b""), 0);
    assert_eq!(sqlite_key_slot(b"larder"), -5871497508271268139);
    let bytes: Vec<u8> = (0..37).collect();
    assert_eq!(sqlite_key_slot(&bytes), 3097881650642703910);
    assert_ne!(sqlite_key_slot(&key(2)), sqlite_key_slot(&key(1)));
}

/// Writes a row for another key straight into `slot` (a stand-in for a key whose home slot
/// is the same as a real key's, which 64-bit hashes make too rare to find).
fn occupy(raw: &rusqlite::Connection, table: &str, slot: i64, other: &[u8], event_ts: i64) {
    raw.execute(
        &format!(
            "INSERT INTO \"{table}\" (slot, entity_key, event_ts, created_ts, payload) \
             VALUES (?1, ?2, ?3, NULL, x'01')"
        ),
        rusqlite::params![slot, other, event_ts],
    )
    .expect("occupy a slot");
}

fn stored_at(raw: &rusqlite::Connection, table: &str, slot: i64) -> Option<(Vec<u8>, i64)> {
    raw.query_row(
        &format!("SELECT entity_key, event_ts FROM \"{table}\" WHERE slot = ?1"),
        [slot],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ok()
}

/// Keys whose home slot is taken by other keys probe on to the next free slot: they are
/// written there, read back from there, updated newest-wins there, and the other keys'
/// rows are never touched.
#[tokio::test]
async fn keys_probe_past_slots_taken_by_other_keys() {
    let (_dir, path, store, t, name) = file_store("v", &["f"]);
    store
        .update_infra(std::slice::from_ref(&t), &[])
        .await
        .expect("create the table");
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    let (k1, k2) = (key(1), key(2));
    let (h1, h2) = (sqlite_key_slot(&k1), sqlite_key_slot(&k2));
    // Key 1's home and the next slot are taken by two other keys; key 2's home is free.
    occupy(&raw, &name, h1, b"other-a", 1_000);
    occupy(&raw, &name, h1.wrapping_add(1), b"other-b", 1_000);

    let v = |n| vec![Some(Value::int64(n))];
    assert_eq!(write(&store, &t, &[(1, 10, v(1)), (2, 10, v(2))]).await, 2);
    assert_eq!(
        stored_at(&raw, &name, h1.wrapping_add(2)),
        Some((k1.clone(), 10))
    );
    assert_eq!(stored_at(&raw, &name, h2), Some((k2.clone(), 10)));
    // Newer wins at the probed slot, older is skipped, and nothing lands anywhere else.
    assert_eq!(write(&store, &t, &[(1, 20, v(3))]).await, 1);
    assert_eq!(write(&store, &t, &[(1, 15, v(4))]).await, 0);
    let got = read(&store, &t, &[1, 2, 3, 1], &["f"]).await;
    assert_eq!(
        (0..4)
            .map(|r| (ts(&got, r), value(&got, 0, r)))
            .collect::<Vec<_>>(),
        vec![
            (Some(20), Some(Value::int64(3))),
            (Some(10), Some(Value::int64(2))),
            (None, None),
            (Some(20), Some(Value::int64(3))),
        ]
    );
    assert_eq!(
        stored_at(&raw, &name, h1),
        Some((b"other-a".to_vec(), 1_000))
    );
    assert_eq!(
        stored_at(&raw, &name, h1.wrapping_add(1)),
        Some((b"other-b".to_vec(), 1_000))
    );
    let rows: i64 = raw
        .query_row(&format!("SELECT count(*) FROM \"{name}\""), [], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(rows, 4);
}

/// A table in the layout before version 2 (keyed by the entity key blob) is refused with
/// a message saying `apply` migrates it; `apply` (update_infra) rewrites it in place with
/// every row kept.
#[tokio::test]
async fn apply_migrates_the_layout_before_slots() {
    let (_dir, path, store, t, name) = file_store("v", &["a", "b"]);
    // Rows of the old layout hold the same payloads: write them through a current table,
    // then copy them into a table of the old shape.
    let rows: Vec<Row> = (0..300)
        .map(|id| {
            (
                id,
                100 + id,
                vec![
                    Some(Value::int64(id)),
                    Some(Value::string(format!("s{id}"))),
                ],
            )
        })
        .collect();
    write(&store, &t, &rows).await;
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    raw.execute_batch(&format!(
        "CREATE TABLE old (entity_key BLOB NOT NULL PRIMARY KEY, event_ts INTEGER NOT NULL, \
         created_ts INTEGER, payload BLOB NOT NULL) WITHOUT ROWID; \
         INSERT INTO old SELECT entity_key, event_ts, created_ts, payload FROM \"{name}\"; \
         DROP TABLE \"{name}\"; ALTER TABLE old RENAME TO \"{name}\";"
    ))
    .expect("turn the table into the old layout");

    let advice = |what: &str, err: OnlineError| {
        assert!(
            matches!(err, OnlineError::IncompatibleTable { .. }),
            "{what}: {err:?}"
        );
        assert!(
            err.to_string().contains("`larder apply` migrates it"),
            "{what}: {err}"
        );
    };
    let k = key(1);
    advice(
        "read",
        store.read(&t, &[&k], &["a"]).await.expect_err("read"),
    );
    let batch = crate::conformance::batch(&t, &[(1, 1, vec![None, None])]);
    advice(
        "write",
        store.write_batch(&t, batch).await.expect_err("write"),
    );

    store
        .update_infra(std::slice::from_ref(&t), &[])
        .await
        .expect("migrate");
    let ids: Vec<i64> = (0..300).collect();
    let got = read(&store, &t, &ids, &["a", "b"]).await;
    for id in 0..300 {
        let r = usize::try_from(id).expect("small");
        assert_eq!(ts(&got, r), Some(100 + id));
        assert_eq!(value(&got, 0, r), Some(Value::int64(id)));
        assert_eq!(value(&got, 1, r), Some(Value::string(format!("s{id}"))));
    }
    // The migrated table takes newest-wins writes, and a second apply changes nothing.
    assert_eq!(write(&store, &t, &[(7, 1, vec![None, None])]).await, 0);
    store
        .update_infra(std::slice::from_ref(&t), &[])
        .await
        .expect("apply again");
    assert_eq!(ts(&read(&store, &t, &[7], &["a"]).await, 0), Some(107));
}

#[tokio::test]
async fn malformed_payload_is_corrupt() {
    let (_dir, path, store, t, name) = file_store("v", &["f"]);
    write(&store, &t, &[(1, 1, vec![Some(Value::int64(1))])]).await;
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    raw.execute(&format!("UPDATE \"{name}\" SET payload = x'01050061'"), [])
        .expect("damage the row");
    let k = key(1);
    let err = store.read(&t, &[&k], &["f"]).await.expect_err("corrupt");
    assert!(matches!(err, OnlineError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains(&name), "{err}");
}

#[tokio::test]
async fn a_folder_cannot_be_opened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = SqliteOnlineStore::open(&SqliteConfig::new(dir.path())).expect_err("a folder");
    assert!(
        matches!(
            err,
            OnlineError::Unavailable {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("cannot open"), "{err}");
}

/// Reads keep the bytes of a feature written as the null `Value` apart from a missing one
/// (the facade reports the first as a null value, the second as not found).
#[tokio::test]
async fn null_value_and_missing_feature_differ() {
    let fixture = fixture().await;
    let store = &*fixture.store;
    let t = view("v", &["a", "b"]);
    write(store, &t, &[(1, 1, vec![Some(Value::NULL), None])]).await;
    let got = read(store, &t, &[1], &["a", "b"]).await;
    assert_eq!(cell(&got, 0, 0), Some(Vec::new()));
    assert_eq!(cell(&got, 1, 0), None);
}

/// Run by `concurrent_opens_of_a_new_file_all_succeed` in child processes: opens the store
/// at `CHILD_DB` when the parent says go (the file `CHILD_DB.go` appears) and creates a
/// table of its own.
#[tokio::test]
#[ignore = "run as a child process by concurrent_opens_of_a_new_file_all_succeed"]
async fn opener_process() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let go = PathBuf::from(format!("{path}.go"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !go.exists() {
        assert!(Instant::now() < deadline, "no go signal");
        std::thread::sleep(Duration::from_micros(200));
    }
    // What `larder apply` does: open, then create this project's table.
    let table = ViewTable::new(format!("p{}", std::process::id()), "v", ["f"]);
    let result = match SqliteOnlineStore::open(&SqliteConfig::new(&path)) {
        Ok(store) => store.update_infra(std::slice::from_ref(&table), &[]).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(3);
    }
}

/// Several processes opening one new file at once (two `larder apply`s of different
/// projects sharing an online store, say) all succeed: SQLite refuses to switch a file to
/// WAL while another process holds it, without calling its busy handler, so the switch is
/// retried.
#[test]
fn concurrent_opens_of_a_new_file_all_succeed() {
    let exe = std::env::current_exe().expect("test binary");
    for round in 0..8 {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("online.db");
        let children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(&exe)
                    .args([
                        "sqlite::opener_process",
                        "--exact",
                        "--ignored",
                        "--test-threads=1",
                    ])
                    .env(CHILD_DB, &path)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn an opener")
            })
            .collect();
        // Let the children start (and reach their wait), then release them together.
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(format!("{}.go", path.display()), b"").expect("go");
        for child in children {
            let out = child.wait_with_output().expect("opener exit");
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Whether a copy of the database file alone (without its WAL) holds `t`'s row for key 1:
/// true once a checkpoint has moved the commit out of the WAL.
fn checkpointed(path: &Path, t: &ViewTable) -> bool {
    let copy = path.with_extension("copy.db");
    std::fs::copy(path, &copy).expect("copy the database file");
    let raw = rusqlite::Connection::open(&copy).expect("open the copy");
    let table = sqlite_table_name(&t.project, &t.view);
    let rows: Result<i64, _> =
        raw.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
            r.get(0)
        });
    drop(raw);
    std::fs::remove_file(&copy).expect("remove the copy");
    rows.is_ok_and(|n| n > 0)
}

/// With `background_checkpoint` a small commit reaches the database file shortly after,
/// without the WAL filling up first; without it, the commit stays in the WAL until the
/// writer's own checkpoint comes due.
#[tokio::test]
async fn background_checkpoint_moves_small_commits_into_the_database_file() {
    let t = view("v", &["f"]);
    for background in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("online.db");
        let config = SqliteConfig {
            background_checkpoint: background,
            ..SqliteConfig::new(&path)
        };
        let store = SqliteOnlineStore::open(&config).expect("open");
        write(&store, &t, &[(1, 1, vec![Some(Value::int64(1))])]).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = checkpointed(&path, &t);
        while background && !seen && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen = checkpointed(&path, &t);
        }
        if !background {
            tokio::time::sleep(Duration::from_millis(500)).await;
            seen = checkpointed(&path, &t);
        }
        assert_eq!(seen, background, "background_checkpoint: {background}");
        // Later writes still land and read back.
        write(&store, &t, &[(1, 2, vec![Some(Value::int64(2))])]).await;
        let got = read(&store, &t, &[1], &["f"]).await;
        assert_eq!(value(&got, 0, 0), Some(Value::int64(2)));
    }
}

/// Sets key 1's event time in `table` behind the store's back, as another process would.
fn retime(raw: &rusqlite::Connection, table: &str, event_ts: i64) {
    let changed = raw
        .execute(&format!("UPDATE \"{table}\" SET event_ts = ?1"), [event_ts])
        .expect("update the row");
    assert_eq!(changed, 1);
}

fn store_with_reuse(path: &Path, snapshot_reuse: Duration) -> SqliteOnlineStore {
    SqliteOnlineStore::open(&SqliteConfig {
        snapshot_reuse,
        ..SqliteConfig::new(path)
    })
    .expect("open")
}

/// A read transaction is reused for `snapshot_reuse`: a write from outside the process
/// stays unseen until then, but any write through a store of this process (this one or
/// another on the same file) ends it at once.
#[tokio::test]
async fn reads_reuse_a_snapshot_until_a_write_of_this_process() {
    let (_dir, path, _store, t, name) = file_store("v", &["f"]);
    let long = Duration::from_secs(600);
    let (store, other) = (store_with_reuse(&path, long), store_with_reuse(&path, long));
    let v = |n| vec![Some(Value::int64(n))];
    write(&store, &t, &[(1, 10, v(1))]).await;
    assert_eq!(ts(&read(&store, &t, &[1], &["f"]).await, 0), Some(10));

    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    retime(&raw, &name, 11);
    assert_eq!(
        ts(&read(&store, &t, &[1], &["f"]).await, 0),
        Some(10),
        "the snapshot is reused"
    );
    // A store that has not read yet begins its own.
    assert_eq!(ts(&read(&other, &t, &[1], &["f"]).await, 0), Some(11));

    write(&other, &t, &[(1, 20, v(2))]).await;
    assert_eq!(ts(&read(&store, &t, &[1], &["f"]).await, 0), Some(20));
    retime(&raw, &name, 21);
    write(&store, &t, &[(2, 1, v(3))]).await;
    assert_eq!(ts(&read(&other, &t, &[1], &["f"]).await, 0), Some(21));
}

/// A write from outside the process shows up once `snapshot_reuse` has passed, and at
/// once when it is 0.
#[tokio::test]
async fn writes_from_elsewhere_show_up_after_snapshot_reuse() {
    for reuse in [SqliteConfig::DEFAULT_SNAPSHOT_REUSE, Duration::ZERO] {
        let (_dir, path, _store, t, name) = file_store("v", &["f"]);
        let store = store_with_reuse(&path, reuse);
        write(&store, &t, &[(1, 10, vec![None])]).await;
        let raw = rusqlite::Connection::open(&path).expect("raw connection");
        for at in 11..14 {
            assert_eq!(ts(&read(&store, &t, &[1], &["f"]).await, 0), Some(at - 1));
            retime(&raw, &name, at);
            std::thread::sleep(reuse);
            assert_eq!(
                ts(&read(&store, &t, &[1], &["f"]).await, 0),
                Some(at),
                "snapshot_reuse {reuse:?}"
            );
        }
    }
}

/// Whether a checkpoint could copy the whole WAL and empty it now (no read transaction of
/// another connection holds it back).
fn wal_can_restart(raw: &rusqlite::Connection) -> bool {
    let busy: i64 = raw
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
        .expect("checkpoint");
    busy == 0
}

/// An idle connection's read transaction holds the WAL back only briefly: the sweeper ends
/// it once it is older than `snapshot_reuse`.
#[tokio::test]
async fn idle_snapshots_end_soon() {
    let (_dir, path, _store, t, _name) = file_store("v", &["f"]);
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    raw.busy_timeout(Duration::ZERO).expect("no busy wait");
    for (reuse, held) in [
        (Duration::from_secs(600), true),
        (SqliteConfig::DEFAULT_SNAPSHOT_REUSE, false),
    ] {
        let store = store_with_reuse(&path, reuse);
        write(&store, &t, &[(1, 10, vec![None])]).await;
        read(&store, &t, &[1], &["f"]).await;
        if held {
            assert!(!wal_can_restart(&raw), "the snapshot is held for reuse");
            drop(store);
            assert!(wal_can_restart(&raw), "closing the store ends it");
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !wal_can_restart(&raw) {
            assert!(
                Instant::now() < deadline,
                "an idle read transaction stayed open"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Reads between writes, whose transactions stay open for reuse, still let the WAL start
/// over: its file stays near the size at which the writer checkpoints.
#[tokio::test]
async fn reads_between_writes_let_the_wal_start_over() {
    let (_dir, path, store, t, _name) = file_store("v", &["f"]);
    let wide = Some(Value::string("x".repeat(1000)));
    let ids: Vec<i64> = (0..200).collect();
    for round in 1..=150 {
        let rows: Vec<Row> = ids
            .iter()
            .map(|&id| (id, round, vec![wide.clone()]))
            .collect();
        write(&store, &t, &rows).await;
        let got = read(&store, &t, &ids, &["f"]).await;
        assert_eq!(ts(&got, 0), Some(round));
    }
    let wal = std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
    // The writer checkpoints at 8192 pages (1 KiB each, plus a 24-byte frame header); 150
    // rounds write about four times that.
    assert!(wal < 12 << 20, "the WAL grew to {wal} bytes");
}

/// Reads on other threads all along, each short read reusing its snapshot, see every write
/// of this process once it returned, and do not keep the WAL from starting over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_see_each_write_and_let_the_wal_start_over() {
    let (_dir, path, store, t, _name) = file_store("v", &["f"]);
    let store = Arc::new(store);
    let wide = Some(Value::string("x".repeat(1000)));
    let ids: Vec<i64> = (0..200).collect();
    let rows = |round: i64| -> Vec<Row> {
        ids.iter()
            .map(|&id| (id, round, vec![wide.clone()]))
            .collect()
    };
    write(&*store, &t, &rows(1)).await;
    let done = Arc::new(AtomicBool::new(false));
    // The last round whose write has returned.
    let written = Arc::new(AtomicI64::new(1));
    let readers: Vec<_> = (0..2)
        .map(|reader| {
            let (store, t) = (store.clone(), t.clone());
            let (done, written) = (done.clone(), written.clone());
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let before = written.load(Ordering::SeqCst);
                    let got = read(&*store, &t, &[7, 150], &["f"]).await;
                    for row in 0..2 {
                        let seen = ts(&got, row).expect("the key was written");
                        assert!(
                            seen >= before,
                            "reader {reader}: a read begun after round {before} was written saw \
                             round {seen}"
                        );
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for round in 2..=150 {
        write(&*store, &t, &rows(round)).await;
        written.store(round, Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        assert!(reader.await.expect("reader") > 0, "a reader never read");
    }
    let wal = std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
    // As in `reads_between_writes_let_the_wal_start_over`: about four checkpoints' worth was
    // written.
    assert!(wal < 12 << 20, "the WAL grew to {wal} bytes");
}
