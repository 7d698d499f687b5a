//! Connections of the Postgres online store: the deadpool pool, TLS through rustls (ring),
//! timeouts, and the mapping of driver errors to [`OnlineError`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError,
    RecyclingMethod, Runtime, TimeoutType,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres::error::SqlState;

use super::config::{ConnType, PostgresConfig, SslMode};
use crate::error::OnlineError;

/// The store name in errors.
pub(super) const STORE: &str = "postgres";

/// A pool of connections to one database, and what errors say about it.
#[derive(Debug)]
pub(super) struct PgPool {
    pool: Pool,
    /// `host:port/database`.
    endpoint: String,
    query_timeout: Duration,
    min_conn: usize,
    warmed: AtomicBool,
}

impl PgPool {
    /// Builds the pool; connects lazily. Errors: [`OnlineError::InvalidRequest`] for TLS
    /// files that cannot be read or parsed.
    pub fn new(config: &PostgresConfig) -> Result<Self, OnlineError> {
        let endpoint = config.endpoint();
        let mut pg = tokio_postgres::Config::new();
        if config.host.starts_with('/') {
            pg.host_path(&config.host);
        } else {
            pg.host(&config.host);
        }
        pg.port(config.port)
            .dbname(&config.database)
            .user(&config.user)
            .application_name(&config.application_name)
            .connect_timeout(config.connect_timeout);
        if let Some(password) = &config.password {
            pg.password(password);
        }
        if let Some(idle) = config.keepalives_idle {
            pg.keepalives(true).keepalives_idle(idle);
        }
        let manager_config = ManagerConfig {
            // A broken connection shows as closed; a ping per checkout would cost a round
            // trip on every read.
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match config.sslmode {
            SslMode::Disable => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
            }
            mode => {
                pg.ssl_mode(if mode == SslMode::Prefer {
                    tokio_postgres::config::SslMode::Prefer
                } else {
                    tokio_postgres::config::SslMode::Require
                });
                let tls = tls_config(config)?;
                Manager::from_config(
                    pg,
                    tokio_postgres_rustls::MakeRustlsConnect::new(tls),
                    manager_config,
                )
            }
        };
        let max = match config.conn_type {
            ConnType::Singleton => 1,
            ConnType::Pool => config.max_conn.max(1) as usize,
        };
        // Set on each new connection (not as startup `options`, which PgBouncer refuses):
        // the server stops what nobody waits for any more, and `IF NOT EXISTS` statements
        // that find their object raise no notice.
        let session = format!(
            "SET statement_timeout = {}; SET client_min_messages = warning",
            config.query_timeout.as_millis()
        );
        let setup = Hook::async_fn(move |client: &mut ClientWrapper, _| {
            let session = session.clone();
            Box::pin(async move {
                client
                    .batch_execute(&session)
                    .await
                    .map_err(HookError::Backend)
            })
        });
        let pool = Pool::builder(manager)
            .post_create(setup)
            .max_size(max)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(config.connect_timeout))
            .wait_timeout(Some(config.query_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| OnlineError::internal(format!("cannot build the Postgres pool: {e}")))?;
        Ok(PgPool {
            pool,
            endpoint,
            query_timeout: config.query_timeout,
            min_conn: match config.conn_type {
                ConnType::Singleton => 1,
                ConnType::Pool => (config.min_conn as usize).min(max),
            },
            warmed: AtomicBool::new(false),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Most connections open at once.
    pub fn max_size(&self) -> usize {
        self.pool.status().max_size
    }

    pub fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    /// The outcome of a call made on `conn` under [`query_timeout`](Self::query_timeout):
    /// a connection whose call timed out is closed rather than returned to the pool, since
    /// its state is unknown.
    pub fn settle<T>(
        &self,
        conn: Object,
        what: &str,
        outcome: Result<Result<T, OnlineError>, tokio::time::error::Elapsed>,
    ) -> Result<T, OnlineError> {
        match outcome {
            Ok(result) => result,
            Err(_) => {
                drop(Object::take(conn));
                Err(OnlineError::Unavailable {
                    store: STORE.to_owned(),
                    retryable: true,
                    source: format!(
                        "{what} at `{}` did not finish within {:?}",
                        self.endpoint, self.query_timeout
                    )
                    .into(),
                })
            }
        }
    }

    /// A pooled connection; waiting for one is bounded by the query timeout, opening one
    /// by the connect timeout.
    pub async fn get(&self) -> Result<Object, OnlineError> {
        let conn = self
            .pool
            .get()
            .await
            .map_err(|e| pool_error(e, &self.endpoint))?;
        if self.min_conn > 1 && !self.warmed.swap(true, Ordering::Relaxed) {
            // Open the other `min_conn - 1` connections in the background, as Feast's pool
            // opens `min_conn` at start.
            let pool = self.pool.clone();
            let extra = self.min_conn - 1;
            tokio::spawn(async move {
                let opened = futures::future::join_all((0..extra).map(|_| pool.get())).await;
                drop(opened);
            });
        }
        Ok(conn)
    }
}

fn pool_error(err: PoolError, endpoint: &str) -> OnlineError {
    match err {
        PoolError::Backend(e) | PoolError::PostCreateHook(HookError::Backend(e)) => {
            connect_error(e, endpoint)
        }
        PoolError::Timeout(kind) => OnlineError::Unavailable {
            store: STORE.to_owned(),
            retryable: true,
            source: match kind {
                TimeoutType::Wait => {
                    format!("no connection to `{endpoint}` became free in time").into()
                }
                TimeoutType::Create | TimeoutType::Recycle => {
                    format!("connecting to `{endpoint}` timed out").into()
                }
            },
        },
        other => OnlineError::internal(format!("the pool of `{endpoint}` failed: {other}")),
    }
}

/// A failure to open a connection: unreachable, refused TLS, bad credentials, no database.
fn connect_error(err: tokio_postgres::Error, endpoint: &str) -> OnlineError {
    let retryable = match err.code() {
        // Credentials, a missing database or role: retrying unchanged cannot help.
        Some(code) => {
            !(code.code().starts_with("28")
                || *code == SqlState::INVALID_CATALOG_NAME
                || *code == SqlState::INSUFFICIENT_PRIVILEGE)
        }
        None => true,
    };
    OnlineError::Unavailable {
        store: STORE.to_owned(),
        retryable,
        source: format!("cannot connect to `{endpoint}`: {}", describe(&err)).into(),
    }
}

/// The driver error with its causes (tokio-postgres' `Display` prints only the kind).
pub(super) fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Maps an error of a statement on `table` to the variant saying who must act.
pub(super) fn query_error(err: tokio_postgres::Error, endpoint: &str, table: &str) -> OnlineError {
    let unavailable = |retryable: bool, err: &tokio_postgres::Error| OnlineError::Unavailable {
        store: STORE.to_owned(),
        retryable,
        source: format!("`{endpoint}`, table `{table}`: {}", describe(err)).into(),
    };
    let Some(code) = err.code() else {
        // Not an answer of the server: the connection broke or the data did not convert.
        if err.is_closed()
            || std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>())
        {
            return unavailable(true, &err);
        }
        return OnlineError::Corrupt {
            message: format!("table `{table}` at `{endpoint}`: {}", describe(&err)),
        };
    };
    let class = &code.code()[..2];
    if *code == SqlState::UNDEFINED_COLUMN
        || *code == SqlState::INVALID_COLUMN_REFERENCE
        || *code == SqlState::DATATYPE_MISMATCH
        || *code == SqlState::WRONG_OBJECT_TYPE
    {
        return OnlineError::IncompatibleTable {
            store: STORE.to_owned(),
            table: table.to_owned(),
            message: describe(&err),
        };
    }
    match class {
        // Connection exceptions, insufficient resources, operator intervention (shutdown,
        // statement timeout), transaction rollbacks (deadlock, serialization).
        "08" | "53" | "57" | "40" | "55" | "58" => unavailable(true, &err),
        // Privileges, read-only server.
        "42" if *code == SqlState::INSUFFICIENT_PRIVILEGE => unavailable(false, &err),
        "25" if *code == SqlState::READ_ONLY_SQL_TRANSACTION => unavailable(false, &err),
        "22" => OnlineError::Corrupt {
            message: format!("table `{table}` at `{endpoint}`: {}", describe(&err)),
        },
        _ => OnlineError::internal(format!(
            "Postgres refused a statement on table `{table}` at `{endpoint}`: {}",
            describe(&err)
        )),
    }
}

/// Whether `err` says the table (or its schema) does not exist.
pub(super) fn is_missing_table(err: &tokio_postgres::Error) -> bool {
    err.code()
        .is_some_and(|c| *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME)
}

/// Whether retrying the transaction may succeed (deadlock, serialization failure).
pub(super) fn is_transient(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

// ----- TLS -----

fn tls_error(message: String) -> OnlineError {
    OnlineError::invalid(message)
}

fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, OnlineError> {
    std::fs::read(path)
        .map_err(|e| tls_error(format!("cannot read {what} `{}`: {e}", path.display())))
}

fn certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, OnlineError> {
    let pem = read_pem(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("{what} `{}` is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!(
            "{what} `{}` holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// libpq's default root certificate file, when it exists.
fn default_root_cert() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = PathBuf::from(home).join(".postgresql/root.crt");
    path.is_file().then_some(path)
}

fn tls_config(config: &PostgresConfig) -> Result<ClientConfig, OnlineError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("cannot set up TLS: {e}")))?;

    let verifying = matches!(config.sslmode, SslMode::VerifyCa | SslMode::VerifyFull);
    let root_path = match (&config.sslrootcert_path, verifying) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(default_root_cert().ok_or_else(|| {
            tls_error(format!(
                "`sslmode: {}` needs `sslrootcert_path` (the CA certificates to trust; \
                 ~/.postgresql/root.crt does not exist)",
                config.sslmode.as_str()
            ))
        })?),
        (None, false) => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match root_path {
        None => larder_pgtls::encrypt_only(&provider),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("root certificate file", &path)? {
                roots.add(cert).map_err(|e| {
                    tls_error(format!(
                        "root certificate file `{}` holds an unusable certificate: {e}",
                        path.display()
                    ))
                })?;
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| tls_error(format!("cannot set up TLS verification: {e}")))?;
            if config.sslmode == SslMode::VerifyFull {
                webpki
            } else {
                larder_pgtls::chain_only(webpki)
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&config.sslcert_path, &config.sslkey_path) {
        (Some(cert), Some(key)) => {
            let chain = certificates("client certificate file", cert)?;
            let pem = read_pem("client key file", key)?;
            let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                tls_error(format!(
                    "client key file `{}` holds no usable private key: {e}",
                    key.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| tls_error(format!("the client certificate is unusable: {e}")))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(tls_error(
            "`sslcert_path` is set but `sslkey_path` is not".to_owned(),
        )),
        (None, Some(_)) => Err(tls_error(
            "`sslkey_path` is set but `sslcert_path` is not".to_owned(),
        )),
    }
}
