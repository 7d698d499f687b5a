//! Deterministic sample data of the demo repository written by `larder init`.
//!
//! Everything derives from [`SEED`] and the (hour-aligned) end time `E`, never from the
//! project name or the clock, so the same `E` always gives byte-identical Parquet files.
//! Timestamps are `Timestamp(Microsecond, "UTC")`; keys and timestamps are non-nullable,
//! feature columns nullable.
//!
//! - `data/driver_stats.parquet`: `driver_id` Int64 (1001..=1100), `event_timestamp`,
//!   `created`, `conv_rate` Float32 in [0, 1), `acc_rate` Float32 in [0, 1),
//!   `avg_daily_trips` Int64 in [0, 1000). One row per driver per hour, events on whole
//!   hours from `E - 7d` to `E - 1h` (16,800 rows), `created` = event + [0, 600) s. About
//!   1% of them are re-issued: a second row with the same (`driver_id`, `event_timestamp`),
//!   a `created` 1 to 60 minutes later and new values, as a late correction would be. About
//!   1% of `conv_rate` values are null. Sorted by (`event_timestamp`, `driver_id`,
//!   `created`).
//! - `data/customer_profile.parquet`: `customer_id` Int64 (5001..=5050), `event_timestamp`,
//!   `created`, `current_balance` Float32 in [0, 1000), `avg_passenger_count` Float32 in
//!   [1, 4), `lifetime_trip_count` Int64 (growing day by day). One row per customer per day,
//!   events from `E - 14d` to `E - 1d` (700 rows), `created` = event + [0, 600) s. Sorted
//!   by (`event_timestamp`, `customer_id`).
//! - `data/entity_rows.parquet`: a spine for training data, 1000 rows of `driver_id`,
//!   `customer_id`, `event_timestamp` in [`E - 6d`, `E`) on whole seconds, in random
//!   order. About 2% of each id is unknown (9999); about 5% of timestamps fall exactly on
//!   an hour, so they equal a driver event time; every 100th row (10 in all) repeats an
//!   earlier row exactly.
//!
//! Files have row groups of at most [`ROW_GROUP_ROWS`] rows, Snappy compression and a
//! fixed `created_by`.

use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};

/// Seed of the generator; each file draws from its own stream derived from it.
pub(super) const SEED: u64 = 42;
/// Row-group size, small enough that `driver_stats` has several row groups.
pub(super) const ROW_GROUP_ROWS: usize = 8192;

pub(super) const DRIVER_IDS: std::ops::RangeInclusive<i64> = 1001..=1100;
pub(super) const CUSTOMER_IDS: std::ops::RangeInclusive<i64> = 5001..=5050;
/// Id used in the spine for drivers and customers without any feature rows.
pub(super) const UNKNOWN_ID: i64 = 9999;
pub(super) const DRIVER_HOURS: i64 = 7 * 24;
pub(super) const CUSTOMER_DAYS: i64 = 14;
pub(super) const SPINE_ROWS: usize = 1000;
pub(super) const SPINE_DAYS: i64 = 6;

const SECOND: i64 = 1_000_000;
const HOUR: i64 = 3600 * SECOND;
const DAY: i64 = 24 * HOUR;
/// `created` lags its event by up to this much.
const CREATED_LAG: i64 = 600 * SECOND;

/// One generated Parquet file, encoded in memory.
pub(super) struct ParquetFile {
    /// Path relative to the repository root.
    pub(super) path: &'static str,
    pub(super) rows: u64,
    pub(super) bytes: Vec<u8>,
}

