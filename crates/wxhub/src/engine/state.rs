//! What the engine knows about each credential, and the deadline queue — plain data under the
//! engine's one mutex, with the decisions that change it as methods of their own: when a key is
//! due, what a success or a failure does to its plan, how a consumer's report is judged. Nothing
//! here waits, reads a clock or does I/O: time is an argument, so the rules are tested with a
//! fake clock and no sleeps (see the tests below).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use super::error::{ErrorClass, RefreshError};
use super::tally::StatusTally;
use crate::history::History;
use crate::plan::{FailureClass, Plan, Renewal};
use crate::read::{Credential, CredentialId};
use crate::token::{Timestamp, Token};

/// A successful refresh: the token to serve, and whether WeChat gave a different value than the
/// hub had (a `stable_token` poll or a ticket may come back unchanged).
#[derive(Clone, Debug)]
pub struct Refreshed {
    /// The token now current.
    pub token: Token,
    /// Whether it differs from the one the refresh started from.
    pub rotated: bool,
}

/// What a refresh job yields to everyone waiting on it.
pub type RefreshResult = Result<Refreshed, RefreshError>;

/// The lifecycle state shown in `/v1/credentials`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No refresh has completed yet (startup, just added).
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
    /// What kind of failure.
    pub class: ErrorClass,
    /// WeChat's errcode, if WeChat answered.
    pub errcode: Option<i64>,
    /// WeChat's message (or the transport error), never a secret.
    pub message: String,
    /// When it happened (RFC 3339).
    pub at: String,
    /// When it happened, to compare with a token's fetch time.
    #[serde(skip)]
    pub failed_at: Timestamp,
    /// Whether a refresh has succeeded since (here, or on another instance whose token was
    /// adopted): the failure is history, kept for operators.
    #[serde(skip)]
    pub recovered: bool,
}

/// Per-credential mutable state.
pub struct Entry {
    /// The credential (its key, slot and spec).
    pub credential: Arc<Credential>,
    /// What is known to be current (from the store, a refresh, or the change feed).
    pub token: Option<Token>,
    /// Lifecycle state (changed through [`Entry::set_status`], which keeps the tally true).
    status: Status,
    /// This key's place in [`State::deadlines`], if scheduled.
    pub due: Option<(Timestamp, u64)>,
    /// The next planned refresh, for display and for consumer `expires_in`.
    pub next_refresh: Option<Timestamp>,
    /// Consecutive failures, for backoff.
    pub attempts: u32,
    /// The last failure, marked recovered (not dropped) by a success so that operators still see
    /// what went wrong; see [`Entry::current_error`]. Boxed, like the other fields most
    /// credentials never use: with 100,000 authorizers every byte of an entry counts 200,000
    /// times.
    pub last_error: Option<Box<LastError>>,
    /// The running refresh job, which later requests join (single-flight in process). Changed
    /// through [`Entry::set_in_flight`]: while it runs the credential shows as refreshing.
    in_flight: Option<watch::Receiver<Option<RefreshResult>>>,
    /// WeChat day (UTC+8) the force counter belongs to, and force refreshes used that day.
    pub force_day: i64,
    /// Force refreshes used on `force_day`.
    pub force_used: u32,
    /// A condition worth an operator's attention that is not an error.
    pub warning: Option<String>,
    /// Recently finished refreshes, for operators.
    pub history: History,
    /// The running check of a reported value with WeChat, which later reports join.
    pub verifying: Option<watch::Receiver<Option<Verdict>>>,
    /// The value WeChat last confirmed alive, and when: reports of it soon after are rejected
    /// without asking again.
    pub confirmed_alive: Option<Box<(String, Timestamp)>>,
    /// The value WeChat last confirmed dead. A report of it that arrives between the end of the
    /// check and the start of the refresh that check leads to is answered from this, not by a
    /// second check: WeChat never revives a token, and a second check could meet a passing
    /// fault and take the dead token for a live one.
    pub confirmed_dead: Option<Box<str>>,
    /// Reports rejected because WeChat still accepted the value.
    pub rejected_reports: u64,
    /// When the periodic check last asked WeChat about the current value.
    pub checked_at: Option<Timestamp>,
    /// The engine's count of credentials by state, which this entry keeps true as its shown
    /// state changes and when it is dropped.
    tally: Arc<StatusTally>,
}

