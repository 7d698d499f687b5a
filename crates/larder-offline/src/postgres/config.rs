//! Settings of the Postgres offline store and the connection pool built from them.
//!
//! `feature_store.yaml`'s `offline_store: {type: postgres, ...}` block is parsed and checked
//! by `larder-config`; the facade maps it onto [`PostgresOfflineConfig`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_postgres::config::SslMode;

use crate::error::OfflineError;

/// How entity rows given as SQL reach the point-in-time join (Feast's
/// `entity_select_mode`). Entity rows given as a file or as Arrow batches are always
/// uploaded into a temporary table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EntitySelectMode {
    /// Run the entity SQL once into a temporary table, then join against it.
    #[default]
    TempTable,
    /// Inline the entity SQL into the join query as a common table expression.
    EmbedQuery,
}

/// Where the Postgres offline store connects and how it runs.
#[derive(Clone)]
pub struct PostgresOfflineConfig {
    pub host: String,
    pub port: u16,
    pub database: String,
    /// Unqualified table names in sources resolve in this schema (`search_path`).
    pub db_schema: String,
    pub user: String,
    pub password: Option<String>,
    /// libpq's `sslmode`: `disable`, `allow`, `prefer` (the default), `require`,
    /// `verify-ca` or `verify-full`.
    pub sslmode: Option<String>,
    pub sslkey_path: Option<String>,
    pub sslcert_path: Option<String>,
    pub sslrootcert_path: Option<String>,
    pub max_conn: u32,
    pub keepalives_idle: Option<u64>,
    pub connect_timeout: Duration,
    pub entity_select_mode: EntitySelectMode,
    /// Entity files (`--entities FILE`) with relative paths resolve against this folder.
    pub repo_dir: PathBuf,
    /// Rows per Arrow batch of results.
    pub batch_size: usize,
    /// Memory the client-side sort by a derived key may use before it spills to disk
    /// (materialization reads); 256 MiB when `None`.
    pub memory_limit: Option<usize>,
}

impl Default for PostgresOfflineConfig {
    fn default() -> Self {
        PostgresOfflineConfig {
            host: "localhost".into(),
            port: 5432,
            database: "postgres".into(),
            db_schema: "public".into(),
            user: "postgres".into(),
            password: None,
            sslmode: None,
            sslkey_path: None,
            sslcert_path: None,
            sslrootcert_path: None,
            max_conn: 10,
            keepalives_idle: None,
            connect_timeout: Duration::from_secs(10),
            entity_select_mode: EntitySelectMode::TempTable,
            repo_dir: PathBuf::from("."),
            batch_size: 8192,
            memory_limit: None,
        }
    }
}

impl fmt::Debug for PostgresOfflineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOfflineConfig")
            .field("target", &self.target())
            .field("user", &self.user)
            .field("db_schema", &self.db_schema)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("sslmode", &self.sslmode)
            .field("max_conn", &self.max_conn)
            .field("entity_select_mode", &self.entity_select_mode)
            .finish_non_exhaustive()
    }
}

impl PostgresOfflineConfig {
    /// `host:port/database`, for messages (never the password).
    pub fn target(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }

