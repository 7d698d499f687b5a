//! Direct connections for online reads on a standalone server without TLS: one pipelined
//! connection per reading thread (a *lane*), shared by every request in flight on it.
//!
//! A request appends its commands to its thread's lane and waits for its replies. The
//! lane's driver task writes whatever commands have gathered in one `write`, reads the
//! replies as they come, parses them in place ([`resp`](super::resp)) and hands each
//! request its own, in order. Requests that run in the same turn of a runtime (the feature
//! server's workers each serve several connections) so share one `write` and one `read`
//! on both sides: Redis reads and answers them as one pipeline. With a connection per
//! request, the syscalls of those round trips cost Redis and Larder more than the reads
//! themselves.
//!
//! A lane belongs to the thread that first read through it, and its driver runs on that
//! thread's runtime: a tokio socket stays with the runtime it was opened on, and the
//! server's workers each run their own. A lane that fails (connection lost, a reply out of
//! protocol, no answer within the response timeout) fails the requests waiting on it and is
//! replaced by the next request; a request that fails on a lane that had answered before
//! (a connection the server closed while idle) is retried once on a new one, which is safe
//! because reads have no effects. A lane whose runtime shut down fails its requests the
//! same way, and its thread gets a new one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};

use super::config::RedisConfig;
use super::conn::STORE;
use super::resp::{Commands, Parse, Replies, Reply};
use crate::error::OnlineError;

/// Lanes kept at once: one per thread that reads. Beyond, lanes with no request waiting are
/// closed (threads that no longer read, such as a finished blocking task's).
const MAX_LANES: usize = 64;
/// A send or receive buffer grown past this by a large request or reply is not kept.
const KEEP_BUFFER_BYTES: usize = 1 << 20;
/// The receive buffer's initial size, and the free room kept in it for a read.
const READ_CHUNK: usize = 16 << 10;

/// The lanes of one standalone server.
#[derive(Debug)]
pub(super) struct DirectPool {
    config: Arc<RedisConfig>,
    lanes: Mutex<Vec<Arc<Lane>>>,
}

/// One connection and the requests waiting on it.
#[derive(Debug)]
struct Lane {
    /// The thread that opened it (whose runtime drives it).
    owner: ThreadId,
    state: Mutex<LaneState>,
    /// Wakes the driver's writer: commands are waiting to be sent, or the lane is closing.
    wake: Notify,
}

#[derive(Debug, Default)]
struct LaneState {
    /// Commands not yet written.
    out: Vec<u8>,
    /// The requests waiting for replies, in the order of their commands.
    waiting: VecDeque<Waiter>,
    /// Why the lane takes no more requests; None while it works.
    closed: Option<Failed>,
    /// Whether a request was answered: a failure after that may be the server closing an
    /// idle connection, and is retried.
    answered: bool,
}

#[derive(Debug)]
struct Waiter {
    /// How many replies its commands will get.
    expected: usize,
    reply: oneshot::Sender<Result<Answer, Failed>>,
}

/// The replies to one request's commands, with the bytes their ranges point into.
#[derive(Debug, Default)]
pub(super) struct Answer {
    buf: Vec<u8>,
    pub replies: Replies,
}

impl Answer {
    /// The received bytes the replies' ranges point into.
    pub fn buf(&self) -> &[u8] {
        &self.buf
    }
}

/// Why a round trip failed.
#[derive(Clone, Debug)]
enum Failed {
    /// Connecting, or the handshake, failed: the server is unreachable or refuses us.
    Connect(String),
    /// The connection broke, or its driver stopped, before the answer came.
    Io(String),
    /// No complete answer within the response timeout (not retried: the server is slow,
    /// not gone).
    Timeout(Duration),
    /// The server broke the protocol.
    Protocol(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Connect(e) | Failed::Io(e) | Failed::Protocol(e) => f.write_str(e),
            Failed::Timeout(t) => write!(f, "no answer within {t:?}"),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lane {
    /// Closes the lane (the first reason given stays): its waiting requests get `why`, its
    /// driver stops and drops the connection.
    fn close(&self, why: Failed) {
        let waiting = {
            let mut state = lock(&self.state);
            if state.closed.is_some() {
                return;
            }
            state.closed = Some(why.clone());
            state.out = Vec::new();
            std::mem::take(&mut state.waiting)
        };
        for waiter in waiting {
            let _ = waiter.reply.send(Err(why.clone()));
        }
        self.wake.notify_one();
    }
}

/// Closes its lane when the driver ends, whether it returned or its runtime dropped it.
struct CloseOnDrop(Arc<Lane>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(Failed::Io(
            "the runtime that drove the connection shut down".to_owned(),
        ));
    }
}

impl Drop for DirectPool {
    fn drop(&mut self) {
        for lane in lock(&self.lanes).drain(..) {
            lane.close(Failed::Io("the store was closed".to_owned()));
        }
    }
}

impl DirectPool {
    pub fn new(config: RedisConfig) -> Self {
        DirectPool {
            config: Arc::new(config),
            lanes: Mutex::new(Vec::new()),
        }
    }

