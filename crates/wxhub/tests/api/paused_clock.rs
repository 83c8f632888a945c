//! Refresh cycles, tickets and reports on tokio's paused clock: WeChat (the mock's own routes) in
//! process, and the hub's engine and the mock reading the same clock, so that minutes and hours
//! of tokens' lives pass in a fraction of a second of real time (a blocking store would let the
//! paused clock jump while it waits: these hubs keep their state in memory). Each behaviour also
//! has a real-time run over HTTP: `refresh_cycle.rs`, `rollover.rs`, `invalidation.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wechat_mock::MockServer;
use wxhub::engine::clock::Clock;
use wxhub::kinds::{AccountId, CredentialKey, Role};
use wxhub::metrics::Metrics;
use wxhub::read::ReadIndex;
use wxhub::startup::Application;
use wxhub::store::memory::MemoryStore;
use wxhub::token::TicketKind;
use wxhub::upstream::{Upstream, UpstreamError};
use wxhub_test_support::in_process::{InProcessWechat, TokioClock};

use crate::helpers::*;

/// WeChat's own lifetime and overlap, not a test's shortened ones.
const LIFETIME: Duration = Duration::from_secs(7200);
const GRACE: Duration = Duration::from_secs(300);
const RUN_FOR: Duration = Duration::from_secs(3 * 7200);
const CALL_EVERY: Duration = Duration::from_secs(20);

/// A hub on the paused clock, with WeChat (`mock`) in process and a memory store (a blocking
/// store would let the paused clock jump while it waits).
struct PausedHub {
    /// The read index.
    read_index: Arc<ReadIndex>,
    /// The hub's clock, on tokio's.
    clock: Arc<TokioClock>,
    /// The refresh engine, for reports.
    engine: wxhub::engine::Engine,
    /// Ends the hub.
    stop: tokio::sync::oneshot::Sender<()>,
    /// The running hub.
    running: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl PausedHub {
    /// Starts a hub for `apps` and waits until each of their credentials is served.
    async fn start(mock: &MockServer, apps: &[TestApp]) -> PausedHub {
        let clock = Arc::new(TokioClock::new());
        let app = Application::build_with_wechat(
            settings_for(mock, &HubOptions::new(apps)),
            Arc::new(MemoryStore::with_clock(clock.clone())),
            Arc::new(InProcessWechat::new(mock)),
            clock.clone(),
        )
        .await
        .expect("the hub builds");
        let read_index = app.read_index().clone();
        let engine = app.engine().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        let reading = read_index.clone();
        wait_until(
            Duration::from_secs(30),
            "every credential is served",
            || {
                let read_index = reading.clone();
                async move {
                    read_index
                        .credentials()
                        .iter()
                        .all(|credential| credential.slot.load().is_some())
                }
            },
        )
        .await;
        PausedHub {
            read_index,
            clock,
            engine,
            stop,
            running,
        }
    }

    /// The credential `key`, registered.
    fn credential(&self, key: &CredentialKey) -> Arc<wxhub::read::Credential> {
        self.read_index
            .by_key(key)
            .expect("the credential is registered")
    }

    /// What is served for `key` now.
    fn served(&self, key: &CredentialKey) -> Arc<wxhub::read::Served> {
        self.credential(key).slot.load().expect("a value is served")
    }

    /// Stops the hub and waits for it.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.running.await;
    }
}

/// What one consumer saw.
#[derive(Default, Debug)]
struct Seen {
    calls: u64,
    refused: Vec<String>,
    tokens: HashSet<String>,
}

