mod registry_conformance;
mod sql_fixtures;
mod sql_store;
mod store_conformance;
