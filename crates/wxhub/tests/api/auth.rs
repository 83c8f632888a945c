//! Consumer authentication and request validation: 401 / 403 / 404 / 413 / 400, all as JSON, none
//! leaking a secret.

use crate::helpers::*;

const APP: &str = "wxauth00000000001";
const OTHER: &str = "wxauth00000000002";

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("errors are JSON");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error has a message: {body}"
    );
    (status, code)
}

#[tokio::test]
async fn consumers_are_authenticated_and_limited_to_their_apps_and_scopes() {
    let apps = [TestApp::legacy(APP), TestApp::legacy(OTHER)];
    let (_mock, hub) = start_ready(&apps).await;
    let token_path = |appid: &str| hub.url(&format!("/v1/apps/{appid}/access_token"));

    // No key, a malformed header, an unknown key: 401.
    let response = hub.client.get(token_path(APP)).send().await.unwrap();
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(error_code(response).await, (401, "unauthorized".into()));
    let response = hub
        .client
        .get(token_path(APP))
        .header("Authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (401, "unauthorized".into()));
    let response = hub
        .client
        .get(token_path(APP))
        .bearer_auth("not-a-configured-key")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (401, "unauthorized".into()));

    // The reader may read its app, not another, and may not invalidate or administer.
    let response = hub
        .client
        .get(token_path(APP))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = hub
        .client
        .get(token_path(OTHER))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (403, "forbidden".into()));
    let response = hub
        .client
        .post(hub.url(&format!("/v1/apps/{APP}/access_token/invalidate")))
        .bearer_auth(READER_KEY)
        .json(&serde_json::json!({"access_token": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (403, "forbidden".into()));
    let response = hub
        .client
        .get(hub.url("/v1/credentials"))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (403, "forbidden".into()));

    // Unknown appid (to a consumer granted every app), unknown ticket, unknown route: 404.
    let response = hub.get("/v1/apps/wxnotconfigured0001/access_token").await;
    assert_eq!(error_code(response).await, (404, "unknown_app".into()));
    // A consumer not granted an app learns nothing of it: the same 403 whether it exists or not.
    for appid in [OTHER, "wxnotconfigured0001"] {
        let response = hub
            .client
            .get(token_path(appid))
            .bearer_auth(READER_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(response).await,
            (403, "forbidden".into()),
            "{appid}"
        );
    }
    let response = hub.get(&format!("/v1/apps/{APP}/tickets/jsapi")).await;
    assert_eq!(error_code(response).await, (404, "unknown_ticket".into()));
    let response = hub.get("/v1/nothing/here").await;
    assert_eq!(error_code(response).await, (404, "not_found".into()));
}

#[tokio::test]
async fn bad_bodies_get_precise_errors_and_change_nothing() {
    let apps = [TestApp::legacy(APP)];
    let (mock, hub) = start_ready(&apps).await;
    let before = hub.token(APP).await;
    let path = hub.url(&format!("/v1/apps/{APP}/access_token/invalidate"));

    // 1 MiB body: 413.
    let response = hub
        .client
        .post(&path)
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(vec![b'a'; 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(response).await,
        (413, "payload_too_large".into())
    );

    // Malformed JSON and the wrong shape: 400.
    for body in [
        "{not json",
        r#"{"token":"abc"}"#,
        r#"{"access_token":42}"#,
        "",
    ] {
        let response = hub
            .client
            .post(&path)
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(response).await,
            (400, "invalid_json".into()),
            "{body:?}"
        );
    }

    // Nothing was refreshed by any of it.
    let after = hub.token(APP).await;
    assert_eq!(after.access_token, before.access_token);
    assert_eq!(stats(&mock).issued("/cgi-bin/token", APP), 1);
}