/// What WeChat said of a reported value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It still accepts the value: the report was mistaken.
    Alive,
    /// It refuses it (40001/40014/42001): refresh.
    Dead,
    /// The check failed (network, busy): refresh, as before checks existed.
    Unknown,
}

/// How a consumer's report of a dead value is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportDecision {
    /// The reported value is not the current one: answer with the current one, no refresh.
    Stale,
    /// The current value is younger than `min_refresh_interval`: answer with it, do not refresh.
    Throttled,
    /// Refresh (or join the running refresh).
    Refresh,
}

impl Status {
    /// The state's name, as `/v1/credentials` and the metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Fresh => "fresh",
            Status::Refreshing => "refreshing",
            Status::Retrying => "retrying",
            Status::NeedsAttention => "needs_attention",
        }
    }
}

impl Entry {
    /// A credential with nothing known yet, counted as pending in `tally`.
    pub fn new(credential: Arc<Credential>, tally: &Arc<StatusTally>) -> Entry {
        tally.enter(credential.key.kind_name(), Status::Pending);
        Entry {
            credential,
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
            verifying: None,
            confirmed_alive: None,
            confirmed_dead: None,
            rejected_reports: 0,
            checked_at: None,
            tally: tally.clone(),
        }
    }

    /// The state operators see: refreshing while a job runs, else the lifecycle state.
    pub fn shown_status(&self) -> Status {
        if self.in_flight.is_some() {
            Status::Refreshing
        } else {
            self.status
        }
    }

    /// The lifecycle state, whether or not a job runs.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Sets the lifecycle state.
    fn set_status(&mut self, status: Status) {
        let before = self.shown_status();
        self.status = status;
        self.recount(before);
    }

    /// The running refresh job, if any.
    pub fn in_flight(&self) -> Option<&watch::Receiver<Option<RefreshResult>>> {
        self.in_flight.as_ref()
    }

    /// Marks a refresh job running (`Some`) or over (`None`).
    pub fn set_in_flight(&mut self, job: Option<watch::Receiver<Option<RefreshResult>>>) {
        let before = self.shown_status();
        self.in_flight = job;
        self.recount(before);
    }

    /// Moves this entry's count from `before` to the state it shows now.
    fn recount(&self, before: Status) {
        self.tally
            .shift(self.credential.key.kind_name(), before, self.shown_status());
    }

    /// Judges a report that `reported` was refused by WeChat.
    pub fn judge_report(&self, reported: &str, plan: &Plan, now: Timestamp) -> ReportDecision {
        match &self.token {
            Some(current) if *current.value != *reported => ReportDecision::Stale,
            Some(current) if self.in_flight.is_none() && plan.too_young_to_force(current, now) => {
                ReportDecision::Throttled
            }
            _ => ReportDecision::Refresh,
        }
    }

    /// Records a successful refresh and returns when the next one is due. `jitter` is uniform in
    /// `[0, 1)`.
    pub fn record_success(
        &mut self,
        refreshed: &Refreshed,
        renewal: Renewal,
        plan: &Plan,
        now: Timestamp,
        jitter: f64,
    ) -> Timestamp {
        let next = if refreshed.rotated {
            plan.due_at(renewal, &refreshed.token, jitter)
        } else {
            plan.after_unchanged(renewal, &refreshed.token, now)
        };
        self.token = Some(refreshed.token.clone());
        self.set_status(Status::Fresh);
        self.attempts = 0;
        if let Some(error) = &mut self.last_error {
            error.recovered = true;
        }
        next
    }

    /// Takes `token` as current: one read from the store (at a start, or another instance's
    /// refresh on the change feed) rather than fetched here. A failure before that token was
    /// fetched is over, as after a refresh of this instance's own: another instance refreshed
    /// where this one failed.
    pub fn adopt(&mut self, token: Token) {
        if let Some(error) = &mut self.last_error {
            if token.fetched_at > error.failed_at {
                error.recovered = true;
            }
        }
        self.token = Some(token);
        self.set_status(Status::Fresh);
    }

    /// The failure this credential is in, if the last refresh failed.
    pub fn current_error(&self) -> Option<&LastError> {
        self.last_error.as_deref().filter(|e| !e.recovered)
    }

