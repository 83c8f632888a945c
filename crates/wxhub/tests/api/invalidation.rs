//! Compare-and-refresh: a storm of reports of a dead current token turns into exactly one
//! upstream fetch; reports of a replaced token into none; reports of a brand-new token are
//! throttled; reports of a token WeChat still accepts are rejected after one check with WeChat.

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

/// A mock with a short overlap (1 s), so that a token killed by another party dies quickly, and
/// a ready hub for `apps`.
async fn short_overlap(apps: &[TestApp]) -> (std::sync::Arc<wechat_mock::MockServer>, TestHub) {
    let mock = spawn_mock(
        Duration::from_secs(120),
        Duration::from_secs(1),
        apps,
        &[],
        |c| c,
    )
    .await;
    let hub = spawn_app(&mock, HubOptions::new(apps)).await;
    hub.wait_ready().await;
    (mock, hub)
}

/// Another party fetches a token for `appid` straight from WeChat (legacy `cgi-bin/token`, or a
/// `stable_token` force refresh), and the hub's `old` token dies once the overlap is over.
async fn killed_by_another_party(
    hub: &TestHub,
    mock: &wechat_mock::MockServer,
    appid: &str,
    old: &str,
    stable: bool,
) {
    if stable {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/cgi-bin/stable_token", mock.base_url()))
            .json(&serde_json::json!({
                "grant_type": "client_credential",
                "appid": appid,
                "secret": secret_of(appid),
                "force_refresh": true,
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer["access_token"].is_string(), "{answer}");
    } else {
        fetched_elsewhere(mock, appid).await;
    }
    wait_until(Duration::from_secs(10), "the old token dies", || async {
        business_call(&hub.client, mock, old).await != 0
    })
    .await;
}

#[tokio::test]
async fn fifty_reports_of_a_dead_legacy_token_cause_one_fetch() {
    let appid = "wxstorm0000000001";
    let apps = [TestApp::legacy(appid)];
    let (mock, hub) = short_overlap(&apps).await;
    let old = hub.token(appid).await.access_token;
    let_token_age(&hub, appid).await;
    killed_by_another_party(&hub, &mock, appid, &old, false).await;
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
async fn fifty_reports_of_a_dead_stable_token_cause_one_call_and_no_force_refresh() {
    let appid = "wxstorm0000000002";
    let apps = [TestApp::stable(appid)];
    let (mock, hub) = short_overlap(&apps).await;
    let old = hub.token(appid).await.access_token;
    let_token_age(&hub, appid).await;
    killed_by_another_party(&hub, &mock, appid, &old, true).await;
    let before = stats(&mock);

    let answers = storm(&hub, appid, &old, 50).await;

    let after = stats(&mock);
    // The other party's force refresh already replaced the token: normal mode returns it, and
    // the hub spends none of the force budget.
    assert_eq!(after.force_refreshes(appid), before.force_refreshes(appid));
    assert_eq!(
        after.calls("/cgi-bin/stable_token", appid),
        before.calls("/cgi-bin/stable_token", appid) + 1
    );
    let new = &answers[0];
    assert_ne!(new, &old);
    assert!(answers.iter().all(|t| t == new));
    assert_eq!(business_call(&hub.client, &mock, new).await, 0);
    let credential = hub.credential(&format!("access_token/{appid}")).await;
    assert_eq!(credential["force_refreshes_today"], 0);
}

#[tokio::test]
async fn fifty_reports_of_a_live_token_are_rejected_after_one_check() {
    let appid = "wxstorm0000000004";
    let apps = [TestApp::legacy(appid)];
    let (mock, hub) = short_overlap(&apps).await;
    let current = hub.token(appid).await.access_token;
    let_token_age(&hub, appid).await;
    let before = stats(&mock);

    let answers = storm(&hub, appid, &current, 50).await;

    assert!(answers.iter().all(|t| *t == current));
    let after = stats(&mock);
    assert_eq!(
        after.calls("/cgi-bin/token", appid),
        before.calls("/cgi-bin/token", appid)
    );
    assert_eq!(
        after.business(appid, 0),
        before.business(appid, 0) + 1,
        "one check with WeChat for the whole storm"
    );
    let credential = hub.credential(&format!("access_token/{appid}")).await;
    assert_eq!(credential["rejected_reports"], 50);
    let metrics = hub.metrics().await;
    assert!(
        metrics.contains("wxhub_invalidations_total{outcome=\"rejected\"} 50"),
        "{metrics}"
    );
}

#[tokio::test]
async fn admin_refresh_respects_min_refresh_interval_and_the_force_reserve() {
    let appid = "wxstorm0000000006";
    let apps = [TestApp::stable(appid)];
    let mock = spawn_mock(
        Duration::from_secs(120),
        Duration::from_secs(1),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let mut options = HubOptions::new(&apps);
    options.refresh.min_refresh_interval = Duration::from_secs(60);
    // Only one force refresh a day outside the reserve.
    options.refresh.force_reserve = 19;
    let hub = spawn_app(&mock, options).await;
    hub.wait_ready().await;
    let path = format!("/v1/apps/{appid}/refresh");
    let refused = hub.post(&path, serde_json::json!({})).await;
    assert_eq!(refused.status(), 429);
    let forced = hub
        .post(&format!("{path}?force=true"), serde_json::json!({}))
        .await;
    assert_eq!(forced.status(), 200);
    assert_eq!(stats(&mock).force_refreshes(appid), 1);
    // The next one would eat into the reserve: normal mode instead, no force.
    let again = hub
        .post(&format!("{path}?force=true"), serde_json::json!({}))
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(stats(&mock).force_refreshes(appid), 1);
    let credential = hub.credential(&format!("access_token/{appid}")).await;
    assert!(
        credential["warning"]
            .as_str()
            .is_some_and(|w| w.contains("reserve")),
        "{credential}"
    );
    let bad = hub
        .post(&format!("{path}?force=yes"), serde_json::json!({}))
        .await;
    assert_eq!(bad.status(), 400);
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
    let metrics = hub.metrics().await;
    assert!(metrics.contains("wxhub_invalidations_total{outcome=\"throttled\"} 10"));
}

/// A report that lands between the end of WeChat's check and the start of the refresh it leads
/// to must join that refresh, not check again: a second check of a dead token can meet a passing
/// fault (or, in a test, a refusal used up) and answer the old token as if it were alive. Looped,
/// because the window is narrow: every report of every round gets the new token, after exactly
/// one check per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_around_the_end_of_a_check_all_join_its_refresh() {
    let appid = "wxinvalid0window1";
    let (mock, hub) = quick_hub(appid).await;
    for round in 0..25 {
        let old = hub.token(appid).await.access_token;
        let checks = stats(&mock).total_calls("/cgi-bin/get_api_domain_ip");
        // WeChat refuses the token once, after 20 ms: one check finds it dead.
        mock.add_fault(wechat_mock::FaultRule {
            path: "/cgi-bin/get_api_domain_ip".into(),
            account: Some(appid.to_string()),
            errcode: Some(40001),
            delay_ms: Some(20),
            count: Some(1),
            ..wechat_mock::FaultRule::default()
        });
        let reports = (0..40u64).map(|i| {
            let client = hub.client.clone();
            let url = hub.url(&format!("/v1/apps/{appid}/access_token/invalidate"));
            let old = old.clone();
            tokio::spawn(async move {
                // Spread over the check and the refresh that follows it.
                tokio::time::sleep(Duration::from_millis(i)).await;
                let answer: serde_json::Value = client
                    .post(url)
                    .bearer_auth(ADMIN_KEY)
                    .json(&serde_json::json!({ "access_token": old }))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                answer["access_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
        });
        for answer in join_all(reports).await {
            assert_ne!(
                answer.unwrap(),
                old,
                "round {round}: a report got the dead token back"
            );
        }
        assert_eq!(
            stats(&mock).total_calls("/cgi-bin/get_api_domain_ip"),
            checks + 1,
            "round {round}: one check"
        );
        mock.clear_faults();
    }
    hub.stop().await;
}

/// `[refresh] check_interval`: a token killed outside the hub is replaced before any consumer
/// reports it; a live one is only checked.
#[tokio::test]
async fn the_periodic_check_replaces_a_token_killed_outside_the_hub_before_anyone_reports_it() {
    let appid = "wxinvalid0checked";
    let (mock, hub) = quick_hub_with(appid, |mut options| {
        options.refresh.check_interval = Some(Duration::from_secs(1));
        options
    })
    .await;
    let old = hub.token(appid).await;
    wait_until(
        Duration::from_secs(10),
        "a live token is checked",
        || async {
            hub.metric_sum("wxhub_token_checks_total{outcome=\"alive\"}")
                .await
                >= 1
        },
    )
    .await;
    assert_eq!(hub.token(appid).await.access_token, old.access_token);
    let issued = stats(&mock).issued("/cgi-bin/token", appid);

    // Someone fetches a token with the AppSecret elsewhere: the hub's dies after the overlap.
    killed_behind_the_hubs_back(&mock, appid, &old.access_token).await;
    wait_until(
        Duration::from_secs(10),
        "the dead token is replaced",
        || async { hub.token(appid).await.access_token != old.access_token },
    )
    .await;
    let new = hub.token(appid).await;
    assert_eq!(
        business_call(&hub.client, &mock, &new.access_token).await,
        0
    );
    assert_eq!(
        stats(&mock).issued("/cgi-bin/token", appid),
        issued + 2,
        "the other party's fetch, and the hub's one replacement"
    );
    assert!(
        hub.metric_sum("wxhub_token_checks_total{outcome=\"dead\"}")
            .await
            >= 1
    );
    assert_eq!(
        hub.metric_sum("wxhub_invalidations_total{").await,
        0,
        "no consumer had to report it"
    );
    hub.stop().await;
}
