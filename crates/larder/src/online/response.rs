//! The result of an online read and its JSON forms: Feast's `OnlineResponse.to_dict` and the
//! column-oriented body of `POST /get-online-features` (feast-behaviour.md §7, §8.1).

use std::fmt::Write as _;
use std::ops::Range;

use larder_types::feast::{Value, write_value_json};

/// The status of one returned value, as Feast's `FieldStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldStatus {
    /// The store holds a value for the entity, within the view's ttl.
    Present,
    /// The store holds the feature for the entity, and its value is null.
    NullValue,
    /// The entity is not in the store, or its row lacks the feature.
    NotFound,
    /// The value is older than the view's ttl; it is still returned.
    OutsideMaxAge,
}

impl FieldStatus {
    /// The enum name Feast's JSON uses (`PRESENT`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FieldStatus::Present => "PRESENT",
            FieldStatus::NullValue => "NULL_VALUE",
            FieldStatus::NotFound => "NOT_FOUND",
            FieldStatus::OutsideMaxAge => "OUTSIDE_MAX_AGE",
        }
    }

    /// The number of `feast.serving.FieldStatus` (0 is `INVALID`, never produced).
    pub fn proto_number(self) -> i32 {
        match self {
            FieldStatus::Present => 1,
            FieldStatus::NullValue => 2,
            FieldStatus::NotFound => 3,
            FieldStatus::OutsideMaxAge => 4,
        }
    }
}

impl std::fmt::Display for FieldStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One output column: a value, a status and an event time per entity row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureVector {
    pub values: Vec<Value>,
    pub statuses: Vec<FieldStatus>,
    /// Event times in microseconds since the epoch; 0 for join keys and missing values.
    pub event_timestamps: Vec<i64>,
}

impl FeatureVector {
    pub(crate) fn with_capacity(rows: usize) -> Self {
        FeatureVector {
            values: Vec::with_capacity(rows),
            statuses: Vec::with_capacity(rows),
            event_timestamps: Vec::with_capacity(rows),
        }
    }

    pub(crate) fn push(&mut self, value: Value, status: FieldStatus, event_ts: i64) {
        self.values.push(value);
        self.statuses.push(status);
        self.event_timestamps.push(event_ts);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The answer to an online request, column-oriented: `results[i]` is the column named
/// `feature_names[i]`, one entry per entity row. The request's join key columns come
/// first, then the features of each view in order of first reference, each view's
/// features in request order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OnlineResponse {
    pub feature_names: Vec<String>,
    pub results: Vec<FeatureVector>,
}

/// What [`OnlineResponse::write_dict_json`] adds next to each column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DictOptions {
    /// `name__ts`: event times in epoch seconds, as Feast's `include_event_timestamps`.
    pub event_timestamps: bool,
    /// `name__status`: status names (a Larder addition).
    pub statuses: bool,
}

impl OnlineResponse {
    /// Number of entity rows.
    pub fn num_rows(&self) -> usize {
        self.results.first().map_or(0, FeatureVector::len)
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&FeatureVector> {
        let i = self.feature_names.iter().position(|n| n == name)?;
        self.results.get(i)
    }

    /// Feast's `OnlineResponse.to_dict(include_event_timestamps)` as JSON text:
    /// `{name: [values]}`, with `name__ts: [epoch seconds]` after each column when asked.
    pub fn to_dict_json(&self, include_event_timestamps: bool) -> String {
        let mut out = String::with_capacity(self.estimated_json_len());
        self.write_dict_json(
            DictOptions {
                event_timestamps: include_event_timestamps,
                statuses: false,
            },
            &mut out,
        );
        out
    }

    /// Appends the `to_dict` JSON (compact, columns in response order) to `out`.
    pub fn write_dict_json(&self, options: DictOptions, out: &mut String) {
        out.push('{');
        for (i, (name, vector)) in self.feature_names.iter().zip(&self.results).enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_str(name, "", out);
            out.push(':');
            write_values(&vector.values, out);
            if options.event_timestamps {
                out.push(',');
                write_json_str(name, "__ts", out);
                out.push_str(":[");
                for (j, &micros) in vector.event_timestamps.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    out.push_str(itoa::Buffer::new().format(micros.div_euclid(1_000_000)));
                }
                out.push(']');
            }
            if options.statuses {
                out.push(',');
                write_json_str(name, "__status", out);
                out.push(':');
                write_statuses(&vector.statuses, out);
            }
        }
        out.push('}');
    }

    /// Appends the body Feast's feature server returns for `POST /get-online-features`:
    /// `{"metadata":{"feature_names":[...]},"results":[{"values":[...],"statuses":[...],
    /// "event_timestamps":[...]}, ...]}`, compact. Timestamps are RFC 3339 in UTC with `Z`,
    /// with 3 or 6 fractional digits only when there is a fraction. Like protobuf's JSON
    /// mapping, an empty list (a request without entity rows) is left out.
    pub fn write_http_json(&self, out: &mut String) {
        out.reserve(self.estimated_json_len());
        out.push_str("{\"metadata\":{\"feature_names\":[");
        for (i, name) in self.feature_names.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_str(name, "", out);
        }
        out.push_str("]},\"results\":[");
        // The features of a view share their rows' event times: a time written before is
        // copied, not formatted again.
        let mut last_ts: Option<(i64, Range<usize>)> = None;
        for (i, vector) in self.results.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            if !vector.is_empty() {
                out.push_str("\"values\":");
                write_values(&vector.values, out);
                out.push_str(",\"statuses\":");
                write_statuses(&vector.statuses, out);
                out.push_str(",\"event_timestamps\":[");
                for (j, &micros) in vector.event_timestamps.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    match &last_ts {
                        Some((last, text)) if *last == micros => {
                            out.extend_from_within(text.clone());
                        }
                        _ => {
                            let start = out.len();
                            write_rfc3339(micros, out);
                            last_ts = Some((micros, start..out.len()));
                        }
                    }
                }
                out.push(']');
            }
            out.push('}');
        }
        out.push_str("]}");
    }

    /// A guess at the JSON size, so the output grows once or twice, not per value.
    fn estimated_json_len(&self) -> usize {
        64 + self.feature_names.len() * 48 + self.results.len() * self.num_rows() * 48
    }
}

