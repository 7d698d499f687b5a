//! Larder's SQLite layout: table names, the table schema, the SQL, and the packed payload.
//!
//! One table per view, named `{project}_{view}` like Feast's (double-quoted in SQL), with
//! ONE ROW PER ENTITY KEY:
//!
//! ```sql
//! CREATE TABLE "{project}_{view}" (
//!     slot       INTEGER PRIMARY KEY,  -- the key's slot: its 64-bit hash, see below
//!     entity_key BLOB NOT NULL,        -- Feast-serialized entity key
//!     event_ts   INTEGER NOT NULL,     -- µs since the Unix epoch, UTC
//!     created_ts INTEGER,              -- µs, NULL when the source has none
//!     payload    BLOB NOT NULL         -- every feature of the row, packed
//! )
//! ```
//!
//! A read of N keys is N rowid seeks in one table B-tree, each returning one row; Feast's
//! layout (one row per entity and feature) costs N × F seeks.
//!
//! # Slots
//!
//! The table is keyed by an integer rather than by the entity key itself: the interior
//! pages of a rowid table hold only integers (hundreds per page, so 100k rows are three
//! levels deep) and a seek compares integers. Keyed by the blob (`WITHOUT ROWID`, the
//! layout before version 2), every interior cell held a whole row, payload included: about
//! 13 per page, five levels for 100k rows, each level a binary search over 37-byte keys
//! that share their first 25 bytes; a 100-key read spent most of its time there.
//!
//! A key's home slot is [`key_slot`]: a multiply-rotate hash over the serialized key's
//! little-endian 64-bit words (the last one zero-padded, the length mixed in first),
//! finished with MurmurHash3's 64-bit mixer, as a signed integer. Two keys of a table may share a home
//! slot (about once in 2^64 / n² tables of n keys); the later one then takes the next free
//! slot (`slot + 1`, wrapping), so every row stores its `entity_key` and a reader probes
//! from the home slot until it finds the key (found) or an empty slot (absent). Probing is
//! correct because rows are never deleted one by one: a table only grows, is updated in
//! place, or is dropped whole.
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

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;

use crate::kept::find_or_keep;

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
         slot INTEGER PRIMARY KEY, \
         entity_key BLOB NOT NULL, \
         event_ts INTEGER NOT NULL, \
         created_ts INTEGER, \
         payload BLOB NOT NULL\
         )"
    )
}

/// The newest-wins upsert of a key at a slot: an equal event time overwrites, an older one
/// is skipped. A slot held by another key is not touched either; both leave
/// `sqlite3_changes` at 0, and [`occupant_sql`] tells them apart.
pub(crate) fn upsert_sql(quoted: &str) -> String {
    format!(
        "INSERT INTO {quoted} (slot, entity_key, event_ts, created_ts, payload) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT(slot) DO UPDATE SET \
         event_ts = excluded.event_ts, created_ts = excluded.created_ts, payload = excluded.payload \
         WHERE {quoted}.entity_key = excluded.entity_key AND excluded.event_ts >= {quoted}.event_ts"
    )
}

/// The key stored at a slot.
pub(crate) fn occupant_sql(quoted: &str) -> String {
    format!("SELECT entity_key FROM {quoted} WHERE slot = ?1")
}

/// The home slot of a serialized entity key (see the module docs). Part of the file
/// format: never change it without a new layout version.
pub fn key_slot(key: &[u8]) -> i64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let step = |h: u64, bytes: &[u8]| {
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        (h ^ u64::from_le_bytes(word))
            .wrapping_mul(K)
            .rotate_left(29)
    };
    let mut h = u64::try_from(key.len()).unwrap_or(u64::MAX).wrapping_mul(K);
    let mut words = key.chunks_exact(8);
    for word in &mut words {
        h = step(h, word);
    }
    if !words.remainder().is_empty() {
        h = step(h, words.remainder());
    }
    // MurmurHash3's fmix64: every input bit reaches every output bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// Most keys bound in one `IN (...)` (SQLite's default limit is 32766 variables; small
