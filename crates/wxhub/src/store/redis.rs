//! Redis store: several hub instances behind a load balancer share one Redis.
//!
//! Every instance keeps its own in-memory view (the hub serves from memory, never from Redis);
//! Redis is where they agree. The [`Store`] contract maps onto Redis like this:
//!
//! - **tokens** — one hash per credential, `{namespace}:token:{storage key}` (the braces are
//!   literal: the namespace is the Redis Cluster hash tag of every key, see [`layout`]), with the
//!   fields `value`, `expires_at_ms`, `fetched_at_ms`, `generation` and `updated_at_ms`, plus a set
//!   `{namespace}:tokens` naming every stored credential (so `load_all` never scans the keyspace).
//!   No expiry is set on them: an authorizer refresh token must outlive any TTL.
//! - **compare-and-set on generation** — one Lua script ([`CAS_SCRIPT`]) reads the stored
//!   generation, writes only `stored + 1`, and publishes the change, all atomically inside Redis.
//! - **lease** — `{namespace}:lease:{storage key}` taken with `SET NX PX` holding the owner id, and
//!   released by compare-and-delete (a script), so only its owner can release it and a dead
//!   owner's lease runs out by itself.
//! - **change feed** — the scripts publish every applied write on the channel
//!   `namespace:changes`; a dedicated pub/sub connection, on its own task, forwards them to the
//!   local broadcast feed. When that connection drops, the task reconnects with backoff and then
//!   raises the resync signal ([`Store::subscribe_resync`]): the follower reloads every stored
//!   credential once and keeps the newer generations, so nothing written meanwhile is missed and
//!   the feed never carries one message per stored credential.
//!
//! Commands go through the `redis` crate's [`ConnectionManager`], which reconnects by itself; while
//! Redis is down every operation fails fast with [`StoreError::Unavailable`] and the engine keeps
//! serving what it has. How the connections are opened — one URL, TLS, ACL credentials, or the
//! master of a Sentinel group followed across failovers — is the [`connection`] module's concern.
//!
//! Replies are always read as raw [`Value`]s and decoded here, so that no error message can echo a
//! token value back (the crate's typed conversions quote the reply they could not convert).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::{Script, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot, watch};

use super::{
    AccountChange, CasOutcome, Change, Store, StoreError, StoreFuture, CHANGE_FEED_CAPACITY,
};
use crate::configuration::RedisSettings;
use crate::credential::{CredentialKey, Timestamp, Token};

mod connection;
mod layout;

use connection::{Commands, Connector};
use layout::Keys;

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

/// First delay between reconnection attempts of the change feed; doubles per failure.
const FEED_BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest delay between reconnection attempts of the change feed: how long after Redis returns
/// an instance may still be deaf to other instances' writes, at worst.
const FEED_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How often the idle change-feed connection is pinged. A connection that silently died (a
/// network partition sends no reset) is noticed within this plus [`RESPONSE_TIMEOUT`].
const FEED_PING_INTERVAL: Duration = Duration::from_secs(5);

/// Compare-and-set on generation, atomically inside Redis.
///
/// `KEYS[1]` the token hash, `KEYS[2]` the index set; `ARGV`: generation, value, expires_at_ms,
/// fetched_at_ms, updated_at_ms, storage key, channel, change message. Returns `{1}` when
/// applied, `{0, value, expires_at_ms, fetched_at_ms, generation}` (or just `{0}` when nothing is
/// stored) when refused, and `{-1}` when the stored generation is not a number.
const CAS_SCRIPT: &str = r"
local stored = redis.call('HGET', KEYS[1], 'generation')
local expected = 1
if stored then
  local n = tonumber(stored)
  if not n then return {-1} end
  expected = n + 1
end
if tonumber(ARGV[1]) ~= expected then
  if not stored then return {0} end
  local t = redis.call('HMGET', KEYS[1], 'value', 'expires_at_ms', 'fetched_at_ms', 'generation')
  return {0, t[1], t[2], t[3], t[4]}
end
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'expires_at_ms', ARGV[3], 'fetched_at_ms', ARGV[4],
  'generation', ARGV[1], 'updated_at_ms', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {1}
";

/// [`Store::restore`]: like [`CAS_SCRIPT`] (same keys, arguments and replies) except that it
/// writes whenever nothing is stored or the stored generation is lower than the offered one.
const RESTORE_SCRIPT: &str = r"
local stored = redis.call('HGET', KEYS[1], 'generation')
if stored then
  local n = tonumber(stored)
  if not n then return {-1} end
  if n >= tonumber(ARGV[1]) then
    local t = redis.call('HMGET', KEYS[1], 'value', 'expires_at_ms', 'fetched_at_ms', 'generation')
    return {0, t[1], t[2], t[3], t[4]}
  end
end
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'expires_at_ms', ARGV[3], 'fetched_at_ms', ARGV[4],
  'generation', ARGV[1], 'updated_at_ms', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return {1}
";

/// Takes the lease `KEYS[1]` for owner `ARGV[1]` for `ARGV[2]` ms: `SET NX PX` when it is free,
/// or a plain `SET PX` (extending or shortening it) when the owner already holds it. Returns 1 if
/// the owner holds the lease afterwards.
const ACQUIRE_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Compare-and-delete: removes the lease `KEYS[1]` only if owner `ARGV[1]` holds it. Returns 1
/// if it did (an expired lease is already gone, so it reports 0, as the contract asks).
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Stores a runtime account: `HSET KEYS[1] ARGV[1] ARGV[2]`, then publishes `ARGV[4]` on channel
/// `ARGV[3]`, atomically.
const PUT_ACCOUNT_SCRIPT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// Removes a runtime account: `HDEL KEYS[1] ARGV[1]`, and if it existed publishes `ARGV[3]` on
/// channel `ARGV[2]`, atomically. Returns 1 if it existed.
const REMOVE_ACCOUNT_SCRIPT: &str = r"
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if removed == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return removed
";

/// Spends one force refresh: `KEYS[1]` counts them for one name and day; below `ARGV[1]` it is
/// incremented (and kept two days), returning the new count; otherwise -1.
const SPEND_FORCE_SCRIPT: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return -1 end
used = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 172800000)
return used
";

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

