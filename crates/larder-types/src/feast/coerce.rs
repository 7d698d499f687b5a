//! Turning JSON entity values of an online request into `Value`s of the entity's declared type, as Feast does (feast-behaviour.md §7 item 3).
//!
//! Feast converts with Python's `int(x)`, `str(x)` and `float(x)`, so `"1001"`, `1001.0` and
//! `1001` all find the same `Int64` entity, and `5` finds the `String` entity `"5"`. Larder
//! follows that, with three deliberate differences, all of them errors where Python would
//! silently guess: a non-integral number (`1001.5`) is not truncated to an integer, JSON
//! booleans are not integers, and `null` is rejected (Feast would fail later, when it
//! serializes the key).
//!
//! JSON cannot carry bytes or datetimes, so `Bytes` takes a base64 string (standard
//! alphabet, padded) and `UnixTimestamp` takes integer seconds or an RFC 3339 string
//! (floored to whole seconds).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value as Json;

use super::json::python_float_repr;
use super::value::Value;
use crate::ScalarType;

/// Longest JSON text quoted in an error message.
const MAX_QUOTED: usize = 64;

/// A request value that cannot be read as the entity's type. The request must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoerceError {
    #[error("value `{value}` cannot be read as `{ty}`: {reason}")]
    Invalid {
        value: String,
        ty: ScalarType,
        reason: &'static str,
    },
    #[error("value `{value}` is out of range for `{ty}`")]
    OutOfRange { value: String, ty: ScalarType },
}

