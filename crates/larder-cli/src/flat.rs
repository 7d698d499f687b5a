//! Parquet column chunks for top-level fixed-width columns (floats, integers, dates and
//! timestamps), encoded straight from Arrow arrays.
//!
//! parquet-rs's Arrow writer turns a nullable column's validity bitmap into one 16-bit
//! definition level per value and a list of the non-null positions, then run-length encodes
//! the levels one at a time. For a top-level primitive column the levels *are* the bitmap:
//! one bit per value, 1 for a value and 0 for a null, least significant bit first, which is
//! exactly a bit-packed run of width 1. This module writes the levels from the bitmap's
//! bytes, copies the values a 64-bit word of the bitmap at a time and takes min/max over the
//! copied values.
//!
//! The chunks are the ones parquet-rs writes for the same arrays and settings: data pages
//! v1, PLAIN values, RLE/bit-packed levels, statistics per column chunk, an offset index and
//! a definition level histogram. They are spliced into the row group next to the chunks
//! parquet-rs encodes for the other columns.

use anyhow::{Result, bail};
use arrow::array::{Array, ArrayRef};
use arrow::buffer::NullBuffer;
use arrow::datatypes::DataType;
use arrow::util::bit_chunk_iterator::BitChunks;
use bytes::Bytes;
use parquet::basic::{Compression, Encoding, EncodingMask, PageType, Type as PhysicalType};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{
    ColumnChunkMetaData, LevelHistogram, OffsetIndexBuilder, PageEncodingStats,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::{ColumnDescPtr, ColumnPath};

/// How a column's values are stored: the Parquet physical type, PLAIN-encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Float,
    Double,
    Int32,
    Int64,
}

impl Kind {
    fn width(self) -> usize {
        match self {
            Kind::Float | Kind::Int32 => 4,
            Kind::Double | Kind::Int64 => 8,
        }
    }
}

/// The kind of a column this module encodes: a top-level column (at most one definition
/// level, no repetition) whose Arrow values parquet-rs stores unchanged. `None` for every
/// other column, which parquet-rs encodes.
pub(crate) fn kind_of(data_type: &DataType, descr: &ColumnDescPtr) -> Option<Kind> {
    if descr.max_rep_level() != 0 || descr.max_def_level() > 1 {
        return None;
    }
    let (kind, physical) = match data_type {
        DataType::Float32 => (Kind::Float, PhysicalType::FLOAT),
        DataType::Float64 => (Kind::Double, PhysicalType::DOUBLE),
        DataType::Int32 | DataType::Date32 => (Kind::Int32, PhysicalType::INT32),
        DataType::Int64 | DataType::Timestamp(_, _) => (Kind::Int64, PhysicalType::INT64),
        _ => return None,
    };
    (descr.physical_type() == physical).then_some(kind)
}

/// Whether `props` ask for the chunks this module writes for the column at `path`: data
/// pages v1 without a dictionary, PLAIN values, uncompressed or snappy, statistics per
/// chunk only, no bloom filter, no content-defined page boundaries.
pub(crate) fn applies(props: &WriterProperties, path: &ColumnPath) -> bool {
    matches!(
        props.compression(path),
        Compression::UNCOMPRESSED | Compression::SNAPPY
    ) && !props.dictionary_enabled(path)
        && props.encoding(path).is_none_or(|e| e == Encoding::PLAIN)
        && props.statistics_enabled(path) == EnabledStatistics::Chunk
        && !props.write_page_header_statistics(path)
        && props.bloom_filter_properties(path).is_none()
        && props.writer_version() == WriterVersion::PARQUET_1_0
        && props.content_defined_chunking().is_none()
        && !props.offset_index_disabled()
}

/// One column chunk: its bytes (data pages, their headers included) and what the row group
/// needs to know about them.
pub(crate) struct FlatChunk {
    pub bytes: Bytes,
    pub close: ColumnCloseResult,
}

