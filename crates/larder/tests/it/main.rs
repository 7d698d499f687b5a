//! Integration tests of the `larder` SDK on temporary feature repositories (one test
//! binary, one module per area).

mod materialize;
mod online;
mod postgres;
mod postgres_offline;
