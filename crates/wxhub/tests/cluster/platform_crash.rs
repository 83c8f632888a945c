//! An authorizer's refresh token survives a `kill -9` of the hub right after it acknowledged
//! WeChat's `authorized` push: on SQLite, and on Redis (append-only file) even when Redis is
//! killed too. The restarted hub serves and renews the authorizer without its owner authorizing
//! again.
//!
//! The hub is the real `wxhub` binary, so the kill is a real `SIGKILL`; WeChat's refresh tokens
//! rotate at every renewal here (a mock option), so only the latest stored one works.

use std::time::Duration;

use crate::helpers::*;
use crate::platform_support::*;
use crate::process::{admin_consumer, redis_section, sqlite_section, wechat_section, ProcessHub};
use crate::redis_server::RedisServer;

/// The configuration (below `[server]`) of a platform hub on `store` (a `[store]` section).
fn platform_config(mock: &wechat_mock::MockServer, store: &str) -> String {
    format!(
        r#"
{store}

{wechat}
[refresh]
min_refresh_interval = "1s"
refresh_retry_interval = "1s"

[[components]]
component_appid = "{COMPONENT}"
secret = "{COMPONENT_SECRET}"
token = "{COMPONENT_TOKEN}"
encoding_aes_key = "{COMPONENT_KEY}"

{consumer}"#,
        wechat = wechat_section(mock),
        consumer = admin_consumer(r#"["read", "invalidate", "admin", "authorize"]"#),
    )
}

/// Starts a hub on `store`, points the relay at it and waits for its component token.
async fn start(
    dir: &std::path::Path,
    name: &str,
    relay: &Relay,
    mock: &wechat_mock::MockServer,
    store: &str,
) -> ProcessHub {
    let process = ProcessHub::spawn(dir, name, &platform_config(mock, store));
    // Before it is ready: the verify ticket it asks for at startup must reach it.
    relay.point_at(&[&process.hub]);
    process.hub.wait_ready().await;
    wait_for_component_token(&process.hub).await;
    process
}

/// Authorizes an account, kills the hub the moment the push is acknowledged, runs `between`
/// (a Redis crash, say), restarts the hub on the same store and checks that the authorizer is
/// served and renewed with no second authorization.
async fn the_refresh_token_survives_a_kill_after_the_acknowledgement(
    store: &str,
    between: impl FnOnce(),
) {
    let relay = Relay::start().await;
    let mock = rotating_platform_mock(&relay).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = start(dir.path(), "first", &relay, &mock, store).await;
    let authorizer = authorize(&mock).await;
    first.kill();
    between();

    let second = start(dir.path(), "second", &relay, &mock, store).await;
    let path = authorizer_path(&authorizer, "access_token");
    let served = second.hub.token_at(&path).await;
    assert_eq!(
        business_call(&second.hub.client, &mock, &served.access_token).await,
        0,
        "the token served after the crash works"
    );
    // Renewed twice with the stored refresh token, which rotates at every renewal: the one the
    // push stored was the live one, and each rotated one is stored before it is needed.
    wait_until(
        Duration::from_secs(15),
        "the authorizer token is renewed twice",
        || async { second.hub.token_at(&path).await.generation >= served.generation + 2 },
    )
    .await;
    let renewed = second.hub.token_at(&path).await;
    assert_eq!(
        business_call(&second.hub.client, &mock, &renewed.access_token).await,
        0
    );
    let component = stats(&mock).component(COMPONENT);
    assert_eq!(component.authorizations, 1, "never re-authorized");
    assert_eq!(
        second
            .hub
            .get(&format!("/v1/components/{COMPONENT}/authorizers"))
            .await
            .json::<serde_json::Value>()
            .await
            .expect("JSON")["authorizers"][0]["state"],
        "active"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_refresh_token_through_a_kill_after_the_acknowledgement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_section(dir.path());
    the_refresh_token_survives_a_kill_after_the_acknowledgement(&store, || {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_the_refresh_token_through_a_kill_of_the_hub_and_of_redis() {
    let mut redis = RedisServer::start(true);
    let store = redis_section(&redis.url(), "platform-crash");
    // Redis dies too, right after the hub: what the hub acknowledged is in its append-only file.
    the_refresh_token_survives_a_kill_after_the_acknowledgement(&store, || redis.restart()).await;
}
