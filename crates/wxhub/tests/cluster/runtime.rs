//! Credentials at runtime across a cluster: an app or Work app added through one instance is
//! served by every instance within moments and fetched once; removed through one instance, it is
//! gone from every instance and never fetched again.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::time::Instant;

use crate::common::*;
use crate::helpers::*;
use crate::redis_server::{unique_namespace, TestRedis};

/// How soon every instance must follow a change made on one of them.
const PROPAGATION: Duration = Duration::from_secs(2);

/// Waits until `path` answers `status` with the admin key on every hub, within [`PROPAGATION`].
async fn everywhere(hubs: &[TestHub], path: &str, status: u16) {
    let started = Instant::now();
    for (i, hub) in hubs.iter().enumerate() {
        let left = PROPAGATION.saturating_sub(started.elapsed());
        wait_until(
            left,
            &format!("instance {i} answers {status} for {path}"),
            || async { hub.get(path).await.status() == status },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_added_on_one_instance_is_served_by_all_and_removed_from_all() {
    let fixed = TestApp::stable("wxclusterrt000001");
    let added = "wxclusterrt000002";
    let redis = TestRedis::get();
    let mock = spawn_mock(
        Duration::from_secs(8),
        Duration::from_secs(2),
        &[fixed.clone(), TestApp::legacy(added)],
        &[],
        |c| c,
    )
    .await;
    let namespace = unique_namespace("runtime");
    let hubs = spawn_cluster(&mock, &[fixed], &redis.url(), &namespace).await;

    let put = hubs[0]
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{added}"),
            Some(json!({ "secret": secret_of(added), "mode": "legacy" })),
        )
        .await;
    assert_eq!(put.status(), 201);
    let path = format!("/v1/apps/{added}/access_token");
    everywhere(&hubs, &path, 200).await;
    let token = converged(&hubs, added).await;
    assert_eq!(
        stats(&mock).issued("/cgi-bin/token", added),
        1,
        "fetched once"
    );
    assert_eq!(
        business_call(&hubs[2].client, &mock, &token.access_token).await,
        0
    );

    let deleted = hubs[1]
        .send(Method::DELETE, &format!("/v1/admin/apps/{added}"), None)
        .await;
    assert_eq!(deleted.status(), 204);
    everywhere(&hubs, &path, 404).await;
    let calls = stats(&mock).calls("/cgi-bin/token", added);
    // Past the moment the token would have been refreshed: no instance fetches it again.
    let expiry = Duration::from_secs(seconds_until(&token.expires_at).max(0) as u64 + 1);
    tokio::time::sleep(expiry).await;
    assert_eq!(stats(&mock).calls("/cgi-bin/token", added), calls);
    assert!(
        stored(&redis.url(), &namespace, &format!("access_token/{added}"))
            .await
            .is_none()
    );
    for hub in hubs.iter() {
        assert!(!hub
            .get("/v1/credentials")
            .await
            .text()
            .await
            .unwrap()
            .contains(added));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_app_added_on_one_instance_is_served_by_all_and_removed_from_all() {
    let fixed = TestApp::stable("wxclusterrt000003");
    let corp = TestCorp {
        corpid: "wwclusterrt00001".into(),
        agentid: "1000005".into(),
        tickets: vec![],
    };
    let redis = TestRedis::get();
    let mock = spawn_mock(
        Duration::from_secs(30),
        Duration::from_secs(2),
        std::slice::from_ref(&fixed),
        std::slice::from_ref(&corp),
        |c| c,
    )
    .await;
    let namespace = unique_namespace("runtime");
    let hubs = spawn_cluster(&mock, &[fixed], &redis.url(), &namespace).await;
    let account = format!("{}/{}", corp.corpid, corp.agentid);
    let admin = format!("/v1/admin/corps/{}/agents/{}", corp.corpid, corp.agentid);
    let put = hubs[2]
        .send(
            Method::PUT,
            &admin,
            Some(json!({ "secret": secret_of(&account) })),
        )
        .await;
    assert_eq!(put.status(), 201);
    let path = format!(
        "/v1/corps/{}/agents/{}/access_token",
        corp.corpid, corp.agentid
    );
    everywhere(&hubs, &path, 200).await;
    assert_eq!(stats(&mock).issued("/cgi-bin/gettoken", &account), 1);
    assert_eq!(
        hubs[0].send(Method::DELETE, &admin, None).await.status(),
        204
    );
    everywhere(&hubs, &path, 404).await;
}

/// Waits until `path` answers `status` to `key` on every hub, within [`PROPAGATION`].
async fn everywhere_to(hubs: &[TestHub], key: &str, path: &str, status: u16) {
    let started = Instant::now();
    for (i, hub) in hubs.iter().enumerate() {
        let left = PROPAGATION.saturating_sub(started.elapsed());
        wait_until(
            left,
            &format!("instance {i} answers {status} for {path}"),
            || async {
                hub.client
                    .get(hub.url(path))
                    .bearer_auth(key)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == status)
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_added_on_one_instance_authenticates_on_all_and_is_re_keyed_and_removed_on_all()
{
    const OLD_KEY: &str = "cluster-consumer-key-0123456789";
    const NEW_KEY: &str = "cluster-consumer-key-replaced-01";
    let fixed = TestApp::stable("wxclusterrt000004");
    let other = TestApp::stable("wxclusterrt000005");
    let redis = TestRedis::get();
    let mock = minute_mock(&[fixed.clone(), other.clone()]).await;
    let namespace = unique_namespace("runtime-consumers");
    let hubs = spawn_cluster(
        &mock,
        &[fixed.clone(), other.clone()],
        &redis.url(),
        &namespace,
    )
    .await;
    let path = format!("/v1/apps/{}/access_token", fixed.appid);
    let other_path = format!("/v1/apps/{}/access_token", other.appid);
    let body = |key: &str| {
        json!({
            "key_sha256": wxhub::configuration::consumer_key_sha256(key),
            "apps": [fixed.appid],
            "scopes": ["read"],
        })
    };

    let put = hubs[0]
        .send(Method::PUT, "/v1/admin/consumers/shop", Some(body(OLD_KEY)))
        .await;
    assert_eq!(put.status(), 201);
    everywhere_to(&hubs, OLD_KEY, &path, 200).await;
    everywhere_to(&hubs, OLD_KEY, &other_path, 403).await;

    // Re-keyed through another instance: the old key stops everywhere, the new one works.
    let put = hubs[1]
        .send(Method::PUT, "/v1/admin/consumers/shop", Some(body(NEW_KEY)))
        .await;
    assert_eq!(put.status(), 200, "the instance knows it replaces one");
    everywhere_to(&hubs, OLD_KEY, &path, 401).await;
    everywhere_to(&hubs, NEW_KEY, &path, 200).await;

    // Removed through a third: refused everywhere, and not stored any more.
    let deleted = hubs[2]
        .send(Method::DELETE, "/v1/admin/consumers/shop", None)
        .await;
    assert_eq!(deleted.status(), 204);
    everywhere_to(&hubs, NEW_KEY, &path, 401).await;
    let mut redis_conn = raw_redis(&redis.url()).await;
    let stored: Option<String> = redis::cmd("HGET")
        .arg(format!("{{{namespace}}}:accounts"))
        .arg("consumer/shop")
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert_eq!(stored, None);
    // Whichever instance a deletion is sent to, it is one deletion: the next is 404 everywhere.
    for hub in hubs.iter() {
        let again = hub
            .send(Method::DELETE, "/v1/admin/consumers/shop", None)
            .await;
        assert_eq!(again.status(), 404);
    }
}
