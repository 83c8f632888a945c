//! The gateway's forwarding against an upstream the test controls: which headers reach WeChat,
//! redirects handed back and never followed, a slow WeChat answered with 502 in bounded time
//! without the token or secret in the answer, and request bodies over `[gateway] max_body`
//! refused, and connections to WeChat reused between calls, or replaced when WeChat closed them.
//! A tiny HTTP server on port 0 plays WeChat, token endpoint included.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use crate::helpers::*;

const APP: &str = "wxfakeupstream0001";

/// How long the slow paths keep WeChat's answer back: longer than the test hub's 2 s timeout.
const SLOW: Duration = Duration::from_secs(4);

/// A fake WeChat: issues tokens, echoes what it received, redirects, or stalls, by path.
struct Fake {
    /// Where `/redirect` sends the caller.
    elsewhere: String,
    /// Requests received on every path but the token endpoint.
    calls: AtomicUsize,
    /// Connections accepted, from the hub's engine and its gateway alike.
    connections: Arc<AtomicUsize>,
}

async fn answer(
    State(fake): State<Arc<Fake>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() == "/cgi-bin/stable_token" {
        return axum::Json(json!({"access_token": "FAKE-TOKEN-1", "expires_in": 7200}))
            .into_response();
    }
    fake.calls.fetch_add(1, Ordering::SeqCst);
    match uri.path() {
        "/redirect" => (
            StatusCode::FOUND,
            [(header::LOCATION, format!("{}/landing", fake.elsewhere))],
        )
            .into_response(),
        "/slow" | "/sns/jscode2session" => {
            tokio::time::sleep(SLOW).await;
            axum::Json(json!({"errcode": 0})).into_response()
        }
        _ => {
            let seen: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(name, value)| {
                    let value = value.to_str().unwrap_or_default().to_string();
                    (name.as_str().to_string(), Value::String(value))
                })
                .collect();
            let connection_private = [
                ("x-upstream-private", "1"),
                ("connection", "x-upstream-private"),
            ];
            (
                connection_private,
                axum::Json(json!({
                    "headers": seen,
                    "query": uri.query().unwrap_or_default(),
                    "body_len": body.len(),
                })),
            )
                .into_response()
        }
    }
}

/// Starts a fake WeChat on a free loopback port; returns it and its base URL.
async fn spawn_fake(elsewhere: String) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake {
        elsewhere,
        calls: AtomicUsize::new(0),
        connections: Arc::new(AtomicUsize::new(0)),
    });
    // WeChat takes media of up to 10 MiB; axum's own 2 MiB default would refuse them first.
    let app = Router::new()
        .fallback(answer)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let connections = fake.connections.clone();
    let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
        connections.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (fake, base)
}

/// A ready hub whose WeChat is a fake, the fake, another fake the redirects point to, and the
/// token the hub serves.
async fn hub_against_fake() -> (TestHub, Arc<Fake>, Arc<Fake>, String) {
    hub_against_fake_with(|_| {}).await
}

/// [`hub_against_fake`] with the hub's options changed by `change`.
async fn hub_against_fake_with(
    change: impl FnOnce(&mut HubOptions),
) -> (TestHub, Arc<Fake>, Arc<Fake>, String) {
    let (elsewhere, elsewhere_base) = spawn_fake(String::new()).await;
    let (fake, base) = spawn_fake(elsewhere_base).await;
    let apps = [TestApp::stable(APP)];
    let mock = minute_mock(&apps).await;
    let mut options = HubOptions::new(&apps);
    options.api_base = Some(base);
    change(&mut options);
    let hub = spawn_app(&mock, options).await;
    hub.wait_ready().await;
    let token = hub.token(APP).await.access_token;
    (hub, fake, elsewhere, token)
}

