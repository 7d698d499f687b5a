//! Integration tests of the offline stores and the point-in-time join: the shared cases run
//! against the file store and, when `LARDER_TEST_POSTGRES_URL` is set, against Postgres.

mod backends;
mod cases;
mod errors;
mod harness;
mod latest;
mod latest_oracle;
mod latest_partial;
mod latest_spill;
mod oracle;
mod postgres;
mod postgres_random;
mod spill;
