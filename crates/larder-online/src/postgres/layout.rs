//! Feast's Postgres layout: table names, statements, and the binary COPY encoding of a
//! write batch.
//!
//! A view's table is `"{db_schema}"."{project}_{view}"` with one row per (entity key,
//! feature): `entity_key BYTEA, feature_name TEXT, value BYTEA, value_text TEXT,
//! vector_value BYTEA, event_ts TIMESTAMPTZ, created_ts TIMESTAMPTZ, PRIMARY KEY
//! (entity_key, feature_name)` plus an index `{table}_ek` on `entity_key`, as Feast's
//! `PostgreSQLOnlineStore` creates it. `value` is the serialized `feast.types.Value`,
//! `value_text` its string when it holds one (Feast's full-text search column). Larder writes
//! a null cell (a feature missing from the row) as a row whose `value` is NULL, so a row of
//! only null cells still records that the key was written.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::types::{FromSql, Type};

/// Microseconds from the Unix epoch to Postgres' epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The temporary table a write batch is copied into, one row per entity key.
pub(super) const STAGING: &str = "pg_temp.larder_online_rows";

/// Run at the start of each write transaction (connections are opened with
/// `client_min_messages=warning`, so an existing table raises no notice).
pub(super) const STAGING_SQL: &str = "CREATE TEMP TABLE IF NOT EXISTS larder_online_rows (entity_key BYTEA NOT NULL, \
    event_ts TIMESTAMPTZ NOT NULL, created_ts TIMESTAMPTZ, vals BYTEA[] NOT NULL, \
    texts TEXT[] NOT NULL) ON COMMIT DELETE ROWS";

pub(super) const COPY_SQL: &str = "COPY pg_temp.larder_online_rows \
    (entity_key, event_ts, created_ts, vals, texts) FROM STDIN (FORMAT binary)";

/// Feast's table name for a view (`{project}_{view}`), unquoted.
pub fn postgres_table_name(project: &str, view: &str) -> String {
    format!("{project}_{view}")
}

/// `name` as a Postgres identifier: double-quoted, inner quotes doubled.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A view's table: its name and its schema-qualified, quoted form.
#[derive(Clone, Debug)]
pub(super) struct Table {
    /// `{project}_{view}`, as errors name it.
    pub name: String,
    /// `"{schema}"."{project}_{view}"`.
    pub qualified: String,
    pub index: String,
}

impl Table {
    pub fn new(schema: &str, project: &str, view: &str) -> Self {
        let name = postgres_table_name(project, view);
        Table {
            qualified: format!("{}.{}", quote_ident(schema), quote_ident(&name)),
            index: quote_ident(&format!("{name}_ek")),
            name,
        }
    }

    /// Feast's `CREATE TABLE` (idempotent).
    pub fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (entity_key BYTEA, feature_name TEXT, value BYTEA, \
             value_text TEXT NULL, vector_value BYTEA NULL, event_ts TIMESTAMPTZ, \
             created_ts TIMESTAMPTZ, PRIMARY KEY(entity_key, feature_name))",
            self.qualified,
        )
    }

    /// Feast's index on `entity_key` (idempotent).
    pub fn index_sql(&self) -> String {
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {} (entity_key)",
            self.index, self.qualified
        )
    }

    pub fn drop_sql(&self) -> String {
        format!("DROP TABLE IF EXISTS {}", self.qualified)
    }

    /// The newest-wins upsert from the staging table. `$1`: the feature names (text[], in
    /// the order of each staged row's arrays), `$2`: their number. Returns one row: the
    /// number of keys whose every feature row was written, and the keys of which only some
    /// were (features new to the view inserted under a newer stored row; see
    /// [`cleanup_sql`](Self::cleanup_sql)).
    ///
    /// The condition sits in `ON CONFLICT ... DO UPDATE ... WHERE`, so it is judged against
    /// the row as it is when the row lock is held: two writers cannot both win.
    pub fn upsert_sql(&self) -> String {
        format!(
            "WITH up AS (\
               INSERT INTO {t} AS t \
                 (entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts) \
               SELECT r.entity_key, f.name, f.value, f.text, NULL, r.event_ts, r.created_ts \
               FROM {STAGING} AS r \
               CROSS JOIN LATERAL unnest($1::text[], r.vals, r.texts) AS f(name, value, text) \
               ON CONFLICT (entity_key, feature_name) DO UPDATE SET \
                 value = EXCLUDED.value, value_text = EXCLUDED.value_text, \
                 vector_value = EXCLUDED.vector_value, event_ts = EXCLUDED.event_ts, \
                 created_ts = EXCLUDED.created_ts \
               WHERE t.event_ts IS NULL OR EXCLUDED.event_ts >= t.event_ts \
               RETURNING t.entity_key\
             ), per_key AS (SELECT entity_key, count(*) AS n FROM up GROUP BY entity_key) \
             SELECT count(*) FILTER (WHERE n >= $2::bigint), \
                    array_agg(entity_key) FILTER (WHERE n < $2::bigint) \
             FROM per_key",
            t = self.qualified,
        )
    }

    /// Removes, for the keys `$1` (bytea[]), feature rows older than the key's newest:
    /// what a losing write inserted for features the stored (newer) row did not have.
    pub fn cleanup_sql(&self) -> String {
        format!(
            "DELETE FROM {t} AS t WHERE t.entity_key = ANY($1) AND t.event_ts < \
             (SELECT max(m.event_ts) FROM {t} AS m WHERE m.entity_key = t.entity_key)",
            t = self.qualified,
        )
    }

    /// `$1` keys (bytea[]), `$2` feature names (text[]). Both columns of the primary key
    /// are bound, so Postgres finds the rows through it.
    pub fn select_sql(&self) -> String {
        format!(
            "SELECT entity_key, feature_name, value, event_ts FROM {} \
             WHERE entity_key = ANY($1) AND feature_name = ANY($2)",
            self.qualified
        )
    }
}

