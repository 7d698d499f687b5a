//! Checking views against the columns and types of their file sources.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use larder_spec::{LoadOptions, load_definitions};
use parquet::arrow::ArrowWriter;

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn repo(defs: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    write_parquet(
        &dir.path().join("data/stats.parquet"),
        vec![
            ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            (
                "event_timestamp",
                Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC")),
            ),
            ("created", Arc::new(StringArray::from(vec!["x"]))),
            ("conv_rate", Arc::new(Float32Array::from(vec![0.5]))),
            ("city", Arc::new(StringArray::from(vec!["x"]))),
        ],
    );
    std::fs::write(dir.path().join("features.yaml"), defs).unwrap();
    // Definitions under data/ are never read.
    std::fs::write(dir.path().join("data/ignored.yaml"), "garbage: [").unwrap();
    dir
}

fn load(dir: &Path) -> Result<larder_spec::Definitions, Vec<String>> {
    load_definitions(&LoadOptions {
        repo_dir: dir.to_path_buf(),
        config_file: None,
        project: "p".into(),
        project_description: None,
        validate_sources: true,
    })
    .map_err(|e| e.lines())
}

const HEAD: &str = "entities:\n  - {name: driver, join_keys: [driver_id], value_type: Int64}\n";

#[test]
fn matching_schema_with_field_mapping_passes() {
    let dir = repo(&format!(
        "{HEAD}data_sources:\n  - name: s\n    type: file\n    path: data/stats.parquet\n    timestamp_field: event_timestamp\n    field_mapping: {{id: driver_id}}\nfeature_views:\n  - name: v\n    source: s\n    entities: [driver]\n    schema: [{{name: conv_rate, dtype: Float32}}, {{name: city, dtype: String}}]\n"
    ));
    let defs = load(dir.path()).expect("valid");
    assert_eq!(defs.feature_views["v"].features.len(), 2);
}

#[test]
fn schema_mismatches_are_all_reported() {
    let dir = repo(&format!(
        "{HEAD}data_sources:\n  - name: s\n    type: file\n    path: data/stats.parquet\n    timestamp_field: event_timestamp\n    created_timestamp_column: created\n  - name: gone\n    type: file\n    path: data/missing.parquet\n    timestamp_field: ts\n  - name: t\n    type: file\n    path: data/stats.parquet\n    timestamp_field: conv_rate\nfeature_views:\n  - name: v\n    source: s\n    entities: [driver]\n    schema: [{{name: conv_rate, dtype: Int64}}, {{name: speed, dtype: Float32}}]\n"
    ));
    let errors = load(dir.path()).unwrap_err();
    assert_eq!(
        errors,
        [
            "features.yaml:4: data source `s`: `created_timestamp_column` `created` of `data/stats.parquet` is Utf8, not a timestamp",
            "features.yaml:9: data source `gone`: file `data/missing.parquet` not found",
            "features.yaml:13: data source `t`: `timestamp_field` `conv_rate` of `data/stats.parquet` is Float32, not a timestamp",
            "features.yaml:18: feature view `v`: join key `driver_id` is not a column of `data/stats.parquet` (columns: city, conv_rate, created, event_timestamp, id)",
            "features.yaml:18: feature view `v`: feature `conv_rate` is declared Int64 but column `conv_rate` of `data/stats.parquet` is Float32",
            "features.yaml:18: feature view `v`: feature `speed` is not a column of `data/stats.parquet` (columns: city, conv_rate, created, event_timestamp, id)",
        ]
    );
}
