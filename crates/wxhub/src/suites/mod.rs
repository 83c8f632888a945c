//! Work WeChat suites (企业微信服务商): what happens when Work WeChat pushes to a suite's command
//! callback URL, when a consumer registers an installation from the install redirect's code, and
//! when a corp uninstalls. See docs/suites.md.
//!
//! The rule that shapes everything here, as for a platform's authorizers: a permanent code cannot
//! be re-created (Work WeChat has no API that lists it again; the company would have to reinstall
//! the app), so it is written to the store (compare-and-set, durable, sealed) before the push is
//! acknowledged or the consumer is answered; it is deleted only when the corp uninstalls.

pub mod receiver;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::children::{Children, Pager};
use crate::configuration::SuiteSettings;
use crate::control::{Control, ControlError};
use crate::engine::{Engine, RefreshError};
use crate::envelope::{RecentPushes, Refused};
use crate::kinds::auth_corp::AuthCorpSpec;
use crate::kinds::{AccountId, AccountSpec, CredentialKey, Role};
use crate::read::ReadIndex;
use crate::token::Timestamp;
use crate::upstream::{Installation, Upstream, UpstreamError};
pub use receiver::{SuitePush, SuitePushKind};

/// How long a pushed suite ticket is valid (Work WeChat: 30 minutes).
pub const SUITE_TICKET_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Why a suite operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// No `[[suites]]` entry has this id.
    #[error("no [[suites]] entry has suite_id {0:?}")]
    UnknownSuite(String),
    /// The push was refused.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A token could not be obtained, or Work WeChat refused the call.
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    /// The installation could not be stored.
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<UpstreamError> for SuiteError {
    fn from(e: UpstreamError) -> Self {
        SuiteError::Refresh(RefreshError::Upstream(e))
    }
}

/// An installed corp as consumers and operators see it. Never a permanent code or a token.
#[derive(Clone, Debug, Serialize)]
pub struct AuthCorpView {
    /// The corp.
    pub corpid: String,
    /// Its name.
    pub corp_name: String,
    /// The suite's agentid in it.
    pub agentid: Option<String>,
    /// `active`, `revoked` or `needs_attention`.
    pub state: &'static str,
    /// When it (last) installed, RFC 3339.
    pub installed_at: String,
    /// When the access token served expires, RFC 3339.
    pub expires_at: Option<String>,
}

/// The suite operations, over the parts they need.
pub struct Suites {
    /// Registers, changes and revokes installed corps; holds the suites' settings.
    control: Arc<Control>,
    /// Tokens and durable writes.
    engine: Engine,
    /// The read side.
    read_index: Arc<ReadIndex>,
    /// Work WeChat.
    upstream: Upstream,
    /// The pushes acted on lately, so that a replay within the freshness window is acknowledged
    /// without acting again (a `create_auth` would cost a Work WeChat call each time).
    recent_pushes: Mutex<RecentPushes>,
}

impl Suites {
    /// The suite operations of one hub.
    pub fn new(
        control: Arc<Control>,
        engine: Engine,
        read_index: Arc<ReadIndex>,
        upstream: Upstream,
    ) -> Self {
        Suites {
            control,
            engine,
            read_index,
            upstream,
            recent_pushes: Mutex::default(),
        }
    }

    fn recent_pushes(&self) -> std::sync::MutexGuard<'_, RecentPushes> {
        self.recent_pushes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn settings(&self, suite_id: &str) -> Result<SuiteSettings, SuiteError> {
        self.control
            .suite_settings(suite_id)
            .ok_or_else(|| SuiteError::UnknownSuite(suite_id.to_string()))
    }

    /// Answers Work WeChat's check of the command callback URL: the decrypted `echostr`.
    pub fn echo(&self, suite_id: &str, query: &str) -> Result<String, SuiteError> {
        let settings = self.settings(suite_id)?;
        Ok(receiver::echo(
            &settings,
            query,
            self.engine.now().as_secs(),
        )?)
    }

    /// Handles one push to the command callback URL. `Ok` only once what it carries is durably
    /// stored.
    pub async fn receive(
        &self,
        suite_id: &str,
        query: &str,
        body: &[u8],
    ) -> Result<(), SuiteError> {
        let settings = self.settings(suite_id)?;
        let push = receiver::open(&settings, query, body, self.engine.now().as_secs())?;
        if self.recent_pushes().contains(&push.signature) {
            tracing::debug!(suite = suite_id, "a replayed push acknowledged again");
            return Ok(());
        }
        let signature = push.signature.clone();
        let acted = self.act_on(&settings, push).await;
        if acted.is_ok() {
            self.recent_pushes().remember(signature);
        }
        acted
    }

