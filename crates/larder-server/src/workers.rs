//! HTTP workers: one thread per worker, each running its own single-threaded runtime that
//! serves the connections handed to it.
//!
//! Why not one multi-threaded runtime: a feature-server request is a few tens of
//! microseconds of work, and tokio's work-stealing scheduler wakes idle workers across
//! threads (a futex wake and, on a VM, an inter-processor interrupt) for much of that
//! traffic. With one runtime per thread, a connection lives on one thread from accept to
//! close and nothing crosses threads per request. On this project's 2-core VM, 1 entity x 15
//! features on SQLite at concurrency 8: 29.4k-32.0k requests/s and 41-46 µs of server CPU per
//! request, against 27.1k-29.9k and 46-50 µs with one multi-threaded runtime; at 64,
//! 37.3k-40.5k against 31.2k-34.2k. (Two separate single-worker processes did better still,
//! 38k at concurrency 8: the workers of one process share SQLite's per-file locks.)
//!
//! The acceptor runs on the caller's runtime and hands accepted sockets out round-robin,
//! so a client's connections spread evenly (SO_REUSEPORT would hash them, and 8
//! connections over 2 threads often land 6 and 2). Each worker registers its sockets with
//! its own runtime; with TLS it also runs the handshakes. Work that is not a request
//! (registry refresh, materializations) stays on the caller's runtime.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::tls::TlsListener;

/// Accepted connections waiting for a worker: beyond this the acceptor waits (and the
/// kernel's backlog holds new connections).
const HANDED_QUEUE: usize = 1024;

type Handoff = (std::net::TcpStream, SocketAddr);

