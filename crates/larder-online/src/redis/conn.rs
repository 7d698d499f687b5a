//! Connections to a standalone server, a sentinel-managed primary or a cluster, behind one
//! "run these commands in one round trip" interface.
//!
//! Standalone and sentinel use one multiplexed `ConnectionManager` (reconnects by itself);
//! a batch of commands goes out as one pipeline. A cluster pipeline must stay within one hash
//! slot, so on a cluster the commands are sent concurrently instead: the multiplexed
//! connection of each node pipelines them, one round trip per node, all nodes in parallel.
//! The connection is made on first use, so building the store never blocks.

use futures::future::try_join_all;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue, IntoConnectionInfo,
    Pipeline, RedisConnectionInfo, RedisError, ServerErrorKind, TlsMode, Value,
};
use tokio::sync::RwLock;

use super::config::{RedisConfig, RedisNode, RedisTopology};
use crate::error::OnlineError;

pub(super) const STORE: &str = "redis";

/// Why a round trip failed: no connection could be made, or Redis answered with an error.
enum Failure {
    Connect(OnlineError),
    Redis(RedisError),
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The store's connection, made on first use and remade after a sentinel failover.
pub(super) struct Connector {
    config: RedisConfig,
    conn: RwLock<Option<Conn>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.config.describe())
    }
}

