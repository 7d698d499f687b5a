//! Shared test helpers: definitions from YAML, Parquet files from columns, runs collected.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{Float64Type, Int64Type};
use futures::TryStreamExt;
use larder_offline::{
    EntityInput, FileOfflineStore, FileStoreOptions, HistoricalRequest, LatestRequest,
    OfflineError, OfflineStore,
};
use larder_spec::{
    Definitions, FeatureSelection, LoadOptions, parse_definitions, resolve_features,
};
use parquet::arrow::ArrowWriter;

/// 2025-01-01T00:00:00Z in microseconds.
pub const BASE_US: i64 = 1_735_689_600_000_000;
pub const HOUR_US: i64 = 3_600_000_000;

/// A multi-threaded runtime with two workers (the join code uses every core it is given).
pub fn two_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn hours(h: i64) -> i64 {
    BASE_US + h * HOUR_US
}

pub fn ts_array(values: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(values).with_timezone("UTC"))
}

pub fn ts_hours(values: &[i64]) -> ArrayRef {
    ts_array(values.iter().map(|h| Some(hours(*h))))
}

pub fn ints(values: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

pub fn floats(values: &[Option<f64>]) -> ArrayRef {
    Arc::new(Float64Array::from(values.to_vec()))
}

pub fn strings(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

pub fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).expect("valid batch")
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub defs: Arc<Definitions>,
    /// Set when the fixture's tables live in Postgres (see `backends.rs`).
    pub pg: Option<crate::backends::PgSchema>,
}

/// Like [`fixture`], without checking the sources (some may be missing on purpose).
pub fn fixture_unchecked(yaml: &str, files: &[(&str, RecordBatch)]) -> Fixture {
    build_fixture(yaml, files, false)
}

/// A repo folder holding `files` (name → batch, written as Parquet in several row groups)
/// and the definitions in `yaml`.
pub fn fixture(yaml: &str, files: &[(&str, RecordBatch)]) -> Fixture {
    build_fixture(yaml, files, true)
}

fn build_fixture(yaml: &str, files: &[(&str, RecordBatch)], validate_sources: bool) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, data) in files {
        write_parquet(&dir.path().join(name), data);
    }
    let options = LoadOptions {
        repo_dir: dir.path().to_path_buf(),
        config_file: None,
        project: "test".into(),
        project_description: None,
        validate_sources,
    };
    let defs = parse_definitions(&[(PathBuf::from("defs.yaml"), yaml.to_string())], &options)
        .unwrap_or_else(|e| panic!("invalid test definitions: {e}"));
    Fixture {
        dir,
        defs: Arc::new(defs),
        pg: None,
    }
}

pub fn write_parquet(path: &std::path::Path, data: &RecordBatch) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(1000))
        .build();
    let mut writer = ArrowWriter::try_new(
        File::create(path).expect("create"),
        data.schema(),
        Some(props),
    )
    .expect("writer");
    writer.write(data).expect("write");
    writer.close().expect("close");
}

pub fn store(fx: &Fixture, memory_limit: Option<usize>, partitions: usize) -> FileOfflineStore {
    let mut options = FileStoreOptions::new(fx.dir.path());
    options.memory_limit = memory_limit;
    options.partitions = partitions;
    options.batch_size = 1024;
    FileOfflineStore::new(options).expect("store")
}

pub async fn run_with(
    fx: &Fixture,
    store: &dyn OfflineStore,
    entities: EntityInput,
    selection: FeatureSelection,
    full_feature_names: bool,
) -> Result<RecordBatch, OfflineError> {
    let views = resolve_features(&fx.defs, &selection, full_feature_names).expect("resolvable");
    let stream = store
        .get_historical_features(HistoricalRequest {
            definitions: fx.defs.clone(),
            views,
            entities,
        })
        .await?;
    let schema = stream.schema();
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    Ok(concat_batches(&schema, &batches).expect("concat"))
}

pub async fn run(
    fx: &Fixture,
    entities: RecordBatch,
    refs: &[&str],
) -> Result<RecordBatch, OfflineError> {
    let store = crate::backends::store_for(fx);
    let refs = refs
        .iter()
        .map(|r| r.parse().expect("feature ref"))
        .collect();
    run_with(
        fx,
        store.as_ref(),
        EntityInput::Batches(vec![entities]),
        FeatureSelection::Refs(refs),
        false,
    )
    .await
}

pub fn column_f64(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column `{name}` in {:?}", batch.schema()));
    column.as_primitive::<Float64Type>().iter().collect()
}

pub fn column_i64(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let column = batch.column_by_name(name).expect("column");
    column.as_primitive::<Int64Type>().iter().collect()
}

pub fn names(batch: &RecordBatch) -> Vec<String> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// Every feature of view `name`, as materialization reads it.
pub fn whole_view(defs: &Definitions, name: &str) -> larder_spec::ResolvedView {
    let view = defs
        .feature_views
        .get(name)
        .unwrap_or_else(|| panic!("no feature view `{name}`"));
    let refs = view
        .features
        .iter()
        .map(|f| format!("{name}:{}", f.name).parse().expect("feature ref"))
        .collect();
    let mut views =
        resolve_features(defs, &FeatureSelection::Refs(refs), false).expect("resolvable");
    views.pop().expect("one view")
}

/// What a `pull_latest` run gave, its stream collected.
#[derive(Debug)]
pub struct Latest {
    pub batch: RecordBatch,
    pub rows_read: u64,
    pub source_rows: Option<u64>,
}

/// Reads the latest rows of view `view` with event times in `[start_us, end_us]`.
pub async fn pull(
    fx: &Fixture,
    store: &dyn OfflineStore,
    view: &str,
    (start_us, end_us): (i64, i64),
    memory_limit: Option<usize>,
) -> Result<Latest, OfflineError> {
    pull_derived(fx, store, view, (start_us, end_us), memory_limit, None).await
}

/// As [`pull`], asking for a derived key column.
pub async fn pull_derived(
    fx: &Fixture,
    store: &dyn OfflineStore,
    view: &str,
    (start_us, end_us): (i64, i64),
    memory_limit: Option<usize>,
    derived_key: Option<larder_offline::DerivedKey>,
) -> Result<Latest, OfflineError> {
    let time = |us| chrono::DateTime::from_timestamp_micros(us).expect("time in range");
    let rows = store
        .pull_latest(LatestRequest {
            definitions: fx.defs.clone(),
            view: whole_view(&fx.defs, view),
            start: time(start_us),
            end: time(end_us),
            memory_limit,
            derived_key,
        })
        .await?;
    let schema = rows.stream.schema();
    let batches: Vec<RecordBatch> = rows.stream.try_collect().await?;
    Ok(Latest {
        batch: concat_batches(&schema, &batches).expect("concat"),
        rows_read: rows.rows_read.load(std::sync::atomic::Ordering::Relaxed),
        source_rows: rows.source_rows,
    })
}

/// Timestamps of a `Timestamp(Microsecond, "UTC")` column, checking that type.
pub fn column_us(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let column = batch.column_by_name(name).expect("column");
    assert_eq!(
        column.data_type(),
        &arrow::datatypes::DataType::Timestamp(
            arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into())
        ),
        "type of `{name}`"
    );
    column
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
        .iter()
        .collect()
}
