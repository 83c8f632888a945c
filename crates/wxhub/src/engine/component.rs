//! The engine's part of a third-party platform (WeChat's *component*; the operations and routes
//! are in the top-level `platform` module): how a component token and an authorizer token are
//! fetched, and how values WeChat hands over (a pushed verify ticket, an authorizer's refresh
//! token) are written — durably, with compare-and-set, before anyone is told they were received.

use std::sync::Arc;
use std::time::Duration;

use super::job::Coordination;
use super::state::Status;
use super::{Engine, Reason, RefreshError, Shared};
use crate::configuration::Secret;
use crate::kinds::{AccountId, CredentialKey, Role};
use crate::read::Credential;
use crate::store::CasOutcome;
use crate::token::{Timestamp, Token};
use crate::upstream::{Fetched, UpstreamError};

/// `api_component_token`: the verify ticket is expired.
const TICKET_EXPIRED: i64 = 61005;
/// `api_component_token`: the verify ticket is invalid.
const TICKET_INVALID: i64 = 61006;
/// `api_authorizer_token`: the refresh token is not (or no longer) valid.
const REFRESH_TOKEN_INVALID: i64 = 61023;
/// How many times a durable write is retried after losing a compare-and-set to a concurrent
/// writer of another value.
const DURABLE_WRITE_ROUNDS: usize = 5;

/// What became of a value handed to [`Engine::write_pushed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// It is stored now, as this generation.
    Stored(u64),
    /// The store already held it (a replayed push, another instance was first).
    AlreadyStored,
    /// The store holds a newer value; this one was dropped.
    Older,
}

impl Shared {
    /// A verify ticket cannot be fetched: asks WeChat to push one, and says so.
    pub(super) async fn ask_for_push(
        &self,
        component_appid: &str,
        secret: &Secret,
    ) -> RefreshError {
        let asked = self
            .upstream
            .start_push_ticket(component_appid, secret.expose())
            .await;
        let message = match asked {
            Ok(()) => "no usable verify ticket has been pushed; WeChat was asked to push one \
                       (api_start_push_ticket)"
                .to_string(),
            Err(e) => format!(
                "no usable verify ticket has been pushed, and asking WeChat to push one failed: {e}"
            ),
        };
        RefreshError::Upstream(UpstreamError::Transient {
            errcode: None,
            message,
        })
    }

    /// `api_component_token` with the latest verify ticket. A ticket WeChat calls expired or
    /// invalid (61005/61006) is reported as a transient failure, so the old component token
    /// keeps being served and the token is retried soon after the next push; a push is asked for
    /// at once.
    pub(super) async fn fetch_component_token(
        self: &Arc<Self>,
        credential: &Arc<Credential>,
        component_appid: &str,
        secret: &Secret,
        coordination: Coordination,
    ) -> Result<Fetched, RefreshError> {
        let ticket_key =
            CredentialKey::new(AccountId::component(component_appid), Role::PushedTicket);
        let (ticket, ticket_value) = self
            .ticket_in_hand(credential, &ticket_key, coordination)
            .await?;
        match self
            .upstream
            .component_token(component_appid, secret.expose(), &ticket_value)
            .await
        {
            Err(e) if matches!(e.errcode(), Some(TICKET_EXPIRED | TICKET_INVALID)) => {
                let warning = format!(
                    "WeChat refused the verify ticket (errcode {}); a new push was asked for",
                    e.errcode().unwrap_or_default()
                );
                let _ = self
                    .upstream
                    .start_push_ticket(component_appid, secret.expose())
                    .await;
                Err(self.ticket_refused(&ticket, e, warning))
            }
            other => Ok(other?),
        }
    }