    /// Sends `commands` on this thread's lane; the answer holds their replies. A reply that
    /// is a Redis error is returned as such in the answer (the caller names the command).
    pub async fn round_trip(&self, commands: &Commands) -> Result<Answer, OnlineError> {
        if commands.is_empty() {
            return Ok(Answer::default());
        }
        let (lane, reply, was_answered) = self.enqueue(commands);
        match self.wait(&lane, reply).await {
            Ok(answer) => return Ok(answer),
            Err(Failed::Io(e)) if was_answered => {
                tracing::debug!(
                    store = %self.config.describe(),
                    error = %e,
                    "redis read connection lost, reconnecting"
                );
            }
            Err(failed) => return Err(self.error(failed)),
        }
        let (lane, reply, _) = self.enqueue(commands);
        self.wait(&lane, reply)
            .await
            .map_err(|failed| self.error(failed))
    }

    /// Queues `commands` on this thread's open lane, or on a new one: the lane, where the
    /// answer will come, and whether the lane had answered before.
    fn enqueue(
        &self,
        commands: &Commands,
    ) -> (Arc<Lane>, oneshot::Receiver<Result<Answer, Failed>>, bool) {
        let me = std::thread::current().id();
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter {
            expected: commands.len(),
            reply: tx,
        };
        let mut lanes = lock(&self.lanes);
        if let Some(lane) = lanes.iter().find(|l| l.owner == me) {
            let mut state = lock(&lane.state);
            if state.closed.is_none() {
                state.out.extend_from_slice(commands.bytes());
                state.waiting.push_back(waiter);
                let answered = state.answered;
                drop(state);
                lane.wake.notify_one();
                return (lane.clone(), rx, answered);
            }
        }
        // Closed lanes go, and idle ones of other threads when there are too many.
        lanes.retain(|l| lock(&l.state).closed.is_none());
        if lanes.len() >= MAX_LANES {
            lanes.retain(|l| {
                let idle = lock(&l.state).waiting.is_empty();
                if idle {
                    l.close(Failed::Io("too many reading threads".to_owned()));
                }
                !idle
            });
        }
        let state = LaneState {
            out: commands.bytes().to_vec(),
            waiting: VecDeque::from([waiter]),
            closed: None,
            answered: false,
        };
        let lane = Arc::new(Lane {
            owner: me,
            state: Mutex::new(state),
            wake: Notify::new(),
        });
        lanes.push(lane.clone());
        drop(lanes);
        tokio::spawn(drive(lane.clone(), self.config.clone()));
        (lane, rx, false)
    }

    async fn wait(
        &self,
        lane: &Lane,
        reply: oneshot::Receiver<Result<Answer, Failed>>,
    ) -> Result<Answer, Failed> {
        let timeout = self.config.response_timeout;
        match tokio::time::timeout(timeout, reply).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Failed::Io("the connection's driver stopped".to_owned())),
            Err(_) => {
                // The connection may be dead without a word (a lost peer): a new one next.
                lane.close(Failed::Timeout(timeout));
                Err(Failed::Timeout(timeout))
            }
        }
    }

    fn error(&self, failed: Failed) -> OnlineError {
        match failed {
            Failed::Connect(message) => unavailable(&self.config, message),
            Failed::Protocol(e) => OnlineError::Unavailable {
                store: STORE.to_owned(),
                retryable: false,
                source: format!(
                    "the server answered out of protocol ({}): {e}",
                    self.config.describe(),
                )
                .into(),
            },
            other => unavailable(&self.config, format!("command failed: {other}")),
        }
    }
}

fn unavailable(config: &RedisConfig, message: String) -> OnlineError {
    OnlineError::Unavailable {
        store: STORE.to_owned(),
        retryable: true,
        source: format!("{} ({})", message, config.describe()).into(),
    }
}

/// A lane's driver: connects, then writes and reads until the lane fails or closes.
fn drive(lane: Arc<Lane>, config: Arc<RedisConfig>) -> impl Future<Output = ()> + Send {
    // Made before the task first runs: a task its runtime drops unpolled closes the lane too.
    let close = CloseOnDrop(lane.clone());
    async move {
        let _close = close;
        let why = match open(&config).await {
            Ok(stream) => run(&lane, stream).await,
            Err(message) => Failed::Connect(message),
        };
        lane.close(why);
    }
}

