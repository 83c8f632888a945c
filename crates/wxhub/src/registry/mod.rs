//! The registry: the one owner of *which credentials exist*.
//!
//! Credentials come and go while the hub runs: the configuration file defines some (and a reload
//! changes them), the admin API adds and removes others, and later the platform's pushes will add
//! authorizers. Each of those goes through [`Registry::upsert`] or [`Registry::remove`], which
//! update the read side's index ([`ReadIndex`]) and return a [`Diff`] for the engine to start, stop or
//! re-plan the credentials concerned. Nothing else creates a [`Credential`].
//!
//! See `docs/architecture.md#registry` for why credentials are runtime facts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use crate::kinds::{AccountId, AccountSpec, CredentialSpec, Origin, Source, StoredAccount};

use crate::configuration::RefreshSettings;
use crate::kinds::auth_corp::AuthCorpSpec;
use crate::kinds::authorizer::AuthorizerSpec;
use crate::kinds::Kind;
use crate::read::{AccountEntry, Credential, CredentialId, ReadIndex};

/// What one change to the set of accounts did to credentials.
#[derive(Default)]
pub struct Diff {
    /// Credentials that did not exist before: the engine starts them.
    pub added: Vec<Arc<Credential>>,
    /// Credentials that no longer exist: the engine stops them and their tokens are deleted.
    pub removed: Vec<Arc<Credential>>,
    /// Credentials whose spec changed (secret, mode, timing): the engine re-plans them.
    pub changed: Vec<Arc<Credential>>,
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Appends another diff.
    pub fn extend(&mut self, other: Diff) {
        self.added.extend(other.added);
        self.removed.extend(other.removed);
        self.changed.extend(other.changed);
    }
}

/// One registered account.
struct Registered {
    /// Its definition.
    spec: AccountSpec,
    /// Where it was defined.
    origin: Origin,
    /// Its credentials, the access token first.
    credentials: Vec<Arc<Credential>>,
    /// The registry's change count when it was last put (see [`Registry::changes`]).
    changed_at: u64,
}

/// What the registry mutates, under one mutex (never held across an `.await`).
struct State {
    /// Every account. Boxed: a B-tree node holds eleven values inline, and at 100,000 authorizers the nodes'
    /// unused slots would cost as much as the accounts themselves.
    accounts: BTreeMap<AccountId, Box<Registered>>,
    /// The next [`CredentialId`].
    next_id: CredentialId,
    /// How many times an account was put so far.
    changes: u64,
}

/// The one owner of which credentials exist. See the module docs.
pub struct Registry {
    /// The read side it keeps in step.
    read_index: Arc<ReadIndex>,
    /// `[refresh]`, which each account's overrides apply to.
    refresh: RefreshSettings,
    /// The accounts.
    state: Mutex<State>,
}

