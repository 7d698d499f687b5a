//! Direct connections for online reads on a standalone server: a pool of plain TCP
//! connections, each used by one request at a time, that the request's own task writes
//! its pipeline to and reads the replies from.
//!
//! The shared multiplexed connection hands every request to a driver task and back through
//! channels (two task wake-ups and a thread hop per request) and parses each value into an
//! allocated `redis::Value`; here a read is one `write` and usually one `read` on the calling
//! task, and replies are parsed in place ([`resp`](super::resp)). A connection that fails
//! or answers out of protocol is dropped, never reused; a request that fails on a reused
//! connection (closed by the server while idle) is retried once on a new one, which is
//! safe because reads have no effects.
//!
//! A connection is reused only by the thread that opened it. A tokio socket stays with the
//! runtime it was opened on: used from the feature server's other worker threads (each its
//! own runtime), its replies would wait for that runtime's thread to poll for them and then
//! wake the reader across threads.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::config::RedisConfig;
use super::conn::STORE;
use super::resp::{Commands, Malformed, Parse, Replies, Reply};
use crate::error::OnlineError;

/// Round trips at once, each on a connection of its own (requests beyond wait their turn).
const MAX_CONNECTIONS: usize = 128;
/// Idle connections kept for reuse: as many as may be in use, so that a burst of concurrent
/// requests does not close what it opened (with 32 kept, `larder serve` under 64 concurrent
/// 1-entity requests opened some 1,500 connections a second, and served 8.4k requests/s
/// against 12.0k under 8).
const MAX_IDLE: usize = MAX_CONNECTIONS;
/// A receive buffer grown past this by a large reply is not kept in the pool.
const KEEP_BUFFER_BYTES: usize = 1 << 20;

/// The pool of one standalone server.
#[derive(Debug)]
pub(super) struct DirectPool {
    config: RedisConfig,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The thread that opened it (whose runtime drives it).
    owner: std::thread::ThreadId,
}

/// A connection lent to one round trip, with its replies; goes back to the pool on drop
/// unless the round trip failed.
pub(super) struct Lease<'p> {
    pool: &'p DirectPool,
    conn: Option<Conn>,
    pub replies: Replies,
    _permit: SemaphorePermit<'p>,
}

impl Lease<'_> {
    /// The receive buffer the replies' ranges point into.
    pub fn buf(&self) -> &[u8] {
        self.conn.as_ref().map_or(&[], |c| &c.buf)
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && conn.buf.capacity() <= KEEP_BUFFER_BYTES
        {
            let mut idle = self
                .pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if idle.len() >= MAX_IDLE {
                // Full (threads that no longer read hold idle connections): the oldest goes.
                idle.remove(0);
            }
            idle.push(conn);
        }
    }
}

/// Why a round trip failed.
enum Failed {
    /// Connecting, or the handshake, failed: the server is unreachable or refuses us.
    Connect(OnlineError),
    /// The connection broke during the round trip.
    Io(String),
    /// No complete answer within the response timeout (not retried: the server is slow,
    /// not gone).
    Timeout(Duration),
    /// The server broke the protocol.
    Protocol(Malformed),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Connect(e) => write!(f, "{e}"),
            Failed::Io(e) => f.write_str(e),
            Failed::Timeout(t) => write!(f, "no answer within {t:?}"),
            Failed::Protocol(e) => f.write_str(&e.0),
        }
    }
}

impl DirectPool {
    pub fn new(config: RedisConfig) -> Self {
        DirectPool {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(MAX_CONNECTIONS),
        }
    }

