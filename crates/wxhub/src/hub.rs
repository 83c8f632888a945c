//! The read side: what consumers are served, at memory speed.
//!
//! Credentials come and go at runtime (the registry adds and removes them), so the index is a
//! set of concurrent maps whose reads take no lock: an account's entry is found by its appid (or
//! corpid and agentid) without building a key, and holds the account's credentials. Each
//! credential has one [`Slot`] holding an `Arc<Served>` that the engine swaps atomically when the
//! token (or its refresh plan) changes. A read is: two hash lookups, one atomic load, one small
//! buffer for the body. It never waits on the store, the engine or WeChat. Adding or removing an
//! account touches only that account's entries.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::broadcast;

use crate::account::{CredentialSpec, Origin};
use crate::credential::{CredentialKey, Timestamp, Token};

/// How long WeChat keeps accepting an access token after a newer one was issued for the same
/// account (docs/wechat.md): a token handed out before a refresh still works this long after it.
pub const OVERLAP: Duration = Duration::from_secs(300);

/// How many generation changes a slow subscriber of [`Hub::subscribe`] may fall behind before it
/// is told it lagged (the watch stream then drops that connection).
const CHANGES_BUFFER: usize = 1024;

/// A credential's number: unique for the life of the process, never reused, so that a handle of a
/// removed credential can never be mistaken for a credential added later under the same key.
pub type CredentialId = u64;
/// A token as consumers receive it: the value plus the parts of the JSON body that do not change
/// between requests, rendered once per token generation and refresh plan.
pub struct Served {
    /// The token or ticket value (needed to sign JS-SDK configurations and compare reports).
    pub value: Arc<str>,
    /// Per-key generation of this value.
    pub generation: u64,
    /// When WeChat stops accepting it.
    pub expires_at: Timestamp,
    /// Until when a consumer may keep using it without asking again (docs/architecture.md#what-consumers-are-told, "what consumers
    /// are told"): never after `expires_at`, and shortly after the hub's next planned refresh.
    pub serve_until: Timestamp,
    /// `{"access_token":"…","expires_in":` — everything before the one per-request number.
    body_prefix: Bytes,
    /// `,"expires_at":"…","generation":N}`.
    body_suffix: Bytes,
    /// The value served before this one, while WeChat may still accept it: the gateway forwards
    /// calls made with it (a consumer may hold it for a few more seconds) instead of refusing them.
    pub previous: Option<Previous>,
    /// When this instance started serving this generation (set by [`Hub::publish`]): the watch
    /// stream's event ids, so that a watcher resuming with `Last-Event-ID` is sent only what
    /// changed since.
    pub published_at: Timestamp,
}

/// A value that was replaced, and until when WeChat keeps accepting it.
#[derive(Clone, Debug)]
pub struct Previous {
    /// The replaced value.
    pub value: Arc<str>,
    /// The end of its overlap with the new value (never after its own expiry).
    pub until: Timestamp,
}

/// A new generation served for a credential, as [`Hub::subscribe`] announces it.
#[derive(Clone)]
pub struct Change {
    /// The credential whose slot now holds the new generation.
    pub credential: Arc<Credential>,
    /// The generation now served.
    pub generation: u64,
}

impl Served {
    /// Renders a token for serving under the JSON field `field` (`access_token` or `ticket`).
    pub fn new(field: &str, token: &Token, serve_until: Timestamp) -> Served {
        let value_json = serde_json::Value::String(token.value.clone()).to_string();
        let body_prefix = format!("{{\"{field}\":{value_json},\"expires_in\":");
        let body_suffix = format!(
            ",\"expires_at\":\"{}\",\"generation\":{}}}\n",
            token.expires_at.to_rfc3339(),
            token.generation
        );
        Served {
            value: Arc::from(token.value.as_str()),
            generation: token.generation,
            expires_at: token.expires_at,
            serve_until: serve_until.min(token.expires_at),
            // Exact-size copies: `format!` leaves up to twice the length reserved, and one
            // rendered token per credential is kept for its whole life.
            body_prefix: Bytes::copy_from_slice(body_prefix.as_bytes()),
            body_suffix: Bytes::copy_from_slice(body_suffix.as_bytes()),
            previous: None,
            published_at: Timestamp(0),
        }
    }

    /// Whether WeChat should still accept `value` as this credential's at `now`: the value
    /// served, before its expiry, or the previous one within its overlap.
    pub fn accepts(&self, value: &str, now: Timestamp) -> bool {
        (*self.value == *value && self.expires_at > now)
            || self
                .previous
                .as_ref()
                .is_some_and(|p| *p.value == *value && p.until > now)
    }