impl Registry {
    /// An empty registry over `hub`.
    pub fn new(read_index: Arc<ReadIndex>, refresh: RefreshSettings) -> Registry {
        Registry {
            read_index,
            refresh,
            state: Mutex::new(State {
                accounts: BTreeMap::new(),
                next_id: 1,
                changes: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent before it can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The read side.
    pub fn read_index(&self) -> &Arc<ReadIndex> {
        &self.read_index
    }

    /// Where `id` is defined, if it exists.
    pub fn origin(&self, id: &AccountId) -> Option<Origin> {
        self.lock().accounts.get(id).map(|r| r.origin)
    }

    /// The definition of `id`, if it exists.
    pub fn spec(&self, id: &AccountId) -> Option<(AccountSpec, Origin)> {
        self.lock()
            .accounts
            .get(id)
            .map(|r| (r.spec.clone(), r.origin))
    }

    /// One page of the authorizers of `component_appid`, in appid order: those after `after`
    /// (exclusive) that `keep` accepts, at most `limit`, and whether
    /// more may follow. Walks only the page (the accounts are ordered), never every account.
    pub fn authorizers_page(
        &self,
        component_appid: &str,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&AuthorizerSpec) -> bool,
    ) -> (Vec<AuthorizerSpec>, bool) {
        let id = |a: &str| AccountId::authorizer(component_appid, a);
        self.children_page(
            (id(""), after.map(id)),
            (Kind::Component, component_appid),
            limit,
            |spec| spec.as_authorizer().filter(|a| keep(a)),
        )
    }

    /// One page of the corps that installed `suite_id`, in corpid order, as
    /// [`Self::authorizers_page`] pages a platform's authorizers.
    pub fn auth_corps_page(
        &self,
        suite_id: &str,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&AuthCorpSpec) -> bool,
    ) -> (Vec<AuthCorpSpec>, bool) {
        let id = |c: &str| AccountId::auth_corp(suite_id, c);
        self.children_page(
            (id(""), after.map(id)),
            (Kind::Suite, suite_id),
            limit,
            |spec| spec.as_auth_corp().filter(|c| keep(c)),
        )
    }

    /// One page of the children of `parent`: from the first id (or after the second), those
    /// `pick` returns, at most `limit`, and whether more may follow.
    fn children_page<T: Clone>(
        &self,
        (first, after): (AccountId, Option<AccountId>),
        parent: (Kind, &str),
        limit: usize,
        pick: impl Fn(&AccountSpec) -> Option<&T>,
    ) -> (Vec<T>, bool) {
        use std::ops::Bound;
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(first),
        };
        let state = self.lock();
        let mut page = Vec::new();
        let mut more = false;
        for (account, registered) in state.accounts.range((start, Bound::Unbounded)) {
            if account.parent() != Some(parent) {
                break;
            }
            let Some(child) = pick(&registered.spec) else {
                continue;
            };
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(child.clone());
        }
        (page, more)
    }

    /// Whether `appid` is a platform's component appid or one of its authorizers' appids: such an
    /// appid cannot also be added as an app of its own (its tokens and grants would be two
    /// things under one name).
    pub fn is_platform_appid(&self, appid: &str) -> bool {
        self.lock()
            .accounts
            .keys()
            .any(|id| id.kind() != Kind::App && id.wechat_appid() == Some(appid))
    }

    /// The ids of every suite, from the file or put at runtime. Walks the suites only (the
    /// accounts are ordered by kind first).
    pub fn suite_ids(&self) -> Vec<String> {
        self.lock()
            .accounts
            .range(AccountId::suite("")..)
            .map_while(|(id, _)| match id {
                AccountId::Suite { suite_id } => Some(suite_id.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many times an account was put so far: a mark to take before reading the store's
    /// accounts. An account put after the mark may be missing from what was read because it was
    /// written after the read, not because it was removed. Removals do not move it: an account
    /// removed here after the mark is absent from the registry, and a resync reads such an
    /// account's definition again before putting it back.
    pub fn changes(&self) -> u64 {
        self.lock().changes
    }

    /// Whether `id` exists and was last put after `mark` (from [`Registry::changes`]).
    pub fn put_after(&self, id: &AccountId, mark: u64) -> bool {
        self.lock()
            .accounts
            .get(id)
            .is_some_and(|r| r.changed_at > mark)
    }

    /// Every account whose last put came no later than `mark` (from [`Registry::changes`]), with
    /// where it is defined.
    pub fn accounts_put_by(&self, mark: u64) -> Vec<(AccountId, Origin)> {
        self.lock()
            .accounts
            .iter()
            .filter(|(_, r)| r.changed_at <= mark)
            .map(|(id, r)| (id.clone(), r.origin))
            .collect()
    }

    /// The credentials of `id`, its access token first.
    pub fn credentials_of(&self, id: &AccountId) -> Vec<Arc<Credential>> {
        self.lock()
            .accounts
            .get(id)
            .map(|r| r.credentials.clone())
            .unwrap_or_default()
    }

    /// Makes room for `accounts` more accounts in the read index at once (a start that registers
    /// every stored account), rather than growing it step by step.
    pub fn reserve(&self, accounts: usize) {
        self.read_index.reserve(accounts);
    }

    /// Adds `spec`, or changes it in place: credentials it keeps keep their handles (and so their
    /// tokens), the ones it drops are removed, new ones are added.
    pub fn upsert(&self, spec: AccountSpec, origin: Origin) -> Diff {
        let id = spec.id();
        let wanted = spec.credentials(&self.refresh, origin);
        let mut diff = Diff::default();
        let mut state = self.lock();
        let mut old: BTreeMap<_, Arc<Credential>> = state
            .accounts
            .remove(&id)
            .map(|r| {
                r.credentials
                    .into_iter()
                    .map(|c| (c.key.clone(), c))
                    .collect()
            })
            .unwrap_or_default();
        let mut credentials = Vec::with_capacity(wanted.len());
        for (key, credential_spec) in wanted {
            match old.remove(&key) {
                Some(existing) => {
                    let before = existing.spec();
                    let changed = before.source != credential_spec.source
                        || before.plan != credential_spec.plan
                        || before.origin != credential_spec.origin;
                    if changed {
                        existing.set_spec(credential_spec);
                        diff.changed.push(existing.clone());
                    }
                    credentials.push(existing);
                }
                None => {
                    let handle = Arc::new(Credential::new(state.next_id, key, credential_spec));
                    state.next_id += 1;
                    diff.added.push(handle.clone());
                    credentials.push(handle);
                }
            }
        }
        for (_, dropped) in old {
            dropped.retire();
            self.read_index.forget(&dropped);
            diff.removed.push(dropped);
        }
        self.read_index.set_revoked(&id, spec.is_revoked());
        let mut all = credentials.iter();
        match all.next() {
            Some(access_token) => {
                let (tickets, others): (Vec<_>, Vec<_>) =
                    all.partition(|c| c.key.role.ticket_name().is_some());
                let tickets = tickets
                    .into_iter()
                    .filter_map(|c| Some((c.key.role.ticket_name()?, c.clone())))
                    .collect();
                self.read_index.put_account(
                    &id,
                    AccountEntry {
                        access_token: access_token.clone(),
                        tickets,
                        others: others.into_iter().cloned().collect(),
                    },
                );
            }
            None => self.read_index.remove_account(&id),
        }
        state.changes += 1;
        let changed_at = state.changes;
        state.accounts.insert(
            id,
            Box::new(Registered {
                spec,
                origin,
                credentials,
                changed_at,
            }),
        );
        diff
    }

    /// Removes `id` and its credentials; `None` if it does not exist.
    pub fn remove(&self, id: &AccountId) -> Option<Diff> {
        self.remove_if_put_by(id, u64::MAX)
    }

    /// Removes `id` and its credentials if it was last put no later than `mark` (from
    /// [`Registry::changes`]); `None` if it does not exist or was put since.
    pub fn remove_if_put_by(&self, id: &AccountId, mark: u64) -> Option<Diff> {
        let mut state = self.lock();
        if state.accounts.get(id)?.changed_at > mark {
            return None;
        }
        let registered = state.accounts.remove(id)?;
        self.read_index.remove_account(id);
        self.read_index.set_revoked(id, false);
        for credential in &registered.credentials {
            credential.retire();
            self.read_index.forget(credential);
        }
        Some(Diff {
            removed: registered.credentials,
            ..Diff::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{RefreshOverrides, Secret, TokenMode};
    use crate::kinds::{CredentialKey, Role};
    use crate::token::TicketKind;

    fn app(appid: &str, secret: &str, tickets: &[TicketKind]) -> AccountSpec {
        AccountSpec::App {
            appid: appid.into(),
            secret: Secret::new(secret.into()),
            mode: TokenMode::Stable,
            tickets: tickets.to_vec(),
            refresh: RefreshOverrides::default(),
        }
    }

    fn registry() -> Registry {
        Registry::new(Arc::new(ReadIndex::new()), RefreshSettings::default())
    }

    #[test]
    fn an_added_account_is_found_by_the_read_side_and_by_key() {
        let registry = registry();
        let diff = registry.upsert(app("wx1", "s", &[TicketKind::Jsapi]), Origin::Runtime);
        assert_eq!(diff.added.len(), 2);
        let read_index = registry.read_index();
        let token = read_index.find(&AccountId::app("wx1"), None).unwrap();
        assert_eq!(token.key, CredentialKey::access_token("wx1"));
        assert!(read_index
            .find(&AccountId::app("wx1"), Some("jsapi"))
            .is_ok());
        assert!(read_index
            .find(&AccountId::app("wx1"), Some("wx_card"))
            .is_err());
        assert!(read_index
            .by_key(&CredentialKey::access_token("wx1"))
            .is_some_and(|c| c.id == token.id));
    }

    #[test]
    fn changing_an_account_keeps_the_handles_it_keeps_and_retires_the_rest() {
        let registry = registry();
        registry.upsert(app("wx1", "s", &[TicketKind::Jsapi]), Origin::Runtime);
        let token = registry
            .read_index()
            .find(&AccountId::app("wx1"), None)
            .unwrap();
        let ticket = registry
            .read_index()
            .find(&AccountId::app("wx1"), Some("jsapi"))
            .unwrap();
        let diff = registry.upsert(
            app("wx1", "new-secret", &[TicketKind::WxCard]),
            Origin::Runtime,
        );
        assert_eq!(diff.added.len(), 1);
        assert_eq!(diff.removed.len(), 1);
        assert_eq!(diff.changed.len(), 1);
        assert!(ticket.is_retired());
        assert!(!token.is_retired());
        let after = registry
            .read_index()
            .find(&AccountId::app("wx1"), None)
            .unwrap();
        assert_eq!(after.id, token.id);
        assert!(matches!(
            &after.spec().source,
            Source::AppToken { secret, .. } if secret.expose() == "new-secret"
        ));
        assert!(registry
            .read_index()
            .by_key(&CredentialKey::new(
                AccountId::app("wx1"),
                Role::Ticket(TicketKind::Jsapi)
            ))
            .is_none());
    }

    #[test]
    fn a_removed_account_is_gone_everywhere_and_ids_are_never_reused() {
        let registry = registry();
        registry.upsert(app("wx1", "s", &[]), Origin::Runtime);
        let first = registry
            .read_index()
            .find(&AccountId::app("wx1"), None)
            .unwrap();
        let diff = registry
            .remove(&AccountId::App {
                appid: "wx1".into(),
            })
            .unwrap();
        assert_eq!(diff.removed.len(), 1);
        assert!(first.is_retired());
        assert!(!registry.read_index().contains(&AccountId::app("wx1")));
        assert!(registry.read_index().is_empty());
        registry.upsert(app("wx1", "s", &[]), Origin::Runtime);
        let second = registry
            .read_index()
            .find(&AccountId::app("wx1"), None)
            .unwrap();
        assert_ne!(first.id, second.id);
        assert!(registry
            .remove(&AccountId::App {
                appid: "wx9".into()
            })
            .is_none());
    }
}
