//! The listener under hostile clients: slow or silent header senders and idle kept-alive
//! connections are closed on their deadlines, the connection cap holds, normal requests are
//! served meanwhile, and shutdown finishes whatever clients do.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wechat_mock::MockServer;
use wxhub::configuration::ServerSettings;

use crate::helpers::*;

const APP: &str = "wxlisten000000001";

/// A ready hub for [`APP`] whose `[server]` limits are `server`, and its mock.
async fn hub_with(server: ServerSettings) -> (Arc<MockServer>, TestHub) {
    let apps = [TestApp::legacy(APP)];
    let mock = spawn_mock(
        Duration::from_secs(60),
        Duration::from_secs(5),
        &apps,
        &[],
        |c| c,
    )
    .await;
    let mut options = HubOptions::new(&apps);
    options.server = server;
    let hub = spawn_app(&mock, options).await;
    hub.wait_ready().await;
    (mock, hub)
}

/// The hub's `ip:port`.
fn socket_address(hub: &TestHub) -> String {
    hub.address.trim_start_matches("http://").to_string()
}

/// Holds `stream` until the hub closes it (end of stream, or a reset), writing `trickle` to it
/// one byte every 100 ms meanwhile. Returns how long the hub took and what it sent, or `None`
/// if it had not closed the connection after `give_up`.
async fn until_closed(
    mut stream: TcpStream,
    trickle: &[u8],
    give_up: Duration,
) -> Option<(Duration, String)> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut next = 0;
    let deadline = tokio::time::sleep(give_up);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            },
            _ = ticker.tick(), if next < trickle.len() => {
                if stream.write_all(&trickle[next..=next]).await.is_err() {
                    break;
                }
                next += 1;
            }
            () = &mut deadline => return None,
        }
    }
    Some((
        started.elapsed(),
        String::from_utf8_lossy(&received).into_owned(),
    ))
}

