//! The third-party platform (开放平台 component): what happens when WeChat pushes to the event
//! URL, when a consumer registers an authorizer from the redirect's code, and when an account
//! withdraws. See `docs/platform.md`.
//!
//! The rule that shapes everything here: an authorizer's refresh token cannot be re-created
//! without the account owner, so it is written to the store (compare-and-set, durable) before
//! WeChat's push is acknowledged or the consumer is answered; it is deleted only on revocation.

pub mod receiver;
mod sdk;
mod stand_in;
mod watchdog;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::children::{Children, Pager};
use crate::configuration::{ComponentSettings, MasterKey};
use crate::control::{Control, ControlError};
use crate::engine::{Engine, RefreshError};
use crate::envelope::RecentPushes;
use crate::kinds::authorizer::AuthorizerSpec;
use crate::kinds::{AccountId, CredentialKey, Role};
use crate::read::ReadIndex;
use crate::registry::AccountSpec;
use crate::token::Timestamp;
use crate::upstream::{Authorization, Upstream, UpstreamError};
pub use receiver::{Push, PushKind, Refused};
pub use sdk::{SdkAuthorizer, SdkRefusal};
pub use watchdog::run_watchdogs;

/// Authorizers per `api_get_authorizer_list` page (WeChat's maximum).
const LIST_PAGE: u64 = 500;
/// Local authorizers compared per registry page while looking for revoked ones.
const LOCAL_PAGE: usize = 1000;

/// How many listed authorizers are reconciled at once. Each costs durable writes (its refresh
/// token, its registration): one at a time, each write waited for its own disk sync, and a list
/// of 100,000 spent most of a cold start's CPU on syncs. Side by side, the store's group commit
/// covers a few dozen writes with one sync.
const RECONCILE_CONCURRENCY: usize = 64;

/// What a reconciliation with `api_get_authorizer_list` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncSummary {
    /// Known authorizers whose stored refresh token was missing or stale and was replaced.
    pub recovered: u64,
    /// Authorizers WeChat lists that the hub did not have.
    pub added: u64,
    /// Authorizers the hub had that WeChat no longer lists.
    pub revoked: u64,
}

/// What reconciling one listed authorizer did (counted into a [`SyncSummary`]).
enum Reconciled {
    /// Known, and its stored refresh token was missing or stale: replaced.
    Recovered,
    /// Not known before: registered.
    Added,
    /// Known, with the refresh token WeChat lists.
    Unchanged,
}

/// How long a pushed verify ticket is valid (WeChat: 12 h).
pub const VERIFY_TICKET_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Why a platform operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// No `[[components]]` entry has this appid.
    #[error("no [[components]] entry has component_appid {0:?}")]
    UnknownComponent(String),
    /// The push was refused.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A token could not be obtained, or WeChat refused the call.
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    /// The account could not be stored.
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<UpstreamError> for PlatformError {
    fn from(e: UpstreamError) -> Self {
        PlatformError::Refresh(RefreshError::Upstream(e))
    }
}

/// An authorizer as consumers and operators see it. Never a token value.
#[derive(Clone, Debug, Serialize)]
pub struct AuthorizerView {
    /// The account.
    pub authorizer_appid: String,
    /// `active`, `revoked` or `needs_attention`.
    pub state: &'static str,
    /// When it (last) authorized, RFC 3339.
    pub authorized_at: String,
    /// The permission sets granted.
    pub func_info: Vec<u32>,
    /// When the access token served expires, RFC 3339.
    pub expires_at: Option<String>,
}

/// The platform operations, over the parts they need.
pub struct Platform {
    /// Registers, changes and revokes authorizers; holds the platforms' settings.
    control: Arc<Control>,
    /// Tokens and durable writes.
    engine: Engine,
    /// The read side.
    read_index: Arc<ReadIndex>,
    /// WeChat.
    upstream: Upstream,
    /// The pushes acted on lately, so that a replay within the freshness window is acknowledged
    /// without acting again (an `authorized` push would cost a WeChat call each time).
    recent_pushes: Mutex<RecentPushes>,
    /// The refresh tokens platform SDKs hold in WeChat's place.
    stand_ins: stand_in::StandIns,
}

impl Platform {
    /// The platform operations of one hub, whose `[secrets] master_key` is `master_key`.
    pub fn new(
        control: Arc<Control>,
        engine: Engine,
        read_index: Arc<ReadIndex>,
        upstream: Upstream,
        master_key: Option<&MasterKey>,
    ) -> Self {
        Platform {
            control,
            engine,
            read_index,
            upstream,
            recent_pushes: Mutex::default(),
            stand_ins: stand_in::StandIns::new(master_key),
        }
    }

