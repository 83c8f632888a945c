//! In-memory store: for tests and throwaway runs.
//!
//! Everything lives in one process and is lost when it exits, so it only suits tests, the demo
//! and a single node that may re-fetch every token after a restart. It follows the full [`Store`]
//! contract, so code tested against it behaves the same on the persistent backends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;

use super::{
    generation_exceeds, generation_follows, AccountChange, CasOutcome, Change, Store, StoreFuture,
    CHANGE_FEED_CAPACITY,
};
use crate::clock::{Clock, SystemClock};
use crate::kinds::CredentialKey;
use crate::token::{Timestamp, Token};

/// A [`Store`] that keeps tokens and leases in process memory.
///
/// All state sits behind one `std::sync::Mutex`: every operation is a few map look-ups, so the
/// critical sections are short and never span an `.await`, and one lock makes compare-and-set and
/// lease acquisition trivially atomic.
pub struct MemoryStore {
    /// Tokens and leases, guarded together so each operation sees one consistent state.
    state: Mutex<State>,
    /// The change feed; a successful write is sent while the state lock is held, so subscribers
    /// see the writes of one key in generation order.
    changes: broadcast::Sender<Change>,
    /// The account feed, sent under the state lock like the change feed.
    accounts: broadcast::Sender<AccountChange>,
    /// What time it is, for leases (a test's fake time; the system clock otherwise).
    clock: Arc<dyn Clock>,
}

/// What a [`MemoryStore`] holds.
#[derive(Default)]
struct State {
    /// The current token of every key ever written.
    tokens: HashMap<CredentialKey, Token>,
    /// The refresh leases; an expired entry is equivalent to no entry.
    leases: HashMap<CredentialKey, Lease>,
    /// Runtime account definitions by name.
    accounts: BTreeMap<String, String>,
    /// Force refreshes used, by (name, WeChat day).
    force: HashMap<(String, i64), u32>,
}

/// One refresh lease.
struct Lease {
    /// Who holds it; only this owner may extend or release it.
    owner: String,
    /// Wall-clock end of the lease (wall-clock like the persistent backends, whose leases are
    /// shared between processes).
    expires_at: Timestamp,
}

impl Lease {
    /// Whether the lease still excludes other owners at `now`.
    fn is_live_at(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }
}

impl MemoryStore {
    /// An empty store, on the system clock.
    pub fn new() -> MemoryStore {
        MemoryStore::with_clock(Arc::new(SystemClock))
    }

    /// An empty store whose leases run on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> MemoryStore {
        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let (accounts, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        MemoryStore {
            state: Mutex::new(State::default()),
            changes,
            accounts,
            clock,
        }
    }

