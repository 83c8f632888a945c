//! A consumer's report that a token was refused (compare-and-refresh,
//! docs/architecture.md#compare-and-refresh), and the check with WeChat that comes before any
//! refresh it causes: a value WeChat still accepts is answered unchanged, so that mistaken or
//! hostile reports cannot spend the quota or the force budget. Kept apart from the refresh job,
//! which it only starts or joins.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::state::{ReportDecision, Verdict};
use super::{job, Engine, Reason, RefreshError, Shared};
use crate::metrics::InvalidationOutcome;
use crate::read::{Credential, Served};
use crate::upstream::UpstreamError;

/// How long WeChat's word that a value is alive answers further reports of it without a new check.
const ALIVE_REUSE: Duration = Duration::from_secs(5);

/// What a consumer's invalidation report led to.
pub struct Invalidation {
    /// The token to hand back (the current one, possibly just refreshed).
    pub served: Arc<Served>,
    /// Whether the report was stale, caused a refresh, was throttled or rejected.
    pub outcome: InvalidationOutcome,
}

impl Engine {
    /// Compare-and-refresh (docs/architecture.md#compare-and-refresh): a consumer reports that
    /// `reported` was rejected by WeChat. A report of the current token is first checked with
    /// WeChat (one call, shared by concurrent reports): a token WeChat still accepts is answered
    /// unchanged and the report counted as rejected, so mistaken or hostile reports cannot spend
    /// the quota or the force budget.
    pub async fn invalidate(
        &self,
        credential: &Arc<Credential>,
        reported: &str,
    ) -> Result<Invalidation, RefreshError> {
        self.report(credential, reported, false).await
    }

    /// Compare-and-refresh for a report that carries WeChat's own refusal of `reported` (the
    /// gateway saw WeChat refuse it): no check is needed before the refresh.
    pub async fn invalidate_verified(
        &self,
        credential: &Arc<Credential>,
        reported: &str,
    ) -> Result<Invalidation, RefreshError> {
        self.report(credential, reported, true).await
    }

    /// [`Engine::invalidate`], with the check skipped when `verified`.
    async fn report(
        &self,
        credential: &Arc<Credential>,
        reported: &str,
        verified: bool,
    ) -> Result<Invalidation, RefreshError> {
        let shared = &self.shared;
        let reported: Arc<str> = Arc::from(reported);
        let mut checked = verified;
        // Two refresh rounds at most: a joined refresh (say a stable-mode poll) may return the
        // reported value unchanged; the second round then asks for it to be replaced. A refresh
        // started for this report is final: WeChat re-sending the value means there is no other.
        let mut rounds = 0;
        while rounds < 2 {
            let job = {
                let mut state = shared.lock();
                let now = shared.clock.now();
                let plan = credential.spec().plan.clone();
                let entry = state
                    .entries
                    .get_mut(&credential.id)
                    .ok_or(RefreshError::Removed)?;
                match entry.judge_report(&reported, &plan, now) {
                    ReportDecision::Stale => {
                        drop(state);
                        return shared.answer(credential, InvalidationOutcome::Stale);
                    }
                    ReportDecision::Throttled => {
                        entry.warning = Some(
                            "a token younger than min_refresh_interval was reported invalid: \
                             another party may be fetching tokens for this appid"
                                .to_string(),
                        );
                        tracing::warn!(
                            key = %credential.key,
                            "token reported invalid within min_refresh_interval of its fetch; \
                             another party may be fetching tokens for this appid"
                        );
                        drop(state);
                        return shared.answer(credential, InvalidationOutcome::Throttled);
                    }
                    // The current value, and no refresh running to join: ask WeChat first
                    // whether it really is dead, then judge again.
                    ReportDecision::Refresh if !checked && entry.in_flight().is_none() => None,
                    ReportDecision::Refresh => shared
                        .start_or_join(
                            &mut state,
                            credential,
                            Reason::Invalidated {
                                reported: reported.clone(),
                            },
                            None,
                        )
                        .ok_or(RefreshError::Removed)
                        .map(Some)?,
                }
            };
            let Some((receiver, started)) = job else {
                checked = true;
                if shared.verify(credential, &reported).await == Some(Verdict::Alive) {
                    return shared.answer(credential, InvalidationOutcome::Rejected);
                }
                continue;
            };
            rounds += 1;
            let refreshed = match job::wait_for(receiver).await {
                Ok(refreshed) => refreshed,
                // This node's refresh failed (WeChat or the store did not answer, the lease wait
                // timed out, the node was frozen past its lease), but another node's may have
                // replaced the reported token meanwhile: that is what the reporter needs.
                Err(e) if shared.replaced_elsewhere(credential, &reported).await => {
                    tracing::debug!(error = %e, "refresh failed here, but another node replaced the token");
                    return shared.answer(credential, InvalidationOutcome::Refreshed);
                }
                Err(e) => return Err(e),
            };
            if started || *refreshed.token.value != *reported {
                return shared.answer(credential, InvalidationOutcome::Refreshed);
            }
        }
        shared.answer(credential, InvalidationOutcome::Refreshed)
    }
}