    fn recent_pushes(&self) -> std::sync::MutexGuard<'_, RecentPushes> {
        self.recent_pushes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn settings(&self, component_appid: &str) -> Result<ComponentSettings, PlatformError> {
        self.control
            .component_settings(component_appid)
            .ok_or_else(|| PlatformError::UnknownComponent(component_appid.to_string()))
    }

    /// Handles one push to the event URL. `Ok` only once what it carries is durably stored.
    pub async fn receive(
        &self,
        component_appid: &str,
        query: &str,
        body: &[u8],
    ) -> Result<(), PlatformError> {
        let settings = self.settings(component_appid)?;
        let push = receiver::open(&settings, query, body, self.engine.now().as_secs())?;
        if self.recent_pushes().contains(&push.signature) {
            tracing::debug!(
                component = component_appid,
                "a replayed push acknowledged again"
            );
            return Ok(());
        }
        let signature = push.signature.clone();
        let acted = self.act_on(component_appid, push).await;
        if acted.is_ok() {
            self.recent_pushes().remember(signature);
        }
        acted
    }

    /// Does what a push says.
    async fn act_on(
        &self,
        component_appid: &str,
        push: receiver::Push,
    ) -> Result<(), PlatformError> {
        match push.kind {
            PushKind::VerifyTicket { ticket } => {
                self.store_verify_ticket(component_appid, ticket, push.create_time)
                    .await
            }
            PushKind::Authorized {
                authorizer_appid,
                authorization_code,
                updated,
            } => {
                let view = self.exchange(component_appid, &authorization_code).await?;
                tracing::info!(
                    component = component_appid,
                    authorizer = %view.authorizer_appid,
                    pushed_for = %authorizer_appid,
                    updated,
                    "authorizer registered from a push"
                );
                Ok(())
            }
            PushKind::Unauthorized { authorizer_appid } => {
                self.revoke(component_appid, &authorizer_appid, push.create_time)
                    .await
            }
            PushKind::Other(info_type) => {
                tracing::info!(
                    component = component_appid,
                    info_type,
                    "push acknowledged, nothing to store"
                );
                Ok(())
            }
        }
    }

    /// Stores a pushed verify ticket unless a push created later is already stored.
    async fn store_verify_ticket(
        &self,
        component_appid: &str,
        ticket: String,
        create_time: i64,
    ) -> Result<(), PlatformError> {
        let created = Timestamp(create_time.saturating_mul(1000));
        let key = CredentialKey::new(AccountId::component(component_appid), Role::PushedTicket);
        let written = self
            .engine
            .write_pushed(
                &key,
                ticket,
                created.plus(VERIFY_TICKET_LIFETIME),
                created,
                |stored| stored.fetched_at < created,
            )
            .await?;
        tracing::debug!(
            component = component_appid,
            ?written,
            "verify ticket pushed"
        );
        if let Some(ticket) = self.read_index.by_key(&key) {
            self.engine.set_warning(&ticket, None);
        }
        if let Ok(token) = self
            .read_index
            .find(&AccountId::component(component_appid), None)
        {
            self.engine.kick(&token);
        }
        Ok(())
    }

    /// A usable component token of `component_appid`.
    async fn component_token(&self, component_appid: &str) -> Result<Arc<str>, PlatformError> {
        let credential = self
            .read_index
            .find(&AccountId::component(component_appid), None)
            .map_err(|_| PlatformError::UnknownComponent(component_appid.to_string()))?;
        Ok(self.engine.usable(&credential).await?)
    }

    /// Calls WeChat with the component token; if WeChat says it is dead, reports it (one
    /// compare-and-refresh) and calls once more.
    async fn with_component_token<T, F, Fut>(
        &self,
        component_appid: &str,
        call: F,
    ) -> Result<T, PlatformError>
    where
        F: Fn(Arc<str>) -> Fut,
        Fut: std::future::Future<Output = Result<T, UpstreamError>>,
    {
        let token = self.component_token(component_appid).await?;
        match call(token.clone()).await {
            Err(UpstreamError::TokenInvalid { .. }) => {
                let credential = self
                    .read_index
                    .find(&AccountId::component(component_appid), None)
                    .map_err(|_| PlatformError::UnknownComponent(component_appid.to_string()))?;
                let fresh = self.engine.invalidate(&credential, &token).await?;
                Ok(call(fresh.served.value.clone()).await?)
            }
            other => Ok(other?),
        }
    }

    /// `api_create_preauthcode`: a code for an authorization link, and its lifetime in seconds.
    pub async fn pre_auth_code(
        &self,
        component_appid: &str,
    ) -> Result<(String, u64), PlatformError> {
        self.settings(component_appid)?;
        let fetched = self
            .with_component_token(component_appid, |token| async move {
                self.upstream
                    .create_pre_auth_code(component_appid, &token)
                    .await
            })
            .await?;
        Ok((fetched.value, fetched.expires_in.as_secs()))
    }

