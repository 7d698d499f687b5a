//! The Larder feature server: Feast's HTTP API over a `FeatureStore`.
//!
//! [`Server::new`] loads the registry snapshot; [`Server::run`] serves on any
//! `axum::serve::Listener` (plain TCP, or [`tls::TlsListener`]) until its shutdown future
//! completes, then drains. Endpoints (feast-behaviour.md §8): `POST /get-online-features`,
//! `POST /push`, `POST /write-to-online-store`, `POST /materialize`,
//! `POST /materialize-incremental`, `GET /health`, `GET /ready`, `GET /metrics`.
//!
//! Shutdown, in order: readiness fails (`/ready` answers 503) while requests are still
//! served for `shutdown_delay` (so a load balancer stops sending traffic), then the
//! listener closes (new connections are refused), in-flight requests finish (at most
//! `drain_timeout`), background materializations are awaited (same bound), and
//! [`Server::run`] returns.

pub mod error;
pub mod metrics;
mod routes;
pub mod snapshot;
pub mod state;
pub mod tls;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use larder::FeatureStore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::ApiError;
pub use snapshot::Snapshot;
pub use state::AppState;

/// Default port, as `feast serve`.
pub const DEFAULT_PORT: u16 = 6566;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// How often the registry is reloaded (Feast's `registry_ttl_sec`; default 5 s as
    /// Feast's feature server app).
    pub registry_ttl: Duration,
    /// Longest an online read, push or online write may take; beyond it the client gets
    /// 503 (the store is treated as unavailable). Materialization is not bounded by it.
    pub request_timeout: Duration,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// After a shutdown signal, how long requests are still served while readiness fails.
    pub shutdown_delay: Duration,
    /// Longest wait for in-flight requests and background materializations at shutdown.
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            registry_ttl: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 16 << 20,
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A feature server over one repo's `FeatureStore`.
#[derive(Debug)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// Loads the project's registry snapshot and opens the online store.
    ///
    /// Errors: the project was never applied, the registry cannot be read, the online store
    /// cannot be opened.
    pub async fn new(store: FeatureStore, options: ServerOptions) -> Result<Self, larder::Error> {
        let snapshot = Snapshot::load(&store).await?;
        let reader = match store.online_reader() {
            // Requests run concurrently: the cores are busy anyway, and a split read's
            // cross-thread allocations nearly doubled the server's peak RSS.
            Ok(reader) => Some(reader.with_split_reads(false)),
            Err(larder::Error::Unsupported { what, hint }) => {
                tracing::warn!(%what, %hint, "online reads will answer 501");
                None
            }
            Err(other) => return Err(other),
        };
        Ok(Server {
            state: Arc::new(AppState {
                store: Arc::new(store),
                reader,
                snapshot: ArcSwap::from_pointee(snapshot),
                metrics: metrics::Metrics::new(),
                options,
                draining: Default::default(),
                materializing: Default::default(),
                tasks: TaskTracker::new(),
            }),
        })
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The HTTP routes with their limits, timeouts, metrics and request logs.
    pub fn router(&self) -> Router {
        routes::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then drains (see the module docs).
    /// The registry refresh runs in the background meanwhile.
    pub async fn run<L>(
        self,
        listener: L,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()>
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        let state = self.state.clone();
        let stop_refresh = CancellationToken::new();
        let refresh = tokio::spawn(snapshot::refresh_loop(
            state.clone(),
            state.options.registry_ttl,
            stop_refresh.clone(),
        ));
        let closing = CancellationToken::new();
        let signal = {
            let state = state.clone();
            let closing = closing.clone();
            async move {
                shutdown.await;
                state.draining.store(true, Ordering::Release);
                tracing::info!(
                    delay = ?state.options.shutdown_delay,
                    "shutting down: readiness fails now, the listener closes after the delay"
                );
                tokio::time::sleep(state.options.shutdown_delay).await;
                tracing::info!("listener closed; draining in-flight requests");
                closing.cancel();
            }
        };
        let serve = axum::serve(listener, self.router())
            .with_graceful_shutdown(signal)
            .into_future();
        let drain = state.options.drain_timeout;
        let result = tokio::select! {
            result = serve => result,
            _ = async { closing.cancelled().await; tokio::time::sleep(drain).await } => {
                tracing::warn!(?drain, "requests still in flight after the drain timeout; closing them");
                Ok(())
            }
        };
        stop_refresh.cancel();
        let _ = refresh.await;
        state.tasks.close();
        if tokio::time::timeout(drain, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "background materializations still running at exit; their windows are not recorded"
            );
        }
        tracing::info!("server stopped");
        result
    }
}

/// A future that completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT"),
        _ = terminate => tracing::info!("received SIGTERM"),
    }
}
