//! JSON form of a `feast.types.Value` as Feast's HTTP feature server writes it (feast-behaviour.md §8.1).
//!
//! Ints are JSON numbers, float32 is widened to f64 and printed like Python's `repr`
//! (`0.7037263512611389`, `1.0`, `1e+16`), bytes are base64 (standard alphabet, padded),
//! lists and sets are arrays, maps are objects, `unix_timestamp_val` is integer seconds and
//! null is `null`.
//!
//! Non-finite floats (NaN, ±inf) are written as `null`. Feast cannot return them over HTTP
//! (Starlette's `json.dumps(allow_nan=False)` raises, and materialization stores NaN as
//! null anyway), and `null` keeps the response valid JSON.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::value::{Map, Val, Value};

/// The JSON form of `value` as a `serde_json::Value` (tests, small responses).
///
/// Numbers print with serde_json's float format (`1e16`, not Python's `1e+16`); use
/// [`write_value_json`] for Python's exact text.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    let Some(val) = &value.val else {
        return J::Null;
    };
    let float = |x: f64| serde_json::Number::from_f64(x).map_or(J::Null, J::Number);
    let array = |items: Vec<J>| J::Array(items);
    match val {
        Val::NullVal(_) => J::Null,
        Val::BytesVal(b) => J::String(STANDARD.encode(b)),
        Val::StringVal(s) => J::String(s.clone()),
        Val::Int32Val(x) => J::from(*x),
        Val::Int64Val(x) | Val::UnixTimestampVal(x) => J::from(*x),
        Val::DoubleVal(x) => float(*x),
        Val::FloatVal(x) => float(f64::from(*x)),
        Val::BoolVal(x) => J::Bool(*x),
        Val::BytesListVal(l) | Val::BytesSetVal(l) => array(
            l.val
                .iter()
                .map(|b| J::String(STANDARD.encode(b)))
                .collect(),
        ),
        Val::StringListVal(l) | Val::StringSetVal(l) => {
            array(l.val.iter().cloned().map(J::String).collect())
        }
        Val::Int32ListVal(l) | Val::Int32SetVal(l) => {
            array(l.val.iter().map(|&x| J::from(x)).collect())
        }
        Val::Int64ListVal(l)
        | Val::Int64SetVal(l)
        | Val::UnixTimestampListVal(l)
        | Val::UnixTimestampSetVal(l) => array(l.val.iter().map(|&x| J::from(x)).collect()),
        Val::DoubleListVal(l) | Val::DoubleSetVal(l) => {
            array(l.val.iter().map(|&x| float(x)).collect())
        }
        Val::FloatListVal(l) | Val::FloatSetVal(l) => {
            array(l.val.iter().map(|&x| float(f64::from(x))).collect())
        }
        Val::BoolListVal(l) | Val::BoolSetVal(l) => {
            array(l.val.iter().map(|&x| J::Bool(x)).collect())
        }
        Val::MapVal(m) => map_to_json(m),
        Val::MapListVal(l) => array(l.val.iter().map(map_to_json).collect()),
    }
}