/// The connections handed to one worker, as an `axum::serve::Listener`.
struct Handed {
    rx: mpsc::Receiver<Handoff>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for Handed {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((socket, peer)) = self.rx.recv().await else {
                // The acceptor stopped: accept nothing more.
                return std::future::pending().await;
            };
            // Registers the socket with this worker's runtime.
            match TcpStream::from_std(socket) {
                Ok(stream) => return (stream, peer),
                Err(e) => tracing::warn!(%peer, error = %e, "cannot take over a connection"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// How the workers stop: `closing` starts a graceful shutdown (no new connections,
/// in-flight requests finish), `abort` ends serving at once, and `release` lets the
/// threads end (until then their runtimes keep driving the connections and tasks they
/// started, such as a store client's, which other runtimes may still use).
#[derive(Clone)]
pub(crate) struct Stops {
    pub closing: CancellationToken,
    pub abort: CancellationToken,
    pub release: CancellationToken,
}

/// Running workers.
pub(crate) struct Workers {
    pub senders: Vec<mpsc::Sender<Handoff>>,
    /// Each worker's serving outcome (a dropped sender: the worker thread panicked).
    pub served: Vec<oneshot::Receiver<std::io::Result<()>>>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` workers serving `router` (TLS with `tls`).
    pub fn start(
        count: usize,
        local_addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        router: &Router,
        stops: &Stops,
    ) -> std::io::Result<Self> {
        let mut workers = Workers {
            senders: Vec::with_capacity(count),
            served: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
        };
        for index in 0..count.max(1) {
            let (tx, rx) = mpsc::channel(HANDED_QUEUE);
            let (done, served) = oneshot::channel();
            let handed = Handed { rx, local_addr };
            let (router, worker_stops, tls) = (router.clone(), stops.clone(), tls.clone());
            let thread = std::thread::Builder::new()
                .name(format!("larder-http-{index}"))
                .spawn(move || run_worker(handed, tls, router, worker_stops, done));
            match thread {
                Ok(thread) => workers.threads.push(thread),
                Err(e) => {
                    // The started ones end with the caller's cleanup.
                    stops.abort.cancel();
                    stops.release.cancel();
                    return Err(e);
                }
            }
            workers.senders.push(tx);
            workers.served.push(served);
        }
        Ok(workers)
    }
}

fn run_worker(
    handed: Handed,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    stops: Stops,
    done: oneshot::Sender<std::io::Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = done.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        tokio::spawn(keep_a_wake_up_planned());
        let result = match tls {
            None => serve_until(handed, router, &stops).await,
            // Inside this runtime, so the handshakes run on this thread.
            Some(config) => match TlsListener::new(handed, config) {
                Ok(listener) => serve_until(listener, router, &stops).await,
                Err(e) => Err(e),
            },
        };
        let _ = done.send(result);
        stops.release.cancelled().await;
    });
}

/// How often a worker's runtime wakes up with nothing to do; see
/// [`keep_a_wake_up_planned`].
const PLANNED_WAKE_UP: std::time::Duration = std::time::Duration::from_millis(100);

/// Keeps a timer due within [`PLANNED_WAKE_UP`] on the worker's runtime, so that starting a
/// request's timeouts never has to wake the runtime's driver.
///
/// Tokio wakes its driver (a write to an eventfd) whenever a new timer is due before the
/// driver's planned wake-up, or when none is planned: after a quiet moment in which every
/// request finished and dropped its timers, each of a request's timeouts (the request's
/// own, the store read's, a Redis lane's response timeout) cost a system call, three per
/// one-entity request at concurrency 8 (`perf` on `write`). With a wake-up always planned
/// within 100 ms, timeouts of more than that (the defaults are seconds) never need one
/// (0.01 eventfd writes per request instead of 2.86; the requests/s gained were within this
/// VM's run-to-run noise); a shorter one still wakes the driver, so no deadline depends on
/// this.
async fn keep_a_wake_up_planned() {
    let mut tick = tokio::time::interval(PLANNED_WAKE_UP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

async fn serve_until<L>(listener: L, router: Router, stops: &Stops) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let serve = axum::serve(listener, router)
        .with_graceful_shutdown(stops.closing.clone().cancelled_owned())
        .into_future();
    tokio::select! {
        result = serve => result,
        _ = stops.abort.cancelled() => Ok(()),
    }
}

/// Accepts connections on `listener` and hands them to the workers in turn until
/// `closing`; then closes the listener (new connections are refused).
pub(crate) async fn hand_out(
    mut listener: TcpListener,
    mut senders: Vec<mpsc::Sender<Handoff>>,
    closing: CancellationToken,
) {
    let mut next = 0usize;
    loop {
        // axum's accept retries (and logs) failed accepts itself.
        let (stream, peer) = tokio::select! {
            _ = closing.cancelled() => return,
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
        };
        // Unregisters the socket from this runtime so that a worker can take it.
        let mut handoff = match stream.into_std() {
            Ok(socket) => (socket, peer),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand over a connection");
                continue;
            }
        };
        // A worker that stopped (it cannot, short of a bug) leaves the rotation.
        loop {
            if senders.is_empty() {
                tracing::error!("no HTTP worker is left; the listener closes");
                return;
            }
            let at = next % senders.len();
            next = next.wrapping_add(1);
            let sent = tokio::select! {
                _ = closing.cancelled() => return,
                sent = senders[at].send(handoff) => sent,
            };
            match sent {
                Ok(()) => break,
                Err(mpsc::error::SendError(back)) => {
                    tracing::error!(worker = at, "an HTTP worker has stopped");
                    senders.swap_remove(at);
                    handoff = back;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An acceptor on a fresh local port handing connections to two workers: the address,
    /// the workers' ends, the token that closes it, and its task.
    async fn acceptor() -> (
        SocketAddr,
        [mpsc::Receiver<Handoff>; 2],
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx_a, rx_a) = mpsc::channel(16);
        let (tx_b, rx_b) = mpsc::channel(16);
        let closing = CancellationToken::new();
        let task = tokio::spawn(hand_out(listener, vec![tx_a, tx_b], closing.clone()));
        (addr, [rx_a, rx_b], closing, task)
    }

    /// A client connection to `addr` and its own address, as the acceptor sees its peer.
    async fn connect(addr: SocketAddr) -> (TcpStream, SocketAddr) {
        let client = TcpStream::connect(addr).await.unwrap();
        let local = client.local_addr().unwrap();
        (client, local)
    }

    #[tokio::test]
    async fn connections_are_handed_out_in_turn_and_the_listener_closes_at_closing() {
        let (addr, [mut rx_a, mut rx_b], closing, acceptor) = acceptor().await;

        let mut clients = Vec::new();
        for i in 0..4 {
            let (client, local) = connect(addr).await;
            clients.push(client);
            // In turn: the first connection to worker a, the second to b, ...
            let rx = if i % 2 == 0 { &mut rx_a } else { &mut rx_b };
            let (socket, peer) = rx.recv().await.unwrap();
            assert_eq!(peer, local, "connection {i}");
            assert_eq!(socket.peer_addr().unwrap(), local);
        }
        assert!(rx_a.try_recv().is_err() && rx_b.try_recv().is_err());

        closing.cancel();
        acceptor.await.unwrap();
        // The listener is closed: a new connection is refused.
        assert!(TcpStream::connect(addr).await.is_err());
        drop(clients);
    }

    #[tokio::test]
    async fn a_stopped_worker_leaves_the_rotation() {
        let (addr, [rx_a, mut rx_b], closing, acceptor) = acceptor().await;
        // Worker a stops before any connection arrives.
        drop(rx_a);
        let mut clients = Vec::new();
        for i in 0..3 {
            let (client, local) = connect(addr).await;
            clients.push(client);
            let (_, peer) = rx_b.recv().await.unwrap();
            assert_eq!(peer, local, "connection {i}");
        }
        closing.cancel();
        acceptor.await.unwrap();
    }
}