    /// Does what a push says.
    async fn act_on(&self, settings: &SuiteSettings, push: SuitePush) -> Result<(), SuiteError> {
        let suite_id = settings.suite_id.as_str();
        match push.kind {
            SuitePushKind::Ticket { ticket } => {
                self.store_ticket(suite_id, ticket, push.sent_at).await
            }
            SuitePushKind::Installed { auth_code } | SuitePushKind::Reset { auth_code } => {
                let view = self.exchange(suite_id, &auth_code).await?;
                tracing::info!(suite = suite_id, corp = %view.corpid, "installation registered from a push");
                Ok(())
            }
            SuitePushKind::Uninstalled { corpid } => {
                self.uninstall(suite_id, &corpid, push.sent_at).await
            }
            SuitePushKind::Changed { corpid } => {
                tracing::info!(suite = suite_id, corp = %corpid, "a corp changed the suite's permissions");
                Ok(())
            }
            SuitePushKind::Other(info_type) => {
                tracing::info!(
                    suite = suite_id,
                    info_type,
                    "push acknowledged, nothing to store"
                );
                Ok(())
            }
        }
    }

    /// Stores a pushed suite ticket unless one pushed later is already stored, then retries a
    /// suite token that failed for want of one.
    async fn store_ticket(
        &self,
        suite_id: &str,
        ticket: String,
        sent_at: i64,
    ) -> Result<(), SuiteError> {
        let now = self.engine.now();
        // A push without a timestamp is taken as sent now.
        let sent = match sent_at {
            0 => now,
            seconds => Timestamp(seconds.saturating_mul(1000)),
        };
        let key = CredentialKey::new(AccountId::suite(suite_id), Role::PushedTicket);
        let written = self
            .engine
            .write_pushed(
                &key,
                ticket,
                sent.plus(SUITE_TICKET_LIFETIME),
                sent,
                |stored| stored.fetched_at < sent,
            )
            .await?;
        tracing::debug!(suite = suite_id, ?written, "suite ticket pushed");
        if let Some(ticket) = self.read_index.by_key(&key) {
            self.engine.set_warning(&ticket, None);
        }
        if let Ok(token) = self.read_index.find(&AccountId::suite(suite_id), None) {
            self.engine.kick(&token);
        }
        Ok(())
    }

    /// Calls Work WeChat with the suite token; if it says the token is dead, reports it (one
    /// compare-and-refresh) and calls once more.
    async fn with_suite_token<T, F, Fut>(&self, suite_id: &str, call: F) -> Result<T, SuiteError>
    where
        F: Fn(Arc<str>) -> Fut,
        Fut: std::future::Future<Output = Result<T, UpstreamError>>,
    {
        let credential = self
            .read_index
            .find(&AccountId::suite(suite_id), None)
            .map_err(|_| SuiteError::UnknownSuite(suite_id.to_string()))?;
        let token = self.engine.usable(&credential).await?;
        match call(token.clone()).await {
            Err(UpstreamError::TokenInvalid { .. }) => {
                let fresh = self.engine.invalidate(&credential, &token).await?;
                Ok(call(fresh.served.value.clone()).await?)
            }
            other => Ok(other?),
        }
    }

    /// `get_pre_auth_code`: a code for an install link, and its lifetime in seconds.
    pub async fn pre_auth_code(&self, suite_id: &str) -> Result<(String, u64), SuiteError> {
        self.settings(suite_id)?;
        let fetched = self
            .with_suite_token(suite_id, |token| async move {
                self.upstream.suite_pre_auth_code(&token).await
            })
            .await?;
        Ok((fetched.value, fetched.expires_in.as_secs()))
    }

