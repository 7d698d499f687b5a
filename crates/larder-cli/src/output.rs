//! Writing query results: Parquet or CSV files (written whole or not at all), or a table.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::util::pretty::pretty_format_batches;
use futures::StreamExt;
use larder::offline::SendableRecordBatchStream;
use parquet::arrow::ArrowSchemaConverter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

use crate::cli::OutputCompression;
use crate::direct::DirectFile;
use crate::flat;

/// Rows per Parquet row group: small enough that encoding the last one adds little at the end.
const ROW_GROUP_ROWS: usize = 1 << 18;

/// Values the Parquet encoder takes at a time (its default is 1024): fewer, larger steps
/// cost less per value.
const WRITE_BATCH_ROWS: usize = 8192;

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
/// `compression` applies to Parquet files (snappy when `None`); asking for it with a CSV file
/// is an error.
pub async fn write_file(
    mut stream: SendableRecordBatchStream,
    path: &Path,
    compression: Option<OutputCompression>,
) -> Result<u64> {
    let format = format_of(path)?;
    if matches!(format, Format::Csv) && compression.is_some() {
        bail!(
            "--compression applies to Parquet output; `{}` is a CSV file",
            path.display()
        );
    }
    let codec = match compression.unwrap_or_default() {
        OutputCompression::Snappy => Compression::SNAPPY,
        OutputCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
        OutputCompression::None => Compression::UNCOMPRESSED,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let temp: PathBuf = path.with_file_name(format!(".{name}.larder-tmp"));
    let file =
        DirectFile::create(&temp).with_context(|| format!("cannot create `{}`", temp.display()))?;
    let schema = stream.schema();
    let mut rows = 0u64;
    let result: Result<()> = async {
        let file = match format {
            Format::Parquet => {
                let (count, file) =
                    write_parquet_parallel(&mut stream, file, schema, codec).await?;
                rows = count;
                file
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
                writer.into_inner()
            }
        };
        file.finish()
            .with_context(|| format!("cannot write `{}`", temp.display()))?;
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

/// One encoded column chunk: by parquet-rs, or by [`flat`] for top-level fixed-width columns.
enum Chunk {
    Arrow(ArrowColumnChunk),
    Flat(flat::FlatChunk),
}

impl Chunk {
    fn metadata(&self) -> &parquet::file::metadata::ColumnChunkMetaData {
        match self {
            Chunk::Arrow(chunk) => &chunk.close().metadata,
            Chunk::Flat(chunk) => &chunk.close.metadata,
        }
    }
}

/// How row groups are encoded: parquet-rs's column writers, and the settings (codec per
/// column) both they and [`flat`] follow.
#[derive(Clone)]
struct Encoders {
    factory: std::sync::Arc<ArrowRowGroupWriterFactory>,
    props: std::sync::Arc<WriterProperties>,
}

/// The work of encoding one column chunk.
enum Job {
    Arrow(
        Box<parquet::arrow::arrow_writer::ArrowColumnWriter>,
        Vec<parquet::arrow::arrow_writer::ArrowLeafColumn>,
    ),
    Flat(
        parquet::schema::types::ColumnDescPtr,
        flat::Kind,
        Vec<arrow::array::ArrayRef>,
    ),
}

/// Encodes one row group's columns on all cores, one column per task.
fn encode_row_group(
    encoders: &Encoders,
    parquet_schema: &parquet::schema::types::SchemaDescriptor,
    schema: &SchemaRef,
    index: usize,
    batches: &[RecordBatch],
) -> Result<Vec<Chunk>> {
    let writers = encoders.factory.create_column_writers(index)?;
    let mut jobs: Vec<Job> = Vec::with_capacity(writers.len());
    let mut writers = writers.into_iter();
    let mut leaf = 0;
    for (f, field) in schema.fields().iter().enumerate() {
        let descr = parquet_schema.column(leaf);
        if let Some(kind) = flat::kind_of(field.data_type(), &descr)
            .filter(|_| flat::applies(&encoders.props, descr.path()))
        {
            // One leaf, which this module encodes: its writer is not needed.
            writers.next();
            let arrays = batches.iter().map(|b| b.column(f).clone()).collect();
            jobs.push(Job::Flat(descr, kind, arrays));
            leaf += 1;
            continue;
        }
        let mut leaves = Vec::new();
        for batch in batches {
            leaves.push(compute_leaves(field, batch.column(f))?);
        }
        let count = leaves.first().map_or(0, Vec::len);
        let mut per_leaf: Vec<Vec<_>> = (0..count).map(|_| Vec::new()).collect();
        for batch_leaves in leaves {
            for (i, l) in batch_leaves.into_iter().enumerate() {
                per_leaf[i].push(l);
            }
        }
        for leaves in per_leaf {
            let writer = writers
                .next()
                .ok_or_else(|| anyhow::anyhow!("internal: fewer column writers than columns"))?;
            jobs.push(Job::Arrow(Box::new(writer), leaves));
            leaf += 1;
        }
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let props = &encoders.props;
    let jobs: Vec<_> = jobs.into_iter().enumerate().collect();
    let results = std::sync::Mutex::new(Vec::with_capacity(jobs.len()));
    let queue = std::sync::Mutex::new(jobs);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let Some((i, job)) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                        return;
                    };
                    let chunk = match job {
                        Job::Arrow(mut writer, leaves) => leaves
                            .iter()
                            .try_for_each(|l| writer.write(l))
                            .and_then(|()| writer.close())
                            .map(Chunk::Arrow)
                            .map_err(anyhow::Error::from),
                        Job::Flat(descr, kind, arrays) => {
                            flat::encode_chunk(&descr, kind, props, &arrays).map(Chunk::Flat)
                        }
                    };
                    if let Ok(mut r) = results.lock() {
                        r.push((i, chunk));
                    }
                }
            });
        }
    });
    let mut results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("an encoder thread panicked"))?;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, c)| c).collect()
}

