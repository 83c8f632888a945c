//! The control plane: every way the set of accounts changes while the hub runs — the admin API,
//! a configuration reload, and other instances' changes arriving on the store's account feed —
//! goes through [`Control`], which keeps the registry, the engine, the store and the consumers'
//! grants in step. See `docs/architecture.md#registry`.
//!
//! Runtime accounts are stored (their secret sealed with `[secrets] master_key`) so that every
//! instance sharing the store, and every restart, has them. Accounts defined in the configuration
//! file are changed only by a reload of that file.
//!
//! Consumers added at runtime ([`crate::consumers`]) travel the same way: stored beside the
//! runtime accounts, followed on the same feed, joined to the file's consumers in [`Access`].
//!
//! One concern per file:
//! - this file — [`Control`] itself, its start and the account feed it follows;
//! - [`accounts`] — runtime accounts: added, changed, removed here or on another instance;
//! - [`reload`] — a reload of the configuration file, and what changed in it (pure);
//! - [`access`] — the consumers in force ([`Access`]) and the runtime ones;
//! - [`stored`] — the formats runtime accounts are stored in (pure);
//! - [`error`] — why an operation was refused.

mod access;
mod accounts;
mod error;
mod reload;
mod stored;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::broadcast;

use crate::audit::AuditLog;
use crate::configuration::Settings;
use crate::consumers::{self, RuntimeConsumer};
use crate::engine::{Engine, StoredTokens};
use crate::kinds::AccountId;
use crate::registry::{Diff, Origin, Registry};
use crate::seal::Sealer;
use crate::store::{AccountChange, Store, StoreError};
pub use access::Access;
use access::Said;
use accounts::AccountLocks;
pub use accounts::PutOutcome;
pub use error::ControlError;
use reload::config_accounts;
pub use reload::ReloadSummary;
use stored::{parents_first, split_consumers};

/// The first wait before the account feed tries again what the store did not answer for.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest wait between two tries.
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// What the account feed could not apply yet because the store did not answer.
struct Unapplied {
    /// Runtime consumers whose re-read failed: refused here until it succeeds.
    consumers: BTreeSet<String>,
    /// Whether a resync failed.
    resync: bool,
    /// When to try again (`None` while nothing waits).
    retry_at: Option<tokio::time::Instant>,
    /// The wait before the next try.
    interval: std::time::Duration,
}

impl Default for Unapplied {
    fn default() -> Self {
        Unapplied {
            consumers: BTreeSet::new(),
            resync: false,
            retry_at: None,
            interval: RETRY_FIRST,
        }
    }
}

impl Unapplied {
    fn is_empty(&self) -> bool {
        self.consumers.is_empty() && !self.resync
    }

    /// Records a new failure: the next try comes after the first wait again.
    fn failed(&mut self, record: impl FnOnce(&mut Unapplied)) {
        record(self);
        self.interval = RETRY_FIRST;
        self.retry_at = Some(tokio::time::Instant::now() + RETRY_FIRST);
    }
}

/// See the module docs.
pub struct Control {
    /// Which credentials exist.
    registry: Registry,
    /// Keeps them fresh.
    engine: Engine,
    /// Where runtime accounts live.
    store: Arc<dyn Store>,
    /// Seals runtime secrets (`None` without a master key).
    sealer: Option<Sealer>,
    /// The configuration file, for reloads.
    config_path: Option<PathBuf>,
    /// The configuration now in force (the base of the next reload's diff).
    settings: ArcSwap<Settings>,
    /// The consumers and their grants, shared with the API.
    access: Arc<ArcSwap<Access>>,
    /// Serialises changes to the registry and the engine, so a reload and an admin call never
    /// interleave. Taken after [`Control::account_locks`], never the other way round.
    changing: tokio::sync::Mutex<()>,
    /// Orders the changes to one account (its store writes, then its registration) without
    /// holding up the others.
    account_locks: AccountLocks,
    /// Admin actions and authorization changes.
    audit: AuditLog,
    /// The consumers added at runtime, by name, as this instance knows them.
    runtime_consumers: Mutex<BTreeMap<String, RuntimeConsumer>>,
    /// Orders the changes to runtime consumers (a store write or read, then the switch of
    /// [`Access`]), so that an older definition is never put in force after a newer one.
    consumer_changes: tokio::sync::Mutex<()>,
}

impl Control {
    /// A control plane over these parts; [`Control::start`] loads the accounts.
    pub fn new(
        registry: Registry,
        engine: Engine,
        store: Arc<dyn Store>,
        settings: Arc<Settings>,
        config_path: Option<PathBuf>,
    ) -> Control {
        let sealer = settings.secrets.master_key.as_ref().map(Sealer::new);
        Control {
            registry,
            engine,
            store,
            sealer,
            config_path,
            access: Arc::new(ArcSwap::from_pointee(Access::new(settings.clone()))),
            settings: ArcSwap::new(settings),
            changing: tokio::sync::Mutex::new(()),
            account_locks: AccountLocks::default(),
            audit: AuditLog::default(),
            runtime_consumers: Mutex::default(),
            consumer_changes: tokio::sync::Mutex::new(()),
        }
    }

    /// The audit trail.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The consumers and their grants (swapped by a reload).
    pub fn access(&self) -> &Arc<ArcSwap<Access>> {
        &self.access
    }

