//! Reading the Arrow schema of a file source (Parquet footer or CSV header + sample).

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};

use arrow::csv::reader::Format;
use arrow::datatypes::Schema;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::model::FileFormat;

/// CSV rows read to infer column types.
const CSV_INFER_ROWS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("file `{path}` not found")]
    NotFound { path: PathBuf },
    #[error("no {format} files in `{path}`")]
    EmptyFolder { path: PathBuf, format: FileFormat },
    #[error("cannot read `{path}`: {message}")]
    Unreadable { path: PathBuf, message: String },
}

/// The schema of the data at `path`: a file, or a folder whose files (by extension) share one
/// schema, of which the first in name order is read.
pub fn read_file_schema(path: &Path, format: FileFormat) -> Result<Schema, SchemaError> {
    let file_path = first_data_file(path, format)?;
    let unreadable = |message: String| SchemaError::Unreadable {
        path: file_path.clone(),
        message,
    };
    let file = File::open(&file_path).map_err(|e| unreadable(e.to_string()))?;
    match format {
        FileFormat::Parquet => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| unreadable(e.to_string()))?;
            Ok(builder.schema().as_ref().clone())
        }
        FileFormat::Csv => {
            let mut reader = BufReader::new(file);
            let (schema, _) = Format::default()
                .with_header(true)
                .infer_schema(&mut reader, Some(CSV_INFER_ROWS))
                .map_err(|e| unreadable(e.to_string()))?;
            reader.rewind().map_err(|e| unreadable(e.to_string()))?;
            Ok(schema)
        }
    }
}

/// Matches a file name against a pattern of `*` and `?` wildcards.
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            wildcard_match(&pattern[1..], name)
                || (!name.is_empty() && wildcard_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => wildcard_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => wildcard_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// The first file (in name order) of `dir/pattern`, where the pattern has `*`/`?` wildcards
/// in its last component only (as the file offline store reads such globs).
fn first_glob_match(path: &Path, format: FileFormat) -> Result<PathBuf, SchemaError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let pattern = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entries = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SchemaError::NotFound {
            path: dir.to_path_buf(),
        },
        _ => SchemaError::Unreadable {
            path: dir.to_path_buf(),
            message: e.to_string(),
        },
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name().is_some_and(|n| {
                    wildcard_match(pattern.as_bytes(), n.to_string_lossy().as_bytes())
                })
        })
        .collect();
    files.sort();
    files.into_iter().next().ok_or(SchemaError::EmptyFolder {
        path: path.to_path_buf(),
        format,
    })
}

fn first_data_file(path: &Path, format: FileFormat) -> Result<PathBuf, SchemaError> {
    let has_glob = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains(['*', '?']));
    if has_glob {
        return first_glob_match(path, format);
    }
    let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SchemaError::NotFound {
            path: path.to_path_buf(),
        },
        _ => SchemaError::Unreadable {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })?;
    if !metadata.is_dir() {
        return Ok(path.to_path_buf());
    }
    let extension = format.to_string();
    let entries = std::fs::read_dir(path).map_err(|e| SchemaError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case(&extension))
        })
        .collect();
    files.sort();
    files.into_iter().next().ok_or(SchemaError::EmptyFolder {
        path: path.to_path_buf(),
        format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;

    #[test]
    fn a_glob_reads_its_first_matching_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.csv"), "x,y\n1,2\n").unwrap();
        std::fs::write(dir.path().join("a.txt"), "not csv").unwrap();
        let schema = read_file_schema(&dir.path().join("*.csv"), FileFormat::Csv).unwrap();
        assert_eq!(schema.fields().len(), 2);
        let err = read_file_schema(&dir.path().join("z*.csv"), FileFormat::Csv).unwrap_err();
        assert!(err.to_string().contains("no csv files"), "{err}");
        assert!(wildcard_match(b"part-?.parquet", b"part-1.parquet"));
        assert!(!wildcard_match(b"part-*.parquet", b"push-1.parquet"));
    }

    #[test]
    fn csv_schema_is_inferred() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(
            &path,
            "driver_id,event_timestamp,conv_rate\n1001,2025-01-01T00:00:00Z,0.5\n",
        )
        .unwrap();
        let schema = read_file_schema(&path, FileFormat::Csv).unwrap();
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        assert!(matches!(
            schema.field(1).data_type(),
            DataType::Timestamp(_, _)
        ));
        assert_eq!(schema.field(2).data_type(), &DataType::Float64);
    }

    #[test]
    fn missing_and_empty_folder() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.parquet");
        assert!(matches!(
            read_file_schema(&missing, FileFormat::Parquet),
            Err(SchemaError::NotFound { .. })
        ));
        let err = read_file_schema(dir.path(), FileFormat::Parquet).unwrap_err();
        assert!(err.to_string().starts_with("no parquet files in `"));
    }
}
