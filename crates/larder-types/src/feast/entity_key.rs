//! Feast's entity key byte format (`serialize_entity_key`, versions 2 and 3), the row key of every online store (feast-behaviour.md §10.1).
//!
//! Layout, all integers `u32` little-endian: join keys sorted by name, all names first, then
//! all values. v3: `num_keys`, then per name `2 (STRING)`, `length`, UTF-8 name, then per
//! value `value type`, `length`, bytes. v2 has no `num_keys` and no name lengths. Value
//! bytes: STRING UTF-8, BYTES raw, INT32 `i32` LE, INT64 and UNIX_TIMESTAMP `i64` LE seconds.
//!
//! Feast writes the name length as Python's `len(name)`, a count of characters, not bytes.
//! Larder does the same (identical for the ASCII names Larder allows), so keys with
//! non-ASCII names still match rows Feast wrote.

use arrow::array::{Array, ArrayRef};
use prost::Message;

use super::FormatError;
use super::column::{Scalar, Scalars, normalize};
use super::encode::ByteRows;
use super::value::{Val, Value};
use crate::{ScalarType, ValueType};

/// The join key Feast gives every row of a feature view without entities (value `""`).
pub const DUMMY_JOIN_KEY: &str = "__dummy_id";

/// The `ValueType.Enum` number Feast writes before every join key name.
const STRING_TYPE: u32 = 2;

/// Feast's `entity_key_serialization_version`; 3 is Feast's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyVersion {
    V2,
    #[default]
    V3,
}

impl KeyVersion {
    pub fn number(self) -> u32 {
        match self {
            KeyVersion::V2 => 2,
            KeyVersion::V3 => 3,
        }
    }
}

impl TryFrom<u32> for KeyVersion {
    type Error = FormatError;
    fn try_from(version: u32) -> Result<Self, Self::Error> {
        match version {
            2 => Ok(KeyVersion::V2),
            3 => Ok(KeyVersion::V3),
            _ => Err(FormatError::UnsupportedKeyVersion { version }),
        }
    }
}

/// `feast.types.EntityKey`: join key names and their values, in any order.
#[derive(Clone, PartialEq, Message)]
pub struct EntityKey {
    #[prost(string, repeated, tag = "1")]
    pub join_keys: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub entity_values: Vec<Value>,
}

impl EntityKey {
    pub fn new<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Self {
        let (join_keys, entity_values) = pairs.into_iter().map(|(k, v)| (k.into(), v)).unzip();
        EntityKey {
            join_keys,
            entity_values,
        }
    }
}

/// Serializes `key` in Feast's byte format.
pub fn serialize_entity_key(key: &EntityKey, version: KeyVersion) -> Result<Vec<u8>, FormatError> {
    let mut buf = Vec::with_capacity(4 + key.join_keys.len() * 32);
    serialize_entity_key_into(key, version, &mut buf)?;
    Ok(buf)
}

/// Appends the serialized `key` to `buf`; on error `buf` is left as it was.
///
/// Allocates only to sort keys when there are two or more.
pub fn serialize_entity_key_into(
    key: &EntityKey,
    version: KeyVersion,
    buf: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let (names, values) = (&key.join_keys, &key.entity_values);
    if names.len() != values.len() {
        return Err(FormatError::KeyValueCountMismatch {
            join_keys: names.len(),
            values: values.len(),
        });
    }
    if let ([name], [value]) = (names.as_slice(), values.as_slice()) {
        return serialize_single_key_into(name, value, version, buf);
    }
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_unstable_by(|&a, &b| names[a].cmp(&names[b]));
    check_unique(order.iter().map(|&i| names[i].as_str()))?;
    let start = buf.len();
    put_names(order.iter().map(|&i| names[i].as_str()), version, buf);
    for &i in &order {
        if let Err(err) = key_scalar(&names[i], &values[i]).map(|v| put_key_value(v, buf)) {
            buf.truncate(start);
            return Err(err);
        }
    }
    Ok(())
}

/// Appends the serialized single-key entity key `{join_key: value}` to `buf`, allocation-free
/// once `buf` has grown. On error `buf` is left as it was.
pub fn serialize_single_key_into(
    join_key: &str,
    value: &Value,
    version: KeyVersion,
    buf: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let v = key_scalar(join_key, value)?;
    put_names(std::iter::once(join_key), version, buf);
    put_key_value(v, buf);
    Ok(())
}

