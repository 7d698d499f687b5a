//! The `OnlineStore` conformance suite: written once, run against every backend.
//!
//! Adding a backend is one line in its test module:
//!
//! ```ignore
//! online_store_conformance!(conformance, crate::redis::fixture);
//! ```
//!
//! where `fixture` is an `async fn() -> Fixture` giving a fresh store. A service backend's
//! fixture returns `Option<Fixture>`: `None` (after printing why) when its URL variable is
//! unset, and it panics when the URL is set but the service does not answer, so a missing
//! service fails loudly.
//! Each case uses its own project name, so backends sharing one server can run cases in
//! parallel. A new case is an `async fn(Arc<dyn OnlineStore>)` here plus its name in the
//! macro's list.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use larder_online::{FoundRow, OnlineError, OnlineStore, ReadRequest, ViewTable, write_schema};
use larder_types::feast::{EntityKey, KeyVersion, Value, serialize_entity_key};

/// A store under test and whatever must live as long as it (a temporary folder).
pub struct Fixture {
    pub store: Arc<dyn OnlineStore>,
    /// Dropped after the store.
    pub _guard: Box<dyn Any + Send>,
}

/// Instantiates every conformance case as a `#[tokio::test]` in a module named `$module`.
macro_rules! online_store_conformance {
    ($module:ident, $fixture:path) => {
        online_store_conformance!(@cases $module, $fixture,
            read_after_write,
            absent_keys_and_views,
            older_event_never_overwrites,
            equal_event_overwrites,
            duplicate_keys_in_one_batch,
            write_replaces_the_row,
            feature_subsets,
            order_follows_keys_with_duplicates,
            many_keys_across_chunks,
            empty_batches_and_key_lists,
            every_value_type_and_null,
            concurrent_writers_keep_the_newest,
            read_many_views,
            read_many_equals_reads_at_every_size,
            read_rows_visits_what_read_many_reads,
            update_infra_is_idempotent_and_drops,
            teardown_is_idempotent,
            bad_batch_schema_names_the_column,
        );
    };
    (@cases $module:ident, $fixture:path, $($case:ident),+ $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    // A service backend's fixture gives `None` when its service is not
                    // configured (it says so once); the case then does not run.
                    let fixture: Option<$crate::conformance::Fixture> = $fixture().await.into();
                    let Some(fixture) = fixture else { return };
                    $crate::conformance::$case(::std::sync::Arc::clone(&fixture.store)).await;
                    drop(fixture);
                }
            )+
        }
    };
}

// ----- helpers -----

/// A project name no other case (or earlier run against a shared server) uses.
pub fn unique_project() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "t{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn view(name: &str, features: &[&str]) -> ViewTable {
    ViewTable::new(unique_project(), name, features.iter().copied())
}

/// The Feast v3 entity key `{driver_id: id}`.
pub fn key(id: i64) -> Vec<u8> {
    let key = EntityKey::new([("driver_id", Value::int64(id))]);
    serialize_entity_key(&key, KeyVersion::V3).expect("an int64 key serializes")
}

/// One write row: entity id, event time (µs), a value per feature (`None` = null cell).
pub type Row = (i64, i64, Vec<Option<Value>>);

/// A write batch for `table` with a null `created_ts`.
pub fn batch(table: &ViewTable, rows: &[Row]) -> RecordBatch {
    let keys: Vec<Vec<u8>> = rows.iter().map(|r| key(r.0)).collect();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(BinaryArray::from_iter_values(keys)),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                .with_timezone("UTC"),
        ),
        Arc::new(TimestampMicrosecondArray::from(vec![None; rows.len()]).with_timezone("UTC")),
    ];
    for f in 0..table.features.len() {
        let cells = rows.iter().map(|r| r.2[f].as_ref().map(Value::to_bytes));
        columns.push(Arc::new(BinaryArray::from_iter(cells)));
    }
    let names: Vec<&str> = table.features.iter().map(String::as_str).collect();
    RecordBatch::try_new(write_schema(&names), columns).expect("a valid write batch")
}

