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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::audit::AuditLog;
use crate::configuration::{
    ConfigError, ConsumerSettings, RefreshOverrides, RefreshSettings, Secret, Settings, TokenMode,
};
use crate::consumers::KeyCache;
use crate::consumers::{self, RuntimeConsumer};
use crate::credential::{CredentialKey, Token};
use crate::engine::{Engine, ErrorClass, ImportError, RefreshError};
use crate::hub::Credential;
use crate::registry::{AccountId, AccountSpec, Diff, Origin, Registry, StoredAccount};
use crate::seal::{SealError, Sealer};
use crate::store::{AccountChange, Store, StoreError};

/// Who may call what, switched as a whole by a reload or a change of a runtime consumer: the
/// consumers and a key cache that serves exactly them.
pub struct Access {
    /// The configuration the consumers come from, its `consumers` those of the file followed by
    /// those added at runtime.
    pub settings: Arc<Settings>,
    /// Verified keys and grants of those consumers.
    pub keys: KeyCache,
}

impl Access {
    /// Access as `settings` defines it.
    pub fn new(settings: Arc<Settings>) -> Access {
        Access {
            settings,
            keys: KeyCache::default(),
        }
    }
}

/// Why a control operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The account is defined in the configuration file.
    #[error("{0} is defined in the configuration file; change it there and reload")]
    FromConfig(AccountId),
    /// No such account.
    #[error("no runtime account {0}")]
    NotFound(AccountId),
    /// Secrets cannot be accepted without a master key to seal them.
    #[error(
        "this hub has no [secrets] master_key, so it cannot store secrets given at runtime; \
         set one (32 bytes, base64) on every instance"
    )]
    NoMasterKey,
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored account could not be read back.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A stored account is not in a format this version reads.
    #[error("stored account {0} is unreadable")]
    Unreadable(String),
    /// The configuration file is broken; nothing was changed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A live token can be imported with the account only when the account is new.
    #[error("{0} exists already; import its token with PUT …/access_token")]
    NotNew(AccountId),
    /// The hub was not started from a file, so there is nothing to reload.
    #[error("this hub was not started from a configuration file")]
    NoFile,
    /// A stored authorizer belongs to a platform the configuration no longer has.
    #[error("stored authorizer {0} belongs to a platform that is not configured")]
    UnknownComponent(String),
    /// This operation does not apply to that kind of account.
    #[error("{0} cannot be changed this way")]
    WrongKind(AccountId),
    /// WeChat refused the new account's appid or secret at its first fetch: it was not kept.
    #[error("WeChat refused the first token fetch of {0} ({1}); the account was not added")]
    RefusedByWechat(AccountId, String),
    /// The consumer is defined in the configuration file.
    #[error("consumer {0:?} is defined in the configuration file; change it there and reload")]
    ConsumerFromConfig(String),
    /// No such runtime consumer.
    #[error("no runtime consumer {0:?}")]
    UnknownConsumer(String),
    /// Another consumer has this key.
    #[error("consumer {0:?} has this key already; every consumer needs its own key")]
    KeyInUse(String),
}

/// What a reload changed, for its log line and `POST /v1/admin/reload`.
#[derive(Debug, Default, Serialize)]
pub struct ReloadSummary {
    /// Accounts added.
    pub added: Vec<String>,
    /// Accounts removed.
    pub removed: Vec<String>,
    /// Accounts changed (secret, mode, tickets, timing).
    pub changed: Vec<String>,
    /// Whether the consumers or their grants changed.
    pub consumers_changed: bool,
    /// Sections that changed but take effect only at a restart.
    pub needs_restart: Vec<&'static str>,
}

/// The outcome of adding or changing a runtime account.
#[derive(Serialize)]
pub struct PutOutcome {
    /// Whether the account is new.
    pub created: bool,
    /// The account.
    pub account: String,
    /// Its first refresh failed with this (the account is kept and retried).
    pub error: Option<String>,
    /// Its credentials, the access token first.
    #[serde(skip)]
    pub credentials: Vec<Arc<Credential>>,
}

/// Locks that order the changes to one account, shared by hash: two changes of one account never
/// interleave, and changes of different accounts rarely wait for each other.
struct AccountLocks {
    shards: Vec<tokio::sync::Mutex<()>>,
}

/// Shards of [`AccountLocks`].
const ACCOUNT_LOCK_SHARDS: usize = 64;