/// The bytes every serialized key with these join keys starts with (all the names), for
/// prefix scans. Names are sorted here.
pub fn entity_key_prefix(join_keys: &[&str], version: KeyVersion) -> Vec<u8> {
    let mut sorted = join_keys.to_vec();
    sorted.sort_unstable();
    let mut buf = Vec::new();
    put_names(sorted.into_iter(), version, &mut buf);
    buf
}

/// Serializes the entity key of every row of a batch: `columns[i]` holds the values of join
/// key `names[i]`, read as `types[i]`. Copies each key into its own `Vec`; prefer
/// [`serialize_key_columns_into`], which does not allocate per row.
pub fn serialize_key_columns(
    names: &[&str],
    columns: &[ArrayRef],
    types: &[ScalarType],
    version: KeyVersion,
) -> Result<Vec<Vec<u8>>, FormatError> {
    let mut rows = ByteRows::new();
    serialize_key_columns_into(names, columns, types, version, &mut rows)?;
    Ok(rows.to_vecs())
}

/// Like [`serialize_key_columns`], appending one key per row to `out` (left as it was on
/// error). The name part is built once per batch; each row costs one copy of it plus the
/// value bytes.
pub fn serialize_key_columns_into(
    names: &[&str],
    columns: &[ArrayRef],
    types: &[ScalarType],
    version: KeyVersion,
    out: &mut ByteRows,
) -> Result<(), FormatError> {
    for count in [columns.len(), types.len()] {
        if count != names.len() {
            return Err(FormatError::KeyValueCountMismatch {
                join_keys: names.len(),
                values: count,
            });
        }
    }
    let rows = columns.first().map_or(0, |c| c.len());
    for ((name, column), ty) in names.iter().zip(columns).zip(types) {
        if !ty.is_entity_key_type() {
            return Err(FormatError::UnsupportedKeyValue {
                join_key: (*name).to_owned(),
                found: ty.name(),
            });
        }
        if column.len() != rows {
            return Err(FormatError::KeyColumnLength {
                join_key: (*name).to_owned(),
                rows: column.len(),
                expected: rows,
            });
        }
        if !ty.accepts_arrow(column.data_type()) {
            return Err(FormatError::UnsupportedArrowType {
                expected: ValueType::Scalar(*ty),
                actual: column.data_type().clone(),
            });
        }
    }
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_unstable_by(|&a, &b| names[a].cmp(names[b]));
    check_unique(order.iter().map(|&i| names[i]))?;

    let normalized = order
        .iter()
        .map(|&i| normalize(columns[i].as_ref(), types[i]))
        .collect::<Result<Vec<_>, _>>()?;
    let readers = order
        .iter()
        .zip(&normalized)
        .map(|(&i, owned)| {
            let array = owned.as_deref().unwrap_or(columns[i].as_ref());
            Scalars::new(array, types[i])
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut prefix = Vec::new();
    put_names(order.iter().map(|&i| names[i]), version, &mut prefix);

    let start = out.len();
    for row in 0..rows {
        let written = out.push_with(|buf| {
            buf.extend_from_slice(&prefix);
            for (reader, &i) in readers.iter().zip(&order) {
                if reader.is_null(row) {
                    return Err(FormatError::NullKeyValue {
                        join_key: names[i].to_owned(),
                        row,
                    });
                }
                put_key_value(reader.get(row), buf);
            }
            Ok(())
        });
        if let Err(err) = written {
            out.truncate(start);
            return Err(err);
        }
    }
    Ok(())
}

/// Like [`serialize_key_columns_into`] for keys given as [`Value`]s: `columns[i]` holds the
/// values of join key `names[i]`, one per row. The bytes are those of the Arrow path for the
/// same values; no array is built. Appends one key per row to `out` (left as it was on error).
pub fn serialize_key_values_into(
    names: &[&str],
    columns: &[&[Value]],
    version: KeyVersion,
    out: &mut ByteRows,
) -> Result<(), FormatError> {
    if columns.len() != names.len() {
        return Err(FormatError::KeyValueCountMismatch {
            join_keys: names.len(),
            values: columns.len(),
        });
    }
    let rows = columns.first().map_or(0, |c| c.len());
    for (name, column) in names.iter().zip(columns) {
        if column.len() != rows {
            return Err(FormatError::KeyColumnLength {
                join_key: (*name).to_owned(),
                rows: column.len(),
                expected: rows,
            });
        }
    }
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_unstable_by(|&a, &b| names[a].cmp(names[b]));
    check_unique(order.iter().map(|&i| names[i]))?;
    let mut prefix = Vec::new();
    put_names(order.iter().map(|&i| names[i]), version, &mut prefix);

    let start = out.len();
    let written = (0..rows).try_for_each(|row| {
        out.push_with(|buf| {
            buf.extend_from_slice(&prefix);
            for &i in &order {
                let value = &columns[i][row];
                if value.val.is_none() {
                    return Err(FormatError::NullKeyValue {
                        join_key: names[i].to_owned(),
                        row,
                    });
                }
                put_key_value(key_scalar(names[i], value)?, buf);
            }
            Ok(())
        })
    });
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// Parses a serialized entity key.
///
/// v3 keys are self-delimiting. v2 keys are not (names carry no length), so only v2 keys
/// with a single join key are read, taking the name to end where the value type starts:
/// the first NUL byte is the second byte of that `u32` (names never contain NUL).
pub fn deserialize_entity_key(bytes: &[u8], version: KeyVersion) -> Result<EntityKey, FormatError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut key = EntityKey::default();
    match version {
        KeyVersion::V3 => {
            let count = r.u32()? as usize;
            // Each key takes at least 16 bytes, so a corrupt count cannot reserve much.
            key.join_keys.reserve(count.min(bytes.len() / 16));
            for _ in 0..count {
                r.expect_string_type()?;
                let chars = r.u32()? as usize;
                key.join_keys.push(r.name(chars)?);
            }
            for _ in 0..count {
                key.entity_values.push(r.value()?);
            }
        }
        KeyVersion::V2 => {
            r.expect_string_type()?;
            let nul = bytes[r.pos..]
                .iter()
                .position(|&b| b == 0)
                .ok_or(r.malformed("no value after the join key name"))?;
            let end = (r.pos + nul)
                .checked_sub(1)
                .filter(|&end| end >= r.pos)
                .ok_or(r.malformed("no value after the join key name"))?;
            let name = std::str::from_utf8(&bytes[r.pos..end])
                .map_err(|_| r.malformed("join key name is not UTF-8"))?;
            key.join_keys.push(name.to_owned());
            r.pos = end;
            // With several keys the next "value" is really a name: say why it fails.
            let value = r
                .value()
                .map_err(|_| r.malformed("not a single-key v2 entity key"))?;
            key.entity_values.push(value);
        }
    }
    if r.pos != bytes.len() {
        return Err(r.malformed(match version {
            KeyVersion::V3 => "bytes left after the last value",
            KeyVersion::V2 => "not a single-key v2 entity key",
        }));
    }
    Ok(key)
}

fn check_unique<'n>(sorted: impl Iterator<Item = &'n str>) -> Result<(), FormatError> {
    let mut previous: Option<&str> = None;
    for name in sorted {
        if previous == Some(name) {
            return Err(FormatError::DuplicateJoinKey {
                join_key: name.to_owned(),
            });
        }
        previous = Some(name);
    }
    Ok(())
}

fn put_u32(x: u32, buf: &mut Vec<u8>) {
    buf.extend_from_slice(&x.to_le_bytes());
}

/// Lengths in this format are `u32`; larger names and values cannot be keys in any store.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn put_names<'n>(
    sorted: impl ExactSizeIterator<Item = &'n str>,
    version: KeyVersion,
    buf: &mut Vec<u8>,
) {
    if version == KeyVersion::V3 {
        put_u32(len_u32(sorted.len()), buf);
    }
    for name in sorted {
        put_u32(STRING_TYPE, buf);
        if version == KeyVersion::V3 {
            let chars = if name.is_ascii() {
                name.len()
            } else {
                name.chars().count()
            };
            put_u32(len_u32(chars), buf);
        }
        buf.extend_from_slice(name.as_bytes());
    }
}

