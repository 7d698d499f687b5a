//! Settings of the Postgres online store.
//!
//! Not a serde type: `online_store: {type: postgres, ...}` is parsed and validated by
//! `larder-config` (Feast's keys), and the facade builds this from it. The timeouts have no
//! YAML keys (Feast has none); their defaults suit a feature server and a materialization.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::OnlineError;

/// How to reach the database of a [`PostgresOnlineStore`](super::PostgresOnlineStore).
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Host name, IP address, or the folder of a Unix socket (starting with `/`).
    pub host: String,
    pub port: u16,
    pub database: String,
    /// Schema holding the view tables; created on first use when missing.
    pub db_schema: String,
    pub user: String,
    /// Never printed (`Debug` shows `***`).
    pub password: Option<String>,
    pub sslmode: SslMode,
    /// CA certificates (PEM) the server certificate must chain to. With `require` or
    /// `prefer`, giving it turns on chain verification, as in libpq.
    pub sslrootcert_path: Option<PathBuf>,
    /// Client certificate chain (PEM), sent when the server asks for one.
    pub sslcert_path: Option<PathBuf>,
    /// Private key (PEM) of `sslcert_path`.
    pub sslkey_path: Option<PathBuf>,
    pub conn_type: ConnType,
    /// Connections opened when the store is first used (`pool` only).
    pub min_conn: u32,
    /// Most connections open at once (`pool` only; `singleton` uses one). 0 is read as 1.
    pub max_conn: u32,
    /// Idle time before TCP keepalive probes start; `None` keeps the system default.
    pub keepalives_idle: Option<Duration>,
    /// How the connections name themselves to the server (`pg_stat_activity`).
    pub application_name: String,
    /// Bound on opening one connection (TCP, TLS and authentication).
    pub connect_timeout: Duration,
    /// Bound on one store call (waiting for a connection included). It is also set as the
    /// server's `statement_timeout`, so the server stops work nobody waits for.
    pub query_timeout: Duration,
}

impl PostgresConfig {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(120);

    /// Feast's defaults for a database reached at `host`.
    pub fn new(host: impl Into<String>, database: impl Into<String>) -> Self {
        PostgresConfig {
            host: host.into(),
            port: 5432,
            database: database.into(),
            db_schema: "public".to_owned(),
            user: "postgres".to_owned(),
            password: None,
            sslmode: SslMode::Prefer,
            sslrootcert_path: None,
            sslcert_path: None,
            sslkey_path: None,
            conn_type: ConnType::Pool,
            min_conn: 1,
            max_conn: 10,
            keepalives_idle: None,
            application_name: "larder".to_owned(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            query_timeout: Self::DEFAULT_QUERY_TIMEOUT,
        }
    }

    /// The settings of a `postgresql://user:password@host:port/database?sslmode=...` URL
    /// (tests and tools); everything else keeps its default.
    pub fn from_url(url: &str) -> Result<Self, OnlineError> {
        let parsed = tokio_postgres::Config::from_str(url).map_err(|e| {
            OnlineError::invalid(format!("invalid Postgres URL (`{}`): {e}", mask_url(url)))
        })?;
        let host = match parsed.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".to_owned(),
        };
        let mut config = PostgresConfig::new(host, parsed.get_dbname().unwrap_or("postgres"));
        if let Some(&port) = parsed.get_ports().first() {
            config.port = port;
        }
        if let Some(user) = parsed.get_user() {
            config.user = user.to_owned();
        }
        config.password = parsed
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned());
        config.sslmode = match parsed.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        Ok(config)
    }

    /// `host:port/database`, how errors name the server.
    pub fn endpoint(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("db_schema", &self.db_schema)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("sslmode", &self.sslmode)
            .field("sslrootcert_path", &self.sslrootcert_path)
            .field("sslcert_path", &self.sslcert_path)
            .field("sslkey_path", &self.sslkey_path)
            .field("conn_type", &self.conn_type)
            .field("min_conn", &self.min_conn)
            .field("max_conn", &self.max_conn)
            .field("keepalives_idle", &self.keepalives_idle)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .finish()
    }
}

/// libpq's `sslmode`, with rustls underneath.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not checked unless
    /// `sslrootcert_path` is given. libpq's default.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not checked unless `sslrootcert_path` is given.
    Require,
    /// TLS, the certificate must chain to `sslrootcert_path` (or `~/.postgresql/root.crt`).
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = OnlineError;

    /// libpq's names; `allow` is read as `prefer` (rustls has no "plain first" mode).
    fn from_str(s: &str) -> Result<Self, OnlineError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(OnlineError::invalid(format!(
                    "unknown `sslmode` `{other}` (expected disable, allow, prefer, require, \
                     verify-ca or verify-full)"
                )));
            }
        })
    }
}

/// Feast's `conn_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConnType {
    /// One connection; calls take turns on it.
    Singleton,
    /// Up to `max_conn` connections.
    #[default]
    Pool,
}

/// `scheme://user:pw@host` → `scheme://user:***@host`, for error messages.
fn mask_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => match url[start..start + at].find(':') {
            Some(colon) => format!("{}***{}", &url[..start + colon + 1], &url[start + at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_settings_and_masking() {
        let config = PostgresConfig::from_url("postgresql://bob:secret@db.local:6543/features")
            .expect("a valid URL");
        assert_eq!(config.endpoint(), "db.local:6543/features");
        assert_eq!(
            (config.user.as_str(), config.password.as_deref()),
            ("bob", Some("secret"))
        );
        assert!(!format!("{config:?}").contains("secret"));
        assert_eq!(
            mask_url("postgresql://bob:secret@h/db"),
            "postgresql://bob:***@h/db"
        );
        assert_eq!(mask_url("postgresql://bob@h/db"), "postgresql://bob@h/db");
        let err = "verify_full".parse::<SslMode>().expect_err("unknown mode");
        assert!(err.to_string().contains("`verify_full`"), "{err}");
        assert_eq!("verify-ca".parse::<SslMode>().ok(), Some(SslMode::VerifyCa));
    }
}
