//! `larder serve`: the feature server on a TCP (or TLS) listener until SIGTERM/SIGINT.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use larder_server::{Server, ServerOptions};

use crate::cli::ServeArgs;

/// HTTP workers when `--workers` is not given: one per core, twice that on the embedded
/// SQLite store. Its reads block their worker, and every read transaction takes a mutex
/// shared by the whole process (SQLite's `unixShmLock`): with a spare worker per core, a
/// core whose worker waits runs another. 1 entity x 15 features on 2 cores shared with wrk:
/// 4 workers served 34.0k-34.2k requests/s at concurrency 8 and 43.9k at 64, against
/// 30.0k-31.0k and 39.0k with 2. From Redis, 4 served 24.5k against 25.2k-26.2k at 8.
fn default_workers(store: &larder::FeatureStore) -> usize {
    let cores = ServerOptions::default().workers;
    match store.config().online_store {
        Some(larder::config::OnlineStoreConfig::Sqlite(_)) => 2 * cores,
        _ => cores,
    }
}

pub async fn run(open: larder::OpenOptions, args: ServeArgs) -> Result<ExitCode> {
    if args.registry_ttl_sec == 0 {
        anyhow::bail!("--registry-ttl-sec must be at least 1");
    }
    let store = larder::FeatureStore::open(&open)?;
    let project = store.project().to_string();
    let options = ServerOptions {
        registry_ttl: Duration::from_secs(args.registry_ttl_sec),
        request_timeout: Duration::from_secs(args.request_timeout_sec.max(1)),
        max_body_bytes: args.max_body_mib.max(1) << 20,
        shutdown_delay: Duration::from_secs(args.shutdown_delay_sec),
        drain_timeout: Duration::from_secs(args.drain_timeout_sec),
        workers: args
            .workers
            .map_or_else(|| default_workers(&store), usize::from),
    };
    let server = Server::new(store, options)
        .await
        .with_context(|| format!("cannot serve project `{project}`"))?;
    // An IPv6 address needs brackets before the port.
    let address = if args.host.contains(':') && !args.host.starts_with('[') {
        format!("[{}]:{}", args.host, args.port)
    } else {
        format!("{}:{}", args.host, args.port)
    };
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let announce = |scheme: &str| -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "Serving project `{project}` on {scheme}://{local}")?;
        out.flush().context("cannot write to stdout")
    };
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(larder_server::tls::server_config(cert, key)?),
        _ => None,
    };
    announce(if tls.is_some() { "https" } else { "http" })?;
    server
        .serve(listener, tls, larder_server::shutdown_signal())
        .await
        .context("the server failed")?;
    Ok(ExitCode::SUCCESS)
}
