//! The credential handle: one per credential, shared by the registry, the engine and the read
//! side — its never-reused number, its key, the slot its served value lives in and how it is kept
//! fresh. Kept apart from the index so that what a credential *is* reads without the maps that
//! find it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use super::Served;
use crate::kinds::CredentialKey;
use crate::kinds::{CredentialSpec, Origin};

/// A credential's number: unique for the life of the process, never reused, so that a handle of a
/// removed credential can never be mistaken for a credential added later under the same key.
pub type CredentialId = u64;

/// Where one credential's current [`Served`] lives.
#[derive(Default)]
pub struct Slot {
    current: ArcSwapOption<Served>,
}

impl Slot {
    /// The token being served now, if any.
    pub fn load(&self) -> Option<Arc<Served>> {
        self.current.load_full()
    }

    /// The token being served now, borrowed for the duration of one request: cheaper than
    /// [`Slot::load`] on the read path, since it does not touch the shared reference count that
    /// every core's readers would otherwise contend on.
    pub fn peek(&self) -> arc_swap::Guard<Option<Arc<Served>>> {
        self.current.load()
    }

    /// Replaces what is served (only the engine calls this).
    pub fn store(&self, served: Arc<Served>) {
        self.current.store(Some(served));
    }
}

/// One credential: the handle the registry, the engine and the read side share.
pub struct Credential {
    /// Its number (see [`CredentialId`]).
    pub id: CredentialId,
    /// Which credential this is.
    pub key: CredentialKey,
    /// What is served for it now.
    pub slot: Slot,
    /// How it is kept fresh; replaced when its account changes (a new secret, mode or timing).
    spec: ArcSwap<CredentialSpec>,
    /// Set once it has been removed: a refresh still running for it must not write back.
    retired: AtomicBool,
}

/// Woken whenever what any credential serves changes: a read that lands between an expired value
/// and its successor waits on it (docs/architecture.md#rollover-of-re-sent-values), then checks its own slot again.
/// One for the process rather than one per credential: such waits are rare and short, and at
/// 100,000 authorizers a `Notify` each would cost megabytes.
static SERVED_CHANGED: tokio::sync::Notify = tokio::sync::Notify::const_new();

impl Credential {
    /// A new handle with nothing served yet.
    pub fn new(id: CredentialId, key: CredentialKey, spec: CredentialSpec) -> Credential {
        Credential {
            id,
            key,
            slot: Slot::default(),
            spec: ArcSwap::from_pointee(spec),
            retired: AtomicBool::new(false),
        }
    }

    /// Serves `served` from now on and wakes every read waiting for a new value.
    pub fn serve(&self, served: Arc<Served>) {
        self.slot.store(served);
        SERVED_CHANGED.notify_waiters();
    }

    /// Waits until what is served changes, for this or another credential: check the slot again
    /// after it (register before checking, see `Notify::notified`).
    pub fn served_changed(&self) -> tokio::sync::futures::Notified<'static> {
        SERVED_CHANGED.notified()
    }

    /// How it is kept fresh now.
    pub fn spec(&self) -> Arc<CredentialSpec> {
        self.spec.load_full()
    }

    /// Where its account is defined, read without taking a reference count (for walks over every
    /// credential: readiness, metrics).
    pub fn origin(&self) -> Origin {
        self.spec.load().origin
    }

    /// Whether it is an access token renewed in stable mode: the only credentials with a daily
    /// force-refresh budget.
    pub fn has_force_budget(&self) -> bool {
        self.spec.load().source.renewal() == crate::plan::Renewal::Stable
    }

    /// Whether it is an access token of the configuration file renewed in stable mode: those
    /// whose force budget `/metrics` shows one by one (`wxhub_force_refresh_budget_remaining`).
    /// Runtime stable-mode tokens have a budget too ([`Credential::has_force_budget`], shown in
    /// `/v1/credentials`) but come and go, so they have no series of their own.
    pub fn is_configured_stable_token(&self) -> bool {
        let spec = self.spec.load();
        spec.origin == Origin::Config && spec.source.renewal() == crate::plan::Renewal::Stable
    }

    /// Replaces how it is kept fresh.
    pub fn set_spec(&self, spec: CredentialSpec) {
        self.spec.store(Arc::new(spec));
    }

    /// Marks it removed.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    /// Whether it has been removed.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }
}
