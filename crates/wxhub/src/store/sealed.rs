//! Credentials sealed at rest: a [`Store`] in front of another that seals, on their way in, the
//! values of the credentials whose loss or theft is worst, and opens them on their way out.
//!
//! An authorizer's refresh token cannot be fetched again without the account's owner authorizing
//! the platform once more, and whoever holds it can mint that account's tokens. In SQLite or
//! Redis it would be readable by anyone with a copy of the file, a replica or a `MONITOR`
//! session. Sealed with `[secrets] master_key` (AES-256-GCM, the credential's key as associated
//! data, so a value moved to another key does not open), it is not.
//!
//! Everything above this layer (the engine, the control plane, the platform) sees plain values:
//! writes are sealed, reads and the change feed are opened. Which credentials are sealed is
//! [`CredentialKey::is_sealed_at_rest`]. A value an earlier version stored unsealed is still
//! read; [`Store::load_all`] notes it, and [`SealedStore::seal_what_was_plain`] seals it once the
//! hub has loaded the store (without reading everything a second time).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::{AccountChange, CasOutcome, Change, Store, StoreError, StoreFuture};
use crate::kinds::CredentialKey;
use crate::seal::Sealer;
use crate::token::Token;

/// Changes buffered for the opened change feed (as the backends' own feeds).
const FEED_BUFFER: usize = 1024;

/// See the module docs.
pub struct SealedStore {
    /// Where the sealed values live.
    inner: Arc<dyn Store>,
    /// Seals and opens them.
    sealer: Arc<Sealer>,
    /// The opened change feed, started on the first subscription.
    feed: OnceLock<OpenedFeed>,
    /// Values of sealed credentials that [`Store::load_all`] found in the clear, as stored.
    found_plain: Mutex<Vec<(CredentialKey, Token)>>,
}

/// The inner store's change feed with its values opened, and a resync signal that fires when
/// the inner one does or when this feed lagged behind the inner one.
struct OpenedFeed {
    changes: broadcast::Sender<Change>,
    resync: watch::Receiver<u64>,
}

impl SealedStore {
    /// `inner`, with the values of sealed credentials sealed by `sealer`.
    pub fn new(inner: Arc<dyn Store>, sealer: Sealer) -> SealedStore {
        SealedStore {
            inner,
            sealer: Arc::new(sealer),
            feed: OnceLock::new(),
            found_plain: Mutex::new(Vec::new()),
        }
    }

