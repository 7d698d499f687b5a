//! Tests of `larder init`: determinism, Parquet schemas and data shape, and the rules on
//! names and target directories.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch, RecordBatchReader};
use arrow::compute::concat_batches;
use arrow::datatypes::{
    DataType, Field, Float32Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};
use chrono::{DateTime, TimeZone, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use super::{InitOptions, InitReport, data, default_end_time, init_repo};

const SECOND: i64 = 1_000_000;
const HOUR: i64 = 3600 * SECOND;
const DAY: i64 = 24 * HOUR;

fn end_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 15, 0, 0).unwrap()
}

fn options(parent: &Path, name: &str) -> InitOptions {
    InitOptions {
        name: name.to_owned(),
        parent_dir: parent.to_owned(),
        end_time: end_time(),
        force: false,
    }
}

fn init(parent: &Path, name: &str) -> InitReport {
    init_repo(&options(parent, name)).unwrap()
}

/// Every file below `dir`, by path relative to it.
fn read_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(root).unwrap().to_owned(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn read_parquet(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    concat_batches(&schema, &batches).unwrap()
}

fn ts_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

fn i64s(batch: &RecordBatch, column: &str) -> Vec<i64> {
    let array = batch.column_by_name(column).unwrap();
    match array.data_type() {
        DataType::Int64 => array.as_primitive::<Int64Type>().values().to_vec(),
        _ => array
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .to_vec(),
    }
}

fn f32s(batch: &RecordBatch, column: &str) -> Vec<Option<f32>> {
    let array = batch.column_by_name(column).unwrap();
    array.as_primitive::<Float32Type>().iter().collect()
}

#[test]
fn output_is_byte_identical_for_the_same_end_time() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let report_a = init(a.path(), "demo");
    let report_b = init(b.path(), "demo");
    assert_eq!(report_a.files, report_b.files);
    let (tree_a, tree_b) = (read_tree(&report_a.repo_dir), read_tree(&report_b.repo_dir));
    let names: Vec<&PathBuf> = tree_a.keys().collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert_eq!(tree_a, tree_b);

    // The data does not depend on the name, nor on minutes past the hour of `end_time`.
    let c = tempfile::tempdir().unwrap();
    let mut opts = options(c.path(), "other_name");
    opts.end_time += chrono::TimeDelta::seconds(59 * 60 + 59);
    let tree_c = read_tree(&init_repo(&opts).unwrap().repo_dir);
    for (path, bytes) in &tree_a {
        if path.starts_with("data") || path.ends_with("features.yaml") {
            assert_eq!(Some(bytes), tree_c.get(path), "{}", path.display());
        }
    }

    // A different end time moves the data.
    let d = tempfile::tempdir().unwrap();
    let mut opts = options(d.path(), "demo");
    opts.end_time += chrono::TimeDelta::hours(1);
    let tree_d = read_tree(&init_repo(&opts).unwrap().repo_dir);
    let driver_stats = PathBuf::from("data/driver_stats.parquet");
    assert_ne!(tree_a[&driver_stats], tree_d[&driver_stats]);
}

#[test]
fn report_lists_every_file_with_rows_or_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let report = init(dir.path(), "demo");
    assert_eq!(report.repo_dir, dir.path().join("demo"));
    let paths: Vec<&str> = report
        .files
        .iter()
        .map(|(path, _)| path.to_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "feature_store.yaml",
            "features.yaml",
            ".larderignore",
            ".gitignore",
            "README.md",
            "data/driver_stats.parquet",
            "data/customer_profile.parquet",
            "data/entity_rows.parquet",
        ]
    );
    for (path, size) in &report.files {
        let full = report.repo_dir.join(path);
        let expected = if path.extension().is_some_and(|ext| ext == "parquet") {
            read_parquet(&full).num_rows() as u64
        } else {
            std::fs::metadata(&full).unwrap().len()
        };
        assert_eq!(*size, expected, "{}", path.display());
    }
}

