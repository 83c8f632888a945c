//! Redis store: several hub instances behind a load balancer share one Redis.
//!
//! Every instance keeps its own in-memory view (the hub serves from memory, never from Redis);
//! Redis is where they agree. The [`Store`](super::Store) contract maps onto Redis like this:
//!
//! - **tokens** — one hash per credential, `{namespace}:token:{storage key}` (the braces are
//!   literal: the namespace is the Redis Cluster hash tag of every key, see [`layout`]), with the
//!   fields `value`, `expires_at_ms`, `fetched_at_ms`, `generation` and `updated_at_ms`, plus a set
//!   `{namespace}:tokens` naming every stored credential (so `load_all` never scans the keyspace).
//!   No expiry is set on them: an authorizer refresh token must outlive any TTL.
//! - **compare-and-set on generation** — one Lua script (see [`scripts`]) reads the stored
//!   generation, writes only `stored + 1`, and publishes the change, all atomically inside Redis.
//! - **lease** — `{namespace}:lease:{storage key}` taken with `SET NX PX` holding the owner id, and
//!   released by compare-and-delete (a script), so only its owner can release it and a dead
//!   owner's lease runs out by itself.
//! - **change feed** — the scripts publish every applied write on the channel
//!   `namespace:changes`; a dedicated pub/sub connection, on its own task ([`feed`]), forwards
//!   them to the local broadcast feed. When that connection drops, the task reconnects with
//!   backoff and then raises the resync signal
//!   ([`Store::subscribe_resync`](super::Store::subscribe_resync)): the follower reloads every
//!   stored credential once and keeps the newer generations, so nothing written meanwhile is
//!   missed and the feed never carries one message per stored credential.
//!
//! Commands go through the `redis` crate's
//! [`ConnectionManager`](redis::aio::ConnectionManager), which reconnects by itself; while Redis
//! is down every operation fails fast with [`StoreError::Unavailable`] and the engine keeps
//! serving what it has. How the connections are opened — one URL, TLS, ACL credentials, or the
//! master of a Sentinel group followed across failovers — is the [`connection`] module's concern.
//!
//! Replies are always read as raw [`Value`]s and decoded by [`codec`], so that no error message can
//! echo a token value back (the crate's typed conversions quote the reply they could not convert).
//!
//! The pieces, one concern a file: this module opens the store and says whether Redis persists;
//! [`operations`] implements the [`Store`](super::Store) contract on it; [`scripts`] holds the
//! Lua scripts every atomic write runs; [`codec`] the wire format of values and messages;
//! [`feed`] the pub/sub task behind the change feed; [`connection`] how the server (or the
//! Sentinel group's master) is reached; [`layout`] the key names and the move from the layout
//! before hash tags.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::sync::{broadcast, oneshot, watch};

use super::{AccountChange, Change, StoreError, CHANGE_FEED_CAPACITY};
use crate::configuration::RedisSettings;

mod codec;
mod connection;
mod feed;
mod layout;
mod operations;
mod scripts;

use codec::config_value;
use connection::{Commands, Connector};
use feed::{run_feed, subscribe, FeedTask};
use layout::Keys;
use scripts::Scripts;

/// How long one attempt to open a connection may take before it counts as failed. Redis answers
/// a connect within milliseconds on a healthy network; waiting longer only delays the fallback to
/// serving from memory.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a command may wait for its reply. Every command here is O(1) or a short script, so a
/// slower answer means Redis (or the path to it) is in trouble.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the command connection retries to connect before an operation gives up. Kept low:
/// an operation should fail fast while Redis is down (the engine has its own retry schedule), and
/// the next operation starts a new attempt anyway.
const CONNECT_RETRIES: usize = 1;

/// Whether the Redis server persists its data, as far as `CONFIG GET` tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    /// Append-only file (`appendonly yes`): every write is logged, so at most about a second of
    /// writes is lost on a crash (none with `appendfsync always`).
    pub aof: bool,
    /// RDB snapshots (`save` has at least one rule): writes since the last snapshot are lost.
    pub rdb: bool,
}

impl Persistence {
    /// Whether a Redis restart keeps anything at all.
    pub fn any(self) -> bool {
        self.aof || self.rdb
    }
}

/// A [`Store`](super::Store) in a Redis server shared by several hub instances. See the module docs.
pub struct RedisStore {
    /// The command connection; cloning it is cheap and every clone shares one reconnecting
    /// multiplexed connection (to the current master, with Sentinel).
    conn: Commands,
    /// Key and channel names.
    keys: Keys,
    /// The scripts.
    scripts: Arc<Scripts>,
    /// The local change feed, fed by the pub/sub task.
    changes: broadcast::Sender<Change>,
    /// The local account feed, fed by the pub/sub task.
    accounts: broadcast::Sender<AccountChange>,
    /// Bumped by the pub/sub task after each reconnect: the change feed may have missed writes.
    resync: watch::Sender<u64>,
    /// Whether the pub/sub connection is currently subscribed (for logs and tests).
    feed_connected: Arc<AtomicBool>,
    /// Where the store connects (URLs with their passwords masked), for messages.
    display_url: String,
    /// Dropping this (with the store) stops the pub/sub task.
    _stop_feed: oneshot::Sender<()>,
}