    /// `api_authorizer_token` with the component token and the stored refresh token. A refresh
    /// token WeChat rotates is written durably before the access token is.
    pub(super) async fn fetch_authorizer_token(
        self: &Arc<Self>,
        credential: &Arc<Credential>,
        component_appid: &str,
        authorizer_appid: &str,
        coordination: Coordination,
    ) -> Result<Fetched, RefreshError> {
        let spec = credential.spec();
        let (Some(component_key), Some(refresh_key)) =
            (spec.fetched_with.first(), spec.fetched_with.get(1))
        else {
            return Err(RefreshError::Removed);
        };
        let component = self
            .read_index
            .by_key(component_key)
            .ok_or(RefreshError::Removed)?;
        let mut component_token = self.usable_token(&component).await?;
        let stored = self.durable_value(refresh_key).await?;
        self.renew_lease(&credential.key, coordination).await?;
        let mut refresh = match stored {
            Some(refresh) => refresh,
            // Lost (a store that lost its data): WeChat still knows it.
            None => {
                self.recover_refresh_token(
                    credential,
                    refresh_key,
                    component_appid,
                    &component_token,
                    authorizer_appid,
                    None,
                )
                .await?
            }
        };
        self.renew_lease(&credential.key, coordination).await?;
        let mut answer = self
            .upstream
            .authorizer_token(
                component_appid,
                &component_token,
                authorizer_appid,
                &refresh,
            )
            .await;
        if let Err(UpstreamError::TokenInvalid { .. }) = answer {
            let engine = Engine {
                shared: self.clone(),
            };
            component_token = engine
                .invalidate(&component, &component_token)
                .await?
                .served
                .value
                .clone();
            self.renew_lease(&credential.key, coordination).await?;
            answer = self
                .upstream
                .authorizer_token(
                    component_appid,
                    &component_token,
                    authorizer_appid,
                    &refresh,
                )
                .await;
        }
        if matches!(&answer, Err(e) if e.errcode() == Some(REFRESH_TOKEN_INVALID)) {
            // The stored refresh token is stale (lost a rotation, restored from an old backup):
            // WeChat still knows the current one. Recover it before anyone is told to re-authorize.
            refresh = self
                .recover_refresh_token(
                    credential,
                    refresh_key,
                    component_appid,
                    &component_token,
                    authorizer_appid,
                    Some(&refresh),
                )
                .await?;
            self.renew_lease(&credential.key, coordination).await?;
            answer = self
                .upstream
                .authorizer_token(
                    component_appid,
                    &component_token,
                    authorizer_appid,
                    &refresh,
                )
                .await;
        }
        let tokens = answer?;
        if credential.is_retired() {
            // Revoked while the call was out: nothing may be written back for it.
            return Err(RefreshError::Removed);
        }
        if let Some(rotated) = tokens.refresh_token.filter(|r| *r != refresh) {
            let now = self.clock.now();
            self.write_durable(refresh_key, rotated, refresh_token_expiry(now), now, |_| {
                true
            })
            .await?;
        }
        Ok(tokens.access_token)
    }

    /// A durable value (an authorizer's refresh token, a permanent code) as the store holds it
    /// (another instance may have stored a rotated one), else as this node holds it; `None` if
    /// neither has one.
    pub(super) async fn durable_value(
        &self,
        key: &CredentialKey,
    ) -> Result<Option<String>, RefreshError> {
        if let Some(stored) = self.store.get(key).await? {
            return Ok(Some(stored.value));
        }
        let Some(credential) = self.read_index.by_key(key) else {
            return Ok(None);
        };
        let state = self.lock();
        Ok(state
            .entries
            .get(&credential.id)
            .and_then(|e| e.token.as_ref())
            .map(|t| t.value.clone()))
    }

