//! Settings of the Redis online store, and Feast's `connection_string` format.
//!
//! Feast writes a Redis location as `host:port[,host2:port2][,key=value...]`, for example
//! `redis.internal:6379,ssl=true,password=secret,db=1`. The `host:port` items are the server
//! (standalone), the startup nodes (cluster) or the sentinels (sentinel); the `key=value`
//! items are client options. [`RedisConfig::parse`] reads that form into typed settings.

use std::time::Duration;

use crate::error::OnlineError;

/// How the Redis deployment is reached (Feast's `redis_type`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (`redis_type: redis`); only the first `host:port` is used.
    Standalone,
    /// Redis Cluster (`redis_type: redis_cluster`); every `host:port` is a startup node.
    Cluster,
    /// Sentinel-managed primary (`redis_type: redis_sentinel`); every `host:port` is a
    /// sentinel, `master` names the monitored primary.
    Sentinel { master: String },
}

/// A `host:port` item of the connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisNode {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for RedisNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Everything the Redis online store needs, parsed and checked once.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub topology: RedisTopology,
    pub nodes: Vec<RedisNode>,
    /// `db=N` (standalone and sentinel only; a cluster has database 0 only).
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `ssl=true`: TLS to the servers (and to the sentinels).
    pub tls: bool,
    /// `ssl_cert_reqs=none`: TLS without verifying the server's certificate and name.
    pub tls_insecure: bool,
    /// `EXPIRE` set on an entity's hash each time a row of it is written.
    pub key_ttl: Option<Duration>,
    /// On `update_infra`, scan the keyspace and delete the fields of dropped views.
    pub full_scan_for_deletion: bool,
    /// Write without the newest-wins check (faster, may overwrite newer values).
    pub skip_dedup: bool,
    /// Connecting (TCP + TLS + AUTH) gives up after this long.
    pub connect_timeout: Duration,
    /// A command (or pipeline) gives up after this long.
    pub response_timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("topology", &self.topology)
            .field("nodes", &self.nodes)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("key_ttl", &self.key_ttl)
            .field("skip_dedup", &self.skip_dedup)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// A standalone server at `host:port` with the defaults.
    pub fn standalone(host: impl Into<String>, port: u16) -> Self {
        RedisConfig {
            topology: RedisTopology::Standalone,
            nodes: vec![RedisNode {
                host: host.into(),
                port,
            }],
            db: 0,
            username: None,
            password: None,
            tls: false,
            tls_insecure: false,
            key_ttl: None,
            full_scan_for_deletion: true,
            skip_dedup: false,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
        }
    }

    /// Reads Feast's `connection_string` (`host:port[,host:port...][,key=value...]`) for
    /// `topology`. Accepted options: `password`, `username`, `db`, `ssl`, `ssl_cert_reqs`
    /// (`none` | `required`), `socket_connect_timeout` and `socket_timeout` (seconds).
    /// Values may be JSON-quoted, as Feast decodes them with `json.loads`.
    ///
    /// Errors: [`OnlineError::InvalidRequest`] naming the item that is not understood.
    pub fn parse(topology: RedisTopology, connection_string: &str) -> Result<Self, OnlineError> {
        let mut config = RedisConfig::standalone("localhost", 6379);
        config.topology = topology;
        config.nodes.clear();
        for item in connection_string.split(',').map(str::trim) {
            if item.is_empty() {
                continue;
            }
            match item.split_once('=') {
                Some((key, value)) => config.set_option(key.trim(), unquote(value.trim()))?,
                None => config.nodes.push(parse_node(item)?),
            }
        }
        if config.nodes.is_empty() {
            return Err(OnlineError::invalid(
                "redis `connection_string` names no `host:port`",
            ));
        }
        if config.topology == RedisTopology::Cluster && config.db != 0 {
            return Err(OnlineError::invalid(
                "redis `connection_string`: `db` must be 0 with `redis_type: redis_cluster` \
                 (a cluster has one database)",
            ));
        }
        Ok(config)
    }

    fn set_option(&mut self, key: &str, value: &str) -> Result<(), OnlineError> {
        let bad = |what: &str| {
            OnlineError::invalid(format!(
                "redis `connection_string`: `{key}` must be {what}, found `{}`",
                if key == "password" { "***" } else { value }
            ))
        };
        match key {
            "password" => self.password = Some(value.to_owned()),
            "username" => self.username = Some(value.to_owned()),
            "db" => self.db = value.parse().map_err(|_| bad("an integer"))?,
            "ssl" => self.tls = parse_bool(value).ok_or_else(|| bad("true or false"))?,
            "ssl_cert_reqs" => {
                self.tls_insecure = match value.to_ascii_lowercase().as_str() {
                    "none" | "cert_none" => true,
                    "required" | "cert_required" => false,
                    _ => return Err(bad("`none` or `required`")),
                }
            }
            "socket_connect_timeout" => {
                self.connect_timeout = parse_seconds(value).ok_or_else(|| bad("seconds"))?
            }
            "socket_timeout" => {
                self.response_timeout = parse_seconds(value).ok_or_else(|| bad("seconds"))?
            }
            other => {
                return Err(OnlineError::invalid(format!(
                    "redis `connection_string`: unknown option `{other}` (known: password, \
                     username, db, ssl, ssl_cert_reqs, socket_connect_timeout, socket_timeout)"
                )));
            }
        }
        Ok(())
    }

    /// Where the store points, for messages (never the password).
    pub fn describe(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(ToString::to_string).collect();
        match &self.topology {
            RedisTopology::Standalone => format!("redis at {}", nodes.join(",")),
            RedisTopology::Cluster => format!("redis cluster at {}", nodes.join(",")),
            RedisTopology::Sentinel { master } => {
                format!("redis primary `{master}` via sentinels {}", nodes.join(","))
            }
        }
    }
}