impl RedisStore {
    /// Connects to the Redis at `url` (no separate credentials, no CA file) under `namespace`:
    /// [`RedisStore::open_with`] for the common case.
    pub async fn open(url: &str, namespace: &str) -> Result<RedisStore, StoreError> {
        Self::open_with(&RedisSettings::url(url).with_namespace(namespace)).await
    }

    /// Connects as `settings` say (one server, or the master of a Sentinel group), subscribes to
    /// the change feed of its namespace, and checks (and logs) whether Redis persists its data.
    ///
    /// Fails with [`StoreError::Unavailable`] if the settings are unusable or Redis cannot be
    /// reached or refuses the credentials: an instance that starts without its store has nothing
    /// to serve. No message shows a password.
    pub async fn open_with(settings: &RedisSettings) -> Result<RedisStore, StoreError> {
        let display_url = settings.display_target();
        let namespace = settings.namespace.as_str();
        let (connector, conn) = Connector::open(settings).await?;

        let keys = Keys::new(namespace);
        let moved = layout::adopt_untagged_layout(&conn, namespace, &keys).await?;
        if moved != layout::Moved::default() {
            tracing::info!(
                namespace,
                credentials = moved.credentials,
                accounts = moved.accounts,
                "moved what an earlier version stored to the hash-tagged key layout"
            );
        }
        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let (accounts, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let (resync, _) = watch::channel(0);
        let feed = subscribe(&connector, &keys)
            .await
            .map_err(|e| unavailable(&format!("subscribing to {display_url}"), &e))?;
        let feed_connected = Arc::new(AtomicBool::new(true));
        let (stop_feed, stop) = oneshot::channel();
        let store = RedisStore {
            conn,
            keys,
            scripts: Arc::new(Scripts::new()),
            changes,
            accounts,
            resync,
            feed_connected,
            display_url,
            _stop_feed: stop_feed,
        };
        tokio::spawn(run_feed(
            FeedTask {
                connector,
                keys: store.keys.clone(),
                changes: store.changes.clone(),
                accounts: store.accounts.clone(),
                resync: store.resync.clone(),
                connected: store.feed_connected.clone(),
            },
            feed,
            stop,
        ));
        store.warn_without_persistence().await;
        Ok(store)
    }

    /// What Redis says about its persistence (`CONFIG GET appendonly` and `CONFIG GET save`).
    /// Fails if `CONFIG` is refused (managed services often disable it).
    pub async fn persistence(&self) -> Result<Persistence, StoreError> {
        let appendonly = self.config_get("appendonly").await?;
        let save = self.config_get("save").await?;
        Ok(Persistence {
            aof: appendonly.eq_ignore_ascii_case("yes"),
            rdb: !save.trim().is_empty(),
        })
    }

    /// One `CONFIG GET` value.
    async fn config_get(&self, name: &str) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable(&format!("CONFIG GET {name}"), &e))?;
        config_value(reply)
            .ok_or_else(|| StoreError::Unavailable(format!("CONFIG GET {name}: unexpected reply")))
    }

    /// Logs loudly when Redis keeps nothing across a restart: authorizer refresh tokens live here
    /// and cannot be re-created without the account owner.
    async fn warn_without_persistence(&self) {
        match self.persistence().await {
            Ok(p) if !p.any() => tracing::warn!(
                redis = %self.display_url,
                "REDIS HAS NO PERSISTENCE (appendonly no, save \"\"): a Redis restart loses every \
                 stored token and every authorizer refresh token, which only the account owner can \
                 re-create by authorizing again. Enable AOF (appendonly yes) or RDB snapshots; see \
                 docs/deployment.md"
            ),
            Ok(p) => tracing::info!(
                redis = %self.display_url,
                aof = p.aof,
                rdb = p.rdb,
                "Redis persistence is enabled"
            ),
            Err(e) => tracing::warn!(
                redis = %self.display_url,
                error = %e,
                "cannot check Redis persistence (CONFIG GET refused?); make sure AOF or RDB is \
                 enabled: authorizer refresh tokens are stored in Redis"
            ),
        }
    }

    /// Whether the change-feed connection is subscribed right now.
    pub fn feed_connected(&self) -> bool {
        self.feed_connected.load(Ordering::Relaxed)
    }
}

/// A Redis failure as a store error. The crate's messages name the failure (connection refused,
/// timeout, a server error), never a command argument.
fn unavailable(what: &str, e: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests;
