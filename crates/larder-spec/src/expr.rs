//! A light scan of on-demand view expressions: which column names they use.
//!
//! Expressions are SQL scalar expressions evaluated later by the query engine; at apply time
//! Larder only checks that they are lexically sound and that every column they name exists.

/// SQL words that are not column names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "is",
    "null",
    "true",
    "false",
    "case",
    "when",
    "then",
    "else",
    "end",
    "in",
    "between",
    "like",
    "ilike",
    "as",
    "cast",
    "try_cast",
    "distinct",
    "interval",
    "int",
    "integer",
    "bigint",
    "smallint",
    "float",
    "double",
    "real",
    "decimal",
    "varchar",
    "text",
    "string",
    "boolean",
    "bool",
    "date",
    "timestamp",
    "precision",
];

/// The column identifiers used by `expression`, in order of first use, or a description of
/// why the expression cannot be scanned (unbalanced quotes or parentheses).
///
/// Function names (an identifier followed by `(`) and SQL keywords are not columns.
/// Double-quoted identifiers are columns; single-quoted text is a string literal.
pub fn expression_identifiers(expression: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = expression.chars().collect();
    let mut found: Vec<String> = Vec::new();
    let mut depth: i64 = 0;
    let mut i = 0;
    let mut push = |name: String| {
        if !found.contains(&name) {
            found.push(name);
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("a string literal is not closed (missing `'`)".into()),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => i += 2,
                    Some('\'') => break,
                    Some(_) => i += 1,
                }
            }
            i += 1;
        } else if c == '"' {
            let start = i + 1;
            let Some(len) = chars[start..].iter().position(|&ch| ch == '"') else {
                return Err("a quoted identifier is not closed (missing `\"`)".into());
            };
            push(chars[start..start + len].iter().collect());
            i = start + len + 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let is_call = chars.get(next) == Some(&'(');
            let after_dot = start > 0 && chars[start - 1] == '.';
            if !is_call && !after_dot && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                push(word);
            }
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            if c == '(' {
                depth += 1;
            } else if c == ')' {
                depth -= 1;
                if depth < 0 {
                    return Err("a `)` has no matching `(`".into());
                }
            }
            i += 1;
        }
    }
    if depth != 0 {
        return Err("a `(` is not closed".into());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_identifiers() {
        let cases: &[(&str, Result<&[&str], &str>)] = &[
            ("conv_rate + bonus", Ok(&["conv_rate", "bonus"])),
            ("conv_rate * 2.5e3 + conv_rate", Ok(&["conv_rate"])),
            (
                "CASE WHEN a IS NULL THEN 0 ELSE abs(b) END",
                Ok(&["a", "b"]),
            ),
            ("CAST(x AS DOUBLE) || 'it''s y'", Ok(&["x"])),
            ("\"odd name\" + 1", Ok(&["odd name"])),
            (
                "coalesce(driver_hourly_stats__conv_rate, 0)",
                Ok(&["driver_hourly_stats__conv_rate"]),
            ),
            ("(a + b", Err("a `(` is not closed")),
            ("a + b)", Err("a `)` has no matching `(`")),
            ("'abc", Err("a string literal is not closed (missing `'`)")),
        ];
        for (expression, expected) in cases {
            let got = expression_identifiers(expression);
            match expected {
                Ok(names) => assert_eq!(got.unwrap(), *names, "{expression}"),
                Err(message) => assert_eq!(got.unwrap_err(), *message, "{expression}"),
            }
        }
    }
}
