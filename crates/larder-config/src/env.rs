//! Environment variable substitution on the raw config text, before YAML parsing.
//!
//! Feast runs the text through Python's `os.path.expandvars`; Larder keeps its `${VAR}` and
//! `$VAR` forms, adds defaults, and refuses to leave an unset variable in place:
//!
//! | text | result |
//! |---|---|
//! | `${VAR}`, `$VAR` | the value of `VAR` (an empty value stays empty); error if unset |
//! | `${VAR:-default}` | the value, or `default` when `VAR` is unset **or empty** (as in a shell); the default runs to the first `}` |
//! | `${VAR:"default"}` | the same, with a double-quoted default that may hold `}`, `#` and spaces; `\"` and `\\` are escapes, any other `\` is kept |
//! | `$$` | a literal `$` |
//! | `$` before anything else (`$1`, `5$`, `$-`) | kept as is |
//!
//! `VAR` is `[A-Za-z_][A-Za-z0-9_]*`. Rules that differ from a shell or from Feast:
//!
//! - Lines whose first non-blank character is `#` (full-line comments) are copied
//!   untouched, so a commented-out `${OLD_VAR}` needs no value. Trailing comments
//!   (`port: 1 # $X`) are substituted. A line starting with `#` inside a YAML block
//!   scalar (`|`) counts as a comment too.
//! - Values and defaults are inserted verbatim: a `$` inside them is not expanded again,
//!   and no YAML quoting is added (quote the reference in YAML if the value may contain
//!   `:` or `#`).
//! - A value containing a line break is an error: it would shift the line numbers of
//!   every later YAML error. Substitution never adds or removes lines, so line numbers
//!   always match the file on disk (columns after a substitution refer to the new text).
//! - Every problem in the file is reported, not only the first.

use crate::error::SubstitutionError;

/// Substitutes environment variables in `text`, looking them up with `env`.
///
/// Returns all problems found, in file order, when any variable is unset (without a
/// default), holds a line break, or a `${...}` is malformed.
pub fn substitute(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<SubstitutionError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (index, raw_line) in text.split_inclusive('\n').enumerate() {
        let (body, ending) = split_line_ending(raw_line);
        if body.trim_start_matches([' ', '\t']).starts_with('#') {
            out.push_str(raw_line);
            continue;
        }
        substitute_line(body, index + 1, env, &mut out, &mut errors);
        out.push_str(ending);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn split_line_ending(line: &str) -> (&str, &str) {
    let body = line.trim_end_matches(['\n', '\r']);
    (body, &line[body.len()..])
}

/// A parsed `$` reference.
enum Reference<'a> {
    /// `$$`.
    Dollar,
    /// `$NAME` or `${NAME}`.
    Plain(&'a str),
    /// `${NAME:-default}` or `${NAME:"default"}`.
    WithDefault(&'a str, String),
}

fn substitute_line(
    line: &str,
    line_no: usize,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    errors: &mut Vec<SubstitutionError>,
) {
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (reference, used) = match parse_reference(tail, line_no) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                out.push('$');
                rest = &tail[1..];
                continue;
            }
            Err(error) => {
                errors.push(error);
                // Nothing sensible follows a broken reference on this line.
                return;
            }
        };
        rest = &tail[used..];
        match reference {
            Reference::Dollar => out.push('$'),
            Reference::Plain(name) => match env(name) {
                Some(value) => push_value(out, errors, line_no, name, &value),
                None => errors.push(SubstitutionError::UnsetVariable {
                    line: line_no,
                    name: name.to_owned(),
                }),
            },
            Reference::WithDefault(name, default) => match env(name) {
                Some(value) if !value.is_empty() => {
                    push_value(out, errors, line_no, name, &value);
                }
                _ => out.push_str(&default),
            },
        }
    }
    out.push_str(rest);
}

fn push_value(
    out: &mut String,
    errors: &mut Vec<SubstitutionError>,
    line: usize,
    name: &str,
    value: &str,
) {
    if value.contains(['\n', '\r']) {
        errors.push(SubstitutionError::LineBreakInValue {
            line,
            name: name.to_owned(),
        });
    } else {
        out.push_str(value);
    }
}

/// Parses the reference at the start of `text` (which starts with `$`). Returns the
/// reference and the number of bytes it spans, or `None` for a `$` that stays literal.
fn parse_reference(
    text: &str,
    line: usize,
) -> Result<Option<(Reference<'_>, usize)>, SubstitutionError> {
    let after = &text[1..];
    if after.starts_with('$') {
        return Ok(Some((Reference::Dollar, 2)));
    }
    if let Some(inner) = after.strip_prefix('{') {
        return parse_braced(text, inner, line).map(Some);
    }
    let name_len = name_length(after);
    if name_len == 0 {
        return Ok(None);
    }
    Ok(Some((Reference::Plain(&after[..name_len]), 1 + name_len)))
}