pub async fn write(store: &dyn OnlineStore, table: &ViewTable, rows: &[Row]) -> u64 {
    store
        .write_batch(table, batch(table, rows))
        .await
        .expect("write_batch")
}

pub async fn read(
    store: &dyn OnlineStore,
    table: &ViewTable,
    ids: &[i64],
    features: &[&str],
) -> RecordBatch {
    let keys: Vec<Vec<u8>> = ids.iter().map(|&id| key(id)).collect();
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let result = store.read(table, &keys, features).await.expect("read");
    assert_eq!(result.num_rows(), ids.len(), "one result row per key");
    result
}

/// The event time of result row `row`, `None` when not found.
pub fn ts(batch: &RecordBatch, row: usize) -> Option<i64> {
    let column = batch
        .column(0)
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    column.is_valid(row).then(|| column.value(row))
}

/// The raw cell of result column `col` (0 = first feature), `None` when null.
pub fn cell(batch: &RecordBatch, col: usize, row: usize) -> Option<Vec<u8>> {
    let column = batch.column(col + 1).as_binary::<i32>();
    column.is_valid(row).then(|| column.value(row).to_vec())
}

/// The decoded value of result column `col` at `row`, `None` when the cell is null.
pub fn value(batch: &RecordBatch, col: usize, row: usize) -> Option<Value> {
    cell(batch, col, row).map(|b| Value::from_bytes(&b).expect("stored bytes decode"))
}

fn i(v: i64) -> Option<Value> {
    Some(Value::int64(v))
}

fn s(v: &str) -> Option<Value> {
    Some(Value::string(v))
}

