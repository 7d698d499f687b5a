//! The `RegistryStore` conformance suite, run against every backend, plus backend-specific tests.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder_registry::store::{Generation, RegistryStore, StoreError, open_store};

use crate::sql_fixtures;

/// Opens a fresh store instance on the location under test; every call returns a new
/// instance, as a separate process would.
type Open<'a> = &'a (dyn Fn() -> Arc<dyn RegistryStore> + Send + Sync);

/// Instantiates every conformance case for one backend. `$setup` evaluates to
/// `Some((guard, open))`: `guard` keeps the location alive, `open` is an [`Open`] closure;
/// or to `None` (after printing why) when the backend's service is not configured.
macro_rules! store_conformance_suite {
    ($backend:ident, $setup:expr) => {
        mod $backend {
            use super::*;

            store_conformance_suite!(@cases $setup;
                load_of_missing_registry_is_none,
                first_commit_creates_the_blob,
                create_when_a_blob_exists_conflicts,
                stale_generation_conflicts,
                update_returns_a_new_generation,
                committing_identical_bytes_succeeds,
                expected_generation_after_delete_conflicts,
                delete_is_idempotent,
                arbitrary_bytes_round_trip,
                concurrent_writers_lose_no_update,
                exactly_one_racing_commit_wins,
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

store_conformance_suite!(local_file, Some(local_fixture()));
store_conformance_suite!(memory, Some(memory_fixture()));
store_conformance_suite!(sqlite, Some(sql_fixtures::sqlite_fixture()));
store_conformance_suite!(
    sqlite_with_replica,
    Some(sql_fixtures::sqlite_replica_fixture())
);
store_conformance_suite!(postgres, sql_fixtures::postgres_fixture());
store_conformance_suite!(
    postgres_with_replica,
    sql_fixtures::postgres_replica_fixture()
);

fn local_fixture() -> (
    tempfile::TempDir,
    impl Fn() -> Arc<dyn RegistryStore> + Send + Sync,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().to_path_buf();
    // A relative path in a directory that does not exist yet: the first commit creates it.
    let open = move || open_store("registry/registry.json", &base).expect("open local store");
    (dir, open)
}

fn memory_fixture() -> ((), impl Fn() -> Arc<dyn RegistryStore> + Send + Sync) {
    let url = format!("memory://{}/registry.json", uuid::Uuid::new_v4().simple());
    let open = move || open_store(&url, Path::new("/unused")).expect("open memory store");
    ((), open)
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, store: &dyn RegistryStore) {
    match result {
        Err(StoreError::Conflict { location }) => assert_eq!(location, store.location()),
        other => panic!(
            "expected a conflict at `{}`, got {other:?}",
            store.location()
        ),
    }
}

async fn load_bytes(store: &dyn RegistryStore) -> Option<(Bytes, Generation)> {
    store
        .load()
        .await
        .expect("load")
        .map(|blob| (blob.bytes, blob.generation))
}

async fn load_of_missing_registry_is_none(open: Open<'_>) {
    assert!(load_bytes(&*open()).await.is_none());
}

async fn first_commit_creates_the_blob(open: Open<'_>) {
    let store = open();
    let blob = Bytes::from_static(b"{\"projects\":{}}");
    let generation = store
        .commit(None, blob.clone())
        .await
        .expect("first commit");
    assert_eq!(
        load_bytes(&*store).await,
        Some((blob.clone(), generation.clone()))
    );
    // Another instance (another process) sees the same blob and generation.
    assert_eq!(load_bytes(&*open()).await, Some((blob, generation)));
}

async fn create_when_a_blob_exists_conflicts(open: Open<'_>) {
    let (first, second) = (open(), open());
    let generation = first
        .commit(None, Bytes::from_static(b"first"))
        .await
        .expect("commit");
    assert_conflict(
        second.commit(None, Bytes::from_static(b"second")).await,
        &*second,
    );
    let expected = Some((Bytes::from_static(b"first"), generation));
    assert_eq!(load_bytes(&*first).await, expected);
}

async fn stale_generation_conflicts(open: Open<'_>) {
    let (writer, late) = (open(), open());
    let g1 = writer
        .commit(None, Bytes::from_static(b"one"))
        .await
        .expect("create");
    let g2 = writer
        .commit(Some(&g1), Bytes::from_static(b"two"))
        .await
        .expect("update");
    assert_conflict(
        late.commit(Some(&g1), Bytes::from_static(b"three")).await,
        &*late,
    );
    assert_eq!(
        load_bytes(&*late).await,
        Some((Bytes::from_static(b"two"), g2))
    );
}

async fn update_returns_a_new_generation(open: Open<'_>) {
    let store = open();
    let g1 = store
        .commit(None, Bytes::from_static(b"one"))
        .await
        .expect("create");
    let g2 = store
        .commit(Some(&g1), Bytes::from_static(b"two"))
        .await
        .expect("update");
    assert_ne!(g1, g2);
    assert_eq!(
        load_bytes(&*open()).await,
        Some((Bytes::from_static(b"two"), g2.clone()))
    );
    // The returned generation is the one to commit against next.
    let g3 = store
        .commit(Some(&g2), Bytes::from_static(b"three"))
        .await
        .expect("update");
    assert!(g3 != g2 && g3 != g1);
}

/// Whether the generation changes is backend-specific (content hashes and S3 ETags do not,
/// version counters do); the commit must succeed and the generation it returns must work.
async fn committing_identical_bytes_succeeds(open: Open<'_>) {
    let store = open();
    let same = Bytes::from_static(b"same");
    let g1 = store.commit(None, same.clone()).await.expect("create");
    let g2 = store
        .commit(Some(&g1), same.clone())
        .await
        .expect("identical update");
    assert_eq!(load_bytes(&*store).await, Some((same, g2.clone())));
    store
        .commit(Some(&g2), Bytes::from_static(b"next"))
        .await
        .expect("update after");
}

async fn expected_generation_after_delete_conflicts(open: Open<'_>) {
    let store = open();
    let generation = store
        .commit(None, Bytes::from_static(b"one"))
        .await
        .expect("create");
    open().delete().await.expect("delete");
    assert_conflict(
        store
            .commit(Some(&generation), Bytes::from_static(b"two"))
            .await,
        &*store,
    );
    assert!(load_bytes(&*store).await.is_none());
}

async fn delete_is_idempotent(open: Open<'_>) {
    let store = open();
    store
        .delete()
        .await
        .expect("delete of a registry never written");
    store
        .commit(None, Bytes::from_static(b"one"))
        .await
        .expect("create");
    store.delete().await.expect("delete");
    assert!(load_bytes(&*store).await.is_none());
    assert!(load_bytes(&*open()).await.is_none());
    store.delete().await.expect("second delete");
    // A deleted registry can be created again.
    let generation = store
        .commit(None, Bytes::from_static(b"again"))
        .await
        .expect("create");
    assert_eq!(
        load_bytes(&*store).await,
        Some((Bytes::from_static(b"again"), generation))
    );
}

async fn arbitrary_bytes_round_trip(open: Open<'_>) {
    let store = open();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mebibyte: Vec<u8> = (0..1 << 20)
        .map(|_| {
            // xorshift64: every byte value, no pattern a backend could compress away.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    let blobs = [
        Bytes::new(),
        Bytes::from_static(b"\0\xff\n\r\0 nul and invalid utf-8 \xc3\x28"),
        Bytes::from((0..=255).collect::<Vec<u8>>()),
        Bytes::from(mebibyte),
        Bytes::new(),
    ];
    let mut generation = None;
    for blob in blobs {
        let next = store
            .commit(generation.as_ref(), blob.clone())
            .await
            .expect("commit");
        let (bytes, loaded) = load_bytes(&*open()).await.expect("blob exists");
        assert!(
            bytes == blob,
            "{} bytes came back as {} bytes",
            blob.len(),
            bytes.len()
        );
        assert_eq!(loaded, next);
        generation = Some(next);
    }
}

const WRITERS: u64 = 8;
const INCREMENTS: u64 = 10;
const MAX_ATTEMPTS: usize = 1_000;

/// Each writer, through its own store instance, does read-modify-write increments of a
/// counter, retrying on conflict. A lost update shows as a final count below the total.
async fn concurrent_writers_lose_no_update(open: Open<'_>) {
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = open();
            tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..INCREMENTS {
                    conflicts += increment(&*store).await;
                }
                conflicts
            })
        })
        .collect();
    let all = async {
        let mut conflicts = 0;
        for writer in writers {
            conflicts += writer.await.expect("writer task");
        }
        conflicts
    };
    let conflicts = tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("writers finish in time");
    let (bytes, _) = load_bytes(&*open()).await.expect("counter exists");
    assert_eq!(
        parse_counter(&bytes),
        WRITERS * INCREMENTS,
        "{conflicts} conflicts"
    );
}

const RACERS: usize = 6;
const ROUNDS: usize = 5;

/// Several instances commit against the same generation at the same moment, round after
/// round: exactly one wins each round, every other one gets a `Conflict`, and the blob is the
/// winner's.
async fn exactly_one_racing_commit_wins(open: Open<'_>) {
    let stores: Vec<Arc<dyn RegistryStore>> = (0..RACERS).map(|_| open()).collect();
    let mut expected: Option<Generation> = None;
    for round in 0..ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
        let racers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(racer, store)| {
                let (store, barrier, expected) = (store.clone(), barrier.clone(), expected.clone());
                tokio::spawn(async move {
                    let blob = Bytes::from(format!("round {round} racer {racer}"));
                    barrier.wait().await;
                    (blob.clone(), store.commit(expected.as_ref(), blob).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            let (blob, result) = racer.await.expect("racer task");
            match result {
                Ok(generation) => winners.push((blob, generation)),
                Err(err) if err.is_conflict() => {}
                Err(err) => panic!("round {round}: commit failed: {err}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        let (blob, generation) = winners.remove(0);
        assert_eq!(load_bytes(&*open()).await, Some((blob, generation.clone())));
        expected = Some(generation);
    }
}

/// Increments the counter once; returns how many conflicts it took.
pub(crate) async fn increment(store: &dyn RegistryStore) -> usize {
    for attempt in 0..MAX_ATTEMPTS {
        let (count, generation) = match store.load().await.expect("load") {
            Some(blob) => (parse_counter(&blob.bytes), Some(blob.generation)),
            None => (0, None),
        };
        // Let other writers run between the read and the write, as a slow apply would.
        tokio::task::yield_now().await;
        let next = Bytes::from(format!("count={}", count + 1));
        match store.commit(generation.as_ref(), next).await {
            Ok(_) => return attempt,
            Err(err) if err.is_conflict() => continue,
            Err(err) => panic!("commit failed: {err}"),
        }
    }
    panic!("no successful commit in {MAX_ATTEMPTS} attempts")
}

pub(crate) fn parse_counter(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.strip_prefix("count="))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("not a counter: {bytes:?}"))
}

/// Runs the ignored test `name` of this binary in `count` child processes at once, with
/// `env` set to `value`, and waits (at most 120 s) for all of them to succeed.
pub fn run_child_tests(name: &str, env: &str, value: &std::ffi::OsStr, count: usize) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut children: Vec<_> = (0..count)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([name, "--exact", "--ignored", "--test-threads=1"])
                .env(env, value)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn child test process")
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for child in &mut children {
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for child") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("child process did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "child failed: {status}");
    }
}

mod local_file_backend {
    //! Tests of what only the local file backend does: directories, temp and lock files.

    use std::fs;

    use larder_registry::store::LocalFileStore;

    use super::*;

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|entry| {
                entry
                    .expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn commit_under_a_file_parent_fails_clearly() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("not_a_dir"), b"x").expect("write file");
        let path = dir.path().join("not_a_dir").join("registry.json");
        let store = LocalFileStore::new(&path).expect("store");
        let err = store
            .commit(None, Bytes::from_static(b"{}"))
            .await
            .expect_err("must fail");
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
        let message = err.to_string();
        let expected = format!(
            "cannot create the parent directory of registry at `{}`: ",
            path.display()
        );
        assert!(message.starts_with(&expected), "{message}");
        assert_eq!(dir_entries(dir.path()), ["not_a_dir"]);
    }

    #[tokio::test]
    async fn commit_over_a_directory_fails_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("registry.json");
        fs::create_dir(&path).expect("create dir");
        let store = LocalFileStore::new(&path).expect("store");
        let err = store.commit(None, Bytes::from_static(b"{}")).await;
        assert!(matches!(err, Err(StoreError::Io { .. })), "{err:?}");
        assert_eq!(
            dir_entries(dir.path()),
            ["registry.json", "registry.json.lock"]
        );
    }

    #[tokio::test]
    async fn a_held_lock_does_not_block_loading() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path().join("registry.json")).expect("store");
        let generation = store
            .commit(None, Bytes::from_static(b"v1"))
            .await
            .expect("commit");
        let lock = fs::File::create(store.lock_path()).expect("open lock file");
        lock.lock().expect("take lock");
        let loaded = tokio::time::timeout(Duration::from_secs(10), store.load())
            .await
            .expect("load does not wait for the lock")
            .expect("load");
        assert_eq!(loaded.map(|blob| blob.generation), Some(generation));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commit_waits_for_the_lock_holder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path().join("registry.json")).expect("store");
        let lock = fs::File::create(store.lock_path()).expect("open lock file");
        lock.lock().expect("take lock");
        let mut commit = {
            let store = store.clone();
            tokio::spawn(async move { store.commit(None, Bytes::from_static(b"v1")).await })
        };
        // Can only fail if the commit ignores the lock; a slow machine makes it pass vacuously.
        let early = tokio::time::timeout(Duration::from_millis(300), &mut commit).await;
        assert!(
            early.is_err(),
            "commit finished while the lock was held: {early:?}"
        );
        assert!(store.load().await.expect("load").is_none());
        drop(lock);
        tokio::time::timeout(Duration::from_secs(30), commit)
            .await
            .expect("commit finishes once the lock is released")
            .expect("commit task")
            .expect("commit");
    }

    #[tokio::test]
    async fn delete_removes_blob_and_lock_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path().join("registry.json")).expect("store");
        store
            .commit(None, Bytes::from_static(b"v1"))
            .await
            .expect("commit");
        store.delete().await.expect("delete");
        assert!(dir_entries(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn generation_is_the_content_hash() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalFileStore::new(dir.path().join("registry.json")).expect("store");
        // An earlier Larder (or the user) wrote the file by hand: no lock file, no commit.
        fs::write(store.path(), b"a").expect("write");
        let loaded = store.load().await.expect("load").expect("blob");
        let expected = "fnv1a128-d228cb696f1a8caf78912b704e4a8964-1";
        assert_eq!(loaded.generation, Generation(expected.to_string()));
        store
            .commit(Some(&loaded.generation), Bytes::from_static(b"b"))
            .await
            .expect("commit");
    }

    #[tokio::test]
    async fn open_store_resolves_relative_paths_against_the_base_dir() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_store("data/registry.json", dir.path()).expect("open");
        let expected = dir.path().join("data").join("registry.json");
        assert_eq!(store.location(), expected.display().to_string());
        store
            .commit(None, Bytes::from_static(b"{}"))
            .await
            .expect("commit");
        assert_eq!(fs::read(&expected).expect("read file"), b"{}");

        let url = format!("file://{}", expected.display());
        let by_url = open_store(&url, Path::new("/elsewhere")).expect("open file url");
        assert_eq!(by_url.location(), store.location());
        assert!(by_url.load().await.expect("load").is_some());
    }

    const CHILD_ENV: &str = "LARDER_TEST_REGISTRY_CHILD_PATH";
    const CHILD_INCREMENTS: u64 = 15;

    /// Two OS processes incrementing one counter through the lock file.
    #[test]
    fn separate_processes_lose_no_update() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("registry.json");
        super::run_child_tests(
            "store_conformance::local_file_backend::child_process_increments",
            CHILD_ENV,
            path.as_os_str(),
            2,
        );
        let bytes = fs::read(&path).expect("read counter");
        assert_eq!(parse_counter(&bytes), 2 * CHILD_INCREMENTS);
    }

    /// Run only by `separate_processes_lose_no_update`, in a child process.
    #[test]
    #[ignore = "child process of separate_processes_lose_no_update"]
    fn child_process_increments() {
        let Some(path) = std::env::var_os(CHILD_ENV) else {
            return;
        };
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let store = LocalFileStore::new(path).expect("store");
            for _ in 0..CHILD_INCREMENTS {
                increment(&store).await;
            }
        });
    }
}

