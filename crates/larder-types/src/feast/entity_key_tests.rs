//! Tests of the entity key format against Feast's worked example and hand-built layouts.

use std::sync::Arc;

use arrow::array::{
    DictionaryArray, Float64Array, Int32Array, Int64Array, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::Int8Type;

use super::*;
use crate::feast::array_from_values;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn le(x: u32) -> String {
    hex(&x.to_le_bytes())
}

fn text(s: &str) -> String {
    hex(s.as_bytes())
}

#[test]
fn feast_worked_example_v3() {
    let key = EntityKey::new([("driver_id", Value::int64(1001))]);
    let bytes = serialize_entity_key(&key, KeyVersion::V3).unwrap();
    assert_eq!(
        hex(&bytes),
        "0100000002000000090000006472697665725f69640400000008000000e903000000000000"
    );
    assert_eq!(deserialize_entity_key(&bytes, KeyVersion::V3).unwrap(), key);
}

fn two_keys() -> EntityKey {
    // Deliberately unsorted: serialization sorts by name and values follow their names.
    EntityKey::new([
        ("driver_id", Value::int64(1001)),
        ("customer_id", Value::string("c1")),
    ])
}

#[test]
fn two_keys_are_sorted_v3() {
    let expected = [
        le(2),
        le(2),
        le(11),
        text("customer_id"),
        le(2),
        le(9),
        text("driver_id"),
        le(2),
        le(2),
        text("c1"),
        le(4),
        le(8),
        "e903000000000000".to_owned(),
    ]
    .concat();
    let bytes = serialize_entity_key(&two_keys(), KeyVersion::V3).unwrap();
    assert_eq!(hex(&bytes), expected);
    let back = deserialize_entity_key(&bytes, KeyVersion::V3).unwrap();
    assert_eq!(back.join_keys, ["customer_id", "driver_id"]);
    assert_eq!(
        back.entity_values,
        [Value::string("c1"), Value::int64(1001)]
    );
    assert_eq!(
        hex(&entity_key_prefix(
            &["driver_id", "customer_id"],
            KeyVersion::V3
        )),
        expected[..(4 + 4 + 4 + 11 + 4 + 4 + 9) * 2]
    );
}

#[test]
fn two_keys_v2_layout() {
    let expected = [
        le(2),
        text("customer_id"),
        le(2),
        text("driver_id"),
        le(2),
        le(2),
        text("c1"),
        le(4),
        le(8),
        "e903000000000000".to_owned(),
    ]
    .concat();
    let bytes = serialize_entity_key(&two_keys(), KeyVersion::V2).unwrap();
    assert_eq!(hex(&bytes), expected);
    // v2 keys are not self-delimiting: only single keys are read back.
    let err = deserialize_entity_key(&bytes, KeyVersion::V2).unwrap_err();
    assert!(
        err.to_string().contains("not a single-key v2 entity key"),
        "{err}"
    );
}

#[test]
fn every_key_type_round_trips() {
    let values = [
        (Value::string("é€"), 2, "c3a9e282ac"),
        (Value::string(""), 2, ""),
        (Value::bytes(vec![0, 1, 0xff]), 1, "0001ff"),
        (Value::int32(-2), 3, "feffffff"),
        (Value::int64(-2), 4, "feffffffffffffff"),
        (Value::unix_timestamp(1_640_995_200), 8, "8099cf6100000000"),
    ];
    for (value, ty, value_hex) in values {
        let key = EntityKey::new([("k", value.clone())]);
        for version in [KeyVersion::V2, KeyVersion::V3] {
            let bytes = serialize_entity_key(&key, version).unwrap();
            let names = match version {
                KeyVersion::V2 => [le(2), text("k")].concat(),
                KeyVersion::V3 => [le(1), le(2), le(1), text("k")].concat(),
            };
            let len = u32::try_from(value_hex.len() / 2).unwrap();
            let expected = [names, le(ty), le(len), value_hex.to_owned()].concat();
            assert_eq!(hex(&bytes), expected, "{value:?} {version:?}");
            assert_eq!(
                deserialize_entity_key(&bytes, version).unwrap(),
                key,
                "{value:?} {version:?}"
            );

            let mut buf = vec![0xaa];
            serialize_single_key_into("k", &value, version, &mut buf).unwrap();
            assert_eq!(&buf[1..], &bytes[..]);
        }
    }
}

#[test]
fn non_ascii_names_use_character_counts() {
    let key = EntityKey::new([("clé", Value::int32(1))]);
    let bytes = serialize_entity_key(&key, KeyVersion::V3).unwrap();
    assert_eq!(hex(&bytes[8..16]), [le(3), text("clé")].concat());
    assert_eq!(deserialize_entity_key(&bytes, KeyVersion::V3).unwrap(), key);
}

#[test]
fn serialization_errors() {
    let cases: Vec<(EntityKey, &str)> = vec![
        (
            EntityKey::new([("rate", Value::double(0.5))]),
            "join key `rate` has a `double_val` value; entity keys hold only String, Bytes, \
             Int32, Int64 or UnixTimestamp values",
        ),
        (
            EntityKey::new([("a", Value::int64(1)), ("f", Value::float(0.5))]),
            "join key `f` has a `float_val` value; entity keys hold only String, Bytes, Int32, \
             Int64 or UnixTimestamp values",
        ),
        (
            EntityKey::new([("a", Value::NULL)]),
            "join key `a` has a `null` value; entity keys hold only String, Bytes, Int32, \
             Int64 or UnixTimestamp values",
        ),
        (
            EntityKey::new([("a", Value::int64(1)), ("a", Value::int64(2))]),
            "join key `a` appears more than once in an entity key",
        ),
        (
            EntityKey {
                join_keys: vec!["a".into()],
                entity_values: vec![],
            },
            "entity key has 1 join keys but 0 values",
        ),
    ];
    for (key, message) in cases {
        let mut buf = vec![7];
        let err = serialize_entity_key_into(&key, KeyVersion::V3, &mut buf).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(buf, [7], "buffer restored after {message}");
    }
    assert_eq!(
        KeyVersion::try_from(1).unwrap_err().to_string(),
        "entity key serialization version 1 is not supported (expected 2 or 3)"
    );
    assert_eq!(KeyVersion::try_from(2).unwrap().number(), 2);
}

#[test]
fn malformed_keys_are_errors() {
    let good = serialize_entity_key(&two_keys(), KeyVersion::V3).unwrap();
    for cut in [0, 3, 10, good.len() - 1] {
        let err = deserialize_entity_key(&good[..cut], KeyVersion::V3).unwrap_err();
        assert!(err.to_string().contains("ends early"), "{cut}: {err}");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(deserialize_entity_key(&trailing, KeyVersion::V3).is_err());

    let float_value = unhex(
        &[
            le(1),
            le(2),
            le(1),
            text("k"),
            le(6),
            le(4),
            "0000003f".into(),
        ]
        .concat(),
    );
    let err = deserialize_entity_key(&float_value, KeyVersion::V3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed entity key at byte 13: value type cannot be part of an entity key"
    );
    let huge_count = [0xff, 0xff, 0xff, 0xff];
    assert!(deserialize_entity_key(&huge_count, KeyVersion::V3).is_err());
    assert!(deserialize_entity_key(&[2, 0, 0, 0, b'k'], KeyVersion::V2).is_err());
}

#[test]
fn entity_key_proto_round_trips() {
    let key = two_keys();
    let bytes = key.encode_to_vec();
    // join_keys (1) come first as strings, then each value (2) as a message.
    assert_eq!(&bytes[..2], [0x0a, 9]);
    assert_eq!(EntityKey::decode(&bytes[..]).unwrap(), key);
}

#[test]
fn key_columns_match_row_by_row_serialization() {
    let driver: ArrayRef = Arc::new(Int32Array::from(vec![1001, -1, 7]));
    let customer: ArrayRef = Arc::new(
        vec!["b", "a", "b"]
            .into_iter()
            .collect::<DictionaryArray<Int8Type>>(),
    );
    let seen: ArrayRef =
        Arc::new(TimestampNanosecondArray::from(vec![1_500_000_000, -1, 0]).with_timezone("UTC"));
    let names = ["driver_id", "customer_id", "seen"];
    let types = [
        ScalarType::Int64,
        ScalarType::String,
        ScalarType::UnixTimestamp,
    ];
    let columns = [driver, customer, seen];
    for version in [KeyVersion::V2, KeyVersion::V3] {
        let keys = serialize_key_columns(&names, &columns, &types, version).unwrap();
        let expected_values = [(1001, "b", 1), (-1, "a", -1), (7, "b", 0)];
        assert_eq!(keys.len(), 3);
        for (bytes, (driver, customer, seen)) in keys.iter().zip(expected_values) {
            let key = EntityKey::new([
                ("seen", Value::unix_timestamp(seen)),
                ("driver_id", Value::int64(driver)),
                ("customer_id", Value::string(customer)),
            ]);
            assert_eq!(bytes, &serialize_entity_key(&key, version).unwrap());
        }
    }
}

#[test]
fn key_column_errors() {
    let ids: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
    let mut out = ByteRows::new();
    let err = serialize_key_columns_into(
        &["id"],
        &[ids],
        &[ScalarType::Int64],
        KeyVersion::V3,
        &mut out,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "join key `id` is null at row 1");
    assert!(out.is_empty(), "partial rows removed");

    let rates: ArrayRef = Arc::new(Float64Array::from(vec![0.5]));
    let err = serialize_key_columns(&["rate"], &[rates], &[ScalarType::Float64], KeyVersion::V3)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("join key `rate` has a `Float64` value"),
        "{err}"
    );

    let short: ArrayRef = Arc::new(Int64Array::from(vec![1]));
    let long: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
    let err = serialize_key_columns(
        &["a", "b"],
        &[short.clone(), long],
        &[ScalarType::Int64, ScalarType::String],
        KeyVersion::V3,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "join key column `b` has 2 rows, expected 1"
    );

    let err =
        serialize_key_columns(&["a"], &[short], &[ScalarType::String], KeyVersion::V3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "an Arrow column of type Int64 cannot be read as `String`"
    );
}

#[test]
fn key_values_match_key_columns() {
    let names = ["seen", "driver_id", "customer_id", "small", "blob"];
    let types = [
        ScalarType::UnixTimestamp,
        ScalarType::Int64,
        ScalarType::String,
        ScalarType::Int32,
        ScalarType::Bytes,
    ];
    let columns: Vec<Vec<Value>> = vec![
        vec![Value::unix_timestamp(1), Value::unix_timestamp(-1)],
        vec![Value::int64(1001), Value::int64(i64::MIN)],
        vec![Value::string("b"), Value::string("é")],
        vec![Value::int32(7), Value::int32(-7)],
        vec![Value::bytes(vec![0u8, 255]), Value::bytes(Vec::new())],
    ];
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .zip(types)
        .map(|(values, ty)| {
            array_from_values(values.iter().map(Some), ValueType::Scalar(ty)).unwrap()
        })
        .collect();
    let slices: Vec<&[Value]> = columns.iter().map(Vec::as_slice).collect();
    for version in [KeyVersion::V2, KeyVersion::V3] {
        let mut expected = ByteRows::new();
        serialize_key_columns_into(&names, &arrays, &types, version, &mut expected).unwrap();
        let mut got = ByteRows::new();
        serialize_key_values_into(&names, &slices, version, &mut got).unwrap();
        assert_eq!(got.to_vecs(), expected.to_vecs(), "{version:?}");
        assert_eq!(got.len(), 2);
    }
}

/// Join key names, their columns of values, and the error they give.
type KeyValueCase = (Vec<&'static str>, Vec<Vec<Value>>, &'static str);

#[test]
fn key_value_errors_leave_the_output_as_it_was() {
    let mut out = ByteRows::new();
    out.push_with(|buf| buf.extend_from_slice(b"kept"));
    let cases: Vec<KeyValueCase> = vec![
        (
            vec!["id"],
            vec![vec![Value::int64(1), Value::NULL]],
            "join key `id` is null at row 1",
        ),
        (
            vec!["id", "rate"],
            vec![vec![Value::int64(1)], vec![Value::double(0.5)]],
            "join key `rate` has a `double_val` value; entity keys hold only String, Bytes, \
             Int32, Int64 or UnixTimestamp values",
        ),
        (
            vec!["a", "b"],
            vec![
                vec![Value::int64(1)],
                vec![Value::int64(1), Value::int64(2)],
            ],
            "join key column `b` has 2 rows, expected 1",
        ),
        (
            vec!["a", "a"],
            vec![vec![Value::int64(1)], vec![Value::int64(2)]],
            "join key `a` appears more than once in an entity key",
        ),
    ];
    for (names, columns, message) in cases {
        let slices: Vec<&[Value]> = columns.iter().map(Vec::as_slice).collect();
        let err = serialize_key_values_into(&names, &slices, KeyVersion::V3, &mut out).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(out.to_vecs(), vec![b"kept".to_vec()], "{message}");
    }
    let err = serialize_key_values_into(&["a"], &[], KeyVersion::V3, &mut out).unwrap_err();
    assert!(
        matches!(err, FormatError::KeyValueCountMismatch { .. }),
        "{err}"
    );
}