/// A business server that keeps the token it read for its `expires_in`, and calls WeChat with it
/// every 20 s (of the paused clock); with `ticket`, it also checks the JS-SDK ticket it holds.
async fn consume(
    read_index: Arc<ReadIndex>,
    clock: Arc<TokioClock>,
    mock: Arc<MockServer>,
    wechat: Upstream,
    key: CredentialKey,
) -> Seen {
    let mut seen = Seen::default();
    let mut held: Option<(String, Instant)> = None;
    let end = Instant::now() + RUN_FOR;
    while Instant::now() < end {
        if held
            .as_ref()
            .is_none_or(|(_, until)| Instant::now() >= *until)
        {
            let credential = read_index
                .by_key(&key)
                .expect("the credential is registered");
            let served = credential.slot.load().expect("a value is served");
            let expires_in = served
                .expires_in(clock.now())
                .expect("the served value is alive");
            seen.tokens.insert(served.value.to_string());
            held = Some((
                served.value.to_string(),
                Instant::now() + Duration::from_secs(expires_in),
            ));
        }
        let value = held.as_ref().map(|(v, _)| v.clone()).unwrap_or_default();
        let alive = if key.role.ticket_name().is_some() {
            mock.ticket_valid(&value)
        } else {
            !matches!(
                wechat.check_token(false, &value).await,
                Err(UpstreamError::TokenInvalid { .. })
            )
        };
        seen.calls += 1;
        if !alive {
            seen.refused.push(value);
        }
        tokio::time::sleep(CALL_EVERY).await;
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn three_two_hour_lifetimes_pass_with_no_dead_token_on_the_paused_clock() {
    let stable = "wxpaused00stable";
    let legacy = "wxpaused00legacy";
    let apps = [
        TestApp::stable(stable).with_tickets(&[TicketKind::Jsapi]),
        TestApp::legacy(legacy),
    ];
    let mock = spawn_mock(LIFETIME, GRACE, &apps, &[], |c| c).await;
    let paused = PausedHub::start(&mock, &apps).await;
    let (read_index, clock) = (paused.read_index.clone(), paused.clock.clone());
    let keys = [
        CredentialKey::access_token(stable),
        CredentialKey::access_token(legacy),
        CredentialKey::new(AccountId::app(stable), Role::Ticket(TicketKind::Jsapi)),
    ];
    let wechat = InProcessWechat::upstream(&mock, 4, Arc::new(Metrics::default()));
    let started = std::time::Instant::now();
    let consumers: Vec<_> = keys
        .iter()
        .map(|key| {
            tokio::spawn(consume(
                read_index.clone(),
                clock.clone(),
                mock.clone(),
                wechat.clone(),
                key.clone(),
            ))
        })
        .collect();
    let mut seen = Vec::new();
    for consumer in consumers {
        seen.push(consumer.await.expect("the consumer runs"));
    }
    let real = started.elapsed();
    paused.stop().await;

    for (key, seen) in keys.iter().zip(&seen) {
        assert!(seen.refused.is_empty(), "{key}: WeChat refused {seen:?}");
        assert!(seen.calls >= 1000, "{key}: {seen:?}");
        assert!(
            seen.tokens.len() >= 3,
            "{key}: renewed each lifetime: {seen:?}"
        );
    }
    let stats = stats(&mock);
    // Legacy: one fetch per (lifetime − lead), 30 min lead of a 2 h lifetime: about 5 in 6 h.
    let legacy_fetches = stats.issued("/cgi-bin/token", legacy);
    assert!(
        (4..=7).contains(&legacy_fetches),
        "legacy fetched {legacy_fetches} times in six hours"
    );
    assert_eq!(stats.force_refreshes(stable), 0, "never forced");
    assert_eq!(stats.calls("/cgi-bin/token", stable), 0, "modes stay apart");
    eprintln!("six hours of the paused clock took {real:?} of real time");
}

/// A polled JS-SDK ticket carries its true remaining life (the end of use it announces never
/// moves), is served until about that end, and is renewed each cycle: three 20-second cycles,
/// polled every 250 ms. (The real-time run of a polled ticket is in `rollover.rs`.)
#[tokio::test(start_paused = true)]
async fn a_polled_ticket_carries_its_true_remaining_life_and_is_renewed_each_cycle() {
    let appid = "wxticket000000001";
    let apps = [TestApp::stable(appid).with_tickets(&[TicketKind::Jsapi])];
    let mock = spawn_mock(
        Duration::from_secs(20),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let paused = PausedHub::start(&mock, &apps).await;
    let key = CredentialKey::new(AccountId::app(appid), Role::Ticket(TicketKind::Jsapi));

    // For each ticket: the earliest and latest "end of use" the hub announced (poll time +
    // expires_in), and when it was last served.
    let mut announced: std::collections::HashMap<String, (Instant, Instant, Instant)> =
        Default::default();
    let mut order: Vec<String> = Vec::new();
    let mut gaps = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        let now = Instant::now();
        let served = paused.credential(&key).slot.load();
        let Some((served, expires_in)) = served.and_then(|served| {
            let expires_in = served.expires_in(paused.clock.now())?;
            Some((served, expires_in))
        }) else {
            // The instant between a ticket's expiry and its replacement.
            gaps += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let ticket = served.value.to_string();
        if !mock.ticket_valid(&ticket) {
            assert!(
                expires_in <= 1,
                "a dead ticket was served with {expires_in} s"
            );
        }
        let end_of_use = now + Duration::from_secs(expires_in);
        let entry = announced
            .entry(ticket.clone())
            .or_insert((end_of_use, end_of_use, now));
        entry.0 = entry.0.min(end_of_use);
        entry.1 = entry.1.max(end_of_use);
        entry.2 = now;
        if order.last() != Some(&ticket) {
            order.push(ticket);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    paused.stop().await;

    assert!(
        order.len() >= 3,
        "renewed each cycle: {} tickets",
        order.len()
    );
    for (ticket, (earliest, latest, _)) in &announced {
        assert!(
            latest.duration_since(*earliest) <= Duration::from_millis(1_500),
            "the announced end of {ticket} moved by {:?}: expiry was extended",
            latest.duration_since(*earliest)
        );
    }
    // Each replaced ticket was served until about its announced end, not long before or after.
    for pair in order.windows(2) {
        let (earliest, _, last_served) = announced[&pair[0]];
        let slack = if last_served > earliest {
            last_served.duration_since(earliest)
        } else {
            earliest.duration_since(last_served)
        };
        assert!(
            slack <= Duration::from_millis(1_500),
            "served {slack:?} off its announced end"
        );
    }
    assert!(
        gaps <= 3,
        "{gaps} polls fell between a ticket and its replacement"
    );
    let calls = stats(&mock).calls("/cgi-bin/ticket/getticket", appid);
    assert!(calls <= 10, "{calls} getticket calls over three cycles");
}

/// Reports of a live stable token spread over a minute each need a check of their own, and none
/// spends a force refresh; a real invalidation afterwards still costs exactly one call. (The
/// real-time runs of reports, live and dead, are in `invalidation.rs`.)
#[tokio::test(start_paused = true)]
async fn ten_reports_of_a_live_stable_token_over_a_minute_spend_no_force_refresh() {
    let appid = "wxstorm0000000005";
    let apps = [TestApp::stable(appid)];
    let mock = spawn_mock(
        Duration::from_secs(120),
        Duration::from_secs(1),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let paused = PausedHub::start(&mock, &apps).await;
    let key = CredentialKey::access_token(appid);
    let credential = paused.credential(&key);
    let current = paused.served(&key).value.to_string();
    // Older than min_refresh_interval, so that a report could refresh it.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = stats(&mock);
    for i in 0..10 {
        if i > 0 {
            // Spread over a minute: each report needs a check of its own.
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
        let answer = paused
            .engine
            .invalidate(&credential, &current)
            .await
            .expect("the report is answered");
        assert_eq!(*answer.served.value, *current);
    }
    let after = stats(&mock);
    assert_eq!(after.force_refreshes(appid), 0);
    assert_eq!(
        after.calls("/cgi-bin/stable_token", appid),
        before.calls("/cgi-bin/stable_token", appid)
    );
    let status = paused
        .engine
        .credentials()
        .into_iter()
        .find(|status| status.key == format!("access_token/{appid}"))
        .expect("the credential is listed");
    assert_eq!(status.rejected_reports, 10);

    // A real invalidation still costs exactly one call (once WeChat's word that the token was
    // alive, reused for a few seconds, has lapsed): another party forces a new token, the old one
    // dies after WeChat's one-second overlap.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let another_party = InProcessWechat::upstream(&mock, 1, Arc::new(Metrics::default()));
    another_party
        .get_stable_token(appid, &secret_of(appid), true)
        .await
        .expect("another party forces a new token");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = stats(&mock);
    let answer = paused
        .engine
        .invalidate(&credential, &current)
        .await
        .expect("the report is answered");
    assert_ne!(*answer.served.value, *current);
    assert!(another_party
        .check_token(false, &answer.served.value)
        .await
        .is_ok());
    assert_eq!(
        stats(&mock).calls("/cgi-bin/stable_token", appid),
        before.calls("/cgi-bin/stable_token", appid) + 1
    );
    paused.stop().await;
}