/// One applied write as published on the channel. It carries the token itself, so that other
/// instances update their view without a round trip back to Redis.
#[derive(Serialize, Deserialize)]
struct ChangeMessage {
    /// The credential's storage key.
    key: String,
    /// The token value.
    value: String,
    /// `expires_at`, in Unix milliseconds.
    expires_at_ms: i64,
    /// `fetched_at`, in Unix milliseconds.
    fetched_at_ms: i64,
    /// The token's generation.
    generation: u64,
}

/// One account change as published on the accounts channel.
#[derive(Serialize, Deserialize)]
struct AccountMessage {
    /// The account's storage name.
    name: String,
    /// Its new definition, or `None` when it was removed.
    definition: Option<String>,
}

/// The compiled scripts, kept together so every operation invokes them by SHA (`EVALSHA`, with
/// the crate falling back to loading them after a Redis restart emptied its script cache).
struct Scripts {
    /// [`CAS_SCRIPT`].
    cas: Script,
    /// [`RESTORE_SCRIPT`].
    restore: Script,
    /// [`ACQUIRE_SCRIPT`].
    acquire: Script,
    /// [`RELEASE_SCRIPT`].
    release: Script,
    /// [`PUT_ACCOUNT_SCRIPT`].
    put_account: Script,
    /// [`REMOVE_ACCOUNT_SCRIPT`].
    remove_account: Script,
    /// [`SPEND_FORCE_SCRIPT`].
    spend_force: Script,
}

/// A [`Store`] in a Redis server shared by several hub instances. See the module docs.
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
            scripts: Arc::new(Scripts {
                cas: Script::new(CAS_SCRIPT),
                restore: Script::new(RESTORE_SCRIPT),
                acquire: Script::new(ACQUIRE_SCRIPT),
                release: Script::new(RELEASE_SCRIPT),
                put_account: Script::new(PUT_ACCOUNT_SCRIPT),
                remove_account: Script::new(REMOVE_ACCOUNT_SCRIPT),
                spend_force: Script::new(SPEND_FORCE_SCRIPT),
            }),
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

    /// A handle for reading every stored token (shared with the pub/sub task).
    fn reader(&self) -> Reader {
        Reader {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
        }
    }

    /// Runs a write script (`cas` or `restore`) for `token` under `key`.
    async fn write(
        &self,
        script: &Script,
        what: &str,
        key: &CredentialKey,
        token: &Token,
    ) -> Result<CasOutcome, StoreError> {
        let storage_key = key.storage_key();
        let what = format!("{what} {storage_key}");
        let message = serde_json::to_string(&ChangeMessage {
            key: storage_key.clone(),
            value: token.value.clone(),
            expires_at_ms: token.expires_at.as_millis(),
            fetched_at_ms: token.fetched_at.as_millis(),
            generation: token.generation,
        })
        .map_err(|e| StoreError::Unavailable(format!("{what}: encoding the change: {e}")))?;
        let mut conn = self.conn.clone();
        let reply: Value = script
            .key(self.keys.token(&storage_key))
            .key(&self.keys.index)
            .arg(token.generation)
            .arg(&token.value)
            .arg(token.expires_at.as_millis())
            .arg(token.fetched_at.as_millis())
            .arg(Timestamp::now().as_millis())
            .arg(&storage_key)
            .arg(&self.keys.channel)
            .arg(message)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| unavailable(&what, &e))?;
        decode_write_reply(&storage_key, reply)
    }
}

/// Reads tokens: a cheap, cloneable handle for the store's read paths.
#[derive(Clone)]
struct Reader {
    /// A clone of the store's command connection.
    conn: Commands,
    /// Key names.
    keys: Keys,
}