/// Encodes `arrays` (one column, in order) as one column chunk of `descr`, as `props` say
/// for it (see [`applies`]), in pages of at most `props`' data page row count and about its
/// data page size.
pub(crate) fn encode_chunk(
    descr: &ColumnDescPtr,
    kind: Kind,
    props: &WriterProperties,
    arrays: &[ArrayRef],
) -> Result<FlatChunk> {
    if !applies(props, descr.path()) {
        bail!(
            "internal: the settings of column `{}` ask for pages the flat encoder does not write",
            descr.path().string()
        );
    }
    let codec = props.compression(descr.path());
    let nullable = descr.max_def_level() == 1;
    let width = kind.width();
    let page_rows = props
        .data_page_row_count_limit()
        .min(props.column_data_page_size_limit(descr.path()) / width)
        .max(8);
    let rows: usize = arrays.iter().map(|a| a.len()).sum();

    let mut sink = TrackedWrite::new(Vec::with_capacity(rows * width / 2 + 1024));
    let mut offsets = OffsetIndexBuilder::new();
    let mut stats = MinMax::new(kind);
    let mut nulls = 0u64;
    let mut pages = 0i32;
    let (mut compressed_total, mut uncompressed_total) = (0i64, 0i64);
    let mut snappy = snap::raw::Encoder::new();
    let body_capacity = page_rows * width + page_rows / 8 + 64;
    let mut body: Vec<u8> = Vec::with_capacity(body_capacity);
    let mut segments = Segments::new(arrays);
    let mut left = rows;
    {
        let mut writer = SerializedPageWriter::new(&mut sink);
        while left > 0 {
            let page_len = left.min(page_rows);
            left -= page_len;
            // Each segment's validity, sliced once for the levels and the values.
            let segments: Vec<_> = segments
                .take(page_len)
                .into_iter()
                .map(|(array, offset, len)| {
                    let validity = array.logical_nulls().map(|n| n.slice(offset, len));
                    (array, offset, len, validity)
                })
                .collect();
            body.clear();
            if nullable {
                let mut levels = Levels::new(page_len / 8);
                for (_, _, len, validity) in &segments {
                    levels.push_validity(validity.as_ref(), *len);
                }
                let levels = levels.finish();
                body.extend_from_slice(&(levels.len() as u32).to_le_bytes());
                body.extend_from_slice(&levels);
            }
            let values_start = body.len();
            for (array, offset, len, validity) in &segments {
                let data = array.to_data();
                let start = data.offset() + offset;
                let bytes = &data.buffers()[0].as_slice()[start * width..(start + len) * width];
                if !nullable && validity.as_ref().is_some_and(|n| n.null_count() > 0) {
                    bail!(
                        "column `{}` is declared not nullable but holds nulls",
                        descr.path().string()
                    );
                }
                nulls += copy_values(width, bytes, validity.as_ref(), &mut body) as u64;
            }
            stats.update(&body[values_start..]);
            let uncompressed_size = body.len();
            let buf = match codec {
                Compression::SNAPPY => Bytes::from(snappy.compress_vec(&body)?),
                _ => Bytes::from(std::mem::replace(
                    &mut body,
                    Vec::with_capacity(body_capacity),
                )),
            };
            let page = Page::DataPage {
                buf,
                num_values: page_len as u32,
                encoding: Encoding::PLAIN,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: None,
            };
            let spec = writer.write_page(CompressedPage::new(page, uncompressed_size))?;
            offsets.append_row_count(page_len as i64);
            offsets.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
            compressed_total += spec.compressed_size as i64;
            uncompressed_total += spec.uncompressed_size as i64;
            pages += 1;
        }
        writer.close()?;
    }
    let bytes = Bytes::from(sink.into_inner()?);

    let mut builder = ColumnChunkMetaData::builder(descr.clone())
        .set_compression(codec)
        .set_encodings_mask(EncodingMask::new_from_encodings(
            [Encoding::PLAIN, Encoding::RLE].iter(),
        ))
        .set_total_compressed_size(compressed_total)
        .set_total_uncompressed_size(uncompressed_total)
        .set_num_values(rows as i64)
        .set_data_page_offset(0)
        .set_statistics(stats.finish(nulls, descr.sort_order().is_signed()));
    if pages > 0 {
        builder = builder.set_page_encoding_stats(vec![PageEncodingStats {
            page_type: PageType::DATA_PAGE,
            encoding: Encoding::PLAIN,
            count: pages,
        }]);
    }
    if let Some(mut histogram) = LevelHistogram::try_new(descr.max_def_level()) {
        histogram.increment_by(0, nulls as i64);
        histogram.increment_by(1, rows as i64 - nulls as i64);
        builder = builder.set_definition_level_histogram(Some(histogram));
    }
    let close = ColumnCloseResult {
        bytes_written: bytes.len() as u64,
        rows_written: rows as u64,
        metadata: builder.build()?,
        bloom_filter: None,
        column_index: None,
        offset_index: Some(offsets.build()),
    };
    Ok(FlatChunk { bytes, close })
}

