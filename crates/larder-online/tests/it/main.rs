//! Integration tests of the online stores: the conformance suite run against every backend,
//! then each backend's own cases.

#[macro_use]
mod conformance;
mod redis;
mod sqlite;