    /// The connection pool (connecting lazily, on first use) and the TLS setting its
    /// connections use, for cancel requests.
    pub(crate) fn pool(&self) -> Result<(Pool, Tls), OfflineError> {
        let invalid = |message: String| OfflineError::Unavailable {
            store: "postgres",
            target: self.target(),
            message,
        };
        let mut pg = tokio_postgres::Config::new();
        pg.host(&self.host)
            .port(self.port)
            .dbname(&self.database)
            .user(&self.user)
            .application_name("larder")
            .connect_timeout(self.connect_timeout)
            // Naive timestamps are UTC; unqualified tables are found in `db_schema`.
            .options(format!(
                "-c TimeZone=UTC -c search_path={}",
                escape_option(&quote_ident(&self.db_schema))
            ));
        if let Some(password) = &self.password {
            pg.password(password);
        }
        if let Some(idle) = self.keepalives_idle {
            pg.keepalives_idle(Duration::from_secs(idle));
        }
        let manager_config = ManagerConfig {
            // Drops temporary tables a cancelled retrieval may have left behind.
            recycling_method: RecyclingMethod::Clean,
        };
        let mode = self.sslmode.as_deref().unwrap_or("prefer");
        let (manager, tls) = match mode {
            "disable" => {
                pg.ssl_mode(SslMode::Disable);
                (
                    Manager::from_config(pg, tokio_postgres::NoTls, manager_config),
                    Tls::None,
                )
            }
            "allow" | "prefer" | "require" | "verify-ca" | "verify-full" => {
                pg.ssl_mode(if matches!(mode, "allow" | "prefer") {
                    SslMode::Prefer
                } else {
                    SslMode::Require
                });
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
                    self.tls_config(mode).map_err(invalid)?,
                );
                (
                    Manager::from_config(pg, tls.clone(), manager_config),
                    Tls::Rustls(tls),
                )
            }
            other => {
                return Err(invalid(format!(
                    "`sslmode` is `{other}`; expected one of disable, allow, prefer, require, verify-ca, verify-full"
                )));
            }
        };
        let pool = Pool::builder(manager)
            .max_size(self.max_conn.max(1) as usize)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(self.connect_timeout))
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok((pool, tls))
    }

    /// rustls settings for `mode`: `allow`/`prefer`/`require` encrypt without checking the
    /// server's certificate (as libpq does, unless a root certificate is given),
    /// `verify-ca` checks it against `sslrootcert_path`, `verify-full` also checks the host
    /// name.
    fn tls_config(&self, mode: &str) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        let root_path = self.sslrootcert_path.clone();
        let verify = matches!(mode, "verify-ca" | "verify-full")
            || (mode == "require" && root_path.is_some());
        let builder = if verify {
            let Some(path) = root_path else {
                return Err(format!(
                    "`sslmode: {mode}` needs `sslrootcert_path` (the CA certificate to check the server against)"
                ));
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("cannot read `sslrootcert_path` `{path}`: {e}"))?
            {
                let cert =
                    cert.map_err(|e| format!("cannot read `sslrootcert_path` `{path}`: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad certificate in `{path}`: {e}"))?;
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
            if mode == "verify-full" {
                builder.with_webpki_verifier(webpki)
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(larder_pgtls::chain_only(webpki))
            }
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(larder_pgtls::encrypt_only(&provider))
        };
        match (&self.sslcert_path, &self.sslkey_path) {
            (Some(cert_path), Some(key_path)) => {
                let certs = CertificateDer::pem_file_iter(cert_path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("cannot read `sslcert_path` `{cert_path}`: {e}"))?;
                let key = PrivateKeyDer::from_pem_file(key_path)
                    .map_err(|e| format!("cannot read `sslkey_path` `{key_path}`: {e}"))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("bad client certificate or key: {e}"))
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err("give both `sslcert_path` and `sslkey_path`, or neither".into()),
        }
    }
}

/// How the pool's connections negotiate TLS; cancel requests open a connection the same way.
#[derive(Clone)]
pub(crate) enum Tls {
    None,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Tls {
    /// Asks the server to stop the query `token`'s connection is running.
    pub(crate) async fn cancel(&self, token: tokio_postgres::CancelToken) {
        let sent = match self {
            Tls::None => token.cancel_query(tokio_postgres::NoTls).await,
            Tls::Rustls(tls) => token.cancel_query(tls.clone()).await,
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "cancelling an abandoned postgres query failed");
        }
    }
}

/// `name` as a quoted SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A value of libpq's `options` setting: spaces and backslashes escaped.
fn escape_option(value: &str) -> String {
    value.replace('\\', "\\\\").replace(' ', "\\ ")
}
