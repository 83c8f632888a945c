//! Where tokens and durable secrets live, behind one trait with three implementations:
//! [`memory`] (tests), [`sqlite`] (the embedded single-node default) and [`redis`] (several
//! nodes sharing one Redis).
//!
//! The contract (docs/architecture.md#store-contract) is what makes "exactly one refresh per credential" hold across
//! processes:
//! - **load all / get** — a restarted node serves what is stored instead of fetching again;
//! - **compare-and-set on generation** — a token is written only with the stored generation plus
//!   one, so a slow refresher can never overwrite a newer token;
//! - **lease** — per key, an owner id and a TTL longer than one upstream call; only the owner may
//!   release it, and a dead owner's lease simply runs out;
//! - **change feed** — every successful write is published so every node's in-memory view learns
//!   of new tokens at once;
//! - **restore** — a node that finds the store *behind* what it holds (a Redis restarted without
//!   persistence) puts its token back, so generations keep growing instead of restarting at 1.

#[cfg(test)]
pub(crate) mod conformance;
pub mod memory;
pub mod redis;
pub mod sealed;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::kinds::CredentialKey;
use crate::token::Token;

/// The boxed future every [`Store`] method returns, so the trait stays object-safe
/// (`Arc<dyn Store>` is chosen at runtime from the configuration).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// How many changes a slow subscriber may fall behind before it is told it lagged (and must
/// reload everything with [`Store::load_all`]).
pub const CHANGE_FEED_CAPACITY: usize = 4096;

/// A store operation failed. Messages name the operation and the key, never a token value.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store cannot be reached or refused the operation; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store holds data this version cannot read (a corrupt row, a newer schema).
    #[error("store data is unreadable: {0}")]
    Corrupt(String),
}

/// What a [`Store::compare_and_set`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The token was written: its generation was exactly one above the stored one (or 1 on an
    /// empty key).
    Applied,
    /// The write was refused because the stored generation is not one below the offered one.
    /// `current` is what the store holds now (the winner's token to adopt), if anything.
    Stale { current: Option<Token> },
}

/// One successful write, as seen on the change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Which credential changed.
    pub key: CredentialKey,
    /// Its new value.
    pub token: Token,
}

/// One change to the accounts defined at runtime, as seen on [`Store::subscribe_accounts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountChange {
    /// An account was added or changed: its name and stored definition.
    Put {
        /// The account's storage name (`app/{appid}`, `corp/{corpid}/{agentid}`).
        name: String,
        /// Its definition, as the registry stored it (the secret sealed).
        definition: String,
    },
    /// An account was removed.
    Removed {
        /// The account's storage name.
        name: String,
    },
    /// Changes may have been missed (the feed reconnected): reload every account and reconcile.
    Resync,
}