    /// Whole seconds a consumer may keep this token from `now`, rounded down (so never more than
    /// its true remaining life; 0 means "valid, but ask again before reusing it"), or `None` once
    /// it has expired.
    pub fn expires_in(&self, now: Timestamp) -> Option<u64> {
        if self.expires_at <= now {
            return None;
        }
        Some(self.serve_until.since(now).as_secs())
    }

    /// The JSON body for a request at `now`, or `None` once the token has expired.
    pub fn render(&self, now: Timestamp) -> Option<Bytes> {
        let expires_in = self.expires_in(now)?;
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(expires_in);
        let mut body =
            BytesMut::with_capacity(self.body_prefix.len() + digits.len() + self.body_suffix.len());
        body.put_slice(&self.body_prefix);
        body.put_slice(digits.as_bytes());
        body.put_slice(&self.body_suffix);
        Some(body.freeze())
    }
}

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

    /// Whether it is an access token of the configuration file renewed in stable mode (the ones
    /// with a force budget).
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

/// The account a request is about, borrowed from its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Account<'a> {
    /// An official account or mini program.
    App(&'a str),
    /// A Work WeChat app.
    Corp { corpid: &'a str, agentid: &'a str },
    /// A third-party platform (its component token).
    Component(&'a str),
    /// An account that authorized a platform.
    Authorizer {
        component: &'a str,
        authorizer: &'a str,
    },
}

impl<'a> Account<'a> {
    /// A Work WeChat app, from the `{corpid}` and `{agentid}` path segments.
    pub fn corp(corpid: &'a str, agentid: &'a str) -> Account<'a> {
        Account::Corp { corpid, agentid }
    }

    /// The account a credential belongs to (what a consumer must be granted to see it).
    pub fn of_key(key: &'a CredentialKey) -> Account<'a> {
        match key {
            CredentialKey::AccessToken { appid } | CredentialKey::Ticket { appid, .. } => {
                Account::App(appid)
            }
            CredentialKey::CorpToken { corpid, agentid }
            | CredentialKey::CorpTicket {
                corpid, agentid, ..
            } => Account::Corp { corpid, agentid },
            CredentialKey::ComponentVerifyTicket { component_appid }
            | CredentialKey::ComponentToken { component_appid } => {
                Account::Component(component_appid)
            }
            CredentialKey::AuthorizerRefreshToken {
                component_appid,
                authorizer_appid,
            }
            | CredentialKey::AuthorizerToken {
                component_appid,
                authorizer_appid,
            }
            | CredentialKey::AuthorizerTicket {
                component_appid,
                authorizer_appid,
                ..
            } => Account::Authorizer {
                component: component_appid,
                authorizer: authorizer_appid,
            },
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

/// Key of the Work WeChat map: (corpid, agentid).
type CorpAgent = (Box<str>, Box<str>);

/// A borrowed (corpid, agentid) that finds a [`CorpAgent`] without allocating: it hashes exactly
/// as the tuple does.
struct CorpRef<'a>(&'a str, &'a str);

impl Hash for CorpRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl papaya::Equivalent<CorpAgent> for CorpRef<'_> {
    fn equivalent(&self, key: &CorpAgent) -> bool {
        *key.0 == *self.0 && *key.1 == *self.1
    }
}

/// A credential as the key of [`Hub`]'s `by_key` index: hashed and compared by its
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
pub struct Hub {
    /// Official accounts and mini programs by appid.
    apps: papaya::HashMap<Box<str>, Arc<AccountEntry>>,
    /// Work WeChat apps by (corpid, agentid).
    corps: papaya::HashMap<CorpAgent, Arc<AccountEntry>>,
    /// Every credential by key, for the paths that start from a key (startup, the change feed).
    by_key: papaya::HashMap<ByKey, Arc<Credential>>,
    /// Third-party platforms by component appid.
    components: papaya::HashMap<Box<str>, Arc<AccountEntry>>,
    /// Authorizers by (component appid, authorizer appid).
    authorizers: papaya::HashMap<CorpAgent, Arc<AccountEntry>>,
    /// Authorizers that withdrew their authorization: reads answer 410, not 404.
    revoked: papaya::HashMap<CorpAgent, ()>,
    /// Access tokens by value (the current and the previous one of each credential): the gateway
    /// learns from a call's `access_token` whose token it is, and whether the hub serves it.
    by_value: papaya::HashMap<Arc<str>, Arc<Credential>>,
    /// Announces every new generation served (the watch stream listens).
    changes: broadcast::Sender<Change>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            apps: papaya::HashMap::default(),
            corps: papaya::HashMap::default(),
            by_key: papaya::HashMap::default(),
            components: papaya::HashMap::default(),
            authorizers: papaya::HashMap::default(),
            revoked: papaya::HashMap::default(),
            by_value: papaya::HashMap::default(),
            changes: broadcast::channel(CHANGES_BUFFER).0,
        }
    }
}

impl Hub {
    /// An empty index; the registry fills it.
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Serves `served` for `credential` (only the engine calls this, whenever what it serves
    /// changes: a new token from any instance, or a new refresh plan). `fetched_at` is when the new
    /// value was issued: the value it replaces stays acceptable for [`OVERLAP`] after that. A new
    /// generation is announced to [`Hub::subscribe`]rs.
    pub fn publish(&self, credential: &Arc<Credential>, mut served: Served, fetched_at: Timestamp) {
        let old = credential.slot.load();
        let mut dropped = None;
        served.published_at = match &old {
            Some(old) if old.generation == served.generation => old.published_at,
            _ => Timestamp::now(),
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
        credential.serve(Arc::new(served));
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
        account: Account<'_>,
        f: impl FnOnce(&AccountEntry) -> R,
    ) -> Option<R> {
        match account {
            Account::App(appid) => self.apps.pin().get(appid).map(|entry| f(entry)),
            Account::Corp { corpid, agentid } => self
                .corps
                .pin()
                .get(&CorpRef(corpid, agentid))
                .map(|entry| f(entry)),
            Account::Component(component) => {
                self.components.pin().get(component).map(|entry| f(entry))
            }
            Account::Authorizer {
                component,
                authorizer,
            } => self
                .authorizers
                .pin()
                .get(&CorpRef(component, authorizer))
                .map(|entry| f(entry)),
        }
    }

    /// Whether the authorizer withdrew its authorization of the platform.
    pub fn is_revoked(&self, component: &str, authorizer: &str) -> bool {
        self.revoked
            .pin()
            .contains_key(&CorpRef(component, authorizer))
    }

    /// Marks an authorizer revoked or not (the registry calls this).
    pub(crate) fn set_revoked(&self, component: &str, authorizer: &str, revoked: bool) {
        let map = self.revoked.pin();
        if revoked {
            map.insert((component.into(), authorizer.into()), ());
        } else {
            map.remove(&CorpRef(component, authorizer));
        }
    }

    /// The agentids of `corpid`'s Work WeChat apps, unordered (the gateway's `gettoken` picks the
    /// one a consumer key is granted).
    pub fn agents_of(&self, corpid: &str) -> Vec<Box<str>> {
        self.corps
            .pin()
            .keys()
            .filter(|(c, _)| **c == *corpid)
            .map(|(_, agentid)| agentid.clone())
            .collect()
    }

    /// Whether `account` exists.
    pub fn contains(&self, account: Account<'_>) -> bool {
        self.with_account(account, |_| ()).is_some()
    }

    /// The handle of `account`'s access token (`None`) or ticket.
    pub fn find(
        &self,
        account: Account<'_>,
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
        self.by_key.pin().values().all(|c| {
            c.origin() != Origin::Config
                || c.slot
                    .peek()
                    .as_ref()
                    .is_some_and(|s| s.expires_at.plus(rollover) > now)
        })
    }

    /// Publishes (or replaces) an account's entry and its credentials (the registry calls this).
    pub(crate) fn put_account(&self, account: Account<'_>, entry: AccountEntry) {
        {
            let by_key = self.by_key.pin();
            for credential in std::iter::once(&entry.access_token)
                .chain(entry.tickets.iter().map(|(_, ticket)| ticket))
                .chain(&entry.others)
            {
                by_key.insert(ByKey(credential.clone()), credential.clone());
            }
        }
        let entry = Arc::new(entry);
        match account {
            Account::App(appid) => {
                self.apps.pin().insert(appid.into(), entry);
            }
            Account::Corp { corpid, agentid } => {
                self.corps
                    .pin()
                    .insert((corpid.into(), agentid.into()), entry);
            }
            Account::Component(component) => {
                self.components.pin().insert(component.into(), entry);
            }
            Account::Authorizer {
                component,
                authorizer,
            } => {
                self.authorizers
                    .pin()
                    .insert((component.into(), authorizer.into()), entry);
            }
        }
    }

    /// Removes an account's entry (its credentials are removed with [`Hub::forget`]).
    pub(crate) fn remove_account(&self, account: Account<'_>) {
        match account {
            Account::App(appid) => {
                self.apps.pin().remove(appid);
            }
            Account::Corp { corpid, agentid } => {
                self.corps.pin().remove(&CorpRef(corpid, agentid));
            }
            Account::Component(component) => {
                self.components.pin().remove(component);
            }
            Account::Authorizer {
                component,
                authorizer,
            } => {
                self.authorizers
                    .pin()
                    .remove(&CorpRef(component, authorizer));
            }
        }
    }

    /// Removes a credential from the by-key index, if this very handle is there.
    pub(crate) fn forget(&self, credential: &Credential) {
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
    matches!(
        key,
        CredentialKey::AccessToken { .. }
            | CredentialKey::CorpToken { .. }
            | CredentialKey::ComponentToken { .. }
            | CredentialKey::AuthorizerToken { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(value: &str, expires_at: i64) -> Token {
        Token {
            value: value.into(),
            expires_at: Timestamp(expires_at),
            fetched_at: Timestamp(0),
            generation: 7,
        }
    }

    #[test]
    fn renders_the_contract_shape() {
        let served = Served::new(
            "access_token",
            &token("13_a\"b", 10_000_000),
            Timestamp(5_000_000),
        );
        let body = served.render(Timestamp(1_000_000)).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["access_token"], "13_a\"b");
        assert_eq!(json["expires_in"], 4000);
        assert_eq!(json["expires_at"], "1970-01-01T02:46:40Z");
        assert_eq!(json["generation"], 7);
    }

    #[test]
    fn expires_in_never_exceeds_remaining_life_and_stops_at_expiry() {
        let served = Served::new("ticket", &token("t", 3_500), Timestamp(9_000));
        assert_eq!(served.expires_in(Timestamp(1_000)), Some(2));
        assert_eq!(served.expires_in(Timestamp(3_200)), Some(0));
        assert_eq!(served.expires_in(Timestamp(3_500)), None);
        assert!(served.render(Timestamp(4_000)).is_none());
    }

    fn app_credential(id: CredentialId, appid: &str) -> Arc<Credential> {
        let spec = CredentialSpec {
            source: crate::account::Source::AppToken {
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
        let key = CredentialKey::AccessToken {
            appid: appid.into(),
        };
        Arc::new(Credential::new(id, key, spec))
    }

    fn publish(hub: &Hub, credential: &Arc<Credential>, value: &str, generation: u64, at: i64) {
        let token = Token {
            value: value.into(),
            expires_at: Timestamp(at + 7_200_000),
            fetched_at: Timestamp(at),
            generation,
        };
        hub.publish(
            credential,
            Served::new("access_token", &token, token.expires_at),
            token.fetched_at,
        );
    }

    #[test]
    fn the_previous_token_is_served_for_its_overlap_and_older_ones_are_forgotten() {
        let hub = Hub::new();
        let credential = app_credential(1, "wx1");
        let mut changes = hub.subscribe();
        publish(&hub, &credential, "t1", 1, 1_000_000);
        publish(&hub, &credential, "t2", 2, 2_000_000);
        let overlap_end = 2_000_000 + OVERLAP.as_millis() as i64;
        assert!(hub.serving("t2", Timestamp(2_000_001)).is_some());
        assert!(hub.serving("t1", Timestamp(overlap_end - 1)).is_some());
        assert!(hub.serving("t1", Timestamp(overlap_end)).is_none());
        assert!(hub.serving("never", Timestamp(2_000_001)).is_none());
        // A re-plan of the same generation keeps the previous value.
        publish(&hub, &credential, "t2", 2, 2_000_000);
        assert!(hub.serving("t1", Timestamp(2_000_001)).is_some());
        // A third value forgets the first.
        publish(&hub, &credential, "t3", 3, 3_000_000);
        assert!(hub.serving("t1", Timestamp(3_000_001)).is_none());
        assert!(hub.serving("t2", Timestamp(3_000_001)).is_some());
        // Each new generation is announced once; a re-plan is not.
        let announced: Vec<u64> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| c.generation)
            .collect();
        assert_eq!(announced, vec![1, 2, 3]);
        // A removed credential's tokens are no longer served.
        credential.retire();
        hub.forget(&credential);
        assert!(hub.serving("t3", Timestamp(3_000_001)).is_none());
    }
}
