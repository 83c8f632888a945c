//! Compare-and-refresh: a storm of reports of the current token turns into exactly one upstream
//! fetch; reports of a replaced token into none; reports of a brand-new token are throttled.

use std::time::Duration;

use futures_util::future::join_all;

use crate::helpers::*;

/// Sends `n` concurrent reports of `token` and returns the tokens the hub answered with.
async fn storm(hub: &TestHub, appid: &str, token: &str, n: usize) -> Vec<String> {
    let reports = (0..n).map(|_| async {
        let response = hub.invalidate(appid, token).await;
        assert_eq!(response.status(), 200);
        response.json::<TokenAnswer>().await.unwrap().access_token
    });
    join_all(reports).await
}

/// Waits until the token served for `appid` is older than the hub's `min_refresh_interval` (1 s
/// in tests), so that a report of it is allowed to cause a refresh.
async fn let_token_age(hub: &TestHub, appid: &str) {
    let fetched = hub.token(appid).await;
    let credential = hub.credential(&format!("access_token/{appid}")).await;
    assert_eq!(credential["generation"], fetched.generation);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
}

#[tokio::test]
async fn fifty_reports_of_the_current_legacy_token_cause_one_fetch() {
    let appid = "wxstorm0000000001";
    let apps = [TestApp::legacy(appid)];
    let (mock, hub) = start_ready(&apps).await;
    let old = hub.token(appid).await.access_token;
    let_token_age(&hub, appid).await;
    let issued_before = stats(&mock).issued("/cgi-bin/token", appid);

    let answers = storm(&hub, appid, &old, 50).await;

    assert_eq!(
        stats(&mock).issued("/cgi-bin/token", appid),
        issued_before + 1
    );
    let new = &answers[0];
    assert_ne!(new, &old);
    assert!(
        answers.iter().all(|t| t == new),
        "all 50 got the one new token"
    );
    assert_eq!(hub.token(appid).await.access_token, *new);

    // Reports of the replaced token: zero fetches, the current token back.
    let calls_before = stats(&mock).calls("/cgi-bin/token", appid);
    let answers = storm(&hub, appid, &old, 50).await;
    assert!(answers.iter().all(|t| t == new));
    assert_eq!(stats(&mock).calls("/cgi-bin/token", appid), calls_before);
    assert_eq!(business_call(&hub.client, &mock, new).await, 0);
}

#[tokio::test]
async fn fifty_reports_of_the_current_stable_token_cause_one_force_refresh() {
    let appid = "wxstorm0000000002";
    let apps = [TestApp::stable(appid)];
    let (mock, hub) = start_ready(&apps).await;
    let old = hub.token(appid).await.access_token;
    let_token_age(&hub, appid).await;
    let calls_before = stats(&mock).calls("/cgi-bin/stable_token", appid);

    let answers = storm(&hub, appid, &old, 50).await;

    let after = stats(&mock);
    assert_eq!(after.force_refreshes(appid), 1);
    assert_eq!(
        after.calls("/cgi-bin/stable_token", appid),
        calls_before + 1
    );
    let new = &answers[0];
    assert_ne!(new, &old);
    assert!(answers.iter().all(|t| t == new));
    let credential = hub.credential(&format!("access_token/{appid}")).await;
    assert_eq!(credential["force_refreshes_today"], 1);
}

#[tokio::test]
async fn a_report_of_a_token_younger_than_min_refresh_interval_is_throttled() {
    let appid = "wxstorm0000000003";
    let apps = [TestApp::legacy(appid)];
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let mut options = HubOptions::new(&apps);
    options.refresh.min_refresh_interval = Duration::from_secs(60);
    let hub = spawn_app(&mock, options).await;
    hub.wait_ready().await;
    let current = hub.token(appid).await.access_token;

    let answers = storm(&hub, appid, &current, 10).await;

    assert!(answers.iter().all(|t| *t == current));
    assert_eq!(stats(&mock).issued("/cgi-bin/token", appid), 1);
    let credential = hub.credential(&format!("access_token/{appid}")).await;
    assert!(
        credential["warning"]
            .as_str()
            .is_some_and(|w| w.contains("another party may be fetching tokens")),
        "{credential}"
    );
    let metrics = hub
        .client
        .get(hub.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("wxhub_invalidations_total{outcome=\"throttled\"} 10"));
}
