//! The endpoints: Feast's request bodies in, Feast's responses out.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use larder::{EntityColumns, MaterializeOptions, PushMode, Window};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tower_http::timeout::TimeoutLayer;

use crate::error::ApiError;
use crate::snapshot::PlanQuery;
use crate::state::AppState;

type AppResult = Result<Response, ApiError>;

pub fn router(state: Arc<AppState>) -> Router {
    let options = &state.options;
    // Online endpoints are bounded by the request timeout (a hung store gets 503, never a
    // hang); the handlers time their store calls out first, with a JSON body.
    let backstop = options.request_timeout + std::time::Duration::from_secs(1);
    let bounded = Router::new()
        .route("/get-online-features", post(get_online_features))
        .route("/push", post(push))
        .route("/write-to-online-store", post(write_to_online_store))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            backstop,
        ));
    Router::new()
        .merge(bounded)
        .route("/materialize", post(materialize))
        .route("/materialize-incremental", post(materialize_incremental))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts and times every request by route and status, and logs it.
async fn observe(
    State(state): State<Arc<AppState>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let endpoint = matched.as_ref().map_or("unmatched", |m| m.as_str());
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .request(endpoint, status, elapsed.as_secs_f64());
    if status >= 500 {
        tracing::warn!(%method, endpoint, status, latency_us = elapsed.as_micros() as u64, "request");
    } else {
        tracing::info!(%method, endpoint, status, latency_us = elapsed.as_micros() as u64, "request");
    }
    response
}

/// The body as `T`, or a 4xx naming what is wrong.
fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    parse_json(&body_bytes(body)?)
}

/// The body's bytes, or the 4xx of why they could not be read.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let class = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "PayloadTooLarge"
        } else {
            "RequestValidationError"
        };
        ApiError::new(
            status,
            class,
            format!("cannot read the request body: {}", rejection.body_text()),
        )
    })
}

/// `body` as `T`, which may borrow from it, or a 422 naming what is wrong.
fn parse_json<'b, T: Deserialize<'b>>(body: &'b [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::unprocessable(format!("invalid request body: {e}")))
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Runs a store call with the request timeout; 503 when it does not answer in time.
async fn bounded<T>(
    state: &AppState,
    what: &str,
    call: impl Future<Output = Result<T, larder::Error>>,
) -> Result<T, ApiError> {
    let limit = state.options.request_timeout;
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::unavailable(format!(
            "{what} did not finish within {limit:?}; the store may be down or overloaded"
        ))),
    }
}

#[derive(Deserialize)]
struct OnlineBody<'b> {
    /// Borrowed from the body where they need no unescaping: no copy per name.
    #[serde(default, borrow)]
    features: Option<Vec<Name<'b>>>,
    #[serde(default, borrow)]
    feature_service: Option<Name<'b>>,
    entities: EntityColumns,
    #[serde(default)]
    full_feature_names: bool,
}

/// A JSON string, borrowed from the body unless it has escapes.
struct Name<'b>(Cow<'b, str>);

impl AsRef<str> for Name<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'b, 'b> Deserialize<'de> for Name<'b> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        deserializer.deserialize_str(Visit).map(Name)
    }
}

async fn get_online_features(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult {
    let bytes = body_bytes(body)?;
    let body: OnlineBody<'_> = parse_json(&bytes)?;
    let features = body.features.as_deref().unwrap_or_default();
    let query = PlanQuery {
        service: body.feature_service.as_ref().map(|s| s.as_ref()),
        // As Feast: a feature service takes precedence over a feature list.
        features: if body.feature_service.is_some() {
            &[]
        } else {
            features
        },
        full_feature_names: body.full_feature_names,
    };
    let plan = state.snapshot.load().plan(&query)?;
    let Some(reader) = &state.reader else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplementedError",
            "this server has no online store it can read (configure `online_store` with type `sqlite`, `redis` or `postgres`)",
        ));
    };
    let now = state.store.now();
    let response = bounded(
        &state,
        "the online store read",
        reader.read(&plan, &body.entities, now),
    )
    .await?;
    let mut out = String::with_capacity(256 + body.entities.num_rows() * 64);
    response.write_http_json(&mut out);
    Ok(json(StatusCode::OK, out))
}

#[derive(Deserialize)]
struct PushBody {
    push_source_name: String,
    df: EntityColumns,
    #[serde(default)]
    to: Option<String>,
}