    /// Sends `commands` in one round trip; the lease holds their replies. A reply that is
    /// a Redis error is returned as such in the lease (the caller names the command).
    pub async fn round_trip(&self, commands: &Commands) -> Result<Lease<'_>, OnlineError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| OnlineError::internal("the redis connection pool is closed"))?;
        if commands.is_empty() {
            return Ok(Lease {
                pool: self,
                conn: None,
                replies: Replies::default(),
                _permit: permit,
            });
        }
        let reused = {
            let me = std::thread::current().id();
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.iter()
                .rposition(|c| c.owner == me)
                .map(|at| idle.swap_remove(at))
        };
        let was_reused = reused.is_some();
        let mut lease = Lease {
            pool: self,
            conn: reused,
            replies: Replies::default(),
            _permit: permit,
        };
        match self.attempt(&mut lease, commands).await {
            Ok(()) => return Ok(lease),
            Err(Failed::Io(e)) if was_reused => {
                tracing::debug!(store = %self.config.describe(), error = %e, "idle redis connection lost, reconnecting");
            }
            Err(failed) => return Err(self.error(failed)),
        }
        lease.conn = None;
        self.attempt(&mut lease, commands)
            .await
            .map_err(|failed| self.error(failed))?;
        Ok(lease)
    }

    async fn attempt(&self, lease: &mut Lease<'_>, commands: &Commands) -> Result<(), Failed> {
        let mut conn = match lease.conn.take() {
            Some(conn) => conn,
            None => self.open().await.map_err(Failed::Connect)?,
        };
        let timeout = self.config.response_timeout;
        lease.replies.clear();
        let outcome =
            tokio::time::timeout(timeout, exchange(&mut conn, commands, &mut lease.replies))
                .await
                .unwrap_or(Err(Failed::Timeout(timeout)));
        if outcome.is_ok() {
            lease.conn = Some(conn);
        }
        outcome
    }

    /// A new connection: TCP, then `AUTH` and `SELECT` as configured, in one round trip.
    async fn open(&self) -> Result<Conn, OnlineError> {
        let c = &self.config;
        let node = &c.nodes[0];
        let connect = async {
            let stream = TcpStream::connect((node.host.as_str(), node.port))
                .await
                .map_err(|e| self.unavailable(format!("cannot connect: {e}")))?;
            stream
                .set_nodelay(true)
                .map_err(|e| self.unavailable(format!("cannot connect: {e}")))?;
            let mut conn = Conn {
                stream,
                buf: Vec::with_capacity(16 << 10),
                owner: std::thread::current().id(),
            };
            let mut hello = Commands::default();
            if let Some(password) = &c.password {
                match &c.username {
                    Some(user) => hello
                        .command(3)
                        .arg(b"AUTH")
                        .arg(user.as_bytes())
                        .arg(password.as_bytes()),
                    None => hello.command(2).arg(b"AUTH").arg(password.as_bytes()),
                };
            }
            if c.db != 0 {
                hello
                    .command(2)
                    .arg(b"SELECT")
                    .arg(c.db.to_string().as_bytes());
            }
            if hello.is_empty() {
                return Ok(conn);
            }
            let mut replies = Replies::default();
            exchange(&mut conn, &hello, &mut replies)
                .await
                .map_err(|failed| self.unavailable(format!("cannot connect: {failed}")))?;
            for reply in &replies.replies {
                if let Reply::Error(range) = reply {
                    // Never echo the password: Redis's messages do not contain it.
                    let message = String::from_utf8_lossy(&conn.buf[range.clone()]).into_owned();
                    return Err(
                        self.unavailable(format!("the server refused the connection: {message}"))
                    );
                }
            }
            Ok(conn)
        };
        tokio::time::timeout(c.connect_timeout, connect)
            .await
            .unwrap_or_else(|_| {
                Err(self.unavailable(format!(
                    "cannot connect: no answer within {:?}",
                    c.connect_timeout
                )))
            })
    }

    fn unavailable(&self, message: String) -> OnlineError {
        OnlineError::Unavailable {
            store: STORE.to_owned(),
            retryable: true,
            source: format!("{} ({})", message, self.config.describe()).into(),
        }
    }

    fn error(&self, failed: Failed) -> OnlineError {
        match failed {
            Failed::Connect(e) => e,
            Failed::Protocol(e) => OnlineError::Unavailable {
                store: STORE.to_owned(),
                retryable: false,
                source: format!(
                    "the server answered out of protocol ({}): {}",
                    self.config.describe(),
                    e.0
                )
                .into(),
            },
            other => self.unavailable(format!("command failed: {other}")),
        }
    }
}

/// Writes `commands` and reads until all their replies are parsed.
async fn exchange(
    conn: &mut Conn,
    commands: &Commands,
    replies: &mut Replies,
) -> Result<(), Failed> {
    conn.buf.clear();
    conn.stream
        .write_all(commands.bytes())
        .await
        .map_err(|e| Failed::Io(e.to_string()))?;
    loop {
        if conn.buf.capacity() - conn.buf.len() < 4096 {
            conn.buf.reserve(conn.buf.capacity().max(16 << 10));
        }
        let read = conn
            .stream
            .read_buf(&mut conn.buf)
            .await
            .map_err(|e| Failed::Io(e.to_string()))?;
        if read == 0 {
            return Err(Failed::Io("the server closed the connection".to_owned()));
        }
        match replies.parse(&conn.buf, commands.len()) {
            Ok(Parse::Done) => return Ok(()),
            Ok(Parse::More) => {}
            Err(e) => return Err(Failed::Protocol(e)),
        }
    }
}
