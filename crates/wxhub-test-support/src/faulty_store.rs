//! A store with faults a test switches on, over any real store: one account's definition written
//! slowly (a slow disk, or a Redis far away, for that one account), reads of runtime
//! definitions failing (a Redis blip, seen by one instance), a read of every account held after
//! it was taken (a large store read while the hub goes on), and a resync signal on the account
//! feed (what a store sends when its feed may have lost changes). Everything else goes straight
//! through, so one wrapper serves every test that needs a fault of this kind. It also counts the
//! calls that reach it, by method: a test can tell how many store trips a refresh costs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use wxhub::kinds::CredentialKey;
use wxhub::store::{AccountChange, CasOutcome, Change, Store, StoreError, StoreFuture};
use wxhub::token::Token;

/// `inner`, with the faults below.
pub struct FaultyStore {
    /// The real store.
    inner: Arc<dyn Store>,
    /// While set, `load_accounts` and `get_account` fail as unavailable.
    pub failing_definition_reads: AtomicBool,
    /// Writes of this account's definition (its storage name, `app/wx…`) wait this long first.
    slow_account: Option<(String, Duration)>,
    /// Compare-and-set writes of this token wait for a permit of `token_write_permits`.
    held_token_write: Option<CredentialKey>,
    /// Permits for held token writes ([`FaultyStore::release_token_writes`]).
    token_write_permits: tokio::sync::Semaphore,
    /// Set once a slow write (of the slow account or the slow token) has begun.
    pub slow_write_begun: AtomicBool,
    /// Calls by method name (`get`, `acquire_lease`, …) since the store was made.
    calls: Mutex<BTreeMap<&'static str, u64>>,
    /// While set, `load_accounts` reads the accounts, then waits for a permit of
    /// `account_load_permits` before answering with what it read.
    holding_account_loads: AtomicBool,
    /// Permits for held `load_accounts` calls ([`FaultyStore::release_account_loads`]).
    account_load_permits: tokio::sync::Semaphore,
    /// How many times `load_accounts` has read the accounts.
    pub account_reads: AtomicU64,
    /// Account-feed events the test sends, merged with the real store's.
    injected: broadcast::Sender<AccountChange>,
    /// While set, the real store's account-feed messages are dropped (a feed that lost them);
    /// injected ones still pass.
    muted_account_feed: Arc<AtomicBool>,
}

