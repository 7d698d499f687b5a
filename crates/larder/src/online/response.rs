//! The result of an online read and its JSON forms: Feast's `OnlineResponse.to_dict` and the
//! column-oriented body of `POST /get-online-features` (feast-behaviour.md §7, §8.1).

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

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
        let item = self.json_item();
        &item[2..item.len() - 1]
    }

    /// `,"PRESENT"`: the name as a JSON string after a comma, as a status list writes it.
    fn json_item(self) -> &'static str {
        match self {
            FieldStatus::Present => ",\"PRESENT\"",
            FieldStatus::NullValue => ",\"NULL_VALUE\"",
            FieldStatus::NotFound => ",\"NOT_FOUND\"",
            FieldStatus::OutsideMaxAge => ",\"OUTSIDE_MAX_AGE\"",
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

/// One output column of a response, borrowed from it: a value, a status and an event time
/// per entity row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeatureVector<'a> {
    pub name: &'a str,
    pub values: &'a [Value],
    pub statuses: &'a [FieldStatus],
    /// Event times in microseconds since the epoch; 0 for join keys and missing values.
    pub event_timestamps: &'a [i64],
}

impl FeatureVector<'_> {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The output names of a plan's features, in response order, and the same names as the
/// JSON array items a response's `metadata` lists (escaped once per plan, not per request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OutputNames {
    names: Vec<String>,
    /// `"a","b"`: each name as a JSON string, comma-separated.
    json: String,
}

impl OutputNames {
    pub(crate) fn new(names: Vec<String>) -> Self {
        let mut json = String::new();
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            write_json_str(name, "", &mut json);
        }
        OutputNames { names, json }
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

/// The cells of whole columns, column after column: a column of `rows` rows is `rows`
/// consecutive entries of each vector.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Cells {
    pub values: Vec<Value>,
    pub statuses: Vec<FieldStatus>,
    pub event_timestamps: Vec<i64>,
}

impl Cells {
    pub(crate) fn with_capacity(cells: usize) -> Self {
        Cells {
            values: Vec::with_capacity(cells),
            statuses: Vec::with_capacity(cells),
            event_timestamps: Vec::with_capacity(cells),
        }
    }

    pub(crate) fn push(&mut self, value: Value, status: FieldStatus, event_ts: i64) {
        self.values.push(value);
        self.statuses.push(status);
        self.event_timestamps.push(event_ts);
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    /// Appends column `c` of `self` (columns of `rows` rows) to `out`, moving its values.
    pub(crate) fn move_column(&mut self, c: usize, rows: usize, out: &mut Cells) {
        let range = c * rows..(c + 1) * rows;
        out.values
            .extend(self.values[range.clone()].iter_mut().map(std::mem::take));
        out.statuses
            .extend_from_slice(&self.statuses[range.clone()]);
        out.event_timestamps
            .extend_from_slice(&self.event_timestamps[range]);
    }
}

/// The answer to an online request, column-oriented: one column per output name, one entry
/// per entity row. The request's join key columns come first, then the features of each
/// view in order of first reference, each view's features in request order. The cells of
/// all columns share three vectors (values, statuses, event times), column after column.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OnlineResponse {
    /// The echoed join key columns' names, in request order.
    key_names: Vec<String>,
    /// The plan's feature output names.
    feature_names: Arc<OutputNames>,
    rows: usize,
    cells: Cells,
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
    /// A response of `rows` rows with the key columns `key_names` (cells to come) and the
    /// features `feature_names`, with room for all its cells.
    pub(crate) fn with_names(
        key_names: Vec<String>,
        feature_names: Arc<OutputNames>,
        rows: usize,
    ) -> Self {
        let columns = key_names.len() + feature_names.len();
        OnlineResponse {
            key_names,
            feature_names,
            rows,
            cells: Cells::with_capacity(columns * rows),
        }
    }

    /// The cells, to append whole columns to in response order.
    pub(crate) fn cells_mut(&mut self) -> &mut Cells {
        &mut self.cells
    }

    /// Number of entity rows.
    pub fn num_rows(&self) -> usize {
        self.rows
    }

    /// Number of output columns (join keys and features).
    pub fn num_columns(&self) -> usize {
        self.key_names.len() + self.feature_names.len()
    }