    /// The last failure, once a refresh has succeeded since.
    pub fn recovered_error(&self) -> Option<&LastError> {
        self.last_error.as_deref().filter(|e| e.recovered)
    }

    /// Records a failed refresh and returns when to try again, and whether the failure repeats
    /// the previous one (config errors are then logged quietly). `random` is uniform in `[0, 1)`.
    pub fn record_failure(
        &mut self,
        error: &RefreshError,
        plan: &Plan,
        now: Timestamp,
        random: f64,
    ) -> (Timestamp, bool) {
        let class = error.failure_class();
        self.attempts += 1;
        let delay = plan.retry_delay(class, self.attempts, random);
        let repeated = self
            .current_error()
            .is_some_and(|last| last.errcode == error.errcode() && last.class == error.class());
        self.set_status(match class {
            FailureClass::Config => Status::NeedsAttention,
            FailureClass::Quota | FailureClass::Transient => Status::Retrying,
        });
        self.last_error = Some(Box::new(LastError {
            class: error.class(),
            errcode: error.errcode(),
            message: error.to_string(),
            at: now.to_rfc3339(),
            failed_at: now,
            recovered: false,
        }));
        (now.plus(delay), repeated)
    }

    /// When this credential, failing, is tried again, if that is still ahead at `now` and no
    /// refresh of it runs: until then a credential fetched with it fails at once
    /// ([`super::RefreshError::DependencyRetrying`]) rather than asking WeChat for it again.
    pub fn retrying_at(&self, now: Timestamp) -> Option<Timestamp> {
        let failing = matches!(self.status, Status::Retrying | Status::NeedsAttention);
        if self.in_flight.is_some() || !failing {
            return None;
        }
        self.next_refresh.filter(|at| *at > now)
    }

    /// Whether this credential waits to retry after a failure on the store's side.
    pub fn waits_for_store(&self) -> bool {
        self.in_flight.is_none()
            && self.status == Status::Retrying
            && self
                .current_error()
                .is_some_and(|e| e.class.waits_for_store())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.tally
            .leave(self.credential.key.kind_name(), self.shown_status());
    }
}

/// Everything the engine mutates, under one mutex.
#[derive(Default)]
pub struct State {
    /// Per-credential state. Boxed: an entry is a few hundred bytes, and a table of 100,000
    /// inline entries would reserve that much again in empty slots and copy it all on each
    /// growth.
    pub entries: HashMap<CredentialId, Box<Entry>>,
    /// Deadlines of every scheduled credential. The sequence number keeps entries with equal
    /// instants apart.
    deadlines: BTreeMap<(Timestamp, u64), CredentialId>,
    /// Next sequence number for [`State::deadlines`].
    next_seq: u64,
    /// Set at shutdown; the scheduler exits when it sees it.
    pub shutdown: bool,
    /// The credentials whose value is checked periodically (`check_interval`): the checker
    /// walks these, not every credential.
    pub checked: HashSet<CredentialId>,
    /// Credentials by state, kept by the entries themselves; shared with whoever renders it, who
    /// reads it without this state's lock.
    pub tally: Arc<StatusTally>,
}

impl State {
    /// Starts tracking `credential` (nothing scheduled yet); an existing entry is kept.
    pub fn insert(&mut self, credential: Arc<Credential>) -> &mut Entry {
        self.follow_check_plan(&credential);
        self.entries
            .entry(credential.id)
            .or_insert_with(|| Box::new(Entry::new(credential, &self.tally)))
    }

    /// Stops tracking `id`: it leaves the queue, and a job still running for it finds no entry
    /// when it ends.
    pub fn remove(&mut self, id: CredentialId) -> Option<Entry> {
        self.unschedule(id);
        self.checked.remove(&id);
        self.entries.remove(&id).map(|entry| *entry)
    }

    /// Adds `credential` to, or takes it out of, the periodically checked ones, as its plan says
    /// now (called when it is added and when its plan may have changed).
    pub fn follow_check_plan(&mut self, credential: &Credential) {
        let spec = credential.spec();
        if spec.plan.check_interval.is_some() && spec.source.checked_at().is_some() {
            self.checked.insert(credential.id);
        } else {
            self.checked.remove(&credential.id);
        }
    }

