//! Integration tests of definition parsing, validation and plan diffs.

mod definitions;
mod plan;
mod source_validation;
mod no_panics;
