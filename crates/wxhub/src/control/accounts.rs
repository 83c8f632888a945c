//! Runtime accounts: added, changed and removed through the admin API (and a platform's
//! authorizations) on any instance, stored for every instance and restart, and followed here when
//! another instance changes them. Changes of one account are ordered by its lock; changes of
//! different accounts do not wait for each other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::stored::{parents_first, split_consumers};
use super::{Control, ControlError};
use crate::configuration::RefreshSettings;
use crate::engine::{ErrorClass, ImportError, RefreshError, StoredTokens};
use crate::kinds::stored::{child_spec, ChildError};
use crate::kinds::stored::{seal_place, spec_of, stored_account, stored_child};
use crate::kinds::CredentialKey;
use crate::read::Credential;
use crate::registry::{AccountId, AccountSpec, Origin, StoredAccount};

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
pub(super) struct AccountLocks {
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
    pub(super) async fn lock(&self, name: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut hasher);
        let shard = (hasher.finish() % ACCOUNT_LOCK_SHARDS as u64) as usize;
        self.shards[shard].lock().await
    }
}

impl Control {
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
        if spec.secret().is_none() {
            return Err(ControlError::WrongKind(id));
        }
        let stored = stored_account(&spec, |field, secret| {
            sealer.seal(&seal_place(&name, field), secret)
        })
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

    /// Registers (or changes, or revokes) an account under a parent (an authorizer of a
    /// platform, a corp that installed a suite): stores its definition for every instance, then
    /// starts, re-plans or stops its credentials here. Its durable credential (refresh token,
    /// permanent code) must already be in the store: its tokens are served at once.
    pub async fn put_child(&self, spec: AccountSpec) -> Result<(), ControlError> {
        let id = spec.id();
        let definition = stored_child(&spec).ok_or_else(|| ControlError::WrongKind(id.clone()))?;
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
    pub(super) async fn stored_tokens(&self, spec: &AccountSpec) -> StoredTokens {
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
            self.engine.apply(diff, StoredTokens::new()).await;
        }
        tracing::info!(account = %id, "runtime account removed");
        Ok(())
    }

    /// Another instance stored a runtime account.
    pub(super) async fn apply_remote_put(
        &self,
        name: &str,
        definition: &str,
    ) -> Result<(), ControlError> {
        self.follow_put(name, definition, None).await
    }

    /// Puts in force a stored definition: one the feed brought (`read_from` is `None`), or one
    /// a resync read with every other (`read_from` is the registry's change count when that
    /// read began). A resync's definition may be older than what is here: an account put here
    /// since is left as it is, and one that differs from the registry (changed or deleted here
    /// since, or changed elsewhere) is read again, alone, under its lock, as a consumer is.
    async fn follow_put(
        &self,
        name: &str,
        definition: &str,
        read_from: Option<u64>,
    ) -> Result<(), ControlError> {
        let spec = self.open(name, definition)?;
        let _account = self.account_locks.lock(name).await;
        if read_from.is_some_and(|mark| self.registry.put_after(&spec.id(), mark)) {
            return Ok(());
        }
        // Most messages are this instance's own puts coming back, or a resync going over what is
        // already here: nothing to read from the store for them.
        if self.in_force(&spec) {
            return Ok(());
        }
        let spec = match read_from {
            None => spec,
            Some(_) => match self.store.get_account(name).await? {
                Some(current) => self.open(name, &current)?,
                // Deleted since the resync read it.
                None => return Ok(()),
            },
        };
        let stored = self.stored_tokens(&spec).await;
        let _changing = self.changing.lock().await;
        if self.in_force(&spec) {
            return Ok(());
        }
        let diff = self.registry.upsert(spec, Origin::Runtime);
        self.engine.follow(diff, stored);
        Ok(())
    }

    /// Whether `spec` is what the registry has, or its account is the configuration file's
    /// (which a runtime definition never overrides).
    fn in_force(&self, spec: &AccountSpec) -> bool {
        match self.registry.spec(&spec.id()) {
            Some((_, Origin::Config)) => true,
            Some((current, _)) => current == *spec,
            None => false,
        }
    }

