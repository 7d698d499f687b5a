//! String wrappers that keep credentials out of `Debug` output and logs.

use std::fmt;

use serde::Deserialize;

/// A password or token. `Debug` and `Display` print `***`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A path, URL or connection string that may embed credentials
/// (`postgresql://user:pw@host/db`, `localhost:6379,password=pw`).
///
/// `Debug` and `Display` mask the password of a URL's user info and the value of any
/// `password=` item; [`ConnectionString::expose`] gives the text as written.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ConnectionString(String);

impl ConnectionString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The text as written in the config, credentials included.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The text with credentials replaced by `***`.
    pub fn masked(&self) -> String {
        mask_password_items(&mask_url_password(&self.0))
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.masked(), f)
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// `scheme://user:pw@host` → `scheme://user:***@host`.
fn mask_url_password(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &text[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return text.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return text.to_owned();
    };
    format!(
        "{}{}:***{}",
        &text[..authority_start],
        &authority[..colon],
        &text[authority_start + at..]
    )
}

/// `...password=pw,...` (also after `?`, `&`, `;` or a space) → `...password=***,...`.
fn mask_password_items(text: &str) -> String {
    const KEY: &str = "password=";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search_from = 0;
    while let Some(found) = lower[search_from..].find(KEY) {
        let key_start = search_from + found;
        let value_start = key_start + KEY.len();
        search_from = value_start;
        let at_item_start = key_start == 0
            || matches!(
                text.as_bytes()[key_start - 1],
                b',' | b'?' | b'&' | b';' | b' '
            );
        if !at_item_start {
            continue;
        }
        let value_len = text[value_start..]
            .find([',', '&', ';', ' '])
            .unwrap_or(text.len() - value_start);
        out.push_str(&text[copied..value_start]);
        out.push_str("***");
        copied = value_start + value_len;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_credentials() {
        let cases = [
            ("localhost:6379", "localhost:6379"),
            (
                "redis:6379,password=s3cret,ssl=true",
                "redis:6379,password=***,ssl=true",
            ),
            ("r1:1,r2:2,PASSWORD=x", "r1:1,r2:2,PASSWORD=***"),
            (
                "postgresql://u:s3cret@db:5432/reg",
                "postgresql://u:***@db:5432/reg",
            ),
            (
                "postgresql://u:p@ss@db/reg?sslmode=require",
                "postgresql://u:***@db/reg?sslmode=require",
            ),
            ("postgresql://u@db/reg", "postgresql://u@db/reg"),
            (
                "postgresql://db/reg?user=u&password=pw&x=1",
                "postgresql://db/reg?user=u&password=***&x=1",
            ),
            (
                "host=db user=u password=pw dbname=x",
                "host=db user=u password=*** dbname=x",
            ),
            ("s3://bucket/registry.db", "s3://bucket/registry.db"),
            ("data/my_password=file.db", "data/my_password=file.db"),
        ];
        for (input, masked) in cases {
            let c = ConnectionString::new(input);
            assert_eq!(c.masked(), masked, "input: {input}");
            assert_eq!(format!("{c:?}"), format!("{masked:?}"));
            assert_eq!(c.expose(), input);
        }
        assert_eq!(format!("{:?}", Secret::new("pw")), "***");
        assert_eq!(Secret::new("pw").expose(), "pw");
    }
}