    /// Puts `id` in the deadline queue at `at`, replacing its previous place.
    pub fn schedule(&mut self, id: CredentialId, at: Timestamp) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if let Some(previous) = entry.due.take() {
            self.deadlines.remove(&previous);
        }
        let place = (at, self.next_seq);
        self.next_seq += 1;
        self.deadlines.insert(place, id);
        entry.due = Some(place);
    }

    /// Takes `id` out of the deadline queue.
    pub fn unschedule(&mut self, id: CredentialId) {
        if let Some(previous) = self.entries.get_mut(&id).and_then(|e| e.due.take()) {
            self.deadlines.remove(&previous);
        }
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.first_key_value().map(|(&(at, _), _)| at)
    }

    /// Takes the earliest credential due at `now` out of the queue.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<CredentialId> {
        let (&(at, seq), &id) = self.deadlines.first_key_value()?;
        if at > now {
            return None;
        }
        self.deadlines.remove(&(at, seq));
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.due = None;
        }
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::configuration::{RefreshOverrides, RefreshSettings, Secret, TokenMode};
    use crate::engine::clock::{Clock, ManualClock};
    use crate::registry::{AccountSpec, Origin};
    use crate::upstream::UpstreamError;

    fn plan() -> Plan {
        Plan::new(&RefreshSettings::default())
    }

    fn credential(id: CredentialId, appid: &str) -> Arc<Credential> {
        let spec = AccountSpec::App {
            appid: appid.into(),
            secret: Secret::new("s".into()),
            mode: TokenMode::Legacy,
            tickets: vec![],
            refresh: RefreshOverrides::default(),
        };
        let (key, spec) = spec
            .credentials(&RefreshSettings::default(), Origin::Config)
            .remove(0);
        Arc::new(Credential::new(id, key, spec))
    }

    fn token(value: &str, fetched: Timestamp, lifetime: Duration) -> Token {
        Token {
            value: value.into(),
            fetched_at: fetched,
            expires_at: fetched.plus(lifetime),
            generation: 1,
        }
    }

    const START: Timestamp = Timestamp(1_800_000_000_000);
    const HOUR2: Duration = Duration::from_secs(7200);

    #[test]
    fn keys_become_due_in_deadline_order_as_the_clock_moves() {
        let clock = ManualClock::at(START);
        let mut state = State::default();
        for (id, appid) in [(1, "wx1"), (2, "wx2"), (3, "wx3")] {
            state.insert(credential(id, appid));
        }
        state.schedule(1, START.plus(Duration::from_secs(30)));
        state.schedule(2, START.plus(Duration::from_secs(10)));
        state.schedule(3, START.plus(Duration::from_secs(20)));
        // Re-scheduling replaces the earlier place.
        state.schedule(3, START.plus(Duration::from_secs(40)));
        assert_eq!(state.pop_due(clock.now()), None);
        assert_eq!(
            state.next_deadline(),
            Some(START.plus(Duration::from_secs(10)))
        );
        clock.advance(Duration::from_secs(35));
        assert_eq!(state.pop_due(clock.now()), Some(2));
        assert_eq!(state.pop_due(clock.now()), Some(1));
        assert_eq!(state.pop_due(clock.now()), None);
        clock.advance(Duration::from_secs(5));
        assert_eq!(state.pop_due(clock.now()), Some(3));
        assert_eq!(state.next_deadline(), None);
    }

    #[test]
    fn the_tally_follows_every_entry_through_its_states_and_out() {
        let clock = ManualClock::at(START);
        let mut state = State::default();
        let tally = state.tally.clone();
        let count = |status| {
            tally
                .snapshot()
                .get(&("access_token", status))
                .copied()
                .unwrap_or(0)
        };
        state.insert(credential(1, "wx1"));
        state.insert(credential(2, "wx2"));
        state.insert(credential(2, "wx2"));
        assert_eq!(count(Status::Pending), 2, "a second insert keeps the entry");
        let (_sender, job) = watch::channel(None);
        let entry = state.entries.get_mut(&1).expect("tracked");
        entry.set_in_flight(Some(job));
        assert_eq!((count(Status::Pending), count(Status::Refreshing)), (1, 1));
        let refreshed = Refreshed {
            token: token("t1", clock.now(), HOUR2),
            rotated: true,
        };
        entry.record_success(&refreshed, Renewal::Legacy, &plan(), clock.now(), 0.0);
        assert_eq!(
            count(Status::Refreshing),
            1,
            "shown as refreshing until the job is over"
        );
        entry.set_in_flight(None);
        assert_eq!((count(Status::Refreshing), count(Status::Fresh)), (0, 1));
        let error = RefreshError::Upstream(UpstreamError::Transient {
            errcode: Some(-1),
            message: "system busy".into(),
        });
        entry.record_failure(&error, &plan(), clock.now(), 0.5);
        assert_eq!((count(Status::Fresh), count(Status::Retrying)), (0, 1));
        state.remove(1);
        assert_eq!(count(Status::Retrying), 0);
        drop(state);
        assert!(
            tally.snapshot().is_empty(),
            "dropped entries leave no count"
        );
    }

    #[test]
    fn a_success_plans_the_next_refresh_at_the_lead_and_clears_failures() {
        let clock = ManualClock::at(START);
        let mut entry = Entry::new(credential(1, "wx1"), &Arc::default());
        let error = RefreshError::Upstream(UpstreamError::Transient {
            errcode: Some(-1),
            message: "system busy".into(),
        });
        for _ in 0..3 {
            entry.record_failure(&error, &plan(), clock.now(), 0.5);
        }
        assert_eq!(
            (entry.status, entry.attempts),
            (Status::Retrying, 3),
            "failing before the success"
        );
        assert!(entry.current_error().is_some());
        let refreshed = Refreshed {
            token: token("t1", clock.now(), HOUR2),
            rotated: true,
        };
        let next = entry.record_success(&refreshed, Renewal::Legacy, &plan(), clock.now(), 0.0);
        // lead = min(30 min, lifetime / 2) with no jitter.
        assert_eq!(next, START.plus(HOUR2 - Duration::from_secs(1800)));
        assert_eq!(entry.status, Status::Fresh);
        assert_eq!(entry.attempts, 0);
        // The failure is no longer current, but kept as history.
        assert!(entry.current_error().is_none());
        assert_eq!(
            entry.recovered_error().map(|e| e.errcode),
            Some(Some(-1)),
            "moved to history"
        );
    }

    #[test]
    fn a_token_adopted_from_another_instance_recovers_only_a_failure_before_its_fetch() {
        let clock = ManualClock::at(START);
        let mut entry = Entry::new(credential(1, "wx1"), &Arc::default());
        let error = RefreshError::Upstream(UpstreamError::Transient {
            errcode: Some(-1),
            message: "system busy".into(),
        });
        // A token fetched before this instance's failure says nothing of it.
        let older = token("t0", clock.now(), HOUR2);
        clock.advance(Duration::from_secs(10));
        entry.record_failure(&error, &plan(), clock.now(), 0.5);
        entry.adopt(older);
        assert_eq!(entry.current_error().map(|e| e.errcode), Some(Some(-1)));

        // One fetched after it (by another instance, read from the store) is a recovery.
        clock.advance(Duration::from_secs(10));
        entry.adopt(token("t1", clock.now(), HOUR2));
        assert_eq!(entry.status, Status::Fresh);
        assert!(entry.current_error().is_none(), "still shown as current");
        assert_eq!(
            entry.recovered_error().map(|e| e.errcode),
            Some(Some(-1)),
            "kept as history"
        );
    }

    #[test]
    fn a_success_keeps_the_last_failure_as_history() {
        let clock = ManualClock::at(START);
        let mut entry = Entry::new(credential(1, "wx1"), &Arc::default());
        let error = RefreshError::Upstream(UpstreamError::Config {
            errcode: 40164,
            message: "invalid ip".into(),
        });
        entry.record_failure(&error, &plan(), clock.now(), 0.5);
        assert_eq!(entry.current_error().map(|e| e.errcode), Some(Some(40164)));
        assert!(entry.recovered_error().is_none());

        clock.advance(Duration::from_secs(300));
        let refreshed = Refreshed {
            token: token("t1", clock.now(), HOUR2),
            rotated: true,
        };
        entry.record_success(&refreshed, Renewal::Legacy, &plan(), clock.now(), 0.0);
        assert!(entry.current_error().is_none());
        let past = entry.recovered_error().expect("kept as history");
        assert_eq!(
            (past.errcode, past.at.as_str()),
            (Some(40164), START.to_rfc3339().as_str())
        );

        // The same failure again is news, not a repeat to log quietly.
        let (_, repeated) = entry.record_failure(&error, &plan(), clock.now(), 0.5);
        assert!(!repeated);
        assert!(entry.current_error().is_some());
        assert!(entry.recovered_error().is_none());
    }

    #[test]
    fn transient_failures_back_off_exponentially_up_to_the_retry_interval() {
        let clock = ManualClock::at(START);
        let mut entry = Entry::new(credential(1, "wx1"), &Arc::default());
        let error = RefreshError::Upstream(UpstreamError::Transient {
            errcode: Some(-1),
            message: "system busy".into(),
        });
        let mut delays = Vec::new();
        for _ in 0..8 {
            let (next, _) = entry.record_failure(&error, &plan(), clock.now(), 0.999);
            delays.push(next.since(clock.now()));
            clock.advance(next.since(clock.now()));
        }
        assert_eq!(entry.status, Status::Retrying);
        assert_eq!(entry.attempts, 8);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
        assert!(delays[0] <= Duration::from_secs(1));
        assert!(*delays.last().unwrap() <= Duration::from_secs(60));
        assert!(*delays.last().unwrap() >= Duration::from_secs(59));
    }

    #[test]
    fn a_config_error_needs_attention_retries_in_minutes_and_repeats_quietly() {
        let clock = ManualClock::at(START);
        let mut entry = Entry::new(credential(1, "wx1"), &Arc::default());
        let error = RefreshError::Upstream(UpstreamError::Config {
            errcode: 40125,
            message: "invalid appsecret".into(),
        });
        let (next, repeated) = entry.record_failure(&error, &plan(), clock.now(), 0.5);
        assert!(!repeated);
        assert_eq!(entry.status, Status::NeedsAttention);
        assert!(next.since(clock.now()) >= Duration::from_secs(240));
        let last = entry.last_error.as_ref().unwrap();
        assert_eq!(
            (last.class, last.errcode),
            (ErrorClass::Config, Some(40125))
        );
        clock.advance(next.since(clock.now()));
        let (_, repeated) = entry.record_failure(&error, &plan(), clock.now(), 0.5);
        assert!(repeated);
    }

    #[test]
    fn reports_are_stale_throttled_or_refresh_by_value_and_age() {
        let clock = ManualClock::at(START);
        let mut entry = Entry::new(credential(1, "wx1"), &Arc::default());
        assert_eq!(
            entry.judge_report("t1", &plan(), clock.now()),
            ReportDecision::Refresh
        );
        entry.token = Some(token("t1", clock.now(), HOUR2));
        assert_eq!(
            entry.judge_report("t0", &plan(), clock.now()),
            ReportDecision::Stale
        );
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            entry.judge_report("t1", &plan(), clock.now()),
            ReportDecision::Throttled
        );
        clock.advance(Duration::from_secs(30));
        assert_eq!(
            entry.judge_report("t1", &plan(), clock.now()),
            ReportDecision::Refresh
        );
    }

    #[test]
    fn a_removed_credential_leaves_the_queue_and_is_never_due() {
        let clock = ManualClock::at(START);
        let mut state = State::default();
        state.insert(credential(1, "wx1"));
        state.insert(credential(2, "wx2"));
        state.schedule(1, clock.now());
        state.schedule(2, clock.now().plus(Duration::from_secs(1)));
        assert!(state.remove(1).is_some());
        clock.advance(Duration::from_secs(5));
        assert_eq!(state.pop_due(clock.now()), Some(2));
        assert_eq!(state.pop_due(clock.now()), None);
        // Scheduling an id that is gone does nothing.
        state.schedule(1, clock.now());
        assert_eq!(state.pop_due(clock.now()), None);
        assert!(state.remove(1).is_none());
    }

    #[test]
    fn store_failures_are_told_apart_from_upstream_failures_by_type() {
        let clock = ManualClock::at(START);
        let mut entry = Entry::new(credential(1, "wx1"), &Arc::default());
        entry.record_failure(&RefreshError::LeaseTimeout, &plan(), clock.now(), 0.5);
        assert!(entry.waits_for_store());
        entry.record_failure(
            &RefreshError::Upstream(UpstreamError::Transient {
                errcode: None,
                message: "timeout".into(),
            }),
            &plan(),
            clock.now(),
            0.5,
        );
        assert!(!entry.waits_for_store());
    }
}
