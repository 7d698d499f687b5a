//! `feast.types.Value` as a prost message, wire-compatible with Feast's `Value` (feast-behaviour.md §2.3).
//!
//! Field numbers of the `val` oneof equal Feast's `ValueType.Enum` numbers. Larder defines
//! fields 1–29 (scalars, lists, null, maps, sets). Later Feast fields (json, uuid, decimal,
//! nested lists, scalar maps, zoned timestamps) are not defined: their numbering differs
//! between Feast releases, and prost skips unknown fields, so such a value decodes as null.

use std::collections::BTreeMap;

use prost::Message;

use super::FormatError;
use crate::{ScalarType, ValueType};

/// One feature or entity value; no `val` set means null.
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(
        oneof = "Val",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, \
                25, 26, 27, 28, 29"
    )]
    pub val: Option<Val>,
}

/// The `val` oneof of [`Value`]. Sets use the list messages: Feast's `*Set` messages have the
/// same shape (`repeated val = 1`), so the bytes are identical.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Val {
    #[prost(bytes = "vec", tag = "1")]
    BytesVal(Vec<u8>),
    #[prost(string, tag = "2")]
    StringVal(String),
    #[prost(int32, tag = "3")]
    Int32Val(i32),
    #[prost(int64, tag = "4")]
    Int64Val(i64),
    #[prost(double, tag = "5")]
    DoubleVal(f64),
    #[prost(float, tag = "6")]
    FloatVal(f32),
    #[prost(bool, tag = "7")]
    BoolVal(bool),
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "8")]
    UnixTimestampVal(i64),
    #[prost(message, tag = "11")]
    BytesListVal(BytesList),
    #[prost(message, tag = "12")]
    StringListVal(StringList),
    #[prost(message, tag = "13")]
    Int32ListVal(Int32List),
    #[prost(message, tag = "14")]
    Int64ListVal(Int64List),
    #[prost(message, tag = "15")]
    DoubleListVal(DoubleList),
    #[prost(message, tag = "16")]
    FloatListVal(FloatList),
    #[prost(message, tag = "17")]
    BoolListVal(BoolList),
    #[prost(message, tag = "18")]
    UnixTimestampListVal(Int64List),
    #[prost(enumeration = "Null", tag = "19")]
    NullVal(i32),
    #[prost(message, tag = "20")]
    MapVal(Map),
    #[prost(message, tag = "21")]
    MapListVal(MapList),
    #[prost(message, tag = "22")]
    BytesSetVal(BytesList),
    #[prost(message, tag = "23")]
    StringSetVal(StringList),
    #[prost(message, tag = "24")]
    Int32SetVal(Int32List),
    #[prost(message, tag = "25")]
    Int64SetVal(Int64List),
    #[prost(message, tag = "26")]
    DoubleSetVal(DoubleList),
    #[prost(message, tag = "27")]
    FloatSetVal(FloatList),
    #[prost(message, tag = "28")]
    BoolSetVal(BoolList),
    #[prost(message, tag = "29")]
    UnixTimestampSetVal(Int64List),
}

/// Feast's `Null` enum: the only value of `null_val`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Null {
    Null = 0,
}

