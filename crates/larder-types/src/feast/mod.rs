//! Feast's online byte formats: `feast.types.Value`, entity keys, Redis hashes and HTTP JSON.
//!
//! Every online store (SQLite, Redis, Postgres) and the feature server share this module so
//! that Larder reads and writes exactly the bytes Feast does (feast-behaviour.md §2.3, §7,
//! §8.1, §10.1, §10.2). The protobuf messages are Larder's own definitions written from
//! Feast's field names and numbers, encoded with `prost`.
//!
//! Null conventions, decided once here:
//! * a missing or null value is a `Value` with no `val` set, which encodes to zero bytes;
//!   that is what Feast's Python SDK writes for `None`/`NaN` (`ProtoValue()`).
//! * NaN in a scalar float column is written as null too (Feast's `pd.isnull` check does the
//!   same); NaN inside a list is kept.
//! * `null_val` (19) is decoded and treated as null everywhere, but never written by Larder.

mod arrow;
mod coerce;
mod column;
mod encode;
mod entity_key;
mod json;
mod murmur3;
mod timestamp;
mod value;

use ::arrow::datatypes::DataType;
use ::arrow::error::ArrowError;

use crate::ValueType;

pub use self::arrow::{array_from_values, values_from_array};
pub use coerce::{CoerceError, coerce_entity_value};
pub use encode::{ByteRows, encode_column};
pub use entity_key::{
    DUMMY_JOIN_KEY, EntityKey, KeyVersion, deserialize_entity_key, entity_key_prefix,
    serialize_entity_key, serialize_entity_key_into, serialize_key_columns,
    serialize_key_columns_into, serialize_key_values_into, serialize_single_key_into,
};
pub use json::{value_to_json, write_value_json};
pub use murmur3::{murmur3_32, redis_field_hash};
pub use timestamp::ProtoTimestamp;
pub use value::{
    BoolList, BytesList, DoubleList, FloatList, Int32List, Int64List, Map, MapList, Null,
    StringList, Val, Value,
};

/// Why Feast-format data could not be produced or read.
///
/// Variants are ordered by who must act: the caller's data, then stored bytes that are not
/// what Feast writes, then Larder bugs.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("an Arrow column of type {actual} cannot be read as `{expected}`")]
    UnsupportedArrowType {
        expected: ValueType,
        actual: DataType,
    },
    #[error(
        "row {row} of a column of type `{expected}` has a null list element; Feast lists cannot hold nulls"
    )]
    NullListElement { expected: ValueType, row: usize },
    #[error("row {row} holds a `{found}` value, which does not fit a column of type `{expected}`")]
    ValueTypeMismatch {
        expected: ValueType,
        found: &'static str,
        row: usize,
    },
    #[error("timestamp of {seconds} s and {nanos} ns is out of range")]
    TimestampOutOfRange { seconds: i64, nanos: i64 },
    #[error("entity key serialization version {version} is not supported (expected 2 or 3)")]
    UnsupportedKeyVersion { version: u32 },
    #[error(
        "join key `{join_key}` has a `{found}` value; entity keys hold only String, Bytes, \
         Int32, Int64 or UnixTimestamp values"
    )]
    UnsupportedKeyValue {
        join_key: String,
        found: &'static str,
    },
    #[error("join key `{join_key}` is null at row {row}")]
    NullKeyValue { join_key: String, row: usize },
    #[error("entity key has {join_keys} join keys but {values} values")]
    KeyValueCountMismatch { join_keys: usize, values: usize },
    #[error("join key `{join_key}` appears more than once in an entity key")]
    DuplicateJoinKey { join_key: String },
    #[error("join key column `{join_key}` has {rows} rows, expected {expected}")]
    KeyColumnLength {
        join_key: String,
        rows: usize,
        expected: usize,
    },
    #[error("stored {what} bytes are not valid: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("malformed entity key at byte {offset}: {reason}")]
    MalformedEntityKey { offset: usize, reason: &'static str },
    #[error("internal error converting Arrow data: {0}")]
    Arrow(#[from] ArrowError),
}
