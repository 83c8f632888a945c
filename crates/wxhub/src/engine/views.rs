//! What operators and the metrics see of the engine's state: the credentials listing of
//! `/v1/credentials` and the status page, counts by state, and single facts about one credential.
//! Read-only: every view takes the engine's lock briefly, copies what it shows and lets go, so the
//! refresh logic never has to know who is looking.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::budget::{used_on, wechat_day, FORCE_REFRESH_DAILY_LIMIT};
use super::state::{Entry, LastError, Status};
use super::Engine;
use crate::history::HistoryPoint;
use crate::kinds::Role;
use crate::read::{Credential, CredentialId};
use crate::token::Timestamp;

/// One credential in `/v1/credentials`. Never a secret or token value.
#[derive(Clone, Debug, Serialize)]
pub struct CredentialStatus {
    /// The credential's canonical key, e.g. `access_token/wx…`.
    pub key: String,
    /// Its kind (`access_token`, `ticket`, …).
    pub kind: &'static str,
    /// Where its account is defined (`config` or `runtime`).
    pub origin: crate::registry::Origin,
    /// Lifecycle state.
    pub state: Status,
    /// Generation of the token served.
    pub generation: Option<u64>,
    /// When the token served expires.
    pub expires_at: Option<String>,
    /// When the next refresh (or retry) is planned.
    pub next_refresh: Option<String>,
    /// Consecutive failed attempts.
    pub attempts: u32,
    /// The last failure, cleared by a success.
    pub last_error: Option<LastError>,
    /// The last failure once a success has cleared `last_error`: history, not a current problem.
    pub previous_error: Option<LastError>,
    /// A condition an operator should know about (another party fetching tokens, force budget).
    pub warning: Option<String>,
    /// Force refreshes used today (stable mode), as this instance last learned from the store.
    pub force_refreshes_today: u32,
    /// Force refreshes allowed a day: WeChat's limit for a stable-mode access token, `None` for
    /// every other credential (they have no force refresh).
    pub force_refresh_budget: Option<u32>,
    /// Whether the credential never expires (an authorizer's refresh token: valid as long as
    /// the authorization stands); its `expires_at` is then only a far date it is stored with.
    pub never_expires: bool,
    /// Reports rejected because WeChat still accepted the reported value.
    pub rejected_reports: u64,
    /// When the token served was obtained; with `expires_at` it gives the token's lifetime.
    pub fetched_at: Option<String>,
    /// Refreshes this instance finished in the last hour, oldest first (bounded, see
    /// `crate::history::History`). Tokens adopted from another instance's refresh are not among them.
    pub history: Vec<HistoryPoint>,
}

impl Engine {
    /// Every credential's state, for operators, in key order.
    pub fn credentials(&self) -> Vec<CredentialStatus> {
        let now = self.shared.clock.now();
        let state = self.shared.lock();
        let mut all: Vec<CredentialStatus> = state
            .entries
            .values()
            .map(|e| credential_status(e, now))
            .collect();
        drop(state);
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// The state of these credentials (those still tracked), in the order given.
    pub fn credentials_of(&self, credentials: &[Arc<Credential>]) -> Vec<CredentialStatus> {
        let now = self.shared.clock.now();
        let state = self.shared.lock();
        credentials
            .iter()
            .filter_map(|c| state.entries.get(&c.id))
            .map(|e| credential_status(e, now))
            .collect()
    }

    /// How many credentials are in each (kind, state), for the metrics: kept as entries change
    /// ([`super::tally`]), so a scrape copies a few dozen numbers and never takes the engine lock.
    pub fn state_counts(&self) -> BTreeMap<(&'static str, Status), u64> {
        self.shared.tally.snapshot()
    }

    /// When the token this node holds for `credential` was obtained (fetched, or pushed by
    /// WeChat), if it holds one.
    pub fn fetched_at(&self, credential: &Credential) -> Option<Timestamp> {
        let state = self.shared.lock();
        state
            .entries
            .get(&credential.id)
            .and_then(|e| e.token.as_ref())
            .map(|t| t.fetched_at)
    }

    /// Whether the engine tracks `id` (for tests of removal).
    pub fn tracks(&self, id: CredentialId) -> bool {
        self.shared.lock().entries.contains_key(&id)
    }

    /// What time it is, by the engine's clock (the platform's pushes and watchdog read it too).
    pub fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// The state of `credential` now, if it is tracked.
    pub fn status_of(&self, credential: &Credential) -> Option<Status> {
        self.shared
            .lock()
            .entries
            .get(&credential.id)
            .map(|e| e.status())
    }
}

/// What operators see of one credential at `now`.
fn credential_status(entry: &Entry, now: Timestamp) -> CredentialStatus {
    let today = wechat_day(now);
    let key = &entry.credential.key;
    CredentialStatus {
        key: key.to_string(),
        kind: key.kind_name(),
        origin: entry.credential.origin(),
        state: entry.shown_status(),
        generation: entry.token.as_ref().map(|t| t.generation),
        expires_at: entry.token.as_ref().map(|t| t.expires_at.to_rfc3339()),
        next_refresh: entry.next_refresh.map(Timestamp::to_rfc3339),
        attempts: entry.attempts,
        last_error: entry.current_error().cloned(),
        previous_error: entry.recovered_error().cloned(),
        warning: entry.warning.clone(),
        force_refreshes_today: used_on(entry, today),
        force_refresh_budget: entry
            .credential
            .has_force_budget()
            .then_some(FORCE_REFRESH_DAILY_LIMIT),
        never_expires: key.role == Role::RefreshToken,
        rejected_reports: entry.rejected_reports,
        fetched_at: entry.token.as_ref().map(|t| t.fetched_at.to_rfc3339()),
        history: entry.history.recent(now),
    }
}
