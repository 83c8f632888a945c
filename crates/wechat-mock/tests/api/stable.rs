//! `POST /cgi-bin/stable_token`: body rules, normal mode, force refresh, limits, isolation.

use std::time::{Duration, Instant};

use serde_json::json;
use wechat_mock::MockConfig;

use crate::common::*;

#[tokio::test]
async fn only_a_json_post_body_is_read() {
    let wx = Wx::start(config(5, 1)).await;
    let creds = format!("grant_type=client_credential&appid={APPID}&secret={SECRET}");
    // GET, even with every parameter in the query.
    let r = wx.get(&format!("/cgi-bin/stable_token?{creds}")).await;
    assert_error(&r, 43002, "require POST method");
    // A form-encoded body reads as no parameters at all.
    let r = wx
        .post_raw(
            "/cgi-bin/stable_token",
            "application/x-www-form-urlencoded",
            &creds,
        )
        .await;
    assert_error(&r, 41002, "appid missing");
    // So do query parameters on a POST.
    let r = wx
        .post_raw(
            &format!("/cgi-bin/stable_token?{creds}"),
            "application/json",
            "",
        )
        .await;
    assert_error(&r, 41002, "appid missing");
    let r = wx
        .post_json(
            "/cgi-bin/stable_token",
            &json!({"grant_type": "client_credential", "appid": APPID}),
        )
        .await;
    assert_error(&r, 41004, "appsecret missing");
    let r = wx
        .post_json(
            "/cgi-bin/stable_token",
            &json!({"grant_type": "x", "appid": "wxnope", "secret": "x"}),
        )
        .await;
    assert_error(&r, 40002, "invalid grant_type");
    let r = wx.stable("wxnope", SECRET, false).await;
    assert_error(&r, 40013, "invalid appid");
    let r = wx.stable(APPID, "wrong", false).await;
    assert_error(&r, 40125, "invalid appsecret");
    let r = wx
        .post_json(
            "/cgi-bin/stable_token",
            &json!({"grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": "true"}),
        )
        .await;
    assert_error(&r, 47001, "data format error");
    // force_refresh is optional; success carries no errcode.
    let r = wx
        .post_json(
            "/cgi-bin/stable_token",
            &json!({"grant_type": "client_credential", "appid": APPID, "secret": SECRET}),
        )
        .await;
    assert_wechat_wire(&r);
    assert!(r.json.get("errcode").is_none(), "{r:?}");
    assert_eq!(r.expires_in(), 5);
    assert_eq!(wx.mock.stats().issued("/cgi-bin/stable_token", APPID), 1);
}

#[tokio::test]
async fn normal_mode_returns_the_same_token_with_its_remaining_life() {
    // lifetime 4 s, rotation window (grace) 2 s.
    let wx = Wx::start(config(4, 2)).await;
    let before = Instant::now();
    let first = wx.stable(APPID, SECRET, false).await;
    let s1 = first.access_token();
    assert_eq!(first.expires_in(), 4);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let again = wx.stable(APPID, SECRET, false).await;
    assert_eq!(again.access_token(), s1, "same token while valid");
    let left = again.expires_in();
    assert_eq!(left, 2, "remaining life (just under 3 s), not the lifetime");
    // Inside the last 2 s of its life, the token rotates.
    sleep_until(before + Duration::from_secs(2) + MARGIN).await;
    let rotated = wx.stable(APPID, SECRET, false).await;
    let s2 = rotated.access_token();
    assert_ne!(s2, s1);
    assert_eq!(rotated.expires_in(), 4);
    // The old token still works until its own end.
    assert_ok_wechat(&wx.business(&s1).await);
    assert_eq!(wx.stable(APPID, SECRET, false).await.access_token(), s2);
    sleep_until(before + Duration::from_secs(4) + MARGIN).await;
    assert_ne!(wx.business(&s1).await.errcode(), 0);
    assert_ok_wechat(&wx.business(&s2).await);
    let stats = wx.mock.stats();
    assert_eq!(stats.issued("/cgi-bin/stable_token", APPID), 2);
    assert_eq!(stats.calls("/cgi-bin/stable_token", APPID), 4);
    assert_eq!(stats.force_refreshes(APPID), 0);
}

