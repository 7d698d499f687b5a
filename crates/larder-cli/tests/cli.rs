//! End-to-end tests of the `larder` binary on temporary repositories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod k8s;
mod pg_offline;

const END_TIME: &str = "2025-06-01T00:00:00Z";

fn larder(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(args)
        .current_dir(dir)
        .env_remove("FEATURE_STORE_YAML_BASE64")
        .env_remove("FEAST_FS_YAML_FILE_PATH")
        .env_remove("LARDER_LOG")
        .output()
        .expect("run larder")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn ok(dir: &Path, args: &[&str]) -> String {
    succeeded(args, larder(dir, args))
}

/// The stdout of a run of `larder args` that must have succeeded.
#[track_caller]
fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "larder {args:?} failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn demo_repo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    ok(dir.path(), &["init", "demo", "--end-time", END_TIME]);
    let repo = dir.path().join("demo");
    (dir, repo)
}

#[test]
fn init_plan_apply_edit_cycle() {
    let (_dir, repo) = demo_repo();

    let plan = ok(&repo, &["plan"]);
    assert!(
        plan.contains("  + create feature view driver_hourly_stats\n"),
        "{plan}"
    );
    assert!(
        plan.contains("  + create sqlite table demo_driver_hourly_stats\n"),
        "{plan}"
    );
    assert!(
        plan.ends_with("Plan: 14 to create, 0 to update, 0 to delete.\n"),
        "{plan}"
    );
    assert_eq!(
        larder(&repo, &["plan", "--detailed-exitcode"])
            .status
            .code(),
        Some(2)
    );

    let applied = ok(&repo, &["apply"]);
    assert!(applied.contains("(version 1)"), "{applied}");

    // Nothing changed: plan is empty, exit 0 even with --detailed-exitcode; apply is a no-op.
    let out = larder(&repo, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("No changes"));
    assert!(ok(&repo, &["apply"]).starts_with("No changes"));

    // Edit one field: the plan shows exactly that field.
    let defs = repo.join("features.yaml");
    let edited = std::fs::read_to_string(&defs)
        .expect("read")
        .replace("ttl: 1d", "ttl: 36h");
    std::fs::write(&defs, edited).expect("write");
    let out = larder(&repo, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stdout),
        "Changes to project `demo`:\n  ~ update feature view driver_hourly_stats\n      ~ ttl: \"1day\" -> \"1day 12h\"\nInfrastructure:\n  No changes to infrastructure\nPlan: 0 to create, 1 to update, 0 to delete.\n"
    );
    let plan_json: serde_json::Value =
        serde_json::from_str(&ok(&repo, &["plan", "--json"])).expect("plan json");
    assert_eq!(plan_json["objects"][0]["action"], "update");
    assert_eq!(plan_json["objects"][0]["fields"][0]["path"], "ttl");
    ok(&repo, &["apply"]);
    assert_eq!(
        larder(&repo, &["plan", "--detailed-exitcode"])
            .status
            .code(),
        Some(0)
    );

    // Removing a service from the repo deletes it from the registry.
    let text_now = std::fs::read_to_string(&defs).expect("read");
    let cut = text_now
        .find("  - name: driver_activity_v2")
        .expect("v2 present");
    std::fs::write(&defs, &text_now[..cut]).expect("write");
    let applied = ok(&repo, &["apply"]);
    assert!(
        applied.contains("  - delete feature service driver_activity_v2\n"),
        "{applied}"
    );
    let services = ok(&repo, &["feature-services", "list", "--json"]);
    let services: serde_json::Value = serde_json::from_str(&services).expect("json");
    assert_eq!(services.as_array().map(Vec::len), Some(1));
}

