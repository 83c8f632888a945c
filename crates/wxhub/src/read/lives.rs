//! What `/metrics` and `/readyz` need to know of served tokens, kept as tokens are served rather
//! than found by walking every credential: the shortest remaining life per kind, and the
//! credentials of the configuration file (docs/architecture.md#observability). With 100,000
//! authorizers, a walk per scrape or per readiness probe cost tens to hundreds of milliseconds;
//! kept this way, a scrape reads one entry per kind and one per configured credential.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Credential, CredentialId};
use crate::kinds::Origin;
use crate::token::Timestamp;

/// The served expiries and configured credentials, under one short lock that the read path never
/// takes (only publishing a token, adding and removing credentials, scrapes and probes do).
#[derive(Default)]
pub(super) struct Lives {
    inner: Mutex<Inner>,
}

/// What [`Lives`] guards.
#[derive(Default)]
struct Inner {
    /// Every served token's expiry, by kind name, ordered: the first of each set is the
    /// shortest remaining life of that kind. The id keeps equal instants apart.
    by_kind: BTreeMap<&'static str, BTreeSet<(Timestamp, CredentialId)>>,
    /// The credentials of the configuration file, which get a remaining-life series each and
    /// decide readiness. Bounded by the file, whatever the number of runtime credentials.
    configured: BTreeMap<CredentialId, Arc<Credential>>,
}

impl Lives {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain bookkeeping: a panic elsewhere while it was held leaves it usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `store`, which replaces what `credential` serves, and moves its expiry from `old` to
    /// `new` in one step with it, so that [`Lives::forget`] (which reads the slot) always finds
    /// the expiry the set holds. A retired credential's new expiry is not kept: it has been, or
    /// is being, forgotten.
    pub(super) fn serve(
        &self,
        credential: &Credential,
        old: Option<Timestamp>,
        new: Timestamp,
        store: impl FnOnce(),
    ) {
        let kind = credential.key.kind_name();
        let mut inner = self.lock();
        store();
        let set = inner.by_kind.entry(kind).or_default();
        if let Some(old) = old {
            set.remove(&(old, credential.id));
        }
        if !credential.is_retired() {
            set.insert((new, credential.id));
        }
        if set.is_empty() {
            inner.by_kind.remove(kind);
        }
    }

    /// Notes whether `credential` belongs to the configuration file (called as its account is
    /// put in the index).
    pub(super) fn register(&self, credential: &Arc<Credential>) {
        let mut inner = self.lock();
        if credential.origin() == Origin::Config {
            inner.configured.insert(credential.id, credential.clone());
        } else {
            inner.configured.remove(&credential.id);
        }
    }

    /// Drops everything kept for `credential` (retired before this is called).
    pub(super) fn forget(&self, credential: &Credential) {
        let kind = credential.key.kind_name();
        let mut inner = self.lock();
        inner.configured.remove(&credential.id);
        let expires_at = credential.slot.peek().as_ref().map(|s| s.expires_at);
        if let (Some(expires_at), Some(set)) = (expires_at, inner.by_kind.get_mut(kind)) {
            set.remove(&(expires_at, credential.id));
            if set.is_empty() {
                inner.by_kind.remove(kind);
            }
        }
    }

    /// The earliest expiry of a served token of each kind, in kind order.
    pub(super) fn earliest_by_kind(&self) -> Vec<(&'static str, Timestamp)> {
        self.lock()
            .by_kind
            .iter()
            .filter_map(|(kind, set)| set.first().map(|(at, _)| (*kind, *at)))
            .collect()
    }

    /// Whether `f` holds for every credential of the configuration file.
    pub(super) fn all_configured(&self, f: impl FnMut(&Arc<Credential>) -> bool) -> bool {
        self.lock().configured.values().all(f)
    }

    /// The configuration file's credentials, in the order they were numbered (file order).
    pub(super) fn configured(&self) -> Vec<Arc<Credential>> {
        self.lock().configured.values().cloned().collect()
    }
}