#[derive(Clone, PartialEq, Message)]
pub struct BytesList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub val: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringList {
    #[prost(string, repeated, tag = "1")]
    pub val: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Int32List {
    #[prost(int32, repeated, tag = "1")]
    pub val: Vec<i32>,
}

/// Also used for `unix_timestamp_list_val` (seconds).
#[derive(Clone, PartialEq, Message)]
pub struct Int64List {
    #[prost(int64, repeated, tag = "1")]
    pub val: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DoubleList {
    #[prost(double, repeated, tag = "1")]
    pub val: Vec<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct FloatList {
    #[prost(float, repeated, tag = "1")]
    pub val: Vec<f32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BoolList {
    #[prost(bool, repeated, tag = "1")]
    pub val: Vec<bool>,
}

/// Feast's `Map { map<string, Value> val = 1 }`; a `BTreeMap` keeps encoding deterministic.
#[derive(Clone, PartialEq, Message)]
pub struct Map {
    #[prost(btree_map = "string, message", tag = "1")]
    pub val: BTreeMap<String, Value>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MapList {
    #[prost(message, repeated, tag = "1")]
    pub val: Vec<Map>,
}

impl Value {
    /// The null value: no `val` set, zero bytes on the wire.
    pub const NULL: Value = Value { val: None };

    pub fn bytes(v: impl Into<Vec<u8>>) -> Self {
        Val::BytesVal(v.into()).into()
    }
    pub fn string(v: impl Into<String>) -> Self {
        Val::StringVal(v.into()).into()
    }
    pub fn int32(v: i32) -> Self {
        Val::Int32Val(v).into()
    }
    pub fn int64(v: i64) -> Self {
        Val::Int64Val(v).into()
    }
    pub fn double(v: f64) -> Self {
        Val::DoubleVal(v).into()
    }
    pub fn float(v: f32) -> Self {
        Val::FloatVal(v).into()
    }
    pub fn bool(v: bool) -> Self {
        Val::BoolVal(v).into()
    }
    /// A timestamp as whole seconds since the Unix epoch (Feast stores no sub-second part).
    pub fn unix_timestamp(seconds: i64) -> Self {
        Val::UnixTimestampVal(seconds).into()
    }
    pub fn bytes_list(v: Vec<Vec<u8>>) -> Self {
        Val::BytesListVal(BytesList { val: v }).into()
    }
    pub fn string_list(v: Vec<String>) -> Self {
        Val::StringListVal(StringList { val: v }).into()
    }
    pub fn int32_list(v: Vec<i32>) -> Self {
        Val::Int32ListVal(Int32List { val: v }).into()
    }
    pub fn int64_list(v: Vec<i64>) -> Self {
        Val::Int64ListVal(Int64List { val: v }).into()
    }
    pub fn double_list(v: Vec<f64>) -> Self {
        Val::DoubleListVal(DoubleList { val: v }).into()
    }
    pub fn float_list(v: Vec<f32>) -> Self {
        Val::FloatListVal(FloatList { val: v }).into()
    }
    pub fn bool_list(v: Vec<bool>) -> Self {
        Val::BoolListVal(BoolList { val: v }).into()
    }
    pub fn unix_timestamp_list(seconds: Vec<i64>) -> Self {
        Val::UnixTimestampListVal(Int64List { val: seconds }).into()
    }

    /// Whether this is null: no `val` set, or Feast's explicit `null_val`.
    pub fn is_null(&self) -> bool {
        matches!(self.val, None | Some(Val::NullVal(_)))
    }

    /// The Larder type of this value, `None` for null and for Feast-only kinds (maps, sets).
    pub fn value_type(&self) -> Option<ValueType> {
        use ScalarType as S;
        use ValueType::{Array, Scalar};
        Some(match self.val.as_ref()? {
            Val::BytesVal(_) => Scalar(S::Bytes),
            Val::StringVal(_) => Scalar(S::String),
            Val::Int32Val(_) => Scalar(S::Int32),
            Val::Int64Val(_) => Scalar(S::Int64),
            Val::DoubleVal(_) => Scalar(S::Float64),
            Val::FloatVal(_) => Scalar(S::Float32),
            Val::BoolVal(_) => Scalar(S::Bool),
            Val::UnixTimestampVal(_) => Scalar(S::UnixTimestamp),
            Val::BytesListVal(_) => Array(S::Bytes),
            Val::StringListVal(_) => Array(S::String),
            Val::Int32ListVal(_) => Array(S::Int32),
            Val::Int64ListVal(_) => Array(S::Int64),
            Val::DoubleListVal(_) => Array(S::Float64),
            Val::FloatListVal(_) => Array(S::Float32),
            Val::BoolListVal(_) => Array(S::Bool),
            Val::UnixTimestampListVal(_) => Array(S::UnixTimestamp),
            _ => return None,
        })
    }

    /// The name of the set oneof field (`int64_val`, ...), or `null`, for error messages.
    pub fn kind_name(&self) -> &'static str {
        self.val.as_ref().map_or("null", Val::kind_name)
    }

    /// The serialized protobuf, as stored in online stores.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Appends the serialized protobuf to `buf`, growing it at most once.
    pub fn encode_to(&self, buf: &mut Vec<u8>) {
        buf.reserve(self.encoded_len());
        self.encode_raw(buf);
    }

    /// Parses a serialized `feast.types.Value`; empty input is null.
    pub fn from_bytes(bytes: &[u8]) -> Result<Value, FormatError> {
        if let Some(value) = scalar_fast_path(bytes) {
            return Ok(value);
        }
        Value::decode(bytes).map_err(|source| FormatError::Decode {
            what: "feast.types.Value",
            source,
        })
    }
}

/// The value of `bytes` when they are exactly one scalar field, the shape of nearly every
/// stored feature value, read without prost's generic field loop (an online read decodes
/// one per feature and entity). `None` for anything else, which `prost` then decodes (or
/// rejects) with the same result as always.
fn scalar_fast_path(bytes: &[u8]) -> Option<Value> {
    let (&key, rest) = bytes.split_first()?;
    let val = match key {
        // double_val (5, fixed64), float_val (6, fixed32)
        0x29 => Val::DoubleVal(f64::from_le_bytes(rest.try_into().ok()?)),
        0x35 => Val::FloatVal(f32::from_le_bytes(rest.try_into().ok()?)),
        // int32_val (3), int64_val (4), bool_val (7), unix_timestamp_val (8): varints
        0x18 | 0x20 | 0x38 | 0x40 => {
            let (value, used) = varint(rest)?;
            if used != rest.len() {
                return None;
            }
            let signed = i64::from_ne_bytes(value.to_ne_bytes());
            match key {
                // prost keeps the low 32 bits, as protobuf does.
                0x18 => Val::Int32Val(i32::from_ne_bytes(
                    signed.to_ne_bytes()[..4].try_into().ok()?,
                )),
                0x20 => Val::Int64Val(signed),
                0x38 => Val::BoolVal(value != 0),
                _ => Val::UnixTimestampVal(signed),
            }
        }
        // string_val (2, length-delimited)
        0x12 => {
            let (len, used) = varint(rest)?;
            let text = rest.get(used..)?;
            if u64::try_from(text.len()).ok()? != len {
                return None;
            }
            Val::StringVal(String::from_utf8(text.to_vec()).ok()?)
        }
        _ => return None,
    };
    Some(Value { val: Some(val) })
}

/// A protobuf varint at the start of `bytes` and its length; `None` when it is cut off or
/// longer than 64 bits can hold.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

impl Val {
    /// The name of this oneof field (`int64_val`, ...); `null` for `null_val`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Val::NullVal(_) => "null",
            Val::BytesVal(_) => "bytes_val",
            Val::StringVal(_) => "string_val",
            Val::Int32Val(_) => "int32_val",
            Val::Int64Val(_) => "int64_val",
            Val::DoubleVal(_) => "double_val",
            Val::FloatVal(_) => "float_val",
            Val::BoolVal(_) => "bool_val",
            Val::UnixTimestampVal(_) => "unix_timestamp_val",
            Val::BytesListVal(_) => "bytes_list_val",
            Val::StringListVal(_) => "string_list_val",
            Val::Int32ListVal(_) => "int32_list_val",
            Val::Int64ListVal(_) => "int64_list_val",
            Val::DoubleListVal(_) => "double_list_val",
            Val::FloatListVal(_) => "float_list_val",
            Val::BoolListVal(_) => "bool_list_val",
            Val::UnixTimestampListVal(_) => "unix_timestamp_list_val",
            Val::MapVal(_) => "map_val",
            Val::MapListVal(_) => "map_list_val",
            Val::BytesSetVal(_) => "bytes_set_val",
            Val::StringSetVal(_) => "string_set_val",
            Val::Int32SetVal(_) => "int32_set_val",
            Val::Int64SetVal(_) => "int64_set_val",
            Val::DoubleSetVal(_) => "double_set_val",
            Val::FloatSetVal(_) => "float_set_val",
            Val::BoolSetVal(_) => "bool_set_val",
            Val::UnixTimestampSetVal(_) => "unix_timestamp_set_val",
        }
    }
}

impl From<Val> for Value {
    fn from(val: Val) -> Self {
        Value { val: Some(val) }
    }
}

macro_rules! value_from {
    ($($ty:ty => $ctor:ident),* $(,)?) => {
        $(impl From<$ty> for Value {
            fn from(v: $ty) -> Self {
                Value::$ctor(v)
            }
        })*
    };
}

value_from!(i32 => int32, i64 => int64, f32 => float, f64 => double, bool => bool, String => string, &str => string);

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever the scalar fast path accepts, prost decodes to the same value; bytes it
        /// declines still decode (or fail) through prost.
        #[test]
        fn the_scalar_fast_path_agrees_with_prost(
            key in proptest::sample::select(vec![0x12u8, 0x18, 0x20, 0x29, 0x35, 0x38, 0x40, 0x08]),
            rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
        ) {
            let mut bytes = vec![key];
            bytes.extend_from_slice(&rest);
            if let Some(fast) = scalar_fast_path(&bytes) {
                // Compared re-encoded: a NaN is not equal to itself as a value.
                let slow = Value::decode(bytes.as_slice()).ok().map(|v| v.to_bytes());
                proptest::prop_assert_eq!(Some(fast.to_bytes()), slow);
            }
        }

