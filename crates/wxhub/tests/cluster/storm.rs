//! Compare-and-refresh across instances: a storm of reports of the current token, landing on all
//! three instances at once, is one upstream fetch, and every reporter gets that one new token.

use std::time::Duration;

use futures_util::future::join_all;

use crate::common::*;
use crate::helpers::*;
use crate::redis_server::{unique_namespace, TestRedis};

/// Reports per instance.
const PER_INSTANCE: usize = 20;

/// `PER_INSTANCE` concurrent reports of `token` on every instance; the tokens answered.
async fn storm(hubs: &[TestHub], appid: &str, token: &str) -> Vec<String> {
    let reports = (0..PER_INSTANCE * hubs.len()).map(|i| async move {
        let hub = &hubs[i % hubs.len()];
        let response = hub.invalidate(appid, token).await;
        assert_eq!(response.status(), 200, "report {i} on instance {}", i % 3);
        response
            .json::<TokenAnswer>()
            .await
            .expect("answer")
            .access_token
    });
    join_all(reports).await
}

/// Starts the cluster, waits until every instance serves the first token and that token is older
/// than `min_refresh_interval` (1 s in tests), and returns it.
async fn prepared(hubs: &[TestHub], appid: &str) -> TokenAnswer {
    let current = converged(hubs, appid).await;
    // A report of a token younger than min_refresh_interval is throttled, by design.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    current
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_reports_over_three_instances_cause_one_legacy_fetch() {
    let appid = "wxcluster0storm01";
    let apps = [TestApp::legacy(appid)];
    let redis = TestRedis::get();
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let hubs = spawn_cluster(&mock, &apps, &redis.url(), &unique_namespace("storm")).await;
    let old = prepared(&hubs, appid).await;
    wechat_refuses_the_token(&mock, appid);
    let before = stats(&mock);

    let answers = storm(&hubs, appid, &old.access_token).await;
    mock.clear_faults();

    let after = stats(&mock);
    assert_eq!(
        after.calls("/cgi-bin/token", appid),
        before.calls("/cgi-bin/token", appid) + 1,
        "exactly one fetch for {} reports",
        answers.len()
    );
    let new = &answers[0];
    assert_ne!(new, &old.access_token);
    assert!(
        answers.iter().all(|t| t == new),
        "all {} reporters got the one new token",
        answers.len()
    );
    let current = converged(&hubs, appid).await;
    assert_eq!(&current.access_token, new);
    assert_eq!(current.generation, old.generation + 1);
    assert_eq!(business_call(&hubs[0].client, &mock, new).await, 0);

    // Reports of the replaced token, on every instance: no fetch, the new token back.
    let answers = storm(&hubs, appid, &old.access_token).await;
    assert!(answers.iter().all(|t| t == new));
    assert_eq!(
        stats(&mock).calls("/cgi-bin/token", appid),
        after.calls("/cgi-bin/token", appid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_reports_over_three_instances_cause_one_stable_force_refresh() {
    let appid = "wxcluster0storm02";
    let apps = [TestApp::stable(appid)];
    let redis = TestRedis::get();
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let hubs = spawn_cluster(&mock, &apps, &redis.url(), &unique_namespace("storm")).await;
    let old = prepared(&hubs, appid).await;
    wechat_refuses_the_token(&mock, appid);
    let before = stats(&mock);

    let answers = storm(&hubs, appid, &old.access_token).await;
    mock.clear_faults();

    let after = stats(&mock);
    assert_eq!(after.force_refreshes(appid), 1);
    // Normal mode first (it would return a token another party forced), which hands back the
    // dead one here; then the one force refresh.
    assert_eq!(
        after.calls("/cgi-bin/stable_token", appid),
        before.calls("/cgi-bin/stable_token", appid) + 2
    );
    let new = &answers[0];
    assert_ne!(new, &old.access_token);
    assert!(answers.iter().all(|t| t == new));
    let current = converged(&hubs, appid).await;
    assert_eq!(&current.access_token, new);
    assert_eq!(business_call(&hubs[0].client, &mock, new).await, 0);
}
