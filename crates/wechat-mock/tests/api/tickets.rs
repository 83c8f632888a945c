//! `GET /cgi-bin/ticket/getticket`: token checks, the same ticket with the full lifetime until it
//! expires, then a new one.

use std::time::{Duration, Instant};

use crate::common::*;

fn ticket_url(token: &str, kind: &str) -> String {
    format!("/cgi-bin/ticket/getticket?access_token={token}&type={kind}")
}

#[tokio::test]
async fn the_same_ticket_with_the_full_lifetime_until_it_expires() {
    let wx = Wx::start(config(3, 1)).await;
    let token = wx.legacy_token().await;
    let minted = Instant::now();
    let first = wx.get(&ticket_url(&token, "jsapi")).await;
    let t1 = first.ticket();
    assert_eq!(first.errmsg(), "ok");
    assert_eq!(first.json["errcode"], 0, "errcode 0 is present");
    assert_eq!(first.expires_in(), 3);
    assert!(
        t1.len() >= 80
            && t1
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{t1}"
    );
    let card = wx.get(&ticket_url(&token, "wx_card")).await.ticket();
    assert_ne!(card, t1, "each type has its own ticket");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    // A token fetched meanwhile does not change the ticket either.
    let token2 = wx.legacy_token().await;
    let again = wx.get(&ticket_url(&token2, "jsapi")).await;
    assert_eq!(again.ticket(), t1);
    assert_eq!(
        again.expires_in(),
        3,
        "expires_in is the lifetime, not the remaining life"
    );
    assert!(wx.mock.ticket_valid(&t1));

    sleep_until(minted + Duration::from_secs(3) + MARGIN).await;
    assert!(!wx.mock.ticket_valid(&t1));
    let token3 = wx.legacy_token().await;
    let renewed = wx.get(&ticket_url(&token3, "jsapi")).await;
    let t2 = renewed.ticket();
    assert_ne!(t2, t1);
    assert_eq!(renewed.expires_in(), 3);
    assert!(wx.mock.ticket_valid(&t2));
    let stats = wx.mock.stats();
    assert_eq!(stats.issued("/cgi-bin/ticket/getticket", APPID), 3);
    assert_eq!(stats.calls("/cgi-bin/ticket/getticket", APPID), 4);
}

#[tokio::test]
async fn getticket_checks_the_token_like_any_api() {
    let wx = Wx::start(config(6, 1)).await;
    let r = wx.get("/cgi-bin/ticket/getticket?type=jsapi").await;
    assert_error(&r, 41001, "access_token missing");
    let r = wx.get(&ticket_url("garbage", "jsapi")).await;
    assert_error(&r, 40014, "invalid access_token");
    let old = wx.legacy_token().await;
    let stable = wx.stable(APPID, SECRET, false).await.access_token();
    wx.legacy_token().await;
    let superseded_at = Instant::now();
    // Stable tokens work here too.
    wx.get(&ticket_url(&stable, "jsapi")).await.ticket();
    // Unknown ticket types are refused.
    assert_error(
        &wx.get(&ticket_url(&stable, "card")).await,
        40097,
        "invalid args",
    );
    assert_error(
        &wx.get(&format!("/cgi-bin/ticket/getticket?access_token={stable}"))
            .await,
        40097,
        "invalid args",
    );
    // A corp token is unknown on the official-account host.
    let corp = wx.corp_token(CORPID, CORP_SECRET_1).await.access_token();
    assert_error(
        &wx.get(&ticket_url(&corp, "jsapi")).await,
        40014,
        "invalid access_token",
    );
    sleep_until(superseded_at + Duration::from_secs(1) + MARGIN).await;
    assert_error(
        &wx.get(&ticket_url(&old, "jsapi")).await,
        40001,
        INVALID_CREDENTIAL,
    );
    assert_eq!(
        wx.mock.stats().issued("/cgi-bin/ticket/getticket", APPID),
        1
    );
}

#[tokio::test]
async fn ticket_fetches_have_a_daily_quota() {
    let wx = Wx::start(wechat_mock::MockConfig {
        ticket_daily_quota: 2,
        ..config(60, 5)
    })
    .await;
    let token = wx.legacy_token().await;
    wx.get(&ticket_url(&token, "jsapi")).await.ticket();
    wx.get(&ticket_url(&token, "wx_card")).await.ticket();
    let r = wx.get(&ticket_url(&token, "jsapi")).await;
    assert_error(&r, 45009, "reach max api daily quota limit");
}