/// Converts one JSON request value to a `Value` of type `ty`.
///
/// | type | accepts |
/// |---|---|
/// | `Int32`, `Int64` | integers, integral numbers (`1001.0`), integer strings (`"1001"`, `" -5 "`) |
/// | `String` | strings; numbers as Python prints them (`5` → `"5"`, `5.0` → `"5.0"`) |
/// | `Bytes` | base64 strings |
/// | `UnixTimestamp` | integer seconds, integral numbers, RFC 3339 strings |
/// | `Float32` | numbers, numeric strings (Python `float(x)`) |
/// | `Float64` | numbers only (as Feast) |
/// | `Bool` | booleans, `0` and `1` |
///
/// Only `Int32`, `Int64`, `String`, `Bytes` and `UnixTimestamp` can be entity keys; the
/// other types are for request data of on-demand views.
pub fn coerce_entity_value(json: &Json, ty: ScalarType) -> Result<Value, CoerceError> {
    let invalid = |reason| CoerceError::Invalid {
        value: quote(json),
        ty,
        reason,
    };
    let out_of_range = || CoerceError::OutOfRange {
        value: quote(json),
        ty,
    };
    match ty {
        ScalarType::Int32 => {
            let x = integer(json).map_err(|e| e.into_error(json, ty))?;
            i32::try_from(x)
                .map(Value::int32)
                .map_err(|_| out_of_range())
        }
        ScalarType::Int64 => integer(json)
            .map(Value::int64)
            .map_err(|e| e.into_error(json, ty)),
        ScalarType::String => match json {
            Json::String(s) => Ok(Value::string(s.as_str())),
            Json::Number(n) => Ok(Value::string(match n.as_f64() {
                Some(x) if !n.is_i64() && !n.is_u64() => python_float_repr(x),
                _ => n.to_string(),
            })),
            _ => Err(invalid("expected a string or a number")),
        },
        ScalarType::Bytes => match json {
            Json::String(s) => STANDARD
                .decode(s)
                .map(Value::bytes)
                .map_err(|_| invalid("expected a base64 string")),
            _ => Err(invalid("expected a base64 string")),
        },
        ScalarType::UnixTimestamp => match json {
            Json::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
                .map(|dt| Value::unix_timestamp(dt.timestamp()))
                .map_err(|_| invalid("expected integer seconds or an RFC 3339 timestamp")),
            Json::Number(_) => integer(json)
                .map(Value::unix_timestamp)
                .map_err(|e| e.into_error(json, ty)),
            _ => Err(invalid("expected integer seconds or an RFC 3339 timestamp")),
        },
        ScalarType::Float32 => {
            let x = match json {
                Json::Number(n) => n.as_f64(),
                Json::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .ok_or_else(|| invalid("expected a number or a numeric string"))?;
            // Python's float → proto float conversion rounds the same way.
            Ok(Value::float(x as f32))
        }
        ScalarType::Float64 => match json {
            Json::Number(n) => n
                .as_f64()
                .map(Value::double)
                .ok_or_else(|| invalid("expected a number")),
            _ => Err(invalid("expected a number")),
        },
        ScalarType::Bool => match json {
            Json::Bool(b) => Ok(Value::bool(*b)),
            Json::Number(n) if n.as_u64() == Some(0) => Ok(Value::bool(false)),
            Json::Number(n) if n.as_u64() == Some(1) => Ok(Value::bool(true)),
            _ => Err(invalid("expected a boolean, 0 or 1")),
        },
    }
}

enum IntegerError {
    Invalid,
    OutOfRange,
}

impl IntegerError {
    fn into_error(self, json: &Json, ty: ScalarType) -> CoerceError {
        match self {
            IntegerError::Invalid => CoerceError::Invalid {
                value: quote(json),
                ty,
                reason: "expected an integer, an integral number or an integer string",
            },
            IntegerError::OutOfRange => CoerceError::OutOfRange {
                value: quote(json),
                ty,
            },
        }
    }
}

/// Python's `int(x)` restricted to values that are exactly integers.
fn integer(json: &Json) -> Result<i64, IntegerError> {
    match json {
        Json::Number(n) => {
            if let Some(x) = n.as_i64() {
                return Ok(x);
            }
            if n.is_u64() {
                return Err(IntegerError::OutOfRange);
            }
            let x = n.as_f64().ok_or(IntegerError::Invalid)?;
            if !x.is_finite() || x.fract() != 0.0 {
                return Err(IntegerError::Invalid);
            }
            // -2^63 is exact as f64; 2^63 is the first value past i64::MAX.
            if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&x) {
                Ok(x as i64)
            } else {
                Err(IntegerError::OutOfRange)
            }
        }
        Json::String(s) => {
            let text = s.trim();
            text.parse::<i64>().map_err(|e| match e.kind() {
                std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                    IntegerError::OutOfRange
                }
                _ => IntegerError::Invalid,
            })
        }
        _ => Err(IntegerError::Invalid),
    }
}

