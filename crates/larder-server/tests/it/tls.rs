//! HTTPS through `TlsListener`: a rustls client that trusts the test CA gets Feast's
//! response; bad key files are errors naming the file. The certificates in
//! `tests/fixtures` are for `localhost`/`127.0.0.1`, signed by a test CA (valid until 2125).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use larder_server::tls::{TlsListener, server_config};
use larder_server::{Server, ServerOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::harness::Repo;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// One HTTP/1.1 exchange over TLS; returns the raw response.
async fn https(addr: std::net::SocketAddr, request: String) -> String {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(fixture("ca.pem")).unwrap();
    roots.add(ca).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .expect("the response arrives")
        .ok();
    String::from_utf8_lossy(&response).into_owned()
}

/// How a test server takes its TLS connections.
#[derive(Clone, Copy, Debug)]
enum Serving {
    /// `Server::serve` with a TLS config: the handshakes run on the HTTP workers.
    Workers,
    /// `Server::run` on a `TlsListener` over the `TcpListener`, on the test's runtime.
    Listener,
}

async fn answers_https(serving: Serving) {
    let repo = Repo::new().await;
    let options = ServerOptions {
        workers: 2,
        ..ServerOptions::default()
    };
    let server = Server::new(repo.open(), options).await.unwrap();
    let config = server_config(&fixture("server.pem"), &fixture("server.key")).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let signal = async move { signal.cancelled().await };
    let handle = match serving {
        Serving::Workers => tokio::spawn(server.serve(tcp, Some(config), signal)),
        Serving::Listener => {
            let listener = TlsListener::new(tcp, config).unwrap();
            tokio::spawn(server.run(listener, signal))
        }
    };

    let body = r#"{"features": ["driver_hourly_stats:avg_daily_trips"], "entities": {"driver_id": [1002]}}"#;
    // Several connections, so that both workers take some.
    for _ in 0..4 {
        let response = https(
            addr,
            format!(
                "POST /get-online-features HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{serving:?}: {response}"
        );
        assert!(
            response.contains(r#""values":[200]"#),
            "{serving:?}: {response}"
        );
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn serves_https_with_a_pem_certificate_and_key() {
    answers_https(Serving::Workers).await;
}

#[tokio::test]
async fn serves_https_on_a_tls_listener() {
    answers_https(Serving::Listener).await;
}

#[test]
fn bad_tls_files_are_errors_naming_the_file() {
    let missing = server_config(&fixture("nope.pem"), &fixture("server.key")).unwrap_err();
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
    // A certificate where the key should be.
    let swapped = server_config(&fixture("server.pem"), &fixture("server.pem")).unwrap_err();
    assert!(swapped.to_string().contains("key file"), "{swapped}");
    // A certificate file without certificates.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let none = server_config(&empty, &fixture("server.key")).unwrap_err();
    assert!(none.to_string().contains("no valid PEM"), "{none}");
}
