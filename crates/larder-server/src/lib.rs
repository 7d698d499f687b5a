//! The Larder feature server: Feast's HTTP API over a `FeatureStore`.
//!
//! [`Server::new`] loads the registry snapshot; [`Server::serve`] serves HTTP or HTTPS on a
//! TCP listener with one single-threaded runtime per worker thread (see [`workers`]), and
//! [`Server::run`] on any `axum::serve::Listener` on the caller's runtime; both until their
//! shutdown future completes, then drain. Endpoints (feast-behaviour.md §8):
//! `POST /get-online-features`, `POST /push`, `POST /write-to-online-store`,
//! `POST /materialize`, `POST /materialize-incremental`, `GET /health`, `GET /ready`,
//! `GET /metrics`.
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
mod workers;

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
    /// HTTP worker threads of [`Server::serve`] (at least 1).
    pub workers: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            registry_ttl: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 16 << 20,
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
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
                jobs: tokio::runtime::Handle::current(),
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

    /// Serves on `listener` (HTTPS with `tls`) with [`ServerOptions::workers`] threads,
    /// each running its own single-threaded runtime, until `shutdown` completes; then
    /// drains (see the module docs). Accepting, the registry refresh and materializations
    /// run on the caller's runtime.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let local_addr = listener.local_addr()?;
        let life = Lifecycle::start(&self.state, shutdown);
        let stops = workers::Stops {
            closing: life.closing.clone(),
            abort: CancellationToken::new(),
            release: CancellationToken::new(),
        };
        let started = workers::Workers::start(
            self.state.options.workers,
            local_addr,
            tls,
            &self.router(),
            &stops,
        );
        let workers = match started {
            Ok(workers) => workers,
            Err(e) => {
                life.finish().await;
                return Err(e);
            }
        };
        let acceptor = tokio::spawn(workers::hand_out(
            listener,
            workers.senders,
            life.closing.clone(),
        ));
        let mut served = std::pin::pin!(futures::future::join_all(workers.served));
        let outcomes = match life.drained(served.as_mut()).await {
            Some(outcomes) => outcomes,
            None => {
                stops.abort.cancel();
                served.await
            }
        };
        let _ = acceptor.await;
        life.finish().await;
        // The worker runtimes end last: until now they drove connections (a store
        // client's, say) that background materializations may have been using.
        stops.release.cancel();
        let threads = workers.threads;
        let panicked = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .map(|t| t.join())
                .filter(Result::is_err)
                .count()
        })
        .await
        .unwrap_or(0);
        if panicked > 0 {
            return Err(std::io::Error::other(format!(
                "{panicked} HTTP worker thread(s) panicked"
            )));
        }
        outcomes.into_iter().try_for_each(|outcome| {
            outcome.unwrap_or_else(|_| Err(std::io::Error::other("an HTTP worker thread panicked")))
        })
    }

    /// Serves on `listener` on the caller's runtime until `shutdown` completes, then
    /// drains (see the module docs). The registry refresh runs in the background meanwhile.
    pub async fn run<L>(
        self,
        listener: L,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()>
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        let life = Lifecycle::start(&self.state, shutdown);
        let serve = axum::serve(listener, self.router())
            .with_graceful_shutdown(life.closing.clone().cancelled_owned())
            .into_future();
        let result = life.drained(serve).await.unwrap_or(Ok(()));
        life.finish().await;
        result
    }
}

/// What runs around serving: the registry refresh, and the shutdown sequence up to
/// `closing` (readiness fails, then after the delay the listeners close).
struct Lifecycle {
    state: Arc<AppState>,
    stop_refresh: CancellationToken,
    refresh: tokio::task::JoinHandle<()>,
    signal: tokio::task::JoinHandle<()>,
    closing: CancellationToken,
}

impl Lifecycle {
    fn start(state: &Arc<AppState>, shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        let stop_refresh = CancellationToken::new();
        let refresh = tokio::spawn(snapshot::refresh_loop(
            state.clone(),
            state.options.registry_ttl,
            stop_refresh.clone(),
        ));
        let closing = CancellationToken::new();
        let signal = tokio::spawn({
            let state = state.clone();
            let closing = closing.clone();
            async move {
                tokio::select! {
                    _ = shutdown => {}
                    // Serving ended on its own (a failure): nothing to announce.
                    _ = closing.cancelled() => return,
                }
                state.draining.store(true, Ordering::Release);
                tracing::info!(
                    delay = ?state.options.shutdown_delay,
                    "shutting down: readiness fails now, the listener closes after the delay"
                );
                tokio::time::sleep(state.options.shutdown_delay).await;
                tracing::info!("listener closed; draining in-flight requests");
                closing.cancel();
            }
        });
        Lifecycle {
            state: state.clone(),
            stop_refresh,
            refresh,
            signal,
            closing,
        }
    }

    /// Waits for `serving`; once the listeners closed, at most the drain timeout more
    /// (`None` then).
    async fn drained<T>(&self, serving: impl Future<Output = T>) -> Option<T> {
        let drain = self.state.options.drain_timeout;
        tokio::select! {
            outcome = serving => Some(outcome),
            _ = async { self.closing.cancelled().await; tokio::time::sleep(drain).await } => {
                tracing::warn!(
                    ?drain,
                    "requests still in flight after the drain timeout; closing them"
                );
                None
            }
        }
    }

    /// Stops the refresh and waits (bounded) for background materializations.
    async fn finish(self) {
        self.closing.cancel();
        let _ = self.signal.await;
        self.stop_refresh.cancel();
        let _ = self.refresh.await;
        let state = self.state;
        state.tasks.close();
        if tokio::time::timeout(state.options.drain_timeout, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "background materializations still running at exit; their windows are not recorded"
            );
        }
        tracing::info!("server stopped");
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