/// Sends one keep-alive request for `/healthz` on `stream` and reads its whole response.
async fn healthz_on(stream: &mut TcpStream) -> String {
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: hub\r\n\r\n")
        .await
        .is_err()
    {
        return String::new();
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|l| l.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// A normal consumer read succeeds.
async fn assert_served(hub: &TestHub) {
    let response = hub.get(&format!("/v1/apps/{APP}/access_token")).await;
    assert_eq!(response.status(), 200, "a normal read during the flood");
}

#[tokio::test]
async fn slow_and_silent_header_senders_are_closed_on_the_header_deadline() {
    let (_mock, hub) = hub_with(ServerSettings {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(30),
        max_connections: Some(1000),
        ..ServerSettings::default()
    })
    .await;
    let address = socket_address(&hub);
    // A header that would take 10 s to trickle in, a byte every 100 ms.
    let slow_header = format!(
        "GET /healthz HTTP/1.1\r\nhost: hub\r\nx-slow: {}\r\n\r\n",
        "a".repeat(60)
    );
    let mut clients = Vec::new();
    for i in 0..200 {
        let stream = TcpStream::connect(&address).await.unwrap();
        let trickle = if i % 2 == 0 {
            slow_header.clone().into_bytes()
        } else {
            Vec::new()
        };
        clients.push(tokio::spawn(async move {
            until_closed(stream, &trickle, Duration::from_secs(5)).await
        }));
    }
    assert_served(&hub).await;
    for (i, client) in clients.into_iter().enumerate() {
        let (took, _) = client
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("connection {i} still open after 5 s"));
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "connection {i} closed after {took:?}"
        );
    }
    assert_served(&hub).await;

    // On a kept-alive connection, the next request's headers are timed from its first byte.
    let mut stream = TcpStream::connect(&address).await.unwrap();
    assert!(healthz_on(&mut stream).await.starts_with("HTTP/1.1 200"));
    let (took, _) = until_closed(stream, slow_header.as_bytes(), Duration::from_secs(5))
        .await
        .expect("a slow second request is cut off");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn idle_kept_alive_connections_are_closed_on_the_idle_deadline() {
    let (_mock, hub) = hub_with(ServerSettings {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_millis(500),
        max_connections: Some(1000),
        ..ServerSettings::default()
    })
    .await;
    let address = socket_address(&hub);
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let answer = healthz_on(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        clients.push(tokio::spawn(async move {
            until_closed(stream, b"", Duration::from_secs(5)).await
        }));
    }
    assert_served(&hub).await;
    for (i, client) in clients.into_iter().enumerate() {
        let (took, _) = client
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("idle connection {i} still open after 5 s"));
        assert!(
            took < Duration::from_secs(3),
            "connection {i} closed after {took:?}"
        );
    }
    // A connection that keeps asking within the idle timeout stays usable.
    let mut stream = TcpStream::connect(&address).await.unwrap();
    for _ in 0..4 {
        assert!(healthz_on(&mut stream).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    hub.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_until_one_closes() {
    let (_mock, hub) = hub_with(ServerSettings {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        max_connections: Some(20),
        ..ServerSettings::default()
    })
    .await;
    let address = socket_address(&hub);
    // Open connections and keep them alive until one is refused.
    let mut held = Vec::new();
    let refused = loop {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let answer = healthz_on(&mut stream).await;
        if !answer.starts_with("HTTP/1.1 200") {
            break answer;
        }
        held.push(stream);
        assert!(held.len() <= 20, "more than 20 connections served at once");
    };
    // The consumer client's pooled connection (from `wait_ready`) may hold one of the slots.
    assert!((19..=20).contains(&held.len()), "{} served", held.len());
    assert!(
        refused.is_empty() || refused.starts_with("HTTP/1.1 503"),
        "{refused}"
    );

    // One slot frees up: new connections are served again.
    drop(held.pop());
    wait_until(Duration::from_secs(5), "a freed slot is reused", || async {
        match TcpStream::connect(&address).await {
            Ok(mut stream) => healthz_on(&mut stream).await.starts_with("HTTP/1.1 200"),
            Err(_) => false,
        }
    })
    .await;
    drop(held);
    hub.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_within_its_deadline_despite_half_sent_requests() {
    let (_mock, hub) = hub_with(ServerSettings {
        // The header deadline is far away: only the shutdown deadline (request_timeout) can end
        // these connections in time.
        header_read_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(1),
        ..ServerSettings::default()
    })
    .await;
    let address = socket_address(&hub);
    let mut partial = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: hub\r\nx-half")
            .await
            .unwrap();
        partial.push(stream);
    }
    // Accepted in order: once a later connection is answered, the partial ones are being served.
    assert_served(&hub).await;

    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(5), hub.stop()).await;
    assert!(stopped.is_ok(), "shutdown still waiting after 5 s");
    let took = started.elapsed();
    // Within request_timeout, with a little room for a loaded machine.
    assert!(
        took < Duration::from_millis(1_600),
        "shutdown took {took:?}"
    );
    for stream in partial {
        assert!(
            until_closed(stream, b"", Duration::from_secs(1))
                .await
                .is_some(),
            "a half-sent request's connection outlived the hub"
        );
    }
}

/// A request whose headers arrive at once and whose body then trickles in, one byte every
/// 100 ms, for `path` on `address`.
fn trickled_post(address: &str, path: &str) -> (String, Vec<u8>) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: hub\r\nauthorization: Bearer {ADMIN_KEY}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    (
        address.to_string(),
        [head.into_bytes(), vec![b' '; 1000]].concat(),
    )
}

#[tokio::test]
async fn slow_request_bodies_are_cut_off_on_the_request_deadline_on_every_listener() {
    let (_mock, hub) = hub_with(ServerSettings {
        // Only the request deadline can end these connections within the test's patience.
        header_read_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(1),
        max_connections: Some(1000),
        ..ServerSettings::default()
    })
    .await;
    let main = socket_address(&hub);
    let gateway = hub.gateway.trim_start_matches("http://").to_string();
    let requests = [
        // WeChat's push receiver, which the docs tell operators to expose to the internet.
        trickled_post(
            &main,
            "/wechat/components/wxcomponent0000001/events?timestamp=1",
        ),
        trickled_post(&main, &format!("/v1/apps/{APP}/access_token/invalidate")),
        // The gateway's own token endpoints read a body.
        trickled_post(&gateway, "/cgi-bin/stable_token"),
        trickled_post(&gateway, "/cgi-bin/component/api_component_token"),
    ];
    let mut clients = Vec::new();
    for (address, bytes) in requests {
        for _ in 0..20 {
            let mut stream = TcpStream::connect(&address).await.unwrap();
            // The headers go at once; only the body trickles.
            let split = bytes.len() - 1000;
            stream.write_all(&bytes[..split]).await.unwrap();
            let body = bytes[split..].to_vec();
            clients.push(tokio::spawn(async move {
                until_closed(stream, &body, Duration::from_secs(8)).await
            }));
        }
    }
    assert_served(&hub).await;
    for (i, client) in clients.into_iter().enumerate() {
        let (took, answer) = client
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("slow body {i} still held its connection after 8 s"));
        assert!(
            took < Duration::from_secs(4),
            "slow body {i}: closed after {took:?}"
        );
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
            "slow body {i}: {answer}"
        );
    }
    assert_served(&hub).await;
    hub.stop().await;
}

#[tokio::test]
async fn a_watch_stream_outlives_the_idle_timeout_while_its_heartbeats_flow() {
    let (_mock, hub) = hub_with(ServerSettings {
        header_read_timeout: Duration::from_secs(5),
        // Heartbeats come at a third of this, so the stream is never idle this long.
        idle_timeout: Duration::from_millis(900),
        ..ServerSettings::default()
    })
    .await;
    let mut stream = TcpStream::connect(socket_address(&hub)).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /v1/watch HTTP/1.1\r\nhost: hub\r\nauthorization: Bearer {READER_KEY}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(3) {
        match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
            other => panic!(
                "the stream ended after {:?} ({other:?}): {}",
                started.elapsed(),
                String::from_utf8_lossy(&received)
            ),
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.matches(": heartbeat").count() >= 3,
        "heartbeats every third of the idle timeout: {text}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_watch_streams_with_a_last_event_and_does_not_wait_for_them() {
    let (_mock, hub) = hub_with(ServerSettings {
        request_timeout: Duration::from_secs(4),
        ..ServerSettings::default()
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(socket_address(&hub)).await.unwrap();
        stream
            .write_all(
                format!(
                    "GET /v1/watch HTTP/1.1\r\nhost: hub\r\nauthorization: Bearer {READER_KEY}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut first = [0u8; 64];
        let n = stream.read(&mut first).await.unwrap();
        assert!(first[..n].starts_with(b"HTTP/1.1 200"));
        streams.push(stream);
    }
    let started = Instant::now();
    hub.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "shutdown waited {took:?} for open watch streams"
    );
    for stream in streams {
        let (_, rest) = until_closed(stream, b"", Duration::from_secs(2))
            .await
            .expect("the stream ends with the hub");
        assert!(rest.contains("\"reason\":\"shutting_down\""), "{rest}");
    }
}