impl FaultyStore {
    /// `inner` with no fault switched on.
    pub fn new(inner: Arc<dyn Store>) -> FaultyStore {
        FaultyStore {
            inner,
            failing_definition_reads: AtomicBool::new(false),
            slow_account: None,
            slow_write_begun: AtomicBool::new(false),
            held_token_write: None,
            token_write_permits: tokio::sync::Semaphore::new(0),
            calls: Mutex::default(),
            holding_account_loads: AtomicBool::new(false),
            account_load_permits: tokio::sync::Semaphore::new(0),
            account_reads: AtomicU64::new(0),
            injected: broadcast::channel(16).0,
            muted_account_feed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Drops the real store's account-feed messages from now on, as a feed that lost them would.
    pub fn mute_account_feed(&self) {
        self.muted_account_feed.store(true, Ordering::SeqCst);
    }

    /// From now on `load_accounts` answers only when released: it reads the accounts at once,
    /// then waits.
    pub fn hold_account_loads(&self) {
        self.holding_account_loads.store(true, Ordering::SeqCst);
    }

    /// Lets `count` held (or future) `load_accounts` calls answer.
    pub fn release_account_loads(&self, count: usize) {
        self.account_load_permits.add_permits(count);
    }

    /// Sends a resync signal on the account feed: every subscriber re-reads the accounts.
    pub fn signal_account_resync(&self) {
        // No subscriber is not an error here either.
        let _ = self.injected.send(AccountChange::Resync);
    }

    /// How many calls of `method` reached this store.
    pub fn calls(&self, method: &str) -> u64 {
        self.calls.lock().unwrap().get(method).copied().unwrap_or(0)
    }

    /// Counts one call of `method`.
    fn count(&self, method: &'static str) {
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
    }

    /// Writes of the account stored as `name` take `delay`.
    pub fn with_slow_account(mut self, name: &str, delay: Duration) -> FaultyStore {
        self.slow_account = Some((name.to_string(), delay));
        self
    }

    /// Compare-and-set writes of `key` wait, once begun (`slow_write_begun`), until released.
    pub fn with_held_token_write(mut self, key: CredentialKey) -> FaultyStore {
        self.held_token_write = Some(key);
        self
    }

    /// Lets `count` held token writes reach the store.
    pub fn release_token_writes(&self, count: usize) {
        self.token_write_permits.add_permits(count);
    }

    /// The error of a definition read while they fail.
    fn blip(&self) -> Option<StoreError> {
        self.failing_definition_reads
            .load(Ordering::SeqCst)
            .then(|| StoreError::Unavailable("a blip".into()))
    }
}

impl Store for FaultyStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn load_all(&self) -> StoreFuture<'_, Vec<(CredentialKey, Token)>> {
        self.inner.load_all()
    }
    fn get<'a>(&'a self, key: &'a CredentialKey) -> StoreFuture<'a, Option<Token>> {
        self.count("get");
        self.inner.get(key)
    }
    fn compare_and_set<'a>(
        &'a self,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome> {
        self.count("compare_and_set");
        Box::pin(async move {
            if self.held_token_write.as_ref() == Some(key) {
                self.slow_write_begun.store(true, Ordering::SeqCst);
                if let Ok(permit) = self.token_write_permits.acquire().await {
                    permit.forget();
                }
            }
            self.inner.compare_and_set(key, token).await
        })
    }
    fn restore<'a>(
        &'a self,
        key: &'a CredentialKey,
        token: &'a Token,
    ) -> StoreFuture<'a, CasOutcome> {
        self.count("restore");
        self.inner.restore(key, token)
    }
    fn acquire_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        self.count("acquire_lease");
        self.inner.acquire_lease(key, owner, ttl)
    }
    fn release_lease<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
    ) -> StoreFuture<'a, bool> {
        self.count("release_lease");
        self.inner.release_lease(key, owner)
    }
    fn acquire_lease_and_get<'a>(
        &'a self,
        key: &'a CredentialKey,
        owner: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, Option<Option<Token>>> {
        self.count("acquire_lease_and_get");
        self.inner.acquire_lease_and_get(key, owner, ttl)
    }
    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.subscribe()
    }
    fn subscribe_resync(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.subscribe_resync()
    }
    fn ping(&self) -> StoreFuture<'_, ()> {
        self.inner.ping()
    }
    fn delete<'a>(&'a self, key: &'a CredentialKey) -> StoreFuture<'a, ()> {
        self.count("delete");
        self.inner.delete(key)
    }
    fn put_account<'a>(&'a self, name: &'a str, definition: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if let Some((_, delay)) = self.slow_account.as_ref().filter(|(slow, _)| slow == name) {
                self.slow_write_begun.store(true, Ordering::SeqCst);
                tokio::time::sleep(*delay).await;
            }
            self.inner.put_account(name, definition).await
        })
    }
    fn remove_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, bool> {
        self.inner.remove_account(name)
    }
    fn load_accounts(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        match self.blip() {
            Some(error) => Box::pin(async move { Err(error) }),
            None => Box::pin(async move {
                let accounts = self.inner.load_accounts().await;
                self.account_reads.fetch_add(1, Ordering::SeqCst);
                if self.holding_account_loads.load(Ordering::SeqCst) {
                    if let Ok(permit) = self.account_load_permits.acquire().await {
                        permit.forget();
                    }
                }
                accounts
            }),
        }
    }
    fn get_account<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<String>> {
        match self.blip() {
            Some(error) => Box::pin(async move { Err(error) }),
            None => self.inner.get_account(name),
        }
    }
    fn spend_force<'a>(
        &'a self,
        name: &'a str,
        day: i64,
        limit: u32,
    ) -> StoreFuture<'a, Option<u32>> {
        self.inner.spend_force(name, day, limit)
    }
    /// The real store's account feed and the test's injected messages, merged by a task of
    /// its own: every message reaches the hub one task hand-over later than it would from the
    /// real store (tests that depend on the order of a local change and its own message coming
    /// back see them a little further apart).
    fn subscribe_accounts(&self) -> broadcast::Receiver<AccountChange> {
        let (merged, receiver) = broadcast::channel(1024);
        let mut real = self.inner.subscribe_accounts();
        let mut injected = self.injected.subscribe();
        let muted = self.muted_account_feed.clone();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    change = real.recv() => match change {
                        Ok(_) if muted.load(Ordering::SeqCst) => continue,
                        Ok(change) => change,
                        Err(broadcast::error::RecvError::Lagged(_)) => AccountChange::Resync,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    Ok(change) = injected.recv() => change,
                };
                if merged.send(change).is_err() {
                    return;
                }
            }
        });
        receiver
    }
}