impl Reader {
    /// Every stored credential; entries that cannot be read are skipped with a warning naming
    /// the key (never the value), so one damaged entry cannot stop every other credential.
    async fn load_all(&self) -> Result<Vec<(CredentialKey, Token)>, StoreError> {
        let mut conn = self.conn.clone();
        let members: Value = redis::cmd("SMEMBERS")
            .arg(&self.keys.index)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("load_all", &e))?;
        let storage_keys: Vec<String> = match members {
            Value::Array(items) | Value::Set(items) => items
                .into_iter()
                .filter_map(|item| match text(item) {
                    Some(key) => Some(key),
                    None => {
                        tracing::warn!("Redis store: skipping an index entry that is not text");
                        None
                    }
                })
                .collect(),
            Value::Nil => Vec::new(),
            _ => {
                return Err(StoreError::Corrupt(
                    "load_all: the index is not a set".into(),
                ))
            }
        };
        if storage_keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for storage_key in &storage_keys {
            pipe.cmd("HMGET")
                .arg(self.keys.token(storage_key))
                .arg("value")
                .arg("expires_at_ms")
                .arg("fetched_at_ms")
                .arg("generation");
        }
        let replies: Value = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("load_all", &e))?;
        let Value::Array(replies) = replies else {
            return Err(StoreError::Unavailable(
                "load_all: unexpected reply to the pipeline".into(),
            ));
        };
        let mut all = Vec::with_capacity(storage_keys.len());
        for (storage_key, reply) in storage_keys.into_iter().zip(replies) {
            let decoded = storage_key
                .parse::<CredentialKey>()
                .map_err(|e| StoreError::Corrupt(format!("credential {storage_key:?}: {e}")))
                .and_then(|key| Ok((key, decode_fields(&storage_key, reply)?)));
            match decoded {
                Ok((key, Some(token))) => all.push((key, token)),
                // Listed but gone (deleted by hand): nothing to load.
                Ok((_, None)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "Redis store: skipping an unreadable credential")
                }
            }
        }
        Ok(all)
    }
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn load_all(&self) -> StoreFuture<'_, Vec<(CredentialKey, Token)>> {
        let reader = self.reader();
        Box::pin(async move { reader.load_all().await })
    }

    fn get<'a>(&'a self, key: &'a CredentialKey) -> StoreFuture<'a, Option<Token>> {
        Box::pin(async move {
            let storage_key = key.storage_key();
            let mut conn = self.conn.clone();
            let reply: Value = redis::cmd("HMGET")
                .arg(self.keys.token(&storage_key))
                .arg("value")
                .arg("expires_at_ms")
                .arg("fetched_at_ms")
                .arg("generation")
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&format!("get {storage_key}"), &e))?;
            decode_fields(&storage_key, reply)
        })
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome> {
        Box::pin(async move {
            self.write(&self.scripts.cas, "compare_and_set", key, token)
                .await
        })
    }

    fn restore<'a>(
        &'a self,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome> {
        Box::pin(async move {
            self.write(&self.scripts.restore, "restore", key, token)
                .await
        })
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let storage_key = key.storage_key();
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut conn = self.conn.clone();
            let reply: Value = self
                .scripts
                .acquire
                .key(self.keys.lease(&storage_key))
                .arg(owner)
                .arg(ttl_ms)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| unavailable(&format!("acquire_lease {storage_key}"), &e))?;
            Ok(matches!(reply, Value::Int(1)))
        })
    }

    /// Compare-and-delete. Reports true only if `owner`'s lease was still live: Redis has already
    /// dropped an expired one.
    fn release_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let storage_key = key.storage_key();
            let mut conn = self.conn.clone();
            let reply: Value = self
                .scripts
                .release
                .key(self.keys.lease(&storage_key))
                .arg(owner)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| unavailable(&format!("release_lease {storage_key}"), &e))?;
            Ok(matches!(reply, Value::Int(1)))
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn subscribe_resync(&self) -> Option<watch::Receiver<u64>> {
        Some(self.resync.subscribe())
    }

    fn delete<'a>(&'a self, key: &'a CredentialKey) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let storage_key = key.storage_key();
            let mut conn = self.conn.clone();
            redis::pipe()
                .atomic()
                .del(self.keys.token(&storage_key))
                .del(self.keys.lease(&storage_key))
                .srem(&self.keys.index, &storage_key)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| unavailable(&format!("delete {storage_key}"), &e))
        })
    }

    fn put_account<'a>(&'a self, name: &'a str, definition: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let what = format!("put_account {name}");
            let message = serde_json::to_string(&AccountMessage {
                name: name.to_owned(),
                definition: Some(definition.to_owned()),
            })
            .map_err(|e| StoreError::Unavailable(format!("{what}: encoding: {e}")))?;
            let mut conn = self.conn.clone();
            self.scripts
                .put_account
                .key(&self.keys.accounts)
                .arg(name)
                .arg(definition)
                .arg(&self.keys.accounts_channel)
                .arg(message)
                .invoke_async::<i64>(&mut conn)
                .await
                .map_err(|e| unavailable(&what, &e))?;
            Ok(())
        })
    }

    fn remove_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let what = format!("remove_account {name}");
            let message = serde_json::to_string(&AccountMessage {
                name: name.to_owned(),
                definition: None,
            })
            .map_err(|e| StoreError::Unavailable(format!("{what}: encoding: {e}")))?;
            let mut conn = self.conn.clone();
            let removed: i64 = self
                .scripts
                .remove_account
                .key(&self.keys.accounts)
                .arg(name)
                .arg(&self.keys.accounts_channel)
                .arg(message)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| unavailable(&what, &e))?;
            Ok(removed == 1)
        })
    }

    fn load_accounts(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let all: Vec<(String, String)> = redis::cmd("HGETALL")
                .arg(&self.keys.accounts)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable("load_accounts", &e))?;
            Ok(all)
        })
    }

    fn get_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("HGET")
                .arg(&self.keys.accounts)
                .arg(name)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&format!("get_account {name}"), &e))
        })
    }

    fn spend_force<'a>(
        &'a self,
        name: &'a str,
        day: i64,
        limit: u32,
    ) -> StoreFuture<'a, Option<u32>> {
        Box::pin(async move {
            let what = format!("spend_force {name}");
            let mut conn = self.conn.clone();
            let used: i64 = self
                .scripts
                .spend_force
                .key(self.keys.force(name, day))
                .arg(limit)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| unavailable(&what, &e))?;
            Ok(u32::try_from(used).ok())
        })
    }

    fn subscribe_accounts(&self) -> broadcast::Receiver<AccountChange> {
        self.accounts.subscribe()
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let _: Value = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable("ping", &e))?;
            Ok(())
        })
    }
}