/// Walks a column's arrays in pieces of a given number of rows, each piece a list of
/// (array, offset, length) segments.
struct Segments<'a> {
    arrays: &'a [ArrayRef],
    array: usize,
    offset: usize,
}

impl<'a> Segments<'a> {
    fn new(arrays: &'a [ArrayRef]) -> Self {
        Self {
            arrays,
            array: 0,
            offset: 0,
        }
    }

    /// The segments of the next `rows` rows (fewer if the arrays end).
    fn take(&mut self, mut rows: usize) -> Vec<(&'a ArrayRef, usize, usize)> {
        let mut out = Vec::new();
        while rows > 0 && self.array < self.arrays.len() {
            let array = &self.arrays[self.array];
            let len = (array.len() - self.offset).min(rows);
            if len > 0 {
                out.push((array, self.offset, len));
            }
            rows -= len;
            self.offset += len;
            if self.offset == array.len() {
                self.array += 1;
                self.offset = 0;
            }
        }
        out
    }
}

/// Appends the valid values of `bytes` (`width` bytes per value) to `out`, a 64-value word
/// of the bitmap at a time. Returns the number of nulls.
fn copy_values(
    width: usize,
    bytes: &[u8],
    validity: Option<&NullBuffer>,
    out: &mut Vec<u8>,
) -> usize {
    let Some(validity) = validity.filter(|v| v.null_count() > 0) else {
        out.extend_from_slice(bytes);
        return 0;
    };
    let bits = validity.inner();
    let chunks = BitChunks::new(bits.values(), bits.offset(), bits.len());
    let mut copy_word = |start: usize, word: u64, n: usize| {
        if n == 64 && word == u64::MAX {
            out.extend_from_slice(&bytes[start * width..(start + 64) * width]);
            return;
        }
        let mut word = word;
        while word != 0 {
            let i = start + word.trailing_zeros() as usize;
            out.extend_from_slice(&bytes[i * width..(i + 1) * width]);
            word &= word - 1;
        }
    };
    let mut start = 0;
    for word in chunks.iter() {
        copy_word(start, word, 64);
        start += 64;
    }
    if chunks.remainder_len() > 0 {
        copy_word(start, chunks.remainder_bits(), chunks.remainder_len());
    }
    validity.null_count()
}

/// Bit-packed runs hold at most this many groups of eight levels, so that their header is
/// one byte, as parquet-rs writes them.
const MAX_PACKED_GROUPS: usize = 63;

/// Runs of equal bytes shorter than this stay inside a bit-packed run: a separate RLE run
/// would cost as much as it saves.
const MIN_RLE_BYTES: usize = 4;

/// Definition levels of bit width 1 in Parquet's RLE/bit-packed hybrid encoding, fed from
/// validity bitmaps. Whole bytes of one value (0x00 or 0xFF) become RLE runs; other bytes
/// are bit-packed groups of eight levels, exactly as they are in the bitmap.
struct Levels {
    out: Vec<u8>,
    /// Groups waiting to be written as one bit-packed run.
    packed: Vec<u8>,
    /// A run of equal whole bytes not written yet: the byte and how many.
    run: (u8, usize),
    /// Levels that do not fill a byte yet, in the low `pending_len` bits.
    pending: u64,
    pending_len: usize,
}

