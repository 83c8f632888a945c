//! The [`Store`] contract's operations on Redis: reads, the scripted writes, leases, runtime
//! accounts and the force-refresh budget.
//!
//! Each operation is one command, one pipeline or one script (see [`super::scripts`]) on a clone
//! of the store's command connection, so a slow or failed operation never holds up another; its
//! reply is decoded by [`super::codec`], and a failure of Redis becomes
//! [`StoreError::Unavailable`] naming the operation and the key, never a value.

use std::time::Duration;

use redis::{Script, Value};
use tokio::sync::{broadcast, watch};

use super::codec::{decode_fields, decode_write_reply, encode_account, encode_change, text};
use super::connection::Commands;
use super::layout::Keys;
use super::{unavailable, RedisStore};
use crate::kinds::CredentialKey;
use crate::store::{AccountChange, CasOutcome, Change, Store, StoreError, StoreFuture};
use crate::token::{Timestamp, Token};

impl RedisStore {
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
        let message = encode_change(&storage_key, token)
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
            let message = encode_account(name, Some(definition))
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
            let message = encode_account(name, None)
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