mod open_store_errors {
    //! Messages for registry paths `open_store` cannot use.

    use super::*;

    fn open_error(path: &str) -> String {
        match open_store(path, Path::new("/base")) {
            Ok(store) => panic!("`{path}` opened as {store:?}"),
            Err(err) => {
                assert!(matches!(err, StoreError::InvalidLocation { .. }), "{err:?}");
                err.to_string()
            }
        }
    }

    #[test]
    fn unsupported_scheme_lists_the_supported_ones() {
        assert_eq!(
            open_error("ftp://x"),
            "registry path `ftp://x` has unsupported scheme `ftp`; use a local path, `file://`, \
             `memory://`, `s3://` (feature `aws`) or `gs://` (feature `gcp`)"
        );
    }

    #[cfg(not(feature = "aws"))]
    #[test]
    fn s3_without_the_aws_feature() {
        assert_eq!(
            open_error("s3://b/k"),
            "registry path `s3://b/k` needs Larder built with the `aws` feature"
        );
    }

    #[cfg(not(feature = "gcp"))]
    #[test]
    fn gcs_without_the_gcp_feature() {
        assert_eq!(
            open_error("gs://b/registry.json"),
            "registry path `gs://b/registry.json` needs Larder built with the `gcp` feature"
        );
    }

    /// Opening does no I/O, so it works without credentials or network.
    #[cfg(feature = "aws")]
    #[test]
    fn s3_opens_with_the_aws_feature() {
        let store = open_store("s3://bucket/dir/registry.json", Path::new("/base")).expect("open");
        assert_eq!(store.location(), "s3://bucket/dir/registry.json");
    }