/// Generates the three Parquet files for the hour-aligned end time `end`.
pub(super) fn generate(end: DateTime<Utc>) -> Result<Vec<ParquetFile>> {
    let end = end.timestamp_micros();
    [
        ("data/driver_stats.parquet", driver_stats(end)),
        ("data/customer_profile.parquet", customer_profile(end)),
        ("data/entity_rows.parquet", entity_rows(end)),
    ]
    .into_iter()
    .map(|(path, batch)| {
        let batch = batch.with_context(|| format!("failed to build `{path}`"))?;
        let bytes = encode(&batch).with_context(|| format!("failed to encode `{path}`"))?;
        Ok(ParquetFile {
            path,
            rows: batch.num_rows() as u64,
            bytes,
        })
    })
    .collect()
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for demo data.
struct Rng(u64);

impl Rng {
    /// A generator for one file; `stream` keeps the files independent of each other.
    fn for_stream(stream: u64) -> Self {
        Self(SEED ^ stream.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (Lemire's multiply-shift; the bias is negligible here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below(hi.abs_diff(lo)) as i64
    }

    /// Uniform in `[0, 1)`: 24 random bits are exactly representable in an `f32`.
    fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u32 << 24) as f32
    }

    /// True with probability `1 / n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

fn timestamp_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

fn timestamps(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

fn driver_stats(end: i64) -> Result<RecordBatch> {
    let mut rng = Rng::for_stream(1);
    let capacity = DRIVER_HOURS as usize * DRIVER_IDS.count() * 102 / 100;
    let mut driver_id = Vec::with_capacity(capacity);
    let mut event = Vec::with_capacity(capacity);
    let mut created = Vec::with_capacity(capacity);
    let mut conv_rate = Vec::with_capacity(capacity);
    let mut acc_rate = Vec::with_capacity(capacity);
    let mut trips = Vec::with_capacity(capacity);
    // Rows come out in (event, driver, created) order, so no sort is needed.
    for hour in (1..=DRIVER_HOURS).rev() {
        let event_ts = end - hour * HOUR;
        for id in DRIVER_IDS {
            let mut created_ts = event_ts + rng.range(0, CREATED_LAG);
            let mut copies = if rng.one_in(100) { 2 } else { 1 };
            while copies > 0 {
                driver_id.push(id);
                event.push(event_ts);
                created.push(created_ts);
                let conv = rng.unit_f32();
                conv_rate.push((!rng.one_in(100)).then_some(conv));
                acc_rate.push(rng.unit_f32());
                trips.push(rng.range(0, 1000));
                created_ts += rng.range(60 * SECOND, 3600 * SECOND);
                copies -= 1;
            }
        }
    }
    let schema = Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        timestamp_field("event_timestamp"),
        timestamp_field("created"),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("acc_rate", DataType::Float32, true),
        Field::new("avg_daily_trips", DataType::Int64, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(driver_id)),
        timestamps(event),
        timestamps(created),
        Arc::new(Float32Array::from(conv_rate)),
        Arc::new(Float32Array::from(acc_rate)),
        Arc::new(Int64Array::from(trips)),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

fn customer_profile(end: i64) -> Result<RecordBatch> {
    let mut rng = Rng::for_stream(2);
    let customers = CUSTOMER_IDS.count();
    let capacity = CUSTOMER_DAYS as usize * customers;
    let mut customer_id = Vec::with_capacity(capacity);
    let mut event = Vec::with_capacity(capacity);
    let mut created = Vec::with_capacity(capacity);
    let mut balance = Vec::with_capacity(capacity);
    let mut passengers = Vec::with_capacity(capacity);
    let mut lifetime_trips: Vec<i64> = (0..customers).map(|_| rng.range(0, 500)).collect();
    let mut lifetime = Vec::with_capacity(capacity);
    for day in (1..=CUSTOMER_DAYS).rev() {
        let event_ts = end - day * DAY;
        for (id, trips) in CUSTOMER_IDS.zip(lifetime_trips.iter_mut()) {
            *trips += rng.range(0, 10);
            customer_id.push(id);
            event.push(event_ts);
            created.push(event_ts + rng.range(0, CREATED_LAG));
            balance.push(rng.unit_f32() * 1000.0);
            passengers.push(1.0 + rng.unit_f32() * 3.0);
            lifetime.push(*trips);
        }
    }
    let schema = Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        timestamp_field("event_timestamp"),
        timestamp_field("created"),
        Field::new("current_balance", DataType::Float32, true),
        Field::new("avg_passenger_count", DataType::Float32, true),
        Field::new("lifetime_trip_count", DataType::Int64, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(customer_id)),
        timestamps(event),
        timestamps(created),
        Arc::new(Float32Array::from(balance)),
        Arc::new(Float32Array::from(passengers)),
        Arc::new(Int64Array::from(lifetime)),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

fn entity_rows(end: i64) -> Result<RecordBatch> {
    let mut rng = Rng::for_stream(3);
    let mut rows: Vec<(i64, i64, i64)> = Vec::with_capacity(SPINE_ROWS);
    for i in 0..SPINE_ROWS {
        if i % 100 == 99 {
            rows.push(rows[rng.below(i as u64) as usize]);
            continue;
        }
        let driver = if rng.one_in(50) {
            UNKNOWN_ID
        } else {
            rng.range(*DRIVER_IDS.start(), DRIVER_IDS.end() + 1)
        };
        let customer = if rng.one_in(50) {
            UNKNOWN_ID
        } else {
            rng.range(*CUSTOMER_IDS.start(), CUSTOMER_IDS.end() + 1)
        };
        let offset = rng.range(0, SPINE_DAYS * DAY / SECOND) * SECOND;
        // `E - 6d + offset` is on the hour exactly when `offset` is.
        let offset = if rng.one_in(20) {
            offset - offset % HOUR
        } else {
            offset
        };
        rows.push((driver, customer, end - SPINE_DAYS * DAY + offset));
    }
    let schema = Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("customer_id", DataType::Int64, false),
        timestamp_field("event_timestamp"),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
        timestamps(rows.iter().map(|r| r.2).collect()),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// Encodes `batch` as Parquet with fixed writer properties, so output depends only on the
/// data (and the parquet crate's encoder).
fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_created_by(concat!("larder version ", env!("CARGO_PKG_VERSION")).to_owned())
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn rng_is_splitmix64() {
        // Reference outputs of SplitMix64 for seed 1234567 (Vigna's splitmix64.c).
        let mut rng = Rng(1_234_567);
        let expected = [
            6_457_827_717_110_365_317,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821,
        ];
        assert_eq!(expected.map(|_| rng.next_u64()), expected);
    }

    #[test]
    fn helpers_stay_in_range() {
        let mut rng = Rng::for_stream(0);
        for _ in 0..10_000 {
            assert!((0.0..1.0).contains(&rng.unit_f32()));
            assert!((-5..7).contains(&rng.range(-5, 7)));
        }
        assert_eq!(rng.range(3, 4), 3);
    }
}