fn key_scalar<'v>(join_key: &str, value: &'v Value) -> Result<Scalar<'v>, FormatError> {
    Ok(match &value.val {
        Some(Val::BytesVal(b)) => Scalar::Bytes(b),
        Some(Val::StringVal(s)) => Scalar::Str(s),
        Some(Val::Int32Val(x)) => Scalar::Int32(*x),
        Some(Val::Int64Val(x)) => Scalar::Int64(*x),
        Some(Val::UnixTimestampVal(x)) => Scalar::Seconds(*x),
        _ => {
            return Err(FormatError::UnsupportedKeyValue {
                join_key: join_key.to_owned(),
                found: value.kind_name(),
            });
        }
    })
}

/// Writes `type`, `length`, bytes. Only key scalars reach here (checked by the callers).
fn put_key_value(v: Scalar<'_>, buf: &mut Vec<u8>) {
    let (ty, bytes): (ScalarType, &[u8]) = match &v {
        Scalar::Str(s) => (ScalarType::String, s.as_bytes()),
        Scalar::Bytes(b) => (ScalarType::Bytes, b),
        Scalar::Int32(x) => return put_fixed(ScalarType::Int32, &x.to_le_bytes(), buf),
        Scalar::Int64(x) => return put_fixed(ScalarType::Int64, &x.to_le_bytes(), buf),
        Scalar::Seconds(x) => return put_fixed(ScalarType::UnixTimestamp, &x.to_le_bytes(), buf),
        // Unreachable: key types are checked before any bytes are written.
        Scalar::Float32(_) | Scalar::Float64(_) | Scalar::Bool(_) => return,
    };
    put_fixed(ty, bytes, buf);
}