    /// Exchanges an authorization code (from the redirect or an `authorized` push) and registers
    /// the authorizer: its refresh token and access token are written durably first, then its
    /// definition, then it is served and refreshed on every instance.
    pub async fn exchange(
        &self,
        component_appid: &str,
        authorization_code: &str,
    ) -> Result<AuthorizerView, PlatformError> {
        let settings = self.settings(component_appid)?;
        let authorization: Authorization = self
            .with_component_token(component_appid, |token| async move {
                self.upstream
                    .query_auth(component_appid, &token, authorization_code)
                    .await
            })
            .await?;
        let authorizer_appid = authorization.authorizer_appid.clone();
        let now = self.engine.now();
        let key = |refresh: bool| {
            let account = AccountId::authorizer(component_appid, &authorizer_appid);
            let role = if refresh {
                Role::RefreshToken
            } else {
                Role::AccessToken
            };
            CredentialKey::new(account, role)
        };
        if let Some(refresh) = authorization.refresh_token {
            self.engine
                .write_pushed(
                    &key(true),
                    refresh,
                    crate::engine::refresh_token_expiry(now),
                    now,
                    |_| true,
                )
                .await?;
        }
        if let Some(token) = authorization.access_token {
            self.engine
                .write_pushed(
                    &key(false),
                    token.value,
                    now.plus(token.expires_in),
                    now,
                    |_| true,
                )
                .await?;
        }
        let spec = AuthorizerSpec {
            component_appid: component_appid.to_string(),
            authorizer_appid: authorizer_appid.clone(),
            tickets: settings.authorizer_tickets.clone(),
            refresh: settings.refresh,
            func_info: authorization.func_info.clone(),
            authorized_at: now.as_secs(),
            revoked: false,
        };
        self.control
            .put_child(AccountSpec::Authorizer(spec.clone()))
            .await?;
        Ok(self.view(&spec))
    }

    /// An `unauthorized` push: the authorizer stops being refreshed and served (410), and its
    /// tokens, the refresh token included, are deleted. A push created before the authorizer's
    /// latest authorization is stale and changes nothing.
    async fn revoke(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        create_time: i64,
    ) -> Result<(), PlatformError> {
        let id = AccountId::authorizer(component_appid, authorizer_appid);
        let Some(spec) = self.authorizer(&id) else {
            tracing::info!(
                component = component_appid,
                authorizer = authorizer_appid,
                "unauthorized push for an unknown authorizer; nothing to revoke"
            );
            return Ok(());
        };
        if spec.revoked || (create_time > 0 && create_time < spec.authorized_at) {
            return Ok(());
        }
        let revoked = AccountSpec::Authorizer(spec.withdrawn());
        self.control.put_child(revoked).await?;
        tracing::info!(
            component = component_appid,
            authorizer = authorizer_appid,
            "authorizer revoked"
        );
        Ok(())
    }

