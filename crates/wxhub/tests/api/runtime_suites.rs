//! Suites put and deleted at runtime through the admin API: received, refreshed and installed
//! like a suite of the file, their secret and push keys sealed at rest, their installed corps
//! kept across a restart, and refused removal while a corp has them installed.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::platform_support::*;
use crate::suites_support::*;

fn suite_body() -> Value {
    json!({
        "secret": SUITE_SECRET,
        "token": SUITE_TOKEN,
        "encoding_aes_key": SUITE_KEY,
        "corp_tickets": ["jsapi"],
    })
}

async fn code_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn a_suite_put_at_runtime_receives_installs_survives_a_restart_and_leaves_when_unused() {
    let relay = Relay::start().await;
    let mock = suite_mock(&relay, Duration::from_secs(60), Duration::from_secs(600)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let database = dir.path().join("wxhub.db");
    let options = || HubOptions::new(&[]).with_sqlite(database.clone());

    let first = spawn_app(&mock, options()).await;
    first.wait_ready().await;
    relay.point_at(&[&first]);
    // Unknown until put: its pushes are refused.
    assert!(!push_ticket(&mock).await);
    let path = format!("/v1/admin/suites/{SUITE}");
    let put = first.send(Method::PUT, &path, Some(suite_body())).await;
    assert_eq!(put.status(), 201, "{:?}", put.text().await);
    assert!(push_ticket(&mock).await, "{:?}", stats(&mock).suite(SUITE));
    wait_for_suite_token(&first).await;
    let corpid = install(&mock).await;
    let served = first.token_at(&corp_path(&corpid, "access_token")).await;
    assert_eq!(stats(&mock).suite(SUITE).permanent_codes_issued, 1);

    // A corp has it installed: it stays.
    let (status, code) = code_of(first.send(Method::DELETE, &path, None).await).await;
    assert_eq!((status, code.as_str()), (409, "suite_installed"));
    first.stop().await;

    // The secret, the Token and the key are sealed at rest.
    let raw = std::fs::read(&database).expect("database");
    for secret in [SUITE_SECRET, SUITE_TOKEN, SUITE_KEY] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is stored in the clear"
        );
    }

    let second = spawn_app(&mock, options()).await;
    second.wait_ready().await;
    relay.point_at(&[&second]);
    let after = second.token_at(&corp_path(&corpid, "access_token")).await;
    assert_eq!(
        after.access_token, served.access_token,
        "served from the store"
    );
    assert!(
        push_ticket(&mock).await,
        "the restarted hub opens the suite's pushes"
    );
    assert_eq!(stats(&mock).suite(SUITE).permanent_codes_issued, 1);

    // Once the corp uninstalled, the suite can go; its pushes are refused again.
    owner(
        &mock,
        "uninstall",
        json!({ "suite_id": SUITE, "corpid": corpid }),
    )
    .await;
    wait_until(Duration::from_secs(10), "the corp is revoked", || async {
        second
            .get(&corp_path(&corpid, "access_token"))
            .await
            .status()
            == 410
    })
    .await;
    let deleted = second.send(Method::DELETE, &path, None).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        second
            .get(&format!("/v1/suites/{SUITE}/access_token"))
            .await
            .status(),
        404
    );
    assert!(!push_ticket(&mock).await);
}

#[tokio::test]
async fn a_runtime_suite_is_refused_with_a_precise_error_when_its_body_is_wrong() {
    let relay = Relay::start().await;
    let mock = suite_mock(&relay, Duration::from_secs(60), Duration::from_secs(600)).await;
    // The configured suite waits for a ticket that is never pushed here: the admin API answers
    // meanwhile.
    let hub = spawn_app(&mock, suite_options(&[])).await;
    let put = |suite: &str, body: Value| {
        let path = format!("/v1/admin/suites/{suite}");
        let hub = &hub;
        async move { code_of(hub.send(Method::PUT, &path, Some(body)).await).await }
    };
    let with = |field: &str, value: Value| {
        let mut body = suite_body();
        body[field] = value;
        body
    };
    let other = "wwothersuite0000001";
    assert_eq!(
        put(other, with("encoding_aes_key", json!("short"))).await,
        (400, "invalid_secret".into())
    );
    assert_eq!(
        put(
            other,
            with("previous_encoding_aes_key", json!("#".repeat(43)))
        )
        .await,
        (400, "invalid_secret".into())
    );
    assert_eq!(
        put(other, with("token", json!("  "))).await,
        (400, "invalid_secret".into())
    );
    assert_eq!(
        put(other, with("corp_tickets", json!(["wx_card"]))).await,
        (400, "invalid_ticket".into())
    );
    assert_eq!(
        put(other, with("agentid", json!("1"))).await.0,
        400,
        "unknown fields are refused"
    );
    assert_eq!(
        put(SUITE, suite_body()).await,
        (409, "defined_in_configuration".into())
    );
    assert_eq!(
        code_of(
            hub.send(Method::DELETE, &format!("/v1/admin/suites/{SUITE}"), None)
                .await
        )
        .await,
        (409, "defined_in_configuration".into())
    );
    // Nothing was stored by the refused puts.
    assert_eq!(
        hub.get(&format!("/v1/suites/{other}/access_token"))
            .await
            .status(),
        404
    );
}