fn invalid_message(err: OnlineError) -> String {
    match err {
        OnlineError::InvalidRequest { message } => message,
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

// ----- cases -----

pub async fn read_after_write(store: Arc<dyn OnlineStore>) {
    let t = view("driver_stats", &["conv", "name"]);
    let rows = [(1, 100, vec![i(10), s("a")]), (2, 200, vec![i(20), None])];
    assert_eq!(write(&*store, &t, &rows).await, 2);

    let got = read(&*store, &t, &[1, 2], &["conv", "name"]).await;
    let schema = got.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["event_ts", "conv", "name"]);
    assert_eq!(
        schema.field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(schema.field(1).data_type(), &DataType::Binary);
    assert_eq!((ts(&got, 0), ts(&got, 1)), (Some(100), Some(200)));
    assert_eq!(value(&got, 0, 0), i(10));
    assert_eq!(value(&got, 1, 0), s("a"));
    assert_eq!(value(&got, 0, 1), i(20));
    assert_eq!(cell(&got, 1, 1), None, "a null cell reads back as missing");
}

pub async fn absent_keys_and_views(store: Arc<dyn OnlineStore>) {
    let t = view("v", &["f"]);
    write(&*store, &t, &[(1, 100, vec![i(1)])]).await;
    let got = read(&*store, &t, &[2, 1, 3], &["f"]).await;
    assert_eq!(ts(&got, 0), None);
    assert_eq!(cell(&got, 0, 0), None);
    assert_eq!(ts(&got, 1), Some(100));
    assert_eq!(ts(&got, 2), None);

    // A view never written (not materialized yet) reads as not found, not as an error.
    let never = view("never_written", &["f"]);
    let got = read(&*store, &never, &[1, 2], &["f"]).await;
    assert_eq!((ts(&got, 0), ts(&got, 1)), (None, None));
    assert_eq!(cell(&got, 0, 1), None);
}

pub async fn older_event_never_overwrites(store: Arc<dyn OnlineStore>) {
    let t = view("v", &["f"]);
    assert_eq!(write(&*store, &t, &[(1, 200, vec![i(2)])]).await, 1);
    assert_eq!(write(&*store, &t, &[(1, 100, vec![i(1)])]).await, 0);
    // Mixed: the older row for key 1 is skipped, the new key 2 is written.
    let mixed = [(1, 199, vec![i(9)]), (2, 50, vec![i(5)])];
    assert_eq!(write(&*store, &t, &mixed).await, 1);

    let got = read(&*store, &t, &[1, 2], &["f"]).await;
    assert_eq!((ts(&got, 0), value(&got, 0, 0)), (Some(200), i(2)));
    assert_eq!((ts(&got, 1), value(&got, 0, 1)), (Some(50), i(5)));
}

pub async fn equal_event_overwrites(store: Arc<dyn OnlineStore>) {
    let t = view("v", &["f"]);
    write(&*store, &t, &[(1, 200, vec![i(2)])]).await;
    assert_eq!(write(&*store, &t, &[(1, 200, vec![i(3)])]).await, 1);
    let got = read(&*store, &t, &[1], &["f"]).await;
    assert_eq!((ts(&got, 0), value(&got, 0, 0)), (Some(200), i(3)));
}

pub async fn duplicate_keys_in_one_batch(store: Arc<dyn OnlineStore>) {
    let t = view("v", &["f"]);
    let rows = [
        (1, 100, vec![i(1)]),
        (1, 300, vec![i(3)]),
        (2, 50, vec![i(20)]),
        (1, 200, vec![i(2)]),
        (2, 50, vec![i(21)]),
    ];
    assert_eq!(
        write(&*store, &t, &rows).await,
        2,
        "one write per distinct key"
    );
    let got = read(&*store, &t, &[1, 2], &["f"]).await;
    assert_eq!((ts(&got, 0), value(&got, 0, 0)), (Some(300), i(3)));
    // Equal event times: the later row of the batch wins.
    assert_eq!((ts(&got, 1), value(&got, 0, 1)), (Some(50), i(21)));
}

pub async fn write_replaces_the_row(store: Arc<dyn OnlineStore>) {
    let t = view("v", &["a", "b"]);
    write(&*store, &t, &[(1, 100, vec![i(1), s("x")])]).await;
    write(&*store, &t, &[(1, 200, vec![i(2), None])]).await;
    let got = read(&*store, &t, &[1], &["a", "b"]).await;
    assert_eq!(value(&got, 0, 0), i(2));
    assert_eq!(
        cell(&got, 1, 0),
        None,
        "features of a row are written together"
    );
}

pub async fn feature_subsets(store: Arc<dyn OnlineStore>) {
    let t = view("v", &["a", "b", "c"]);
    write(&*store, &t, &[(1, 100, vec![i(1), s("b"), i(3)])]).await;

    let got = read(&*store, &t, &[1], &["c", "a"]).await;
    assert_eq!(got.num_columns(), 3);
    assert_eq!(got.schema().field(1).name(), "c");
    assert_eq!((value(&got, 0, 0), value(&got, 1, 0)), (i(3), i(1)));

    let got = read(&*store, &t, &[1], &["b", "b"]).await;
    assert_eq!((value(&got, 0, 0), value(&got, 1, 0)), (s("b"), s("b")));

    // A name the row never had (added to the view later): null, the key still found.
    let got = read(&*store, &t, &[1], &["d", "a"]).await;
    assert_eq!(
        (ts(&got, 0), cell(&got, 0, 0), value(&got, 1, 0)),
        (Some(100), None, i(1))
    );

    let got = read(&*store, &t, &[1, 2], &[]).await;
    assert_eq!(got.num_columns(), 1);
    assert_eq!((ts(&got, 0), ts(&got, 1)), (Some(100), None));
}

pub async fn order_follows_keys_with_duplicates(store: Arc<dyn OnlineStore>) {
    let t = view("v", &["f"]);
    let rows: Vec<Row> = (1..=3).map(|id| (id, id * 10, vec![i(id)])).collect();
    write(&*store, &t, &rows).await;
    let ids = [3, 1, 9, 3, 1, 1, 2];
    let got = read(&*store, &t, &ids, &["f"]).await;
    for (row, &id) in ids.iter().enumerate() {
        let expected = (id != 9).then_some(id);
        assert_eq!(ts(&got, row), expected.map(|id| id * 10), "row {row}");
        assert_eq!(value(&got, 0, row), expected.and_then(i), "row {row}");
    }
}

pub async fn many_keys_across_chunks(store: Arc<dyn OnlineStore>) {
    let t = view("v", &["f"]);
    let rows: Vec<Row> = (0..1200).map(|id| (id, id, vec![i(id * 2)])).collect();
    assert_eq!(write(&*store, &t, &rows).await, 1200);
    // Reversed, every third key requested twice, plus absent keys.
    let mut ids: Vec<i64> = (0..1300).rev().collect();
    ids.extend((0..1200).step_by(3));
    let got = read(&*store, &t, &ids, &["f"]).await;
    for (row, &id) in ids.iter().enumerate() {
        let expected = (id < 1200).then_some(id);
        assert_eq!(ts(&got, row), expected, "row {row}");
        assert_eq!(
            value(&got, 0, row),
            expected.and_then(|id| i(id * 2)),
            "row {row}"
        );
    }
}

pub async fn empty_batches_and_key_lists(store: Arc<dyn OnlineStore>) {
    let t = view("v", &["f"]);
    assert_eq!(write(&*store, &t, &[]).await, 0);
    let got = read(&*store, &t, &[], &["f"]).await;
    assert_eq!((got.num_rows(), got.num_columns()), (0, 2));
    assert_eq!(got.schema().field(1).name(), "f");
    write(&*store, &t, &[(1, 1, vec![i(1)])]).await;
    let got = read(&*store, &t, &[], &[]).await;
    assert_eq!((got.num_rows(), got.num_columns()), (0, 1));
}

pub async fn every_value_type_and_null(store: Arc<dyn OnlineStore>) {
    let values = [
        ("i32", Value::int32(-7)),
        ("i64", Value::int64(i64::MIN)),
        ("f32", Value::float(1.5)),
        ("f64", Value::double(-2.25e300)),
        ("str", Value::string("héllo")),
        ("bytes", Value::bytes(vec![0, 255, 1])),
        ("bool", Value::bool(true)),
        ("ts", Value::unix_timestamp(1_700_000_000)),
        ("i32s", Value::int32_list(vec![1, -2])),
        ("i64s", Value::int64_list(vec![i64::MAX])),
        ("f32s", Value::float_list(vec![f32::NAN, 0.5])),
        ("f64s", Value::double_list(vec![])),
        ("strs", Value::string_list(vec!["a".into(), String::new()])),
        ("bytess", Value::bytes_list(vec![vec![], vec![9]])),
        ("bools", Value::bool_list(vec![false, true])),
        ("tss", Value::unix_timestamp_list(vec![0, 1])),
        ("null", Value::NULL),
    ];
    let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
    let t = view("types", &names);
    let full: Vec<Option<Value>> = values.iter().map(|(_, v)| Some(v.clone())).collect();
    let missing: Vec<Option<Value>> = vec![None; values.len()];
    write(&*store, &t, &[(1, 1, full), (2, 1, missing)]).await;

    let got = read(&*store, &t, &[1, 2], &names).await;
    for (col, (name, expected)) in values.iter().enumerate() {
        let stored = cell(&got, col, 0).unwrap_or_else(|| panic!("`{name}` is missing"));
        assert_eq!(
            stored,
            expected.to_bytes(),
            "`{name}` bytes round-trip exactly"
        );
        assert_eq!(cell(&got, col, 1), None, "`{name}` written as a null cell");
    }
    // The null Value is written (empty bytes), so it is present and decodes to null.
    let null = value(&got, values.len() - 1, 0).expect("present");
    assert!(null.is_null());
    assert_eq!(
        ts(&got, 1),
        Some(1),
        "a row of only null cells still exists"
    );
}

pub async fn concurrent_writers_keep_the_newest(store: Arc<dyn OnlineStore>) {
    const WRITERS: i64 = 4;
    const ROUNDS: i64 = 25;
    const KEYS: i64 = 10;
    let t = view("v", &["f", "g"]);
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (store, t) = (Arc::clone(&store), t.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                // Odd writers go back in time, so newer rows land before older ones.
                let step = if writer % 2 == 1 {
                    ROUNDS - 1 - round
                } else {
                    round
                };
                let at = step * WRITERS + writer;
                let rows: Vec<Row> = (0..KEYS)
                    .map(|id| (id, at, vec![i(at), s(&format!("{id}@{at}"))]))
                    .collect();
                write(&*store, &t, &rows).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    let newest = (ROUNDS - 1) * WRITERS + (WRITERS - 1);
    let ids: Vec<i64> = (0..KEYS).collect();
    let got = read(&*store, &t, &ids, &["f", "g"]).await;
    for id in ids {
        let row = id as usize;
        assert_eq!(ts(&got, row), Some(newest));
        assert_eq!(value(&got, 0, row), i(newest));
        assert_eq!(
            value(&got, 1, row),
            s(&format!("{id}@{newest}")),
            "no torn row"
        );
    }
}

pub async fn read_many_views(store: Arc<dyn OnlineStore>) {
    let a = view("a", &["x"]);
    let b = ViewTable::new(a.project.clone(), "b", ["y", "z"]);
    write(&*store, &a, &[(1, 10, vec![i(1)])]).await;
    write(&*store, &b, &[(2, 20, vec![s("y"), i(2)])]).await;
    let (k1, k2) = (key(1), key(2));
    let a_keys: [&[u8]; 2] = [&k1, &k2];
    let b_keys: [&[u8]; 3] = [&k2, &k1, &k2];
    let requests = [
        ReadRequest {
            table: &a,
            keys: &a_keys,
            features: &["x"],
            prepared: None,
        },
        ReadRequest {
            table: &b,
            keys: &b_keys,
            features: &["z"],
            prepared: None,
        },
    ];
    let got = store.read_many(&requests).await.expect("read_many");
    assert_eq!(got.len(), 2);
    assert_eq!((ts(&got[0], 0), ts(&got[0], 1)), (Some(10), None));
    assert_eq!(got[1].num_rows(), 3);
    assert_eq!(got[1].schema().field(1).name(), "z");
    assert_eq!(
        (value(&got[1], 0, 0), ts(&got[1], 1), value(&got[1], 0, 2)),
        (i(2), None, i(2))
    );
    assert!(store.read_many(&[]).await.expect("no views").is_empty());
}

/// `read_many` answers what one `read` per view answers, whatever the request's size (a
/// store may read small, mid-sized and large requests differently: the SQLite store reads
/// its views on one thread, split over two, or each on its own).
pub async fn read_many_equals_reads_at_every_size(store: Arc<dyn OnlineStore>) {
    let a = view("a", &["x", "y"]);
    let b = ViewTable::new(a.project.clone(), "b", ["z"]);
    let c = ViewTable::new(a.project.clone(), "c", ["w"]);
    // Every third id is absent from each view, at a different offset.
    let rows = |skip: i64, base: i64, features: usize| -> Vec<Row> {
        (0..400)
            .filter(|id| id % 3 != skip)
            .map(|id| {
                (
                    id,
                    base + id,
                    (0..features).map(|f| i(id * 10 + f as i64)).collect(),
                )
            })
            .collect()
    };
    write(&*store, &a, &rows(0, 1_000, 2)).await;
    write(&*store, &b, &rows(1, 2_000, 1)).await;
    write(&*store, &c, &rows(2, 3_000, 1)).await;
    for per_view in [1usize, 5, 30, 60, 150, 300] {
        // Keys in a scrambled order, with duplicates and ids no view holds.
        let ids: Vec<i64> = (0..per_view as i64).map(|n| (n * 37) % 450).collect();
        let keys: Vec<Vec<u8>> = ids.iter().map(|&id| key(id)).collect();
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let shorter = &keys[..keys.len().div_ceil(2)];
        let requests = [
            ReadRequest {
                table: &a,
                keys: &keys,
                features: &["y", "x"],
                prepared: None,
            },
            ReadRequest {
                table: &b,
                keys: shorter,
                features: &["z"],
                prepared: None,
            },
            ReadRequest {
                table: &c,
                keys: &keys,
                features: &["w"],
                prepared: None,
            },
        ];
        let many = store.read_many(&requests).await.expect("read_many");
        assert_eq!(many.len(), requests.len(), "{per_view} keys per view");
        for (request, got) in requests.iter().zip(&many) {
            let one = store
                .read(request.table, request.keys, request.features)
                .await
                .expect("read");
            assert_eq!(
                got, &one,
                "view `{}`, {per_view} keys per view",
                request.table.view
            );
            assert_eq!(got.num_rows(), request.keys.len());
        }
        // Spot values: present and absent keys land on their own rows.
        let row = ids.iter().position(|&id| id % 3 == 1 && id < 400);
        if let Some(row) = row {
            let id = ids[row];
            assert_eq!(ts(&many[0], row), Some(1_000 + id));
            assert_eq!(value(&many[0], 0, row), i(id * 10 + 1), "feature `y` first");
            assert_eq!(ts(&many[2], row), Some(3_000 + id));
        }
    }
}

/// One visit of `read_rows`: request, key position, event time, cells.
type Visit = (usize, usize, i64, Vec<Option<Vec<u8>>>);

/// What `read_rows` of `requests` visits, copied out and sorted by (request, key).
async fn visited(store: &dyn OnlineStore, requests: &[ReadRequest<'_>]) -> Vec<Visit> {
    let mut visits: Vec<Visit> = Vec::new();
    let mut visit = |r: usize, k: usize, row: FoundRow<'_>| -> Result<(), OnlineError> {
        let cells = row.values.iter().map(|v| v.map(<[u8]>::to_vec)).collect();
        visits.push((r, k, row.event_ts, cells));
        Ok(())
    };
    store
        .read_rows(requests, &mut visit)
        .await
        .expect("read_rows");
    visits.sort_by_key(|v| (v.0, v.1));
    visits
}

/// `read_rows` visits exactly the found rows of `read_many`, with the same cells, in
/// request column order (a name requested twice included); a visitor error ends the read.
pub async fn read_rows_visits_what_read_many_reads(store: Arc<dyn OnlineStore>) {
    let a = view("a", &["x", "y", "z"]);
    let b = ViewTable::new(a.project.clone(), "b", ["w"]);
    // Even ids in `a` (`y` missing from id 4's row), ids divisible by 3 in `b`; the empty
    // cell of id 2 is a written null.
    let a_rows: Vec<Row> = (0..40)
        .filter(|id| id % 2 == 0)
        .map(|id| {
            (
                id,
                100 + id,
                vec![i(id), (id != 4).then(|| Value::int64(-id)), s("z")],
            )
        })
        .collect();
    let mut a_rows = a_rows;
    a_rows[1].2[2] = Some(Value::default());
    write(&*store, &a, &a_rows).await;
    let b_rows: Vec<Row> = (0..40)
        .filter(|id| id % 3 == 0)
        .map(|id| (id, 200 + id, vec![i(id * 7)]))
        .collect();
    write(&*store, &b, &b_rows).await;

    let ids: Vec<i64> = vec![4, 1, 2, 4, 6, 999, 0, 9, 2];
    let keys: Vec<Vec<u8>> = ids.iter().map(|&id| key(id)).collect();
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let requests = [
        ReadRequest {
            table: &a,
            keys: &keys,
            features: &["z", "x", "y", "x"],
            prepared: None,
        },
        ReadRequest {
            table: &b,
            keys: &keys[2..],
            features: &["w"],
            prepared: None,
        },
    ];
    let batches = store.read_many(&requests).await.expect("read_many");
    let mut expected: Vec<Visit> = Vec::new();
    for (r, (request, batch)) in requests.iter().zip(&batches).enumerate() {
        for k in 0..request.keys.len() {
            if let Some(t) = ts(batch, k) {
                let cells = (0..request.features.len()).map(|c| cell(batch, c, k));
                expected.push((r, k, t, cells.collect()));
            }
        }
    }
    assert_eq!(expected.len(), 6 + 3, "the found keys of both views");

    let visits = visited(&*store, &requests).await;
    assert_eq!(visits, expected);
    // Spot checks against what was written: id 4 lacks `y`, id 2's `z` is a written null.
    let id4 = &visits[0];
    assert_eq!((id4.1, id4.2), (0, 104));
    assert_eq!(id4.3[2], None, "`y` is missing from id 4's row");
    assert_eq!(id4.3[1].as_deref(), Some(&Value::int64(4).to_bytes()[..]));
    assert_eq!(id4.3[3], id4.3[1], "`x` requested twice");
    let id2 = visits
        .iter()
        .find(|v| v.0 == 0 && v.1 == 2)
        .expect("id 2 read");
    assert_eq!(
        id2.3[0].as_deref(),
        Some(&[][..]),
        "a written null is an empty cell"
    );

    // Prepared reads visit the same rows; so do reads handed another request's preparation
    // (a store must notice and ignore it).
    let prepared_a = store.prepare_read(&a, requests[0].features);
    let prepared_b = store.prepare_read(&b, requests[1].features);
    for (for_a, for_b) in [
        (prepared_a.as_ref(), prepared_b.as_ref()),
        (prepared_b.as_ref(), prepared_a.as_ref()),
    ] {
        let mut with = requests;
        with[0].prepared = for_a;
        with[1].prepared = for_b;
        assert_eq!(
            visited(&*store, &with).await,
            visits,
            "prepared reads read what plain reads read"
        );
        let many = store.read_many(&with).await.expect("prepared read_many");
        assert_eq!(many, batches, "prepared read_many");
    }

    let mut calls = 0;
    let mut failing = |_: usize, _: usize, _: FoundRow<'_>| -> Result<(), OnlineError> {
        calls += 1;
        Err(OnlineError::Corrupt {
            message: "the visitor refused".into(),
        })
    };
    let err = store
        .read_rows(&requests, &mut failing)
        .await
        .expect_err("a visitor error ends the read");
    assert!(err.to_string().contains("the visitor refused"), "{err}");
    assert_eq!(calls, 1, "no visit after the error");
}

pub async fn update_infra_is_idempotent_and_drops(store: Arc<dyn OnlineStore>) {
    let a = view("a", &["f"]);
    let b = ViewTable::new(a.project.clone(), "b", ["f"]);
    let both = [a.clone(), b.clone()];
    store.update_infra(&both, &[]).await.expect("create");
    store.update_infra(&both, &[]).await.expect("create again");
    write(&*store, &a, &[(1, 1, vec![i(1)])]).await;
    write(&*store, &b, &[(1, 1, vec![i(2)])]).await;
    // Keeping an existing table keeps its rows.
    store.update_infra(&both, &[]).await.expect("keep");
    assert_eq!(ts(&read(&*store, &a, &[1], &["f"]).await, 0), Some(1));

    let keep = [a.clone()];
    let delete = [b.clone()];
    store.update_infra(&keep, &delete).await.expect("drop b");
    store
        .update_infra(&keep, &delete)
        .await
        .expect("drop b again");
    let got = read(&*store, &b, &[1], &["f"]).await;
    assert_eq!(
        (ts(&got, 0), cell(&got, 0, 0)),
        (None, None),
        "b was dropped"
    );
    let got = read(&*store, &a, &[1], &["f"]).await;
    assert_eq!(value(&got, 0, 0), i(1), "a was kept");
}

pub async fn teardown_is_idempotent(store: Arc<dyn OnlineStore>) {
    let a = view("a", &["f"]);
    let never = ViewTable::new(a.project.clone(), "never", ["f"]);
    write(&*store, &a, &[(1, 1, vec![i(1)])]).await;
    let tables = [a.clone(), never];
    store.teardown(&tables).await.expect("teardown");
    store.teardown(&tables).await.expect("teardown again");
    assert_eq!(ts(&read(&*store, &a, &[1], &["f"]).await, 0), None);
    // Writing after a teardown starts afresh.
    assert_eq!(write(&*store, &a, &[(1, 0, vec![i(5)])]).await, 1);
    assert_eq!(value(&read(&*store, &a, &[1], &["f"]).await, 0, 0), i(5));
    store.teardown(&[a]).await.expect("final teardown");
}

pub async fn bad_batch_schema_names_the_column(store: Arc<dyn OnlineStore>) {
    let t = view("v", &["f", "g"]);
    let good = batch(&t, &[(1, 1, vec![i(1), i(2)])]);
    let with = |replace: &str, column: Option<ArrayRef>| {
        let schema = good.schema();
        let pairs: Vec<(String, ArrayRef)> = schema
            .fields()
            .iter()
            .zip(good.columns())
            .filter_map(|(field, array)| {
                if field.name() != replace {
                    return Some((field.name().clone(), Arc::clone(array)));
                }
                column.clone().map(|c| (field.name().clone(), c))
            })
            .collect();
        RecordBatch::try_from_iter(pairs).expect("test batch")
    };
    let cases: Vec<(RecordBatch, &str)> = vec![
        (with("entity_key", None), "`entity_key`"),
        (with("event_ts", None), "`event_ts`"),
        (with("g", None), "`g`"),
        (
            with(
                "event_ts",
                Some(Arc::new(arrow::array::Int64Array::from(vec![1]))),
            ),
            "`event_ts`",
        ),
        (
            with(
                "f",
                Some(Arc::new(arrow::array::StringArray::from(vec!["x"]))),
            ),
            "`f`",
        ),
        (
            with(
                "entity_key",
                Some(Arc::new(BinaryArray::from(vec![None::<&[u8]>]))),
            ),
            "`entity_key`",
        ),
        (
            with(
                "event_ts",
                Some(Arc::new(
                    TimestampMicrosecondArray::from(vec![None]).with_timezone("UTC"),
                )),
            ),
            "`event_ts`",
        ),
    ];
    for (bad, column) in cases {
        let err = store
            .write_batch(&t, bad)
            .await
            .expect_err("a bad batch is refused");
        let message = invalid_message(err);
        assert!(message.contains(column), "{message:?} should name {column}");
    }
    // An unexpected column is named too.
    let extra = RecordBatch::try_from_iter(
        good.schema()
            .fields()
            .iter()
            .zip(good.columns())
            .map(|(f, c)| (f.name().clone(), Arc::clone(c)))
            .chain([("h".to_owned(), Arc::clone(good.column(3)))]),
    )
    .expect("test batch");
    let message = invalid_message(
        store
            .write_batch(&t, extra)
            .await
            .expect_err("extra column"),
    );
    assert!(message.contains("`h`"), "{message}");
    // Nothing was written by the refused batches.
    assert_eq!(ts(&read(&*store, &t, &[1], &["f"]).await, 0), None);
}
