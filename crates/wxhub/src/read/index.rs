//! The read index: every credential, found by account id, by key, and by value, in lock-free
//! concurrent maps that the registry changes one account at a time. Announces each new
//! generation to watchers.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::lives::Lives;
use super::{Change, Credential, Previous, Served, OVERLAP};
use crate::kinds::{AccountId, CredentialKey, Kind, Role};
use crate::token::Timestamp;

/// How many generation changes a slow subscriber of [`ReadIndex::subscribe`] may fall behind before it
/// is told it lagged (the watch stream then drops that connection).
const CHANGES_BUFFER: usize = 1024;

/// The credentials of one account as the read side finds them.
pub struct AccountEntry {
    /// Its access token.
    pub access_token: Arc<Credential>,
    /// Its JS-SDK tickets, by WeChat's name of the kind (`jsapi`, `wx_card`, `agent_config`).
    pub tickets: Vec<(&'static str, Arc<Credential>)>,
    /// Credentials that are never served by the account routes but must be found by key (a
    /// platform's verify ticket, an authorizer's refresh token).
    pub others: Vec<Arc<Credential>>,
}

impl AccountEntry {
    /// The access token (`None`) or the ticket of that kind.
    pub fn credential(&self, ticket: Option<&str>) -> Result<&Arc<Credential>, Missing> {
        match ticket {
            None => Ok(&self.access_token),
            Some(kind) => self
                .tickets
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, credential)| credential)
                .ok_or(Missing::Ticket),
        }
    }
}

/// Why a look-up found nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// No such account.
    Account,
    /// The account has no such ticket.
    Ticket,
}

/// A credential as the key of [`ReadIndex`]'s `by_key` index: hashed and compared by its
/// [`CredentialKey`], which it lends for lookups, so the index holds no copy of the key (at
/// 100,000 authorizers, 200,000 copies of two appids each).
struct ByKey(Arc<Credential>);

impl std::borrow::Borrow<CredentialKey> for ByKey {
    fn borrow(&self) -> &CredentialKey {
        &self.0.key
    }
}

impl std::hash::Hash for ByKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must hash as the borrowed key does, so that lookups by `&CredentialKey` find it.
        self.0.key.hash(state);
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &ByKey) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for ByKey {}

/// The read-side index of every credential.
pub struct ReadIndex {
    /// Every account, of every kind, by its id.
    accounts: papaya::HashMap<AccountId, Arc<AccountEntry>>,
    /// Every credential by key, for the paths that start from a key (startup, the change feed).
    by_key: papaya::HashMap<ByKey, Arc<Credential>>,
    /// Accounts that withdrew their authorization (authorizers): reads answer 410, not 404.
    revoked: papaya::HashMap<AccountId, ()>,
    /// Access tokens by value (the current and the previous one of each credential): the gateway
    /// learns from a call's `access_token` whose token it is, and whether the hub serves it.
    by_value: papaya::HashMap<Arc<str>, Arc<Credential>>,
    /// Announces every new generation served (the watch stream listens).
    changes: broadcast::Sender<Change>,
    /// Served expiries and configured credentials, kept as they change so that `/metrics` and
    /// `/readyz` never walk every credential.
    lives: Lives,
}

impl Default for ReadIndex {
    fn default() -> Self {
        ReadIndex {
            accounts: papaya::HashMap::default(),
            by_key: papaya::HashMap::default(),
            revoked: papaya::HashMap::default(),
            by_value: papaya::HashMap::default(),
            changes: broadcast::channel(CHANGES_BUFFER).0,
            lives: Lives::default(),
        }
    }
}

impl ReadIndex {
    /// An empty index; the registry fills it.
    pub fn new() -> ReadIndex {
        ReadIndex::default()
    }