/// Writes the stream as Parquet, encoding each row group's columns in parallel while the
/// query goes on producing the next row group.
async fn write_parquet_parallel<E>(
    stream: &mut (impl futures::Stream<Item = Result<RecordBatch, E>> + Unpin),
    file: DirectFile,
    schema: SchemaRef,
    codec: Compression,
) -> Result<(u64, DirectFile)>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut builder = WriterProperties::builder()
        .set_compression(codec)
        // Min/max per column chunk is what readers prune on; per page costs more than it gives.
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_write_batch_size(WRITE_BATCH_ROWS);
    // Dictionaries pay off for text; for numbers and timestamps they are mostly built and
    // thrown away (too many distinct values), at a high price.
    for field in schema.fields() {
        if !matches!(
            field.data_type(),
            arrow::datatypes::DataType::Utf8
                | arrow::datatypes::DataType::LargeUtf8
                | arrow::datatypes::DataType::Utf8View
                | arrow::datatypes::DataType::Dictionary(_, _)
        ) {
            builder = builder.set_column_dictionary_enabled(
                parquet::schema::types::ColumnPath::from(field.name().as_str()),
                false,
            );
        }
    }
    let props = std::sync::Arc::new(builder.clone().build());
    let parquet_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(&schema)?;
    let mut writer =
        SerializedFileWriter::new(file, parquet_schema.root_schema_ptr(), props.clone())?;
    let mut encoders = Encoders {
        factory: std::sync::Arc::new(ArrowRowGroupWriterFactory::new(&writer, schema.clone())),
        props,
    };
    let parquet_schema = std::sync::Arc::new(parquet_schema);
    // Whether the columns that compression did not shrink are stored uncompressed yet.
    let mut compression_checked = codec == Compression::UNCOMPRESSED;
    let mut rows = 0u64;
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0usize;
    let mut index = 0usize;
    // Up to two row groups encode while the query produces the next (in file order).
    let mut encoding: std::collections::VecDeque<tokio::task::JoinHandle<Result<Vec<Chunk>>>> =
        std::collections::VecDeque::new();
    let mut finished = false;
    while !finished {
        let next = stream.next().await.transpose()?;
        match next {
            Some(batch) => {
                rows += batch.num_rows() as u64;
                pending_rows += batch.num_rows();
                pending.push(batch);
            }
            None => finished = true,
        }
        if pending_rows >= ROW_GROUP_ROWS || (finished && pending_rows > 0) {
            if encoding.len() >= 2
                && let Some(job) = encoding.pop_front()
            {
                let chunks = job.await??;
                if !compression_checked {
                    compression_checked = true;
                    if let Some(e) =
                        uncompressed_encoders(&builder, &parquet_schema, &schema, &chunks)?
                    {
                        encoders = e;
                    }
                }
                append_row_group(&mut writer, chunks)?;
            }
            let batches = std::mem::take(&mut pending);
            pending_rows = 0;
            let (encoders, parquet_schema, schema) =
                (encoders.clone(), parquet_schema.clone(), schema.clone());
            let i = index;
            index += 1;
            encoding.push_back(tokio::task::spawn_blocking(move || {
                encode_row_group(&encoders, &parquet_schema, &schema, i, &batches)
            }));
        }
    }
    while let Some(job) = encoding.pop_front() {
        append_row_group(&mut writer, job.await??)?;
    }
    // Writes the footer and hands the file back.
    Ok((rows, writer.into_inner()?))
}