    /// Reads the authorizer's current refresh token back from WeChat (`api_get_authorizer_info`)
    /// and stores it durably. Fails with 61023 if WeChat has none, or only the one `refused`.
    async fn recover_refresh_token(
        &self,
        credential: &Credential,
        refresh_key: &CredentialKey,
        component_appid: &str,
        component_token: &str,
        authorizer_appid: &str,
        refused: Option<&str>,
    ) -> Result<String, RefreshError> {
        let current = self
            .upstream
            .authorizer_refresh_token(component_appid, component_token, authorizer_appid)
            .await?
            .filter(|c| Some(c.as_str()) != refused)
            .ok_or(RefreshError::Upstream(UpstreamError::Config {
                errcode: REFRESH_TOKEN_INVALID,
                message: "the refresh token is missing or refused and WeChat lists no other; \
                          the account must authorize the platform again"
                    .into(),
            }))?;
        tracing::warn!(
            key = %credential.key,
            "the stored refresh token was missing or refused; the current one was recovered from WeChat"
        );
        let now = self.clock.now();
        self.write_durable(
            refresh_key,
            current.clone(),
            refresh_token_expiry(now),
            now,
            |_| true,
        )
        .await?;
        Ok(current)
    }

    /// Writes `value` under `key` as the next generation, durably (compare-and-set), unless the
    /// store already holds it or `replaces` says the stored value must win. Adopted here at once;
    /// other instances learn of it from the change feed.
    pub(super) async fn write_durable(
        &self,
        key: &CredentialKey,
        value: String,
        expires_at: Timestamp,
        fetched_at: Timestamp,
        replaces: impl Fn(&Token) -> bool,
    ) -> Result<Written, RefreshError> {
        for _ in 0..DURABLE_WRITE_ROUNDS {
            let stored = self.store.get(key).await?;
            if let Some(current) = &stored {
                if current.value == value {
                    self.apply_change(key, current.clone());
                    return Ok(Written::AlreadyStored);
                }
                if !replaces(current) {
                    return Ok(Written::Older);
                }
            }
            let token = Token {
                value: value.clone(),
                expires_at,
                fetched_at,
                generation: stored.as_ref().map_or(0, |t| t.generation) + 1,
            };
            match self.store.compare_and_set(key, &token).await? {
                CasOutcome::Applied => {
                    let generation = token.generation;
                    self.apply_change(key, token);
                    return Ok(Written::Stored(generation));
                }
                CasOutcome::Stale { .. } => continue,
            }
        }
        Err(RefreshError::WriteRefused)
    }
}

/// Refresh tokens do not expire while the authorization stands; stored with this far expiry.
pub fn refresh_token_expiry(now: Timestamp) -> Timestamp {
    now.plus(Duration::from_secs(10 * 365 * 86_400))
}

impl Engine {
    /// The current value of `credential` if it has some life left, else the result of
    /// refreshing it (the component token for a platform call).
    pub async fn usable(&self, credential: &Arc<Credential>) -> Result<Arc<str>, RefreshError> {
        self.shared.usable_token(credential).await
    }

    /// Writes a value WeChat handed over (a pushed verify ticket, an authorizer's refresh or
    /// access token from an authorization) durably before the caller acknowledges anything.
    /// `replaces` decides whether a different stored value may be replaced (a verify ticket
    /// only by a push created later).
    pub async fn write_pushed(
        &self,
        key: &CredentialKey,
        value: String,
        expires_at: Timestamp,
        fetched_at: Timestamp,
        replaces: impl Fn(&Token) -> bool,
    ) -> Result<Written, RefreshError> {
        self.shared
            .write_durable(key, value, expires_at, fetched_at, replaces)
            .await
    }

    /// Sets (or clears) the warning `/v1/credentials` shows for `credential`.
    pub fn set_warning(&self, credential: &Credential, warning: Option<String>) {
        self.shared.set_warning(credential.id, warning);
    }

    /// Starts a refresh of `credential` unless it is fresh or already refreshing (after a new
    /// verify ticket arrived, a component token that failed for want of one is retried at once).
    pub fn kick(&self, credential: &Arc<Credential>) {
        let mut state = self.shared.lock();
        let fresh = state
            .entries
            .get(&credential.id)
            .is_some_and(|e| e.status() == Status::Fresh || e.in_flight().is_some());
        if !fresh {
            let _ = self
                .shared
                .start_or_join(&mut state, credential, Reason::Scheduled, None);
        }
    }
}