fn map_to_json(map: &Map) -> serde_json::Value {
    serde_json::Value::Object(
        map.val
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

/// Appends the JSON text of `value` to `out`, byte for byte what Feast's Python server
/// writes (compact separators, non-ASCII unescaped), except for non-finite floats (`null`).
pub fn write_value_json(value: &Value, out: &mut String) {
    let Some(val) = &value.val else {
        out.push_str("null");
        return;
    };
    match val {
        Val::NullVal(_) => out.push_str("null"),
        Val::BytesVal(b) => write_base64(b, out),
        Val::StringVal(s) => write_str(s, out),
        Val::Int32Val(x) => write_int(i64::from(*x), out),
        Val::Int64Val(x) | Val::UnixTimestampVal(x) => write_int(*x, out),
        Val::DoubleVal(x) => write_float(*x, out),
        Val::FloatVal(x) => write_float(f64::from(*x), out),
        Val::BoolVal(x) => out.push_str(if *x { "true" } else { "false" }),
        Val::BytesListVal(l) | Val::BytesSetVal(l) => {
            write_array(&l.val, out, |b, out| write_base64(b, out))
        }
        Val::StringListVal(l) | Val::StringSetVal(l) => {
            write_array(&l.val, out, |s, out| write_str(s, out))
        }
        Val::Int32ListVal(l) | Val::Int32SetVal(l) => {
            write_array(&l.val, out, |&x, out| write_int(i64::from(x), out));
        }
        Val::Int64ListVal(l)
        | Val::Int64SetVal(l)
        | Val::UnixTimestampListVal(l)
        | Val::UnixTimestampSetVal(l) => write_array(&l.val, out, |&x, out| write_int(x, out)),
        Val::DoubleListVal(l) | Val::DoubleSetVal(l) => {
            write_array(&l.val, out, |&x, out| write_float(x, out));
        }
        Val::FloatListVal(l) | Val::FloatSetVal(l) => {
            write_array(&l.val, out, |&x, out| write_float(f64::from(x), out));
        }
        Val::BoolListVal(l) | Val::BoolSetVal(l) => {
            write_array(&l.val, out, |&x, out| {
                out.push_str(if x { "true" } else { "false" })
            });
        }
        Val::MapVal(m) => write_map(m, out),
        Val::MapListVal(l) => write_array(&l.val, out, write_map),
    }
}

fn write_array<T>(items: &[T], out: &mut String, mut write: impl FnMut(&T, &mut String)) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(item, out);
    }
    out.push(']');
}

fn write_map(map: &Map, out: &mut String) {
    out.push('{');
    for (i, (key, value)) in map.val.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(key, out);
        out.push(':');
        write_value_json(value, out);
    }
    out.push('}');
}

fn write_int(x: i64, out: &mut String) {
    out.push_str(itoa::Buffer::new().format(x));
}

fn write_float(x: f64, out: &mut String) {
    if x.is_finite() {
        write_python_float(x, out);
    } else {
        out.push_str("null");
    }
}

fn write_base64(bytes: &[u8], out: &mut String) {
    out.push('"');
    STANDARD.encode_string(bytes, out);
    out.push('"');
}

/// A JSON string as Python's `json.dumps(ensure_ascii=False)` writes it: only `"`, `\` and
/// control characters are escaped.
fn write_str(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends a finite `x` as Python's `repr(float)` does: the shortest digits that read back
/// to `x`, positional for exponents -4..16 (always with a fractional part), else scientific
/// with a signed two-digit exponent (`1e+16`, `1.5e-05`).
pub(crate) fn write_python_float(x: f64, out: &mut String) {
    // ryu gives the same shortest round-trip digits as Python's repr, in its own layout
    // (`1.5e-5`, `0.3`, `1e16`, `100.0`). Its positional text is already Python's, and is
    // copied, except `0.0000ddd` (decimal exponent -5, which Python writes `d.dde-05`); that
    // and scientific text go through the digits.
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(x);
    let magnitude = text.strip_prefix('-').unwrap_or(text);
    if !magnitude.starts_with("0.0000") && !magnitude.contains('e') {
        out.push_str(text);
        return;
    }
    write_python_float_digits(text.as_bytes(), out);
}

/// [`write_python_float`] from ryu's `text` of the value, read as digits and a decimal
/// exponent: about a fifth of the cost of going through `{:e}` and `fmt`.
fn write_python_float_digits(text: &[u8], out: &mut String) {
    let (negative, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let e_pos = text.iter().position(|&b| b == b'e').unwrap_or(text.len());
    let (mantissa, exponent) = (&text[..e_pos], text.get(e_pos + 1..).unwrap_or_default());
    // mantissa = I.F: the value is 0.IF x 10^(len(I) + exponent).
    let point = mantissa
        .iter()
        .position(|&b| b == b'.')
        .unwrap_or(mantissa.len());
    let mut digits = [0u8; 32];
    let mut n = 0;
    let mut point_exp = i32::try_from(point).unwrap_or(0) + parse_exponent(exponent);
    for &d in mantissa.iter().filter(|b| b.is_ascii_digit()) {
        if n == 0 && d == b'0' {
            // A leading zero moves the point left.
            point_exp -= 1;
            continue;
        }
        digits[n] = d;
        n += 1;
    }
    while n > 1 && digits[n - 1] == b'0' {
        n -= 1;
    }
    if n == 0 {
        // Zero: one digit, and the exponent of `0.0`.
        digits[0] = b'0';
        n = 1;
        point_exp = 1;
    }
    write_python_digits(negative, &digits[..n], point_exp - 1, out);
}

/// Python's float repr of `±0.d₁d₂… x 10^(exp + 1)`, i.e. of d₁.d₂… x 10^exp: positional for
/// exponents -4..16 (always with a fractional part), else scientific with a signed
/// two-digit exponent.
fn write_python_digits(negative: bool, digits: &[u8], exp: i32, out: &mut String) {
    if negative {
        out.push('-');
    }
    let push_digits =
        |out: &mut String, ds: &[u8]| ds.iter().for_each(|&d| out.push(char::from(d)));
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                push_digits(out, digits);
                (digits.len()..int_len).for_each(|_| out.push('0'));
                out.push_str(".0");
            } else {
                push_digits(out, &digits[..int_len]);
                out.push('.');
                push_digits(out, &digits[int_len..]);
            }
        } else {
            out.push_str("0.");
            (0..(-exp - 1)).for_each(|_| out.push('0'));
            push_digits(out, digits);
        }
    } else {
        push_digits(out, &digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            push_digits(out, &digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let abs = exp.unsigned_abs();
        if abs < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(abs));
    }
}