/// chunks keep the statement short and its IN-list sort cheap).
pub(crate) const MAX_KEYS_PER_SELECT: usize = 500;

/// The `IN` list sizes a select is prepared with: a chunk is padded (repeating its last
/// key) to the next size, so each table has at most this many cached statements.
const SELECT_SIZES: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, MAX_KEYS_PER_SELECT];

/// A view table's name and its read statements' SQL, built once per thread and table (a
/// read otherwise formats them for every request: a tenth of a one-key read's cost).
#[derive(Debug)]
pub(crate) struct TableSql {
    project: String,
    view: String,
    /// `{project}_{view}`.
    pub(crate) name: String,
    /// The select of each of [`SELECT_SIZES`], made on first use.
    selects: RefCell<[Option<Rc<str>>; SELECT_SIZES.len()]>,
}

/// How many tables' SQL [`TableSql::of`] keeps per thread.
const TABLE_SQL_KEPT: usize = 64;

impl TableSql {
    /// The SQL of view `view` of `project`.
    pub(crate) fn of(project: &str, view: &str) -> Rc<TableSql> {
        thread_local! {
            static KEPT: RefCell<Vec<Rc<TableSql>>> = const { RefCell::new(Vec::new()) };
        }
        KEPT.with_borrow_mut(|kept| {
            let matches = |t: &Rc<TableSql>| t.view == view && t.project == project;
            find_or_keep(kept, TABLE_SQL_KEPT, matches, || {
                Rc::new(TableSql {
                    project: project.to_owned(),
                    view: view.to_owned(),
                    name: sqlite_table_name(project, view),
                    selects: RefCell::new(Default::default()),
                })
            })
        })
    }

    /// The select for a chunk of `keys` keys: its `IN` list size and its SQL.
    pub(crate) fn select(&self, keys: usize) -> (usize, Rc<str>) {
        let at = select_index(keys);
        let size = SELECT_SIZES[at];
        let mut selects = self.selects.borrow_mut();
        let sql = selects[at]
            .get_or_insert_with(|| select_sql(&quote_ident(&self.name), size).into())
            .clone();
        (size, sql)
    }
}

/// The index in [`SELECT_SIZES`] of the prepared size for a chunk of `keys`
/// (1..=MAX_KEYS_PER_SELECT) keys.
fn select_index(keys: usize) -> usize {
    SELECT_SIZES
        .iter()
        .position(|&size| size >= keys)
        .unwrap_or(SELECT_SIZES.len() - 1)
}

pub(crate) fn select_sql(quoted: &str, size: usize) -> String {
    let mut sql = String::with_capacity(80 + quoted.len() + size * 2);
    let _ = write!(
        sql,
        "SELECT slot, entity_key, event_ts, payload FROM {quoted} WHERE slot IN (?"
    );
    for _ in 1..size {
        sql.push_str(",?");
    }
    sql.push(')');
    sql
}

/// The column names Larder's table has, in order (to recognise foreign tables).
pub(crate) const COLUMNS: [&str; 5] = ["slot", "entity_key", "event_ts", "created_ts", "payload"];

/// The columns of the layout before version 2 (`entity_key BLOB PRIMARY KEY`, `WITHOUT
/// ROWID`): `apply` migrates such a table in place.
pub(crate) const V1_COLUMNS: [&str; 4] = ["entity_key", "event_ts", "created_ts", "payload"];

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
        let size = |keys| SELECT_SIZES[select_index(keys)];
        assert_eq!(size(1), 1);
        assert_eq!(size(100), 128);
        assert_eq!(size(257), 500);
        assert_eq!(size(500), 500);
        let sql = TableSql::of("p", "v\"w");
        assert_eq!(sql.name, "p_v\"w");
        let (size, select) = sql.select(3);
        assert_eq!(size, 4);
        assert_eq!(&*select, select_sql("\"p_v\"\"w\"", 4));
        assert!(Rc::ptr_eq(&TableSql::of("p", "v\"w"), &sql));
        assert!(Rc::ptr_eq(&sql.select(4).1, &select));
        assert!(select_sql("\"t\"", 3).ends_with("IN (?,?,?)"));
    }
}