    /// Registers every account of the configuration and every runtime account in the store,
    /// serving the valid tokens the store holds (without fetching them again). Fails if a stored
    /// secret does not open with the master key.
    pub async fn start(&self) -> Result<(), ControlError> {
        let settings = self.settings.load_full();
        let mut diff = Diff::default();
        for spec in config_accounts(&settings) {
            diff.extend(self.registry.upsert(spec, Origin::Config));
        }
        let (stored_consumers, accounts) = split_consumers(self.store.load_accounts().await?);
        // The tokens are read (and their sealed parts opened) on another thread while the
        // accounts are registered here: at 100,000 authorizers each takes a few hundred
        // milliseconds of the start.
        let store = self.store.clone();
        // Aborted if the start fails before it is awaited.
        let stored = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            // Put in a hash map on this task too, beside the registering: 200,000 tokens at
            // 100,000 authorizers.
            let all = store.load_all().await?;
            Ok::<StoredTokens, StoreError>(all.into_iter().collect())
        }));
        self.registry.reserve(accounts.len());
        self.replace_runtime_consumers(stored_consumers);
        // A runtime suite is registered before the corps that installed it: they are read with
        // its settings.
        for (name, definition) in parents_first(accounts) {
            let spec = match self.open(&name, &definition) {
                Ok(spec) => spec,
                Err(ControlError::UnknownComponent(name)) => {
                    tracing::warn!(account = %name, "a stored authorizer or installed corp belongs to a platform or suite that is not configured; it is kept in the store but not served");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if self.registry.origin(&spec.id()) == Some(Origin::Config) {
                tracing::warn!(account = %name, "a runtime account is also defined in the configuration file; the file wins");
                continue;
            }
            diff.extend(self.registry.upsert(spec, Origin::Runtime));
        }
        let stored = match stored.await {
            Ok(stored) => stored?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {
                let why = "loading the stored tokens was cancelled: the runtime is stopping";
                return Err(StoreError::Unavailable(why.into()).into());
            }
        };
        self.engine.apply(diff, stored).await;
        Ok(())
    }

    /// Follows other instances' account changes until `cancel` fires. What could not be applied
    /// because the store did not answer (a changed consumer's re-read, a resync) is tried again,
    /// after [`RETRY_FIRST`] and then at growing intervals up to [`RETRY_MAX`], until it is.
    pub async fn run_account_feed(
        self: Arc<Self>,
        mut feed: broadcast::Receiver<AccountChange>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let mut unapplied = Unapplied::default();
        loop {
            let retry_at = unapplied.retry_at;
            let received = tokio::select! {
                received = feed.recv() => received,
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)),
                    if retry_at.is_some() =>
                {
                    self.retry(&mut unapplied).await;
                    continue;
                }
                _ = cancel.cancelled() => return,
            };
            let result = match received {
                Ok(AccountChange::Put { ref name, .. } | AccountChange::Removed { ref name })
                    if consumers::name_of(name).is_some() =>
                {
                    let consumer = consumers::name_of(name).unwrap_or_default();
                    let said = match &received {
                        Ok(AccountChange::Put { definition, .. }) => Said::Put(definition),
                        _ => Said::Removed,
                    };
                    let result = self.follow_consumer(consumer, said).await;
                    match result {
                        Ok(()) => {
                            unapplied.consumers.remove(consumer);
                        }
                        Err(_) => unapplied.failed(|u| {
                            u.consumers.insert(consumer.to_string());
                        }),
                    }
                    result
                }
                Ok(AccountChange::Put { name, definition }) => {
                    self.apply_remote_put(&name, &definition).await
                }
                Ok(AccountChange::Removed { name }) => {
                    self.apply_remote_removal(&name).await;
                    Ok(())
                }
                Ok(AccountChange::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let result = self.resync().await;
                    match result {
                        Ok(()) => unapplied = Unapplied::default(),
                        Err(_) => unapplied.failed(|u| u.resync = true),
                    }
                    result
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not apply a runtime account change");
            }
        }
    }

    /// Tries again what the feed could not apply: a resync if one failed (it reads every
    /// consumer too), else each consumer whose re-read failed.
    async fn retry(&self, unapplied: &mut Unapplied) {
        let result = if unapplied.resync {
            let result = self.resync().await;
            if result.is_ok() {
                *unapplied = Unapplied::default();
            }
            result
        } else {
            let mut result = Ok(());
            for name in std::mem::take(&mut unapplied.consumers) {
                if let Err(e) = self.follow_consumer(&name, Said::Nothing).await {
                    unapplied.consumers.insert(name);
                    result = Err(e);
                }
            }
            result
        };
        match result {
            Ok(()) if unapplied.is_empty() => *unapplied = Unapplied::default(),
            Ok(()) => unapplied.retry_at = Some(tokio::time::Instant::now() + unapplied.interval),
            Err(e) => {
                unapplied.interval = (unapplied.interval * 2).min(RETRY_MAX);
                unapplied.retry_at = Some(tokio::time::Instant::now() + unapplied.interval);
                tracing::warn!(error = %e, retry_in = ?unapplied.interval, "could not apply a runtime account change yet");
            }
        }
    }

    /// The platform settings of `component_appid` now in force.
    pub fn component_settings(
        &self,
        component_appid: &str,
    ) -> Option<crate::configuration::ComponentSettings> {
        self.settings
            .load()
            .components
            .iter()
            .find(|c| c.component_appid == component_appid)
            .cloned()
    }

    /// The suite settings of `suite_id` now in force: the file's, or those put at runtime.
    pub fn suite_settings(&self, suite_id: &str) -> Option<crate::configuration::SuiteSettings> {
        let (spec, _) = self.registry.spec(&AccountId::suite(suite_id))?;
        spec.as_suite().cloned()
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl crate::kinds::stored::Parents for Control {
    fn component(&self, component_appid: &str) -> Option<crate::configuration::ComponentSettings> {
        self.component_settings(component_appid)
    }

    fn suite(&self, suite_id: &str) -> Option<crate::configuration::SuiteSettings> {
        self.suite_settings(suite_id)
    }
}
