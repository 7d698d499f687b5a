//! A small Kubernetes API client: JSON over HTTP/1.1 (hyper, rustls), one connection per
//! call, every error status turned into a [`K8sError`] that says what to do.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::access::ClusterAccess;
use super::error::K8sError;

/// How long one API call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct KubeClient {
    access: Arc<ClusterAccess>,
}

/// One API call: what it does (for messages), and the request.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub path: String,
    /// `(content type, body)`.
    pub body: Option<(&'static str, Vec<u8>)>,
    /// "create `jobs` in namespace `x`": what error messages say was attempted.
    pub action: &'a str,
}

impl KubeClient {
    pub fn new(access: ClusterAccess) -> KubeClient {
        KubeClient {
            access: Arc::new(access),
        }
    }

    pub fn access(&self) -> &ClusterAccess {
        &self.access
    }

    /// Sends `call`; a 2xx answer's body is returned, anything else is an error (404 as
    /// [`K8sError::Api`] with status 404, for the caller to interpret).
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Bytes, K8sError> {
        let unreachable = |message: String| K8sError::Unreachable {
            server: self.access.server.clone(),
            action: call.action.to_owned(),
            message,
        };
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, self.exchange(&call))
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", CALL_TIMEOUT.as_secs())))?
            .map_err(unreachable)?;
        if status.is_success() {
            return Ok(body);
        }
        let message = status_message(&body);
        let action = call.action.to_owned();
        Err(match status {
            StatusCode::UNAUTHORIZED => K8sError::Unauthorized {
                server: self.access.server.clone(),
                action,
                message,
            },
            StatusCode::FORBIDDEN => K8sError::Forbidden { action, message },
            _ => K8sError::Api {
                status: status.as_u16(),
                action,
                message,
            },
        })
    }

    /// `send` for JSON answers.
    pub(crate) async fn json(&self, call: Call<'_>) -> Result<Value, K8sError> {
        let action = call.action.to_owned();
        let body = self.send(call).await?;
        serde_json::from_slice(&body).map_err(|e| K8sError::Api {
            status: 200,
            action,
            message: format!("the answer is not JSON: {e}"),
        })
    }

    async fn exchange(&self, call: &Call<'_>) -> Result<(StatusCode, Bytes), String> {
        let endpoint = &self.access.endpoint;
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        // Reading a token file or running an exec plugin blocks.
        let auth = self.access.auth.clone();
        let authorization = tokio::task::spawn_blocking(move || auth.header())
            .await
            .map_err(|e| format!("getting the credentials failed: {e}"))??;
        let request = self.request(call, authorization)?;
        match &self.access.tls {
            Some(config) => {
                let name = ServerName::try_from(endpoint.tls_name.clone()).map_err(|e| {
                    format!("`{}` is not a TLS server name: {e}", endpoint.tls_name)
                })?;
                let tls = TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                roundtrip(tls, request).await
            }
            None => roundtrip(tcp, request).await,
        }
    }

    fn request(
        &self,
        call: &Call<'_>,
        authorization: Option<String>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let endpoint = &self.access.endpoint;
        let host = if endpoint.host.contains(':') {
            format!("[{}]:{}", endpoint.host, endpoint.port)
        } else {
            format!("{}:{}", endpoint.host, endpoint.port)
        };
        let mut builder = Request::builder()
            .method(call.method.clone())
            .uri(format!("{}{}", endpoint.base_path, call.path))
            .header(header::HOST, host)
            .header(header::ACCEPT, "application/json, */*")
            .header(
                header::USER_AGENT,
                concat!("larder/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(auth) = authorization {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        let body = match &call.body {
            Some((content_type, body)) => {
                builder = builder.header(header::CONTENT_TYPE, *content_type);
                Bytes::from(body.clone())
            }
            None => Bytes::new(),
        };
        builder
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))
    }
}

async fn roundtrip<T>(io: T, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?
        .to_bytes();
    drop(sender);
    driver.abort();
    Ok((status, body))
}

/// The `message` of a Kubernetes `Status` answer, else the body's start.
fn status_message(body: &[u8]) -> String {
    if let Ok(status) = serde_json::from_slice::<Value>(body)
        && let Some(message) = status.get("message").and_then(Value::as_str)
    {
        return message.to_owned();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty answer)".into();
    }
    text.chars().take(300).collect()
}