/// The storage contract shared by every backend. See the module docs for why each part exists.
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/readyz` (`memory`, `sqlite`, `redis`).
    fn kind(&self) -> &'static str;

    /// Every stored credential, for a (re)starting node.
    fn load_all(&self) -> StoreFuture<'_, Vec<(CredentialKey, Token)>>;

    /// One credential, as stored now (re-read after a lease is won).
    fn get<'a>(&'a self, key: &'a CredentialKey) -> StoreFuture<'a, Option<Token>>;

    /// Writes `token` only if its generation is exactly the stored generation plus one (1 for a key
    /// with nothing stored). Atomic: two writers offering the same generation cannot both win.
    /// A successful write is published on the change feed.
    fn compare_and_set<'a>(
        &'a self,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome>;

    /// Puts back a token the store has lost: writes `token` only if nothing is stored under `key`
    /// or the stored generation is lower than `token`'s. Atomic and published like
    /// [`Store::compare_and_set`]; refused with the stored token otherwise.
    ///
    /// Normal writes use compare-and-set. This exists for a store found *behind* what a node
    /// holds, because it lost data (a Redis restarted without persistence, a flushed database):
    /// without it the next refresh would write generation 1, which every node holding a higher
    /// generation ignores as older than what it has, and the nodes would drift apart, each
    /// fetching its own token.
    fn restore<'a>(
        &'a self,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome>;

    /// Takes the refresh lease of `key` for `owner` for `ttl`, if no other owner holds a live one.
    /// Returns whether `owner` now holds it. Re-acquiring one's own live lease extends it.
    fn acquire_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool>;

    /// Releases the lease of `key` if, and only if, `owner` holds it. Returns whether it did.
    fn release_lease<'a>(&'a self, key: &'a CredentialKey, owner: &'a str)
        -> StoreFuture<'a, bool>;

    /// Takes the lease as [`Store::acquire_lease`] does and, if `owner` now holds it, reads what
    /// is stored under `key` as [`Store::get`] does: how every refresh starts. `None` when another
    /// owner holds a live lease. A store that can do both in one trip (SQLite: one turn of its
    /// database thread) overrides this; by default it is the two calls in turn.
    fn acquire_lease_and_get<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<Option<Token>>> {
        Box::pin(async move {
            if !self.acquire_lease(key, owner, ttl).await? {
                return Ok(None);
            }
            Ok(Some(self.get(key).await?))
        })
    }

    /// The change feed: every successful [`Store::compare_and_set`] from now on, from any node
    /// sharing this store.
    fn subscribe(&self) -> broadcast::Receiver<Change>;

    /// Resync signals: the value changes whenever [`Store::subscribe`] may have missed writes
    /// (a Redis pub/sub connection was lost and re-established), and a follower should then
    /// reload with [`Store::load_all`] and keep what is newer. A signal rather than a replay of
    /// every stored credential on the change feed, which at 100,000 credentials would overflow
    /// every subscriber's buffer at once. `None` for a store whose feed cannot miss writes.
    fn subscribe_resync(&self) -> Option<watch::Receiver<u64>> {
        None
    }

    /// Checks that the store is reachable (for `/readyz`).
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// Deletes the token (and lease) of `key`: its credential was removed. Not published on the
    /// change feed (the account's removal is).
    fn delete<'a>(&'a self, key: &'a CredentialKey) -> StoreFuture<'a, ()>;

    /// Stores (adds or replaces) a runtime account's definition under `name`, durably, and
    /// publishes it on the account feed.
    fn put_account<'a>(&'a self, name: &'a str, definition: &'a str) -> StoreFuture<'a, ()>;

    /// Removes a runtime account's definition and publishes the removal. Returns whether it
    /// existed.
    fn remove_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool>;

    /// Every runtime account definition, by name, for a (re)starting node.
    fn load_accounts(&self) -> StoreFuture<'_, Vec<(String, String)>>;

    /// One runtime definition as stored now, for a follower of the account feed that must act
    /// on the latest definition rather than on a message that a later write may have overtaken.
    /// The default reads them all; the backends read the one.
    fn get_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            Ok(self
                .load_accounts()
                .await?
                .into_iter()
                .find(|(stored, _)| stored == name)
                .map(|(_, definition)| definition))
        })
    }

    /// Spends one of the stable-mode force refreshes of `name` (an access token's storage key) on
    /// WeChat day `day`, for the whole cluster: atomically, only while fewer than `limit` are
    /// used. Returns how many are used after this one, or `None` when `limit` already were.
    fn spend_force<'a>(
        &'a self,
        name: &'a str,
        day: i64,
        limit: u32,
    ) -> StoreFuture<'a, Option<u32>>;

    /// The account feed: every [`Store::put_account`] and [`Store::remove_account`] from now on,
    /// from any node sharing this store.
    fn subscribe_accounts(&self) -> broadcast::Receiver<AccountChange>;
}

/// Whether `offered` may follow `stored` under compare-and-set: exactly one generation above.
/// Shared by the backends that check in Rust (the redis backend checks the same rule in Lua).
pub fn generation_follows(stored: Option<&Token>, offered: &Token) -> bool {
    offered.generation == stored.map_or(0, |t| t.generation) + 1
}

/// Whether `offered` may replace `stored` under [`Store::restore`]: nothing stored, or a lower
/// generation stored.
pub fn generation_exceeds(stored: Option<&Token>, offered: &Token) -> bool {
    stored.is_none_or(|t| offered.generation > t.generation)
}
