//! The third-party platform on three instances sharing one Redis: WeChat's push reaches every
//! instance (a balancer may retry, WeChat may resend), yet the ticket is written once; a storm
//! of reports of one authorizer token, over all instances, is one refresh.

use std::time::Duration;

use futures_util::future::join_all;

use crate::common::*;
use crate::helpers::*;
use crate::platform_support::*;
use crate::redis_server::{unique_namespace, TestRedis};

/// Three instances of the platform hub on one Redis namespace, all receiving the relay's pushes.
async fn platform_cluster(
    relay: &Relay,
    mock: &wechat_mock::MockServer,
    url: &str,
    namespace: &str,
) -> Vec<TestHub> {
    let mut hubs = Vec::new();
    for _ in 0..INSTANCES {
        let mut options = platform_options(&[]);
        options.store = wxhub::configuration::StoreSettings::Redis(
            wxhub::configuration::RedisSettings::url(url).with_namespace(namespace),
        );
        hubs.push(spawn_app(mock, options).await);
    }
    relay.point_at(&hubs.iter().collect::<Vec<_>>());
    for hub in &hubs {
        wait_for_component_token(hub).await;
    }
    hubs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_push_delivered_to_three_instances_is_one_ticket_write() {
    let redis = TestRedis::get();
    let namespace = unique_namespace("platform-push");
    let relay = Relay::start().await;
    // A push's CreateTime is in whole seconds, and the hub stores only a push created later
    // than the stored one: pushes a little over a second apart are each a new ticket.
    let mock = platform_mock(
        &relay,
        Duration::from_secs(60),
        Duration::from_millis(1_100),
        |c| c,
    )
    .await;
    let hubs = platform_cluster(&relay, &mock, &redis.url(), &namespace).await;
    let key = format!("component_verify_ticket/{COMPONENT}");
    let acknowledged =
        || stats(&mock).component(COMPONENT).pushes["component_verify_ticket"].acknowledged;
    let start = acknowledged();
    wait_until(Duration::from_secs(10), "three more pushes", || async {
        acknowledged() >= start + 3
    })
    .await;
    // Every acknowledged push reached all three instances; the generation counts pushes, not
    // deliveries. Pushes go on while the store is read (every 800 ms, and slower machines take
    // longer to read): the generation is bounded by the count before and after the read.
    let before = acknowledged();
    let (generation, _) = stored(&redis.url(), &namespace, &key)
        .await
        .expect("stored");
    let after = acknowledged();
    assert!(
        generation <= after && generation + 1 >= before,
        "{generation} writes for {before}..={after} pushes delivered {INSTANCES} times each"
    );
    let tickets: Vec<u64> = join_all(
        hubs.iter()
            .map(|h| async { h.credential(&key).await["generation"].as_u64().unwrap_or(0) }),
    )
    .await;
    assert!(tickets.iter().all(|g| *g + 1 >= generation), "{tickets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_reports_of_one_authorizer_token_is_one_refresh() {
    let redis = TestRedis::get();
    let namespace = unique_namespace("platform-storm");
    let relay = Relay::start().await;
    let mock = platform_mock(
        &relay,
        Duration::from_secs(60),
        Duration::from_secs(600),
        |c| c,
    )
    .await;
    let hubs = platform_cluster(&relay, &mock, &redis.url(), &namespace).await;
    let authorizer = authorize(&mock).await;
    let path = authorizer_path(&authorizer, "access_token");
    let current = wait_for(
        Duration::from_secs(10),
        "every instance serves one token",
        || async {
            let tokens: Vec<TokenAnswer> = join_all(hubs.iter().map(|h| h.token_at(&path))).await;
            tokens
                .iter()
                .all(|t| t.access_token == tokens[0].access_token)
                .then(|| tokens[0].clone())
        },
    )
    .await;
    // A report of a token younger than min_refresh_interval (1 s) is throttled, by design.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // Reports are verified with WeChat before a token is burned: make WeChat refuse it.
    wechat_refuses_the_token(&mock, &authorizer);
    let before = stats(&mock).component(COMPONENT).authorizer_tokens_issued;
    let reports = (0..60).map(|i| {
        let hub = &hubs[i % hubs.len()];
        let path = authorizer_path(&authorizer, "access_token/invalidate");
        let token = current.access_token.clone();
        async move {
            let response = hub
                .post(&path, serde_json::json!({ "access_token": token }))
                .await;
            assert_eq!(response.status(), 200);
            response.json::<TokenAnswer>().await.unwrap().access_token
        }
    });
    let answers = join_all(reports).await;
    mock.clear_faults();
    assert_eq!(
        stats(&mock).component(COMPONENT).authorizer_tokens_issued,
        before + 1,
        "one refresh for {} reports",
        answers.len()
    );
    assert!(answers
        .iter()
        .all(|t| *t == answers[0] && *t != current.access_token));
    assert_eq!(business_call(&hubs[0].client, &mock, &answers[0]).await, 0);
}