/// A Redis failure as a store error. The crate's messages name the failure (connection refused,
/// timeout, a server error), never a command argument.
fn unavailable(what: &str, e: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

/// A bulk or simple string reply as text.
fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The value of a `CONFIG GET name` reply (`[name, value]`, or a map in RESP3).
fn config_value(reply: Value) -> Option<String> {
    match reply {
        Value::Array(items) => items.into_iter().nth(1).and_then(text),
        Value::Map(pairs) => pairs.into_iter().next().and_then(|(_, v)| text(v)),
        _ => None,
    }
}

/// The error for a stored credential that cannot be read back: names the key and the field,
/// never the value.
fn corrupt(storage_key: &str, field: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "credential {storage_key:?}: field {field} is missing or malformed"
    ))
}

/// Decodes `[value, expires_at_ms, fetched_at_ms, generation]` (an `HMGET` or a script's reply):
/// `None` if the token is not stored at all.
fn decode_fields(storage_key: &str, reply: Value) -> Result<Option<Token>, StoreError> {
    let Value::Array(fields) = reply else {
        return Err(corrupt(storage_key, "(all)"));
    };
    if fields.iter().all(|f| matches!(f, Value::Nil)) {
        return Ok(None);
    }
    let mut fields = fields.into_iter();
    let mut next = |name: &str| {
        fields
            .next()
            .and_then(text)
            .ok_or_else(|| corrupt(storage_key, name))
    };
    let value = next("value")?;
    let expires_at = next("expires_at_ms")?;
    let fetched_at = next("fetched_at_ms")?;
    let generation = next("generation")?;
    Ok(Some(Token {
        value,
        expires_at: Timestamp(
            expires_at
                .parse()
                .map_err(|_| corrupt(storage_key, "expires_at_ms"))?,
        ),
        fetched_at: Timestamp(
            fetched_at
                .parse()
                .map_err(|_| corrupt(storage_key, "fetched_at_ms"))?,
        ),
        generation: generation
            .parse::<u64>()
            .ok()
            .filter(|g| *g >= 1)
            .ok_or_else(|| corrupt(storage_key, "generation"))?,
    }))
}

/// Decodes the reply of [`CAS_SCRIPT`] or [`RESTORE_SCRIPT`].
fn decode_write_reply(storage_key: &str, reply: Value) -> Result<CasOutcome, StoreError> {
    let Value::Array(mut items) = reply else {
        return Err(StoreError::Unavailable(format!(
            "writing {storage_key}: unexpected reply"
        )));
    };
    if items.is_empty() {
        return Err(StoreError::Unavailable(format!(
            "writing {storage_key}: empty reply"
        )));
    }
    let status = items.remove(0);
    match status {
        Value::Int(1) => Ok(CasOutcome::Applied),
        Value::Int(0) if items.is_empty() => Ok(CasOutcome::Stale { current: None }),
        Value::Int(0) => Ok(CasOutcome::Stale {
            current: decode_fields(storage_key, Value::Array(items))?,
        }),
        Value::Int(-1) => Err(corrupt(storage_key, "generation")),
        _ => Err(StoreError::Unavailable(format!(
            "writing {storage_key}: unexpected reply"
        ))),
    }
}

/// Decodes one message of the accounts channel.
fn decode_account_change(payload: &[u8]) -> Option<AccountChange> {
    let message: AccountMessage = serde_json::from_slice(payload).ok()?;
    Some(match message.definition {
        Some(definition) => AccountChange::Put {
            name: message.name,
            definition,
        },
        None => AccountChange::Removed { name: message.name },
    })
}

/// Decodes one message of the change channel.
fn decode_change(payload: &[u8]) -> Option<Change> {
    let message: ChangeMessage = serde_json::from_slice(payload).ok()?;
    let key = message.key.parse::<CredentialKey>().ok()?;
    (message.generation >= 1).then_some(Change {
        key,
        token: Token {
            value: message.value,
            expires_at: Timestamp(message.expires_at_ms),
            fetched_at: Timestamp(message.fetched_at_ms),
            generation: message.generation,
        },
    })
}

/// Opens a pub/sub connection subscribed to the token and account channels, within
/// [`CONNECT_TIMEOUT`] + [`RESPONSE_TIMEOUT`].
async fn subscribe(
    connector: &Connector,
    keys: &Keys,
) -> Result<(PubSubSink, PubSubStream), redis::RedisError> {
    let attempt = async {
        let (mut sink, stream) = connector.pubsub().await?.split();
        sink.subscribe(&[&keys.channel, &keys.accounts_channel])
            .await?;
        Ok((sink, stream))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "timed out subscribing to the change channel",
        ))),
    }
}

/// What the pub/sub task owns.
struct FeedTask {
    /// Opens new pub/sub connections (to the current master).
    connector: Connector,
    /// Key and channel names.
    keys: Keys,
    /// The local feed the messages are forwarded to.
    changes: broadcast::Sender<Change>,
    /// The local account feed.
    accounts: broadcast::Sender<AccountChange>,
    /// The resync signal, raised after each reconnect.
    resync: watch::Sender<u64>,
    /// Set while subscribed.
    connected: Arc<AtomicBool>,
}

