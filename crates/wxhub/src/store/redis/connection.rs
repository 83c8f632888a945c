//! How the redis store reaches its server: one URL (plain, TLS, with ACL credentials), or the
//! master of a Sentinel group, followed across failovers.
//!
//! [`Connector::open`] gives the store two things: [`Commands`], the command connection every
//! operation clones (it implements the crate's `ConnectionLike`, so scripts and pipelines run on
//! it unchanged), and a [`Connector`] the change feed opens its pub/sub connections with.
//!
//! With Sentinel, a resolver task owns the Sentinel client. It asks the Sentinels which server
//! is the master every [`RESOLVE_INTERVAL`] and at once whenever a command or the feed fails;
//! when the answer changes it opens a connection to the new master, swaps it in for every later
//! command, and tells the feed (which then subscribes on the new master and signals its followers
//! to reload what is stored there). Until then, operations fail with `Unavailable` and the engine keeps serving
//! what it has in memory.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture,
    TlsCertificates, TlsMode, Value,
};
use tokio::sync::{watch, Notify};

use super::{CONNECT_RETRIES, CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use crate::configuration::{RedisSettings, RedisTarget};
use crate::store::StoreError;

/// How often the resolver asks the Sentinels who the master is, even when nothing failed: a
/// master that was cut off from the Sentinels (but not from this hub) is left within this.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(2);

/// The shortest pause between two questions to the Sentinels, however many operations fail
/// meanwhile.
const RESOLVE_MIN_GAP: Duration = Duration::from_millis(200);

/// How long one question to the Sentinels (and the check of the master they name) may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens the store's connections as the settings say.
#[derive(Clone)]
pub(super) enum Connector {
    /// One server.
    Direct {
        /// The server's client (address, credentials, TLS); boxed, it is large.
        client: Box<Client>,
        /// Never changes: a direct store's feed has no master to follow.
        master: watch::Receiver<u64>,
        /// Keeps `master` open.
        _never: Arc<watch::Sender<u64>>,
    },
    /// The master of a Sentinel group.
    Sentinel(Arc<Follower>),
}

/// What the Sentinel resolver shares with the connections that follow it.
pub(super) struct Follower {
    /// The master in use now.
    current: ArcSwap<Master>,
    /// Wakes the resolver early (a command or the feed failed).
    wake: Notify,
    /// Counts master changes; the feed resubscribes when it moves.
    changed: watch::Sender<u64>,
}

/// One master: its client (for pub/sub) and the command connection to it.
struct Master {
    /// Where it is, as `host:port`, to notice a change.
    address: String,
    /// Opens pub/sub connections to it.
    client: Client,
    /// The shared command connection to it.
    conn: ConnectionManager,
}

/// The command connection: cloned per operation, like the crate's `ConnectionManager` it wraps.
#[derive(Clone)]
pub(super) enum Commands {
    /// A direct store: the crate's reconnecting connection, as is.
    Direct(ConnectionManager),
    /// Whichever master the Sentinels name now.
    Sentinel(Arc<Follower>),
}

impl Connector {
    /// Connects as `settings` say: the command connection, and the connector for the feed.
    pub(super) async fn open(
        settings: &RedisSettings,
    ) -> Result<(Connector, Commands), StoreError> {
        let target = settings.display_target();
        let certificates = certificates(settings)?;
        match &settings.target {
            RedisTarget::Url(url) => {
                let client = direct_client(url, settings, certificates).map_err(|e| {
                    StoreError::Unavailable(format!("invalid Redis URL {target}: {e}"))
                })?;
                let conn = client
                    .get_connection_manager_with_config(manager_config())
                    .await
                    .map_err(|e| connect_error(&target, &e))?;
                let (never, master) = watch::channel(0);
                Ok((
                    Connector::Direct {
                        client: Box::new(client),
                        master,
                        _never: Arc::new(never),
                    },
                    Commands::Direct(conn),
                ))
            }
            RedisTarget::Sentinel { master, sentinels } => {
                let mut sentinel = sentinel_client(master, sentinels, settings, certificates)
                    .map_err(|e| {
                        StoreError::Unavailable(format!(
                            "invalid Sentinel settings for {target}: {e}"
                        ))
                    })?;
                let first = resolve(&mut sentinel).await.map_err(|e| {
                    StoreError::Unavailable(format!("asking the Sentinels for {target}: {e}"))
                })?;
                tracing::info!(master = %first.address, "Redis master found through Sentinel");
                let (changed, _) = watch::channel(0);
                let follower = Arc::new(Follower {
                    current: ArcSwap::from_pointee(first),
                    wake: Notify::new(),
                    changed,
                });
                tokio::spawn(follow(Arc::downgrade(&follower), sentinel));
                Ok((
                    Connector::Sentinel(follower.clone()),
                    Commands::Sentinel(follower),
                ))
            }
        }
    }

    /// A new pub/sub connection to the (current) master.
    pub(super) async fn pubsub(&self) -> Result<PubSub, redis::RedisError> {
        let client = match self {
            Connector::Direct { client, .. } => (**client).clone(),
            Connector::Sentinel(follower) => follower.current.load().client.clone(),
        };
        let result = client.get_async_pubsub().await;
        if result.is_err() {
            self.suspect();
        }
        result
    }

    /// Something failed that a master change would explain: ask the Sentinels now.
    pub(super) fn suspect(&self) {
        if let Connector::Sentinel(follower) = self {
            follower.wake.notify_one();
        }
    }

    /// Resolves when the master changes (never, for a direct store).
    pub(super) fn master_changes(&self) -> watch::Receiver<u64> {
        match self {
            Connector::Direct { master, .. } => master.clone(),
            Connector::Sentinel(follower) => follower.changed.subscribe(),
        }
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Direct(conn) => conn.req_packed_command(cmd),
            Commands::Sentinel(follower) => {
                let follower = follower.clone();
                Box::pin(async move {
                    let mut conn = follower.current.load().conn.clone();
                    let result = conn.req_packed_command(cmd).await;
                    if result.is_err() {
                        follower.wake.notify_one();
                    }
                    result
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Direct(conn) => conn.req_packed_commands(pipeline, offset, count),
            Commands::Sentinel(follower) => {
                let follower = follower.clone();
                Box::pin(async move {
                    let mut conn = follower.current.load().conn.clone();
                    let result = conn.req_packed_commands(pipeline, offset, count).await;
                    if result.is_err() {
                        follower.wake.notify_one();
                    }
                    result
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Direct(conn) => conn.get_db(),
            Commands::Sentinel(follower) => follower.current.load().conn.get_db(),
        }
    }
}

/// The command connection's reconnection policy: fail fast while Redis is away.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(CONNECT_RETRIES)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// The CA file's certificates, if one is configured.
fn certificates(settings: &RedisSettings) -> Result<Option<TlsCertificates>, StoreError> {
    let Some(path) = &settings.ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot read the Redis CA file {}: {e}",
            path.display()
        ))
    })?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(StoreError::Unavailable(format!(
            "the Redis CA file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

/// A client for one server: the URL's address, TLS and database, with the configured username
/// and password in place of the URL's.
fn direct_client(
    url: &str,
    settings: &RedisSettings,
    certificates: Option<TlsCertificates>,
) -> Result<Client, redis::RedisError> {
    let info = with_credentials(url.into_connection_info()?, settings);
    match certificates {
        Some(certificates) if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) => {
            Client::build_with_tls(info, certificates)
        }
        _ => Client::open(info),
    }
}

/// `info` with `[store] username` / `password` applied over what the URL said.
fn with_credentials(info: ConnectionInfo, settings: &RedisSettings) -> ConnectionInfo {
    let mut redis = info.redis_settings().clone();
    if let Some(username) = &settings.username {
        redis = redis.set_username(username);
    }
    if let Some(password) = &settings.password {
        redis = redis.set_password(password.expose());
    }
    info.set_redis_settings(redis)
}

/// The Sentinel client for `master`: the Sentinels' own credentials and TLS from their URLs; the
/// data nodes get the configured credentials, and TLS when the Sentinels use it.
fn sentinel_client(
    master: &str,
    sentinels: &[String],
    settings: &RedisSettings,
    certificates: Option<TlsCertificates>,
) -> Result<SentinelClient, redis::RedisError> {
    let infos = sentinels
        .iter()
        .map(|url| url.as_str().into_connection_info())
        .collect::<Result<Vec<_>, _>>()?;
    let tls = infos
        .iter()
        .any(|info| matches!(info.addr(), ConnectionAddr::TcpTls { .. }));
    let sentinel_auth = infos.first().map(|info| info.redis_settings().clone());
    let mut builder = SentinelClientBuilder::new(
        infos.iter().map(|info| info.addr().clone()),
        master,
        SentinelServerType::Master,
    )?;
    if let Some(auth) = sentinel_auth {
        if let Some(username) = auth.username() {
            builder = builder.set_client_to_sentinel_username(username);
        }
        if let Some(password) = auth.password() {
            builder = builder.set_client_to_sentinel_password(password);
        }
    }
    if let Some(username) = &settings.username {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = &settings.password {
        builder = builder.set_client_to_redis_password(password.expose());
    }
    if tls {
        builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(certificates) = certificates {
            builder = builder
                .set_client_to_sentinel_certificates(certificates.clone())
                .set_client_to_redis_certificates(certificates);
        }
    }
    builder.build()
}

/// Asks the Sentinels for the master (they check it is one) and connects to it.
async fn resolve(sentinel: &mut SentinelClient) -> Result<Master, redis::RedisError> {
    let attempt = async {
        let client = sentinel.async_get_client().await?;
        let address = client.get_connection_info().addr().to_string();
        let conn = client
            .get_connection_manager_with_config(manager_config())
            .await?;
        Ok(Master {
            address,
            client,
            conn,
        })
    };
    match tokio::time::timeout(RESOLVE_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no answer from the Sentinels or the master they name in time",
        ))),
    }
}

/// The address the Sentinels name now, without connecting to it unless it changed.
async fn master_address(sentinel: &mut SentinelClient) -> Result<String, redis::RedisError> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, sentinel.async_get_client()).await {
        Ok(client) => Ok(client?.get_connection_info().addr().to_string()),
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no answer from the Sentinels in time",
        ))),
    }
}

