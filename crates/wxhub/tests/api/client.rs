//! The Rust client (`wxhub-client`) against a real hub: cache, single-flight, the watch stream
//! keeping the cache current, and `call` healing a dead token.

use std::time::Duration;

use wxhub_client::{Client, WechatError};

use crate::helpers::*;

const APP: &str = "wx00000000000000e1";

/// Token reads the hub has answered (its request counter).
async fn reads(hub: &TestHub) -> u64 {
    hub.metric_sum("wxhub_http_requests_total{route=\"access_token\",status=\"200\"}")
        .await
}

#[tokio::test]
async fn the_client_caches_flies_once_follows_the_watch_stream_and_heals_calls() {
    let (mock, hub) = quick_hub(APP).await;
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
