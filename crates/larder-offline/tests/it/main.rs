//! Integration tests of the file offline store and the point-in-time join.

mod cases;
mod errors;
mod harness;
mod oracle;
mod spill;