    /// Exchanges an installation's auth code (from the install redirect, a `create_auth` or a
    /// `reset_permanent_code` push) and registers the corp: its permanent code is written
    /// durably first, then its token, then its definition; then it is served and refreshed on
    /// every instance. A reset replaces the permanent code the same way.
    pub async fn exchange(
        &self,
        suite_id: &str,
        auth_code: &str,
    ) -> Result<AuthCorpView, SuiteError> {
        let settings = self.settings(suite_id)?;
        let installation: Installation = self
            .with_suite_token(suite_id, |token| async move {
                self.upstream.permanent_code(&token, auth_code).await
            })
            .await?;
        let account = AccountId::auth_corp(suite_id, &installation.corpid);
        let now = self.engine.now();
        self.engine
            .write_pushed(
                &CredentialKey::new(account.clone(), Role::RefreshToken),
                installation.permanent_code,
                crate::engine::refresh_token_expiry(now),
                now,
                |_| true,
            )
            .await?;
        if let Some(token) = installation.access_token {
            self.engine
                .write_pushed(
                    &CredentialKey::new(account.clone(), Role::AccessToken),
                    token.value,
                    now.plus(token.expires_in),
                    now,
                    |_| true,
                )
                .await?;
        }
        let spec = AuthCorpSpec {
            suite_id: suite_id.to_string(),
            corpid: installation.corpid,
            corp_name: installation.corp_name,
            agentid: installation.agentid,
            tickets: settings.corp_tickets.clone(),
            refresh: settings.refresh,
            installed_at: now.as_secs(),
            revoked: false,
        };
        self.control
            .put_child(AccountSpec::AuthCorp(spec.clone()))
            .await?;
        Ok(self.view(&spec))
    }

    /// A `cancel_auth` push: the corp stops being refreshed and served (410), and its tokens,
    /// the permanent code included, are deleted. A push sent before the corp's latest install is
    /// stale and changes nothing.
    async fn uninstall(
        &self,
        suite_id: &str,
        corpid: &str,
        sent_at: i64,
    ) -> Result<(), SuiteError> {
        let id = AccountId::auth_corp(suite_id, corpid);
        let Some(spec) = self.auth_corp(&id) else {
            tracing::info!(
                suite = suite_id,
                corp = corpid,
                "cancel_auth for a corp the hub does not know; nothing to revoke"
            );
            return Ok(());
        };
        if spec.revoked || (sent_at > 0 && sent_at < spec.installed_at) {
            return Ok(());
        }
        self.control
            .put_child(AccountSpec::AuthCorp(spec.withdrawn()))
            .await?;
        tracing::info!(suite = suite_id, corp = corpid, "installation revoked");
        Ok(())
    }

    /// One page of a suite's installed corps (`state`: `active`, `revoked`, `needs_attention`,
    /// or all), after `cursor`, and the cursor of the next page.
    pub fn list(
        &self,
        suite_id: &str,
        state: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AuthCorpView>, Option<String>), SuiteError> {
        self.settings(suite_id)?;
        let pager = Pager {
            chunk: |after: Option<&str>, limit| {
                self.control
                    .registry()
                    .auth_corps_page(suite_id, after, limit, |_| true)
            },
            keep: |spec: &AuthCorpSpec| state.is_none_or(|wanted| self.state_of(spec) == wanted),
            key: |spec: &AuthCorpSpec| spec.corpid.clone(),
            view: |spec: &AuthCorpSpec| self.view(spec),
        };
        Ok(pager.page(cursor, limit))
    }

    /// The installation `id`'s definition, if it is registered.
    fn auth_corp(&self, id: &AccountId) -> Option<AuthCorpSpec> {
        let (spec, _) = self.control.registry().spec(id)?;
        spec.as_auth_corp().cloned()
    }

    /// How operators see its children.
    fn children(&self) -> Children<'_> {
        Children {
            engine: &self.engine,
            read_index: &self.read_index,
        }
    }

    /// `active`, `revoked` or `needs_attention`.
    fn state_of(&self, spec: &AuthCorpSpec) -> &'static str {
        self.children().state(&spec.id(), spec.revoked)
    }

    /// What consumers and operators see of an installed corp.
    fn view(&self, spec: &AuthCorpSpec) -> AuthCorpView {
        let (state, expires_at) = self.children().state_and_expiry(&spec.id(), spec.revoked);
        AuthCorpView {
            corpid: spec.corpid.clone(),
            corp_name: spec.corp_name.clone(),
            agentid: spec.agentid.clone(),
            state,
            installed_at: Timestamp(spec.installed_at.saturating_mul(1000)).to_rfc3339(),
            expires_at,
        }
    }
}
