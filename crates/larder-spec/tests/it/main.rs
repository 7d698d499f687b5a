//! Integration tests of definition parsing, validation and plan diffs.

mod definitions;
mod no_panics;
mod plan;
mod source_validation;