    /// Reconciles the hub's authorizers of `component_appid` with `api_get_authorizer_list`
    /// (500 a page): stores every refresh token WeChat holds that the store lacks or holds an
    /// older one of, registers the authorizers the hub does not know, and revokes the ones WeChat
    /// no longer lists.
    pub async fn sync(&self, component_appid: &str) -> Result<SyncSummary, PlatformError> {
        let settings = self.settings(component_appid)?;
        let mut summary = SyncSummary::default();
        let mut listed = std::collections::HashSet::new();
        let mut offset = 0;
        loop {
            let page = self
                .with_component_token(component_appid, |token| async move {
                    self.upstream
                        .authorizer_list(component_appid, &token, offset, LIST_PAGE)
                        .await
                })
                .await?;
            let count = page.list.len() as u64;
            listed.extend(page.list.iter().map(|e| e.authorizer_appid.clone()));
            let with_refresh_token = page
                .list
                .into_iter()
                .filter(|e| !e.refresh_token.is_empty());
            let mut reconciled = stream::iter(with_refresh_token)
                .map(|entry| self.reconcile(&settings, entry))
                .buffer_unordered(RECONCILE_CONCURRENCY);
            let mut failed = None;
            while let Some(outcome) = reconciled.next().await {
                match outcome {
                    Ok(Reconciled::Recovered) => summary.recovered += 1,
                    Ok(Reconciled::Added) => summary.added += 1,
                    Ok(Reconciled::Unchanged) => {}
                    // The others of the page still run to their end: nothing is left half-done.
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            offset += count;
            if count == 0 || offset >= page.total_count {
                break;
            }
        }
        let mut cursor: Option<String> = None;
        loop {
            let (page, more) = self.control.registry().authorizers_page(
                component_appid,
                cursor.as_deref(),
                LOCAL_PAGE,
                |spec| !spec.revoked,
            );
            for spec in &page {
                if !listed.contains(&spec.authorizer_appid) {
                    self.revoke(component_appid, &spec.authorizer_appid, 0)
                        .await?;
                    summary.revoked += 1;
                }
            }
            cursor = page.last().map(|spec| spec.authorizer_appid.clone());
            if !more || cursor.is_none() {
                break;
            }
        }
        tracing::info!(
            component = component_appid,
            recovered = summary.recovered,
            added = summary.added,
            revoked = summary.revoked,
            "authorizers reconciled with WeChat's list"
        );
        Ok(summary)
    }

    /// One listed authorizer: its refresh token stored, the authorizer registered.
    async fn reconcile(
        &self,
        settings: &ComponentSettings,
        entry: crate::upstream::ListedAuthorizer,
    ) -> Result<Reconciled, PlatformError> {
        let component_appid = settings.component_appid.as_str();
        let id = AccountId::authorizer(component_appid, &entry.authorizer_appid);
        let known = self.authorizer(&id).filter(|spec| !spec.revoked);
        let key = CredentialKey::new(
            AccountId::authorizer(component_appid, &entry.authorizer_appid),
            Role::RefreshToken,
        );
        let now = self.engine.now();
        let written = self
            .engine
            .write_pushed(
                &key,
                entry.refresh_token,
                crate::engine::refresh_token_expiry(now),
                now,
                |_| true,
            )
            .await?;
        match known {
            Some(_) => {
                let account = AccountId::authorizer(component_appid, &entry.authorizer_appid);
                if let Ok(token) = self.read_index.find(&account, None) {
                    self.engine.kick(&token);
                }
                if written == crate::engine::Written::AlreadyStored {
                    Ok(Reconciled::Unchanged)
                } else {
                    Ok(Reconciled::Recovered)
                }
            }
            None => {
                let spec = AccountSpec::Authorizer(AuthorizerSpec {
                    component_appid: component_appid.to_string(),
                    authorizer_appid: entry.authorizer_appid,
                    tickets: settings.authorizer_tickets.clone(),
                    refresh: settings.refresh,
                    func_info: Vec::new(),
                    authorized_at: entry.auth_time,
                    revoked: false,
                });
                self.control.put_child(spec).await?;
                Ok(Reconciled::Added)
            }
        }
    }

    /// Whether the hub has no active authorizer of `component_appid` (a new install, or a store
    /// that lost its data): then WeChat's list is the one place the refresh tokens still are.
    pub fn has_no_authorizers(&self, component_appid: &str) -> bool {
        self.control
            .registry()
            .authorizers_page(component_appid, None, 1, |spec| !spec.revoked)
            .0
            .is_empty()
    }

    /// One page of a platform's authorizers (`state`: `active`, `revoked`, `needs_attention`,
    /// or all), after `cursor`, and the cursor of the next page.
    pub fn list(
        &self,
        component_appid: &str,
        state: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AuthorizerView>, Option<String>), PlatformError> {
        self.settings(component_appid)?;
        let pager = Pager {
            chunk: |after: Option<&str>, limit| {
                self.control
                    .registry()
                    .authorizers_page(component_appid, after, limit, |_| true)
            },
            keep: |spec: &AuthorizerSpec| state.is_none_or(|wanted| self.state_of(spec) == wanted),
            key: |spec: &AuthorizerSpec| spec.authorizer_appid.clone(),
            view: |spec: &AuthorizerSpec| self.view(spec),
        };
        Ok(pager.page(cursor, limit))
    }

    /// The authorizer `id`'s definition, if it is registered.
    fn authorizer(&self, id: &AccountId) -> Option<AuthorizerSpec> {
        let (spec, _) = self.control.registry().spec(id)?;
        spec.as_authorizer().cloned()
    }

    /// How operators see its children.
    fn children(&self) -> Children<'_> {
        Children {
            engine: &self.engine,
            read_index: &self.read_index,
        }
    }

    /// `active`, `revoked` or `needs_attention`.
    fn state_of(&self, spec: &AuthorizerSpec) -> &'static str {
        self.children().state(&spec.id(), spec.revoked)
    }

    /// What consumers and operators see of an authorizer.
    fn view(&self, spec: &AuthorizerSpec) -> AuthorizerView {
        let (state, expires_at) = self.children().state_and_expiry(&spec.id(), spec.revoked);
        AuthorizerView {
            authorizer_appid: spec.authorizer_appid.clone(),
            state,
            authorized_at: Timestamp(spec.authorized_at.saturating_mul(1000)).to_rfc3339(),
            func_info: spec.func_info.clone(),
            expires_at,
        }
    }
}
