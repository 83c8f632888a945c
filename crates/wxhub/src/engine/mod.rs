//! The engine: decides when each credential is due and performs refreshes, at most one per key at
//! a time in the whole cluster.
//!
//! Shape (after `tokio-rs/mini-redis`'s `db.rs`): one [`Shared`] behind an `Arc`, whose mutable part
//! ([`State`]) sits under a std `Mutex` held only for short, non-async sections. One background
//! task, the scheduler, pops due keys from a `BTreeMap` of deadlines and is woken by a `Notify`
//! whenever the earliest deadline may have changed. It only starts a refresh when a worker permit
//! is free, so upstream calls in flight never exceed `[refresh] concurrency`.
//!
//! A refresh of one key is single-flight at three levels:
//! 1. in process — a second request for the same key joins the running job (a `watch` channel);
//! 2. across nodes — the job first takes the key's lease in the store; a node that cannot get it
//!    waits for the holder's write on the change feed instead of calling WeChat;
//! 3. after the lease is won — the store is re-read, since another node may have refreshed
//!    meanwhile; its token is adopted without an upstream call.
//!
//! Writes use the store's compare-and-set on generation, so a slow refresher can never put an
//! older token back.
//!
//! When the store stops answering (Redis down), every node keeps serving what it holds while it is
//! valid; refreshes fail without calling WeChat (no lease, no refresh) and are retried, and a
//! background check ([`run_store_health`]) reports the outage and re-plans them as soon as the
//! store answers again.

pub mod plan;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::sync::{broadcast, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::configuration::{Secret, Settings, TokenMode};
use crate::credential::{CorpTicketKind, CredentialKey, TicketKind, Timestamp, Token};
use crate::history::{History, HistoryPoint};
use crate::hub::{Hub, KeyId, Served};
use crate::metrics::{InvalidationOutcome, Metrics};
use crate::store::{CasOutcome, Change, Store, StoreError};
use crate::upstream::{Fetched, Upstream, UpstreamError};
use plan::{FailureClass, Plan, Renewal};

/// Daily budget of `stable_token` force refreshes per appid (spec §2).
const FORCE_REFRESH_DAILY_LIMIT: u32 = 20;
/// A token with less life than this left is not handed to a dependent fetch (a ticket fetch):
/// it could die on the way.
const DEPENDENCY_MIN_LIFE: Duration = Duration::from_secs(1);
/// WeChat's day (for the force-refresh budget) is the calendar day in UTC+8.
const WECHAT_DAY_OFFSET_SECS: i64 = 8 * 3600;
/// Shortest slice a job waits on the change feed for another node's refresh before it re-reads
/// the store and tries the lease again (see [`Shared::lease_wait_slice`]).
const LEASE_WAIT_MIN_SLICE: Duration = Duration::from_millis(250);
/// First pause between attempts to write a token fetched while the store does not answer; it
/// doubles up to [`UNWRITTEN_RETRY_MAX`].
const UNWRITTEN_RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest pause between those attempts. Short, so that the write lands as soon as the store is
/// back, before another node takes the (by then expired) lease and fetches again.
const UNWRITTEN_RETRY_MAX: Duration = Duration::from_millis(500);
/// How often the engine checks that the store answers: how soon an outage shows as degraded, and
/// how soon held-back refreshes resume after it.
const STORE_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How long one of those checks waits for the store's answer.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Refreshes that failed on the store are re-planned within this after the store answers again,
/// spread at random so that the nodes of a cluster do not all ask at the same instant.
const STORE_RECOVERY_SPREAD: Duration = Duration::from_millis(250);

/// How one credential is obtained from WeChat.
enum Source {
    /// An official account or mini program token.
    App {
        appid: String,
        secret: Secret,
        mode: TokenMode,
    },
    /// A JS-SDK ticket, fetched with the access token `access_token`.
    AppTicket {
        access_token: KeyId,
        kind: TicketKind,
    },
    /// A Work WeChat app token.
    Corp { corpid: String, secret: Secret },
    /// A Work WeChat ticket, fetched with the corp app token `access_token`.
    CorpTicket {
        access_token: KeyId,
        kind: CorpTicketKind,
    },
}

impl Source {
    fn renewal(&self) -> Renewal {
        match self {
            Source::App {
                mode: TokenMode::Stable,
                ..
            } => Renewal::Stable,
            Source::App {
                mode: TokenMode::Legacy,
                ..
            } => Renewal::Legacy,
            Source::AppTicket { .. } | Source::Corp { .. } | Source::CorpTicket { .. } => {
                Renewal::ReSent
            }
        }
    }

    /// The JSON field consumers receive the value under.
    fn field(&self) -> &'static str {
        match self {
            Source::App { .. } | Source::Corp { .. } => "access_token",
            Source::AppTicket { .. } | Source::CorpTicket { .. } => "ticket",
        }
    }
}

/// Why a refresh was started; it decides how WeChat is asked (normal or force mode) and whether a
/// token found in the store makes the refresh unnecessary.
#[derive(Clone, Debug)]
enum Reason {
    /// The scheduler found the key due.
    Scheduled,
    /// A consumer reported this value as dead (compare-and-refresh).
    Invalidated { reported: Arc<str> },
    /// An operator asked for a refresh now.
    Admin,
    /// A dependent credential (a ticket) needs a usable token and there is none.
    Dependency,
}

/// Whether a refresh runs under the key's lease (the rule), or alone because the store does not
/// answer and the token is about to expire ([`Plan::alone_within`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coordination {
    /// The lease is held and renewed before each upstream call; force refreshes are allowed.
    Leased,
    /// No lease: only normal-mode calls, which return the same value to every node.
    Alone,
}

/// Why a refresh failed, as consumers and operators see it. Never carries a secret or token.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RefreshError {
    /// WeChat refused or could not be reached.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The store failed.
    #[error("store error: {0}")]
    Store(String),
    /// Another node held the refresh lease and no new token appeared before the deadline.
    #[error("another node is refreshing and did not finish in time")]
    LeaseTimeout,
    /// The job ended without a result (a bug, or shutdown).
    #[error("refresh aborted")]
    Aborted,
}

