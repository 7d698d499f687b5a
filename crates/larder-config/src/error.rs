//! Errors returned while loading and validating `feature_store.yaml`.

use std::fmt;
use std::path::PathBuf;

/// Name of the environment variable that can hold the whole config, base64-encoded.
pub const YAML_BASE64_VAR: &str = "FEATURE_STORE_YAML_BASE64";

/// Everything that can go wrong while loading a repo config.
///
/// Every variant is the user's to fix (a missing file, a bad value, an unset variable).
/// Variants that carry a `source_name` display as `<source>:<line>: <message>` when the
/// line is known, where `<source>` is the file path as given or [`YAML_BASE64_VAR`].
/// Variants holding several problems display one per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No config file at the expected place.
    #[error(
        "`{}` not found (run `larder init` to create a feature repo, or pass `-c <repo dir>` or `-f <config file>`)",
        path.display()
    )]
    NotFound { path: PathBuf },

    /// The config file exists but could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `FEATURE_STORE_YAML_BASE64` is set but is not valid base64.
    #[error(
        "`{YAML_BASE64_VAR}` is not valid base64 ({})",
        describe_base64(source)
    )]
    Base64 {
        #[source]
        source: base64::DecodeError,
    },

    /// The config text is not UTF-8.
    #[error("{source_name}: the config is not valid UTF-8 text")]
    NotUtf8 { source_name: String },

    /// Environment substitution failed; holds every problem found in the file, in order.
    #[error("{}", Lines { source_name, items: errors })]
    Substitution {
        source_name: String,
        errors: Vec<SubstitutionError>,
    },

    /// The text is not valid YAML (after substitution; lines match the original file).
    #[error("{}", Located { source_name, line: *line, column: *column, message })]
    Yaml {
        source_name: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    /// Valid YAML, but the settings are wrong; holds every problem found, in file order.
    #[error("{}", Lines { source_name, items: issues })]
    Invalid {
        source_name: String,
        issues: Vec<Issue>,
    },
}

/// base64's own messages are capitalized sentences; this keeps ours in house style.
fn describe_base64(err: &base64::DecodeError) -> String {
    use base64::DecodeError as E;
    let shown = |byte: u8| char::from(byte).escape_default().to_string();
    match err {
        E::InvalidByte(offset, byte) => {
            format!("invalid character `{}` at position {offset}", shown(*byte))
        }
        E::InvalidLastSymbol(offset, byte) => {
            format!(
                "invalid last character `{}` at position {offset}",
                shown(*byte)
            )
        }
        E::InvalidLength(len) => format!("{len} characters is not a valid length"),
        E::InvalidPadding => "invalid padding".to_owned(),
    }
}

/// One problem found by environment substitution. `Display` gives the message without
/// the file and line; [`ConfigError::Substitution`] adds them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstitutionError {
    /// `${NAME}` or `$NAME` names a variable that is not set, and no default is given.
    #[error(
        "environment variable `{name}` is not set (give a default with `${{{name}:-value}}` or set it)"
    )]
    UnsetVariable { line: usize, name: String },

    /// A `${` without its closing `}` on the same line (or an unclosed quoted default).
    #[error("unterminated `${{` (missing closing `}}` on this line)")]
    Unterminated { line: usize },

    /// A `${...}` that is not one of the accepted forms.
    #[error(
        "invalid substitution `{text}` (expected `${{NAME}}`, `${{NAME:-default}}` or `${{NAME:\"default\"}}`; write `$$` for a literal `$`)"
    )]
    InvalidExpression { line: usize, text: String },

    /// A variable's value contains a line break, which would shift every later line number.
    #[error(
        "environment variable `{name}` contains a line break, which substitution does not allow"
    )]
    LineBreakInValue { line: usize, name: String },
}

impl SubstitutionError {
    /// 1-based line of the original file.
    pub fn line(&self) -> usize {
        match self {
            Self::UnsetVariable { line, .. }
            | Self::Unterminated { line }
            | Self::InvalidExpression { line, .. }
            | Self::LineBreakInValue { line, .. } => *line,
        }
    }
}

/// One validation problem in a parsed config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// 1-based line in the original file, when known.
    pub line: Option<usize>,
    /// 1-based column in the substituted text, when known.
    pub column: Option<usize>,
    /// Dotted path of the setting concerned (`online_store.port`), when there is one.
    pub key: Option<String>,
    /// What is wrong, lowercase, without file or line.
    pub message: String,
}

impl Issue {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            line: None,
            column: None,
            key: None,
            message: message.into(),
        }
    }

    pub(crate) fn at(mut self, line: usize, column: usize) -> Self {
        // Line 0 is how saphyr marks an unknown location.
        if line > 0 {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }

    pub(crate) fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
}

/// Something displayed as one line of a multi-problem error.
trait LineItem {
    fn line(&self) -> Option<usize>;
    fn message(&self) -> String;
}

impl LineItem for SubstitutionError {
    fn line(&self) -> Option<usize> {
        Some(SubstitutionError::line(self))
    }
    fn message(&self) -> String {
        self.to_string()
    }
}

impl LineItem for Issue {
    fn line(&self) -> Option<usize> {
        self.line
    }
    fn message(&self) -> String {
        self.message.clone()
    }
}

struct Lines<'a, T> {
    source_name: &'a str,
    items: &'a [T],
}

impl<T: LineItem> fmt::Display for Lines<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            let message = item.message();
            let located = Located {
                source_name: self.source_name,
                line: item.line(),
                column: None,
                message: &message,
            };
            write!(f, "{located}")?;
        }
        Ok(())
    }
}

struct Located<'a> {
    source_name: &'a str,
    line: Option<usize>,
    column: Option<usize>,
    message: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "{}:{line}:{column}: {}", self.source_name, self.message)
            }
            (Some(line), None) => write!(f, "{}:{line}: {}", self.source_name, self.message),
            _ => write!(f, "{}: {}", self.source_name, self.message),
        }
    }
}
