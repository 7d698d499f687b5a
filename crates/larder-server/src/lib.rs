//! The Larder feature server: Feast's HTTP API over a `FeatureStore`.