    /// Locks the state. A panic while the lock was held cannot leave it half-updated (every
    /// mutation is a single map insert or remove), so a poisoned lock is simply taken over rather
    /// than turning one panic into a failure of every later call.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn load_all(&self) -> StoreFuture<'_, Vec<(CredentialKey, Token)>> {
        Box::pin(async move {
            let state = self.lock();
            Ok(state
                .tokens
                .iter()
                .map(|(key, token)| (key.clone(), token.clone()))
                .collect())
        })
    }

    fn get<'a>(&'a self, key: &'a CredentialKey) -> StoreFuture<'a, Option<Token>> {
        Box::pin(async move { Ok(self.lock().tokens.get(key).cloned()) })
    }

    fn compare_and_set<'a>(
        &'a self,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome> {
        Box::pin(async move {
            Ok(self
                .lock()
                .write_if(generation_follows, key, token, &self.changes))
        })
    }

    fn restore<'a>(
        &'a self,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome> {
        Box::pin(async move {
            Ok(self
                .lock()
                .write_if(generation_exceeds, key, token, &self.changes))
        })
    }

    fn acquire_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move { Ok(self.lock().acquire_lease(key, owner, ttl, self.clock.now())) })
    }

    /// Reports true only if `owner`'s lease was still live; an expired lease of `owner` is
    /// removed too, but the caller learns that its work outlived the lease.
    fn release_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move { Ok(self.lock().release_lease(key, owner, self.clock.now())) })
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn delete<'a>(&'a self, key: &'a CredentialKey) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut state = self.lock();
            state.tokens.remove(key);
            state.leases.remove(key);
            Ok(())
        })
    }

    fn put_account<'a>(&'a self, name: &'a str, definition: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut state = self.lock();
            state.accounts.insert(name.into(), definition.into());
            let _ = self.accounts.send(AccountChange::Put {
                name: name.into(),
                definition: definition.into(),
            });
            Ok(())
        })
    }

    fn remove_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut state = self.lock();
            let existed = state.accounts.remove(name).is_some();
            if existed {
                let _ = self
                    .accounts
                    .send(AccountChange::Removed { name: name.into() });
            }
            Ok(existed)
        })
    }

    fn load_accounts(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        Box::pin(async move {
            let state = self.lock();
            Ok(state
                .accounts
                .iter()
                .map(|(name, definition)| (name.clone(), definition.clone()))
                .collect())
        })
    }

    fn get_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move { Ok(self.lock().accounts.get(name).cloned()) })
    }

    fn spend_force<'a>(
        &'a self,
        name: &'a str,
        day: i64,
        limit: u32,
    ) -> StoreFuture<'a, Option<u32>> {
        Box::pin(async move {
            let mut state = self.lock();
            state.force.retain(|(_, d), _| *d >= day - 1);
            let used = state.force.entry((name.to_owned(), day)).or_insert(0);
            if *used >= limit {
                return Ok(None);
            }
            *used += 1;
            Ok(Some(*used))
        })
    }

    fn subscribe_accounts(&self) -> broadcast::Receiver<AccountChange> {
        self.accounts.subscribe()
    }
}

/// The operations themselves, synchronous and run under the lock (the futures above only wrap
/// them, so nothing happens until a future is polled and no lock is held across an `.await`).
impl State {
    /// Writes `token` if `allowed(stored, token)` (the compare-and-set or the restore rule),
    /// publishing it on `changes`. Publishing under the lock keeps the writes of one key in
    /// generation order on the feed.
    fn write_if(
        &mut self,
        allowed: fn(Option<&Token>, &Token) -> bool,
        key: &CredentialKey,
        token: &Token,
        changes: &broadcast::Sender<Change>,
    ) -> CasOutcome {
        let stored = self.tokens.get(key);
        if !allowed(stored, token) {
            return CasOutcome::Stale {
                current: stored.cloned(),
            };
        }
        self.tokens.insert(key.clone(), token.clone());
        // Sending never blocks; an error only means nobody is subscribed.
        let _ = changes.send(Change {
            key: key.clone(),
            token: token.clone(),
        });
        CasOutcome::Applied
    }

    /// Takes or extends the lease of `key` for `owner` unless another owner's is live at `now`.
    fn acquire_lease(
        &mut self,
        key: &CredentialKey,
        owner: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> bool {
        let free = match self.leases.get(key) {
            Some(lease) => lease.owner == owner || !lease.is_live_at(now),
            None => true,
        };
        if free {
            let lease = Lease {
                owner: owner.to_owned(),
                expires_at: now.plus(ttl),
            };
            self.leases.insert(key.clone(), lease);
        }
        free
    }

    /// Removes `owner`'s lease of `key`; whether it was still live at `now`.
    fn release_lease(&mut self, key: &CredentialKey, owner: &str, now: Timestamp) -> bool {
        match self.leases.get(key) {
            Some(lease) if lease.owner == owner => {
                let live = lease.is_live_at(now);
                self.leases.remove(key);
                live
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemoryStore;
    use crate::store::conformance::{store_conformance_tests, Fixture};

    fn fixture() -> Fixture {
        Fixture::new(Arc::new(MemoryStore::new()))
    }

    store_conformance_tests!(fixture);
}
