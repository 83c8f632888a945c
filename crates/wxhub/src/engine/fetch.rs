//! How each kind of credential is asked of WeChat: the one place that turns a [`Source`] into
//! upstream calls (normal or force mode, which token a ticket is fetched with).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::budget::ForcePurpose;
use super::job::{wait_for, Coordination};
use super::{Engine, Reason, RefreshError, Shared, DEPENDENCY_MIN_LIFE};
use crate::configuration::TokenMode;
use crate::kinds::CredentialKey;
use crate::plan::Plan;
use crate::read::Credential;
use crate::registry::Source;
use crate::token::Token;
use crate::upstream::{Fetched, Upstream, UpstreamError};

/// An upstream call made with an access token (a ticket fetch).
type WithToken = dyn Fn(Upstream, String) -> Pin<Box<dyn Future<Output = Result<Fetched, UpstreamError>> + Send>>
    + Send
    + Sync;

impl Shared {
    /// Asks WeChat for the credential, the way its source and the reason require.
    pub(super) async fn fetch(
        self: &Arc<Self>,
        credential: &Arc<Credential>,
        reason: &Reason,
        stored: Option<&Token>,
        coordination: Coordination,
    ) -> Result<Fetched, RefreshError> {
        let key = &credential.key;
        let leased = matches!(coordination, Coordination::Leased { .. });
        let spec = credential.spec();
        match &spec.source {
            Source::AppToken {
                appid,
                secret,
                mode: TokenMode::Legacy,
            } => {
                self.renew_lease(key, coordination).await?;
                Ok(self.upstream.get_token(appid, secret.expose()).await?)
            }
            Source::AppToken {
                appid,
                secret,
                mode: TokenMode::Stable,
            } => {
                let force = match reason {
                    Reason::Admin { force: true } if leased => {
                        self.take_force_budget(credential, ForcePurpose::Unreserved)
                            .await
                    }
                    _ => false,
                };
                self.renew_lease(key, coordination).await?;
                let fetched = self
                    .upstream
                    .get_stable_token(appid, secret.expose(), force)
                    .await?;
                // A confirmed-dead token has usually been replaced already (another party forced
                // a refresh): normal mode then returns the live one and spends no budget. Only
                // when WeChat hands back the reported value is a force refresh spent on it.
                if let Reason::Invalidated { reported } = reason {
                    if leased
                        && *fetched.value == **reported
                        && self
                            .take_force_budget(credential, ForcePurpose::Verified)
                            .await
                    {
                        self.renew_lease(key, coordination).await?;
                        return Ok(self
                            .upstream
                            .get_stable_token(appid, secret.expose(), true)
                            .await?);
                    }
                    return Ok(fetched);
                }
                // Last resort: normal mode has not rotated a token that is about to expire.
                let now = self.clock.now();
                let about_to_expire = stored.is_some_and(|s| {
                    s.value == fetched.value
                        && s.remaining(now) < Plan::stable_poll(s.lifetime()) * 2
                });
                // Never alone: a force refresh kills the token the other instances serve.
                if leased
                    && !force
                    && about_to_expire
                    && self
                        .take_force_budget(credential, ForcePurpose::Unreserved)
                        .await
                {
                    self.renew_lease(key, coordination).await?;
                    return Ok(self
                        .upstream
                        .get_stable_token(appid, secret.expose(), true)
                        .await?);
                }
                Ok(fetched)
            }
            Source::CorpToken { corpid, secret } => {
                self.renew_lease(key, coordination).await?;
                Ok(self
                    .upstream
                    .get_corp_token(corpid, secret.expose())
                    .await?)
            }
            Source::AppTicket { kind } => {
                let kind = *kind;
                self.fetch_with_token(
                    credential,
                    &spec.fetched_with,
                    coordination,
                    &move |upstream, token| {
                        Box::pin(async move { upstream.get_ticket(&token, kind).await })
                    },
                )
                .await
            }
            Source::CorpTicket { kind } => {
                let kind = *kind;
                self.fetch_with_token(
                    credential,
                    &spec.fetched_with,
                    coordination,
                    &move |upstream, token| {
                        Box::pin(async move { upstream.get_corp_ticket(&token, kind).await })
                    },
                )
                .await
            }
            Source::VerifyTicket {
                component_appid,
                secret,
            } => Err(self.ask_for_push(component_appid, secret).await),
            Source::ComponentToken {
                component_appid,
                secret,
            } => {
                self.fetch_component_token(credential, component_appid, secret, coordination)
                    .await
            }
            Source::AuthorizerRefreshToken => Err(RefreshError::Upstream(UpstreamError::Config {
                errcode: 61023,
                message: "no refresh token is stored for this authorizer; it must \
                              authorize again or be recovered with authorizers/sync"
                    .into(),
            })),
            Source::SuiteTicket { .. } => Err(self.wait_for_suite_ticket()),
            Source::SuiteToken { suite_id, secret } => {
                self.fetch_suite_token(credential, suite_id, secret.expose(), coordination)
                    .await
            }
            Source::PermanentCode => Err(super::suite::lost_permanent_code(
                key.account.parts().1.unwrap_or_default(),
            )),
            Source::AuthCorpToken { corpid, .. } => {
                self.fetch_auth_corp_token(credential, corpid, coordination)
                    .await
            }
            Source::ProviderToken { corpid, secret } => {
                self.renew_lease(key, coordination).await?;
                Ok(self
                    .upstream
                    .provider_token(corpid, secret.expose())
                    .await?)
            }
            Source::AuthorizerToken {
                component_appid,
                authorizer_appid,
            } => {
                self.fetch_authorizer_token(
                    credential,
                    component_appid,
                    authorizer_appid,
                    coordination,
                )
                .await
            }
        }
    }