    /// Serves `served` for `credential` (only the engine calls this, whenever what it serves
    /// changes: a new token from any instance, or a new refresh plan). `fetched_at` is when the new
    /// value was issued: the value it replaces stays acceptable for [`OVERLAP`] after that. A new
    /// generation is announced to [`ReadIndex::subscribe`]rs, stamped `now` (a watcher resumes
    /// after the last stamp it saw).
    pub fn publish(
        &self,
        credential: &Arc<Credential>,
        mut served: Served,
        fetched_at: Timestamp,
        now: Timestamp,
    ) {
        let old = credential.slot.load();
        let mut dropped = None;
        served.published_at = match &old {
            Some(old) if old.generation == served.generation => old.published_at,
            _ => now,
        };
        match &old {
            Some(old) if *old.value == *served.value => served.previous = old.previous.clone(),
            Some(old) => {
                served.previous = Some(Previous {
                    value: old.value.clone(),
                    until: fetched_at.plus(OVERLAP).min(old.expires_at),
                });
                dropped = old.previous.as_ref().map(|p| p.value.clone());
            }
            None => {}
        }
        let generation = served.generation;
        let new_value = served.value.clone();
        let expires_at = served.expires_at;
        self.lives.serve(
            credential,
            old.as_ref().map(|old| old.expires_at),
            expires_at,
            || credential.serve(Arc::new(served)),
        );
        if is_access_token(&credential.key) {
            let by_value = self.by_value.pin();
            by_value.insert(new_value.clone(), credential.clone());
            if let Some(dropped) = dropped.filter(|d| **d != *new_value) {
                by_value
                    .remove_if(&dropped, |_, c| c.id == credential.id)
                    .ok();
            }
        }
        if old.as_ref().is_none_or(|old| old.generation != generation) {
            // No subscriber is not an error: nobody is watching.
            let _ = self.changes.send(Change {
                credential: credential.clone(),
                generation,
            });
        }
    }

    /// The access-token credential `value` belongs to, if the hub serves it at `now` (the current
    /// value, or the previous one within its overlap).
    pub fn serving(&self, value: &str, now: Timestamp) -> Option<Arc<Credential>> {
        let credential = self.by_value.pin().get(value).cloned()?;
        let accepted = !credential.is_retired()
            && credential
                .slot
                .peek()
                .as_ref()
                .is_some_and(|served| served.accepts(value, now));
        accepted.then_some(credential)
    }

    /// Every new generation served from now on. A receiver that falls more than a buffer behind
    /// gets `Lagged` and must resynchronise from the slots.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Runs `f` on `account`'s entry, if it exists, without taking a lock or a reference count.
    pub fn with_account<R>(
        &self,
        account: &AccountId,
        f: impl FnOnce(&AccountEntry) -> R,
    ) -> Option<R> {
        self.accounts.pin().get(account).map(|entry| f(entry))
    }

    /// Whether the account withdrew its authorization.
    pub fn is_revoked(&self, account: &AccountId) -> bool {
        self.revoked.pin().contains_key(account)
    }

    /// Marks an account revoked or not (the registry calls this).
    pub(crate) fn set_revoked(&self, account: &AccountId, revoked: bool) {
        let map = self.revoked.pin();
        if revoked {
            map.insert(account.clone(), ());
        } else {
            map.remove(account);
        }
    }

    /// The accounts of `kind` whose first id part is `first` (the agents of one corp), unordered:
    /// the gateway's `gettoken` picks the one a consumer key is granted. Walks every account:
    /// `gettoken` is asked once per token lifetime by an SDK, never per API call.
    pub fn accounts_under(&self, kind: Kind, first: &str) -> Vec<AccountId> {
        self.accounts
            .pin()
            .keys()
            .filter(|id| id.kind() == kind && id.parts().0 == first)
            .cloned()
            .collect()
    }

    /// Whether `account` exists.
    pub fn contains(&self, account: &AccountId) -> bool {
        self.with_account(account, |_| ()).is_some()
    }

    /// The handle of `account`'s access token (`None`) or ticket.
    pub fn find(
        &self,
        account: &AccountId,
        ticket: Option<&str>,
    ) -> Result<Arc<Credential>, Missing> {
        self.with_account(account, |entry| entry.credential(ticket).cloned())
            .unwrap_or(Err(Missing::Account))
    }

    /// A credential by key.
    pub fn by_key(&self, key: &CredentialKey) -> Option<Arc<Credential>> {
        self.by_key.pin().get(key).cloned()
    }

    /// Every credential (unordered).
    pub fn credentials(&self) -> Vec<Arc<Credential>> {
        self.by_key.pin().values().cloned().collect()
    }