#[test]
fn driver_stats_has_hourly_rows_reissues_and_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path(), "demo").repo_dir;
    let batch = read_parquet(&repo.join("data/driver_stats.parquet"));
    let expected = Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        ts_field("event_timestamp"),
        ts_field("created"),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("acc_rate", DataType::Float32, true),
        Field::new("avg_daily_trips", DataType::Int64, true),
    ]);
    assert_eq!(batch.schema().fields(), expected.fields());

    let end = end_time().timestamp_micros();
    let (ids, events, created) = (
        i64s(&batch, "driver_id"),
        i64s(&batch, "event_timestamp"),
        i64s(&batch, "created"),
    );
    let (conv, acc, trips) = (
        f32s(&batch, "conv_rate"),
        f32s(&batch, "acc_rate"),
        i64s(&batch, "avg_daily_trips"),
    );

    let mut by_key: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
    for row in 0..batch.num_rows() {
        assert!((1001..=1100).contains(&ids[row]));
        assert_eq!(events[row] % HOUR, 0, "row {row} not on the hour");
        assert!(events[row] >= end - 7 * DAY && events[row] <= end - HOUR);
        assert!(created[row] >= events[row]);
        assert!(acc[row].is_some_and(|v| (0.0..1.0).contains(&v)));
        assert!(conv[row].is_none_or(|v| (0.0..1.0).contains(&v)));
        assert!((0..1000).contains(&trips[row]));
        by_key.entry((ids[row], events[row])).or_default().push(row);
    }
    // Every driver every hour, and the window's ends are hit exactly.
    assert_eq!(by_key.len(), 100 * 7 * 24);
    assert_eq!(events.iter().min(), Some(&(end - 7 * DAY)));
    assert_eq!(events.iter().max(), Some(&(end - HOUR)));

    // Sorted by (event_timestamp, driver_id, created).
    let keys: Vec<_> = (0..batch.num_rows())
        .map(|row| (events[row], ids[row], created[row]))
        .collect();
    assert!(keys.is_sorted());

    // About 1% re-issued with a strictly later `created` and new values.
    let reissued: Vec<&Vec<usize>> = by_key.values().filter(|rows| rows.len() > 1).collect();
    assert!((84..=336).contains(&reissued.len()), "{}", reissued.len());
    assert_eq!(batch.num_rows(), 16_800 + reissued.len());
    for rows in reissued {
        let [first, second] = rows[..] else {
            panic!("more than two rows for one key: {rows:?}")
        };
        assert!(created[first] - events[first] < 600 * SECOND);
        assert!(created[second] > created[first]);
        assert_ne!(
            (conv[first], acc[first], trips[first]),
            (conv[second], acc[second], trips[second])
        );
    }
    for rows in by_key.values().filter(|rows| rows.len() == 1) {
        assert!(created[rows[0]] - events[rows[0]] < 600 * SECOND);
    }

    let nulls = conv.iter().filter(|v| v.is_none()).count();
    assert!((84..=336).contains(&nulls), "{nulls} null conv_rate values");
}

#[test]
fn customer_profile_has_daily_rows() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path(), "demo").repo_dir;
    let batch = read_parquet(&repo.join("data/customer_profile.parquet"));
    let expected = Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        ts_field("event_timestamp"),
        ts_field("created"),
        Field::new("current_balance", DataType::Float32, true),
        Field::new("avg_passenger_count", DataType::Float32, true),
        Field::new("lifetime_trip_count", DataType::Int64, true),
    ]);
    assert_eq!(batch.schema().fields(), expected.fields());
    assert_eq!(batch.num_rows(), 50 * 14);

    let end = end_time().timestamp_micros();
    let (ids, events, created) = (
        i64s(&batch, "customer_id"),
        i64s(&batch, "event_timestamp"),
        i64s(&batch, "created"),
    );
    let keys: HashSet<(i64, i64)> = ids.iter().copied().zip(events.iter().copied()).collect();
    let expected_keys: HashSet<(i64, i64)> = (5001..=5050)
        .flat_map(|id| (1..=14).map(move |day| (id, end - day * DAY)))
        .collect();
    assert_eq!(keys, expected_keys);
    let sorted: Vec<_> = events.iter().zip(&ids).collect();
    assert!(sorted.is_sorted());
    assert!(
        events
            .iter()
            .zip(&created)
            .all(|(e, c)| (0..600 * SECOND).contains(&(c - e)))
    );
    let passengers = f32s(&batch, "avg_passenger_count");
    assert!(
        passengers
            .iter()
            .all(|v| v.is_some_and(|v| (1.0..4.0).contains(&v)))
    );
    let balance = f32s(&batch, "current_balance");
    assert!(
        balance
            .iter()
            .all(|v| v.is_some_and(|v| (0.0..1000.0).contains(&v)))
    );
}

