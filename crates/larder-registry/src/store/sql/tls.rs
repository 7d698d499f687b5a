//! TLS for Postgres registry connections: rustls on ring, with libpq's `sslmode` meanings.
//!
//! - `prefer`/`require` without `sslrootcert`: encrypted, the certificate not checked
//!   (libpq does the same; it protects against passive eavesdropping only);
//! - `prefer`/`require` with `sslrootcert`, and `verify-ca`: the certificate must chain to a
//!   trusted root, whatever host it names;
//! - `verify-full`: it must also name the host connected to.
//!
//! Roots come from `sslrootcert` (a PEM file, or `system` for the operating system's store);
//! without it, `verify-*` reads `~/.postgresql/root.crt` as libpq does.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::{RootCerts, SslMode};

/// The TLS connector for `mode`, or None for `sslmode=disable`.
///
/// Errors (as a message continuing "registry path `...` "): an unreadable or empty root
/// certificate file, no system roots.
pub(super) fn connector(
    mode: SslMode,
    root_certs: &RootCerts,
) -> Result<Option<MakeRustlsConnect>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match (mode, root_certs) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::Prefer | SslMode::Require, RootCerts::Default) => None,
        (_, RootCerts::System) => Some(system_roots()?),
        (_, RootCerts::File(path)) => Some(file_roots(path)?),
        (SslMode::VerifyCa | SslMode::VerifyFull, RootCerts::Default) => {
            let path = default_root_file().ok_or_else(|| {
                "asks for `sslmode=verify-ca`/`verify-full` but names no root certificate and \
                 `~/.postgresql/root.crt` cannot be located; add `sslrootcert=<file>` or \
                 `sslrootcert=system`"
                    .to_string()
            })?;
            if !path.exists() {
                return Err(format!(
                    "asks for `sslmode=verify-ca`/`verify-full` but the root certificate file \
                     `{}` does not exist; add `sslrootcert=<file>` or `sslrootcert=system`",
                    path.display()
                ));
            }
            Some(file_roots(&path)?)
        }
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("cannot set up TLS: {err}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match roots {
        None => larder_pgtls::encrypt_only(&provider),
        Some(roots) => {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|err| format!("cannot use the root certificates: {err}"))?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                larder_pgtls::chain_only(webpki)
            }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(config)))
}

fn default_root_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
}

fn file_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|err| {
        format!(
            "cannot read the root certificate file `{}`: {err}",
            path.display()
        )
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            format!(
                "root certificate file `{}` holds no valid PEM certificates: {err}",
                path.display()
            )
        })?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "root certificate file `{}` holds no usable certificate",
            path.display()
        ));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "asks for `sslrootcert=system` but no trusted root certificates were found on this \
             system{}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join("; "))
            }
        ));
    }
    Ok(roots)
}