impl From<StoreError> for RefreshError {
    fn from(e: StoreError) -> Self {
        RefreshError::Store(e.to_string())
    }
}

impl RefreshError {
    fn failure_class(&self) -> FailureClass {
        match self {
            RefreshError::Upstream(UpstreamError::Quota { .. }) => FailureClass::Quota,
            RefreshError::Upstream(UpstreamError::Config { .. }) => FailureClass::Config,
            _ => FailureClass::Transient,
        }
    }

    fn class_name(&self) -> &'static str {
        match self {
            RefreshError::Upstream(e) => e.class(),
            RefreshError::Store(_) => "store",
            RefreshError::LeaseTimeout => "lease_timeout",
            RefreshError::Aborted => "aborted",
        }
    }
}

/// A successful refresh: the token to serve, and whether WeChat gave a different value than the
/// hub had (a `stable_token` poll or a ticket may come back unchanged).
#[derive(Clone, Debug)]
struct Refreshed {
    token: Token,
    rotated: bool,
}

type RefreshResult = Result<Refreshed, RefreshError>;

/// What a consumer's invalidation report led to.
pub struct Invalidation {
    /// The token to hand back (the current one, possibly just refreshed).
    pub served: Arc<Served>,
    /// Whether the report was stale, caused a refresh, or was throttled.
    pub outcome: InvalidationOutcome,
}

/// The lifecycle state shown in `/v1/credentials`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No refresh has completed yet (startup).
    Pending,
    /// The token is current and the next refresh is planned.
    Fresh,
    /// A refresh is running.
    Refreshing,
    /// The last refresh failed transiently (or on quota); the old token is still served.
    Retrying,
    /// WeChat rejected the configuration: an operator must act.
    NeedsAttention,
}

/// The last failure of a credential, as shown to operators.
#[derive(Clone, Debug, Serialize)]
pub struct LastError {
    /// `transient`, `quota`, `config`, `token_invalid`, `store`, …
    pub class: &'static str,
    /// WeChat's errcode, if WeChat answered.
    pub errcode: Option<i64>,
    /// WeChat's message (or the transport error), never a secret.
    pub message: String,
    /// When it happened (RFC 3339).
    pub at: String,
}

/// One credential in `/v1/credentials`. Never a secret or token value.
#[derive(Clone, Debug, Serialize)]
pub struct CredentialStatus {
    /// The credential's canonical key, e.g. `access_token/wx…`.
    pub key: String,
    /// Its kind (`access_token`, `ticket`, …).
    pub kind: &'static str,
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
    /// A condition an operator should know about (another party fetching tokens, force budget).
    pub warning: Option<String>,
    /// Force refreshes used today (stable mode).
    pub force_refreshes_today: u32,
    /// When the token served was obtained; with `expires_at` it gives the token's lifetime.
    pub fetched_at: Option<String>,
    /// Refreshes this instance finished in the last hour, oldest first (bounded, see
    /// [`History`]). Tokens adopted from another instance's refresh are not among them.
    pub history: Vec<HistoryPoint>,
}

/// Per-key mutable state.
struct Entry {
    /// What is known to be current (from the store, a refresh, or the change feed).
    token: Option<Token>,
    /// Lifecycle state.
    status: Status,
    /// This key's place in [`State::deadlines`], if scheduled.
    due: Option<(Instant, u64)>,
    /// Wall-clock time of the next planned refresh, for display and for consumer `expires_in`.
    next_refresh: Option<Timestamp>,
    /// Consecutive failures, for backoff.
    attempts: u32,
    /// The last failure.
    last_error: Option<LastError>,
    /// The running refresh job, which later requests join (single-flight in process).
    in_flight: Option<watch::Receiver<Option<RefreshResult>>>,
    /// WeChat day (UTC+8) the force counter belongs to, and force refreshes used that day.
    force_day: i64,
    force_used: u32,
    /// A condition worth an operator's attention that is not an error.
    warning: Option<String>,
    /// Recently finished refreshes, for operators.
    history: History,
}

impl Entry {
    fn new() -> Entry {
        Entry {
            token: None,
            status: Status::Pending,
            due: None,
            next_refresh: None,
            attempts: 0,
            last_error: None,
            in_flight: None,
            force_day: 0,
            force_used: 0,
            warning: None,
            history: History::new(),
        }
    }
}

/// Everything the engine mutates, under one mutex.
struct State {
    /// Per-key state, indexed by [`KeyId`].
    entries: Vec<Entry>,
    /// Deadlines of every scheduled key. The sequence number keeps entries with equal instants
    /// apart.
    deadlines: BTreeMap<(Instant, u64), KeyId>,
    /// Next sequence number for [`State::deadlines`].
    next_seq: u64,
    /// Set by [`Engine::shutdown`]; the scheduler exits when it sees it.
    shutdown: bool,
}

impl State {
    /// Puts `id` in the deadline queue at `at`, replacing its previous place.
    fn schedule(&mut self, id: KeyId, at: Instant) {
        if let Some(previous) = self.entries[id].due.take() {
            self.deadlines.remove(&previous);
        }
        let slot = (at, self.next_seq);
        self.next_seq += 1;
        self.deadlines.insert(slot, id);
        self.entries[id].due = Some(slot);
    }

    fn unschedule(&mut self, id: KeyId) {
        if let Some(previous) = self.entries[id].due.take() {
            self.deadlines.remove(&previous);
        }
    }
}

/// State shared by the engine handle, its background tasks and its refresh jobs.
struct Shared {
    /// The mutable part. Never held across an `.await`.
    state: Mutex<State>,
    /// Wakes the scheduler when the earliest deadline may have moved or on shutdown.
    scheduler_wakeup: Notify,
    /// Refresh worker permits: the scheduler starts a job only with one in hand.
    workers: Arc<Semaphore>,
    /// How each credential is fetched, by id (fixed at startup).
    sources: Vec<Source>,
    /// The read side, updated after every change.
    hub: Arc<Hub>,
    /// Where tokens are persisted and leases taken.
    store: Arc<dyn Store>,
    /// WeChat.
    upstream: Upstream,
    /// The refresh rules.
    plan: Plan,
    /// How long a refresh lease lives: one upstream timeout plus a margin. Renewed before each
    /// upstream call, so a holder that dies frees the key within one TTL.
    lease_ttl: Duration,
    /// This process's lease owner id (unique per start).
    node_id: String,
    /// Where refreshes and invalidations are counted.
    metrics: Arc<Metrics>,
}