    /// Calls a ticket endpoint with the current access token it is fetched with. If WeChat says
    /// that token is dead, reports it (compare-and-refresh, like a consumer) and tries once more.
    async fn fetch_with_token(
        self: &Arc<Self>,
        credential: &Credential,
        fetched_with: &[CredentialKey],
        coordination: Coordination,
        call: &WithToken,
    ) -> Result<Fetched, RefreshError> {
        let dependency = fetched_with
            .first()
            .and_then(|key| self.read_index.by_key(key))
            .ok_or(RefreshError::Removed)?;
        let token = self.usable_token(&dependency).await?;
        self.renew_lease(&credential.key, coordination).await?;
        match call(self.upstream.clone(), token.to_string()).await {
            Err(UpstreamError::TokenInvalid { .. }) => {
                let engine = Engine {
                    shared: self.clone(),
                };
                // WeChat itself refused the token: a verified report.
                let fresh = engine.invalidate_verified(&dependency, &token).await?;
                self.renew_lease(&credential.key, coordination).await?;
                Ok(call(self.upstream.clone(), fresh.served.value.to_string()).await?)
            }
            other => Ok(other?),
        }
    }

    /// The current token of `credential` if it has some life left, else the result of
    /// refreshing it.
    pub(super) async fn usable_token(
        self: &Arc<Self>,
        credential: &Arc<Credential>,
    ) -> Result<Arc<str>, RefreshError> {
        let receiver = {
            let mut state = self.lock();
            let now = self.clock.now();
            if let Some(entry) = state.entries.get(&credential.id) {
                if let Some(token) = &entry.token {
                    if token.is_valid_at(now.plus(DEPENDENCY_MIN_LIFE)) {
                        return Ok(Arc::from(token.value.as_str()));
                    }
                }
                if let Some(retry_at) = entry.retrying_at(now) {
                    return Err(RefreshError::DependencyRetrying {
                        dependency: credential.key.to_string(),
                        attempts: entry.attempts,
                        retry_in_s: retry_at.since(now).as_secs(),
                    });
                }
            }
            self.start_or_join(&mut state, credential, Reason::Dependency, None)
        };
        let (receiver, _) = receiver.ok_or(RefreshError::Removed)?;
        let refreshed = wait_for(receiver).await?;
        Ok(Arc::from(refreshed.token.value.as_str()))
    }
}
