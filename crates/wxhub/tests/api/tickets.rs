//! JS-SDK tickets: signed correctly, and fetched again with a fresh access token when WeChat says
//! the one used was dead. (Served with their true remaining life and renewed each cycle with few
//! getticket calls: `paused_clock.rs`, three cycles on the paused clock, and `rollover.rs` in
//! real time.)

use std::time::Duration;

use sha1::{Digest, Sha1};
use wechat_mock::FaultRule;
use wxhub::token::TicketKind;

use crate::helpers::*;

/// `hex(sha1(...))` of the spec's string1, computed here independently of the hub.
fn expected_signature(ticket: &str, nonce: &str, timestamp: i64, url: &str) -> String {
    let string1 = format!("jsapi_ticket={ticket}&noncestr={nonce}&timestamp={timestamp}&url={url}");
    Sha1::digest(string1.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn the_signature_verifies_with_an_independent_sha1() {
    let appid = "wxticket000000002";
    let apps = [TestApp::legacy(appid).with_tickets(&[TicketKind::Jsapi, TicketKind::WxCard])];
    let (mock, hub) = start_ready(&apps).await;

    let ticket = hub
        .token_at(&format!("/v1/apps/{appid}/tickets/jsapi"))
        .await
        .access_token;
    let card = hub
        .token_at(&format!("/v1/apps/{appid}/tickets/wx_card"))
        .await
        .access_token;
    assert_ne!(ticket, card);
    assert!(mock.ticket_valid(&ticket) && mock.ticket_valid(&card));

    let response = hub
        .post(
            &format!("/v1/apps/{appid}/jssdk/signature"),
            serde_json::json!({"url": "https://shop.example.com/item?id=7#reviews"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    let nonce = answer["nonceStr"].as_str().unwrap();
    let timestamp = answer["timestamp"].as_i64().unwrap();
    assert_eq!(answer["appId"], appid);
    assert_eq!(nonce.len(), 16);
    assert_eq!(
        answer["signature"],
        expected_signature(
            &ticket,
            nonce,
            timestamp,
            "https://shop.example.com/item?id=7"
        )
    );

    for url in [
        "/item?id=7",
        "shop.example.com/item",
        "ftp://shop.example.com/",
    ] {
        let response = hub
            .post(
                &format!("/v1/apps/{appid}/jssdk/signature"),
                serde_json::json!({ "url": url }),
            )
            .await;
        assert_eq!(response.status(), 400, "{url}");
    }
}

#[tokio::test]
async fn a_ticket_fetch_refused_for_a_dead_access_token_refreshes_it_once_and_retries() {
    let appid = "wxticket000000003";
    let apps = [TestApp::legacy(appid).with_tickets(&[TicketKind::Jsapi])];
    let (mock, hub) = start_ready(&apps).await;
    let access_token = hub.token(appid).await.access_token;
    let ticket = hub
        .token_at(&format!("/v1/apps/{appid}/tickets/jsapi"))
        .await
        .access_token;
    // Old enough that a report of it may cause a refresh (min_refresh_interval is 1 s here).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = stats(&mock);

    mock.add_fault(FaultRule {
        path: "/cgi-bin/ticket/getticket".into(),
        errcode: Some(40001),
        count: Some(1),
        ..FaultRule::default()
    });
    let response = hub
        .post(
            &format!("/v1/apps/{appid}/tickets/jsapi/invalidate"),
            serde_json::json!({ "ticket": ticket }),
        )
        .await;
    assert_eq!(response.status(), 200);

    let after = stats(&mock);
    assert_eq!(
        after.issued("/cgi-bin/token", appid),
        before.issued("/cgi-bin/token", appid) + 1,
        "the access token was refreshed once"
    );
    assert_eq!(
        after.calls("/cgi-bin/ticket/getticket", appid),
        before.calls("/cgi-bin/ticket/getticket", appid) + 2,
        "one refused getticket, one retry"
    );
    assert_ne!(hub.token(appid).await.access_token, access_token);
}