    #[cfg(feature = "gcp")]
    #[test]
    fn gcs_opens_with_the_gcp_feature() {
        let store = open_store("gs://bucket/registry.json", Path::new("/base")).expect("open");
        assert_eq!(store.location(), "gs://bucket/registry.json");
    }

    #[test]
    fn sql_urls_point_to_registry_type_sql() {
        for url in ["sqlite:///data/registry.db", "postgresql://u:pw@db/reg"] {
            let message = open_error(url);
            assert!(message.contains("`registry_type: sql`"), "{message}");
            assert!(!message.contains(":pw@"), "{message}");
        }
    }

    #[test]
    fn credentials_in_the_url_are_rejected_and_not_echoed() {
        let message = open_error("s3://AKIAEXAMPLE:s3cr3t@bucket/registry.json");
        assert!(
            !message.contains("s3cr3t") && !message.contains("AKIAEXAMPLE"),
            "{message}"
        );
    }

    #[test]
    fn memory_opens_share_state_per_name_only() {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let a = open_store(&format!("memory://{name}/r.json"), Path::new("/")).expect("open");
        let b = open_store(&format!("memory://{name}/r.json"), Path::new("/")).expect("open");
        let other = open_store(&format!("memory://{name}x/r.json"), Path::new("/")).expect("open");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            a.commit(None, Bytes::from_static(b"x"))
                .await
                .expect("commit");
            assert!(b.load().await.expect("load").is_some());
            assert!(other.load().await.expect("load").is_none());
        });
    }
}
