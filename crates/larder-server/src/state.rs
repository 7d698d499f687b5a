//! What every request handler shares: the store, the snapshot, metrics, drain state.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use larder::{FeatureStore, OnlineReader};
use tokio_util::task::TaskTracker;

use crate::ServerOptions;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

#[derive(Debug)]
pub struct AppState {
    pub store: Arc<FeatureStore>,
    /// `None` when the config has no online store this build can read; reads then fail
    /// with 501 while the other endpoints work.
    pub reader: Option<OnlineReader>,
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    pub options: ServerOptions,
    /// Set when shutdown starts: readiness fails from then on.
    pub draining: AtomicBool,
    /// Views being materialized (sync or async), for 409s.
    pub materializing: Mutex<HashSet<String>>,
    /// Background materializations, awaited (bounded) at shutdown.
    pub tasks: TaskTracker,
    /// The runtime materializations run on (the one the server was created on): a request
    /// runs on an HTTP worker's single-threaded runtime, which must not be tied up by a
    /// long job, and a materialization wants every core.
    pub jobs: tokio::runtime::Handle,
}

impl AppState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Claims `views` for a materialization; `Err` with the views already running.
    pub fn claim(self: &Arc<Self>, views: &[String]) -> Result<MaterializeClaim, Vec<String>> {
        let mut running = self
            .materializing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let busy: Vec<String> = views
            .iter()
            .filter(|v| running.contains(*v))
            .cloned()
            .collect();
        if !busy.is_empty() {
            return Err(busy);
        }
        running.extend(views.iter().cloned());
        Ok(MaterializeClaim {
            state: self.clone(),
            views: views.to_vec(),
        })
    }
}

/// Views claimed for a materialization; released when dropped (also on panic or cancel).
pub struct MaterializeClaim {
    state: Arc<AppState>,
    views: Vec<String>,
}

impl Drop for MaterializeClaim {
    fn drop(&mut self) {
        let mut running = self
            .state
            .materializing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for view in &self.views {
            running.remove(view);
        }
    }
}