#[test]
fn listing_describing_and_dumping() {
    let (_dir, repo) = demo_repo();
    ok(&repo, &["apply"]);
    let table = ok(&repo, &["feature-views", "list"]);
    assert!(table.contains("driver_hourly_stats") && table.contains("customer_profile"));
    let filtered = ok(
        &repo,
        &["feature-views", "list", "--tags", "team:drivers", "--json"],
    );
    let filtered: serde_json::Value = serde_json::from_str(&filtered).expect("json");
    assert_eq!(filtered.as_array().map(Vec::len), Some(1));
    assert_eq!(filtered[0]["spec"]["name"], "driver_hourly_stats");

    let entity: serde_json::Value =
        serde_json::from_str(&ok(&repo, &["entities", "describe", "driver"])).expect("json");
    assert_eq!(entity["spec"]["join_key"], "driver_id");
    assert!(entity["created"].is_string());
    for kind in [
        "data-sources",
        "on-demand-feature-views",
        "feature-services",
        "entities",
    ] {
        assert!(!ok(&repo, &[kind, "list"]).is_empty());
    }

    let out = larder(&repo, &["feature-views", "describe", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: feature view `nope` not found in project `demo` (known: `customer_profile`, `driver_hourly_stats`)\n"
    );

    let dump: serde_json::Value =
        serde_json::from_str(&ok(&repo, &["registry-dump"])).expect("dump json");
    assert_eq!(dump["registry_version"], 1);
    assert_eq!(dump["project"]["project"]["spec"]["name"], "demo");
    assert_eq!(
        dump["project"]["feature_views"]
            .as_object()
            .map(|m| m.len()),
        Some(2)
    );

    let out = ok(&repo, &["teardown"]);
    assert!(
        out.starts_with("Removed project `demo` (11 objects"),
        "{out}"
    );
    let out = larder(&repo, &["feature-views", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("project `demo` is not in the registry"));
    // The plan starts from scratch again.
    assert!(ok(&repo, &["plan"]).contains("Plan: 14 to create"));
}

#[test]
fn definition_errors_are_all_reported_with_exit_1() {
    let (_dir, repo) = demo_repo();
    let defs = repo.join("features.yaml");
    let broken = std::fs::read_to_string(&defs)
        .expect("read")
        .replace(
            "source: customer_profile_source",
            "source: customer_profile_src",
        )
        .replace(
            "{name: acc_rate, dtype: Float32}",
            "{name: acc_rate, dtype: Float3}",
        );
    std::fs::write(&defs, broken).expect("write");
    std::fs::create_dir(repo.join("more")).expect("mkdir");
    std::fs::write(
        repo.join("more/extra.yaml"),
        "entities:\n  - name: driver\n    value_type: Int64\n",
    )
    .expect("write");
    for command in ["plan", "apply"] {
        let out = larder(&repo, &[command]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.starts_with("error: 3 errors in the feature definitions:\n"),
            "{err}"
        );
        assert!(err.contains("  more/extra.yaml:2: entity `driver`: the name is already used by the entity defined at features.yaml:3\n"), "{err}");
        assert!(err.contains("features.yaml:39: feature view `driver_hourly_stats`: field `acc_rate`: unknown type `Float3`"), "{err}");
        assert!(err.contains("feature view `customer_profile`: `source` `customer_profile_src` is not a defined data source"), "{err}");
    }
    // A failed apply wrote nothing.
    assert!(!repo.join("data/registry.db").exists());
}

#[test]
fn source_schema_is_checked_unless_skipped() {
    let (_dir, repo) = demo_repo();
    let defs = repo.join("features.yaml");
    let wrong = std::fs::read_to_string(&defs).expect("read").replace(
        "{name: avg_daily_trips, dtype: Int64}",
        "{name: avg_daily_trips, dtype: String}",
    );
    std::fs::write(&defs, wrong).expect("write");
    let out = larder(&repo, &["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("feature `avg_daily_trips` is declared String but column `avg_daily_trips` of `data/driver_stats.parquet` is Int64"), "{}", text(&out.stderr));
    ok(&repo, &["plan", "--skip-source-validation"]);
}

#[test]
fn config_selection_and_environment() {
    let (dir, repo) = demo_repo();
    // -c from the parent folder.
    assert!(ok(dir.path(), &["-c", "demo", "plan"]).contains("Plan: 14 to create"));

    // A staging config next to the production one, picked with -f; ${VAR} substitution.
    std::fs::write(
        repo.join("feature_store.staging.yaml"),
        "project: ${LARDER_TEST_PROJECT:-demo_staging}\nregistry: data/staging_registry.db\n",
    )
    .expect("write");
    let out = ok(&repo, &["-f", "feature_store.staging.yaml", "apply"]);
    assert!(out.contains("Changes to project `demo_staging`"), "{out}");
    assert!(repo.join("data/staging_registry.db").exists());
    // The production registry is untouched by the staging apply.
    assert!(!repo.join("data/registry.db").exists());

    // An unset variable without a default names the variable and the line.
    std::fs::write(
        repo.join("feature_store.bad.yaml"),
        "project: demo\nregistry: ${LARDER_SURELY_UNSET_VAR}/r.db\n",
    )
    .expect("write");
    let out = larder(&repo, &["-f", "feature_store.bad.yaml", "plan"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(":2:") && err.contains("`LARDER_SURELY_UNSET_VAR`"),
        "{err}"
    );

    // The whole config as base64, as the Helm chart passes it.
    let yaml = "project: demo_b64\nregistry: data/b64_registry.db\n";
    let encoded = base64_encode(yaml.as_bytes());
    let out = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["apply", "--skip-source-validation"])
        .current_dir(&repo)
        .env("FEATURE_STORE_YAML_BASE64", encoded)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("project `demo_b64`"));
    assert!(repo.join("data/b64_registry.db").exists());
}

#[test]
fn missing_config_and_bad_usage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = larder(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("feature_store.yaml") && err.contains("larder init"),
        "{err}"
    );

    let out = larder(dir.path(), &["plan", "--no-such-flag"]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "usage errors are not `changes` (2)"
    );
    let out = larder(dir.path(), &["init", "bad-name"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("invalid project name `bad-name`"));
    ok(dir.path(), &["--help"]);
}

#[test]
fn plan_apply_and_materialize_with_a_sqlite_sql_registry() {
    let (_dir, repo) = demo_repo();
    let config = repo.join("feature_store.yaml");
    let replica = format!(
        "sqlite:///{}",
        repo.join("data/sql/registry.sqlite").display()
    );
    let yaml = std::fs::read_to_string(&config)
        .expect("read config")
        .replace(
            "registry: data/registry.db\n",
            &format!(
                "registry:\n  registry_type: sql\n  path: sqlite:///data/sql/registry.sqlite\n  \
             read_path: \"{replica}\"\n  cache_ttl_seconds: 60\n"
            ),
        );
    assert!(yaml.contains("registry_type: sql"), "{yaml}");
    std::fs::write(&config, yaml).expect("write config");

    let plan = ok(&repo, &["plan"]);
    assert!(
        plan.ends_with("Plan: 14 to create, 0 to update, 0 to delete.\n"),
        "{plan}"
    );
    let applied = ok(&repo, &["apply"]);
    assert!(applied.contains("(version 1)"), "{applied}");
    // The registry went into the SQLite database (its folder created), not a file registry.
    let db = repo.join("data/sql/registry.sqlite");
    assert!(db.is_file());
    assert!(!repo.join("data/registry.db").exists());
    let out = larder(&repo, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("No changes"));

    let defs = repo.join("features.yaml");
    let edited = std::fs::read_to_string(&defs)
        .expect("read")
        .replace("ttl: 1d", "ttl: 36h");
    std::fs::write(&defs, edited).expect("write");
    assert_eq!(
        larder(&repo, &["plan", "--detailed-exitcode"])
            .status
            .code(),
        Some(2)
    );
    assert!(ok(&repo, &["apply"]).contains("(version 2)"));

    ok(
        &repo,
        &[
            "materialize",
            "2025-05-27T00:00:00",
            "2025-05-28",
            "--views",
            "driver_hourly_stats",
        ],
    );
    let dump: serde_json::Value =
        serde_json::from_str(&ok(&repo, &["registry-dump"])).expect("json");
    assert_eq!(dump["registry_version"], 3, "{dump}");
    assert_eq!(
        dump["project"]["materializations"]["driver_hourly_stats"],
        serde_json::json!([{"start": "2025-05-27T00:00:00Z", "end": "2025-05-28T00:00:00Z"}]),
    );
    // One row, bumped once per commit.
    let conn = rusqlite::Connection::open(&db).expect("open registry db");
    let (name, generation): (String, i64) = conn
        .query_row("SELECT name, generation FROM larder_registry", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .expect("registry row");
    assert_eq!((name.as_str(), generation), ("default", 3));
}

#[test]
fn a_bad_sql_registry_url_is_a_clear_error() {
    let (_dir, repo) = demo_repo();
    let config = repo.join("feature_store.yaml");
    let yaml = std::fs::read_to_string(&config).expect("read config").replace(
        "registry: data/registry.db\n",
        "registry:\n  registry_type: sql\n  path: postgresql://larder:hunter2@127.0.0.1:1/features\n",
    );
    std::fs::write(&config, yaml).expect("write config");
    let out = larder(&repo, &["plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("registry at `postgresql://larder@127.0.0.1:1/features` is unavailable"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn two_concurrent_applies_of_different_projects_both_land() {
    let (_dir, repo) = demo_repo();
    std::fs::write(
        repo.join("feature_store.a.yaml"),
        "project: proj_a\nregistry: data/shared.db\n",
    )
    .expect("write");
    std::fs::write(
        repo.join("feature_store.b.yaml"),
        "project: proj_b\nregistry: data/shared.db\n",
    )
    .expect("write");
    let spawn = |config: &str| {
        Command::new(env!("CARGO_BIN_EXE_larder"))
            .args(["-f", config, "apply"])
            .current_dir(&repo)
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn("feature_store.a.yaml"));
        let b = s.spawn(|| spawn("feature_store.b.yaml"));
        (a.join().expect("a"), b.join().expect("b"))
    });
    let (a, b) = (a.expect("run a"), b.expect("run b"));
    assert!(
        a.status.success() && b.status.success(),
        "{}{}",
        text(&a.stderr),
        text(&b.stderr)
    );
    for config in ["feature_store.a.yaml", "feature_store.b.yaml"] {
        let out = larder(&repo, &["-f", config, "plan", "--detailed-exitcode"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{config}: {}",
            text(&out.stdout)
        );
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn training_data_from_the_demo_repo() {
    let (dir, repo) = demo_repo();
    ok(&repo, &["apply"]);
    // Before: a missing file, a wrong feature, a colliding name get clear errors.
    let out = larder(
        &repo,
        &[
            "get-historical-features",
            "--entities",
            "nope.parquet",
            "-F",
            "driver_hourly_stats:conv_rate",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read the entity rows from"),
        "{}",
        text(&out.stderr)
    );
    let out = larder(
        &repo,
        &[
            "get-historical-features",
            "--entities",
            "data/entity_rows.parquet",
            "-F",
            "driver_hourly_stats:speed",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("feature view `driver_hourly_stats` has no feature `speed`"),
        "{}",
        text(&out.stderr)
    );

    let output = dir.path().join("train.parquet");
    let out = larder(
        &repo,
        &[
            "get-historical-features",
            "--entities",
            "data/entity_rows.parquet",
            "--feature-service",
            "driver_activity_v1",
            "--full-feature-names",
            "--output",
            output.to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with("Wrote 1000 rows to"),
        "{}",
        text(&out.stderr)
    );
    let file = std::fs::File::open(&output).expect("output exists");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let schema = arrow::array::RecordBatchReader::schema(&reader);
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "driver_id",
            "customer_id",
            "event_timestamp",
            "driver_hourly_stats__conv_rate",
            "driver_hourly_stats__avg_daily_trips",
            "customer_profile__current_balance",
            "customer_profile__avg_passenger_count",
            "customer_profile__lifetime_trip_count",
        ]
    );
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, 1000);

    // A small result prints as a table.
    let table = ok(
        &repo,
        &[
            "get-historical-features",
            "--entity-sql",
            "SELECT driver_id, event_timestamp FROM driver_stats_source WHERE driver_id = 1001 ORDER BY event_timestamp LIMIT 3",
            "-F",
            "driver_hourly_stats:acc_rate",
        ],
    );
    assert!(
        table.contains("acc_rate") && table.ends_with("(3 rows)\n"),
        "{table}"
    );
}

/// `get-historical-features` of one demo feature for the demo's entity rows into `output`.
fn conv_rate_to(output: &Path) -> Vec<&str> {
    vec![
        "get-historical-features",
        "--entities",
        "data/entity_rows.parquet",
        "-F",
        "driver_hourly_stats:conv_rate",
        "--output",
        output.to_str().expect("utf-8 path"),
    ]
}

#[test]
fn training_data_output_compression() {
    let (dir, repo) = demo_repo();
    ok(&repo, &["apply"]);
    let codecs = |path: &Path| -> Vec<parquet::basic::Compression> {
        let file = std::fs::File::open(path).expect("output exists");
        let reader = parquet::file::reader::SerializedFileReader::new(file).expect("parquet");
        let meta = parquet::file::reader::FileReader::metadata(&reader);
        meta.row_groups()
            .iter()
            .flat_map(|g| g.columns().iter().map(|c| c.compression()))
            .collect()
    };
    let run = |codec: Option<&str>, name: &str| {
        let output = dir.path().join(name);
        let mut args = conv_rate_to(&output);
        if let Some(codec) = codec {
            args.extend(["--compression", codec]);
        }
        (larder(&repo, &args), output)
    };
    for (codec, want) in [
        (None, parquet::basic::Compression::SNAPPY),
        (
            Some("zstd"),
            parquet::basic::Compression::ZSTD(parquet::basic::ZstdLevel::default()),
        ),
        (Some("none"), parquet::basic::Compression::UNCOMPRESSED),
    ] {
        let (out, output) = run(
            codec,
            &format!("train_{}.parquet", codec.unwrap_or("default")),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let got = codecs(&output);
        assert!(
            !got.is_empty() && got.iter().all(|c| *c == want),
            "{codec:?}: {got:?}"
        );
    }
    let (out, output) = run(Some("zstd"), "train.csv");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--compression applies to Parquet output") && err.contains("train.csv"),
        "{err}"
    );
    assert!(!output.exists(), "no file on an error");
    let (out, _) = run(Some("lzo"), "train_lzo.parquet");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid value 'lzo'"),
        "{}",
        text(&out.stderr)
    );
}

fn online_tables(repo: &Path) -> Vec<String> {
    let db = repo.join("data/online_store.db");
    if !db.exists() {
        return Vec::new();
    }
    table_names(&rusqlite::Connection::open(db).expect("open online store"))
}

/// The tables of a SQLite database, sorted by name.
fn table_names(conn: &rusqlite::Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("query");
    stmt.query_map([], |row| row.get::<_, String>(0))
        .expect("rows")
        .map(|r| r.expect("name"))
        .collect()
}

#[test]
fn apply_creates_and_drops_online_tables() {
    let (_dir, repo) = demo_repo();
    ok(&repo, &["plan"]);
    assert!(online_tables(&repo).is_empty(), "plan creates nothing");
    ok(&repo, &["apply"]);
    assert_eq!(
        online_tables(&repo),
        ["demo_customer_profile", "demo_driver_hourly_stats"]
    );
    // Taking a view offline drops its table.
    let defs = repo.join("features.yaml");
    let edited = std::fs::read_to_string(&defs).expect("read").replace(
        "    tags: {team: customers}",
        "    tags: {team: customers}\n    online: false",
    );
    std::fs::write(&defs, edited).expect("write");
    let out = ok(&repo, &["apply"]);
    assert!(
        out.contains("- delete sqlite table demo_customer_profile"),
        "{out}"
    );
    assert_eq!(online_tables(&repo), ["demo_driver_hourly_stats"]);
    ok(&repo, &["teardown"]);
    assert!(online_tables(&repo).is_empty());
}

/// Writes rows of `view` (all features of the demo view, in schema order) straight into the
/// demo repo's online store, as `materialize` would.
fn write_online(
    repo: &Path,
    view: &str,
    features: &[&str],
    rows: &[(&str, i64, i64, Vec<Option<larder::types::feast::Value>>)],
) {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BinaryArray, RecordBatch, TimestampMicrosecondArray};
    use larder::types::feast::{EntityKey, KeyVersion, Value, serialize_entity_key};

    let store = larder::FeatureStore::open(&larder::OpenOptions::new(repo)).expect("open");
    let online = store.online_store().expect("online").expect("sqlite");
    let keys = rows.iter().map(|(name, id, _, _)| {
        serialize_entity_key(
            &EntityKey::new([(*name, Value::int64(*id))]),
            KeyVersion::V3,
        )
        .expect("key")
    });
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(BinaryArray::from_iter_values(keys)),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                .with_timezone("UTC"),
        ),
        Arc::new(TimestampMicrosecondArray::from(vec![None; rows.len()]).with_timezone("UTC")),
    ];
    for f in 0..features.len() {
        columns.push(Arc::new(BinaryArray::from_iter(
            rows.iter().map(|r| r.3[f].as_ref().map(Value::to_bytes)),
        )));
    }
    let batch =
        RecordBatch::try_new(larder::online_store::write_schema(features), columns).expect("batch");
    let table = larder::online_store::ViewTable::new("demo", view, features.iter().copied());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(online.write_batch(&table, batch))
        .expect("write");
}

#[test]
fn online_features_from_the_demo_repo() {
    use larder::types::feast::Value;

    let (_dir, repo) = demo_repo();
    ok(&repo, &["apply"]);
    // Whole seconds, so `__ts` (epoch seconds) is exact.
    let now = chrono::Utc::now().timestamp() * 1_000_000;
    let hour = 3_600_000_000;
    let (fresh, stale) = (now - hour, now - 30 * hour);
    write_online(
        &repo,
        "driver_hourly_stats",
        &["conv_rate", "acc_rate", "avg_daily_trips"],
        &[
            (
                "driver_id",
                1001,
                fresh,
                vec![
                    Some(Value::float(0.5)),
                    Some(Value::default()),
                    Some(Value::int64(10)),
                ],
            ),
            (
                "driver_id",
                1002,
                stale,
                vec![Some(Value::float(0.25)), None, Some(Value::int64(4))],
            ),
        ],
    );
    write_online(
        &repo,
        "customer_profile",
        &[
            "current_balance",
            "avg_passenger_count",
            "lifetime_trip_count",
        ],
        &[(
            "customer_id",
            5001,
            fresh,
            vec![
                Some(Value::float(1.5)),
                Some(Value::float(2.0)),
                Some(Value::int64(30)),
            ],
        )],
    );

    let out = ok(
        &repo,
        &[
            "get-online-features",
            "-e",
            "driver_id=1001",
            "-e",
            "driver_id=\"1002\"",
            "-e",
            "driver_id=1003",
            "-F",
            "driver_hourly_stats:conv_rate,driver_hourly_stats:acc_rate",
            "-F",
            "driver_hourly_stats:avg_daily_trips",
            "--timestamps",
            "--statuses",
        ],
    );
    assert!(out.starts_with("{\n  \"driver_id\": [\n    1001,"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let (fresh_s, stale_s) = (fresh / 1_000_000, stale / 1_000_000);
    assert_eq!(
        json,
        serde_json::json!({
            "driver_id": [1001, 1002, 1003],
            "driver_id__ts": [0, 0, 0],
            "driver_id__status": ["PRESENT", "PRESENT", "PRESENT"],
            "conv_rate": [0.5, 0.25, null],
            "conv_rate__ts": [fresh_s, stale_s, 0],
            "conv_rate__status": ["PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"],
            "acc_rate": [null, null, null],
            "acc_rate__ts": [fresh_s, 0, 0],
            "acc_rate__status": ["NULL_VALUE", "NOT_FOUND", "NOT_FOUND"],
            "avg_daily_trips": [10, 4, null],
            "avg_daily_trips__ts": [fresh_s, stale_s, 0],
            "avg_daily_trips__status": ["PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"],
        })
    );
    // Column order is the response order, not sorted.
    let keys: Vec<usize> = [
        "\"driver_id\"",
        "\"conv_rate\"",
        "\"acc_rate\"",
        "\"avg_daily_trips\"",
    ]
    .iter()
    .map(|k| out.find(k).expect("key"))
    .collect();
    assert!(keys.is_sorted(), "{out}");

    // A service, full names, two entities per row, the HTTP response shape.
    let out = ok(
        &repo,
        &[
            "get-online-features",
            "-e",
            "customer_id=5001,driver_id=1001",
            "--feature-service",
            "driver_activity_v1",
            "--full-feature-names",
            "--response",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        json["metadata"]["feature_names"],
        serde_json::json!([
            "customer_id",
            "driver_id",
            "driver_hourly_stats__conv_rate",
            "driver_hourly_stats__avg_daily_trips",
            "customer_profile__current_balance",
            "customer_profile__avg_passenger_count",
            "customer_profile__lifetime_trip_count"
        ])
    );
    let fresh_text = chrono::DateTime::from_timestamp_micros(fresh)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        json["results"][4],
        serde_json::json!({
            "values": [1.5],
            "statuses": ["PRESENT"],
            "event_timestamps": [fresh_text]
        })
    );
    assert_eq!(
        json["results"][0]["event_timestamps"],
        serde_json::json!(["1970-01-01T00:00:00Z"])
    );

    // Errors: a view's join key missing, an on-demand view, a malformed -e (usage).
    let out = larder(
        &repo,
        &[
            "get-online-features",
            "-e",
            "customer_id=5001",
            "-F",
            "driver_hourly_stats:conv_rate",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: missing join key values for feature view `driver_hourly_stats`: `driver_id` (give them as entity columns)\n"
    );
    let out = larder(
        &repo,
        &[
            "get-online-features",
            "-e",
            "driver_id=1001",
            "--feature-service",
            "driver_activity_v2",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("on-demand feature view `conv_adjusted` cannot be read here yet"),
        "{}",
        text(&out.stderr)
    );
    let out = larder(
        &repo,
        &[
            "get-online-features",
            "-e",
            "driver_id=1001",
            "-e",
            "customer_id=5001",
            "-F",
            "driver_hourly_stats:conv_rate",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "entity row 1 has the columns `customer_id`, but the first row has `driver_id`"
        ),
        "{}",
        text(&out.stderr)
    );
    let out = larder(
        &repo,
        &[
            "get-online-features",
            "-e",
            "driver_id",
            "-F",
            "driver_hourly_stats:conv_rate",
        ],
    );
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("`driver_id` is not KEY=VALUE"),
        "{}",
        text(&out.stderr)
    );
}

/// One stored row: table, entity key, event time, created time, packed values.
type OnlineRow = (String, Vec<u8>, i64, Option<i64>, Vec<u8>);

/// Rows of every table of a SQLite online store, sorted, for exact comparisons.
fn online_rows(db: &Path) -> Vec<OnlineRow> {
    let conn = rusqlite::Connection::open(db).expect("open online store");
    let mut rows = Vec::new();
    for table in table_names(&conn) {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT entity_key, event_ts, created_ts, payload FROM \"{table}\" ORDER BY entity_key"
            ))
            .expect("query");
        let table_rows = stmt
            .query_map([], |row| {
                Ok((
                    table.clone(),
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                ))
            })
            .expect("rows")
            .map(|r| r.expect("row"));
        rows.extend(table_rows);
    }
    rows
}

/// `materialize` re-executes itself once under Larder's mimalloc settings, unless the
/// operator set one of them or opted out; the run's debug log says which applied.
#[cfg(unix)]
/// Runs `larder --log-level debug ARGS` in `repo` with only `env` among the allocator
/// variables set; returns stderr.
fn allocator_run(repo: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_larder"));
    command
        .args(["--log-level", "debug"])
        .args(args)
        .current_dir(repo)
        .env_remove("MIMALLOC_PURGE_DELAY")
        .env_remove("MIMALLOC_ARENA_EAGER_COMMIT")
        .env_remove("MIMALLOC_ALLOW_THP")
        .env_remove("LARDER_NO_MALLOC_TUNING")
        .env_remove("LARDER_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().expect("run larder");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stderr)
}

#[test]
fn materialize_runs_under_the_batch_allocator_settings() {
    let (_dir, repo) = demo_repo();
    ok(&repo, &["apply"]);
    let args = ["materialize", "2025-05-20", "2025-05-28", "--no-progress"];
    let tuned = allocator_run(&repo, &args, &[]);
    assert!(
        tuned.contains("allocator tuned for this command")
            && tuned.contains("MIMALLOC_PURGE_DELAY=20 MIMALLOC_ARENA_EAGER_COMMIT=0"),
        "{tuned}"
    );
    let operator = allocator_run(&repo, &args, &[("MIMALLOC_PURGE_DELAY", "100")]);
    assert!(
        operator.contains("allocator settings from the environment")
            && operator.contains("MIMALLOC_PURGE_DELAY=100")
            && !operator.contains("MIMALLOC_ARENA_EAGER_COMMIT=0"),
        "{operator}"
    );
    let opted_out = allocator_run(&repo, &args, &[("LARDER_NO_MALLOC_TUNING", "1")]);
    assert!(
        opted_out.contains("mimalloc's default settings"),
        "{opted_out}"
    );
}

#[test]
fn historical_retrieval_runs_under_the_query_allocator_settings() {
    let (dir, repo) = demo_repo();
    ok(&repo, &["apply"]);
    let output = dir.path().join("training.parquet");
    let args = conv_rate_to(&output);
    let tuned = allocator_run(&repo, &args, &[]);
    assert!(
        tuned.contains("allocator tuned for this command")
            && tuned.contains("MIMALLOC_PURGE_DELAY=-1 MIMALLOC_ALLOW_THP=0"),
        "{tuned}"
    );
    assert!(output.exists(), "the re-executed command wrote its output");
    let operator = allocator_run(&repo, &args, &[("MIMALLOC_PURGE_DELAY", "5")]);
    assert!(
        operator.contains("allocator settings from the environment")
            && operator.contains("MIMALLOC_PURGE_DELAY=5")
            && !operator.contains("MIMALLOC_ALLOW_THP=0"),
        "{operator}"
    );
}

#[test]
fn materialize_and_materialize_incremental_on_the_demo_repo() {
    let (_dir, repo) = demo_repo();
    ok(&repo, &["apply"]);
    let out = ok(
        &repo,
        &[
            "materialize",
            "2025-05-20T00:00:00",
            "2025-05-28",
            "--views",
            "driver_hourly_stats",
        ],
    );
    assert!(
        out.contains(
            "Materializing 1 feature views from 2025-05-20T00:00:00Z to 2025-05-28T00:00:00Z into the sqlite online store."
        ),
        "{out}"
    );
    assert!(out.contains("driver_hourly_stats: "), "{out}");
    // Every demo driver has hourly rows in the window: one online row each.
    let rows = online_rows(&repo.join("data/online_store.db"));
    let drivers = rows
        .iter()
        .filter(|r| r.0 == "demo_driver_hourly_stats")
        .count();
    assert_eq!(drivers, 100, "{out}");
    assert!(rows.iter().all(|r| r.0 != "demo_customer_profile"));
    // Online reads see what was materialized (the demo's rows are older than the 1-day ttl
    // by the real clock, so they are served as OUTSIDE_MAX_AGE, values included).
    let read: serde_json::Value = serde_json::from_str(&ok(
        &repo,
        &[
            "get-online-features",
            "-e",
            "driver_id=1001",
            "-e",
            "driver_id=4242",
            "-F",
            "driver_hourly_stats:conv_rate",
            "--statuses",
            "--timestamps",
        ],
    ))
    .expect("json");
    assert_eq!(
        read["conv_rate__status"],
        serde_json::json!(["OUTSIDE_MAX_AGE", "NOT_FOUND"]),
        "{read}"
    );
    assert!(
        read["conv_rate"][0].is_f64() && read["conv_rate"][1].is_null(),
        "{read}"
    );
    // The stored row is the latest of the window: event time at most its end.
    let ts = read["conv_rate__ts"][0].as_i64().expect("seconds");
    assert!(ts <= 1_748_390_400 && ts > 1_748_390_400 - 86_400, "{read}");

    let dump: serde_json::Value =
        serde_json::from_str(&ok(&repo, &["registry-dump"])).expect("json");
    let recorded = &dump["project"]["materializations"]["driver_hourly_stats"];
    assert_eq!(
        recorded,
        &serde_json::json!([{"start": "2025-05-20T00:00:00Z", "end": "2025-05-28T00:00:00Z"}]),
        "{dump}"
    );

    // Incremental: the driver view resumes at its last end; the customer view would start
    // at now - ttl (7 days before the real now), after END: it is skipped as up to date.
    let out = ok(&repo, &["materialize-incremental", END_TIME]);
    assert!(
        out.contains("driver_hourly_stats from 2025-05-28T00:00:00Z to 2025-06-01T00:00:00Z"),
        "{out}"
    );
    let dump: serde_json::Value =
        serde_json::from_str(&ok(&repo, &["registry-dump"])).expect("json");
    assert_eq!(
        dump["project"]["materializations"]["driver_hourly_stats"],
        serde_json::json!([{"start": "2025-05-20T00:00:00Z", "end": "2025-06-01T00:00:00Z"}]),
    );
    assert!(
        out.contains("customer_profile: up to date (its window would start at 20"),
        "{out}"
    );
    assert!(dump["project"]["materializations"]["customer_profile"].is_null());

    // Usage errors and unknown views.
    let out = larder(&repo, &["materialize", "yesterday", "2025-05-28"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("`yesterday` is not a time"));
    let out = larder(
        &repo,
        &["materialize", "2025-05-20", "2025-05-28", "-v", "nope"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("feature view `nope` is not in project `demo`"),
        "{}",
        text(&out.stderr)
    );
}

/// A repo with one view over `rows` random rows, written in small online batches so a
/// materialization takes long enough to be interrupted.
/// Returns the number of distinct users.
fn big_repo(dir: &Path, rows: usize) -> usize {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    std::fs::write(
        dir.join("feature_store.yaml"),
        "project: big\nregistry: data/registry.db\nprovider: local\n\
         online_store:\n  type: sqlite\n  path: data/online.db\n\
         materialization:\n  online_write_batch_size: 200\n",
    )
    .expect("write config");
    std::fs::write(
        dir.join("features.yaml"),
        "entities:\n  - name: user\n    join_keys: [user_id]\n    value_type: Int64\n\
         data_sources:\n  - name: events\n    type: file\n    path: data/events.parquet\n\
         \x20   timestamp_field: ts\n\
         feature_views:\n  - name: user_stats\n    entities: [user]\n    ttl: 0s\n\
         \x20   source: events\n    schema:\n      - {name: score, dtype: Float64}\n\
         \x20     - {name: clicks, dtype: Int64}\n",
    )
    .expect("write definitions");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let users: Vec<i64> = (0..rows).map(|_| (next() % 50_000) as i64).collect();
    let distinct = users.iter().collect::<std::collections::HashSet<_>>().len();
    let ts: Vec<i64> = (0..rows)
        .map(|_| 1_748_000_000_000_000 + (next() % 1_000_000) as i64 * 1_000_000)
        .collect();
    let score: Vec<f64> = (0..rows).map(|_| (next() % 1000) as f64 / 7.0).collect();
    let clicks: Vec<i64> = (0..rows).map(|_| (next() % 100) as i64).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("score", DataType::Float64, false),
        Field::new("clicks", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(users)),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(Float64Array::from(score)),
        Arc::new(Int64Array::from(clicks)),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
    let file = std::fs::File::create(dir.join("data/events.parquet")).expect("create");
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    distinct
}

#[test]
fn an_interrupted_materialization_records_nothing_and_a_rerun_completes_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (killed, clean) = (dir.path().join("killed"), dir.path().join("clean"));
    let mut users = 0;
    for repo in [&killed, &clean] {
        users = big_repo(repo, 400_000);
        ok(repo, &["apply"]);
    }
    let args = ["materialize", "2025-01-01", "2026-01-01", "--no-progress"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(args)
        .current_dir(&killed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start larder");
    // Kill it as soon as some rows are in the online store (SIGKILL: no cleanup runs).
    let db = killed.join("data/online.db");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("poll") {
            panic!(
                "materialization ended ({status}) before it could be interrupted; grow the data"
            );
        }
        let written = rusqlite::Connection::open(&db)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM big_user_stats", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .unwrap_or(0);
        if written > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rows written in time"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success());

    let dump: serde_json::Value =
        serde_json::from_str(&ok(&killed, &["registry-dump"])).expect("json");
    assert!(
        dump["project"]["materializations"]
            .get("user_stats")
            .is_none(),
        "an interrupted run recorded its window: {dump}"
    );
    let partial = online_rows(&db);
    assert!(!partial.is_empty());

    // The rerun completes it; the store then equals a clean single run.
    ok(&killed, &args);
    ok(&clean, &args);
    let rerun = online_rows(&db);
    assert_eq!(rerun.len(), users);
    assert_eq!(rerun, online_rows(&clean.join("data/online.db")));
    assert!(rerun.len() > partial.len());
}

/// One HTTP/1.1 exchange with `Connection: close`; the raw response.
fn http(addr: &str, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to larder serve");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

#[test]
fn serve_answers_feast_requests_and_exits_0_on_sigterm() {
    use std::io::BufRead;
    let (_dir, repo) = demo_repo();
    ok(&repo, &["apply"]);
    ok(
        &repo,
        &["materialize", "2025-05-01", "2025-06-01", "--no-progress"],
    );
    let log_path = repo.join("serve.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["serve", "--port", "0", "--registry-ttl-sec", "1"])
        .args(["--log-format", "json", "--log-level", "info"])
        .current_dir(&repo)
        .env_remove("LARDER_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start larder serve");
    let stdout = child.stdout.take().expect("stdout");
    // Kills the server if an assertion fails before it is stopped.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            if self.0.try_wait().ok().flatten().is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let mut child = Reap(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the announced address");
    assert!(
        line.starts_with("Serving project `demo` on http://"),
        "stdout: {line:?}; stderr: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let addr = line
        .trim()
        .rsplit("://")
        .next()
        .expect("an address")
        .to_string();
    // The server does not re-execute itself under the batch settings: mimalloc's defaults
    // serve.
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        let environ = std::fs::read(format!("/proc/{}/environ", child.0.id())).expect("environ");
        assert!(
            !text(&environ).contains("MIMALLOC_PURGE_DELAY="),
            "{}",
            text(&environ)
        );
    }

    // On the embedded SQLite store: two HTTP worker threads per core by default.
    #[cfg(target_os = "linux")]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = || {
            let tasks = std::fs::read_dir(format!("/proc/{}/task", child.0.id())).expect("tasks");
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("larder-http-"))
                .count()
        };
        // The address is announced as the workers start.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while workers() < 2 * cores && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(workers(), 2 * cores);
    }

    let response = http(
        &addr,
        "POST",
        "/get-online-features",
        r#"{"features": ["driver_hourly_stats:avg_daily_trips"], "entities": {"driver_id": [1001, 9999]}}"#,
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(r#"{"metadata":{"feature_names":["driver_id","avg_daily_trips"]}"#),
        "{response}"
    );
    // The latest demo row of driver 1001 (the status depends on today's date: ttl is 1d).
    assert!(
        response.contains(r#""event_timestamps":["2025-05-31T23:00:00Z","1970-01-01T00:00:00Z"]"#),
        "{response}"
    );
    assert!(response.contains(r#"","NOT_FOUND"]"#), "{response}");
    let response = http(&addr, "GET", "/ready", "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("poll") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "larder serve did not exit on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still listening after exit"
    );
    // `--log-format json`: every line an object; each request logged with its fields.
    let log = std::fs::read_to_string(&log_path).expect("read the log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request = lines
        .iter()
        .find(|l| l["endpoint"] == "/get-online-features")
        .unwrap_or_else(|| panic!("no request line in {log}"));
    assert_eq!(request["status"], 200, "{request}");
    assert_eq!(request["method"], "POST", "{request}");
    assert!(request["latency_us"].is_u64(), "{request}");
    assert_eq!(request["level"], "INFO", "{request}");
    assert!(
        lines.iter().any(|l| l["message"] == "server stopped"),
        "{log}"
    );
}
