//! Larder's SQLite layout: table names, the table schema, the SQL, and the packed payload.
//!
//! One table per view, named `{project}_{view}` like Feast's (double-quoted in SQL), with
//! ONE ROW PER ENTITY KEY:
//!
//! ```sql
//! CREATE TABLE "{project}_{view}" (
//!     entity_key BLOB NOT NULL PRIMARY KEY,  -- Feast-serialized entity key
//!     event_ts   INTEGER NOT NULL,            -- µs since the Unix epoch, UTC
//!     created_ts INTEGER,                     -- µs, NULL when the source has none
//!     payload    BLOB NOT NULL                -- every feature of the row, packed
//! ) WITHOUT ROWID
//! ```
//!
//! A read of N keys is N primary-key seeks in one clustered B-tree, each returning one
//! blob; Feast's layout (one row per entity and feature) costs N × F seeks.
//!
//! # Payload
//!
//! ```text
//! payload := version entry*
//! version := 0x01                                   (u8)
//! entry   := name_len (u16 LE) · name (UTF-8, name_len bytes)
//!            · value_len (u32 LE) · value (value_len bytes: a serialized feast.types.Value)
//! ```
//!
//! Entries are in the view's feature order at write time, each name at most once. A feature
//! missing from the row (a null cell in the write batch) has no entry; a feature written
//! as the null `Value` has an entry with `value_len` 0. Because entries are named, the
//! payload survives view schema changes: a reader asks for names, a renamed or added
//! feature simply has no entry in older rows, a removed one is skipped. A write replaces
//! the whole payload of its key (features of a view row are written together), which is
//! what makes the newest-wins upsert a single-row, torn-free statement.
//!
//! The version byte lets a later Larder change the encoding (compression, say) and still
//! read older rows; an unknown version is reported as corrupt.

use std::fmt::Write as _;

/// First byte of every payload.
pub const PAYLOAD_VERSION: u8 = 1;

/// Feast's SQLite table name of a view: `{project}_{view}`.
pub fn sqlite_table_name(project: &str, view: &str) -> String {
    format!("{project}_{view}")
}

/// `name` as an SQL identifier: double-quoted, inner quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(crate) fn create_table_sql(quoted: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {quoted} (\
         entity_key BLOB NOT NULL PRIMARY KEY, \
         event_ts INTEGER NOT NULL, \
         created_ts INTEGER, \
         payload BLOB NOT NULL\
         ) WITHOUT ROWID"
    )
}

/// The newest-wins upsert: an equal event time overwrites, an older one is skipped (and
/// then not counted by `sqlite3_changes`).
pub(crate) fn upsert_sql(quoted: &str) -> String {
    format!(
        "INSERT INTO {quoted} (entity_key, event_ts, created_ts, payload) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(entity_key) DO UPDATE SET \
         event_ts = excluded.event_ts, created_ts = excluded.created_ts, payload = excluded.payload \
         WHERE excluded.event_ts >= {quoted}.event_ts"
    )
}

/// Most keys bound in one `IN (...)` (SQLite's default limit is 32766 variables; small
/// chunks keep the statement short and its IN-list sort cheap).
pub(crate) const MAX_KEYS_PER_SELECT: usize = 500;

/// The `IN` list sizes a select is prepared with: a chunk is padded (repeating its last
/// key) to the next size, so each table has at most this many cached statements.
const SELECT_SIZES: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, MAX_KEYS_PER_SELECT];

/// The prepared size for a chunk of `keys` (1..=MAX_KEYS_PER_SELECT) keys.
pub(crate) fn select_size(keys: usize) -> usize {
    SELECT_SIZES
        .iter()
        .copied()
        .find(|&size| size >= keys)
        .unwrap_or(MAX_KEYS_PER_SELECT)
}

pub(crate) fn select_sql(quoted: &str, size: usize) -> String {
    let mut sql = String::with_capacity(80 + quoted.len() + size * 2);
    let _ = write!(
        sql,
        "SELECT entity_key, event_ts, payload FROM {quoted} WHERE entity_key IN (?"
    );
    for _ in 1..size {
        sql.push_str(",?");
    }
    sql.push(')');
    sql
}

/// The column names Larder's table has, in order (to recognise foreign tables).
pub(crate) const COLUMNS: [&str; 4] = ["entity_key", "event_ts", "created_ts", "payload"];

/// Why a payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PayloadError {
    pub offset: usize,
    pub reason: &'static str,
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

/// The entry header of each feature name (`name_len · name`), built once per write batch.
#[derive(Debug)]
pub(crate) struct PayloadWriter {
    headers: Vec<Vec<u8>>,
}