impl Default for AccountLocks {
    fn default() -> Self {
        AccountLocks {
            shards: (0..ACCOUNT_LOCK_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

impl AccountLocks {
    /// The lock of the account stored as `name`.
    async fn lock(&self, name: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut hasher);
        let shard = (hasher.finish() % ACCOUNT_LOCK_SHARDS as u64) as usize;
        self.shards[shard].lock().await
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
        let stored: BTreeMap<CredentialKey, Token> =
            self.store.load_all().await?.into_iter().collect();
        let mut diff = Diff::default();
        for spec in config_accounts(&settings) {
            diff.extend(self.registry.upsert(spec, Origin::Config));
        }
        let (stored_consumers, accounts) = split_consumers(self.store.load_accounts().await?);
        self.replace_runtime_consumers(stored_consumers);
        for (name, definition) in accounts {
            let spec = match self.open(&name, &definition) {
                Ok(spec) => spec,
                Err(ControlError::UnknownComponent(name)) => {
                    tracing::warn!(account = %name, "a stored authorizer belongs to a platform that is not configured; it is kept in the store but not served");
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
        self.engine.apply(diff, stored).await;
        Ok(())
    }

    /// Follows other instances' account changes until `cancel` fires.
    pub async fn run_account_feed(
        self: Arc<Self>,
        mut feed: broadcast::Receiver<AccountChange>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let received = tokio::select! {
                received = feed.recv() => received,
                _ = cancel.cancelled() => return,
            };
            let result = match received {
                Ok(AccountChange::Put { ref name, .. } | AccountChange::Removed { ref name })
                    if consumers::name_of(name).is_some() =>
                {
                    self.follow_consumer(consumers::name_of(name).unwrap_or_default())
                        .await
                }
                Ok(AccountChange::Put { name, definition }) => {
                    self.apply_remote_put(&name, &definition).await
                }
                Ok(AccountChange::Removed { name }) => {
                    self.apply_remote_removal(&name).await;
                    Ok(())
                }
                Ok(AccountChange::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.resync().await
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not apply a runtime account change");
            }
        }
    }

    /// Adds or changes a runtime app or Work app, stores it (sealed) for every instance, and
    /// waits for its first token (or failure). `live_token` (a token another system fetched, and
    /// its remaining life) is stored first, so a new legacy app is served that token instead of
    /// being fetched — which would kill the token the system's servers use.
    pub async fn put(
        &self,
        spec: AccountSpec,
        live_token: Option<(String, Duration)>,
    ) -> Result<PutOutcome, ControlError> {
        let id = spec.id();
        let _account = self.account_locks.lock(&id.storage_name()).await;
        let created = match self.registry.origin(&id) {
            Some(Origin::Config) => return Err(ControlError::FromConfig(id)),
            Some(Origin::Runtime) => false,
            None => true,
        };
        let sealer = self.sealer.as_ref().ok_or(ControlError::NoMasterKey)?;
        let name = id.storage_name();
        let secret = match (&spec, spec.secret()) {
            (AccountSpec::App { .. } | AccountSpec::Corp { .. }, Some(secret)) => secret,
            _ => return Err(ControlError::WrongKind(id)),
        };
        let stored = stored_account(&spec, sealer.seal(&name, secret))
            .ok_or_else(|| ControlError::WrongKind(id.clone()))?;
        let definition =
            serde_json::to_string(&stored).map_err(|_| ControlError::Unreadable(name.clone()))?;
        if let Some((value, expires_in)) = live_token {
            if !created {
                return Err(ControlError::NotNew(id));
            }
            let key = spec
                .credentials(&RefreshSettings::default(), Origin::Runtime)
                .remove(0)
                .0;
            match self
                .engine
                .import_unregistered(&key, value, expires_in)
                .await
            {
                Ok(_) => {}
                Err(ImportError::Store(e)) => return Err(e.into()),
                Err(ImportError::Newer { .. } | ImportError::Busy | ImportError::Lifetime) => {
                    return Err(ControlError::NotNew(id))
                }
            }
        }
        self.store.put_account(&name, &definition).await?;
        let stored = self.stored_tokens(&spec).await;
        {
            let _changing = self.changing.lock().await;
            if self.registry.origin(&id) == Some(Origin::Config) {
                // A reload took the account over meanwhile: the file wins, as at a start.
                return Err(ControlError::FromConfig(id));
            }
            let diff = self.registry.upsert(spec, Origin::Runtime);
            self.engine.apply(diff, stored).await;
        }
        drop(_account);
        let credentials = self.registry.credentials_of(&id);
        let error = match credentials.first() {
            Some(token) => self.engine.first_result(token).await.err(),
            None => None,
        }
        .map(|e: RefreshError| {
            if created && e.class() == ErrorClass::Config {
                Err(e.to_string())
            } else {
                Ok(e.to_string())
            }
        })
        .transpose();
        let error = match error {
            Ok(error) => error,
            // A new account whose appid or secret WeChat refuses would only fail forever.
            Err(refused) => {
                self.delete(&id).await?;
                return Err(ControlError::RefusedByWechat(id, refused));
            }
        };
        tracing::info!(account = %id, created, "runtime account stored");
        Ok(PutOutcome {
            created,
            account: name,
            error,
            credentials,
        })
    }

    /// Registers (or changes, or revokes) an authorizer of a platform: stores its definition for
    /// every instance, then starts, re-plans or stops its credentials here. Its tokens (the
    /// refresh token first) must already be in the store: they are served at once.
    pub async fn put_authorizer(&self, spec: AccountSpec) -> Result<(), ControlError> {
        let id = spec.id();
        let definition = match &spec {
            AccountSpec::Authorizer { .. } => stored_authorizer(&spec),
            _ => None,
        }
        .ok_or_else(|| ControlError::WrongKind(id.clone()))?;
        let name = id.storage_name();
        // The store's I/O is ordered per account, not under the process-wide lock, so that a
        // platform's recovery registers many authorizers at once (and their durable writes share
        // a disk sync). See docs/architecture.md#locks.
        let _account = self.account_locks.lock(&name).await;
        self.store.put_account(&name, &definition).await?;
        let stored = self.stored_tokens(&spec).await;
        let _changing = self.changing.lock().await;
        let diff = self.registry.upsert(spec, Origin::Runtime);
        self.engine.apply(diff, stored).await;
        Ok(())
    }

    /// What the store holds for `spec`'s credentials, read all at once.
    async fn stored_tokens(&self, spec: &AccountSpec) -> BTreeMap<CredentialKey, Token> {
        let keys: Vec<CredentialKey> = spec
            .credentials(&RefreshSettings::default(), Origin::Runtime)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let reads = keys.iter().map(|key| self.store.get(key));
        let tokens = futures_util::future::join_all(reads).await;
        keys.into_iter()
            .zip(tokens)
            .filter_map(|(key, token)| Some((key, token.ok()??)))
            .collect()
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

    /// Removes a runtime account everywhere: its definition, its tokens, its refreshes.
    pub async fn delete(&self, id: &AccountId) -> Result<(), ControlError> {
        let _account = self.account_locks.lock(&id.storage_name()).await;
        match self.registry.origin(id) {
            Some(Origin::Config) => return Err(ControlError::FromConfig(id.clone())),
            Some(Origin::Runtime) => {}
            None => return Err(ControlError::NotFound(id.clone())),
        }
        self.store.remove_account(&id.storage_name()).await?;
        let _changing = self.changing.lock().await;
        if self.registry.origin(id) != Some(Origin::Runtime) {
            return Ok(());
        }
        if let Some(diff) = self.registry.remove(id) {
            self.engine.apply(diff, BTreeMap::new()).await;
        }
        tracing::info!(account = %id, "runtime account removed");
        Ok(())
    }

    /// Re-reads the configuration file and applies what changed. A broken file changes nothing.
    pub async fn reload(&self) -> Result<ReloadSummary, ControlError> {
        let path = self.config_path.as_ref().ok_or(ControlError::NoFile)?;
        let new = Arc::new(Settings::load(path)?);
        let _changing = self.changing.lock().await;
        let old = self.settings.load_full();
        let mut summary = ReloadSummary {
            needs_restart: restart_sections(&old, &new),
            consumers_changed: old.consumers != new.consumers,
            ..ReloadSummary::default()
        };
        let before: BTreeMap<AccountId, AccountSpec> = config_accounts(&old)
            .into_iter()
            .map(|s| (s.id(), s))
            .collect();
        let mut diff = Diff::default();
        let mut kept = std::collections::BTreeSet::new();
        for spec in config_accounts(&new) {
            let id = spec.id();
            kept.insert(id.clone());
            match before.get(&id) {
                Some(previous) if *previous == spec => continue,
                Some(_) => summary.changed.push(id.to_string()),
                None => {
                    if self.registry.origin(&id) == Some(Origin::Runtime) {
                        // The file takes the account over; its stored definition goes.
                        self.store.remove_account(&id.storage_name()).await?;
                    }
                    summary.added.push(id.to_string());
                }
            }
            diff.extend(self.registry.upsert(spec, Origin::Config));
        }
        for id in before.keys().filter(|id| !kept.contains(*id)) {
            if let Some(removed) = self.registry.remove(id) {
                summary.removed.push(id.to_string());
                diff.extend(removed);
            }
        }
        self.apply_loading(diff).await;
        self.settings.store(new.clone());
        {
            // The file takes over the runtime consumers it names: their stored definitions go,
            // so that removing the name from the file later does not bring an old key back.
            let _consumers = self.consumer_changes.lock().await;
            let taken: Vec<String> = {
                let runtime = self.lock_runtime_consumers();
                new.consumers
                    .iter()
                    .filter(|c| runtime.contains_key(&c.name))
                    .map(|c| c.name.clone())
                    .collect()
            };
            for name in taken {
                // The file's consumer is in force either way; a failed removal is only logged
                // (the reload itself is done) and the runtime one stays shadowed.
                match self
                    .store
                    .remove_account(&consumers::storage_name(&name))
                    .await
                {
                    Ok(_) => {
                        self.lock_runtime_consumers().remove(&name);
                        tracing::info!(consumer = %name, "the configuration file took over a runtime consumer; its stored definition was removed");
                    }
                    Err(e) => {
                        tracing::warn!(consumer = %name, error = %e, "the configuration file took over a runtime consumer, whose stored definition could not be removed");
                    }
                }
            }
            self.publish_consumers();
        }
        tracing::info!(
            added = ?summary.added,
            removed = ?summary.removed,
            changed = ?summary.changed,
            consumers_changed = summary.consumers_changed,
            needs_restart = ?summary.needs_restart,
            "configuration reloaded"
        );
        Ok(summary)
    }

    /// Applies a diff, serving what the store already holds for added credentials (read all at
    /// once, not one after another).
    async fn apply_loading(&self, diff: Diff) {
        let reads = diff
            .added
            .iter()
            .map(|credential| self.store.get(&credential.key));
        let tokens = futures_util::future::join_all(reads).await;
        let stored = diff
            .added
            .iter()
            .zip(tokens)
            .filter_map(|(credential, token)| Some((credential.key.clone(), token.ok()??)))
            .collect();
        self.engine.apply(diff, stored).await;
    }

    /// Another instance stored a runtime account.
    async fn apply_remote_put(&self, name: &str, definition: &str) -> Result<(), ControlError> {
        let spec = self.open(name, definition)?;
        let _account = self.account_locks.lock(name).await;
        let stored = self.stored_tokens(&spec).await;
        let _changing = self.changing.lock().await;
        if self.registry.origin(&spec.id()) == Some(Origin::Config) {
            return Ok(());
        }
        if self
            .registry
            .spec(&spec.id())
            .is_some_and(|(current, _)| current == spec)
        {
            return Ok(());
        }
        let diff = self.registry.upsert(spec, Origin::Runtime);
        self.engine.apply(diff, stored).await;
        Ok(())
    }

    /// Another instance removed a runtime account.
    async fn apply_remote_removal(&self, name: &str) {
        let Some(id) = AccountId::parse(name) else {
            return;
        };
        let _changing = self.changing.lock().await;
        if self.registry.origin(&id) != Some(Origin::Runtime) {
            return;
        }
        if let Some(diff) = self.registry.remove(&id) {
            // The removing instance deleted the tokens; only stop here.
            self.engine.apply(diff, BTreeMap::new()).await;
        }
    }

    /// The feed may have missed changes: make the runtime accounts what the store says.
    async fn resync(&self) -> Result<(), ControlError> {
        let stored = {
            let _consumers = self.consumer_changes.lock().await;
            let (stored_consumers, stored) = split_consumers(self.store.load_accounts().await?);
            self.replace_runtime_consumers(stored_consumers);
            stored
        };
        let mut present = std::collections::BTreeSet::new();
        for (name, definition) in &stored {
            if let Some(id) = AccountId::parse(name) {
                present.insert(id);
            }
            self.apply_remote_put(name, definition).await?;
        }
        let gone: Vec<AccountId> = self
            .registry
            .accounts()
            .into_iter()
            .filter(|(id, origin)| *origin == Origin::Runtime && !present.contains(id))
            .map(|(id, _)| id)
            .collect();
        for id in gone {
            self.apply_remote_removal(&id.storage_name()).await;
        }
        Ok(())
    }

    /// Reads a stored runtime account and opens its secret.
    fn open(&self, name: &str, definition: &str) -> Result<AccountSpec, ControlError> {
        let unreadable = || ControlError::Unreadable(name.to_string());
        if let Some(AccountId::Authorizer {
            component_appid, ..
        }) = AccountId::parse(name)
        {
            let stored: StoredAuthorizer =
                serde_json::from_str(definition).map_err(|_| unreadable())?;
            let component = self
                .component_settings(&component_appid)
                .ok_or_else(|| ControlError::UnknownComponent(name.to_string()))?;
            let spec = authorizer_spec(&component, stored);
            if spec.id().storage_name() != name {
                return Err(unreadable());
            }
            return Ok(spec);
        }
        let stored: StoredAccount = serde_json::from_str(definition).map_err(|_| unreadable())?;
        let sealer = self.sealer.as_ref().ok_or(ControlError::NoMasterKey)?;
        let secret = sealer.open(name, &stored.sealed_secret)?;
        let spec = spec_of(stored, secret).ok_or_else(unreadable)?;
        if spec.id().storage_name() != name {
            return Err(unreadable());
        }
        Ok(spec)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads a consumer's grant as the configuration file in force would.
    pub fn read_grant(&self, text: &str) -> Result<crate::configuration::AppGrant, String> {
        self.settings.load().grants().read(text)
    }

    /// Whether the configuration file in force defines the consumer `name`.
    pub fn is_file_consumer(&self, name: &str) -> bool {
        self.settings
            .load()
            .consumers
            .iter()
            .any(|c| c.name == name)
    }

    /// The consumers in force (the file's, then the runtime ones), each with whether it was
    /// added at runtime.
    pub fn consumers(&self) -> Vec<(ConsumerSettings, bool)> {
        let file = self.settings.load();
        let from_file: std::collections::HashSet<&str> =
            file.consumers.iter().map(|c| c.name.as_str()).collect();
        self.access
            .load()
            .settings
            .consumers
            .iter()
            .map(|c| (c.clone(), !from_file.contains(c.name.as_str())))
            .collect()
    }

    /// Adds or replaces the runtime consumer `name` on every instance sharing the store; in force
    /// here when this returns (a replaced key is refused from then on). Returns whether it is new.
    pub async fn put_consumer(
        &self,
        name: &str,
        consumer: RuntimeConsumer,
    ) -> Result<bool, ControlError> {
        let _order = self.consumer_changes.lock().await;
        if self.is_file_consumer(name) {
            return Err(ControlError::ConsumerFromConfig(name.to_string()));
        }
        let taken_by = {
            let runtime = self.lock_runtime_consumers();
            let file = self.settings.load();
            file.consumers
                .iter()
                .find(|c| c.key_matches(&consumer.key_sha256))
                .map(|c| c.name.clone())
                .or_else(|| {
                    runtime
                        .iter()
                        .find(|(other, c)| {
                            other.as_str() != name && c.key_sha256 == consumer.key_sha256
                        })
                        .map(|(other, _)| other.clone())
                })
        };
        if let Some(other) = taken_by {
            return Err(ControlError::KeyInUse(other));
        }
        let storage_name = consumers::storage_name(name);
        let created = self.store.get_account(&storage_name).await?.is_none();
        self.store
            .put_account(&storage_name, &consumer.definition())
            .await?;
        self.lock_runtime_consumers()
            .insert(name.to_string(), consumer);
        self.publish_consumers();
        tracing::info!(consumer = %name, created, "runtime consumer stored");
        Ok(created)
    }

    /// Removes the runtime consumer `name` on every instance sharing the store; refused here when
    /// this returns, and its open watch streams end.
    pub async fn delete_consumer(&self, name: &str) -> Result<(), ControlError> {
        let _order = self.consumer_changes.lock().await;
        if self.is_file_consumer(name) {
            return Err(ControlError::ConsumerFromConfig(name.to_string()));
        }
        let stored = self
            .store
            .remove_account(&consumers::storage_name(name))
            .await?;
        let known = self.lock_runtime_consumers().remove(name).is_some();
        if !stored && !known {
            return Err(ControlError::UnknownConsumer(name.to_string()));
        }
        self.publish_consumers();
        tracing::info!(consumer = %name, "runtime consumer removed");
        Ok(())
    }

    /// The feed says the runtime consumer `name` changed (here or on another instance): puts in
    /// force what the store holds now. The store is read rather than the message trusted, so that
    /// a message overtaken by a later write (this instance's own, say) cannot bring an old key
    /// back.
    async fn follow_consumer(&self, name: &str) -> Result<(), ControlError> {
        let _order = self.consumer_changes.lock().await;
        let definition = self
            .store
            .get_account(&consumers::storage_name(name))
            .await?;
        let consumer = definition.as_deref().and_then(|d| {
            let read = RuntimeConsumer::from_definition(d);
            if read.is_none() {
                tracing::warn!(consumer = %name, "a stored runtime consumer is unreadable; it is not served");
            }
            read
        });
        {
            let mut runtime = self.lock_runtime_consumers();
            match consumer {
                Some(consumer) => runtime.insert(name.to_string(), consumer),
                None => runtime.remove(name),
            };
        }
        self.publish_consumers();
        Ok(())
    }

    /// Makes the runtime consumers those stored (at a start, or a resync of the feed).
    fn replace_runtime_consumers(&self, stored: Definitions) {
        let mut read = BTreeMap::new();
        for (name, definition) in stored {
            match RuntimeConsumer::from_definition(&definition) {
                Some(consumer) => {
                    read.insert(name, consumer);
                }
                None => {
                    tracing::warn!(consumer = %name, "a stored runtime consumer is unreadable; it is not served")
                }
            }
        }
        *self.lock_runtime_consumers() = read;
        self.publish_consumers();
    }

    /// Puts in force the consumers of the file in force and the runtime ones, if they differ
    /// from those in force. Open watch streams follow at their next event or heartbeat.
    fn publish_consumers(&self) {
        let runtime = self.lock_runtime_consumers();
        let file = self.settings.load_full();
        let merged = consumers::merged(&file, &runtime);
        if self.access.load().settings.consumers == merged {
            return;
        }
        let mut settings = (*file).clone();
        settings.consumers = merged;
        self.access.store(Arc::new(Access::new(Arc::new(settings))));
    }

    fn lock_runtime_consumers(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<String, RuntimeConsumer>> {
        self.runtime_consumers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Stored runtime definitions: (name, definition).
type Definitions = Vec<(String, String)>;

/// Splits the stored runtime definitions into the consumers' (by consumer name) and the
/// accounts'.
fn split_consumers(stored: Definitions) -> (Definitions, Definitions) {
    let mut consumers = Vec::new();
    let mut accounts = Vec::new();
    for (name, definition) in stored {
        match consumers::name_of(&name) {
            Some(consumer) => consumers.push((consumer.to_string(), definition)),
            None => accounts.push((name, definition)),
        }
    }
    (consumers, accounts)
}

/// The accounts a configuration defines.
fn config_accounts(settings: &Settings) -> Vec<AccountSpec> {
    settings
        .apps
        .iter()
        .map(AccountSpec::from_app)
        .chain(settings.corps.iter().map(AccountSpec::from_corp))
        .chain(settings.components.iter().map(|c| AccountSpec::Component {
            component_appid: c.component_appid.clone(),
            secret: c.secret.clone(),
            refresh: c.refresh,
        }))
        .collect()
}

/// An authorizer as stored: no secret (its refresh token is a credential in the token store),
/// only what WeChat told about its authorization. Versioned like [`StoredAccount`].
#[derive(serde::Serialize, serde::Deserialize)]
pub struct StoredAuthorizer {
    /// Format version (1).
    pub version: u32,
    /// The platform.
    pub component_appid: String,
    /// The account.
    pub authorizer_appid: String,
    /// The permission sets granted.
    #[serde(default)]
    pub func_info: Vec<u32>,
    /// When it (last) authorized, in Unix seconds.
    #[serde(default)]
    pub authorized_at: i64,
    /// Whether it withdrew.
    #[serde(default)]
    pub revoked: bool,
}

/// The stored form of an authorizer.
fn stored_authorizer(spec: &AccountSpec) -> Option<String> {
    let AccountSpec::Authorizer {
        component_appid,
        authorizer_appid,
        func_info,
        authorized_at,
        revoked,
        ..
    } = spec
    else {
        return None;
    };
    serde_json::to_string(&StoredAuthorizer {
        version: 1,
        component_appid: component_appid.clone(),
        authorizer_appid: authorizer_appid.clone(),
        func_info: func_info.clone(),
        authorized_at: *authorized_at,
        revoked: *revoked,
    })
    .ok()
}

/// The account of a stored authorizer, with its platform's tickets and timing.
pub fn authorizer_spec(
    component: &crate::configuration::ComponentSettings,
    stored: StoredAuthorizer,
) -> AccountSpec {
    AccountSpec::Authorizer {
        component_appid: stored.component_appid,
        authorizer_appid: stored.authorizer_appid,
        tickets: component.authorizer_tickets.clone(),
        refresh: component.refresh,
        func_info: stored.func_info,
        authorized_at: stored.authorized_at,
        revoked: stored.revoked,
    }
}

/// The sections a reload cannot apply (listener, store, WeChat client, engine sizing).
fn restart_sections(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut sections = Vec::new();
    if old.server != new.server {
        sections.push("server");
    }
    if old.store != new.store {
        sections.push("store");
    }
    if old.wechat != new.wechat {
        sections.push("wechat");
    }
    if old.refresh != new.refresh {
        sections.push("refresh");
    }
    if old.secrets != new.secrets {
        sections.push("secrets");
    }
    sections
}

/// The stored form of a runtime app or Work app.
fn stored_account(spec: &AccountSpec, sealed_secret: String) -> Option<StoredAccount> {
    let millis = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    Some(match spec {
        AccountSpec::App {
            appid,
            mode,
            tickets,
            refresh,
            ..
        } => StoredAccount {
            version: 1,
            kind: "app".into(),
            id: appid.clone(),
            agentid: None,
            mode: Some(mode.as_str().into()),
            tickets: tickets.iter().map(|t| t.as_str().to_string()).collect(),
            refresh_before_expired_ms: millis(refresh.refresh_before_expired),
            refresh_retry_interval_ms: millis(refresh.refresh_retry_interval),
            check_interval_ms: millis(refresh.check_interval),
            sealed_secret,
        },
        AccountSpec::Corp {
            corpid,
            agentid,
            tickets,
            refresh,
            ..
        } => StoredAccount {
            version: 1,
            kind: "corp".into(),
            id: corpid.clone(),
            agentid: Some(agentid.clone()),
            mode: None,
            tickets: tickets.iter().map(|t| t.as_str().to_string()).collect(),
            refresh_before_expired_ms: millis(refresh.refresh_before_expired),
            refresh_retry_interval_ms: millis(refresh.refresh_retry_interval),
            check_interval_ms: millis(refresh.check_interval),
            sealed_secret,
        },
        AccountSpec::Component { .. } | AccountSpec::Authorizer { .. } => return None,
    })
}

/// The account a stored record describes, with its opened secret.
fn spec_of(stored: StoredAccount, secret: Secret) -> Option<AccountSpec> {
    let duration = |ms: Option<u64>| ms.map(Duration::from_millis);
    let refresh = RefreshOverrides {
        refresh_before_expired: duration(stored.refresh_before_expired_ms),
        refresh_retry_interval: duration(stored.refresh_retry_interval_ms),
        check_interval: duration(stored.check_interval_ms),
    };
    if stored.version != 1 {
        return None;
    }
    match stored.kind.as_str() {
        "app" => Some(AccountSpec::App {
            appid: stored.id,
            secret,
            mode: stored
                .mode
                .as_deref()
                .map_or(Ok(TokenMode::default()), str::parse)
                .ok()?,
            tickets: stored
                .tickets
                .iter()
                .map(|t| t.parse())
                .collect::<Result<_, _>>()
                .ok()?,
            refresh,
        }),
        "corp" => Some(AccountSpec::Corp {
            corpid: stored.id,
            agentid: stored.agentid?,
            secret,
            tickets: stored
                .tickets
                .iter()
                .map(|t| t.parse())
                .collect::<Result<_, _>>()
                .ok()?,
            refresh,
        }),
        _ => None,
    }
}