/// Handle to the refresh engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// The components the engine is built from.
pub struct EngineParts {
    /// The read side whose slots the engine fills.
    pub hub: Arc<Hub>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The WeChat client.
    pub upstream: Upstream,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl Engine {
    /// Builds the engine for every credential in `hub` (which was built from `settings`).
    pub fn new(settings: &Settings, parts: EngineParts) -> Engine {
        let EngineParts {
            hub,
            store,
            upstream,
            metrics,
        } = parts;
        let apps: HashMap<&str, _> = settings
            .apps
            .iter()
            .map(|a| (a.appid.as_str(), a))
            .collect();
        let corps: HashMap<(&str, &str), _> = settings
            .corps
            .iter()
            .map(|c| ((c.corpid.as_str(), c.agentid.as_str()), c))
            .collect();
        let sources = hub
            .credentials()
            .iter()
            .map(|credential| match &credential.key {
                CredentialKey::AccessToken { appid } => {
                    let app = apps[appid.as_str()];
                    Source::App {
                        appid: appid.clone(),
                        secret: app.secret.clone(),
                        mode: app.mode,
                    }
                }
                CredentialKey::Ticket { appid, kind } => Source::AppTicket {
                    access_token: hub.app(appid).map(|a| a.access_token).unwrap_or_default(),
                    kind: *kind,
                },
                CredentialKey::CorpToken { corpid, agentid } => Source::Corp {
                    corpid: corpid.clone(),
                    secret: corps[&(corpid.as_str(), agentid.as_str())].secret.clone(),
                },
                CredentialKey::CorpTicket {
                    corpid,
                    agentid,
                    kind,
                } => Source::CorpTicket {
                    access_token: hub
                        .corp(corpid, agentid)
                        .map(|c| c.access_token)
                        .unwrap_or_default(),
                    kind: *kind,
                },
                other => unreachable!("the hub does not build {other} credentials yet"),
            })
            .collect::<Vec<_>>();
        let entries = sources.iter().map(|_| Entry::new()).collect();
        let node_id = format!("{:016x}", rand::thread_rng().gen::<u64>());
        Engine {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    entries,
                    deadlines: BTreeMap::new(),
                    next_seq: 0,
                    shutdown: false,
                }),
                scheduler_wakeup: Notify::new(),
                workers: Arc::new(Semaphore::new(settings.refresh.concurrency.max(1))),
                sources,
                hub,
                store,
                upstream,
                plan: Plan::new(&settings.refresh),
                lease_ttl: settings.wechat.timeout + Duration::from_secs(2),
                node_id,
                metrics,
            }),
        }
    }

    /// Loads what the store holds (valid tokens are served at once and not re-fetched), then
    /// starts the scheduler, the change-feed listener and the store health check.
    pub async fn start(&self) -> Result<(), StoreError> {
        let shared = &self.shared;
        let feed = shared.store.subscribe();
        let stored = shared.store.load_all().await?;
        let now = Timestamp::now();
        {
            let mut state = shared.lock();
            for (key, token) in stored {
                let Some(id) = shared.hub.find(&key) else {
                    continue;
                };
                if token.is_valid_at(now.plus(DEPENDENCY_MIN_LIFE)) {
                    shared.adopt(&mut state, id, token, now);
                }
            }
            let starting = Instant::now();
            for id in 0..state.entries.len() {
                if state.entries[id].due.is_none() {
                    state.schedule(id, starting);
                }
            }
        }
        tokio::spawn(run_scheduler(shared.clone()));
        tokio::spawn(run_change_feed(shared.clone(), feed));
        tokio::spawn(run_store_health(shared.clone()));
        Ok(())
    }

    /// Stops the scheduler. Running refresh jobs finish on their own.
    pub fn shutdown(&self) {
        self.shared.lock().shutdown = true;
        self.shared.scheduler_wakeup.notify_one();
    }

    /// Compare-and-refresh (DESIGN §3): a consumer reports that `reported` was rejected by WeChat.
    pub async fn invalidate(
        &self,
        id: KeyId,
        reported: &str,
    ) -> Result<Invalidation, RefreshError> {
        let shared = &self.shared;
        let reported: Arc<str> = Arc::from(reported);
        // Two rounds at most: a joined refresh (say a stable-mode poll) may return the reported
        // value unchanged; the second round then asks for it to be replaced. A refresh started
        // for this report is final: WeChat re-sending the value means there is no other.
        for _ in 0..2 {
            let (receiver, started) = {
                let mut state = shared.lock();
                let now = Timestamp::now();
                let entry = &mut state.entries[id];
                match &entry.token {
                    Some(current) if *current.value != *reported => {
                        drop(state);
                        return shared.answer(id, InvalidationOutcome::Stale);
                    }
                    Some(current)
                        if entry.in_flight.is_none()
                            && shared.plan.too_young_to_force(current, now) =>
                    {
                        entry.warning = Some(
                            "a token younger than min_refresh_interval was reported invalid: \
                             another party may be fetching tokens for this appid"
                                .to_string(),
                        );
                        tracing::warn!(
                            key = %shared.hub.credential(id).key,
                            "token reported invalid within min_refresh_interval of its fetch; \
                             another party may be fetching tokens for this appid"
                        );
                        drop(state);
                        return shared.answer(id, InvalidationOutcome::Throttled);
                    }
                    _ => shared.start_or_join(
                        &mut state,
                        id,
                        Reason::Invalidated {
                            reported: reported.clone(),
                        },
                        None,
                    ),
                }
            };
            let refreshed = match wait_for(receiver).await {
                Ok(refreshed) => refreshed,
                // This node's refresh failed (WeChat or the store did not answer, the lease wait
                // timed out, the node was frozen past its lease), but another node's may have
                // replaced the reported token meanwhile: that is what the reporter needs.
                Err(e) if shared.replaced_elsewhere(id, &reported).await => {
                    tracing::debug!(error = %e, "refresh failed here, but another node replaced the token");
                    return shared.answer(id, InvalidationOutcome::Refreshed);
                }
                Err(e) => return Err(e),
            };
            if started || *refreshed.token.value != *reported {
                return shared.answer(id, InvalidationOutcome::Refreshed);
            }
        }
        shared.answer(id, InvalidationOutcome::Refreshed)
    }

    /// Refreshes `id` now (still single-flight) and returns what is served afterwards.
    pub async fn refresh_now(&self, id: KeyId) -> Result<Arc<Served>, RefreshError> {
        let (receiver, _) = {
            let mut state = self.shared.lock();
            self.shared
                .start_or_join(&mut state, id, Reason::Admin, None)
        };
        wait_for(receiver).await?;
        self.shared
            .hub
            .credential(id)
            .slot
            .load()
            .ok_or(RefreshError::Aborted)
    }

    /// Every credential's state, for operators.
    pub fn credentials(&self) -> Vec<CredentialStatus> {
        let shared = &self.shared;
        let state = shared.lock();
        let now = Timestamp::now();
        let today = wechat_day(now);
        state
            .entries
            .iter()
            .enumerate()
            .map(|(id, entry)| {
                let key = &shared.hub.credential(id).key;
                CredentialStatus {
                    key: key.to_string(),
                    kind: key.kind_name(),
                    state: if entry.in_flight.is_some() {
                        Status::Refreshing
                    } else {
                        entry.status
                    },
                    generation: entry.token.as_ref().map(|t| t.generation),
                    expires_at: entry.token.as_ref().map(|t| t.expires_at.to_rfc3339()),
                    next_refresh: entry.next_refresh.map(Timestamp::to_rfc3339),
                    attempts: entry.attempts,
                    last_error: entry.last_error.clone(),
                    warning: entry.warning.clone(),
                    force_refreshes_today: if entry.force_day == today {
                        entry.force_used
                    } else {
                        0
                    },
                    fetched_at: entry.token.as_ref().map(|t| t.fetched_at.to_rfc3339()),
                    history: entry.history.recent(now),
                }
            })
            .collect()
    }

    /// Seconds of life left per credential (for the metrics gauge).
    pub fn remaining_lives(&self) -> Vec<(CredentialKey, f64)> {
        let now = Timestamp::now();
        let state = self.shared.lock();
        state
            .entries
            .iter()
            .enumerate()
            .filter_map(|(id, entry)| {
                let token = entry.token.as_ref()?;
                Some((
                    self.shared.hub.credential(id).key.clone(),
                    token.remaining(now).as_secs_f64(),
                ))
            })
            .collect()
    }
}

