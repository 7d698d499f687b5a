//! JSON pushed values to Arrow arrays: as the declared Larder types (online) or as the
//! stored Arrow types (offline), and the time formats Feast's clients send.

use std::sync::Arc;

use arrow::array::{ArrayRef, TimestampMicrosecondArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use larder_types::feast::{Value, array_from_values, coerce_entity_value};
use larder_types::{ScalarType, ValueType};
use serde_json::Value as Json;

use super::invalid;
use crate::error::Error;

/// JSON values read as a Larder type (Arrow type `dtype.arrow_type()`).
pub(super) fn json_array(values: &[Json], dtype: ValueType) -> Result<ArrayRef, String> {
    if dtype == ValueType::Scalar(ScalarType::UnixTimestamp) {
        return json_array_as(values, &dtype.arrow_type());
    }
    let scalar = match dtype {
        ValueType::Scalar(s) | ValueType::Array(s) => s,
    };
    let mut parsed: Vec<Option<Value>> = Vec::with_capacity(values.len());
    for (row, json) in values.iter().enumerate() {
        let value = match (json, dtype) {
            (Json::Null, _) => None,
            (Json::Array(items), ValueType::Array(_)) => {
                let items = items
                    .iter()
                    .map(|item| coerce_item(item, scalar))
                    .collect::<Result<Vec<Value>, String>>()
                    .map_err(|e| format!("row {row}: {e}"))?;
                Some(list_value(items, scalar))
            }
            (_, ValueType::Array(_)) => {
                return Err(format!("row {row}: expected a list of {}", scalar.name()));
            }
            (_, ValueType::Scalar(_)) => {
                Some(coerce_item(json, scalar).map_err(|e| format!("row {row}: {e}"))?)
            }
        };
        parsed.push(value);
    }
    array_from_values(parsed.iter().map(Option::as_ref), dtype).map_err(|e| e.to_string())
}

fn coerce_item(json: &Json, ty: ScalarType) -> Result<Value, String> {
    if ty == ScalarType::UnixTimestamp {
        let micros = parse_time_json(json)?;
        return Ok(Value::unix_timestamp(micros.div_euclid(1_000_000)));
    }
    coerce_entity_value(json, ty).map_err(|e| e.to_string())
}

/// A list `Value` of scalar items.
fn list_value(items: Vec<Value>, ty: ScalarType) -> Value {
    use larder_types::feast::Val;
    let mut out = Value::default();
    macro_rules! collect {
        ($variant:ident, $list:ident, $item:ident) => {{
            let val = items
                .into_iter()
                .filter_map(|v| match v.val {
                    Some(Val::$item(x)) => Some(x),
                    _ => None,
                })
                .collect();
            out.val = Some(Val::$variant(larder_types::feast::$list { val }));
        }};
    }
    match ty {
        ScalarType::Bytes => collect!(BytesListVal, BytesList, BytesVal),
        ScalarType::String => collect!(StringListVal, StringList, StringVal),
        ScalarType::Int32 => collect!(Int32ListVal, Int32List, Int32Val),
        ScalarType::Int64 => collect!(Int64ListVal, Int64List, Int64Val),
        ScalarType::Float64 => collect!(DoubleListVal, DoubleList, DoubleVal),
        ScalarType::Float32 => collect!(FloatListVal, FloatList, FloatVal),
        ScalarType::Bool => collect!(BoolListVal, BoolList, BoolVal),
        ScalarType::UnixTimestamp => {
            collect!(UnixTimestampListVal, Int64List, UnixTimestampVal)
        }
    }
    out
}

/// JSON values read as an arbitrary stored Arrow type.
pub(super) fn json_array_as(values: &[Json], dt: &DataType) -> Result<ArrayRef, String> {
    let dtype = match dt {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            let mut micros = Vec::with_capacity(values.len());
            for (row, json) in values.iter().enumerate() {
                micros.push(match json {
                    Json::Null => None,
                    other => Some(parse_time_json(other).map_err(|e| format!("row {row}: {e}"))?),
                });
            }
            let array: ArrayRef =
                Arc::new(TimestampMicrosecondArray::from(micros).with_timezone("UTC"));
            return cast(&array, dt).map_err(|e| format!("cannot store the times as {dt}: {e}"));
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => ValueType::Scalar(ScalarType::Int64),
        DataType::Float16 | DataType::Float32 => ValueType::Scalar(ScalarType::Float32),
        DataType::Float64 => ValueType::Scalar(ScalarType::Float64),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            ValueType::Scalar(ScalarType::String)
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            ValueType::Scalar(ScalarType::Bytes)
        }
        DataType::Boolean => ValueType::Scalar(ScalarType::Bool),
        DataType::List(item) | DataType::LargeList(item) => {
            match json_array_as(&[], item.data_type())?.data_type() {
                DataType::Int64 => ValueType::Array(ScalarType::Int64),
                DataType::Float32 => ValueType::Array(ScalarType::Float32),
                DataType::Float64 => ValueType::Array(ScalarType::Float64),
                DataType::Utf8 => ValueType::Array(ScalarType::String),
                DataType::Binary => ValueType::Array(ScalarType::Bytes),
                DataType::Boolean => ValueType::Array(ScalarType::Bool),
                _ => return Err(format!("lists of {} cannot be pushed", item.data_type())),
            }
        }
        other => return Err(format!("columns of type {other} cannot be pushed")),
    };
    let array = json_array(values, dtype)?;
    if array.data_type() == dt {
        return Ok(array);
    }
    cast(&array, dt).map_err(|e| format!("cannot store the values as {dt}: {e}"))
}

