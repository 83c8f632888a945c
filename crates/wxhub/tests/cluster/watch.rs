//! The watch stream across instances: a refresh made by one instance reaches a watcher connected
//! to another within milliseconds (the store's change feed, then the same serving path).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::common::*;
use crate::helpers::*;
use crate::redis_server::{unique_namespace, TestRedis};

/// Reads `credential` events from a watch stream until one satisfies `wanted`.
async fn next_event(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    pending: &mut String,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        while let Some(end) = pending.find("\n\n") {
            let block: String = pending.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    let event: Value = serde_json::from_str(data).expect("JSON data");
                    if wanted(&event) {
                        return event;
                    }
                }
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream stays open")
            .expect("readable");
        pending.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_on_one_instance_reaches_a_watcher_on_another_within_100_ms() {
    let appid = "wxcluster0watch01";
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
    let hubs = spawn_cluster(&mock, &apps, &redis.url(), &unique_namespace("watch")).await;
    let before = converged(&hubs, appid).await;

    let response = hubs[0]
        .client
        .get(hubs[0].url("/v1/watch"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("watch answers");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream().boxed();
    let mut pending = String::new();
    let key = format!("access_token/{appid}");
    let initial = next_event(&mut body, &mut pending, |e| e["key"] == key.as_str()).await;
    assert_eq!(initial["generation"], before.generation);

    let started = Instant::now();
    let refreshed = hubs[1]
        .post(
            &format!("/v1/apps/{appid}/refresh?force=true"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(refreshed.status(), 200);
    let event = next_event(&mut body, &mut pending, |e| {
        e["key"] == key.as_str() && e["generation"].as_u64() > Some(before.generation)
    })
    .await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");
    let after = read_token(&hubs[1], appid)
        .await
        .expect("instance 2 serves");
    assert_eq!(event["value"], after.access_token.as_str());
    assert_eq!(event["generation"], after.generation);
    drop(body);
    for hub in Arc::try_unwrap(hubs).ok().expect("no other owner") {
        hub.stop().await;
    }
}
