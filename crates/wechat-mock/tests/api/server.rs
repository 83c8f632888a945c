//! The library's server lifecycle: configuration checks at start, the address, shutdown.

use std::time::Duration;

use wechat_mock::{MockConfig, MockServer};

use crate::common::*;

#[tokio::test]
async fn start_refuses_unusable_configurations() {
    let listen = "127.0.0.1:0".parse().unwrap();
    let zero_lifetime = MockConfig {
        lifetime: Duration::ZERO,
        ..MockConfig::default()
    };
    let duplicate_app = MockConfig::default()
        .with_app(APPID, "one")
        .with_app(APPID, "two");
    let shared_corp_secret = MockConfig::default()
        .with_corp(CORPID, AGENT_1, "same")
        .with_corp(CORPID, AGENT_2, "same");
    let duplicate_agent = MockConfig::default()
        .with_corp(CORPID, AGENT_1, "one")
        .with_corp(CORPID, AGENT_1, "two");
    for config in [
        zero_lifetime,
        duplicate_app,
        shared_corp_secret,
        duplicate_agent,
    ] {
        let err = MockServer::start(config, listen)
            .await
            .err()
            .expect("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    }
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let wx = Wx::start(config(60, 5)).await;
    let addr = wx.mock.addr();
    assert_ne!(addr.port(), 0);
    assert_eq!(
        wx.mock.base_url(),
        format!("http://127.0.0.1:{}", addr.port())
    );
    // A keep-alive connection that has been answered and is now idle.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /mock/stats HTTP/1.1\r\nHost: mock\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    conn.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    tokio::time::timeout(Duration::from_secs(5), wx.mock.shutdown())
        .await
        .expect("shutdown returns promptly");
    // The server closed the idle connection: reading reaches the end.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest))
        .await
        .expect("the connection is closed")
        .unwrap();
}
