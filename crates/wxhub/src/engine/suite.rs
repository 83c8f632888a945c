//! The engine's part of Work WeChat suites (the operations and routes are in the top-level
//! `suites` module): how a suite token and an installed corp's token are fetched. The values
//! Work WeChat hands over (a pushed suite ticket, a permanent code) are written with
//! [`Engine::write_pushed`](super::Engine::write_pushed), durably, before anything is
//! acknowledged. See docs/suites.md.

use std::sync::Arc;

use super::job::Coordination;
use super::{Engine, RefreshError, Shared};
use crate::read::Credential;
use crate::upstream::{Fetched, UpstreamError};

/// `get_suite_token`: the suite ticket is invalid (or expired: it lives 30 minutes).
pub const SUITE_TICKET_INVALID: i64 = 40085;
/// `get_corp_token`: the permanent code is invalid (the corp uninstalled, or the code was reset).
pub const PERMANENT_CODE_INVALID: i64 = 40084;

impl Shared {
    /// A suite ticket cannot be fetched: Work WeChat pushes one every ten minutes, and there is
    /// no API that asks for one sooner.
    pub(super) fn wait_for_suite_ticket(&self) -> RefreshError {
        RefreshError::Upstream(UpstreamError::Transient {
            errcode: None,
            message: "no usable suite ticket has been pushed yet; Work WeChat pushes one every \
                      ten minutes to the command callback URL (an immediate push can be asked \
                      for in the provider console)"
                .into(),
        })
    }

    /// `get_suite_token` with the latest suite ticket. A ticket Work WeChat refuses (40085) is
    /// a transient failure with a warning on the ticket: the suite token in hand keeps being
    /// served, and the next push brings a usable ticket (it kicks the token).
    pub(super) async fn fetch_suite_token(
        self: &Arc<Self>,
        credential: &Arc<Credential>,
        suite_id: &str,
        secret: &str,
        coordination: Coordination,
    ) -> Result<Fetched, RefreshError> {
        let spec = credential.spec();
        let ticket_key = spec.fetched_with.first().ok_or(RefreshError::Removed)?;
        let (ticket, ticket_value) = self
            .ticket_in_hand(credential, ticket_key, coordination)
            .await?;
        match self
            .upstream
            .suite_token(suite_id, secret, &ticket_value)
            .await
        {
            Err(e) if e.errcode() == Some(SUITE_TICKET_INVALID) => {
                let warning = format!(
                    "Work WeChat refused the suite ticket (errcode {SUITE_TICKET_INVALID}); \
                     waiting for the next push"
                );
                Err(self.ticket_refused(&ticket, e, warning))
            }
            other => Ok(other?),
        }
    }

    /// `get_corp_token` with the suite token and the corp's stored permanent code. A suite token
    /// Work WeChat calls dead is reported (one compare-and-refresh) and the call made once more.
    pub(super) async fn fetch_auth_corp_token(
        self: &Arc<Self>,
        credential: &Arc<Credential>,
        corpid: &str,
        coordination: Coordination,
    ) -> Result<Fetched, RefreshError> {
        let spec = credential.spec();
        let (Some(suite_key), Some(code_key)) =
            (spec.fetched_with.first(), spec.fetched_with.get(1))
        else {
            return Err(RefreshError::Removed);
        };
        let suite = self
            .read_index
            .by_key(suite_key)
            .ok_or(RefreshError::Removed)?;
        let mut suite_token = self.usable_token(&suite).await?;
        let permanent_code = self
            .durable_value(code_key)
            .await?
            .ok_or_else(|| lost_permanent_code(corpid))?;
        self.renew_lease(&credential.key, coordination).await?;
        let mut answer = self
            .upstream
            .auth_corp_token(&suite_token, corpid, &permanent_code)
            .await;
        if let Err(UpstreamError::TokenInvalid { .. }) = answer {
            let engine = Engine {
                shared: self.clone(),
            };
            suite_token = engine
                .invalidate(&suite, &suite_token)
                .await?
                .served
                .value
                .clone();
            self.renew_lease(&credential.key, coordination).await?;
            answer = self
                .upstream
                .auth_corp_token(&suite_token, corpid, &permanent_code)
                .await;
        }
        if matches!(&answer, Err(e) if e.errcode() == Some(PERMANENT_CODE_INVALID)) {
            // A `reset_permanent_code` may have replaced the code while this call was out: the
            // store then holds the new one, which is tried once.
            if let Some(current) = self
                .durable_value(code_key)
                .await?
                .filter(|current| *current != permanent_code)
            {
                self.renew_lease(&credential.key, coordination).await?;
                answer = self
                    .upstream
                    .auth_corp_token(&suite_token, corpid, &current)
                    .await;
            }
        }
        let token = answer?;
        if credential.is_retired() {
            // Uninstalled while the call was out: nothing may be written back for it.
            return Err(RefreshError::Removed);
        }
        Ok(token)
    }
}

/// The permanent code is gone: only a reinstall brings a new one.
pub(super) fn lost_permanent_code(corpid: &str) -> RefreshError {
    RefreshError::Upstream(UpstreamError::Config {
        errcode: PERMANENT_CODE_INVALID,
        message: format!(
            "no permanent code is stored for the corp {corpid:?}; Work WeChat cannot list it \
             again, so the corp must reinstall the suite"
        ),
    })
}
