//! How to reach the Kubernetes API: a kubeconfig (`$KUBECONFIG`, else `~/.kube/config`) or
//! the pod's service account (in-cluster), turned into a server address, TLS settings and
//! credentials.
//!
//! Order: `$KUBECONFIG` when set (a `:`-separated list is merged as kubectl does: the first
//! file to define a name or the current context wins); else the in-cluster service account
//! when `KUBERNETES_SERVICE_HOST` is set; else `~/.kube/config`. Supported: the current
//! context's cluster `server` (`https://`, or `http://` for `kubectl proxy`),
//! `certificate-authority(-data)`, `insecure-skip-tls-verify`, `tls-server-name`; the user's
//! `token`, `tokenFile`, `client-certificate(-data)` + `client-key(-data)`, and
//! `username`/`password`, and `exec` credential plugins (run when the cached token nears its
//! expiry). `auth-provider` plugins are refused with a clear error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use serde::Deserialize;

use super::error::K8sError;

/// Where a pod's service account credentials are mounted.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A resolved connection to one API server.
#[derive(Clone)]
pub struct ClusterAccess {
    /// The server URL as configured, for messages.
    pub server: String,
    pub(crate) endpoint: Endpoint,
    /// TLS settings for `https` servers.
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) auth: Auth,
    /// Where the settings came from (a kubeconfig path, or the service account).
    pub source: String,
    /// The context's (or the pod's) namespace, if any.
    pub namespace: Option<String>,
}

impl std::fmt::Debug for ClusterAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAccess")
            .field("server", &self.server)
            .field("source", &self.source)
            .field("auth", &self.auth.kind())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// The name the server's certificate is checked against: the host, or the cluster's
    /// `tls-server-name`.
    pub tls_name: String,
    /// Path prefix of the server URL (for servers behind a proxy path), without trailing `/`.
    pub base_path: String,
}

#[derive(Clone)]
pub(crate) enum Auth {
    None,
    Token(String),
    /// Read at each request: projected service account tokens are rotated.
    TokenFile(PathBuf),
    Basic(String),
    /// A `client.authentication.k8s.io` exec plugin (`aws eks get-token`,
    /// `gke-gcloud-auth-plugin`, `kubelogin`): run when no unexpired token is cached.
    Exec(Arc<ExecPlugin>),
}

/// An exec credential plugin and its last token.
pub(crate) struct ExecPlugin {
    command: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    api_version: String,
    /// The token and when it expires (`None`: never).
    cached: std::sync::Mutex<Option<(String, Option<chrono::DateTime<chrono::Utc>>)>>,
}

/// Tokens are renewed this long before they expire.
const EXEC_TOKEN_MARGIN_SECONDS: i64 = 60;

impl ExecPlugin {
    fn token(&self) -> Result<String, String> {
        let now = chrono::Utc::now();
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, expiry)) = cached.as_ref()
            && expiry.is_none_or(|t| t - chrono::Duration::seconds(EXEC_TOKEN_MARGIN_SECONDS) > now)
        {
            return Ok(token.clone());
        }
        let shown = self.command.display();
        let info = serde_json::json!({
            "apiVersion": self.api_version,
            "kind": "ExecCredential",
            "spec": {"interactive": false},
        });
        let output = std::process::Command::new(&self.command)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("KUBERNETES_EXEC_INFO", info.to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run the exec credential plugin `{shown}`: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "the exec credential plugin `{shown}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let credential: serde_json::Value =
            serde_json::from_slice(&output.stdout).map_err(|e| {
                format!("the exec credential plugin `{shown}` printed no ExecCredential JSON: {e}")
            })?;
        let status = &credential["status"];
        let token = status["token"].as_str().filter(|t| !t.is_empty()).ok_or_else(|| {
            format!("the exec credential plugin `{shown}` gave no `status.token` (client certificates from plugins are not supported)")
        })?;
        let expiry = status["expirationTimestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        *cached = Some((token.to_owned(), expiry));
        Ok(token.to_owned())
    }
}

