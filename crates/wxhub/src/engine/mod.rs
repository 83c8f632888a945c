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
//! - this file — the engine's core: the handle, what it shares with its tasks and jobs, applying a
//!   registry change, adopting and serving tokens, refreshing on demand, shutdown;
//! - [`state`] — per-credential state, the deadline queue and the rules that change them (pure);
//! - [`crate::plan`] — the refresh timing rules (pure);
//! - [`job`] — one refresh: single-flight, lease, re-read, compare-and-set;
//! - [`write_back`] — a fetched token written (and kept offered while the store does not answer),
//!   and a store that lost data restored;
//! - [`fetch`] — how each kind of credential is asked of WeChat;
//! - [`component`] — the third-party platform's credentials and the values WeChat pushes;
//! - [`report`] — a consumer's report of a refused token, checked with WeChat before it refreshes;
//! - [`check`] — the periodic check of served tokens;
//! - [`budget`] — the daily budget of force refreshes;
//! - [`import`] — tokens another system fetched, taken over;
//! - [`views`] — what operators and the metrics see;
//! - [`tasks`] — the scheduler, the change feed and the store health check;
//! - [`clock`] — the injected clock; [`error`] — typed failures.
//!
//! Credentials come and go at runtime ([`Engine::track`], [`Engine::untrack`]): the registry owns
//! which exist, the engine keeps those it is given fresh. A removed credential's running refresh
//! is dropped, never written back.

mod budget;
mod check;
pub mod clock;
mod component;
pub mod error;
mod fetch;
mod import;
mod job;
mod pushed;
mod report;
pub mod state;
pub mod suite;
mod tally;
mod tasks;
mod views;
mod write_back;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::configuration::Settings;
use crate::kinds::{CredentialKey, Role};
use crate::metrics::Metrics;
use crate::read::{Credential, CredentialId, ReadIndex, Served};
use crate::registry::Diff;
use crate::store::Store;
use crate::token::{Timestamp, Token};
use crate::upstream::Upstream;
use clock::Clock;
pub use component::{refresh_token_expiry, Written};
pub use error::{ErrorClass, RefreshError};
pub use import::ImportError;
pub use report::Invalidation;
use state::{State, Status};
pub use views::CredentialStatus;

/// What the store held for the credentials being added, by key: [`Engine::apply`] takes each
/// one's token out. A hash map: at a start it holds every stored token (200,000 at 100,000
/// authorizers), and ordering them cost a sort and a tree walk per credential.
pub type StoredTokens = HashMap<CredentialKey, Token>;

/// Scheduled jobs per upstream call slot. A job spends part of its time on the store (taking the
/// lease, re-reading, writing durably, releasing); with one job per slot the slots sit idle
/// meanwhile, and a bulk refresh (a cold start, an authorizer recovery) runs well below the rate
/// the concurrency allows. Two keeps a second job ready for each slot.
const JOB_SLOTS_PER_CALL: usize = 2;

/// How much longer than one upstream call's timeout a refresh lease lasts: a call started
/// within the lease's first `LEASE_MARGIN` ends before it expires.
const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// A token with less life than this left is not handed to a dependent fetch (a ticket fetch):
/// it could die on the way.
const DEPENDENCY_MIN_LIFE: Duration = Duration::from_secs(1);
/// How long a platform's component token waits at startup for the first verify ticket when the
/// store holds none (a push kicks it at once; see `Engine::kick`) before it is tried anyway: a
/// fetch without a ticket could only fail.
pub const FIRST_TICKET_WAIT: Duration = Duration::from_secs(60);

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

/// State shared by the engine handle, its background tasks and its refresh jobs.
struct Shared {
    /// The mutable part. Never held across an `.await`.
    state: Mutex<State>,
    /// Credentials by state, the same tally `state` keeps, read without its lock.
    tally: Arc<tally::StatusTally>,
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
    read_index: Arc<ReadIndex>,
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
    pub read_index: Arc<ReadIndex>,
}

