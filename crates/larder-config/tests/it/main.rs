//! Integration tests of `larder-config`: parsing tables and loading rules.

mod load;
mod parse;

use std::collections::HashMap;
use std::path::Path;

use larder_config::{ConfigError, RepoConfig, parse_str};

/// Environment seen by every parsing test.
pub fn test_env() -> HashMap<String, String> {
    [
        ("BENCHDATA", "/bench/data"),
        ("REDIS_HOST", "redis.internal"),
        ("PG_PASSWORD", "s3cret"),
        ("EMPTY", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Parses `yaml` as `feature_store.yaml` of the repo `/repo`; errors as their display text.
pub fn parse(yaml: &str) -> Result<RepoConfig, String> {
    let vars = test_env();
    let env = |k: &str| vars.get(k).cloned();
    parse_str(yaml, "feature_store.yaml", Path::new("/repo"), &env)
        .map_err(|e: ConfigError| e.to_string())
}