/// Columns of a view table as `(name, type)`, `$1` the qualified quoted name.
pub(super) const COLUMNS_SQL: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
    FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 \
    AND NOT a.attisdropped ORDER BY a.attnum";

/// The columns Larder reads and writes, with the type each must have.
pub(super) const REQUIRED_COLUMNS: [(&str, &str); 5] = [
    ("entity_key", "bytea"),
    ("feature_name", "text"),
    ("value", "bytea"),
    ("event_ts", "timestamp with time zone"),
    ("created_ts", "timestamp with time zone"),
];

/// Columns of Feast's current layout that tables created by older Feast versions lack;
/// added (nullable) when missing.
pub(super) const ADDED_COLUMNS: [(&str, &str); 2] =
    [("value_text", "TEXT NULL"), ("vector_value", "BYTEA NULL")];

/// An event time in Unix microseconds read from a `TIMESTAMPTZ` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct UnixMicros(pub i64);

impl<'a> FromSql<'a> for UnixMicros {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("a timestamp of {} bytes", raw.len()))?;
        // `infinity` and `-infinity` saturate.
        Ok(UnixMicros(
            i64::from_be_bytes(bytes).saturating_add(PG_EPOCH_OFFSET_MICROS),
        ))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ || *ty == Type::TIMESTAMP
    }
}

/// Unix microseconds → Postgres microseconds; `None` beyond what `TIMESTAMPTZ` can hold.
fn pg_micros(unix: i64) -> Option<i64> {
    // Postgres' range: 4713 BC to 294276 AD.
    const MIN: i64 = -211_813_488_000_000_000;
    const MAX: i64 = 9_223_371_331_200_000_000;
    let pg = unix.checked_sub(PG_EPOCH_OFFSET_MICROS)?;
    (MIN..MAX).contains(&pg).then_some(pg)
}

const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// Size of the COPY chunks handed to the driver.
const CHUNK: usize = 1 << 20;
const BYTEA_OID: u32 = 17;
const TEXT_OID: u32 = 25;

/// A write batch's winning rows in Postgres' binary COPY format, in chunks of about 1 MiB.
#[derive(Debug)]
pub(super) struct CopyData {
    pub chunks: Vec<Bytes>,
}

/// One row to stage: entity key, event and created time (Unix µs), each feature's value.
pub(super) struct StagedRow<'a, V> {
    pub key: &'a [u8],
    pub event_ts: i64,
    pub created_ts: Option<i64>,
    pub values: V,
}