impl Engine {
    /// Builds an engine with no credentials yet ([`Engine::track`] adds them).
    pub fn new(settings: &Settings, parts: EngineParts) -> Engine {
        let EngineParts {
            store,
            upstream,
            metrics,
            clock,
            read_index,
        } = parts;
        let state = State::default();
        let tally = state.tally.clone();
        Engine {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                tally,
                scheduler_wakeup: Notify::new(),
                workers: Arc::new(Semaphore::new(
                    settings.refresh.concurrency.max(1) * JOB_SLOTS_PER_CALL,
                )),
                store,
                upstream,
                lease_ttl: settings.wechat.timeout + LEASE_MARGIN,
                node_id: format!("{:016x}", rand::thread_rng().gen::<u64>()),
                force_reserve: settings.refresh.force_reserve,
                metrics,
                clock,
                read_index,
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

    /// Applies a registry change made here: starts the added credentials (serving what `stored`
    /// holds for them if it is still valid, else refreshing them at once), re-plans the changed
    /// ones, stops the removed ones and deletes their stored tokens.
    pub async fn apply(&self, diff: Diff, stored: StoredTokens) {
        let removed = self.follow(diff, stored);
        let shared = &self.shared;
        for credential in &removed {
            if let Err(e) = shared.store.delete(&credential.key).await {
                shared.metrics.count_store_error();
                tracing::warn!(key = %credential.key, error = %e, "could not delete the stored token of a removed credential");
            }
        }
    }

    /// Applies a registry change another instance made, as [`Engine::apply`] does but leaving
    /// the store alone: that instance deleted what it removed, and by the time the change
    /// arrives here the same key may hold a newer account's token (removed and added again), or
    /// a refresh token or permanent code that cannot be fetched again. Returns the removed
    /// credentials.
    pub fn follow(&self, diff: Diff, mut stored: StoredTokens) -> Vec<Arc<Credential>> {
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
        diff.removed
    }

    /// Waits for the first refresh of `credential` (joining the one running, or starting one)
    /// and returns what is served afterwards, if anything.
    pub async fn first_result(&self, credential: &Arc<Credential>) -> Result<(), RefreshError> {
        let receiver = {
            let mut state = self.shared.lock();
            if state
                .entries
                .get(&credential.id)
                .is_some_and(|e| e.token.is_some() && e.in_flight().is_none())
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

    /// Whether `credential` is fetched with a verify ticket that neither the engine nor `stored`
    /// (what the store held for the credentials being added) has: the first one has yet to be
    /// pushed.
    fn awaits_first_ticket(
        &self,
        state: &State,
        stored: &StoredTokens,
        credential: &Credential,
        now: Timestamp,
    ) -> bool {
        let usable = |token: &Token| token.is_valid_at(now.plus(DEPENDENCY_MIN_LIFE));
        credential.spec().fetched_with.iter().any(|key| {
            key.role == Role::PushedTicket
                && !stored.get(key).is_some_and(usable)
                && !self.read_index.by_key(key).is_some_and(|ticket| {
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
        entry.adopt(token);
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
                serve(
                    &self.read_index,
                    &entry.credential,
                    token,
                    token.expires_at,
                    self.clock.now(),
                );
            }
            return;
        }
        entry.next_refresh = Some(next);
        if let Some(token) = &entry.token {
            serve(
                &self.read_index,
                &entry.credential,
                token,
                next,
                self.clock.now(),
            );
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
        let Some(id) = self.read_index.by_key(key).map(|c| c.id) else {
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
        if entry.in_flight().is_some() {
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
        serve(
            &self.read_index,
            &entry.credential,
            &token,
            next,
            self.clock.now(),
        );
        entry.token = Some(token);
    }
}

/// Renders `token` into `credential`'s slot, with consumers told to come back shortly after
/// `next` (docs/architecture.md#what-consumers-are-told). Every token served, from this
/// instance's refresh or another's (through the change feed), passes here: the hub announces a
/// new generation to watchers and remembers the replaced value for its overlap. `now` is when.
fn serve(
    read_index: &ReadIndex,
    credential: &Arc<Credential>,
    token: &Token,
    next: Timestamp,
    now: Timestamp,
) {
    let spec = credential.spec();
    let serve_until = spec.plan.serve_until(spec.source.renewal(), token, next);
    if !spec.source.is_served() {
        // Never handed to anyone: the engine's state is its only copy in memory.
        return;
    }
    read_index.publish(
        credential,
        Served::new(spec.source.field(), token, serve_until),
        token.fetched_at,
        now,
    );
}

/// The receiving end of a refresh job's result.
type JobReceiver = watch::Receiver<Option<state::RefreshResult>>;