fn parse_node(item: &str) -> Result<RedisNode, OnlineError> {
    let bad = || {
        OnlineError::invalid(format!(
            "redis `connection_string`: `{item}` is not `host:port` or `key=value`"
        ))
    };
    let (host, port) = match item.strip_prefix('[') {
        // `[::1]:6379`
        Some(rest) => {
            let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
            (host, port)
        }
        None => match item.rsplit_once(':') {
            Some((host, port)) => (host, port),
            // Feast's parser needs the port too; so do we.
            None => return Err(bad()),
        },
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(RedisNode {
        host: host.to_owned(),
        port,
    })
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn parse_seconds(value: &str) -> Option<Duration> {
    let secs: f64 = value.parse().ok()?;
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_feast_connection_strings() {
        let c = RedisConfig::parse(
            RedisTopology::Standalone,
            "redis.internal:6380,ssl=true,password=s3cret,db=2,username=app",
        )
        .unwrap();
        assert_eq!(
            c.nodes,
            vec![RedisNode {
                host: "redis.internal".into(),
                port: 6380
            }]
        );
        assert!(c.tls);
        assert_eq!(c.db, 2);
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert_eq!(c.username.as_deref(), Some("app"));
        assert!(!format!("{c:?}").contains("s3cret"));

        let c = RedisConfig::parse(
            RedisTopology::Cluster,
            "n1:7000, n2:7001,[::1]:7002,ssl=\"false\"",
        )
        .unwrap();
        assert_eq!(c.nodes.len(), 3);
        assert_eq!(c.nodes[2].host, "::1");
        assert_eq!(c.nodes[2].to_string(), "[::1]:7002");
        assert!(!c.tls);
    }

    #[test]
    fn names_what_is_wrong() {
        let err = |s: &str| {
            RedisConfig::parse(RedisTopology::Standalone, s)
                .unwrap_err()
                .to_string()
        };
        assert!(err("localhost").contains("`localhost` is not `host:port`"));
        assert!(err("localhost:notaport").contains("`localhost:notaport`"));
        assert!(err("localhost:6379,db=x").contains("`db` must be an integer"));
        assert!(err("localhost:6379,color=blue").contains("unknown option `color`"));
        assert!(err("ssl=true").contains("names no `host:port`"));
        assert!(
            RedisConfig::parse(RedisTopology::Cluster, "a:1,db=3")
                .unwrap_err()
                .to_string()
                .contains("`db` must be 0")
        );
    }
}
