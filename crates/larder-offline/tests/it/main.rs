//! Integration tests of the file offline store and the point-in-time join.

mod cases;
mod errors;
mod harness;
mod latest;
mod latest_oracle;
mod latest_partial;
mod latest_spill;
mod oracle;
mod spill;