async fn push(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult {
    let body: PushBody = parse_body(body)?;
    let to_text = body.to.as_deref().unwrap_or("online");
    let mode: PushMode = to_text.parse().map_err(ApiError::unprocessable)?;
    let snapshot = state.snapshot.load_full();
    let report = bounded(
        &state,
        "the push",
        state.store.push(
            &snapshot.definitions,
            &body.push_source_name,
            &body.df,
            mode,
        ),
    )
    .await?;
    state
        .metrics
        .pushed(&body.push_source_name, to_text, body.df.num_rows() as u64);
    if let Some(micros) = report.max_event_micros {
        for (view, _) in &report.online {
            state.metrics.last_push(view, micros as f64 / 1e6);
        }
    }
    tracing::debug!(
        push_source = %body.push_source_name,
        rows = body.df.num_rows(),
        to = to_text,
        "pushed"
    );
    Ok(StatusCode::OK.into_response())
}

#[derive(Deserialize)]
struct WriteBody {
    feature_view_name: String,
    df: EntityColumns,
}

async fn write_to_online_store(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult {
    let body: WriteBody = parse_body(body)?;
    let snapshot = state.snapshot.load_full();
    let rows = bounded(
        &state,
        "the online write",
        state
            .store
            .write_to_online_store(&snapshot.definitions, &body.feature_view_name, &body.df),
    )
    .await?;
    tracing::debug!(feature_view = %body.feature_view_name, rows, "written to the online store");
    Ok(json(StatusCode::OK, "null".into()))
}

#[derive(Deserialize)]
struct MaterializeBody {
    #[serde(default)]
    start_ts: Option<String>,
    #[serde(default)]
    end_ts: Option<String>,
    #[serde(default)]
    feature_views: Option<Vec<String>>,
    #[serde(default)]
    disable_event_timestamp: bool,
}

fn parse_ts(field: &str, text: Option<&str>) -> Result<DateTime<Utc>, ApiError> {
    let text = text.ok_or_else(|| {
        ApiError::unprocessable(format!(
            "`{field}` is required (or set `disable_event_timestamp`)"
        ))
    })?;
    larder::parse_timestamp(text).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "`{field}` is `{text}`, not a time; use ISO 8601 such as `2025-06-01T00:00:00` (UTC) \
             or `2025-06-01T00:00:00+02:00`"
        ))
    })
}

fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false" | "0" | "no" | "off") => Ok(false),
        Some("true" | "1" | "yes" | "on" | "") => Ok(true),
        Some(other) => Err(ApiError::unprocessable(format!(
            "query parameter `{name}` is `{other}`; expected true or false"
        ))),
    }
}

async fn materialize(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult {
    let body: MaterializeBody = parse_body(body)?;
    let (start, end) = if body.disable_event_timestamp {
        (DateTime::<Utc>::UNIX_EPOCH, state.store.now())
    } else {
        (
            parse_ts("start_ts", body.start_ts.as_deref())?,
            parse_ts("end_ts", body.end_ts.as_deref())?,
        )
    };
    if start >= end {
        return Err(ApiError::unprocessable(format!(
            "`start_ts` ({}) must be before `end_ts` ({})",
            start.to_rfc3339(),
            end.to_rfc3339()
        )));
    }
    run_materialize(
        state,
        Window::Range { start, end },
        body.feature_views,
        flag(&query, "async")?,
    )
    .await
}

#[derive(Deserialize)]
struct IncrementalBody {
    #[serde(default)]
    end_ts: Option<String>,
    #[serde(default)]
    feature_views: Option<Vec<String>>,
}

async fn materialize_incremental(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult {
    let body: IncrementalBody = parse_body(body)?;
    let end = parse_ts("end_ts", body.end_ts.as_deref())?;
    run_materialize(
        state,
        Window::Incremental { end },
        body.feature_views,
        flag(&query, "async")?,
    )
    .await
}

async fn run_materialize(
    state: Arc<AppState>,
    window: Window,
    views: Option<Vec<String>>,
    run_async: bool,
) -> AppResult {
    let snapshot = state.snapshot.load_full();
    let defs = &snapshot.definitions;
    let views: Vec<String> = match views {
        Some(names) => {
            for name in &names {
                let Some(view) = defs.feature_views.get(name.as_str()) else {
                    return Err(larder::Error::FeatureViewNotFound {
                        view: name.clone(),
                        project: defs.project.name.clone(),
                    }
                    .into());
                };
                if !view.online {
                    return Err(ApiError::unprocessable(format!(
                        "feature view `{name}` has `online: false`, so it cannot be materialized"
                    )));
                }
            }
            names
        }
        None => defs
            .feature_views
            .values()
            .filter(|v| v.online)
            .map(|v| v.name.to_string())
            .collect(),
    };
    let claim = state.claim(&views).map_err(|busy| {
        ApiError::new(
            StatusCode::CONFLICT,
            "ConflictError",
            format!(
                "feature views {} are already in MATERIALIZING state; retry when that run ends",
                busy.iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_extra("feature_views", serde_json::json!(busy))
    })?;
    let options = MaterializeOptions {
        views: Some(views.clone()),
        ..MaterializeOptions::default()
    };
    let job = {
        let state = state.clone();
        async move {
            // Held until the run ends, even when the client that asked has gone (the run
            // goes on).
            let _claim = claim;
            let reports = state.store.materialize(window, options).await?;
            for report in &reports {
                state
                    .metrics
                    .materialized(&report.view, report.rows_written);
            }
            Ok::<usize, larder::Error>(reports.len())
        }
    };
    if run_async {
        state.tasks.spawn_on(
            async move {
                match job.await {
                    Ok(views) => tracing::info!(views, "background materialization finished"),
                    Err(err) => tracing::error!(error = %err, "background materialization failed"),
                }
            },
            &state.jobs,
        );
        let body = serde_json::json!({"status": "accepted", "feature_views": views});
        return Ok(json(StatusCode::ACCEPTED, body.to_string()));
    }
    // Tracked like a background one, so that shutdown waits for it even past the drain.
    match state.jobs.spawn(state.tasks.track_future(job)).await {
        Ok(done) => {
            done?;
            Ok(json(StatusCode::OK, "null".into()))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("the materialization task failed: {e}"),
        )),
    }
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.is_draining() {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"draining"}"#.into(),
        )
    } else {
        json(StatusCode::OK, r#"{"status":"ready"}"#.into())
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(&state.snapshot.load());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "no endpoint `{method} {}`; see `GET /health`, `POST /get-online-features`, `POST /push`",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("`{}` does not accept {method}", uri.path()),
    )
}
