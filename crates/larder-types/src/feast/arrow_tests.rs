//! Round trips Arrow → Value → bytes → Value → Arrow for every accepted Arrow type, and the byte encoder against prost.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryViewArray, BooleanArray, Date32Array, Date64Array,
    DictionaryArray, FixedSizeBinaryArray, FixedSizeListArray, Float32Array, Float64Array,
    Int8Array, Int32Array, Int64Array, LargeBinaryArray, LargeListArray, LargeStringArray,
    ListArray, ListViewArray, StringArray, StringViewArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray, UInt16Array,
    UInt32Array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type};
use proptest::prelude::*;

use super::*;
use crate::feast::{ByteRows, encode_column};

use ScalarType as S;
use ValueType::{Array as A, Scalar as Sc};

fn arc(array: impl Array + 'static) -> ArrayRef {
    Arc::new(array)
}

/// A list column over `items` with the given offsets and optional row validity.
fn list(items: ArrayRef, offsets: &[i32], valid: Option<Vec<bool>>) -> ArrayRef {
    let field = Arc::new(Field::new_list_field(items.data_type().clone(), true));
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets.to_vec()));
    arc(ListArray::new(
        field,
        offsets,
        items,
        valid.map(NullBuffer::from),
    ))
}

fn micros(values: Vec<Option<i64>>) -> ArrayRef {
    arc(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

struct Case {
    name: &'static str,
    input: ArrayRef,
    dtype: ValueType,
    values: Vec<Value>,
    /// What comes back from `array_from_values` (`dtype.arrow_type()`).
    output: ArrayRef,
}

fn case(
    name: &'static str,
    input: ArrayRef,
    dtype: ValueType,
    values: Vec<Value>,
    output: ArrayRef,
) -> Case {
    Case {
        name,
        input,
        dtype,
        values,
        output,
    }
}

fn cases() -> Vec<Case> {
    let null = || Value::NULL;
    let strings = || arc(StringArray::from(vec![Some("a"), None, Some("")]));
    let string_values = || vec![Value::string("a"), null(), Value::string("")];
    let bytes = || {
        arc(BinaryArray::from(vec![
            Some(&b"\x00\xff"[..]),
            None,
            Some(b"ab"),
        ]))
    };
    let bytes_values = || {
        vec![
            Value::bytes(vec![0, 0xff]),
            null(),
            Value::bytes(b"ab".to_vec()),
        ]
    };
    let i64s = || vec![Value::int64(1), null(), Value::int64(-5)];
    let str_items = arc(StringArray::from(vec!["x", "y", "z"]));
    let str_lists = list(str_items, &[0, 2, 2, 3], Some(vec![true, false, true]));
    let str_list_values = vec![
        Value::string_list(vec!["x".into(), "y".into()]),
        null(),
        Value::string_list(vec!["z".into()]),
    ];
    vec![
        case(
            "int32",
            arc(Int32Array::from(vec![Some(1), None, Some(-5)])),
            Sc(S::Int32),
            vec![Value::int32(1), null(), Value::int32(-5)],
            arc(Int32Array::from(vec![Some(1), None, Some(-5)])),
        ),
        case(
            "int8 as int32",
            arc(Int8Array::from(vec![Some(1), None, Some(-5)])),
            Sc(S::Int32),
            vec![Value::int32(1), null(), Value::int32(-5)],
            arc(Int32Array::from(vec![Some(1), None, Some(-5)])),
        ),
        case(
            "uint16 as int32",
            arc(UInt16Array::from(vec![65535])),
            Sc(S::Int32),
            vec![Value::int32(65535)],
            arc(Int32Array::from(vec![65535])),
        ),
        case(
            "int64",
            arc(Int64Array::from(vec![Some(1), None, Some(-5)])),
            Sc(S::Int64),
            i64s(),
            arc(Int64Array::from(vec![Some(1), None, Some(-5)])),
        ),
        case(
            "int64 extremes",
            arc(Int64Array::from(vec![i64::MIN, i64::MAX])),
            Sc(S::Int64),
            vec![Value::int64(i64::MIN), Value::int64(i64::MAX)],
            arc(Int64Array::from(vec![i64::MIN, i64::MAX])),
        ),
        case(
            "int32 as int64",
            arc(Int32Array::from(vec![Some(1), None, Some(-5)])),
            Sc(S::Int64),
            i64s(),
            arc(Int64Array::from(vec![Some(1), None, Some(-5)])),
        ),
        case(
            "uint32 as int64",
            arc(UInt32Array::from(vec![u32::MAX])),
            Sc(S::Int64),
            vec![Value::int64(4_294_967_295)],
            arc(Int64Array::from(vec![4_294_967_295])),
        ),
        case(
            "float32 with NaN",
            arc(Float32Array::from(vec![Some(0.5), None, Some(f32::NAN)])),
            Sc(S::Float32),
            vec![Value::float(0.5), null(), null()],
            arc(Float32Array::from(vec![Some(0.5), None, None])),
        ),
        case(
            "float16 as float32",
            cast(&Float32Array::from(vec![1.5]), &DataType::Float16).unwrap(),
            Sc(S::Float32),
            vec![Value::float(1.5)],
            arc(Float32Array::from(vec![1.5])),
        ),
        case(
            "float64",
            arc(Float64Array::from(vec![Some(0.1), None, Some(-0.0)])),
            Sc(S::Float64),
            vec![Value::double(0.1), null(), Value::double(-0.0)],
            arc(Float64Array::from(vec![Some(0.1), None, Some(-0.0)])),
        ),
        case(
            "float32 as float64",
            arc(Float32Array::from(vec![0.703_726_35])),
            Sc(S::Float64),
            vec![Value::double(0.703_726_351_261_138_9)],
            arc(Float64Array::from(vec![0.703_726_351_261_138_9])),
        ),
        case(
            "bool",
            arc(BooleanArray::from(vec![Some(true), None, Some(false)])),
            Sc(S::Bool),
            vec![Value::bool(true), null(), Value::bool(false)],
            arc(BooleanArray::from(vec![Some(true), None, Some(false)])),
        ),
        case("utf8", strings(), Sc(S::String), string_values(), strings()),
        case(
            "large utf8",
            arc(LargeStringArray::from(vec![Some("a"), None, Some("")])),
            Sc(S::String),
            string_values(),
            strings(),
        ),
        case(
            "utf8 view",
            arc(StringViewArray::from(vec![Some("a"), None, Some("")])),
            Sc(S::String),
            string_values(),
            strings(),
        ),
        case(
            "dictionary utf8",
            arc(vec![Some("a"), None, Some("")]
                .into_iter()
                .collect::<DictionaryArray<Int32Type>>()),
            Sc(S::String),
            string_values(),
            strings(),
        ),
        case(
            "sliced utf8",
            strings().slice(1, 2),
            Sc(S::String),
            vec![null(), Value::string("")],
            arc(StringArray::from(vec![None, Some("")])),
        ),
        case("binary", bytes(), Sc(S::Bytes), bytes_values(), bytes()),
        case(
            "large binary",
            arc(LargeBinaryArray::from(vec![
                Some(&b"\x00\xff"[..]),
                None,
                Some(b"ab"),
            ])),
            Sc(S::Bytes),
            bytes_values(),
            bytes(),
        ),
        case(
            "binary view",
            arc(BinaryViewArray::from(vec![
                Some(&b"\x00\xff"[..]),
                None,
                Some(b"ab"),
            ])),
            Sc(S::Bytes),
            bytes_values(),
            bytes(),
        ),
        case(
            "fixed size binary",
            arc(FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                vec![Some(b"\x00\xff"), None, Some(b"ab")].into_iter(),
                2,
            )
            .unwrap()),
            Sc(S::Bytes),
            bytes_values(),
            bytes(),
        ),
        case(
            "timestamp micros",
            micros(vec![Some(1_500_000), None, Some(-1)]),
            Sc(S::UnixTimestamp),
            vec![Value::unix_timestamp(1), null(), Value::unix_timestamp(-1)],
            micros(vec![Some(1_000_000), None, Some(-1_000_000)]),
        ),
        case(
            "timestamp nanos naive",
            arc(TimestampNanosecondArray::from(vec![
                1_640_995_200_123_456_789,
            ])),
            Sc(S::UnixTimestamp),
            vec![Value::unix_timestamp(1_640_995_200)],
            micros(vec![Some(1_640_995_200_000_000)]),
        ),
        case(
            "timestamp seconds",
            arc(TimestampSecondArray::from(vec![-7]).with_timezone("+02:00")),
            Sc(S::UnixTimestamp),
            vec![Value::unix_timestamp(-7)],
            micros(vec![Some(-7_000_000)]),
        ),
        case(
            "timestamp millis",
            arc(TimestampMillisecondArray::from(vec![-1_001])),
            Sc(S::UnixTimestamp),
            vec![Value::unix_timestamp(-2)],
            micros(vec![Some(-2_000_000)]),
        ),
        case(
            "date32",
            arc(Date32Array::from(vec![1])),
            Sc(S::UnixTimestamp),
            vec![Value::unix_timestamp(86_400)],
            micros(vec![Some(86_400_000_000)]),
        ),
        case(
            "date64",
            arc(Date64Array::from(vec![1_999])),
            Sc(S::UnixTimestamp),
            vec![Value::unix_timestamp(1)],
            micros(vec![Some(1_000_000)]),
        ),
        case(
            "int64 seconds",
            arc(Int64Array::from(vec![5])),
            Sc(S::UnixTimestamp),
            vec![Value::unix_timestamp(5)],
            micros(vec![Some(5_000_000)]),
        ),
        case(
            "list int64",
            list(
                arc(Int64Array::from(vec![1, 2, 300, -1])),
                &[0, 2, 2, 2, 4],
                Some(vec![true, false, true, true]),
            ),
            A(S::Int64),
            vec![
                Value::int64_list(vec![1, 2]),
                null(),
                Value::int64_list(vec![]),
                Value::int64_list(vec![300, -1]),
            ],
            list(
                arc(Int64Array::from(vec![1, 2, 300, -1])),
                &[0, 2, 2, 2, 4],
                Some(vec![true, false, true, true]),
            ),
        ),
        case(
            "sliced list int64",
            list(
                arc(Int64Array::from(vec![1, 2, 300, -1])),
                &[0, 2, 2, 2, 4],
                None,
            )
            .slice(2, 2),
            A(S::Int64),
            vec![Value::int64_list(vec![]), Value::int64_list(vec![300, -1])],
            list(arc(Int64Array::from(vec![300, -1])), &[0, 0, 2], None),
        ),
        case(
            "list int8 as int32",
            list(arc(Int8Array::from(vec![-1, 2])), &[0, 2], None),
            A(S::Int32),
            vec![Value::int32_list(vec![-1, 2])],
            list(arc(Int32Array::from(vec![-1, 2])), &[0, 2], None),
        ),
        case(
            "list float32 keeps NaN",
            list(arc(Float32Array::from(vec![0.5, f32::NAN])), &[0, 2], None),
            A(S::Float32),
            vec![Value::float_list(vec![0.5, f32::NAN])],
            list(arc(Float32Array::from(vec![0.5, f32::NAN])), &[0, 2], None),
        ),
        case(
            "list float64",
            list(arc(Float64Array::from(vec![0.25])), &[0, 1, 1], None),
            A(S::Float64),
            vec![Value::double_list(vec![0.25]), Value::double_list(vec![])],
            list(arc(Float64Array::from(vec![0.25])), &[0, 1, 1], None),
        ),
        case(
            "list bool",
            list(arc(BooleanArray::from(vec![true, false])), &[0, 2], None),
            A(S::Bool),
            vec![Value::bool_list(vec![true, false])],
            list(arc(BooleanArray::from(vec![true, false])), &[0, 2], None),
        ),
        case(
            "list utf8",
            str_lists.clone(),
            A(S::String),
            str_list_values.clone(),
            str_lists.clone(),
        ),
        case(
            "large list utf8",
            arc(LargeListArray::new(
                Arc::new(Field::new_list_field(DataType::Utf8, true)),
                OffsetBuffer::new(ScalarBuffer::from(vec![0i64, 2, 2, 3])),
                arc(StringArray::from(vec!["x", "y", "z"])),
                Some(NullBuffer::from(vec![true, false, true])),
            )),
            A(S::String),
            str_list_values.clone(),
            str_lists.clone(),
        ),
        case(
            "list view utf8",
            arc(ListViewArray::new(
                Arc::new(Field::new_list_field(DataType::Utf8, true)),
                ScalarBuffer::from(vec![1i32, 0, 0]),
                ScalarBuffer::from(vec![2i32, 0, 1]),
                arc(StringArray::from(vec!["z", "x", "y"])),
                Some(NullBuffer::from(vec![true, false, true])),
            )),
            A(S::String),
            vec![
                Value::string_list(vec!["x".into(), "y".into()]),
                null(),
                Value::string_list(vec!["z".into()]),
            ],
            str_lists.clone(),
        ),
        case(
            "list dictionary utf8",
            list(
                arc(vec!["x", "y", "z"]
                    .into_iter()
                    .collect::<DictionaryArray<Int32Type>>()),
                &[0, 2, 2, 3],
                Some(vec![true, false, true]),
            ),
            A(S::String),
            str_list_values,
            str_lists,
        ),
        case(
            "fixed size list int32",
            arc(FixedSizeListArray::new(
                Arc::new(Field::new_list_field(DataType::Int32, true)),
                2,
                arc(Int32Array::from(vec![1, 2, 3, 4, 5, 6])),
                None,
            )
            .slice(1, 2)),
            A(S::Int32),
            vec![Value::int32_list(vec![3, 4]), Value::int32_list(vec![5, 6])],
            list(arc(Int32Array::from(vec![3, 4, 5, 6])), &[0, 2, 4], None),
        ),
        case(
            "list binary",
            list(bytes().slice(0, 1), &[0, 1], None),
            A(S::Bytes),
            vec![Value::bytes_list(vec![vec![0, 0xff]])],
            list(bytes().slice(0, 1), &[0, 1], None),
        ),
        case(
            "list timestamp nanos",
            list(
                arc(TimestampNanosecondArray::from(vec![-1, 2_000_000_000])),
                &[0, 2],
                None,
            ),
            A(S::UnixTimestamp),
            vec![Value::unix_timestamp_list(vec![-1, 2])],
            list(
                micros(vec![Some(-1_000_000), Some(2_000_000)]),
                &[0, 2],
                None,
            ),
        ),
    ]
}

#[test]
fn arrow_value_bytes_round_trip() {
    for c in cases() {
        let name = c.name;
        assert!(
            c.dtype.accepts_arrow(c.input.data_type()),
            "{name}: test input not accepted"
        );
        let values = values_from_array(c.input.as_ref(), c.dtype).unwrap();
        let bytes: Vec<Vec<u8>> = values.iter().map(Value::to_bytes).collect();
        // Compared as bytes so that NaN items count as equal.
        let expected: Vec<Vec<u8>> = c.values.iter().map(Value::to_bytes).collect();
        assert_eq!(bytes, expected, "{name}: values {values:?}");

        let mut encoded = ByteRows::new();
        encode_column(c.input.as_ref(), c.dtype, &mut encoded).unwrap();
        assert_eq!(
            encoded.to_vecs(),
            bytes,
            "{name}: encode_column differs from prost"
        );

        let decoded: Vec<Value> = bytes
            .iter()
            .map(|b| Value::from_bytes(b).unwrap())
            .collect();
        let array = array_from_values(decoded.iter().map(Some), c.dtype).unwrap();
        assert_eq!(
            array.data_type(),
            &c.dtype.arrow_type(),
            "{name}: output type"
        );
        assert_eq!(
            array.data_type(),
            c.output.data_type(),
            "{name}: expected type"
        );
        assert_eq!(array.to_data(), c.output.to_data(), "{name}: output array");
    }
}

#[test]
fn missing_rows_and_explicit_nulls_become_null() {
    let explicit = Value::from(Val::NullVal(0));
    let rows = [Some(Value::int64(3)), None, Some(explicit)];
    let array = array_from_values(rows.iter().map(Option::as_ref), Sc(S::Int64)).unwrap();
    assert_eq!(
        array.to_data(),
        Int64Array::from(vec![Some(3), None, None]).to_data()
    );
}

#[test]
fn array_from_values_widens_only_safely() {
    let array = array_from_values([Some(&Value::int32(-2))], Sc(S::Int64)).unwrap();
    assert_eq!(array.to_data(), Int64Array::from(vec![-2]).to_data());
    let array = array_from_values([Some(&Value::float(0.5))], Sc(S::Float64)).unwrap();
    assert_eq!(array.to_data(), Float64Array::from(vec![0.5]).to_data());

    let values = [Value::int64(1), Value::string("x")];
    let err = array_from_values(values.iter().map(Some), Sc(S::Int64)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 1 holds a `string_val` value, which does not fit a column of type `Int64`"
    );
    let err = array_from_values([Some(&Value::double(0.5))], Sc(S::Float32)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 0 holds a `double_val` value, which does not fit a column of type `Float32`"
    );
    let err = array_from_values([Some(&Value::int64_list(vec![1]))], A(S::Int32)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 0 holds a `int64_list_val` value, which does not fit a column of type `Array(Int32)`"
    );
    let err = array_from_values(
        [Some(&Value::unix_timestamp(i64::MAX))],
        Sc(S::UnixTimestamp),
    )
    .unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn unsupported_inputs_are_errors() {
    let strings = arc(StringArray::from(vec!["1"]));
    let err = values_from_array(strings.as_ref(), Sc(S::Int64)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "an Arrow column of type Utf8 cannot be read as `Int64`"
    );

    let with_null_item = list(arc(Int64Array::from(vec![Some(1), None])), &[0, 1, 2], None);
    let err = values_from_array(with_null_item.as_ref(), A(S::Int64)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 1 of a column of type `Array(Int64)` has a null list element; Feast lists cannot hold nulls"
    );
    let mut out = ByteRows::new();
    out.push_with(|b| b.push(1));
    let err = encode_column(with_null_item.as_ref(), A(S::Int64), &mut out).unwrap_err();
    assert!(
        matches!(err, FormatError::NullListElement { row: 1, .. }),
        "{err}"
    );
    assert_eq!(
        out.to_vecs(),
        vec![vec![1]],
        "encode_column leaves `out` as it was"
    );
}

fn check_column(array: ArrayRef, dtype: ValueType) -> Result<(), TestCaseError> {
    let values = values_from_array(array.as_ref(), dtype).unwrap();
    let mut encoded = ByteRows::new();
    encode_column(array.as_ref(), dtype, &mut encoded).unwrap();
    prop_assert_eq!(encoded.len(), values.len());
    for (bytes, value) in encoded.iter().zip(&values) {
        prop_assert_eq!(bytes, &value.to_bytes()[..]);
        prop_assert_eq!(&Value::from_bytes(bytes).unwrap(), value);
    }
    let decoded: Vec<Value> = encoded
        .iter()
        .map(|b| Value::from_bytes(b).unwrap())
        .collect();
    let back = array_from_values(decoded.iter().map(Some), dtype).unwrap();
    prop_assert_eq!(back.to_data(), array.to_data());
    Ok(())
}

proptest! {
    #[test]
    fn random_scalars_round_trip(
        ints in prop::collection::vec(any::<Option<i64>>(), 0..20),
        floats in prop::collection::vec(any::<Option<f32>>().prop_map(|f| f.filter(|x| !x.is_nan())), 0..20),
        strings in prop::collection::vec(any::<Option<String>>(), 0..20),
    ) {
        check_column(arc(Int64Array::from(ints)), Sc(S::Int64))?;
        check_column(arc(Float32Array::from(floats)), Sc(S::Float32))?;
        check_column(arc(StringArray::from(strings)), Sc(S::String))?;
    }

    #[test]
    fn random_lists_round_trip(
        rows in prop::collection::vec(prop::collection::vec(any::<i32>(), 0..5), 0..10),
    ) {
        let offsets: Vec<i32> = std::iter::once(0)
            .chain(rows.iter().scan(0, |end, r| { *end += r.len() as i32; Some(*end) }))
            .collect();
        let items = arc(Int32Array::from(rows.concat()));
        check_column(list(items, &offsets, None), A(S::Int32))?;
    }

    #[test]
    fn random_values_round_trip_through_bytes(x in any::<i64>(), f in any::<f32>(), s in ".*") {
        for value in [Value::int64(x), Value::unix_timestamp(x), Value::float(f), Value::string(s.as_str())] {
            let back = Value::from_bytes(&value.to_bytes()).unwrap();
            // Compare bytes so NaN payloads count as equal.
            prop_assert_eq!(back.to_bytes(), value.to_bytes());
        }
    }
}