impl Auth {
    fn kind(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Token(_) => "token",
            Auth::TokenFile(_) => "token file",
            Auth::Basic(_) => "basic",
            Auth::Exec(_) => "exec plugin",
        }
    }

    /// The `Authorization` header value, if any.
    pub(crate) fn header(&self) -> Result<Option<String>, String> {
        match self {
            Auth::None => Ok(None),
            Auth::Token(token) => Ok(Some(format!("Bearer {token}"))),
            Auth::TokenFile(path) => std::fs::read_to_string(path)
                .map(|t| Some(format!("Bearer {}", t.trim())))
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display())),
            Auth::Basic(encoded) => Ok(Some(format!("Basic {encoded}"))),
            Auth::Exec(plugin) => plugin.token().map(|t| Some(format!("Bearer {t}"))),
        }
    }
}

/// Finds the cluster to talk to; see the module documentation for the order.
pub fn discover(env: &dyn Fn(&str) -> Option<String>) -> Result<ClusterAccess, K8sError> {
    if let Some(list) = env("KUBECONFIG").filter(|v| !v.trim().is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        return from_kubeconfig_files(&paths);
    }
    if let Some(host) = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty()) {
        let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
        return in_cluster(&host, &port, Path::new(SERVICE_ACCOUNT_DIR));
    }
    let default = env("HOME").map(|home| Path::new(&home).join(".kube").join("config"));
    match default {
        Some(path) if path.exists() => from_kubeconfig_files(&[path]),
        other => Err(K8sError::NoCluster {
            tried: other.map_or("~/.kube/config (HOME is unset)".into(), |p| {
                p.display().to_string()
            }),
        }),
    }
}

/// The pod's service account: `https://host:port`, its CA and (rotated) token.
pub fn in_cluster(host: &str, port: &str, dir: &Path) -> Result<ClusterAccess, K8sError> {
    let bad = |message: String| K8sError::Kubeconfig {
        path: dir.to_path_buf(),
        message,
    };
    let host_part = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let server = format!("https://{host_part}:{port}");
    let ca = std::fs::read(dir.join("ca.crt"))
        .map_err(|e| bad(format!("cannot read the service account's ca.crt: {e}")))?;
    let token = dir.join("token");
    if !token.exists() {
        return Err(bad(
            "the service account token is missing (is `automountServiceAccountToken` false?)"
                .into(),
        ));
    }
    let namespace = std::fs::read_to_string(dir.join("namespace"))
        .ok()
        .map(|n| n.trim().to_owned());
    Ok(ClusterAccess {
        endpoint: parse_server(&server).map_err(bad)?,
        tls: Some(Arc::new(tls_config(Some(&ca), false, None).map_err(bad)?)),
        auth: Auth::TokenFile(token),
        source: "the pod's service account".into(),
        server,
        namespace,
    })
}

#[derive(Debug, Default, Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Option<Vec<NamedCluster>>,
    #[serde(default)]
    contexts: Option<Vec<NamedContext>>,
    #[serde(default)]
    users: Option<Vec<NamedUser>>,
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Debug, Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: Option<User>,
}

