//! One refresh job: at most one per key in the whole cluster, and never a step backwards.
//!
//! A refresh of one key is single-flight at three levels (docs/architecture.md#single-flight):
//! 1. in process — a second request for the same key joins the running job (a `watch` channel);
//! 2. across nodes — the job first takes the key's lease in the store; a node that cannot get it
//!    waits for the holder's write on the change feed instead of calling WeChat;
//! 3. after the lease is won — the store is re-read, since another node may have refreshed
//!    meanwhile; its token is adopted without an upstream call.
//!
//! Writes use the store's compare-and-set on generation, so a slow refresher can never put an
//! older token back. A credential removed while its job runs is not written back: the job checks
//! before it writes, and deletes what it wrote if the removal raced the write.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::state::{RefreshResult, Refreshed, State};
use super::{random_unit, JobReceiver, Reason, RefreshError, Shared, DEPENDENCY_MIN_LIFE};
use crate::kinds::CredentialKey;
use crate::plan::Renewal;
use crate::read::{Credential, CredentialId};
use crate::store::StoreError;
use crate::store::{CasOutcome, Change};
use crate::token::Token;
use crate::upstream::UpstreamError;

/// Shortest slice a job waits on the change feed for another node's refresh before it re-reads
/// the store and tries the lease again (see [`Shared::lease_wait_slice`]).
const LEASE_WAIT_MIN_SLICE: Duration = Duration::from_millis(250);

/// How long after the lease was asked for an upstream call may start without renewing it: half
/// of [`super::LEASE_MARGIN`], so that the call's timeout ends a second before the lease does.
const LEASE_FRESH: Duration = Duration::from_millis(super::LEASE_MARGIN.as_millis() as u64 / 2);
/// Whether a refresh runs under the key's lease (the rule), or alone because the store does not
/// answer and the token is about to expire ([`crate::plan::Plan::alone_within`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Coordination {
    /// The lease is held and renewed before each upstream call that starts too late to end
    /// within it; force refreshes are allowed. `asked` is when the lease was asked for: the
    /// store took it no earlier, so it lasts at least until `asked + lease_ttl`.
    Leased {
        /// When the acquisition was sent.
        asked: Instant,
    },
    /// No lease: only normal-mode calls, which return the same value to every node.
    Alone,
}

/// Clears a job's in-flight marker if the job's task is dropped before it finished (shutdown,
/// or a panic), and plans a retry, so that a key can never be left waiting for a job that no
/// longer exists. Disarmed once the job has recorded its own outcome.
struct InFlightGuard {
    shared: Arc<Shared>,
    id: CredentialId,
    armed: bool,
}

impl InFlightGuard {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.shared.lock();
        if let Some(entry) = state.entries.get_mut(&self.id) {
            entry.set_in_flight(None);
        }
        if !state.shutdown {
            let retry = self.shared.clock.now().plus(Duration::from_secs(1));
            state.schedule(self.id, retry);
            self.shared.scheduler_wakeup.notify_one();
        }
    }
}

/// Waits for a refresh job's result.
pub(super) async fn wait_for(mut receiver: JobReceiver) -> RefreshResult {
    loop {
        if let Some(result) = receiver.borrow_and_update().clone() {
            return result;
        }
        if receiver.changed().await.is_err() {
            return receiver
                .borrow()
                .clone()
                .unwrap_or(Err(RefreshError::Aborted));
        }
    }
}

/// Waits until the change feed shows a write of `key` newer than `known_generation`, or until
/// `deadline`.
async fn wait_for_change(
    feed: &mut broadcast::Receiver<Change>,
    key: &CredentialKey,
    known_generation: u64,
    deadline: Instant,
) -> Option<Token> {
    loop {
        match tokio::time::timeout_at(deadline, feed.recv()).await {
            Ok(Ok(change)) if change.key == *key && change.token.generation > known_generation => {
                return Some(change.token);
            }
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
        }
    }
}

