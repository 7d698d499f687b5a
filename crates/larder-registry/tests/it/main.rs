mod registry_conformance;
mod store_conformance;
