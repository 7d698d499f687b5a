//! Writing query results: Parquet or CSV files (written whole or not at all), or a table.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use futures::StreamExt;
use larder::offline::SendableRecordBatchStream;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

enum Format {
    Parquet,
    Csv,
}

fn format_of(path: &Path) -> Result<Format> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("parquet") | Some("pq") => Ok(Format::Parquet),
        Some("csv") => Ok(Format::Csv),
        _ => bail!(
            "output file `{}` must end in .parquet or .csv",
            path.display()
        ),
    }
}

/// Streams the result into `path`; the file appears only when complete. Returns the row count.
pub async fn write_file(mut stream: SendableRecordBatchStream, path: &Path) -> Result<u64> {
    let format = format_of(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let temp: PathBuf = path.with_file_name(format!(".{name}.larder-tmp"));
    let file =
        File::create(&temp).with_context(|| format!("cannot create `{}`", temp.display()))?;
    let schema = stream.schema();
    let mut rows = 0u64;
    let result: Result<()> = async {
        match format {
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    rows += batch.num_rows() as u64;
                    writer.write(&batch)?;
                }
                writer.close()?;
            }
            Format::Csv => {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(file);
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    rows += batch.num_rows() as u64;
                    writer.write(&batch)?;
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    std::fs::rename(&temp, path)
        .with_context(|| format!("cannot move the result to `{}`", path.display()))?;
    Ok(rows)
}

/// Prints at most `max_rows` rows as a table; says how many more there were.
pub async fn print_table(mut stream: SendableRecordBatchStream, max_rows: usize) -> Result<()> {
    let mut shown: Vec<RecordBatch> = Vec::new();
    let mut kept = 0usize;
    let mut total = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        total += batch.num_rows() as u64;
        if kept < max_rows {
            let take = (max_rows - kept).min(batch.num_rows());
            shown.push(batch.slice(0, take));
            kept += take;
        }
    }
    if !shown.is_empty() {
        crate::print(pretty_format_batches(&shown)?)?;
    }
    if total > kept as u64 {
        crate::print(format_args!(
            "({total} rows; {} not shown: use --output FILE.parquet to keep them all)",
            total - kept as u64
        ))?;
    } else {
        crate::print(format_args!("({total} rows)"))?;
    }
    Ok(())
}

/// Parses `4GiB`, `512MB`, `1g`, `1048576` into bytes.
pub fn parse_size(text: &str) -> Result<usize> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a size like `4GiB` or `512MB`"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0_f64.powi(4),
        other => bail!("unknown size unit `{other}` in `{text}` (use B, KiB, MiB, GiB)"),
    };
    Ok((value * factor) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }
}