fn parse_exponent(text: &[u8]) -> i32 {
    let (sign, digits) = match text.split_first() {
        Some((b'-', rest)) => (-1, rest),
        _ => (1, text),
    };
    sign * digits
        .iter()
        .fold(0i32, |acc, &d| acc * 10 + i32::from(d - b'0'))
}

/// Python's `repr(x)` of a finite float as a new string.
pub(crate) fn python_float_repr(x: f64) -> String {
    let mut out = String::new();
    write_python_float(x, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feast::value::{Int64List, MapList};

    #[test]
    fn python_float_reprs() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (f64::from(0.703_726_35_f32), "0.7037263512611389"),
            (f64::from(0.872_470_7_f32), "0.8724706768989563"),
            (123_456_789.0, "123456789.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e-4, "0.0001"),
            (1.5e-5, "1.5e-05"),
            (1e-5, "1e-05"),
            (1e100, "1e+100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.234e-5, "1.234e-05"),
            (-1e-5, "-1e-05"),
            (0.000_12, "0.00012"),
            (-0.000_999, "-0.000999"),
            (9_999_999_999_999_998.0, "9999999999999998.0"),
            (1e17, "1e+17"),
            // Two 17-digit strings round-trip (...62 and ...63); Python's repr, like ryu, takes
            // the one nearer the exact value, where `{:e}` gives ...63.
            (
                f64::from_bits(14_039_819_268_046_065_064),
                "-103169205618742.62",
            ),
        ];
        for &(x, expected) in cases {
            assert_eq!(python_float_repr(x), expected, "{x:e}");
            assert_eq!(
                python_float_repr(x).parse::<f64>().unwrap().to_bits(),
                x.to_bits()
            );
        }
    }

    /// The former implementation, over `{:e}`: Rust's shortest round-trip digits.
    fn python_float_via_fmt(x: f64) -> String {
        let sci = format!("{x:e}");
        let (negative, sci) = match sci.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, sci.as_str()),
        };
        let (mantissa, exponent) = sci.split_once('e').unwrap();
        let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
        let mut out = String::new();
        write_python_digits(negative, &digits, exponent.parse().unwrap(), &mut out);
        out
    }

    proptest::proptest! {
        #[test]
        fn python_float_repr_is_as_short_as_the_fmt_digits(bits in proptest::prelude::any::<u64>()) {
            let x = f64::from_bits(bits);
            proptest::prop_assume!(x.is_finite());
            let ours = python_float_repr(x);
            let theirs = python_float_via_fmt(x);
            // Both are shortest round-trip strings. Where two of that length round-trip, they
            // may differ (ours takes the nearer one, as Python does), but never in length.
            proptest::prop_assert_eq!(ours.parse::<f64>().unwrap().to_bits(), x.to_bits());
            proptest::prop_assert_eq!(ours.len(), theirs.len(), "{} vs {}", ours, theirs);
            if ours != theirs {
                proptest::prop_assert_eq!(theirs.parse::<f64>().unwrap().to_bits(), x.to_bits());
            }
        }

        /// ryu's text used as it is agrees with the digits path wherever it is used.
        #[test]
        fn python_float_fast_path_is_the_digits_path(m in -10.0f64..10.0, e in -8i32..18) {
            let x = m * 10f64.powi(e);
            let mut buffer = ryu::Buffer::new();
            let mut slow = String::new();
            write_python_float_digits(buffer.format_finite(x).as_bytes(), &mut slow);
            proptest::prop_assert_eq!(python_float_repr(x), slow);
        }

        #[test]
        fn python_float_repr_of_decimals(m in -1_000_000i64..1_000_000, e in -30i32..30) {
            let x = m as f64 * 10f64.powi(e);
            proptest::prop_assert_eq!(python_float_repr(x), python_float_via_fmt(x));
        }
    }

    fn map_of(pairs: &[(&str, Value)]) -> Map {
        Map {
            val: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn json_encoding_table() {
        let cases: Vec<(Value, &str)> = vec![
            (Value::NULL, "null"),
            (Val::NullVal(0).into(), "null"),
            (Value::int32(-7), "-7"),
            (Value::int64(i64::MAX), "9223372036854775807"),
            (Value::float(0.703_726_35), "0.7037263512611389"),
            (Value::float(f32::NAN), "null"),
            (Value::double(1.0), "1.0"),
            (Value::double(f64::INFINITY), "null"),
            (Value::double(2e20), "2e+20"),
            (Value::bool(true), "true"),
            (Value::string("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\u0001é""#),
            (Value::bytes(b"hi!".to_vec()), r#""aGkh""#),
            (Value::bytes(vec![]), r#""""#),
            (Value::unix_timestamp(1_640_995_200), "1640995200"),
            (Value::int64_list(vec![1, -2]), "[1,-2]"),
            (Value::int64_list(vec![]), "[]"),
            (Value::float_list(vec![0.5, f32::NAN]), "[0.5,null]"),
            (Value::double_list(vec![0.25]), "[0.25]"),
            (
                Value::string_list(vec!["x".into(), "y".into()]),
                r#"["x","y"]"#,
            ),
            (Value::bytes_list(vec![vec![0xff]]), r#"["/w=="]"#),
            (Value::bool_list(vec![false]), "[false]"),
            (Value::unix_timestamp_list(vec![0, 60]), "[0,60]"),
            (Val::Int64SetVal(Int64List { val: vec![3] }).into(), "[3]"),
            (
                Val::MapVal(map_of(&[("b", Value::int32(1)), ("a", Value::NULL)])).into(),
                r#"{"a":null,"b":1}"#,
            ),
            (
                Val::MapListVal(MapList {
                    val: vec![map_of(&[("k", Value::string("v"))])],
                })
                .into(),
                r#"[{"k":"v"}]"#,
            ),
        ];
        for (value, expected) in cases {
            let mut text = String::from("prefix");
            write_value_json(&value, &mut text);
            assert_eq!(&text["prefix".len()..], expected, "{value:?}");
            // The serde form is the same JSON value (number formatting may differ).
            let parsed: serde_json::Value = serde_json::from_str(expected).unwrap();
            assert_eq!(value_to_json(&value), parsed, "{value:?}");
        }
    }
}
