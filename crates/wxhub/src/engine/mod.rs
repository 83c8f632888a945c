//! The engine: decides when each credential is due and performs refreshes, at most one per key at
//! a time in the whole cluster. See `docs/architecture.md#engine`.
//!
//! Shape (after `tokio-rs/mini-redis`'s `db.rs`): one [`Shared`] behind an `Arc`, whose mutable part
//! ([`state::State`]) sits under a std `Mutex` held only for short, non-async sections. One
//! background task, the scheduler, pops due keys from a `BTreeMap` of deadlines and is woken by a
//! `Notify` whenever the earliest deadline may have changed. It only starts a refresh when a job
//! slot is free; the upstream client admits at most `[refresh] concurrency` calls at once,
//! whoever makes them.
//!
//! The parts, one concern each:
//! - [`state`] — per-credential state, the deadline queue and the rules that change them (pure);
//! - [`plan`] — the refresh timing rules (pure);
//! - [`job`] — one refresh: single-flight, lease, re-read, compare-and-set;
//! - [`fetch`] — how each kind of credential is asked of WeChat;
//! - [`tasks`] — the scheduler, the change feed and the store health check;
//! - [`clock`] — the injected clock; [`error`] — typed failures.
//!
//! Credentials come and go at runtime ([`Engine::track`], [`Engine::untrack`]): the registry owns
//! which exist, the engine keeps those it is given fresh. A removed credential's running refresh
//! is dropped, never written back.

mod check;
pub mod clock;
pub mod error;
mod fetch;
mod job;
mod platform;
pub mod state;
mod tasks;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::configuration::Settings;
use crate::credential::{CredentialKey, Timestamp, Token};
use crate::history::HistoryPoint;
use crate::hub::{Credential, CredentialId, Hub, Served};
use crate::metrics::{InvalidationOutcome, Metrics};
use crate::registry::Diff;
use crate::store::{CasOutcome, Store, StoreError};
use crate::upstream::Upstream;
use crate::upstream::UpstreamError;
use clock::Clock;
pub use error::{ErrorClass, RefreshError};
pub use platform::{refresh_token_expiry, Written};
use state::{LastError, ReportDecision, State, Status, Verdict};

/// Daily budget of `stable_token` force refreshes per appid (docs/wechat.md#stable_token).
const FORCE_REFRESH_DAILY_LIMIT: u32 = 20;

/// Scheduled jobs per upstream call slot. A job spends part of its time on the store (taking the
/// lease, re-reading, writing durably, releasing); with one job per slot the slots sit idle
/// meanwhile, and a bulk refresh (a cold start, an authorizer recovery) runs well below the rate
/// the concurrency allows. Two keeps a second job ready for each slot.
const JOB_SLOTS_PER_CALL: usize = 2;
/// A token with less life than this left is not handed to a dependent fetch (a ticket fetch):
/// it could die on the way.
const DEPENDENCY_MIN_LIFE: Duration = Duration::from_secs(1);
/// How long a platform's component token waits at startup for the first verify ticket when the
/// store holds none (a push kicks it at once; see `Engine::kick`) before it is tried anyway: a
/// fetch without a ticket could only fail.
pub const FIRST_TICKET_WAIT: Duration = Duration::from_secs(60);
/// How long WeChat's word that a value is alive answers further reports of it without a new check.
const ALIVE_REUSE: Duration = Duration::from_secs(5);
/// WeChat's day (for the force-refresh budget) is the calendar day in UTC+8.
const WECHAT_DAY_OFFSET_SECS: i64 = 8 * 3600;

/// Why a refresh was started; it decides how WeChat is asked (normal or force mode) and whether a
/// token found in the store makes the refresh unnecessary.
#[derive(Clone, Debug)]
enum Reason {
    /// The scheduler found the key due.
    Scheduled,
    /// A consumer reported this value as dead (compare-and-refresh).
    Invalidated { reported: Arc<str> },
    /// An operator asked for a refresh now; `force` asks stable mode for a force refresh.
    Admin { force: bool },
    /// A dependent credential (a ticket) needs a usable token and there is none.
    Dependency,
}