    /// The output column names, in response order.
    pub fn feature_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.key_names
            .iter()
            .chain(&self.feature_names.names)
            .map(String::as_str)
    }

    /// The columns, in response order.
    pub fn columns(&self) -> impl ExactSizeIterator<Item = FeatureVector<'_>> + '_ {
        (0..self.num_columns()).map(|i| self.vector(i, self.name_at(i).unwrap_or_default()))
    }

    /// Column `i` in response order.
    pub fn column_at(&self, i: usize) -> Option<FeatureVector<'_>> {
        Some(self.vector(i, self.name_at(i)?))
    }

    fn name_at(&self, i: usize) -> Option<&str> {
        match i.checked_sub(self.key_names.len()) {
            None => self.key_names.get(i),
            Some(f) => self.feature_names.names.get(f),
        }
        .map(String::as_str)
    }

    /// Column `i`, named `name`. A response without rows has empty columns.
    fn vector<'a>(&'a self, i: usize, name: &'a str) -> FeatureVector<'a> {
        let range = i * self.rows..(i + 1) * self.rows;
        let cells = &self.cells;
        FeatureVector {
            name,
            values: cells.values.get(range.clone()).unwrap_or_default(),
            statuses: cells.statuses.get(range.clone()).unwrap_or_default(),
            event_timestamps: cells.event_timestamps.get(range).unwrap_or_default(),
        }
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<FeatureVector<'_>> {
        let i = self.feature_names().position(|n| n == name)?;
        self.column_at(i)
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
        for (i, vector) in self.columns().enumerate() {
            let name = vector.name;
            if i > 0 {
                out.push(',');
            }
            write_json_str(name, "", out);
            out.push(':');
            write_values(vector.values, out);
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
                write_statuses(vector.statuses, out);
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
        for (i, name) in self.key_names.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_str(name, "", out);
        }
        if !self.key_names.is_empty() && !self.feature_names.names.is_empty() {
            out.push(',');
        }
        out.push_str(&self.feature_names.json);
        out.push_str("]},\"results\":[");
        // The features of a view share their rows' event times, and join keys and missing
        // values all have the epoch: a time written before, for the same row or just before,
        // is copied, not formatted again.
        let mut by_row: Vec<(i64, Range<usize>)> = Vec::with_capacity(self.rows);
        let mut last: Option<(i64, Range<usize>)> = None;
        for (i, vector) in self.columns().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            if !vector.is_empty() {
                out.push_str("\"values\":");
                write_values(vector.values, out);
                out.push_str(",\"statuses\":");
                write_statuses(vector.statuses, out);
                out.push_str(",\"event_timestamps\":[");
                for (row, &micros) in vector.event_timestamps.iter().enumerate() {
                    if row > 0 {
                        out.push(',');
                    }
                    let written = [by_row.get(row), last.as_ref()]
                        .into_iter()
                        .flatten()
                        .find(|(at, _)| *at == micros)
                        .map(|(_, text)| text.clone());
                    let text = match written {
                        Some(text) => {
                            out.extend_from_within(text.clone());
                            text
                        }
                        None => {
                            let start = out.len();
                            write_rfc3339(micros, out);
                            start..out.len()
                        }
                    };
                    if row < by_row.len() {
                        by_row[row] = (micros, text.clone());
                    } else {
                        by_row.push((micros, text.clone()));
                    }
                    last = Some((micros, text));
                }
                out.push(']');
            }
            out.push('}');
        }
        out.push_str("]}");
    }

    /// A guess at the JSON size, on the high side: growing the output copies all of it
    /// (Feast's body for 15 numbers and strings per entity, with statuses and event times,
    /// takes about 51 bytes a cell; 48 made a 100-entity body grow once, 3% of its request).
    fn estimated_json_len(&self) -> usize {
        64 + self.num_columns() * 48 + self.cells.len() * 80
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

/// `["PRESENT","NOT_FOUND",...]`: each status one copy of its quoted name and its comma.
fn write_statuses(statuses: &[FieldStatus], out: &mut String) {
    out.push('[');
    for (i, status) in statuses.iter().enumerate() {
        let item = status.json_item();
        out.push_str(if i == 0 { &item[1..] } else { item });
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
        // 2021-12-31T23:00:00Z
        let t = 1_640_991_600_000_000;
        let mut response = OnlineResponse::with_names(
            vec!["driver_id".into()],
            Arc::new(OutputNames::new(vec![
                "conv_rate".into(),
                "name \"q\"".into(),
            ])),
            2,
        );
        for (value, status, ts) in [
            (Value::int64(1001), Present, 0),
            (Value::int64(1002), Present, 0),
            (Value::float(0.703_726_35), Present, t),
            (Value::default(), NotFound, 0),
            (Value::string("é\n"), OutsideMaxAge, t + 500_000),
            (Value::default(), NullValue, t - 1),
        ] {
            response.cells_mut().push(value, status, ts);
        }
        response
    }

    #[test]
    fn metadata_lists_keys_then_features() {
        let features = Arc::new(OutputNames::new(vec!["a".into(), "b\\".into()]));
        let mut out = String::new();
        OnlineResponse::with_names(Vec::new(), features.clone(), 0).write_http_json(&mut out);
        assert_eq!(
            out,
            r#"{"metadata":{"feature_names":["a","b\\"]},"results":[{},{}]}"#
        );
        out.clear();
        OnlineResponse::with_names(vec!["k1".into(), "k2".into()], features, 0)
            .write_http_json(&mut out);
        assert_eq!(
            out,
            r#"{"metadata":{"feature_names":["k1","k2","a","b\\"]},"results":[{},{},{},{}]}"#
        );
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
            response.column("conv_rate").map(|c| c.statuses.to_vec()),
            Some(vec![Present, NotFound])
        );
    }

    /// Event times repeat within rows and columns; copied or formatted, each is its own.
    #[test]
    fn repeated_event_times_are_each_written_right() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let times = [0, 1_640_991_600_000_000, 1_640_991_600_500_000, -1, 7];
        for rows in [1, 2, 7] {
            let names: Vec<String> = (0..5).map(|f| format!("f{f}")).collect();
            let mut response = OnlineResponse::with_names(
                vec!["k".into()],
                Arc::new(OutputNames::new(names)),
                rows,
            );
            let mut expected = Vec::new();
            for _ in 0..6 * rows {
                let micros = times[(next() % times.len() as u64) as usize];
                response.cells_mut().push(Value::int64(1), Present, micros);
                expected.push(Json::String(
                    chrono::DateTime::from_timestamp_micros(micros)
                        .expect("in range")
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                ));
            }
            let mut body = String::new();
            response.write_http_json(&mut body);
            let parsed: Json = serde_json::from_str(&body).expect("valid JSON");
            let written: Vec<Json> = (0..6)
                .flat_map(|c| {
                    parsed["results"][c]["event_timestamps"]
                        .as_array()
                        .expect("times")
                        .clone()
                })
                .collect();
            assert_eq!(written, expected, "{rows} rows");
        }
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