/// Parses what follows `${`; `text` is the whole reference starting at `$`.
fn parse_braced<'a>(
    text: &'a str,
    inner: &'a str,
    line: usize,
) -> Result<(Reference<'a>, usize), SubstitutionError> {
    // `${` is two bytes.
    const OPEN: usize = 2;
    let invalid = || match text.find('}') {
        Some(close) => SubstitutionError::InvalidExpression {
            line,
            text: text[..=close].to_owned(),
        },
        None => SubstitutionError::Unterminated { line },
    };
    let name_len = name_length(inner);
    let name = &inner[..name_len];
    let after_name = &inner[name_len..];
    if after_name.is_empty() {
        return Err(SubstitutionError::Unterminated { line });
    }
    if name_len == 0 {
        return Err(invalid());
    }
    if after_name.starts_with('}') {
        return Ok((Reference::Plain(name), OPEN + name_len + 1));
    }
    if let Some(default_text) = after_name.strip_prefix(":-") {
        let Some(close) = default_text.find('}') else {
            return Err(SubstitutionError::Unterminated { line });
        };
        let used = OPEN + name_len + 2 + close + 1;
        return Ok((
            Reference::WithDefault(name, default_text[..close].to_owned()),
            used,
        ));
    }
    if let Some(quoted) = after_name.strip_prefix(":\"") {
        let (default, quoted_len) =
            parse_quoted(quoted).ok_or(SubstitutionError::Unterminated { line })?;
        let after_quote = &quoted[quoted_len..];
        if after_quote.is_empty() {
            return Err(SubstitutionError::Unterminated { line });
        }
        if !after_quote.starts_with('}') {
            return Err(invalid());
        }
        let used = OPEN + name_len + 2 + quoted_len + 1;
        return Ok((Reference::WithDefault(name, default), used));
    }
    Err(invalid())
}

/// Reads a double-quoted default up to and including its closing quote. Returns the
/// unescaped text and the bytes consumed, or `None` when the quote is not closed.
fn parse_quoted(text: &str) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, i + 1)),
            '\\' => match chars.next() {
                Some((_, escaped @ ('"' | '\\'))) => value.push(escaped),
                // Unknown escapes keep their backslash, so Windows paths survive.
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => return None,
            },
            _ => value.push(c),
        }
    }
    None
}