        #[test]
        fn scalars_round_trip_through_the_fast_path(
            i in proptest::prelude::any::<i64>(),
            j in proptest::prelude::any::<i32>(),
            d in proptest::prelude::any::<f64>(),
            f in proptest::prelude::any::<f32>(),
            b in proptest::prelude::any::<bool>(),
            text in ".{0,20}",
        ) {
            let values = [
                Value::int64(i),
                Value::int32(j),
                Value::double(d),
                Value::float(f),
                Value::bool(b),
                Value::unix_timestamp(i),
                Value::string(text),
            ];
            for value in values {
                let bytes = value.to_bytes();
                let fast = scalar_fast_path(&bytes);
                proptest::prop_assert!(fast.is_some(), "{}", hex(&bytes));
                // Compare bytes: NaN != NaN as a value.
                proptest::prop_assert_eq!(fast.map(|v| v.to_bytes()), Some(bytes));
            }
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Protobuf bytes computed by hand from the wire format (tag << 3 | wire type, varints).
    #[test]
    fn encodes_like_protobuf() {
        let cases: Vec<(Value, &str)> = vec![
            (Value::NULL, ""),
            (Value::int64(1001), "20e907"),
            (Value::int64(0), "2000"),
            (Value::int32(-1), "18ffffffffffffffffff01"),
            (Value::float(0.5), "350000003f"),
            (Value::double(1.0), "29000000000000f03f"),
            (Value::string("ab"), "12026162"),
            (Value::string(""), "1200"),
            (Value::bytes(vec![0xff]), "0a01ff"),
            (Value::bool(true), "3801"),
            (Value::unix_timestamp(1_640_995_200), "4080b3be8e06"),
            (Val::NullVal(Null::Null as i32).into(), "980100"),
            (Value::int64_list(vec![1, 2, 300]), "72060a040102ac02"),
            (Value::int64_list(vec![]), "7200"),
            (Value::float_list(vec![0.5]), "8201060a040000003f"),
            (
                Value::string_list(vec!["a".into(), "".into()]),
                "62050a01610a00",
            ),
            (Value::bool_list(vec![true, false]), "8a01040a020100"),
            (Value::unix_timestamp_list(vec![1]), "9201030a0101"),
        ];
        for (value, expected) in cases {
            assert_eq!(hex(&value.to_bytes()), expected, "{value:?}");
            let mut appended = vec![0xaa];
            value.encode_to(&mut appended);
            assert_eq!(hex(&appended[1..]), expected, "{value:?}");
            assert_eq!(Value::from_bytes(&value.to_bytes()).unwrap(), value);
        }
    }

    #[test]
    fn null_forms() {
        assert!(Value::NULL.is_null());
        assert!(Value::from_bytes(&[]).unwrap().is_null());
        let explicit = Value::from_bytes(&[0x98, 0x01, 0x00]).unwrap();
        assert!(explicit.is_null());
        assert_eq!(explicit.kind_name(), "null");
        assert!(!Value::int64(0).is_null());
    }

    #[test]
    fn unknown_fields_decode_as_null_and_garbage_is_an_error() {
        // json_val (32) "x": not defined by Larder, skipped by prost.
        let json_val = [0x82, 0x02, 0x01, b'x'];
        assert!(Value::from_bytes(&json_val).unwrap().is_null());
        let err = Value::from_bytes(&[0x22, 0x05, 0x01]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("stored feast.types.Value bytes are not valid")
        );
    }

    #[test]
    fn sets_and_maps_round_trip() {
        let mut map = Map::default();
        map.val.insert("k".into(), Value::int32(7));
        for value in [
            Value::from(Val::MapVal(map.clone())),
            Value::from(Val::MapListVal(MapList { val: vec![map] })),
            Value::from(Val::StringSetVal(StringList {
                val: vec!["s".into()],
            })),
            Value::from(Val::Int64SetVal(Int64List { val: vec![-3] })),
        ] {
            assert_eq!(Value::from_bytes(&value.to_bytes()).unwrap(), value);
            assert_eq!(value.value_type(), None);
        }
    }

    #[test]
    fn value_types() {
        use ScalarType as S;
        assert_eq!(
            Value::from(1.5f32).value_type(),
            Some(ValueType::Scalar(S::Float32))
        );
        assert_eq!(
            Value::from(1.5f64).value_type(),
            Some(ValueType::Scalar(S::Float64))
        );
        assert_eq!(
            Value::unix_timestamp_list(vec![]).value_type(),
            Some(ValueType::Array(S::UnixTimestamp))
        );
        assert_eq!(Value::NULL.value_type(), None);
    }
}