impl Connector {
    pub fn new(config: RedisConfig) -> Self {
        Connector {
            config,
            conn: RwLock::new(None),
        }
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Connects now (instead of on first use); errors name the server.
    pub async fn connect(&self) -> Result<(), OnlineError> {
        self.current().await.map(|_| ())
    }

    async fn current(&self) -> Result<Conn, OnlineError> {
        if let Some(conn) = self.conn.read().await.as_ref() {
            return Ok(conn.clone());
        }
        let mut slot = self.conn.write().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.open().await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn open(&self) -> Result<Conn, OnlineError> {
        let c = &self.config;
        let connect_error = |e: RedisError| self.error(e, "cannot connect");
        match &c.topology {
            RedisTopology::Standalone => {
                let info = self.node_info(&c.nodes[0])?;
                let client = Client::open(info).map_err(connect_error)?;
                Ok(Conn::Single(self.manager(client).await?))
            }
            RedisTopology::Sentinel { master } => {
                let sentinels: Vec<ConnectionAddr> = c.nodes.iter().map(|n| self.addr(n)).collect();
                let mut builder = SentinelClientBuilder::new(
                    sentinels,
                    master.clone(),
                    SentinelServerType::Master,
                )
                .map_err(connect_error)?
                .set_client_to_redis_db(c.db);
                if let Some(user) = &c.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(password) = &c.password {
                    // Feast passes one password to both the sentinels and the primary.
                    builder = builder
                        .set_client_to_redis_password(password)
                        .set_client_to_sentinel_password(password);
                }
                if c.tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(self.tls_mode())
                        .set_client_to_sentinel_tls_mode(self.tls_mode());
                }
                let mut sentinel = builder.build().map_err(connect_error)?;
                let client = tokio::time::timeout(c.connect_timeout, sentinel.async_get_client())
                    .await
                    .map_err(|_| self.timeout("cannot resolve the primary"))?
                    .map_err(connect_error)?;
                Ok(Conn::Single(self.manager(client).await?))
            }
            RedisTopology::Cluster => {
                let nodes = c
                    .nodes
                    .iter()
                    .map(|n| self.node_info(n))
                    .collect::<Result<Vec<ConnectionInfo>, _>>()?;
                let mut builder = ClusterClientBuilder::new(nodes)
                    .connection_timeout(c.connect_timeout)
                    .response_timeout(c.response_timeout);
                if let Some(user) = &c.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &c.password {
                    builder = builder.password(password);
                }
                if c.tls {
                    builder = builder.tls(self.tls_mode());
                }
                let client = builder.build().map_err(connect_error)?;
                let conn = tokio::time::timeout(
                    c.connect_timeout.saturating_mul(2),
                    client.get_async_connection(),
                )
                .await
                .map_err(|_| self.timeout("cannot connect"))?
                .map_err(connect_error)?;
                Ok(Conn::Cluster(conn))
            }
        }
    }

    async fn manager(&self, client: Client) -> Result<ConnectionManager, OnlineError> {
        let c = &self.config;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(c.connect_timeout))
            .set_response_timeout(Some(c.response_timeout))
            .set_number_of_retries(2);
        ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| self.error(e, "cannot connect"))
    }

    fn tls_mode(&self) -> TlsMode {
        if self.config.tls_insecure {
            TlsMode::Insecure
        } else {
            TlsMode::Secure
        }
    }

    fn addr(&self, node: &RedisNode) -> ConnectionAddr {
        if self.config.tls {
            ConnectionAddr::TcpTls {
                host: node.host.clone(),
                port: node.port,
                insecure: self.config.tls_insecure,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(node.host.clone(), node.port)
        }
    }

    fn node_info(&self, node: &RedisNode) -> Result<ConnectionInfo, OnlineError> {
        let c = &self.config;
        let mut redis = RedisConnectionInfo::default().set_db(c.db);
        if let Some(user) = &c.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &c.password {
            redis = redis.set_password(password);
        }
        self.addr(node)
            .into_connection_info()
            .map(|info| info.set_redis_settings(redis))
            .map_err(|e| self.error(e, "invalid address"))
    }

    /// Sends `commands` in one round trip and returns their replies in order.
    ///
    /// A lost connection is retried once (a sentinel deployment re-resolves its primary
    /// first); the commands Larder sends are idempotent, so a retry after a half-applied
    /// batch is safe.
    pub async fn run<T: FromRedisValue + Send + 'static>(
        &self,
        commands: &Pipeline,
    ) -> Result<Vec<T>, OnlineError> {
        match self.run_raw(commands).await {
            Ok(replies) => Ok(replies),
            Err(Failure::Connect(e)) => Err(e),
            Err(Failure::Redis(e)) => Err(self.error(e, "command failed")),
        }
    }

    /// Like [`run`](Self::run) for `EVALSHA` commands of `script`: a server that does not
    /// have the script cached (restarted, failed over, `SCRIPT FLUSH`) gets it loaded and
    /// the commands are sent again.
    pub async fn run_script<T: FromRedisValue + Send + 'static>(
        &self,
        script: &str,
        commands: &Pipeline,
    ) -> Result<Vec<T>, OnlineError> {
        match self.run_raw(commands).await {
            Ok(replies) => Ok(replies),
            Err(Failure::Redis(e)) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.load_script(script).await?;
                self.run(commands).await
            }
            Err(Failure::Connect(e)) => Err(e),
            Err(Failure::Redis(e)) => Err(self.error(e, "command failed")),
        }
    }

    async fn run_raw<T: FromRedisValue + Send + 'static>(
        &self,
        commands: &Pipeline,
    ) -> Result<Vec<T>, Failure> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.current().await.map_err(Failure::Connect)?;
        match Self::send::<T>(first, commands).await {
            Err(e) if is_connection_error(&e) => {
                tracing::warn!(store = %self.config.describe(), error = %e, "redis connection lost, retrying once");
                *self.conn.write().await = None;
                let again = self.current().await.map_err(Failure::Connect)?;
                Self::send::<T>(again, commands)
                    .await
                    .map_err(Failure::Redis)
            }
            other => other.map_err(Failure::Redis),
        }
    }

    async fn send<T: FromRedisValue + Send + 'static>(
        conn: Conn,
        commands: &Pipeline,
    ) -> Result<Vec<T>, RedisError> {
        match conn {
            Conn::Single(mut manager) => commands.query_async(&mut manager).await,
            Conn::Cluster(conn) => {
                try_join_all(commands.cmd_iter().map(|command| {
                    let mut conn = conn.clone();
                    async move { command.query_async::<T>(&mut conn).await }
                }))
                .await
            }
        }
    }

    /// Loads `script` into the script cache of every node.
    pub async fn load_script(&self, script: &str) -> Result<(), OnlineError> {
        let mut load = redis::pipe();
        load.cmd("SCRIPT").arg("LOAD").arg(script);
        self.run::<Value>(&load).await?;
        Ok(())
    }

    /// Calls `visit` with each page of keys matching `pattern`, over every primary.
    pub async fn scan<F, Fut>(&self, pattern: &str, mut visit: F) -> Result<(), OnlineError>
    where
        F: FnMut(Vec<Vec<u8>>) -> Fut,
        Fut: std::future::Future<Output = Result<(), OnlineError>>,
    {
        match self.current().await? {
            Conn::Single(mut manager) => {
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut manager)
                        .await
                        .map_err(|e| self.error(e, "scan failed"))?;
                    if !keys.is_empty() {
                        visit(keys).await?;
                    }
                    if next == 0 {
                        return Ok(());
                    }
                    cursor = next;
                }
            }
            Conn::Cluster(mut conn) => {
                for (host, port) in self.cluster_primaries(&mut conn).await? {
                    let mut cursor: u64 = 0;
                    loop {
                        let mut scan = redis::cmd("SCAN");
                        scan.arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000);
                        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        });
                        let reply = conn
                            .route_command(scan, route)
                            .await
                            .map_err(|e| self.error(e, "scan failed"))?;
                        let (next, keys): (u64, Vec<Vec<u8>>) =
                            FromRedisValue::from_redis_value(reply)
                                .map_err(|e| self.error(e.into(), "scan failed"))?;
                        if !keys.is_empty() {
                            visit(keys).await?;
                        }
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
                Ok(())
            }
        }
    }

    /// `host:port` of each primary, from `CLUSTER NODES`.
    async fn cluster_primaries(
        &self,
        conn: &mut ClusterConnection,
    ) -> Result<Vec<(String, u16)>, OnlineError> {
        let reply = conn
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(|e| self.error(e, "cannot list the cluster's nodes"))?;
        let text: String = FromRedisValue::from_redis_value(reply)
            .map_err(|e| self.error(e.into(), "cannot list the cluster's nodes"))?;
        let mut primaries = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                continue;
            }
            // `host:port@cport[,hostname]`
            let addr = addr.split(['@', ',']).next().unwrap_or(addr);
            if let Some((host, port)) = addr.rsplit_once(':')
                && let Ok(port) = port.parse()
            {
                primaries.push((host.to_owned(), port));
            }
        }
        Ok(primaries)
    }

    pub fn error(&self, e: RedisError, what: &str) -> OnlineError {
        let retryable = is_connection_error(&e) || e.is_timeout();
        OnlineError::Unavailable {
            store: STORE.to_owned(),
            retryable,
            source: format!("{what} ({}): {e}", self.config.describe()).into(),
        }
    }

    fn timeout(&self, what: &str) -> OnlineError {
        OnlineError::Unavailable {
            store: STORE.to_owned(),
            retryable: true,
            source: format!(
                "{what} ({}): no answer within {:?}",
                self.config.describe(),
                self.config.connect_timeout
            )
            .into(),
        }
    }
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly)
                | ErrorKind::Server(ServerErrorKind::MasterDown)
        )
}
