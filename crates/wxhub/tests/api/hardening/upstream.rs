//! A hostile or broken upstream: absurd lifetimes, redirects to another origin, control
//! characters in `errmsg`, and a new errcode on every call. A tiny HTTP server on port 0 plays
//! WeChat and answers with whatever the test asks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use wxhub::kinds::CredentialKey;
use wxhub::store::memory::MemoryStore;
use wxhub::store::Store;

use crate::helpers::*;

/// What the fake upstream answers with.
#[derive(Clone)]
enum Answer {
    /// This JSON body, with status 200.
    Json(serde_json::Value),
    /// A 307 to the same path on another origin.
    RedirectTo(String),
    /// `{"errcode": 70000 + n, …}` on the n-th call.
    NewErrcodeEachCall,
}

/// A fake upstream that counts the requests it receives.
struct Fake {
    answer: Answer,
    hits: AtomicUsize,
}

async fn answer(State(fake): State<Arc<Fake>>, uri: Uri) -> Response {
    let n = fake.hits.fetch_add(1, Ordering::SeqCst);
    match &fake.answer {
        Answer::Json(body) => axum::Json(body.clone()).into_response(),
        Answer::RedirectTo(origin) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("{origin}{}", uri.path()))],
        )
            .into_response(),
        Answer::NewErrcodeEachCall => axum::Json(serde_json::json!({
            "errcode": 70_000 + n,
            "errmsg": "unheard of",
        }))
        .into_response(),
    }
}

/// Starts a fake upstream on a free loopback port; returns it and its base URL.
async fn spawn_fake(answer_with: Answer) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake {
        answer: answer_with,
        hits: AtomicUsize::new(0),
    });
    let app = Router::new().fallback(answer).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (fake, base)
}

/// A hub with one stable-mode app whose WeChat is `api_base`, on `store`.
async fn hub_against(appid: &str, api_base: &str, store: Arc<dyn Store>) -> TestHub {
    let apps = [TestApp::stable(appid)];
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let mut options = HubOptions::new(&apps);
    options.api_base = Some(api_base.to_string());
    options.shared_store = Some(store);
    spawn_app(&mock, options).await
}

/// Waits until the credential of `appid` shows a last error, and returns its message.
async fn last_error(hub: &TestHub, appid: &str) -> String {
    let key = CredentialKey::access_token(appid).to_string();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let credential = hub.credential(&key).await;
        if let Some(message) = credential["last_error"]["message"].as_str() {
            return message.to_string();
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "no refresh failure listed after 5 s: {credential}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_lifetime_beyond_a_day_is_neither_stored_nor_served() {
    let appid = "wxhostile00000001";
    let (fake, base) = spawn_fake(Answer::Json(serde_json::json!({
        "access_token": "ABSURD-TOKEN",
        "expires_in": 1_000_000_000_000_i64,
    })))
    .await;
    let store = Arc::new(MemoryStore::new());
    let hub = hub_against(appid, &base, store.clone()).await;

    let message = last_error(&hub, appid).await;
    assert!(fake.hits.load(Ordering::SeqCst) >= 1);
    assert!(message.contains("expires_in"), "{message}");
    assert!(!message.contains("ABSURD-TOKEN"), "{message}");
    let response = hub.get(&format!("/v1/apps/{appid}/access_token")).await;
    assert_eq!(response.status(), 503);
    assert!(!response.text().await.unwrap().contains("ABSURD-TOKEN"));
    let stored = store
        .get(&CredentialKey::access_token(appid))
        .await
        .unwrap();
    assert!(stored.is_none(), "the absurd token was stored");
    hub.stop().await;
}

#[tokio::test]
async fn a_redirect_is_not_followed_to_another_origin() {
    let appid = "wxhostile00000002";
    let (elsewhere, elsewhere_base) = spawn_fake(Answer::Json(serde_json::json!({
        "access_token": "TOKEN-FROM-ELSEWHERE",
        "expires_in": 7200,
    })))
    .await;
    let (fake, base) = spawn_fake(Answer::RedirectTo(elsewhere_base.clone())).await;
    let hub = hub_against(appid, &base, Arc::new(MemoryStore::new())).await;

    let message = last_error(&hub, appid).await;
    assert!(fake.hits.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        elsewhere.hits.load(Ordering::SeqCst),
        0,
        "the request (with the AppSecret) reached the other origin"
    );
    assert!(message.contains("307"), "{message}");
    let port = elsewhere_base.rsplit(':').next().unwrap();
    assert!(
        !message.contains(port),
        "the error names the target: {message}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn upstream_text_is_escaped_before_anyone_sees_it() {
    let appid = "wxhostile00000003";
    let (_fake, base) = spawn_fake(Answer::Json(serde_json::json!({
        "errcode": 40125,
        "errmsg": "invalid appsecret\n2026-12-01T00:00:00Z  INFO wxhub: all fine\u{1b}[2J",
    })))
    .await;
    let hub = hub_against(appid, &base, Arc::new(MemoryStore::new())).await;

    let message = last_error(&hub, appid).await;
    assert!(message.contains("invalid appsecret"), "{message}");
    assert!(
        !message.chars().any(char::is_control),
        "raw control characters in {message:?}"
    );
    assert!(message.contains("\\u{a}"), "{message:?}");
    hub.stop().await;
}

#[tokio::test]
async fn unknown_errcodes_do_not_grow_the_metrics() {
    let appid = "wxhostile00000004";
    let (fake, base) = spawn_fake(Answer::NewErrcodeEachCall).await;
    let hub = hub_against(appid, &base, Arc::new(MemoryStore::new())).await;
    last_error(&hub, appid).await;
    for _ in 0..30 {
        let response = hub
            .post(&format!("/v1/apps/{appid}/refresh"), serde_json::json!({}))
            .await;
        assert_eq!(response.status(), 503);
    }
    assert!(fake.hits.load(Ordering::SeqCst) >= 31);
    let metrics = hub
        .client
        .get(hub.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("wxhub_upstream_errcodes_total{"))
        .collect();
    // One series per endpoint called (stable_token, and stable_token_force for the admin
    // refreshes), however many distinct errcodes came back.
    assert!(!series.is_empty() && series.len() <= 2, "{series:#?}");
    assert!(
        series.iter().all(|s| s.contains("errcode=\"other\"")),
        "{series:#?}"
    );
    hub.stop().await;
}