/// Sends what the lane's requests queue and hands them their replies; returns why it
/// stopped.
async fn run(lane: &Lane, mut stream: TcpStream) -> Failed {
    let (mut reader, mut writer) = stream.split();
    let write = async {
        let mut sending = Vec::new();
        loop {
            {
                let mut state = lock(&lane.state);
                if let Some(why) = &state.closed {
                    return why.clone();
                }
                std::mem::swap(&mut state.out, &mut sending);
            }
            if sending.is_empty() {
                lane.wake.notified().await;
                // Once more round the runtime before sending: it polls its sockets, and
                // requests that arrived meanwhile queue their commands for this write too.
                // Fewer, larger writes cost Redis less per request (`bench/redis`, 1 entity,
                // Redis CPU per request: 6.9 -> 6.1 us at c=8, 3.3 -> 2.9 us at c=64;
                // requests/s unchanged within the runs' noise).
                tokio::task::yield_now().await;
                continue;
            }
            if let Err(e) = writer.write_all(&sending).await {
                return Failed::Io(e.to_string());
            }
            sending.clear();
            if sending.capacity() > KEEP_BUFFER_BYTES {
                sending = Vec::new();
            }
        }
    };
    let read = async {
        let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        // Where the first unanswered request's replies start in `buf`, and those parsed.
        let mut start = 0;
        let mut replies = Replies::default();
        loop {
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(buf.capacity().max(READ_CHUNK));
            }
            match reader.read_buf(&mut buf).await {
                Ok(0) => return Failed::Io("the server closed the connection".to_owned()),
                Ok(_) => {}
                Err(e) => return Failed::Io(e.to_string()),
            }
            loop {
                let expected = match lock(&lane.state).waiting.front() {
                    Some(waiter) => waiter.expected,
                    None => {
                        return Failed::Protocol(format!(
                            "{} bytes arrived that no command asked for",
                            buf.len() - start
                        ));
                    }
                };
                match replies.parse_some(&buf[start..], expected) {
                    Err(e) => return Failed::Protocol(e.0),
                    Ok(Parse::More) => break,
                    Ok(Parse::Done) => {
                        let used = replies.consumed();
                        // The next answer gets room for as many replies and items as
                        // this one: parsing then grows no vector (a 100-entity read's
                        // items grew a dozen times, 3% of its request).
                        let sized = replies.with_room_alike();
                        let answer = Answer {
                            buf: buf[start..start + used].to_vec(),
                            replies: std::mem::replace(&mut replies, sized),
                        };
                        start += used;
                        let waiter = {
                            let mut state = lock(&lane.state);
                            state.answered = true;
                            state.waiting.pop_front()
                        };
                        if let Some(waiter) = waiter {
                            // Its request may have given up (timed out, cancelled).
                            let _ = waiter.reply.send(Ok(answer));
                        }
                        if start == buf.len() {
                            break;
                        }
                    }
                }
            }
            // Keep only the part of a reply still coming (its parsed part stays valid: the
            // parser's positions are relative to `start`).
            if start == buf.len() {
                buf.clear();
                if buf.capacity() > KEEP_BUFFER_BYTES {
                    buf = Vec::with_capacity(READ_CHUNK);
                }
            } else {
                buf.drain(..start);
            }
            start = 0;
        }
    };
    tokio::select! {
        why = write => why,
        why = read => why,
    }
}

/// A new connection: TCP, then `AUTH` and `SELECT` as configured, in one round trip; the
/// error is the message for [`unavailable`].
async fn open(c: &RedisConfig) -> Result<TcpStream, String> {
    let node = &c.nodes[0];
    let connect = async {
        let mut stream = TcpStream::connect((node.host.as_str(), node.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("cannot connect: {e}"))?;
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
            return Ok(stream);
        }
        let mut buf = Vec::with_capacity(256);
        let replies = handshake(&mut stream, &hello, &mut buf)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        for reply in &replies.replies {
            if let Reply::Error(range) = reply {
                // Never echo the password: Redis's messages do not contain it.
                let message = String::from_utf8_lossy(&buf[range.clone()]);
                return Err(format!("the server refused the connection: {message}"));
            }
        }
        Ok(stream)
    };
    tokio::time::timeout(c.connect_timeout, connect)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "cannot connect: no answer within {:?}",
                c.connect_timeout
            ))
        })
}

/// Writes the handshake's `commands` and reads until all their replies are parsed.
async fn handshake(
    stream: &mut TcpStream,
    commands: &Commands,
    buf: &mut Vec<u8>,
) -> Result<Replies, String> {
    stream
        .write_all(commands.bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut replies = Replies::default();
    loop {
        let read = stream.read_buf(buf).await.map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the server closed the connection".to_owned());
        }
        match replies.parse(buf, commands.len()) {
            Ok(Parse::Done) => return Ok(replies),
            Ok(Parse::More) => {}
            Err(e) => return Err(e.0),
        }
    }
}