fn quote(json: &Json) -> String {
    let mut text = json.to_string();
    if text.len() > MAX_QUOTED {
        let mut cut = MAX_QUOTED;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coercion_table() {
        use ScalarType as S;
        let ok: Vec<(Json, ScalarType, Value)> = vec![
            (json!(1001), S::Int64, Value::int64(1001)),
            (json!(1001.0), S::Int64, Value::int64(1001)),
            (json!("1001"), S::Int64, Value::int64(1001)),
            (json!(" -5 "), S::Int64, Value::int64(-5)),
            (json!("+5"), S::Int64, Value::int64(5)),
            (
                json!(-9_223_372_036_854_775_808i64),
                S::Int64,
                Value::int64(i64::MIN),
            ),
            (json!(7), S::Int32, Value::int32(7)),
            (json!(-2_147_483_648i64), S::Int32, Value::int32(i32::MIN)),
            (json!("12"), S::Int32, Value::int32(12)),
            (json!("abc"), S::String, Value::string("abc")),
            (json!(5), S::String, Value::string("5")),
            (json!(5.0), S::String, Value::string("5.0")),
            (json!(-1.5e-7), S::String, Value::string("-1.5e-07")),
            (json!("aGkh"), S::Bytes, Value::bytes(b"hi!".to_vec())),
            (
                json!(1_640_995_200),
                S::UnixTimestamp,
                Value::unix_timestamp(1_640_995_200),
            ),
            (
                json!("2022-01-01T00:00:00Z"),
                S::UnixTimestamp,
                Value::unix_timestamp(1_640_995_200),
            ),
            (
                json!("2022-01-01T01:00:00.9+01:00"),
                S::UnixTimestamp,
                Value::unix_timestamp(1_640_995_200),
            ),
            (
                json!("1969-12-31T23:59:59.5Z"),
                S::UnixTimestamp,
                Value::unix_timestamp(-1),
            ),
            (json!(0.5), S::Float64, Value::double(0.5)),
            (json!(2), S::Float64, Value::double(2.0)),
            (json!("0.5"), S::Float32, Value::float(0.5)),
            (json!(true), S::Bool, Value::bool(true)),
            (json!(0), S::Bool, Value::bool(false)),
        ];
        for (input, ty, expected) in ok {
            assert_eq!(
                coerce_entity_value(&input, ty),
                Ok(expected),
                "{input} as {ty}"
            );
        }
    }

    #[test]
    fn coercion_errors() {
        use ScalarType as S;
        let errors: Vec<(Json, ScalarType, &str)> = vec![
            (
                json!("abc"),
                S::Int64,
                "value `\"abc\"` cannot be read as `Int64`: expected an integer, an integral \
                 number or an integer string",
            ),
            (
                json!(1_099_511_627_776i64),
                S::Int32,
                "value `1099511627776` is out of range for `Int32`",
            ),
            (
                json!(18_446_744_073_709_551_615u64),
                S::Int64,
                "value `18446744073709551615` is out of range for `Int64`",
            ),
            (
                json!(1e19),
                S::Int64,
                "value `1e+19` is out of range for `Int64`",
            ),
            (
                json!("99999999999999999999"),
                S::Int64,
                "value `\"99999999999999999999\"` is out of range for `Int64`",
            ),
            (
                json!(1001.5),
                S::Int64,
                "value `1001.5` cannot be read as `Int64`: expected an integer, an integral number or an integer string",
            ),
            (
                json!("1001.0"),
                S::Int64,
                "value `\"1001.0\"` cannot be read as `Int64`: expected an integer, an integral number or an integer string",
            ),
            (
                json!(true),
                S::Int64,
                "value `true` cannot be read as `Int64`: expected an integer, an integral number or an integer string",
            ),
            (
                json!(null),
                S::Int64,
                "value `null` cannot be read as `Int64`: expected an integer, an integral number or an integer string",
            ),
            (
                json!(true),
                S::String,
                "value `true` cannot be read as `String`: expected a string or a number",
            ),
            (
                json!([1]),
                S::String,
                "value `[1]` cannot be read as `String`: expected a string or a number",
            ),
            (
                json!("not base64!"),
                S::Bytes,
                "value `\"not base64!\"` cannot be read as `Bytes`: expected a base64 string",
            ),
            (
                json!("yesterday"),
                S::UnixTimestamp,
                "value `\"yesterday\"` cannot be read as `UnixTimestamp`: expected integer seconds or an RFC 3339 timestamp",
            ),
            (
                json!("0.5"),
                S::Float64,
                "value `\"0.5\"` cannot be read as `Float64`: expected a number",
            ),
            (
                json!(2),
                S::Bool,
                "value `2` cannot be read as `Bool`: expected a boolean, 0 or 1",
            ),
        ];
        for (input, ty, message) in errors {
            let err = coerce_entity_value(&input, ty).unwrap_err();
            assert_eq!(err.to_string(), message, "{input} as {ty}");
        }
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let long = Json::String("x".repeat(200));
        let err = coerce_entity_value(&long, ScalarType::Int64).unwrap_err();
        let CoerceError::Invalid { value, .. } = err else {
            panic!("expected Invalid, got {err:?}");
        };
        assert_eq!(value.chars().count(), MAX_QUOTED + 1);
        assert!(value.ends_with('…'));
    }
}