/// Why [`FeedTask::pump`] returned.
enum PumpEnd {
    /// The store was dropped.
    Stopped,
    /// The connection ended or stopped answering.
    Disconnected,
}

/// The pub/sub task: forwards the channel's messages to the local feed; when the connection is
/// lost, reconnects with backoff and raises the resync signal so that whatever was written
/// meanwhile is reloaded. Ends when the store is dropped.
async fn run_feed(
    task: FeedTask,
    first: (PubSubSink, PubSubStream),
    mut stop: oneshot::Receiver<()>,
) {
    let mut connection = Some(first);
    let mut failures: u32 = 0;
    loop {
        let (sink, stream) = match connection.take() {
            Some(connected) => connected,
            None => {
                let delay = FEED_BACKOFF_MIN
                    .saturating_mul(1 << failures.min(10))
                    .min(FEED_BACKOFF_MAX);
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                match task.reconnect().await {
                    Ok(connected) => connected,
                    Err(e) => {
                        if failures == 0 {
                            tracing::warn!(error = %e, "Redis change feed: reconnecting failed; retrying with backoff");
                        }
                        failures = failures.saturating_add(1);
                        continue;
                    }
                }
            }
        };
        failures = 0;
        task.connected.store(true, Ordering::Relaxed);
        let end = task.pump(sink, stream, &mut stop).await;
        task.connected.store(false, Ordering::Relaxed);
        match end {
            PumpEnd::Stopped => return,
            PumpEnd::Disconnected => {
                tracing::warn!("Redis change feed disconnected; reconnecting");
            }
        }
    }
}

impl FeedTask {
    /// Subscribes again, then raises the resync signals: followers reload every stored token
    /// once, the writes made while the feed was down among them. Subscribing first means nothing
    /// written in between is lost either (it is then seen twice, which the engine ignores).
    async fn reconnect(&self) -> Result<(PubSubSink, PubSubStream), StoreError> {
        let connected = subscribe(&self.connector, &self.keys)
            .await
            .map_err(|e| unavailable("subscribing to the change channel", &e))?;
        // Account changes made meanwhile are reconciled by whoever follows the account feed.
        let _ = self.accounts.send(AccountChange::Resync);
        self.resync.send_modify(|n| *n = n.wrapping_add(1));
        tracing::info!("Redis change feed reconnected; followers reload every stored credential");
        Ok(connected)
    }

