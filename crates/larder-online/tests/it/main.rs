//! Integration tests of the online stores: the conformance suite run against every backend,
//! then each backend's own cases.

#[macro_use]
mod conformance;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod sqlite;