/// A client that never follows redirects, as the gateway must not.
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_their_own_connection() {
    let (hub, _fake, _, token) = hub_against_fake().await;
    let client = plain_client();
    // With a token the hub serves (held for a replay) and without one (streamed).
    for query in [format!("?access_token={token}"), String::new()] {
        let response = client
            .post(format!("{}/echo{query}", hub.gateway))
            .header("connection", "x-private")
            .header("x-private", "only for the gateway")
            .header("te", "trailers")
            .header("x-kept", "yes")
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .header("content-type", "application/json")
            .body(r#"{"a":1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("x-upstream-private").is_none());
        let body: Value = response.json().await.unwrap();
        let seen = &body["headers"];
        assert_eq!(seen["x-kept"], "yes", "{body}");
        assert_eq!(seen["content-type"], "application/json", "{body}");
        assert!(seen.get("x-private").is_none(), "{body}");
        assert!(seen.get("te").is_none(), "{body}");
        // A consumer key is for the hub, never for WeChat.
        assert!(seen.get("authorization").is_none(), "{body}");
        // WeChat is named as WeChat, not as the gateway the client called.
        let gateway_authority = hub.gateway.trim_start_matches("http://");
        assert_ne!(seen["host"], gateway_authority, "{body}");
        assert_eq!(body["body_len"], 7, "{body}");
        assert_eq!(body["query"], query.trim_start_matches('?'), "{body}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_redirect_is_handed_back_never_followed() {
    let (hub, fake, elsewhere, token) = hub_against_fake().await;
    let client = plain_client();
    for query in [format!("?access_token={token}"), String::new()] {
        let response = client
            .get(format!("{}/redirect{query}", hub.gateway))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        let location = response.headers()[header::LOCATION].to_str().unwrap();
        assert!(location.ends_with("/landing"), "{location}");
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    assert_eq!(elsewhere.calls.load(Ordering::SeqCst), 0);
    hub.stop().await;
}

#[tokio::test]
async fn a_slow_wechat_is_a_502_in_bounded_time_that_names_no_token_or_secret() {
    let (hub, _fake, _, token) = hub_against_fake().await;
    let client = plain_client();
    let calls = [
        format!("/slow?access_token={token}"),
        // The secret path: the key is replaced by the AppSecret before it goes out.
        format!("/sns/jscode2session?appid={APP}&secret={ADMIN_KEY}&js_code=c&grant_type=authorization_code"),
    ];
    for path in calls {
        let started = Instant::now();
        let response = client
            .get(format!("{}{path}", hub.gateway))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{path}");
        assert!(took < SLOW, "{path} took {took:?}");
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["errcode"], -1, "{text}");
        for secret in [token.as_str(), ADMIN_KEY, &secret_of(APP)] {
            assert!(!text.contains(secret), "{text}");
        }
    }
    // Both counted as refused for WeChat unreachable; an exchange that never got an answer is
    // not timed.
    let reason =
        "wxhub_gateway_refused_total{listener=\"official\",reason=\"upstream_unreachable\"}";
    assert_eq!(hub.metric_sum(reason).await, 2);
    let timed = "wxhub_gateway_upstream_seconds_count{listener=\"official\"}";
    assert_eq!(hub.metric_sum(timed).await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn a_body_over_max_body_is_refused_declared_or_streamed() {
    let (hub, fake, _, token) = hub_against_fake().await;
    let client = plain_client();
    let over = wxhub::configuration::DEFAULT_GATEWAY_MAX_BODY + 1;
    for query in [format!("?access_token={token}"), String::new()] {
        let url = format!("{}/echo{query}", hub.gateway);
        // Declared by Content-Length: refused before anything is read.
        let response = client
            .post(&url)
            .body(vec![b'x'; over])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{url}");
        // Chunked, without a length: refused once the limit is crossed (for a streamed call the
        // upstream exchange breaks off; either way the client does not get a 200).
        let chunks = (0..11).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024 * 1024]));
        let response = client
            .post(&url)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await;
        if let Ok(response) = response {
            assert_ne!(response.status(), StatusCode::OK, "{url}");
        }
    }
    // A body at the limit still goes through.
    let response = client
        .post(format!("{}/echo?access_token={token}", hub.gateway))
        .body(vec![b'x'; over - 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["body_len"], over - 1);
    assert!(fake.calls.load(Ordering::SeqCst) >= 1);
    hub.stop().await;
}

#[tokio::test]
async fn a_chunked_body_larger_than_the_replay_budget_goes_on_whole_without_a_replay() {
    const KIB: usize = 1024;
    let (hub, fake, _, token) =
        hub_against_fake_with(|options| options.gateway.replay_memory = 64 * KIB).await;
    let client = plain_client();
    // Pieces of 16 KiB: the first four fit the budget, the rest do not.
    let pieces = (0..16).map(|i| Ok::<_, std::io::Error>(vec![b'a' + i as u8; 16 * KIB]));
    let response = client
        .post(format!("{}/echo?access_token={token}", hub.gateway))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            pieces,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["body_len"], 256 * KIB, "{body}");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert_eq!(hub.metric_sum("wxhub_gateway_replay_bytes").await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn a_secret_path_written_another_way_is_refused_and_nothing_reaches_wechat() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (hub, fake, _, _) = hub_against_fake().await;
    let gateway = hub.gateway.trim_start_matches("http://").to_string();
    // Sent as written: an HTTP client would tidy some of these paths before sending them.
    for path in [
        "//sns/jscode2session",
        "/sns/./jscode2session",
        "/sns/../sns/jscode2session",
        "/SNS/jscode2session",
        "/sns/%6Ascode2session",
        "/sns/jscode2session/",
    ] {
        let mut stream = tokio::net::TcpStream::connect(&gateway).await.unwrap();
        let request = format!(
            "GET {path}?appid={APP}&secret={ADMIN_KEY}&js_code=c&grant_type=authorization_code \
             HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("40097"), "{path}: {answer}");
    }
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        0,
        "nothing was forwarded"
    );
    hub.stop().await;
}

#[tokio::test]
async fn calls_reuse_one_connection_to_wechat() {
    let (hub, fake, _, token) = hub_against_fake().await;
    let client = plain_client();
    // One call first: the gateway's connection is opened by it.
    let call = |query: String| {
        let client = client.clone();
        let url = format!("{}/echo{query}", hub.gateway);
        async move { client.get(url).send().await.unwrap().status() }
    };
    assert_eq!(call(format!("?access_token={token}")).await, 200);
    let opened = fake.connections.load(Ordering::SeqCst);
    // Held for a replay and inspected, or streamed: one after the other, on that connection.
    for query in [format!("?access_token={token}"), String::new()] {
        for _ in 0..10 {
            assert_eq!(call(query.clone()).await, 200);
        }
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 21);
    assert_eq!(fake.connections.load(Ordering::SeqCst), opened);
    hub.stop().await;
}

/// What the closing WeChat counts.
#[derive(Default)]
struct Closing {
    /// Connections accepted.
    accepted: AtomicUsize,
    /// Connections it closed after their one answer.
    closed: AtomicUsize,
}

/// A WeChat that answers one request on a kept-alive connection, then closes that connection
/// 20 ms later without a word, as a server whose idle timeout expired does; returns its base URL
/// and its counts.
async fn spawn_closing_wechat() -> (String, Arc<Closing>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let counts = Arc::new(Closing::default());
    let seen = counts.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.accepted.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = if request.starts_with(b"POST /cgi-bin/stable_token") {
                    r#"{"access_token":"CLOSING-TOKEN-1","expires_in":7200}"#
                } else {
                    r#"{"errcode":0,"errmsg":"ok"}"#
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                // Closed, though the answer promised nothing of the kind.
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(stream);
                seen.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (base, counts)
}

#[tokio::test]
async fn a_connection_wechat_closed_while_idle_is_replaced_not_reused() {
    let (base, counts) = spawn_closing_wechat().await;
    let apps = [TestApp::stable(APP)];
    let mock = minute_mock(&apps).await;
    let mut options = HubOptions::new(&apps);
    options.api_base = Some(base);
    let hub = spawn_app(&mock, options).await;
    hub.wait_ready().await;
    let token = hub.token(APP).await.access_token;
    let client = plain_client();
    let before = counts.accepted.load(Ordering::SeqCst);
    for query in [format!("?access_token={token}"), String::new()] {
        for _ in 0..10 {
            // The connection the last call left idle is closed by now.
            let accepted = counts.accepted.load(Ordering::SeqCst);
            wait_until(
                Duration::from_secs(5),
                "idle connections closed",
                || async { counts.closed.load(Ordering::SeqCst) == accepted },
            )
            .await;
            let response = client
                .get(format!("{}/cgi-bin/getcallbackip{query}", hub.gateway))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{query}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["errcode"], 0, "{body}");
        }
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst) - before, 20);
    hub.stop().await;
}