impl Reason {
    fn name(&self) -> &'static str {
        match self {
            Reason::Scheduled => "scheduled",
            Reason::Invalidated { .. } => "invalidated",
            Reason::Admin { .. } => "admin",
            Reason::Dependency => "dependency",
        }
    }
}

/// What a consumer's invalidation report led to.
pub struct Invalidation {
    /// The token to hand back (the current one, possibly just refreshed).
    pub served: Arc<Served>,
    /// Whether the report was stale, caused a refresh, was throttled or rejected.
    pub outcome: InvalidationOutcome,
}

/// What a force refresh is for: it decides how much of the day's budget it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ForcePurpose {
    /// A report WeChat confirmed: may use the whole budget.
    Verified,
    /// An admin refresh or a last-resort renewal: stops short of `force_reserve`.
    Unreserved,
}

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

/// Why an imported token was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A refresh is running (here or on another instance): importing now could be overwritten.
    #[error("a refresh of this credential is in progress; try again in a few seconds")]
    Busy,
    /// The store holds a newer generation than the caller expected.
    #[error("the store holds generation {stored}, newer than the import expects")]
    Newer {
        /// What the store holds.
        stored: u64,
    },
    /// The token is already expired or has no life.
    #[error("expires_in must be between 1 and 7200 seconds")]
    Lifetime,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// State shared by the engine handle, its background tasks and its refresh jobs.
struct Shared {
    /// The mutable part. Never held across an `.await`.
    state: Mutex<State>,
    /// Wakes the scheduler when the earliest deadline may have moved.
    scheduler_wakeup: Notify,
    /// Scheduled-job slots: the scheduler starts a job only with one in hand. Twice the upstream
    /// concurrency, so that while `concurrency` jobs wait on WeChat as many more do their store
    /// work (lease, re-read, durable write); the upstream client itself keeps the calls in flight
    /// within `[refresh] concurrency` (see [`JOB_SLOTS_PER_CALL`]).
    workers: Arc<Semaphore>,
    /// Where tokens are persisted and leases taken.
    store: Arc<dyn Store>,
    /// WeChat.
    upstream: Upstream,
    /// How long a refresh lease lives: one upstream timeout plus a margin. Renewed before each
    /// upstream call, so a holder that dies frees the key within one TTL.
    lease_ttl: Duration,
    /// This process's lease owner id (unique per start).
    node_id: String,
    /// `[refresh] force_reserve`.
    force_reserve: u32,
    /// Where refreshes and invalidations are counted.
    metrics: Arc<Metrics>,
    /// What time it is.
    clock: Arc<dyn Clock>,
    /// The read side's index, to find a credential by key.
    hub: Arc<Hub>,
    /// Cancelled at shutdown: every background task and job sees it at once.
    cancel: CancellationToken,
    /// The background tasks and refresh jobs, awaited (within a deadline) at shutdown.
    tasks: TaskTracker,
}

/// Handle to the refresh engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// The components the engine is built from.
pub struct EngineParts {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The WeChat client.
    pub upstream: Upstream,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The clock (the system clock outside tests).
    pub clock: Arc<dyn Clock>,
    /// The read side's index, to find a credential by key (the change feed names keys).
    pub hub: Arc<Hub>,
}