#[derive(Clone, Debug, Deserialize)]
struct Cluster {
    server: String,
    #[serde(rename = "certificate-authority", default)]
    certificate_authority: Option<String>,
    #[serde(rename = "certificate-authority-data", default)]
    certificate_authority_data: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify", default)]
    insecure_skip_tls_verify: bool,
    #[serde(rename = "tls-server-name", default)]
    tls_server_name: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct User {
    #[serde(default)]
    token: Option<String>,
    #[serde(rename = "tokenFile", default)]
    token_file: Option<String>,
    #[serde(rename = "client-certificate", default)]
    client_certificate: Option<String>,
    #[serde(rename = "client-certificate-data", default)]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key", default)]
    client_key: Option<String>,
    #[serde(rename = "client-key-data", default)]
    client_key_data: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    exec: Option<serde_json::Value>,
    #[serde(rename = "auth-provider", default)]
    auth_provider: Option<serde_json::Value>,
}

/// Entries by name, the first definition winning, each with the directory its relative
/// paths resolve against.
struct Merged {
    current_context: Option<String>,
    clusters: BTreeMap<String, (Cluster, PathBuf)>,
    contexts: BTreeMap<String, Context>,
    users: BTreeMap<String, (User, PathBuf)>,
}

/// Reads and merges kubeconfig files (missing files in a list are skipped, as kubectl does,
/// unless none exists).
pub fn from_kubeconfig_files(paths: &[PathBuf]) -> Result<ClusterAccess, K8sError> {
    let mut merged = Merged {
        current_context: None,
        clusters: BTreeMap::new(),
        contexts: BTreeMap::new(),
        users: BTreeMap::new(),
    };
    let mut read_any = false;
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && paths.len() > 1 => continue,
            Err(e) => {
                return Err(K8sError::Kubeconfig {
                    path: path.clone(),
                    message: format!("cannot read it: {e}"),
                });
            }
        };
        read_any = true;
        let config = parse_kubeconfig(&text).map_err(|message| K8sError::Kubeconfig {
            path: path.clone(),
            message,
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if merged.current_context.is_none() {
            merged.current_context = config.current_context.filter(|c| !c.is_empty());
        }
        for c in config.clusters.unwrap_or_default() {
            merged
                .clusters
                .entry(c.name)
                .or_insert((c.cluster, dir.clone()));
        }
        for c in config.contexts.unwrap_or_default() {
            merged.contexts.entry(c.name).or_insert(c.context);
        }
        for u in config.users.unwrap_or_default() {
            merged
                .users
                .entry(u.name)
                .or_insert((u.user.unwrap_or_default(), dir.clone()));
        }
    }
    let shown = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    if !read_any {
        return Err(K8sError::NoCluster { tried: shown });
    }
    resolve(merged, &shown).map_err(|message| K8sError::Kubeconfig {
        path: PathBuf::from(&shown),
        message,
    })
}

fn parse_kubeconfig(text: &str) -> Result<Kubeconfig, String> {
    if text.trim().is_empty() {
        return Ok(Kubeconfig::default());
    }
    serde_saphyr::from_str(text).map_err(|e| format!("not a valid kubeconfig: {e}"))
}

fn resolve(merged: Merged, source: &str) -> Result<ClusterAccess, String> {
    let context_name = merged
        .current_context
        .ok_or("no `current-context` is set (run `kubectl config use-context NAME`)")?;
    let context = merged
        .contexts
        .get(&context_name)
        .ok_or_else(|| format!("the current context `{context_name}` is not defined"))?;
    let (cluster, cluster_dir) = merged.clusters.get(&context.cluster).ok_or_else(|| {
        format!(
            "context `{context_name}` names cluster `{}`, which is not defined",
            context.cluster
        )
    })?;
    let (user, user_dir) = match &context.user {
        Some(name) if !name.is_empty() => merged.users.get(name).cloned().ok_or_else(|| {
            format!("context `{context_name}` names user `{name}`, which is not defined")
        })?,
        _ => (User::default(), PathBuf::new()),
    };
    let user_name = context.user.clone().unwrap_or_default();
    if user.auth_provider.is_some() {
        return Err(format!(
            "user `{user_name}` uses an `auth-provider` plugin, which Larder does not support; use a token or client certificate"
        ));
    }
    let endpoint = parse_server(&cluster.server)?;
    let read = |dir: &Path, path: &str, what: &str| -> Result<Vec<u8>, String> {
        let path = dir.join(path);
        std::fs::read(&path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
    };
    let data = |text: &str, what: &str| -> Result<Vec<u8>, String> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| format!("the {what} is not valid base64: {e}"))
    };
    let ca = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(d), _) => Some(data(d, "certificate-authority-data")?),
        (None, Some(p)) => Some(read(cluster_dir, p, "certificate-authority")?),
        (None, None) => None,
    };
    let cert = match (&user.client_certificate_data, &user.client_certificate) {
        (Some(d), _) => Some(data(d, "client-certificate-data")?),
        (None, Some(p)) => Some(read(&user_dir, p, "client-certificate")?),
        (None, None) => None,
    };
    let key = match (&user.client_key_data, &user.client_key) {
        (Some(d), _) => Some(data(d, "client-key-data")?),
        (None, Some(p)) => Some(read(&user_dir, p, "client-key")?),
        (None, None) => None,
    };
    let client_identity = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(format!(
                "user `{user_name}` has a client certificate without a key, or a key without a certificate"
            ));
        }
    };
    let auth = if let Some(exec) = &user.exec {
        Auth::Exec(Arc::new(
            exec_plugin(exec, &user_dir)
                .map_err(|message| format!("user `{user_name}`: {message}"))?,
        ))
    } else if let Some(token) = user.token.filter(|t| !t.is_empty()) {
        Auth::Token(token)
    } else if let Some(file) = user.token_file.filter(|t| !t.is_empty()) {
        Auth::TokenFile(user_dir.join(file))
    } else if let (Some(u), Some(p)) = (&user.username, &user.password) {
        Auth::Basic(base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
    } else {
        Auth::None
    };
    let tls = if endpoint.https {
        Some(Arc::new(tls_config(
            ca.as_deref(),
            cluster.insecure_skip_tls_verify,
            client_identity
                .as_ref()
                .map(|(c, k)| (c.as_slice(), k.as_slice())),
        )?))
    } else {
        None
    };
    let endpoint = match &cluster.tls_server_name {
        Some(name) if !name.is_empty() => Endpoint {
            tls_name: name.clone(),
            ..endpoint
        },
        _ => endpoint,
    };
    Ok(ClusterAccess {
        server: cluster.server.clone(),
        endpoint,
        tls,
        auth,
        source: source.to_owned(),
        namespace: context.namespace.clone(),
    })
}