impl PayloadWriter {
    /// Fails with the first name longer than `u16::MAX` bytes.
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, &'a str> {
        let headers: Vec<Vec<u8>> = names
            .into_iter()
            .map(|name| {
                let len = u16::try_from(name.len()).map_err(|_| name)?;
                let mut header = Vec::with_capacity(2 + name.len());
                header.extend_from_slice(&len.to_le_bytes());
                header.extend_from_slice(name.as_bytes());
                Ok::<_, &'a str>(header)
            })
            .collect::<Result<_, _>>()?;
        Ok(PayloadWriter { headers })
    }

    /// Writes the payload of one row into `out` (cleared first): `value(i)` is the value of
    /// feature `i`, `None` when missing. Returns the index of a feature whose value does
    /// not fit `u32`, if any.
    pub(crate) fn write<'v>(
        &self,
        out: &mut Vec<u8>,
        mut value: impl FnMut(usize) -> Option<&'v [u8]>,
    ) -> Result<(), usize> {
        out.clear();
        out.push(PAYLOAD_VERSION);
        for (i, header) in self.headers.iter().enumerate() {
            let Some(bytes) = value(i) else { continue };
            let len = u32::try_from(bytes.len()).map_err(|_| i)?;
            out.extend_from_slice(header);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(bytes);
        }
        Ok(())
    }
}

/// One payload entry: the feature name and the value bytes, borrowed from the payload.
pub(crate) type Entry<'a> = (&'a [u8], &'a [u8]);

/// The entries of a payload, in stored order; stops after the first malformed one.
pub(crate) fn entries(
    payload: &[u8],
) -> Result<impl Iterator<Item = Result<Entry<'_>, PayloadError>>, PayloadError> {
    match payload.first() {
        Some(&PAYLOAD_VERSION) => {}
        Some(_) => {
            return Err(PayloadError {
                offset: 0,
                reason: "unknown payload version (written by a newer Larder?)",
            });
        }
        None => {
            return Err(PayloadError {
                offset: 0,
                reason: "empty payload",
            });
        }
    }
    let mut offset = 1;
    Ok(std::iter::from_fn(move || {
        if offset == payload.len() {
            return None;
        }
        let entry = read_entry(payload, offset);
        match &entry {
            Ok((next, _, _)) => offset = *next,
            // Stop after the first error.
            Err(_) => offset = payload.len(),
        }
        Some(entry.map(|(_, name, value)| (name, value)))
    }))
}

fn read_entry(payload: &[u8], start: usize) -> Result<(usize, &[u8], &[u8]), PayloadError> {
    let truncated = |offset| PayloadError {
        offset,
        reason: "truncated entry",
    };
    let take = |offset: usize, n: usize| {
        payload
            .get(offset..offset + n)
            .ok_or_else(|| truncated(offset))
    };
    let name_len = take(start, 2)?;
    let name_len = usize::from(u16::from_le_bytes([name_len[0], name_len[1]]));
    let name = take(start + 2, name_len)?;
    let value_at = start + 2 + name_len;
    let value_len = take(value_at, 4)?;
    let value_len = u32::from_le_bytes([value_len[0], value_len[1], value_len[2], value_len[3]]);
    let value_len = usize::try_from(value_len).map_err(|_| truncated(value_at))?;
    let value = take(value_at + 4, value_len)?;
    Ok((value_at + 4 + value_len, name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (Vec<u8>, Vec<u8>);

    fn decode(payload: &[u8]) -> Result<Vec<Owned>, PayloadError> {
        entries(payload)?
            .map(|e| e.map(|(n, v)| (n.to_vec(), v.to_vec())))
            .collect()
    }

    #[test]
    fn payload_round_trip_skips_missing_and_keeps_empty() {
        let writer = PayloadWriter::new(["a", "bb", "c"]).unwrap();
        let values: [Option<&[u8]>; 3] = [Some(b"\x08\x01"), None, Some(b"")];
        let mut out = Vec::new();
        writer.write(&mut out, |i| values[i]).unwrap();
        assert_eq!(
            out,
            b"\x01\x01\x00a\x02\x00\x00\x00\x08\x01\x01\x00c\x00\x00\x00\x00".to_vec()
        );
        assert_eq!(
            decode(&out).unwrap(),
            vec![
                (b"a".to_vec(), b"\x08\x01".to_vec()),
                (b"c".to_vec(), Vec::new())
            ]
        );
        writer.write(&mut out, |_| None).unwrap();
        assert_eq!(out, vec![PAYLOAD_VERSION]);
        assert_eq!(decode(&out).unwrap(), vec![]);
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert_eq!(decode(b"").unwrap_err().reason, "empty payload");
        assert!(decode(b"\x02").unwrap_err().reason.contains("version"));
        let err = decode(b"\x01\x05\x00ab").unwrap_err();
        assert_eq!(err.offset, 3);
        let err = decode(b"\x01\x01\x00a\x09\x00\x00\x00xy").unwrap_err();
        assert_eq!(err.offset, 8);
    }

    #[test]
    fn quoting_and_select_sizes() {
        assert_eq!(quote_ident(r#"p_we"ird"#), r#""p_we""ird""#);
        assert_eq!(
            sqlite_table_name("prod", "driver_stats"),
            "prod_driver_stats"
        );
        assert_eq!(select_size(1), 1);
        assert_eq!(select_size(100), 128);
        assert_eq!(select_size(257), 500);
        assert_eq!(select_size(500), 500);
        assert!(select_sql("\"t\"", 3).ends_with("IN (?,?,?)"));
    }
}