    /// Seals every value of a sealed credential that the last [`Store::load_all`] found in the
    /// clear (an earlier version stored it so): it is written again, sealed, as its next
    /// generation (compare-and-set, so a concurrent writer's newer value wins). Returns how many
    /// were sealed.
    pub async fn seal_what_was_plain(&self) -> Result<usize, StoreError> {
        let found = std::mem::take(
            &mut *self
                .found_plain
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let mut sealed = 0;
        for (key, stored) in found {
            let next = Token {
                value: self.sealer.seal_text(&key.to_string(), &stored.value),
                generation: stored.generation + 1,
                ..stored
            };
            if self.inner.compare_and_set(&key, &next).await? == CasOutcome::Applied {
                sealed += 1;
            }
        }
        Ok(sealed)
    }

    fn seal(&self, key: &CredentialKey, token: &Token) -> Option<Token> {
        key.is_sealed_at_rest().then(|| Token {
            value: self.sealer.seal_text(&key.to_string(), &token.value),
            ..token.clone()
        })
    }

    fn open_feed(&self) -> &OpenedFeed {
        self.feed.get_or_init(|| {
            let (changes, _) = broadcast::channel(FEED_BUFFER);
            let (resync_sender, resync) = watch::channel(0u64);
            let mut inner_changes = self.inner.subscribe();
            let inner_resync = self.inner.subscribe_resync();
            let sealer = self.sealer.clone();
            let sender = changes.clone();
            tokio::spawn(async move {
                let mut inner_resync = inner_resync;
                loop {
                    tokio::select! {
                        received = inner_changes.recv() => match received {
                            Ok(change) => match open_change(&sealer, change) {
                                Ok(change) => {
                                    let _ = sender.send(change);
                                }
                                Err(e) => tracing::warn!(error = %e, "a change on the store's feed could not be opened; it is skipped"),
                            },
                            // Changes were missed: whoever follows this feed must reload.
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                resync_sender.send_modify(|n| *n += 1);
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                        alive = next_signal(inner_resync.as_mut()) => {
                            if alive {
                                resync_sender.send_modify(|n| *n += 1);
                            } else {
                                inner_resync = None;
                            }
                        }
                    }
                }
            });
            OpenedFeed { changes, resync }
        })
    }

    /// A write of `token`, sealed when its key is, with the current value in a refusal opened.
    fn write<'a>(
        &'a self,
        write: Write,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome> {
        Box::pin(async move {
            let sealed = self.seal(key, token);
            let token = sealed.as_ref().unwrap_or(token);
            let outcome = match write {
                Write::CompareAndSet => self.inner.compare_and_set(key, token).await?,
                Write::Restore => self.inner.restore(key, token).await?,
            };
            open_outcome(&self.sealer, key, outcome)
        })
    }

    fn open(&self, key: &CredentialKey, token: Token) -> Result<Token, StoreError> {
        open_token(&self.sealer, key, token)
    }
}

/// Which of the store's two conditional writes [`SealedStore::write`] makes.
#[derive(Clone, Copy)]
enum Write {
    CompareAndSet,
    Restore,
}

/// `token` as stored under `key`, opened if it is sealed (a value an earlier version stored in
/// the clear is returned as it is).
fn open_token(sealer: &Sealer, key: &CredentialKey, token: Token) -> Result<Token, StoreError> {
    if !key.is_sealed_at_rest() || !Sealer::is_sealed(&token.value) {
        return Ok(token);
    }
    let value = sealer
        .open(&key.to_string(), &token.value)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Token {
        value: value.expose().to_string(),
        ..token
    })
}

fn open_change(sealer: &Sealer, change: Change) -> Result<Change, StoreError> {
    let token = open_token(sealer, &change.key, change.token)?;
    Ok(Change {
        key: change.key,
        token,
    })
}

/// Waits for the next signal; false once its sender is gone. Never returns without one.
async fn next_signal(signal: Option<&mut watch::Receiver<u64>>) -> bool {
    match signal {
        Some(signal) => signal.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// A compare-and-set's or restore's outcome, with the current value opened.
fn open_outcome(
    sealer: &Sealer,
    key: &CredentialKey,
    outcome: CasOutcome,
) -> Result<CasOutcome, StoreError> {
    Ok(match outcome {
        CasOutcome::Applied => CasOutcome::Applied,
        CasOutcome::Stale { current } => CasOutcome::Stale {
            current: current
                .map(|token| open_token(sealer, key, token))
                .transpose()?,
        },
    })
}

impl Store for SealedStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn load_all(&self) -> StoreFuture<'_, Vec<(CredentialKey, Token)>> {
        Box::pin(async move {
            let mut plain = Vec::new();
            let all = self
                .inner
                .load_all()
                .await?
                .into_iter()
                .map(|(key, token)| {
                    if key.is_sealed_at_rest() && !Sealer::is_sealed(&token.value) {
                        plain.push((key.clone(), token.clone()));
                    }
                    let token = self.open(&key, token)?;
                    Ok((key, token))
                })
                .collect();
            if !plain.is_empty() {
                *self
                    .found_plain
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = plain;
            }
            all
        })
    }

    fn get<'a>(&'a self, key: &'a CredentialKey) -> StoreFuture<'a, Option<Token>> {
        Box::pin(async move {
            self.inner
                .get(key)
                .await?
                .map(|token| self.open(key, token))
                .transpose()
        })
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome> {
        self.write(Write::CompareAndSet, key, token)
    }

    fn restore<'a>(
        &'a self,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome> {
        self.write(Write::Restore, key, token)
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        self.inner.acquire_lease(key, owner, ttl)
    }

    fn release_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
    ) -> StoreFuture<'a, bool> {
        self.inner.release_lease(key, owner)
    }

    fn acquire_lease_and_get<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<Option<Token>>> {
        Box::pin(async move {
            let Some(stored) = self.inner.acquire_lease_and_get(key, owner, ttl).await? else {
                return Ok(None);
            };
            Ok(Some(stored.map(|token| self.open(key, token)).transpose()?))
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.open_feed().changes.subscribe()
    }

    fn subscribe_resync(&self) -> Option<watch::Receiver<u64>> {
        Some(self.open_feed().resync.clone())
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.inner.ping()
    }

    fn delete<'a>(&'a self, key: &'a CredentialKey) -> StoreFuture<'a, ()> {
        self.inner.delete(key)
    }

    fn put_account<'a>(&'a self, name: &'a str, definition: &'a str) -> StoreFuture<'a, ()> {
        self.inner.put_account(name, definition)
    }

    fn remove_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        self.inner.remove_account(name)
    }

    fn load_accounts(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        self.inner.load_accounts()
    }

    fn get_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>> {
        self.inner.get_account(name)
    }

    fn spend_force<'a>(
        &'a self,
        name: &'a str,
        day: i64,
        limit: u32,
    ) -> StoreFuture<'a, Option<u32>> {
        self.inner.spend_force(name, day, limit)
    }

    fn subscribe_accounts(&self) -> broadcast::Receiver<AccountChange> {
        self.inner.subscribe_accounts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::MasterKey;
    use crate::store::memory::MemoryStore;
    use crate::token::Timestamp;

    fn refresh_token_key() -> CredentialKey {
        CredentialKey::new(
            crate::kinds::AccountId::authorizer("wxcomponent", "wxauthorizer"),
            crate::kinds::Role::RefreshToken,
        )
    }

    fn token(value: &str, generation: u64) -> Token {
        let now = Timestamp::now();
        Token {
            value: value.into(),
            expires_at: now.plus(Duration::from_secs(3600)),
            fetched_at: now,
            generation,
        }
    }

    fn sealed_over(inner: &Arc<MemoryStore>, byte: u8) -> SealedStore {
        let inner: Arc<dyn Store> = inner.clone();
        SealedStore::new(inner, Sealer::new(&MasterKey::from_bytes([byte; 32])))
    }

    #[tokio::test]
    async fn a_refresh_token_is_sealed_below_and_plain_above() {
        let inner = Arc::new(MemoryStore::new());
        let store = sealed_over(&inner, 1);
        let key = refresh_token_key();
        let mut feed = store.subscribe();
        assert_eq!(
            store
                .compare_and_set(&key, &token("refresh-secret", 1))
                .await
                .unwrap(),
            CasOutcome::Applied
        );
        let below = inner.get(&key).await.unwrap().unwrap();
        assert!(Sealer::is_sealed(&below.value), "{below:?}");
        assert!(!below.value.contains("refresh-secret"));
        assert_eq!(
            store.get(&key).await.unwrap().unwrap().value,
            "refresh-secret"
        );
        assert_eq!(store.load_all().await.unwrap()[0].1.value, "refresh-secret");
        let change = tokio::time::timeout(Duration::from_secs(5), feed.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(change.token.value, "refresh-secret");
        // A stale write is answered with the current value, opened.
        let CasOutcome::Stale { current } = store
            .compare_and_set(&key, &token("other", 1))
            .await
            .unwrap()
        else {
            panic!("generation 1 is taken");
        };
        assert_eq!(current.unwrap().value, "refresh-secret");
        // Another master key does not open it: an error, never the sealed text.
        assert!(matches!(
            sealed_over(&inner, 2).get(&key).await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn other_credentials_stay_as_they_are() {
        let inner = Arc::new(MemoryStore::new());
        let store = sealed_over(&inner, 1);
        let key = CredentialKey::access_token("wx1");
        store
            .compare_and_set(&key, &token("served", 1))
            .await
            .unwrap();
        assert_eq!(inner.get(&key).await.unwrap().unwrap().value, "served");
    }

    #[tokio::test]
    async fn a_value_stored_in_the_clear_is_read_and_then_sealed() {
        let inner = Arc::new(MemoryStore::new());
        let key = refresh_token_key();
        inner
            .restore(&key, &token("written-by-an-earlier-version", 4))
            .await
            .unwrap();
        let store = sealed_over(&inner, 1);
        assert_eq!(
            store.get(&key).await.unwrap().unwrap().value,
            "written-by-an-earlier-version"
        );
        store.load_all().await.unwrap();
        assert_eq!(store.seal_what_was_plain().await.unwrap(), 1);
        let below = inner.get(&key).await.unwrap().unwrap();
        assert!(Sealer::is_sealed(&below.value));
        assert_eq!(below.generation, 5);
        let above = store.get(&key).await.unwrap().unwrap();
        assert_eq!(
            (above.value.as_str(), above.generation),
            ("written-by-an-earlier-version", 5)
        );
        store.load_all().await.unwrap();
        assert_eq!(store.seal_what_was_plain().await.unwrap(), 0);
    }
}