#[test]
fn entity_rows_are_a_spine_over_the_last_six_days() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path(), "demo").repo_dir;
    let batch = read_parquet(&repo.join("data/entity_rows.parquet"));
    let expected = Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        ts_field("event_timestamp"),
    ]);
    assert_eq!(batch.schema().fields(), expected.fields());
    assert_eq!(batch.num_rows(), 1000);

    let end = end_time().timestamp_micros();
    let (drivers, customers, events) = (
        i64s(&batch, "driver_id"),
        i64s(&batch, "customer_id"),
        i64s(&batch, "event_timestamp"),
    );
    assert!(events.iter().all(|t| (end - 6 * DAY..end).contains(t)));
    assert!(!events.is_sorted(), "the spine should not come pre-sorted");
    let on_hour = events.iter().filter(|t| *t % HOUR == 0).count();
    assert!(on_hour >= 10, "{on_hour} timestamps on the hour");

    let unknown_drivers = drivers.iter().filter(|id| **id == 9999).count();
    assert!((1..=50).contains(&unknown_drivers), "{unknown_drivers}");
    assert!(
        drivers
            .iter()
            .all(|id| *id == 9999 || (1001..=1100).contains(id))
    );
    assert!(customers.contains(&9999));
    assert!(
        customers
            .iter()
            .all(|id| *id == 9999 || (5001..=5050).contains(id))
    );

    let rows: Vec<(i64, i64, i64)> = (0..1000)
        .map(|i| (drivers[i], customers[i], events[i]))
        .collect();
    let distinct: HashSet<_> = rows.iter().collect();
    assert!(
        1000 - distinct.len() >= 10,
        "{} duplicates",
        1000 - distinct.len()
    );
}

/// `features.yaml` must agree with the generated files: every column it names exists in
/// the source file with the declared type.
#[test]
fn definitions_match_the_generated_data() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path(), "my_project").repo_dir;

    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo.join("feature_store.yaml")).unwrap())
            .unwrap();
    assert_eq!(config["project"], "my_project");
    assert_eq!(config["online_store"]["type"], "sqlite");

    let defs: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo.join("features.yaml")).unwrap())
            .unwrap();
    let by_name = |list: &str| -> HashMap<String, Value> {
        defs[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_owned(), v.clone()))
            .collect()
    };
    let entities = by_name("entities");
    let sources = by_name("data_sources");
    let mut checked = 0;
    for view in by_name("feature_views").values() {
        let mut source = &sources[view["source"].as_str().unwrap()];
        if source["type"] == "push" {
            source = &sources[source["batch_source"].as_str().unwrap()];
        }
        let schema = read_parquet(&repo.join(source["path"].as_str().unwrap())).schema();
        let dtype = |column: &str| schema.field_with_name(column).unwrap().data_type().clone();
        for column in ["timestamp_field", "created_timestamp_column"] {
            let column = source[column].as_str().unwrap();
            assert!(matches!(dtype(column), DataType::Timestamp(..)), "{column}");
        }
        for entity in view["entities"].as_array().unwrap() {
            let entity = &entities[entity.as_str().unwrap()];
            assert_eq!(entity["value_type"], "Int64");
            for key in entity["join_keys"].as_array().unwrap() {
                assert_eq!(dtype(key.as_str().unwrap()), DataType::Int64);
            }
        }
        for feature in view["schema"].as_array().unwrap() {
            let expected = match feature["dtype"].as_str().unwrap() {
                "Float32" => DataType::Float32,
                "Int64" => DataType::Int64,
                other => panic!("unexpected dtype {other}"),
            };
            assert_eq!(dtype(feature["name"].as_str().unwrap()), expected);
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}

/// The lead's definition loader accepts the generated repo, source schemas included.
#[test]
fn larder_spec_loads_the_generated_repo() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(dir.path(), "demo").repo_dir;
    let options = larder_spec::LoadOptions {
        config_file: Some(repo.join("feature_store.yaml")),
        repo_dir: repo,
        project: "demo".to_owned(),
        project_description: None,
        validate_sources: true,
    };
    let defs = larder_spec::load_definitions(&options).unwrap_or_else(|errs| panic!("{errs}"));
    let counts = [
        defs.entities.len(),
        defs.data_sources.len(),
        defs.feature_views.len(),
        defs.on_demand_feature_views.len(),
        defs.feature_services.len(),
    ];
    assert_eq!(counts, [2, 4, 2, 1, 2]);
}