#[tokio::test]
async fn expires_in_never_drops_below_the_grace() {
    // grace 2 of lifetime 3: every answer must leave at least 2 s.
    let wx = Wx::start(config(3, 2)).await;
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut tokens = std::collections::HashSet::new();
    while Instant::now() < deadline {
        let r = wx.stable(APPID, SECRET, false).await;
        assert!(r.expires_in() >= 2, "{r:?}");
        tokens.insert(r.access_token());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(tokens.len() >= 2, "it rotated within 2.5 s");
}

#[tokio::test]
async fn force_refresh_rotates_keeps_the_previous_for_the_grace_and_kills_older() {
    // lifetime 4 s: force refreshes must be max(1 s, 30 × 4 / 7200 s) = 1 s apart; grace 3 s.
    let wx = Wx::start(config(4, 3)).await;
    let a = wx.stable(APPID, SECRET, false).await.access_token();
    let forced = wx.stable(APPID, SECRET, true).await;
    let first_force = Instant::now();
    let b = forced.access_token();
    assert_ne!(b, a);
    assert_eq!(forced.expires_in(), 4);
    assert_ok_wechat(&wx.business(&a).await);

    // Too early: no refresh, the current token with its remaining life.
    let early = wx.stable(APPID, SECRET, true).await;
    assert_eq!(early.access_token(), b);
    assert!(early.expires_in() <= 4);
    assert_eq!(wx.mock.stats().force_refreshes(APPID), 1);

    sleep_until(first_force + Duration::from_secs(1) + MARGIN).await;
    let c = wx.stable(APPID, SECRET, true).await.access_token();
    assert_ne!(c, b);
    // b keeps the grace; a, older, died at once although its own grace (3 s) had not run out.
    assert_ok_wechat(&wx.business(&b).await);
    assert_error(&wx.business(&a).await, 40001, INVALID_CREDENTIAL);
    assert_ok_wechat(&wx.business(&c).await);
    let stats = wx.mock.stats();
    assert_eq!(stats.force_refreshes(APPID), 2);
    assert_eq!(stats.issued("/cgi-bin/stable_token", APPID), 3);
}

#[tokio::test]
async fn force_refreshes_are_limited_per_day() {
    let wx = Wx::start(MockConfig {
        force_refresh_daily_limit: 2,
        ..config(4, 1)
    })
    .await;
    let first = wx.stable(APPID, SECRET, true).await.access_token();
    let at = Instant::now();
    sleep_until(at + Duration::from_secs(1) + MARGIN).await;
    let second = wx.stable(APPID, SECRET, true).await.access_token();
    assert_ne!(first, second);
    let r = wx.stable(APPID, SECRET, true).await;
    assert_error(&r, 45009, "reach max api daily quota limit");
    // Normal mode is unaffected, and so is the other account.
    assert_eq!(wx.stable(APPID, SECRET, false).await.access_token(), second);
    wx.stable(APPID_B, SECRET_B, true).await.access_token();
    let stats = wx.mock.stats();
    assert_eq!(stats.force_refreshes(APPID), 2);
    assert_eq!(stats.force_refreshes(APPID_B), 1);
}

#[tokio::test]
async fn stable_and_legacy_tokens_are_isolated() {
    let wx = Wx::start(config(6, 1)).await;
    let s1 = wx.stable(APPID, SECRET, false).await.access_token();
    let l1 = wx.legacy_token().await;
    let l2 = wx.legacy_token().await;
    let at = Instant::now();
    sleep_until(at + Duration::from_secs(1) + MARGIN).await;
    // The legacy fetch superseded the older legacy token but not the stable one.
    assert_error(&wx.business(&l1).await, 40001, INVALID_CREDENTIAL);
    assert_ok_wechat(&wx.business(&s1).await);
    assert_eq!(wx.stable(APPID, SECRET, false).await.access_token(), s1);
    // A force refresh supersedes the stable token only.
    let s2 = wx.stable(APPID, SECRET, true).await.access_token();
    let forced = Instant::now();
    assert_ne!(s2, s1);
    sleep_until(forced + Duration::from_secs(1) + MARGIN).await;
    assert_error(&wx.business(&s1).await, 40001, INVALID_CREDENTIAL);
    assert_ok_wechat(&wx.business(&l2).await);
    assert_ok_wechat(&wx.business(&s2).await);
}
