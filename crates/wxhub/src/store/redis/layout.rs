//! Where the Redis store keeps things, and the one-time move from the layout before hash tags.
//!
//! Every key of a namespace starts with the namespace in braces (`{wxhub}:token:…`): Redis
//! Cluster hashes only the part in braces (the "hash tag"), so all of a namespace's keys — the
//! token hashes, the index set, the leases, the runtime accounts — live in one slot, and every
//! script, which touches a credential's hash together with the index, stays valid on a Cluster.
//! A hub's data is small (a few hundred bytes per credential) and its writes are refreshes, so
//! one slot is no bottleneck. Channels carry no hash tag: pub/sub is not slotted.
//!
//! Hubs before hash tags wrote the same names without braces (`wxhub:token:…`). When an
//! instance opens a namespace that still has the old index, [`adopt_untagged_layout`] moves
//! every stored credential and runtime account to the tagged names, batch by batch, each batch
//! one atomic script; an interrupted move resumes at the next start. Leases are left to expire
//! and force-refresh day counters (kept two days) are not moved.

use redis::{Script, Value};

use super::connection::Commands;
use super::unavailable;
use crate::store::StoreError;

/// How many credentials one migration script moves: small enough that Redis is never blocked
/// for long, large enough that 100,000 credentials move in a few hundred round trips.
const MIGRATION_BATCH: usize = 500;

/// The names of everything the store touches in Redis, all under one namespace so several hubs
/// (or test runs) can share a Redis without seeing each other.
#[derive(Clone)]
pub(super) struct Keys {
    /// `{namespace}` — the hash tag every key starts with.
    tag: String,
    /// `{namespace}:token:` — followed by a storage key, names a token hash.
    token_prefix: String,
    /// `{namespace}:tokens` — the set of stored storage keys.
    pub(super) index: String,
    /// `{namespace}:lease:` — followed by a storage key, names a lease.
    lease_prefix: String,
    /// `namespace:changes` — the pub/sub channel of applied writes.
    pub(super) channel: String,
    /// `{namespace}:accounts` — the hash of runtime account definitions by name.
    pub(super) accounts: String,
    /// `namespace:accounts:changes` — the pub/sub channel of account changes.
    pub(super) accounts_channel: String,
}

impl Keys {
    /// The names under `namespace` (which holds no braces: configuration refuses them).
    pub(super) fn new(namespace: &str) -> Keys {
        let tag = format!("{{{namespace}}}");
        Keys {
            token_prefix: format!("{tag}:token:"),
            index: format!("{tag}:tokens"),
            lease_prefix: format!("{tag}:lease:"),
            channel: format!("{namespace}:changes"),
            accounts: format!("{tag}:accounts"),
            accounts_channel: format!("{namespace}:accounts:changes"),
            tag,
        }
    }

    /// The token hash of a credential.
    pub(super) fn token(&self, storage_key: &str) -> String {
        format!("{}{storage_key}", self.token_prefix)
    }

    /// The lease of a credential.
    pub(super) fn lease(&self, storage_key: &str) -> String {
        format!("{}{storage_key}", self.lease_prefix)
    }

    /// The counter of force refreshes spent under `name` on `day`.
    pub(super) fn force(&self, name: &str, day: i64) -> String {
        format!("{}:force:{name}:{day}", self.tag)
    }
}

/// The part of `key` Redis Cluster hashes: between the first `{` and the next `}` when that is
/// not empty, else the whole key (the Cluster specification's rule).
#[cfg(test)]
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// Moves a batch of credentials from the untagged names to the tagged ones.
///
/// `KEYS[1]` the old index, `KEYS[2]` the new index, then for each storage key in `ARGV` its old
/// and its new hash (`KEYS[2i+1]`, `KEYS[2i+2]`). Where both exist (an instance of this version
/// wrote meanwhile) the higher generation wins. Returns how many hashes were moved.
const MOVE_CREDENTIALS_SCRIPT: &str = r"
local moved = 0
for i, member in ipairs(ARGV) do
  local old = KEYS[2 * i + 1]
  local new = KEYS[2 * i + 2]
  if redis.call('EXISTS', old) == 1 then
    local keep_new = false
    if redis.call('EXISTS', new) == 1 then
      local g_old = tonumber(redis.call('HGET', old, 'generation')) or -1
      local g_new = tonumber(redis.call('HGET', new, 'generation')) or -1
      keep_new = g_new >= g_old
    end
    if keep_new then
      redis.call('DEL', old)
    else
      redis.call('RENAME', old, new)
      moved = moved + 1
    end
  end
  if redis.call('EXISTS', new) == 1 then redis.call('SADD', KEYS[2], member) end
  redis.call('SREM', KEYS[1], member)
