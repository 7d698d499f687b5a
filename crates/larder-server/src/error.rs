//! HTTP errors: every SDK error mapped once to a status and a JSON body.
//!
//! The body is `{"error": "<message>", "class": "<Feast exception class>", "status_code": N}`:
//! the message names what is wrong and where, `class` is the exception Feast's Python
//! server raises for the same case (so clients can branch on it), and `status_code`
//! repeats the status as Feast's Go server does. Statuses follow Feast: 404 for unknown
//! objects, 422 for an unknown push source and for requests that do not fit, 409 for a
//! materialization already running, 503 when a store or the registry is unreachable.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use larder::offline::OfflineError;
use larder::online_store::OnlineError;
use larder::registry::RegistryError;
use larder::spec::ResolveError;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub class: &'static str,
    pub message: String,
    /// Extra fields of the body (the views of a 409).
    pub extra: Option<(&'static str, serde_json::Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, class: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            class,
            message: message.into(),
            extra: None,
        }
    }

    /// The request body does not fit the endpoint (malformed JSON, wrong types).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "RequestValidationError",
            message,
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    pub fn with_extra(mut self, key: &'static str, value: serde_json::Value) -> Self {
        self.extra = Some((key, value));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": self.message,
            "class": self.class,
            "status_code": self.status.as_u16(),
        });
        if let (Some((key, value)), Some(map)) = (self.extra, body.as_object_mut()) {
            map.insert(key.to_string(), value);
        }
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl From<larder::Error> for ApiError {
    fn from(err: larder::Error) -> Self {
        use StatusCode as S;
        let message = err.to_string();
        let (status, class) = match &err {
            larder::Error::Config(_) | larder::Error::Definitions(_) => {
                (S::INTERNAL_SERVER_ERROR, "FeastConfigError")
            }
            larder::Error::Unsupported { .. } => (S::NOT_IMPLEMENTED, "NotImplementedError"),
            larder::Error::Features(e) => match e {
                ResolveError::ServiceNotFound { .. } => {
                    (S::NOT_FOUND, "FeatureServiceNotFoundException")
                }
                ResolveError::ViewNotFound { .. } => (S::NOT_FOUND, "FeatureViewNotFoundException"),
                ResolveError::FeatureNotFound { .. } => {
                    (S::NOT_FOUND, "FeatureNameNotFoundException")
                }
                ResolveError::OnDemandNotSupported { .. } => {
                    (S::NOT_IMPLEMENTED, "NotImplementedError")
                }
                ResolveError::NameCollision { .. } => {
                    (S::UNPROCESSABLE_ENTITY, "FeatureNameCollisionError")
                }
                ResolveError::Empty => (S::UNPROCESSABLE_ENTITY, "RequestValidationError"),
            },
            larder::Error::PushSourceNotFound { .. } => {
                (S::UNPROCESSABLE_ENTITY, "PushSourceNotFoundException")
            }
            larder::Error::FeatureViewNotFound { .. } => {
                (S::NOT_FOUND, "FeatureViewNotFoundException")
            }
            larder::Error::InvalidPush { .. } => (S::UNPROCESSABLE_ENTITY, "ValueError"),
            larder::Error::OnlineRequest(_) => (S::UNPROCESSABLE_ENTITY, "ValueError"),
            larder::Error::Registry(e) => match e {
                RegistryError::ProjectNotFound { .. } => (S::NOT_FOUND, "ProjectNotFoundException"),
                RegistryError::ObjectNotFound { .. } => {
                    (S::NOT_FOUND, "FeastObjectNotFoundException")
                }
                RegistryError::Contention { .. } => (S::CONFLICT, "ConflictError"),
                RegistryError::Store(_) => (S::SERVICE_UNAVAILABLE, "RegistryUnavailable"),
                RegistryError::NotLarder { .. }
                | RegistryError::NewerFormat { .. }
                | RegistryError::Corrupt { .. }
                | RegistryError::Internal { .. } => (S::INTERNAL_SERVER_ERROR, "RegistryError"),
            },
            larder::Error::Offline(e) => match e {
                OfflineError::MissingJoinKey { .. }
                | OfflineError::NoTimestampColumn { .. }
                | OfflineError::AmbiguousTimestamp { .. }
                | OfflineError::NotATimestamp { .. }
                | OfflineError::KeyTypeMismatch { .. }
                | OfflineError::EntityFile { .. }
                | OfflineError::EntitySql { .. }
                | OfflineError::BadRange { .. }
                | OfflineError::RangeKeysDiffer { .. }
                | OfflineError::EntityLessView { .. }
                | OfflineError::UnsupportedSource { .. }
                | OfflineError::UnsupportedAppend { .. } => (S::UNPROCESSABLE_ENTITY, "ValueError"),
                OfflineError::Unavailable { .. } => {
                    (S::SERVICE_UNAVAILABLE, "OfflineStoreUnavailable")
                }
                OfflineError::SourceRead { .. }
                | OfflineError::Backend { .. }
                | OfflineError::AppendFailed { .. }
                | OfflineError::Execution(_) => (S::INTERNAL_SERVER_ERROR, "OfflineStoreError"),
            },
            larder::Error::Materialize(_) => (S::INTERNAL_SERVER_ERROR, "MaterializationError"),
            larder::Error::Online(e) => match e {
                OnlineError::InvalidRequest { .. } => (S::UNPROCESSABLE_ENTITY, "ValueError"),
                OnlineError::Unavailable { .. } | OnlineError::Io { .. } => {
                    (S::SERVICE_UNAVAILABLE, "OnlineStoreUnavailable")
                }
                OnlineError::IncompatibleTable { .. }
                | OnlineError::Corrupt { .. }
                | OnlineError::Internal { .. } => (S::INTERNAL_SERVER_ERROR, "OnlineStoreError"),
            },
        };
        ApiError::new(status, class, message)
    }
}
