//! The feature server over real HTTP on `127.0.0.1:0`, against a materialized temp repo.

mod harness;
mod online;
mod operations;
mod push;
mod tls;