    /// Calls `f` on every credential (unordered), without taking a lock.
    pub fn for_each(&self, mut f: impl FnMut(&Credential)) {
        for credential in self.by_key.pin().values() {
            f(credential);
        }
    }

    /// The earliest expiry of a served token of each kind, in kind order (for the metrics).
    pub fn earliest_expiry_by_kind(&self) -> Vec<(&'static str, Timestamp)> {
        self.lives.earliest_by_kind()
    }

    /// The credentials of the configuration file (a set bounded by the file, whatever the
    /// number of runtime credentials), in file order.
    pub fn configured(&self) -> Vec<Arc<Credential>> {
        self.lives.configured()
    }

    /// How many credentials there are.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Whether every credential defined in the configuration file has a usable token at `now`
    /// (for `/readyz`: runtime additions never take an instance out of a balancer). A value that
    /// expired less than `rollover` ago still counts: its successor is on its way (WeChat issues
    /// a re-sent value's successor only once it died), and readiness must not flap on every
    /// cluster member at each expiry.
    pub fn all_usable(&self, now: Timestamp, rollover: std::time::Duration) -> bool {
        self.lives.all_configured(|c| {
            c.slot
                .peek()
                .as_ref()
                .is_some_and(|s| s.expires_at.plus(rollover) > now)
        })
    }

    /// Makes room for `accounts` more accounts and their credentials (one or two each, most
    /// often: an access token, and a refresh token or tickets), so that registering them does
    /// not grow the maps one copy at a time.
    pub(crate) fn reserve(&self, accounts: usize) {
        self.accounts.pin().reserve(accounts);
        self.by_key.pin().reserve(accounts.saturating_mul(2));
        self.by_value.pin().reserve(accounts);
    }

    /// Publishes (or replaces) an account's entry and its credentials (the registry calls this).
    pub(crate) fn put_account(&self, account: &AccountId, entry: AccountEntry) {
        {
            let by_key = self.by_key.pin();
            for credential in std::iter::once(&entry.access_token)
                .chain(entry.tickets.iter().map(|(_, ticket)| ticket))
                .chain(&entry.others)
            {
                by_key.insert(ByKey(credential.clone()), credential.clone());
                self.lives.register(credential);
            }
        }
        self.accounts.pin().insert(account.clone(), Arc::new(entry));
    }

    /// Removes an account's entry (its credentials are removed with [`ReadIndex::forget`]).
    pub(crate) fn remove_account(&self, account: &AccountId) {
        self.accounts.pin().remove(account);
    }

    /// Removes a credential from the by-key index, if this very handle is there.
    pub(crate) fn forget(&self, credential: &Credential) {
        self.lives.forget(credential);
        if let Some(served) = credential.slot.load() {
            let by_value = self.by_value.pin();
            let previous = served.previous.as_ref().map(|p| p.value.clone());
            for value in std::iter::once(served.value.clone()).chain(previous) {
                by_value
                    .remove_if(&value, |_, c| c.id == credential.id)
                    .ok();
            }
        }
        let by_key = self.by_key.pin();
        if by_key
            .get(&credential.key)
            .is_some_and(|c| c.id == credential.id)
        {
            by_key.remove(&credential.key);
        }
    }
}

