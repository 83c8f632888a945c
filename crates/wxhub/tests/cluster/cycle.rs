//! Three instances over three token lifetimes: WeChat sees the fetches of one hub, not three, and
//! consumers spread over the instances never hold a dead token.

use std::time::Duration;

use crate::common::*;
use crate::helpers::*;
use crate::redis_server::{unique_namespace, TestRedis};

const LIFETIME: Duration = Duration::from_secs(20);
const GRACE: Duration = Duration::from_secs(5);
const RUN_FOR: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_fetch_like_one_over_three_lifetimes() {
    let stable = "wxcluster0cycle01";
    let legacy = "wxcluster0cycle02";
    let apps = [TestApp::stable(stable), TestApp::legacy(legacy)];
    let redis = TestRedis::get();
    let mock = spawn_mock(LIFETIME, GRACE, &apps, &[], |c| c).await;
    let hubs = spawn_cluster(&mock, &apps, &redis.url(), &unique_namespace("cycle")).await;

    let (running, consumers) = start_consumers(&hubs, &mock, &[stable, legacy], 3);
    tokio::time::sleep(RUN_FOR).await;
    let reports = finish_consumers(running, consumers).await;

    let stats = stats(&mock);
    for (appid, report) in &reports {
        assert!(
            report.tokens_seen.len() >= 3,
            "{appid}: the token was renewed each cycle: {report:?}"
        );
    }
    for appid in [stable, legacy] {
        assert_eq!(
            stats.business_failures(appid),
            0,
            "{appid}: no 40001/42001 for anyone: {:?}",
            stats.business
        );
    }

    // The bounds of one instance (tests/api/refresh_cycle.rs), on calls as well as on tokens.
    let legacy_calls = stats.calls("/cgi-bin/token", legacy);
    let legacy_issued = stats.issued("/cgi-bin/token", legacy);
    assert!(
        (5..=8).contains(&legacy_issued) && legacy_calls == legacy_issued,
        "legacy: {legacy_calls} calls, {legacy_issued} tokens in 60 s over {INSTANCES} instances"
    );
    let stable_calls = stats.calls("/cgi-bin/stable_token", stable);
    let stable_issued = stats.issued("/cgi-bin/stable_token", stable);
    eprintln!(
        "legacy: {legacy_calls} calls, {legacy_issued} tokens; \
         stable: {stable_calls} calls, {stable_issued} tokens"
    );
    assert!(
        (4..=6).contains(&stable_issued) && stable_calls <= stable_issued + 1,
        "stable: {stable_calls} calls, {stable_issued} tokens in 60 s over {INSTANCES} instances"
    );
    assert_eq!(stats.force_refreshes(stable), 0);

    // Every fetch became exactly one generation, which every instance now serves.
    for (appid, issued) in [(legacy, legacy_issued), (stable, stable_issued)] {
        let current = converged(&hubs, appid).await;
        assert_eq!(
            current.generation, issued,
            "{appid}: each token WeChat issued was written once and adopted by all"
        );
    }
    drop(redis);
}