impl Shared {
    /// Joins the running refresh of `credential`, or starts one; says which. Runs under the state
    /// lock, so two callers can never both start a job for one key. `None` once the credential
    /// is no longer tracked (removed).
    pub(super) fn start_or_join(
        self: &Arc<Self>,
        state: &mut State,
        credential: &Arc<Credential>,
        reason: Reason,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Option<(JobReceiver, bool)> {
        let id = credential.id;
        let entry = state.entries.get_mut(&id)?;
        if let Some(running) = entry.in_flight() {
            return Some((running.clone(), false));
        }
        let (sender, receiver) = watch::channel(None);
        entry.set_in_flight(Some(receiver.clone()));
        let known = entry.token.clone();
        state.unschedule(id);
        let job = self
            .clone()
            .run_job(credential.clone(), reason, known, sender, permit);
        // Boxed so that a job may start jobs of other keys (a ticket's token).
        self.tasks.spawn(Box::pin(job));
        Some((receiver, true))
    }

    /// One refresh job: performs the refresh, records the outcome, wakes every waiter.
    async fn run_job(
        self: Arc<Self>,
        credential: Arc<Credential>,
        reason: Reason,
        known: Option<Token>,
        sender: watch::Sender<Option<RefreshResult>>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let guard = InFlightGuard {
            shared: self.clone(),
            id: credential.id,
            armed: true,
        };
        let started = std::time::Instant::now();
        let known_generation = known.as_ref().map_or(0, |t| t.generation);
        let result = tokio::select! {
            result = self.refresh(&credential, &reason, known) => result,
            _ = self.cancel.cancelled() => Err(RefreshError::Aborted),
        };
        let result = match result {
            // The job failed, but a newer token arrived while it ran (another node's refresh, an
            // import): that token is the outcome, not a failure to retry.
            Err(error) => match self.newer_than(credential.id, known_generation) {
                Some(token) if !matches!(error, RefreshError::Removed | RefreshError::Aborted) => {
                    tracing::debug!(key = %credential.key, error = %error, "refresh failed, but a newer token arrived meanwhile");
                    Ok(Refreshed {
                        token,
                        rotated: true,
                    })
                }
                _ => Err(error),
            },
            ok => ok,
        };
        self.finish(&credential, &reason, &result, started.elapsed());
        guard.disarm();
        drop(permit);
        let _ = sender.send(Some(result));
    }

    /// Records a job's outcome: state, schedule, what is served, logs and metrics. A credential
    /// removed meanwhile has no entry: its outcome is dropped.
    fn finish(
        &self,
        credential: &Credential,
        reason: &Reason,
        result: &RefreshResult,
        elapsed: Duration,
    ) {
        let key = &credential.key;
        let now = self.clock.now();
        let spec = credential.spec();
        let mut state = self.lock();
        let Some(entry) = state.entries.get_mut(&credential.id) else {
            tracing::debug!(key = %key, "refresh of a removed credential ended; result dropped");
            return;
        };
        entry.set_in_flight(None);
        let next = match result {
            Ok(refreshed) => {
                // The change feed may have delivered a newer generation while this job ran
                // (another node refreshed): never step back to the job's older token.
                let newer = entry
                    .token
                    .as_ref()
                    .filter(|current| current.generation > refreshed.token.generation)
                    .cloned();
                let refreshed = &match newer {
                    Some(token) => Refreshed {
                        token,
                        rotated: true,
                    },
                    None => refreshed.clone(),
                };
                if entry.status() == super::Status::NeedsAttention {
                    tracing::info!(key = %key, "credential recovered");
                }
                let next = entry.record_success(
                    refreshed,
                    spec.source.renewal(),
                    &spec.plan,
                    now,
                    random_unit(),
                );
                let outcome = if refreshed.rotated { "ok" } else { "unchanged" };
                entry.history.record(now, outcome);
                self.metrics.count_refresh(key.kind_name(), outcome);
                tracing::info!(
                    key = %key,
                    outcome,
                    reason = reason.name(),
                    duration_ms = elapsed.as_millis() as u64,
                    generation = refreshed.token.generation,
                    expires_in = refreshed.token.remaining(now).as_secs(),
                    "refresh"
                );
                next
            }
            Err(error) => {
                let (next, repeated) = entry.record_failure(error, &spec.plan, now, random_unit());
                let attempts = entry.attempts;
                let class = error.class();
                entry.history.record(now, class.as_str());
                if class == super::ErrorClass::Store {
                    self.metrics.count_store_error();
                }
                self.metrics.count_refresh(key.kind_name(), class.as_str());
                // Config errors repeat every few minutes until fixed: log them once.
                if class == super::ErrorClass::Config && repeated {
                    tracing::debug!(key = %key, errcode = error.errcode(), attempts, "refresh still rejected");
                } else {
                    tracing::warn!(
                        key = %key,
                        outcome = class.as_str(),
                        reason = reason.name(),
                        errcode = error.errcode(),
                        attempts,
                        duration_ms = elapsed.as_millis() as u64,
                        retry_in_ms = next.since(now).as_millis() as u64,
                        error = %error,
                        "refresh failed"
                    );
                }
                next
            }
        };
        self.plan_next(&mut state, credential.id, next);
    }

    /// Takes the lease (or waits for the holder's result), re-reads the store, asks WeChat and
    /// writes with compare-and-set.
    async fn refresh(
        self: &Arc<Self>,
        credential: &Arc<Credential>,
        reason: &Reason,
        known: Option<Token>,
    ) -> RefreshResult {
        let key = &credential.key;
        let mut feed = self.store.subscribe();
        let known_generation = known.as_ref().map_or(0, |t| t.generation);
        let give_up = Instant::now() + self.lease_ttl * 3;
        let (asked, stored) = loop {
            let asked = Instant::now();
            let taken = match self
                .store
                .acquire_lease_and_get(key, &self.node_id, self.lease_ttl)
                .await
            {
                Ok(taken) => taken,
                Err(e @ StoreError::Corrupt(_)) => {
                    // The lease was taken, the row could not be read: nothing to do without it.
                    let _ = self.store.release_lease(key, &self.node_id).await;
                    return Err(e.into());
                }
                Err(e) => match self.alone_base(credential, reason) {
                    Some(held) => {
                        tracing::warn!(
                            key = %key,
                            error = %e,
                            "the store does not answer and the token is about to expire: \
                             refreshing without the lease (WeChat gives every instance the same \
                             value for this credential)"
                        );
                        return self
                            .fetch_and_write(credential, reason, held, Coordination::Alone)
                            .await;
                    }
                    None => return Err(e.into()),
                },
            };
            if let Some(stored) = taken {
                break (asked, stored);
            }
            // Another node is refreshing this key: wait for its write rather than call WeChat.
            // The write may have reached this node before this job subscribed to the feed.
            if let Some(token) = self.newer_than(credential.id, known_generation) {
                return Ok(Refreshed {
                    token,
                    rotated: true,
                });
            }
            let wait_until = (Instant::now() + self.lease_wait_slice()).min(give_up);
            if let Some(token) = wait_for_change(&mut feed, key, known_generation, wait_until).await
            {
                return Ok(Refreshed {
                    token,
                    rotated: true,
                });
            }
            if let Some(stored) = self.store.get(key).await? {
                if stored.generation > known_generation {
                    return Ok(Refreshed {
                        token: stored,
                        rotated: true,
                    });
                }
            }
            if Instant::now() >= give_up {
                return Err(RefreshError::LeaseTimeout);
            }
        };
        let result = self
            .refresh_holding_lease(credential, reason, known_generation, asked, stored)
            .await;
        if let Err(e) = self.store.release_lease(key, &self.node_id).await {
            self.metrics.count_store_error();
            tracing::warn!(key = %key, error = %e, "could not release refresh lease; it will expire");
        }
        result
    }

    /// How long a job waits on the change feed for the lease holder's write before it re-reads
    /// the store and tries the lease again: a quarter of the lease TTL. Waiting a whole TTL per
    /// round would let a lease whose holder died sit expired for almost another TTL before anyone
    /// noticed; a quarter bounds the takeover at TTL + TTL/4 for two cheap store reads per round.
    fn lease_wait_slice(&self) -> Duration {
        (self.lease_ttl / 4).max(LEASE_WAIT_MIN_SLICE)
    }

    /// After this node's refresh for a report of `reported` failed: whether the token has been
    /// replaced anyway, by another node. The change feed may not have delivered that node's write
    /// yet (this node may just be waking from a freeze), so the store is asked too, and what it
    /// holds is adopted.
    pub(super) async fn replaced_elsewhere(&self, credential: &Credential, reported: &str) -> bool {
        if self.serves_other_than(credential.id, reported) {
            return true;
        }
        match self.store.get(&credential.key).await {
            Ok(Some(stored)) if stored.value != reported => {
                self.apply_change(&credential.key, stored);
                self.serves_other_than(credential.id, reported)
            }
            _ => false,
        }
    }

    /// Whether this node holds a token for `id` other than `value`.
    fn serves_other_than(&self, id: CredentialId, value: &str) -> bool {
        let state = self.lock();
        state
            .entries
            .get(&id)
            .and_then(|e| e.token.as_ref())
            .is_some_and(|t| t.value != value)
    }

    /// The token this node holds for `id`, if its generation is above `generation`.
    fn newer_than(&self, id: CredentialId, generation: u64) -> Option<Token> {
        let state = self.lock();
        state
            .entries
            .get(&id)
            .and_then(|e| e.token.as_ref())
            .filter(|t| t.generation > generation)
            .cloned()
    }

    /// The refresh once the lease is held: `stored` is what the store held when the lease was
    /// taken (asked for at `asked`).
    async fn refresh_holding_lease(
        self: &Arc<Self>,
        credential: &Arc<Credential>,
        reason: &Reason,
        known_generation: u64,
        asked: Instant,
        mut stored: Option<Token>,
    ) -> RefreshResult {
        let key = &credential.key;
        if let Some(held) = self.held_above(credential.id, stored.as_ref()) {
            stored = self.restore(key, held).await?;
        }
        if let Some(stored) = &stored {
            if stored.generation > known_generation && self.satisfies(credential, reason, stored) {
                // Someone else refreshed meanwhile: adopt their token, no upstream call.
                return Ok(Refreshed {
                    token: stored.clone(),
                    rotated: true,
                });
            }
        }
        let coordination = Coordination::Leased { asked };
        self.fetch_and_write(credential, reason, stored, coordination)
            .await
    }

    /// Asks WeChat and writes the result as the generation after `stored` (what the store holds,
    /// or, alone, what this node holds). A value WeChat re-sent unchanged is not written.
    pub(super) async fn fetch_and_write(
        self: &Arc<Self>,
        credential: &Arc<Credential>,
        reason: &Reason,
        stored: Option<Token>,
        coordination: Coordination,
    ) -> RefreshResult {
        let fetched = self
            .fetch(credential, reason, stored.as_ref(), coordination)
            .await?;
        let now = self.clock.now();
        if let Some(previous) = stored.as_ref().filter(|s| s.value == fetched.value) {
            // An `expires_in` of 0 says the same thing: the value ends now; ask again at once
            // (`Plan::after_unchanged` spaces the asks).
            // WeChat re-sent the value the hub has: keep its first-seen expiry, never extend it.
            let mut token = previous.clone();
            token.expires_at = previous.expires_at.min(now.plus(fetched.expires_in));
            return Ok(Refreshed {
                token,
                rotated: false,
            });
        }
        if fetched.expires_in.is_zero() {
            return Err(RefreshError::Upstream(UpstreamError::Transient {
                errcode: None,
                message: "malformed answer: a new value with expires_in 0".into(),
            }));
        }
        let token = Token {
            value: fetched.value,
            expires_at: now.plus(fetched.expires_in),
            fetched_at: now,
            generation: stored.as_ref().map_or(0, |s| s.generation) + 1,
        };
        if credential.is_retired() {
            return Err(RefreshError::Removed);
        }
        let outcome = self.write_fetched(credential, &token).await?;
        if credential.is_retired() {
            // Removed while the write was on its way: take the write back, if it was this one.
            // A refused write means the key holds someone else's newer value (the account put
            // back elsewhere, a refresh token rotated), which is not this refresh's to delete.
            if outcome == CasOutcome::Applied {
                let _ = self.store.delete(&credential.key).await;
            }
            return Err(RefreshError::Removed);
        }
        match outcome {
            CasOutcome::Applied => Ok(Refreshed {
                token,
                rotated: true,
            }),
            CasOutcome::Stale {
                current: Some(winner),
            } => Ok(Refreshed {
                token: winner,
                rotated: true,
            }),
            CasOutcome::Stale { current: None } => Err(RefreshError::WriteRefused),
        }
    }

    /// When the store does not answer: whether this refresh may go ahead alone, and on which
    /// token (what this node holds) — `Some` only for a scheduled or dependency refresh (never a
    /// force refresh) of a renewal WeChat answers the same for every caller, once the token is
    /// within `Plan::alone_within` of expiry. Earlier, waiting for the store is cheaper: every
    /// instance calling WeChat on its own costs calls, not tokens.
    fn alone_base(&self, credential: &Credential, reason: &Reason) -> Option<Option<Token>> {
        if !matches!(reason, Reason::Scheduled | Reason::Dependency) {
            return None;
        }
        let spec = credential.spec();
        let renewal = spec.source.renewal();
        let state = self.lock();
        let held = state.entries.get(&credential.id)?.token.clone();
        let now = self.clock.now();
        let near_expiry = held
            .as_ref()
            .is_none_or(|t| t.remaining(now) < spec.plan.alone_within(renewal, t.lifetime()));
        (renewal != Renewal::Legacy && near_expiry).then_some(held)
    }

    /// Whether a token another node stored makes this refresh unnecessary.
    fn satisfies(&self, credential: &Credential, reason: &Reason, stored: &Token) -> bool {
        let now = self.clock.now();
        match reason {
            Reason::Invalidated { reported } => *stored.value != **reported,
            Reason::Scheduled => {
                let spec = credential.spec();
                spec.plan.due_at(spec.source.renewal(), stored, 0.0) > now
            }
            Reason::Dependency => stored.is_valid_at(now.plus(DEPENDENCY_MIN_LIFE)),
            Reason::Admin { .. } => false,
        }
    }

    /// Re-takes (extends) the lease before an upstream call, so it outlives each call. Nothing
    /// to renew for a refresh that runs alone.
    pub(super) async fn renew_lease(
        &self,
        key: &CredentialKey,
        coordination: Coordination,
    ) -> Result<(), RefreshError> {
        let Coordination::Leased { asked } = coordination else {
            return Ok(());
        };
        if asked.elapsed() < LEASE_FRESH {
            // Taken just now (the common case: the first call of a refresh): the lease outlives
            // a call started now by more than the call's timeout, so a renewal would be a store
            // trip for nothing.
            return Ok(());
        }
        if self
            .store
            .acquire_lease(key, &self.node_id, self.lease_ttl)
            .await?
        {
            Ok(())
        } else {
            Err(RefreshError::LeaseLost)
        }
    }
}