fn put_fixed(ty: ScalarType, bytes: &[u8], buf: &mut Vec<u8>) {
    put_u32(ty.feast_enum() as u32, buf);
    put_u32(len_u32(bytes.len()), buf);
    buf.extend_from_slice(bytes);
}

struct Reader<'b> {
    bytes: &'b [u8],
    pos: usize,
}

impl<'b> Reader<'b> {
    fn malformed(&self, reason: &'static str) -> FormatError {
        FormatError::MalformedEntityKey {
            offset: self.pos,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], FormatError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(self.malformed("ends early"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn expect_string_type(&mut self) -> Result<(), FormatError> {
        if self.u32()? == STRING_TYPE {
            Ok(())
        } else {
            self.pos -= 4;
            Err(self.malformed("join key name is not marked as STRING"))
        }
    }

    /// A name of `chars` characters (Feast writes character counts, see the module docs).
    fn name(&mut self, chars: usize) -> Result<String, FormatError> {
        let rest = &self.bytes[self.pos..];
        let mut len = 0;
        for _ in 0..chars {
            len += match rest.get(len) {
                Some(0x00..=0x7f) => 1,
                Some(0xc0..=0xdf) => 2,
                Some(0xe0..=0xef) => 3,
                Some(0xf0..=0xf7) => 4,
                Some(_) => return Err(self.malformed("join key name is not UTF-8")),
                None => return Err(self.malformed("ends early")),
            };
        }
        let start = self.pos;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| FormatError::MalformedEntityKey {
                offset: start,
                reason: "join key name is not UTF-8",
            })
    }

    fn value(&mut self) -> Result<Value, FormatError> {
        let ty_pos = self.pos;
        let ty = self.u32()?;
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        let bad = |reason| FormatError::MalformedEntityKey {
            offset: ty_pos,
            reason,
        };
        let wrong_len = || bad("value length does not match its type");
        Ok(match ty {
            1 => Value::bytes(bytes),
            2 => Value::string(
                std::str::from_utf8(bytes).map_err(|_| bad("string value is not UTF-8"))?,
            ),
            3 => Value::int32(i32::from_le_bytes(
                bytes.try_into().map_err(|_| wrong_len())?,
            )),
            4 => Value::int64(i64::from_le_bytes(
                bytes.try_into().map_err(|_| wrong_len())?,
            )),
            8 => Value::unix_timestamp(i64::from_le_bytes(
                bytes.try_into().map_err(|_| wrong_len())?,
            )),
            _ => return Err(bad("value type cannot be part of an entity key")),
        })
    }
}

#[cfg(test)]
#[path = "entity_key_tests.rs"]
mod tests;
