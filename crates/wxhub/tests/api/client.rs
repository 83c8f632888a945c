//! The Rust client (`wxhub-client`) against a real hub: cache, single-flight, the watch stream
//! keeping the cache current, and `call` healing a dead token.

use std::time::Duration;

use wxhub_client::{Client, WechatError};

use crate::helpers::*;

const APP: &str = "wx00000000000000e1";

/// Token reads the hub has answered (its request counter).
async fn reads(hub: &TestHub) -> u64 {
    let text = hub
        .client
        .get(hub.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("wxhub_http_requests_total{route=\"access_token\",status=\"200\"}")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn the_client_caches_flies_once_follows_the_watch_stream_and_heals_calls() {
    let apps = [TestApp::legacy(APP)];
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_millis(500),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let mut options = HubOptions::new(&apps);
    options.refresh.min_refresh_interval = Duration::from_millis(1);
    let hub = spawn_app(&mock, options).await;
    hub.wait_ready().await;
    let client = Client::new(&hub.address, ADMIN_KEY).unwrap();

    // 50 concurrent first reads: one request to the hub.
    let before = reads(&hub).await;
    let all = futures_util::future::join_all((0..50).map(|_| client.access_token(APP))).await;
    let expected = hub.token(APP).await.access_token;
    assert!(all
        .iter()
        .all(|t| t.as_deref().ok() == Some(expected.as_str())));
    assert_eq!(
        reads(&hub).await,
        before + 2,
        "one for the client, one for the check"
    );

    // The watch stream brings a refreshed token into the cache without a read.
    let _watching = client.watch();
    let before = reads(&hub).await;
    let refreshed = hub
        .post(
            &format!("/v1/apps/{APP}/refresh?force=true"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(refreshed.status(), 200);
    let new = hub.token(APP).await.access_token;
    assert_ne!(new, expected);
    wait_until(
        Duration::from_secs(2),
        "the cache holds the new token",
        || async { client.access_token(APP).await.ok().as_deref() == Some(new.as_str()) },
    )
    .await;
    assert_eq!(reads(&hub).await, before + 1, "only the check read the hub");

    // A token killed behind the hub's back: `call` reports it and retries once.
    killed_behind_the_hubs_back(&mock, APP, &new).await;
    let http = reqwest::Client::new();
    let issued = stats(&mock).issued("/cgi-bin/token", APP);
    let base = mock.base_url();
    let answer = client
        .call(APP, |token| {
            let http = http.clone();
            let base = base.clone();
            async move {
                let answer: serde_json::Value = http
                    .get(format!("{base}/cgi-bin/get_api_domain_ip"))
                    .query(&[("access_token", token)])
                    .send()
                    .await
                    .map_err(|e| WechatError::transport(e.to_string()))?
                    .json()
                    .await
                    .map_err(|e| WechatError::transport(e.to_string()))?;
                WechatError::check(answer)
            }
        })
        .await
        .expect("the call succeeds after one retry");
    assert!(answer["ip_list"].is_array());
    assert_eq!(stats(&mock).issued("/cgi-bin/token", APP), issued + 1);
    drop(_watching);
    hub.stop().await;
}
