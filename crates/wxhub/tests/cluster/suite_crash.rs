//! A corp's permanent code survives a `kill -9` of the hub right after it acknowledged Work
//! WeChat's `create_auth` push: on SQLite, and on Redis (append-only file) even when Redis is
//! killed too. The restarted hub serves and renews the corp's token with the stored code, and
//! Work WeChat is never asked for the code again: it hands one out once per installation, and a
//! lost one means the company reinstalls the app (docs/suites.md).
//!
//! The hub is the real `wxhub` binary, so the kill is a real `SIGKILL`.

use std::time::Duration;

use wxhub::configuration::consumer_key_sha256;

use crate::helpers::*;
use crate::platform_support::Relay;
use crate::process::{redis_section, sqlite_section, wechat_section, ProcessHub};
use crate::redis_server::RedisServer;
use crate::suites_support::*;

/// The tests' master key (`[7; 32]`, as `test_master_key`) in base64: permanent codes are
/// stored sealed, and the restarted hub must open them.
const MASTER_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// The configuration (below `[server]`) of a hub with the test suite on `store` (a `[store]`
/// section), read by a consumer granted the suite's token and every corp that installs it.
fn suite_config(mock: &wechat_mock::MockServer, store: &str) -> String {
    format!(
        r#"
{store}

{wechat}
[secrets]
master_key = "{MASTER_KEY}"

[refresh]
min_refresh_interval = "1s"
refresh_retry_interval = "1s"

[[suites]]
suite_id = "{SUITE}"
secret = "{SUITE_SECRET}"
token = "{SUITE_TOKEN}"
encoding_aes_key = "{SUITE_KEY}"

[[consumers]]
name = "provider"
key_sha256 = "{key}"
apps = ["suite:{SUITE}", "suite:{SUITE}/*"]
scopes = ["read", "admin"]
"#,
        wechat = wechat_section(mock),
        key = consumer_key_sha256(ADMIN_KEY),
    )
}

/// Starts a hub on `store` and points the relay at it; with `push_ticket`, has the mock push a
/// suite ticket once it listens (the provider console's "push the ticket now"). Returns once it
/// is ready, which it is only with a suite token, so with a suite ticket.
async fn start(
    dir: &std::path::Path,
    name: &str,
    relay: &Relay,
    mock: &wechat_mock::MockServer,
    store: &str,
    push_ticket: bool,
) -> ProcessHub {
    let process = ProcessHub::spawn(dir, name, &suite_config(mock, store));
    relay.point_at(&[&process.hub]);
    if push_ticket {
        wait_until(Duration::from_secs(10), "the hub listens", || async {
            let probe = process.hub.client.get(process.hub.url("/healthz")).send();
            probe.await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(
            crate::suites_support::push_ticket(mock).await,
            "the ticket is acknowledged"
        );
    }
    process.hub.wait_ready().await;
    process
}

/// Installs the suite in a corp, kills the hub the moment the `create_auth` push is
/// acknowledged, runs `between` (a Redis crash, say), restarts the hub on the same store and
/// checks that the corp is served and renewed with no second exchange of an install code.
async fn the_permanent_code_survives_a_kill_after_the_acknowledgement(
    store: &str,
    between: impl FnOnce(),
) {
    let relay = Relay::start().await;
    // Tokens live 6 s; the periodic ticket push is far off, so the first hub gets one ticket
    // and the second none: it works from what the first stored.
    let mock = suite_mock(&relay, Duration::from_secs(6), Duration::from_secs(600)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = start(dir.path(), "first", &relay, &mock, store, true).await;
    let corpid = install(&mock).await;
    first.kill();
    between();

    let second = start(dir.path(), "second", &relay, &mock, store, false).await;
    let path = corp_path(&corpid, "access_token");
    wait_until(
        Duration::from_secs(15),
        "the corp token is served after the restart",
        || async { second.hub.get(&path).await.status() == 200 },
    )
    .await;
    let served = second.hub.token_at(&path).await;
    assert_eq!(
        business_call(&second.hub.client, &mock, &served.access_token).await,
        0,
        "the token served after the crash works"
    );
    // Renewed with the stored permanent code: Work WeChat mints corp tokens for it, and no
    // other code of this corp exists.
    let minted = stats(&mock).suite(SUITE).corp_tokens_issued;
    wait_until(
        Duration::from_secs(20),
        "the corp token is renewed",
        || async {
            let answer = second.hub.get(&path).await;
            let generation = match answer.status().as_u16() {
                200 => answer
                    .json::<TokenAnswer>()
                    .await
                    .map_or(0, |t| t.generation),
                _ => 0,
            };
            generation > served.generation && stats(&mock).suite(SUITE).corp_tokens_issued > minted
        },
    )
    .await;
    let renewed = second.hub.token_at(&path).await;
    assert_ne!(renewed.access_token, served.access_token);
    assert_eq!(
        business_call(&second.hub.client, &mock, &renewed.access_token).await,
        0,
        "the renewed token works"
    );
    let suite = stats(&mock).suite(SUITE);
    assert_eq!(suite.installs, 1, "installed once");
    assert_eq!(
        suite.permanent_codes_issued, 1,
        "the permanent code was never asked for again"
    );
    let listed: serde_json::Value = second
        .hub
        .get(&format!("/v1/suites/{SUITE}/corps"))
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["corps"][0]["corpid"], corpid.as_str(), "{listed}");
    assert_eq!(listed["corps"][0]["state"], "active", "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_permanent_code_through_a_kill_after_the_acknowledgement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_section(dir.path());
    the_permanent_code_survives_a_kill_after_the_acknowledgement(&store, || {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_the_permanent_code_through_a_kill_of_the_hub_and_of_redis() {
    let mut redis = RedisServer::start(true);
    let store = redis_section(&redis.url(), "suite-crash");
    // Redis dies too, right after the hub: what the hub acknowledged is in its append-only file.
    the_permanent_code_survives_a_kill_after_the_acknowledgement(&store, || redis.restart()).await;
}
