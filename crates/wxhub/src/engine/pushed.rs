//! What a token fetched with a ticket WeChat pushes shares, whoever pushes it (a platform's
//! verify ticket, a suite's suite ticket): the ticket in hand before the call, and what a
//! refused ticket means — a warning on the ticket and a transient failure, so the token in hand
//! keeps being served and is fetched again after the next push.

use std::sync::Arc;

use super::job::Coordination;
use super::{RefreshError, Shared};
use crate::kinds::CredentialKey;
use crate::read::{Credential, CredentialId};
use crate::upstream::UpstreamError;

impl Shared {
    /// The pushed ticket `ticket_key` and its usable value, with the lease of `credential`'s
    /// fetch renewed: what a fetch with it needs before calling WeChat.
    pub(super) async fn ticket_in_hand(
        self: &Arc<Self>,
        credential: &Arc<Credential>,
        ticket_key: &CredentialKey,
        coordination: Coordination,
    ) -> Result<(Arc<Credential>, Arc<str>), RefreshError> {
        let ticket = self
            .read_index
            .by_key(ticket_key)
            .ok_or(RefreshError::Removed)?;
        let value = self.usable_token(&ticket).await?;
        self.renew_lease(&credential.key, coordination).await?;
        Ok((ticket, value))
    }

    /// WeChat refused the pushed `ticket` (`error`): `warning` is shown on it, and the fetch
    /// fails transiently (the token in hand is kept).
    pub(super) fn ticket_refused(
        &self,
        ticket: &Credential,
        error: UpstreamError,
        warning: String,
    ) -> RefreshError {
        self.set_warning(ticket.id, Some(warning));
        RefreshError::Upstream(UpstreamError::Transient {
            errcode: error.errcode(),
            message: error.to_string(),
        })
    }

    /// Sets or clears the operator warning of `id`.
    pub(super) fn set_warning(&self, id: CredentialId, warning: Option<String>) {
        if let Some(entry) = self.lock().entries.get_mut(&id) {
            entry.warning = warning;
        }
    }
}