end
return moved
";

/// Moves the runtime accounts: every field of the old hash `KEYS[1]` not already in the new hash
/// `KEYS[2]` is copied, then the old hash is deleted. Returns how many were copied.
const MOVE_ACCOUNTS_SCRIPT: &str = r"
local all = redis.call('HGETALL', KEYS[1])
local copied = 0
for i = 1, #all, 2 do
  copied = copied + redis.call('HSETNX', KEYS[2], all[i], all[i + 1])
end
redis.call('DEL', KEYS[1])
return copied
";

/// What [`adopt_untagged_layout`] moved.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Moved {
    /// Credential hashes renamed to the tagged layout.
    pub(super) credentials: u64,
    /// Runtime account definitions copied.
    pub(super) accounts: u64,
}

/// Moves whatever a hub before hash tags stored under `namespace` to the names of `keys`. Does
/// nothing (one `EXISTS`) when there is nothing to move.
pub(super) async fn adopt_untagged_layout(
    conn: &Commands,
    namespace: &str,
    keys: &Keys,
) -> Result<Moved, StoreError> {
    let old_index = format!("{namespace}:tokens");
    let old_accounts = format!("{namespace}:accounts");
    let mut conn = conn.clone();
    // One key per command: the two old names hash to different slots, which a Cluster refuses in
    // one command (and the old layout never ran on a Cluster, so there it finds nothing).
    let mut existing = 0;
    for old in [&old_index, &old_accounts] {
        existing += integer(
            query(redis::cmd("EXISTS").arg(old), &mut conn).await?,
            "EXISTS",
        )?;
    }
    let mut moved = Moved::default();
    if existing == 0 {
        return Ok(moved);
    }
    let credentials = Script::new(MOVE_CREDENTIALS_SCRIPT);
    loop {
        let batch = query(
            redis::cmd("SRANDMEMBER")
                .arg(&old_index)
                .arg(MIGRATION_BATCH),
            &mut conn,
        )
        .await?;
        let members: Vec<String> = match batch {
            Value::Array(items) | Value::Set(items) => items
                .into_iter()
                .filter_map(|item| match item {
                    Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        if members.is_empty() {
            break;
        }
        let mut invocation = credentials.prepare_invoke();
        invocation.key(&old_index).key(&keys.index);
        for member in &members {
            invocation
                .key(format!("{namespace}:token:{member}"))
                .key(keys.token(member))
                .arg(member);
        }
        let reply = invocation
            .invoke_async::<Value>(&mut conn)
            .await
            .map_err(|e| unavailable("moving credentials to the hash-tagged layout", &e))?;
        moved.credentials += integer(reply, "moving credentials")? as u64;
    }
    let reply = Script::new(MOVE_ACCOUNTS_SCRIPT)
        .key(&old_accounts)
        .key(&keys.accounts)
        .invoke_async::<Value>(&mut conn)
        .await
        .map_err(|e| unavailable("moving runtime accounts to the hash-tagged layout", &e))?;
    moved.accounts = integer(reply, "moving runtime accounts")? as u64;
    Ok(moved)
}

/// Runs one command, naming it in the error.
async fn query(cmd: &redis::Cmd, conn: &mut Commands) -> Result<Value, StoreError> {
    cmd.query_async(conn)
        .await
        .map_err(|e| unavailable("migrating the key layout", &e))
}

/// An integer reply, or a `Corrupt` error naming `what`.
fn integer(value: Value, what: &str) -> Result<i64, StoreError> {
    match value {
        Value::Int(n) => Ok(n),
        _ => Err(StoreError::Corrupt(format!("{what}: not an integer reply"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_namespace_hashes_on_the_namespace() {
        let keys = Keys::new("wxhub-prod");
        let storage_key = "authorizer_refresh_token/wxc1/wxa1";
        for key in [
            keys.token(storage_key),
            keys.lease(storage_key),
            keys.index.clone(),
            keys.accounts.clone(),
            keys.force("stable/wx1", 20_000),
        ] {
            assert_eq!(hash_tag(&key), "wxhub-prod", "{key}");
        }
    }

    #[test]
    fn hash_tags_follow_the_cluster_rule() {
        assert_eq!(hash_tag("{user1000}.following"), "user1000");
        assert_eq!(hash_tag("foo{}{bar}"), "foo{}{bar}");
        assert_eq!(hash_tag("foo{{bar}}zap"), "{bar");
        assert_eq!(hash_tag("foo{bar}{zap}"), "bar");
        assert_eq!(hash_tag("plain"), "plain");
    }
}