/// Waits for a refresh job's result.
async fn wait_for(mut receiver: watch::Receiver<Option<RefreshResult>>) -> RefreshResult {
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

/// The WeChat day number of `now` (calendar day in UTC+8).
fn wechat_day(now: Timestamp) -> i64 {
    (now.as_secs() + WECHAT_DAY_OFFSET_SECS).div_euclid(86_400)
}

/// Converts a wall-clock instant to the runtime's clock (past instants become "now").
fn instant_at(at: Timestamp) -> Instant {
    Instant::now() + at.since(Timestamp::now())
}

/// Uniform random number in `[0, 1)` for jitter.
fn random_unit() -> f64 {
    rand::thread_rng().gen::<f64>()
}

/// The boxed future of one refresh job (boxed so a job may start jobs of other keys).
type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections never panic by design; if one did, the state is still consistent
        // enough to keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is served for `id` now, as the answer to an invalidation report.
    fn answer(
        &self,
        id: KeyId,
        outcome: InvalidationOutcome,
    ) -> Result<Invalidation, RefreshError> {
        self.metrics.count_invalidation(outcome);
        let served = self
            .hub
            .credential(id)
            .slot
            .load()
            .ok_or(RefreshError::Aborted)?;
        Ok(Invalidation { served, outcome })
    }

    /// Joins the running refresh of `id`, or starts one; says which. Runs under the state lock,
    /// so two callers can never both start a job for one key.
    fn start_or_join(
        self: &Arc<Self>,
        state: &mut State,
        id: KeyId,
        reason: Reason,
        permit: Option<OwnedSemaphorePermit>,
    ) -> (watch::Receiver<Option<RefreshResult>>, bool) {
        let entry = &mut state.entries[id];
        if let Some(running) = &entry.in_flight {
            return (running.clone(), false);
        }
        let (sender, receiver) = watch::channel(None);
        entry.in_flight = Some(receiver.clone());
        let known = entry.token.clone();
        state.unschedule(id);
        let job: Job = Box::pin(self.clone().run_job(id, reason, known, sender, permit));
        tokio::spawn(job);
        (receiver, true)
    }

    /// One refresh job: performs the refresh, records the outcome, wakes every waiter.
    async fn run_job(
        self: Arc<Self>,
        id: KeyId,
        reason: Reason,
        known: Option<Token>,
        sender: watch::Sender<Option<RefreshResult>>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        // If this task is dropped before finishing (runtime shutdown), the guard still clears the
        // in-flight marker so the key cannot stay stuck.
        let guard = InFlightGuard {
            shared: self.clone(),
            id,
        };
        let started = std::time::Instant::now();
        let result = self.refresh(id, &reason, known).await;
        self.finish(id, &reason, &result, started.elapsed());
        std::mem::forget(guard);
        drop(permit);
        let _ = sender.send(Some(result));
    }

    /// Takes the lease (or waits for the holder's result), re-reads the store, asks WeChat and
    /// writes with compare-and-set.
    async fn refresh(
        self: &Arc<Self>,
        id: KeyId,
        reason: &Reason,
        known: Option<Token>,
    ) -> RefreshResult {
        let key = &self.hub.credential(id).key;
        let mut feed = self.store.subscribe();
        let known_generation = known.as_ref().map_or(0, |t| t.generation);
        let give_up = Instant::now() + self.lease_ttl * 3;
        loop {
            let acquired = match self
                .store
                .acquire_lease(key, &self.node_id, self.lease_ttl)
                .await
            {
                Ok(acquired) => acquired,
                Err(e) => match self.alone_base(id, reason) {
                    Some(held) => {
                        tracing::warn!(
                            key = %key,
                            error = %e,
                            "the store does not answer and the token is about to expire: \
                             refreshing without the lease (WeChat gives every instance the same \
                             value for this credential)"
                        );
                        return self
                            .fetch_and_write(id, reason, held, Coordination::Alone)
                            .await;
                    }
                    None => return Err(e.into()),
                },
            };
            if acquired {
                break;
            }
            // Another node is refreshing this key: wait for its write rather than call WeChat.
            // The write may have reached this node before this job subscribed to the feed.
            if let Some(token) = self.newer_than(id, known_generation) {
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
        }
        let result = self
            .refresh_holding_lease(id, reason, known_generation)
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
    async fn replaced_elsewhere(&self, id: KeyId, reported: &str) -> bool {
        if self.serves_other_than(id, reported) {
            return true;
        }
        let key = &self.hub.credential(id).key;
        match self.store.get(key).await {
            Ok(Some(stored)) if stored.value != reported => {
                self.apply_change(key.clone(), stored);
                self.serves_other_than(id, reported)
            }
            _ => false,
        }
    }

    /// Whether this node holds a token for `id` other than `value`.
    fn serves_other_than(&self, id: KeyId, value: &str) -> bool {
        let state = self.lock();
        state.entries[id]
            .token
            .as_ref()
            .is_some_and(|t| t.value != value)
    }

    /// The token this node holds for `id`, if its generation is above `generation`.
    fn newer_than(&self, id: KeyId, generation: u64) -> Option<Token> {
        let state = self.lock();
        state.entries[id]
            .token
            .as_ref()
            .filter(|t| t.generation > generation)
            .cloned()
    }

    async fn refresh_holding_lease(
        self: &Arc<Self>,
        id: KeyId,
        reason: &Reason,
        known_generation: u64,
    ) -> RefreshResult {
        let key = &self.hub.credential(id).key;
        let mut stored = self.store.get(key).await?;
        if let Some(held) = self.held_above(id, stored.as_ref()) {
            stored = self.restore(key, held).await?;
        }
        let now = Timestamp::now();
        if let Some(stored) = &stored {
            if stored.generation > known_generation && self.satisfies(id, reason, stored, now) {
                // Someone else refreshed meanwhile: adopt their token, no upstream call.
                return Ok(Refreshed {
                    token: stored.clone(),
                    rotated: true,
                });
            }
        }
        self.fetch_and_write(id, reason, stored, Coordination::Leased)
            .await
    }

    /// Asks WeChat and writes the result as the generation after `stored` (what the store holds,
    /// or, alone, what this node holds). A value WeChat re-sent unchanged is not written.
    async fn fetch_and_write(
        self: &Arc<Self>,
        id: KeyId,
        reason: &Reason,
        stored: Option<Token>,
        coordination: Coordination,
    ) -> RefreshResult {
        let key = &self.hub.credential(id).key;
        let fetched = self
            .fetch(id, reason, stored.as_ref(), coordination)
            .await?;
        let now = Timestamp::now();
        if let Some(previous) = stored.as_ref().filter(|s| s.value == fetched.value) {
            // WeChat re-sent the value the hub has: keep its first-seen expiry, never extend it.
            let mut token = previous.clone();
            token.expires_at = previous.expires_at.min(now.plus(fetched.expires_in));
            return Ok(Refreshed {
                token,
                rotated: false,
            });
        }
        let token = Token {
            value: fetched.value,
            expires_at: now.plus(fetched.expires_in),
            fetched_at: now,
            generation: stored.as_ref().map_or(0, |s| s.generation) + 1,
        };
        match self.write_fetched(id, key, &token).await? {
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
            CasOutcome::Stale { current: None } => Err(RefreshError::Store(format!(
                "compare-and-set of {key} refused with nothing stored"
            ))),
        }
    }

    /// When the store does not answer: whether this refresh may go ahead alone, and on which
    /// token (what this node holds) — `Some` only for a scheduled or dependency refresh (never a
    /// force refresh) of a renewal WeChat answers the same for every caller, once the token is
    /// within [`Plan::alone_within`] of expiry. Earlier, waiting for the store is cheaper: every
    /// instance calling WeChat on its own costs calls, not tokens.
    fn alone_base(&self, id: KeyId, reason: &Reason) -> Option<Option<Token>> {
        if !matches!(reason, Reason::Scheduled | Reason::Dependency) {
            return None;
        }
        let renewal = self.sources[id].renewal();
        let state = self.lock();
        let held = state.entries[id].token.clone();
        let near_expiry = held.as_ref().is_none_or(|t| {
            t.remaining(Timestamp::now()) < self.plan.alone_within(renewal, t.lifetime())
        });
        (renewal != Renewal::Legacy && near_expiry).then_some(held)
    }

    /// The token this node holds for `id` if the store is behind it (holds nothing, or an older
    /// generation). Every token a node holds came from the store, so this only happens when the
    /// store lost data (a Redis restarted without persistence) or when a token fetched during an
    /// outage could not be written.
    fn held_above(&self, id: KeyId, stored: Option<&Token>) -> Option<Token> {
        let state = self.lock();
        let held = state.entries[id].token.as_ref()?;
        stored
            .is_none_or(|s| s.generation < held.generation)
            .then(|| held.clone())
    }

    /// Puts `held` back into a store that is behind this node ([`Shared::held_above`]), so that
    /// generations continue from where the cluster is: a fresh generation 1 would be ignored by
    /// every node holding a higher one, and each would end up fetching its own token. Returns what
    /// the store holds afterwards.
    async fn restore(
        &self,
        key: &CredentialKey,
        held: Token,
    ) -> Result<Option<Token>, RefreshError> {
        tracing::warn!(
            key = %key,
            generation = held.generation,
            "the store is behind this node (data lost, e.g. Redis restarted without persistence, \
             or a write failed during an outage); writing back the token held in memory"
        );
        match self.store.restore(key, &held).await? {
            CasOutcome::Applied => Ok(Some(held)),
            CasOutcome::Stale { current } => Ok(current),
        }
    }

    /// Writes a token just fetched from WeChat with compare-and-set.
    ///
    /// If the store does not answer, the token is not thrown away: WeChat has issued it (in legacy
    /// mode the previous one now dies after the overlap), so fetching again once the store is back
    /// would be a second refresh caused by the outage. This node serves it at once and keeps
    /// offering it to the store, at short intervals, until the store takes it (or refuses it for a
    /// newer one, which is then adopted) or until the token itself is due for refresh. Meanwhile
    /// the job stays in flight, so this node starts no other refresh of the key.
    async fn write_fetched(
        &self,
        id: KeyId,
        key: &CredentialKey,
        token: &Token,
    ) -> Result<CasOutcome, RefreshError> {
        let mut pause = UNWRITTEN_RETRY_MIN;
        let mut serving_unwritten = false;
        let give_up = instant_at(self.plan.due_at(self.sources[id].renewal(), token, 0.0));
        loop {
            let error = match self.store.compare_and_set(key, token).await {
                Ok(CasOutcome::Stale { current })
                    if current
                        .as_ref()
                        .is_none_or(|c| c.generation + 1 < token.generation) =>
                {
                    // The store is behind the generation this token follows: it lost data while
                    // it did not answer (a Redis restarted empty). Put this token back instead.
                    match self.store.restore(key, token).await {
                        Ok(outcome) => return Ok(outcome),
                        Err(e @ StoreError::Corrupt(_)) => return Err(e.into()),
                        Err(e) => e,
                    }
                }
                Ok(outcome) => {
                    if serving_unwritten {
                        tracing::info!(
                            key = %key,
                            generation = token.generation,
                            "the store answers again; the token fetched during the outage is written"
                        );
                    }
                    return Ok(outcome);
                }
                Err(e @ StoreError::Corrupt(_)) => return Err(e.into()),
                Err(e) => e,
            };
            self.metrics.count_store_error();
            if !serving_unwritten {
                serving_unwritten = true;
                tracing::warn!(
                    key = %key,
                    generation = token.generation,
                    error = %error,
                    "fetched a new token but the store does not answer; serving it from this \
                     node and writing it as soon as the store answers"
                );
                let mut state = self.lock();
                self.serve_in_flight(&mut state, id, token.clone());
            }
            if Instant::now() + pause >= give_up {
                return Err(error.into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(UNWRITTEN_RETRY_MAX);
        }
    }

    /// Whether a token another node stored makes this refresh unnecessary.
    fn satisfies(&self, id: KeyId, reason: &Reason, stored: &Token, now: Timestamp) -> bool {
        match reason {
            Reason::Invalidated { reported } => *stored.value != **reported,
            Reason::Scheduled => {
                let renewal = self.sources[id].renewal();
                self.plan.due_at(renewal, stored, 0.0) > now
            }
            Reason::Dependency => stored.is_valid_at(now.plus(DEPENDENCY_MIN_LIFE)),
            Reason::Admin => false,
        }
    }

    /// Asks WeChat for the credential, the way its source and the reason require.
    async fn fetch(
        self: &Arc<Self>,
        id: KeyId,
        reason: &Reason,
        stored: Option<&Token>,
        coordination: Coordination,
    ) -> Result<Fetched, RefreshError> {
        let key = &self.hub.credential(id).key;
        let leased = coordination == Coordination::Leased;
        match &self.sources[id] {
            Source::App {
                appid,
                secret,
                mode: TokenMode::Legacy,
            } => {
                self.renew_lease(key, coordination).await?;
                Ok(self.upstream.get_token(appid, secret.expose()).await?)
            }
            Source::App {
                appid,
                secret,
                mode: TokenMode::Stable,
            } => {
                let wants_force = matches!(reason, Reason::Invalidated { .. } | Reason::Admin);
                let force = leased && wants_force && self.take_force_budget(id);
                self.renew_lease(key, coordination).await?;
                let fetched = self
                    .upstream
                    .get_stable_token(appid, secret.expose(), force)
                    .await?;
                // Last resort: normal mode has not rotated a token that is about to expire.
                let now = Timestamp::now();
                let about_to_expire = stored.is_some_and(|s| {
                    s.value == fetched.value
                        && s.remaining(now) < Plan::stable_poll(s.lifetime()) * 2
                });
                // Never alone: a force refresh kills the token the other instances serve.
                if leased && !force && about_to_expire && self.take_force_budget(id) {
                    self.renew_lease(key, coordination).await?;
                    return Ok(self
                        .upstream
                        .get_stable_token(appid, secret.expose(), true)
                        .await?);
                }
                Ok(fetched)
            }
            Source::Corp { corpid, secret } => {
                self.renew_lease(key, coordination).await?;
                Ok(self
                    .upstream
                    .get_corp_token(corpid, secret.expose())
                    .await?)
            }
            Source::AppTicket { access_token, kind } => {
                let kind = *kind;
                self.fetch_with_token(key, *access_token, coordination, |upstream, token| {
                    Box::pin(async move { upstream.get_ticket(&token, kind).await })
                })
                .await
            }
            Source::CorpTicket { access_token, kind } => {
                let kind = *kind;
                self.fetch_with_token(key, *access_token, coordination, |upstream, token| {
                    Box::pin(async move { upstream.get_corp_ticket(&token, kind).await })
                })
                .await
            }
        }
    }

    /// Calls a ticket endpoint with the current access token `dependency`. If WeChat says that
    /// token is dead, reports it (compare-and-refresh, like a consumer) and tries once more.
    async fn fetch_with_token<F>(
        self: &Arc<Self>,
        key: &CredentialKey,
        dependency: KeyId,
        coordination: Coordination,
        call: F,
    ) -> Result<Fetched, RefreshError>
    where
        F: Fn(
            Upstream,
            String,
        ) -> Pin<Box<dyn Future<Output = Result<Fetched, UpstreamError>> + Send>>,
    {
        let token = self.usable_token(dependency).await?;
        self.renew_lease(key, coordination).await?;
        match call(self.upstream.clone(), token.to_string()).await {
            Err(UpstreamError::TokenInvalid { .. }) => {
                let engine = Engine {
                    shared: self.clone(),
                };
                let fresh = engine.invalidate(dependency, &token).await?;
                self.renew_lease(key, coordination).await?;
                Ok(call(self.upstream.clone(), fresh.served.value.to_string()).await?)
            }
            other => Ok(other?),
        }
    }

    /// The current token of `id` if it has some life left, else the result of refreshing it.
    async fn usable_token(self: &Arc<Self>, id: KeyId) -> Result<Arc<str>, RefreshError> {
        let (receiver, _) = {
            let mut state = self.lock();
            let now = Timestamp::now();
            if let Some(token) = &state.entries[id].token {
                if token.is_valid_at(now.plus(DEPENDENCY_MIN_LIFE)) {
                    return Ok(Arc::from(token.value.as_str()));
                }
            }
            self.start_or_join(&mut state, id, Reason::Dependency, None)
        };
        let refreshed = wait_for(receiver).await?;
        Ok(Arc::from(refreshed.token.value.as_str()))
    }

    /// Re-takes (extends) the lease before an upstream call, so it outlives each call. Nothing
    /// to renew for a refresh that runs alone.
    async fn renew_lease(
        &self,
        key: &CredentialKey,
        coordination: Coordination,
    ) -> Result<(), RefreshError> {
        if coordination == Coordination::Alone {
            return Ok(());
        }
        if self
            .store
            .acquire_lease(key, &self.node_id, self.lease_ttl)
            .await?
        {
            Ok(())
        } else {
            Err(RefreshError::Store(format!(
                "refresh lease of {key} was lost to another node"
            )))
        }
    }

    /// Spends one of today's `stable_token` force refreshes, if any are left.
    fn take_force_budget(&self, id: KeyId) -> bool {
        let mut state = self.lock();
        let today = wechat_day(Timestamp::now());
        let entry = &mut state.entries[id];
        if entry.force_day != today {
            entry.force_day = today;
            entry.force_used = 0;
        }
        if entry.force_used >= FORCE_REFRESH_DAILY_LIMIT {
            entry.warning = Some(format!(
                "the daily budget of {FORCE_REFRESH_DAILY_LIMIT} force refreshes is spent"
            ));
            return false;
        }
        entry.force_used += 1;
        true
    }

    /// Records a job's outcome: state, schedule, what is served, logs and metrics.
    fn finish(&self, id: KeyId, reason: &Reason, result: &RefreshResult, elapsed: Duration) {
        let key = &self.hub.credential(id).key;
        let now = Timestamp::now();
        let mut state = self.lock();
        state.entries[id].in_flight = None;
        match result {
            Ok(refreshed) => {
                // The change feed may have delivered a newer generation while this job ran (another
                // node refreshed): never step back to the job's older token.
                let newer = state.entries[id]
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
                let renewal = self.sources[id].renewal();
                let next = if refreshed.rotated {
                    self.plan.due_at(renewal, &refreshed.token, random_unit())
                } else {
                    self.plan.after_unchanged(renewal, &refreshed.token, now)
                };
                let entry = &mut state.entries[id];
                if entry.status == Status::NeedsAttention {
                    tracing::info!(key = %key, "credential recovered");
                }
                entry.token = Some(refreshed.token.clone());
                entry.status = Status::Fresh;
                entry.attempts = 0;
                entry.last_error = None;
                self.plan_next(&mut state, id, next);
                let outcome = if refreshed.rotated { "ok" } else { "unchanged" };
                state.entries[id].history.record(now, outcome);
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
            }
            Err(error) => {
                let class = error.failure_class();
                let entry = &mut state.entries[id];
                entry.attempts += 1;
                let delay = self.plan.retry_delay(class, entry.attempts, random_unit());
                let errcode = match error {
                    RefreshError::Upstream(e) => e.errcode(),
                    _ => None,
                };
                let repeated = entry.last_error.as_ref().is_some_and(|last| {
                    last.errcode == errcode && last.class == error.class_name()
                });
                entry.status = match class {
                    FailureClass::Config => Status::NeedsAttention,
                    FailureClass::Quota | FailureClass::Transient => Status::Retrying,
                };
                entry.last_error = Some(LastError {
                    class: error.class_name(),
                    errcode,
                    message: error.to_string(),
                    at: now.to_rfc3339(),
                });
                let attempts = entry.attempts;
                if matches!(error, RefreshError::Store(_)) {
                    self.metrics.count_store_error();
                }
                self.plan_next(&mut state, id, now.plus(delay));
                state.entries[id].history.record(now, error.class_name());
                self.metrics
                    .count_refresh(key.kind_name(), error.class_name());
                // Config errors repeat every few minutes until fixed: log them once.
                if class == FailureClass::Config && repeated {
                    tracing::debug!(key = %key, errcode, attempts, "refresh still rejected");
                } else {
                    tracing::warn!(
                        key = %key,
                        outcome = error.class_name(),
                        reason = reason.name(),
                        errcode,
                        attempts,
                        duration_ms = elapsed.as_millis() as u64,
                        retry_in_ms = delay.as_millis() as u64,
                        error = %error,
                        "refresh failed"
                    );
                }
            }
        }
    }

    /// Takes `token` as current for `id` (from the store at startup or the change feed), plans its
    /// next refresh and serves it.
    fn adopt(&self, state: &mut State, id: KeyId, token: Token, now: Timestamp) {
        let renewal = self.sources[id].renewal();
        let next = self.plan.due_at(renewal, &token, random_unit()).max(now);
        let entry = &mut state.entries[id];
        entry.token = Some(token);
        entry.status = Status::Fresh;
        self.plan_next(state, id, next);
    }

    /// Schedules the next refresh of `id` at `next` and re-renders what consumers are served, whose
    /// `expires_in` depends on that plan.
    fn plan_next(&self, state: &mut State, id: KeyId, next: Timestamp) {
        let entry = &mut state.entries[id];
        entry.next_refresh = Some(next);
        if let Some(token) = &entry.token {
            let source = &self.sources[id];
            let serve_until = self.plan.serve_until(source.renewal(), token, next);
            self.hub.credential(id).slot.store(Arc::new(Served::new(
                source.field(),
                token,
                serve_until,
            )));
        }
        state.schedule(id, instant_at(next));
        self.scheduler_wakeup.notify_one();
    }
}

impl Reason {
    fn name(&self) -> &'static str {
        match self {
            Reason::Scheduled => "scheduled",
            Reason::Invalidated { .. } => "invalidated",
            Reason::Admin => "admin",
            Reason::Dependency => "dependency",
        }
    }
}

/// Clears a job's in-flight marker if the job's task is dropped before it finished, and plans a
/// retry, so that a key can never be left waiting for a job that no longer exists.
struct InFlightGuard {
    shared: Arc<Shared>,
    id: KeyId,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.entries[self.id].in_flight = None;
        if !state.shutdown {
            state.schedule(self.id, Instant::now() + Duration::from_secs(1));
            self.shared.scheduler_wakeup.notify_one();
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

/// The scheduler: starts the refresh of each key when it is due, one worker permit per job.
async fn run_scheduler(shared: Arc<Shared>) {
    enum Step {
        Started,
        Sleep(Option<Instant>),
    }
    loop {
        let Ok(permit) = shared.workers.clone().acquire_owned().await else {
            return;
        };
        let step = {
            let mut state = shared.lock();
            if state.shutdown {
                return;
            }
            match state.deadlines.first_key_value() {
                Some((&(when, seq), &id)) if when <= Instant::now() => {
                    state.deadlines.remove(&(when, seq));
                    state.entries[id].due = None;
                    let _ = shared.start_or_join(&mut state, id, Reason::Scheduled, Some(permit));
                    Step::Started
                }
                Some((&(when, _), _)) => Step::Sleep(Some(when)),
                None => Step::Sleep(None),
            }
        };
        if let Step::Sleep(when) = step {
            match when {
                Some(when) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(when) => {}
                        _ = shared.scheduler_wakeup.notified() => {}
                    }
                }
                None => shared.scheduler_wakeup.notified().await,
            }
        }
    }
}

/// Applies other nodes' writes to this node's view as soon as they are published.
async fn run_change_feed(shared: Arc<Shared>, mut feed: broadcast::Receiver<Change>) {
    loop {
        match feed.recv().await {
            Ok(change) => shared.apply_change(change.key, change.token),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "change feed lagged; reloading every credential");
                match shared.store.load_all().await {
                    Ok(all) => {
                        for (key, token) in all {
                            shared.apply_change(key, token);
                        }
                    }
                    Err(e) => {
                        shared.metrics.count_store_error();
                        tracing::warn!(error = %e, "reload after lag failed");
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
        if shared.lock().shutdown {
            return;
        }
    }
}

impl Shared {
    /// Adopts a token written elsewhere if it is newer than what this node has.
    ///
    /// Newer means a higher generation, or the same generation with another value: that happens
    /// only when this node serves a token the store never took (fetched while the store did not
    /// answer, then beaten by another node's write), and the store's word wins.
    fn apply_change(&self, key: CredentialKey, token: Token) {
        let Some(id) = self.hub.find(&key) else {
            return;
        };
        let mut state = self.lock();
        let newer = state.entries[id].token.as_ref().is_none_or(|current| {
            token.generation > current.generation
                || (token.generation == current.generation && token.value != current.value)
        });
        if !newer {
            return;
        }
        if state.entries[id].in_flight.is_some() {
            // The running job will adopt it through the lease/re-read path; serve it already.
            self.serve_in_flight(&mut state, id, token);
            return;
        }
        self.adopt(&mut state, id, token, Timestamp::now());
    }

    /// Serves `token` for `id` while a job is running, without touching the job's plans: the job
    /// records its own outcome when it ends.
    fn serve_in_flight(&self, state: &mut State, id: KeyId, token: Token) {
        let next = state.entries[id]
            .next_refresh
            .unwrap_or_else(Timestamp::now);
        let source = &self.sources[id];
        let serve_until = self.plan.serve_until(source.renewal(), &token, next);
        self.hub.credential(id).slot.store(Arc::new(Served::new(
            source.field(),
            &token,
            serve_until,
        )));
        state.entries[id].token = Some(token);
    }

    /// Re-plans, within [`STORE_RECOVERY_SPREAD`], every refresh that is waiting to retry after
    /// a store failure: once the store answers there is no reason to wait out the backoff.
    fn retry_store_failures(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        let waiting: Vec<KeyId> = state
            .entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| {
                entry.in_flight.is_none()
                    && entry.status == Status::Retrying
                    && entry
                        .last_error
                        .as_ref()
                        .is_some_and(|e| matches!(e.class, "store" | "lease_timeout"))
            })
            .map(|(id, _)| id)
            .collect();
        for id in waiting {
            let at = now + STORE_RECOVERY_SPREAD.mul_f64(random_unit());
            let sooner = state.entries[id].due.is_none_or(|(due, _)| at < due);
            if sooner {
                state.schedule(id, at);
            }
        }
        drop(state);
        self.scheduler_wakeup.notify_one();
    }
}

/// Checks every [`STORE_CHECK_INTERVAL`] that the store answers; keeps the `wxhub_store_up` gauge
/// current, logs each outage once when it starts and once when it ends, and re-plans the
/// refreshes the outage held back as soon as it ends.
async fn run_store_health(shared: Arc<Shared>) {
    let mut up = true;
    let mut down_since = std::time::Instant::now();
    loop {
        tokio::time::sleep(STORE_CHECK_INTERVAL).await;
        if shared.lock().shutdown {
            return;
        }
        let answered = matches!(
            tokio::time::timeout(STORE_CHECK_TIMEOUT, shared.store.ping()).await,
            Ok(Ok(()))
        );
        shared.metrics.set_store_up(answered);
        match (up, answered) {
            (true, false) => {
                down_since = std::time::Instant::now();
                shared.metrics.count_store_error();
                tracing::warn!(
                    store = shared.store.kind(),
                    "the store does not answer: degraded; serving every token from memory while \
                     it is valid, refreshes wait for the store"
                );
            }
            (false, true) => {
                tracing::info!(
                    store = shared.store.kind(),
                    down_ms = down_since.elapsed().as_millis() as u64,
                    "the store answers again; resuming refreshes"
                );
                shared.retry_store_failures();
            }
            _ => {}
        }
        up = answered;
    }
}