#[test]
fn invalid_names_are_rejected_with_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "my-repo",
        "_private",
        "",
        "has space",
        "dot.ted",
        "ünï",
        "a/b",
    ] {
        let err = init_repo(&options(dir.path(), name)).unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains(&format!("invalid project name `{name}`")),
            "{message}"
        );
        assert!(
            message.contains("letters, digits and underscores"),
            "{message}"
        );
        assert!(message.contains("no hyphens"), "{message}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    for name in ["demo", "Demo_2", "1st", "a_"] {
        init(dir.path(), name);
    }
}

#[test]
fn non_empty_directory_is_refused_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("demo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("keep.txt"), "mine").unwrap();

    let err = init_repo(&options(dir.path(), "demo")).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!("`{}`", repo.display())),
        "{message}"
    );
    assert!(message.contains("not empty"), "{message}");
    assert!(message.contains("--force"), "{message}");
    assert_eq!(read_tree(&repo).len(), 1, "nothing may be written");

    let mut opts = options(dir.path(), "demo");
    opts.force = true;
    init_repo(&opts).unwrap();
    let tree = read_tree(&repo);
    assert_eq!(tree[Path::new("keep.txt")], b"mine");
    assert_eq!(tree.len(), 9, "{:?}", tree.keys());
    // No temporary files left behind.
    assert!(tree.keys().all(|p| !p.to_string_lossy().ends_with(".tmp")));
}

#[test]
fn empty_directory_is_used_and_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    init(dir.path(), "empty");

    std::fs::write(dir.path().join("file"), "x").unwrap();
    let err = init_repo(&options(dir.path(), "file")).unwrap_err();
    assert!(format!("{err:#}").contains("not a directory"), "{err:#}");

    // Missing parents are created.
    let nested = dir.path().join("a/b");
    init(&nested, "demo");
    assert!(nested.join("demo/features.yaml").is_file());
}

#[test]
fn default_end_time_truncates_to_the_hour() {
    let at = |h, m, s| Utc.with_ymd_and_hms(2025, 3, 14, h, m, s).unwrap();
    let now = at(15, 42, 7) + chrono::TimeDelta::nanoseconds(123_456_789);
    assert_eq!(default_end_time(now), at(15, 0, 0));
    assert_eq!(default_end_time(at(15, 0, 0)), at(15, 0, 0));
    assert_eq!(default_end_time(at(0, 59, 59)), at(0, 0, 0));
}

#[test]
fn generated_row_counts_are_pinned() {
    // The demo data is part of the user-facing contract (docs and tutorials quote it), so
    // a generator change must show up here. Row counts, not bytes: bytes also depend on
    // the parquet crate's encoder.
    let files = data::generate(end_time()).unwrap();
    let rows: Vec<(&str, u64)> = files.iter().map(|f| (f.path, f.rows)).collect();
    assert_eq!(
        rows,
        [
            ("data/driver_stats.parquet", 16_968),
            ("data/customer_profile.parquet", 700),
            ("data/entity_rows.parquet", 1000),
        ]
    );
}