impl Shared {
    /// What is served for `credential` now, as the answer to an invalidation report.
    fn answer(
        &self,
        credential: &Credential,
        outcome: InvalidationOutcome,
    ) -> Result<Invalidation, RefreshError> {
        self.metrics.count_invalidation(outcome);
        let served = credential.slot.load().ok_or(RefreshError::Aborted)?;
        Ok(Invalidation { served, outcome })
    }

    /// Checks a reported value with WeChat, if it is the current token of a credential WeChat can
    /// be asked about: one check at a time per credential (later reports join it), and a value
    /// confirmed alive in the last [`ALIVE_REUSE`] is not checked again. `None` when no check
    /// applies (the value is not current, a refresh is already running, or it is a ticket).
    async fn verify(
        self: &Arc<Self>,
        credential: &Arc<Credential>,
        reported: &str,
    ) -> Option<Verdict> {
        let work = credential.spec().source.checked_at()? == crate::kinds::Host::Work;
        let mut receiver = {
            let mut state = self.lock();
            let now = self.clock.now();
            let entry = state.entries.get_mut(&credential.id)?;
            let current = entry.token.as_ref()?;
            if current.value != reported || entry.in_flight().is_some() {
                return None;
            }
            if entry
                .confirmed_alive
                .as_ref()
                .is_some_and(|alive| alive.0 == reported && now.since(alive.1) < ALIVE_REUSE)
            {
                entry.rejected_reports += 1;
                return Some(Verdict::Alive);
            }
            if entry.confirmed_dead.as_deref() == Some(reported) {
                return Some(Verdict::Dead);
            }
            match &entry.verifying {
                Some(running) => running.clone(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    entry.verifying = Some(receiver.clone());
                    let task = self.clone().run_check(
                        credential.clone(),
                        reported.to_string(),
                        work,
                        sender,
                    );
                    self.tasks.spawn(task);
                    receiver
                }
            }
        };
        let verdict = loop {
            if let Some(verdict) = *receiver.borrow_and_update() {
                break verdict;
            }
            if receiver.changed().await.is_err() {
                break Verdict::Unknown;
            }
        };
        if verdict == Verdict::Alive {
            if let Some(entry) = self.lock().entries.get_mut(&credential.id) {
                entry.rejected_reports += 1;
            }
            tracing::info!(
                key = %credential.key,
                "a token reported invalid is still accepted by WeChat; report rejected, nothing refreshed"
            );
        }
        Some(verdict)
    }

    /// One check of `value` with WeChat, shared by every report that joined it.
    async fn run_check(
        self: Arc<Self>,
        credential: Arc<Credential>,
        value: String,
        work: bool,
        sender: watch::Sender<Option<Verdict>>,
    ) {
        let verdict = match self.upstream.check_token(work, &value).await {
            Ok(()) => Verdict::Alive,
            Err(UpstreamError::TokenInvalid { .. }) => Verdict::Dead,
            Err(e) => {
                tracing::warn!(key = %credential.key, error = %e, "could not check a reported token with WeChat; refreshing as reported");
                Verdict::Unknown
            }
        };
        if let Some(entry) = self.lock().entries.get_mut(&credential.id) {
            entry.verifying = None;
            match verdict {
                Verdict::Alive => entry.confirmed_alive = Some(Box::new((value, self.clock.now()))),
                Verdict::Dead => entry.confirmed_dead = Some(value.into()),
                Verdict::Unknown => {}
            }
        }
        let _ = sender.send(Some(verdict));
    }
}