#[tokio::test]
async fn no_secret_or_token_reaches_listings_metrics_or_errors() {
    let apps = [TestApp::legacy(APP)];
    let (_mock, hub) = start_ready(&apps).await;
    let token = hub.token(APP).await.access_token;
    let secret = secret_of(APP);

    let listing = hub.get("/v1/credentials").await.text().await.unwrap();
    let metrics = hub.metrics().await;
    let error = hub
        .get("/v1/apps/wxnotconfigured0001/access_token")
        .await
        .text()
        .await
        .unwrap();
    for text in [&listing, &metrics, &error] {
        assert!(!text.contains(&secret), "a secret leaked: {text}");
        assert!(!text.contains(&token), "a token leaked: {text}");
    }
    assert!(listing.contains(&format!("access_token/{APP}")));
    assert!(metrics.contains("wxhub_http_requests_total{route=\"access_token\",status=\"200\"}"));
    assert!(metrics.contains("wxhub_token_remaining_seconds{key=\"access_token/"));

    let health = hub.client.get(hub.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// Token reads are answered ahead of the router; whatever the fast path does not recognise
/// exactly goes to the router. Both must give the same answers and count the same metrics.
#[tokio::test]
async fn reads_answer_alike_whether_or_not_the_fast_path_takes_them() {
    let apps = [TestApp::legacy(APP), TestApp::legacy(OTHER)];
    let (_mock, hub) = start_ready(&apps).await;
    let read =
        |path: String, key: &'static str| hub.client.get(hub.url(&path)).bearer_auth(key).send();

    // The plain path (fast path) and a percent-encoded one (the router) serve the same token,
    // with the same headers.
    let encoded_app = format!(
        "{}%{:02X}",
        &APP[..APP.len() - 1],
        APP.as_bytes()[APP.len() - 1]
    );
    let mut tokens = Vec::new();
    for path in [
        format!("/v1/apps/{APP}/access_token"),
        format!("/v1/apps/{encoded_app}/access_token"),
    ] {
        let response = read(path.clone(), READER_KEY).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], "application/json", "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        tokens.push(body["access_token"].as_str().unwrap().to_string());
        assert!(body["expires_in"].as_u64().is_some(), "{body}");
    }
    assert_eq!(tokens[0], tokens[1]);

    // Errors: the same codes either way.
    let encoded_other = format!(
        "{}%{:02X}",
        &OTHER[..OTHER.len() - 1],
        OTHER.as_bytes()[OTHER.len() - 1]
    );
    for (path, key, expected) in [
        (
            format!("/v1/apps/{OTHER}/access_token"),
            READER_KEY,
            (403, "forbidden"),
        ),
        (
            format!("/v1/apps/{encoded_other}/access_token"),
            READER_KEY,
            (403, "forbidden"),
        ),
        (
            format!("/v1/apps/{APP}/access_token"),
            "wrong-key",
            (401, "unauthorized"),
        ),
        // Whether an app exists is told only to a consumer granted it (here, every app).
        (
            "/v1/apps/wxnone/access_token".into(),
            READER_KEY,
            (403, "forbidden"),
        ),
        (
            "/v1/apps/wxnone/access_token".into(),
            ADMIN_KEY,
            (404, "unknown_app"),
        ),
        (
            format!("/v1/apps/{APP}/tickets/jsapi"),
            READER_KEY,
            (404, "unknown_ticket"),
        ),
        (
            format!("/v1/apps/{APP}/access_token/"),
            READER_KEY,
            (404, "not_found"),
        ),
    ] {
        let response = read(path.clone(), key).await.unwrap();
        assert_eq!(
            error_code(response).await,
            (expected.0, expected.1.into()),
            "{path}"
        );
    }

    // HEAD is the router's (GET routes answer it too).
    let head = hub
        .client
        .head(hub.url(&format!("/v1/apps/{APP}/access_token")))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);

    // Every read above was counted, by whichever path answered it.
    let metrics = hub.metrics().await;
    for expected in [
        "wxhub_http_requests_total{route=\"access_token\",status=\"200\"} 3",
        "wxhub_http_requests_total{route=\"access_token\",status=\"401\"} 1",
        "wxhub_http_requests_total{route=\"access_token\",status=\"403\"} 3",
    ] {
        assert!(metrics.contains(expected), "{expected} in\n{metrics}");
    }
}

#[tokio::test]
async fn every_json_answer_ends_with_a_newline_for_curl() {
    let appid = "wxnewline00000001";
    let (_mock, hub) = start_ready(&[TestApp::stable(appid)]).await;
    for path in [
        format!("/v1/apps/{appid}/access_token"),
        "/v1/apps/wxunknown/access_token".to_string(),
        "/v1/credentials".to_string(),
        "/readyz".to_string(),
    ] {
        let body = hub.get(&path).await.text().await.unwrap();
        assert!(body.ends_with("}\n"), "{path}: {body:?}");
    }
}