impl Levels {
    fn new(capacity: usize) -> Self {
        Self {
            out: Vec::with_capacity(capacity + 16),
            packed: Vec::with_capacity(MAX_PACKED_GROUPS),
            run: (0, 0),
            pending: 0,
            pending_len: 0,
        }
    }

    /// Appends `len` levels: the bits of `validity`, or all 1 when there is no bitmap.
    fn push_validity(&mut self, validity: Option<&NullBuffer>, len: usize) {
        match validity {
            None => {
                for _ in 0..len / 64 {
                    self.push_bits(u64::MAX, 64);
                }
                if !len.is_multiple_of(64) {
                    self.push_bits(u64::MAX, len % 64);
                }
            }
            Some(validity) => {
                let bits = validity.inner();
                let chunks = BitChunks::new(bits.values(), bits.offset(), bits.len());
                for word in chunks.iter() {
                    self.push_bits(word, 64);
                }
                if chunks.remainder_len() > 0 {
                    self.push_bits(chunks.remainder_bits(), chunks.remainder_len());
                }
            }
        }
    }

    /// Appends the low `n` bits of `word` (1 <= n <= 64) as levels, lowest first.
    fn push_bits(&mut self, word: u64, n: usize) {
        let word = if n == 64 {
            word
        } else {
            word & ((1u64 << n) - 1)
        };
        if self.pending_len == 0 && n == 64 {
            let byte = word as u8;
            if (word == 0 || word == u64::MAX) && self.run.1 > 0 && self.run.0 == byte {
                self.run.1 += 8;
                return;
            }
            for byte in word.to_le_bytes() {
                self.push_byte(byte);
            }
            return;
        }
        let mut bits = u128::from(self.pending) | (u128::from(word) << self.pending_len);
        let mut len = self.pending_len + n;
        while len >= 8 {
            self.push_byte(bits as u8);
            bits >>= 8;
            len -= 8;
        }
        self.pending = bits as u64;
        self.pending_len = len;
    }

    fn push_byte(&mut self, byte: u8) {
        if byte == 0 || byte == u8::MAX {
            if self.run.1 > 0 && self.run.0 == byte {
                self.run.1 += 1;
                return;
            }
            self.end_run();
            self.run = (byte, 1);
        } else {
            self.end_run();
            self.pack(byte);
        }
    }

    fn pack(&mut self, byte: u8) {
        self.packed.push(byte);
        if self.packed.len() == MAX_PACKED_GROUPS {
            self.flush_packed();
        }
    }

    fn end_run(&mut self) {
        let (byte, count) = std::mem::take(&mut self.run);
        if count >= MIN_RLE_BYTES {
            self.flush_packed();
            // RLE run: header (levels << 1), then the level in one byte.
            write_varint(&mut self.out, (count as u64 * 8) << 1);
            self.out.push(byte & 1);
        } else {
            for _ in 0..count {
                self.pack(byte);
            }
        }
    }

    fn flush_packed(&mut self) {
        if self.packed.is_empty() {
            return;
        }
        // Bit-packed run: header (groups << 1 | 1), then the groups.
        write_varint(&mut self.out, ((self.packed.len() as u64) << 1) | 1);
        self.out.extend_from_slice(&self.packed);
        self.packed.clear();
    }