impl Engine {
    /// Builds an engine with no credentials yet ([`Engine::track`] adds them).
    pub fn new(settings: &Settings, parts: EngineParts) -> Engine {
        let EngineParts {
            store,
            upstream,
            metrics,
            clock,
            hub,
        } = parts;
        Engine {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                scheduler_wakeup: Notify::new(),
                workers: Arc::new(Semaphore::new(
                    settings.refresh.concurrency.max(1) * JOB_SLOTS_PER_CALL,
                )),
                store,
                upstream,
                lease_ttl: settings.wechat.timeout + Duration::from_secs(2),
                node_id: format!("{:016x}", rand::thread_rng().gen::<u64>()),
                force_reserve: settings.refresh.force_reserve,
                metrics,
                clock,
                hub,
                cancel: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Starts the scheduler, the change-feed listener and the store health check.
    pub fn start(&self) {
        let shared = &self.shared;
        let feed = shared.store.subscribe();
        let resync = shared.store.subscribe_resync();
        shared.tasks.spawn(tasks::run_scheduler(shared.clone()));
        shared
            .tasks
            .spawn(tasks::run_change_feed(shared.clone(), feed, resync));
        shared.tasks.spawn(tasks::run_store_health(shared.clone()));
        shared.tasks.spawn(check::run_token_checks(shared.clone()));
    }

    /// Applies a registry change: starts the added credentials (serving what `stored` holds for
    /// them if it is still valid, else refreshing them at once), re-plans the changed ones, stops
    /// the removed ones and deletes their stored tokens.
    pub async fn apply(&self, diff: Diff, mut stored: BTreeMap<CredentialKey, Token>) {
        let shared = &self.shared;
        let now = shared.clock.now();
        {
            let mut state = shared.lock();
            state.entries.reserve(diff.added.len());
            for credential in &diff.added {
                state.insert(credential.clone());
                // Moved, not copied: at startup `stored` holds every token in the store.
                match stored
                    .remove(&credential.key)
                    .filter(|t| t.is_valid_at(now.plus(DEPENDENCY_MIN_LIFE)))
                {
                    Some(token) => shared.adopt(&mut state, credential.id, token, now),
                    // A pushed value (a verify ticket, a refresh token) cannot be fetched.
                    None if credential.spec().pushed => {}
                    None if shared.awaits_first_ticket(&state, &stored, credential, now) => {
                        state.schedule(credential.id, now.plus(FIRST_TICKET_WAIT));
                    }
                    None => state.schedule(credential.id, now),
                }
            }
            for credential in &diff.changed {
                state.follow_check_plan(credential);
                let token = state
                    .entries
                    .get(&credential.id)
                    .and_then(|e| e.token.clone());
                match token {
                    Some(token) => shared.adopt(&mut state, credential.id, token, now),
                    None => state.schedule(credential.id, now),
                }
            }
            for credential in &diff.removed {
                state.remove(credential.id);
            }
        }
        shared.scheduler_wakeup.notify_one();
        for credential in &diff.removed {
            if let Err(e) = shared.store.delete(&credential.key).await {
                shared.metrics.count_store_error();
                tracing::warn!(key = %credential.key, error = %e, "could not delete the stored token of a removed credential");
            }
        }
    }

    /// Waits for the first refresh of `credential` (joining the one running, or starting one)
    /// and returns what is served afterwards, if anything.
    pub async fn first_result(&self, credential: &Arc<Credential>) -> Result<(), RefreshError> {
        let receiver = {
            let mut state = self.shared.lock();
            if state
                .entries
                .get(&credential.id)
                .is_some_and(|e| e.token.is_some() && e.in_flight.is_none())
            {
                return Ok(());
            }
            self.shared
                .start_or_join(&mut state, credential, Reason::Scheduled, None)
        };
        match receiver {
            Some((receiver, _)) => job::wait_for(receiver).await.map(|_| ()),
            None => Err(RefreshError::Removed),
        }
    }

    /// Stops the engine: no new refresh starts, background tasks end, and running refreshes get
    /// until `deadline` to finish before they are dropped (a dropped job writes nothing).
    pub async fn shutdown(&self, deadline: Duration) {
        let shared = &self.shared;
        shared.lock().shutdown = true;
        shared.cancel.cancel();
        shared.scheduler_wakeup.notify_one();
        shared.tasks.close();
        if tokio::time::timeout(deadline, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                deadline_ms = deadline.as_millis() as u64,
                "refreshes still running at the shutdown deadline were dropped"
            );
        }
    }

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
                    ReportDecision::Refresh if !checked && entry.in_flight.is_none() => None,
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

    /// Whether `credential`'s token is younger than `min_refresh_interval` (an admin refresh then
    /// needs `force`).
    pub fn too_young_to_refresh(&self, credential: &Credential) -> bool {
        let state = self.shared.lock();
        let now = self.shared.clock.now();
        state
            .entries
            .get(&credential.id)
            .and_then(|e| e.token.as_ref())
            .is_some_and(|t| credential.spec().plan.too_young_to_force(t, now))
    }

    /// Refreshes `credential` now (still single-flight) and returns what is served afterwards.
    /// With `force`, a stable-mode token is force-refreshed (within the budget outside
    /// `force_reserve`).
    pub async fn refresh_now(
        &self,
        credential: &Arc<Credential>,
        force: bool,
    ) -> Result<Arc<Served>, RefreshError> {
        let receiver = {
            let mut state = self.shared.lock();
            self.shared
                .start_or_join(&mut state, credential, Reason::Admin { force }, None)
        };
        let (receiver, _) = receiver.ok_or(RefreshError::Removed)?;
        job::wait_for(receiver).await?;
        credential.slot.load().ok_or(RefreshError::Aborted)
    }

    /// Stores a live token another system fetched, as the next generation, and serves it: moving
    /// an app onto the hub in legacy mode then does not kill the token its servers use. Refused
    /// while a refresh runs anywhere (the lease is taken for the write) and, when
    /// `expected_generation` is given, if the store holds a newer one.
    pub async fn import(
        &self,
        credential: &Arc<Credential>,
        value: String,
        expires_in: Duration,
        expected_generation: Option<u64>,
    ) -> Result<Token, ImportError> {
        if expires_in.is_zero() || expires_in > Duration::from_secs(7200) {
            return Err(ImportError::Lifetime);
        }
        let shared = &self.shared;
        let key = &credential.key;
        if !shared
            .store
            .acquire_lease(key, &shared.node_id, shared.lease_ttl)
            .await?
        {
            return Err(ImportError::Busy);
        }
        let result = async {
            let stored = shared.store.get(key).await?;
            let stored_generation = stored.as_ref().map_or(0, |t| t.generation);
            if expected_generation.is_some_and(|g| stored_generation > g) {
                return Err(ImportError::Newer {
                    stored: stored_generation,
                });
            }
            let now = shared.clock.now();
            let token = Token {
                value,
                expires_at: now.plus(expires_in),
                fetched_at: now,
                generation: stored_generation + 1,
            };
            match shared.store.compare_and_set(key, &token).await? {
                CasOutcome::Applied => Ok(token),
                CasOutcome::Stale { current } => Err(ImportError::Newer {
                    stored: current.map_or(0, |t| t.generation),
                }),
            }
        }
        .await;
        let _ = shared.store.release_lease(key, &shared.node_id).await;
        let token = result?;
        shared.apply_change(key, token.clone());
        Ok(token)
    }

    /// Every credential's state, for operators, in key order.
    pub fn credentials(&self) -> Vec<CredentialStatus> {
        let now = self.shared.clock.now();
        let state = self.shared.lock();
        let mut all: Vec<CredentialStatus> =
            state.entries.values().map(|e| status_of(e, now)).collect();
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
            .map(|e| status_of(e, now))
            .collect()
    }

    /// How many credentials are in each (kind, state), for the metrics: a count, so a scrape costs
    /// one short walk and no allocation per credential.
    pub fn state_counts(&self) -> BTreeMap<(&'static str, Status), u64> {
        let state = self.shared.lock();
        let mut counts = BTreeMap::new();
        for entry in state.entries.values() {
            let status = if entry.in_flight.is_some() {
                Status::Refreshing
            } else {
                entry.status
            };
            *counts
                .entry((entry.credential.key.kind_name(), status))
                .or_default() += 1;
        }
        counts
    }

    /// Stable-mode force refreshes left today for each access token defined in the configuration
    /// file (as this instance last learned from the store), while there are at most `limit` of
    /// them; `None` above that (the metrics then carry aggregates only).
    pub fn force_budgets(&self, limit: usize) -> Option<Vec<(String, u32)>> {
        let today = wechat_day(self.shared.clock.now());
        let state = self.shared.lock();
        let mut budgets = Vec::new();
        for entry in state.entries.values() {
            if !entry.credential.is_configured_stable_token() {
                continue;
            }
            if budgets.len() == limit {
                return None;
            }
            let used = if entry.force_day == today {
                entry.force_used
            } else {
                0
            };
            budgets.push((
                entry.credential.key.to_string(),
                FORCE_REFRESH_DAILY_LIMIT.saturating_sub(used),
            ));
        }
        Some(budgets)
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
}

/// What operators see of one credential on WeChat day `today`.
fn status_of(entry: &state::Entry, now: Timestamp) -> CredentialStatus {
    let today = wechat_day(now);
    let key = &entry.credential.key;
    CredentialStatus {
        key: key.to_string(),
        kind: key.kind_name(),
        origin: entry.credential.origin(),
        state: if entry.in_flight.is_some() {
            Status::Refreshing
        } else {
            entry.status
        },
        generation: entry.token.as_ref().map(|t| t.generation),
        expires_at: entry.token.as_ref().map(|t| t.expires_at.to_rfc3339()),
        next_refresh: entry.next_refresh.map(Timestamp::to_rfc3339),
        attempts: entry.attempts,
        last_error: entry.current_error().cloned(),
        previous_error: entry.recovered_error().cloned(),
        warning: entry.warning.clone(),
        force_refreshes_today: if entry.force_day == today {
            entry.force_used
        } else {
            0
        },
        force_refresh_budget: entry
            .credential
            .has_force_budget()
            .then_some(FORCE_REFRESH_DAILY_LIMIT),
        never_expires: matches!(key, CredentialKey::AuthorizerRefreshToken { .. }),
        rejected_reports: entry.rejected_reports,
        fetched_at: entry.token.as_ref().map(|t| t.fetched_at.to_rfc3339()),
        history: entry.history.recent(now),
    }
}

/// The WeChat day number of `now` (calendar day in UTC+8).
fn wechat_day(now: Timestamp) -> i64 {
    (now.as_secs() + WECHAT_DAY_OFFSET_SECS).div_euclid(86_400)
}

/// Uniform random number in `[0, 1)` for jitter.
fn random_unit() -> f64 {
    rand::thread_rng().gen::<f64>()
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections never panic by design; if one did, the state is still consistent
        // enough to keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

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

    /// Whether `credential` is fetched with a verify ticket that neither the engine nor `stored`
    /// (what the store held for the credentials being added) has: the first one has yet to be
    /// pushed.
    fn awaits_first_ticket(
        &self,
        state: &State,
        stored: &BTreeMap<CredentialKey, Token>,
        credential: &Credential,
        now: Timestamp,
    ) -> bool {
        let usable = |token: &Token| token.is_valid_at(now.plus(DEPENDENCY_MIN_LIFE));
        credential.spec().fetched_with.iter().any(|key| {
            matches!(key, CredentialKey::ComponentVerifyTicket { .. })
                && !stored.get(key).is_some_and(usable)
                && !self.hub.by_key(key).is_some_and(|ticket| {
                    state
                        .entries
                        .get(&ticket.id)
                        .and_then(|e| e.token.as_ref())
                        .is_some_and(usable)
                })
        })
    }

    /// Takes `token` as current for `id` (from the store at startup or the change feed), plans its
    /// next refresh and serves it.
    fn adopt(&self, state: &mut State, id: CredentialId, token: Token, now: Timestamp) {
        let Some(entry) = state.entries.get_mut(&id) else {
            return;
        };
        let spec = entry.credential.spec();
        let next = spec
            .plan
            .due_at(spec.source.renewal(), &token, random_unit())
            .max(now);
        entry.token = Some(token);
        entry.status = Status::Fresh;
        self.plan_next(state, id, next);
    }

    /// Schedules the next refresh of `id` at `next` and re-renders what consumers are served, whose
    /// `expires_in` depends on that plan.
    fn plan_next(&self, state: &mut State, id: CredentialId, next: Timestamp) {
        let Some(entry) = state.entries.get_mut(&id) else {
            return;
        };
        if entry.credential.spec().pushed {
            // Pushed by WeChat, never scheduled: see `platform::PushedValue`.
            entry.next_refresh = None;
            if let Some(token) = &entry.token {
                serve(&self.hub, &entry.credential, token, token.expires_at);
            }
            return;
        }
        entry.next_refresh = Some(next);
        if let Some(token) = &entry.token {
            serve(&self.hub, &entry.credential, token, next);
        }
        state.schedule(id, next);
        self.scheduler_wakeup.notify_one();
    }

    /// Adopts a token written elsewhere if it is newer than what this node has.
    ///
    /// Newer means a higher generation, or the same generation with another value: that happens
    /// only when this node serves a token the store never took (fetched while the store did not
    /// answer, then beaten by another node's write), and the store's word wins.
    fn apply_change(&self, key: &CredentialKey, token: Token) {
        let Some(id) = self.hub.by_key(key).map(|c| c.id) else {
            return;
        };
        let mut state = self.lock();
        let Some(entry) = state.entries.get(&id) else {
            return;
        };
        let newer = entry.token.as_ref().is_none_or(|current| {
            token.generation > current.generation
                || (token.generation == current.generation && token.value != current.value)
        });
        if !newer {
            return;
        }
        if entry.in_flight.is_some() {
            // The running job will adopt it through the lease/re-read path; serve it already.
            self.serve_in_flight(&mut state, id, token);
            return;
        }
        self.adopt(&mut state, id, token, self.clock.now());
    }

    /// Serves `token` for `id` while a job is running, without touching the job's plans: the job
    /// records its own outcome when it ends.
    fn serve_in_flight(&self, state: &mut State, id: CredentialId, token: Token) {
        let Some(entry) = state.entries.get_mut(&id) else {
            return;
        };
        let next = entry.next_refresh.unwrap_or_else(|| self.clock.now());
        serve(&self.hub, &entry.credential, &token, next);
        entry.token = Some(token);
    }

    /// Spends one of today's `stable_token` force refreshes of `credential`, counted in the store
    /// for the whole cluster, if `purpose` may still use one.
    async fn take_force_budget(&self, credential: &Credential, purpose: ForcePurpose) -> bool {
        let today = wechat_day(self.clock.now());
        let limit = match purpose {
            ForcePurpose::Verified => FORCE_REFRESH_DAILY_LIMIT,
            ForcePurpose::Unreserved => {
                FORCE_REFRESH_DAILY_LIMIT.saturating_sub(self.force_reserve)
            }
        };
        let spent = self
            .store
            .spend_force(&credential.key.storage_key(), today, limit)
            .await;
        let mut state = self.lock();
        let Some(entry) = state.entries.get_mut(&credential.id) else {
            return false;
        };
        match spent {
            Ok(Some(used)) => {
                entry.force_day = today;
                entry.force_used = used;
                true
            }
            Ok(None) => {
                entry.force_day = today;
                entry.force_used = entry.force_used.max(limit);
                entry.warning = Some(match purpose {
                    ForcePurpose::Verified => format!(
                        "the daily budget of {FORCE_REFRESH_DAILY_LIMIT} force refreshes is spent"
                    ),
                    ForcePurpose::Unreserved => format!(
                        "force refreshes other than for confirmed invalidations stop at {limit} a \
                         day ({} kept in reserve)",
                        self.force_reserve
                    ),
                });
                false
            }
            Err(e) => {
                self.metrics.count_store_error();
                tracing::warn!(key = %credential.key, error = %e, "cannot count a force refresh in the store; not forcing");
                false
            }
        }
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
        let work = credential.spec().source.checked_at()? == crate::registry::CheckedAt::Work;
        let mut receiver = {
            let mut state = self.lock();
            let now = self.clock.now();
            let entry = state.entries.get_mut(&credential.id)?;
            let current = entry.token.as_ref()?;
            if current.value != reported || entry.in_flight.is_some() {
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

/// Renders `token` into `credential`'s slot, with consumers told to come back shortly after
/// `next` (docs/architecture.md#what-consumers-are-told). Every token served, from this
/// instance's refresh or another's (through the change feed), passes here: the hub announces a
/// new generation to watchers and remembers the replaced value for its overlap.
fn serve(hub: &Hub, credential: &Arc<Credential>, token: &Token, next: Timestamp) {
    let spec = credential.spec();
    let serve_until = spec.plan.serve_until(spec.source.renewal(), token, next);
    if !spec.source.is_served() {
        // Never handed to anyone: the engine's state is its only copy in memory.
        return;
    }
    hub.publish(
        credential,
        Served::new(spec.source.field(), token, serve_until),
        token.fetched_at,
    );
}

/// The receiving end of a refresh job's result.
type JobReceiver = watch::Receiver<Option<state::RefreshResult>>;