    /// Forwards messages until the connection ends, stops answering pings, or the store is
    /// dropped.
    async fn pump(
        &self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        stop: &mut oneshot::Receiver<()>,
    ) -> PumpEnd {
        let mut ping = tokio::time::interval(FEED_PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut master = self.connector.master_changes();
        master.mark_unchanged();
        loop {
            tokio::select! {
                _ = &mut *stop => return PumpEnd::Stopped,
                // Sentinel named another master: subscribe there (the old one may be alive but
                // no longer written to).
                _ = master.changed() => return PumpEnd::Disconnected,
                message = stream.next() => {
                    let Some(message) = message else {
                        self.connector.suspect();
                        return PumpEnd::Disconnected;
                    };
                    if message.get_channel_name() == self.keys.accounts_channel {
                        match decode_account_change(message.get_payload_bytes()) {
                            Some(change) => {
                                let _ = self.accounts.send(change);
                            }
                            None => tracing::warn!("Redis account feed: ignoring an undecodable message"),
                        }
                        continue;
                    }
                    match decode_change(message.get_payload_bytes()) {
                        Some(change) => {
                            let _ = self.changes.send(change);
                        }
                        None => tracing::warn!("Redis change feed: ignoring an undecodable message"),
                    }
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<Value>()).await;
                    if !matches!(answered, Ok(Ok(_))) {
                        self.connector.suspect();
                        return PumpEnd::Disconnected;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::conformance::{self, store_conformance_tests, Fixture};
    use wxhub_test_support::redis::{unique_namespace, RedisServer, ServerOptions, TestRedis};

    async fn open(url: &str, namespace: &str) -> RedisStore {
        RedisStore::open(url, namespace)
            .await
            .unwrap_or_else(|e| panic!("opening the Redis store at {url}: {e}"))
    }

    async fn fixture() -> Fixture {
        let redis = TestRedis::get();
        let store = open(&redis.url(), &unique_namespace("conformance")).await;
        Fixture::with_guard(Arc::new(store), redis)
    }

    store_conformance_tests!(async fixture);

    /// Two stores on one namespace, as two hub instances would have.
    async fn two_stores() -> (TestRedis, Arc<dyn Store>, Arc<dyn Store>) {
        let redis = TestRedis::get();
        let namespace = unique_namespace("shared");
        let a = open(&redis.url(), &namespace).await;
        let b = open(&redis.url(), &namespace).await;
        (redis, Arc::new(a), Arc::new(b))
    }

    /// A plain connection, to look at (or damage) what the store wrote.
    async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url)
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_namespace_cannot_both_win_a_write() {
        let (_redis, a, b) = two_stores().await;
        conformance::cas_race_has_exactly_one_winner(&[a, b]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_namespace_cannot_both_win_a_lease() {
        let (_redis, a, b) = two_stores().await;
        conformance::lease_race_has_exactly_one_winner(&[a.clone(), b.clone()]).await;
        let key = CredentialKey::access_token("wx_two_leases");
        let ttl = Duration::from_secs(30);
        assert!(a.acquire_lease(&key, "node-a", ttl).await.expect("acquire"));
        assert!(!b.acquire_lease(&key, "node-b", ttl).await.expect("acquire"));
        assert!(!b.release_lease(&key, "node-b").await.expect("release"));
        assert!(a.release_lease(&key, "node-a").await.expect("release"));
        assert!(b.acquire_lease(&key, "node-b", ttl).await.expect("acquire"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_of_another_store_reach_the_change_feed_once() {
        let (_redis, a, b) = two_stores().await;
        let mut feed_a = a.subscribe();
        let mut feed_b = b.subscribe();
        let key = CredentialKey::access_token("wx_feed_shared");

        let first = conformance::token("shared-1", 1);
        conformance::must_apply(&*a, &key, &first).await;
        let second = conformance::token("shared-2", 2);
        conformance::must_apply(&*b, &key, &second).await;
        for feed in [&mut feed_a, &mut feed_b] {
            assert_eq!(conformance::next_change(feed).await.token, first);
            assert_eq!(conformance::next_change(feed).await.token, second);
        }
        // Nothing else: a marker write is the next thing both feeds carry.
        let marker = CredentialKey::access_token("wx_feed_marker");
        conformance::must_apply(&*a, &marker, &conformance::token("marker", 1)).await;
        for feed in [&mut feed_a, &mut feed_b] {
            assert_eq!(conformance::next_change(feed).await.key, marker);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn namespaces_keep_hubs_apart() {
        let redis = TestRedis::get();
        let one = open(&redis.url(), &unique_namespace("one")).await;
        let two = open(&redis.url(), &unique_namespace("two")).await;
        let mut feed_two = two.subscribe();
        let key = CredentialKey::access_token("wx_apart");

        conformance::must_apply(&one, &key, &conformance::token("one-1", 1)).await;
        assert_eq!(two.get(&key).await.expect("get"), None);
        assert!(two.load_all().await.expect("load_all").is_empty());
        assert!(one
            .acquire_lease(&key, "node-a", Duration::from_secs(30))
            .await
            .expect("acquire"));
        assert!(two
            .acquire_lease(&key, "node-b", Duration::from_secs(30))
            .await
            .expect("acquire"));
        // `two` starts its own generations and its feed carries only its own writes.
        conformance::must_apply(&two, &key, &conformance::token("two-1", 1)).await;
        assert_eq!(
            conformance::next_change(&mut feed_two).await.token.value,
            "two-1"
        );
    }

    /// A one-node Redis Cluster owning every slot: a script whose keys span two slots fails
    /// there with `CROSSSLOT`, as on any Cluster.
    async fn cluster_fixture() -> Fixture {
        let server = RedisServer::start_with(ServerOptions {
            args: [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]
            .map(String::from)
            .to_vec(),
            ..ServerOptions::default()
        });
        let mut conn = raw(&server.url()).await;
        let _: Value = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query_async(&mut conn)
            .await
            .expect("CLUSTER ADDSLOTSRANGE");
        conformance::eventually("the one-node cluster is up", || {
            let mut conn = conn.clone();
            async move {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
            }
        })
        .await;
        let store = open(&server.url(), &unique_namespace("cluster")).await;
        Fixture::with_guard(Arc::new(store), server)
    }

    /// The whole contract again on a Redis Cluster: every script's keys share one hash slot.
    mod on_a_cluster {
        use super::*;

        store_conformance_tests!(async cluster_fixture);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_an_earlier_version_stored_without_hash_tags_is_moved_at_open() {
        let redis = TestRedis::get();
        let namespace = unique_namespace("untagged");
        let mut conn = raw(&redis.url()).await;
        let old_hash = |key: &str| format!("{namespace}:token:{key}");
        // Two credentials and an account in the old layout; an instance of this version has
        // already written a newer generation of the second under the tagged name.
        for (key, value, generation) in [
            ("access_token/wx_old_a", "old-a", 3),
            ("access_token/wx_old_b", "old-b", 2),
        ] {
            let _: Value = redis::cmd("HSET")
                .arg(old_hash(key))
                .arg("value")
                .arg(value)
                .arg("expires_at_ms")
                .arg(Timestamp::now().as_millis() + 3_600_000)
                .arg("fetched_at_ms")
                .arg(Timestamp::now().as_millis())
                .arg("generation")
                .arg(generation)
                .arg("updated_at_ms")
                .arg(Timestamp::now().as_millis())
                .query_async(&mut conn)
                .await
                .expect("HSET");
            let _: Value = redis::cmd("SADD")
                .arg(format!("{namespace}:tokens"))
                .arg(key)
                .query_async(&mut conn)
                .await
                .expect("SADD");
        }
        let _: Value = redis::cmd("HSET")
            .arg(format!("{namespace}:accounts"))
            .arg("app/wx_old_a")
            .arg("{}")
            .query_async(&mut conn)
            .await
            .expect("HSET accounts");
        let _: Value = redis::cmd("HSET")
            .arg(format!("{{{namespace}}}:token:access_token/wx_old_b"))
            .arg("value")
            .arg("new-b")
            .arg("expires_at_ms")
            .arg(Timestamp::now().as_millis() + 3_600_000)
            .arg("fetched_at_ms")
            .arg(Timestamp::now().as_millis())
            .arg("generation")
            .arg(5)
            .arg("updated_at_ms")
            .arg(Timestamp::now().as_millis())
            .query_async(&mut conn)
            .await
            .expect("HSET newer");

        let store = open(&redis.url(), &namespace).await;
        let mut loaded: Vec<(String, String, u64)> = store
            .load_all()
            .await
            .expect("load_all")
            .into_iter()
            .map(|(k, t)| (k.storage_key(), t.value, t.generation))
            .collect();
        loaded.sort();
        assert_eq!(
            loaded,
            vec![
                ("access_token/wx_old_a".into(), "old-a".into(), 3),
                ("access_token/wx_old_b".into(), "new-b".into(), 5),
            ],
            "moved, and the higher generation kept"
        );
        assert_eq!(
            store.load_accounts().await.expect("load_accounts"),
            vec![("app/wx_old_a".to_string(), "{}".to_string())]
        );
        let left: i64 = redis::cmd("EXISTS")
            .arg(format!("{namespace}:tokens"))
            .arg(format!("{namespace}:accounts"))
            .arg(old_hash("access_token/wx_old_a"))
            .arg(old_hash("access_token/wx_old_b"))
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        assert_eq!(left, 0, "nothing is left under the untagged names");
        // A second open finds nothing to move and changes nothing.
        drop(store);
        let again = open(&redis.url(), &namespace).await;
        assert_eq!(again.load_all().await.expect("load_all").len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_are_prefixed_and_the_lease_is_a_set_with_an_expiry() {
        let redis = TestRedis::get();
        let namespace = unique_namespace("layout");
        let store = open(&redis.url(), &namespace).await;
        let key = CredentialKey::access_token("wx_layout");
        conformance::must_apply(&store, &key, &conformance::token("layout-1", 1)).await;
        assert!(store
            .acquire_lease(&key, "node-a", Duration::from_secs(30))
            .await
            .expect("acquire"));

        let mut conn = raw(&redis.url()).await;
        let generation: String = redis::cmd("HGET")
            .arg(format!("{{{namespace}}}:token:access_token/wx_layout"))
            .arg("generation")
            .query_async(&mut conn)
            .await
            .expect("HGET");
        assert_eq!(generation, "1");
        let lease = format!("{{{namespace}}}:lease:access_token/wx_layout");
        let owner: String = redis::cmd("GET")
            .arg(&lease)
            .query_async(&mut conn)
            .await
            .expect("GET");
        assert_eq!(owner, "node-a");
        let ttl_ms: i64 = redis::cmd("PTTL")
            .arg(&lease)
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        assert!((25_000..=30_000).contains(&ttl_ms), "lease PTTL {ttl_ms}");
        let ttl: i64 = redis::cmd("TTL")
            .arg(format!("{{{namespace}}}:token:access_token/wx_layout"))
            .query_async(&mut conn)
            .await
            .expect("TTL");
        assert_eq!(ttl, -1, "tokens never expire out of Redis");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreadable_entries_are_skipped_by_load_all_and_refused_by_key() {
        let redis = TestRedis::get();
        let namespace = unique_namespace("corrupt");
        let store = open(&redis.url(), &namespace).await;
        let good_key = CredentialKey::access_token("wx_good");
        let good = conformance::token("good-1", 1);
        conformance::must_apply(&store, &good_key, &good).await;

        let mut conn = raw(&redis.url()).await;
        let bad = format!("{{{namespace}}}:token:access_token/wx_bad");
        let _: Value = redis::cmd("HSET")
            .arg(&bad)
            .arg("value")
            .arg("SECRET-A")
            .arg("expires_at_ms")
            .arg("soon")
            .arg("fetched_at_ms")
            .arg("1")
            .arg("generation")
            .arg("one")
            .query_async(&mut conn)
            .await
            .expect("HSET");
        let _: Value = redis::cmd("SADD")
            .arg(format!("{{{namespace}}}:tokens"))
            .arg("access_token/wx_bad")
            .arg("nonsense/wx_x")
            .query_async(&mut conn)
            .await
            .expect("SADD");

        assert_eq!(
            store.load_all().await.expect("load_all"),
            vec![(good_key, good)]
        );
        let bad_key = CredentialKey::access_token("wx_bad");
        let errors = [
            store.get(&bad_key).await.map(|_| ()),
            store
                .compare_and_set(&bad_key, &conformance::token("replacement", 2))
                .await
                .map(|_| ()),
        ];
        for error in errors {
            match error {
                Err(StoreError::Corrupt(message)) => {
                    assert!(message.contains("access_token/wx_bad"), "{message}");
                    assert!(!message.contains("SECRET"), "{message}");
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistence_is_reported() {
        let mut without = RedisServer::start(false);
        let store = open(&without.url(), &unique_namespace("persistence")).await;
        assert_eq!(
            store.persistence().await.expect("CONFIG GET"),
            Persistence {
                aof: false,
                rdb: false
            }
        );
        drop(store);
        without.stop();

        let with_aof = RedisServer::start(true);
        let store = open(&with_aof.url(), &unique_namespace("persistence")).await;
        let persistence = store.persistence().await.expect("CONFIG GET");
        assert!(persistence.aof && persistence.any(), "{persistence:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_missed_while_the_feed_was_down_raises_the_resync_signal() {
        // A server of its own: cutting every pub/sub connection of the shared one would cut the
        // feeds of tests running beside this one.
        let redis = RedisServer::start(false);
        let namespace = unique_namespace("missed");
        let listener = open(&redis.url(), &namespace).await;
        let writer = open(&redis.url(), &namespace).await;
        let mut resync = listener
            .subscribe_resync()
            .expect("redis has a resync signal");
        let key = CredentialKey::access_token("wx_missed");

        // Cut every pub/sub connection of this Redis; the listener reconnects after a backoff,
        // and the write lands before it is subscribed again.
        kill_pubsub(&redis.url()).await;
        let missed = conformance::token("missed-1", 1);
        conformance::must_apply(&writer, &key, &missed).await;

        tokio::time::timeout(Duration::from_secs(10), resync.changed())
            .await
            .expect("a resync signal within 10 s")
            .expect("the signal is alive");
        let reloaded = listener.load_all().await.expect("load_all");
        assert!(
            reloaded.contains(&(key, missed)),
            "the reload holds the missed write"
        );
        conformance::eventually("the listener is subscribed again", || async {
            listener.feed_connected()
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reconnect_with_many_stored_tokens_puts_nothing_on_the_change_feed() {
        // A server of its own, for the same reason as above.
        let redis = RedisServer::start(false);
        let namespace = unique_namespace("many");
        let listener = open(&redis.url(), &namespace).await;
        let writer = open(&redis.url(), &namespace).await;
        let mut resync = listener
            .subscribe_resync()
            .expect("redis has a resync signal");
        // More stored tokens than the feed holds: replaying them would overflow it.
        let stored = CHANGE_FEED_CAPACITY + 500;
        let mut seen = listener.subscribe();
        for i in 0..stored {
            let key = CredentialKey::access_token(format!("wx_many_{i:05}"));
            conformance::must_apply(&writer, &key, &conformance::token(&format!("t{i}"), 1)).await;
        }
        // Every one of those writes has reached the listener before the feed is cut.
        let last = CredentialKey::access_token(format!("wx_many_{:05}", stored - 1));
        loop {
            match tokio::time::timeout(Duration::from_secs(10), seen.recv()).await {
                Ok(Ok(change)) if change.key == last => break,
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                other => panic!("the listener did not see the last write: {other:?}"),
            }
        }
        let mut feed = listener.subscribe();

        kill_pubsub(&redis.url()).await;
        tokio::time::timeout(Duration::from_secs(10), resync.changed())
            .await
            .expect("a resync signal within 10 s")
            .expect("the signal is alive");
        conformance::eventually("the listener is subscribed again", || async {
            listener.feed_connected()
        })
        .await;

        // The next message on the feed is the next write, not a replay of the stored tokens.
        let after = CredentialKey::access_token("wx_many_after");
        let token = conformance::token("after-1", 1);
        conformance::must_apply(&writer, &after, &token).await;
        let first = tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .expect("a change within 10 s")
            .expect("the feed neither lagged nor closed");
        assert_eq!((first.key, first.token), (after, token));
    }

    /// Cuts every pub/sub connection of the Redis at `url`: only for a server the calling test
    /// owns.
    async fn kill_pubsub(url: &str) {
        let mut conn = raw(url).await;
        let _: Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut conn)
            .await
            .expect("CLIENT KILL");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_fails_fast_while_redis_is_down_and_recovers_with_it() {
        let mut redis = RedisServer::start(true);
        let namespace = unique_namespace("outage");
        let store = open(&redis.url(), &namespace).await;
        let writer = open(&redis.url(), &namespace).await;
        let mut feed = store.subscribe();
        let key = CredentialKey::access_token("wx_outage");
        let first = conformance::token("outage-1", 1);
        conformance::must_apply(&store, &key, &first).await;
        assert_eq!(conformance::next_change(&mut feed).await.token, first);

        redis.stop();
        let started = std::time::Instant::now();
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store
                .acquire_lease(&key, "node-a", Duration::from_secs(5))
                .await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "operations must fail fast while Redis is down, took {:?}",
            started.elapsed()
        );
        conformance::eventually("the feed notices the outage", || async {
            !store.feed_connected()
        })
        .await;

        redis.restart();
        conformance::eventually("the store answers again", || async {
            store.ping().await.is_ok()
        })
        .await;
        // The AOF kept the token; generations continue from it.
        assert_eq!(store.get(&key).await.expect("get"), Some(first.clone()));
        let second = conformance::token("outage-2", 2);
        conformance::eventually("the writer's connection is back", || async {
            writer.ping().await.is_ok()
        })
        .await;
        conformance::must_apply(&writer, &key, &second).await;
        // The feed comes back too: generation 2 arrives (perhaps after a re-published 1).
        loop {
            let change = conformance::next_change(&mut feed).await;
            if change.token.generation == 2 {
                assert_eq!(change.token, second);
                break;
            }
            assert_eq!(change.token, first);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_redis_fails_open_with_the_password_masked() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let url = format!("redis://user:hunter2@127.0.0.1:{port}/0");
        match RedisStore::open(&url, "wxhub").await {
            Err(StoreError::Unavailable(message)) => {
                assert!(!message.contains("hunter2"), "{message}");
                assert!(message.contains(&port.to_string()), "{message}");
            }
            Err(other) => panic!("expected Unavailable, got {other}"),
            Ok(_) => panic!("opened a store on a closed port"),
        }
        // A TLS client against a server that does not speak TLS: refused at open, cleanly.
        let plain = TestRedis::get();
        let tls_url = plain
            .url()
            .replacen("redis://", "rediss://user:hunter2@", 1);
        match RedisStore::open(&tls_url, "wxhub").await {
            Err(StoreError::Unavailable(message)) => {
                assert!(!message.contains("hunter2"), "{message}");
                assert!(message.contains("rediss://user:***@"), "{message}");
            }
            Err(other) => panic!("expected Unavailable, got {other}"),
            Ok(_) => panic!("opened a TLS store on a plain-text server"),
        }
    }
}
