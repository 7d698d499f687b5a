//! `larder get-online-features`: the latest feature values of a few entities, as JSON.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde_json::Value as Json;

use crate::print;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("wanted").required(true).args(["features", "feature_service"])))]
pub struct OnlineArgs {
    /// One entity row, `KEY=VALUE[,KEY=VALUE...]`; repeat for more rows (all naming the same
    /// keys). A value reads as JSON when it is a JSON number, boolean or quoted string, else
    /// as a string; it is then converted to the entity's type.
    #[arg(
        short = 'e',
        long = "entity",
        value_name = "KEY=VALUE[,...]",
        required = true,
        value_parser = parse_entity_row
    )]
    pub entities: Vec<EntityRow>,
    /// Features to fetch, as `view:feature` (repeat, or separate with commas).
    #[arg(long = "features", short = 'F', value_name = "VIEW:FEATURE", value_delimiter = ',', num_args = 1..)]
    pub features: Vec<String>,
    /// Fetch the features of this feature service.
    #[arg(long, value_name = "NAME")]
    pub feature_service: Option<String>,
    /// Name features `view__feature`.
    #[arg(long)]
    pub full_feature_names: bool,
    /// Add `NAME__ts` with each value's event time in epoch seconds.
    #[arg(long)]
    pub timestamps: bool,
    /// Add `NAME__status` with each value's status (PRESENT, NOT_FOUND, ...).
    #[arg(long)]
    pub statuses: bool,
    /// Print the feature server's response body (names, values, statuses, RFC 3339 times).
    #[arg(long, conflicts_with_all = ["timestamps", "statuses"])]
    pub response: bool,
}

/// One `-e` row: its keys and values in the order given.
#[derive(Clone, Debug, PartialEq)]
pub struct EntityRow(Vec<(String, Json)>);

pub async fn run(open: larder::OpenOptions, args: OnlineArgs) -> Result<ExitCode> {
    let store = larder::FeatureStore::open(&open)?;
    let entities =
        larder::EntityColumns::from_rows(args.entities.into_iter().map(|row| row.0).collect())?;
    let features = match &args.feature_service {
        Some(name) => larder::FeatureSelection::Service(name.clone()),
        None => larder::FeatureSelection::Refs(
            args.features
                .iter()
                .map(|f| f.trim().parse())
                .collect::<Result<Vec<larder::types::FeatureRef>, _>>()?,
        ),
    };
    let response = store
        .get_online_features(larder::OnlineFeaturesRequest {
            features,
            entities,
            full_feature_names: args.full_feature_names,
        })
        .await?;
    let mut json = String::new();
    if args.response {
        response.write_http_json(&mut json);
    } else {
        let options = larder::DictOptions {
            event_timestamps: args.timestamps,
            statuses: args.statuses,
        };
        response.write_dict_json(options, &mut json);
    }
    print(pretty(&json))?;
    Ok(ExitCode::SUCCESS)
}

/// Parses one `-e` argument.
fn parse_entity_row(text: &str) -> Result<EntityRow, String> {
    let mut pairs: Vec<(String, Json)> = Vec::new();
    for part in split_pairs(text)? {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!("`{part}` is not KEY=VALUE"));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("`{part}` has no key before `=`"));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(format!("key `{key}` is given twice"));
        }
        pairs.push((key.to_owned(), parse_value(value)));
    }
    Ok(EntityRow(pairs))
}

/// Splits at commas outside double-quoted JSON strings.
fn split_pairs(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(format!("`{text}` has an unterminated quoted string"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// A JSON number, boolean or string literal as such; anything else as the text itself.
fn parse_value(text: &str) -> Json {
    match serde_json::from_str::<Json>(text) {
        Ok(json @ (Json::Number(_) | Json::Bool(_) | Json::String(_))) => json,
        _ => Json::String(text.to_owned()),
    }
}

/// Indents compact JSON as `serde_json::to_string_pretty` does, keeping the key order
/// (the response's column order) that a `serde_json::Map` would sort away.
fn pretty(compact: &str) -> String {
    let mut out = String::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        (0..depth).for_each(|_| out.push_str("  "));
    };
    let (mut quoted, mut escaped) = (false, false);
    let mut chars = compact.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                if chars.peek().is_some_and(|&n| n == '}' || n == ']') {
                    out.extend(chars.next());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn entity_rows() {
        let ok = [
            ("driver_id=1001", vec![("driver_id", json!(1001))]),
            (
                "driver_id=\"1001\", name=Ann,flag=true,x=1.5",
                vec![
                    ("driver_id", json!("1001")),
                    ("name", json!("Ann")),
                    ("flag", json!(true)),
                    ("x", json!(1.5)),
                ],
            ),
            (
                r#"a="x,y=\"z\"",b="#,
                vec![("a", json!("x,y=\"z\"")), ("b", json!(""))],
            ),
            ("a=null", vec![("a", json!("null"))]),
        ];
        for (text, pairs) in ok {
            let expected: Vec<(String, Json)> =
                pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            assert_eq!(parse_entity_row(text), Ok(EntityRow(expected)), "{text}");
        }
        for (text, message) in [
            ("driver_id", "`driver_id` is not KEY=VALUE"),
            ("=1", "`=1` has no key before `=`"),
            ("a=1,a=2", "key `a` is given twice"),
            ("a=\"1", "`a=\"1` has an unterminated quoted string"),
        ] {
            assert_eq!(parse_entity_row(text), Err(message.to_owned()), "{text}");
        }
    }

    #[test]
    fn pretty_matches_serde_json_and_keeps_order() {
        let compact = r#"{"b":[1,{"x":"a,b:[c]\"}"},[]],"a":{},"c":"é\n"}"#;
        let expected = r#"{
  "b": [
    1,
    {
      "x": "a,b:[c]\"}"
    },
    []
  ],
  "a": {},
  "c": "é\n"
}"#;
        assert_eq!(pretty(compact), expected);
    }
}
