//! A consumer without the `read` scope never receives a credential value, whatever it calls: an
//! invalidation report answers with the outcome and the current generation only. With `read` as
//! well, the report answers with the current value as before.

use std::time::Duration;

use wxhub::token::{CorpTicketKind, TicketKind};

use crate::helpers::*;

const APP: &str = "wxscope0000000001";
const CORPID: &str = "ww0000000000scope";
const AGENTID: &str = "1000002";

/// `POST path` with `body` as the consumer whose key is `key`.
async fn post_as(
    hub: &TestHub,
    key: &str,
    path: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    hub.client
        .post(hub.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("request reaches the hub")
}

/// Checks that a report by the invalidate-only consumer answers without any credential value,
/// then that the same report by a consumer with `read` gets the current value.
async fn assert_report_hides_the_value(hub: &TestHub, read_path: &str, field: &str) {
    let current = hub.token_at(read_path).await;
    let report_path = format!("{read_path}/invalidate");

    // Without read: a GET is refused...
    let get = hub
        .client
        .get(hub.url(read_path))
        .bearer_auth(REPORTER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 403, "GET {read_path}");

    // ... and a report, stale or not, never carries the value.
    for reported in ["bogus", current.access_token.as_str()] {
        let response = post_as(
            hub,
            REPORTER_KEY,
            &report_path,
            serde_json::json!({ field: reported }),
        )
        .await;
        assert_eq!(response.status(), 200, "POST {report_path}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains(&current.access_token),
            "the answer to a consumer without read holds the current value: {text}"
        );
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(body.get(field).is_none(), "{text}");
        assert!(body.get("access_token").is_none(), "{text}");
        assert!(body.get("ticket").is_none(), "{text}");
        let outcome = body["outcome"].as_str().unwrap_or_default();
        assert!(
            ["stale", "refreshed", "throttled", "rejected"].contains(&outcome),
            "outcome: {text}"
        );
        assert!(
            body["generation"].as_u64().is_some_and(|g| g >= 1),
            "{text}"
        );
        assert!(body["expires_at"].is_string(), "{text}");
        assert!(body["expires_in"].is_u64(), "{text}");
        let served = hub.token_at(read_path).await;
        assert!(
            !text.contains(&served.access_token),
            "the answer holds the value now served: {text}"
        );
    }

    // With read and invalidate: the contract is unchanged, the current value comes back.
    let response = post_as(
        hub,
        ADMIN_KEY,
        &report_path,
        serde_json::json!({ field: "bogus" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let now = hub.token_at(read_path).await;
    assert_eq!(body[field], now.access_token.as_str(), "{body}");
    assert!(body.get("outcome").is_none(), "{body}");
}

#[tokio::test]
async fn an_invalidate_only_consumer_never_receives_an_app_token_or_ticket() {
    let apps = [TestApp::legacy(APP).with_tickets(&[TicketKind::Jsapi])];
    let (_mock, hub) = start_ready(&apps).await;
    assert_report_hides_the_value(
        &hub,
        &format!("/v1/apps/{APP}/access_token"),
        "access_token",
    )
    .await;
    assert_report_hides_the_value(&hub, &format!("/v1/apps/{APP}/tickets/jsapi"), "ticket").await;
}

#[tokio::test]
async fn an_invalidate_only_consumer_never_receives_a_corp_token_or_ticket() {
    let corps = [TestCorp {
        corpid: CORPID.into(),
        agentid: AGENTID.into(),
        tickets: vec![CorpTicketKind::Jsapi],
    }];
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &[],
        &corps,
        |c| c,
    )
    .await;
    let hub = spawn_app(&mock, HubOptions::new(&[]).with_corps(&corps)).await;
    hub.wait_ready().await;
    let base = format!("/v1/corps/{CORPID}/agents/{AGENTID}");
    assert_report_hides_the_value(&hub, &format!("{base}/access_token"), "access_token").await;
    assert_report_hides_the_value(&hub, &format!("{base}/tickets/jsapi"), "ticket").await;
}

#[tokio::test]
async fn an_admin_administers_only_what_it_is_granted() {
    use reqwest::Method;
    use wxhub::configuration::{consumer_key_digest, AppGrant, ConsumerSettings, Scope};
    const LIMITED_KEY: &str = "scope-limited-admin-key-0123";
    let mine = "wxscopemine000001";
    let theirs = "wxscopetheirs0001";
    let apps = [TestApp::legacy(APP)];
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &[
            TestApp::legacy(APP),
            TestApp::legacy(mine),
            TestApp::legacy(theirs),
        ],
        &[],
        |c| c,
    )
    .await;
    let mut options = HubOptions::new(&apps);
    options.more_consumers.push(ConsumerSettings {
        name: "limited-admin".into(),
        key_sha256: consumer_key_digest(LIMITED_KEY),
        apps: vec![AppGrant::App(mine.into())],
        scopes: vec![Scope::Read, Scope::Admin],
    });
    let hub = spawn_app(&mock, options).await;
    hub.wait_ready().await;
    let as_limited = |method: Method, path: String, body: Option<serde_json::Value>| {
        let mut request = hub
            .client
            .request(method, hub.url(&path))
            .bearer_auth(LIMITED_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { request.send().await.expect("the hub answers").status() }
    };
    let body = |appid: &str| serde_json::json!({ "secret": secret_of(appid), "mode": "legacy" });

    // Its own app: created, then deleted.
    let created = as_limited(
        Method::PUT,
        format!("/v1/admin/apps/{mine}"),
        Some(body(mine)),
    );
    assert_eq!(created.await, 201);
    // Anyone else's: neither created, nor deleted, nor re-secreted.
    let refused = as_limited(
        Method::PUT,
        format!("/v1/admin/apps/{theirs}"),
        Some(body(theirs)),
    );
    assert_eq!(refused.await, 403);
    let put = hub
        .send(
            Method::PUT,
            &format!("/v1/admin/apps/{theirs}"),
            Some(body(theirs)),
        )
        .await;
    assert_eq!(put.status(), 201);
    for (method, path, body) in [
        (Method::DELETE, format!("/v1/admin/apps/{theirs}"), None),
        (
            Method::PUT,
            format!("/v1/admin/apps/{theirs}"),
            Some(body(theirs)),
        ),
        (
            Method::PUT,
            "/v1/admin/corps/ww0000000000scope/agents/1000002".to_string(),
            Some(serde_json::json!({ "secret": "s" })),
        ),
        // Process-wide actions need apps = ["*"].
        (Method::POST, "/v1/admin/reload".to_string(), None),
        (Method::GET, "/v1/admin/audit".to_string(), None),
        (Method::GET, "/v1/credentials".to_string(), None),
    ] {
        let status = as_limited(method.clone(), path.clone(), body).await;
        assert_eq!(status, 403, "{method} {path}");
    }
    assert!(hub.token(theirs).await.expires_in > 0);
    let deleted = as_limited(Method::DELETE, format!("/v1/admin/apps/{mine}"), None);
    assert_eq!(deleted.await, 204);
    hub.stop().await;
}
