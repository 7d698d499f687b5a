//! Definition errors: each names its file, line and object; a repo reports all of them at once.

use std::fmt;
use std::path::PathBuf;

/// One problem in a definition file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinitionError {
    /// The file, relative to the repo folder when it is inside it.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem is not tied to a line (e.g. an unreadable file).
    pub line: u64,
    /// The object, e.g. "feature view `driver_stats`"; empty for file-level problems.
    pub object: String,
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        f.write_str(": ")?;
        if !self.object.is_empty() {
            write!(f, "{}: ", self.object)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a repo, in file and line order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct DefinitionErrors(pub Vec<DefinitionError>);

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        writeln!(
            f,
            "{count} error{} in the feature definitions:",
            if count == 1 { "" } else { "s" }
        )?;
        for (i, error) in self.0.iter().enumerate() {
            if i + 1 < count {
                writeln!(f, "  {error}")?;
            } else {
                write!(f, "  {error}")?;
            }
        }
        Ok(())
    }
}

impl DefinitionErrors {
    /// The messages alone, one string per error (handy for tests and JSON output).
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}
