//! The refresh cycle on tokio's paused clock: WeChat (the mock's own routes) in process, and the
//! hub's engine and the mock reading the same clock, so that three of WeChat's real two-hour
//! lifetimes pass in well under a second of real time. `refresh_cycle.rs` runs the same
//! behaviour in real time over HTTP, with 20-second lifetimes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wechat_mock::MockServer;
use wxhub::credential::{CredentialKey, TicketKind};
use wxhub::engine::clock::Clock;
use wxhub::hub::Hub;
use wxhub::metrics::Metrics;
use wxhub::startup::Application;
use wxhub::store::memory::MemoryStore;
use wxhub::upstream::{Upstream, UpstreamError};
use wxhub_test_support::in_process::{InProcessWechat, TokioClock};

use crate::helpers::*;

/// WeChat's own lifetime and overlap, not a test's shortened ones.
const LIFETIME: Duration = Duration::from_secs(7200);
const GRACE: Duration = Duration::from_secs(300);
const RUN_FOR: Duration = Duration::from_secs(3 * 7200);
const CALL_EVERY: Duration = Duration::from_secs(20);

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
    hub: Arc<Hub>,
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
            let credential = hub.by_key(&key).expect("the credential is registered");
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
        let alive = match key {
            CredentialKey::Ticket { .. } => mock.ticket_valid(&value),
            _ => !matches!(
                wechat.check_token(false, &value).await,
                Err(UpstreamError::TokenInvalid { .. })
            ),
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
    let clock = Arc::new(TokioClock::new());
    let options = HubOptions::new(&apps);
    let app = Application::build_with_wechat(
        settings_for(&mock, &options),
        Arc::new(MemoryStore::new()),
        Arc::new(InProcessWechat::new(&mock)),
        clock.clone(),
    )
    .await
    .expect("the hub builds");
    let hub = app.hub().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let keys = [
        CredentialKey::AccessToken {
            appid: stable.into(),
        },
        CredentialKey::AccessToken {
            appid: legacy.into(),
        },
        CredentialKey::Ticket {
            appid: stable.into(),
            kind: TicketKind::Jsapi,
        },
    ];
    let hub_reading = hub.clone();
    wait_until(
        Duration::from_secs(30),
        "every credential is served",
        || {
            let hub = hub_reading.clone();
            let keys = keys.clone();
            async move {
                keys.iter()
                    .all(|key| hub.by_key(key).is_some_and(|c| c.slot.load().is_some()))
            }
        },
    )
    .await;

    let wechat = InProcessWechat::upstream(&mock, 4, Arc::new(Metrics::default()));
    let started = std::time::Instant::now();
    let consumers: Vec<_> = keys
        .iter()
        .map(|key| {
            tokio::spawn(consume(
                hub.clone(),
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
    let _ = stop.send(());
    let _ = running.await;

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
