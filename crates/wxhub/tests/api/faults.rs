//! Upstream failures, by class: transient errors are retried with backoff while the old token is
//! still served; configuration errors mark the credential for an operator and are retried slowly;
//! an exhausted quota backs off for minutes.

use std::time::Duration;

use wechat_mock::FaultRule;

use crate::helpers::*;

#[tokio::test]
async fn transient_failures_are_retried_while_the_old_token_is_served() {
    let appid = "wxfault0000000001";
    let apps = [TestApp::legacy(appid)];
    let (mock, hub) = start_ready(&apps).await;
    let old = hub.token(appid).await;

    for rule in [
        FaultRule {
            path: "/cgi-bin/token".into(),
            errcode: Some(-1),
            count: Some(2),
            ..FaultRule::default()
        },
        FaultRule {
            path: "/cgi-bin/token".into(),
            http_status: Some(500),
            count: Some(2),
            ..FaultRule::default()
        },
    ] {
        mock.add_fault(rule);
    }
    let response = hub
        .post(
            &format!("/v1/apps/{appid}/refresh?force=true"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(response.status(), 503, "the forced refresh hit a fault");

    // The old token is still served while the engine retries.
    let during = hub.token(appid).await;
    assert_eq!(during.access_token, old.access_token);
    let credential = hub.credential(&format!("access_token/{appid}")).await;
    assert!(
        ["retrying", "refreshing"].contains(&credential["state"].as_str().unwrap_or_default()),
        "{credential}"
    );

    wait_until(
        Duration::from_secs(20),
        "a retry gets a new token",
        || async { hub.token(appid).await.access_token != old.access_token },
    )
    .await;
    let stats = stats(&mock);
    assert_eq!(stats.faults_injected("/cgi-bin/token"), 4);
    assert_eq!(stats.issued("/cgi-bin/token", appid), 2);
    let credential = hub.credential(&format!("access_token/{appid}")).await;
    assert_eq!(credential["state"], "fresh");
    assert!(credential["last_error"].is_null());
}

#[tokio::test]
async fn a_wrong_secret_needs_attention_and_is_retried_slowly() {
    let appid = "wxfault0000000002";
    let wrong_secret = "this-is-the-wrong-secret";
    let apps = [TestApp::legacy(appid).with_secret(wrong_secret)];
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let hub = spawn_app(&mock, HubOptions::new(&apps)).await;
    let key = format!("access_token/{appid}");

    wait_until(
        Duration::from_secs(10),
        "the credential needs attention",
        || async { hub.credential(&key).await["state"] == "needs_attention" },
    )
    .await;
    let credential = hub.credential(&key).await;
    assert_eq!(credential["last_error"]["errcode"], 40125);
    let message = credential["last_error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("invalid appsecret"), "{message}");
    assert!(!credential.to_string().contains(wrong_secret));
    let next = seconds_until(credential["next_refresh"].as_str().unwrap());
    assert!(next >= 240, "retried slowly, next in {next} s");

    // No token to serve: 503, with no secret in it; not ready.
    let response = hub.get(&format!("/v1/apps/{appid}/access_token")).await;
    assert_eq!(response.status(), 503);
    assert!(!response.text().await.unwrap().contains(wrong_secret));
    let ready = hub.client.get(hub.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(stats(&mock).calls("/cgi-bin/token", appid), 1);
}

#[tokio::test]
async fn an_exhausted_daily_quota_backs_off_for_minutes() {
    let appid = "wxfault0000000003";
    let apps = [TestApp::legacy(appid)];
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| {
            let mut c = c;
            c.daily_quota = 1;
            c
        },
    )
    .await;
    let hub = spawn_app(&mock, HubOptions::new(&apps)).await;
    hub.wait_ready().await;
    let old = hub.token(appid).await;

    let response = hub
        .post(
            &format!("/v1/apps/{appid}/refresh?force=true"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(response.status(), 503);
    let credential = hub.credential(&format!("access_token/{appid}")).await;
    assert_eq!(credential["state"], "retrying");
    assert_eq!(credential["last_error"]["errcode"], 45009);
    let next = seconds_until(credential["next_refresh"].as_str().unwrap());
    assert!(next >= 240, "backed off for minutes, next in {next} s");
    // Still serving the old token, which WeChat still accepts.
    let served = hub.token(appid).await;
    assert_eq!(served.access_token, old.access_token);
    assert_eq!(
        business_call(&hub.client, &mock, &served.access_token).await,
        0
    );
    assert_eq!(stats(&mock).calls("/cgi-bin/token", appid), 2);
}