fn write_values(values: &[Value], out: &mut String) {
    out.push('[');
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_value_json(value, out);
    }
    out.push(']');
}

fn write_statuses(statuses: &[FieldStatus], out: &mut String) {
    out.push('[');
    for (i, status) in statuses.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(status.as_str());
        out.push('"');
    }
    out.push(']');
}

/// `name` followed by `suffix` as a JSON string, escaped as Python's `json.dumps` with
/// `ensure_ascii=False` does (only `"`, `\` and control characters).
fn write_json_str(name: &str, suffix: &str, out: &mut String) {
    out.push('"');
    for part in [name, suffix] {
        if !part.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            out.push_str(part);
            continue;
        }
        for ch in part.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0c}' => out.push_str("\\f"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
}

/// A timestamp in microseconds as protobuf's JSON mapping writes it, quoted:
/// `"2021-12-31T23:00:00Z"`, `"...:00.500Z"`, `"...:00.000001Z"`. Integer arithmetic only:
/// a response holds one per cell.
pub(crate) fn write_rfc3339(micros: i64, out: &mut String) {
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    let days = micros.div_euclid(MICROS_PER_DAY);
    let of_day = micros.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    if !(1..=9999).contains(&year) {
        // Outside `google.protobuf.Timestamp`'s range, which its JSON mapping rejects.
        out.push_str("null");
        return;
    }
    let seconds = of_day / 1_000_000;
    let fraction = of_day % 1_000_000;
    let mut text = *b"\"0000-00-00T00:00:00.000000Z\"";
    let mut put = |at: usize, value: i64, width: usize| {
        let mut v = value;
        for i in (at..at + width).rev() {
            text[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(1, year, 4);
    put(6, month, 2);
    put(9, day, 2);
    put(12, seconds / 3600, 2);
    put(15, seconds / 60 % 60, 2);
    put(18, seconds % 60, 2);
    let end = if fraction == 0 {
        20
    } else if fraction % 1_000 == 0 {
        put(21, fraction / 1_000, 3);
        24
    } else {
        put(21, fraction, 6);
        27
    };
    text[end] = b'Z';
    text[end + 1] = b'"';
    // Only ASCII digits and punctuation were written.
    out.push_str(std::str::from_utf8(&text[..end + 2]).unwrap_or("null"));
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value as Json, json};

    use super::*;
    use FieldStatus::{NotFound, NullValue, OutsideMaxAge, Present};

    fn sample_response() -> OnlineResponse {
        let vector = |cells: Vec<(Value, FieldStatus, i64)>| {
            let mut v = FeatureVector::default();
            for (value, status, ts) in cells {
                v.push(value, status, ts);
            }
            v
        };
        // 2021-12-31T23:00:00Z
        let t = 1_640_991_600_000_000;
        OnlineResponse {
            feature_names: vec!["driver_id".into(), "conv_rate".into(), "name \"q\"".into()],
            results: vec![
                vector(vec![
                    (Value::int64(1001), Present, 0),
                    (Value::int64(1002), Present, 0),
                ]),
                vector(vec![
                    (Value::float(0.703_726_35), Present, t),
                    (Value::default(), NotFound, 0),
                ]),
                vector(vec![
                    (Value::string("é\n"), OutsideMaxAge, t + 500_000),
                    (Value::default(), NullValue, t - 1),
                ]),
            ],
        }
    }

    #[test]
    fn http_json_is_feasts_column_oriented_body() {
        let mut body = String::new();
        sample_response().write_http_json(&mut body);
        assert_eq!(
            body,
            concat!(
                r#"{"metadata":{"feature_names":["driver_id","conv_rate","name \"q\""]},"results":["#,
                r#"{"values":[1001,1002],"statuses":["PRESENT","PRESENT"],"event_timestamps":["1970-01-01T00:00:00Z","1970-01-01T00:00:00Z"]},"#,
                r#"{"values":[0.7037263512611389,null],"statuses":["PRESENT","NOT_FOUND"],"event_timestamps":["2021-12-31T23:00:00Z","1970-01-01T00:00:00Z"]},"#,
                "{\"values\":[\"é\\n\",null],\"statuses\":[\"OUTSIDE_MAX_AGE\",\"NULL_VALUE\"],\"event_timestamps\":[\"2021-12-31T23:00:00.500Z\",\"2021-12-31T22:59:59.999999Z\"]}",
                "]}"
            )
        );
        let parsed: Json = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(parsed["results"][1]["values"][0], json!(0.7037263512611389));
    }

    #[test]
    fn dict_json_is_feasts_to_dict() {
        let response = sample_response();
        assert_eq!(
            response.to_dict_json(false),
            r#"{"driver_id":[1001,1002],"conv_rate":[0.7037263512611389,null],"name \"q\"":["é\n",null]}"#
        );
        assert_eq!(
            response.to_dict_json(true),
            r#"{"driver_id":[1001,1002],"driver_id__ts":[0,0],"conv_rate":[0.7037263512611389,null],"conv_rate__ts":[1640991600,0],"name \"q\"":["é\n",null],"name \"q\"__ts":[1640991600,1640991599]}"#
        );
        let mut out = String::new();
        response.write_dict_json(
            DictOptions {
                event_timestamps: false,
                statuses: true,
            },
            &mut out,
        );
        assert!(
            out.starts_with(
                r#"{"driver_id":[1001,1002],"driver_id__status":["PRESENT","PRESENT"],"#
            ),
            "{out}"
        );
        assert_eq!(response.num_rows(), 2);
        assert_eq!(
            response.column("conv_rate").map(|c| c.statuses.clone()),
            Some(vec![Present, NotFound])
        );
    }

    #[test]
    fn rfc3339_fractions() {
        for (micros, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1, "1970-01-01T00:00:00.000001Z"),
            (1_000, "1970-01-01T00:00:00.001Z"),
            (-1, "1969-12-31T23:59:59.999999Z"),
            (1_748_736_000_120_000, "2025-06-01T00:00:00.120Z"),
            (1_748_736_000_123_456, "2025-06-01T00:00:00.123456Z"),
        ] {
            let mut out = String::new();
            write_rfc3339(micros, &mut out);
            assert_eq!(out, format!("\"{text}\""), "{micros}");
        }
    }

    #[test]
    fn rfc3339_matches_chrono_across_the_range() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        // 0001-01-01 .. 9999-12-31, whole seconds, ms and µs fractions.
        let (lo, hi) = (-62_135_596_800_000_000_i64, 253_402_300_799_999_999_i64);
        for i in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut micros = lo + (state % (hi - lo) as u64) as i64;
            micros -= micros.rem_euclid([1_000_000, 1_000, 1][i % 3]);
            let mut out = String::new();
            write_rfc3339(micros, &mut out);
            let expected = chrono::DateTime::from_timestamp_micros(micros)
                .expect("in range")
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            assert_eq!(out, format!("\"{expected}\""), "{micros}");
        }
        let mut out = String::new();
        write_rfc3339(hi + 1, &mut out);
        write_rfc3339(lo - 1, &mut out);
        assert_eq!(out, "nullnull");
    }

    #[test]
    fn status_names_and_numbers() {
        let all = [Present, NullValue, NotFound, OutsideMaxAge];
        let names: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"]
        );
        let numbers: Vec<i32> = all.iter().map(|s| s.proto_number()).collect();
        assert_eq!(numbers, [1, 2, 3, 4]);
    }
}