/// A user's `exec` block: `command` (a relative path with a `/` resolves against the
/// kubeconfig's folder, as kubectl does), `args`, `env`, `apiVersion`.
fn exec_plugin(exec: &serde_json::Value, dir: &Path) -> Result<ExecPlugin, String> {
    let command = exec["command"]
        .as_str()
        .filter(|c| !c.is_empty())
        .ok_or("its `exec` block has no `command`")?;
    let command = if command.contains('/') && Path::new(command).is_relative() {
        dir.join(command)
    } else {
        PathBuf::from(command)
    };
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let env = name_value_pairs(&exec["env"]);
    Ok(ExecPlugin {
        command,
        args: strings(&exec["args"]),
        env,
        api_version: exec["apiVersion"]
            .as_str()
            .unwrap_or("client.authentication.k8s.io/v1")
            .to_owned(),
        cached: std::sync::Mutex::new(None),
    })
}

/// `https://host:port/prefix` → its parts (ports default to 443 and 80).
pub(crate) fn parse_server(server: &str) -> Result<Endpoint, String> {
    let (https, rest) = if let Some(rest) = server.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = server.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!(
            "the cluster server `{server}` is not an http:// or https:// URL"
        ));
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("the cluster server `{server}` has an unclosed `[`"))?;
        (host.to_owned(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("the cluster server `{server}` has no host"));
    }
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("the cluster server `{server}` has a bad port `{p}`"))?,
        None if https => 443,
        None => 80,
    };
    Ok(Endpoint {
        https,
        tls_name: host.clone(),
        host,
        port,
        base_path: format!("/{}", path.trim_matches('/'))
            .trim_end_matches('/')
            .to_owned(),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS settings: `ca` (PEM) as the only trusted roots when given, else the system's; no
/// verification at all with `insecure`; a client certificate and key (PEM) when given.
pub(crate) fn tls_config(
    ca: Option<&[u8]>,
    insecure: bool,
    identity: Option<(&[u8], &[u8])>,
) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let builder = if insecure {
        builder
            .dangerous()
            // Any server certificate, handshake signatures still checked (libpq's
            // `sslmode=require`, shared from larder-pgtls).
            .with_custom_certificate_verifier(larder_pgtls::encrypt_only(&provider))
    } else {
        let mut roots = RootCertStore::empty();
        match ca {
            Some(pem) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("the certificate authority is not PEM: {e}"))?;
                if certs.is_empty() {
                    return Err("the certificate authority holds no certificate".into());
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("bad certificate authority: {e}"))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    match identity {
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("the client certificate is not PEM: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("the client key is not a PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("the client certificate and key do not fit: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The `(name, value)` of each `{name, value}` object of a Kubernetes list (an exec
/// plugin's or a container's `env`); entries without both strings are skipped.
pub(crate) fn name_value_pairs(list: &serde_json::Value) -> Vec<(String, String)> {
    list.as_array()
        .map(|vars| {
            vars.iter()
                .filter_map(|v| {
                    Some((
                        v["name"].as_str()?.to_owned(),
                        v["value"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}