/// Columns that the first row group's compression left at this share of their size or more
/// are stored uncompressed from then on (random floats: snappy keeps 99.95% of their bytes).
const INCOMPRESSIBLE: f64 = 0.95;

/// When some columns of a row group (`chunks`, one per leaf column) barely compressed,
/// encoders for the next row groups that stores those columns uncompressed: compressing them
/// costs CPU and saves nothing, and readers skip the decompression. Parquet records the
/// codec per column chunk, so every reader handles a file whose row groups differ. `None`
/// when every column compressed.
fn uncompressed_encoders(
    builder: &parquet::file::properties::WriterPropertiesBuilder,
    parquet_schema: &parquet::schema::types::SchemaDescriptor,
    schema: &SchemaRef,
    chunks: &[Chunk],
) -> Result<Option<Encoders>> {
    let mut builder = builder.clone();
    let mut any = false;
    for (chunk, column) in chunks.iter().zip(parquet_schema.columns()) {
        let meta = chunk.metadata();
        let (compressed, raw) = (meta.compressed_size(), meta.uncompressed_size());
        if meta.compression() != Compression::UNCOMPRESSED
            && raw > 0
            && compressed as f64 >= raw as f64 * INCOMPRESSIBLE
        {
            builder =
                builder.set_column_compression(column.path().clone(), Compression::UNCOMPRESSED);
            any = true;
        }
    }
    if !any {
        return Ok(None);
    }
    // The factory takes its settings from a file writer: one writing nowhere, with the
    // same schema, holds the new ones.
    let props = std::sync::Arc::new(builder.build());
    let settings = SerializedFileWriter::new(
        std::io::sink(),
        parquet_schema.root_schema_ptr(),
        props.clone(),
    )?;
    Ok(Some(Encoders {
        factory: std::sync::Arc::new(ArrowRowGroupWriterFactory::new(&settings, schema.clone())),
        props,
    }))
}

fn append_row_group(
    writer: &mut SerializedFileWriter<DirectFile>,
    chunks: Vec<Chunk>,
) -> Result<()> {
    let mut row_group = writer.next_row_group()?;
    for chunk in chunks {
        match chunk {
            Chunk::Arrow(chunk) => chunk.append_to_row_group(&mut row_group)?,
            Chunk::Flat(chunk) => row_group.append_column(&chunk.bytes, chunk.close)?,
        }
    }
    row_group.close()?;
    Ok(())
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
    use std::fs::File;

    /// A column compression does not shrink (random floats) is stored uncompressed from the
    /// third row group on (the first two are encoding when the first is checked); one it
    /// shrinks stays compressed; every value reads back.
    #[tokio::test]
    async fn stores_columns_that_do_not_compress_uncompressed() {
        use arrow::array::{Float32Array, Int64Array};
        use arrow::datatypes::{DataType, Field, Schema};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        let schema: SchemaRef = std::sync::Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("x", DataType::Float32, true),
        ]));
        let rows = 4 * ROW_GROUP_ROWS + 100;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // A float in [1, 2) with a random mantissa: never NaN.
            f32::from_bits(((state >> 41) as u32) | 0x3f80_0000)
        };
        let batches: Vec<RecordBatch> = (0..rows)
            .step_by(8192)
            .map(|start| {
                let end = (start + 8192).min(rows);
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        std::sync::Arc::new(Int64Array::from_iter_values(
                            (start..end).map(|i| i as i64 / 16),
                        )),
                        std::sync::Arc::new(Float32Array::from_iter(
                            (start..end).map(|i| (i % 9 != 4).then(&mut random)),
                        )),
                    ],
                )
                .unwrap()
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        let mut stream =
            futures::stream::iter(batches.clone().into_iter().map(Ok::<_, std::io::Error>));
        let file = DirectFile::create(&path).unwrap();
        let (written, file) =
            write_parquet_parallel(&mut stream, file, schema.clone(), Compression::SNAPPY)
                .await
                .unwrap();
        file.finish().unwrap();
        assert_eq!(written, rows as u64);

        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let codecs: Vec<(Compression, Compression)> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| (rg.column(0).compression(), rg.column(1).compression()))
            .collect();
        assert_eq!(codecs.len(), 5);
        for (i, (k, x)) in codecs.iter().enumerate() {
            assert_eq!(*k, Compression::SNAPPY, "row group {i}: `k` compresses");
            let want = if i < 2 {
                Compression::SNAPPY
            } else {
                Compression::UNCOMPRESSED
            };
            assert_eq!(*x, want, "row group {i}: `x`");
        }
        let back: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let back = arrow::compute::concat_batches(&schema, &back).unwrap();
        let want = arrow::compute::concat_batches(&schema, &batches).unwrap();
        assert!(back == want, "values read back differ");
    }

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