    /// Another instance removed a runtime account.
    pub(super) async fn apply_remote_removal(&self, name: &str) {
        self.follow_removal(name, u64::MAX).await;
    }

    /// Stops a runtime account removed elsewhere, if it was last put here no later than the
    /// registry's change count `put_by` (a resync's mark; `u64::MAX` for the feed's message).
    /// Under the account's lock, as a local put or delete: this instance's own delete coming
    /// back on the feed waits for that delete to finish (and delete the tokens) and then finds
    /// nothing to do.
    async fn follow_removal(&self, name: &str, put_by: u64) {
        let Some(id) = AccountId::parse(name) else {
            return;
        };
        let _account = self.account_locks.lock(name).await;
        let _changing = self.changing.lock().await;
        if self.registry.origin(&id) != Some(Origin::Runtime) {
            return;
        }
        if let Some(diff) = self.registry.remove_if_put_by(&id, put_by) {
            // The removing instance deleted the tokens; only stop here.
            self.engine.follow(diff, StoredTokens::new());
        }
    }

    /// The feed may have missed changes: make the runtime accounts what the store says.
    pub(super) async fn resync(&self) -> Result<(), ControlError> {
        // An account put here while the store is read may be missing from what is read, or read
        // as it was before: only the accounts put before the read began are judged by it.
        let read_from = self.registry.changes();
        let stored = {
            let _consumers = self.consumer_changes.lock().await;
            let (stored_consumers, stored) = split_consumers(self.store.load_accounts().await?);
            self.replace_runtime_consumers(stored_consumers);
            parents_first(stored)
        };
        let mut present = std::collections::BTreeSet::new();
        for (name, definition) in &stored {
            if let Some(id) = AccountId::parse(name) {
                present.insert(id);
            }
            match self.follow_put(name, definition, Some(read_from)).await {
                Ok(()) => {}
                // One account this instance cannot read (its platform or suite is not configured
                // here, a definition it cannot open) is skipped, as at a start: the others and
                // the removals below still apply. Only the store failing stops the resync.
                Err(e @ (ControlError::Store(_) | ControlError::NoMasterKey)) => return Err(e),
                Err(e) => {
                    tracing::warn!(account = %name, error = %e, "a stored runtime account cannot be read here; it is kept in the store but not served")
                }
            }
        }
        let gone: Vec<AccountId> = self
            .registry
            .accounts_put_by(read_from)
            .into_iter()
            .filter(|(id, origin)| *origin == Origin::Runtime && !present.contains(id))
            .map(|(id, _)| id)
            .collect();
        for id in gone {
            self.follow_removal(&id.storage_name(), read_from).await;
        }
        Ok(())
    }

    /// Reads a stored runtime account and opens its secret.
    pub(super) fn open(&self, name: &str, definition: &str) -> Result<AccountSpec, ControlError> {
        let unreadable = || ControlError::Unreadable(name.to_string());
        let id = AccountId::parse(name);
        // An account with a parent (an authorizer, an installed corp) is stored without a
        // secret, and read with its parent's settings.
        if let Some((parent, parent_id)) = id.as_ref().and_then(AccountId::parent) {
            let spec =
                child_spec((parent, parent_id), definition, self).map_err(|why| match why {
                    ChildError::Unreadable => unreadable(),
                    ChildError::UnknownParent => ControlError::UnknownComponent(name.to_string()),
                })?;
            if spec.id().storage_name() != name {
                return Err(unreadable());
            }
            return Ok(spec);
        }
        let stored: StoredAccount = serde_json::from_str(definition).map_err(|_| unreadable())?;
        let sealer = self.sealer.as_ref().ok_or(ControlError::NoMasterKey)?;
        let secret = sealer.open(name, &stored.sealed_secret)?;
        let mut others = BTreeMap::new();
        for (field, sealed) in &stored.sealed {
            others.insert(
                field.clone(),
                sealer.open(&seal_place(name, field), sealed)?,
            );
        }
        let spec = spec_of(stored, secret, others).ok_or_else(unreadable)?;
        if spec.id().storage_name() != name {
            return Err(unreadable());
        }
        Ok(spec)
    }
}
