//! Offline push to file sources: each append is a new Parquet file beside the source's data,
//! written under a temporary name and renamed into place, so existing files are never
//! rewritten and readers see a pushed file whole or not at all.
//!
//! Where the new file goes depends on the source's `path`:
//! * a folder: into the folder (its `*.parquet` files are the source);
//! * a glob such as `data/stats/*.parquet`: into the glob's folder, with a name the glob
//!   matches (else the append is refused);
//! * a single file `data/stats.parquet`: into the folder `data/stats.parquet.pushed/`,
//!   which the file store reads together with the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use larder_spec::{DataSource, FileFormat, FileSource, SourceKind};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::FileOfflineStore;
use super::sources::{read_file, resolve_path};
use crate::error::OfflineError;
use crate::store::AppendReport;

/// The folder holding the pushed files of a single-file source at `path`.
pub(crate) fn pushed_dir(path: &str) -> PathBuf {
    PathBuf::from(format!("{path}.pushed"))
}

pub(super) fn file_source(source: &DataSource) -> Result<&FileSource, OfflineError> {
    match &source.kind {
        SourceKind::File(file) => Ok(file),
        other => Err(OfflineError::UnsupportedAppend {
            source_name: source.name.to_string(),
            reason: format!(
                "it is a {} source; the file offline store appends to file sources only",
                other.type_name()
            ),
        }),
    }
}

/// The schema of a file source as DataFusion reads it (all files of a folder or glob).
pub(crate) async fn source_schema(
    store: &FileOfflineStore,
    source: &DataSource,
) -> Result<SchemaRef, OfflineError> {
    let file = file_source(source)?;
    let path = resolve_path(store, &file.path);
    let ctx = store.session(1);
    let df = read_file(&ctx, &path, file.file_format)
        .await
        .map_err(|e| OfflineError::SourceRead {
            source_name: source.name.to_string(),
            path: file.path.clone(),
            message: e.to_string(),
        })?;
    Ok(Arc::new(df.schema().as_arrow().clone()))
}

fn has_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// Matches `name` against a file-name pattern of `*` and `?` wildcards (`[` is refused
/// before this is called).
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

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A file name no other append (in this or another process) picks.
fn new_file_name() -> String {
    let now = chrono::Utc::now().format("%Y%m%dT%H%M%S%6fZ");
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("push-{now}-{}-{seq}.parquet", std::process::id())
}

pub(crate) async fn append(
    store: &FileOfflineStore,
    source: &DataSource,
    rows: RecordBatch,
) -> Result<AppendReport, OfflineError> {
    let file = file_source(source)?;
    let name = source.name.to_string();
    let unsupported = |reason: String| OfflineError::UnsupportedAppend {
        source_name: name.clone(),
        reason,
    };
    if file.file_format != FileFormat::Parquet {
        return Err(unsupported(format!(
            "offline pushes write Parquet files, and `{}` is a {} source",
            file.path, file.file_format
        )));
    }
    if file.path.contains("://") {
        return Err(unsupported(format!(
            "`{}` is on an object store; offline pushes write local files only for now",
            file.path
        )));
    }
    let path = resolve_path(store, &file.path);
    let file_name = new_file_name();
    let dir = if has_glob(&path) {
        let (dir, pattern) = path.rsplit_once('/').unwrap_or((".", path.as_str()));
        if has_glob(dir)
            || pattern.contains('[')
            || !wildcard_match(pattern.as_bytes(), file_name.as_bytes())
        {
            return Err(unsupported(format!(
                "the glob `{}` must be a folder followed by a file pattern like `*.parquet` that \
                 matches pushed files (`push-<time>.parquet`)",
                file.path
            )));
        }
        PathBuf::from(dir)
    } else if Path::new(&path).is_dir() {
        PathBuf::from(&path)
    } else if Path::new(&path).is_file() {
        pushed_dir(&path)
    } else {
        return Err(unsupported(format!(
            "`{}` does not exist; create the file or folder first",
            file.path
        )));
    };
    let shown = file.path.clone();
    let target = dir.join(&file_name);
    let location = target.to_string_lossy().into_owned();
    let count = rows.num_rows() as u64;
    let failed = {
        let name = name.clone();
        let shown = shown.clone();
        move |message: String| OfflineError::AppendFailed {
            source_name: name,
            path: shown,
            message,
        }
    };
    tokio::task::spawn_blocking(move || write_new_file(&dir, &file_name, &rows))
        .await
        .map_err(|e| failed.clone()(format!("the writer task failed: {e}")))?
        .map_err(failed)?;
    tracing::info!(source = %name, rows = count, file = %location, "appended pushed rows");
    Ok(AppendReport {
        rows: count,
        location,
    })
}

/// Writes `rows` to `dir/file_name` through a temporary file in `dir`'s parent (outside
/// what readers list), then renames it into place.
fn write_new_file(dir: &Path, file_name: &str, rows: &RecordBatch) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create folder `{}`: {e}", dir.display()))?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = parent.join(format!(".{dir_name}.{file_name}.tmp"));
    let result = (|| {
        let out = std::fs::File::create(&temp)
            .map_err(|e| format!("cannot create `{}`: {e}", temp.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let mut writer = ArrowWriter::try_new(out, rows.schema(), Some(props))
            .map_err(|e| format!("cannot write Parquet: {e}"))?;
        writer
            .write(rows)
            .map_err(|e| format!("cannot write Parquet: {e}"))?;
        let out = writer
            .into_inner()
            .map_err(|e| format!("cannot write Parquet: {e}"))?;
        out.sync_all()
            .map_err(|e| format!("cannot sync `{}`: {e}", temp.display()))?;
        let target = dir.join(file_name);
        std::fs::rename(&temp, &target)
            .map_err(|e| format!("cannot rename into `{}`: {e}", target.display()))?;
        // Make the rename durable; a failure here loses nothing already visible.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_file_names() {
        assert!(wildcard_match(b"*.parquet", b"push-1.parquet"));
        assert!(wildcard_match(b"push-*", b"push-1.parquet"));
        assert!(wildcard_match(b"p?sh-*.parquet", b"push-1.parquet"));
        assert!(!wildcard_match(b"part-*.parquet", b"push-1.parquet"));
        assert!(!wildcard_match(b"*.csv", b"push-1.parquet"));
    }
}
