//! Prometheus metrics of one server, rendered by `GET /metrics`.
//!
//! Each server owns its recorder (no global one), so several servers in one process (tests,
//! embedders) keep separate counts. Names:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `larder_http_requests_total` | counter | `endpoint`, `status` |
//! | `larder_http_request_duration_seconds` | histogram | `endpoint`, `status` |
//! | `larder_push_rows_total` | counter | `push_source`, `to` |
//! | `larder_materialized_rows_total` | counter | `feature_view` |
//! | `larder_registry_refresh_failures_total` | counter | |
//! | `larder_registry_age_seconds` | gauge | (time since the last successful registry read) |
//! | `larder_registry_version` | gauge | |
//! | `larder_feature_view_materialized_until_seconds` | gauge | `feature_view` (Unix time) |
//! | `larder_feature_view_last_push_seconds` | gauge | `feature_view` (Unix time of the newest pushed event) |

use std::sync::{Mutex, RwLock};
use std::time::Instant;

use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::snapshot::Snapshot;

const METADATA: Metadata<'static> = Metadata::new("larder_server", Level::INFO, None);

/// Latency buckets from 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    last_refresh: Mutex<Instant>,
    /// Request counter and latency histogram per (endpoint, status), registered once: the
    /// hot path then takes a read lock and updates two atomics.
    requests: RwLock<Vec<RequestMetrics>>,
}

struct RequestMetrics {
    endpoint: String,
    status: u16,
    count: Counter,
    latency: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            // Only an empty bucket list is refused; ours is not.
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Metrics {
            recorder,
            handle,
            last_refresh: Mutex::new(Instant::now()),
            requests: RwLock::new(Vec::new()),
        }
    }

    fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
        Key::from_parts(
            name,
            labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    pub fn request(&self, endpoint: &str, status: u16, seconds: f64) {
        let record = |m: &RequestMetrics| {
            m.count.increment(1);
            m.latency.record(seconds);
        };
        if let Ok(known) = self.requests.read()
            && let Some(m) = known
                .iter()
                .find(|m| m.status == status && m.endpoint == endpoint)
        {
            record(m);
            return;
        }
        let status_text = status.to_string();
        let labels = [("endpoint", endpoint), ("status", status_text.as_str())];
        let m = RequestMetrics {
            endpoint: endpoint.to_string(),
            status,
            count: self
                .recorder
                .register_counter(&Self::key("larder_http_requests_total", &labels), &METADATA),
            latency: self.recorder.register_histogram(
                &Self::key("larder_http_request_duration_seconds", &labels),
                &METADATA,
            ),
        };
        record(&m);
        if let Ok(mut known) = self.requests.write() {
            // Endpoints are routes (plus "unmatched"), statuses a handful: this stays small.
            if !known
                .iter()
                .any(|k| k.status == status && k.endpoint == endpoint)
            {
                known.push(m);
            }
        }
    }

    pub fn pushed(&self, source: &str, to: &str, rows: u64) {
        self.recorder
            .register_counter(
                &Self::key(
                    "larder_push_rows_total",
                    &[("push_source", source), ("to", to)],
                ),
                &METADATA,
            )
            .increment(rows);
    }

    pub fn last_push(&self, view: &str, event_seconds: f64) {
        self.recorder
            .register_gauge(
                &Self::key(
                    "larder_feature_view_last_push_seconds",
                    &[("feature_view", view)],
                ),
                &METADATA,
            )
            .set(event_seconds);
    }

    pub fn materialized(&self, view: &str, rows: u64) {
        self.recorder
            .register_counter(
                &Self::key("larder_materialized_rows_total", &[("feature_view", view)]),
                &METADATA,
            )
            .increment(rows);
    }

    pub fn registry_refreshed(&self) {
        if let Ok(mut last) = self.last_refresh.lock() {
            *last = Instant::now();
        }
    }

    pub fn registry_refresh_failed(&self) {
        self.recorder
            .register_counter(
                &Self::key("larder_registry_refresh_failures_total", &[]),
                &METADATA,
            )
            .increment(1);
    }

    /// Seconds since the last successful registry read.
    pub fn registry_age(&self) -> f64 {
        self.last_refresh
            .lock()
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(f64::NAN)
    }

    /// The Prometheus text, with the gauges that are computed at scrape time.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        self.recorder
            .register_gauge(&Self::key("larder_registry_age_seconds", &[]), &METADATA)
            .set(self.registry_age());
        self.recorder
            .register_gauge(&Self::key("larder_registry_version", &[]), &METADATA)
            .set(snapshot.version as f64);
        // Make the failure counter visible (at 0) before the first failure.
        self.recorder
            .register_counter(
                &Self::key("larder_registry_refresh_failures_total", &[]),
                &METADATA,
            )
            .increment(0);
        for (view, end) in &snapshot.materialized_until {
            self.recorder
                .register_gauge(
                    &Self::key(
                        "larder_feature_view_materialized_until_seconds",
                        &[("feature_view", view)],
                    ),
                    &METADATA,
                )
                .set(end.timestamp_micros() as f64 / 1e6);
        }
        self.handle.render()
    }

    /// Drops histogram samples already rendered; called by the refresh task.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}