pub(super) fn parse_times(
    values: &[Json],
    column: &str,
    target: &str,
) -> Result<Vec<Option<i64>>, Error> {
    values
        .iter()
        .enumerate()
        .map(|(row, json)| match json {
            Json::Null => Ok(None),
            other => parse_time_json(other)
                .map(Some)
                .map_err(|e| invalid(target, format!("column `{column}`, row {row}: {e}"))),
        })
        .collect()
}

/// A time as microseconds since the epoch: a number of seconds or a string
/// ([`parse_timestamp`]).
fn parse_time_json(json: &Json) -> Result<i64, String> {
    match json {
        Json::Number(n) => {
            let micros = if let Some(i) = n.as_i64() {
                i.checked_mul(1_000_000)
            } else {
                n.as_f64()
                    .map(|f| f * 1e6)
                    .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            };
            micros.ok_or_else(|| format!("`{n}` seconds is out of range"))
        }
        Json::String(s) => parse_timestamp(s)
            .map(|t| t.timestamp_micros())
            .ok_or_else(|| {
                format!(
                    "`{}` is not a time; use RFC 3339 (`2025-06-01T00:00:00Z`), \
                     `2025-06-01 00:00:00[+00:00]` or seconds since the epoch",
                    s.chars().take(64).collect::<String>()
                )
            }),
        other => Err(format!("expected a time, found `{other}`")),
    }
}

/// Parses a time as Feast's clients send them: RFC 3339, ISO 8601 with a space or `T`,
/// with or without fractional seconds and offset (none: UTC), or a date.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Some(t) = parse_iso_fast(text) {
        return Some(t);
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// The forms pushes almost always use (`2025-06-01 00:00:01`, `...T...`, fractions, `Z`
/// or `±HH:MM`) through chrono's hand-written RFC 3339 parser: the format-string parsers
/// took a third of a 100-row push's time.
fn parse_iso_fast(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    if !text.is_ascii() || bytes.len() < 19 || !matches!(bytes[10], b' ' | b'T' | b't') {
        return None;
    }
    let has_offset = text[19..].contains(['Z', 'z', '+', '-']);
    let mut normalized = String::with_capacity(bytes.len() + 1);
    normalized.push_str(&text[..10]);
    normalized.push('T');
    normalized.push_str(&text[11..]);
    if !has_offset {
        normalized.push('Z');
    }
    DateTime::parse_from_rfc3339(&normalized)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;
    use larder_online::timestamp_type;

    use super::*;

    #[test]
    fn times_parse_in_feast_client_forms() {
        let want = "2022-05-13T10:59:42Z".parse::<DateTime<Utc>>().unwrap();
        for text in [
            "2022-05-13T10:59:42Z",
            "2022-05-13 10:59:42+00:00",
            "2022-05-13T10:59:42+00:00",
            "2022-05-13 10:59:42",
            "2022-05-13T10:59:42.000",
            "2022-05-13 12:59:42+02:00",
            "2022-05-13 08:59:42-02:00",
            "2022-05-13t10:59:42z",
            "2022-05-13 10:59:42+0000",
            "2022-05-13T10:59",
        ] {
            assert_eq!(
                parse_timestamp(text),
                Some(want - chrono::Duration::seconds(if text.len() == 16 { 42 } else { 0 })),
                "{text}"
            );
        }
        let fraction = "2022-05-13T10:59:42.250Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(parse_timestamp("2022-05-13 10:59:42.25"), Some(fraction));
        assert_eq!(parse_timestamp("2022-05-13 10:59:4x"), None);
        assert_eq!(parse_timestamp("2022-05-13 25:00:00"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_time_json(&serde_json::json!(1)).unwrap(), 1_000_000);
    }

    #[test]
    fn json_columns_convert_to_declared_and_stored_types() {
        let values = vec![serde_json::json!([1.5, 2]), Json::Null];
        let array = json_array(&values, ValueType::Array(ScalarType::Float32)).unwrap();
        assert_eq!(
            array.data_type(),
            &ValueType::Array(ScalarType::Float32).arrow_type()
        );
        assert_eq!(array.null_count(), 1);

        let ints = json_array_as(
            &[serde_json::json!(7), serde_json::json!("8")],
            &DataType::Int32,
        )
        .unwrap();
        assert_eq!(ints.data_type(), &DataType::Int32);

        let err = json_array(
            &[serde_json::json!("x")],
            ValueType::Scalar(ScalarType::Int64),
        )
        .unwrap_err();
        assert!(err.contains("row 0"), "{err}");
        let err = json_array_as(&[serde_json::json!("soon")], &timestamp_type()).unwrap_err();
        assert!(err.contains("`soon` is not a time"), "{err}");
    }
}