    /// The encoded levels. The last levels that do not fill a byte end the data as a
    /// bit-packed group padded with zeros; the page's value count says where they stop.
    fn finish(mut self) -> Vec<u8> {
        self.end_run();
        if self.pending_len > 0 {
            self.pack(self.pending as u8);
        }
        self.flush_packed();
        self.out
    }
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Min and max of a column's non-null values, as Parquet's statistics want them: NaN is
/// left out, and a zero minimum is written -0.0, a zero maximum +0.0.
enum MinMax {
    Float(Option<(f32, f32)>),
    Double(Option<(f64, f64)>),
    Int32(Option<(i32, i32)>),
    Int64(Option<(i64, i64)>),
}

/// Widens `range` by the min and max of `bytes` (little-endian values of `W` bytes), eight
/// lanes at a time so that the loop vectorizes. `min`/`max` must leave out what the
/// statistics leave out (`f32::min` ignores NaN); a page of NaN only (nothing below
/// `highest`) leaves `range` as it was.
fn widen<T: Copy + PartialOrd, const W: usize>(
    range: &mut Option<(T, T)>,
    bytes: &[u8],
    decode: impl Fn([u8; W]) -> T,
    (lowest, highest): (T, T),
    min: impl Fn(T, T) -> T + Copy,
    max: impl Fn(T, T) -> T + Copy,
) {
    let mut lo = [highest; 8];
    let mut hi = [lowest; 8];
    let mut chunks = bytes.chunks_exact(8 * W);
    for chunk in &mut chunks {
        for lane in 0..8 {
            let mut raw = [0u8; W];
            raw.copy_from_slice(&chunk[lane * W..(lane + 1) * W]);
            let v = decode(raw);
            lo[lane] = min(lo[lane], v);
            hi[lane] = max(hi[lane], v);
        }
    }
    for value in chunks.remainder().chunks_exact(W) {
        let mut raw = [0u8; W];
        raw.copy_from_slice(value);
        let v = decode(raw);
        lo[0] = min(lo[0], v);
        hi[0] = max(hi[0], v);
    }
    let lo = lo.into_iter().fold(highest, min);
    let hi = hi.into_iter().fold(lowest, max);
    if bytes.is_empty() || lo > hi {
        return;
    }
    *range = Some(match *range {
        None => (lo, hi),
        Some((l, h)) => (min(l, lo), max(h, hi)),
    });
}

impl MinMax {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Float => MinMax::Float(None),
            Kind::Double => MinMax::Double(None),
            Kind::Int32 => MinMax::Int32(None),
            Kind::Int64 => MinMax::Int64(None),
        }
    }

    /// Takes in one page's non-null values.
    fn update(&mut self, values: &[u8]) {
        match self {
            MinMax::Float(range) => widen(
                range,
                values,
                f32::from_le_bytes,
                (f32::NEG_INFINITY, f32::INFINITY),
                f32::min,
                f32::max,
            ),
            MinMax::Double(range) => widen(
                range,
                values,
                f64::from_le_bytes,
                (f64::NEG_INFINITY, f64::INFINITY),
                f64::min,
                f64::max,
            ),
            MinMax::Int32(range) => widen(
                range,
                values,
                i32::from_le_bytes,
                (i32::MIN, i32::MAX),
                Ord::min,
                Ord::max,
            ),
            MinMax::Int64(range) => widen(
                range,
                values,
                i64::from_le_bytes,
                (i64::MIN, i64::MAX),
                Ord::min,
                Ord::max,
            ),
        }
    }

    fn finish(self, nulls: u64, signed: bool) -> Statistics {
        fn stats<T>(range: Option<(T, T)>, nulls: u64, signed: bool) -> ValueStatistics<T> {
            let (min, max) = match range {
                Some((lo, hi)) => (Some(lo), Some(hi)),
                None => (None, None),
            };
            ValueStatistics::new(min, max, None, Some(nulls), false)
                .with_backwards_compatible_min_max(signed)
        }
        match self {
            MinMax::Float(range) => Statistics::Float(stats(
                range.map(|(lo, hi)| {
                    let lo = if lo == 0.0 { -0.0 } else { lo };
                    let hi = if hi == 0.0 { 0.0 } else { hi };
                    (lo, hi)
                }),
                nulls,
                signed,
            )),
            MinMax::Double(range) => Statistics::Double(stats(
                range.map(|(lo, hi)| {
                    let lo = if lo == 0.0 { -0.0 } else { lo };
                    let hi = if hi == 0.0 { 0.0 } else { hi };
                    (lo, hi)
                }),
                nulls,
                signed,
            )),
            MinMax::Int32(range) => Statistics::Int32(stats(range, nulls, signed)),
            MinMax::Int64(range) => Statistics::Int64(stats(range, nulls, signed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Date32Array, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Field, Schema, SchemaRef, TimeUnit};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Validity with every shape of run: none, all null, sparse and dense nulls, long runs
    /// of each, alternation. `None` is a column without a bitmap.
    fn validity(rng: &mut Rng, pattern: usize, len: usize) -> Option<Vec<bool>> {
        let mut run = (true, 0usize);
        let v = (0..len)
            .map(|i| match pattern {
                1 => false,
                2 => rng.below(50) != 0,
                3 => rng.below(3) == 0,
                4 => {
                    if run.1 == 0 {
                        run = (!run.0, 1 + rng.below(300) as usize);
                    }
                    run.1 -= 1;
                    run.0
                }
                5 => i % 2 == 0,
                _ => true,
            })
            .collect();
        (pattern != 0).then_some(v)
    }

    fn float(rng: &mut Rng) -> f64 {
        match rng.below(40) {
            0 => f64::NAN,
            1 => 0.0,
            2 => -0.0,
            3 => f64::INFINITY,
            _ => (rng.next() >> 11) as f64 / (1u64 << 40) as f64 - 2000.0,
        }
    }

    /// One column of each kind, with `pattern`'s nulls (the first column never has any,
    /// as its field says).
    fn columns(rng: &mut Rng, pattern: usize, len: usize) -> (SchemaRef, Vec<ArrayRef>) {
        let valid = |rng: &mut Rng| validity(rng, pattern, len);
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("required", DataType::Int64, false),
            Field::new("f32", DataType::Float32, true),
            Field::new("f64", DataType::Float64, true),
            Field::new("i32", DataType::Int32, true),
            Field::new("date", DataType::Date32, true),
            Field::new("i64", DataType::Int64, true),
            Field::new("ts", ts, true),
            Field::new("text", DataType::Utf8, true),
        ]));
        fn with<T>(values: Vec<T>, valid: Option<Vec<bool>>) -> Vec<Option<T>> {
            match valid {
                None => values.into_iter().map(Some).collect(),
                Some(v) => values
                    .into_iter()
                    .zip(v)
                    .map(|(x, ok)| ok.then_some(x))
                    .collect(),
            }
        }
        let floats: Vec<f64> = (0..len).map(|_| float(rng)).collect();
        let ints: Vec<i64> = (0..len)
            .map(|_| rng.next() as i64 >> rng.below(60))
            .collect();
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(ints.iter().map(|i| i / 3))),
            Arc::new(Float32Array::from(with(
                floats.iter().map(|&f| f as f32).collect(),
                valid(rng),
            ))),
            Arc::new(Float64Array::from(with(floats.clone(), valid(rng)))),
            Arc::new(Int32Array::from(with(
                ints.iter().map(|&i| i as i32).collect(),
                valid(rng),
            ))),
            Arc::new(Date32Array::from(with(
                ints.iter().map(|&i| (i % 40_000) as i32).collect(),
                valid(rng),
            ))),
            Arc::new(Int64Array::from(with(ints.clone(), valid(rng)))),
            Arc::new(
                TimestampMicrosecondArray::from(with(ints.clone(), valid(rng)))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(with(
                ints.iter().map(|i| format!("k{}", i % 97)).collect(),
                valid(rng),
            ))),
        ];
        (schema, arrays)
    }

    fn props(codec: Compression) -> Arc<WriterProperties> {
        let mut builder = WriterProperties::builder()
            .set_compression(codec)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_data_page_row_count_limit(1000)
            .set_write_batch_size(256)
            .set_max_row_group_row_count(Some(usize::MAX));
        for name in ["required", "f32", "f64", "i32", "date", "i64", "ts"] {
            builder = builder.set_column_dictionary_enabled(name.into(), false);
        }
        Arc::new(builder.build())
    }

    /// `arrays` cut into slices of irregular lengths at offsets that are not multiples of
    /// eight, as the query hands them over.
    fn pieces(array: &ArrayRef, cuts: &[usize]) -> Vec<ArrayRef> {
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain([array.len()].iter()) {
            let cut = cut.min(array.len());
            if cut > start {
                out.push(array.slice(start, cut - start));
                start = cut;
            }
        }
        out
    }

    /// The same columns written by this module (every column it takes) and by parquet-rs's
    /// Arrow writer read back the same, with the same statistics, null counts and level
    /// histograms, for every validity shape, both codecs, and pages that end inside a slice.
    #[test]
    fn chunks_read_back_as_parquet_rs_writes_them() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for codec in [Compression::SNAPPY, Compression::UNCOMPRESSED] {
            for pattern in 0..6 {
                let len = 1 + rng.below(5000) as usize;
                let (schema, arrays) = columns(&mut rng, pattern, len);
                let mut cuts: Vec<usize> = (0..rng.below(12))
                    .map(|_| rng.below(len as u64) as usize)
                    .collect();
                cuts.sort_unstable();
                let props = props(codec);
                let parquet_schema = ArrowSchemaConverter::new().convert(&schema).unwrap();

                let mut reference = Vec::new();
                let mut writer =
                    ArrowWriter::try_new(&mut reference, schema.clone(), Some((*props).clone()))
                        .unwrap();
                let batch = RecordBatch::try_new(schema.clone(), arrays.clone()).unwrap();
                writer.write(&batch).unwrap();
                writer.close().unwrap();

                let mut ours = Vec::new();
                let mut writer = SerializedFileWriter::new(
                    &mut ours,
                    parquet_schema.root_schema_ptr(),
                    props.clone(),
                )
                .unwrap();
                let mut row_group = writer.next_row_group().unwrap();
                let mut flat_columns = 0;
                for (i, (field, array)) in schema.fields().iter().zip(&arrays).enumerate() {
                    let descr = parquet_schema.column(i);
                    match kind_of(field.data_type(), &descr) {
                        Some(kind) => {
                            flat_columns += 1;
                            let chunk =
                                encode_chunk(&descr, kind, &props, &pieces(array, &cuts)).unwrap();
                            row_group.append_column(&chunk.bytes, chunk.close).unwrap();
                        }
                        None => {
                            let mut column = row_group.next_column().unwrap().unwrap();
                            let values: Vec<parquet::data_type::ByteArray> = (0..array.len())
                                .filter(|&r| array.is_valid(r))
                                .map(|r| {
                                    array
                                        .as_any()
                                        .downcast_ref::<StringArray>()
                                        .unwrap()
                                        .value(r)
                                        .into()
                                })
                                .collect();
                            let levels: Vec<i16> =
                                (0..array.len()).map(|r| array.is_valid(r) as i16).collect();
                            column
                                .typed::<parquet::data_type::ByteArrayType>()
                                .write_batch(&values, Some(&levels), None)
                                .unwrap();
                            column.close().unwrap();
                        }
                    }
                }
                assert_eq!(
                    flat_columns, 7,
                    "every fixed-width column goes through `flat`"
                );
                row_group.close().unwrap();
                writer.close().unwrap();

                let read = |bytes: Vec<u8>| {
                    let reader =
                        ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).unwrap();
                    let batches: Vec<RecordBatch> =
                        reader.build().unwrap().map(Result::unwrap).collect();
                    arrow::compute::concat_batches(&schema, &batches).unwrap()
                };
                let what = format!("{codec} pattern {pattern}, {len} rows, cuts {cuts:?}");
                let back = read(ours.clone());
                for (i, field) in schema.fields().iter().enumerate() {
                    assert_eq!(
                        back.column(i).as_ref(),
                        arrays[i].as_ref(),
                        "{what}: column {}",
                        field.name()
                    );
                }

                let meta = |bytes: Vec<u8>| {
                    SerializedFileReader::new(Bytes::from(bytes))
                        .unwrap()
                        .metadata()
                        .clone()
                };
                let (ours, theirs) = (meta(ours), meta(reference));
                let (ours, theirs) = (ours.row_group(0), theirs.row_group(0));
                for i in 0..7 {
                    let (a, b) = (ours.column(i), theirs.column(i));
                    let name = schema.field(i).name();
                    assert_eq!(a.statistics(), b.statistics(), "{what}: {name} statistics");
                    assert_eq!(a.num_values(), b.num_values(), "{what}: {name} values");
                    assert_eq!(a.compression(), b.compression(), "{what}: {name} codec");
                    assert_eq!(
                        a.definition_level_histogram(),
                        b.definition_level_histogram(),
                        "{what}: {name} level histogram"
                    );
                    assert_eq!(
                        a.encodings().collect::<Vec<_>>(),
                        b.encodings().collect::<Vec<_>>(),
                        "{what}: {name} encodings"
                    );
                }
            }
        }
    }

    #[test]
    fn levels_are_rle_runs_and_bit_packed_groups() {
        // Checked through the reader above; here the encoding itself: a long run of ones
        // becomes one RLE run, mixed bytes one bit-packed run, and a partial last byte a
        // padded group.
        let mut levels = Levels::new(0);
        levels.push_bits(u64::MAX, 64);
        levels.push_bits(u64::MAX, 64);
        levels.push_bits(0b1010_0110, 8);
        levels.push_bits(0b101, 3);
        assert_eq!(
            levels.finish(),
            vec![
                // RLE header: varint of 128 levels << 1 = 256.
                0x80,
                0x02,
                1,
                (2 << 1) | 1,
                0b1010_0110,
                0b101
            ]
        );
        // Short runs of equal bytes stay inside the bit-packed run.
        let mut levels = Levels::new(0);
        levels.push_bits(0x00ff_0f00, 32);
        assert_eq!(levels.finish(), vec![(4 << 1) | 1, 0x00, 0x0f, 0xff, 0x00]);
    }

    /// A column declared not nullable that holds a null is refused, naming the column.
    #[test]
    fn nulls_in_a_required_column_are_an_error() {
        let schema = Schema::new(vec![Field::new("required", DataType::Int64, false)]);
        let parquet_schema = ArrowSchemaConverter::new().convert(&schema).unwrap();
        let descr = parquet_schema.column(0);
        let array: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]));
        let Err(e) = encode_chunk(&descr, Kind::Int64, &props(Compression::SNAPPY), &[array])
        else {
            panic!("a null in a required column was encoded");
        };
        assert_eq!(
            e.to_string(),
            "column `required` is declared not nullable but holds nulls"
        );
    }

    #[test]
    fn settings_it_does_not_write_are_left_to_parquet_rs() {
        use parquet::file::properties::WriterPropertiesBuilder;
        let path = ColumnPath::from("x");
        let with = |f: fn(WriterPropertiesBuilder) -> WriterPropertiesBuilder| {
            let base = WriterProperties::builder()
                .set_dictionary_enabled(false)
                .set_statistics_enabled(EnabledStatistics::Chunk);
            applies(&f(base).build(), &path)
        };
        assert!(with(|b| b));
        assert!(with(|b| b.set_compression(Compression::SNAPPY)));
        assert!(!with(
            |b| b.set_compression(Compression::ZSTD(Default::default()))
        ));
        assert!(!with(|b| b.set_column_dictionary_enabled("x".into(), true)));
        assert!(!with(|b| b.set_statistics_enabled(EnabledStatistics::Page)));
        assert!(!with(|b| b.set_bloom_filter_enabled(true)));
        assert!(!with(|b| b.set_writer_version(WriterVersion::PARQUET_2_0)));
        assert!(!with(
            |b| b.set_column_encoding("x".into(), Encoding::BYTE_STREAM_SPLIT)
        ));
    }

    #[test]
    fn only_top_level_fixed_width_columns_are_taken() {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("u", DataType::UInt32, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("b", DataType::Boolean, true),
        ]);
        let parquet_schema = ArrowSchemaConverter::new().convert(&schema).unwrap();
        let kinds: Vec<Option<Kind>> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| kind_of(f.data_type(), &parquet_schema.column(i)))
            .collect();
        assert_eq!(kinds, vec![None, None, Some(Kind::Int64), None]);
    }
}