/// The resolver task: asks the Sentinels who the master is (every [`RESOLVE_INTERVAL`], or
/// sooner when woken), and switches every connection over when it changed. Ends once the store
/// is dropped.
async fn follow(follower: Weak<Follower>, mut sentinel: SentinelClient) {
    let mut failing = false;
    loop {
        let Some(shared) = follower.upgrade() else {
            return;
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(RESOLVE_INTERVAL) => {}
        }
        let known = shared.current.load().address.clone();
        match master_address(&mut sentinel).await {
            Ok(address) if address == known => failing = false,
            Ok(address) => match resolve(&mut sentinel).await {
                Ok(master) => {
                    tracing::warn!(
                        from = %known,
                        to = %master.address,
                        "Redis master changed (Sentinel failover); following it"
                    );
                    shared.current.store(Arc::new(master));
                    shared.changed.send_modify(|n| *n += 1);
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(to = %address, error = %e, "cannot connect to the new Redis master yet");
                    }
                    failing = true;
                }
            },
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot ask the Redis Sentinels for the master");
                }
                failing = true;
            }
        }
        drop(shared);
        tokio::time::sleep(RESOLVE_MIN_GAP).await;
    }
}

/// The error for a failed first connection; the crate's message names the failure (refused,
/// timeout, `WRONGPASS`, a certificate problem), never a password.
fn connect_error(target: &str, e: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("connecting to {target}: {e}"))
}