/// Whether calls are authenticated with this credential's value (`access_token=`), as opposed to
/// a ticket, which is only ever signed.
fn is_access_token(key: &CredentialKey) -> bool {
    key.role == Role::AccessToken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{CredentialSpec, Origin};
    use crate::read::CredentialId;
    use crate::token::Token;
    use std::time::Duration;

    fn app_credential(id: CredentialId, appid: &str) -> Arc<Credential> {
        let spec = CredentialSpec {
            source: crate::kinds::Source::AppToken {
                appid: appid.into(),
                secret: crate::configuration::Secret::new("s".to_string()),
                mode: crate::configuration::TokenMode::Legacy,
            },
            fetched_with: vec![],
            pushed: false,
            durable: false,
            plan: crate::plan::Plan::new(&Default::default()),
            origin: Origin::Config,
        };
        let key = CredentialKey::access_token(appid);
        Arc::new(Credential::new(id, key, spec))
    }

    fn publish(
        read_index: &ReadIndex,
        credential: &Arc<Credential>,
        value: &str,
        generation: u64,
        at: i64,
    ) {
        let token = Token {
            value: value.into(),
            expires_at: Timestamp(at + 7_200_000),
            fetched_at: Timestamp(at),
            generation,
        };
        read_index.publish(
            credential,
            Served::new("access_token", &token, token.expires_at),
            token.fetched_at,
            token.fetched_at,
        );
    }

    #[test]
    fn the_previous_token_is_served_for_its_overlap_and_older_ones_are_forgotten() {
        let read_index = ReadIndex::new();
        let credential = app_credential(1, "wx1");
        let mut changes = read_index.subscribe();
        publish(&read_index, &credential, "t1", 1, 1_000_000);
        publish(&read_index, &credential, "t2", 2, 2_000_000);
        let overlap_end = 2_000_000 + OVERLAP.as_millis() as i64;
        assert!(read_index.serving("t2", Timestamp(2_000_001)).is_some());
        assert!(read_index
            .serving("t1", Timestamp(overlap_end - 1))
            .is_some());
        assert!(read_index.serving("t1", Timestamp(overlap_end)).is_none());
        assert!(read_index.serving("never", Timestamp(2_000_001)).is_none());
        // A re-plan of the same generation keeps the previous value.
        publish(&read_index, &credential, "t2", 2, 2_000_000);
        assert!(read_index.serving("t1", Timestamp(2_000_001)).is_some());
        // A third value forgets the first.
        publish(&read_index, &credential, "t3", 3, 3_000_000);
        assert!(read_index.serving("t1", Timestamp(3_000_001)).is_none());
        assert!(read_index.serving("t2", Timestamp(3_000_001)).is_some());
        // Each new generation is announced once; a re-plan is not.
        let announced: Vec<u64> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| c.generation)
            .collect();
        assert_eq!(announced, vec![1, 2, 3]);
        // A removed credential's tokens are no longer served.
        credential.retire();
        read_index.forget(&credential);
        assert!(read_index.serving("t3", Timestamp(3_000_001)).is_none());
    }

    fn put(read_index: &ReadIndex, credential: &Arc<Credential>, appid: &str) {
        read_index.put_account(
            &AccountId::app(appid),
            AccountEntry {
                access_token: credential.clone(),
                tickets: vec![],
                others: vec![],
            },
        );
    }

    #[test]
    fn the_earliest_expiry_and_the_configured_credentials_follow_what_is_served() {
        let read_index = ReadIndex::new();
        let first = app_credential(1, "wx1");
        let second = app_credential(2, "wx2");
        put(&read_index, &first, "wx1");
        put(&read_index, &second, "wx2");
        let ids = |read_index: &ReadIndex| -> Vec<CredentialId> {
            read_index.configured().iter().map(|c| c.id).collect()
        };
        assert_eq!(ids(&read_index), [1, 2]);
        assert!(
            read_index.earliest_expiry_by_kind().is_empty(),
            "nothing served yet"
        );
        publish(&read_index, &first, "a1", 1, 1_000_000);
        publish(&read_index, &second, "b1", 1, 2_000_000);
        let earliest = |read_index: &ReadIndex| read_index.earliest_expiry_by_kind();
        assert_eq!(
            earliest(&read_index),
            [("access_token", Timestamp(8_200_000))]
        );
        // A new token moves the credential's expiry: the other one is now the earliest.
        publish(&read_index, &first, "a2", 2, 3_000_000);
        assert_eq!(
            earliest(&read_index),
            [("access_token", Timestamp(9_200_000))]
        );
        assert!(read_index.all_usable(Timestamp(9_000_000), Duration::ZERO));
        assert!(!read_index.all_usable(Timestamp(9_300_000), Duration::ZERO));
        // A removed credential leaves both; a publish that races its removal is not kept.
        second.retire();
        read_index.forget(&second);
        publish(&read_index, &second, "b2", 2, 4_000_000);
        assert_eq!(ids(&read_index), [1]);
        assert_eq!(
            earliest(&read_index),
            [("access_token", Timestamp(10_200_000))]
        );
        first.retire();
        read_index.forget(&first);
        assert!(earliest(&read_index).is_empty());
        assert!(read_index.configured().is_empty());
    }
}
