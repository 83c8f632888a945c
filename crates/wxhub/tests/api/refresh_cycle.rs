//! The hub's reason to exist: consumers that honour `expires_in` never hold a dead token, over
//! several lifetimes, in stable and in legacy mode — and WeChat is asked no more than needed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wechat_mock::MockServer;

use crate::helpers::*;

const LIFETIME: Duration = Duration::from_secs(20);
const GRACE: Duration = Duration::from_secs(5);
const RUN_FOR: Duration = Duration::from_secs(60);
const CALL_EVERY: Duration = Duration::from_millis(250);

/// What one consumer saw.
#[derive(Default, Debug)]
struct ConsumerReport {
    business_calls: u64,
    failures: Vec<i64>,
    tokens_seen: HashSet<String>,
    hub_reads: u64,
}

/// A business server: keeps the token it got for `expires_in` seconds, then asks again; calls the
/// business API every 250 ms with whatever it holds.
async fn consume(hub: Arc<TestHub>, mock: Arc<MockServer>, appid: String) -> ConsumerReport {
    let mut report = ConsumerReport::default();
    let mut held: Option<(String, Instant)> = None;
    let end = Instant::now() + RUN_FOR;
    while Instant::now() < end {
        let expired = held
            .as_ref()
            .is_none_or(|(_, until)| Instant::now() >= *until);
        if expired {
            let answer = hub.token(&appid).await;
            report.hub_reads += 1;
            report.tokens_seen.insert(answer.access_token.clone());
            let until = Instant::now() + Duration::from_secs(answer.expires_in);
            held = Some((answer.access_token, until));
        }
        let token = held.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
        let errcode = business_call(&hub.client, &mock, &token).await;
        report.business_calls += 1;
        if errcode != 0 {
            report.failures.push(errcode);
        }
        tokio::time::sleep(CALL_EVERY).await;
    }
    report
}

#[tokio::test]
async fn consumers_see_no_dead_token_over_three_lifetimes_in_both_modes() {
    let stable = "wxcycle0000stable";
    let legacy = "wxcycle0000legacy";
    let apps = [TestApp::stable(stable), TestApp::legacy(legacy)];
    let mock = spawn_mock(LIFETIME, GRACE, &apps, &[], |c| c).await;
    let hub = Arc::new(spawn_app(&mock, HubOptions::new(&apps)).await);
    hub.wait_ready().await;

    let consumers: Vec<_> = [stable, legacy, stable, legacy]
        .into_iter()
        .map(|appid| tokio::spawn(consume(hub.clone(), mock.clone(), appid.to_string())))
        .collect();
    let mut reports = Vec::new();
    for consumer in consumers {
        reports.push(consumer.await.expect("consumer task"));
    }

    let stats = stats(&mock);
    for (appid, report) in [stable, legacy, stable, legacy].iter().zip(&reports) {
        assert!(
            report.failures.is_empty(),
            "{appid}: consumer saw {:?}",
            report.failures
        );
        assert!(report.business_calls > 150, "{appid}: {report:?}");
        assert!(
            report.tokens_seen.len() >= 3,
            "{appid}: the token was renewed each cycle: {report:?}"
        );
    }
    for appid in [stable, legacy] {
        assert_eq!(
            stats.business_failures(appid),
            0,
            "{appid}: {:?}",
            stats.business
        );
    }

    // Legacy: one fetch per (lifetime − lead) = ~10 s, plus the first.
    let legacy_fetches = stats.issued("/cgi-bin/token", legacy);
    assert!(
        (5..=8).contains(&legacy_fetches),
        "legacy fetched {legacy_fetches} times in 60 s"
    );
    // Stable: rotates once per ~15 s in normal mode, never forced.
    let stable_tokens = stats.issued("/cgi-bin/stable_token", stable);
    assert!(
        (4..=6).contains(&stable_tokens),
        "stable rotated {stable_tokens} times in 60 s"
    );
    assert_eq!(stats.force_refreshes(stable), 0);
    assert_eq!(stats.calls("/cgi-bin/token", stable), 0, "modes stay apart");
}

/// A refresh takes the lease and reads the store in one trip, and does not renew a lease it has
/// just taken before calling WeChat: each trip to a store is a wake-up of its database thread or
/// a network round trip, and 100,000 authorizers make them 100,000 times over.
#[tokio::test]
async fn a_refresh_costs_one_lease_trip_one_write_and_one_release() {
    let appid = "wxtrips0000legacy";
    let app = TestApp::legacy(appid);
    let mock = minute_mock(std::slice::from_ref(&app)).await;
    let inner = Arc::new(wxhub::store::memory::MemoryStore::new());
    let store = Arc::new(wxhub_test_support::faulty_store::FaultyStore::new(inner));
    let mut options = HubOptions::new(std::slice::from_ref(&app));
    options.shared_store = Some(store.clone());
    let hub = spawn_app(&mock, options).await;
    hub.wait_ready().await;
    wait_until(Duration::from_secs(5), "the lease released", || async {
        store.calls("release_lease") == 1
    })
    .await;
    let trips = |method| store.calls(method);
    assert_eq!(
        (
            trips("acquire_lease_and_get"),
            trips("acquire_lease"),
            trips("get"),
            trips("compare_and_set"),
            trips("release_lease"),
        ),
        (1, 0, 0, 1, 1),
        "lease and read together, no renewal, one write, one release"
    );
}