/// Encodes `rows` for [`COPY_SQL`]. Errors name the first row whose time Postgres cannot
/// hold.
pub(super) fn encode_copy<'a, V>(
    rows: impl Iterator<Item = StagedRow<'a, V>>,
    features: usize,
) -> Result<CopyData, String>
where
    V: Iterator<Item = Option<&'a [u8]>> + Clone,
{
    let mut chunks = Vec::new();
    let mut buf = BytesMut::with_capacity(CHUNK + CHUNK / 4);
    buf.put_slice(COPY_HEADER);
    for row in rows {
        let event = pg_micros(row.event_ts)
            .ok_or_else(|| format!("event time {} µs is out of Postgres' range", row.event_ts))?;
        let created = row
            .created_ts
            .map(|c| pg_micros(c).ok_or_else(|| format!("created time {c} µs is out of range")))
            .transpose()?;
        buf.put_i16(5);
        put_field(&mut buf, Some(row.key));
        buf.put_i32(8);
        buf.put_i64(event);
        match created {
            Some(created) => {
                buf.put_i32(8);
                buf.put_i64(created);
            }
            None => buf.put_i32(-1),
        }
        put_array(&mut buf, BYTEA_OID, features, row.values.clone());
        put_array(
            &mut buf,
            TEXT_OID,
            features,
            row.values.map(|v| v.and_then(value_text)),
        );
        if buf.len() >= CHUNK {
            chunks.push(buf.split().freeze());
        }
    }
    buf.put_i16(-1);
    chunks.push(buf.freeze());
    Ok(CopyData { chunks })
}

fn put_field(buf: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        Some(bytes) => {
            buf.put_i32(len_i32(bytes.len()));
            buf.put_slice(bytes);
        }
        None => buf.put_i32(-1),
    }
}

/// Lengths are checked by Postgres' 1 GB field limit long before `i32` overflows; a larger
/// value is sent as a length Postgres refuses rather than wrapping around.
fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// A one-dimensional array field of `len` elements of type `oid`.
fn put_array<'a>(
    buf: &mut BytesMut,
    oid: u32,
    len: usize,
    elements: impl Iterator<Item = Option<&'a [u8]>>,
) {
    let start = buf.len();
    buf.put_i32(0); // field length, patched below
    buf.put_i32(1); // dimensions
    let flags_at = buf.len();
    buf.put_i32(0); // has nulls, patched below
    buf.put_u32(oid);
    buf.put_i32(len_i32(len));
    buf.put_i32(1); // lower bound
    let mut nulls = false;
    for element in elements {
        nulls |= element.is_none();
        put_field(buf, element);
    }
    let field_len = len_i32(buf.len() - start - 4);
    buf[start..start + 4].copy_from_slice(&field_len.to_be_bytes());
    if nulls {
        buf[flags_at..flags_at + 4].copy_from_slice(&1i32.to_be_bytes());
    }
}

/// The string of a serialized `Value` holding `string_val` (field 2), for Feast's
/// `value_text` column; `None` for other values and for strings Postgres' `TEXT` cannot hold
/// (a NUL character).
pub(super) fn value_text(value: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = value.split_first()?;
    // Field 2, length-delimited.
    if tag != 0x12 {
        return None;
    }
    let mut len: u64 = 0;
    let mut used = 0;
    for (i, &byte) in rest.iter().enumerate().take(10) {
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            used = i + 1;
            break;
        }
    }
    let text = rest.get(used..).filter(|_| used > 0)?;
    (text.len() as u64 == len && !text.contains(&0) && std::str::from_utf8(text).is_ok())
        .then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_text_only_for_whole_strings() {
        assert_eq!(value_text(b"\x12\x03abc"), Some(&b"abc"[..]));
        assert_eq!(value_text(b"\x12\x00"), Some(&b""[..]));
        assert_eq!(value_text(b"\x12\x03ab"), None, "truncated");
        assert_eq!(value_text(b"\x12\x02a\0"), None, "NUL");
        assert_eq!(value_text(b"\x0a\x01a"), None, "bytes value");
        assert_eq!(value_text(b"\x20\x01"), None, "int64 value");
        assert_eq!(value_text(b""), None, "null value");
        let long = vec![b'x'; 300];
        let mut encoded = vec![0x12, 0xac, 0x02];
        encoded.extend_from_slice(&long);
        assert_eq!(value_text(&encoded), Some(long.as_slice()));
    }

    #[test]
    fn quoting_and_times() {
        let t = Table::new("my schema", "p", "v\"x");
        assert_eq!(t.qualified, "\"my schema\".\"p_v\"\"x\"");
        assert_eq!(t.index, "\"p_v\"\"x_ek\"");
        assert_eq!(pg_micros(PG_EPOCH_OFFSET_MICROS), Some(0));
        assert_eq!(pg_micros(i64::MIN), None);
        let raw = (-PG_EPOCH_OFFSET_MICROS).to_be_bytes();
        assert_eq!(
            UnixMicros::from_sql(&Type::TIMESTAMPTZ, &raw).ok(),
            Some(UnixMicros(0))
        );
    }
}