/// Length in bytes of the variable name at the start of `text` (0 when there is none).
fn name_length(text: &str) -> usize {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => bytes
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const VARS: &[(&str, &str)] = &[
        ("HOST", "redis.internal"),
        ("PORT", "6379"),
        ("EMPTY", ""),
        ("DOLLAR", "pa$$word$HOST"),
        ("_UNDER_1", "u"),
    ];

    /// (input, expected output)
    const OK_CASES: &[(&str, &str)] = &[
        ("a: ${HOST}", "a: redis.internal"),
        ("a: $HOST", "a: redis.internal"),
        ("a: $HOST:$PORT", "a: redis.internal:6379"),
        ("a: ${HOST}x", "a: redis.internalx"),
        ("a: $_UNDER_1.", "a: u."),
        ("a: ${EMPTY}|", "a: |"),
        ("a: $EMPTY|", "a: |"),
        ("a: ${HOST:-other}", "a: redis.internal"),
        ("a: ${UNSET:-other}", "a: other"),
        ("a: ${EMPTY:-other}", "a: other"),
        ("a: ${UNSET:-}", "a: "),
        (
            "a: ${UNSET:-with space and $HOST}",
            "a: with space and $HOST",
        ),
        ("a: ${HOST:\"other\"}", "a: redis.internal"),
        ("a: ${UNSET:\"x } y\"}", "a: x } y"),
        ("a: ${EMPTY:\"dflt\"}", "a: dflt"),
        ("a: ${UNSET:\"q\\\"uote \\\\ back\"}", "a: q\"uote \\ back"),
        ("a: ${UNSET:\"C:\\data\"}", "a: C:\\data"),
        ("a: ${UNSET:\"# not a comment\"}", "a: # not a comment"),
        ("a: $$HOST", "a: $HOST"),
        ("a: $${HOST}", "a: ${HOST}"),
        ("a: $$$HOST", "a: $redis.internal"),
        (
            "a: $1 and 5$ and $-x and $ and $.",
            "a: $1 and 5$ and $-x and $ and $.",
        ),
        ("a: trailing$", "a: trailing$"),
        ("a: ${DOLLAR}", "a: pa$$word$HOST"),
        ("a: $DOLLAR", "a: pa$$word$HOST"),
        (
            "# ${UNSET} in a comment\na: 1",
            "# ${UNSET} in a comment\na: 1",
        ),
        (
            "   # indented $UNSET comment",
            "   # indented $UNSET comment",
        ),
        ("a: 1 # trailing $HOST", "a: 1 # trailing redis.internal"),
        (
            "a: ${HOST}\r\nb: $PORT\r\n",
            "a: redis.internal\r\nb: 6379\r\n",
        ),
        ("a: ${HOST}\n\nb: $PORT\n", "a: redis.internal\n\nb: 6379\n"),
        ("unicodé: ${HOST} ✓", "unicodé: redis.internal ✓"),
    ];

    #[test]
    fn substitutes_every_syntax() {
        let vars = env_of(VARS);
        let env = |k: &str| vars.get(k).cloned();
        for (input, expected) in OK_CASES {
            let got = substitute(input, &env);
            assert_eq!(got.as_deref(), Ok(*expected), "input: {input:?}");
        }
    }

    /// (input, expected errors as `line: message`)
    const ERROR_CASES: &[(&str, &[&str])] = &[
        (
            "a: ${UNSET}",
            &[
                "1: environment variable `UNSET` is not set (give a default with `${UNSET:-value}` or set it)",
            ],
        ),
        (
            "a: $HOSTx",
            &[
                "1: environment variable `HOSTx` is not set (give a default with `${HOSTx:-value}` or set it)",
            ],
        ),
        (
            "project: p\nregistry: $REG\n# $C\nonline:\n  url: ${URL}:${PORT}/${DB}\n",
            &[
                "2: environment variable `REG` is not set (give a default with `${REG:-value}` or set it)",
                "5: environment variable `URL` is not set (give a default with `${URL:-value}` or set it)",
                "5: environment variable `DB` is not set (give a default with `${DB:-value}` or set it)",
            ],
        ),
        (
            "a: ${HOST",
            &["1: unterminated `${` (missing closing `}` on this line)"],
        ),
        (
            "a: ${UNSET:-x\nb: }",
            &["1: unterminated `${` (missing closing `}` on this line)"],
        ),
        (
            "a: ${UNSET:\"x}\nb: 1\nc: $NOPE",
            &[
                "1: unterminated `${` (missing closing `}` on this line)",
                "3: environment variable `NOPE` is not set (give a default with `${NOPE:-value}` or set it)",
            ],
        ),
        (
            "a: ${",
            &["1: unterminated `${` (missing closing `}` on this line)"],
        ),
        (
            "a: ${HOST:",
            &["1: unterminated `${` (missing closing `}` on this line)"],
        ),
        (
            "a: ${1}",
            &[
                "1: invalid substitution `${1}` (expected `${NAME}`, `${NAME:-default}` or `${NAME:\"default\"}`; write `$$` for a literal `$`)",
            ],
        ),
        (
            "a: ${}",
            &[
                "1: invalid substitution `${}` (expected `${NAME}`, `${NAME:-default}` or `${NAME:\"default\"}`; write `$$` for a literal `$`)",
            ],
        ),
        (
            "a: ${HOST-x}",
            &[
                "1: invalid substitution `${HOST-x}` (expected `${NAME}`, `${NAME:-default}` or `${NAME:\"default\"}`; write `$$` for a literal `$`)",
            ],
        ),
        (
            "a: ${HOST:\"x\"y}",
            &[
                "1: invalid substitution `${HOST:\"x\"y}` (expected `${NAME}`, `${NAME:-default}` or `${NAME:\"default\"}`; write `$$` for a literal `$`)",
            ],
        ),
        (
            "a: $MULTI\nb: ${MULTI:-x}",
            &[
                "1: environment variable `MULTI` contains a line break, which substitution does not allow",
                "2: environment variable `MULTI` contains a line break, which substitution does not allow",
            ],
        ),
    ];

    #[test]
    fn reports_every_error_with_its_line() {
        let mut vars = env_of(VARS);
        vars.insert("MULTI".to_owned(), "one\ntwo".to_owned());
        let env = |k: &str| vars.get(k).cloned();
        for (input, expected) in ERROR_CASES {
            let errors = match substitute(input, &env) {
                Ok(text) => panic!("input {input:?} substituted to {text:?}, expected errors"),
                Err(errors) => errors,
            };
            let got: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {e}", e.line()))
                .collect();
            assert_eq!(got, *expected, "input: {input:?}");
        }
    }

    #[test]
    fn keeps_line_count() {
        let vars = env_of(VARS);
        let env = |k: &str| vars.get(k).cloned();
        let input = "a: ${HOST:-x}\n# $X\nb: $PORT\n\n";
        let out = substitute(input, &env).map_err(|e| format!("{e:?}"));
        assert_eq!(
            out.map(|s| s.lines().count()),
            Ok(input.lines().count()),
            "substitution must not add or remove lines"
        );
    }

    proptest::proptest! {
        /// Arbitrary text never panics the parser, and a successful substitution keeps
        /// every line where it was.
        #[test]
        fn never_panics_and_keeps_lines(text in "[a-zA-Z_0-9${}:\\\\\"#\r\n -]{0,64}") {
            let vars = env_of(VARS);
            let env = |k: &str| vars.get(k).cloned();
            match substitute(&text, &env) {
                Ok(out) => proptest::prop_assert_eq!(
                    out.matches('\n').count(),
                    text.matches('\n').count()
                ),
                Err(errors) => {
                    let lines = text.matches('\n').count() + 1;
                    proptest::prop_assert!(!errors.is_empty());
                    proptest::prop_assert!(errors.iter().all(|e| (1..=lines).contains(&e.line())));
                }
            }
        }
    }
}
